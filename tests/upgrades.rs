//! Rolling upgrades (issue 7, item 7; docs/decisions/0004): two builds with
//! different SQL functions run against one schema, each through its own
//! function set; restarting either replaces nothing of the other's; the old
//! set goes only when retired; and a statement whose function changed under
//! it is prepared afresh instead of failing forever.

#[allow(dead_code)]
mod common;

use duroxide::providers::{Provider, ProviderAdmin};
use duroxide::runtime::registry::ActivityRegistry;
use duroxide::runtime::{Runtime, RuntimeOptions};
use duroxide::{ActivityContext, Client, OrchestrationContext, OrchestrationRegistry};
use duroxide::{OrchestrationStatus, INITIAL_EXECUTION_ID};
use duroxide_postgres::{embedded_function_files, PostgresOptions, PostgresProvider};
use std::sync::Arc;
use std::time::Duration;

/// "Another build": this build's function files with a changed body and
/// one more function, so its set differs and can be told apart.
fn other_build_files() -> Vec<(String, String)> {
    let mut files = embedded_function_files();
    let management = files
        .iter_mut()
        .find(|(name, _)| name == "management")
        .expect("management.sql");
    management.1.push_str(
        "\n-- Only in the other build.\n\
         CREATE FUNCTION __SCHEMA__.build_marker() RETURNS TEXT\n\
         LANGUAGE sql IMMUTABLE AS $$ SELECT 'other' $$;\n",
    );
    files
}

async fn connect(schema: &str, files: Option<Vec<(String, String)>>) -> Arc<PostgresProvider> {
    let mut options = PostgresOptions::new().schema(schema);
    if let Some(files) = files {
        options = options.function_files(files);
    }
    Arc::new(
        PostgresProvider::connect(&common::server::database_url(), options)
            .await
            .expect("start a build"),
    )
}

/// `name oid md5(body)` of every function of the set `tag` in `schema`.
async fn set_catalog(db: &tokio_postgres::Client, schema: &str, tag: &str) -> Vec<String> {
    db.query(
        "SELECT p.oid::regprocedure::text || ' ' || p.oid::text || ' ' || md5(p.prosrc)
         FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
         WHERE n.nspname = $1 AND p.proname LIKE '%\\_\\_' || $2 ORDER BY 1",
        &[&schema, &tag],
    )
    .await
    .unwrap()
    .iter()
    .map(|r| r.get(0))
    .collect()
}

async fn ledger_tags(db: &tokio_postgres::Client, schema: &str) -> Vec<String> {
    db.query(
        &format!("SELECT tag FROM \"{schema}\"._duroxide_function_sets ORDER BY tag"),
        &[],
    )
    .await
    .unwrap()
    .iter()
    .map(|r| r.get(0))
    .collect()
}

/// A runtime on `store` running "Double" orchestrations.
async fn start_runtime(store: &Arc<PostgresProvider>) -> Arc<Runtime> {
    let activities = ActivityRegistry::builder()
        .register("Double", |_: ActivityContext, n: String| async move {
            Ok((n.parse::<i64>().unwrap() * 2).to_string())
        })
        .build();
    let orchestrations = OrchestrationRegistry::builder()
        .register(
            "Double",
            |ctx: OrchestrationContext, n: String| async move {
                ctx.schedule_activity("Double", n).await
            },
        )
        .build();
    let options = RuntimeOptions {
        dispatcher_min_poll_interval: Duration::from_millis(10),
        ..Default::default()
    };
    Runtime::start_with_options(store.clone(), activities, orchestrations, options).await
}

/// Starts `n` orchestrations through `store`'s client and waits for all.
async fn run_workload(store: &Arc<PostgresProvider>, prefix: &str, n: i64) {
    let client = Client::new(store.clone());
    for i in 0..n {
        client
            .start_orchestration(&format!("{prefix}-{i}"), "Double", &i.to_string())
            .await
            .unwrap();
    }
    for i in 0..n {
        match client
            .wait_for_orchestration(&format!("{prefix}-{i}"), Duration::from_secs(30))
            .await
            .unwrap()
        {
            OrchestrationStatus::Completed { output, .. } => {
                assert_eq!(output, (i * 2).to_string())
            }
            other => panic!("{prefix}-{i}: {other:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_builds_share_a_schema_and_a_restart_replaces_nothing() {
    let schemas = common::Schemas::default();
    let schema = common::unique_schema("upgrade");
    schemas.track(&schema);
    let admin = common::admin_client().await;

    // The new build starts first, then the other build joins: two sets.
    let new = connect(&schema, None).await;
    let old = connect(&schema, Some(other_build_files())).await;
    let (new_tag, old_tag) = (
        new.function_set().to_string(),
        old.function_set().to_string(),
    );
    assert_ne!(new_tag, old_tag);
    let mut both = vec![new_tag.clone(), old_tag.clone()];
    both.sort();
    assert_eq!(ledger_tags(&admin, &schema).await, both);
    let marker: String = admin
        .query_one(
            &format!("SELECT \"{schema}\".build_marker__{old_tag}()"),
            &[],
        )
        .await
        .expect("the other build's own function")
        .get(0);
    assert_eq!(marker, "other");

    // Workload through both builds at once, on one schema: each runtime
    // fetches and acks whatever either client started.
    let (rt_new, rt_old) = (start_runtime(&new).await, start_runtime(&old).await);
    tokio::join!(
        run_workload(&new, "via-new", 10),
        run_workload(&old, "via-old", 10)
    );
    rt_old.shutdown(None).await;
    drop(old);

    // The old build restarts: it finds its set and changes nothing of the
    // new one's (nor its own).
    let new_catalog = set_catalog(&admin, &schema, &new_tag).await;
    let old_catalog = set_catalog(&admin, &schema, &old_tag).await;
    assert!(!new_catalog.is_empty() && !old_catalog.is_empty());
    let old = connect(&schema, Some(other_build_files())).await;
    assert_eq!(set_catalog(&admin, &schema, &new_tag).await, new_catalog);
    assert_eq!(set_catalog(&admin, &schema, &old_tag).await, old_catalog);
    // And the new build restarting leaves the old set alone too.
    let new_again = connect(&schema, None).await;
    assert_eq!(set_catalog(&admin, &schema, &old_tag).await, old_catalog);
    assert_eq!(set_catalog(&admin, &schema, &new_tag).await, new_catalog);
    let rt_old = start_runtime(&old).await;
    run_workload(&old, "after-restart", 5).await;
    rt_old.shutdown(None).await;

    // Retiring from the new build drops the old set, and only it.
    let dropped = new_again.retire_other_function_sets().await.unwrap();
    assert_eq!(dropped.len(), old_catalog.len(), "{dropped:?}");
    assert!(dropped.iter().all(|f| f.contains(&old_tag)), "{dropped:?}");
    assert!(set_catalog(&admin, &schema, &old_tag).await.is_empty());
    assert_eq!(set_catalog(&admin, &schema, &new_tag).await, new_catalog);
    assert_eq!(ledger_tags(&admin, &schema).await, vec![new_tag.clone()]);
    // The retired build fails loudly; the current one goes on.
    let err = old
        .latest_execution_id("via-old-0")
        .await
        .expect_err("the retired set is gone");
    assert!(err.to_string().contains("does not exist"), "{err}");
    run_workload(&new, "after-retire", 5).await;
    rt_new.shutdown(None).await;
}

/// A function replaced with other result columns under a cached prepared
/// statement (PostgreSQL: "cached plan must not change result type",
/// SQLSTATE 0A000) is prepared afresh: the call succeeds instead of failing
/// (retryably, so forever) on every connection that cached it.
#[tokio::test(flavor = "multi_thread")]
async fn a_statement_whose_function_changed_is_prepared_afresh() {
    let (p, _schemas) =
        common::provider("reprepare", PostgresOptions::new().max_connections(1)).await;
    assert_eq!(
        p.latest_execution_id("none").await.unwrap(),
        INITIAL_EXECUTION_ID
    );
    let (schema, tag) = (p.schema().to_string(), p.function_set().to_string());
    common::admin_client()
        .await
        .batch_execute(&format!(
            "DROP FUNCTION \"{schema}\".latest_execution_id__{tag}(text);
             CREATE FUNCTION \"{schema}\".latest_execution_id__{tag}(p_instance_id TEXT)
             RETURNS TABLE (latest BIGINT, note TEXT)
             LANGUAGE sql STABLE AS $$ SELECT 5::BIGINT, 'changed'::TEXT $$;"
        ))
        .await
        .unwrap();
    let latest = p
        .latest_execution_id("none")
        .await
        .expect("the changed function is called after preparing afresh");
    assert_eq!(latest, 5);
    // The pool's only connection keeps working.
    assert!(p.read("none").await.unwrap().is_empty());
}
