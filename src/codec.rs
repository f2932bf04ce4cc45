//! Encoding of duroxide values for storage, and their routing columns.
//!
//! Events and work items are stored as the JSON text serde_json produces and
//! decoded straight from that text, once. The routing columns (target
//! instance, kind, activity identity) are derived here, in Rust, so that SQL
//! never parses JSON.

use duroxide::providers::{ProviderError, WorkItem};
use duroxide::Event;
use std::time::Duration;

/// Longest instance id, session id or KV key accepted, in bytes. They are
/// index keys, and a PostgreSQL B-tree entry holds at most 2704 bytes (an
/// instance id and a KV key share one).
pub(crate) const MAX_KEY_BYTES: usize = 1024;

/// Refuses a name that PostgreSQL could not store or index: NUL characters
/// (TEXT cannot hold them) and, for keys, more than [`MAX_KEY_BYTES`].
pub(crate) fn check_name(
    op: &str,
    what: &str,
    value: &str,
    is_key: bool,
) -> Result<(), ProviderError> {
    if value.contains('\0') {
        return Err(ProviderError::permanent(
            op,
            format!("{what} contains a NUL character, which PostgreSQL text cannot store"),
        ));
    }
    if is_key && value.len() > MAX_KEY_BYTES {
        return Err(ProviderError::permanent(
            op,
            format!(
                "{what} is {} bytes long; duroxide-postgres accepts at most {MAX_KEY_BYTES}",
                value.len()
            ),
        ));
    }
    Ok(())
}

/// Refuses an instance id PostgreSQL could not store or index.
pub(crate) fn check_instance(op: &str, instance: &str) -> Result<(), ProviderError> {
    check_name(op, "instance id", instance, true)
}

/// A user string stored as BYTEA (it may contain NUL), decoded back.
pub(crate) fn utf8(op: &str, what: &str, bytes: Vec<u8>) -> Result<String, ProviderError> {
    String::from_utf8(bytes)
        .map_err(|e| crate::error::corrupt(op, format!("stored {what} is not UTF-8: {e}")))
}

/// What duroxide shows for a missing orchestration name or version.
pub(crate) fn or_unknown(value: Option<&str>) -> String {
    value.unwrap_or("unknown").to_string()
}

/// A duration in whole milliseconds, rounded up so that a sub-millisecond
/// lease is not zero, saturating at `i64::MAX`.
pub(crate) fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_micros().div_ceil(1000)).unwrap_or(i64::MAX)
}

/// A `u64` id as the BIGINT it is stored as.
pub(crate) fn id(op: &str, value: u64) -> Result<i64, ProviderError> {
    i64::try_from(value)
        .map_err(|_| ProviderError::permanent(op, format!("id {value} does not fit in BIGINT")))
}

pub(crate) fn encode_event(op: &str, event: &Event) -> Result<String, ProviderError> {
    serde_json::to_string(event)
        .map_err(|e| ProviderError::permanent(op, format!("cannot encode event: {e}")))
}

pub(crate) fn encode_item(op: &str, item: &WorkItem) -> Result<String, ProviderError> {
    serde_json::to_string(item)
        .map_err(|e| ProviderError::permanent(op, format!("cannot encode work item: {e}")))
}

pub(crate) fn decode_event(text: &str) -> Result<Event, String> {
    serde_json::from_str(text).map_err(|e| format!("undecodable history event: {e}"))
}

pub(crate) fn decode_item(text: &str) -> Result<WorkItem, String> {
    serde_json::from_str(text).map_err(|e| format!("undecodable work item: {e}"))
}

/// Decodes stored history, failing on the first undecodable row.
pub(crate) fn decode_history(op: &str, rows: &[String]) -> Result<Vec<Event>, ProviderError> {
    rows.iter()
        .map(|t| decode_event(t).map_err(|e| crate::error::corrupt(op, e)))
        .collect()
}

/// Where an orchestrator-queue item goes, and what kind it is.
#[derive(Debug)]
pub(crate) struct OrchestratorRoute {
    pub(crate) instance: String,
    pub(crate) kind: String,
    /// A timer's fire time (ms since epoch): it must not become visible earlier.
    pub(crate) fire_at_ms: Option<i64>,
}

pub(crate) fn orchestrator_route(
    op: &str,
    item: &WorkItem,
) -> Result<OrchestratorRoute, ProviderError> {
    let (instance, fire_at) = match item {
        WorkItem::StartOrchestration { instance, .. }
        | WorkItem::ActivityCompleted { instance, .. }
        | WorkItem::ActivityFailed { instance, .. }
        | WorkItem::ExternalRaised { instance, .. }
        | WorkItem::CancelInstance { instance, .. }
        | WorkItem::ContinueAsNew { instance, .. }
        | WorkItem::QueueMessage { instance, .. } => (instance.clone(), None),
        WorkItem::TimerFired {
            instance,
            fire_at_ms,
            ..
        } => (instance.clone(), Some(*fire_at_ms)),
        WorkItem::SubOrchCompleted {
            parent_instance, ..
        }
        | WorkItem::SubOrchFailed {
            parent_instance, ..
        } => (parent_instance.clone(), None),
        WorkItem::ActivityExecute { .. } => {
            return Err(ProviderError::permanent(
                op,
                "ActivityExecute belongs to the worker queue, not the orchestrator queue",
            ))
        }
        // Variants added by duroxide features this crate does not name
        // (e.g. ExternalRaised2): route by the serialized `instance` field.
        #[allow(unreachable_patterns)]
        other => (generic_instance(op, other)?, None),
    };
    check_instance(op, &instance)?;
    Ok(OrchestratorRoute {
        instance,
        kind: kind(item),
        fire_at_ms: fire_at.map(|t| id(op, t)).transpose()?,
    })
}

/// The variant name of a work item (its external serde tag).
pub(crate) fn kind(item: &WorkItem) -> String {
    let name = match item {
        WorkItem::StartOrchestration { .. } => "StartOrchestration",
        WorkItem::ActivityExecute { .. } => "ActivityExecute",
        WorkItem::ActivityCompleted { .. } => "ActivityCompleted",
        WorkItem::ActivityFailed { .. } => "ActivityFailed",
        WorkItem::TimerFired { .. } => "TimerFired",
        WorkItem::ExternalRaised { .. } => "ExternalRaised",
        WorkItem::SubOrchCompleted { .. } => "SubOrchCompleted",
        WorkItem::SubOrchFailed { .. } => "SubOrchFailed",
        WorkItem::CancelInstance { .. } => "CancelInstance",
        WorkItem::ContinueAsNew { .. } => "ContinueAsNew",
        WorkItem::QueueMessage { .. } => "QueueMessage",
        #[allow(unreachable_patterns)]
        other => {
            return serde_json::to_value(other)
                .ok()
                .and_then(|v| v.as_object().and_then(|o| o.keys().next().cloned()))
                .unwrap_or_else(|| "Unknown".to_string())
        }
    };
    name.to_string()
}

#[allow(dead_code)] // reachable only with duroxide features that add variants
fn generic_instance(op: &str, item: &WorkItem) -> Result<String, ProviderError> {
    serde_json::to_value(item)
        .ok()
        .and_then(|v| {
            let fields = v.as_object()?.values().next()?.as_object()?.clone();
            fields
                .get("instance")
                .or_else(|| fields.get("parent_instance"))
                .and_then(|i| i.as_str().map(str::to_string))
        })
        .ok_or_else(|| ProviderError::permanent(op, "work item has no target instance"))
}

/// The worker-queue identity columns of an `ActivityExecute`.
pub(crate) struct WorkerRoute {
    pub(crate) instance: String,
    pub(crate) execution_id: i64,
    pub(crate) activity_id: i64,
    pub(crate) session_id: Option<String>,
    pub(crate) tag: Option<String>,
}

pub(crate) fn worker_route(op: &str, item: &WorkItem) -> Result<WorkerRoute, ProviderError> {
    match item {
        WorkItem::ActivityExecute {
            instance,
            execution_id,
            id: activity_id,
            session_id,
            tag,
            ..
        } => {
            check_instance(op, instance)?;
            if let Some(s) = session_id {
                check_name(op, "session id", s, true)?;
            }
            if let Some(t) = tag {
                check_name(op, "tag", t, false)?;
            }
            Ok(WorkerRoute {
                instance: instance.clone(),
                execution_id: id(op, *execution_id)?,
                activity_id: id(op, *activity_id)?,
                session_id: session_id.clone(),
                tag: tag.clone(),
            })
        }
        other => Err(ProviderError::permanent(
            op,
            format!(
                "only ActivityExecute goes to the worker queue, got {}",
                kind(other)
            ),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn millis_rounds_up_and_saturates() {
        assert_eq!(millis(Duration::ZERO), 0);
        assert_eq!(millis(Duration::from_micros(1)), 1);
        assert_eq!(millis(Duration::from_millis(1500)), 1500);
        assert_eq!(millis(Duration::MAX), i64::MAX);
    }

    #[test]
    fn routes_sub_orchestration_results_to_the_parent() {
        let item = WorkItem::SubOrchCompleted {
            parent_instance: "parent".into(),
            parent_execution_id: 1,
            parent_id: 7,
            result: "x".into(),
        };
        let route = orchestrator_route("t", &item).unwrap();
        assert_eq!(route.instance, "parent");
        assert_eq!(route.kind, "SubOrchCompleted");
        assert_eq!(route.fire_at_ms, None);
    }

    #[test]
    fn timers_keep_their_fire_time_and_activities_are_refused() {
        let timer = WorkItem::TimerFired {
            instance: "i".into(),
            execution_id: 1,
            id: 2,
            fire_at_ms: 1234,
        };
        assert_eq!(
            orchestrator_route("t", &timer).unwrap().fire_at_ms,
            Some(1234)
        );
        let activity = WorkItem::ActivityExecute {
            instance: "i".into(),
            execution_id: 1,
            id: 2,
            name: "a".into(),
            input: "".into(),
            session_id: None,
            tag: None,
        };
        assert!(!orchestrator_route("t", &activity)
            .unwrap_err()
            .is_retryable());
        assert!(worker_route("t", &timer).is_err());
    }

    #[test]
    fn kind_matches_the_serde_tag() {
        let item = WorkItem::QueueMessage {
            instance: "i".into(),
            name: "n".into(),
            data: "d".into(),
        };
        let json = encode_item("t", &item).unwrap();
        assert!(json.starts_with(&format!("{{\"{}\":", kind(&item))));
    }
}
