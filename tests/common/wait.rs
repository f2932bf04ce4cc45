//! Waiting until what a test needs has happened, observed from outside the
//! store: a backend's state in `pg_stat_activity`, the calls of a store
//! function in `pg_stat_statements`, a metric of the store. Every wait is
//! bounded and fails the test with what never happened, so a test never
//! goes on (and passes) without its precondition.

use duroxide_postgres::PostgresProvider;
use std::future::Future;
use std::time::{Duration, Instant};

/// Upper bound of every wait. What is waited for normally happens within
/// milliseconds; the bound only turns "never" into a failure, on a loaded
/// 2-core machine running many tests at once.
pub const LIMIT: Duration = Duration::from_secs(30);

/// How often a condition is checked again.
const POLL: Duration = Duration::from_millis(10);

/// Checks `holds` until it is true; panics with `what` after [`LIMIT`].
pub async fn until<F, Fut>(what: &str, holds: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    if !within(LIMIT, holds).await {
        panic!("never happened within {LIMIT:?}: {what}");
    }
}

/// Checks `holds` until it is true (then returns true) or `limit` has passed
/// (then false).
pub async fn within<F, Fut>(limit: Duration, mut holds: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + limit;
    loop {
        if holds().await {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(POLL).await;
    }
}

/// Waits until a backend waits on a heavyweight lock (a row or table lock
/// another transaction holds) while running a statement containing
/// `statement`, on a connection named `app` when one is given.
pub async fn lock_wait(admin: &tokio_postgres::Client, app: Option<&str>, statement: &str) {
    let what = format!(
        "a statement containing {statement:?}{} waits on a lock",
        app.map(|a| format!(" of application {a}"))
            .unwrap_or_default()
    );
    until(&what, || async move {
        admin
            .query_one(
                "SELECT count(*) FROM pg_stat_activity \
                 WHERE wait_event_type = 'Lock' \
                   AND ($1::text IS NULL OR application_name = $1) \
                   AND strpos(query, $2) > 0",
                &[&app, &statement],
            )
            .await
            .expect("read pg_stat_activity")
            .get::<_, i64>(0)
            > 0
    })
    .await;
}

/// `"schema".function` as the store's calls spell it: a prefix of the call
/// of its SQL function `function` (any function set).
pub fn call_of(p: &PostgresProvider, function: &str) -> String {
    format!("\"{}\".{function}__", p.schema())
}

/// Makes sure `pg_stat_statements` (preloaded by the test server) can be
/// read in the test database.
pub async fn statement_stats(admin: &tokio_postgres::Client) {
    // Concurrent tests may race to create it; any of them wins.
    let _ = admin
        .batch_execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
        .await;
}

/// Completed calls of `p`'s SQL function `function` (its own function set
/// in its own schema, so only this store's calls are counted): a statement
/// is counted when it has run. Needs [`statement_stats`].
pub async fn calls(admin: &tokio_postgres::Client, p: &PostgresProvider, function: &str) -> i64 {
    let pattern = format!(
        "SELECT * FROM \"{}\".{function}__{}(%",
        p.schema(),
        p.function_set()
    );
    admin
        .query_one(
            "SELECT COALESCE(sum(calls), 0)::BIGINT FROM pg_stat_statements WHERE query LIKE $1",
            &[&pattern],
        )
        .await
        .expect("read pg_stat_statements")
        .get(0)
}

/// Waits until `p`'s SQL function `function` has completed at least `n`
/// calls in all; returns the count then.
pub async fn calls_reach(
    admin: &tokio_postgres::Client,
    p: &PostgresProvider,
    function: &str,
    n: i64,
) -> i64 {
    let deadline = Instant::now() + LIMIT;
    loop {
        let seen = calls(admin, p, function).await;
        if seen >= n {
            return seen;
        }
        assert!(
            Instant::now() < deadline,
            "{function} of {} never completed {n} calls ({seen} in {LIMIT:?})",
            p.schema()
        );
        tokio::time::sleep(POLL).await;
    }
}

/// Waits until the LISTEN connection of a provider of `schema` whose
/// connections are named `app` listens: the server has run its `LISTEN`
/// (`pg_stat_activity`), and the provider has taken the reply (its
/// `listener_connected` gauge reads 1; it sets that just before it wakes
/// every waiting fetch once, as a new listener does). The recorder
/// (`super::recorder`) must be installed before the provider was created.
pub async fn listening(admin: &tokio_postgres::Client, schema: &str, app: &str) {
    assert!(
        super::recorder::installed(),
        "install the test recorder before creating the provider: its listener gauge is set at connect"
    );
    // The listener's last statement is its LISTEN, or the `hello` it
    // sends right after (src/peers.rs).
    until(&format!("the LISTEN of {app} ran"), || async move {
        admin
            .query_one(
                "SELECT count(*) FROM pg_stat_activity \
                 WHERE application_name = $1 AND state = 'idle' \
                   AND (query LIKE 'LISTEN %' OR query LIKE 'NOTIFY %')",
                &[&app],
            )
            .await
            .expect("read pg_stat_activity")
            .get::<_, i64>(0)
            > 0
    })
    .await;
    let what = format!("the listener of {schema} connected");
    super::recorder::until(schema, &what, |m| {
        super::recorder::get(m, "duroxide_postgres_listener_connected", &[]) == Some(1.0)
    })
    .await;
}
