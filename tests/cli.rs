//! The `duroxide-postgres` command-line tool against a store that a real
//! duroxide runtime filled: what each command prints (text and `--json`),
//! that text fits 100 columns, and its exit codes (0 ok, 1 error, 2 usage).

#[allow(dead_code)]
mod common;
mod fixture;

use duroxide::Client;
use duroxide_postgres::PostgresOptions;
use fixture::{dashboard, encode, filled_store, http_get, http_request, CLI, WAIT};
use std::process::{Command, Output};
use std::time::Duration;

/// Runs the CLI on `schema` (URL through `--url`) off the async runtime.
async fn cli(schema: &str, args: &[&str]) -> Output {
    fixture::run_cli(&common::server::database_url(), schema, args).await
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).to_string()
}

fn ok(o: &Output) -> String {
    assert_eq!(
        o.status.code(),
        Some(0),
        "stdout: {}\nstderr: {}",
        stdout(o),
        String::from_utf8_lossy(&o.stderr)
    );
    let text = stdout(o);
    for line in text.lines() {
        assert!(
            line.chars().count() <= 100,
            "wider than 100 columns: {line:?}"
        );
    }
    text
}

fn json(o: &Output) -> serde_json::Value {
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    serde_json::from_slice(&o.stdout).expect("valid JSON")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_commands_answer_from_a_filled_store() {
    let (store, _schemas, runtime) = filled_store("cli_read").await;
    let schema = store.schema().to_string();

    // status
    let text = ok(&cli(&schema, &["status"]).await);
    assert!(text.contains(&format!("store {schema}")), "{text}");
    assert!(text.contains("Completed 1"), "{text}");
    assert!(text.contains("Failed 1"), "{text}");
    assert!(text.contains("Running 2"), "{text}");
    assert!(
        text.contains("orchestrator") && text.contains("worker"),
        "{text}"
    );
    assert!(
        text.contains("worker_queue") && text.contains("history"),
        "{text}"
    );
    assert!(
        text.contains("vacuum:") && text.contains("notifications:"),
        "{text}"
    );
    let status = json(&cli(&schema, &["status", "--json"]).await);
    let worker = status["health"]["queues"]
        .as_array()
        .unwrap()
        .iter()
        .find(|q| q["queue"] == "worker")
        .unwrap()
        .clone();
    assert_eq!(worker["expired_leases"], 1, "{worker}");
    assert_eq!(
        worker["ready"], 1,
        "an expired lease is claimable: {worker}"
    );
    let counts = status["instances"].as_array().unwrap();
    assert!(counts
        .iter()
        .any(|c| c["status"] == "Completed" && c["instances"] == 1));

    // show: the timeline of the completed instance.
    let text = ok(&cli(&schema, &["show", "greet-1"]).await);
    assert!(text.contains("instance   greet-1"), "{text}");
    assert!(text.contains("Greet"), "{text}");
    assert!(text.contains("Completed"), "{text}");
    assert!(text.contains("OrchestrationStarted"), "{text}");
    assert!(text.contains("ActivityScheduled"), "{text}");
    assert!(text.contains("ActivityCompleted"), "{text}");
    assert!(text.contains("hello hello world"), "{text}");
    assert!(text.contains("greeted once"), "{text}");
    assert!(text.contains("greeting"), "the KV section: {text}");
    let detail = json(&cli(&schema, &["show", "greet-1", "--json"]).await);
    let kinds: Vec<&str> = detail["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["kind"].as_str().unwrap())
        .collect();
    assert_eq!(kinds.first(), Some(&"OrchestrationStarted"));
    assert_eq!(kinds.last(), Some(&"OrchestrationCompleted"));
    assert_eq!(
        kinds.iter().filter(|k| **k == "ActivityCompleted").count(),
        2
    );
    assert_eq!(detail["kv"]["greeting"], "hello world");
    assert_eq!(detail["executions"][0]["status"], "Completed");

    // show: a failure is marked, and a running instance lists pending work.
    let text = ok(&cli(&schema, &["show", "explode-1"]).await);
    assert!(text.contains("ActivityFailed !"), "{text}");
    assert!(text.contains("disk on fire"), "{text}");
    let detail = json(&cli(&schema, &["show", "wait-1", "--json"]).await);
    let pending = detail["pending"].as_array().unwrap();
    assert!(
        pending
            .iter()
            .any(|p| p["queue"] == "worker" && p["lease"] == "expired"),
        "{pending:?}"
    );
    // show: an unknown instance is an error.
    let missing = cli(&schema, &["show", "nope"]).await;
    assert_eq!(missing.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&missing.stderr).contains("no instance \"nope\""));

    // stuck: the tagged item, with why.
    let text = ok(&cli(&schema, &["stuck", "--ready-for", "0", "--attempts", "1"]).await);
    // The explanations wrap: compare with whitespace collapsed.
    let text = text.split_whitespace().collect::<Vec<_>>().join(" ");
    assert!(text.contains("wait-1"), "{text}");
    assert!(text.contains("lease expired"), "{text}");
    assert!(text.contains("tag \"gpu\""), "{text}");
    assert!(text.contains("fetched 1 times"), "{text}");
    let stuck = json(&cli(&schema, &["stuck", "--ready-for", "0", "--json"]).await);
    let item = stuck
        .as_array()
        .unwrap()
        .iter()
        .find(|w| w["queue"] == "worker")
        .expect("the worker item")
        .clone();
    assert_eq!(item["instance_id"], "wait-1");
    assert_eq!(item["tag"], "gpu");
    assert_eq!(item["kind"], "ActivityExecute");
    let reasons = item["reasons"].as_array().unwrap();
    assert!(reasons.contains(&"lease_expired".into()), "{reasons:?}");
    assert!(reasons.contains(&"ready_too_long".into()), "{reasons:?}");
    // With a long threshold and no attempt limit reached, only the expired
    // lease is left.
    let stuck = json(
        &cli(
            &schema,
            &["stuck", "--ready-for", "3600", "--attempts", "9", "--json"],
        )
        .await,
    );
    let all = stuck.as_array().unwrap();
    assert_eq!(all.len(), 1, "{all:?}");
    assert_eq!(all[0]["reasons"], serde_json::json!(["lease_expired"]));

    runtime.shutdown(None).await;
}

/// Instance ids of a `list --json` page, and its cursor.
fn page_ids(page: &serde_json::Value) -> (Vec<String>, Option<String>) {
    let ids = page["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|i| i["instance_id"].as_str().unwrap().to_string())
        .collect();
    (ids, page["next_cursor"].as_str().map(str::to_string))
}

fn sorted(mut v: Vec<String>) -> Vec<String> {
    v.sort();
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_filters_and_pages_through_instances() {
    let (store, _schemas, runtime) = filled_store("cli_list").await;
    let schema = store.schema().to_string();
    let client = Client::new(store.clone());
    client
        .start_orchestration("parent-1", "Parent", "tree")
        .await
        .unwrap();
    client
        .wait_for_orchestration("parent-1", WAIT)
        .await
        .unwrap();
    let all = [
        "child-1",
        "explode-1",
        "greet-1",
        "parent-1",
        "wait-1",
        "wait-2",
    ];

    // Text: a table within 100 columns (checked by `ok`), every instance.
    let text = ok(&cli(&schema, &["list"]).await);
    assert!(text.starts_with("INSTANCE"), "{text}");
    for id in all {
        assert!(text.contains(id), "{id} missing: {text}");
    }
    assert!(!text.contains("--cursor"), "one page only: {text}");
    let explode = text.lines().find(|l| l.starts_with("explode-1")).unwrap();
    assert!(
        explode.contains("Explode") && explode.contains("Failed"),
        "{explode}"
    );

    // Pages of 2: three pages, the union is everything, no repeats; the text
    // form prints the next cursor.
    let text = ok(&cli(&schema, &["list", "--limit", "2"]).await);
    assert!(
        text.contains("more: the same command with --cursor "),
        "{text}"
    );
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    for _ in 0..10 {
        let mut args = vec!["list", "--limit", "2", "--json"];
        if let Some(c) = &cursor {
            args.extend(["--cursor", c.as_str()]);
        }
        let (ids, next) = page_ids(&json(&cli(&schema, &args).await));
        assert!(ids.len() <= 2, "{ids:?}");
        seen.extend(ids);
        cursor = next;
        if cursor.is_none() {
            break;
        }
    }
    assert_eq!(sorted(seen), all.to_vec(), "every instance exactly once");

    // Filters.
    let ids = |args: &'static [&'static str]| {
        let schema = schema.clone();
        async move {
            let mut full = args.to_vec();
            full.push("--json");
            sorted(page_ids(&json(&cli(&schema, &full).await)).0)
        }
    };
    assert_eq!(ids(&["list", "--status", "failed"]).await, ["explode-1"]);
    assert_eq!(
        ids(&["list", "--status", "Running,Failed"]).await,
        ["explode-1", "wait-1", "wait-2"]
    );
    assert_eq!(ids(&["list", "--name", "Wait"]).await, ["wait-1", "wait-2"]);
    assert_eq!(
        ids(&["list", "--name", "Greet", "--status", "completed"]).await,
        ["child-1", "greet-1"]
    );
    assert_eq!(
        ids(&["list", "--name", "Greet", "--roots"]).await,
        ["greet-1"]
    );
    assert_eq!(ids(&["list", "--parent", "parent-1"]).await, ["child-1"]);
    assert_eq!(ids(&["list", "--since", "1h"]).await, all.to_vec());
    assert!(ids(&["list", "--before", "1h"]).await.is_empty());
    assert_eq!(
        ids(&["list", "--finished-since", "1h"]).await,
        ["child-1", "explode-1", "greet-1", "parent-1"],
        "the running ones have not finished"
    );
    assert!(ids(&["list", "--finished-before", "1h"]).await.is_empty());
    let text = ok(&cli(&schema, &["list", "--before", "1h"]).await);
    assert_eq!(text.trim(), "no instances");
    let page = json(&cli(&schema, &["list", "--status", "failed", "--json"]).await);
    assert_eq!(page["items"][0]["orchestration_name"], "Explode");
    assert_eq!(page["items"][0]["status"], "Failed");
    assert!(page["items"][0]["completed_at_ms"].as_u64().is_some());
    assert!(page["next_cursor"].is_null());

    // Bad filters are usage errors.
    for args in [
        &["list", "--status", "sleeping"][..],
        &["list", "--cursor", "not-a-cursor"],
        &["list", "--since", "yesterday"],
        &["list", "--version", "1.0.0"],
    ] {
        let o = cli(&schema, args).await;
        assert_eq!(o.status.code(), Some(2), "{args:?}");
    }
    runtime.shutdown(None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn write_commands_go_through_the_client() {
    let (store, _schemas, runtime) = filled_store("cli_write").await;
    let schema = store.schema().to_string();
    let client = Client::new(store.clone());

    // raise: the waiting instance completes with the event's data.
    ok(&cli(&schema, &["raise", "wait-1", "go", "payload-7"]).await);
    let status = client.wait_for_orchestration("wait-1", WAIT).await.unwrap();
    assert!(
        format!("{status:?}").contains("got payload-7"),
        "{status:?}"
    );

    // cancel: the other one ends cancelled (duroxide reports it as failed).
    ok(&cli(
        &schema,
        &["cancel", "wait-2", "--reason", "operator said so"],
    )
    .await);
    let status = client.wait_for_orchestration("wait-2", WAIT).await.unwrap();
    assert!(
        format!("{status:?}").contains("operator said so"),
        "{status:?}"
    );
    // Cancelling what is no longer running is an error.
    let again = cli(&schema, &["cancel", "wait-2"]).await;
    assert_eq!(again.status.code(), Some(1));

    // delete: gone afterwards.
    let text = ok(&cli(&schema, &["delete", "greet-1"]).await);
    assert!(text.contains("deleted greet-1: 1 instance(s)"), "{text}");
    assert_eq!(
        cli(&schema, &["show", "greet-1"]).await.status.code(),
        Some(1)
    );
    assert!(store
        .inspect()
        .instance("greet-1", 1)
        .await
        .unwrap()
        .is_none());
    // Unknown instances are errors, and nothing is queued for them.
    for args in [
        &["raise", "ghost", "go", "x"][..],
        &["cancel", "ghost"],
        &["delete", "ghost"],
    ] {
        let o = cli(&schema, args).await;
        assert_eq!(o.status.code(), Some(1), "{args:?}");
    }
    assert!(store
        .inspect()
        .instance("ghost", 1)
        .await
        .unwrap()
        .is_none());
    let pending: Vec<_> = store
        .inspect()
        .stuck(Duration::ZERO, 1000, 100)
        .await
        .unwrap()
        .into_iter()
        .filter(|w| w.instance_id == "ghost")
        .collect();
    assert!(pending.is_empty(), "{pending:?}");

    runtime.shutdown(None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_usage_exits_2_and_errors_exit_1() {
    let usage = |args: &'static [&'static str]| async move {
        tokio::task::spawn_blocking(move || {
            Command::new(CLI)
                .args(args)
                .env_remove("DATABASE_URL")
                .output()
                .unwrap()
        })
        .await
        .unwrap()
    };
    for args in [
        &[][..],
        &["frobnicate"],
        &["status", "--bogus"],
        &["show"],
        &["raise", "a", "b"],
        &["stuck", "--attempts", "many"],
        &["status"], // no URL at all
    ] {
        let o = usage(args).await;
        assert_eq!(o.status.code(), Some(2), "{args:?}");
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(
            err.contains("Usage:") || err.contains("try '--help'"),
            "{args:?}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
    }
    // The error names what is wrong.
    for (args, named) in [
        (&["status", "--bogus"][..], "'--bogus'"),
        (&["stuck", "--attempts", "many"], "'many'"),
        (&["frobnicate"], "'frobnicate'"),
        (&["list", "--since", "soon"], "\"soon\""),
        (&["status"], "no database URL"),
        (
            &["ui", "--allow-writes", "--url", "postgres://x/y"],
            "--allow-writes needs --token",
        ),
    ] {
        let o = usage(args).await;
        let err = String::from_utf8_lossy(&o.stderr).to_string();
        assert_eq!(o.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.contains(named), "{args:?}: {named} not in {err}");
    }
    // A store that does not exist: an error, not usage.
    let o = cli("cli_no_such_schema", &["status"]).await;
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).starts_with("error:"));
}

/// Runs the CLI with `args` only (no URL, no schema), off the async runtime.
async fn bare(args: Vec<&'static str>) -> Output {
    tokio::task::spawn_blocking(move || {
        Command::new(CLI)
            .args(&args)
            .env_remove("DATABASE_URL")
            .output()
            .unwrap()
    })
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn help_version_and_completions_follow_the_conventions() {
    let commands = [
        "migrate",
        "verify",
        "status",
        "show",
        "list",
        "stuck",
        "cancel",
        "raise",
        "delete",
        "purge",
        "top",
        "ui",
        "completions",
    ];
    let top = ok(&bare(vec!["--help"]).await);
    for c in commands {
        assert!(top.contains(&format!("  {c} ")), "{c} listed: {top}");
        let text = ok(&bare(vec![c, "--help"]).await);
        assert!(
            text.contains(&format!("Usage: duroxide-postgres {c}")),
            "{c}: {text}"
        );
        assert!(
            text.contains("--url <URL>"),
            "{c}: the common options: {text}"
        );
    }
    let version = ok(&bare(vec!["--version"]).await);
    assert_eq!(
        version.trim(),
        format!("duroxide-postgres {}", env!("CARGO_PKG_VERSION"))
    );
    for (shell, marker) in [
        ("bash", "_duroxide__postgres()"),
        ("zsh", "#compdef duroxide-postgres"),
        ("fish", "complete -c duroxide-postgres"),
    ] {
        let o = bare(vec!["completions", shell]).await;
        assert_eq!(o.status.code(), Some(0), "{shell}");
        let script = stdout(&o);
        assert!(script.contains(marker), "{shell}: {marker} in {script}");
        assert!(
            script.contains("purge") && script.contains("older-than"),
            "{shell}: {script}"
        );
    }
    let o = bare(vec!["completions", "tcsh-9"]).await;
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("'tcsh-9'"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn top_once_prints_one_frame_of_the_store() {
    let (store, _schemas, runtime) = filled_store("cli_top").await;
    let schema = store.schema().to_string();
    let text = ok(&cli(&schema, &["top", "--once"]).await);
    assert!(
        text.starts_with(&format!("duroxide-postgres top · store {schema}")),
        "{text}"
    );
    assert!(!text.contains("Ctrl-C"), "one frame, not live: {text}");
    assert!(
        text.contains("Completed 1") && text.contains("Running 2"),
        "{text}"
    );
    assert!(text.contains("history events/s"), "{text}");
    assert!(
        text.contains("2 finished in the last minute (1 failed)"),
        "{text}"
    );
    let worker = text
        .lines()
        .find(|l| l.starts_with("worker "))
        .unwrap_or_else(|| panic!("a worker row: {text}"));
    let cells: Vec<&str> = worker.split_whitespace().collect();
    // QUEUE READY DELAYED LEASED EXPIRED ...: the expired lease of wait-1's item.
    assert_eq!(cells[4], "1", "{worker}");
    assert!(text.contains("leases      0 live, 1 expired"), "{text}");
    assert!(text.contains("poison      "), "{text}");

    let frame = json(&cli(&schema, &["top", "--once", "--json"]).await);
    assert_eq!(frame["status"]["schema"], schema.as_str());
    assert!(frame["history_events_per_s"].as_f64().is_some(), "{frame}");
    assert_eq!(frame["finished_last_minute"], 2);
    runtime.shutdown(None).await;
}

// ---------------------------------------------------------------------------
// `duroxide-postgres ui`: the dashboard's pages and JSON over HTTP.
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_serves_each_page_and_json_endpoint() {
    let (store, _schemas, runtime) = filled_store("cli_ui").await;
    let schema = store.schema().to_string();
    let ui = dashboard(&schema, &[]);

    let (code, html) = http_get(ui.addr, "/", None).await;
    assert_eq!(code, 200, "{html}");
    assert!(html.contains(&format!("store {schema}")), "{html}");
    assert!(html.contains(">Completed</a></td><td>1</td>"), "{html}");
    assert!(
        html.contains("<tr class=\"failed\"><td><a href=\"/instances?status=Failed\">Failed</a></td><td>1</td>"),
        "{html}"
    );
    assert!(html.contains("worker_queue"), "{html}");
    assert!(html.contains("href=\"/instances\""), "linked: {html}");
    assert!(html.contains("href=\"/instances?status=Failed\""), "{html}");
    // The chart: one completion and one failure in the last hour, in words
    // and as bars (12 buckets of each kind whose counts add up).
    assert!(
        html.contains("id=\"activity\" data-completed=\"1\" data-failed=\"1\""),
        "{html}"
    );
    assert!(html.contains("1 completed, 1 failed"), "{html}");
    let bars = |class: &str| -> Vec<u64> {
        html.split(&format!("<rect class=\"{class}\""))
            .skip(1)
            .map(|r| {
                let n = r.split("data-count=\"").nth(1).unwrap();
                n[..n.find('"').unwrap()].parse().unwrap()
            })
            .collect()
    };
    assert_eq!(bars("ok").len(), 12, "{html}");
    assert_eq!(bars("ok").iter().sum::<u64>(), 1, "{html}");
    assert_eq!(bars("bad").iter().sum::<u64>(), 1, "{html}");
    assert_eq!(bars("ok").last(), Some(&1), "the latest bucket: {html}");
    let (code, body) = http_get(ui.addr, "/api/activity", None).await;
    assert_eq!(code, 200, "{body}");
    let activity: serde_json::Value = serde_json::from_str(&body).unwrap();
    let buckets = activity["buckets"].as_array().unwrap();
    assert_eq!(buckets.len(), 12);
    assert_eq!(activity["bucket_ms"], 300_000);
    let total = |k: &str| buckets.iter().map(|b| b[k].as_u64().unwrap()).sum::<u64>();
    assert_eq!((total("completed"), total("failed")), (1, 1));

    // The instance list: every instance, failures highlighted, filters.
    let (code, html) = http_get(ui.addr, "/instances", None).await;
    assert_eq!(code, 200, "{html}");
    for id in ["greet-1", "explode-1", "wait-1", "wait-2"] {
        assert!(
            html.contains(&format!("href=\"/instances/{id}\"")),
            "{id}: {html}"
        );
    }
    assert!(
        html.contains("<tr class=\"failed\"><td><a href=\"/instances/explode-1\">"),
        "{html}"
    );
    assert!(html.contains("<form class=\"filters\""), "{html}");
    let (_, html) = http_get(ui.addr, "/instances?status=failed&name=", None).await;
    assert!(html.contains("/instances/explode-1"), "{html}");
    assert!(!html.contains("/instances/greet-1"), "{html}");
    let (_, html) = http_get(ui.addr, "/instances?name=Wait&since=1h&roots=1", None).await;
    assert!(html.contains("/instances/wait-1") && html.contains("/instances/wait-2"));
    assert!(!html.contains("/instances/explode-1"), "{html}");
    let (_, html) = http_get(ui.addr, "/instances?finished_since=1h", None).await;
    assert!(html.contains("/instances/greet-1") && html.contains("/instances/explode-1"));
    assert!(!html.contains("/instances/wait-1"), "not finished: {html}");
    let (_, html) = http_get(ui.addr, "/instances?before=1h", None).await;
    assert!(html.contains("No instances match."), "{html}");
    // Pages of 3: the next-page link keeps the filters and leads to the rest.
    let (_, html) = http_get(ui.addr, "/instances?limit=3&since=1h", None).await;
    let next = html
        .split("<a id=\"next\" href=\"")
        .nth(1)
        .expect("a next-page link");
    let next = next[..next.find('"').unwrap()].replace("&amp;", "&");
    assert!(
        next.contains("since=1h") && next.contains("limit=3"),
        "{next}"
    );
    let (code, rest) = http_get(ui.addr, &next, None).await;
    assert_eq!(code, 200, "{rest}");
    let listed = |page: &str| {
        ["greet-1", "explode-1", "wait-1", "wait-2"]
            .into_iter()
            .filter(|id| page.contains(&format!("href=\"/instances/{id}\"")))
            .count()
    };
    assert_eq!((listed(&html), listed(&rest)), (3, 1));
    assert!(!rest.contains("id=\"next\""), "{rest}");
    // And as JSON.
    let (code, body) = http_get(ui.addr, "/api/instances?limit=3", None).await;
    assert_eq!(code, 200, "{body}");
    let page: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(page["items"].as_array().unwrap().len(), 3);
    let cursor = page["next_cursor"].as_str().expect("a cursor").to_string();
    let (_, body) = http_get(
        ui.addr,
        &format!(
            "/api/instances?limit=3&cursor={}",
            cursor.replace(':', "%3A")
        ),
        None,
    )
    .await;
    let page: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(page["items"].as_array().unwrap().len(), 1, "{page}");
    let (_, body) = http_get(ui.addr, "/api/instances?status=Failed", None).await;
    let page: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(page["items"][0]["instance_id"], "explode-1");
    assert_eq!(page["items"].as_array().unwrap().len(), 1);
    for bad in [
        "/api/instances?status=asleep",
        "/instances?cursor=x",
        "/instances?since=soon",
    ] {
        assert_eq!(http_get(ui.addr, bad, None).await.0, 400, "{bad}");
    }

    let (code, html) = http_get(ui.addr, "/instances/greet-1", None).await;
    assert_eq!(code, 200, "{html}");
    assert!(
        html.contains("ActivityCompleted") && html.contains("hello hello world"),
        "{html}"
    );
    assert!(html.contains("greeted once"), "{html}");
    let (_, html) = http_get(ui.addr, "/instances/explode-1", None).await;
    assert!(
        html.contains("<tr class=\"failed\">") && html.contains("ActivityFailed"),
        "failures highlighted: {html}"
    );
    let (code, _) = http_get(ui.addr, "/instances/nope", None).await;
    assert_eq!(code, 404);

    let (code, html) = http_get(ui.addr, "/stuck?ready_for=0", None).await;
    assert_eq!(code, 200);
    assert!(html.contains("href=\"/instances/wait-1\""), "{html}");
    assert!(html.contains("tag &quot;gpu&quot;"), "escaped: {html}");

    let (code, body) = http_get(ui.addr, "/api/status", None).await;
    assert_eq!(code, 200);
    let status: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(status["schema"], schema.as_str());
    let (_, body) = http_get(ui.addr, "/api/instances/greet-1", None).await;
    let detail: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(detail["status"], "Completed");
    let (_, body) = http_get(ui.addr, "/api/stuck?ready_for=0", None).await;
    let stuck: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert!(stuck
        .as_array()
        .unwrap()
        .iter()
        .any(|w| w["instance_id"] == "wait-1"));
    let (code, css) = http_get(ui.addr, "/style.css", None).await;
    assert_eq!(code, 200);
    assert!(css.contains("tr.failed"));

    runtime.shutdown(None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_requires_its_token_when_given_one() {
    let options = PostgresOptions::new().health_sample_interval(None);
    let (store, _schemas) = common::provider("cli_token", options).await;
    let ui = dashboard(store.schema(), &["--token", "s3cret"]);
    assert_eq!(http_get(ui.addr, "/", None).await.0, 401);
    assert_eq!(http_get(ui.addr, "/api/status", Some("wrong")).await.0, 401);
    assert_eq!(
        http_get(ui.addr, "/api/status", Some("s3cret")).await.0,
        200
    );
    assert_eq!(http_get(ui.addr, "/", Some("s3cret")).await.0, 200);
}

/// `purge`: a dry run deletes nothing; a purge of completed trees deletes
/// the completed instance and keeps the failed and the running ones.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn purge_deletes_finished_trees_and_a_dry_run_nothing() {
    let (store, _schemas, runtime) = filled_store("cli_purge").await;
    let schema = store.schema().to_string();
    let args = ["purge", "--older-than", "0s", "--status", "completed"];

    let dry: Vec<&str> = args.iter().copied().chain(["--dry-run"]).collect();
    let out = ok(&cli(&schema, &dry).await);
    assert!(
        out.contains("1 trees / 1 instances would be deleted"),
        "{out}"
    );
    ok(&cli(&schema, &["show", "greet-1"]).await);

    let out = ok(&cli(&schema, &args).await);
    assert!(out.contains("1 trees / 1 instances deleted"), "{out}");
    let gone = cli(&schema, &["show", "greet-1"]).await;
    assert_eq!(gone.status.code(), Some(1), "greet-1 is gone");
    ok(&cli(&schema, &["show", "explode-1"]).await);
    ok(&cli(&schema, &["show", "wait-1"]).await);

    let bad = cli(&schema, &["purge", "--older-than", "soon"]).await;
    assert_eq!(
        bad.status.code(),
        Some(2),
        "an age without a unit is bad usage"
    );
    runtime.shutdown(None).await;
}

/// The form's CSRF token on an instance page (`name="csrf" value="..."`).
fn csrf_of(html: &str) -> Option<String> {
    let at = html.split("name=\"csrf\" value=\"").nth(1)?;
    Some(at[..at.find('"')?].to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_overview_has_per_minute_figures_and_grouped_failures() {
    let (store, _schemas, runtime) = filled_store("cli_ui_minutes").await;
    let ui = dashboard(store.schema(), &[]);

    let (code, body) = http_get(ui.addr, "/api/minutes", None).await;
    assert_eq!(code, 200, "{body}");
    let minutes: serde_json::Value = serde_json::from_str(&body).unwrap();
    let minutes = minutes.as_array().unwrap();
    assert_eq!(minutes.len(), 60);
    let sum = |k: &str| minutes.iter().map(|m| m[k].as_u64().unwrap()).sum::<u64>();
    assert_eq!(
        (sum("started"), sum("completed"), sum("failed")),
        (4, 1, 1),
        "{minutes:?}"
    );
    let with_finishes: Vec<_> = minutes.iter().filter(|m| !m["p50_ms"].is_null()).collect();
    assert!(!with_finishes.is_empty(), "{minutes:?}");
    for m in &with_finishes {
        let (p50, p99, max) = (
            m["p50_ms"].as_u64().unwrap(),
            m["p99_ms"].as_u64().unwrap(),
            m["max_ms"].as_u64().unwrap(),
        );
        assert!(p50 <= p99 && p99 <= max && max < 60_000, "{m}");
    }
    // Minutes are consecutive, oldest first.
    for pair in minutes.windows(2) {
        assert_eq!(
            pair[1]["from_ms"].as_i64().unwrap() - pair[0]["from_ms"].as_i64().unwrap(),
            60_000
        );
    }

    let (_, body) = http_get(ui.addr, "/api/failures", None).await;
    let failures: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(failures["instances"], 1, "{failures}");
    assert_eq!(
        failures["by_orchestration"][0]["name"], "Explode",
        "{failures}"
    );
    assert_eq!(failures["by_orchestration"][0]["failures"], 1);
    let activity = &failures["by_activity"][0];
    assert_eq!(activity["name"], "Boom", "{failures}");
    assert_eq!(activity["latest_instance_id"], "explode-1");
    let error = activity["latest_error"].as_str().unwrap();
    assert!(
        error.starts_with("boom: disk on fire (") && !error.contains('{'),
        "readable, not JSON: {error}"
    );

    let (_, html) = http_get(ui.addr, "/", None).await;
    assert!(
        html.contains("id=\"minutes\"")
            && html.contains("data-started=\"4\" data-completed=\"1\" data-failed=\"1\""),
        "{html}"
    );
    assert_eq!(html.matches("<rect class=\"started\"").count(), 60);
    assert!(
        html.contains("id=\"latency\">latest minute with finishes"),
        "{html}"
    );
    assert!(html.contains("<polyline class=\"p50\" points=\""), "{html}");
    let by_activity = html
        .split("id=\"failures-by-activity\"")
        .nth(1)
        .expect("table");
    assert!(by_activity.contains("<td>Boom</td>"), "{by_activity}");
    assert!(by_activity.contains("boom: disk on fire"), "{by_activity}");
    runtime.shutdown(None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_finds_instances_by_id_prefix_and_orchestration_name() {
    let (store, _schemas, runtime) = filled_store("cli_ui_search").await;
    let ui = dashboard(store.schema(), &[]);

    // An exact id opens the instance.
    let (code, head, _) = http_request(ui.addr, "GET", "/search?q=greet-1", "", "").await;
    assert_eq!(code, 303, "{head}");
    assert!(head.contains("location: /instances/greet-1"), "{head}");
    // A prefix lists what starts with it, and nothing else.
    let (code, html) = http_get(ui.addr, "/search?q=wait-", None).await;
    assert_eq!(code, 200, "{html}");
    let by_prefix = html.split("id=\"by-prefix\"").nth(1).unwrap();
    let by_prefix = by_prefix.split("<h2>").next().unwrap();
    assert!(
        by_prefix.contains("href=\"/instances/wait-1\"")
            && by_prefix.contains("href=\"/instances/wait-2\""),
        "{html}"
    );
    assert!(!by_prefix.contains("greet-1") && !by_prefix.contains("explode-1"));
    // An orchestration name.
    let (_, body) = http_get(ui.addr, "/api/search?q=Wait", None).await;
    let found: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(found["exact"], false);
    assert_eq!(found["by_prefix"].as_array().unwrap().len(), 0, "{found}");
    let names: Vec<&str> = found["by_name"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["instance_id"].as_str().unwrap())
        .collect();
    assert_eq!(names.len(), 2, "{found}");
    assert!(names.contains(&"wait-1") && names.contains(&"wait-2"));
    let (_, body) = http_get(ui.addr, "/api/search?q=ex", None).await;
    let found: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(found["by_prefix"][0]["instance_id"], "explode-1", "{found}");
    assert_eq!(http_get(ui.addr, "/api/search?q=", None).await.0, 400);
    // Prefix matches a page at a time, keyset on the id.
    let (_, body) = http_get(ui.addr, "/api/search?q=wait-&limit=1", None).await;
    let first: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(first["by_prefix"][0]["instance_id"], "wait-1", "{first}");
    assert_eq!(first["next_after"], "wait-1", "{first}");
    let (_, body) = http_get(ui.addr, "/api/search?q=wait-&limit=1&after=wait-1", None).await;
    let second: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(second["by_prefix"][0]["instance_id"], "wait-2", "{second}");
    let (_, body) = http_get(ui.addr, "/api/search?q=wait-&limit=1&after=wait-2", None).await;
    let last: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(last["by_prefix"].as_array().unwrap().len(), 0, "{last}");
    assert!(last["next_after"].is_null(), "{last}");
    let (_, html) = http_get(ui.addr, "/search?q=wait-&limit=1", None).await;
    assert!(
        html.contains("<a id=\"next\" href=\"/search?q=wait-&amp;after=wait-1\">"),
        "{html}"
    );
    runtime.shutdown(None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_page_shows_a_hostile_id_name_or_payload_unescaped() {
    let (store, _schemas, runtime) = filled_store("cli_ui_hostile").await;
    let client = Client::new(store.clone());
    let id = "<img src=x onerror=alert(1)>\"&'x";
    let input = "<script>alert('input')</script>";
    client
        .start_orchestration(id, "Greet", input)
        .await
        .unwrap();
    client.wait_for_orchestration(id, WAIT).await.unwrap();
    let ui = dashboard(store.schema(), &[]);
    let escaped_id = "&lt;img src=x onerror=alert(1)&gt;&quot;&amp;'x";
    let page = format!("/instances/{}", encode(id));
    for path in [
        "/".to_string(),
        "/instances".to_string(),
        page.clone(),
        format!("/search?q={}", encode("<img")),
        format!("/instances?name={}", encode("<b>no such</b>")),
        format!("/instances/{}", encode("<b>missing</b>")),
    ] {
        let (code, html) = http_get(ui.addr, &path, None).await;
        assert!(code == 200 || code == 404, "{path}: {code}");
        assert!(!html.contains("<img"), "{path}: raw id in {html}");
        assert!(
            !html.contains("<script>alert"),
            "{path}: raw payload in {html}"
        );
        assert!(
            !html.contains("<b>no such") && !html.contains("<b>missing"),
            "{path}: {html}"
        );
    }
    let (_, html) = http_get(ui.addr, &page, None).await;
    assert!(
        html.contains(&format!("<h1>instance {escaped_id}</h1>")),
        "{html}"
    );
    assert!(
        html.contains("hello hello &lt;script&gt;alert('input')&lt;/script&gt;"),
        "the output, escaped: {html}"
    );
    let (_, html) = http_get(ui.addr, "/instances", None).await;
    assert!(
        html.contains(&format!(
            "href=\"/instances/{}\">{escaped_id}</a>",
            encode(id)
        )),
        "linked by its percent-encoded id: {html}"
    );
    runtime.shutdown(None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_writes_need_a_token_the_flag_and_the_csrf_token() {
    let (store, _schemas, runtime) = filled_store("cli_ui_writes").await;
    let schema = store.schema().to_string();
    let client = Client::new(store.clone());
    let post = |addr, path: &'static str, headers: String, form: String| async move {
        let (code, head, body) = http_request(addr, "POST", path, &headers, &form).await;
        (code, head, body)
    };

    // Read-only (no flags; a token alone): every write is refused with 403,
    // and the page offers none.
    for extra in [&[][..], &["--token", "t0k"]] {
        let ui = dashboard(&schema, extra);
        let auth = if extra.is_empty() {
            String::new()
        } else {
            "Authorization: Bearer t0k\r\n".to_string()
        };
        let (_, _, html) = http_request(ui.addr, "GET", "/instances/wait-1", &auth, "").await;
        assert!(html.contains("id=\"read-only\""), "{html}");
        assert!(csrf_of(&html).is_none(), "{html}");
        for path in [
            "/instances/wait-1/cancel",
            "/instances/wait-1/raise",
            "/instances/greet-1/delete",
        ] {
            let (code, _, body) = post(
                ui.addr,
                path,
                auth.clone(),
                "csrf=guess&name=go&data=x".into(),
            )
            .await;
            assert_eq!(code, 403, "{extra:?} {path}: {body}");
            assert!(body.contains("read-only"), "{body}");
        }
        // GET is not a write either.
        assert_eq!(
            http_request(ui.addr, "GET", "/instances/wait-1/cancel", &auth, "")
                .await
                .0,
            405
        );
    }
    assert!(
        store
            .inspect()
            .instance("greet-1", 0)
            .await
            .unwrap()
            .is_some(),
        "nothing was deleted"
    );

    // Token and --allow-writes: the page offers the forms; a write needs
    // the token, and the CSRF token from a page of this host.
    let ui = dashboard(&schema, &["--token", "t0k", "--allow-writes"]);
    let auth = "Authorization: Bearer t0k\r\n".to_string();
    let (code, _, html) = http_request(ui.addr, "GET", "/instances/wait-1", &auth, "").await;
    assert_eq!(code, 200);
    assert!(html.contains("id=\"actions\"") && html.contains("/instances/wait-1/cancel"));
    let csrf = csrf_of(&html).expect("a CSRF token");
    let refused = [
        (String::new(), format!("csrf={csrf}&name=go&data=x")), // no bearer token
        (auth.clone(), "name=go&data=x".to_string()),           // no CSRF token
        (auth.clone(), "csrf=0000&name=go&data=x".to_string()), // a wrong one
        (
            format!("{auth}Origin: http://evil.example\r\n"),
            format!("csrf={csrf}&name=go&data=x"),
        ),
    ];
    for (headers, form) in refused {
        let (code, _, body) = post(ui.addr, "/instances/wait-1/raise", headers.clone(), form).await;
        assert!(code == 401 || code == 403, "{headers:?}: {code} {body}");
    }
    // The cookie of /login works as the bearer token does.
    let (code, head, _) = http_request(ui.addr, "GET", "/login?token=t0k", "", "").await;
    assert_eq!(code, 303, "{head}");
    assert!(head.contains("duroxide_ui_token=t0k") && head.contains("SameSite=Strict"));
    let cookie = "Cookie: duroxide_ui_token=t0k\r\n".to_string();
    let origin = format!("Origin: http://{}\r\n", ui.addr);
    let (code, head, body) = post(
        ui.addr,
        "/instances/wait-1/raise",
        format!("{cookie}{origin}"),
        format!("csrf={csrf}&name=go&data={}", encode("from the dashboard")),
    )
    .await;
    assert_eq!(code, 303, "{head}{body}");
    assert!(head.contains("location: /instances/wait-1"), "{head}");
    let status = client.wait_for_orchestration("wait-1", WAIT).await.unwrap();
    assert!(
        format!("{status:?}").contains("got from the dashboard"),
        "{status:?}"
    );

    let (code, _, body) = post(
        ui.addr,
        "/instances/wait-2/cancel",
        auth.clone(),
        format!("csrf={csrf}&reason=ops"),
    )
    .await;
    assert_eq!(code, 303, "{body}");
    let status = client.wait_for_orchestration("wait-2", WAIT).await.unwrap();
    assert!(format!("{status:?}").contains("ops"), "{status:?}");
    // Cancelling what is not running is a conflict, not a success.
    let (code, _, _) = post(
        ui.addr,
        "/instances/greet-1/cancel",
        auth.clone(),
        format!("csrf={csrf}"),
    )
    .await;
    assert_eq!(code, 409);

    let (code, head, _) = post(
        ui.addr,
        "/instances/greet-1/delete",
        auth.clone(),
        format!("csrf={csrf}"),
    )
    .await;
    assert_eq!(code, 303, "{head}");
    assert!(store
        .inspect()
        .instance("greet-1", 0)
        .await
        .unwrap()
        .is_none());
    runtime.shutdown(None).await;
}

/// `command` (shell words, each quoted here) under a pseudo-terminal
/// (util-linux `script`), its output read as it comes; returns once
/// `enough` holds for the output so far, or panics after `WAIT`.
fn on_a_terminal(command: &[&str], enough: impl Fn(&str) -> bool) -> String {
    use std::io::Read;
    let quoted: Vec<String> = command
        .iter()
        .map(|w| format!("'{}'", w.replace('\'', "'\\''")))
        .collect();
    let mut child = Command::new("script")
        .args(["-qfec", &quoted.join(" "), "/dev/null"])
        .env_remove("DATABASE_URL")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::inherit())
        .spawn()
        .expect("util-linux `script` runs a command on a pseudo-terminal");
    let mut stdout = child.stdout.take().unwrap();
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::<u8>::new()));
    let reader = {
        let seen = seen.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = stdout.read(&mut buf) {
                if n == 0 {
                    break;
                }
                seen.lock().unwrap().extend_from_slice(&buf[..n]);
            }
        })
    };
    let deadline = std::time::Instant::now() + WAIT;
    let text = loop {
        let text = String::from_utf8_lossy(&seen.lock().unwrap()).to_string();
        let exited = child.try_wait().unwrap().is_some();
        if enough(&text) || exited {
            break text;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{command:?} on a terminal: {text:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    let _ = child.kill();
    let _ = child.wait();
    let _ = reader.join();
    text
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_a_terminal_top_redraws_and_purge_and_migrate_show_progress() {
    let (store, schemas, runtime) = filled_store("cli_tty").await;
    let schema = store.schema().to_string();
    let url = common::server::database_url();
    // migrate: a spinner while it works, then the plain answer.
    let fresh = common::unique_schema("cli_tty_new");
    schemas.track(&fresh);
    let migrated = {
        let (fresh, url) = (fresh.clone(), url.clone());
        tokio::task::spawn_blocking(move || {
            on_a_terminal(
                &[CLI, "migrate", "--schema", &fresh, "--url", &url],
                |out| out.contains("is up to date"),
            )
        })
        .await
        .unwrap()
    };
    assert!(
        migrated.contains(&format!("migrating schema {fresh}")) && migrated.contains("\x1b[2K"),
        "{migrated:?}"
    );
    assert!(
        migrated.contains(&format!("schema {fresh} is up to date")),
        "{migrated:?}"
    );
    let clear = "\x1b[H\x1b[2J";
    let live = {
        let (schema, url) = (schema.clone(), url.clone());
        tokio::task::spawn_blocking(move || {
            on_a_terminal(
                &[
                    CLI,
                    "top",
                    "--interval",
                    "1",
                    "--schema",
                    &schema,
                    "--url",
                    &url,
                ],
                |out| out.matches(clear).count() >= 2,
            )
        })
        .await
        .unwrap()
    };
    // Redrawn in place, frame after frame, until stopped.
    assert!(live.matches(clear).count() >= 2, "{live:?}");
    assert!(live.contains("every 1 s, Ctrl-C quits"), "{live:?}");
    assert!(live.contains(&format!("store {schema}")), "{live:?}");

    let purge = tokio::task::spawn_blocking(move || {
        on_a_terminal(
            &[
                CLI,
                "purge",
                "--older-than",
                "0s",
                "--dry-run",
                "--schema",
                &schema,
                "--url",
                &url,
            ],
            |out| out.contains("roots kept"),
        )
    })
    .await
    .unwrap();
    // The completed and the failed tree.
    assert!(
        purge.contains("2 trees / 2 instances would be deleted"),
        "{purge:?}"
    );
    // On a terminal the running counts are one redrawn line (cleared at
    // the end), not a plain line per second.
    assert!(purge.contains("\x1b[2K"), "a progress line: {purge:?}");
    assert!(purge.contains("1 batches, 2 roots seen"), "{purge:?}");
    assert!(!purge.contains("\n  1 batches"), "{purge:?}");
    runtime.shutdown(None).await;
}
