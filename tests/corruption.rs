//! Corrupted rows of every kind: each is reported where it belongs (a
//! `history_error`, a failed activity, a failed read), never dropped
//! silently, and never stalls other instances.

#[allow(dead_code)]
mod common;

use common::items::{activity, first_turn_metadata, start, started_event};
use duroxide::providers::{Provider, TagFilter, WorkItem};
use duroxide::runtime::registry::ActivityRegistry;
use duroxide::runtime::{Runtime, RuntimeOptions};
use duroxide::{
    Client, ErrorDetails, OrchestrationContext, OrchestrationRegistry, OrchestrationStatus,
};
use duroxide_postgres::PostgresOptions;
use std::time::Duration;

const LOCK: Duration = Duration::from_secs(30);

async fn exec(sql: &str, params: &[&(dyn tokio_postgres::types::ToSql + Sync)]) -> u64 {
    common::admin_client()
        .await
        .execute(sql, params)
        .await
        .unwrap()
}

/// Creates instance `id` with one committed turn (a start event).
async fn create(p: &dyn Provider, id: &str) {
    p.enqueue_for_orchestrator(start(id, "{}"), None)
        .await
        .unwrap();
    let (_, token, _) = p
        .fetch_orchestration_item(LOCK, Duration::ZERO, None)
        .await
        .unwrap()
        .unwrap();
    p.ack_orchestration_item(
        &token,
        1,
        vec![started_event(id, "{}")],
        vec![],
        vec![],
        first_turn_metadata(),
        vec![],
    )
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrupt_worker_item_is_set_aside_then_failed_naming_the_corruption() {
    let (p, _s) = common::provider("corrupt_w", PostgresOptions::new()).await;
    let schema = p.schema().to_string();
    p.enqueue_for_worker(activity("bad", 7, "x", None))
        .await
        .unwrap();
    p.enqueue_for_worker(activity("good", 1, "y", None))
        .await
        .unwrap();
    exec(
        &format!("UPDATE \"{schema}\".worker_queue SET work_item = 'not json {{' WHERE instance_id = 'bad'"),
        &[],
    )
    .await;

    // The corrupt item (oldest) does not stall the good one, and is not dropped.
    let (item, token, _) = p
        .fetch_work_item(LOCK, Duration::ZERO, None, &TagFilter::Any)
        .await
        .unwrap()
        .expect("the good item is still served");
    assert_eq!(item, activity("good", 1, "y", None));
    p.ack_work_item(&token, None).await.unwrap();
    let row = common::admin_client()
        .await
        .query_one(
            &format!("SELECT attempt_count, lock_token IS NULL FROM \"{schema}\".worker_queue WHERE instance_id = 'bad'"),
            &[],
        )
        .await
        .expect("the corrupt item is kept");
    assert_eq!(row.get::<_, i32>(0), 1);
    assert!(row.get::<_, bool>(1), "released for a later attempt");

    // On its last attempt it is completed as a failed activity naming the corruption.
    exec(
        &format!("UPDATE \"{schema}\".worker_queue SET attempt_count = 9, visible_at_ms = 0 WHERE instance_id = 'bad'"),
        &[],
    )
    .await;
    assert!(p
        .fetch_work_item(LOCK, Duration::ZERO, None, &TagFilter::Any)
        .await
        .unwrap()
        .is_none());
    let text: String = common::admin_client()
        .await
        .query_one(
            &format!(
                "SELECT work_item FROM \"{schema}\".orchestrator_queue WHERE instance_id = 'bad'"
            ),
            &[],
        )
        .await
        .unwrap()
        .get(0);
    let failed: WorkItem = serde_json::from_str(&text).unwrap();
    match failed {
        WorkItem::ActivityFailed {
            instance,
            id,
            details:
                ErrorDetails::Infrastructure {
                    message, retryable, ..
                },
            ..
        } => {
            assert_eq!((instance.as_str(), id), ("bad", 7));
            assert!(
                message.contains("corrupt") && message.contains("undecodable work item"),
                "{message}"
            );
            assert!(!retryable);
        }
        other => panic!("expected ActivityFailed, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrupt_orchestrator_message_and_kv_snapshot_become_history_errors() {
    let (p, _s) = common::provider("corrupt_o", PostgresOptions::new()).await;
    let schema = p.schema().to_string();
    for id in ["msg", "kv"] {
        create(p.as_ref(), id).await;
    }
    p.enqueue_for_orchestrator(start("msg", "again"), None)
        .await
        .unwrap();
    exec(
        &format!("UPDATE \"{schema}\".orchestrator_queue SET work_item = '{{\"NoSuchKind\":1}}' WHERE instance_id = 'msg'"),
        &[],
    )
    .await;
    exec(
        &format!(
            "INSERT INTO \"{schema}\".kv_store (instance_id, key, value, execution_id, last_updated_at_ms) \
             VALUES ('kv', 'k', '\\xff'::bytea, 1, 0)"
        ),
        &[],
    )
    .await;
    p.enqueue_for_orchestrator(start("kv", "again"), None)
        .await
        .unwrap();

    let mut seen = Vec::new();
    for _ in 0..2 {
        let (item, _token, attempts) = p
            .fetch_orchestration_item(LOCK, Duration::ZERO, None)
            .await
            .unwrap()
            .expect("both instances are served, with the lease held");
        assert_eq!(attempts, 1);
        let error = item
            .history_error
            .clone()
            .expect("corruption is reported as history_error");
        assert!(item.history.is_empty());
        seen.push((item.instance.clone(), error));
    }
    seen.sort();
    assert_eq!(seen[0].0, "kv");
    assert!(seen[0].1.contains("KV value"), "{}", seen[0].1);
    assert_eq!(seen[1].0, "msg");
    assert!(seen[1].1.contains("undecodable work item"), "{}", seen[1].1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrupt_history_is_an_error_for_reads_and_poisons_only_its_instance() {
    let (p, _s) = common::provider("corrupt_h", PostgresOptions::new()).await;
    let schema = p.schema().to_string();

    let orchestrations = OrchestrationRegistry::builder()
        .register("Wait", |ctx: OrchestrationContext, _: String| async move {
            let v = ctx.schedule_wait("go").await;
            Ok(v)
        })
        .build();
    let options = RuntimeOptions {
        max_attempts: 2,
        dispatcher_min_poll_interval: Duration::from_millis(10),
        ..Default::default()
    };
    let rt = Runtime::start_with_options(
        p.clone(),
        ActivityRegistry::builder().build(),
        orchestrations,
        options,
    )
    .await;
    let client = Client::new(p.clone());
    for id in ["victim", "bystander"] {
        client.start_orchestration(id, "Wait", "").await.unwrap();
    }
    // Both are waiting for their event once their first turn is committed.
    for id in ["victim", "bystander"] {
        let p = &p;
        common::wait::until(
            &format!("the first turn of {id} was committed"),
            || async move { p.read(id).await.unwrap().len() >= 2 },
        )
        .await;
    }
    let n = exec(
        &format!(
            "UPDATE \"{schema}\".history SET event_data = 'not json' WHERE instance_id = 'victim'"
        ),
        &[],
    )
    .await;
    assert!(n > 0);

    let err = p
        .read("victim")
        .await
        .expect_err("a corrupt row fails the read");
    assert!(!err.is_retryable());
    assert!(err.message.contains("undecodable history event"), "{err}");

    for id in ["victim", "bystander"] {
        client.raise_event(id, "go", "now").await.unwrap();
    }
    match client
        .wait_for_orchestration("bystander", Duration::from_secs(30))
        .await
        .unwrap()
    {
        OrchestrationStatus::Completed { output, .. } => assert_eq!(output, "now"),
        other => panic!("bystander: {other:?}"),
    }
    // The victim is poisoned after max_attempts; its rows are still there.
    let mut status = None;
    for _ in 0..300 {
        let mgmt = p.as_management_capability().unwrap();
        let info = mgmt.get_instance_info("victim").await.unwrap();
        if info.status != "Running" {
            status = Some(info.status);
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        status.as_deref(),
        Some("Failed"),
        "the corrupt instance is poisoned"
    );
    let rows: i64 = common::admin_client()
        .await
        .query_one(
            &format!("SELECT count(*) FROM \"{schema}\".history WHERE instance_id = 'victim' AND event_data = 'not json'"),
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!(rows > 0, "corrupt rows are never dropped");
    rt.shutdown(None).await;
}
