//! An orchestration ack claims the next turn for the fetch that follows it
//! (`src/provider/prefetch.rs`, decision 0014): that fetch gets it without a
//! claim of its own; a turn nobody takes is given back without counting an
//! attempt; a fetch asking for another lease gets it given back first; and
//! the acking instance itself is never claimed (its new messages are handed
//! back as before).

#[allow(dead_code)]
mod common;

use common::items::{external, first_turn_metadata, start, started_event};
use duroxide::providers::Provider;
use duroxide_postgres::{PostgresOptions, PostgresProvider};
use std::time::{Duration, Instant};

const LOCK: Duration = Duration::from_secs(30);

/// The lease row of `instance`: its token, and how many milliseconds of its
/// lease are left (negative: none).
async fn lease(
    admin: &tokio_postgres::Client,
    p: &PostgresProvider,
    instance: &str,
) -> (Option<String>, i64) {
    let row = admin
        .query_one(
            &format!(
                "SELECT l.lock_token,
                        l.locked_until_ms - (extract(epoch FROM clock_timestamp()) * 1000)::BIGINT
                 FROM \"{}\".instance_locks l WHERE l.instance_id = $1",
                p.schema()
            ),
            &[&instance],
        )
        .await
        .expect("read the lease row");
    (row.get(0), row.get(1))
}

/// The attempts counted on `instance`'s queued messages.
async fn attempts(
    admin: &tokio_postgres::Client,
    p: &PostgresProvider,
    instance: &str,
) -> Vec<i32> {
    admin
        .query(
            &format!(
                "SELECT q.attempt_count FROM \"{}\".orchestrator_queue q
                 WHERE q.instance_id = $1 ORDER BY q.id",
                p.schema()
            ),
            &[&instance],
        )
        .await
        .expect("read the queue")
        .iter()
        .map(|r| r.get(0))
        .collect()
}

/// Starts `a` and then `b`, fetches `a` (the older start) and acks its first
/// turn, sending `to_self` to `a`.
async fn ack_a_with_b_ready(p: &PostgresProvider, to_self: Vec<duroxide::providers::WorkItem>) {
    for id in ["a", "b"] {
        p.enqueue_for_orchestrator(start(id, "in"), None)
            .await
            .expect("start");
    }
    let (item, token, _) = p
        .fetch_orchestration_item(LOCK, Duration::ZERO, None)
        .await
        .expect("fetch")
        .expect("a is ready");
    assert_eq!(item.instance, "a");
    p.ack_orchestration_item(
        &token,
        1,
        vec![started_event("a", "in")],
        vec![],
        to_self,
        first_turn_metadata(),
        vec![],
    )
    .await
    .expect("ack a");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_fetch_after_an_ack_gets_the_turn_that_ack_claimed() {
    let (p, _schemas) = common::provider("prefetch_take", PostgresOptions::new()).await;
    let admin = common::admin_client().await;
    ack_a_with_b_ready(&p, vec![]).await;

    // Committed with the ack: b is leased before anyone fetched it.
    let (claimed, left) = lease(&admin, &p, "b").await;
    let claimed = claimed.expect("the ack claimed b");
    assert!(left > 20_000, "the lease asked for: {left} ms left");
    assert_eq!(attempts(&admin, &p, "b").await, vec![1]);

    let (item, token, attempt) = p
        .fetch_orchestration_item(LOCK, Duration::ZERO, None)
        .await
        .expect("fetch")
        .expect("b, claimed by the ack");
    assert_eq!(item.instance, "b");
    assert_eq!(token, claimed, "the ack's claim, not a new one");
    assert_eq!(attempt, 1);
    assert_eq!(item.messages.len(), 1, "b's start");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_claimed_turn_nobody_fetches_is_given_back_uncounted() {
    let (p, _schemas) = common::provider("prefetch_hold", PostgresOptions::new()).await;
    let admin = common::admin_client().await;
    ack_a_with_b_ready(&p, vec![]).await;
    assert!(
        lease(&admin, &p, "b").await.0.is_some(),
        "the ack claimed b"
    );

    // Given back within the hold (100 ms) plus the release's round trip.
    let deadline = Instant::now() + Duration::from_secs(10);
    while lease(&admin, &p, "b").await.0.is_some() {
        assert!(Instant::now() < deadline, "b is still claimed after 10 s");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(
        attempts(&admin, &p, "b").await,
        vec![0],
        "the attempt is not counted"
    );

    // Anyone may take it now: another provider on the same store.
    let other = PostgresProvider::connect(
        &common::server::database_url(),
        PostgresOptions::new().schema(p.schema()),
    )
    .await
    .expect("second provider");
    let (item, _, attempt) = other
        .fetch_orchestration_item(LOCK, Duration::ZERO, None)
        .await
        .expect("fetch")
        .expect("b is ready again");
    assert_eq!((item.instance.as_str(), attempt), ("b", 1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fetch_asking_for_another_lease_gets_the_claimed_turn_given_back_first() {
    let (p, _schemas) = common::provider("prefetch_other", PostgresOptions::new()).await;
    let admin = common::admin_client().await;
    ack_a_with_b_ready(&p, vec![]).await;
    let (claimed, _) = lease(&admin, &p, "b").await;
    let claimed = claimed.expect("the ack claimed b with a 30 s lease");

    let (item, token, attempt) = p
        .fetch_orchestration_item(Duration::from_secs(5), Duration::ZERO, None)
        .await
        .expect("fetch")
        .expect("b, given back and claimed again");
    assert_eq!(item.instance, "b");
    assert_ne!(token, claimed, "a claim of its own");
    assert_eq!(attempt, 1, "the given-back claim counted no attempt");
    let (_, left) = lease(&admin, &p, "b").await;
    assert!(
        left <= 5_000,
        "the lease this fetch asked for: {left} ms left"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_acking_instance_is_not_claimed_by_its_own_ack() {
    let (p, _schemas) = common::provider("prefetch_own", PostgresOptions::new()).await;
    let admin = common::admin_client().await;
    ack_a_with_b_ready(&p, vec![external("a", "E", "x")]).await;
    let (own, _) = lease(&admin, &p, "a").await;
    assert_eq!(own, None, "a's lease was released, not taken again");
    assert!(
        lease(&admin, &p, "b").await.0.is_some(),
        "b was claimed instead"
    );

    let mut fetched = Vec::new();
    for _ in 0..2 {
        let (item, _, _) = p
            .fetch_orchestration_item(LOCK, Duration::ZERO, None)
            .await
            .expect("fetch")
            .expect("b, then a's event");
        fetched.push(item.instance);
    }
    fetched.sort();
    assert_eq!(fetched, ["a", "b"]);
}
