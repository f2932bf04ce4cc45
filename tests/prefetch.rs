//! An ack claims the next turn for the fetch that follows it
//! (`src/provider/prefetch.rs`, decision 0014): that fetch gets it without a
//! claim of its own; a turn nobody takes is given back without counting an
//! attempt; a fetch asking for another lease gets it given back first; the
//! acking instance itself is never claimed (its new messages are handed back
//! as before), and an activity ack claims nothing when the next item is bound
//! to a session.

#[allow(dead_code)]
mod common;

use common::items::{activity, completed, external, first_turn_metadata, start, started_event};
use duroxide::providers::{Provider, SessionFetchConfig, TagFilter};
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

/// Waits until `what`'s lease token, as `token` reads it, is gone (a claim
/// nobody took is given back within its hold and the release's round trip);
/// 10 s at most.
async fn given_back<F, Fut>(what: &str, mut token: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<String>>,
{
    let deadline = Instant::now() + Duration::from_secs(10);
    while token().await.is_some() {
        assert!(
            Instant::now() < deadline,
            "{what} is still claimed after 10 s"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
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

    given_back("b", || async { lease(&admin, &p, "b").await.0 }).await;
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

/// The lease token of the worker item of `instance`, if it is leased.
async fn item_lease(
    admin: &tokio_postgres::Client,
    p: &PostgresProvider,
    instance: &str,
) -> Option<String> {
    admin
        .query_one(
            &format!(
                "SELECT w.lock_token FROM \"{}\".worker_queue w WHERE w.instance_id = $1",
                p.schema()
            ),
            &[&instance],
        )
        .await
        .expect("read the worker queue")
        .get(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_activity_ack_claims_the_next_item_in_order_unless_it_is_bound_to_a_session() {
    let (p, _schemas) = common::provider("prefetch_work", PostgresOptions::new()).await;
    let admin = common::admin_client().await;
    for (id, session) in [("w1", None), ("w2", Some("s")), ("w3", None)] {
        p.enqueue_for_worker(activity(id, 2, "in", session))
            .await
            .expect("enqueue");
    }
    let owner = SessionFetchConfig {
        owner_id: "worker-a".to_string(),
        lock_timeout: LOCK,
    };
    let any = TagFilter::DefaultOnly;
    let fetch = || async {
        p.fetch_work_item(LOCK, Duration::ZERO, Some(&owner), &any)
            .await
            .expect("fetch")
            .expect("an item")
    };

    let (first, token, _) = fetch().await;
    assert_eq!(first, activity("w1", 2, "in", None));
    p.ack_work_item(&token, Some(completed("w1", 2, "r")))
        .await
        .expect("ack w1");
    // Next in order is w2, of a session: nothing claimed, not even w3.
    assert_eq!(item_lease(&admin, &p, "w2").await, None);
    assert_eq!(
        item_lease(&admin, &p, "w3").await,
        None,
        "w3 does not jump the queue"
    );

    let (second, token, _) = fetch().await;
    assert_eq!(second, activity("w2", 2, "in", Some("s")));
    p.ack_work_item(&token, None).await.expect("ack w2");
    // Next is w3: claimed with the ack, and the fetch after it gets it.
    let claimed = item_lease(&admin, &p, "w3")
        .await
        .expect("the ack claimed w3");
    let (third, token, attempt) = fetch().await;
    assert_eq!(third, activity("w3", 2, "in", None));
    assert_eq!(
        (token, attempt),
        (claimed, 1),
        "the ack's claim, not a new one"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_claimed_item_nobody_fetches_is_given_back_uncounted() {
    let (p, _schemas) = common::provider("prefetch_work_hold", PostgresOptions::new()).await;
    let admin = common::admin_client().await;
    for id in ["w1", "w2"] {
        p.enqueue_for_worker(activity(id, 2, "in", None))
            .await
            .expect("enqueue");
    }
    let (_, token, _) = p
        .fetch_work_item(LOCK, Duration::ZERO, None, &TagFilter::DefaultOnly)
        .await
        .expect("fetch")
        .expect("w1");
    p.ack_work_item(&token, None).await.expect("ack w1");
    assert!(
        item_lease(&admin, &p, "w2").await.is_some(),
        "the ack claimed w2"
    );

    given_back("w2", || async { item_lease(&admin, &p, "w2").await }).await;
    // A fetch with another filter finds it (and would have given it back
    // itself had it still been claimed).
    let (item, _, attempt) = p
        .fetch_work_item(LOCK, Duration::ZERO, None, &TagFilter::Any)
        .await
        .expect("fetch")
        .expect("w2 is ready again");
    assert_eq!((item, attempt), (activity("w2", 2, "in", None), 1));
}
