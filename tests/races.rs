//! Races between fetchers, acks, renewals and lock holders, against a real
//! PostgreSQL server. Every test asserts outcomes (what was claimed, what was
//! committed, which errors came back); sleeps only let leases run out.

#[allow(dead_code)]
mod common;

use common::items::{self, completed};
use duroxide::providers::{Provider, ProviderError, SessionFetchConfig, TagFilter, WorkItem};
use duroxide::runtime::registry::ActivityRegistry;
use duroxide::runtime::{Runtime, RuntimeOptions};
use duroxide::{
    ActivityContext, Client, Event, OrchestrationContext, OrchestrationRegistry,
    OrchestrationStatus, INITIAL_EXECUTION_ID,
};
use duroxide_postgres::{PostgresOptions, PostgresProvider};
use std::collections::HashSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::Barrier;
use tokio_postgres::types::{FromSqlOwned, ToSql};

const ORCH: &str = "TestOrch";
/// A lease that outlives any test step.
const LONG: Duration = Duration::from_secs(30);
/// A lease the tests let run out.
const SHORT: Duration = Duration::from_secs(1);
/// Longer than SHORT: after this, a SHORT lease has expired.
const PAST_SHORT: Duration = Duration::from_millis(1500);

// ---------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------

/// `sql` with `{s}` replaced by the provider's quoted schema.
fn sql(p: &PostgresProvider, sql: &str) -> String {
    sql.replace("{s}", &format!("\"{}\"", p.schema()))
}

/// The start of an [`ORCH`] instance.
fn start_item(instance: &str) -> WorkItem {
    items::start_of(ORCH, instance, "{}")
}

fn external(instance: &str, data: &str) -> WorkItem {
    items::external(instance, "evt", data)
}

fn activity(instance: &str, id: u64, session: Option<&str>) -> WorkItem {
    items::activity_item("Act", instance, id, "{}", session, None)
}

/// The first event of an execution; `input` tells two turns apart.
fn started(instance: &str, input: &str) -> Event {
    items::started_event_of(ORCH, instance, input)
}

/// Acks a first turn that writes `events` and schedules `worker` / `orch`.
async fn ack_turn(
    p: &PostgresProvider,
    token: &str,
    events: Vec<Event>,
    worker: Vec<WorkItem>,
    orch: Vec<WorkItem>,
) -> Result<(), ProviderError> {
    p.ack_orchestration_item(
        token,
        INITIAL_EXECUTION_ID,
        events,
        worker,
        orch,
        items::first_turn_metadata_of(ORCH),
        vec![],
    )
    .await
}

fn session(owner: &str) -> SessionFetchConfig {
    SessionFetchConfig {
        owner_id: owner.to_string(),
        lock_timeout: LONG,
    }
}

/// Asserts a lease error: permanent, about the lock, never a deadlock.
#[track_caller]
fn assert_lock_error(result: Result<(), ProviderError>, what: &str) {
    let e = match result {
        Ok(()) => panic!("{what}: expected a lock error, got Ok"),
        Err(e) => e,
    };
    assert_no_deadlock(&e, what);
    assert!(
        !e.is_retryable(),
        "{what}: lock error must be permanent: {e}"
    );
    assert!(
        e.message.to_lowercase().contains("lock"),
        "{what}: expected a lock error, got {e}"
    );
}

#[track_caller]
fn assert_no_deadlock(e: &ProviderError, what: &str) {
    let text = e.to_string();
    assert!(
        !text.contains("40P01") && !text.to_lowercase().contains("deadlock"),
        "{what}: deadlock: {text}"
    );
}

/// The one value `query` (with `{s}` as in [`sql`]) returns for `params`.
async fn value<T: FromSqlOwned>(
    admin: &tokio_postgres::Client,
    p: &PostgresProvider,
    query: &str,
    params: &[&(dyn ToSql + Sync)],
) -> T {
    admin
        .query_one(&sql(p, query), params)
        .await
        .unwrap()
        .get(0)
}

/// How many rows `table` holds.
async fn row_count(admin: &tokio_postgres::Client, p: &PostgresProvider, table: &str) -> i64 {
    value(
        admin,
        p,
        &format!("SELECT count(*) FROM {{s}}.{table}"),
        &[],
    )
    .await
}

/// How many rows of `instance` `table` holds.
async fn row_count_of(
    admin: &tokio_postgres::Client,
    p: &PostgresProvider,
    table: &str,
    instance: &str,
) -> i64 {
    value(
        admin,
        p,
        &format!("SELECT count(*) FROM {{s}}.{table} WHERE instance_id = $1"),
        &[&instance],
    )
    .await
}

/// Whether the lease `token` in `table` (`instance_locks` for
/// orchestrations, `worker_queue` for work items) is live by the database
/// clock.
async fn lease_live(
    admin: &tokio_postgres::Client,
    p: &PostgresProvider,
    table: &str,
    token: &str,
) -> bool {
    value(
        admin,
        p,
        &format!(
            "SELECT locked_until_ms > (EXTRACT(EPOCH FROM clock_timestamp()) * 1000)::BIGINT FROM {{s}}.{table} WHERE lock_token = $1"
        ),
        &[&token],
    )
    .await
}

/// `locked_until_ms` of the row of `table` whose `column` is `key`.
async fn locked_until(
    admin: &tokio_postgres::Client,
    p: &PostgresProvider,
    table: &str,
    column: &str,
    key: &str,
) -> i64 {
    value(
        admin,
        p,
        &format!("SELECT locked_until_ms FROM {{s}}.{table} WHERE {column} = $1"),
        &[&key],
    )
    .await
}

/// What the SQL function `function` (`ack_outcome`, `work_ack_outcome`)
/// says became of the lease `token`.
async fn ack_outcome(
    admin: &tokio_postgres::Client,
    p: &PostgresProvider,
    function: &str,
    token: &str,
) -> String {
    // Functions carry the provider's set tag (docs/decisions/0004).
    let function = format!("{function}__{}", p.function_set());
    value(admin, p, &format!("SELECT {{s}}.{function}($1)"), &[&token]).await
}

async fn fetch_orch(
    p: &PostgresProvider,
    lock: Duration,
) -> Option<(duroxide::providers::OrchestrationItem, String, u32)> {
    tokio::time::timeout(
        Duration::from_secs(20),
        p.fetch_orchestration_item(lock, Duration::ZERO, None),
    )
    .await
    .expect("a fetch with poll timeout 0 hung")
    .expect("fetch_orchestration_item")
}

async fn fetch_work(
    p: &PostgresProvider,
    lock: Duration,
    session: Option<&SessionFetchConfig>,
) -> Option<(WorkItem, String, u32)> {
    tokio::time::timeout(
        Duration::from_secs(20),
        p.fetch_work_item(lock, Duration::ZERO, session, &TagFilter::default()),
    )
    .await
    .expect("a fetch with poll timeout 0 hung")
    .expect("fetch_work_item")
}

// ---------------------------------------------------------------------------
// 1. A fetch that waited on a row lock returns a live lease
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn worker_fetch_that_waited_on_a_lock_returns_a_live_lease() {
    let (p, _guard, app) = common::provider_with_app("races_wait", PostgresOptions::new()).await;
    let holder = common::admin_client().await;
    let observer = common::admin_client().await;

    // --- Worker queue: the session claim waits on the sessions row. ---
    p.enqueue_for_worker(activity("inst-w", 1, Some("s1")))
        .await
        .unwrap();
    holder
        .execute(
            &sql(
                &p,
                "INSERT INTO {s}.sessions (session_id, worker_id, locked_until_ms, last_activity_at_ms) \
                 VALUES ('s1', 'other', 0, 0)",
            ),
            &[],
        )
        .await
        .unwrap();
    holder
        .batch_execute(&sql(
            &p,
            "BEGIN; SELECT * FROM {s}.sessions WHERE session_id = 's1' FOR UPDATE",
        ))
        .await
        .unwrap();

    let fetcher = {
        let p = p.clone();
        tokio::spawn(async move {
            let cfg = SessionFetchConfig {
                owner_id: "w1".to_string(),
                lock_timeout: LONG,
            };
            p.fetch_work_item(SHORT, Duration::ZERO, Some(&cfg), &TagFilter::default())
                .await
        })
    };
    common::wait::lock_wait(&observer, Some(&app), "").await;
    // Hold the row longer than the 1 s lease the fetch asks for.
    tokio::time::sleep(PAST_SHORT).await;
    holder.batch_execute("COMMIT").await.unwrap();

    let (item, token, attempts) = fetcher
        .await
        .unwrap()
        .expect("fetch_work_item")
        .expect("the session item is claimable once the row is free");
    assert_eq!(item, activity("inst-w", 1, Some("s1")));
    assert_eq!(attempts, 1);
    let live = lease_live(&observer, &p, "worker_queue", &token).await;
    assert!(
        live,
        "a lease computed before the lock wait came back already expired"
    );
    let row = observer
        .query_one(
            &sql(
                &p,
                "SELECT worker_id, locked_until_ms > (EXTRACT(EPOCH FROM clock_timestamp()) * 1000)::BIGINT FROM {s}.sessions WHERE session_id = 's1'",
            ),
            &[],
        )
        .await
        .unwrap();
    assert_eq!(
        row.get::<_, String>(0),
        "w1",
        "the session was claimed by w1"
    );
    assert!(row.get::<_, bool>(1), "the session claim is live");
    p.ack_work_item(&token, None)
        .await
        .expect("ack of the live lease");
    assert_eq!(
        row_count_of(&observer, &p, "worker_queue", "inst-w").await,
        0
    );

    // --- Orchestrator queue: a held lease row is skipped, not waited on. ---
    p.enqueue_for_orchestrator(start_item("inst-o"), None)
        .await
        .unwrap();
    holder
        .batch_execute(&sql(
            &p,
            "BEGIN; SELECT * FROM {s}.instance_locks WHERE instance_id = 'inst-o' FOR UPDATE",
        ))
        .await
        .unwrap();
    assert!(
        fetch_orch(&p, SHORT).await.is_none(),
        "the only ready instance is row-locked: fetch must skip it and return None"
    );
    holder.batch_execute("COMMIT").await.unwrap();

    let (item, token, attempts) = fetch_orch(&p, SHORT)
        .await
        .expect("inst-o is claimable once the row is free");
    assert_eq!(item.instance, "inst-o");
    assert_eq!(item.messages, vec![start_item("inst-o")]);
    assert_eq!(attempts, 1);
    assert!(
        lease_live(&observer, &p, "instance_locks", &token).await,
        "orchestration lease is live"
    );
    let event = started("inst-o", "x");
    ack_turn(&p, &token, vec![event.clone()], vec![], vec![])
        .await
        .expect("ack of the live lease");
    assert_eq!(p.read("inst-o").await.unwrap(), vec![event]);
}

// ---------------------------------------------------------------------------
// 2. A stalled ack keeps its lease: committed once, never taken over
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn stalled_ack_commits_once_and_is_never_taken_over() {
    let (p, _guard, app) = common::provider_with_app("races_stall", PostgresOptions::new()).await;
    let holder = common::admin_client().await;
    let observer = common::admin_client().await;

    let messages = vec![start_item("i1"), external("i1", "payload")];
    for m in &messages {
        p.enqueue_for_orchestrator(m.clone(), None).await.unwrap();
    }
    let (item, token_a, attempts) = fetch_orch(&p, SHORT).await.expect("fetch A");
    assert_eq!(item.instance, "i1");
    assert_eq!(item.messages, messages);
    assert_eq!(attempts, 1);

    // Someone else holds the lease row; A's ack arrives while its lease is
    // live and waits past the lease's end.
    holder
        .batch_execute(&sql(
            &p,
            "BEGIN; SELECT * FROM {s}.instance_locks WHERE instance_id = 'i1' FOR UPDATE",
        ))
        .await
        .unwrap();
    let first = started("i1", "first");
    let stalled = {
        let p = p.clone();
        let token = token_a.clone();
        let first = first.clone();
        tokio::spawn(async move {
            ack_turn(
                &p,
                &token,
                vec![first],
                vec![activity("i1", 2, None)],
                vec![start_item("child-of-first")],
            )
            .await
        })
    };
    common::wait::lock_wait(&observer, Some(&app), "").await;
    tokio::time::sleep(PAST_SHORT).await;
    // Nobody can take the instance over meanwhile.
    assert!(
        fetch_orch(&p, LONG).await.is_none(),
        "a held lease row must not be claimed"
    );
    holder.batch_execute("COMMIT").await.unwrap();
    stalled
        .await
        .unwrap()
        .expect("an ack that arrived while its lease was live, with no takeover, commits");

    // Committed exactly once: its history, its activity, its new work; the
    // consumed messages are gone, so the next fetch is the child it started.
    assert_eq!(p.read("i1").await.unwrap(), vec![first]);
    let work = row_count(&observer, &p, "worker_queue").await;
    assert_eq!(work, 1, "the activity was scheduled once");
    let (next, _, _) = fetch_orch(&p, LONG).await.expect("the child start");
    assert_eq!(next.instance, "child-of-first");
    assert!(
        fetch_orch(&p, LONG).await.is_none(),
        "i1's messages were consumed"
    );
}

/// The failure the other PostgreSQL provider shipped (its #21): an ack that
/// passed its lease check and then stalls must keep the instance until it
/// commits, or a fetcher takes the instance over and its messages are
/// processed twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn ack_blocked_after_its_check_keeps_its_lease_until_commit() {
    let (p, _guard, app) = common::provider_with_app("races_midack", PostgresOptions::new()).await;
    let holder = common::admin_client().await;
    let observer = common::admin_client().await;

    p.enqueue_for_orchestrator(start_item("i1"), None)
        .await
        .unwrap();
    p.enqueue_for_worker(activity("i1", 5, None)).await.unwrap();
    let (_, token, _) = fetch_orch(&p, SHORT).await.expect("fetch A");

    // The ack cancels activity 5, whose row someone else holds: the ack
    // passes its lease check, then waits on that row.
    holder
        .batch_execute(&sql(
            &p,
            "BEGIN; SELECT * FROM {s}.worker_queue WHERE instance_id = 'i1' FOR UPDATE",
        ))
        .await
        .unwrap();
    let first = started("i1", "first");
    let stalled = {
        let p = p.clone();
        let first = first.clone();
        tokio::spawn(async move {
            p.ack_orchestration_item(
                &token,
                INITIAL_EXECUTION_ID,
                vec![first],
                vec![],
                vec![],
                items::first_turn_metadata_of(ORCH),
                vec![duroxide::providers::ScheduledActivityIdentifier {
                    instance: "i1".to_string(),
                    execution_id: INITIAL_EXECUTION_ID,
                    activity_id: 5,
                }],
            )
            .await
        })
    };
    common::wait::lock_wait(&observer, Some(&app), "").await;
    tokio::time::sleep(PAST_SHORT).await;
    p.enqueue_for_orchestrator(external("i1", "late"), None)
        .await
        .unwrap();
    assert!(
        fetch_orch(&p, LONG).await.is_none(),
        "the lease of an ack in progress must not be taken over"
    );
    holder.batch_execute("COMMIT").await.unwrap();
    stalled.await.unwrap().expect("the ack commits");

    assert_eq!(p.read("i1").await.unwrap(), vec![first]);
    let (next, _, attempts) = fetch_orch(&p, LONG).await.expect("the late event");
    assert_eq!(next.messages, vec![external("i1", "late")]);
    assert_eq!(attempts, 1, "the start was consumed once, never refetched");
}

// ---------------------------------------------------------------------------
// 3. Takeover, then the first owner's late ack
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn takeover_then_late_ack_commits_nothing() {
    let (p, _guard) = common::provider("races_takeover", PostgresOptions::new()).await;
    let admin = common::admin_client().await;

    // --- Orchestrator queue ---
    let messages = vec![start_item("i1"), external("i1", "e1")];
    for m in &messages {
        p.enqueue_for_orchestrator(m.clone(), None).await.unwrap();
    }
    let (_, token_a, attempts_a) = fetch_orch(&p, SHORT).await.expect("fetch A");
    assert_eq!(attempts_a, 1);
    tokio::time::sleep(PAST_SHORT).await;
    let (item_b, token_b, attempts_b) = fetch_orch(&p, LONG).await.expect("B takes over");
    assert_eq!(item_b.instance, "i1");
    assert_eq!(item_b.messages, messages);
    assert_eq!(attempts_b, 2);
    assert_ne!(token_a, token_b);

    assert_lock_error(
        ack_turn(
            &p,
            &token_a,
            vec![started("i1", "A")],
            vec![activity("i1", 2, None)],
            vec![external("elsewhere", "from A")],
        )
        .await,
        "A's ack after takeover",
    );
    let b_event = started("i1", "B");
    ack_turn(&p, &token_b, vec![b_event.clone()], vec![], vec![])
        .await
        .expect("B's ack");
    assert_eq!(p.read("i1").await.unwrap(), vec![b_event]);
    let queued = row_count(&admin, &p, "orchestrator_queue").await;
    assert_eq!(
        queued, 0,
        "each message processed exactly once, nothing from A"
    );
    let work = row_count(&admin, &p, "worker_queue").await;
    assert_eq!(work, 0, "A's activity was not scheduled");
    assert!(fetch_orch(&p, LONG).await.is_none());

    // --- Worker queue ---
    p.enqueue_for_worker(activity("i2", 7, None)).await.unwrap();
    let (_, wtoken_a, wattempts_a) = fetch_work(&p, SHORT, None).await.expect("worker A");
    assert_eq!(wattempts_a, 1);
    tokio::time::sleep(PAST_SHORT).await;
    let (witem_b, wtoken_b, wattempts_b) = fetch_work(&p, LONG, None)
        .await
        .expect("worker B takes over");
    assert_eq!(witem_b, activity("i2", 7, None));
    assert_eq!(wattempts_b, 2);
    assert_ne!(wtoken_a, wtoken_b);

    assert_lock_error(
        p.ack_work_item(&wtoken_a, Some(completed("i2", 7, "A")))
            .await,
        "worker A's ack after takeover",
    );
    p.ack_work_item(&wtoken_b, Some(completed("i2", 7, "B")))
        .await
        .expect("worker B's ack");

    let rows = admin
        .query(
            &sql(
                &p,
                "SELECT kind FROM {s}.orchestrator_queue WHERE instance_id = 'i2'",
            ),
            &[],
        )
        .await
        .unwrap();
    assert_eq!(rows.len(), 1, "exactly one completion enqueued");
    assert_eq!(rows[0].get::<_, String>(0), "ActivityCompleted");
    // i2 was never started: its completion waits for the start (held
    // messages, issue 7 item 1) and comes with it.
    p.enqueue_for_orchestrator(start_item("i2"), None)
        .await
        .unwrap();
    let (item, _, _) = fetch_orch(&p, LONG).await.expect("the completion");
    assert_eq!(item.instance, "i2");
    assert_eq!(
        item.messages,
        vec![completed("i2", 7, "B"), start_item("i2")]
    );
    let work = row_count(&admin, &p, "worker_queue").await;
    assert_eq!(work, 0, "the activity row is gone");
}

// ---------------------------------------------------------------------------
// 4. Lease renewal
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn renewal_never_revives_or_shortens() {
    let (p, _guard) = common::provider("races_renew", PostgresOptions::new()).await;
    let admin = common::admin_client().await;

    // --- Orchestration lease ---
    p.enqueue_for_orchestrator(start_item("i1"), None)
        .await
        .unwrap();
    let (_, token, _) = fetch_orch(&p, SHORT).await.expect("fetch");
    tokio::time::sleep(PAST_SHORT).await;
    assert_lock_error(
        p.renew_orchestration_item_lock(&token, Duration::from_secs(10))
            .await,
        "renewing an expired orchestration lease",
    );
    assert!(
        !lease_live(&admin, &p, "instance_locks", &token).await,
        "the expired lease was revived"
    );

    let (_, token, _) = fetch_orch(&p, SHORT).await.expect("fetch again");
    p.renew_orchestration_item_lock(&token, Duration::from_secs(10))
        .await
        .expect("renew a live lease");
    let after_long = locked_until(&admin, &p, "instance_locks", "instance_id", "i1").await;
    p.renew_orchestration_item_lock(&token, Duration::from_secs(1))
        .await
        .expect("a shorter renewal of a live lease succeeds");
    let after_short = locked_until(&admin, &p, "instance_locks", "instance_id", "i1").await;
    assert_eq!(
        after_short, after_long,
        "a shorter renewal shortened the lease"
    );
    ack_turn(&p, &token, vec![started("i1", "x")], vec![], vec![])
        .await
        .expect("ack");
    assert_lock_error(
        p.renew_orchestration_item_lock(&token, Duration::from_secs(10))
            .await,
        "renewing an acked orchestration lease",
    );
    assert_eq!(
        locked_until(&admin, &p, "instance_locks", "instance_id", "i1").await,
        0,
        "a renewal after the ack re-locked the instance"
    );

    // --- Worker lease ---
    p.enqueue_for_worker(activity("i1", 2, None)).await.unwrap();
    let (_, wtoken, _) = fetch_work(&p, SHORT, None).await.expect("fetch work");
    tokio::time::sleep(PAST_SHORT).await;
    assert_lock_error(
        p.renew_work_item_lock(&wtoken, Duration::from_secs(10))
            .await,
        "renewing an expired worker lease",
    );
    let live = lease_live(&admin, &p, "worker_queue", &wtoken).await;
    assert!(!live, "the expired worker lease was revived");

    let (_, wtoken, attempts) = fetch_work(&p, SHORT, None).await.expect("fetch work again");
    assert_eq!(attempts, 2);
    p.renew_work_item_lock(&wtoken, Duration::from_secs(10))
        .await
        .expect("renew a live worker lease");
    let after_long = locked_until(&admin, &p, "worker_queue", "lock_token", &wtoken).await;
    p.renew_work_item_lock(&wtoken, Duration::from_secs(1))
        .await
        .expect("a shorter renewal of a live worker lease succeeds");
    let after_short = locked_until(&admin, &p, "worker_queue", "lock_token", &wtoken).await;
    assert_eq!(
        after_short, after_long,
        "a shorter renewal shortened the worker lease"
    );
    p.ack_work_item(&wtoken, None).await.expect("ack work");
    assert_lock_error(
        p.renew_work_item_lock(&wtoken, Duration::from_secs(10))
            .await,
        "renewing an acked worker lease",
    );
}

/// Runs `a` and `b` at the same moment (both released by one barrier).
async fn race<A, B>(a: A, b: B) -> (Result<(), ProviderError>, Result<(), ProviderError>)
where
    A: std::future::Future<Output = Result<(), ProviderError>> + Send + 'static,
    B: std::future::Future<Output = Result<(), ProviderError>> + Send + 'static,
{
    let barrier = Arc::new(Barrier::new(2));
    let ba = barrier.clone();
    let ta = tokio::spawn(async move {
        ba.wait().await;
        a.await
    });
    let tb = tokio::spawn(async move {
        barrier.wait().await;
        b.await
    });
    let (ra, rb) = tokio::join!(ta, tb);
    (ra.unwrap(), rb.unwrap())
}

/// A renewal racing an ack or abandon: Ok, or a lock error (it lost).
#[track_caller]
fn assert_renew_outcome(result: Result<(), ProviderError>, what: &str) {
    if let Err(e) = result {
        assert_no_deadlock(&e, what);
        assert_lock_error(Err(e), what);
    }
}

#[track_caller]
fn assert_ok_no_deadlock(result: Result<(), ProviderError>, what: &str) {
    if let Err(e) = &result {
        assert_no_deadlock(e, what);
        panic!("{what} failed: {e}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn renewal_racing_ack_and_abandon_never_deadlocks() {
    let (p, _guard) = common::provider(
        "races_renew_race",
        PostgresOptions::new().max_connections(16),
    )
    .await;
    let admin = common::admin_client().await;
    let extend = Duration::from_secs(30);

    for i in 0..50 {
        let acked = format!("ack-{i}");
        let abandoned = format!("abandon-{i}");
        // Sessions on every other iteration, so session rows are in play too.
        let sess = (i % 2 == 0).then(|| session("w"));
        let session_id = format!("s-{i}");
        let sid = sess.as_ref().map(|_| session_id.as_str());

        p.enqueue_for_orchestrator(start_item(&acked), None)
            .await
            .unwrap();
        p.enqueue_for_orchestrator(start_item(&abandoned), None)
            .await
            .unwrap();
        let (o1, ot1, _) = fetch_orch(&p, LONG).await.expect("orch 1");
        let (o2, ot2, _) = fetch_orch(&p, LONG).await.expect("orch 2");
        let (o_ack_token, o_abandon_token) = if o1.instance == acked {
            assert_eq!(o2.instance, abandoned);
            (ot1, ot2)
        } else {
            assert_eq!(
                (o1.instance.as_str(), o2.instance.as_str()),
                (abandoned.as_str(), acked.as_str())
            );
            (ot2, ot1)
        };

        p.enqueue_for_worker(activity(&acked, 2, sid))
            .await
            .unwrap();
        p.enqueue_for_worker(activity(&abandoned, 2, sid))
            .await
            .unwrap();
        let (w1, wt1, _) = fetch_work(&p, LONG, sess.as_ref()).await.expect("work 1");
        let (w2, wt2, _) = fetch_work(&p, LONG, sess.as_ref()).await.expect("work 2");
        let (w_ack_token, w_abandon_token) = if w1 == activity(&acked, 2, sid) {
            assert_eq!(w2, activity(&abandoned, 2, sid));
            (wt1, wt2)
        } else {
            assert_eq!(w1, activity(&abandoned, 2, sid));
            assert_eq!(w2, activity(&acked, 2, sid));
            (wt2, wt1)
        };

        let (
            o_renew_ack,
            o_ack,
            o_renew_abandon,
            o_abandon,
            w_renew_ack,
            w_ack,
            w_renew_abandon,
            w_abandon,
        ) = {
            let pr = |token: String| {
                let p = p.clone();
                async move { p.renew_orchestration_item_lock(&token, extend).await }
            };
            let wr = |token: String| {
                let p = p.clone();
                async move { p.renew_work_item_lock(&token, extend).await }
            };
            let oa = {
                let p = p.clone();
                let token = o_ack_token.clone();
                let instance = acked.clone();
                async move { ack_turn(&p, &token, vec![started(&instance, "x")], vec![], vec![]).await }
            };
            let ob = {
                let p = p.clone();
                let token = o_abandon_token.clone();
                async move { p.abandon_orchestration_item(&token, None, false).await }
            };
            let wa = {
                let p = p.clone();
                let token = w_ack_token.clone();
                let instance = acked.clone();
                async move {
                    p.ack_work_item(&token, Some(completed(&instance, 2, "r")))
                        .await
                }
            };
            let wb = {
                let p = p.clone();
                let token = w_abandon_token.clone();
                async move { p.abandon_work_item(&token, None, false).await }
            };
            let (r1, r2, r3, r4) = tokio::join!(
                race(pr(o_ack_token.clone()), oa),
                race(pr(o_abandon_token.clone()), ob),
                race(wr(w_ack_token.clone()), wa),
                race(wr(w_abandon_token.clone()), wb),
            );
            (r1.0, r1.1, r2.0, r2.1, r3.0, r3.1, r4.0, r4.1)
        };

        assert_renew_outcome(o_renew_ack, &format!("iteration {i}: orch renew vs ack"));
        assert_ok_no_deadlock(o_ack, &format!("iteration {i}: orch ack vs renew"));
        assert_renew_outcome(
            o_renew_abandon,
            &format!("iteration {i}: orch renew vs abandon"),
        );
        assert_ok_no_deadlock(o_abandon, &format!("iteration {i}: orch abandon vs renew"));
        assert_renew_outcome(w_renew_ack, &format!("iteration {i}: worker renew vs ack"));
        assert_ok_no_deadlock(w_ack, &format!("iteration {i}: worker ack vs renew"));
        assert_renew_outcome(
            w_renew_abandon,
            &format!("iteration {i}: worker renew vs abandon"),
        );
        assert_ok_no_deadlock(
            w_abandon,
            &format!("iteration {i}: worker abandon vs renew"),
        );

        // Whatever the interleaving, the outcome of each ack / abandon holds.
        assert_eq!(
            p.read(&acked).await.unwrap().len(),
            1,
            "iteration {i}: the orchestration ack committed"
        );
        // An ack that commits after the abandon claims the abandoned
        // instance or item as its next turn (prefetch.rs), with a token of
        // its own, and gives it back once nobody fetches it: read past that.
        let row_of = |table: &'static str| {
            let (admin, p, abandoned) = (&admin, &p, &abandoned);
            move || async move {
                let row = admin
                    .query_one(
                        &sql(p, &format!("SELECT lock_token, locked_until_ms FROM {{s}}.{table} WHERE instance_id = $1")),
                        &[abandoned],
                    )
                    .await
                    .unwrap();
                (
                    row.get::<_, Option<String>>(0),
                    row.get::<_, Option<i64>>(1),
                )
            }
        };
        let lease = past_prefetch(&o_abandon_token, row_of("instance_locks")).await;
        assert_eq!(
            lease,
            (None, Some(0)),
            "iteration {i}: the abandoned orchestration lease is released (a renewal did not revive it)"
        );
        let item = past_prefetch(&w_abandon_token, row_of("worker_queue")).await;
        assert_eq!(
            item,
            (None, None),
            "iteration {i}: the abandoned work item is released"
        );
        assert_eq!(
            row_count_of(&admin, &p, "worker_queue", &acked).await,
            0,
            "iteration {i}: the acked work item is gone"
        );

        // Clear the queues for the next iteration.
        admin
            .batch_execute(&sql(
                &p,
                "DELETE FROM {s}.orchestrator_queue; DELETE FROM {s}.worker_queue; DELETE FROM {s}.sessions;",
            ))
            .await
            .unwrap();
    }
}

// ---------------------------------------------------------------------------
// 5. Sixteen fetchers
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sixteen_fetchers_claim_each_instance_exactly_once() {
    const INSTANCES: usize = 100;
    const FETCHERS: usize = 16;
    let (p, _guard) = common::provider(
        "races_sixteen",
        PostgresOptions::new().max_connections(FETCHERS),
    )
    .await;
    let admin = common::admin_client().await;

    for rep in 0..50 {
        let mut enqueues = tokio::task::JoinSet::new();
        for n in 0..INSTANCES {
            let p = p.clone();
            enqueues.spawn(async move {
                p.enqueue_for_orchestrator(start_item(&format!("r{rep}-i{n}")), None)
                    .await
            });
        }
        while let Some(r) = enqueues.join_next().await {
            r.unwrap().expect("enqueue");
        }

        let seq = Arc::new(AtomicUsize::new(0));
        let barrier = Arc::new(Barrier::new(FETCHERS));
        let mut fetchers = tokio::task::JoinSet::new();
        for _ in 0..FETCHERS {
            let p = p.clone();
            let seq = seq.clone();
            let barrier = barrier.clone();
            fetchers.spawn(async move {
                barrier.wait().await;
                let mut got = Vec::new();
                loop {
                    match p
                        .fetch_orchestration_item(LONG, Duration::ZERO, None)
                        .await
                        .expect("fetch_orchestration_item")
                    {
                        Some((item, _, _)) => {
                            let n = seq.fetch_add(1, Ordering::SeqCst);
                            got.push((n, item.instance));
                            // A provider that hands out claimed instances
                            // again would loop forever: stop and fail below.
                            if got.len() > INSTANCES {
                                return (got, usize::MAX);
                            }
                        }
                        None => return (got, seq.load(Ordering::SeqCst)),
                    }
                }
            });
        }
        let mut claims = Vec::new();
        let mut first_none = usize::MAX;
        while let Some(r) = fetchers.join_next().await {
            let (got, none_at) = r.unwrap();
            claims.extend(got);
            first_none = first_none.min(none_at);
        }

        assert_eq!(
            claims.len(),
            INSTANCES,
            "rep {rep}: every instance fetched once"
        );
        let distinct: HashSet<&String> = claims.iter().map(|(_, i)| i).collect();
        assert_eq!(
            distinct.len(),
            INSTANCES,
            "rep {rep}: an instance was fetched twice"
        );
        let expected: HashSet<String> = (0..INSTANCES).map(|n| format!("r{rep}-i{n}")).collect();
        assert_eq!(
            distinct.into_iter().cloned().collect::<HashSet<_>>(),
            expected,
            "rep {rep}: wrong instances fetched"
        );
        let after_none = claims.iter().filter(|(n, _)| *n >= first_none).count();
        assert!(
            after_none < FETCHERS,
            "rep {rep}: {after_none} fetches succeeded after a fetch returned None \
             (at most {} can have been in flight): a fetch gave up while work remained",
            FETCHERS - 1
        );

        admin
            .batch_execute(&sql(
                &p,
                "DELETE FROM {s}.orchestrator_queue; DELETE FROM {s}.instance_locks;",
            ))
            .await
            .unwrap();
    }
}

// ---------------------------------------------------------------------------
// 6. Completions flowing into parents under the real runtime
// ---------------------------------------------------------------------------

fn runtime_options() -> RuntimeOptions {
    RuntimeOptions {
        orchestration_concurrency: 8,
        worker_concurrency: 8,
        dispatcher_min_poll_interval: Duration::from_millis(10),
        dispatcher_long_poll_timeout: Duration::from_secs(2),
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn completions_into_parents_never_deadlock() {
    const PARENTS: usize = 20;
    const CHILDREN: usize = 5;
    let (p, _guard) =
        common::provider("races_parents", PostgresOptions::new().max_connections(24)).await;
    let admin = common::admin_client().await;

    let activities = ActivityRegistry::builder()
        .register("Echo", |_ctx: ActivityContext, input: String| async move {
            Ok(format!("echo:{input}"))
        })
        .build();
    let orchestrations = OrchestrationRegistry::builder()
        .register(
            "Child",
            |ctx: OrchestrationContext, input: String| async move {
                ctx.schedule_activity("Echo", input).await
            },
        )
        .register(
            "Parent",
            |ctx: OrchestrationContext, input: String| async move {
                let children = (0..CHILDREN)
                    .map(|k| ctx.schedule_sub_orchestration("Child", format!("{input}.{k}")))
                    .collect::<Vec<_>>();
                let outputs = ctx.join(children).await;
                let outputs = outputs.into_iter().collect::<Result<Vec<_>, _>>()?;
                Ok(outputs.join(","))
            },
        )
        .build();
    let rt =
        Runtime::start_with_options(p.clone(), activities, orchestrations, runtime_options()).await;
    let client = Client::new(p.clone());

    for round in 0..3 {
        let ids: Vec<String> = (0..PARENTS)
            .map(|n| format!("round{round}-parent{n}"))
            .collect();
        let mut starts = tokio::task::JoinSet::new();
        for id in &ids {
            let client = client.clone();
            let id = id.clone();
            starts
                .spawn(async move { client.start_orchestration(&id, "Parent", id.clone()).await });
        }
        while let Some(r) = starts.join_next().await {
            r.unwrap().expect("start_orchestration");
        }
        for id in &ids {
            let expected = (0..CHILDREN)
                .map(|k| format!("echo:{id}.{k}"))
                .collect::<Vec<_>>()
                .join(",");
            match client
                .wait_for_orchestration(id, Duration::from_secs(60))
                .await
                .expect("wait_for_orchestration")
            {
                OrchestrationStatus::Completed { output, .. } => {
                    assert_eq!(output, expected, "round {round}: {id}")
                }
                OrchestrationStatus::Failed { details, .. } => {
                    panic!("round {round}: {id} failed: {}", details.display_message())
                }
                other => panic!("round {round}: {id} did not finish: {other:?}"),
            }
        }
    }

    let not_completed = admin
        .query(
            &sql(
                &p,
                "SELECT instance_id, status, output FROM {s}.executions WHERE status <> 'Completed'",
            ),
            &[],
        )
        .await
        .unwrap();
    let not_completed: Vec<(String, String, Option<String>)> = not_completed
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    assert!(
        not_completed.is_empty(),
        "executions not completed: {not_completed:?}"
    );
    let completed: i64 = value(
        &admin,
        &p,
        "SELECT count(*) FROM {s}.executions WHERE status = 'Completed'",
        &[],
    )
    .await;
    assert_eq!(
        completed as usize,
        3 * PARENTS * (1 + CHILDREN),
        "every parent and child completed"
    );
    rt.shutdown(None).await;
}

// ---------------------------------------------------------------------------
// 7. Orphan events for never-started instances
// ---------------------------------------------------------------------------

fn ghost_messages() -> Vec<WorkItem> {
    vec![
        external("ghost", "boo"),
        WorkItem::CancelInstance {
            instance: "ghost".to_string(),
            reason: "never started".to_string(),
        },
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn orphan_events_for_never_started_instances_do_not_stall_others() {
    // --- Provider level: the ghost batch is held, not returned, and does
    // not block the started instance. ---
    {
        let (p, _guard) = common::provider("races_ghost_p", PostgresOptions::new()).await;
        for m in ghost_messages() {
            p.enqueue_for_orchestrator(m, None).await.unwrap();
        }
        p.enqueue_for_orchestrator(start_item("real"), None)
            .await
            .unwrap();
        let (a, b) = tokio::join!(fetch_orch(&p, LONG), fetch_orch(&p, LONG));
        let mut fetched: Vec<_> = [a, b].into_iter().flatten().collect();
        assert_eq!(fetched.len(), 1, "only the started instance is deliverable");
        let (real, _, _) = fetched.remove(0);
        assert_eq!(real.instance, "real", "real is fetched while ghost is held");
        assert_eq!(real.messages, vec![start_item("real")]);
        assert_eq!(real.orchestration_name, ORCH);
    }

    // --- Runtime: the ghost leaves no trace and real completes. ---
    let (p, _guard) = common::provider("races_ghost_rt", PostgresOptions::new()).await;
    let admin = common::admin_client().await;
    for m in ghost_messages() {
        p.enqueue_for_orchestrator(m, None).await.unwrap();
    }
    let client = Client::new(p.clone());
    client
        .start_orchestration("real", "Real", "hello")
        .await
        .unwrap();

    let orchestrations = OrchestrationRegistry::builder()
        .register(
            "Real",
            |_ctx: OrchestrationContext, input: String| async move { Ok(format!("real:{input}")) },
        )
        .build();
    let rt = Runtime::start_with_options(
        p.clone(),
        ActivityRegistry::builder().build(),
        orchestrations,
        runtime_options(),
    )
    .await;

    match client
        .wait_for_orchestration("real", Duration::from_secs(30))
        .await
        .expect("wait_for_orchestration")
    {
        OrchestrationStatus::Completed { output, .. } => assert_eq!(output, "real:hello"),
        other => panic!("real did not complete: {other:?}"),
    }

    let mut remaining = row_count_of(&admin, &p, "orchestrator_queue", "ghost").await;
    for _ in 0..100 {
        if remaining == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        remaining = row_count_of(&admin, &p, "orchestrator_queue", "ghost").await;
    }
    rt.shutdown(None).await;

    assert_eq!(remaining, 0, "ghost messages still queued after 10 s");
    assert_eq!(
        row_count_of(&admin, &p, "orchestrator_held", "ghost").await,
        ghost_messages().len() as i64,
        "the ghost's messages are held for a start, not consumed"
    );
    for table in ["instances", "executions", "history"] {
        assert_eq!(
            row_count_of(&admin, &p, table, "ghost").await,
            0,
            "a {table} row exists for the never-started ghost"
        );
    }
}

// ---------------------------------------------------------------------------
// An ack whose reply is lost
// ---------------------------------------------------------------------------

/// What the provider asks the database when an ack fails with a retryable
/// error (its connection broke, perhaps after the commit): the answer
/// decides between "done", "retry" and "lost", so a turn is never committed
/// twice and a committed turn is never reported as failed.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn ack_outcome_tells_what_became_of_a_turn() {
    let (p, _schemas) = common::provider("ack_outcome", PostgresOptions::new()).await;
    let admin = common::admin_client().await;
    let outcome = |token: String| {
        let (admin, p) = (&admin, &p);
        async move { ack_outcome(admin, p, "ack_outcome", &token).await }
    };

    p.enqueue_for_orchestrator(start_item("held"), None)
        .await
        .unwrap();
    let (_, token, _) = fetch_orch(&p, LONG).await.unwrap();
    assert_eq!(outcome(token.clone()).await, "held");
    ack_turn(&p, &token, vec![started("held", "{}")], vec![], vec![])
        .await
        .unwrap();
    assert_eq!(outcome(token.clone()).await, "done");
    // A second ack with the same token still fails: acks are not idempotent.
    assert_lock_error(
        ack_turn(&p, &token, vec![], vec![], vec![]).await,
        "second ack",
    );

    p.enqueue_for_orchestrator(start_item("lost"), None)
        .await
        .unwrap();
    let (_, token, _) = fetch_orch(&p, SHORT).await.unwrap();
    tokio::time::sleep(PAST_SHORT).await;
    assert_eq!(outcome(token).await, "lost");
    assert_eq!(outcome("lock_never_issued".to_string()).await, "lost");

    // The worker queue's counterpart.
    let work_outcome = |token: String| {
        let (admin, p) = (&admin, &p);
        async move { ack_outcome(admin, p, "work_ack_outcome", &token).await }
    };
    p.enqueue_for_worker(activity("w", 1, None)).await.unwrap();
    let (_, token, _) = fetch_work(&p, LONG, None).await.unwrap();
    assert_eq!(work_outcome(token.clone()).await, "held");
    p.ack_work_item(&token, None).await.unwrap();
    assert_eq!(work_outcome(token).await, "done");
    p.enqueue_for_worker(activity("w", 2, None)).await.unwrap();
    let (_, token, _) = fetch_work(&p, SHORT, None).await.unwrap();
    tokio::time::sleep(PAST_SHORT).await;
    assert_eq!(work_outcome(token).await, "lost");
}

// ---------------------------------------------------------------------------
// Renewal: transient failures and races with a takeover
// ---------------------------------------------------------------------------

/// Kills every backend of `app`: the provider's pooled connection breaks,
/// and its next call fails with a connection error (retryable).
async fn kill_backends(admin: &tokio_postgres::Client, app: &str) -> i64 {
    admin
        .query_one(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE application_name = $1",
            &[&app],
        )
        .await
        .unwrap()
        .get(0)
}

/// The runtime treats any renewal error as the end of the lease (it stops
/// renewing, or cancels the activity and acks it without a result), so a
/// renewal that meets a broken connection must retry, not fail.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn transient_renewal_failure_is_retried() {
    let app = common::unique_schema("app_renew_retry");
    let (p, _guard) = common::provider(
        "renew_retry",
        PostgresOptions::new()
            .application_name(&app)
            .max_connections(1)
            .long_poll(false),
    )
    .await;
    let admin = common::admin_client().await;

    p.enqueue_for_orchestrator(start_item("i1"), None)
        .await
        .unwrap();
    p.enqueue_for_worker(activity("i1", 1, None)).await.unwrap();
    let (_, otoken, _) = fetch_orch(&p, LONG).await.unwrap();
    let (_, wtoken, _) = fetch_work(&p, LONG, None).await.unwrap();
    let orch_before = locked_until(&admin, &p, "instance_locks", "instance_id", "i1").await;
    let work_before = locked_until(&admin, &p, "worker_queue", "lock_token", &wtoken).await;
    tokio::time::sleep(Duration::from_millis(50)).await;

    assert!(
        kill_backends(&admin, &app).await > 0,
        "the pool had a connection"
    );
    p.renew_orchestration_item_lock(&otoken, LONG)
        .await
        .expect("orchestration renewal retried past a broken connection");
    assert!(kill_backends(&admin, &app).await > 0);
    p.renew_work_item_lock(&wtoken, LONG)
        .await
        .expect("worker renewal retried past a broken connection");

    assert!(locked_until(&admin, &p, "instance_locks", "instance_id", "i1").await > orch_before);
    assert!(locked_until(&admin, &p, "worker_queue", "lock_token", &wtoken).await > work_before);
}

/// Around expiry, a renewal and a takeover fetch race: never both win.
/// Either the renewal extends the lease and the fetch finds nothing, or the
/// fetch takes the lease over and the renewal fails (or, when the fetch came
/// just before expiry and the renewal just after, neither: the lease then
/// lapsed unclaimed and the next fetch takes it).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn renewal_racing_a_takeover_fetch_never_both_win() {
    let (p, _guard) =
        common::provider("renew_vs_fetch", PostgresOptions::new().long_poll(false)).await;
    let (mut renewals_won, mut takeovers, mut lapsed) = (0, 0, 0);
    for round in 0..30 {
        let instance = format!("i{round}");
        p.enqueue_for_orchestrator(start_item(&instance), None)
            .await
            .unwrap();
        let (_, token, _) = fetch_orch(&p, Duration::from_millis(200)).await.unwrap();
        // Land both calls around the lease's end.
        tokio::time::sleep(Duration::from_millis(190 + (round % 4) * 5)).await;
        let (renewed, fetched) = tokio::join!(
            p.renew_orchestration_item_lock(&token, LONG),
            p.fetch_orchestration_item(LONG, Duration::ZERO, None)
        );
        let fetched = fetched.expect("fetch");
        match (&renewed, &fetched) {
            (Ok(()), None) => renewals_won += 1,
            (Err(e), Some((item, _, _))) => {
                assert!(!e.is_retryable(), "a lost lease is a permanent error: {e}");
                assert_no_deadlock(e, "renew vs fetch");
                assert_eq!(item.instance, instance);
                takeovers += 1;
            }
            (Err(e), None) => {
                assert!(
                    !e.is_retryable(),
                    "an expired lease is a permanent error: {e}"
                );
                lapsed += 1;
            }
            (Ok(()), Some((item, _, _))) => panic!(
                "round {round}: the renewal and a fetch of {} both won",
                item.instance
            ),
        }
        // Leave nothing claimable for the next round.
        let token = match (fetched, renewed) {
            (Some((_, t, _)), _) => t,
            (None, Ok(())) => token,
            (None, Err(_)) => {
                fetch_orch(&p, LONG)
                    .await
                    .expect("a lapsed lease is claimable")
                    .1
            }
        };
        ack_turn(&p, &token, vec![started(&instance, "{}")], vec![], vec![])
            .await
            .unwrap();
    }
    assert_eq!(renewals_won + takeovers + lapsed, 30);
    // Rounds that sleep 205 ms land both calls after the 200 ms lease ran
    // out: the renewal is refused and the fetch takes the lease over.
    assert!(
        takeovers > 0,
        "no fetch took an expired lease over (renewals won: {renewals_won}, lapsed: {lapsed})"
    );
}

/// An ack waits for a pooled connection while its lease lasts
/// (`Class::Lease`): with the pool's only connection held by a client call
/// blocked on a row lock for longer than the ack's own retries last (about
/// 5 s of 100 ms pool waits), the ack of an activity with a 30 s lease
/// commits once the connection is free instead of failing (after which the
/// runtime would run the activity again).
#[tokio::test(flavor = "multi_thread")]
async fn an_ack_waits_for_a_busy_pool_while_its_lease_lasts() {
    let admin = common::admin_client().await;
    let (p, _schemas, app) = common::provider_with_app(
        "ack_pool_wait",
        PostgresOptions::new()
            .max_connections(1)
            .acquire_timeout(Duration::from_millis(100)),
    )
    .await;
    p.enqueue_for_worker(items::activity("busy-a", 1, "in", None))
        .await
        .unwrap();
    let (_, token, _) = p
        .fetch_work_item(
            Duration::from_secs(30),
            Duration::ZERO,
            None,
            &TagFilter::default(),
        )
        .await
        .unwrap()
        .expect("the activity");

    // Another instance's lease row locked: an enqueue to it blocks while
    // holding the pool's only connection.
    let s = p.schema();
    admin
        .batch_execute(&format!(
            "INSERT INTO \"{s}\".instance_locks (instance_id) VALUES ('busy-b')"
        ))
        .await
        .unwrap();
    let mut locker = common::admin_client().await;
    let tx = locker.transaction().await.unwrap();
    tx.batch_execute(&format!(
        "SELECT 1 FROM \"{s}\".instance_locks WHERE instance_id = 'busy-b' FOR UPDATE"
    ))
    .await
    .unwrap();
    let blocked = {
        let p = p.clone();
        tokio::spawn(async move {
            p.enqueue_for_orchestrator(items::start("busy-b", ""), None)
                .await
        })
    };
    common::wait::lock_wait(&admin, Some(&app), "enqueue_orchestrator").await;

    let acking = {
        let p = p.clone();
        tokio::spawn(async move {
            p.ack_work_item(&token, Some(completed("busy-a", 1, "out")))
                .await
        })
    };
    // Waits out the ack's own retries (ack.rs: about 5 s).
    tokio::time::sleep(Duration::from_millis(6_500)).await;
    assert!(
        !acking.is_finished(),
        "the ack gave up waiting for a connection: {:?}",
        acking.await
    );
    tx.rollback().await.unwrap();
    acking
        .await
        .unwrap()
        .expect("the ack commits once the connection is free");
    blocked.await.unwrap().expect("the enqueue commits too");
    assert_eq!(
        row_count(&admin, &p, "worker_queue").await,
        0,
        "the item is gone"
    );
}

/// `work_ack_outcome` during a reclaim of its item's segment: the reclaim
/// (done here by hand, as `reclaim_worker_queue` does it) moves the leased
/// item to the long-lived segment and truncates the old one while the
/// outcome call waits for that segment's lock. The call must still find the
/// item held, not report it gone ("done"), which would make a lost ack
/// report success for work that was never committed.
#[tokio::test(flavor = "multi_thread")]
async fn a_work_ack_outcome_waiting_on_a_reclaim_still_sees_the_item() {
    let (p, _schemas) = common::provider("outcome_reclaim", PostgresOptions::new()).await;
    let admin = common::admin_client().await;
    p.enqueue_for_worker(activity("r", 1, None)).await.unwrap();
    let (_, token, _) = fetch_work(&p, LONG, None).await.unwrap();
    let seg = ring_segment_of(&admin, &p, "r").await;

    let mut reclaimer = common::admin_client().await;
    let tx = reclaim_worker_segment_by_hand(&mut reclaimer, &p, seg).await;

    let asking = {
        let p = p.clone();
        let token = token.clone();
        tokio::spawn(async move {
            let admin = common::admin_client().await;
            ack_outcome(&admin, &p, "work_ack_outcome", &token).await
        })
    };
    common::wait::lock_wait(&admin, None, "work_ack_outcome").await;
    tx.commit().await.unwrap();
    assert_eq!(asking.await.unwrap(), "held");
}

/// The ring segment (0–2) that holds the worker item of `instance`.
async fn ring_segment_of(
    admin: &tokio_postgres::Client,
    p: &PostgresProvider,
    instance: &str,
) -> i16 {
    let seg: i16 = value(
        admin,
        p,
        "SELECT seg FROM {s}.worker_queue WHERE instance_id = $1",
        &[&instance],
    )
    .await;
    assert_ne!(seg, 3, "a new item is in a ring segment");
    seg
}

/// Does what `reclaim_worker_queue` does to segment `seg` (lock, move its
/// rows to segment 3, truncate) in a transaction left open, so that a test
/// can make a call wait for that lock and then commit the reclaim under it.
async fn reclaim_worker_segment_by_hand<'a>(
    client: &'a mut tokio_postgres::Client,
    p: &PostgresProvider,
    seg: i16,
) -> tokio_postgres::Transaction<'a> {
    let tx = client.transaction().await.unwrap();
    tx.batch_execute(&sql(
        p,
        &format!("LOCK TABLE {{s}}.worker_queue_s{seg} IN ACCESS EXCLUSIVE MODE"),
    ))
    .await
    .unwrap();
    let moved = tx
        .execute(
            &sql(
                p,
                &format!(
                    "WITH m AS (DELETE FROM {{s}}.worker_queue_s{seg} w RETURNING w.*)
                     INSERT INTO {{s}}.worker_queue (id, work_item, visible_at_ms, lock_token,
                         locked_until_ms, attempt_count, instance_id, execution_id, activity_id,
                         session_id, tag, created_at_ms, seg)
                     SELECT m.id, m.work_item, m.visible_at_ms, m.lock_token, m.locked_until_ms,
                         m.attempt_count, m.instance_id, m.execution_id, m.activity_id,
                         m.session_id, m.tag, m.created_at_ms, 3 FROM m"
                ),
            ),
            &[],
        )
        .await
        .unwrap();
    assert!(
        moved > 0,
        "segment {seg} held the item when the reclaim began"
    );
    tx.batch_execute(&sql(p, &format!("TRUNCATE {{s}}.worker_queue_s{seg}")))
        .await
        .unwrap();
    tx
}

// A queue report that waits for a reclaim counts the rows the reclaim
// moved: the report's SQL function is inlined into the calling statement,
// whose snapshot is taken after the segments are locked (inspect.sql's
// header). The same report written as a function that is not inlined,
// and STABLE, would miss the moved item (as work_ack_outcome did).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn queue_depths_waiting_on_a_reclaim_still_count_the_moved_items() {
    use duroxide::providers::ProviderAdmin;
    let (p, _schemas) = common::provider("depths_reclaim", PostgresOptions::new()).await;
    let admin = common::admin_client().await;
    p.enqueue_for_worker(activity("d", 1, None)).await.unwrap();
    assert_eq!(p.get_queue_depths().await.unwrap().worker_queue, 1);
    let seg = ring_segment_of(&admin, &p, "d").await;

    let mut reclaimer = common::admin_client().await;
    let tx = reclaim_worker_segment_by_hand(&mut reclaimer, &p, seg).await;
    let asking = {
        let p = p.clone();
        tokio::spawn(async move { p.get_queue_depths().await })
    };
    common::wait::lock_wait(&admin, None, "get_queue_depths").await;
    tx.commit().await.unwrap();
    assert_eq!(
        asking.await.unwrap().unwrap().worker_queue,
        1,
        "the item moved by the reclaim the call waited for is counted"
    );
}

/// Reads a lease row (token, lease end) until its token is none or `own`:
/// a claim an ack took of it as its next turn (`src/provider/prefetch.rs`)
/// is given back within its hold; 10 s at most.
async fn past_prefetch<F, Fut>(own: &str, mut read: F) -> (Option<String>, Option<i64>)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = (Option<String>, Option<i64>)>,
{
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let row = read().await;
        if row.0.as_deref().is_none_or(|t| t == own) {
            return row;
        }
        assert!(
            Instant::now() < deadline,
            "a prefetched claim was kept: {row:?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
