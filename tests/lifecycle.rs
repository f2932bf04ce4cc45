//! An instance's rows from its first message to its deletion: messages that
//! arrive before the start are held (not consumed), deletion serializes with
//! every writer of the instance, and nothing outlives the instance (no lease
//! row leaks). Also the upgrade of a store with rows in flight to the
//! partitioned queues of migration 0003.

#[allow(dead_code)]
mod common;

use common::items::{self, external, first_turn_metadata, start, started_event};
use common::wait;
use duroxide::providers::{Provider, ProviderAdmin, TagFilter, WorkItem};
use duroxide_postgres::{PostgresOptions, PostgresProvider};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

const LOCK: Duration = Duration::from_secs(30);

async fn count(admin: &tokio_postgres::Client, p: &PostgresProvider, table: &str, id: &str) -> i64 {
    admin
        .query_one(
            &format!(
                "SELECT count(*) FROM \"{}\".{table} WHERE instance_id = $1",
                p.schema()
            ),
            &[&id],
        )
        .await
        .unwrap_or_else(|e| panic!("count {table}: {e}"))
        .get(0)
}

fn cancel(instance: &str) -> WorkItem {
    WorkItem::CancelInstance {
        instance: instance.to_string(),
        reason: "user cancel".to_string(),
    }
}

async fn fetch(p: &PostgresProvider) -> Option<duroxide::providers::OrchestrationItem> {
    p.fetch_orchestration_item(LOCK, Duration::ZERO, None)
        .await
        .expect("fetch")
        .map(|(item, _, _)| item)
}

/// Runs the first turn of `instance` (started, one activity scheduled).
async fn first_turn(p: &PostgresProvider, instance: &str) {
    let (item, token, _) = p
        .fetch_orchestration_item(LOCK, Duration::ZERO, None)
        .await
        .unwrap()
        .expect("the start is fetched");
    assert_eq!(item.instance, instance);
    p.ack_orchestration_item(
        &token,
        1,
        vec![started_event(instance, "in")],
        vec![
            items::activity(instance, 2, "a", None),
            items::activity(instance, 3, "b", None),
        ],
        vec![],
        first_turn_metadata(),
        vec![],
    )
    .await
    .expect("first ack");
}

// ---------------------------------------------------------------------------
// Issue 7 item 1: messages that arrive before their instance's start
// ---------------------------------------------------------------------------

/// A cancel and an event sent before the start are neither handed to the
/// runtime (which would ack them away) nor counted: they wait, out of the
/// candidate scan, and come in the same batch as the start.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn messages_before_the_start_are_held_and_delivered_with_it() {
    let (p, _guard) = common::provider("life_early", PostgresOptions::new()).await;
    let admin = common::admin_client().await;
    p.enqueue_for_orchestrator(external("early", "evt", "1"), None)
        .await
        .unwrap();
    p.enqueue_for_orchestrator(cancel("early"), None)
        .await
        .unwrap();
    p.enqueue_for_orchestrator(start("other", "x"), None)
        .await
        .unwrap();

    let first = fetch(&p).await.expect("the started instance is fetched");
    assert_eq!(
        first.instance, "other",
        "a batch without a start must not reach the runtime"
    );
    assert!(
        fetch(&p).await.is_none(),
        "nothing else is deliverable while 'early' has no start"
    );
    // Held out of the queue the fetches scan, untouched (no attempt).
    assert_eq!(count(&admin, &p, "orchestrator_queue", "early").await, 0);
    let attempts: Vec<i32> = admin
        .query(
            &format!(
                "SELECT attempt_count FROM \"{}\".orchestrator_held WHERE instance_id = 'early' ORDER BY id",
                p.schema()
            ),
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(
        attempts,
        vec![0, 0],
        "both messages held, no attempt counted"
    );

    // A later non-start message does not release them either.
    p.enqueue_for_orchestrator(external("early", "evt", "2"), None)
        .await
        .unwrap();
    assert!(fetch(&p).await.is_none());

    p.enqueue_for_orchestrator(start("early", "in"), None)
        .await
        .unwrap();
    let item = fetch(&p)
        .await
        .expect("the start releases the held messages");
    assert_eq!(item.instance, "early");
    assert_eq!(
        item.messages,
        vec![
            external("early", "evt", "1"),
            cancel("early"),
            external("early", "evt", "2"),
            start("early", "in"),
        ],
        "held messages come with the start, in arrival order"
    );
    assert_eq!(count(&admin, &p, "orchestrator_held", "early").await, 0);
}

// ---------------------------------------------------------------------------
// Issue 7 item 6: deletion versus concurrent writers
// ---------------------------------------------------------------------------

/// A delete that is under way (here held up by another transaction on one
/// of the instance's worker items) and a worker ack completing another item
/// of the same instance: the ack's completion must not survive the delete
/// and reach the next instance with the same id.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_worker_ack_racing_a_delete_leaves_nothing_for_a_recreated_id() {
    let (p, _guard) = common::provider("life_del_ack", PostgresOptions::new()).await;
    let admin = common::admin_client().await;
    p.enqueue_for_orchestrator(start("victim", "in"), None)
        .await
        .unwrap();
    first_turn(&p, "victim").await;
    let (work, token, _) = p
        .fetch_work_item(LOCK, Duration::ZERO, None, &TagFilter::default())
        .await
        .unwrap()
        .expect("activity 2");
    let WorkItem::ActivityExecute { id, .. } = work else {
        panic!("not an activity: {work:?}")
    };

    // Another transaction holds the instance's other worker item.
    let blocker = common::admin_client().await;
    blocker
        .batch_execute(&format!(
            "BEGIN; SELECT 1 FROM \"{}\".worker_queue WHERE instance_id = 'victim' AND activity_id <> {id} FOR UPDATE",
            p.schema()
        ))
        .await
        .unwrap();

    let deleted = Arc::new(AtomicBool::new(false));
    let del = {
        let (p, deleted) = (p.clone(), deleted.clone());
        tokio::spawn(async move {
            let r = p.delete_instance("victim", true).await;
            deleted.store(true, Ordering::SeqCst);
            r
        })
    };
    wait::lock_wait(&admin, None, &wait::call_of(&p, "delete_instances_atomic")).await;

    let ack = {
        let (p, deleted) = (p.clone(), deleted.clone());
        tokio::spawn(async move {
            let r = p
                .ack_work_item(&token, Some(items::completed("victim", id, "late")))
                .await;
            (r, deleted.load(Ordering::SeqCst))
        })
    };
    // The ack has reached the instance and waits for the delete.
    wait::lock_wait(&admin, None, &wait::call_of(&p, "ack_work_item")).await;
    blocker.batch_execute("ROLLBACK").await.unwrap();
    del.await.unwrap().expect("delete");
    let (acked, delete_done_first) = ack.await.unwrap();
    if acked.is_ok() {
        assert!(
            delete_done_first,
            "the ack committed its completion while the delete was under way"
        );
    }

    assert_eq!(
        count(&admin, &p, "orchestrator_queue", "victim").await,
        0,
        "a completion for the deleted instance is still queued ({acked:?})"
    );
    // The next instance with the same id sees only its own start.
    p.enqueue_for_orchestrator(start("victim", "second life"), None)
        .await
        .unwrap();
    let item = fetch(&p).await.expect("the new instance");
    assert_eq!(item.messages, vec![start("victim", "second life")]);
}

/// An enqueue for an instance that is being deleted waits for the delete:
/// it lands either before (and is deleted with it) or after it, never in
/// between where the delete would miss it.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_enqueue_racing_a_delete_is_ordered_with_it() {
    let (p, _guard) = common::provider("life_del_enq", PostgresOptions::new()).await;
    let admin = common::admin_client().await;
    p.enqueue_for_orchestrator(start("victim", "in"), None)
        .await
        .unwrap();
    first_turn(&p, "victim").await;

    let blocker = common::admin_client().await;
    blocker
        .batch_execute(&format!(
            "BEGIN; SELECT 1 FROM \"{}\".worker_queue WHERE instance_id = 'victim' FOR UPDATE",
            p.schema()
        ))
        .await
        .unwrap();
    let deleted = Arc::new(AtomicBool::new(false));
    let del = {
        let (p, deleted) = (p.clone(), deleted.clone());
        tokio::spawn(async move {
            let r = p.delete_instance("victim", true).await;
            deleted.store(true, Ordering::SeqCst);
            r
        })
    };
    wait::lock_wait(&admin, None, &wait::call_of(&p, "delete_instances_atomic")).await;
    let enq = {
        let (p, deleted) = (p.clone(), deleted.clone());
        tokio::spawn(async move {
            p.enqueue_for_orchestrator(external("victim", "evt", "x"), None)
                .await
                .expect("enqueue");
            deleted.load(Ordering::SeqCst)
        })
    };
    // The enqueue has reached the instance and waits for the delete.
    wait::lock_wait(&admin, None, &wait::call_of(&p, "enqueue_orchestrator")).await;
    blocker.batch_execute("ROLLBACK").await.unwrap();
    del.await.unwrap().expect("delete");
    let after = enq.await.unwrap();
    assert!(
        after,
        "the enqueue committed while the delete was under way: the delete missed it"
    );
}

// ---------------------------------------------------------------------------
// Issue 8: no row leaks
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn lease_rows_go_with_their_instance_and_orphan_drops() {
    let (p, _guard) = common::provider("life_leaks", PostgresOptions::new()).await;
    let admin = common::admin_client().await;

    // Deleted instance.
    p.enqueue_for_orchestrator(start("gone", "in"), None)
        .await
        .unwrap();
    first_turn(&p, "gone").await;
    p.delete_instance("gone", true).await.expect("delete");
    for table in [
        "instance_locks",
        "orchestrator_queue",
        "worker_queue",
        "instances",
    ] {
        assert_eq!(
            count(&admin, &p, table, "gone").await,
            0,
            "{table} row left"
        );
    }

    // Dropped QueueMessages of a never-started instance.
    p.enqueue_for_orchestrator(
        WorkItem::QueueMessage {
            instance: "nobody".to_string(),
            name: "q".to_string(),
            data: "d".to_string(),
        },
        None,
    )
    .await
    .unwrap();
    assert!(
        fetch(&p).await.is_none(),
        "a QueueMessage-only orphan is dropped"
    );
    assert_eq!(count(&admin, &p, "orchestrator_queue", "nobody").await, 0);
    assert_eq!(
        count(&admin, &p, "instance_locks", "nobody").await,
        0,
        "the orphan drop left its lease row"
    );
}

/// An ack that arrives after its instance was deleted fails and writes
/// nothing: no lease row, queue message or instance row comes back.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_late_ack_does_not_recreate_a_deleted_instance() {
    let (p, _guard) = common::provider("life_late", PostgresOptions::new()).await;
    let admin = common::admin_client().await;
    p.enqueue_for_orchestrator(start("late", "in"), None)
        .await
        .unwrap();
    first_turn(&p, "late").await;
    let (_, wtoken, _) = p
        .fetch_work_item(LOCK, Duration::ZERO, None, &TagFilter::default())
        .await
        .unwrap()
        .expect("activity");
    p.enqueue_for_orchestrator(external("late", "evt", "x"), None)
        .await
        .unwrap();
    let (_, token, _) = p
        .fetch_orchestration_item(LOCK, Duration::ZERO, None)
        .await
        .unwrap()
        .expect("second turn");
    p.delete_instance("late", true).await.expect("delete");

    let e = p
        .ack_orchestration_item(
            &token,
            1,
            vec![],
            vec![items::activity("late", 4, "a", None)],
            vec![external("late", "self", "x")],
            duroxide::providers::ExecutionMetadata::default(),
            vec![],
        )
        .await
        .expect_err("the ack of a deleted instance fails");
    assert!(!e.is_retryable(), "{e}");
    let e = p
        .ack_work_item(&wtoken, Some(items::completed("late", 2, "r")))
        .await
        .expect_err("the worker ack of a deleted instance fails");
    assert!(!e.is_retryable(), "{e}");
    for table in [
        "instance_locks",
        "orchestrator_queue",
        "orchestrator_held",
        "worker_queue",
        "instances",
        "executions",
        "history",
    ] {
        assert_eq!(
            count(&admin, &p, table, "late").await,
            0,
            "{table} row left"
        );
    }
}

// ---------------------------------------------------------------------------
// Upgrade of a store with rows in flight (migration 0003)
// ---------------------------------------------------------------------------

/// A store at migration 0001 with queued, leased and delayed rows in both
/// queues is converted to the partitioned queues without losing or changing
/// any of them, and keeps working.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_0001_store_with_rows_in_flight_upgrades() {
    use sha2::Digest;
    let schema = common::unique_schema("life_upgrade");
    let guard = common::Schemas::default();
    guard.track(&schema);
    let admin = common::admin_client().await;
    let initial = include_str!("../sql/migrations/0001_initial.sql");
    let sum: String = sha2::Sha256::digest(initial.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let q = format!("\"{schema}\"");
    admin
        .batch_execute(&format!(
            "CREATE SCHEMA {q};
             CREATE TABLE {q}._duroxide_migrations (
                 version INTEGER PRIMARY KEY, name TEXT NOT NULL, checksum TEXT NOT NULL,
                 applied_at TIMESTAMPTZ NOT NULL DEFAULT now());
             CREATE TABLE {q}._duroxide_functions (
                 name TEXT PRIMARY KEY, checksum TEXT NOT NULL,
                 applied_at TIMESTAMPTZ NOT NULL DEFAULT now());
             {}
             INSERT INTO {q}._duroxide_migrations (version, name, checksum) VALUES (1, 'initial', '{sum}');",
            initial.replace("__SCHEMA__", &q)
        ))
        .await
        .unwrap();
    let json = |w: &WorkItem| serde_json::to_string(w).unwrap();
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    let hour = now_ms + 3_600_000;
    // 'leased': a turn in flight; 'ready': a start waiting; 'later': a timer.
    // Worker: one ready activity, one leased.
    let rows = format!(
        "INSERT INTO {q}.instance_locks (instance_id, lock_token, locked_until_ms) VALUES
             ('leased', 'lock_old', {hour}), ('ready', NULL, 0), ('later', NULL, 0);
         INSERT INTO {q}.orchestrator_queue (id, instance_id, kind, work_item, visible_at_ms, lock_token, attempt_count, created_at_ms) VALUES
             (10, 'leased', 'StartOrchestration', $1, 0, 'lock_old', 1, 0),
             (11, 'ready', 'StartOrchestration', $2, 0, NULL, 0, 0),
             (12, 'later', 'ExternalRaised', $3, {hour}, NULL, 0, 0);
         SELECT setval('{q}.orchestrator_queue_id_seq', 12);
         INSERT INTO {q}.worker_queue (id, work_item, visible_at_ms, lock_token, locked_until_ms, attempt_count, instance_id, execution_id, activity_id, created_at_ms) VALUES
             (20, $4, 0, NULL, NULL, 0, 'ready', 1, 5, 0),
             (21, $5, 0, 'lock_w_old', {hour}, 1, 'leased', 1, 6, 0);
         SELECT setval('{q}.worker_queue_id_seq', 21);"
    );
    // batch_execute takes no parameters: substitute quoted literals.
    let lit = |s: String| format!("'{}'", s.replace('\'', "''"));
    let rows = rows
        .replace("$1", &lit(json(&start("leased", "in"))))
        .replace("$2", &lit(json(&start("ready", "in"))))
        .replace("$3", &lit(json(&external("later", "evt", "x"))))
        .replace("$4", &lit(json(&items::activity("ready", 5, "a", None))))
        .replace("$5", &lit(json(&items::activity("leased", 6, "b", None))));
    admin.batch_execute(&rows).await.unwrap();

    let p = PostgresProvider::connect(
        &common::server::database_url(),
        PostgresOptions::new().schema(&schema),
    )
    .await
    .expect("upgrade");

    let snapshot = |table: &str| {
        format!(
            "SELECT string_agg(format('%s %s %s %s', id, instance_id, lock_token, attempt_count), '; ' ORDER BY id) FROM {q}.{table}"
        )
    };
    let orch: String = admin
        .query_one(&snapshot("orchestrator_queue"), &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(orch, "10 leased lock_old 1; 11 ready  0; 12 later  0");
    let work: String = admin
        .query_one(&snapshot("worker_queue"), &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(work, "20 ready  0; 21 leased lock_w_old 1");

    // Only the ready start and the ready activity can be taken.
    let item = fetch(&p).await.expect("the ready start");
    assert_eq!(item.instance, "ready");
    assert_eq!(item.messages, vec![start("ready", "in")]);
    assert!(
        fetch(&p).await.is_none(),
        "the lease and the timer still hold"
    );
    let (w, wtoken, _) = p
        .fetch_work_item(LOCK, Duration::ZERO, None, &TagFilter::default())
        .await
        .unwrap()
        .expect("the ready activity");
    assert_eq!(w, items::activity("ready", 5, "a", None));
    p.ack_work_item(&wtoken, Some(items::completed("ready", 5, "r")))
        .await
        .expect("ack after upgrade");
    let max_id: i64 = admin
        .query_one(&format!("SELECT max(id) FROM {q}.orchestrator_queue"), &[])
        .await
        .unwrap()
        .get(0);
    assert!(
        max_id > 12,
        "the id sequence continues after the copied rows"
    );
    // A lease taken before the upgrade is not honoured by its old token
    // (documented): the instance is refetched when the lease expires.
    assert!(p
        .renew_orchestration_item_lock("lock_old", LOCK)
        .await
        .is_err());
    drop(guard);
}
