//! Behaviours duroxide's runtime relies on (issue 7): what
//! `latest_execution_id` answers for an unknown instance, worker fetches
//! that must not sleep through work they skipped, fetches dropped by their
//! caller, and long polls woken by notifications only.

#[allow(dead_code)]
mod common;

use common::items::{activity, start, tagged_activity};
use common::wait;
use duroxide::providers::{Provider, ProviderAdmin, SessionFetchConfig, TagFilter};
use duroxide::runtime::registry::ActivityRegistry;
use duroxide::runtime::{Runtime, RuntimeOptions};
use duroxide::{ActivityContext, Client, OrchestrationContext, OrchestrationRegistry};
use duroxide::{OrchestrationStatus, INITIAL_EXECUTION_ID};
use duroxide_postgres::{PostgresOptions, PostgresProvider};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A lease that outlives any test step.
const LONG: Duration = Duration::from_secs(30);
/// The runtime's default long-poll timeout: what a stalled fetch sleeps.
const RUNTIME_POLL: Duration = Duration::from_secs(30);

fn session(owner: &str, lock_timeout: Duration) -> SessionFetchConfig {
    SessionFetchConfig {
        owner_id: owner.to_string(),
        lock_timeout,
    }
}

/// Another provider on `p`'s schema, without long polling (its enqueues
/// notify inside their transaction), as another process or a client.
async fn producer_for(p: &PostgresProvider) -> PostgresProvider {
    PostgresProvider::connect(
        &common::server::database_url(),
        PostgresOptions::new().schema(p.schema()).long_poll(false),
    )
    .await
    .unwrap()
}

// ---------------------------------------------------------------------------
// Item 3: latest_execution_id
// ---------------------------------------------------------------------------

/// An unknown instance has execution 1 (duroxide's trait default and the
/// SQLite provider); a known one its highest execution id.
#[tokio::test(flavor = "multi_thread")]
async fn latest_execution_id_of_an_unknown_instance_is_one() {
    let (p, _schemas) = common::provider("latest_exec", PostgresOptions::new()).await;
    assert_eq!(
        p.latest_execution_id("never-started").await.unwrap(),
        INITIAL_EXECUTION_ID
    );

    // An instance with a start message but no turn yet has no execution.
    p.enqueue_for_orchestrator(start("pending", "x"), None)
        .await
        .unwrap();
    assert_eq!(p.latest_execution_id("pending").await.unwrap(), 1);

    // Otherwise the highest execution id.
    let (item, token, _) = p
        .fetch_orchestration_item(LONG, Duration::ZERO, None)
        .await
        .unwrap()
        .expect("the start");
    p.ack_orchestration_item(
        &token,
        1,
        vec![common::items::started_event(&item.instance, "x")],
        vec![],
        vec![],
        common::items::first_turn_metadata(),
        vec![],
    )
    .await
    .unwrap();
    assert_eq!(p.latest_execution_id("pending").await.unwrap(), 1);
    common::admin_client()
        .await
        .execute(
            &format!(
                "INSERT INTO \"{}\".executions (instance_id, execution_id, started_at_ms) \
                 VALUES ('pending', 3, 0)",
                p.schema()
            ),
            &[],
        )
        .await
        .unwrap();
    assert_eq!(p.latest_execution_id("pending").await.unwrap(), 3);
}

// ---------------------------------------------------------------------------
// Item 4: a worker fetch must not sleep through work it skipped
// ---------------------------------------------------------------------------

/// A fetch without a session (the runtime's fetch while its session capacity
/// is full) cannot take ready session work; it returns at once instead of
/// waiting out its poll, so the runtime re-checks its capacity.
#[tokio::test(flavor = "multi_thread")]
async fn sessionless_fetch_returns_at_once_when_session_work_is_ready() {
    let (p, _schemas) = common::provider("skip_session", PostgresOptions::new()).await;
    p.enqueue_for_worker(activity("inst", 1, "in-session", Some("s1")))
        .await
        .unwrap();
    let started = Instant::now();
    let got = p
        .fetch_work_item(LONG, RUNTIME_POLL, None, &TagFilter::DefaultOnly)
        .await
        .unwrap();
    let waited = started.elapsed();
    assert!(got.is_none(), "a fetch without a session took session work");
    assert!(
        waited < Duration::from_secs(5),
        "a fetch without a session slept {waited:?} (of its {RUNTIME_POLL:?} poll) while \
         session work was ready"
    );

    // With a session it takes the item.
    let (item, _, _) = p
        .fetch_work_item(
            LONG,
            Duration::ZERO,
            Some(&session("w1", LONG)),
            &TagFilter::DefaultOnly,
        )
        .await
        .unwrap()
        .expect("the session item");
    assert_eq!(item, activity("inst", 1, "in-session", Some("s1")));
}

/// A waiter blocked only by another owner's session lease wakes when that
/// lease runs out (a moment it can compute), not at the end of its poll.
#[tokio::test(flavor = "multi_thread")]
async fn waiter_wakes_when_another_owners_session_lease_expires() {
    let (p, _schemas) = common::provider("session_expiry", PostgresOptions::new()).await;
    let session_lease = Duration::from_secs(2);
    p.enqueue_for_worker(activity("inst", 1, "first", Some("s1")))
        .await
        .unwrap();
    let (_, token, _) = p
        .fetch_work_item(
            LONG,
            Duration::ZERO,
            Some(&session("owner-a", session_lease)),
            &TagFilter::DefaultOnly,
        )
        .await
        .unwrap()
        .expect("owner a claims s1");
    p.ack_work_item(&token, None).await.unwrap();
    // s1 stays owner a's for its lease; its next item is ready meanwhile.
    p.enqueue_for_worker(activity("inst", 2, "second", Some("s1")))
        .await
        .unwrap();

    let started = Instant::now();
    let got = p
        .fetch_work_item(
            LONG,
            RUNTIME_POLL,
            Some(&session("owner-b", LONG)),
            &TagFilter::DefaultOnly,
        )
        .await
        .unwrap();
    let waited = started.elapsed();
    let (item, _, _) = got.unwrap_or_else(|| {
        panic!("owner b never got s1's item (waited {waited:?}, s1's lease ran out after 2 s)")
    });
    assert_eq!(item, activity("inst", 2, "second", Some("s1")));
    assert!(
        waited < Duration::from_secs(15),
        "owner b slept {waited:?} although s1's lease ran out after 2 s"
    );
}

/// End to end with duroxide's runtime: one session slot, two worker slots,
/// an orchestration that runs two session activities at once. Both slots
/// claim one each; the runtime gives one back (over capacity) and that slot,
/// now at capacity, fetches without a session while still owning the
/// given-back item's session. Before the fix it slept its whole 30 s poll and
/// the orchestration with it.
#[tokio::test(flavor = "multi_thread")]
async fn session_orchestration_does_not_stall_when_session_capacity_frees() {
    let (store, _schemas) = common::provider("session_stall", PostgresOptions::new()).await;
    let activities = ActivityRegistry::builder()
        .register("Hold", |_ctx: ActivityContext, input: String| async move {
            tokio::time::sleep(Duration::from_millis(1500)).await;
            Ok(input)
        })
        .build();
    let orchestrations = OrchestrationRegistry::builder()
        .register(
            "TwoSessions",
            |ctx: OrchestrationContext, _input: String| async move {
                let a = ctx.schedule_activity_on_session("Hold", "a", "session-a");
                let b = ctx.schedule_activity_on_session("Hold", "b", "session-b");
                let results = ctx.join(vec![a, b]).await;
                let mut out = Vec::new();
                for r in results {
                    out.push(r?);
                }
                Ok(out.join(","))
            },
        )
        .build();
    let options = RuntimeOptions {
        worker_concurrency: 2,
        max_sessions_per_runtime: 1,
        dispatcher_long_poll_timeout: RUNTIME_POLL,
        ..Default::default()
    };
    let rt = Runtime::start_with_options(store.clone(), activities, orchestrations, options).await;
    let client = Client::new(store.clone());
    let started = Instant::now();
    client
        .start_orchestration("stall-1", "TwoSessions", "")
        .await
        .unwrap();
    let status = client
        .wait_for_orchestration("stall-1", Duration::from_secs(60))
        .await
        .unwrap();
    let took = started.elapsed();
    rt.shutdown(None).await;
    assert!(
        matches!(status, OrchestrationStatus::Completed { .. }),
        "{status:?}"
    );
    // Two 1.5 s activities one after the other; the stall added ~30 s.
    assert!(
        took < Duration::from_secs(20),
        "two session activities took {took:?}: a worker slept through ready session work"
    );
}

// ---------------------------------------------------------------------------
// Item 5: a fetch whose caller went away leaves no claim behind
// ---------------------------------------------------------------------------

/// Drops a fetch while its statement waits on a lock held by `locker` (an
/// ACCESS EXCLUSIVE lock on `table`, which the fetch reads after claiming),
/// then releases the lock.
async fn drop_fetch_while_blocked<F>(p: &PostgresProvider, app: &str, table: &str, fetch: F)
where
    F: std::future::Future<Output = ()> + Send + 'static,
{
    let locker = common::admin_client().await;
    locker.batch_execute("BEGIN").await.unwrap();
    locker
        .batch_execute(&format!(
            "LOCK TABLE \"{}\".{table} IN ACCESS EXCLUSIVE MODE",
            p.schema()
        ))
        .await
        .unwrap();
    let task = tokio::spawn(fetch);
    let observer = common::admin_client().await;
    wait::lock_wait(&observer, Some(app), "").await;
    task.abort();
    let _ = task.await;
    locker.batch_execute("COMMIT").await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn dropped_work_fetch_leaves_no_claim() {
    let (p, _schemas, app) = common::provider_with_app("drop_wfetch", PostgresOptions::new()).await;
    let item = activity("inst", 1, "x", Some("s1"));
    p.enqueue_for_worker(item.clone()).await.unwrap();
    let fetcher = p.clone();
    drop_fetch_while_blocked(&p, &app, "sessions", async move {
        let _ = fetcher
            .fetch_work_item(
                LONG,
                Duration::ZERO,
                Some(&session("w1", LONG)),
                &TagFilter::DefaultOnly,
            )
            .await;
    })
    .await;
    // The abandoned claim is released: the item is fetchable again well
    // within its 30 s lease, and the dropped attempt is not counted.
    let got = p
        .fetch_work_item(
            LONG,
            Duration::from_secs(5),
            Some(&session("w1", LONG)),
            &TagFilter::DefaultOnly,
        )
        .await
        .unwrap();
    let (fetched, _, attempts) = got.expect("the item stayed claimed by a fetch nobody received");
    assert_eq!(fetched, item);
    assert_eq!(attempts, 1, "the dropped fetch's attempt was counted");
}

#[tokio::test(flavor = "multi_thread")]
async fn dropped_orchestration_fetch_leaves_no_claim() {
    let (p, _schemas, app) = common::provider_with_app("drop_ofetch", PostgresOptions::new()).await;
    p.enqueue_for_orchestrator(start("inst", "x"), None)
        .await
        .unwrap();
    let fetcher = p.clone();
    drop_fetch_while_blocked(&p, &app, "history", async move {
        let _ = fetcher
            .fetch_orchestration_item(LONG, Duration::ZERO, None)
            .await;
    })
    .await;
    let got = p
        .fetch_orchestration_item(LONG, Duration::from_secs(5), None)
        .await
        .unwrap();
    let (item, _, attempts) = got.expect("the instance stayed claimed by a fetch nobody received");
    assert_eq!(item.instance, "inst");
    assert_eq!(attempts, 1, "the dropped fetch's attempt was counted");
}

// ---------------------------------------------------------------------------
// Item 9: long polls are woken by notifications, and only by work
// ---------------------------------------------------------------------------

/// Long polling with the periodic re-check effectively off (it only runs
/// while the LISTEN connection is down, every `listener_reconnect_delay`).
fn notification_only() -> PostgresOptions {
    PostgresOptions::new().listener_reconnect_delay(Duration::from_secs(3600))
}

/// A provider with [`notification_only`] long polling whose listener
/// listens, with the application name of its connections.
async fn listening_provider(
    admin: &tokio_postgres::Client,
    prefix: &str,
) -> (Arc<PostgresProvider>, common::Schemas) {
    common::recorder::recorder();
    wait::statement_stats(admin).await;
    let (p, schemas, app) = common::provider_with_app(prefix, notification_only()).await;
    wait::listening(admin, p.schema(), &app).await;
    (p, schemas)
}

/// A fetch waiting up to 30 s on an empty queue is woken by another
/// connection's commit: nothing but the notification can wake it (no delayed
/// item, no periodic re-check).
#[tokio::test(flavor = "multi_thread")]
async fn long_poll_is_woken_by_another_connections_notification() {
    let admin = common::admin_client().await;
    let (p, _schemas) = listening_provider(&admin, "lp_notify").await;
    let producer = producer_for(&p).await;
    let item = activity("lp", 1, "woken", None);
    let fetch = {
        let p = p.clone();
        tokio::spawn(async move {
            let got = p
                .fetch_work_item(LONG, RUNTIME_POLL, None, &TagFilter::DefaultOnly)
                .await
                .unwrap();
            (got, Instant::now())
        })
    };
    // The fetch has found the queue empty: it waits.
    wait::calls_reach(&admin, &p, "fetch_work_item", 1).await;
    producer.enqueue_for_worker(item.clone()).await.unwrap();
    let sent = Instant::now();
    let (got, returned) = fetch.await.unwrap();
    let (fetched, _, _) = got.expect("the fetch returned empty-handed");
    assert_eq!(fetched, item);
    assert!(
        returned.duration_since(sent) < Duration::from_secs(10),
        "woken {:?} after the commit: not by its notification",
        returned.duration_since(sent)
    );

    // The orchestrator queue likewise.
    let fetch = {
        let p = p.clone();
        tokio::spawn(async move {
            let got = p
                .fetch_orchestration_item(LONG, RUNTIME_POLL, None)
                .await
                .unwrap();
            (got, Instant::now())
        })
    };
    wait::calls_reach(&admin, &p, "fetch_orchestration_item", 1).await;
    producer
        .enqueue_for_orchestrator(start("lp-o", "woken"), None)
        .await
        .unwrap();
    let sent = Instant::now();
    let (got, returned) = fetch.await.unwrap();
    assert_eq!(got.expect("woken by the enqueue").0.instance, "lp-o");
    assert!(
        returned.duration_since(sent) < Duration::from_secs(10),
        "woken {:?} after the commit: not by its notification",
        returned.duration_since(sent)
    );
}

/// A waiting fetch woken by work it cannot take (another tag, the other
/// queue) keeps waiting: it returns empty only at its deadline.
#[tokio::test(flavor = "multi_thread")]
async fn long_poll_does_not_return_early_without_work() {
    let admin = common::admin_client().await;
    let (p, _schemas) = listening_provider(&admin, "lp_early").await;
    let producer = producer_for(&p).await;
    let poll = Duration::from_secs(3);
    let fetch = {
        let p = p.clone();
        tokio::spawn(async move {
            let started = Instant::now();
            let got = p
                .fetch_work_item(
                    LONG,
                    poll,
                    Some(&session("w1", LONG)),
                    &TagFilter::DefaultOnly,
                )
                .await
                .unwrap();
            (got, started.elapsed())
        })
    };
    // The fetch has found nothing and waits when the work arrives.
    wait::calls_reach(&admin, &p, "fetch_work_item", 1).await;
    producer
        .enqueue_for_worker(tagged_activity("other", 1, "x", "gpu"))
        .await
        .unwrap();
    producer
        .enqueue_for_orchestrator(start("other", "x"), None)
        .await
        .unwrap();
    let (got, waited) = fetch.await.unwrap();
    assert!(got.is_none(), "took work its filter excludes");
    assert!(
        waited >= poll - Duration::from_millis(50),
        "returned empty after {waited:?}, before its {poll:?} poll ran out"
    );
}
