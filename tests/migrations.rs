//! Schema names, migrations and the function ledger, against a real
//! PostgreSQL server.
//!
//! Every test works in schemas of its own (`common::unique_schema`) that its
//! `Schemas` guard drops at the end, so the tests run in parallel.

#[allow(dead_code)]
mod common;

use common::items::{self, first_turn_metadata, start, started_event};
use common::{admin_client, server::database_url, unique_schema, Schemas};
use duroxide::providers::{Provider, TagFilter, WorkItem};
use duroxide_postgres::{Error, MigrationPolicy, PostgresOptions, PostgresProvider};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::task::JoinSet;

/// A URL nothing listens on: any attempt to connect fails.
const UNREACHABLE_URL: &str = "postgres://nobody@127.0.0.1:1/x";

fn options(schema: &str) -> PostgresOptions {
    PostgresOptions::new().schema(schema)
}

fn verify_only(schema: &str) -> PostgresOptions {
    options(schema).migration_policy(MigrationPolicy::VerifyOnly)
}

async fn connect(opts: PostgresOptions) -> Result<PostgresProvider, Error> {
    PostgresProvider::connect(&database_url(), opts).await
}

/// Creates (migrates) `schema` and drops the provider again.
async fn migrate(schema: &str) {
    drop(connect(options(schema)).await.expect("migrate schema"));
}

/// A fresh schema name, dropped (if created) with the returned guard.
fn tracked_schema(prefix: &str) -> (Schemas, String) {
    let schemas = Schemas::default();
    let schema = unique_schema(prefix);
    schemas.track(&schema);
    (schemas, schema)
}

/// [`tracked_schema`], created and migrated.
async fn migrated_schema(prefix: &str) -> (Schemas, String) {
    let (schemas, schema) = tracked_schema(prefix);
    migrate(&schema).await;
    (schemas, schema)
}

fn sha256_hex(text: &str) -> String {
    Sha256::digest(text.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The `.sql` files of `sql/<dir>`, by file stem.
fn sql_files(dir: &str) -> BTreeMap<String, String> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("sql")
        .join(dir);
    std::fs::read_dir(&path)
        .unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
        .map(|entry| entry.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "sql"))
        .map(|p| {
            let stem = p.file_stem().unwrap().to_str().unwrap().to_string();
            (stem, std::fs::read_to_string(&p).unwrap())
        })
        .collect()
}

/// Asserts that `result` is `Error::Schema` for `schema` whose message
/// contains `needle` (case-insensitive), and returns the message.
fn expect_schema_error(
    result: Result<PostgresProvider, Error>,
    schema: &str,
    needle: &str,
) -> String {
    match result {
        Err(Error::Schema {
            schema: got,
            message,
        }) => {
            assert_eq!(got, schema, "error names the wrong schema: {message}");
            assert!(
                message.to_lowercase().contains(&needle.to_lowercase()),
                "schema error should mention {needle:?}: {message}"
            );
            message
        }
        Err(other) => panic!("expected Error::Schema mentioning {needle:?}, got {other:?}"),
        Ok(p) => panic!("expected Error::Schema mentioning {needle:?}, got a provider {p:?}"),
    }
}

async fn schema_exists(client: &tokio_postgres::Client, schema: &str) -> bool {
    client
        .query_one(
            "SELECT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname::text = $1)",
            &[&schema],
        )
        .await
        .unwrap()
        .get(0)
}

async fn table_exists(client: &tokio_postgres::Client, schema: &str, table: &str) -> bool {
    client
        .query_one(
            "SELECT EXISTS (SELECT 1 FROM pg_tables WHERE schemaname = $1 AND tablename = $2)",
            &[&schema, &table],
        )
        .await
        .unwrap()
        .get(0)
}

/// `(version, name, checksum, applied_at)` of every migration ledger row.
async fn migration_ledger(
    client: &tokio_postgres::Client,
    schema: &str,
) -> Vec<(i32, String, String, String)> {
    client
        .query(
            &format!(
                "SELECT version, name, checksum, applied_at::text
                 FROM \"{schema}\"._duroxide_migrations ORDER BY version"
            ),
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3)))
        .collect()
}

/// `tag -> (functions, installed_at)` of every function-set ledger row.
async fn function_ledger(
    client: &tokio_postgres::Client,
    schema: &str,
) -> BTreeMap<String, (String, String)> {
    client
        .query(
            &format!(
                "SELECT tag, array_to_string(functions, ','), installed_at::text
                 FROM \"{schema}\"._duroxide_function_sets"
            ),
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), (r.get(1), r.get(2))))
        .collect()
}

/// Names of the functions in `schema`, sorted.
async fn function_names(client: &tokio_postgres::Client, schema: &str) -> Vec<String> {
    client
        .query(
            "SELECT p.proname::text FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
             WHERE n.nspname = $1 ORDER BY 1",
            &[&schema],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect()
}

/// Everything DDL would change in `schema`: every relation (table, index,
/// sequence) and every function, with its oid (new on any re-creation) and,
/// for functions, a hash of the body.
async fn catalog_snapshot(client: &tokio_postgres::Client, schema: &str) -> Vec<String> {
    client
        .query(
            "SELECT 'rel ' || c.relname || ' ' || c.relkind::text || ' ' || c.oid::text
             FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
             WHERE n.nspname = $1
             UNION ALL
             SELECT 'fn ' || p.oid::regprocedure::text || ' ' || p.oid::text || ' ' || md5(p.prosrc)
             FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
             WHERE n.nspname = $1
             ORDER BY 1",
            &[&schema],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect()
}

/// The ledgers and catalog of a schema: what a start that runs no DDL and
/// rewrites no ledger row leaves as it was.
struct SchemaState {
    ledger: Vec<(i32, String, String, String)>,
    functions: BTreeMap<String, (String, String)>,
    catalog: Vec<String>,
}

impl SchemaState {
    async fn read(client: &tokio_postgres::Client, schema: &str) -> Self {
        Self {
            ledger: migration_ledger(client, schema).await,
            functions: function_ledger(client, schema).await,
            catalog: catalog_snapshot(client, schema).await,
        }
    }

    async fn assert_unchanged(&self, client: &tokio_postgres::Client, schema: &str) {
        assert_eq!(migration_ledger(client, schema).await, self.ledger);
        assert_eq!(function_ledger(client, schema).await, self.functions);
        assert_eq!(catalog_snapshot(client, schema).await, self.catalog);
    }
}

/// The one activity [`assert_round_trip`] and the schema tests enqueue for `instance`.
fn activity(instance: &str) -> WorkItem {
    items::activity(instance, 1, &format!("input of {instance}"), None)
}

/// Enqueue, fetch and ack one worker item and one orchestrator turn (under
/// instance ids no other call uses, so it can run many times on one schema).
async fn assert_round_trip(provider: &dyn Provider) {
    static CALLS: AtomicU64 = AtomicU64::new(0);
    let n = CALLS.fetch_add(1, Ordering::Relaxed);
    let instance = format!("round-trip-{n}");

    let item = activity(&instance);
    provider.enqueue_for_worker(item.clone()).await.unwrap();
    let (fetched, token, attempts) = provider
        .fetch_work_item(
            Duration::from_secs(30),
            Duration::ZERO,
            None,
            &TagFilter::DefaultOnly,
        )
        .await
        .unwrap()
        .expect("the enqueued work item");
    assert_eq!(fetched, item);
    assert_eq!(attempts, 1);
    provider.ack_work_item(&token, None).await.unwrap();

    let message = start(&instance, "{}");
    provider
        .enqueue_for_orchestrator(message.clone(), None)
        .await
        .unwrap();
    let (orch, token, _) = provider
        .fetch_orchestration_item(Duration::from_secs(30), Duration::ZERO, None)
        .await
        .unwrap()
        .expect("the enqueued orchestrator message");
    assert_eq!(orch.instance, instance);
    assert_eq!(orch.messages, vec![message]);
    let events = vec![started_event(&instance, "{}")];
    provider
        .ack_orchestration_item(
            &token,
            1,
            events.clone(),
            vec![],
            vec![],
            first_turn_metadata(),
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(provider.read(&instance).await.unwrap(), events);
}

// ---------------------------------------------------------------------------
// 1. Schema names
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread")]
async fn hostile_schema_names_are_refused_before_any_sql_runs() {
    let too_long = "a".repeat(64);
    let hostile: Vec<String> = [
        "",
        "a\"b",
        "x\"; DROP SCHEMA public CASCADE; --",
        "a'b",
        "a;b",
        "public;drop",
        "a.b",
        "public.x",
        too_long.as_str(),
        "$$",
        "a$$b",
        "a$b",
        "a\0b",
        "\0",
        "1abc",
        "9",
        "pg_x",
        "PG_catalog",
        "pg_temp",
        "é",
        "tenant_ünicode",
        "схема",
        "emoji_🦀",
        "a b",
        "a-b",
        " a",
        "a\n",
        "a\\b",
        "a/b",
        "a*",
        "a(b)",
        "a\u{200B}b",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();

    let admin = admin_client().await;
    let real_url = database_url();
    for name in &hostile {
        // An unreachable URL: a connection attempt would fail with another
        // error, so InvalidSchemaName proves the name was refused first.
        for url in [UNREACHABLE_URL, real_url.as_str()] {
            match PostgresProvider::connect(url, options(name)).await {
                Err(Error::InvalidSchemaName { name: got, reason }) => {
                    assert_eq!(&got, name, "the error carries the name as given");
                    assert!(!reason.is_empty());
                }
                other => panic!("{name:?} via {url}: expected InvalidSchemaName, got {other:?}"),
            }
        }
        match PostgresProvider::new_with_schema(UNREACHABLE_URL, name).await {
            Err(Error::InvalidSchemaName { .. }) => {}
            other => panic!("new_with_schema({name:?}): expected InvalidSchemaName, got {other:?}"),
        }
        // VerifyOnly validates the name just the same.
        match PostgresProvider::connect(UNREACHABLE_URL, verify_only(name)).await {
            Err(Error::InvalidSchemaName { .. }) => {}
            other => panic!("{name:?} (verify-only): expected InvalidSchemaName, got {other:?}"),
        }

        // Nothing was created under the name, nor under the name PostgreSQL
        // would have truncated it to. (A NUL cannot even be sent as text.)
        if !name.contains('\0') {
            assert!(
                !schema_exists(&admin, name).await,
                "a schema named {name:?} exists"
            );
            let truncated: String = {
                let mut end = name.len().min(63);
                while !name.is_char_boundary(end) {
                    end -= 1;
                }
                name[..end].to_string()
            };
            assert!(
                !schema_exists(&admin, &truncated).await,
                "a schema named {truncated:?} exists"
            );
        }
    }

    // Nothing any of those names tried to inject took effect.
    assert!(schema_exists(&admin, "public").await);
    assert!(!schema_exists(&admin, "x").await);
}

#[tokio::test(flavor = "multi_thread")]
async fn plain_identifier_schema_names_are_accepted() {
    let schemas = Schemas::default();
    // The longest legal name (63 bytes) must work and keep its exact spelling.
    let base = unique_schema("n");
    let long = format!("{base}{}", "x".repeat(63 - base.len()));
    assert_eq!(long.len(), 63);
    // Mixed case is kept as given (it is quoted, not folded).
    let mixed = format!("{}_MiXed", unique_schema("n"));
    for name in [&long, &mixed] {
        schemas.track(name);
        let provider = connect(options(name)).await.expect("valid schema name");
        assert_eq!(provider.schema(), name.as_str());
        assert_round_trip(&provider).await;
    }
    let admin = admin_client().await;
    assert!(schema_exists(&admin, &long).await);
    assert!(schema_exists(&admin, &mixed).await);
    assert!(
        !schema_exists(&admin, &mixed.to_lowercase()).await,
        "the name must not be case-folded"
    );
}

// ---------------------------------------------------------------------------
// 2. Concurrent first start
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 8)]
async fn concurrent_first_starts_migrate_exactly_once() {
    let (_schemas, schema) = tracked_schema("conc");
    let admin = admin_client().await;
    assert!(!schema_exists(&admin, &schema).await);

    let mut set = JoinSet::new();
    for _ in 0..8 {
        let schema = schema.clone();
        set.spawn(async move { connect(options(&schema)).await });
    }
    let mut providers = Vec::new();
    while let Some(joined) = set.join_next().await {
        providers.push(joined.unwrap().expect("every concurrent start succeeds"));
    }
    assert_eq!(providers.len(), 8);

    // One ledger row per migration, matching the embedded files.
    let ledger = migration_ledger(&admin, &schema).await;
    assert_eq!(ledger.len(), PostgresProvider::schema_version() as usize);
    let migration_files = sql_files("migrations");
    assert_eq!(migration_files.len(), ledger.len());
    for ((version, name, checksum, _), (stem, sql)) in ledger.iter().zip(&migration_files) {
        assert_eq!(*stem, format!("{version:04}_{name}"));
        assert_eq!(*checksum, sha256_hex(sql), "checksum of {stem}");
    }
    let versions: Vec<i32> = ledger.iter().map(|r| r.0).collect();
    assert_eq!(
        versions,
        (1..=PostgresProvider::schema_version()).collect::<Vec<_>>()
    );

    // One function set, this build's, listing every function it created.
    let functions = function_ledger(&admin, &schema).await;
    let tag = providers[0].function_set().to_string();
    assert_eq!(functions.keys().collect::<Vec<_>>(), vec![&tag]);
    let mut listed: Vec<String> = functions[&tag].0.split(',').map(str::to_string).collect();
    listed.sort();
    assert_eq!(function_names(&admin, &schema).await, listed);
    assert!(listed.iter().all(|f| f.ends_with(&format!("__{tag}"))));
    assert!(listed.contains(&format!("fetch_work_item__{tag}")));

    // No function was created twice (no stray overloads).
    let duplicates: i64 = admin
        .query_one(
            "SELECT count(*) FROM (SELECT p.proname FROM pg_proc p
               JOIN pg_namespace n ON n.oid = p.pronamespace
              WHERE n.nspname = $1 GROUP BY p.proname HAVING count(*) > 1) d",
            &[&schema],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(duplicates, 0);

    // Every one of the eight providers works.
    for provider in &providers {
        assert_round_trip(provider).await;
    }
}

// ---------------------------------------------------------------------------
// 3. Restart on an up-to-date schema
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread")]
async fn second_start_on_an_up_to_date_schema_changes_nothing() {
    let (_schemas, schema) = migrated_schema("again").await;

    let admin = admin_client().await;
    let before = SchemaState::read(&admin, &schema).await;
    assert_eq!(
        before.ledger.len(),
        PostgresProvider::schema_version() as usize
    );
    assert!(!before.functions.is_empty());

    // Make sure a rewrite would get a different applied_at.
    tokio::time::sleep(Duration::from_millis(20)).await;
    let provider = connect(options(&schema)).await.expect("second start");

    before.assert_unchanged(&admin, &schema).await;
    assert_round_trip(&provider).await;
}

// ---------------------------------------------------------------------------
// 4. Fail closed
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread")]
async fn a_ledger_written_by_a_newer_build_is_refused() {
    let (_schemas, schema) = migrated_schema("newer").await;

    let admin = admin_client().await;
    admin
        .execute(
            &format!(
                "INSERT INTO \"{schema}\"._duroxide_migrations (version, name, checksum)
                 VALUES (9999, 'from_the_future', 'abc')"
            ),
            &[],
        )
        .await
        .unwrap();
    let ledger = migration_ledger(&admin, &schema).await;
    let catalog = catalog_snapshot(&admin, &schema).await;

    let message = expect_schema_error(connect(options(&schema)).await, &schema, "newer");
    assert!(message.contains("9999"), "names the version: {message}");
    expect_schema_error(connect(verify_only(&schema)).await, &schema, "newer");

    // The refusal changed nothing.
    assert_eq!(migration_ledger(&admin, &schema).await, ledger);
    assert_eq!(catalog_snapshot(&admin, &schema).await, catalog);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_tampered_migration_checksum_is_refused() {
    let (_schemas, schema) = migrated_schema("tamper").await;

    let admin = admin_client().await;
    let n = admin
        .execute(
            &format!(
                "UPDATE \"{schema}\"._duroxide_migrations SET checksum = 'deadbeef' WHERE version = 1"
            ),
            &[],
        )
        .await
        .unwrap();
    assert_eq!(n, 1);
    let ledger = migration_ledger(&admin, &schema).await;

    expect_schema_error(connect(options(&schema)).await, &schema, "checksum");
    expect_schema_error(connect(verify_only(&schema)).await, &schema, "checksum");

    // Not "repaired" behind the operator's back.
    assert_eq!(migration_ledger(&admin, &schema).await, ledger);
    assert_eq!(ledger[0].2, "deadbeef");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_dropped_table_is_refused_and_not_silently_recreated() {
    let (_schemas, schema) = migrated_schema("dropped").await;

    let admin = admin_client().await;
    admin
        .batch_execute(&format!("DROP TABLE \"{schema}\".kv_delta"))
        .await
        .unwrap();

    expect_schema_error(connect(options(&schema)).await, &schema, "kv_delta");
    expect_schema_error(connect(verify_only(&schema)).await, &schema, "kv_delta");
    assert!(!table_exists(&admin, &schema, "kv_delta").await);
    assert!(table_exists(&admin, &schema, "kv_store").await);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_ledger_with_a_gap_is_refused() {
    let (_schemas, schema) = migrated_schema("gap").await;

    // Remove the ledger row of migration 1 while its tables stay.
    let admin = admin_client().await;
    admin
        .batch_execute(&format!(
            "DELETE FROM \"{schema}\"._duroxide_migrations WHERE version = 1"
        ))
        .await
        .unwrap();
    let catalog = catalog_snapshot(&admin, &schema).await;
    if PostgresProvider::schema_version() >= 2 {
        // The ledger now starts at 2: a gap before it.
        expect_schema_error(connect(options(&schema)).await, &schema, "gap");
    } else {
        // An empty ledger over existing tables: re-applying migration 1
        // cannot succeed (its tables exist) and must fail as a schema error.
        expect_schema_error(connect(options(&schema)).await, &schema, "");
    }
    // Nothing was changed by the refused start.
    assert_eq!(catalog_snapshot(&admin, &schema).await, catalog);
    assert!(migration_ledger(&admin, &schema)
        .await
        .iter()
        .all(|row| row.0 != 1));
}

// ---------------------------------------------------------------------------
// 5. VerifyOnly
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread")]
async fn verify_only_refuses_a_never_migrated_schema_without_creating_it() {
    let (_schemas, schema) = tracked_schema("vnew"); // in case the provider wrongly creates it
    let admin = admin_client().await;

    expect_schema_error(connect(verify_only(&schema)).await, &schema, "");
    assert!(
        !schema_exists(&admin, &schema).await,
        "VerifyOnly must not create the schema"
    );

    // An existing but empty schema (created by a DBA) is refused too, and
    // left empty.
    admin
        .batch_execute(&format!("CREATE SCHEMA \"{schema}\""))
        .await
        .unwrap();
    expect_schema_error(connect(verify_only(&schema)).await, &schema, "");
    assert!(catalog_snapshot(&admin, &schema).await.is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn verify_only_accepts_a_migrated_schema_and_runs_no_ddl() {
    let (_schemas, schema) = migrated_schema("vok").await;

    let admin = admin_client().await;
    let before = SchemaState::read(&admin, &schema).await;

    tokio::time::sleep(Duration::from_millis(20)).await;
    let provider = connect(verify_only(&schema))
        .await
        .expect("VerifyOnly on a migrated schema");

    before.assert_unchanged(&admin, &schema).await;

    // The verify-only provider is fully usable.
    assert_round_trip(&provider).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn verify_only_refuses_an_incomplete_function_set_that_apply_repairs() {
    let (_schemas, schema) = migrated_schema("vfn").await;
    let admin = admin_client().await;
    let tag = connect(verify_only(&schema))
        .await
        .unwrap()
        .function_set()
        .to_string();
    let good = function_names(&admin, &schema).await;
    admin
        .batch_execute(&format!(
            "DROP FUNCTION \"{schema}\".latest_execution_id__{tag}(text)"
        ))
        .await
        .unwrap();
    let catalog = catalog_snapshot(&admin, &schema).await;

    expect_schema_error(
        connect(verify_only(&schema)).await,
        &schema,
        "not installed",
    );
    // VerifyOnly touched nothing.
    assert_eq!(catalog_snapshot(&admin, &schema).await, catalog);

    let applied = connect(options(&schema)).await.expect("Apply repairs");
    assert_eq!(function_names(&admin, &schema).await, good);
    drop(applied);

    let verified = connect(verify_only(&schema))
        .await
        .expect("VerifyOnly after the repair");
    assert_round_trip(&verified).await;
}

// ---------------------------------------------------------------------------
// 6. Function sets: an incomplete set is reinstalled, other sets never touched
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread")]
async fn an_incomplete_set_is_reinstalled_and_other_sets_are_left_alone() {
    let (_schemas, schema) = migrated_schema("refn").await;
    let admin = admin_client().await;
    let tag = connect(verify_only(&schema))
        .await
        .unwrap()
        .function_set()
        .to_string();

    // Another build's set (one function and its ledger row) and the
    // unversioned function of a release before sets: both must survive.
    admin
        .batch_execute(&format!(
            "CREATE FUNCTION \"{schema}\".now_ms__0123456789abcdef() RETURNS BIGINT
               LANGUAGE sql AS $$ SELECT 7::BIGINT $$;
             INSERT INTO \"{schema}\"._duroxide_function_sets (tag, functions)
               VALUES ('0123456789abcdef', ARRAY['now_ms__0123456789abcdef']);
             CREATE FUNCTION \"{schema}\".now_ms() RETURNS BIGINT
               LANGUAGE sql AS $$ SELECT 8::BIGINT $$;"
        ))
        .await
        .unwrap();
    let others = |catalog: Vec<String>| -> Vec<String> {
        catalog
            .into_iter()
            .filter(|e| e.starts_with("fn ") && !e.contains(&format!("__{tag}(")))
            .collect()
    };
    let others_before = others(catalog_snapshot(&admin, &schema).await);
    assert_eq!(others_before.len(), 2, "{others_before:?}");

    // Our set loses a function and gets a stale body.
    admin
        .batch_execute(&format!(
            "DROP FUNCTION \"{schema}\".latest_execution_id__{tag}(text);
             CREATE OR REPLACE FUNCTION \"{schema}\".now_ms__{tag}() RETURNS BIGINT
               LANGUAGE sql VOLATILE AS $$ SELECT NULL::BIGINT $$"
        ))
        .await
        .unwrap();

    let provider = connect(options(&schema))
        .await
        .expect("Apply reinstalls its set");
    let now_ms_body: String = admin
        .query_one(
            "SELECT p.prosrc FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
             WHERE n.nspname = $1 AND p.proname = $2",
            &[&schema, &format!("now_ms__{tag}")],
        )
        .await
        .unwrap()
        .get(0);
    assert!(now_ms_body.contains("clock_timestamp"), "{now_ms_body}");
    assert_eq!(
        others(catalog_snapshot(&admin, &schema).await),
        others_before,
        "another set's or release's functions were touched"
    );
    assert_eq!(function_ledger(&admin, &schema).await.len(), 2);
    assert_round_trip(&provider).await;
    drop(connect(verify_only(&schema)).await.expect("verifies"));
}

// ---------------------------------------------------------------------------
// 7. Schemas are independent
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread")]
async fn two_schemas_in_one_database_are_independent() {
    common::recorder::recorder();
    let admin = admin_client().await;
    common::wait::statement_stats(&admin).await;
    let schemas = Schemas::default();
    let schema_a = unique_schema("ind_a");
    let schema_b = unique_schema("ind_b");
    schemas.track(&schema_a);
    schemas.track(&schema_b);
    let b_app = unique_schema("app_ind_b");
    let a = connect(options(&schema_a)).await.unwrap();
    let b = std::sync::Arc::new(
        connect(options(&schema_b).application_name(&b_app))
            .await
            .unwrap(),
    );
    assert_eq!(a.schema(), schema_a);
    assert_eq!(b.schema(), schema_b);
    common::wait::listening(&admin, &schema_b, &b_app).await;

    let lock = Duration::from_secs(30);
    // B waits (long poll) while A gets work: A's notifications must not
    // hand B anything, and B returns empty-handed.
    let b_waiting = {
        let b = b.clone();
        tokio::spawn(async move {
            let orch = b
                .fetch_orchestration_item(lock, Duration::from_secs(3), None)
                .await
                .unwrap();
            let work = b
                .fetch_work_item(lock, Duration::ZERO, None, &TagFilter::Any)
                .await
                .unwrap();
            (orch.map(|o| o.0.instance), work.map(|w| w.0))
        })
    };
    common::wait::calls_reach(&admin, &b, "fetch_orchestration_item", 1).await;
    a.enqueue_for_orchestrator(start("shared-id", "from A"), None)
        .await
        .unwrap();
    a.enqueue_for_worker(activity("only-in-a")).await.unwrap();
    assert!(
        !b_waiting.is_finished(),
        "B's fetch ended before A's commits: it did not wait through them"
    );
    let (b_orch, b_work) = b_waiting.await.unwrap();
    assert_eq!(b_orch, None, "B fetched an orchestration of schema A");
    assert_eq!(b_work, None, "B fetched a work item of schema A");

    // The same instance id in B is a different instance.
    b.enqueue_for_orchestrator(start("shared-id", "from B"), None)
        .await
        .unwrap();
    let (b_item, _, _) = b
        .fetch_orchestration_item(lock, Duration::ZERO, None)
        .await
        .unwrap()
        .expect("B's own message");
    assert_eq!(b_item.messages, vec![start("shared-id", "from B")]);
    assert!(b
        .fetch_orchestration_item(lock, Duration::ZERO, None)
        .await
        .unwrap()
        .is_none());

    // A still has exactly its own work.
    let (a_item, _, _) = a
        .fetch_orchestration_item(lock, Duration::ZERO, None)
        .await
        .unwrap()
        .expect("A's message");
    assert_eq!(a_item.messages, vec![start("shared-id", "from A")]);
    let (a_work, _, _) = a
        .fetch_work_item(lock, Duration::ZERO, None, &TagFilter::Any)
        .await
        .unwrap()
        .expect("A's work item");
    assert_eq!(a_work, activity("only-in-a"));

    for (schema, expected) in [(&schema_a, 1i64), (&schema_b, 0)] {
        let n: i64 = admin
            .query_one(
                &format!("SELECT count(*) FROM \"{schema}\".worker_queue"),
                &[],
            )
            .await
            .unwrap()
            .get(0);
        assert_eq!(n, expected, "worker_queue rows in {schema}");
    }
}
