//! How idle fetches wait and wake (`src/wakeups.rs`), counted in statements:
//! pg_stat_statements (preloaded by the test server) counts the fetch
//! function of each test's own schema, so only that test's calls are seen.

#[allow(dead_code)]
mod common;

use common::items::start;
use common::wait::{self, calls as statements};
use duroxide::providers::Provider;
use duroxide_postgres::{PostgresOptions, PostgresProvider};
use std::time::{Duration, Instant};

const LOCK: Duration = Duration::from_secs(30);

/// The admin connection, with pg_stat_statements readable and the test
/// recorder installed (for the listener gauge), before any provider exists.
async fn observer() -> tokio_postgres::Client {
    common::recorder::recorder();
    let admin = common::admin_client().await;
    wait::statement_stats(&admin).await;
    admin
}

/// A long-polling provider in a fresh schema whose listener listens: a new
/// listener wakes every waiting fetch once (work may have been committed
/// while nobody listened), which must not land among a test's counts.
async fn listening_provider(
    admin: &tokio_postgres::Client,
    prefix: &str,
) -> (std::sync::Arc<PostgresProvider>, common::Schemas) {
    let (p, schemas, app) = common::provider_with_app(prefix, PostgresOptions::new()).await;
    wait::listening(admin, p.schema(), &app).await;
    (p, schemas)
}

/// Another provider on `p`'s schema, as another process or a client.
async fn producer_for(p: &PostgresProvider) -> PostgresProvider {
    PostgresProvider::connect(
        &common::server::database_url(),
        PostgresOptions::new().schema(p.schema()).long_poll(false),
    )
    .await
    .unwrap()
}

/// Four idle fetches of one process, one message committed by another:
/// one fetch runs a statement and takes it; the other three keep waiting
/// without a statement (before: all four looked, three found nothing).
#[tokio::test(flavor = "multi_thread")]
async fn one_message_wakes_one_of_four_waiting_fetches() {
    let admin = observer().await;
    let (p, _schemas) = listening_provider(&admin, "wake_one").await;
    let producer = producer_for(&p).await;
    let mut waiters = Vec::new();
    for _ in 0..4 {
        let p = p.clone();
        waiters.push(tokio::spawn(async move {
            p.fetch_orchestration_item(LOCK, Duration::from_secs(3), None)
                .await
                .unwrap()
        }));
    }
    // Each has looked once and is waiting; none looks again while nothing
    // is committed (a quiet spell, then the count).
    wait::calls_reach(&admin, &p, "fetch_orchestration_item", 4).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let before = statements(&admin, &p, "fetch_orchestration_item").await;
    assert_eq!(before, 4);

    producer
        .enqueue_for_orchestrator(start("wake-one", ""), None)
        .await
        .unwrap();
    let mut got = 0;
    for w in waiters {
        if let Some((item, _, _)) = w.await.unwrap() {
            assert_eq!(item.instance, "wake-one");
            got += 1;
        }
    }
    assert_eq!(got, 1, "exactly one fetch took the message");
    let woken = statements(&admin, &p, "fetch_orchestration_item").await - before;
    assert_eq!(
        woken, 1,
        "one message woke {woken} fetches: only one of them could take it"
    );
}

/// A fetch that comes back after a fetch of its kind found nothing, with
/// nothing committed since, waits without a statement, and still takes
/// work committed later (one statement: the one that finds it).
#[tokio::test(flavor = "multi_thread")]
async fn a_fetch_with_nothing_new_waits_without_looking_and_still_wakes() {
    let admin = observer().await;
    let (p, _schemas) = listening_provider(&admin, "wake_quiet").await;
    let producer = producer_for(&p).await;
    // Looks, finds nothing.
    assert!(p
        .fetch_orchestration_item(LOCK, Duration::from_millis(200), None)
        .await
        .unwrap()
        .is_none());
    assert_eq!(statements(&admin, &p, "fetch_orchestration_item").await, 1);

    let waiter = {
        let p = p.clone();
        tokio::spawn(async move {
            p.fetch_orchestration_item(LOCK, Duration::from_secs(10), None)
                .await
                .unwrap()
        })
    };
    // The waiter is parked (the gauge counts it) and has sent nothing.
    common::recorder::until(p.schema(), "the second fetch waits", |m| {
        common::recorder::get(
            m,
            "duroxide_postgres_fetches_waiting",
            &[("queue", "orchestrator")],
        ) == Some(1.0)
    })
    .await;
    assert_eq!(
        statements(&admin, &p, "fetch_orchestration_item").await,
        1,
        "nothing was committed: the waiting fetch must not have looked"
    );
    producer
        .enqueue_for_orchestrator(start("quiet", ""), None)
        .await
        .unwrap();
    let (item, _, _) = waiter.await.unwrap().expect("woken by the commit");
    assert_eq!(item.instance, "quiet");
    assert_eq!(statements(&admin, &p, "fetch_orchestration_item").await, 2);
}

/// Work written behind the provider's back (no notification) is still
/// found: a fetch that waited without looking looks once before it reports
/// nothing.
#[tokio::test(flavor = "multi_thread")]
async fn a_fetch_that_did_not_look_looks_before_reporting_nothing() {
    let admin = observer().await;
    let (p, _schemas) = listening_provider(&admin, "wake_deadline").await;
    assert!(p
        .fetch_orchestration_item(LOCK, Duration::from_millis(100), None)
        .await
        .unwrap()
        .is_none());
    // A message inserted by hand: no NOTIFY, no wake.
    let json = serde_json::to_string(&start("by-hand", "")).unwrap();
    admin
        .batch_execute(&format!(
            "INSERT INTO \"{s}\".instance_locks (instance_id) VALUES ('by-hand');
             INSERT INTO \"{s}\".orchestrator_queue (instance_id, kind, work_item, visible_at_ms, created_at_ms)
             VALUES ('by-hand', 'StartOrchestration', '{json}', 0, 0);",
            s = p.schema(),
            json = json.replace('\'', "''")
        ))
        .await
        .unwrap();
    let t = Instant::now();
    let got = p
        .fetch_orchestration_item(LOCK, Duration::from_millis(500), None)
        .await
        .unwrap();
    let (item, _, _) = got.expect("found at the deadline");
    assert_eq!(item.instance, "by-hand");
    assert!(
        t.elapsed() >= Duration::from_millis(450),
        "it waited first: nothing had woken it"
    );
}

/// Two processes on one store (two providers, each with its listener). A
/// commits orchestrator work while its one idle fetch waits; A takes that
/// wake on itself instead of announcing it (issue 10), but its fetch's
/// version filter excludes the instance. That fetch finds nothing and must
/// pass the wake on, so B's waiting fetch, which may take the instance, is
/// woken at once instead of at its 30 s deadline. (Without the pass-on, B
/// waited out its poll: this test failed.)
#[tokio::test(flavor = "multi_thread")]
async fn a_wake_one_process_took_on_reaches_another_when_it_cannot_take_the_work() {
    use common::items::{activity, completed, first_turn_metadata, started_event};
    use duroxide::providers::{DispatcherCapabilityFilter, SemverRange, TagFilter};
    let admin = observer().await;
    // A listens before B is created: the listener gauge is per schema, so
    // only then does its reading 1 after B's LISTEN ran mean B's listener.
    let (a, _schemas) = listening_provider(&admin, "wake_pass").await;
    let b_app = common::unique_schema("app_wake_pass_b");
    let b = PostgresProvider::connect(
        &common::server::database_url(),
        PostgresOptions::new()
            .schema(a.schema())
            .application_name(&b_app),
    )
    .await
    .unwrap();
    wait::listening(&admin, a.schema(), &b_app).await;
    let setup = producer_for(&a).await;
    let version = |s: &str| semver::Version::parse(s).unwrap();
    let range = |max: &str| DispatcherCapabilityFilter {
        supported_duroxide_versions: vec![SemverRange::new(version("0.0.0"), version(max))],
    };

    // An instance pinned to 2.0.0 with one activity scheduled.
    setup
        .enqueue_for_orchestrator(start("pinned", ""), None)
        .await
        .unwrap();
    let (_, token, _) = setup
        .fetch_orchestration_item(LOCK, Duration::ZERO, None)
        .await
        .unwrap()
        .expect("the start");
    let mut metadata = first_turn_metadata();
    metadata.pinned_duroxide_version = Some(version("2.0.0"));
    setup
        .ack_orchestration_item(
            &token,
            1,
            vec![started_event("pinned", "")],
            vec![activity("pinned", 2, "in", None)],
            vec![],
            metadata,
            vec![],
        )
        .await
        .unwrap();

    // A waits with a filter up to 1.0.0, B with one up to 3.0.0.
    let (old, new) = (range("1.0.0"), range("3.0.0"));
    let looked = statements(&admin, &a, "fetch_orchestration_item").await;
    let a_waits = {
        let a = a.clone();
        tokio::spawn(async move {
            a.fetch_orchestration_item(LOCK, Duration::from_secs(30), Some(&old))
                .await
                .unwrap()
        })
    };
    let b_waits = tokio::spawn(async move {
        let began = Instant::now();
        let got = b
            .fetch_orchestration_item(LOCK, Duration::from_secs(30), Some(&new))
            .await
            .unwrap();
        (got, began.elapsed())
    });
    // Both have looked (found nothing they may take) and wait.
    wait::calls_reach(&admin, &a, "fetch_orchestration_item", looked + 2).await;

    // A runs the activity: its ack commits the completion (one ready
    // instance), which A's waiting fetch cannot take.
    let (_, wtoken, _) = a
        .fetch_work_item(LOCK, Duration::ZERO, None, &TagFilter::default())
        .await
        .unwrap()
        .expect("the activity");
    a.ack_work_item(&wtoken, Some(completed("pinned", 2, "out")))
        .await
        .unwrap();

    let (got, waited) = tokio::time::timeout(Duration::from_secs(20), b_waits)
        .await
        .expect("B's fetch was not woken: it waited out its poll")
        .unwrap();
    let (item, _, _) = got.expect("B takes the completion");
    assert_eq!(item.instance, "pinned");
    assert!(
        waited < Duration::from_secs(10),
        "B was woken only after {waited:?}"
    );
    a_waits.abort();
}

/// Work that becomes ready for the instance a dispatcher is working on is
/// handed to that dispatcher, not to an idle one (issue 11: the two raced
/// and the loser ran a fetch that found nothing):
/// * a completion that arrives while the instance is leased is deferred
///   behind the lease and wakes no waiting fetch;
/// * the ack that ends the lease leaves it to the acking dispatcher's next
///   fetch, and a waiting fetch does not look when that fetch took it;
/// * if no fetch comes for it, a waiting fetch takes it after all.
#[tokio::test(flavor = "multi_thread")]
async fn work_for_a_leased_instance_goes_to_the_dispatcher_that_acks() {
    use common::items::{activity, completed, external, first_turn_metadata, started_event};
    use duroxide::providers::{ExecutionMetadata, TagFilter};

    let admin = observer().await;
    let (p, _schemas) = listening_provider(&admin, "wake_handback").await;
    let setup = producer_for(&p).await;
    // "hb" runs a first turn that schedules an activity, then is leased
    // again by this process (`p`) for an event.
    setup
        .enqueue_for_orchestrator(start("hb", ""), None)
        .await
        .unwrap();
    let (_, first, _) = p
        .fetch_orchestration_item(LOCK, Duration::ZERO, None)
        .await
        .unwrap()
        .expect("the start");
    p.ack_orchestration_item(
        &first,
        1,
        vec![started_event("hb", "")],
        vec![activity("hb", 2, "in", None)],
        vec![],
        first_turn_metadata(),
        vec![],
    )
    .await
    .unwrap();
    setup
        .enqueue_for_orchestrator(external("hb", "e1", "x"), None)
        .await
        .unwrap();
    let (_, second, _) = p
        .fetch_orchestration_item(LOCK, Duration::ZERO, None)
        .await
        .unwrap()
        .expect("the event");
    let (_, work, _) = setup
        .fetch_work_item(LOCK, Duration::ZERO, None, &TagFilter::default())
        .await
        .unwrap()
        .expect("the activity");

    // An idle dispatcher of `p` looks at most once (it may skip: nothing
    // was committed since a fetch of its group claimed the only ready
    // instance) and then waits, running no statement until something is
    // committed or that lease's end (LOCK from now, past this test) falls
    // due (src/wakeups.rs). Its look, if any, comes at once: the baseline
    // is what it did in its first 500 ms.
    let before = statements(&admin, &p, "fetch_orchestration_item").await;
    let waiter = {
        let p = p.clone();
        tokio::spawn(async move {
            p.fetch_orchestration_item(LOCK, Duration::from_secs(30), None)
                .await
                .unwrap()
        })
    };

    let calls = || async { statements(&admin, &p, "fetch_orchestration_item").await > before };
    wait::within(Duration::from_millis(500), calls).await;
    let looked = statements(&admin, &p, "fetch_orchestration_item").await;

    // The activity completes while "hb" is leased: deferred, no wake.
    setup
        .ack_work_item(&work, Some(completed("hb", 2, "out")))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        statements(&admin, &p, "fetch_orchestration_item").await,
        looked,
        "a completion deferred behind a lease woke a waiting fetch"
    );

    // The turn ends; its dispatcher fetches again and gets the completion.
    p.ack_orchestration_item(
        &second,
        1,
        vec![],
        vec![],
        vec![],
        ExecutionMetadata::default(),
        vec![],
    )
    .await
    .unwrap();
    let (item, third, _) = p
        .fetch_orchestration_item(LOCK, Duration::ZERO, None)
        .await
        .unwrap()
        .expect("the completion, handed back");
    assert_eq!(item.instance, "hb");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        statements(&admin, &p, "fetch_orchestration_item").await,
        looked + 1,
        "the waiting fetch looked although the acking dispatcher took the work"
    );
    assert!(!waiter.is_finished());

    // Another event arrives during this lease; the turn ends and nobody
    // fetches: the waiting fetch takes it.
    setup
        .enqueue_for_orchestrator(external("hb", "e2", "y"), None)
        .await
        .unwrap();
    p.ack_orchestration_item(
        &third,
        1,
        vec![],
        vec![],
        vec![],
        ExecutionMetadata::default(),
        vec![],
    )
    .await
    .unwrap();
    let (item, _, _) = tokio::time::timeout(Duration::from_secs(10), waiter)
        .await
        .expect("the waiting fetch was not woken for work nobody fetched")
        .unwrap()
        .expect("the event");
    assert_eq!(item.instance, "hb");
}
