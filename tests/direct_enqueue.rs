//! `enqueue_for_orchestrator(item, None)` makes the item visible now,
//! whatever its kind (the trait's contract). Only timers produced by an
//! orchestration turn's ack wait for their fire time.

#[allow(dead_code)]
mod common;

use duroxide::providers::{Provider, WorkItem};
use duroxide_postgres::PostgresOptions;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

#[tokio::test]
async fn a_timer_enqueued_directly_without_delay_is_visible_now() {
    let (store, _schemas) =
        common::provider("direct_timer", PostgresOptions::new().long_poll(false)).await;
    let in_an_hour = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
        + 3_600_000;
    store
        .enqueue_for_orchestrator(common::items::start("dt", "x"), None)
        .await
        .unwrap();
    store
        .enqueue_for_orchestrator(
            WorkItem::TimerFired {
                instance: "dt".into(),
                execution_id: 1,
                id: 7,
                fire_at_ms: in_an_hour,
            },
            None,
        )
        .await
        .unwrap();
    let (item, _, _) = store
        .fetch_orchestration_item(Duration::from_secs(5), Duration::ZERO, None)
        .await
        .unwrap()
        .expect("the instance is ready");
    let timers = item
        .messages
        .iter()
        .filter(|m| matches!(m, WorkItem::TimerFired { id: 7, .. }))
        .count();
    assert_eq!(
        timers, 1,
        "the directly enqueued timer is in the first batch: {:?}",
        item.messages
    );
}

#[tokio::test]
async fn a_direct_enqueue_with_a_delay_waits_for_it() {
    let (store, _schemas) =
        common::provider("direct_delay", PostgresOptions::new().long_poll(false)).await;
    store
        .enqueue_for_orchestrator(
            common::items::start("dd", "x"),
            Some(Duration::from_secs(3600)),
        )
        .await
        .unwrap();
    let fetched = store
        .fetch_orchestration_item(Duration::from_secs(5), Duration::ZERO, None)
        .await
        .unwrap();
    assert!(fetched.is_none(), "a delayed item is not visible yet");
}
