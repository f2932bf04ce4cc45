//! The CLI's read commands and the dashboard with the read-only role of
//! docs/operations.md ("A read-only role suffices"): exactly those grants,
//! and real answers from a store a runtime filled.

#[allow(dead_code)]
mod common;
#[allow(dead_code)]
mod fixture;

use fixture::{dashboard_at, filled_store, http_get, run_cli};
use std::process::Output;

fn json(what: &str, o: &Output) -> serde_json::Value {
    assert_eq!(
        o.status.code(),
        Some(0),
        "{what}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("{what}: not JSON: {e}"))
}

fn text(what: &str, o: &Output) -> String {
    assert_eq!(
        o.status.code(),
        Some(0),
        "{what}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_commands_and_dashboard_work_for_a_read_only_role() {
    let (store, _schemas, runtime) = filled_store("readonly").await;
    let schema = store.schema().to_string();
    let role = format!("{schema}_ro");
    let admin = common::admin_client().await;
    // The grants docs/operations.md lists, and nothing else.
    admin
        .batch_execute(&format!(
            "CREATE ROLE \"{role}\" LOGIN;
             GRANT USAGE ON SCHEMA \"{schema}\" TO \"{role}\";
             GRANT SELECT ON ALL TABLES IN SCHEMA \"{schema}\" TO \"{role}\";
             GRANT EXECUTE ON ALL FUNCTIONS IN SCHEMA \"{schema}\" TO \"{role}\";
             GRANT pg_read_all_stats TO \"{role}\";"
        ))
        .await
        .unwrap();
    let url = common::url_as(&common::server::database_url(), &role);
    let result = tokio::spawn(read_as(url, schema)).await;
    runtime.shutdown(None).await;
    admin
        .batch_execute(&format!("DROP OWNED BY \"{role}\"; DROP ROLE \"{role}\";"))
        .await
        .unwrap();
    if let Err(panic) = result {
        std::panic::resume_unwind(panic.into_panic());
    }
}

async fn read_as(url: String, schema: String) {
    let cli = |args: &'static [&'static str]| run_cli(&url, &schema, args);

    // The role really is read-only: a writing command is refused.
    let cancel = cli(&["cancel", "wait-2"]).await;
    assert_eq!(cancel.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&cancel.stderr);
    assert!(stderr.contains("42501"), "permission denied: {stderr}");

    let out = text("status", &cli(&["status"]).await);
    assert!(out.contains(&format!("store {schema}")), "{out}");
    assert!(
        out.contains("Completed 1") && out.contains("Running 2"),
        "{out}"
    );
    assert!(out.contains("vacuum:"), "{out}");
    let status = json("status --json", &cli(&["status", "--json"]).await);
    let counts = status["instances"].as_array().expect("instances");
    assert!(
        counts
            .iter()
            .any(|c| c["status"] == "Failed" && c["instances"] == 1),
        "{status}"
    );
    assert!(
        status["tables"]
            .as_array()
            .expect("tables")
            .iter()
            .any(|t| t["table"] == "history"),
        "{status}"
    );

    let out = text("list", &cli(&["list"]).await);
    assert!(
        out.contains("greet-1") && out.contains("explode-1"),
        "{out}"
    );
    let page = json("list --json", &cli(&["list", "--json"]).await);
    let mut ids: Vec<&str> = page["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|i| i["instance_id"].as_str().unwrap())
        .collect();
    ids.sort();
    assert_eq!(ids, ["explode-1", "greet-1", "wait-1", "wait-2"]);
    let failed = json(
        "list --status failed",
        &cli(&["list", "--status", "failed", "--json"]).await,
    );
    assert_eq!(failed["items"][0]["instance_id"], "explode-1", "{failed}");

    let out = text("show", &cli(&["show", "greet-1"]).await);
    assert!(out.contains("hello hello world"), "{out}");
    let detail = json("show --json", &cli(&["show", "greet-1", "--json"]).await);
    assert_eq!(detail["status"], "Completed");
    assert_eq!(detail["kv"]["greeting"], "hello world");

    let out = text("stuck", &cli(&["stuck", "--ready-for", "0"]).await);
    assert!(out.contains("wait-1"), "{out}");
    let stuck = json(
        "stuck --json",
        &cli(&["stuck", "--ready-for", "0", "--json"]).await,
    );
    assert!(
        stuck
            .as_array()
            .expect("stuck work")
            .iter()
            .any(|w| w["instance_id"] == "wait-1" && w["tag"] == "gpu"),
        "{stuck}"
    );

    let top = json("top --once", &cli(&["top", "--once", "--json"]).await);
    assert_eq!(top["status"]["schema"], schema.as_str(), "{top}");

    let ui = dashboard_at(&url, &schema, &[]);
    let get = |path: &'static str| http_get(ui.addr, path, None);
    for (path, expect) in [
        ("/", format!("store {schema}")),
        ("/", "1 completed, 1 failed".to_string()),
        ("/instances", "href=\"/instances/explode-1\"".to_string()),
        (
            "/instances?status=Failed",
            "/instances/explode-1".to_string(),
        ),
        ("/instances/greet-1", "hello hello world".to_string()),
        (
            "/stuck?ready_for=0",
            "href=\"/instances/wait-1\"".to_string(),
        ),
    ] {
        let (code, html) = get(path).await;
        assert_eq!(code, 200, "{path}: {html}");
        assert!(html.contains(&expect), "{path}: {expect:?} in {html}");
    }
    let api = |path: &'static str| async move {
        let (code, body) = get(path).await;
        assert_eq!(code, 200, "{path}: {body}");
        serde_json::from_str::<serde_json::Value>(&body)
            .unwrap_or_else(|e| panic!("{path}: not JSON: {e}: {body}"))
    };
    assert_eq!(api("/api/status").await["schema"], schema.as_str());
    let activity = api("/api/activity").await;
    let completed: u64 = activity["buckets"]
        .as_array()
        .expect("buckets")
        .iter()
        .map(|b| b["completed"].as_u64().unwrap())
        .sum();
    assert_eq!(completed, 1, "{activity}");
    assert_eq!(
        api("/api/instances").await["items"]
            .as_array()
            .expect("items")
            .len(),
        4
    );
    assert_eq!(api("/api/instances/greet-1").await["status"], "Completed");
    let minutes = api("/api/minutes").await;
    let started: u64 = minutes
        .as_array()
        .expect("minutes")
        .iter()
        .map(|m| m["started"].as_u64().unwrap())
        .sum();
    assert_eq!(started, 4, "{minutes}");
    let failures = api("/api/failures").await;
    assert_eq!(failures["by_activity"][0]["name"], "Boom", "{failures}");
    let found = api("/api/search?q=wait-").await;
    assert_eq!(found["by_prefix"].as_array().expect("by_prefix").len(), 2);
    assert!(api("/api/stuck?ready_for=0")
        .await
        .as_array()
        .expect("stuck work")
        .iter()
        .any(|w| w["instance_id"] == "wait-1"));
}
