//! Queue segments (decisions 0005 and 0010): the three ring segments of each
//! queue are emptied and truncated as the ring turns, and a row that stays
//! live for long (a timer an hour ahead, an item of a tag nobody serves) is
//! moved out of the ring once, into segment 3, instead of being rewritten by
//! every reclaim for its whole life.
//!
//! Reclaims are driven the way a runtime drives them: a provider's
//! background task reclaims every 250 ms while fetches run and for 4 s after
//! the last one.

#[allow(dead_code)]
mod common;

use common::items::{start, tagged_activity};
use duroxide::providers::{Provider, TagFilter};
use duroxide_postgres::PostgresOptions;
use std::time::{Duration, Instant};

/// Upper bound for the ring to turn; it normally takes about 3 s.
const WAIT: Duration = Duration::from_secs(30);

/// (partition, row version) of every row of `table` in `schema`, by id.
async fn placement(
    admin: &tokio_postgres::Client,
    schema: &str,
    table: &str,
) -> Vec<(i64, String, String)> {
    admin
        .query(
            &format!(
                "SELECT id, tableoid::regclass::text, xmin::text FROM \"{schema}\".{table} ORDER BY id"
            ),
            &[],
        )
        .await
        .unwrap_or_else(|e| panic!("read {table}: {e}"))
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect()
}

/// Sizes in bytes of the three ring segments of `table`.
async fn ring_sizes(admin: &tokio_postgres::Client, schema: &str, table: &str) -> Vec<i64> {
    let mut sizes = Vec::new();
    for seg in 0..3 {
        let row = admin
            .query_one(
                &format!("SELECT pg_relation_size('\"{schema}\".{table}_s{seg}')"),
                &[],
            )
            .await
            .unwrap_or_else(|e| panic!("size of {table}_s{seg}: {e}"));
        sizes.push(row.get(0));
    }
    sizes
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_lived_rows_leave_the_ring_once_and_the_ring_is_truncated() {
    let (store, _schemas) = common::provider("segments", PostgresOptions::new()).await;
    let schema = store.schema().to_string();
    let admin = common::admin_client().await;

    // A start an hour ahead and an activity of a tag no fetcher serves:
    // both stay live for the whole test.
    store
        .enqueue_for_orchestrator(start("sleeper", "later"), Some(Duration::from_secs(3600)))
        .await
        .expect("enqueue a delayed start");
    store
        .enqueue_for_worker(tagged_activity("tagged", 2, "x", "gpu"))
        .await
        .expect("enqueue an item of an unserved tag");

    // Fetch (nothing can be taken) until every row has left the ring and
    // every ring segment has been truncated.
    let fetch_both = || async {
        let orch = store
            .fetch_orchestration_item(Duration::from_secs(30), Duration::ZERO, None)
            .await
            .expect("fetch orchestration");
        assert!(orch.is_none(), "nothing is ready: {orch:?}");
        let work = store
            .fetch_work_item(
                Duration::from_secs(30),
                Duration::ZERO,
                None,
                &TagFilter::DefaultOnly,
            )
            .await
            .expect("fetch work");
        assert!(work.is_none(), "the tagged item is not for this fetcher");
    };
    let started = Instant::now();
    loop {
        fetch_both().await;
        let orch = placement(&admin, &schema, "orchestrator_queue").await;
        let work = placement(&admin, &schema, "worker_queue").await;
        let out_of_ring = orch
            .iter()
            .chain(&work)
            .all(|(_, part, _)| part.ends_with("_s3"));
        let empty_ring = ring_sizes(&admin, &schema, "orchestrator_queue").await == [0, 0, 0]
            && ring_sizes(&admin, &schema, "worker_queue").await == [0, 0, 0];
        if out_of_ring && empty_ring {
            break;
        }
        assert!(
            started.elapsed() < WAIT,
            "after {WAIT:?} of fetches: orchestrator rows {orch:?}, worker rows {work:?}, \
             ring sizes {:?} / {:?}",
            ring_sizes(&admin, &schema, "orchestrator_queue").await,
            ring_sizes(&admin, &schema, "worker_queue").await,
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // A whole turn of the ring later (every segment reclaimed at least once
    // more), the rows are the same row versions: not moved again.
    let orch_before = placement(&admin, &schema, "orchestrator_queue").await;
    let work_before = placement(&admin, &schema, "worker_queue").await;
    assert_eq!((orch_before.len(), work_before.len()), (1, 1));
    let turn = Instant::now();
    while turn.elapsed() < Duration::from_secs(4) {
        fetch_both().await;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        placement(&admin, &schema, "orchestrator_queue").await,
        orch_before,
        "the delayed message was rewritten by a reclaim"
    );
    assert_eq!(
        placement(&admin, &schema, "worker_queue").await,
        work_before,
        "the unserved item was rewritten by a reclaim"
    );

    // Rows in segment 3 are still found: the delayed message when it is
    // due, the tagged item by a fetcher of its tag.
    let tagged = store
        .fetch_work_item(
            Duration::from_secs(30),
            Duration::ZERO,
            None,
            &TagFilter::Tags(["gpu".to_string()].into()),
        )
        .await
        .expect("fetch the tagged item")
        .expect("the item of segment 3 is claimed by a fetcher of its tag");
    store
        .ack_work_item(&tagged.1, None)
        .await
        .expect("ack the tagged item");
    admin
        .execute(
            &format!("UPDATE \"{schema}\".orchestrator_queue SET visible_at_ms = 0"),
            &[],
        )
        .await
        .expect("make the delayed message due");
    let (item, _, _) = store
        .fetch_orchestration_item(Duration::from_secs(30), Duration::ZERO, None)
        .await
        .expect("fetch the due message")
        .expect("the message of segment 3 is claimed when due");
    assert_eq!(item.instance, "sleeper");
}

/// The segments a burst of work wrote are emptied during the quiet period
/// that follows, without any further fetch: the first fetch after the
/// quiet period does not pay for truncating them (issue 11).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_ring_is_emptied_during_a_quiet_period() {
    let (store, _schemas) = common::provider("segments_quiet", PostgresOptions::new()).await;
    let schema = store.schema().to_string();
    let admin = common::admin_client().await;

    // A burst: 20 instances started, each claimed and abandoned (rows and
    // dead rows in the ring segments of the orchestrator queue), 20 worker
    // items claimed and acked.
    for i in 0..20 {
        store
            .enqueue_for_orchestrator(start(&format!("quiet-{i}"), ""), None)
            .await
            .expect("enqueue");
        store
            .enqueue_for_worker(common::items::activity(&format!("quiet-{i}"), 2, "x", None))
            .await
            .expect("enqueue work");
    }
    for _ in 0..20 {
        let (_, token, _) = store
            .fetch_work_item(
                Duration::from_secs(30),
                Duration::ZERO,
                None,
                &TagFilter::DefaultOnly,
            )
            .await
            .expect("fetch work")
            .expect("an item");
        store.ack_work_item(&token, None).await.expect("ack work");
    }
    admin
        .batch_execute(&format!("DELETE FROM \"{schema}\".orchestrator_queue"))
        .await
        .expect("leave dead rows only");
    let orch = ring_sizes(&admin, &schema, "orchestrator_queue").await;
    let work = ring_sizes(&admin, &schema, "worker_queue").await;
    assert!(
        orch.iter().any(|s| *s > 0) && work.iter().any(|s| *s > 0),
        "the burst left nothing in the ring: {orch:?} / {work:?}"
    );

    // No fetch from here on.
    let started = Instant::now();
    loop {
        let orch = ring_sizes(&admin, &schema, "orchestrator_queue").await;
        let work = ring_sizes(&admin, &schema, "worker_queue").await;
        if orch == [0, 0, 0] && work == [0, 0, 0] {
            break;
        }
        assert!(
            started.elapsed() < WAIT,
            "after {WAIT:?} without fetches the ring still holds pages: {orch:?} / {work:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
