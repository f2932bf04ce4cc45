//! Several real OS processes against one database (the `duroxide-postgres`
//! command-line tool is the process under test).

#[allow(dead_code)]
mod common;

use std::process::Command;

const CLI: &str = env!("CARGO_BIN_EXE_duroxide-postgres");

fn run_cli(verb: &str, schema: &str) -> std::process::Child {
    Command::new(CLI)
        .args([verb, "--schema", schema, &common::server::database_url()])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn duroxide-postgres")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eight_processes_migrate_one_empty_schema_once() {
    let schemas = common::Schemas::default();
    let schema = common::unique_schema("procs");
    schemas.track(&schema);

    let children: Vec<_> = (0..8).map(|_| run_cli("migrate", &schema)).collect();
    for child in children {
        let out = child.wait_with_output().expect("wait for process");
        assert!(
            out.status.success(),
            "a concurrent migrate failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    let admin = common::admin_client().await;
    let ledger: Vec<i32> = admin
        .query(
            &format!("SELECT version FROM \"{schema}\"._duroxide_migrations ORDER BY version"),
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    // One row per embedded migration file (0002-0004 live on other
    // branches until merged), in order, up to the latest version.
    let files = std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/sql/migrations"))
        .unwrap()
        .count();
    assert_eq!(ledger.len(), files, "each migration recorded exactly once");
    assert!(ledger.windows(2).all(|w| w[0] < w[1]), "{ledger:?}");
    assert_eq!(
        ledger.last().copied(),
        Some(duroxide_postgres::PostgresProvider::schema_version())
    );

    // And the migrated schema verifies from yet another process.
    let out = run_cli("verify", &schema).wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_refuses_an_unmigrated_schema_and_creates_nothing() {
    let schemas = common::Schemas::default();
    let schema = common::unique_schema("procs_verify");
    schemas.track(&schema);

    let out = run_cli("verify", &schema).wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("never migrated"));

    let admin = common::admin_client().await;
    let exists: bool = admin
        .query_one(
            "SELECT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = $1)",
            &[&schema],
        )
        .await
        .unwrap()
        .get(0);
    assert!(!exists, "verify must run no DDL");
}

#[test]
fn bad_usage_and_hostile_schema_names_are_refused() {
    let out = Command::new(CLI).arg("frobnicate").output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    // Refused before connecting: the URL points nowhere.
    let out = Command::new(CLI)
        .args([
            "migrate",
            "--schema",
            "x; DROP TABLE y",
            "postgres://nobody@127.0.0.1:1/none",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("invalid schema name"));
}
