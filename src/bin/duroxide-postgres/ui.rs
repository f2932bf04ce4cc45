//! `duroxide-postgres ui`: a read-only web dashboard, server-rendered HTML
//! from the same query layer as the other commands (no front-end build; the
//! stylesheet is embedded).
//!
//! Pages: `/` (overview: instances by status, a chart of completions and
//! failures over the last hour, queues, vacuum, tables), `/instances` (the
//! listing, with the CLI's filters and keyset pagination), `/instances/{id}`
//! (executions, timeline with failures highlighted and sub-orchestrations
//! linked, pending work, KV, children), `/stuck`. JSON: `/api/status`,
//! `/api/activity`, `/api/instances`, `/api/instances/{id}`, `/api/stuck`. Binds to
//! 127.0.0.1:8080 by default; with `--token T` every request needs
//! `Authorization: Bearer T`. It only reads, so a read-only role suffices
//! (`docs/operations.md`).

use axum::extract::{Path, Query, Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{Html, IntoResponse, Json, Response};
use axum::routing::get;
use axum::Router;
use duroxide_postgres::inspect::{
    human_ms, Activity, InstanceDetail, InstanceList, Status, StuckWork,
};
use duroxide_postgres::{InstanceCursor, InstanceQuery, PostgresProvider};
use std::fmt::Write;
use std::sync::Arc;
use std::time::Duration;

use crate::render::{bytes, opt_time, time};

const STYLE: &str = "
body{font:14px/1.4 system-ui,sans-serif;margin:0;color:#1b1f24;background:#f6f8fa}
header{background:#24292f;color:#fff;padding:10px 20px}header a{color:#fff;margin-right:16px}
main{padding:16px 20px;max-width:1200px}table{border-collapse:collapse;background:#fff;margin:8px 0 20px}
th,td{border:1px solid #d0d7de;padding:4px 8px;text-align:left;vertical-align:top}
th{background:#eaeef2}tr.failed td{background:#ffebe9}td.num{text-align:right}
.muted{color:#57606a}code{font-size:13px}h2{margin-top:24px}
form.filters{background:#fff;border:1px solid #d0d7de;padding:8px;display:inline-block}
form.filters label{margin-right:10px;white-space:nowrap;display:inline-block}svg.chart{background:#fff;border:1px solid #d0d7de}
.chart .ok{fill:#2da44e}.chart .bad{fill:#cf222e}.chart text{font-size:11px;fill:#57606a}
";

struct App {
    store: PostgresProvider,
    token: Option<String>,
}

type Shared = State<Arc<App>>;

/// Serves the dashboard on `listen` until the process is stopped; prints
/// `listening on http://ADDR` once bound (ADDR is the real port for `:0`).
pub async fn serve(
    store: PostgresProvider,
    listen: &str,
    token: Option<String>,
) -> Result<(), String> {
    let app = Arc::new(App { store, token });
    let router = Router::new()
        .route("/", get(overview))
        .route("/instances", get(instances))
        .route("/instances/{id}", get(instance))
        .route("/stuck", get(stuck))
        .route("/api/status", get(api_status))
        .route("/api/activity", get(api_activity))
        .route("/api/instances", get(api_instances))
        .route("/api/instances/{id}", get(api_instance))
        .route("/api/stuck", get(api_stuck))
        .route("/style.css", get(style))
        .layer(middleware::from_fn_with_state(app.clone(), authorize))
        .with_state(app);
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|e| format!("cannot listen on {listen}: {e}"))?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    println!("listening on http://{addr}");
    axum::serve(listener, router)
        .await
        .map_err(|e| e.to_string())
}

async fn authorize(State(app): Shared, request: Request, next: Next) -> Response {
    if let Some(token) = &app.token {
        let given = request
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        if given != Some(token.as_str()) {
            return (
                StatusCode::UNAUTHORIZED,
                [(header::WWW_AUTHENTICATE, "Bearer")],
                "a bearer token is required\n",
            )
                .into_response();
        }
    }
    next.run(request).await
}

/// A failed query: 500 with the error (the store's errors carry no secrets).
fn failure(e: impl std::fmt::Display) -> Response {
    (StatusCode::INTERNAL_SERVER_ERROR, format!("error: {e}\n")).into_response()
}

fn not_found(id: &str) -> Response {
    (
        StatusCode::NOT_FOUND,
        Html(page(
            "not found",
            &format!("<p>No instance <code>{}</code>.</p>", esc(id)),
        )),
    )
        .into_response()
}

#[derive(serde::Deserialize)]
struct StuckQuery {
    ready_for: Option<u64>,
    attempts: Option<u32>,
}

const ATTEMPTS: u32 = 5;
const HISTORY: u32 = 500;

async fn style() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "text/css")], STYLE)
}

async fn api_status(State(app): Shared) -> Response {
    match app.store.inspect().status(ATTEMPTS).await {
        Ok(s) => Json(s).into_response(),
        Err(e) => failure(e),
    }
}

async fn api_instance(State(app): Shared, Path(id): Path<String>) -> Response {
    match app.store.inspect().instance(&id, HISTORY).await {
        Ok(Some(d)) => Json(d).into_response(),
        Ok(None) => (
            StatusCode::NOT_FOUND,
            Json(serde_json::json!({"error": "no such instance"})),
        )
            .into_response(),
        Err(e) => failure(e),
    }
}

async fn load_stuck(app: &App, q: &StuckQuery) -> Result<Vec<StuckWork>, String> {
    let ready_for = Duration::from_secs(q.ready_for.unwrap_or(60));
    app.store
        .inspect()
        .stuck(ready_for, q.attempts.unwrap_or(ATTEMPTS), 200)
        .await
        .map_err(|e| e.to_string())
}

async fn api_stuck(State(app): Shared, Query(q): Query<StuckQuery>) -> Response {
    match load_stuck(&app, &q).await {
        Ok(s) => Json(s).into_response(),
        Err(e) => failure(e),
    }
}

/// The chart's window: 12 buckets of 5 minutes.
const BUCKET: Duration = Duration::from_secs(300);
const BUCKETS: u32 = 12;

async fn api_activity(State(app): Shared) -> Response {
    match app.store.inspect().activity(BUCKET, BUCKETS).await {
        Ok(a) => Json(a).into_response(),
        Err(e) => failure(e),
    }
}

async fn overview(State(app): Shared) -> Response {
    let inspect = app.store.inspect();
    let (status, activity) = match (
        inspect.status(ATTEMPTS).await,
        inspect.activity(BUCKET, BUCKETS).await,
    ) {
        (Ok(s), Ok(a)) => (s, a),
        (Err(e), _) | (_, Err(e)) => return failure(e),
    };
    let body = overview_html(&status, &activity);
    Html(page(&format!("store {}", status.schema), &body)).into_response()
}

/// The filters of `/instances` and `/api/instances` (those of `list`).
#[derive(serde::Deserialize, Default)]
struct ListParams {
    status: Option<String>,
    name: Option<String>,
    version: Option<String>,
    since: Option<String>,
    before: Option<String>,
    finished_since: Option<String>,
    finished_before: Option<String>,
    roots: Option<String>,
    parent: Option<String>,
    limit: Option<u32>,
    cursor: Option<String>,
}

impl ListParams {
    fn get(v: &Option<String>) -> Option<&str> {
        v.as_deref().map(str::trim).filter(|s| !s.is_empty())
    }

    fn roots(&self) -> bool {
        matches!(Self::get(&self.roots), Some("1" | "on" | "true"))
    }

    /// The query, or a message saying which filter is wrong.
    fn query(&self) -> Result<(InstanceQuery, Option<InstanceCursor>), String> {
        let now_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        let ago = |v: &Option<String>, what: &str| -> Result<Option<u64>, String> {
            Self::get(v)
                .map(|s| {
                    crate::parse_age(s)
                        .map(|d| now_ms.saturating_sub(d.as_millis() as u64))
                        .ok_or_else(|| format!("{what} takes an age such as 30m or 2h, not {s:?}"))
                })
                .transpose()
        };
        let mut q = InstanceQuery::new()
            .created_between(ago(&self.since, "since")?, ago(&self.before, "before")?)
            .completed_between(
                ago(&self.finished_since, "finished_since")?,
                ago(&self.finished_before, "finished_before")?,
            )
            .limit(self.limit.unwrap_or(50).min(500));
        if let Some(v) = Self::get(&self.status) {
            for s in v.split(',') {
                let status =
                    crate::list_status(s).ok_or_else(|| format!("unknown status {s:?}"))?;
                q = q.status(status);
            }
        }
        match (Self::get(&self.name), Self::get(&self.version)) {
            (Some(n), v) => q = q.orchestration(n, v),
            (None, Some(_)) => return Err("version needs name".into()),
            (None, None) => {}
        }
        if self.roots() {
            q = q.roots_only();
        }
        if let Some(p) = Self::get(&self.parent) {
            q = q.parent(p);
        }
        let cursor = match Self::get(&self.cursor) {
            None => None,
            Some(c) => {
                Some(InstanceCursor::from_token(c).ok_or_else(|| format!("bad cursor {c:?}"))?)
            }
        };
        Ok((q, cursor))
    }

    /// The query string of these filters with `cursor` as the cursor.
    fn href(&self, cursor: &str) -> String {
        let mut pairs: Vec<(&str, &str)> = [
            ("status", &self.status),
            ("name", &self.name),
            ("version", &self.version),
            ("since", &self.since),
            ("before", &self.before),
            ("finished_since", &self.finished_since),
            ("finished_before", &self.finished_before),
            ("parent", &self.parent),
        ]
        .into_iter()
        .filter_map(|(k, v)| Self::get(v).map(|v| (k, v)))
        .collect();
        if self.roots() {
            pairs.push(("roots", "1"));
        }
        let limit = self.limit.map(|l| l.to_string());
        if let Some(l) = &limit {
            pairs.push(("limit", l));
        }
        pairs.push(("cursor", cursor));
        let query: Vec<String> = pairs
            .iter()
            .map(|(k, v)| format!("{k}={}", seg(v)))
            .collect();
        format!("/instances?{}", query.join("&"))
    }
}

fn bad_request(message: &str) -> Response {
    (StatusCode::BAD_REQUEST, format!("bad request: {message}\n")).into_response()
}

async fn load_list(app: &App, p: &ListParams) -> Result<InstanceList, Response> {
    let (query, cursor) = p.query().map_err(|m| bad_request(&m))?;
    app.store
        .inspect()
        .list(&query, cursor.as_ref())
        .await
        .map_err(failure)
}

async fn api_instances(State(app): Shared, Query(p): Query<ListParams>) -> Response {
    match load_list(&app, &p).await {
        Ok(list) => Json(list).into_response(),
        Err(r) => r,
    }
}

async fn instances(State(app): Shared, Query(p): Query<ListParams>) -> Response {
    match load_list(&app, &p).await {
        Ok(list) => Html(page("instances", &instances_html(&p, &list))).into_response(),
        Err(r) => r,
    }
}

async fn instance(State(app): Shared, Path(id): Path<String>) -> Response {
    match app.store.inspect().instance(&id, HISTORY).await {
        Ok(Some(d)) => Html(page(
            &format!("instance {}", d.instance_id),
            &instance_html(&d),
        ))
        .into_response(),
        Ok(None) => not_found(&id),
        Err(e) => failure(e),
    }
}

async fn stuck(State(app): Shared, Query(q): Query<StuckQuery>) -> Response {
    match load_stuck(&app, &q).await {
        Ok(items) => Html(page("stuck work", &stuck_html(&items))).into_response(),
        Err(e) => failure(e),
    }
}

/// HTML-escapes `s`.
fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            _ => out.push(c),
        }
    }
    out
}

/// A path segment: percent-encodes everything but unreserved characters.
fn seg(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

fn instance_link(id: &str) -> String {
    format!("<a href=\"/instances/{}\">{}</a>", seg(id), esc(id))
}

fn page(title: &str, body: &str) -> String {
    format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <title>{t} · duroxide-postgres</title><link rel=\"stylesheet\" href=\"/style.css\"></head>\
         <body><header><a href=\"/\">overview</a><a href=\"/instances\">instances</a>\
         <a href=\"/stuck\">stuck work</a>\
         <span class=\"muted\">duroxide-postgres</span></header><main><h1>{t}</h1>{body}</main>\
         </body></html>",
        t = esc(title)
    )
}

fn table(headers: &[&str], rows: Vec<(bool, Vec<String>)>) -> String {
    let mut out = String::from("<table><tr>");
    for h in headers {
        let _ = write!(out, "<th>{}</th>", esc(h));
    }
    out.push_str("</tr>");
    for (failed, cells) in rows {
        out.push_str(if failed {
            "<tr class=\"failed\">"
        } else {
            "<tr>"
        });
        for c in cells {
            let _ = write!(out, "<td>{c}</td>");
        }
        out.push_str("</tr>");
    }
    out.push_str("</table>");
    out
}

fn age(ms: Option<u64>) -> String {
    ms.map(human_ms).unwrap_or_else(|| "-".into())
}

fn overview_html(s: &Status, activity: &Activity) -> String {
    let mut out = String::from("<h2>Instances</h2>");
    let rows = s
        .instances
        .iter()
        .map(|c| {
            let link = format!(
                "<a href=\"/instances?status={}\">{}</a>",
                seg(&c.status),
                esc(&c.status)
            );
            (c.status == "Failed", vec![link, c.instances.to_string()])
        })
        .collect();
    out.push_str(&table(&["status", "instances"], rows));
    out.push_str("<p><a href=\"/instances\">All instances</a></p>");
    out.push_str(&chart_html(activity));
    out.push_str("<h2>Queues</h2>");
    let rows = s
        .health
        .queues
        .iter()
        .map(|q| {
            (
                q.expired_leases > 0,
                vec![
                    q.queue.as_str().to_string(),
                    q.ready.to_string(),
                    q.delayed.to_string(),
                    q.leased.to_string(),
                    q.expired_leases.to_string(),
                    age(q.oldest_ready_age_ms),
                    q.at_attempts.to_string(),
                    q.dead_tuples.to_string(),
                ],
            )
        })
        .collect();
    out.push_str(&table(
        &[
            "queue",
            "ready",
            "delayed",
            "leased",
            "expired leases",
            "oldest ready",
            &format!("≥{} attempts", s.health.attempts_threshold),
            "dead tuples",
        ],
        rows,
    ));
    out.push_str("<h2>Vacuum and notifications</h2><p>");
    match &s.health.vacuum_holder {
        None => out.push_str("No other session holds a snapshot."),
        Some(h) => {
            let _ = write!(
                out,
                "Oldest snapshot: pid {} ({}), transaction {} old, query started {}.",
                h.pid,
                esc(h.application.as_deref().unwrap_or("?")),
                age(h.transaction_age_ms),
                opt_time(h.query_start_ms)
            );
        }
    }
    let _ = write!(
        out,
        " LISTEN/NOTIFY queue {:.2}% used.</p><h2>Tables</h2>",
        s.health.notification_queue_usage * 100.0
    );
    let rows = s
        .tables
        .iter()
        .map(|t| {
            (
                false,
                vec![
                    esc(&t.table),
                    t.live_tuples.to_string(),
                    t.dead_tuples.to_string(),
                    bytes(t.total_bytes),
                    opt_time(t.last_vacuum_ms),
                ],
            )
        })
        .collect();
    out.push_str(&table(
        &["table", "live", "dead", "size", "last vacuum"],
        rows,
    ));
    out
}

/// Completions (green) and failures (red) per bucket as inline SVG bars,
/// with the totals in words (and as data attributes) above it.
fn chart_html(a: &Activity) -> String {
    let (w, h, pad) = (720.0_f64, 160.0_f64, 20.0_f64);
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
    let mut out = format!(
        "<h2>Last {minutes:.0} minutes</h2><p id=\"activity\" data-completed=\"{c}\" \
         data-failed=\"{f}\">{c} completed, {f} failed \
         <span class=\"muted\">(per {} minutes; by completion time)</span></p>",
        a.bucket_ms / 60_000,
        c = a.completed(),
        f = a.failed(),
    );
    let _ = write!(
        out,
        "<svg class=\"chart\" width=\"{w}\" height=\"{h}\" viewBox=\"0 0 {w} {h}\" \
         role=\"img\" aria-label=\"completions and failures over time\">"
    );
    let base = h - pad;
    for (i, b) in a.buckets.iter().enumerate() {
        let x = pad + i as f64 * slot + 1.0;
        for (k, (count, class, what)) in [
            (b.completed, "ok", "completed"),
            (b.failed, "bad", "failed"),
        ]
        .into_iter()
        .enumerate()
        {
            let height = count as f64 / max * (h - 2.0 * pad);
            let _ = write!(
                out,
                "<rect class=\"{class}\" x=\"{:.1}\" y=\"{:.1}\" width=\"{bar:.1}\" \
                 height=\"{height:.1}\" data-count=\"{count}\"><title>{} {what} from {}</title></rect>",
                x + k as f64 * (bar + 1.0),
                base - height,
                count,
                time(b.from_ms),
            );
        }
    }
    if let (Some(first), Some(_)) = (a.buckets.first(), a.buckets.last()) {
        let _ = write!(
            out,
            "<text x=\"{pad}\" y=\"{}\">{}</text><text x=\"{}\" y=\"{}\" \
             text-anchor=\"end\">now</text>",
            h - 5.0,
            time(first.from_ms),
            w - pad,
            h - 5.0
        );
    }
    let _ = write!(
        out,
        "<line x1=\"{pad}\" y1=\"{base}\" x2=\"{}\" y2=\"{base}\" stroke=\"#8c959f\"/></svg>",
        w - pad
    );
    out
}

fn instances_html(p: &ListParams, list: &InstanceList) -> String {
    let field = |name: &str, label: &str, v: &Option<String>, hint: &str| {
        format!(
            "<label>{label} <input name=\"{name}\" value=\"{}\" placeholder=\"{hint}\" \
             size=\"12\"></label>",
            esc(v.as_deref().unwrap_or(""))
        )
    };
    let mut out = String::from("<form class=\"filters\" method=\"get\" action=\"/instances\">");
    out.push_str(&field("status", "status", &p.status, "Failed,Running"));
    out.push_str(&field("name", "orchestration", &p.name, "name"));
    out.push_str(&field("version", "version", &p.version, "1.0.0"));
    out.push_str(&field("since", "created since", &p.since, "2h"));
    out.push_str(&field("before", "before", &p.before, "30m"));
    out.push_str(&field(
        "finished_since",
        "finished since",
        &p.finished_since,
        "1h",
    ));
    out.push_str(&field(
        "finished_before",
        "before",
        &p.finished_before,
        "10m",
    ));
    out.push_str(&field("parent", "parent", &p.parent, "instance id"));
    let _ = write!(
        out,
        "<label><input type=\"checkbox\" name=\"roots\" value=\"1\"{}> roots only</label>\
         <button type=\"submit\">filter</button></form>",
        if p.roots() { " checked" } else { "" }
    );
    if list.items.is_empty() {
        out.push_str("<p>No instances match.</p>");
        return out;
    }
    let rows = list
        .items
        .iter()
        .map(|i| {
            (
                i.status == "Failed",
                vec![
                    instance_link(&i.instance_id),
                    esc(&i.orchestration_name),
                    esc(&i.orchestration_version),
                    esc(&i.status),
                    i.current_execution_id.to_string(),
                    time(i.created_at_ms as i64),
                    opt_time(i.completed_at_ms.map(|m| m as i64)),
                    i.parent_instance_id
                        .as_deref()
                        .map(instance_link)
                        .unwrap_or_default(),
                ],
            )
        })
        .collect();
    out.push_str(&table(
        &[
            "instance",
            "orchestration",
            "version",
            "status",
            "execution",
            "created",
            "finished",
            "parent",
        ],
        rows,
    ));
    if let Some(c) = &list.next_cursor {
        let _ = write!(
            out,
            "<p><a id=\"next\" href=\"{}\">next page →</a></p>",
            esc(&p.href(c))
        );
    }
    out
}

fn instance_html(d: &InstanceDetail) -> String {
    let mut out = String::new();
    let _ = write!(
        out,
        "<p><b>{}</b> (version {}) — <b>{}</b>, execution {}, created {}, updated {}</p>",
        esc(&d.orchestration_name),
        esc(d.orchestration_version.as_deref().unwrap_or("-")),
        esc(&d.status),
        d.current_execution_id,
        time(d.created_at_ms),
        time(d.updated_at_ms)
    );
    if let Some(p) = &d.parent_instance_id {
        let _ = write!(out, "<p>parent: {}</p>", instance_link(p));
    }
    if let Some(c) = &d.custom_status {
        let _ = write!(out, "<p>custom status: <code>{}</code></p>", esc(c));
    }
    if let Some(o) = &d.output {
        let _ = write!(out, "<p>output: <code>{}</code></p>", esc(o));
    }
    out.push_str("<h2>Executions</h2>");
    let rows = d
        .executions
        .iter()
        .map(|e| {
            (
                e.status == "Failed",
                vec![
                    e.execution_id.to_string(),
                    esc(&e.status),
                    time(e.started_at_ms),
                    opt_time(e.completed_at_ms),
                    e.events.to_string(),
                    esc(e.output.as_deref().unwrap_or("")),
                ],
            )
        })
        .collect();
    out.push_str(&table(
        &["id", "status", "started", "completed", "events", "output"],
        rows,
    ));
    out.push_str("<h2>Timeline</h2>");
    if d.history_truncated {
        out.push_str("<p class=\"muted\">Older events left out.</p>");
    }
    let rows = d
        .history
        .iter()
        .map(|h| {
            let mut detail = esc(h.summary.as_deref().unwrap_or(""));
            if let Some(child) = &h.child_instance {
                detail = format!("{} {detail}", instance_link(child));
            }
            if let Some(src) = h.source_event_id {
                detail = format!("<span class=\"muted\">(#{src})</span> {detail}");
            }
            (
                h.failed,
                vec![
                    h.time_ms.map(|t| time(t as i64)).unwrap_or_default(),
                    h.execution_id.to_string(),
                    h.event_id.to_string(),
                    esc(&h.kind),
                    esc(h.name.as_deref().unwrap_or("")),
                    detail,
                ],
            )
        })
        .collect();
    out.push_str(&table(
        &["time", "exec", "#", "kind", "name", "detail"],
        rows,
    ));
    out.push_str("<h2>Pending</h2>");
    if d.pending.is_empty() {
        out.push_str("<p>Nothing queued.</p>");
    } else {
        let rows = d
            .pending
            .iter()
            .map(|p| {
                (
                    false,
                    vec![
                        p.queue.as_str().to_string(),
                        p.item_id.to_string(),
                        esc(&p.kind),
                        time(p.visible_at_ms),
                        p.attempt_count.to_string(),
                        format!("{:?}", p.lease).to_lowercase(),
                        opt_time(p.locked_until_ms),
                    ],
                )
            })
            .collect();
        out.push_str(&table(
            &[
                "queue", "id", "kind", "visible", "attempts", "lease", "until",
            ],
            rows,
        ));
    }
    if !d.kv.is_empty() {
        out.push_str("<h2>KV</h2>");
        let rows =
            d.kv.iter()
                .map(|(k, v)| (false, vec![esc(k), format!("<code>{}</code>", esc(v))]))
                .collect();
        out.push_str(&table(&["key", "value"], rows));
    }
    if !d.children.is_empty() {
        out.push_str("<h2>Children</h2><ul>");
        for c in &d.children {
            let _ = write!(out, "<li>{}</li>", instance_link(c));
        }
        out.push_str("</ul>");
    }
    out
}

fn stuck_html(items: &[StuckWork]) -> String {
    if items.is_empty() {
        return "<p>Nothing stuck.</p>".to_string();
    }
    let rows = items
        .iter()
        .map(|w| {
            (
                true,
                vec![
                    w.queue.as_str().to_string(),
                    instance_link(&w.instance_id),
                    esc(&w.kind),
                    age(w.ready_age_ms),
                    w.attempt_count.to_string(),
                    esc(&w.why),
                ],
            )
        })
        .collect();
    table(
        &["queue", "instance", "kind", "ready for", "attempts", "why"],
        rows,
    )
}
