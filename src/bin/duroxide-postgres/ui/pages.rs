//! The dashboard's pages as `maud` templates: every `(value)` is escaped by
//! construction, so no instance id, name or payload reaches the page as
//! markup.

use super::timeline::{self, seg};
use super::ListParams;
use crate::render::{bytes, opt_time, span_ms, time, time_ms};
use duroxide_postgres::inspect::{
    human_ms, readable_error, Activity, FailureGroup, Failures, InstanceDetail, InstanceList,
    Minute, Status, StuckWork,
};
use duroxide_postgres::InstanceSummary;
use maud::{html, Markup, DOCTYPE};
use std::time::Duration;

/// The stylesheet (`/style.css`).
pub const STYLE: &str = "
body{font:14px/1.4 system-ui,sans-serif;margin:0;color:#1b1f24;background:#f6f8fa}
header{background:#24292f;color:#fff;padding:8px 20px;display:flex;align-items:center;gap:16px}
header a{color:#fff}header form{margin-left:auto}header input{width:320px}
#updated{color:#afb8c1;font-size:12px}#updated.stale{color:#ff8182}
main{padding:16px 20px;max-width:1200px}table{border-collapse:collapse;background:#fff;margin:8px 0 20px}
th,td{border:1px solid #d0d7de;padding:4px 8px;text-align:left;vertical-align:top}
th{background:#eaeef2}tr.failed td{background:#ffebe9}td.num{text-align:right}
.muted{color:#57606a}code{font-size:13px}h2{margin-top:24px}
form.filters{background:#fff;border:1px solid #d0d7de;padding:8px;display:inline-block}
form.filters label{margin-right:10px;white-space:nowrap;display:inline-block}
svg.chart,svg.timeline{background:#fff;border:1px solid #d0d7de}
.chart .ok,.chart .done{fill:#2da44e}.chart .bad,.chart .fail{fill:#cf222e}.chart .started{fill:#0969da}
.chart text,.timeline text{font-size:11px;fill:#57606a}.chart .p50{stroke:#0969da}
.chart .p95{stroke:#bf8700}.chart .p99{stroke:#cf222e}.chart polyline{fill:none;stroke-width:2}
.timeline .bar.ok{fill:#2da44e}.timeline .bar.failed{fill:#cf222e}.timeline .bar.open{fill:#8c959f}
.timeline .bar.execution{opacity:.35}.timeline .tick{stroke:#eaeef2}.timeline a text{fill:#0969da}
.timeline text.label{fill:#1b1f24}.legend span{margin-right:12px}.legend i{display:inline-block;
width:10px;height:10px;margin-right:4px}.errors li{margin:4px 0}.error{color:#cf222e}
.actions form{display:inline-block;background:#fff;border:1px solid #d0d7de;padding:8px;
margin:0 8px 8px 0}.columns{display:flex;gap:24px;flex-wrap:wrap}
";

/// The live refresh (`/live.js`): every `data-refresh` ms, unless the tab
/// is hidden or a field of the page has the focus, fetches the page again
/// and swaps in its `<main>`; `#updated` says when that last worked.
pub const LIVE_JS: &str = r#"(function () {
  var main = document.querySelector('main');
  var note = document.getElementById('updated');
  if (!main || !note) { return; }
  var every = Number(document.body.getAttribute('data-refresh')) || 5000;
  function busy() {
    var a = document.activeElement;
    return a && main.contains(a) && /^(INPUT|TEXTAREA|SELECT|BUTTON)$/.test(a.tagName);
  }
  function tick() {
    if (document.hidden || busy()) { return; }
    fetch(location.href, { credentials: 'same-origin' })
      .then(function (r) { if (!r.ok) { throw new Error('HTTP ' + r.status); } return r.text(); })
      .then(function (text) {
        var fresh = new DOMParser().parseFromString(text, 'text/html').querySelector('main');
        if (!fresh) { throw new Error('no content'); }
        main.innerHTML = fresh.innerHTML;
        var n = Number(note.getAttribute('data-refreshes')) + 1;
        note.setAttribute('data-refreshes', String(n));
        note.className = '';
        note.textContent = 'updated ' + new Date().toLocaleTimeString();
      })
      .catch(function (e) {
        note.className = 'stale';
        note.textContent = 'refresh failed (' + e.message + '), retrying';
      });
  }
  setInterval(tick, every);
}());
"#;

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

fn age(ms: Option<u64>) -> String {
    ms.map(human_ms).unwrap_or_else(|| "-".into())
}

fn instance_link(id: &str) -> Markup {
    html! { a href=(format!("/instances/{}", seg(id))) { (id) } }
}

/// A whole page around `body`.
pub fn page(title: &str, refresh: Duration, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                title { (title) " · duroxide-postgres" }
                link rel="stylesheet" href="/style.css";
                script src="/live.js" defer {}
            }
            body data-refresh=(refresh.as_millis()) {
                header {
                    a href="/" { "overview" }
                    a href="/instances" { "instances" }
                    a href="/stuck" { "stuck work" }
                    span.muted { "duroxide-postgres" }
                    span id="updated" data-refreshes="0" { "updated " (time(now_ms())) " UTC" }
                    form method="get" action="/search" role="search" {
                        input type="search" name="q" aria-label="search"
                            placeholder="instance id, id prefix or orchestration name";
                    }
                }
                main { h1 { (title) } (body) }
            }
        }
    }
}

/// The 404 page of an unknown instance.
pub fn not_found(id: &str) -> Markup {
    html! { p { "No instance " code { (id) } "." } }
}

/// The overview.
pub fn overview(s: &Status, a: &Activity, minutes: &[Minute], f: &Failures) -> Markup {
    html! {
        div.columns {
            div {
                h2 { "Instances" }
                table {
                    tr { th { "status" } th { "instances" } }
                    @for c in &s.instances {
                        tr class=[(c.status == "Failed").then_some("failed")] {
                            td { a href=(format!("/instances?status={}", seg(&c.status))) { (c.status) } }
                            td { (c.instances) }
                        }
                    }
                }
                p { a href="/instances" { "All instances" } }
            }
            div { (chart(a)) }
        }
        (minute_charts(minutes))
        (failure_tables(f))
        h2 { "Queues" }
        table {
            tr {
                th { "queue" } th { "ready" } th { "delayed" } th { "leased" }
                th { "expired leases" } th { "oldest ready" }
                th { "≥" (s.health.attempts_threshold) " attempts" } th { "dead tuples" }
            }
            @for q in &s.health.queues {
                tr class=[(q.expired_leases > 0).then_some("failed")] {
                    td { (q.queue.as_str()) } td { (q.ready) } td { (q.delayed) } td { (q.leased) }
                    td { (q.expired_leases) } td { (age(q.oldest_ready_age_ms)) }
                    td { (q.at_attempts) } td { (q.dead_tuples) }
                }
            }
        }
        h2 { "Vacuum and notifications" }
        p {
            @match &s.health.vacuum_holder {
                None => { "No other session holds a snapshot." }
                Some(h) => {
                    "Oldest snapshot: pid " (h.pid) " (" (h.application.as_deref().unwrap_or("?"))
                    "), transaction " (age(h.transaction_age_ms)) " old, query started "
                    (opt_time(h.query_start_ms)) "."
                }
            }
            " LISTEN/NOTIFY queue " (format!("{:.2}", s.health.notification_queue_usage * 100.0)) "% used."
        }
        h2 { "Tables" }
        table {
            tr { th { "table" } th { "live" } th { "dead" } th { "size" } th { "last vacuum" } }
            @for t in &s.tables {
                tr {
                    td { (t.table) } td { (t.live_tuples) } td { (t.dead_tuples) }
                    td { (bytes(t.total_bytes)) } td { (opt_time(t.last_vacuum_ms)) }
                }
            }
        }
    }
}

/// Completions (green) and failures (red) per bucket as SVG bars, with the
/// totals in words (and as data attributes) above it.
fn chart(a: &Activity) -> Markup {
    let (w, h, pad) = (560.0_f64, 150.0_f64, 20.0_f64);
    let n = a.buckets.len().max(1) as f64;
    let max = a
        .buckets
        .iter()
        .map(|b| b.completed.max(b.failed))
        .max()
        .unwrap_or(0)
        .max(1) as f64;
    let slot = (w - 2.0 * pad) / n;
    let bar = (slot / 2.0 - 2.0).max(1.0);
    let minutes = a.bucket_ms as f64 * n / 60_000.0;
    let base = h - pad;
    html! {
        h2 { "Last " (format!("{minutes:.0}")) " minutes" }
        p id="activity" data-completed=(a.completed()) data-failed=(a.failed()) {
            (a.completed()) " completed, " (a.failed()) " failed "
            span.muted { "(per " (a.bucket_ms / 60_000) " minutes; by completion time)" }
        }
        svg.chart width=(w) height=(h) viewBox=(format!("0 0 {w} {h}")) role="img"
            aria-label="completions and failures over time" {
            @for (i, b) in a.buckets.iter().enumerate() {
                @let x = pad + i as f64 * slot + 1.0;
                @for (k, (count, class, what)) in [(b.completed, "ok", "completed"), (b.failed, "bad", "failed")].into_iter().enumerate() {
                    @let height = count as f64 / max * (h - 2.0 * pad);
                    rect class=(class) x=(format!("{:.1}", x + k as f64 * (bar + 1.0)))
                        y=(format!("{:.1}", base - height)) width=(format!("{bar:.1}"))
                        height=(format!("{height:.1}")) data-count=(count) {
                        title { (count) " " (what) " from " (time(b.from_ms)) }
                    }
                }
            }
            @if let Some(first) = a.buckets.first() {
                text x=(pad) y=(h - 5.0) { (time(first.from_ms)) }
                text x=(w - pad) y=(h - 5.0) text-anchor="end" { "now" }
            }
            line x1=(pad) y1=(base) x2=(w - pad) y2=(base) stroke="#8c959f" {}
        }
    }
}

/// Per minute over the last hour: started, completed and failed instances
/// as bars, and the finish latency percentiles as lines.
fn minute_charts(minutes: &[Minute]) -> Markup {
    let (w, h, pad, left) = (1100.0_f64, 170.0_f64, 20.0_f64, 50.0_f64);
    let n = minutes.len().max(1) as f64;
    let slot = (w - left - pad) / n;
    let bar = ((slot - 2.0) / 3.0).max(1.0);
    let max = minutes
        .iter()
        .map(|m| m.started.max(m.completed).max(m.failed))
        .max()
        .unwrap_or(0)
        .max(1) as f64;
    let base = h - pad;
    let total = |f: fn(&Minute) -> u64| minutes.iter().map(f).sum::<u64>();
    let lat_max = minutes
        .iter()
        .filter_map(|m| m.p99_ms)
        .max()
        .unwrap_or(0)
        .max(1) as f64;
    let line = |f: fn(&Minute) -> Option<u64>| -> String {
        minutes
            .iter()
            .enumerate()
            .filter_map(|(i, m)| {
                f(m).map(|v| {
                    let x = left + (i as f64 + 0.5) * slot;
                    let y = base - v as f64 / lat_max * (h - 2.0 * pad);
                    format!("{x:.1},{y:.1}")
                })
            })
            .collect::<Vec<_>>()
            .join(" ")
    };
    let last_finished = minutes.iter().rev().find(|m| m.p50_ms.is_some());
    html! {
        h2 { "Per minute, last hour" }
        p.legend {
            span { i style="background:#0969da" {} "started " (total(|m| m.started)) }
            span { i style="background:#2da44e" {} "completed " (total(|m| m.completed)) }
            span { i style="background:#cf222e" {} "failed " (total(|m| m.failed)) }
        }
        svg.chart id="minutes" width=(w) height=(h) viewBox=(format!("0 0 {w} {h}")) role="img"
            aria-label="instances started, completed and failed per minute"
            data-started=(total(|m| m.started)) data-completed=(total(|m| m.completed))
            data-failed=(total(|m| m.failed)) {
            text x="4" y=(pad) { (max as u64) }
            text x="4" y=(base) { "0" }
            @for (i, m) in minutes.iter().enumerate() {
                @let x = left + i as f64 * slot + 1.0;
                @for (k, (count, class)) in [(m.started, "started"), (m.completed, "done"), (m.failed, "fail")].into_iter().enumerate() {
                    @let height = count as f64 / max * (h - 2.0 * pad);
                    rect class=(class) x=(format!("{:.1}", x + k as f64 * bar))
                        y=(format!("{:.1}", base - height)) width=(format!("{bar:.1}"))
                        height=(format!("{height:.1}")) data-count=(count) {
                        title {
                            (time(m.from_ms)) ": " (m.started) " started, " (m.completed)
                            " completed, " (m.failed) " failed"
                        }
                    }
                }
            }
            @if let Some(first) = minutes.first() {
                text x=(left) y=(h - 4.0) { (time(first.from_ms)) }
                text x=(w - pad) y=(h - 4.0) text-anchor="end" { "now" }
            }
            line x1=(left) y1=(base) x2=(w - pad) y2=(base) stroke="#8c959f" {}
        }
        h2 { "Start to finish latency per minute" }
        p.legend {
            span { i style="background:#0969da" {} "p50" }
            span { i style="background:#bf8700" {} "p95" }
            span { i style="background:#cf222e" {} "p99" }
            @match last_finished {
                Some(m) => span id="latency" {
                    "latest minute with finishes (" (time(m.from_ms)) "): p50 "
                    (span_ms(m.p50_ms.unwrap_or(0))) ", p95 " (span_ms(m.p95_ms.unwrap_or(0)))
                    ", p99 " (span_ms(m.p99_ms.unwrap_or(0))) ", max " (span_ms(m.max_ms.unwrap_or(0)))
                },
                None => span.muted id="latency" { "nothing finished in the last hour" },
            }
        }
        svg.chart id="latency-chart" width=(w) height=(h) viewBox=(format!("0 0 {w} {h}"))
            role="img" aria-label="latency percentiles per minute" {
            text x="4" y=(pad) { (span_ms(lat_max as u64)) }
            text x="4" y=(base) { "0" }
            polyline.p50 points=(line(|m| m.p50_ms)) {}
            polyline.p95 points=(line(|m| m.p95_ms)) {}
            polyline.p99 points=(line(|m| m.p99_ms)) {}
            line x1=(left) y1=(base) x2=(w - pad) y2=(base) stroke="#8c959f" {}
        }
    }
}

fn group_table(id: &str, what: &str, groups: &[FailureGroup]) -> Markup {
    html! {
        @if groups.is_empty() {
            p.muted id=(id) { "No failures." }
        } @else {
            table id=(id) {
                tr { th { (what) } th { "failures" } th { "latest" } th { "error" } }
                @for g in groups {
                    tr.failed {
                        td { (g.name) } td.num { (g.failures) }
                        td { (instance_link(&g.latest_instance_id)) }
                        td { (g.latest_error.as_deref().unwrap_or("")) }
                    }
                }
            }
        }
    }
}

fn failure_tables(f: &Failures) -> Markup {
    html! {
        h2 { "Failures, last hour" }
        @if f.truncated {
            p.muted { "From the latest " (f.instances) " failed instances." }
        }
        div.columns {
            div { h3 { "By orchestration" } (group_table("failures-by-orchestration", "orchestration", &f.by_orchestration)) }
            div { h3 { "By activity" } (group_table("failures-by-activity", "activity", &f.by_activity)) }
        }
    }
}

fn instance_rows(items: &[InstanceSummary]) -> Markup {
    html! {
        table {
            tr {
                th { "instance" } th { "orchestration" } th { "version" } th { "status" }
                th { "execution" } th { "created" } th { "finished" } th { "parent" }
            }
            @for i in items {
                tr class=[(i.status == "Failed").then_some("failed")] {
                    td { (instance_link(&i.instance_id)) }
                    td { (i.orchestration_name) }
                    td { (i.orchestration_version) }
                    td { (i.status) }
                    td { (i.current_execution_id) }
                    td { (time(i.created_at_ms as i64)) }
                    td { (opt_time(i.completed_at_ms.map(|m| m as i64))) }
                    td { @if let Some(p) = &i.parent_instance_id { (instance_link(p)) } }
                }
            }
        }
    }
}

/// The instance list with its filters.
pub fn instances(p: &ListParams, list: &InstanceList) -> Markup {
    let field = |name: &str, label: &str, v: &Option<String>, hint: &str| {
        html! {
            label { (label) " " input name=(name) value=(v.as_deref().unwrap_or("")) placeholder=(hint) size="12"; }
        }
    };
    html! {
        form class="filters" method="get" action="/instances" {
            (field("status", "status", &p.status, "Failed,Running"))
            (field("name", "orchestration", &p.name, "name"))
            (field("version", "version", &p.version, "1.0.0"))
            (field("since", "created since", &p.since, "2h"))
            (field("before", "before", &p.before, "30m"))
            (field("finished_since", "finished since", &p.finished_since, "1h"))
            (field("finished_before", "before", &p.finished_before, "10m"))
            (field("parent", "parent", &p.parent, "instance id"))
            label { input type="checkbox" name="roots" value="1" checked[p.roots()]; " roots only" }
            button type="submit" { "filter" }
        }
        @if list.items.is_empty() {
            p { "No instances match." }
        } @else {
            (instance_rows(&list.items))
            @if let Some(c) = &list.next_cursor {
                p { a id="next" href=(p.href(c)) { "next page →" } }
            }
        }
    }
}

/// Search results (or the empty search form).
pub fn search(found: Option<&super::Found>) -> Markup {
    html! {
        form.filters method="get" action="/search" {
            label { "instance id, id prefix or orchestration name "
                input name="q" value=(found.map(|f| f.q.as_str()).unwrap_or("")) size="40"; }
            button type="submit" { "search" }
        }
        @if let Some(f) = found {
            h2 { "Instances whose id starts with " code { (f.q) } }
            @if f.by_prefix.is_empty() { p id="by-prefix" { "None." } }
            @else {
                div id="by-prefix" { (instance_rows(&f.by_prefix)) }
                @if let Some(after) = &f.next_after {
                    p { a id="next" href=(format!("/search?q={}&after={}", seg(&f.q), seg(after))) { "next page →" } }
                }
            }
            h2 { "Latest instances of orchestration " code { (f.q) } }
            @if f.by_name.is_empty() { p id="by-name" { "None." } }
            @else {
                div id="by-name" { (instance_rows(&f.by_name)) }
                p { a href=(format!("/instances?name={}", seg(&f.q))) { "all of them, with filters →" } }
            }
        }
    }
}

/// An output or error as text: a failure's JSON as its message.
fn readable(text: &str) -> String {
    match serde_json::from_str::<serde_json::Value>(text) {
        Ok(v @ serde_json::Value::Object(_)) => readable_error(&v),
        _ => text.to_string(),
    }
}

/// An instance page; `csrf` is the token of the write forms when writes are
/// allowed.
pub fn instance(d: &InstanceDetail, csrf: Option<&str>) -> Markup {
    let spans = timeline::spans(d);
    let failed: Vec<&timeline::Span> = spans.iter().filter(|s| s.failed).collect();
    html! {
        p {
            b { (d.orchestration_name) } " (version " (d.orchestration_version.as_deref().unwrap_or("-"))
            ") — " b { (d.status) } ", execution " (d.current_execution_id) ", created "
            (time_ms(d.created_at_ms)) ", updated " (time_ms(d.updated_at_ms))
        }
        @if let Some(p) = &d.parent_instance_id { p { "parent: " (instance_link(p)) } }
        @if let Some(c) = &d.custom_status { p { "custom status: " code { (c) } } }
        @if let Some(o) = &d.output {
            p class=[(d.status == "Failed").then_some("error")] {
                @if d.status == "Failed" { "error: " } @else { "output: " }
                code { (readable(o)) }
            }
        }
        (actions(d, csrf))
        h2 { "Timeline" }
        (timeline::svg(&spans, now_ms().max(0) as u64))
        @if !failed.is_empty() {
            ul.errors {
                @for s in &failed {
                    li.error { b { (s.kind) " " (s.label) } ": " (s.error.as_deref().unwrap_or("failed")) }
                }
            }
        }
        h2 { "Executions" }
        table {
            tr { th { "id" } th { "status" } th { "started" } th { "completed" } th { "events" } th { "output" } }
            @for e in &d.executions {
                tr class=[(e.status == "Failed").then_some("failed")] {
                    td { (e.execution_id) } td { (e.status) } td { (time_ms(e.started_at_ms)) }
                    td { @if let Some(c) = e.completed_at_ms { (time_ms(c)) } @else { "-" } }
                    td { (e.events) } td { (readable(e.output.as_deref().unwrap_or(""))) }
                }
            }
        }
        h2 { "History" }
        @if d.history_truncated { p.muted { "Older events left out." } }
        table {
            tr { th { "time" } th { "exec" } th { "#" } th { "kind" } th { "name" } th { "detail" } }
            @for h in &d.history {
                tr class=[h.failed.then_some("failed")] {
                    td { @if let Some(t) = h.time_ms { (time_ms(t as i64)) } }
                    td { (h.execution_id) } td { (h.event_id) } td { (h.kind) }
                    td { (h.name.as_deref().unwrap_or("")) }
                    td {
                        @if let Some(src) = h.source_event_id { span.muted { "(#" (src) ")" } " " }
                        @if let Some(child) = &h.child_instance { (instance_link(child)) " " }
                        @if let Some(e) = &h.error { span.error { (e) } }
                        @else if let Some(f) = h.fire_at_ms { "fires at " (time_ms(f as i64)) }
                        @else { (h.summary.as_deref().unwrap_or("")) }
                    }
                }
            }
        }
        h2 { "Pending" }
        @if d.pending.is_empty() {
            p { "Nothing queued." }
        } @else {
            table {
                tr { th { "queue" } th { "id" } th { "kind" } th { "visible" } th { "attempts" } th { "lease" } th { "until" } }
                @for p in &d.pending {
                    tr {
                        td { (p.queue.as_str()) } td { (p.item_id) } td { (p.kind) }
                        td { (time_ms(p.visible_at_ms)) } td { (p.attempt_count) }
                        td { (format!("{:?}", p.lease).to_lowercase()) }
                        td { (opt_time(p.locked_until_ms)) }
                    }
                }
            }
        }
        @if !d.kv.is_empty() {
            h2 { "KV" }
            table {
                tr { th { "key" } th { "value" } }
                @for (k, v) in &d.kv { tr { td { (k) } td { code { (v) } } } }
            }
        }
        @if !d.children.is_empty() {
            h2 { "Children" }
            ul { @for c in &d.children { li { (instance_link(c)) } } }
        }
    }
}

/// The write forms of an instance page, or a note that the dashboard is
/// read-only.
fn actions(d: &InstanceDetail, csrf: Option<&str>) -> Markup {
    let base = format!("/instances/{}", seg(&d.instance_id));
    html! {
        @match csrf {
            None => p.muted id="read-only" {
                "Read-only dashboard: cancel, raise event and delete need a server started with \
                 --token and --allow-writes."
            },
            Some(token) => div.actions id="actions" {
                @if d.status == "Running" {
                    form method="post" action=(format!("{base}/cancel")) {
                        input type="hidden" name="csrf" value=(token);
                        input name="reason" placeholder="reason" aria-label="reason";
                        " " button type="submit" { "cancel" }
                    }
                }
                form method="post" action=(format!("{base}/raise")) {
                    input type="hidden" name="csrf" value=(token);
                    input name="name" placeholder="event name" aria-label="event name" required;
                    " " input name="data" placeholder="data" aria-label="event data";
                    " " button type="submit" { "raise event" }
                }
                form method="post" action=(format!("{base}/delete")) {
                    input type="hidden" name="csrf" value=(token);
                    label { input type="checkbox" name="force" value="1"; " even if running" }
                    " " button type="submit" { "delete" }
                }
            },
        }
    }
}

/// Stuck work.
pub fn stuck(items: &[StuckWork]) -> Markup {
    html! {
        @if items.is_empty() {
            p { "Nothing stuck." }
        } @else {
            table {
                tr { th { "queue" } th { "instance" } th { "kind" } th { "ready for" } th { "attempts" } th { "why" } }
                @for w in items {
                    tr.failed {
                        td { (w.queue.as_str()) } td { (instance_link(&w.instance_id)) } td { (w.kind) }
                        td { (age(w.ready_age_ms)) } td { (w.attempt_count) } td { (w.why) }
                    }
                }
            }
        }
    }
}
