//! Orchestrator queue calls: `sql/functions/orchestrator_queue.sql`.

use super::claim::Param;
use super::functions as sql;
use super::prefetch::{OrchestrationAsk, Taken};
use super::rows::{count32, get};
use super::PostgresProvider;
use crate::codec::{self, millis};
use crate::wakeups::{Made, Polled, Queue, Wake};
use duroxide::providers::{
    DispatcherCapabilityFilter, ExecutionMetadata, KvEntry, OrchestrationItem, ProviderError,
    ScheduledActivityIdentifier, WorkItem,
};
use duroxide::{Event, EventKind};
use std::collections::{BTreeMap, HashMap};
use std::time::Duration;
use tokio_postgres::Row;

/// Execution id of a brand-new instance.
const FIRST_EXECUTION: u64 = 1;

impl PostgresProvider {
    pub(super) async fn enqueue_orchestrator(
        &self,
        item: &WorkItem,
        delay: Option<Duration>,
    ) -> Result<(), ProviderError> {
        const OP: &str = "enqueue_for_orchestrator";
        let route = codec::orchestrator_route(OP, item)?;
        let text = codec::encode_item(OP, item)?;
        // Visible after `delay` whatever the kind: a TimerFired enqueued
        // here is not held until its fire_at_ms (only an ack's timers are).
        let delay_ms = delay.map(millis);
        // Generated once per call: every retry of this call carries it.
        let request_id = uuid::Uuid::new_v4();
        let announce = self.announcement(Queue::Orchestrator, Wake::Count(1));
        let row = self
            .call_one(
                OP,
                &sql::ENQUEUE_ORCHESTRATOR,
                &[
                    &route.instance,
                    &route.kind,
                    &text,
                    &delay_ms,
                    &request_id,
                    &announce,
                ],
            )
            .await?;
        // NULL: an earlier attempt of this call committed; what it made
        // ready is unknown, so wake as if ready.
        let ready: Option<bool> = get(OP, &row, "ready")?;
        let due = Made::due(get(OP, &row, "due_in_ms")?);
        let made = Made {
            orchestrator: u32::from(ready.unwrap_or(due.is_none())),
            orchestrator_due: due,
            ..Made::default()
        };
        self.committed(made, announce.is_some());
        Ok(())
    }

    pub(super) async fn fetch_orchestration(
        &self,
        lock_timeout: Duration,
        poll_timeout: Duration,
        filter: Option<&DispatcherCapabilityFilter>,
    ) -> Result<Option<(OrchestrationItem, String, u32)>, ProviderError> {
        const OP: &str = "fetch_orchestration_item";
        // Phase 1 of capability filtering: only the first range counts; no
        // range means nothing is compatible.
        let (min, max) = match filter {
            None => (None, None),
            Some(f) => match f.supported_duroxide_versions.first() {
                None => return Ok(None),
                Some(r) => (Some(semver_triple(&r.min)), Some(semver_triple(&r.max))),
            },
        };
        self.db.leases_last(lock_timeout);
        let ask = OrchestrationAsk {
            min,
            max,
            lock_ms: millis(lock_timeout),
        };
        self.give_back(&self.orchestration_prefetch, Queue::Orchestrator, &ask)
            .await;
        // Only a fetch that cannot be woken later waits, in SQL, for claims
        // in progress on ready instances (orchestrator_queue.sql).
        let wait_for_claims = !self.long_poll || poll_timeout.is_zero();
        let filter_key = ask.filter_key();
        let keys = (filter_key.as_str(), filter_key.as_str());
        let fetched = self
            .poll(Queue::Orchestrator, keys, poll_timeout, || async {
                self.reclaimer.fetching();
                // What the ack before this fetch claimed for it (prefetch.rs).
                let epoch = self.signals.epoch(Queue::Orchestrator, &filter_key);
                match self
                    .orchestration_prefetch
                    .take(&ask, epoch, wait_for_claims)
                {
                    Some(Taken::Turn { row, current }) => return polled(self, &row, current),
                    Some(Taken::Nothing { next_visible_in_ms }) => {
                        return Ok(Polled::empty(next_visible_in_ms))
                    }
                    None => {}
                }
                let params: Vec<Param> = vec![
                    Box::new(ask.lock_ms),
                    Box::new(ask.min.clone()),
                    Box::new(ask.max.clone()),
                    Box::new(wait_for_claims),
                    Box::new(None::<String>),
                ];
                let claim = self
                    .claim(
                        OP,
                        &sql::FETCH_ORCHESTRATION_ITEM,
                        params,
                        &sql::ABANDON_ORCHESTRATION_ITEM,
                        Queue::Orchestrator,
                    )
                    .await?;
                // Accepted with no await before the item is returned.
                let row = claim.accept().into_iter().next().ok_or_else(|| {
                    ProviderError::permanent(OP, "fetch_orchestration_item returned no row")
                })?;
                polled(self, &row, true)
            })
            .await?;
        if let Some((_, token, _)) = &fetched {
            self.orchestration_prefetch.handed(token, &ask);
        }
        Ok(fetched)
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) async fn ack_orchestration(
        &self,
        lock_token: &str,
        execution_id: u64,
        history_delta: &[Event],
        worker_items: &[WorkItem],
        orchestrator_items: &[WorkItem],
        metadata: &ExecutionMetadata,
        cancelled: &[ScheduledActivityIdentifier],
    ) -> Result<(), ProviderError> {
        const OP: &str = "ack_orchestration_item";
        let execution = codec::id(OP, execution_id)?;

        let mut event_ids = Vec::with_capacity(history_delta.len());
        let mut events = Vec::with_capacity(history_delta.len());
        for e in history_delta {
            event_ids.push(codec::id(OP, e.event_id)?);
            events.push(codec::encode_event(OP, e)?);
        }

        let mut w_items = Vec::with_capacity(worker_items.len());
        let mut w_instances = Vec::with_capacity(worker_items.len());
        let mut w_executions = Vec::with_capacity(worker_items.len());
        let mut w_activities = Vec::with_capacity(worker_items.len());
        let mut w_sessions = Vec::with_capacity(worker_items.len());
        let mut w_tags = Vec::with_capacity(worker_items.len());
        for item in worker_items {
            let route = codec::worker_route(OP, item)?;
            w_items.push(codec::encode_item(OP, item)?);
            w_instances.push(route.instance);
            w_executions.push(route.execution_id);
            w_activities.push(route.activity_id);
            w_sessions.push(route.session_id);
            w_tags.push(route.tag);
        }

        let mut o_items = Vec::with_capacity(orchestrator_items.len());
        let mut o_instances = Vec::with_capacity(orchestrator_items.len());
        let mut o_kinds = Vec::with_capacity(orchestrator_items.len());
        let mut o_visible = Vec::with_capacity(orchestrator_items.len());
        for item in orchestrator_items {
            let route = codec::orchestrator_route(OP, item)?;
            o_items.push(codec::encode_item(OP, item)?);
            o_instances.push(route.instance);
            o_kinds.push(route.kind);
            o_visible.push(route.fire_at_ms);
        }

        let mut c_instances = Vec::with_capacity(cancelled.len());
        let mut c_executions = Vec::with_capacity(cancelled.len());
        let mut c_activities = Vec::with_capacity(cancelled.len());
        for c in cancelled {
            c_instances.push(c.instance.as_str());
            c_executions.push(codec::id(OP, c.execution_id)?);
            c_activities.push(codec::id(OP, c.activity_id)?);
        }

        for name in [
            &metadata.orchestration_name,
            &metadata.orchestration_version,
        ]
        .into_iter()
        .flatten()
        {
            codec::check_name(OP, "orchestration name or version", name, false)?;
        }
        if let Some(parent) = &metadata.parent_instance_id {
            codec::check_instance(OP, parent)?;
        }
        let output = metadata.output.as_deref().map(str::as_bytes);
        let status_change = StatusChange::from_delta(history_delta);
        let kv = KvChanges::from_delta(OP, history_delta)?;
        let pinned = metadata.pinned_duroxide_version.as_ref().map(semver_triple);
        // The next turn, claimed by this ack for the fetch that follows it
        // (prefetch.rs), with the epoch its answer is current at.
        let next = self
            .orchestration_prefetch
            .asked_for(lock_token)
            .map(|ask| {
                let epoch = self.signals.epoch(Queue::Orchestrator, &ask.filter_key());
                (ask, epoch)
            });
        let (next_lock_ms, next_min, next_max) = match &next {
            Some((ask, _)) => (Some(ask.lock_ms), ask.min.clone(), ask.max.clone()),
            None => (None, None, None),
        };
        let params: &[&(dyn tokio_postgres::types::ToSql + Sync)] = &[
            &lock_token,
            &execution,
            &event_ids,
            &events,
            &w_items,
            &w_instances,
            &w_executions,
            &w_activities,
            &w_sessions,
            &w_tags,
            &o_items,
            &o_instances,
            &o_kinds,
            &o_visible,
            &metadata.status,
            &output,
            &metadata.orchestration_name,
            &metadata.orchestration_version,
            &metadata.parent_instance_id,
            &pinned,
            &c_instances,
            &c_executions,
            &c_activities,
            &status_change.action,
            &status_change.value,
            &kv.clear_all,
            &kv.keys,
            &kv.values,
            &kv.updated_at_ms,
            &next_lock_ms,
            &next_min,
            &next_max,
        ];
        let row = self
            .ack_resolving(
                OP,
                Queue::Orchestrator,
                &sql::ACK_ORCHESTRATION_ITEM,
                &sql::ACK_OUTCOME,
                lock_token,
                params,
            )
            .await?;
        // What the turn made ready; when unknown (an earlier attempt
        // committed and its reply was lost), all it could have.
        let made = match &row {
            Some(row) => Made {
                own: get(OP, row, "own_ready")?,
                orchestrator: count32(OP, row, "others_ready")?,
                orchestrator_due: Made::due(get(OP, row, "due_in_ms")?),
                worker: count32(OP, row, "work_ready")?,
                worker_for_sessions: get(OP, row, "work_for_sessions")?,
                worker_due: None,
            },
            None => Made {
                own: true,
                orchestrator: distinct(&o_instances),
                orchestrator_due: None,
                worker: worker_items.len() as u32,
                worker_for_sessions: w_sessions.iter().any(Option::is_some),
                worker_due: None,
            },
        };
        self.committed(made, false);
        if let (Some(row), Some((ask, epoch))) = (row, next) {
            self.orchestration_prefetched(ask, epoch, row)?;
        }
        Ok(())
    }

    pub(super) async fn abandon_orchestration(
        &self,
        lock_token: &str,
        delay: Option<Duration>,
        ignore_attempt: bool,
    ) -> Result<(), ProviderError> {
        const OP: &str = "abandon_orchestration_item";
        self.orchestration_prefetch.asked_for(lock_token);
        let delay_ms = delay.map(millis);
        let row = self
            .call_one(
                OP,
                &sql::ABANDON_ORCHESTRATION_ITEM,
                &[&lock_token, &delay_ms, &ignore_attempt],
            )
            .await?;
        // Not handed back: the runtime abandons when it cannot process the
        // instance now, so another dispatcher (or process) should take it.
        let made = Made {
            orchestrator: u32::from(get::<bool, _>(OP, &row, "ready")?),
            orchestrator_due: Made::due(get(OP, &row, "due_in_ms")?),
            ..Made::default()
        };
        self.committed(made, false);
        Ok(())
    }

    pub(super) async fn renew_orchestration(
        &self,
        lock_token: &str,
        extend_for: Duration,
    ) -> Result<(), ProviderError> {
        let extend_ms = millis(extend_for);
        self.renew_retrying(Queue::Orchestrator, extend_for, || async {
            self.call(
                "renew_orchestration_item_lock",
                &sql::RENEW_ORCHESTRATION_ITEM_LOCK,
                &[&lock_token, &extend_ms],
            )
            .await
            .map(|_| ())
        })
        .await
    }
}

/// What a fetch's `row` (of `fetch_orchestration_item`, or an ack's claim
/// of the next turn) yields. `current`: the row's "nothing else ready" still
/// holds (no wake since it was read), so the turn may be reported as the
/// only ready one.
fn polled(
    provider: &PostgresProvider,
    row: &Row,
    current: bool,
) -> Result<Polled<(OrchestrationItem, String, u32)>, ProviderError> {
    const OP: &str = "fetch_orchestration_item";
    let Some(instance) = get::<Option<String>, _>(OP, row, "instance_id")? else {
        return Ok(Polled::empty(get(OP, row, "next_visible_in_ms")?));
    };
    let item = build_item(instance, row)?;
    if get::<Option<bool>, _>(OP, row, "took_over")? == Some(true) {
        provider.db.target.lease_taken_over(Queue::Orchestrator);
    }
    Ok(match get::<Option<bool>, _>(OP, row, "more_ready")? {
        Some(false) if current => Polled::ready_last(item, get(OP, row, "next_visible_in_ms")?),
        _ => Polled::Ready(item),
    })
}

/// Builds the fetched item from the row of `fetch_orchestration_item`.
/// Undecodable history, messages or KV come back as `history_error` (the
/// lease is held and the attempt counted), never as `Err`.
fn build_item(
    instance: String,
    row: &Row,
) -> Result<(OrchestrationItem, String, u32), ProviderError> {
    const OP: &str = "fetch_orchestration_item";
    let token: String = get(OP, row, "lock_token")?;
    let attempts: i32 = get(OP, row, "attempt_count")?;
    let exists: bool = get(OP, row, "instance_exists")?;
    // The current execution (the newest in history for an instance without
    // a row yet), or the first one of an instance with neither.
    let stored_execution = get::<Option<i64>, _>(OP, row, "execution_id")?
        .map_or(FIRST_EXECUTION, |e| e.max(0) as u64);
    let message_texts: Vec<String> = get(OP, row, "messages")?;
    let history_texts: Option<Vec<String>> = get(OP, row, "history")?;

    let mut errors = Vec::new();
    let mut messages = Vec::with_capacity(message_texts.len());
    for text in &message_texts {
        match codec::decode_item(text) {
            Ok(m) => messages.push(m),
            Err(e) => errors.push(e),
        }
    }
    let mut history = Vec::new();
    for text in history_texts.iter().flatten() {
        match codec::decode_event(text) {
            Ok(e) => history.push(e),
            Err(e) => {
                errors.push(e);
                break;
            }
        }
    }
    let kv_snapshot = match kv_snapshot(row) {
        Ok(kv) => kv,
        Err(e) => {
            errors.push(e);
            HashMap::new()
        }
    };

    let (name, version, execution_id) = if exists {
        (
            get(OP, row, "orchestration_name")?,
            codec::or_unknown(get(OP, row, "orchestration_version")?),
            stored_execution,
        )
    } else {
        derive_identity(&history, &messages, stored_execution)
    };

    let history_error = if errors.is_empty() {
        None
    } else {
        history.clear();
        Some(format!("instance {instance}: {}", errors.join("; ")))
    };
    let item = OrchestrationItem {
        instance,
        orchestration_name: name,
        execution_id,
        version,
        history,
        messages,
        history_error,
        kv_snapshot,
    };
    Ok((item, token, attempts.max(0) as u32))
}

/// The KV snapshot; a value that is not UTF-8 is reported, never dropped.
fn kv_snapshot(row: &Row) -> Result<HashMap<String, KvEntry>, String> {
    let column = |e: ProviderError| e.to_string();
    const OP: &str = "fetch_orchestration_item";
    let keys: Option<Vec<String>> = get(OP, row, "kv_keys").map_err(column)?;
    let values: Option<Vec<Vec<u8>>> = get(OP, row, "kv_values").map_err(column)?;
    let updated: Option<Vec<i64>> = get(OP, row, "kv_updated_at_ms").map_err(column)?;
    keys.unwrap_or_default()
        .into_iter()
        .zip(values.unwrap_or_default())
        .zip(updated.unwrap_or_default())
        .map(|((key, value), at)| {
            let value = String::from_utf8(value)
                .map_err(|e| format!("undecodable KV value of key {key:?}: {e}"))?;
            Ok((
                key,
                KvEntry {
                    value,
                    last_updated_at_ms: at.max(0) as u64,
                },
            ))
        })
        .collect()
}

/// Name, version and execution of an instance that has no row yet: from its
/// history, else from a start in the batch.
fn derive_identity(
    history: &[Event],
    messages: &[WorkItem],
    stored_execution: u64,
) -> (String, String, u64) {
    for event in history {
        if let EventKind::OrchestrationStarted { name, version, .. } = &event.kind {
            return (name.clone(), version.clone(), event.execution_id);
        }
    }
    for m in messages {
        match m {
            WorkItem::StartOrchestration {
                orchestration,
                version,
                execution_id,
                ..
            } => {
                return (
                    orchestration.clone(),
                    codec::or_unknown(version.as_deref()),
                    *execution_id,
                )
            }
            WorkItem::ContinueAsNew {
                orchestration,
                version,
                ..
            } => {
                return (
                    orchestration.clone(),
                    codec::or_unknown(version.as_deref()),
                    stored_execution,
                )
            }
            _ => {}
        }
    }
    (
        codec::or_unknown(None),
        codec::or_unknown(None),
        stored_execution,
    )
}

/// A pinned duroxide version as the [major, minor, patch] the SQL compares.
fn semver_triple(v: &semver::Version) -> Vec<i64> {
    let part = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
    vec![part(v.major), part(v.minor), part(v.patch)]
}

/// The custom-status change of a turn: the last `CustomStatusUpdated` wins.
struct StatusChange {
    /// 0 unchanged, 1 set, 2 cleared.
    action: i16,
    value: Option<Vec<u8>>,
}

impl StatusChange {
    fn from_delta(delta: &[Event]) -> Self {
        let last = delta.iter().rev().find_map(|e| match &e.kind {
            EventKind::CustomStatusUpdated { status } => Some(status.clone()),
            _ => None,
        });
        match last {
            None => Self {
                action: 0,
                value: None,
            },
            Some(Some(s)) => Self {
                action: 1,
                value: Some(s.into_bytes()),
            },
            Some(None) => Self {
                action: 2,
                value: None,
            },
        }
    }
}

/// The net KV effect of a turn: whether everything was cleared, then the
/// final value of each key written after the last clear (None = tombstone).
struct KvChanges {
    clear_all: bool,
    keys: Vec<String>,
    values: Vec<Option<Vec<u8>>>,
    updated_at_ms: Vec<i64>,
}

impl KvChanges {
    fn from_delta(op: &str, delta: &[Event]) -> Result<Self, ProviderError> {
        let mut clear_all = false;
        let mut writes: BTreeMap<String, (Option<String>, i64)> = BTreeMap::new();
        for e in delta {
            match &e.kind {
                EventKind::KeyValueSet {
                    key,
                    value,
                    last_updated_at_ms,
                } => {
                    writes.insert(
                        key.clone(),
                        (
                            Some(value.clone()),
                            i64::try_from(*last_updated_at_ms).unwrap_or(i64::MAX),
                        ),
                    );
                }
                EventKind::KeyValueCleared { key } => {
                    writes.insert(
                        key.clone(),
                        (None, i64::try_from(e.timestamp_ms).unwrap_or(i64::MAX)),
                    );
                }
                EventKind::KeyValuesCleared => {
                    clear_all = true;
                    writes.clear();
                }
                _ => {}
            }
        }
        let mut out = Self {
            clear_all,
            keys: Vec::with_capacity(writes.len()),
            values: Vec::with_capacity(writes.len()),
            updated_at_ms: Vec::with_capacity(writes.len()),
        };
        for (key, (value, at)) in writes {
            codec::check_name(op, "KV key", &key, true)?;
            out.keys.push(key);
            out.values.push(value.map(String::into_bytes));
            out.updated_at_ms.push(at);
        }
        Ok(out)
    }
}

/// How many distinct instances `ids` names.
fn distinct<T: std::hash::Hash + Eq>(ids: &[T]) -> u32 {
    ids.iter().collect::<std::collections::HashSet<_>>().len() as u32
}
