//! `duroxide-postgres purge`: retention run once from the command line
//! (the same SQL as the background retention task, `src/retention.rs`).
//! On a terminal the running counts are a spinner line on stderr; otherwise
//! a plain line about once a second.

use super::progress::Spinner;
use super::{error, Outcome};
use duroxide_postgres::{PostgresProvider, PurgeRequest};
use std::time::{Duration, Instant};

/// `purge`: deletes (or with `dry_run` counts) finished root instance
/// trees, printing progress about once a second.
pub(crate) async fn run(store: &PostgresProvider, schema: &str, request: &PurgeRequest) -> Outcome {
    let statuses: Vec<&str> = request.statuses.iter().map(|s| s.as_str()).collect();
    println!(
        "{} {} root instance trees older than {} s in schema {schema}",
        if request.dry_run {
            "counting"
        } else {
            "purging"
        },
        statuses.join("/"),
        request.older_than.as_secs(),
    );
    if request.dry_run {
        println!("  (dry run: nothing is deleted)");
    }
    let started = Instant::now();
    let mut last_print = Instant::now();
    let spinner = Spinner::start("starting");
    let result = store
        .purge(request, |p| {
            if spinner.drawn() || last_print.elapsed() >= Duration::from_secs(1) {
                last_print = Instant::now();
                let rate = p.instances_deleted as f64 / started.elapsed().as_secs_f64().max(0.001);
                let line = format!(
                    "{} batches, {} roots seen, {} trees / {} instances {}, {rate:.0}/s",
                    p.batches,
                    p.roots_seen,
                    p.roots_deleted,
                    p.instances_deleted,
                    if request.dry_run {
                        "would go"
                    } else {
                        "deleted"
                    },
                );
                if spinner.drawn() {
                    spinner.set(line);
                } else {
                    println!("  {line}");
                }
            }
        })
        .await;
    spinner.finish();
    match result {
        Ok(p) => {
            // Three lines, each within 100 columns.
            println!(
                "done in {:.1} s: {} trees / {} instances {}",
                started.elapsed().as_secs_f64(),
                p.roots_deleted,
                p.instances_deleted,
                if request.dry_run {
                    "would be deleted"
                } else {
                    "deleted"
                },
            );
            println!(
                "  with {} executions, {} events, {} queue messages",
                p.executions_deleted, p.events_deleted, p.queue_messages_deleted,
            );
            println!(
                "  {} roots kept (running sub-orchestrations or busy); longest batch {} ms",
                p.roots_seen - p.roots_deleted,
                p.longest_batch_ms
            );
            Ok(())
        }
        Err(e) => Err(error(e)),
    }
}
