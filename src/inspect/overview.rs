//! What the dashboard's overview, its search and the `top` view ask beyond
//! the CLI's reads: per-minute figures, failures grouped, prefix search and
//! write counters (SQL: the end of `sql/functions/inspect.sql`).
//!
//! Their descriptors live here, beside their only caller, with the same
//! shape as those of `src/provider/functions.rs`: each call is prepared with
//! the declared parameter types and named notation, so a mismatch with the
//! SQL fails on the first call (the dashboard tests make every one).

use super::{history::HistoryEntry, Inspector};
use crate::provider::functions::{self as sql, SqlFn};
use crate::provider::rows;
use crate::InstanceSummary;
use duroxide::providers::ProviderError;
use serde::Serialize;
use std::collections::BTreeMap;
use std::time::Duration;
use tokio_postgres::types::Type;

const MINUTE_FIGURES: SqlFn = SqlFn {
    name: "minute_figures",
    params: &[("p_minutes", Type::INT4)],
    class: sql::INSTANCE_COUNTS.class,
};
const RECENT_FAILURES: SqlFn = SqlFn {
    name: "recent_failures",
    params: &[("p_window_ms", Type::INT8), ("p_limit", Type::INT4)],
    class: sql::INSTANCE_COUNTS.class,
};
const SEARCH_INSTANCES: SqlFn = SqlFn {
    name: "search_instances",
    params: &[
        ("p_prefix", Type::TEXT),
        ("p_after", Type::TEXT),
        ("p_limit", Type::INT4),
        ("p_scan", Type::INT4),
    ],
    class: sql::INSTANCE_COUNTS.class,
};
const WRITE_COUNTERS: SqlFn = SqlFn {
    name: "write_counters",
    params: &[],
    class: sql::INSTANCE_COUNTS.class,
};

/// One minute of [`Inspector::minutes`].
#[derive(Debug, Clone, Serialize)]
pub struct Minute {
    /// Start of the minute (Unix ms, database clock).
    pub from_ms: i64,
    /// Instances created in it.
    pub started: u64,
    /// Instances whose current execution completed in it.
    pub completed: u64,
    /// Instances whose current execution failed in it.
    pub failed: u64,
    /// Start-to-finish latency of the instances that finished in it:
    /// median, 95th and 99th percentile and maximum (None: none finished).
    pub p50_ms: Option<u64>,
    /// 95th percentile.
    pub p95_ms: Option<u64>,
    /// 99th percentile.
    pub p99_ms: Option<u64>,
    /// Maximum.
    pub max_ms: Option<u64>,
}

/// How often one orchestration or activity failed; see
/// [`Inspector::failures`].
#[derive(Debug, Clone, Serialize)]
pub struct FailureGroup {
    /// The orchestration or activity name.
    pub name: String,
    /// How many failures.
    pub failures: u64,
    /// The instance of the latest one.
    pub latest_instance_id: String,
    /// Its error, readable.
    pub latest_error: Option<String>,
}

/// Failures of a recent window, grouped.
#[derive(Debug, Clone, Serialize)]
pub struct Failures {
    /// The window.
    pub window_ms: u64,
    /// Failed instances looked at (the latest, at most the limit asked for).
    pub instances: u64,
    /// Whether more instances failed in the window than were looked at.
    pub truncated: bool,
    /// By orchestration name, most failures first.
    pub by_orchestration: Vec<FailureGroup>,
    /// By activity (or sub-orchestration) name, from the failure events of
    /// those instances' current executions, most failures first.
    pub by_activity: Vec<FailureGroup>,
}

/// Cumulative write counters of the store (PostgreSQL's statistics): the
/// difference of two samples is a rate.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct WriteCounters {
    /// History events appended since the statistics were reset.
    pub history_inserted: u64,
    /// When sampled (Unix ms, database clock).
    pub sampled_at_ms: i64,
}

fn opt(v: Option<i64>) -> Option<u64> {
    v.map(|v| v.max(0) as u64)
}

/// Adds one failure to `groups` (rows come newest first, so the first one
/// seen of a name is its latest).
fn count(groups: &mut BTreeMap<String, FailureGroup>, name: &str, id: &str, err: Option<String>) {
    groups
        .entry(name.to_string())
        .or_insert_with(|| FailureGroup {
            name: name.to_string(),
            failures: 0,
            latest_instance_id: id.to_string(),
            latest_error: err,
        })
        .failures += 1;
}

fn ranked(groups: BTreeMap<String, FailureGroup>) -> Vec<FailureGroup> {
    let mut v: Vec<FailureGroup> = groups.into_values().collect();
    v.sort_by(|a, b| b.failures.cmp(&a.failures).then(a.name.cmp(&b.name)));
    v
}

impl Inspector<'_> {
    /// Started, completed and failed instances and finish latency
    /// percentiles for each of the last `minutes` minutes (the last one is
    /// the current, partial minute), from the creation- and completion-time
    /// indexes.
    pub async fn minutes(&self, minutes: u32) -> Result<Vec<Minute>, ProviderError> {
        const OP: &str = "inspect_minutes";
        let n = i32::try_from(minutes.clamp(1, 24 * 60)).unwrap_or(60);
        let rows = self.store.call(OP, &MINUTE_FIGURES, &[&n]).await?;
        rows.iter()
            .map(|r| {
                Ok(Minute {
                    from_ms: rows::get(OP, r, "minute_from_ms")?,
                    started: rows::count(OP, r, "started")?,
                    completed: rows::count(OP, r, "completed")?,
                    failed: rows::count(OP, r, "failed")?,
                    p50_ms: opt(rows::get(OP, r, "p50_ms")?),
                    p95_ms: opt(rows::get(OP, r, "p95_ms")?),
                    p99_ms: opt(rows::get(OP, r, "p99_ms")?),
                    max_ms: opt(rows::get(OP, r, "max_ms")?),
                })
            })
            .collect()
    }

    /// The failures of the last `window`, grouped by orchestration and by
    /// activity, over the latest `limit` failed instances.
    pub async fn failures(&self, window: Duration, limit: u32) -> Result<Failures, ProviderError> {
        const OP: &str = "inspect_failures";
        let window_ms = crate::codec::millis(window);
        // One more than asked: whether there were more.
        let ask = i32::try_from(limit.saturating_add(1)).unwrap_or(i32::MAX);
        let rows = self
            .store
            .call(OP, &RECENT_FAILURES, &[&window_ms, &ask])
            .await?;
        let mut instances: Vec<String> = Vec::new();
        let mut by_orchestration = BTreeMap::new();
        let mut by_activity = BTreeMap::new();
        let mut orchestration_error: BTreeMap<String, Option<String>> = BTreeMap::new();
        let mut rows_of: Vec<(String, String, Option<HistoryEntry>, Option<String>)> = Vec::new();
        for r in &rows {
            let id: String = rows::get(OP, r, "instance_id")?;
            let name: String = rows::get(OP, r, "orchestration_name")?;
            let data: Option<String> = rows::get(OP, r, "event_data")?;
            let scheduled: Option<String> = rows::get(OP, r, "scheduled_name")?;
            if !instances.contains(&id) {
                if instances.len() as u32 == limit {
                    break;
                }
                instances.push(id.clone());
            }
            let event = data.map(|d| HistoryEntry::from_json(0, 0, &d));
            if let Some(e) = &event {
                if e.kind == "OrchestrationFailed" {
                    orchestration_error.insert(id.clone(), e.error.clone());
                }
            }
            rows_of.push((id, name, event, scheduled));
        }
        let mut counted: Vec<&str> = Vec::new();
        for (id, name, event, scheduled) in &rows_of {
            if !counted.contains(&id.as_str()) {
                counted.push(id);
                let err = orchestration_error.get(id).cloned().flatten();
                count(&mut by_orchestration, name, id, err);
            }
            if let Some(e) = event.as_ref().filter(|e| e.kind != "OrchestrationFailed") {
                let what = scheduled.as_deref().unwrap_or("?");
                count(&mut by_activity, what, id, e.error.clone());
            }
        }
        let truncated = rows
            .iter()
            .filter_map(|r| rows::get::<String, _>(OP, r, "instance_id").ok())
            .any(|id| !instances.contains(&id));
        Ok(Failures {
            window_ms: window_ms.max(0) as u64,
            instances: instances.len() as u64,
            truncated,
            by_orchestration: ranked(by_orchestration),
            by_activity: ranked(by_activity),
        })
    }

    /// Instances whose id starts with `prefix`, in id order, after the id
    /// `after` (the last of the previous page), at most `limit`: a bounded
    /// range scan of the primary key (see `search_instances` in
    /// `sql/functions/inspect.sql` for what a linguistic collation changes).
    pub async fn search(
        &self,
        prefix: &str,
        after: Option<&str>,
        limit: u32,
    ) -> Result<Vec<InstanceSummary>, ProviderError> {
        const OP: &str = "inspect_search";
        let limit = i32::try_from(limit.clamp(1, 500)).unwrap_or(50);
        let scan = limit.saturating_mul(20).max(1000);
        let rows = self
            .store
            .call(OP, &SEARCH_INSTANCES, &[&prefix, &after, &limit, &scan])
            .await?;
        rows.iter()
            .map(|r| {
                Ok(InstanceSummary {
                    instance_id: rows::get(OP, r, "instance_id")?,
                    orchestration_name: rows::get(OP, r, "orchestration_name")?,
                    orchestration_version: rows::get::<Option<String>, _>(
                        OP,
                        r,
                        "orchestration_version",
                    )?
                    .unwrap_or_else(|| "unknown".to_string()),
                    status: rows::get(OP, r, "status")?,
                    current_execution_id: rows::count(OP, r, "current_execution_id")?,
                    parent_instance_id: rows::get(OP, r, "parent_instance_id")?,
                    created_at_ms: rows::count(OP, r, "created_at_ms")?,
                    updated_at_ms: rows::count(OP, r, "updated_at_ms")?,
                    completed_at_ms: opt(rows::get(OP, r, "completed_at_ms")?),
                })
            })
            .collect()
    }

    /// The store's cumulative write counters (for rates in a live view).
    pub async fn write_counters(&self) -> Result<WriteCounters, ProviderError> {
        const OP: &str = "inspect_write_counters";
        let rows = self.store.call(OP, &WRITE_COUNTERS, &[]).await?;
        let r = rows
            .first()
            .ok_or_else(|| ProviderError::permanent(OP, "write_counters returned no row"))?;
        Ok(WriteCounters {
            history_inserted: rows::count(OP, r, "history_inserted")?,
            sampled_at_ms: rows::get(OP, r, "sampled_at_ms")?,
        })
    }
}
