//! History events as timeline entries: time, kind, name and a short
//! input/output, read from the stored JSON without needing every event kind
//! of every duroxide version to decode.

use serde::Serialize;

/// Longest `summary`, in characters.
const SUMMARY_CHARS: usize = 120;

/// One event of an instance's history.
#[derive(Debug, Clone, Serialize)]
pub struct HistoryEntry {
    /// Execution it belongs to.
    pub execution_id: u64,
    /// Its position in the execution.
    pub event_id: u64,
    /// When it was recorded, ms since the Unix epoch.
    pub time_ms: Option<u64>,
    /// Its kind (`ActivityScheduled`, `TimerFired`, ...).
    pub kind: String,
    /// The activity, orchestration, timer or event name, if it has one.
    pub name: Option<String>,
    /// The event it completes (for completions).
    pub source_event_id: Option<u64>,
    /// Its input, output, result, data or error, shortened.
    pub summary: Option<String>,
    /// Whether it reports a failure.
    pub failed: bool,
    /// The sub-orchestration it starts (`SubOrchestrationScheduled`).
    pub child_instance: Option<String>,
    /// A failure's error as a sentence (`message (Application, kind)`),
    /// not the stored JSON.
    pub error: Option<String>,
    /// When a timer fires (`TimerCreated`, `TimerFired`), ms since the Unix
    /// epoch.
    pub fire_at_ms: Option<u64>,
}

/// Fields that carry what an event is about, in order of preference.
const SUMMARY_FIELDS: &[&str] = &[
    "input",
    "output",
    "result",
    "data",
    "details",
    "error",
    "reason",
    "status",
    "value",
    "fire_at_ms",
];

impl HistoryEntry {
    /// The entry of the stored event JSON `data`.
    pub fn from_json(execution_id: u64, event_id: u64, data: &str) -> Self {
        let value: serde_json::Value = serde_json::from_str(data).unwrap_or_default();
        let kind = value
            .get("type")
            .and_then(|v| v.as_str())
            .unwrap_or("?")
            .to_string();
        let name = ["name", "key"]
            .iter()
            .find_map(|f| value.get(*f).and_then(|v| v.as_str()))
            .map(str::to_string);
        let summary = SUMMARY_FIELDS
            .iter()
            .find_map(|f| value.get(*f))
            .map(|v| match v {
                serde_json::Value::String(s) => s.clone(),
                other => other.to_string(),
            })
            .map(|s| shorten(&s, SUMMARY_CHARS));
        Self {
            execution_id,
            event_id,
            time_ms: value.get("timestamp_ms").and_then(|v| v.as_u64()),
            failed: kind.ends_with("Failed"),
            kind,
            name,
            source_event_id: value.get("source_event_id").and_then(|v| v.as_u64()),
            child_instance: value
                .get("instance")
                .and_then(|v| v.as_str())
                .map(str::to_string),
            error: value.get("details").map(readable_error),
            fire_at_ms: value.get("fire_at_ms").and_then(|v| v.as_u64()),
            summary,
        }
    }
}

/// duroxide's `ErrorDetails` JSON as a sentence: its message, then its
/// variant and kind in parentheses; anything else as compact JSON.
pub fn readable_error(details: &serde_json::Value) -> String {
    let variant = details
        .as_object()
        .filter(|o| o.len() == 1)
        .and_then(|o| o.iter().next());
    let Some((variant, fields)) = variant else {
        return match details {
            serde_json::Value::String(s) => s.clone(),
            other => other.to_string(),
        };
    };
    let field = |name: &str| match fields.get(name) {
        Some(serde_json::Value::String(s)) => Some(s.clone()),
        Some(serde_json::Value::Null) | None => None,
        Some(other) => Some(other.to_string()),
    };
    let message = field("message")
        .or_else(|| field("resource"))
        .unwrap_or_else(|| fields.to_string());
    let mut about = vec![variant.clone()];
    about.extend(field("kind"));
    about.extend(field("operation"));
    format!("{message} ({})", about.join(", "))
}

/// `s` on one line, at most `max` characters (an ellipsis marks a cut).
pub fn shorten(s: &str, max: usize) -> String {
    let one_line: String = s
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if one_line.chars().count() <= max {
        one_line
    } else {
        let mut cut: String = one_line.chars().take(max.saturating_sub(1)).collect();
        cut.push('…');
        cut
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_activity_completion_reads_as_a_line() {
        let e = HistoryEntry::from_json(
            1,
            4,
            r#"{"event_id":4,"source_event_id":3,"instance_id":"i","execution_id":1,
                "timestamp_ms":1700000000000,"duroxide_version":"0.1.32",
                "type":"ActivityCompleted","result":"hello\nworld"}"#,
        );
        assert_eq!(e.kind, "ActivityCompleted");
        assert_eq!(e.source_event_id, Some(3));
        assert_eq!(e.summary.as_deref(), Some("hello world"));
        assert_eq!(e.time_ms, Some(1_700_000_000_000));
        assert!(!e.failed);
    }

    #[test]
    fn a_failure_reads_as_its_message() {
        let e = HistoryEntry::from_json(
            1,
            3,
            r#"{"event_id":3,"source_event_id":2,"timestamp_ms":1,"type":"ActivityFailed",
                "details":{"Application":{"kind":"Panicked","message":"disk on fire",
                "retryable":false}}}"#,
        );
        assert!(e.failed);
        assert_eq!(
            e.error.as_deref(),
            Some("disk on fire (Application, Panicked)")
        );
        assert_eq!(readable_error(&serde_json::json!("plain")), "plain");
    }

    #[test]
    fn long_values_are_cut() {
        assert_eq!(shorten("abcdef", 4), "abc…");
        assert_eq!(shorten("abc", 4), "abc");
    }
}
