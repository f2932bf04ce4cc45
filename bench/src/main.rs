//! Side-by-side benchmark of duroxide-postgres and duroxide's SQLite provider.
//!
//! ```text
//! cargo run --release -p duroxide-postgres-bench -- [--quick] [--only SECTIONS]
//! ```
//!
//! PostgreSQL comes from `DATABASE_URL`, or a throwaway local server is
//! started (and removed at the end). SQLite stores are files in a temporary
//! directory. See `docs/benchmarks.md`.

#[path = "../../tests/common/server.rs"]
mod server;
#[path = "../../tests/common/standby.rs"]
mod standby;

/// The test helpers that `tests/common/pgbouncer.rs` expects beside it
/// (`crate::common::server`).
mod common {
    pub(crate) use crate::server;
}

mod chaos;
mod citus;
mod counting;
mod cpu;
mod failover;
mod floor;
mod history;
mod idle;
mod latency;
mod logcap;
mod pg;
mod pgbouncer;
mod processes;
mod remote;
mod scale;
mod soak;
mod stores;
mod stress;
mod turns;
mod util;

use std::path::PathBuf;
use std::time::{Duration, Instant};
use util::{heading, Result};

const SECTIONS: &[&str] = &[
    "floor",
    "turns",
    "stress",
    "latency",
    "history",
    "idle",
    "chaos",
    "processes",
    "soak",
    "scale",
    "pgbouncer",
    "remote",
    "failover",
    "citus",
];
/// Sections run without `--only` (the soak takes 20 minutes, scale loads
/// 1,000,000 instances, pgbouncer needs PgBouncer installed: on request
/// only).
const DEFAULT_SECTIONS: &[&str] = &[
    "floor",
    "turns",
    "stress",
    "latency",
    "history",
    "idle",
    "chaos",
    "processes",
];

const USAGE: &str = "\
duroxide-postgres-bench: duroxide-postgres vs duroxide's SQLite provider

USAGE:
    cargo run --release -p duroxide-postgres-bench -- [OPTIONS]

OPTIONS:
    --quick             ~1 minute smoke run (fewer samples, 3 s stress runs, 2:2 only)
    --stress-secs N     duration of each stress run (default 10, quick 3)
    --soak-minutes N    minutes of each soak run (default 10; quick: 2 intervals of 15 s)
    --only LIST         comma-separated sections to run, of:
                        floor, turns, stress, latency, history, idle, chaos,
                        processes, soak, scale, pgbouncer, remote,
                        failover, citus
                        (default: all but soak, scale, pgbouncer, which
                        needs /usr/sbin/pgbouncer, and remote, which runs
                        sections 1-3 again through a delaying loopback proxy
                        at 0.5 and 2.5 ms one way, and failover, which
                        starts a primary and a synchronous standby of its
                        own and kills the primary, and citus, which measures
                        the store on the Citus coordinator DUROXIDE_CITUS_URL
                        next to the single server; processes runs 1, 2 and 4 OS
                        processes of this binary on one store; chaos
                        restarts a private server of its own, never
                        DATABASE_URL's)
                        (the PostgreSQL floor is always measured: it is the
                        reference for the other sections; scale runs only
                        when named: 1,000,000 instances, --quick 100,000)
    -h, --help          this text

PostgreSQL: DATABASE_URL if set, else a throwaway local server (initdb/pg_ctl).";

/// Everything the sections share.
pub struct Ctx {
    pub url: String,
    pub admin: pg::Admin,
    pub quick: bool,
    /// The local PostgreSQL postmaster (for CPU accounting), if visible.
    pub postmaster: Option<i64>,
    /// `--stress-secs`, if given.
    pub stress_secs: Option<u64>,
    /// `--soak-minutes`, if given.
    pub soak_minutes: Option<u64>,
    /// Directory for the SQLite files.
    pub tmpdir: PathBuf,
    /// Filled by the floor section.
    pub floor: Option<floor::Floor>,
}

struct Args {
    quick: bool,
    stress_secs: Option<u64>,
    soak_minutes: Option<u64>,
    only: Vec<String>,
}

fn parse_args() -> std::result::Result<Args, String> {
    let mut args = Args {
        quick: false,
        stress_secs: None,
        soak_minutes: None,
        only: DEFAULT_SECTIONS.iter().map(|s| s.to_string()).collect(),
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--quick" => args.quick = true,
            "--stress-secs" => {
                let v = it.next().ok_or("--stress-secs needs a number")?;
                let n = v
                    .parse::<u64>()
                    .ok()
                    .filter(|n| *n > 0)
                    .ok_or(format!("--stress-secs: not a positive number: {v:?}"))?;
                args.stress_secs = Some(n);
            }
            "--soak-minutes" => {
                let v = it.next().ok_or("--soak-minutes needs a number")?;
                let n = v
                    .parse::<u64>()
                    .ok()
                    .filter(|n| *n > 0)
                    .ok_or(format!("--soak-minutes: not a positive number: {v:?}"))?;
                args.soak_minutes = Some(n);
            }
            "-h" | "--help" => return Err(String::new()),
            "--only" => {
                let list = it.next().ok_or("--only needs a list")?;
                args.only = parse_only(&list)?;
            }
            other if other.starts_with("--only=") => {
                args.only = parse_only(&other["--only=".len()..])?;
            }
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    Ok(args)
}

fn parse_only(list: &str) -> std::result::Result<Vec<String>, String> {
    let mut out = Vec::new();
    for name in list.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        if !SECTIONS.contains(&name) {
            return Err(format!(
                "unknown section {name:?} (expected one of {})",
                SECTIONS.join(", ")
            ));
        }
        out.push(name.to_string());
    }
    if out.is_empty() {
        return Err("--only needs at least one section".into());
    }
    Ok(out)
}

fn main() {
    // A runtime process of the `processes` section.
    if std::env::args().nth(1).as_deref() == Some(processes::CHILD_FLAG) {
        processes::child_main();
    }
    let args = match parse_args() {
        Ok(a) => a,
        Err(msg) => {
            if msg.is_empty() {
                println!("{USAGE}");
                return;
            }
            eprintln!("error: {msg}\n\n{USAGE}");
            std::process::exit(2);
        }
    };

    // PostgreSQL: DATABASE_URL or a private throwaway server. The server is
    // dropped (stopped and deleted) at the end of main.
    let (url, source, _server) = match std::env::var("DATABASE_URL") {
        Ok(url) if !url.trim().is_empty() => (url, "DATABASE_URL".to_string(), None),
        _ => {
            eprintln!("starting a throwaway PostgreSQL server (initdb + pg_ctl)...");
            match std::panic::catch_unwind(server::TempServer::start) {
                Ok(server) => {
                    let url = server.url();
                    (url, "throwaway local server".to_string(), Some(server))
                }
                Err(_) => {
                    eprintln!(
                        "error: could not start PostgreSQL (see above); set DATABASE_URL \
                         to use an existing server"
                    );
                    std::process::exit(1);
                }
            }
        }
    };

    logcap::install();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot build the tokio runtime: {e}");
            std::process::exit(1);
        }
    };
    let ok = rt.block_on(run(args, url, source));
    rt.shutdown_timeout(Duration::from_secs(5));
    drop(_server);
    if !ok {
        std::process::exit(1);
    }
}

async fn run(args: Args, url: String, source: String) -> bool {
    let started = Instant::now();
    let admin = match pg::Admin::connect(&url).await {
        Ok(a) => a,
        Err(e) => {
            eprintln!("error: cannot connect to PostgreSQL: {e}");
            return false;
        }
    };
    let tmpdir = std::env::temp_dir().join(format!("duroxide-bench-{}", std::process::id()));
    if let Err(e) = std::fs::create_dir_all(&tmpdir) {
        eprintln!("error: cannot create {}: {e}", tmpdir.display());
        return false;
    }
    let postmaster = cpu::find_postmaster(&admin.client).await;
    let mut ctx = Ctx {
        postmaster,
        url,
        admin,
        quick: args.quick,
        stress_secs: args.stress_secs,
        soak_minutes: args.soak_minutes,
        tmpdir,
        floor: None,
    };

    print_environment(&ctx, &source, &args).await;

    let mut failures = Vec::new();

    // 0. Always measured: the reference for the provider figures.
    settle(&ctx, "floor").await;
    match floor::run(&ctx).await {
        Ok(f) => ctx.floor = Some(f),
        Err(e) => {
            println!("  floor failed: {e}");
            failures.push("floor".to_string());
        }
    }

    let ctx = std::sync::Arc::new(ctx);
    for section in SECTIONS.iter().skip(1) {
        if !args.only.iter().any(|s| s == section) {
            continue;
        }
        let section_start = Instant::now();
        let cpu_start = cpu::snap(ctx.postmaster);
        let c = ctx.clone();
        let name = section.to_string();
        // Each section runs in its own task so that a panic inside duroxide
        // or the provider is reported and the remaining sections still run.
        let handle = tokio::spawn(async move {
            let r = match name.as_str() {
                "turns" => turns::run(&c).await,
                "stress" => stress::run(&c).await,
                "latency" => latency::run(&c).await,
                "history" => history::run(&c).await,
                "idle" => idle::run(&c).await,
                "chaos" => chaos::run(&c).await,
                "processes" => processes::run(&c).await,
                "soak" => soak::run(&c).await,
                "scale" => scale::run(&c).await,
                "pgbouncer" => pgbouncer::run(&c).await,
                "remote" => remote::run(&c).await,
                "failover" => failover::run(&c).await,
                "citus" => citus::run(&c).await,
                _ => Ok(()),
            };
            r.map_err(|e| e.to_string())
        });
        let outcome = match handle.await {
            Ok(Ok(())) => None,
            Ok(Err(e)) => Some(e),
            Err(e) if e.is_panic() => Some("panicked (see stderr)".to_string()),
            Err(e) => Some(e.to_string()),
        };
        if let Some(e) = outcome {
            println!("  section {section} failed: {e}");
            failures.push(section.to_string());
        }
        ctx.admin.drop_all_schemas().await;
        let usage = cpu::snap(ctx.postmaster).since(&cpu_start);
        println!(
            "  ({section} took {:.0} s; machine cpu busy {:.0}%, other programs {:.0}%; load average {})",
            section_start.elapsed().as_secs_f64(),
            usage.busy_pct(cpu::cores()),
            usage.other_pct(cpu::cores()),
            loadavg()
        );
    }

    ctx.admin.drop_all_schemas().await;
    let _ = std::fs::remove_dir_all(&ctx.tmpdir);
    println!();
    println!(
        "total time {:.0} s{}",
        started.elapsed().as_secs_f64(),
        if failures.is_empty() {
            String::new()
        } else {
            format!("; failed sections: {}", failures.join(", "))
        }
    );
    failures.is_empty()
}

async fn print_environment(ctx: &Ctx, source: &str, args: &Args) {
    heading("Environment");
    let cpus = std::thread::available_parallelism()
        .map(|n| n.get().to_string())
        .unwrap_or_else(|_| "?".into());
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_string())
        })
        .unwrap_or_else(|| "?".into());
    let mem = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("MemTotal:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse::<u64>().ok())
        })
        .map(|kib| format!("{:.1} GiB", kib as f64 / 1024.0 / 1024.0))
        .unwrap_or_else(|| "?".into());
    let mut rows: Vec<(&str, String)> = vec![
        ("cpus (available_parallelism)", cpus),
        ("cpu model", model),
        ("memory", mem),
        (
            "mode",
            if args.quick { "quick" } else { "full" }.to_string(),
        ),
        ("sections", args.only.join(",")),
        (
            "duroxide",
            "0.1.32 (SQLite provider: file in a temp dir)".into(),
        ),
        ("provider source", provider_source()),
        ("postgres source", source.to_string()),
        ("load average (1/5/15 min)", loadavg()),
        (
            "cpu accounting",
            match ctx.postmaster {
                Some(pid) => format!(
                    "/proc: machine, this process, postgres server (postmaster pid {pid} + children)"
                ),
                None => "/proc: machine and this process (server not visible locally)".into(),
            },
        ),
    ];
    for (label, sql) in [
        ("postgres version", "SELECT version()"),
        ("fsync", "SHOW fsync"),
        ("synchronous_commit", "SHOW synchronous_commit"),
        ("shared_buffers", "SHOW shared_buffers"),
        ("wal_sync_method", "SHOW wal_sync_method"),
    ] {
        let v = match ctx.admin.text(sql).await {
            Ok(v) => v,
            Err(e) => format!("? ({e})"),
        };
        rows.push((label, v));
    }
    // Other work on the machine skews every figure: measure it for a second.
    let before = cpu::snap(ctx.postmaster);
    tokio::time::sleep(Duration::from_secs(1)).await;
    let usage = cpu::snap(ctx.postmaster).since(&before);
    let other = usage.other_pct(cpu::cores());
    rows.push((
        "other processes' cpu",
        format!(
            "{other:.0}% of all cores during 1 s before the sections (kernel {:.0}%){}",
            100.0 * usage.kernel_ms / (usage.wall_ms * cpu::cores() as f64).max(1.0),
            if other > 10.0 {
                " -- WARNING: the machine is not idle; figures will be skewed"
            } else {
                ""
            }
        ),
    ));
    rows.push((
        "pg_stat_statements",
        match &ctx.admin.pgss_unavailable {
            None => "available".to_string(),
            Some(why) => format!("UNAVAILABLE ({why}); statement counts skipped"),
        },
    ));
    let width = rows.iter().map(|(l, _)| l.len()).max().unwrap_or(0);
    for (label, value) in rows {
        println!("  {label:<width$}  {value}");
    }
}

/// Before a measurement: waits (briefly) for other programs on the machine
/// to go quiet, and says so when it had to wait or gave up.
pub async fn settle(ctx: &Ctx, what: &str) {
    // At most 15 s per measurement and 60 s per run (3 s / 10 s quick).
    static WAITED_MS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let (window, max, budget) = if ctx.quick {
        (
            Duration::from_millis(500),
            Duration::from_secs(3),
            10_000u64,
        )
    } else {
        (Duration::from_secs(1), Duration::from_secs(15), 60_000)
    };
    let spent = WAITED_MS.load(std::sync::atomic::Ordering::Relaxed);
    let max = max
        .min(Duration::from_millis(budget.saturating_sub(spent)))
        .max(window);
    let start = Instant::now();
    let outcome = cpu::settle(ctx.postmaster, window, max).await;
    WAITED_MS.fetch_add(
        start.elapsed().saturating_sub(window).as_millis() as u64,
        std::sync::atomic::Ordering::Relaxed,
    );
    match outcome {
        None => {}
        Some((waited, true)) => {
            eprintln!("  [{what}] waited {waited:.0} s for other programs to go quiet")
        }
        Some((waited, false)) => println!(
            "  note: other programs kept using >= 10% of the CPU for {waited:.0} s before {what}; \
             its figures are skewed"
        ),
    }
}

/// The workspace's git commit, and whether src/ or sql/ had uncommitted
/// changes when the bench ran (the provider is compiled from them).
fn provider_source() -> String {
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/..");
    let git = |args: &[&str]| {
        std::process::Command::new("git")
            .arg("-C")
            .arg(root)
            .args(args)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
    };
    match git(&["rev-parse", "--short", "HEAD"]) {
        None => "? (no git)".into(),
        Some(head) => {
            let changed = git(&["status", "--porcelain", "--", "src", "sql", "Cargo.toml"])
                .map(|s| s.lines().count())
                .unwrap_or(0);
            if changed == 0 {
                format!("git {head}")
            } else {
                format!("git {head} + uncommitted changes in {changed} file(s) under src/, sql/")
            }
        }
    }
}

/// The 1, 5 and 15 minute load averages (other work on the machine skews
/// the figures; they are printed so that it shows).
pub fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|| "?".into())
}

/// Runs `f`, then always cleans `store` up (drop schema / delete file).
pub async fn with_store<T, F, Fut>(ctx: &Ctx, store: stores::Store, f: F) -> Result<T>
where
    F: FnOnce(std::sync::Arc<dyn duroxide::providers::Provider>) -> Fut,
    Fut: std::future::Future<Output = Result<T>>,
{
    let provider = store.provider.clone();
    let r = f(provider).await;
    store.cleanup(ctx).await;
    r
}
