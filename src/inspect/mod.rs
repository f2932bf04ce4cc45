//! The read-only query layer over a store: what the `duroxide-postgres` CLI
//! prints, what the health metrics sample, and what a dashboard shows, from
//! one set of SQL functions (`sql/functions/inspect.sql`).
//!
//! Every answer is a plain, serializable value (the CLI's `--json` prints
//! them as they are). Names the SQL spells (queues, lease states) are mapped
//! to Rust here and nowhere else.
//!
//! The instance listing ([`Inspector::list`]) reads through
//! [`PostgresProvider::list_instance_page`], so the CLI's `list` and the
//! dashboard's instance list share its filters and keyset pagination.

mod history;
mod overview;

use crate::provider::{functions as sql, rows, PostgresProvider};
use crate::{InstanceCursor, InstanceQuery, InstanceSummary};
use duroxide::providers::{Provider, ProviderAdmin, ProviderError};
use serde::Serialize;
use std::collections::BTreeMap;
use std::time::Duration;
use tokio_postgres::Row;

pub use history::{readable_error, shorten, HistoryEntry};
pub use overview::{FailureGroup, Failures, Minute, WriteCounters};

/// The queue tables of a store.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum QueueName {
    /// Orchestration messages (starts, completions, timers, events).
    Orchestrator,
    /// Activity work items.
    Worker,
}

impl QueueName {
    fn parse(op: &str, s: &str) -> Result<Self, ProviderError> {
        match s {
            "orchestrator" => Ok(QueueName::Orchestrator),
            "worker" => Ok(QueueName::Worker),
            other => Err(ProviderError::permanent(
                op,
                format!("unknown queue {other:?}"),
            )),
        }
    }

    /// `orchestrator` or `worker`, as in metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            QueueName::Orchestrator => "orchestrator",
            QueueName::Worker => "worker",
        }
    }
}

/// The lease of a pending message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LeaseState {
    /// Not leased.
    None,
    /// Leased, lease live.
    Held,
    /// Leased, lease expired and not claimed again.
    Expired,
}

impl LeaseState {
    fn parse(op: &str, s: &str) -> Result<Self, ProviderError> {
        match s {
            "none" => Ok(LeaseState::None),
            "held" => Ok(LeaseState::Held),
            "expired" => Ok(LeaseState::Expired),
            other => Err(ProviderError::permanent(
                op,
                format!("unknown lease state {other:?}"),
            )),
        }
    }
}

/// One queue in a health sample.
#[derive(Debug, Clone, Serialize)]
pub struct QueueHealth {
    /// Which queue.
    pub queue: QueueName,
    /// Messages claimable now.
    pub ready: u64,
    /// Messages not visible yet (timers, abandon delays).
    pub delayed: u64,
    /// Messages under a live lease.
    pub leased: u64,
    /// Leases that expired and were not claimed again.
    pub expired_leases: u64,
    /// How long the oldest claimable message has been ready, if any is.
    pub oldest_ready_age_ms: Option<u64>,
    /// Messages fetched at least the sample's attempt threshold times.
    pub at_attempts: u64,
    /// Dead tuples of the queue's table (partitions included).
    pub dead_tuples: u64,
    /// Live tuples of the queue's table, as PostgreSQL's statistics estimate.
    pub live_tuples: u64,
    /// Size of the table with its indexes and TOAST, in bytes.
    pub total_bytes: u64,
}

/// The session whose snapshot is the oldest in the database: it holds back
/// vacuum of every table.
#[derive(Debug, Clone, Serialize)]
pub struct VacuumHolder {
    /// Its backend process id.
    pub pid: i32,
    /// Age of its transaction (None if the role may not see it).
    pub transaction_age_ms: Option<u64>,
    /// Its `application_name`.
    pub application: Option<String>,
    /// When its current query started (ms since the Unix epoch).
    pub query_start_ms: Option<i64>,
}

/// A health sample: one statement, cheap enough to run every few seconds.
#[derive(Debug, Clone, Serialize)]
pub struct Health {
    /// Each queue.
    pub queues: Vec<QueueHealth>,
    /// The oldest snapshot holding back vacuum, if another session holds one.
    pub vacuum_holder: Option<VacuumHolder>,
    /// Fraction (0..1) of the server's LISTEN/NOTIFY queue in use.
    pub notification_queue_usage: f64,
    /// The attempt threshold of `at_attempts`.
    pub attempts_threshold: u32,
}

/// Size and vacuum statistics of one table of the store.
#[derive(Debug, Clone, Serialize)]
pub struct TableStats {
    /// Table name (a partitioned table with its partitions).
    pub table: String,
    /// Live tuples (estimate).
    pub live_tuples: u64,
    /// Dead tuples (estimate).
    pub dead_tuples: u64,
    /// Total size with indexes and TOAST.
    pub total_bytes: u64,
    /// Last (auto)vacuum, ms since the Unix epoch.
    pub last_vacuum_ms: Option<i64>,
}

/// Instances with one status.
#[derive(Debug, Clone, Serialize)]
pub struct StatusCount {
    /// `Running`, `Completed`, `Failed`, `ContinuedAsNew`, ...
    pub status: String,
    /// How many instances have it.
    pub instances: u64,
}

/// One screen of store health (the CLI's `status`).
#[derive(Debug, Clone, Serialize)]
pub struct Status {
    /// The store's schema.
    pub schema: String,
    /// Instances by the status of their current execution.
    pub instances: Vec<StatusCount>,
    /// Queues, vacuum, notifications.
    pub health: Health,
    /// Every table of the store.
    pub tables: Vec<TableStats>,
}

/// One execution of an instance.
#[derive(Debug, Clone, Serialize)]
pub struct ExecutionSummary {
    /// Execution id (1, then one more per continue-as-new).
    pub execution_id: u64,
    /// Its status.
    pub status: String,
    /// Its output or error, if finished.
    pub output: Option<String>,
    /// Started, ms since the Unix epoch.
    pub started_at_ms: i64,
    /// Finished, ms since the Unix epoch.
    pub completed_at_ms: Option<i64>,
    /// Events in its history.
    pub events: u64,
}

/// A message or work item waiting for an instance.
#[derive(Debug, Clone, Serialize)]
pub struct PendingItem {
    /// The queue holding it.
    pub queue: QueueName,
    /// Its row id.
    pub item_id: i64,
    /// The work item's kind (`ActivityExecute`, `TimerFired`, ...).
    pub kind: String,
    /// Visible from, ms since the Unix epoch.
    pub visible_at_ms: i64,
    /// Times it was fetched.
    pub attempt_count: i32,
    /// Its lease.
    pub lease: LeaseState,
    /// End of its lease, if leased.
    pub locked_until_ms: Option<i64>,
}

/// Everything about one instance (the CLI's `show`).
#[derive(Debug, Clone, Serialize)]
pub struct InstanceDetail {
    /// Instance id.
    pub instance_id: String,
    /// Orchestration name.
    pub orchestration_name: String,
    /// Orchestration version.
    pub orchestration_version: Option<String>,
    /// Status of the current execution.
    pub status: String,
    /// Output (or error) of the current execution.
    pub output: Option<String>,
    /// The current execution.
    pub current_execution_id: u64,
    /// Parent instance of a sub-orchestration.
    pub parent_instance_id: Option<String>,
    /// Custom status set by the orchestration.
    pub custom_status: Option<String>,
    /// How many times the custom status changed.
    pub custom_status_version: u64,
    /// Created, ms since the Unix epoch.
    pub created_at_ms: i64,
    /// Last changed, ms since the Unix epoch.
    pub updated_at_ms: i64,
    /// Every execution, oldest first.
    pub executions: Vec<ExecutionSummary>,
    /// The history of every execution, as a timeline.
    pub history: Vec<HistoryEntry>,
    /// Whether older events were left out of `history`.
    pub history_truncated: bool,
    /// Messages and work items not consumed yet.
    pub pending: Vec<PendingItem>,
    /// The instance's KV state.
    pub kv: BTreeMap<String, String>,
    /// Sub-orchestrations started by it.
    pub children: Vec<String>,
}

/// Why work is listed by [`Inspector::stuck`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum StuckReason {
    /// Claimable for longer than the threshold: no dispatcher takes it.
    ReadyTooLong,
    /// Fetched at least the threshold number of times: it keeps failing.
    TooManyAttempts,
    /// Its lease expired and nobody claimed it again: its worker died.
    LeaseExpired,
}

/// Work that does not move.
#[derive(Debug, Clone, Serialize)]
pub struct StuckWork {
    /// The queue holding it.
    pub queue: QueueName,
    /// Its instance.
    pub instance_id: String,
    /// The (oldest) row id.
    pub item_id: i64,
    /// Messages of the instance waiting (orchestrator queue), 1 for an item.
    pub messages: u64,
    /// The kind of the (oldest) item.
    pub kind: String,
    /// How long it has been claimable.
    pub ready_age_ms: Option<u64>,
    /// Times fetched.
    pub attempt_count: i32,
    /// How long ago its lease expired.
    pub lease_expired_ms: Option<u64>,
    /// The orchestration's name, if the instance exists.
    pub orchestration_name: Option<String>,
    /// The duroxide version its execution is pinned to.
    pub pinned_version: Option<String>,
    /// The activity's tag (worker items).
    pub tag: Option<String>,
    /// The activity's session (worker items).
    pub session_id: Option<String>,
    /// The worker holding that session, if any.
    pub session_owner: Option<String>,
    /// Until when that worker holds the session.
    pub session_locked_until_ms: Option<i64>,
    /// Why it is listed.
    pub reasons: Vec<StuckReason>,
    /// The reasons and the likely cause, in words.
    pub why: String,
}

/// A page of the instance listing, serializable (the CLI's `list --json`).
#[derive(Debug, Clone, Serialize)]
pub struct InstanceList {
    /// The instances, newest first.
    pub items: Vec<InstanceSummary>,
    /// The cursor of the next page ([`InstanceCursor::token`]), when this
    /// page was full.
    pub next_cursor: Option<String>,
}

/// Completions and failures per time bucket; see [`Inspector::activity`].
#[derive(Debug, Clone, Serialize)]
pub struct Activity {
    /// Width of a bucket.
    pub bucket_ms: u64,
    /// The buckets, oldest first; the last one ends now.
    pub buckets: Vec<ActivityBucket>,
}

/// One bucket of an [`Activity`].
#[derive(Debug, Clone, Serialize)]
pub struct ActivityBucket {
    /// Start of the bucket (Unix ms, database clock).
    pub from_ms: i64,
    /// Instances whose current execution completed in it.
    pub completed: u64,
    /// Instances whose current execution failed in it.
    pub failed: u64,
}

impl Activity {
    /// Completions over all buckets.
    pub fn completed(&self) -> u64 {
        self.buckets.iter().map(|b| b.completed).sum()
    }

    /// Failures over all buckets.
    pub fn failed(&self) -> u64 {
        self.buckets.iter().map(|b| b.failed).sum()
    }
}

/// Read-only inspection of a store; see [`PostgresProvider::inspect`].
#[derive(Debug, Clone, Copy)]
pub struct Inspector<'a> {
    store: &'a PostgresProvider,
}

impl PostgresProvider {
    /// Read-only inspection of this store (health, instances, stuck work).
    pub fn inspect(&self) -> Inspector<'_> {
        Inspector { store: self }
    }
}

fn opt_u64(v: Option<i64>) -> Option<u64> {
    v.map(|v| v.max(0) as u64)
}

/// Parses the rows of `health_sample` (shared with the metrics sampler).
pub(crate) fn parse_health(
    op: &str,
    rows: &[Row],
    attempts_threshold: u32,
) -> Result<Health, ProviderError> {
    let mut queues = Vec::with_capacity(rows.len());
    let mut vacuum_holder = None;
    let mut usage = 0.0;
    for row in rows {
        let queue: String = rows::get(op, row, "queue")?;
        queues.push(QueueHealth {
            queue: QueueName::parse(op, &queue)?,
            ready: rows::count(op, row, "ready")?,
            delayed: rows::count(op, row, "delayed")?,
            leased: rows::count(op, row, "leased")?,
            expired_leases: rows::count(op, row, "expired_leases")?,
            oldest_ready_age_ms: opt_u64(rows::get(op, row, "oldest_ready_age_ms")?),
            at_attempts: rows::count(op, row, "at_attempts")?,
            dead_tuples: rows::count(op, row, "dead_tuples")?,
            live_tuples: rows::count(op, row, "live_tuples")?,
            total_bytes: rows::count(op, row, "total_bytes")?,
        });
        // The same on every row.
        usage = rows::get::<Option<f64>, _>(op, row, "notification_queue_usage")?.unwrap_or(0.0);
        let pid: Option<i32> = rows::get(op, row, "xmin_holder_pid")?;
        vacuum_holder = match pid {
            None => None,
            Some(pid) => Some(VacuumHolder {
                pid,
                transaction_age_ms: opt_u64(rows::get(op, row, "xmin_holder_age_ms")?),
                application: rows::get(op, row, "xmin_holder_application")?,
                query_start_ms: rows::get(op, row, "xmin_holder_query_start_ms")?,
            }),
        };
    }
    Ok(Health {
        queues,
        vacuum_holder,
        notification_queue_usage: usage,
        attempts_threshold,
    })
}

fn text(op: &str, what: &str, bytes: Option<Vec<u8>>) -> Result<Option<String>, ProviderError> {
    bytes.map(|b| crate::codec::utf8(op, what, b)).transpose()
}

/// The kind of a stored work item (its variant name), or `?` if it does not
/// decode with this build's duroxide.
fn item_kind(json: &str) -> String {
    match crate::codec::decode_item(json) {
        Ok(item) => crate::codec::kind(&item),
        Err(_) => "?".to_string(),
    }
}

impl Inspector<'_> {
    /// A health sample, counting messages fetched `attempts` times or more.
    pub async fn health(&self, attempts: u32) -> Result<Health, ProviderError> {
        const OP: &str = "inspect_health";
        let rows = self
            .store
            .call(OP, &sql::HEALTH_SAMPLE, &[&i64::from(attempts)])
            .await?;
        parse_health(OP, &rows, attempts)
    }

    /// Instances by status.
    pub async fn instance_counts(&self) -> Result<Vec<StatusCount>, ProviderError> {
        const OP: &str = "inspect_instance_counts";
        let rows = self.store.call(OP, &sql::INSTANCE_COUNTS, &[]).await?;
        rows.iter()
            .map(|r| {
                Ok(StatusCount {
                    status: rows::get(OP, r, "status")?,
                    instances: rows::count(OP, r, "instances")?,
                })
            })
            .collect()
    }

    /// Statistics of every table of the store.
    pub async fn table_stats(&self) -> Result<Vec<TableStats>, ProviderError> {
        const OP: &str = "inspect_table_stats";
        let rows = self.store.call(OP, &sql::TABLE_STATS, &[]).await?;
        rows.iter()
            .map(|r| {
                Ok(TableStats {
                    table: rows::get(OP, r, "table_name")?,
                    live_tuples: rows::count(OP, r, "live_tuples")?,
                    dead_tuples: rows::count(OP, r, "dead_tuples")?,
                    total_bytes: rows::count(OP, r, "total_bytes")?,
                    last_vacuum_ms: rows::get(OP, r, "last_vacuum_ms")?,
                })
            })
            .collect()
    }

    /// One page of instances matching `query`, after `cursor` (`None`: the
    /// first page); see [`PostgresProvider::list_instance_page`].
    pub async fn list(
        &self,
        query: &InstanceQuery,
        cursor: Option<&InstanceCursor>,
    ) -> Result<InstanceList, ProviderError> {
        let page = self.store.list_instance_page(query, cursor).await?;
        Ok(InstanceList {
            items: page.items,
            next_cursor: page.next_cursor.map(|c| c.token()),
        })
    }

    /// Instances completed and failed in each of `buckets` buckets of
    /// `bucket` width ending now (database clock), from the completion-time
    /// index (cost follows what finished in the window).
    pub async fn activity(
        &self,
        bucket: Duration,
        buckets: u32,
    ) -> Result<Activity, ProviderError> {
        const OP: &str = "inspect_activity";
        let bucket_ms = i64::try_from(bucket.as_millis()).unwrap_or(i64::MAX).max(1);
        let n = i32::try_from(buckets.max(1)).unwrap_or(i32::MAX);
        let rows = self
            .store
            .call(OP, &sql::COMPLETION_ACTIVITY, &[&bucket_ms, &n])
            .await?;
        let buckets = rows
            .iter()
            .map(|r| {
                Ok(ActivityBucket {
                    from_ms: rows::get(OP, r, "bucket_from_ms")?,
                    completed: rows::count(OP, r, "completed")?,
                    failed: rows::count(OP, r, "failed")?,
                })
            })
            .collect::<Result<Vec<_>, ProviderError>>()?;
        Ok(Activity {
            bucket_ms: bucket_ms as u64,
            buckets,
        })
    }

    /// Instances by status, queue health and table statistics.
    pub async fn status(&self, attempts: u32) -> Result<Status, ProviderError> {
        Ok(Status {
            schema: self.store.schema().to_string(),
            instances: self.instance_counts().await?,
            health: self.health(attempts).await?,
            tables: self.table_stats().await?,
        })
    }

    /// Everything about instance `id`, with at most `history_limit` events
    /// (the latest); `None` if there is no such instance.
    pub async fn instance(
        &self,
        id: &str,
        history_limit: u32,
    ) -> Result<Option<InstanceDetail>, ProviderError> {
        const OP: &str = "inspect_instance";
        let rows = self.store.call(OP, &sql::INSPECT_INSTANCE, &[&id]).await?;
        let Some(row) = rows.first() else {
            return Ok(None);
        };
        let executions = self
            .store
            .call(OP, &sql::INSPECT_EXECUTIONS, &[&id])
            .await?
            .iter()
            .map(|r| {
                Ok(ExecutionSummary {
                    execution_id: rows::count(OP, r, "execution_id")?,
                    status: rows::get(OP, r, "status")?,
                    output: text(OP, "output", rows::get(OP, r, "output")?)?,
                    started_at_ms: rows::get(OP, r, "started_at_ms")?,
                    completed_at_ms: rows::get(OP, r, "completed_at_ms")?,
                    events: rows::count(OP, r, "event_count")?,
                })
            })
            .collect::<Result<Vec<_>, ProviderError>>()?;
        let limit = i64::from(history_limit);
        let history_rows = self
            .store
            .call(OP, &sql::INSPECT_HISTORY, &[&id, &limit])
            .await?;
        let total_events: u64 = executions.iter().map(|e| e.events).sum();
        let history = history_rows
            .iter()
            .map(|r| {
                let execution_id = rows::count(OP, r, "execution_id")?;
                let event_id = rows::count(OP, r, "event_id")?;
                let data: String = rows::get(OP, r, "event_data")?;
                Ok(HistoryEntry::from_json(execution_id, event_id, &data))
            })
            .collect::<Result<Vec<_>, ProviderError>>()?;
        let pending = self
            .store
            .call(OP, &sql::INSPECT_PENDING, &[&id])
            .await?
            .iter()
            .map(|r| {
                let queue: String = rows::get(OP, r, "queue")?;
                let lease: String = rows::get(OP, r, "lease")?;
                let item: String = rows::get(OP, r, "work_item")?;
                Ok(PendingItem {
                    queue: QueueName::parse(OP, &queue)?,
                    item_id: rows::get(OP, r, "item_id")?,
                    kind: item_kind(&item),
                    visible_at_ms: rows::get(OP, r, "visible_at_ms")?,
                    attempt_count: rows::get(OP, r, "attempt_count")?,
                    lease: LeaseState::parse(OP, &lease)?,
                    locked_until_ms: rows::get(OP, r, "locked_until_ms")?,
                })
            })
            .collect::<Result<Vec<_>, ProviderError>>()?;
        let kv = self
            .store
            .get_kv_all_values(id)
            .await?
            .into_iter()
            .collect();
        let children = self.store.list_children(id).await?;
        Ok(Some(InstanceDetail {
            instance_id: rows::get(OP, row, "instance_id")?,
            orchestration_name: rows::get(OP, row, "orchestration_name")?,
            orchestration_version: rows::get(OP, row, "orchestration_version")?,
            status: rows::get(OP, row, "status")?,
            output: text(OP, "output", rows::get(OP, row, "output")?)?,
            current_execution_id: rows::count(OP, row, "current_execution_id")?,
            parent_instance_id: rows::get(OP, row, "parent_instance_id")?,
            custom_status: text(OP, "custom status", rows::get(OP, row, "custom_status")?)?,
            custom_status_version: rows::count(OP, row, "custom_status_version")?,
            created_at_ms: rows::get(OP, row, "created_at_ms")?,
            updated_at_ms: rows::get(OP, row, "updated_at_ms")?,
            history_truncated: (history.len() as u64) < total_events,
            executions,
            history,
            pending,
            kv,
            children,
        }))
    }

    /// Work that does not move (at most `limit` entries, worst first):
    /// claimable for `ready_for` or longer, fetched `attempts` times or more,
    /// or whose lease expired and was not claimed again.
    pub async fn stuck(
        &self,
        ready_for: Duration,
        attempts: u32,
        limit: u32,
    ) -> Result<Vec<StuckWork>, ProviderError> {
        const OP: &str = "inspect_stuck";
        let ready_ms = crate::codec::millis(ready_for);
        let rows = self
            .store
            .call(
                OP,
                &sql::STUCK_WORK,
                &[&ready_ms, &i64::from(attempts), &i64::from(limit)],
            )
            .await?;
        rows.iter()
            .map(|r| {
                let queue: String = rows::get(OP, r, "queue")?;
                let item: String = rows::get(OP, r, "work_item")?;
                let mut w = StuckWork {
                    queue: QueueName::parse(OP, &queue)?,
                    instance_id: rows::get(OP, r, "instance_id")?,
                    item_id: rows::get(OP, r, "item_id")?,
                    messages: rows::count(OP, r, "messages")?,
                    kind: item_kind(&item),
                    ready_age_ms: opt_u64(rows::get(OP, r, "ready_age_ms")?),
                    attempt_count: rows::get(OP, r, "attempt_count")?,
                    lease_expired_ms: opt_u64(rows::get(OP, r, "lease_expired_ms")?),
                    orchestration_name: rows::get(OP, r, "orchestration_name")?,
                    pinned_version: rows::get(OP, r, "pinned_version")?,
                    tag: rows::get(OP, r, "tag")?,
                    session_id: rows::get(OP, r, "session_id")?,
                    session_owner: rows::get(OP, r, "session_owner")?,
                    session_locked_until_ms: rows::get(OP, r, "session_locked_until_ms")?,
                    reasons: Vec::new(),
                    why: String::new(),
                };
                explain(&mut w, ready_ms.max(0) as u64, attempts);
                Ok(w)
            })
            .collect()
    }
}

/// Fills in `reasons` and `why` from the facts of `w`.
fn explain(w: &mut StuckWork, ready_ms: u64, attempts: u32) {
    let mut why = Vec::new();
    if let Some(age) = w.ready_age_ms.filter(|a| *a >= ready_ms) {
        w.reasons.push(StuckReason::ReadyTooLong);
        let mut cause = format!("ready for {}, no dispatcher took it", human_ms(age));
        if w.queue == QueueName::Orchestrator && w.orchestration_name.is_none() {
            cause.push_str(" (instance not started yet)");
        }
        if let Some(v) = &w.pinned_version {
            cause.push_str(&format!(
                " (pinned to duroxide {v}: does a runtime support it?)"
            ));
        }
        if let Some(tag) = &w.tag {
            cause.push_str(&format!(" (tag {tag:?}: does any worker fetch it?)"));
        }
        if let (Some(session), Some(owner)) = (&w.session_id, &w.session_owner) {
            cause.push_str(&format!(" (session {session:?} held by {owner})"));
        }
        why.push(cause);
    }
    if w.attempt_count >= 0 && w.attempt_count as u32 >= attempts {
        w.reasons.push(StuckReason::TooManyAttempts);
        why.push(format!(
            "fetched {} times: it keeps failing or timing out (poison candidate)",
            w.attempt_count
        ));
    }
    if let Some(ago) = w.lease_expired_ms {
        w.reasons.push(StuckReason::LeaseExpired);
        why.push(format!(
            "lease expired {} ago and nobody claimed it again: its worker died or stalled",
            human_ms(ago)
        ));
    }
    w.why = why.join("; ");
}

/// `1.5s`, `3m12s`, `2h05m`, `4d03h`.
pub fn human_ms(ms: u64) -> String {
    let s = ms / 1000;
    match s {
        0..=59 => format!("{:.1}s", ms as f64 / 1000.0),
        60..=3599 => format!("{}m{:02}s", s / 60, s % 60),
        3600..=86_399 => format!("{}h{:02}m", s / 3600, (s % 3600) / 60),
        _ => format!("{}d{:02}h", s / 86_400, (s % 86_400) / 3600),
    }
}

#[cfg(test)]
mod tests {
    use super::human_ms;

    #[test]
    fn durations_read_well() {
        assert_eq!(human_ms(1_500), "1.5s");
        assert_eq!(human_ms(192_000), "3m12s");
        assert_eq!(human_ms(7_500_000), "2h05m");
        assert_eq!(human_ms(3 * 86_400_000 + 3_600_000), "3d01h");
    }
}
