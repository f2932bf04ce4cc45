//! The store on a Citus cluster with schema-based sharding
//! (docs/scale-out.md, "Citus"; docs/decisions/0013).
//!
//! Runs only when `DUROXIDE_CITUS_URL` names a Citus coordinator whose
//! database has `citus.enable_schema_based_sharding = on` and at least two
//! worker nodes (the cluster cannot be built in CI: Debian has no Citus
//! package). Without it the binary prints one line saying it did not run and
//! why, runs nothing and claims nothing: it has no test harness, so no
//! "test … ok" lines are printed for checks that never ran.
//!
//! With the URL set it runs, against the coordinator, and prints one line per
//! check and a summary, failing (exit 1) if any check fails:
//! * `install`: a new store is a distributed schema, with the migration
//!   ledger and the catalog (columns, defaults, indexes, sequence owners) of
//!   a store on plain PostgreSQL;
//! * `validation::…`: every duroxide validation function (the list shared
//!   with `validation.rs`, `common/validation_suite.rs`);
//! * `e2e`, `wakeups`, `fault_g`, `shards`, `schema_move`: see each check's
//!   comment.
//!
//! `cargo test --test citus -- FILTER` runs the checks whose names contain
//! FILTER.

// `common` is shared with other test binaries; not every helper is used here.
#[allow(dead_code)]
mod common;

// The workload tool, reused in-process (its `main` is not used here).
#[allow(dead_code)]
#[path = "../src/bin/duroxide-postgres-workload.rs"]
mod workload;

use common::PgFactory;
use duroxide::provider_validations::ProviderFactory;
use duroxide_postgres::PostgresOptions;
use std::future::Future;
use std::pin::Pin;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

#[path = "citus/checks.rs"]
mod citus_checks;

/// The variable naming the coordinator.
const URL_VAR: &str = "DUROXIDE_CITUS_URL";

/// How many validation functions run at once (the machine has two cores).
const PARALLEL: usize = 4;

static URL: OnceLock<String> = OnceLock::new();

/// The coordinator's URL (set before any check runs).
fn citus_url() -> String {
    URL.get().expect("the Citus URL is set").clone()
}

/// The validation suite's provider options: the defaults, but client calls
/// give up after 2 s instead of 30. A statement Citus cannot plan fails with
/// SQLSTATE 0A000, which the store classifies as retryable (on PostgreSQL it
/// is "cached plan must not change result type", cured by re-preparing), so
/// each such call would otherwise ride out the whole budget. The loopback
/// cluster has no transient failures for the budget to cover.
fn options() -> PostgresOptions {
    PostgresOptions::new().client_retry_budget(Duration::from_secs(2))
}

fn long_poll_factory() -> PgFactory {
    PgFactory::on(citus_url(), options(), true)
}

fn short_poll_factory() -> PgFactory {
    PgFactory::on(citus_url(), options(), false)
}

include!("common/validation_suite.rs");

type Check = Pin<Box<dyn Future<Output = Result<String, String>> + Send>>;
type CheckFn = fn() -> Check;

fn main() {
    let url = match std::env::var(URL_VAR) {
        Ok(url) if !url.trim().is_empty() => url,
        _ => {
            println!(
                "citus: not run: {URL_VAR} is not set (it names a Citus coordinator; \
                 see docs/scale-out.md, \"Citus\")"
            );
            return;
        }
    };
    URL.set(url).expect("set once");
    // Arguments cargo passes through; the first that is not a flag filters.
    let filter = std::env::args()
        .skip(1)
        .find(|a| !a.starts_with('-'))
        .unwrap_or_default();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .enable_all()
        .build()
        .unwrap();
    let failed = runtime.block_on(run(&filter));
    std::process::exit(i32::from(failed > 0));
}

/// Runs the selected checks; returns how many failed.
async fn run(filter: &str) -> usize {
    let began = Instant::now();
    let mut failed = 0;
    let mut passed = 0;
    let checks: Vec<(&str, CheckFn)> = vec![
        ("install", || Box::pin(citus_checks::install(citus_url()))),
        ("e2e", || Box::pin(citus_checks::e2e(citus_url()))),
        ("wakeups", || Box::pin(citus_checks::wakeups(citus_url()))),
        ("fault_g", || Box::pin(citus_checks::fault_g(citus_url()))),
        ("shards", || Box::pin(citus_checks::shards(citus_url()))),
        ("schema_move", || {
            Box::pin(citus_checks::schema_move(citus_url()))
        }),
    ];
    for (name, check) in checks.iter().filter(|(n, _)| n.contains(filter)) {
        let at = Instant::now();
        match tokio::spawn(check()).await {
            Ok(Ok(detail)) => {
                passed += 1;
                println!(
                    "citus {name}: ok ({:.1} s) {detail}",
                    at.elapsed().as_secs_f64()
                );
            }
            Ok(Err(why)) => {
                failed += 1;
                println!("citus {name}: FAILED: {why}");
            }
            Err(e) => {
                failed += 1;
                println!("citus {name}: FAILED (panicked): {e}");
            }
        }
    }

    // The validation suite, PARALLEL at a time, each in a task of its own
    // (a panic fails that function only).
    assert_eq!(CASES.len(), ALL.len());
    let selected: Vec<_> = CASES
        .iter()
        .filter(|(n, _)| format!("validation::{n}").contains(filter))
        .collect();
    if !selected.is_empty() {
        let mut valid_failed = Vec::new();
        let mut valid_passed = 0;
        let permits = std::sync::Arc::new(tokio::sync::Semaphore::new(PARALLEL));
        let mut tasks = Vec::new();
        for (name, case) in &selected {
            let permit = permits.clone().acquire_owned().await.unwrap();
            let task = tokio::spawn(async move {
                let outcome = tokio::spawn(case()).await;
                drop(permit);
                outcome
            });
            tasks.push((*name, task));
        }
        for (name, task) in tasks {
            match task.await.unwrap() {
                Ok(()) => {
                    valid_passed += 1;
                    println!("citus validation::{name}: ok");
                }
                Err(_) => {
                    println!("citus validation::{name}: FAILED");
                    valid_failed.push(name);
                }
            }
        }
        println!(
            "citus validation: {valid_passed} of {} passed{}",
            selected.len(),
            if valid_failed.is_empty() {
                String::new()
            } else {
                format!("; failed: {}", valid_failed.join(", "))
            }
        );
        passed += valid_passed;
        failed += valid_failed.len();
    }
    println!(
        "citus: {passed} passed, {failed} failed, in {:.0} s",
        began.elapsed().as_secs_f64()
    );
    failed
}
