//! An instance's execution as a server-rendered SVG timeline: one bar per
//! execution, activity, timer, sub-orchestration and external-event wait,
//! from when it was scheduled to when it completed (or to now, while it is
//! open), failed ones red with their error readable.

use crate::render::{span_ms, time_ms};
use duroxide_postgres::inspect::{HistoryEntry, InstanceDetail};
use maud::{html, Markup};
use std::collections::BTreeMap;

/// One bar.
#[derive(Debug, Clone)]
pub struct Span {
    /// `execution`, `activity`, `timer`, `sub-orchestration`, `event`.
    pub kind: &'static str,
    /// What the bar is (the activity's name, `timer`, ...).
    pub label: String,
    /// Execution it belongs to.
    pub execution_id: u64,
    /// Start, ms since the Unix epoch.
    pub start_ms: u64,
    /// End; `None` while open.
    pub end_ms: Option<u64>,
    /// Whether it ended in a failure.
    pub failed: bool,
    /// The failure, readable.
    pub error: Option<String>,
    /// A sub-orchestration's instance.
    pub child: Option<String>,
}

impl Span {
    fn state(&self) -> &'static str {
        match (self.end_ms, self.failed) {
            (_, true) => "failed",
            (None, false) => "open",
            (Some(_), false) => "ok",
        }
    }
}

/// The bars of `d`'s history, in the order they started.
pub fn spans(d: &InstanceDetail) -> Vec<Span> {
    let mut out: Vec<Span> = Vec::new();
    // (execution, scheduling event id) -> index in `out`.
    let mut open: BTreeMap<(u64, u64), usize> = BTreeMap::new();
    // (execution, event name) -> open waits, oldest first.
    let mut waits: BTreeMap<(u64, String), Vec<usize>> = BTreeMap::new();
    let mut executions: BTreeMap<u64, usize> = BTreeMap::new();
    // (execution, activity name) -> failures so far (a later one is a retry).
    let mut failures: BTreeMap<(u64, String), u32> = BTreeMap::new();
    for h in &d.history {
        let Some(at) = h.time_ms else { continue };
        let exec = h.execution_id;
        let name = h.name.clone().unwrap_or_default();
        let start = |out: &mut Vec<Span>, kind: &'static str, label: String| {
            out.push(Span {
                kind,
                label,
                execution_id: exec,
                start_ms: at,
                end_ms: None,
                failed: false,
                error: None,
                child: h.child_instance.clone(),
            });
            out.len() - 1
        };
        match h.kind.as_str() {
            "OrchestrationStarted" => {
                let i = start(&mut out, "execution", format!("execution {exec}"));
                executions.insert(exec, i);
            }
            "OrchestrationCompleted" | "OrchestrationFailed" | "OrchestrationContinuedAsNew" => {
                if let Some(&i) = executions.get(&exec) {
                    close(&mut out[i], at, h);
                    if h.kind == "OrchestrationContinuedAsNew" {
                        out[i].label = format!("execution {exec} (continued as new)");
                    }
                }
            }
            "ActivityScheduled" => {
                let retries = failures.get(&(exec, name.clone())).copied().unwrap_or(0);
                let label = if retries > 0 {
                    format!("{name} (retry {retries})")
                } else {
                    name.clone()
                };
                let i = start(&mut out, "activity", label);
                open.insert((exec, h.event_id), i);
            }
            "TimerCreated" => {
                let label = match h.fire_at_ms {
                    Some(f) if f >= at => span_ms(f - at),
                    _ => "until fired".to_string(),
                };
                let i = start(&mut out, "timer", label);
                open.insert((exec, h.event_id), i);
            }
            "SubOrchestrationScheduled" => {
                let i = start(&mut out, "sub-orchestration", name.clone());
                open.insert((exec, h.event_id), i);
            }
            "ExternalSubscribed" | "ExternalSubscribed2" | "ExternalSubscribedPersistent" => {
                let i = start(&mut out, "event", format!("wait for {name}"));
                open.insert((exec, h.event_id), i);
                waits.entry((exec, name)).or_default().push(i);
            }
            "ExternalEvent" | "ExternalEvent2" | "ExternalEventPersistent" => {
                // Matched by name: the oldest open wait of that name.
                if let Some(list) = waits.get_mut(&(exec, name)) {
                    if !list.is_empty() {
                        let i = list.remove(0);
                        close(&mut out[i], at, h);
                    }
                }
            }
            _ => {
                if let Some(&i) = h.source_event_id.and_then(|s| open.get(&(exec, s))) {
                    if out[i].end_ms.is_none() && out[i].kind != "event" {
                        close(&mut out[i], at, h);
                        if h.failed && out[i].kind == "activity" {
                            let base = h.name.clone().unwrap_or_else(|| {
                                out[i]
                                    .label
                                    .split(" (retry")
                                    .next()
                                    .unwrap_or_default()
                                    .to_string()
                            });
                            *failures.entry((exec, base)).or_default() += 1;
                        }
                    } else if out[i].kind == "event" && h.kind.contains("Cancel") {
                        close(&mut out[i], at, h);
                    }
                }
            }
        }
    }
    out
}

fn close(span: &mut Span, at: u64, h: &HistoryEntry) {
    span.end_ms = Some(at.max(span.start_ms));
    span.failed = h.failed;
    if h.failed {
        span.error = h.error.clone().or_else(|| h.summary.clone());
    }
}

/// Percent-encodes a path segment.
pub fn seg(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

const WIDTH: f64 = 1100.0;
const LABEL: f64 = 250.0;
const RIGHT: f64 = 90.0;
const ROW: f64 = 22.0;
const TOP: f64 = 24.0;

/// The SVG of `spans`; `now_ms` ends the open ones.
pub fn svg(spans: &[Span], now_ms: u64) -> Markup {
    if spans.is_empty() {
        return html! { p.muted { "No timed events." } };
    }
    let t0 = spans.iter().map(|s| s.start_ms).min().unwrap_or(0);
    let t1 = spans
        .iter()
        .map(|s| s.end_ms.unwrap_or(now_ms.max(s.start_ms)))
        .max()
        .unwrap_or(t0)
        .max(t0 + 1);
    let scale = (WIDTH - LABEL - RIGHT) / (t1 - t0) as f64;
    let x = |t: u64| LABEL + (t.saturating_sub(t0)) as f64 * scale;
    let height = TOP + ROW * spans.len() as f64 + 8.0;
    let ticks: Vec<(f64, String)> = (0..=4)
        .map(|k| {
            let t = t0 + (t1 - t0) * k / 4;
            (x(t), format!("+{}", span_ms(t - t0)))
        })
        .collect();
    html! {
        svg.timeline id="timeline" width=(WIDTH) height=(height)
            viewBox=(format!("0 0 {WIDTH} {height}")) role="img"
            aria-label="the instance's timeline" data-spans=(spans.len()) {
            @for (tx, label) in &ticks {
                line.tick x1=(format!("{tx:.1}")) y1="16" x2=(format!("{tx:.1}"))
                    y2=(format!("{height:.0}")) {}
                text.axis x=(format!("{tx:.1}")) y="12" text-anchor="middle" { (label) }
            }
            @for (row, s) in spans.iter().enumerate() {
                @let y = TOP + ROW * row as f64;
                @let end = s.end_ms.unwrap_or(now_ms.max(s.start_ms));
                @let (bx, bw) = (x(s.start_ms), (x(end) - x(s.start_ms)).max(2.0));
                @let took = end.saturating_sub(s.start_ms);
                g.span data-kind=(s.kind) data-state=(s.state()) data-execution=(s.execution_id) {
                    title {
                        (s.kind) " " (s.label) " — " (time_ms(s.start_ms as i64)) " → "
                        @match s.end_ms {
                            Some(e) => { (time_ms(e as i64)) " (" (span_ms(took)) ")" }
                            None => { "still open (" (span_ms(took)) " so far)" }
                        }
                        @if let Some(e) = &s.error { "\n" (e) }
                    }
                    @if let Some(child) = &s.child {
                        a href=(format!("/instances/{}", seg(child))) {
                            text.label x="4" y=(format!("{:.1}", y + 15.0)) {
                                (s.kind) ": " (s.label) " → " (child)
                            }
                        }
                    } @else {
                        text.label x=(if s.kind == "execution" { "4" } else { "14" })
                            y=(format!("{:.1}", y + 15.0)) {
                            @if s.kind != "execution" { (s.kind) ": " }
                            (s.label)
                        }
                    }
                    rect class=(format!("bar {} {}", s.kind, s.state())) x=(format!("{bx:.1}"))
                        y=(format!("{:.1}", y + 3.0)) width=(format!("{bw:.1}"))
                        height=(format!("{:.1}", ROW - 6.0)) rx="3" {}
                    text.took x=(format!("{:.1}", (bx + bw + 4.0).min(WIDTH - RIGHT + 4.0)))
                        y=(format!("{:.1}", y + 15.0)) {
                        (span_ms(took)) @if s.end_ms.is_none() { "…" }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn detail(events: &[&str]) -> InstanceDetail {
        let history = events
            .iter()
            .enumerate()
            .map(|(i, e)| HistoryEntry::from_json(1, i as u64 + 1, e))
            .collect();
        InstanceDetail {
            instance_id: "i".into(),
            orchestration_name: "O".into(),
            orchestration_version: None,
            status: "Running".into(),
            output: None,
            current_execution_id: 1,
            parent_instance_id: None,
            custom_status: None,
            custom_status_version: 0,
            created_at_ms: 0,
            updated_at_ms: 0,
            executions: Vec::new(),
            history,
            history_truncated: false,
            pending: Vec::new(),
            kv: Default::default(),
            children: Vec::new(),
        }
    }

    #[test]
    fn each_scheduled_thing_is_a_bar_closed_by_its_completion() {
        let fail = r#""details":{"Application":{"kind":"ActivityFailed","message":"no","retryable":true}}"#;
        let d = detail(&[
            r#"{"type":"OrchestrationStarted","name":"O","timestamp_ms":1000}"#,
            r#"{"type":"ActivityScheduled","name":"A","timestamp_ms":1000}"#,
            &format!(
                r#"{{"type":"ActivityFailed","source_event_id":2,"timestamp_ms":1010,{fail}}}"#
            ),
            r#"{"type":"ActivityScheduled","name":"A","timestamp_ms":1020}"#,
            r#"{"type":"ActivityCompleted","source_event_id":4,"result":"x","timestamp_ms":1030}"#,
            r#"{"type":"TimerCreated","fire_at_ms":1080,"timestamp_ms":1030}"#,
            r#"{"type":"TimerFired","source_event_id":6,"fire_at_ms":1080,"timestamp_ms":1081}"#,
            r#"{"type":"SubOrchestrationScheduled","name":"C","instance":"kid","timestamp_ms":1090}"#,
            r#"{"type":"ExternalSubscribed","name":"go","timestamp_ms":1090}"#,
            r#"{"type":"SubOrchestrationCompleted","source_event_id":8,"result":"r","timestamp_ms":1200}"#,
        ]);
        let s = spans(&d);
        let view: Vec<(&str, &str, &str)> = s
            .iter()
            .map(|s| (s.kind, s.label.as_str(), s.state()))
            .collect();
        assert_eq!(
            view,
            vec![
                ("execution", "execution 1", "open"),
                ("activity", "A", "failed"),
                ("activity", "A (retry 1)", "ok"),
                ("timer", "50 ms", "ok"),
                ("sub-orchestration", "C", "ok"),
                ("event", "wait for go", "open"),
            ]
        );
        assert_eq!(
            s[1].error.as_deref(),
            Some("no (Application, ActivityFailed)")
        );
        assert_eq!((s[3].start_ms, s[3].end_ms), (1030, Some(1081)));
        assert_eq!(s[4].child.as_deref(), Some("kid"));
        let svg = svg(&s, 1300).into_string();
        assert_eq!(svg.matches("<rect class=\"bar ").count(), 6, "{svg}");
        assert!(svg.contains("href=\"/instances/kid\""), "{svg}");
    }

    #[test]
    fn segments_are_percent_encoded() {
        assert_eq!(seg("a/b c<"), "a%2Fb%20c%3C");
    }
}
