//! `duroxide-postgres`: operate a store from the command line.
//!
//! ```text
//! duroxide-postgres migrate [--schema NAME] [--retire-other-function-sets] [URL]
//!     create or upgrade the schema and install this build's function set;
//!     with --retire-other-function-sets, then drop every other build's
//!     functions (run it once no process of an older build remains)
//! duroxide-postgres verify  [--schema NAME] [URL]   check it, running no DDL
//! duroxide-postgres purge --older-than AGE [--status completed,failed] [--dry-run]
//!                         [--batch-size N] [--throttle F] [--schema NAME] [URL]
//!     delete finished root instance trees (with their sub-orchestrations)
//!     that completed more than AGE ago (e.g. 30d, 12h, 90m, 45s), in short
//!     batches, printing progress; --dry-run only counts
//! ```
//!
//! The URL defaults to `$DATABASE_URL`, the schema to `duroxide`. Exit status
//! 0 on success, 1 on a schema or connection error, 2 on bad usage.

use duroxide_postgres::{
    MigrationPolicy, PostgresOptions, PostgresProvider, PurgeRequest, TerminalStatus,
    DEFAULT_SCHEMA,
};
use std::process::ExitCode;
use std::time::{Duration, Instant};

const USAGE: &str =
    "usage: duroxide-postgres migrate [--schema NAME] [--retire-other-function-sets] [DATABASE_URL]
       duroxide-postgres verify [--schema NAME] [DATABASE_URL]
       duroxide-postgres purge --older-than AGE [--status completed,failed] [--dry-run]
                               [--batch-size N] [--throttle F] [--schema NAME] [DATABASE_URL]
       AGE: a number with a unit: s, m, h or d (e.g. 30d)";

enum Command {
    Schema(MigrationPolicy),
    Purge,
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    let command = match args.next().as_deref() {
        Some("migrate") => Command::Schema(MigrationPolicy::Apply),
        Some("verify") => Command::Schema(MigrationPolicy::VerifyOnly),
        Some("purge") => Command::Purge,
        _ => return usage(),
    };
    let mut schema = DEFAULT_SCHEMA.to_string();
    let mut url = std::env::var("DATABASE_URL").ok();
    let mut purge = PurgeRequest::older_than(Duration::ZERO);
    let mut older_than = None;
    let mut retire = false;
    while let Some(arg) = args.next() {
        let purge_only = matches!(command, Command::Purge);
        let migrate_only = matches!(command, Command::Schema(MigrationPolicy::Apply));
        match arg.as_str() {
            "--retire-other-function-sets" if migrate_only => retire = true,
            "--schema" => match args.next() {
                Some(s) => schema = s,
                None => return usage(),
            },
            "--older-than" if purge_only => match args.next().as_deref().and_then(parse_age) {
                Some(age) => older_than = Some(age),
                None => return usage(),
            },
            "--status" if purge_only => {
                let Some(list) = args.next() else {
                    return usage();
                };
                let parsed: Option<Vec<TerminalStatus>> = list
                    .split(',')
                    .map(|s| TerminalStatus::parse(s.trim()))
                    .collect();
                match parsed {
                    Some(statuses) if !statuses.is_empty() => purge.statuses = statuses,
                    _ => {
                        eprintln!("--status takes completed and/or failed, comma-separated");
                        return usage();
                    }
                }
            }
            "--dry-run" if purge_only => purge.dry_run = true,
            "--batch-size" if purge_only => match args.next().and_then(|v| v.parse::<u32>().ok()) {
                Some(n) if n > 0 => purge.batch_size = n,
                _ => return usage(),
            },
            "--throttle" if purge_only => match args.next().and_then(|v| v.parse::<f64>().ok()) {
                Some(f) if f.is_finite() && f >= 0.0 => purge.throttle = f,
                _ => return usage(),
            },
            _ if arg.starts_with('-') => return usage(),
            _ => url = Some(arg),
        }
    }
    let Some(url) = url else {
        eprintln!("no database URL: pass one or set DATABASE_URL");
        return usage();
    };

    match command {
        Command::Schema(policy) => migrate(&url, &schema, policy, retire).await,
        Command::Purge => {
            let Some(age) = older_than else {
                eprintln!("purge needs --older-than");
                return usage();
            };
            purge.older_than = age;
            run_purge(&url, &schema, &purge).await
        }
    }
}

async fn migrate(url: &str, schema: &str, policy: MigrationPolicy, retire: bool) -> ExitCode {
    let options = PostgresOptions::new()
        .schema(schema)
        .migration_policy(policy)
        .long_poll(false)
        .max_connections(1);
    match PostgresProvider::connect(url, options).await {
        Ok(store) => {
            if retire {
                match store.retire_other_function_sets().await {
                    Ok(dropped) => {
                        for signature in &dropped {
                            println!("retired {signature}");
                        }
                        println!("{} function(s) of other builds retired", dropped.len());
                    }
                    Err(e) => {
                        eprintln!("error: {e}");
                        return ExitCode::FAILURE;
                    }
                }
            }
            let verb = match policy {
                MigrationPolicy::Apply => "is up to date",
                MigrationPolicy::VerifyOnly => "verified",
            };
            println!(
                "schema {schema} {verb} (migration {:04}, function set {})",
                PostgresProvider::schema_version(),
                store.function_set()
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run_purge(url: &str, schema: &str, request: &PurgeRequest) -> ExitCode {
    // The schema must be this build's: purging never migrates it.
    let options = PostgresOptions::new()
        .schema(schema)
        .migration_policy(MigrationPolicy::VerifyOnly)
        .long_poll(false)
        .max_connections(1)
        .application_name("duroxide-postgres purge");
    let store = match PostgresProvider::connect(url, options).await {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    let statuses: Vec<&str> = request.statuses.iter().map(|s| s.as_str()).collect();
    println!(
        "{} {} root instance trees of schema {schema} older than {} s{}",
        if request.dry_run {
            "counting"
        } else {
            "purging"
        },
        statuses.join("/"),
        request.older_than.as_secs(),
        if request.dry_run {
            " (dry run: nothing is deleted)"
        } else {
            ""
        }
    );
    let started = Instant::now();
    let mut last_print = Instant::now();
    let result = store
        .purge(request, |p| {
            if last_print.elapsed() >= Duration::from_secs(1) {
                last_print = Instant::now();
                let rate = p.instances_deleted as f64 / started.elapsed().as_secs_f64().max(0.001);
                println!(
                    "  {} batches, {} roots looked at, {} trees / {} instances {}, {rate:.0} instances/s",
                    p.batches,
                    p.roots_seen,
                    p.roots_deleted,
                    p.instances_deleted,
                    if request.dry_run { "would go" } else { "deleted" },
                );
            }
        })
        .await;
    match result {
        Ok(p) => {
            println!(
                "done in {:.1} s: {} trees / {} instances {} ({} executions, {} events, {} queue \
                 messages); {} roots kept (running sub-orchestrations or busy); longest batch {} ms",
                started.elapsed().as_secs_f64(),
                p.roots_deleted,
                p.instances_deleted,
                if request.dry_run { "would be deleted" } else { "deleted" },
                p.executions_deleted,
                p.events_deleted,
                p.queue_messages_deleted,
                p.roots_seen - p.roots_deleted,
                p.longest_batch_ms
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// `30d`, `12h`, `90m`, `45s`.
fn parse_age(s: &str) -> Option<Duration> {
    let s = s.trim();
    let unit = s.chars().last()?;
    let n: u64 = s[..s.len() - unit.len_utf8()].parse().ok()?;
    let secs = match unit {
        's' => n,
        'm' => n.checked_mul(60)?,
        'h' => n.checked_mul(3600)?,
        'd' => n.checked_mul(86_400)?,
        _ => return None,
    };
    Some(Duration::from_secs(secs))
}

fn usage() -> ExitCode {
    eprintln!("{USAGE}");
    ExitCode::from(2)
}
