//! Section 1: Provider turns: the `Provider` trait driven directly, no runtime.
//!
//! Orchestration queue: N instances each get a StartOrchestration; workers
//! loop fetch_orchestration_item + ack_orchestration_item with a realistic
//! first turn (3 history events, one ActivityExecute, one far-future
//! TimerFired, metadata). Nothing the ack enqueues is visible to the
//! orchestration queue again, so every instance is fetched exactly once.
//!
//! Worker queue: the N ActivityExecute items those turns left are consumed
//! with fetch_work_item + ack_work_item(Some(ActivityCompleted)).

use crate::stores::{Kind, Store};
use crate::util::{
    fmt_ms, fmt_num, heading, ms, now_epoch_ms, ratio, ratio_d, verdict, Result, Samples, Table,
};
use crate::Ctx;
use duroxide::providers::{ExecutionMetadata, OrchestrationItem, Provider, TagFilter, WorkItem};
use duroxide::{Event, EventKind};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const LOCK_TIMEOUT: Duration = Duration::from_secs(30);
pub const ORCH_NAME: &str = "BenchOrchestration";
pub const ORCH_VERSION: &str = "1.0.0";
pub const ACTIVITY_NAME: &str = "BenchActivity";
pub const ACTIVITY_INPUT: &str =
    "{\"order\":12345,\"items\":[\"a\",\"b\",\"c\"],\"note\":\"benchmark payload\"}";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Queue {
    Orchestrator,
    Worker,
}

/// One measured phase (one queue, one store, one concurrency).
#[derive(Debug, Default)]
pub(crate) struct Phase {
    target: usize,
    pub(crate) done: usize,
    wall: Duration,
    pub(crate) turn: Samples,
    fetch: Samples,
    ack: Samples,
    fetch_calls: usize,
    empty: usize,
    empty_ready: usize,
    pub(crate) errors: usize,
    pub(crate) first_error: Option<String>,
    statements: Option<i64>,
    cpu: crate::cpu::Usage,
}

impl Phase {
    pub(crate) fn per_s(&self) -> f64 {
        if self.wall.is_zero() {
            0.0
        } else {
            self.done as f64 / self.wall.as_secs_f64()
        }
    }

    pub(crate) fn calls(&self) -> usize {
        self.fetch_calls + self.done
    }

    fn stmts_per_turn(&self) -> Option<f64> {
        self.statements
            .filter(|_| self.done > 0)
            .map(|s| s as f64 / self.done as f64)
    }

    fn stmts_per_call(&self) -> Option<f64> {
        self.statements
            .filter(|_| self.calls() > 0)
            .map(|s| s as f64 / self.calls() as f64)
    }
}

pub(crate) struct Run {
    kind: Kind,
    conc: usize,
    pub(crate) orch: Phase,
    pub(crate) work: Phase,
    enqueue: Duration,
    logs: crate::logcap::Captured,
}

pub async fn run(ctx: &Ctx) -> Result<()> {
    heading("1. Provider turns (Provider trait, no runtime)");
    let (n1, n8, cap) = if ctx.quick {
        (200, 600, Duration::from_secs(8))
    } else {
        (1000, 3000, Duration::from_secs(20))
    };
    println!(
        "  orchestration turn = fetch_orchestration_item + ack_orchestration_item(3 events, \
         1 ActivityExecute, 1 TimerFired +1h, metadata)"
    );
    println!(
        "  worker turn        = fetch_work_item + ack_work_item(Some(ActivityCompleted)); \
         poll_timeout 0, lock 30 s"
    );
    println!("  instances: {n1} at concurrency 1, {n8} at concurrency 8 (fresh store each)");

    let mut runs = Vec::new();
    for (conc, n) in [(1usize, n1), (8, n8)] {
        for kind in Kind::BOTH {
            crate::settle(ctx, &format!("turns {} c={conc}", kind.label())).await;
            let store = Store::create(ctx, kind, &format!("turns_c{conc}")).await?;
            let r = crate::with_store(ctx, store, |p| one(ctx, kind, p, conc, n, cap)).await?;
            runs.push(r);
        }
    }

    for (queue, title) in [
        (Queue::Orchestrator, "orchestration turns"),
        (Queue::Worker, "worker turns"),
    ] {
        println!();
        println!("  {title} (latency = fetch + ack, ms)");
        let mut t = Table::new(
            &[
                "store",
                "conc",
                "turns",
                "turns/s",
                "p50",
                "p95",
                "p99",
                "fetch p50",
                "ack p50",
                "empty fetch",
                "empty, work ready",
                "errors",
                "stmts/turn",
                "stmts/call",
            ],
            1,
        );
        for r in &runs {
            let p = phase(r, queue);
            t.row(vec![
                r.kind.label().into(),
                r.conc.to_string(),
                format!("{}/{}", p.done, p.target),
                fmt_num(p.per_s()),
                fmt_ms(p.turn.p50()),
                fmt_ms(p.turn.pct(95.0)),
                fmt_ms(p.turn.pct(99.0)),
                fmt_ms(p.fetch.p50()),
                fmt_ms(p.ack.p50()),
                p.empty.to_string(),
                p.empty_ready.to_string(),
                p.errors.to_string(),
                p.stmts_per_turn()
                    .map(fmt_num)
                    .unwrap_or_else(|| "-".into()),
                p.stmts_per_call()
                    .map(fmt_num)
                    .unwrap_or_else(|| "-".into()),
            ]);
        }
        t.print();
        for r in &runs {
            let p = phase(r, queue);
            if let Some(e) = &p.first_error {
                println!(
                    "  first error ({} c={}): {}",
                    r.kind.label(),
                    r.conc,
                    truncate(e, 300)
                );
            }
        }
    }
    let enq: Vec<String> = runs
        .iter()
        .map(|r| {
            format!(
                "{} c={}: {:.0}/s",
                r.kind.label(),
                r.conc,
                r.orch.target as f64 / r.enqueue.as_secs_f64().max(1e-9)
            )
        })
        .collect();
    println!(
        "  (set-up enqueue rate, 8 concurrent enqueuers: {})",
        enq.join(", ")
    );
    if ctx.admin.pgss_unavailable.is_some() {
        println!("  statement counts skipped: pg_stat_statements unavailable");
    }
    crate::logcap::report(
        &runs
            .iter()
            .map(|r| (format!("{} c={}", r.kind.label(), r.conc), r.logs.clone()))
            .collect::<Vec<_>>(),
    );

    println!();
    println!(
        "  CPU per turn (ms, /proc; machine = all processes; {} cores, so the CPU-bound ceiling \
         is {} / machine ms per turn)",
        crate::cpu::cores(),
        crate::cpu::cores() * 1000
    );
    let mut t = Table::new(
        &[
            "queue",
            "store",
            "conc",
            "machine",
            "postgres server",
            "bench process",
            "kernel/irq",
            "other processes",
            "machine busy",
            "ceiling turns/s",
        ],
        2,
    );
    for (queue, q) in [(Queue::Orchestrator, "orch"), (Queue::Worker, "worker")] {
        for r in &runs {
            let p = phase(r, queue);
            let per = |v: f64| {
                if p.done > 0 {
                    format!("{:.3}", v / p.done as f64)
                } else {
                    "-".into()
                }
            };
            let machine_per = p.cpu.machine_ms / p.done.max(1) as f64;
            t.row(vec![
                q.into(),
                r.kind.label().into(),
                r.conc.to_string(),
                per(p.cpu.machine_ms),
                p.cpu.server_ms.map(per).unwrap_or_else(|| "-".into()),
                per(p.cpu.own_ms),
                per(p.cpu.kernel_ms),
                per(p.cpu.other_ms()),
                format!("{:.0}%", p.cpu.busy_pct(crate::cpu::cores())),
                if machine_per > 0.0 {
                    fmt_num(crate::cpu::cores() as f64 * 1000.0 / machine_per)
                } else {
                    "-".into()
                },
            ]);
        }
    }
    t.print();

    // Ratios.
    let find = |kind: Kind, conc: usize| runs.iter().find(|r| r.kind == kind && r.conc == conc);
    let floor_turn = ctx.floor.as_ref().map(|f| f.turn_reference());
    println!();
    println!("  ratios");
    let mut t = Table::new(&["figure", "postgres", "reference", "ratio"], 1);
    for conc in [1usize, 8] {
        let (Some(pg), Some(sq)) = (find(Kind::Postgres, conc), find(Kind::Sqlite, conc)) else {
            continue;
        };
        for (queue, q) in [(Queue::Orchestrator, "orch"), (Queue::Worker, "worker")] {
            let (a, b) = (phase(pg, queue), phase(sq, queue));
            t.row(vec![
                format!("{q} turns/s c={conc} vs sqlite"),
                fmt_num(a.per_s()),
                fmt_num(b.per_s()),
                ratio(Some(a.per_s()), Some(b.per_s())),
            ]);
            t.row(vec![
                format!("{q} turn p50 c={conc} vs sqlite (ms)"),
                fmt_ms(a.turn.p50()),
                fmt_ms(b.turn.p50()),
                ratio_d(a.turn.p50(), b.turn.p50()),
            ]);
            t.row(vec![
                format!("{q} turn p50 c={conc} vs floor 2 x commit (ms)"),
                fmt_ms(a.turn.p50()),
                fmt_ms(floor_turn),
                ratio_d(a.turn.p50(), floor_turn),
            ]);
        }
    }
    if let (Some(pg8), Some(f)) = (find(Kind::Postgres, 8), ctx.floor.as_ref()) {
        // Each turn commits once with a NOTIFY (the ack) and once without.
        for (queue, q) in [(Queue::Orchestrator, "orch"), (Queue::Worker, "worker")] {
            let p = phase(pg8, queue);
            t.row(vec![
                format!("{q} turns/s c=8 vs floor INSERT+NOTIFY+commit/s, 8 clients"),
                fmt_num(p.per_s()),
                fmt_num(f.notify_commits_per_s_8),
                ratio(Some(p.per_s()), Some(f.notify_commits_per_s_8)),
            ]);
        }
    }
    t.print();

    // Targets.
    println!();
    println!("  targets (postgres)");
    let mut t = Table::new(&["target", "measured", "verdict"], 1);
    if let Some(pg1) = find(Kind::Postgres, 1) {
        let p50 = pg1.orch.turn.p50();
        t.row(vec![
            "orchestration turn p50 <= 0.6 ms at c=1".into(),
            format!("{} ms", fmt_ms(p50)),
            verdict(p50.map(|d| ms(d) <= 0.6)).into(),
        ]);
    }
    if let Some(pg8) = find(Kind::Postgres, 8) {
        t.row(vec![
            ">= 3,000 orchestration turns/s at c=8".into(),
            fmt_num(pg8.orch.per_s()),
            verdict(Some(pg8.orch.per_s() >= 3000.0)).into(),
        ]);
        t.row(vec![
            ">= 4,000 worker turns/s at c=8".into(),
            fmt_num(pg8.work.per_s()),
            verdict(Some(pg8.work.per_s() >= 4000.0)).into(),
        ]);
        for (p, q) in [(&pg8.orch, "orchestration"), (&pg8.work, "worker")] {
            let p99 = p.turn.pct(99.0);
            t.row(vec![
                format!("{q} turn p99 <= 10 ms at c=8"),
                format!("{} ms", fmt_ms(p99)),
                verdict(p99.map(|d| ms(d) <= 10.0)).into(),
            ]);
            t.row(vec![
                format!("no empty {q} fetch while work is ready (c=8)"),
                format!("{} of {} fetches", p.empty_ready, p.fetch_calls),
                verdict(Some(p.empty_ready == 0)).into(),
            ]);
        }
    }
    for r in runs.iter().filter(|r| r.kind == Kind::Postgres) {
        for (p, q) in [(&r.orch, "orchestration"), (&r.work, "worker")] {
            let per_call = p.stmts_per_call();
            t.row(vec![
                format!("1 statement per provider call ({q}, c={})", r.conc),
                per_call
                    .map(|v| {
                        format!(
                            "{} per call, {} per turn",
                            fmt_num(v),
                            p.stmts_per_turn().map(fmt_num).unwrap_or_default()
                        )
                    })
                    .unwrap_or_else(|| "n/a".into()),
                verdict(per_call.map(|v| (v - 1.0).abs() < 0.005)).into(),
            ]);
        }
    }
    t.print();

    if ctx.admin.pgss() {
        let (n1, n8) = if ctx.quick { (100, 300) } else { (400, 1500) };
        for (conc, n, rows) in [(1, n1, 40), (8, n8, 8)] {
            if let Err(e) = breakdown(ctx, n, conc, rows).await {
                println!("  breakdown (c={conc}) skipped: {e}");
            }
        }
    }
    Ok(())
}

/// `url` with `-c pg_stat_statements.track=all` added to the startup
/// options, for URL and key=value connection strings.
fn with_track_all(url: &str) -> String {
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        let sep = if url.contains('?') { '&' } else { '?' };
        format!(
            "{url}{sep}options=-c%20pg_stat_statements.track%3Dall%20\
             -c%20pg_stat_statements.track_planning%3Don"
        )
    } else {
        format!(
            "{url} options='-c pg_stat_statements.track=all \
             -c pg_stat_statements.track_planning=on'"
        )
    }
}

/// Where a PostgreSQL turn's time goes: the same turns at concurrency
/// `conc` on a provider whose connections track nested statements, then
/// the statements (top-level function calls and, up to `max_rows` in all,
/// the statements inside them) with their execution time per turn.
async fn breakdown(ctx: &Ctx, n: usize, conc: usize, max_rows: usize) -> Result<()> {
    use duroxide_postgres::{PostgresOptions, PostgresProvider};
    println!();
    println!(
        "  where a postgres turn's time goes (c={conc}, {n} turns, pg_stat_statements.track=all on \
         the provider's connections; server-side execution time incl. lock waits, excluding \
         commit and network)"
    );
    let schema = crate::pg::schema_name(&format!("turns_breakdown_c{conc}"));
    ctx.admin.drop_schema(&schema).await;
    ctx.admin.track_schema(&schema);
    let r = async {
        let provider = PostgresProvider::connect(
            &with_track_all(&ctx.url),
            PostgresOptions::new()
                .schema(schema.as_str())
                .statement_timeout(None)
                .application_name("duroxide-postgres-bench"),
        )
        .await?;
        let p: Arc<dyn Provider> = Arc::new(provider);
        let mut tasks = Vec::new();
        for w in 0..8usize {
            let p = p.clone();
            tasks.push(tokio::spawn(async move {
                for i in (w..n).step_by(8) {
                    p.enqueue_for_orchestrator(start_item(&format!("bd-{i:06}")), None)
                        .await?;
                }
                Ok::<(), duroxide::providers::ProviderError>(())
            }));
        }
        for t in tasks {
            t.await??;
        }
        for queue in [Queue::Orchestrator, Queue::Worker] {
            ctx.admin.pgss_reset().await?;
            let phase = drive(p.clone(), queue, n, conc, Duration::from_secs(30)).await;
            if phase.done == 0 {
                return Err(crate::util::err(format!(
                    "{queue:?}: no turns ({})",
                    phase.first_error.unwrap_or_default()
                )));
            }
            let rows = ctx
                .admin
                .client
                .query(
                    "SELECT calls, total_exec_time, shared_blks_hit + shared_blks_read, \
                            shared_blks_dirtied, wal_bytes::float8, toplevel, \
                            regexp_replace(query, '\\s+', ' ', 'g'), plans, total_plan_time \
                     FROM pg_stat_statements WHERE strpos(query, $1) > 0 \
                     ORDER BY toplevel DESC, total_exec_time DESC",
                    &[&schema],
                )
                .await?;
            let turns = phase.done as f64;
            println!();
            println!(
                "  {queue:?} turn: client-side p50 {} ms (fetch {} + ack {}), {} turns",
                fmt_ms(phase.turn.p50()),
                fmt_ms(phase.fetch.p50()),
                fmt_ms(phase.ack.p50()),
                phase.done
            );
            let mut t = Table::new(
                &[
                    "statement",
                    "calls/turn",
                    "exec ms/turn",
                    "plans/turn",
                    "plan ms/turn",
                    "blocks/turn",
                    "dirtied/turn",
                    "WAL B/turn",
                ],
                1,
            );
            let (mut top_ms, mut nested_ms, mut plan_ms) = (0.0, 0.0, 0.0);
            let mut hidden = 0;
            for (i, row) in rows.iter().enumerate() {
                let calls: i64 = row.try_get(0)?;
                let total: f64 = row.try_get(1)?;
                let blocks: i64 = row.try_get(2)?;
                let dirtied: i64 = row.try_get(3)?;
                let wal: f64 = row.try_get(4)?;
                let toplevel: bool = row.try_get(5)?;
                let query: String = row.try_get(6)?;
                let plans: i64 = row.try_get(7)?;
                let plan_total: f64 = row.try_get(8)?;
                if toplevel {
                    top_ms += total / turns;
                } else {
                    nested_ms += total / turns;
                    plan_ms += plan_total / turns;
                }
                if i >= max_rows {
                    hidden += 1;
                    continue;
                }
                let text = query
                    .replace(&format!("\"{schema}\"."), "")
                    .replace(&format!("{schema}."), "");
                t.row(vec![
                    format!(
                        "{}{}",
                        if toplevel { "" } else { "  > " },
                        truncate(&text, 80)
                    ),
                    fmt_num(calls as f64 / turns),
                    format!("{:.3}", total / turns),
                    fmt_num(plans as f64 / turns),
                    format!("{:.3}", plan_total / turns),
                    fmt_num(blocks as f64 / turns),
                    fmt_num(dirtied as f64 / turns),
                    fmt_num(wal / turns),
                ]);
            }
            t.print();
            if hidden > 0 {
                println!("  ({hidden} cheaper nested statements not shown; included in the sums)");
            }
            let client_ms = phase.turn.mean().map(ms).unwrap_or(0.0);
            println!(
                "  per turn: client-observed mean {client_ms:.3} ms = server execution of the calls \
                 {top_ms:.3} ms + commit, round trips, client{} {:.3} ms;",
                if conc > 1 { " and waiting for a CPU" } else { "" },
                (client_ms - top_ms).max(0.0)
            );
            println!(
                "  the calls' execution = nested statements {nested_ms:.3} ms + their planning \
                 {plan_ms:.3} ms + PL/pgSQL and other {:.3} ms",
                (top_ms - nested_ms - plan_ms).max(0.0)
            );
        }
        Ok::<(), crate::util::BoxError>(())
    }
    .await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    ctx.admin.drop_schema(&schema).await;
    r
}

fn phase(r: &Run, q: Queue) -> &Phase {
    match q {
        Queue::Orchestrator => &r.orch,
        Queue::Worker => &r.work,
    }
}

fn truncate(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        s.to_string()
    } else {
        format!("{}...", s.chars().take(n).collect::<String>())
    }
}

/// One store's turns at concurrency `conc`: `n` instances through both
/// queues (also the remote section's, through its proxy).
pub(crate) async fn one(
    ctx: &Ctx,
    kind: Kind,
    p: Arc<dyn Provider>,
    conc: usize,
    n: usize,
    cap: Duration,
) -> Result<Run> {
    let schema = match kind {
        Kind::Postgres => Some(format!("dxb_turns_c{conc}_pg_{}", std::process::id())),
        Kind::Sqlite => None,
    };

    // Set-up: N StartOrchestration messages, 8 enqueuers.
    crate::logcap::begin();
    let t0 = Instant::now();
    let mut tasks = Vec::new();
    for w in 0..8usize {
        let p = p.clone();
        tasks.push(tokio::spawn(async move {
            for i in (w..n).step_by(8) {
                p.enqueue_for_orchestrator(start_item(&format!("turn-{i:06}")), None)
                    .await
                    .map_err(|e| e.to_string())?;
            }
            Ok::<(), String>(())
        }));
    }
    for t in tasks {
        t.await?.map_err(crate::util::err)?;
    }
    let enqueue = t0.elapsed();

    let orch = measured(
        ctx,
        schema.as_deref(),
        &p,
        Queue::Orchestrator,
        n,
        conc,
        cap,
    )
    .await?;
    let work = measured(
        ctx,
        schema.as_deref(),
        &p,
        Queue::Worker,
        orch.done,
        conc,
        cap,
    )
    .await?;
    Ok(Run {
        kind,
        conc,
        orch,
        work,
        enqueue,
        logs: crate::logcap::end(),
    })
}

/// One phase, with pg_stat_statements around it for PostgreSQL.
async fn measured(
    ctx: &Ctx,
    schema: Option<&str>,
    p: &Arc<dyn Provider>,
    queue: Queue,
    n: usize,
    conc: usize,
    cap: Duration,
) -> Result<Phase> {
    if schema.is_some() {
        ctx.admin.pgss_reset().await?;
    }
    let before = crate::cpu::snap(ctx.postmaster);
    let mut phase = drive(p.clone(), queue, n, conc, cap).await;
    phase.cpu = crate::cpu::snap(ctx.postmaster).since(&before);
    if let Some(schema) = schema {
        phase.statements = ctx.admin.pgss_calls_in_schema(schema).await?;
        if let Some(per_call) = phase.stmts_per_call() {
            if (per_call - 1.0).abs() >= 0.005 {
                println!(
                    "  note: {:.2} statements per call ({queue:?} c={conc}); most called:",
                    per_call
                );
                for (calls, q) in ctx.admin.pgss_top(schema, 6).await? {
                    println!("    {calls:>7}  {}", truncate(&q, 140));
                }
            }
        }
    }
    Ok(phase)
}

/// What a fetch claimed.
enum Claimed {
    Orch(Box<OrchestrationItem>, String),
    Work(WorkItem, String),
}

#[derive(Default)]
struct Local {
    turn: Vec<Duration>,
    fetch: Vec<Duration>,
    ack: Vec<Duration>,
    fetch_calls: usize,
    empty: usize,
    empty_ready: usize,
    errors: usize,
    first_error: Option<String>,
    done: usize,
}

/// `conc` tasks fetch (poll timeout zero) and ack on `queue` until `n`
/// items were claimed or `cap` has passed.
pub(crate) async fn drive(
    p: Arc<dyn Provider>,
    queue: Queue,
    n: usize,
    conc: usize,
    cap: Duration,
) -> Phase {
    let claimed = Arc::new(AtomicUsize::new(0));
    let start = Instant::now();
    let merged = Arc::new(Mutex::new(Local::default()));
    let mut tasks = Vec::new();
    for _ in 0..conc {
        let p = p.clone();
        let claimed = claimed.clone();
        let merged = merged.clone();
        tasks.push(tokio::spawn(async move {
            let mut l = Local::default();
            loop {
                if claimed.load(Ordering::SeqCst) >= n || start.elapsed() > cap {
                    break;
                }
                let t0 = Instant::now();
                l.fetch_calls += 1;
                let fetched = fetch(&p, queue).await;
                let fetch_d = t0.elapsed();
                let item = match fetched {
                    Ok(Some(item)) => item,
                    Ok(None) => {
                        l.empty += 1;
                        let now_claimed = claimed.load(Ordering::SeqCst);
                        if n.saturating_sub(now_claimed) >= conc {
                            l.empty_ready += 1;
                        }
                        tokio::task::yield_now().await;
                        continue;
                    }
                    Err(e) => {
                        l.errors += 1;
                        l.first_error.get_or_insert(format!("fetch: {e}"));
                        tokio::time::sleep(Duration::from_millis(10)).await;
                        continue;
                    }
                };
                claimed.fetch_add(1, Ordering::SeqCst);
                let t1 = Instant::now();
                match ack(&p, item).await {
                    Ok(()) => {
                        let ack_d = t1.elapsed();
                        l.done += 1;
                        l.fetch.push(fetch_d);
                        l.ack.push(ack_d);
                        l.turn.push(fetch_d + ack_d);
                    }
                    Err(e) => {
                        l.errors += 1;
                        l.first_error.get_or_insert(format!("ack: {e}"));
                    }
                }
            }
            if let Ok(mut m) = merged.lock() {
                m.turn.extend(l.turn);
                m.fetch.extend(l.fetch);
                m.ack.extend(l.ack);
                m.fetch_calls += l.fetch_calls;
                m.empty += l.empty;
                m.empty_ready += l.empty_ready;
                m.errors += l.errors;
                m.done += l.done;
                if m.first_error.is_none() {
                    m.first_error = l.first_error;
                }
            }
        }));
    }
    let mut panicked = 0;
    for t in tasks {
        if t.await.is_err() {
            panicked += 1;
        }
    }
    let wall = start.elapsed();
    let l = match Arc::try_unwrap(merged) {
        Ok(m) => m.into_inner().unwrap_or_default(),
        Err(m) => std::mem::take(&mut *m.lock().unwrap_or_else(|e| e.into_inner())),
    };
    let mut first_error = l.first_error;
    if panicked > 0 {
        first_error.get_or_insert(format!("{panicked} worker task(s) panicked"));
    }
    if start.elapsed() > cap && l.done < n {
        first_error.get_or_insert(format!(
            "time cap {} s reached after {} of {n} turns",
            cap.as_secs(),
            l.done
        ));
    }
    Phase {
        target: n,
        done: l.done,
        wall,
        turn: Samples::new(l.turn),
        fetch: Samples::new(l.fetch),
        ack: Samples::new(l.ack),
        fetch_calls: l.fetch_calls,
        empty: l.empty,
        empty_ready: l.empty_ready,
        errors: l.errors + panicked,
        first_error,
        statements: None,
        cpu: Default::default(),
    }
}

async fn fetch(
    p: &Arc<dyn Provider>,
    queue: Queue,
) -> std::result::Result<Option<Claimed>, String> {
    match queue {
        Queue::Orchestrator => p
            .fetch_orchestration_item(LOCK_TIMEOUT, Duration::ZERO, None)
            .await
            .map(|o| o.map(|(item, token, _)| Claimed::Orch(Box::new(item), token)))
            .map_err(|e| e.to_string()),
        Queue::Worker => p
            .fetch_work_item(LOCK_TIMEOUT, Duration::ZERO, None, &TagFilter::default())
            .await
            .map(|o| o.map(|(item, token, _)| Claimed::Work(item, token)))
            .map_err(|e| e.to_string()),
    }
}

async fn ack(p: &Arc<dyn Provider>, claimed: Claimed) -> std::result::Result<(), String> {
    match claimed {
        Claimed::Orch(item, token) => {
            let inst = item.instance.clone();
            let exec = item.execution_id;
            let base = item.history.len() as u64;
            let fire_at_ms = now_epoch_ms() + 3_600_000;
            let mut delta = Vec::with_capacity(3);
            if base == 0 {
                delta.push(Event::with_event_id(
                    1,
                    inst.as_str(),
                    exec,
                    None,
                    started_kind(),
                ));
            }
            let sched_id = base + delta.len() as u64 + 1;
            delta.push(Event::with_event_id(
                sched_id,
                inst.as_str(),
                exec,
                None,
                EventKind::ActivityScheduled {
                    name: ACTIVITY_NAME.into(),
                    input: ACTIVITY_INPUT.into(),
                    session_id: None,
                    tag: None,
                },
            ));
            let timer_id = sched_id + 1;
            delta.push(Event::with_event_id(
                timer_id,
                inst.as_str(),
                exec,
                None,
                EventKind::TimerCreated { fire_at_ms },
            ));
            let worker_items = vec![WorkItem::ActivityExecute {
                instance: inst.clone(),
                execution_id: exec,
                id: sched_id,
                name: ACTIVITY_NAME.into(),
                input: ACTIVITY_INPUT.into(),
                session_id: None,
                tag: None,
            }];
            let orch_items = vec![WorkItem::TimerFired {
                instance: inst.clone(),
                execution_id: exec,
                id: timer_id,
                fire_at_ms,
            }];
            let metadata = ExecutionMetadata {
                orchestration_name: Some(ORCH_NAME.into()),
                orchestration_version: Some(ORCH_VERSION.into()),
                pinned_duroxide_version: (base == 0).then(duroxide::current_build_version),
                ..Default::default()
            };
            p.ack_orchestration_item(
                &token,
                exec,
                delta,
                worker_items,
                orch_items,
                metadata,
                vec![],
            )
            .await
            .map_err(|e| e.to_string())
        }
        Claimed::Work(item, token) => {
            let completion = match item {
                WorkItem::ActivityExecute {
                    instance,
                    execution_id,
                    id,
                    ..
                } => WorkItem::ActivityCompleted {
                    instance,
                    execution_id,
                    id,
                    result: "{\"ok\":true,\"value\":42}".into(),
                },
                other => return Err(format!("unexpected work item {other:?}")),
            };
            p.ack_work_item(&token, Some(completion))
                .await
                .map_err(|e| e.to_string())
        }
    }
}

pub fn started_kind() -> EventKind {
    EventKind::OrchestrationStarted {
        name: ORCH_NAME.into(),
        version: ORCH_VERSION.into(),
        input: "{}".into(),
        parent_instance: None,
        parent_id: None,
        parent_execution_id: None,
        carry_forward_events: None,
        initial_custom_status: None,
    }
}

pub fn start_item(instance: &str) -> WorkItem {
    WorkItem::StartOrchestration {
        instance: instance.to_string(),
        orchestration: ORCH_NAME.into(),
        input: "{}".into(),
        version: Some(ORCH_VERSION.into()),
        parent_instance: None,
        parent_id: None,
        parent_execution_id: None,
        execution_id: duroxide::INITIAL_EXECUTION_ID,
    }
}

pub fn metadata_first_turn() -> ExecutionMetadata {
    ExecutionMetadata {
        orchestration_name: Some(ORCH_NAME.into()),
        orchestration_version: Some(ORCH_VERSION.into()),
        pinned_duroxide_version: Some(duroxide::current_build_version()),
        ..Default::default()
    }
}
