//! Retention, listing and the maintained totals, against a real PostgreSQL
//! server: purges delete whole terminal trees only and are idempotent, the
//! maintenance lease admits one runner and is taken over when its holder
//! dies, totals stay exact, listings paginate, bulk pruning progresses.

#[allow(dead_code)]
mod common;

use common::items;
use duroxide::providers::{
    ExecutionMetadata, InstanceFilter, Provider, ProviderAdmin, PruneOptions,
};
use duroxide::Event;
use duroxide_postgres::{
    InstanceQuery, PostgresOptions, PostgresProvider, PurgeRequest, RetentionPolicy, TerminalStatus,
};
use std::collections::HashSet;
use std::time::Duration;

const LEASE: Duration = Duration::from_secs(30);

/// `{s}`: the store's schema; `{t}`: the tag of its function set, so
/// `{s}.f__{t}(...)` calls this build's `f` (see src/function_set.rs).
fn sql(p: &PostgresProvider, sql: &str) -> String {
    sql.replace("{s}", &format!("\"{}\"", p.schema()))
        .replace("{t}", p.function_set())
}

async fn count(p: &PostgresProvider, query: &str) -> i64 {
    common::admin_client()
        .await
        .query_one(&sql(p, query), &[])
        .await
        .unwrap()
        .get(0)
}

/// One turn of `instance` at `execution`: a message is enqueued, fetched and
/// acked with one event and `status` (None: still running).
async fn turn(
    p: &PostgresProvider,
    instance: &str,
    execution: u64,
    parent: Option<&str>,
    status: Option<&str>,
) {
    p.enqueue_for_orchestrator(items::start(instance, "in"), None)
        .await
        .unwrap();
    let (item, token, _) = p
        .fetch_orchestration_item(LEASE, Duration::ZERO, None)
        .await
        .unwrap()
        .expect("a ready instance");
    assert_eq!(item.instance, instance);
    let event: Event = items::started_event(instance, "in");
    p.ack_orchestration_item(
        &token,
        execution,
        vec![event],
        vec![],
        vec![],
        ExecutionMetadata {
            status: status.map(str::to_string),
            output: status.map(|_| "out".to_string()),
            parent_instance_id: parent.map(str::to_string),
            ..items::first_turn_metadata()
        },
        vec![],
    )
    .await
    .unwrap();
}

/// Totals from get_system_metrics equal what the tables hold.
async fn assert_totals_exact(p: &PostgresProvider) {
    let m = p.get_system_metrics().await.unwrap();
    let by = |status: &'static str| async move {
        count(
            p,
            &format!("SELECT count(*) FROM {{s}}.instances WHERE status = '{status}'"),
        )
        .await as u64
    };
    assert_eq!(
        m.total_instances,
        count(p, "SELECT count(*) FROM {s}.instances").await as u64
    );
    assert_eq!(
        m.total_executions,
        count(p, "SELECT count(*) FROM {s}.executions").await as u64
    );
    assert_eq!(
        m.total_events,
        count(p, "SELECT count(*) FROM {s}.history").await as u64
    );
    assert_eq!(m.running_instances, by("Running").await);
    assert_eq!(m.completed_instances, by("Completed").await);
    assert_eq!(m.failed_instances, by("Failed").await);
    // The mirrored status is the current execution's.
    assert_eq!(
        count(
            p,
            "SELECT count(*) FROM {s}.instances i JOIN {s}.executions e
             ON e.instance_id = i.instance_id AND e.execution_id = i.current_execution_id
             WHERE e.status IS DISTINCT FROM i.status
                OR e.completed_at_ms IS DISTINCT FROM i.completed_at_ms"
        )
        .await,
        0
    );
}

async fn rows_of(p: &PostgresProvider, instance: &str) -> i64 {
    let mut total = 0;
    for table in [
        "instances",
        "executions",
        "history",
        "instance_locks",
        "orchestrator_queue",
        "worker_queue",
        "kv_store",
        "kv_delta",
    ] {
        total += common::admin_client()
            .await
            .query_one(
                &sql(
                    p,
                    &format!("SELECT count(*) FROM {{s}}.{table} WHERE instance_id = $1"),
                ),
                &[&instance],
            )
            .await
            .unwrap()
            .get::<_, i64>(0);
    }
    total
}

fn purge_all() -> PurgeRequest {
    PurgeRequest::older_than(Duration::ZERO)
}

#[tokio::test]
async fn purge_deletes_whole_terminal_trees_only_and_is_idempotent() {
    let (p, _guard) = common::provider("ret_trees", PostgresOptions::new().long_poll(false)).await;
    // a: completed root with a completed child -> goes, whole.
    turn(&p, "a", 1, None, Some("Completed")).await;
    turn(&p, "a-child", 1, Some("a"), Some("Completed")).await;
    // b: completed root whose child still runs -> kept, whole.
    turn(&p, "b", 1, None, Some("Completed")).await;
    turn(&p, "b-child", 1, Some("b"), None).await;
    // c: running root -> kept.
    turn(&p, "c", 1, None, None).await;
    // d: failed root -> kept when only completed ones are purged.
    turn(&p, "d", 1, None, Some("Failed")).await;
    tokio::time::sleep(Duration::from_millis(5)).await;

    let dry = p
        .purge(
            &PurgeRequest {
                dry_run: true,
                ..purge_all()
            },
            |_| {},
        )
        .await
        .unwrap();
    assert_eq!(
        (dry.roots_deleted, dry.instances_deleted),
        (2, 3),
        "{dry:?}"
    );
    assert!(rows_of(&p, "a").await > 0, "a dry run deletes nothing");

    let only_completed = PurgeRequest {
        statuses: vec![TerminalStatus::Completed],
        ..purge_all()
    };
    let done = p.purge(&only_completed, |_| {}).await.unwrap();
    assert_eq!(
        (done.roots_deleted, done.instances_deleted),
        (1, 2),
        "{done:?}"
    );
    assert_eq!(rows_of(&p, "a").await, 0, "every row of a is gone");
    assert_eq!(
        rows_of(&p, "a-child").await,
        0,
        "every row of a-child is gone"
    );
    for kept in ["b", "b-child", "c", "d"] {
        assert!(rows_of(&p, kept).await > 0, "{kept} must be kept");
    }
    assert_totals_exact(&p).await;

    // Idempotent: nothing more to do.
    let again = p.purge(&only_completed, |_| {}).await.unwrap();
    assert_eq!(again.instances_deleted, 0, "{again:?}");

    // Failed ones go when asked for; b stays while its child runs.
    let all = p.purge(&purge_all(), |_| {}).await.unwrap();
    assert_eq!(all.instances_deleted, 1, "{all:?}");
    assert_eq!(rows_of(&p, "d").await, 0);
    assert!(rows_of(&p, "b-child").await > 0);
    assert_totals_exact(&p).await;
}

#[tokio::test]
async fn purge_skips_an_instance_with_a_turn_in_flight() {
    let (p, _guard) = common::provider("ret_busy", PostgresOptions::new().long_poll(false)).await;
    turn(&p, "e", 1, None, Some("Completed")).await;
    // A late message: a turn of the completed instance is in flight.
    p.enqueue_for_orchestrator(items::external("e", "late", "x"), None)
        .await
        .unwrap();
    let (_, token, _) = p
        .fetch_orchestration_item(LEASE, Duration::ZERO, None)
        .await
        .unwrap()
        .unwrap();
    tokio::time::sleep(Duration::from_millis(5)).await;
    let held = p.purge(&purge_all(), |_| {}).await.unwrap();
    assert_eq!(held.instances_deleted, 0, "{held:?}");
    p.ack_orchestration_item(
        &token,
        1,
        vec![],
        vec![],
        vec![],
        ExecutionMetadata::default(),
        vec![],
    )
    .await
    .unwrap();
    let done = p.purge(&purge_all(), |_| {}).await.unwrap();
    assert_eq!(done.instances_deleted, 1, "{done:?}");
    assert_eq!(rows_of(&p, "e").await, 0);
}

#[tokio::test]
async fn one_lease_holder_at_a_time_and_batches_need_the_lease() {
    let (p, _guard) = common::provider("ret_lease", PostgresOptions::new().long_poll(false)).await;
    let c = common::admin_client().await;
    common::wait::statement_stats(&c).await;
    let acquire = sql(
        &p,
        "SELECT acquired, holder FROM {s}.maintenance_acquire__{t}('retention', $1, $2)",
    );
    let batch = sql(
        &p,
        "SELECT * FROM {s}.retention_purge_batch__{t}($1, 9223372036854775807, ARRAY['Completed'], 10, \
         -1, '', false)",
    );
    let a: bool = c
        .query_one(&acquire, &[&"a", &3000i64])
        .await
        .unwrap()
        .get(0);
    assert!(a);
    let row = c.query_one(&acquire, &[&"b", &600i64]).await.unwrap();
    assert!(!row.get::<_, bool>(0));
    assert_eq!(row.get::<_, String>(1), "a");
    let refused = c.query(&batch, &[&"b"]).await.unwrap_err();
    assert_eq!(refused.code().unwrap().code(), "DX006");
    c.query(&batch, &[&"a"]).await.unwrap();

    // A one-off purge waits for the lease, so it cannot run beside "a".
    let request = purge_all();
    let asked = common::wait::calls(&c, &p, "maintenance_acquire").await;
    let (purge, _) = tokio::join!(p.purge(&request, |_| {}), async {
        // The purge has asked for the lease; it is still a's.
        common::wait::calls_reach(&c, &p, "maintenance_acquire", asked + 1).await;
        let holder: String = c
            .query_one(&sql(&p, "SELECT owner FROM {s}.maintenance_leases"), &[])
            .await
            .unwrap()
            .get(0);
        assert_eq!(holder, "a");
    });
    // a's 3 s lease ran out; the purge took it over and released it.
    purge.unwrap();
    assert_eq!(
        count(&p, "SELECT count(*) FROM {s}.maintenance_leases").await,
        0
    );
    let late = c.query(&batch, &[&"a"]).await.unwrap_err();
    assert_eq!(late.code().unwrap().code(), "DX006", "a's lease is gone");
}

#[tokio::test]
async fn a_dead_maintenance_holder_is_taken_over() {
    let schema = common::unique_schema("ret_dead");
    let guard = common::Schemas::default();
    guard.track(&schema);
    let url = common::server::database_url();
    let setup = PostgresProvider::connect(
        &url,
        PostgresOptions::new().schema(&schema).long_poll(false),
    )
    .await
    .unwrap();
    for i in 0..20 {
        turn(&setup, &format!("f{i}"), 1, None, Some("Completed")).await;
    }
    // A process died holding the lease for ten minutes more.
    let admin = common::admin_client().await;
    admin
        .execute(
            &sql(
                &setup,
                "SELECT {s}.maintenance_acquire__{t}('retention', 'dead', 600000)",
            ),
            &[],
        )
        .await
        .unwrap();
    let runner = PostgresProvider::connect(
        &url,
        PostgresOptions::new()
            .schema(&schema)
            .long_poll(false)
            .retention(
                RetentionPolicy::delete_after(Duration::ZERO)
                    .interval(Duration::from_millis(100))
                    .batch_size(7),
            ),
    )
    .await
    .unwrap();
    // The runner has asked for the lease twice (two of its passes) while the
    // dead holder's lease lives.
    common::wait::statement_stats(&admin).await;
    common::wait::calls_reach(&admin, &runner, "maintenance_acquire", 2).await;
    assert_eq!(
        count(&setup, "SELECT count(*) FROM {s}.instances").await,
        20,
        "nothing is purged while the dead holder's lease lives"
    );
    // Its lease runs out (moved back rather than waited for, so the test
    // does not depend on how fast this machine is).
    admin
        .execute(
            &sql(
                &setup,
                "UPDATE {s}.maintenance_leases SET leased_until_ms = leased_until_ms - 600000 \
                 WHERE owner = 'dead'",
            ),
            &[],
        )
        .await
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while count(&setup, "SELECT count(*) FROM {s}.instances").await > 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "the lease was never taken over"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_totals_exact(&setup).await;
    drop(runner);
}

#[tokio::test]
async fn retention_keeps_the_last_executions_of_continue_as_new_chains() {
    let schema = common::unique_schema("ret_can");
    let guard = common::Schemas::default();
    guard.track(&schema);
    let url = common::server::database_url();
    let p = PostgresProvider::connect(
        &url,
        PostgresOptions::new().schema(&schema).long_poll(false),
    )
    .await
    .unwrap();
    for e in 1..=4 {
        let status = if e < 4 { Some("ContinuedAsNew") } else { None };
        turn(&p, "g", e, None, status).await;
    }
    assert_eq!(p.list_executions("g").await.unwrap().len(), 4);
    assert_totals_exact(&p).await;
    let _runner = PostgresProvider::connect(
        &url,
        PostgresOptions::new()
            .schema(&schema)
            .long_poll(false)
            .retention(
                RetentionPolicy::default()
                    .keep_last_executions(2)
                    .interval(Duration::from_millis(100)),
            ),
    )
    .await
    .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while p.list_executions("g").await.unwrap() != vec![3, 4] {
        assert!(std::time::Instant::now() < deadline, "never pruned");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(p.get_instance_info("g").await.unwrap().status, "Running");
    assert_totals_exact(&p).await;
}

#[tokio::test]
async fn bulk_prune_progresses_through_the_store() {
    let (p, _guard) = common::provider("ret_prune", PostgresOptions::new().long_poll(false)).await;
    // Instances without anything to prune come first in every order.
    for i in 0..5 {
        turn(&p, &format!("a-plain{i}"), 1, None, Some("Completed")).await;
    }
    for i in 0..6 {
        let id = format!("b-chain{i}");
        turn(&p, &id, 1, None, Some("ContinuedAsNew")).await;
        turn(&p, &id, 2, None, None).await;
    }
    let mut processed = HashSet::new();
    for _ in 0..3 {
        let r = p
            .prune_executions_bulk(
                InstanceFilter {
                    limit: Some(2),
                    ..Default::default()
                },
                PruneOptions {
                    keep_last: Some(1),
                    ..Default::default()
                },
            )
            .await
            .unwrap();
        assert_eq!(
            (r.instances_processed, r.executions_deleted),
            (2, 2),
            "{r:?}"
        );
        processed.insert(r.executions_deleted);
    }
    assert_eq!(
        count(
            &p,
            "SELECT count(*) FROM {s}.executions WHERE status = 'ContinuedAsNew'"
        )
        .await,
        0,
        "three calls of two reached all six chains"
    );
    assert_totals_exact(&p).await;
}

#[tokio::test]
async fn listing_paginates_and_filters() {
    let (p, _guard) = common::provider("ret_list", PostgresOptions::new().long_poll(false)).await;
    for i in 0..12 {
        let status = match i % 3 {
            0 => Some("Completed"),
            1 => Some("Failed"),
            _ => None,
        };
        turn(&p, &format!("r{i:02}"), 1, None, status).await;
    }
    turn(&p, "r00-child", 1, Some("r00"), None).await;

    let mut seen = Vec::new();
    let mut cursor = None;
    let query = InstanceQuery::new().limit(5);
    loop {
        let page = p.list_instance_page(&query, cursor.as_ref()).await.unwrap();
        seen.extend(
            page.items
                .iter()
                .map(|s| (s.created_at_ms, s.instance_id.clone())),
        );
        match page.next_cursor {
            Some(c) => cursor = Some(c),
            None => break,
        }
    }
    assert_eq!(seen.len(), 13, "every instance once");
    assert!(
        seen.windows(2).all(|w| w[0] > w[1]),
        "newest first: {seen:?}"
    );

    let ids = |page: duroxide_postgres::InstancePage| -> HashSet<String> {
        page.items.into_iter().map(|s| s.instance_id).collect()
    };
    let failed = p
        .list_instance_page(&InstanceQuery::new().status("Failed"), None)
        .await
        .unwrap();
    assert_eq!(ids(failed).len(), 4);
    let two = p
        .list_instance_page(
            &InstanceQuery::new()
                .status("Failed")
                .status("Completed")
                .limit(100),
            None,
        )
        .await
        .unwrap();
    assert_eq!(two.items.len(), 8);
    assert!(
        two.items
            .windows(2)
            .all(|w| (w[0].created_at_ms, &w[0].instance_id)
                > (w[1].created_at_ms, &w[1].instance_id))
    );
    let children = p
        .list_instance_page(&InstanceQuery::new().parent("r00"), None)
        .await
        .unwrap();
    assert_eq!(ids(children), HashSet::from(["r00-child".to_string()]));
    let roots = p
        .list_instance_page(&InstanceQuery::new().roots_only().limit(100), None)
        .await
        .unwrap();
    assert_eq!(roots.items.len(), 12);
    let named = p
        .list_instance_page(
            &InstanceQuery::new()
                .orchestration(items::ORCH, Some(items::VERSION))
                .limit(100),
            None,
        )
        .await
        .unwrap();
    assert_eq!(named.items.len(), 13);
    let none = p
        .list_instance_page(&InstanceQuery::new().orchestration("Other", None), None)
        .await
        .unwrap();
    assert!(none.items.is_empty() && none.next_cursor.is_none());
    let done = p
        .list_instance_page(
            &InstanceQuery::new()
                .completed_between(Some(0), None)
                .limit(100),
            None,
        )
        .await
        .unwrap();
    assert_eq!(done.items.len(), 8);
    assert!(done.items.iter().all(|s| s.completed_at_ms.is_some()));

    let counts = p.count_instances_by_status().await.unwrap();
    let get = |s: &str| counts.iter().find(|(k, _)| k == s).map(|(_, n)| *n);
    assert_eq!(get("Completed"), Some(4));
    assert_eq!(get("Failed"), Some(4));
    assert_eq!(get("Running"), Some(5));
    assert_totals_exact(&p).await;
}

#[tokio::test]
async fn totals_follow_deletes_and_survive_many_roll_ups() {
    let (p, _guard) = common::provider("ret_totals", PostgresOptions::new().long_poll(false)).await;
    for i in 0..30 {
        turn(
            &p,
            &format!("t{i}"),
            1,
            None,
            if i % 2 == 0 { Some("Completed") } else { None },
        )
        .await;
        if i % 7 == 0 {
            // Fold the deltas now and then, between writes.
            p.get_system_metrics().await.unwrap();
        }
    }
    p.delete_instance("t0", false).await.unwrap();
    p.delete_instances_atomic(&["t1".to_string()], true)
        .await
        .unwrap();
    p.delete_instance_bulk(InstanceFilter {
        limit: Some(3),
        ..Default::default()
    })
    .await
    .unwrap();
    assert_totals_exact(&p).await;
    assert_eq!(p.get_system_metrics().await.unwrap().total_instances, 25);
}
