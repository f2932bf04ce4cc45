//! A runtime role that may use the store but not change it (the grants of
//! docs/operations.md), running a real workload in verify-only mode.

#[allow(dead_code)]
mod common;

use duroxide::runtime::Runtime;
use duroxide::{Client, OrchestrationStatus};
use duroxide_postgres::{Error, MigrationPolicy, PostgresOptions, PostgresProvider};
use std::sync::Arc;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn runtime_role_runs_a_workload_without_ddl_rights() {
    // The owner migrates.
    let (owner, _schemas) = common::provider("leastpriv", PostgresOptions::new()).await;
    let schema = owner.schema().to_string();
    let role = format!("{schema}_rt");
    let admin = common::admin_client().await;
    admin
        .batch_execute(&format!(
            "CREATE ROLE \"{role}\" LOGIN;
             GRANT USAGE ON SCHEMA \"{schema}\" TO \"{role}\";
             GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA \"{schema}\" TO \"{role}\";
             GRANT USAGE ON ALL SEQUENCES IN SCHEMA \"{schema}\" TO \"{role}\";
             GRANT EXECUTE ON ALL FUNCTIONS IN SCHEMA \"{schema}\" TO \"{role}\";"
        ))
        .await
        .unwrap();
    let url = common::url_as(&common::server::database_url(), &role);

    let (url_c, schema_c) = (url.clone(), schema.clone());
    let outcome = async move {
        let (url, schema) = (url_c, schema_c);
        // Migrating needs DDL rights the role does not have.
        let other = common::unique_schema("leastpriv_other");
        let err = PostgresProvider::connect(&url, PostgresOptions::new().schema(&other))
            .await
            .expect_err("the runtime role cannot create a schema");
        assert!(
            matches!(err, Error::Database(_) | Error::Schema { .. }),
            "{err}"
        );

        let store = Arc::new(
            PostgresProvider::connect(
                &url,
                PostgresOptions::new()
                    .schema(&schema)
                    .migration_policy(MigrationPolicy::VerifyOnly),
            )
            .await
            .expect("verify-only start as the runtime role"),
        );

        let (activities, orchestrations) = common::twice_registries(Duration::from_millis(20));
        let rt = Runtime::start_with_store(store.clone(), activities, orchestrations).await;
        let client = Client::new(store.clone());
        for i in 0..5 {
            client
                .start_orchestration(&format!("lp-{i}"), "Twice", &i.to_string())
                .await
                .unwrap();
        }
        for i in 0..5 {
            match client
                .wait_for_orchestration(&format!("lp-{i}"), Duration::from_secs(30))
                .await
                .unwrap()
            {
                OrchestrationStatus::Completed { output, .. } => {
                    assert_eq!(output, (i * 4).to_string())
                }
                other => panic!("lp-{i}: {other:?}"),
            }
        }
        let deleted = client
            .delete_instance("lp-0", false)
            .await
            .expect("delete as the runtime role");
        assert_eq!(deleted.instances_deleted, 1);
        rt.shutdown(None).await;

        // A build whose function set the deploy step did not install cannot
        // start verify-only: it says what to run.
        let mut files = duroxide_postgres::embedded_function_files();
        files[0].1.push_str("\n-- another build\n");
        let err = PostgresProvider::connect(
            &url,
            PostgresOptions::new()
                .schema(&schema)
                .migration_policy(MigrationPolicy::VerifyOnly)
                .function_files(files),
        )
        .await
        .expect_err("verify-only start of a build whose functions are not installed");
        assert!(
            matches!(&err, Error::Schema { message, .. } if message.contains("not installed")),
            "{err}"
        );

        // And it cannot change the schema.
        let client = common::client_at(&url).await;
        let err = client
            .batch_execute(&format!("CREATE TABLE \"{schema}\".intruder (x int)"))
            .await
            .expect_err("no DDL for the runtime role");
        assert_eq!(err.code().map(|c| c.code()), Some("42501"));
        let now_ms = format!("now_ms__{}", store.function_set());
        let err = client
            .batch_execute(&format!("DROP FUNCTION \"{schema}\".{now_ms}()"))
            .await
            .expect_err("no DDL for the runtime role");
        assert_eq!(err.code().map(|c| c.code()), Some("42501"));
    };
    // Run the checks, then drop the role whatever happened.
    let result = tokio::spawn(outcome).await;
    admin
        .batch_execute(&format!("DROP OWNED BY \"{role}\"; DROP ROLE \"{role}\";"))
        .await
        .unwrap();
    if let Err(panic) = result {
        std::panic::resume_unwind(panic.into_panic());
    }
}
