//! The Rust side of every SQL function call matches the database: each
//! descriptor (name, parameter names and types, in order; see
//! `src/provider/functions.rs`) is compared with the function's signature in
//! `pg_proc`, and a result row that does not have the columns the provider
//! reads is a permanent error, never a panic.

#[allow(dead_code)]
mod common;

use duroxide::providers::ProviderAdmin;
use duroxide_postgres::PostgresOptions;
use std::collections::BTreeMap;

#[tokio::test]
async fn every_call_matches_its_function_signature_in_pg_proc() {
    let (store, _schemas) = common::provider("sig", PostgresOptions::new()).await;
    let admin = common::admin_client().await;
    let rows = admin
        .query(
            "SELECT p.proname::text,
                    coalesce(p.proargnames[1:p.pronargs], '{}')::text[],
                    array(SELECT t.typname::text
                          FROM unnest(p.proargtypes::oid[]) WITH ORDINALITY a(oid, n)
                          JOIN pg_type t ON t.oid = a.oid ORDER BY a.n)
             FROM pg_proc p WHERE p.pronamespace = $1::text::regnamespace",
            &[&format!("\"{}\"", store.schema())],
        )
        .await
        .unwrap();
    // function -> [(parameter names, parameter types)], one entry per overload.
    type Overloads = Vec<(Vec<String>, Vec<String>)>;
    let mut in_db: BTreeMap<String, Overloads> = BTreeMap::new();
    for r in &rows {
        in_db
            .entry(r.get(0))
            .or_default()
            .push((r.get(1), r.get(2)));
    }
    let described = duroxide_postgres::__sql_function_signatures();
    assert!(described.len() >= 30, "descriptors: {}", described.len());
    for (name, params) in described {
        let names: Vec<String> = params.iter().map(|(n, _)| n.to_string()).collect();
        let types: Vec<String> = params.iter().map(|(_, t)| t.clone()).collect();
        // This build's set: `<function>__<tag>` (see src/function_set.rs).
        let installed = format!("{name}__{}", store.function_set());
        let overloads = in_db
            .get(&installed)
            .unwrap_or_else(|| panic!("{installed}: no such function in the schema"));
        assert_eq!(overloads.len(), 1, "{name}: overloaded {overloads:?}");
        assert_eq!(overloads[0].0, names, "{name}: parameter names");
        assert_eq!(overloads[0].1, types, "{name}: parameter types");
    }
}

#[tokio::test]
async fn a_renamed_result_column_is_a_permanent_error_not_a_panic() {
    let (store, _schemas) = common::provider("sig_col", PostgresOptions::new()).await;
    let schema = store.schema().to_string();
    let set = store.function_set().to_string();
    // As if a newer build had renamed a column of get_queue_depths' result.
    common::admin_client()
        .await
        .batch_execute(&format!(
            "DROP FUNCTION \"{schema}\".get_queue_depths__{set}();
             CREATE FUNCTION \"{schema}\".get_queue_depths__{set}()
             RETURNS TABLE (orchestrator_queue_depth BIGINT, worker_queue BIGINT)
             LANGUAGE sql AS $$ SELECT 0::bigint, 0::bigint $$;"
        ))
        .await
        .unwrap();
    let result = tokio::spawn(async move { store.get_queue_depths().await })
        .await
        .expect("reading the row must not panic");
    let error = result.expect_err("a missing column is an error");
    assert!(!error.is_retryable(), "{error}");
    assert!(
        error.to_string().contains("orchestrator_queue"),
        "the error names the column: {error}"
    );
}
