//! Sharding by root instance (`Shards`, `docs/scale-out.md`) on one machine:
//! three stores, two schemas on the shared test server and one on a private
//! server of its own, each with its own duroxide runtime.
//!
//! What is checked: every tree of instances (root, generated-id child,
//! explicit-id child) completes in the store its root id routes to and in no
//! other; events and status reads routed by id reach the right instance;
//! fan-out answers equal the sum of the stores' own answers; a shard set that
//! names one store twice is refused.

#[allow(dead_code)]
mod common;

use std::sync::Arc;
use std::time::Duration;

use duroxide::providers::ProviderAdmin;
use duroxide::runtime::registry::ActivityRegistry;
use duroxide::runtime::{Runtime, RuntimeOptions};
use duroxide::{ActivityContext, OrchestrationContext, OrchestrationRegistry, OrchestrationStatus};
use duroxide_postgres::{PostgresOptions, PostgresProvider, Shards};

const WAIT: Duration = Duration::from_secs(60);
const ROOTS: usize = 24;

fn registries() -> (ActivityRegistry, OrchestrationRegistry) {
    let activities = ActivityRegistry::builder()
        .register(
            "Charge",
            |_ctx: ActivityContext, input: String| async move { Ok(format!("charged:{input}")) },
        )
        .build();
    let orchestrations =
        OrchestrationRegistry::builder()
            // A root with an activity, a generated-id child and an explicit-id
            // child, then an event routed to it by id.
            .register(
                "Order",
                |ctx: OrchestrationContext, input: String| async move {
                    let charged = ctx.schedule_activity("Charge", input.clone()).await?;
                    let shipped = ctx
                        .schedule_sub_orchestration("Ship", input.clone())
                        .await?;
                    let audited = ctx
                        .schedule_sub_orchestration_with_id(
                            "Ship",
                            format!("audit-{input}"),
                            "audit",
                        )
                        .await?;
                    // Committed in the turn that subscribes to the event.
                    ctx.set_custom_status("waiting");
                    let confirm = ctx.schedule_wait("Confirm").await;
                    Ok(format!("{charged}|{shipped}|{audited}|{confirm}"))
                },
            )
            .register(
                "Ship",
                |_ctx: OrchestrationContext, input: String| async move {
                    Ok(format!("shipped:{input}"))
                },
            )
            .build();
    (activities, orchestrations)
}

fn options() -> RuntimeOptions {
    RuntimeOptions {
        dispatcher_min_poll_interval: Duration::from_millis(10),
        orchestration_concurrency: 2,
        worker_concurrency: 2,
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn trees_stay_in_the_shard_of_their_root_and_fan_out_sums() {
    let private = common::server::TempServer::start();
    let schemas = common::Schemas::default();
    let mut stores = Vec::new();
    for url in [
        common::server::database_url(),
        common::server::database_url(),
        private.url(),
    ] {
        let schema = common::unique_schema("shard");
        if url != private.url() {
            schemas.track(&schema);
        }
        let store = PostgresProvider::connect(&url, PostgresOptions::new().schema(&schema))
            .await
            .expect("connect a shard");
        stores.push(Arc::new(store));
    }
    let shards = Shards::new(stores.clone()).expect("three distinct stores");
    let mut runtimes = Vec::new();
    for store in &stores {
        let (activities, orchestrations) = registries();
        runtimes.push(
            Runtime::start_with_options(store.clone(), activities, orchestrations, options()).await,
        );
    }

    let ids: Vec<String> = (0..ROOTS).map(|i| format!("order-{i}")).collect();
    for id in &ids {
        shards
            .client_for(id)
            .start_orchestration(id, "Order", id.clone())
            .await
            .expect("start through the routed client");
    }
    let per_shard: Vec<usize> = (0..stores.len())
        .map(|s| ids.iter().filter(|id| shards.index_of(id) == s).count())
        .collect();
    assert!(
        per_shard.iter().all(|&n| n > 0),
        "{ROOTS} roots should reach every one of 3 shards: {per_shard:?}"
    );
    for id in &ids {
        // The event goes through the client the id routes to; a wrong
        // route would leave the orchestration waiting (and the wait fail).
        let client = shards.client_for(id);
        client
            .wait_for_status_change(id, 0, Duration::from_millis(10), WAIT)
            .await
            .expect("the orchestration subscribes to its event");
        client
            .raise_event(id, "Confirm", format!("ok-{id}"))
            .await
            .expect("raise through the routed client");
    }
    for id in &ids {
        let status = shards
            .client_for(id)
            .wait_for_orchestration(id, WAIT)
            .await
            .expect("wait through the routed client");
        match status {
            OrchestrationStatus::Completed { output, .. } => assert_eq!(
                output,
                format!("charged:{id}|shipped:{id}|shipped:audit|ok-{id}"),
                "{id}"
            ),
            other => panic!("{id}: {other:?}"),
        }
    }

    for id in &ids {
        let home = shards.index_of(id);
        let children = stores[home]
            .list_children(id)
            .await
            .expect("children of a root in its own shard");
        assert_eq!(children.len(), 2, "{id}: both children in shard {home}");
        let generated = children
            .iter()
            .find(|c| c.starts_with(&format!("{id}::sub::")))
            .unwrap_or_else(|| panic!("{id}: no generated-id child in {children:?}"));
        assert_eq!(shards.index_of(generated), home, "{generated} routes home");
        let explicit = format!("audit-{id}");
        assert!(children.contains(&explicit), "{id}: {children:?}");
        assert_eq!(
            shards.locate(&explicit).await.expect("locate"),
            Some(home),
            "{explicit} is found in its parent's shard"
        );
        for (s, store) in stores.iter().enumerate() {
            let known = !store
                .list_executions(id)
                .await
                .expect("list executions")
                .is_empty();
            assert_eq!(known, s == home, "{id} is known to shard {s} only if home");
        }
    }
    assert_eq!(shards.locate("no-such-order").await.expect("locate"), None);

    let mut expected_total = 0;
    let mut expected_completed = 0;
    for store in &stores {
        let m = store.get_system_metrics().await.expect("metrics");
        expected_total += m.total_instances;
        expected_completed += m.completed_instances;
    }
    let sum = shards.system_metrics().await.expect("fan-out metrics");
    assert_eq!(sum.total_instances, expected_total);
    assert_eq!(sum.total_instances, 3 * ROOTS as u64, "roots and children");
    assert_eq!(sum.completed_instances, expected_completed);
    let counts = shards
        .count_instances_by_status()
        .await
        .expect("fan-out counts");
    let of = |status: &str| counts.iter().find(|(s, _)| s == status).map(|(_, n)| *n);
    assert_eq!(of("Completed"), Some(3 * ROOTS as u64), "{counts:?}");
    assert_eq!(of("Running"), Some(0), "{counts:?}");
    assert_eq!(of("Failed"), Some(0), "{counts:?}");
    let depths = shards.queue_depths().await.expect("fan-out depths");
    assert_eq!(
        (depths.orchestrator_queue, depths.worker_queue),
        (0, 0),
        "nothing left queued anywhere"
    );

    for rt in runtimes {
        rt.shutdown(None).await;
    }
}

#[tokio::test]
async fn a_shard_set_refuses_no_store_and_the_same_store_twice() {
    let empty = Shards::new(Vec::new()).expect_err("no store");
    assert!(empty.to_string().contains("at least one"), "{empty}");

    let (store, _schemas) = common::provider("shard_dup", PostgresOptions::new()).await;
    let err = Shards::new(vec![store.clone(), store.clone()]).expect_err("same store twice");
    assert!(err.to_string().contains("twice"), "{err}");
    assert!(
        err.to_string().contains(store.schema()),
        "names the store: {err}"
    );

    // The root of a generated child id is its parent's root.
    assert_eq!(Shards::root_of("a::sub::3::sub::1"), "a");
    assert_eq!(Shards::root_of("plain"), "plain");
}
