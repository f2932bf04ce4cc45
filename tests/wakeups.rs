//! How idle fetches wait and wake (`src/wakeups.rs`), counted in statements:
//! pg_stat_statements (preloaded by the test server) counts the fetch
//! function of each test's own schema, so only that test's calls are seen.

#[allow(dead_code)]
mod common;

use common::items::start;
use duroxide::providers::Provider;
use duroxide_postgres::{PostgresOptions, PostgresProvider};
use std::time::{Duration, Instant};

const LOCK: Duration = Duration::from_secs(30);

/// Calls of `function` of `p`'s schema so far (the provider's calls, not
/// the statements that installed it).
async fn statements(admin: &tokio_postgres::Client, p: &PostgresProvider, function: &str) -> i64 {
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

async fn admin_with_pgss() -> tokio_postgres::Client {
    let admin = common::admin_client().await;
    // Concurrent tests may race to create it; any of them wins.
    let _ = admin
        .batch_execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
        .await;
    admin
}

/// Lets a new provider's listener connect: connecting wakes every waiter
/// once (work may have been committed while nobody listened).
async fn settle() {
    tokio::time::sleep(Duration::from_millis(500)).await;
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
    let admin = admin_with_pgss().await;
    let (p, _schemas) = common::provider("wake_one", PostgresOptions::new()).await;
    let producer = producer_for(&p).await;
    settle().await;
    let mut waiters = Vec::new();
    for _ in 0..4 {
        let p = p.clone();
        waiters.push(tokio::spawn(async move {
            p.fetch_orchestration_item(LOCK, Duration::from_secs(3), None)
                .await
                .unwrap()
        }));
    }
    // Each has looked once and is waiting.
    let deadline = Instant::now() + Duration::from_secs(10);
    while statements(&admin, &p, "fetch_orchestration_item").await < 4 {
        assert!(Instant::now() < deadline, "the four fetches never ran");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
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
    let admin = admin_with_pgss().await;
    let (p, _schemas) = common::provider("wake_quiet", PostgresOptions::new()).await;
    let producer = producer_for(&p).await;
    settle().await;
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
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        statements(&admin, &p, "fetch_orchestration_item").await,
        1,
        "nothing was committed: the second fetch must not have looked yet"
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
    let admin = admin_with_pgss().await;
    let (p, _schemas) = common::provider("wake_deadline", PostgresOptions::new()).await;
    settle().await;
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
