//! Section "processes": 1, 2 and 4 OS processes on one store (issue 10).
//!
//! Each process is this binary started with `--processes-child URL SCHEMA
//! NAME`: a `PostgresProvider` (application_name `bench-proc-NAME`) and a
//! duroxide runtime with 4 orchestration + 4 worker dispatchers serving
//! `ProcBench` (two activities in sequence: 3 orchestration turns and 2 work
//! items per orchestration) and `ProcPing` (one turn). The section process
//! only starts orchestrations (a `Client` on its own provider) and watches.
//!
//! Per process count, each twice: the children announce every orchestrator
//! wake to the other processes (`announce-all`, as before issue 10), or
//! absorb locally what their idle fetches can take (`absorb`, the default);
//! three phases on a fresh schema:
//!
//! * **low load**: starts at a fixed rate well below what one process can do;
//! * **saturating**: a backlog started as fast as four client tasks can;
//! * **idle pickup**: after a second of quiet, one-turn `ProcPing`s, one at a
//!   time (start to completion).
//!
//! End-to-end latency is the database's `completed_at_ms` of the execution
//! minus the local clock just before the start call (same machine, same
//! clock, unless `DATABASE_URL` points elsewhere). Statements come from
//! pg_stat_statements (reset per phase; the section's own monitoring
//! queries do not name the schema, so they are not counted; client starts
//! are subtracted); turns are acks (`ack_orchestration_item` +
//! `ack_work_item` calls). Server connections are sampled every 100 ms from
//! pg_stat_activity by application_name.

use crate::util::{err, fmt_ms, fmt_num, heading, now_epoch_ms, verdict, Result, Samples, Table};
use crate::Ctx;
use duroxide::runtime::registry::ActivityRegistry;
use duroxide::runtime::{Runtime, RuntimeOptions};
use duroxide::{ActivityContext, Client, OrchestrationContext, OrchestrationRegistry};
use duroxide_postgres::{PostgresOptions, PostgresProvider};
use std::collections::HashMap;
use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};

/// First argument that makes this binary a child process of this section.
pub const CHILD_FLAG: &str = "--processes-child";
const ORCH: &str = "ProcBench";
const PING: &str = "ProcPing";
const ACT: &str = "Echo";
const APP_PREFIX: &str = "bench-proc-";
const DISPATCHERS: usize = 4;

// ---------------------------------------------------------------------------
// The child process
// ---------------------------------------------------------------------------

/// `--processes-child URL SCHEMA NAME WAKES`: runs a runtime until stdin
/// closes; WAKES is `absorb` (the provider's default) or `announce-all`.
pub fn child_main() -> ! {
    let args: Vec<String> = std::env::args().skip(2).collect();
    let [url, schema, name, wakes] = args.as_slice() else {
        eprintln!("usage: {CHILD_FLAG} URL SCHEMA NAME absorb|announce-all");
        std::process::exit(2);
    };
    let announce_all = match wakes.as_str() {
        "absorb" => false,
        "announce-all" => true,
        other => {
            eprintln!("child {name}: unknown wake mode {other:?}");
            std::process::exit(2);
        }
    };
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("child {name}: cannot build the tokio runtime: {e}");
            std::process::exit(1);
        }
    };
    let code = rt.block_on(async {
        let options = PostgresOptions::new()
            .schema(schema)
            .application_name(format!("{APP_PREFIX}{name}"))
            .announce_all_wakes(announce_all);
        let store = match PostgresProvider::connect(url, options).await {
            Ok(s) => Arc::new(s),
            Err(e) => {
                eprintln!("child {name}: cannot connect: {e}");
                return 1;
            }
        };
        let runtime = Runtime::start_with_options(
            store,
            activities(),
            orchestrations(),
            RuntimeOptions {
                orchestration_concurrency: DISPATCHERS,
                worker_concurrency: DISPATCHERS,
                ..Default::default()
            },
        )
        .await;
        println!("ready");
        let _ = std::io::stdout().flush();
        // Runs until the section closes our stdin (or dies).
        let mut sink = Vec::new();
        let _ = tokio::io::stdin().read_to_end(&mut sink).await;
        runtime.shutdown(Some(2_000)).await;
        0
    });
    rt.shutdown_timeout(Duration::from_secs(2));
    std::process::exit(code)
}

fn activities() -> ActivityRegistry {
    ActivityRegistry::builder()
        .register(ACT, |_ctx: ActivityContext, input: String| async move {
            Ok(input)
        })
        .build()
}

fn orchestrations() -> OrchestrationRegistry {
    OrchestrationRegistry::builder()
        .register(
            ORCH,
            |ctx: OrchestrationContext, input: String| async move {
                let a = ctx.schedule_activity(ACT, "a").await?;
                let b = ctx.schedule_activity(ACT, "b").await?;
                Ok(format!("{input}{a}{b}"))
            },
        )
        .register(
            PING,
            |_ctx: OrchestrationContext, input: String| async move { Ok(input) },
        )
        .build()
}

// ---------------------------------------------------------------------------
// The section
// ---------------------------------------------------------------------------

struct Child {
    proc: tokio::process::Child,
    pid: Option<u32>,
}

/// One phase's figures.
#[derive(Default)]
struct Phase {
    started: usize,
    completed: usize,
    /// Completions per second over first start .. last completion.
    rate: f64,
    latency: Samples,
    statements_per_turn: Option<f64>,
    fetch_orch_per_turn: Option<f64>,
    fetch_work_per_turn: Option<f64>,
    fetch_per_turn: Option<f64>,
    /// Largest sampled count of server connections of all processes, and
    /// of the busiest one.
    connections: usize,
    connections_per_process: usize,
    /// CPU: machine busy %, server %, runtime processes % (of all cores).
    cpu: (f64, Option<f64>, f64),
}

struct Run {
    processes: usize,
    wakes: &'static str,
    low: Result<Phase>,
    saturating: Result<Phase>,
    ping: Result<Samples>,
}

pub async fn run(ctx: &Ctx) -> Result<()> {
    heading("Processes: 1, 2 and 4 OS processes on one store (4+4 dispatchers each)");
    let (low_rate, low_secs, backlog, pings) = if ctx.quick {
        (20usize, 3u64, 600usize, 5usize)
    } else {
        (20, 8, 2_000, 10)
    };
    println!(
        "  workload: ProcBench = 2 activities in sequence (3 orchestration turns + 2 work items); \
         low load: {low_rate} starts/s for {low_secs} s; saturating: {backlog} started at once \
         (4 client tasks); idle pickup: {pings} one-turn ProcPing, one at a time"
    );
    if !ctx.admin.pgss() {
        println!("  (pg_stat_statements unavailable: statement and fetch counts skipped)");
    }
    println!(
        "  wakes: announce-all = every orchestrator wake announced to the other processes (as \
         before issue 10); absorb = what this process's idle fetches can take is not announced \
         (the default); same run, alternating"
    );
    let mut runs = Vec::new();
    for processes in [1usize, 2, 4] {
        for wakes in ["announce-all", "absorb"] {
            crate::settle(ctx, "processes").await;
            runs.push(run_one(ctx, processes, wakes, low_rate, low_secs, backlog, pings).await?);
        }
    }

    let mut table = Table::new(
        &[
            "processes",
            "wakes",
            "load",
            "done",
            "orch/s",
            "p50",
            "p99",
            "stmts/turn",
            "fetch/turn",
            "orch fetch",
            "work fetch",
            "conns (max per process)",
            "cpu busy/server/runtimes",
        ],
        3,
    );
    let f2 = |v: Option<f64>| v.map(|v| format!("{v:.2}")).unwrap_or_else(|| "-".into());
    for r in &runs {
        for (load, phase) in [("low", &r.low), ("saturating", &r.saturating)] {
            match phase {
                Ok(p) => table.row(vec![
                    r.processes.to_string(),
                    r.wakes.to_string(),
                    load.to_string(),
                    format!("{}/{}", p.completed, p.started),
                    fmt_num(p.rate),
                    fmt_ms(p.latency.p50()),
                    fmt_ms(p.latency.pct(99.0)),
                    f2(p.statements_per_turn),
                    f2(p.fetch_per_turn),
                    f2(p.fetch_orch_per_turn),
                    f2(p.fetch_work_per_turn),
                    format!("{} ({})", p.connections, p.connections_per_process),
                    format!(
                        "{:.0}% / {} / {:.0}%",
                        p.cpu.0,
                        p.cpu.1.map(|s| format!("{s:.0}%")).unwrap_or("-".into()),
                        p.cpu.2
                    ),
                ]),
                Err(e) => table.row(vec![
                    r.processes.to_string(),
                    r.wakes.to_string(),
                    load.to_string(),
                    format!("failed: {e}"),
                ]),
            }
        }
    }
    table.print();
    println!(
        "  p50/p99: start to completion; stmts/turn: runtime statements (pg_stat_statements, \
         client starts excluded) per ack; fetch/turn: fetch statements per ack (orch: \
         fetch_orchestration_item per orchestration ack, work: fetch_work_item per work ack); \
         cpu: % of all cores"
    );
    for r in &runs {
        match &r.ping {
            Ok(s) => println!(
                "  idle pickup, {} process(es), {}: one-turn start to completion p50 {}, max {} \
                 ({} samples)",
                r.processes,
                r.wakes,
                fmt_ms(s.p50()),
                fmt_ms(s.max()),
                s.len()
            ),
            Err(e) => println!(
                "  idle pickup, {} process(es), {}: failed: {e}",
                r.processes, r.wakes
            ),
        }
    }

    // Targets (issue 10).
    let four = runs
        .iter()
        .find(|r| r.processes == 4 && r.wakes == "absorb");
    let one = runs
        .iter()
        .find(|r| r.processes == 1 && r.wakes == "absorb");
    if let Some(four) = four {
        for (load, phase) in [("low", &four.low), ("saturating", &four.saturating)] {
            if let Ok(p) = phase {
                let ok = p.fetch_orch_per_turn.zip(p.fetch_work_per_turn);
                println!(
                    "  target: <= 1.3 fetch calls per completed turn at 4 processes, {load}: \
                     orchestrator {}, worker {}, both {} -> {}",
                    f2(p.fetch_orch_per_turn),
                    f2(p.fetch_work_per_turn),
                    f2(p.fetch_per_turn),
                    verdict(ok.map(|(o, w)| o <= 1.3 && w <= 1.3))
                );
            }
        }
        if let Ok(s) = &four.ping {
            println!(
                "  target: idle pickup <= 10 ms at 4 processes: p50 {} -> {}",
                fmt_ms(s.p50()),
                verdict(s.p50().map(|d| d <= Duration::from_millis(10)))
            );
        }
    }
    if let (Some(Ok(a)), Some(Ok(b))) = (one.map(|r| &r.saturating), four.map(|r| &r.saturating)) {
        let x = b.rate / a.rate.max(1e-9);
        println!(
            "  target: saturating throughput with 4 processes >= 1.5 x one process: {:.0} vs {:.0} \
             orch/s = {x:.2} x -> {}",
            b.rate,
            a.rate,
            verdict(Some(x >= 1.5))
        );
    }
    let failed: Vec<String> = runs
        .iter()
        .filter(|r| r.low.is_err() || r.saturating.is_err() || r.ping.is_err())
        .map(|r| r.processes.to_string())
        .collect();
    if failed.is_empty() {
        Ok(())
    } else {
        Err(err(format!(
            "failed with {} process(es)",
            failed.join(", ")
        )))
    }
}

#[allow(clippy::too_many_arguments)]
async fn run_one(
    ctx: &Ctx,
    processes: usize,
    wakes: &'static str,
    low_rate: usize,
    low_secs: u64,
    backlog: usize,
    pings: usize,
) -> Result<Run> {
    let schema = crate::pg::schema_name(&format!("procs{processes}_{}", &wakes[..2]));
    ctx.admin.track_schema(&schema);
    // Migrates the schema before the children connect.
    let store = Arc::new(
        PostgresProvider::connect(
            &ctx.url,
            PostgresOptions::new()
                .schema(&schema)
                .application_name("bench-proc-client"),
        )
        .await?,
    );
    let client = Client::new(store.clone());
    // Queries that do not name the schema (not counted as its statements).
    let monitor = crate::pg::connect(&ctx.url).await?;
    monitor
        .batch_execute(&format!("SET search_path TO \"{schema}\""))
        .await?;

    let mut children = Vec::new();
    for i in 0..processes {
        children.push(spawn_child(
            &ctx.url,
            &schema,
            &format!("{processes}x{i}"),
            wakes,
        )?);
    }
    for c in &mut children {
        wait_ready(c).await?;
    }
    // Let every listener connect and every dispatcher go idle.
    tokio::time::sleep(Duration::from_millis(500)).await;

    let low = phase(
        ctx,
        &client,
        &monitor,
        &schema,
        &children,
        "low",
        Load::Rate {
            per_sec: low_rate,
            secs: low_secs,
        },
    )
    .await;
    crate::settle(ctx, "processes").await;
    let saturating = phase(
        ctx,
        &client,
        &monitor,
        &schema,
        &children,
        "sat",
        Load::Backlog(backlog),
    )
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let ping = pickup(&client, &monitor, pings).await;

    for mut c in children {
        drop(c.proc.stdin.take());
        if tokio::time::timeout(Duration::from_secs(10), c.proc.wait())
            .await
            .is_err()
        {
            let _ = c.proc.kill().await;
        }
    }
    drop(client);
    drop(store);
    ctx.admin.drop_schema(&schema).await;
    Ok(Run {
        processes,
        wakes,
        low,
        saturating,
        ping,
    })
}

fn spawn_child(url: &str, schema: &str, name: &str, wakes: &str) -> Result<Child> {
    let exe = std::env::current_exe()?;
    let proc = tokio::process::Command::new(exe)
        .args([CHILD_FLAG, url, schema, name, wakes])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::inherit())
        .kill_on_drop(true)
        .spawn()?;
    let pid = proc.id();
    Ok(Child { proc, pid })
}

async fn wait_ready(c: &mut Child) -> Result<()> {
    let stdout = c
        .proc
        .stdout
        .take()
        .ok_or_else(|| err("child stdout not piped"))?;
    let mut lines = BufReader::new(stdout).lines();
    let line = tokio::time::timeout(Duration::from_secs(30), lines.next_line())
        .await
        .map_err(|_| err("a child process did not start within 30 s"))??;
    if line.as_deref() != Some("ready") {
        return Err(err(format!(
            "a child process said {line:?} instead of ready"
        )));
    }
    Ok(())
}

enum Load {
    Rate { per_sec: usize, secs: u64 },
    Backlog(usize),
}

async fn phase(
    ctx: &Ctx,
    client: &Client,
    monitor: &tokio_postgres::Client,
    schema: &str,
    children: &[Child],
    tag: &str,
    load: Load,
) -> Result<Phase> {
    ctx.admin.pgss_reset().await?;
    let cpu_start = crate::cpu::snap(ctx.postmaster);
    let child_start = children_ticks(children);
    let sampling = Arc::new(AtomicBool::new(true));
    let sampler = tokio::spawn(sample_connections(ctx.url.clone(), sampling.clone()));

    // Start times by instance id (local clock, ms since the epoch).
    let starts: Arc<Mutex<HashMap<String, u64>>> = Arc::default();
    let n = match load {
        Load::Rate { per_sec, secs } => {
            let n = per_sec * secs as usize;
            let began = Instant::now();
            for i in 0..n {
                let at = began + Duration::from_secs_f64(i as f64 / per_sec as f64);
                tokio::time::sleep_until(at.into()).await;
                let id = format!("{tag}-{i}");
                let t = now_epoch_ms();
                client.start_orchestration(&id, ORCH, "").await?;
                starts.lock().expect("starts").insert(id, t);
            }
            n
        }
        Load::Backlog(n) => {
            let mut tasks = Vec::new();
            for k in 0..4 {
                let client = client.clone();
                let starts = starts.clone();
                let tag = tag.to_string();
                tasks.push(tokio::spawn(async move {
                    for i in (k..n).step_by(4) {
                        let id = format!("{tag}-{i}");
                        let t = now_epoch_ms();
                        client.start_orchestration(&id, ORCH, "").await?;
                        starts.lock().expect("starts").insert(id, t);
                    }
                    Ok::<_, duroxide::ClientError>(())
                }));
            }
            for t in tasks {
                t.await??;
            }
            n
        }
    };

    // Wait for every completion.
    let pattern = format!("{tag}-%");
    let deadline = Instant::now() + Duration::from_secs(if ctx.quick { 60 } else { 180 });
    loop {
        let done: i64 = monitor
            .query_one(
                "SELECT count(*) FROM executions WHERE status = 'Completed' AND instance_id LIKE $1",
                &[&pattern],
            )
            .await?
            .get(0);
        if done as usize >= n {
            break;
        }
        if Instant::now() >= deadline {
            sampling.store(false, Ordering::Release);
            return Err(err(format!("only {done} of {n} completed in time")));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let usage = crate::cpu::snap(ctx.postmaster).since(&cpu_start);
    let child_ms = children_ticks(children).saturating_sub(child_start) as f64 * 10.0;
    sampling.store(false, Ordering::Release);
    let (connections, per_process) = sampler.await??;

    let rows = monitor
        .query(
            "SELECT instance_id, completed_at_ms FROM executions \
             WHERE status = 'Completed' AND instance_id LIKE $1",
            &[&pattern],
        )
        .await?;
    let starts = starts.lock().expect("starts").clone();
    let mut latency = Vec::new();
    let mut last_done = 0i64;
    for row in &rows {
        let id: String = row.get(0);
        let done: i64 = row.get(1);
        last_done = last_done.max(done);
        if let Some(&t) = starts.get(&id) {
            latency.push(Duration::from_millis((done - t as i64).max(0) as u64));
        }
    }
    let first_start = starts.values().copied().min().unwrap_or(0) as i64;
    let rate = rows.len() as f64 * 1000.0 / ((last_done - first_start).max(1) as f64);

    let (mut statements_per_turn, mut fo, mut fw, mut fall) = (None, None, None, None);
    if ctx.admin.pgss() {
        let by = ctx.admin.pgss_by_function(schema).await?;
        let calls = |f: &str| -> f64 {
            by.iter()
                .filter(|(n, _)| n == f)
                .map(|(_, c)| *c as f64)
                .sum()
        };
        let total = ctx.admin.pgss_calls_in_schema(schema).await?.unwrap_or(0) as f64;
        let (ao, aw) = (calls("ack_orchestration_item"), calls("ack_work_item"));
        let (fo_calls, fw_calls) = (calls("fetch_orchestration_item"), calls("fetch_work_item"));
        let turns = (ao + aw).max(1.0);
        statements_per_turn = Some((total - calls("enqueue_orchestrator")) / turns);
        fo = Some(fo_calls / ao.max(1.0));
        fw = Some(fw_calls / aw.max(1.0));
        fall = Some((fo_calls + fw_calls) / turns);
    }
    let cores = crate::cpu::cores().max(1) as f64;
    let pct = |v: f64| 100.0 * v / (usage.wall_ms * cores).max(1.0);
    Ok(Phase {
        started: n,
        completed: rows.len(),
        rate,
        latency: Samples::new(latency),
        statements_per_turn,
        fetch_orch_per_turn: fo,
        fetch_work_per_turn: fw,
        fetch_per_turn: fall,
        connections,
        connections_per_process: per_process,
        cpu: (
            usage.busy_pct(cores as usize),
            usage.server_ms.map(pct),
            pct(child_ms),
        ),
    })
}

/// Start to completion of one-turn orchestrations started one at a time on
/// an idle store.
async fn pickup(client: &Client, monitor: &tokio_postgres::Client, n: usize) -> Result<Samples> {
    let mut samples = Vec::new();
    for i in 0..n {
        let id = format!("ping-{i}");
        let t = now_epoch_ms();
        client.start_orchestration(&id, PING, "").await?;
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let row = monitor
                .query_opt(
                    "SELECT completed_at_ms FROM executions \
                     WHERE instance_id = $1 AND status = 'Completed'",
                    &[&id],
                )
                .await?;
            if let Some(row) = row {
                let done: i64 = row.get(0);
                samples.push(Duration::from_millis((done - t as i64).max(0) as u64));
                break;
            }
            if Instant::now() >= deadline {
                return Err(err(format!("{id} did not complete within 10 s")));
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        // Idle again before the next one.
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    Ok(Samples::new(samples))
}

/// Samples server connections of the child processes every 100 ms until
/// `running` goes false: (largest total, largest of one process).
async fn sample_connections(url: String, running: Arc<AtomicBool>) -> Result<(usize, usize)> {
    let db = crate::pg::connect(&url).await?;
    let (mut total_max, mut one_max) = (0usize, 0usize);
    while running.load(Ordering::Acquire) {
        let rows = db
            .query(
                "SELECT application_name, count(*) FROM pg_stat_activity \
                 WHERE starts_with(application_name, $1) AND application_name <> $2 GROUP BY 1",
                &[&APP_PREFIX, &"bench-proc-client"],
            )
            .await?;
        let counts: Vec<usize> = rows.iter().map(|r| r.get::<_, i64>(1) as usize).collect();
        total_max = total_max.max(counts.iter().sum());
        one_max = one_max.max(counts.iter().copied().max().unwrap_or(0));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok((total_max, one_max))
}

/// CPU ticks (user + system) of the child processes so far.
fn children_ticks(children: &[Child]) -> u64 {
    children
        .iter()
        .filter_map(|c| c.pid)
        .filter_map(|pid| std::fs::read_to_string(format!("/proc/{pid}/stat")).ok())
        .filter_map(|stat| {
            // Fields after the command name (which may hold spaces).
            let rest = &stat[stat.rfind(')')? + 2..];
            let f: Vec<&str> = rest.split_whitespace().collect();
            // utime and stime are fields 14 and 15 of the whole line.
            Some(f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?)
        })
        .sum()
}
