//! `duroxide-postgres ui`: the web dashboard, server-rendered HTML from the
//! same query layer as the other commands (no front-end build; the
//! stylesheet and a small refresh script are embedded). Every page is a
//! `maud` template, which escapes each value it interpolates.
//!
//! Pages: `/` (overview: instances by status, per-minute starts, finishes
//! and latency percentiles over the last hour, failures grouped by
//! orchestration and activity, queues, vacuum, tables), `/instances` (the
//! listing, with the CLI's filters and keyset pagination), `/search?q=`
//! (an exact id opens its page; otherwise id prefix and orchestration name),
//! `/instances/{id}` (an SVG timeline, executions, history, pending work,
//! KV, children, and the write actions when allowed), `/stuck`. JSON:
//! `/api/status`, `/api/activity`, `/api/minutes`, `/api/failures`,
//! `/api/search`, `/api/instances`, `/api/instances/{id}`, `/api/stuck`.
//! Pages refresh their `<main>` every few seconds without a reload
//! (`/live.js`) and say when they last did.
//!
//! Binds to 127.0.0.1:8080 by default. With `--token T` every request needs
//! `Authorization: Bearer T` or the cookie `/login?token=T` sets. It only
//! reads (a read-only role suffices, `docs/operations.md`) unless started
//! with both `--token` and `--allow-writes`: then instance pages offer
//! cancel, raise event and delete, each a POST carrying this process's CSRF
//! token (and, when the browser sends one, a same-host `Origin`); any other
//! write is refused with 403.

mod pages;
mod timeline;

use axum::extract::rejection::FormRejection;
use axum::extract::{Form, Path, Query, Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Json, Redirect, Response};
use axum::routing::{get, post};
use axum::Router;
use duroxide::Client;
use duroxide_postgres::inspect::{InstanceList, StuckWork};
use duroxide_postgres::{InstanceCursor, InstanceQuery, PostgresProvider};
use maud::Markup;
use std::sync::Arc;
use std::time::Duration;

pub use timeline::seg;

/// How the dashboard was started.
pub struct Options {
    /// The bearer token every request needs, if any.
    pub token: Option<String>,
    /// Whether instance pages offer writes (only with a token).
    pub allow_writes: bool,
    /// How often pages refresh their figures.
    pub refresh: Duration,
}

struct App {
    store: Arc<PostgresProvider>,
    token: Option<String>,
    allow_writes: bool,
    refresh: Duration,
    /// This process's CSRF token: every write form carries it.
    csrf: String,
}

type Shared = State<Arc<App>>;

/// The cookie `/login` sets (for browsers, which cannot send a bearer
/// header when following a link).
const COOKIE: &str = "duroxide_ui_token";

/// Serves the dashboard on `listen` until the process is stopped; prints
/// `listening on http://ADDR` once bound (ADDR is the real port for `:0`).
pub async fn serve(store: PostgresProvider, listen: &str, options: Options) -> Result<(), String> {
    let app = Arc::new(App {
        store: Arc::new(store),
        allow_writes: options.allow_writes && options.token.is_some(),
        token: options.token,
        refresh: options.refresh,
        csrf: uuid::Uuid::new_v4().simple().to_string(),
    });
    let router = Router::new()
        .route("/", get(overview))
        .route("/instances", get(instances))
        .route("/instances/{id}", get(instance))
        .route("/instances/{id}/{action}", post(write))
        .route("/search", get(search))
        .route("/stuck", get(stuck))
        .route("/api/status", get(api_status))
        .route("/api/activity", get(api_activity))
        .route("/api/minutes", get(api_minutes))
        .route("/api/failures", get(api_failures))
        .route("/api/search", get(api_search))
        .route("/api/instances", get(api_instances))
        .route("/api/instances/{id}", get(api_instance))
        .route("/api/stuck", get(api_stuck))
        .route("/style.css", get(style))
        .route("/live.js", get(live_js))
        .layer(middleware::from_fn_with_state(app.clone(), authorize))
        .route("/login", get(login))
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

/// Equal strings, compared in time that depends on the length only.
fn same(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

fn cookie_token(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|c| c.trim().strip_prefix(COOKIE)?.strip_prefix('='))
}

async fn authorize(State(app): Shared, request: Request, next: Next) -> Response {
    if let Some(token) = &app.token {
        let headers = request.headers();
        let bearer = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        let given = bearer.or_else(|| cookie_token(headers));
        if !given.is_some_and(|g| same(g, token)) {
            return (
                StatusCode::UNAUTHORIZED,
                [(header::WWW_AUTHENTICATE, "Bearer")],
                "a bearer token is required (or open /login?token=T once)\n",
            )
                .into_response();
        }
    }
    next.run(request).await
}

#[derive(serde::Deserialize)]
struct LoginQuery {
    token: Option<String>,
}

/// `/login?token=T`: with the right token, a cookie that carries it on the
/// following requests (HttpOnly, SameSite=Strict: no other site's page can
/// make the browser send it), then the overview.
async fn login(State(app): Shared, Query(q): Query<LoginQuery>) -> Response {
    match (&app.token, q.token) {
        (Some(token), Some(given)) if same(&given, token) => (
            StatusCode::SEE_OTHER,
            [
                (
                    header::SET_COOKIE,
                    format!("{COOKIE}={token}; Path=/; HttpOnly; SameSite=Strict"),
                ),
                (header::LOCATION, "/".to_string()),
            ],
        )
            .into_response(),
        (None, _) => Redirect::to("/").into_response(),
        _ => (StatusCode::UNAUTHORIZED, "wrong token\n").into_response(),
    }
}

/// A failed query: 500 with the error (the store's errors carry no secrets).
fn failure(e: impl std::fmt::Display) -> Response {
    (StatusCode::INTERNAL_SERVER_ERROR, format!("error: {e}\n")).into_response()
}

fn bad_request(message: &str) -> Response {
    (StatusCode::BAD_REQUEST, format!("bad request: {message}\n")).into_response()
}

fn html(markup: Markup) -> Response {
    (
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        markup.into_string(),
    )
        .into_response()
}

impl App {
    fn page(&self, title: &str, body: Markup) -> Response {
        html(pages::page(title, self.refresh, body))
    }
}

#[derive(serde::Deserialize)]
struct StuckQuery {
    ready_for: Option<u64>,
    attempts: Option<u32>,
}

const ATTEMPTS: u32 = 5;
const HISTORY: u32 = 500;
/// The chart of completions and failures: 12 buckets of 5 minutes.
const BUCKET: Duration = Duration::from_secs(300);
const BUCKETS: u32 = 12;
/// Per-minute figures over this many minutes.
const MINUTES: u32 = 60;
/// Failures grouped over the last hour, from at most this many instances.
const FAILURES: u32 = 200;
const HOUR: Duration = Duration::from_secs(3600);

async fn style() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "text/css")], pages::STYLE)
}

async fn live_js() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/javascript; charset=utf-8")],
        pages::LIVE_JS,
    )
}

async fn api_status(State(app): Shared) -> Response {
    match app.store.inspect().status(ATTEMPTS).await {
        Ok(s) => Json(s).into_response(),
        Err(e) => failure(e),
    }
}

async fn api_activity(State(app): Shared) -> Response {
    match app.store.inspect().activity(BUCKET, BUCKETS).await {
        Ok(a) => Json(a).into_response(),
        Err(e) => failure(e),
    }
}

async fn api_minutes(State(app): Shared) -> Response {
    match app.store.inspect().minutes(MINUTES).await {
        Ok(m) => Json(m).into_response(),
        Err(e) => failure(e),
    }
}

async fn api_failures(State(app): Shared) -> Response {
    match app.store.inspect().failures(HOUR, FAILURES).await {
        Ok(f) => Json(f).into_response(),
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

async fn overview(State(app): Shared) -> Response {
    let inspect = app.store.inspect();
    let status = match inspect.status(ATTEMPTS).await {
        Ok(s) => s,
        Err(e) => return failure(e),
    };
    let activity = match inspect.activity(BUCKET, BUCKETS).await {
        Ok(a) => a,
        Err(e) => return failure(e),
    };
    let minutes = match inspect.minutes(MINUTES).await {
        Ok(m) => m,
        Err(e) => return failure(e),
    };
    let failures = match inspect.failures(HOUR, FAILURES).await {
        Ok(f) => f,
        Err(e) => return failure(e),
    };
    let title = format!("store {}", status.schema);
    app.page(
        &title,
        pages::overview(&status, &activity, &minutes, &failures),
    )
}

/// The filters of `/instances` and `/api/instances` (those of `list`).
#[derive(serde::Deserialize, Default)]
pub struct ListParams {
    pub status: Option<String>,
    pub name: Option<String>,
    pub version: Option<String>,
    pub since: Option<String>,
    pub before: Option<String>,
    pub finished_since: Option<String>,
    pub finished_before: Option<String>,
    pub roots: Option<String>,
    pub parent: Option<String>,
    pub limit: Option<u32>,
    pub cursor: Option<String>,
}

impl ListParams {
    fn get(v: &Option<String>) -> Option<&str> {
        v.as_deref().map(str::trim).filter(|s| !s.is_empty())
    }

    /// Whether "roots only" is ticked.
    pub fn roots(&self) -> bool {
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
    pub fn href(&self, cursor: &str) -> String {
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
        Ok(list) => app.page("instances", pages::instances(&p, &list)),
        Err(r) => r,
    }
}

#[derive(serde::Deserialize)]
struct SearchQuery {
    q: Option<String>,
    /// The last id of the previous page of prefix matches.
    after: Option<String>,
    limit: Option<u32>,
}

/// What a search found.
#[derive(serde::Serialize)]
pub struct Found {
    /// The text searched for.
    pub q: String,
    /// Whether an instance has exactly that id.
    pub exact: bool,
    /// Instances whose id starts with it (a page, in id order).
    pub by_prefix: Vec<duroxide_postgres::InstanceSummary>,
    /// The `after` of the next page of `by_prefix`, when this one was full.
    pub next_after: Option<String>,
    /// The latest instances of the orchestration of that name.
    pub by_name: Vec<duroxide_postgres::InstanceSummary>,
}

async fn find(app: &App, query: &SearchQuery, q: &str) -> Result<Found, Response> {
    let inspect = app.store.inspect();
    let exact = inspect.instance(q, 0).await.map_err(failure)?.is_some();
    let limit = query.limit.unwrap_or(50).clamp(1, 500);
    let by_prefix = inspect
        .search(q, field(&query.after), limit)
        .await
        .map_err(failure)?;
    let next_after = (by_prefix.len() as u32 == limit)
        .then(|| by_prefix.last().map(|i| i.instance_id.clone()))
        .flatten();
    let by_name = inspect
        .list(&InstanceQuery::new().orchestration(q, None).limit(50), None)
        .await
        .map_err(failure)?
        .items;
    Ok(Found {
        q: q.to_string(),
        exact,
        by_prefix,
        next_after,
        by_name,
    })
}

fn search_text(q: &SearchQuery) -> Option<&str> {
    q.q.as_deref().map(str::trim).filter(|s| !s.is_empty())
}

async fn search(State(app): Shared, Query(q): Query<SearchQuery>) -> Response {
    let Some(text) = search_text(&q) else {
        return app.page("search", pages::search(None));
    };
    match find(&app, &q, text).await {
        Ok(found) if found.exact && field(&q.after).is_none() => {
            Redirect::to(&format!("/instances/{}", seg(text))).into_response()
        }
        Ok(found) => app.page(&format!("search: {text}"), pages::search(Some(&found))),
        Err(r) => r,
    }
}

async fn api_search(State(app): Shared, Query(q): Query<SearchQuery>) -> Response {
    let Some(text) = search_text(&q) else {
        return bad_request("q is required");
    };
    match find(&app, &q, text).await {
        Ok(found) => Json(found).into_response(),
        Err(r) => r,
    }
}

async fn instance(State(app): Shared, Path(id): Path<String>) -> Response {
    match app.store.inspect().instance(&id, HISTORY).await {
        Ok(Some(d)) => {
            let csrf = app.allow_writes.then_some(app.csrf.as_str());
            app.page(
                &format!("instance {}", d.instance_id),
                pages::instance(&d, csrf),
            )
        }
        Ok(None) => (
            StatusCode::NOT_FOUND,
            html(pages::page("not found", app.refresh, pages::not_found(&id))),
        )
            .into_response(),
        Err(e) => failure(e),
    }
}

async fn stuck(State(app): Shared, Query(q): Query<StuckQuery>) -> Response {
    match load_stuck(&app, &q).await {
        Ok(items) => app.page("stuck work", pages::stuck(&items)),
        Err(e) => failure(e),
    }
}

/// The fields of a write form.
#[derive(serde::Deserialize, Default)]
struct WriteForm {
    csrf: Option<String>,
    reason: Option<String>,
    name: Option<String>,
    data: Option<String>,
    force: Option<String>,
}

fn forbidden(why: &str) -> Response {
    (StatusCode::FORBIDDEN, format!("forbidden: {why}\n")).into_response()
}

/// Whether the request's `Origin`, when the browser sent one, is this host.
fn same_origin(headers: &HeaderMap) -> bool {
    let Some(origin) = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()) else {
        return true;
    };
    let host = headers.get(header::HOST).and_then(|v| v.to_str().ok());
    let origin_host = origin
        .strip_prefix("http://")
        .or_else(|| origin.strip_prefix("https://"));
    matches!((origin_host, host), (Some(o), Some(h)) if o == h)
}

/// `POST /instances/{id}/{cancel|raise|delete}`: refused with 403 unless
/// the dashboard allows writes and the form carries this process's CSRF
/// token from a page of this host; then through duroxide's `Client`, as the
/// CLI's writes, and back to the instance page (303).
fn field(v: &Option<String>) -> Option<&str> {
    v.as_deref().map(str::trim).filter(|s| !s.is_empty())
}

async fn write(
    State(app): Shared,
    Path((id, action)): Path<(String, String)>,
    headers: HeaderMap,
    form: Result<Form<WriteForm>, FormRejection>,
) -> Response {
    if !app.allow_writes {
        return forbidden(
            "this dashboard is read-only (start it with --token and --allow-writes to act)",
        );
    }
    let form = match form {
        Ok(Form(f)) => f,
        Err(_) => WriteForm::default(),
    };
    if !form.csrf.as_deref().is_some_and(|c| same(c, &app.csrf)) || !same_origin(&headers) {
        return forbidden("the form's CSRF token is missing or wrong (reload the page)");
    }
    let store = app.store.clone();
    let current = match store.inspect().instance(&id, 0).await {
        Ok(Some(d)) => d,
        Ok(None) => {
            return (StatusCode::NOT_FOUND, format!("no instance {id:?}\n")).into_response()
        }
        Err(e) => return failure(e),
    };
    let client = Client::new(store);
    let back = format!("/instances/{}", seg(&id));
    let done = match action.as_str() {
        "cancel" => {
            if current.status != "Running" {
                return (
                    StatusCode::CONFLICT,
                    format!("instance {id:?} is {}, not running\n", current.status),
                )
                    .into_response();
            }
            let reason = field(&form.reason).unwrap_or("cancelled from the dashboard");
            client
                .cancel_instance(id.as_str(), reason)
                .await
                .map(|_| back)
        }
        "raise" => {
            let Some(name) = field(&form.name) else {
                return bad_request("an event name is required");
            };
            let data = form.data.as_deref().unwrap_or("");
            client
                .raise_event(id.as_str(), name, data)
                .await
                .map(|_| back)
        }
        "delete" => {
            let force = form.force.is_some();
            client
                .delete_instance(&id, force)
                .await
                .map(|_| "/instances".to_string())
        }
        _ => return (StatusCode::NOT_FOUND, "no such action\n").into_response(),
    };
    match done {
        Ok(to) => Redirect::to(&to).into_response(),
        Err(e) => (StatusCode::CONFLICT, format!("{action} failed: {e}\n")).into_response(),
    }
}
