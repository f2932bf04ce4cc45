//! Messages for a leased instance wait behind its lease (decision 0010):
//! they are not in the candidate scan of other fetches while the lease
//! lasts, and the ack or abandon that releases the lease makes them ready at
//! once (or the lease's end does, when its holder is gone). An enqueue racing
//! the release never leaves a message waiting behind a lease that is gone.

#[allow(dead_code)]
mod common;

use common::items::{self, external, first_turn_metadata, start, started_event};
use duroxide::providers::{Provider, TagFilter};
use duroxide_postgres::{PostgresOptions, PostgresProvider};
use std::sync::Arc;
use std::time::Duration;

const LOCK: Duration = Duration::from_secs(30);

/// (visible_at_ms - now, deferred_visible_ms IS NOT NULL) of every queued
/// message of `instance` that no fetch has tagged, by id.
async fn untagged(
    admin: &tokio_postgres::Client,
    p: &PostgresProvider,
    instance: &str,
) -> Vec<(i64, bool)> {
    admin
        .query(
            &format!(
                "SELECT q.visible_at_ms - (extract(epoch FROM clock_timestamp()) * 1000)::BIGINT,
                        q.deferred_visible_ms IS NOT NULL
                 FROM \"{}\".orchestrator_queue q
                 WHERE q.instance_id = $1 AND q.lock_token IS NULL ORDER BY q.id",
                p.schema()
            ),
            &[&instance],
        )
        .await
        .expect("read the queue")
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect()
}

async fn fetch(p: &PostgresProvider, lock: Duration) -> Option<(String, String, usize)> {
    p.fetch_orchestration_item(lock, Duration::ZERO, None)
        .await
        .expect("fetch")
        .map(|(item, token, _)| (item.instance.clone(), token, item.messages.len()))
}

/// Starts `instance` and commits its first turn, which schedules an
/// activity; returns nothing leased.
async fn started(p: &PostgresProvider, instance: &str) {
    p.enqueue_for_orchestrator(start(instance, "in"), None)
        .await
        .expect("start");
    let (_, token, _) = fetch(p, LOCK).await.expect("the start");
    p.ack_orchestration_item(
        &token,
        1,
        vec![started_event(instance, "in")],
        vec![items::activity(instance, 2, "a", None)],
        vec![],
        first_turn_metadata(),
        vec![],
    )
    .await
    .expect("first turn");
}

/// An empty turn of the fetched instance (history unchanged).
async fn ack_empty(p: &PostgresProvider, token: &str) {
    p.ack_orchestration_item(
        token,
        1,
        vec![],
        vec![],
        vec![],
        first_turn_metadata(),
        vec![],
    )
    .await
    .expect("ack");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn messages_wait_behind_a_lease_and_are_ready_when_it_is_released() {
    let (p, _schemas) = common::provider("deferred", PostgresOptions::new()).await;
    let admin = common::admin_client().await;
    started(&p, "a").await;

    // The activity's completion arrives through the worker ack while the
    // orchestration is leased: deferred behind the lease, not ready.
    let (_, work_token, _) = p
        .fetch_work_item(LOCK, Duration::ZERO, None, &TagFilter::DefaultOnly)
        .await
        .expect("fetch work")
        .expect("the activity");
    p.enqueue_for_orchestrator(external("a", "E1", "x"), None)
        .await
        .expect("event before the lease");
    let (_, token, n) = fetch(&p, LOCK).await.expect("a is ready");
    assert_eq!(n, 1, "the event only");
    p.ack_work_item(&work_token, Some(items::completed("a", 2, "done")))
        .await
        .expect("worker ack");
    p.enqueue_for_orchestrator(external("a", "E2", "y"), None)
        .await
        .expect("event during the lease");
    let waiting = untagged(&admin, &p, "a").await;
    assert_eq!(waiting.len(), 2, "{waiting:?}");
    for (in_ms, deferred) in &waiting {
        assert!(
            *deferred,
            "a message for a leased instance is deferred: {waiting:?}"
        );
        assert!(
            *in_ms > 20_000,
            "visible at the lease's end (30 s): {waiting:?}"
        );
    }
    assert!(fetch(&p, LOCK).await.is_none(), "a is leased");

    // The ack releases the lease: both are ready at once, in one batch.
    ack_empty(&p, &token).await;
    let ready = untagged(&admin, &p, "a").await;
    assert!(
        ready
            .iter()
            .all(|(in_ms, deferred)| *in_ms <= 0 && !deferred),
        "released by the ack: {ready:?}"
    );
    let (_, token, n) = fetch(&p, LOCK).await.expect("a is ready again");
    assert_eq!(n, 2, "the completion and the event");

    // Abandon releases too.
    p.enqueue_for_orchestrator(external("a", "E3", "z"), None)
        .await
        .expect("event during the lease");
    assert!(untagged(&admin, &p, "a").await[0].1, "deferred");
    p.abandon_orchestration_item(&token, None, false)
        .await
        .expect("abandon");
    let ready = untagged(&admin, &p, "a").await;
    assert_eq!(ready.len(), 3, "{ready:?}");
    assert!(
        ready
            .iter()
            .all(|(in_ms, deferred)| *in_ms <= 0 && !deferred),
        "released by the abandon: {ready:?}"
    );

    // A holder that never comes back: the message is ready when the lease
    // runs out, and taken over with the rest.
    let (_, _lost, n) = fetch(&p, Duration::from_millis(400))
        .await
        .expect("a again");
    assert_eq!(n, 3);
    p.enqueue_for_orchestrator(external("a", "E4", "w"), None)
        .await
        .expect("event during a short lease");
    let waiting = untagged(&admin, &p, "a").await;
    assert!(waiting[0].1 && waiting[0].0 <= 400, "{waiting:?}");
    let deadline = std::time::Instant::now() + common::wait::LIMIT;
    let taken = loop {
        if let Some(taken) = fetch(&p, LOCK).await {
            break taken;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "a's 400 ms lease never ran out for a fetch"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!((taken.0.as_str(), taken.2), ("a", 4), "taken over with all");
}

/// An enqueue that runs while the lease is being released either sees the
/// release (nothing deferred) or defers before it (and the release restores
/// it): never deferred behind a lease that is gone.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_enqueue_racing_the_release_is_never_left_behind_it() {
    let (p, _schemas) = common::provider("deferred_race", PostgresOptions::new()).await;
    let admin = common::admin_client().await;
    started(&p, "r").await;
    let p = Arc::new(p);
    for round in 0..150 {
        p.enqueue_for_orchestrator(external("r", "tick", &round.to_string()), None)
            .await
            .expect("tick");
        let (_, token, _) = fetch(&p, LOCK).await.expect("r is ready");
        let enqueue = {
            let p = p.clone();
            tokio::spawn(async move {
                p.enqueue_for_orchestrator(external("r", "race", &round.to_string()), None)
                    .await
            })
        };
        ack_empty(&p, &token).await;
        enqueue.await.expect("join").expect("racing enqueue");
        let left = untagged(&admin, &p, "r").await;
        assert_eq!(left.len(), 1, "round {round}: {left:?}");
        let (in_ms, deferred) = left[0];
        assert!(
            in_ms <= 0 && !deferred,
            "round {round}: the racing message waits behind a released lease: {left:?}"
        );
        // Consume it so that the next round starts from an empty queue.
        let (_, token, _) = fetch(&p, LOCK).await.expect("the racing message");
        ack_empty(&p, &token).await;
    }
}
