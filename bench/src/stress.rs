//! Section 2: Runtime throughput: duroxide's own provider stress tests (fan-out of 5
//! activities per orchestration, 20 orchestrations in flight), run for both
//! stores with the same configuration.

use crate::counting::{Counting, Snapshot};
use crate::stores::{Kind, Store};
use crate::util::{err, fmt_num, heading, ratio, verdict, Result, Table};
use crate::Ctx;
use duroxide::provider_stress_tests::large_payload::{
    run_large_payload_test_with_config, LargePayloadConfig,
};
use duroxide::provider_stress_tests::parallel_orchestrations::{
    run_parallel_orchestrations_test_with_config, ProviderStressFactory,
};
use duroxide::provider_stress_tests::{StressTestConfig, StressTestResult};
use duroxide::providers::Provider;
use std::sync::{Arc, Mutex};

/// Hands the stress test a provider created (and wrapped) beforehand, so
/// creation errors are reported instead of panicking inside the test.
pub(crate) struct Factory {
    provider: Mutex<Option<Arc<dyn Provider>>>,
}

impl Factory {
    /// A factory that hands out `provider`, once.
    pub(crate) fn once(provider: Arc<dyn Provider>) -> Self {
        Self {
            provider: Mutex::new(Some(provider)),
        }
    }
}

#[async_trait::async_trait]
impl ProviderStressFactory for Factory {
    async fn create_provider(&self) -> Arc<dyn Provider> {
        self.provider
            .lock()
            .ok()
            .and_then(|mut p| p.take())
            .expect("the bench's stress factory hands out one provider per test")
    }
}

#[derive(Clone, Copy, PartialEq)]
pub(crate) enum Test {
    Parallel {
        delay_ms: u64,
        orch: usize,
        work: usize,
    },
    LargePayload,
}

pub(crate) struct Row {
    kind: Kind,
    test: Test,
    pub(crate) result: std::result::Result<StressTestResult, String>,
    calls: Snapshot,
    statements: Option<i64>,
    /// SQL function -> calls (PostgreSQL).
    by_function: Vec<(String, i64)>,
    /// SQL function -> calls and server time (PostgreSQL).
    times: Vec<crate::pg::FunctionTime>,
    /// What the store's active backends were doing, by sample count:
    /// (wait event type, wait event), "CPU" when not waiting.
    waits: Vec<((String, String), u64)>,
    /// How many times the wait events were sampled.
    samples: u64,
    /// Server ms per fetch_orchestration_item call, per sampling window.
    fetch_ms_series: Vec<f64>,
    /// Table statistics at the end of the run.
    tables: String,
    cpu: crate::cpu::Usage,
    logs: crate::logcap::Captured,
}

/// Orchestrations/s targets for the PostgreSQL provider.
fn target(test: Test) -> Option<(f64, String)> {
    match test {
        Test::Parallel {
            delay_ms: 10, work, ..
        } => {
            let ideal = work as f64 * 100.0 / 5.0;
            Some((0.9 * ideal, format!(">= 90% of {ideal:.0}")))
        }
        Test::Parallel {
            delay_ms: 0, orch, ..
        } => {
            let base = match orch {
                1 => 59.0,
                2 => 78.0,
                4 => 107.0,
                _ => return None,
            };
            Some((3.0 * base, format!(">= 3 x {base:.0}")))
        }
        _ => None,
    }
}

fn label(test: Test) -> (String, String) {
    match test {
        Test::Parallel {
            delay_ms,
            orch,
            work,
        } => (format!("fan-out {delay_ms} ms"), format!("{orch}:{work}")),
        Test::LargePayload => ("large payload 5 ms".into(), "1:1".into()),
    }
}

pub async fn run(ctx: &Ctx) -> Result<()> {
    heading("2. Runtime throughput (duroxide provider_stress_tests)");
    let duration = ctx.stress_secs.unwrap_or(if ctx.quick { 3 } else { 10 });
    let concs: &[usize] = if ctx.quick { &[2] } else { &[1, 2, 4] };
    println!(
        "  parallel orchestrations: max_concurrent 20, {duration} s, 5 activities each, \
         orch:worker dispatchers as listed; large payload: duroxide defaults, {duration} s"
    );

    let mut tests = Vec::new();
    for delay_ms in [10u64, 0] {
        for &c in concs {
            tests.push(Test::Parallel {
                delay_ms,
                orch: c,
                work: c,
            });
        }
    }
    tests.push(Test::LargePayload);

    let mut rows = Vec::new();
    for &test in &tests {
        for kind in Kind::BOTH {
            let (name, conc) = label(test);
            crate::settle(ctx, &format!("stress {} {name} {conc}", kind.label())).await;
            let row = one(ctx, kind, test, duration).await?;
            match &row.result {
                Ok(r) => eprintln!(
                    "  [stress] {} {name} {conc}: {:.1} orch/s",
                    kind.label(),
                    r.orch_throughput
                ),
                Err(e) => eprintln!("  [stress] {} {name} {conc}: failed: {e}", kind.label()),
            }
            rows.push(row);
        }
    }

    let mut t = Table::new(
        &[
            "test",
            "o:w",
            "store",
            "launched",
            "completed",
            "failed",
            "orch/s",
            "act/s",
            "avg ms",
            "pg/sqlite",
            "target orch/s",
            "verdict",
            "calls/orch",
            "stmts/call",
            "busy/other cpu",
        ],
        3,
    );
    for row in &rows {
        let (name, conc) = label(row.test);
        let other = rows
            .iter()
            .find(|r| r.test == row.test && r.kind != row.kind)
            .and_then(|r| r.result.as_ref().ok())
            .map(|r| r.orch_throughput);
        match &row.result {
            Err(e) => t.row(vec![
                name,
                conc,
                row.kind.label().into(),
                format!("failed: {e}"),
            ]),
            Ok(r) => {
                let (pg_vs, tgt, verd) = if row.kind == Kind::Postgres {
                    let tg = target(row.test);
                    (
                        ratio(Some(r.orch_throughput), other),
                        tg.as_ref()
                            .map(|(v, s)| format!("{} ({s})", fmt_num(*v)))
                            .unwrap_or_else(|| "-".into()),
                        match tg {
                            Some((v, _)) => verdict(Some(
                                r.orch_throughput >= v && r.failed == 0 && r.completed > 0,
                            ))
                            .to_string(),
                            None => "-".into(),
                        },
                    )
                } else {
                    ("".into(), "".into(), "".into())
                };
                let calls = row.calls.total_calls() as f64;
                let per_orch = if r.completed > 0 {
                    fmt_num(calls / r.completed as f64)
                } else {
                    "-".into()
                };
                let per_call = row
                    .statements
                    .filter(|_| calls > 0.0)
                    .map(|s| fmt_num(s as f64 / calls))
                    .unwrap_or_else(|| "-".into());
                t.row(vec![
                    name,
                    conc,
                    row.kind.label().into(),
                    r.launched.to_string(),
                    r.completed.to_string(),
                    format!(
                        "{} ({}/{}/{})",
                        r.failed,
                        r.failed_infrastructure,
                        r.failed_configuration,
                        r.failed_application
                    ),
                    fmt_num(r.orch_throughput),
                    fmt_num(r.activity_throughput),
                    fmt_num(r.avg_latency_ms),
                    pg_vs,
                    tgt,
                    verd,
                    per_orch,
                    per_call,
                    format!(
                        "{:.0}%/{:.0}%",
                        row.cpu.busy_pct(crate::cpu::cores()),
                        row.cpu.other_pct(crate::cpu::cores())
                    ),
                ]);
            }
        }
    }
    t.print();
    println!(
        "  failed = total (infrastructure/configuration/application); avg ms = duroxide's \
         total time / completed;"
    );
    println!(
        "  calls/orch = provider calls (counting wrapper) per completed orchestration; \
         stmts/call = pg_stat_statements calls / provider calls;"
    );
    println!(
        "  busy/other cpu = machine CPU busy during the run / of which other programs (not the \
         bench, the postgres server or the kernel), as shares of all cores"
    );
    println!("  postgres statements per provider call, by method (sql calls / provider calls):");
    for row in rows
        .iter()
        .filter(|r| r.kind == Kind::Postgres && r.result.is_ok())
    {
        let (name, conc) = label(row.test);
        println!(
            "    {name} {conc}: {}",
            crate::pg::per_method(&row.calls, &row.by_function)
        );
    }
    println!(
        "  postgres server time per fetch_orchestration_item call (ms, mean per 2 s window, \
         pg_stat_statements) and table statistics at the end of each run:"
    );
    for row in rows
        .iter()
        .filter(|r| r.kind == Kind::Postgres && r.result.is_ok())
    {
        let (name, conc) = label(row.test);
        let series: Vec<String> = row
            .fetch_ms_series
            .iter()
            .map(|v| format!("{v:.2}"))
            .collect();
        println!("    {name} {conc}: {}", series.join(" "));
        println!("      {}", row.tables);
    }
    // Worst ratio per fetch method across the PostgreSQL runs.
    let mut worst: Vec<(&str, f64, String)> = Vec::new();
    for method in ["fetch_orchestration_item", "fetch_work_item"] {
        let mut w: Option<(f64, String)> = None;
        for row in rows
            .iter()
            .filter(|r| r.kind == Kind::Postgres && r.result.is_ok())
        {
            let calls = row.calls.get(method);
            let sql: i64 = row
                .by_function
                .iter()
                .filter(|(n, _)| n == method)
                .map(|(_, c)| *c)
                .sum();
            if calls == 0 || row.statements.is_none() {
                continue;
            }
            let r = sql as f64 / calls as f64;
            if w.as_ref().is_none_or(|(x, _)| r > *x) {
                let (name, conc) = label(row.test);
                w = Some((r, format!("{name} {conc}")));
            }
        }
        if let Some((r, at)) = w {
            worst.push((method, r, at));
        }
    }
    for (method, r, at) in worst {
        println!(
            "  target: 1 statement per provider call under the runtime: {method} up to {r:.2} \
             ({at}) -> {}",
            verdict(Some(r < 1.005))
        );
    }
    // Issue 11: fetch statements (pg_stat_statements) per completed turn
    // (acks through the provider), per queue and run.
    let sql_of = |row: &Row, f: &str| -> i64 {
        row.by_function
            .iter()
            .filter(|(n, _)| n == f)
            .map(|(_, c)| *c)
            .sum()
    };
    println!("  fetch statements per completed turn (target <= 1.2 each):");
    for row in rows
        .iter()
        .filter(|r| r.kind == Kind::Postgres && r.result.is_ok() && r.statements.is_some())
    {
        let (name, conc) = label(row.test);
        let per =
            |fetch: &str, ack: &str| sql_of(row, fetch) as f64 / row.calls.get(ack).max(1) as f64;
        let o = per("fetch_orchestration_item", "ack_orchestration_item");
        let w = per("fetch_work_item", "ack_work_item");
        println!(
            "    {name} {conc}: orchestrator {o:.2}, worker {w:.2} -> {}",
            verdict(Some(o <= 1.2 && w <= 1.2))
        );
    }
    per_call_table(&rows);
    wait_table(&rows);
    cpu_budget(&rows);
    crate::logcap::report(
        &rows
            .iter()
            .map(|r| {
                let (name, conc) = label(r.test);
                (format!("{} {name} {conc}", r.kind.label()), r.logs.clone())
            })
            .collect::<Vec<_>>(),
    );
    Ok(())
}

/// One stress run of `test` on a fresh store (also the remote section's,
/// through its proxy).
pub(crate) async fn one(ctx: &Ctx, kind: Kind, test: Test, duration: u64) -> Result<Row> {
    let tag = match test {
        Test::Parallel {
            delay_ms,
            orch,
            work,
        } => format!("stress_d{delay_ms}_{orch}_{work}"),
        Test::LargePayload => "stress_large".into(),
    };
    let store = Store::create(ctx, kind, &tag).await?;
    let schema = store.schema.clone();
    crate::with_store(ctx, store, |p| async move {
        let (wrapped, counts) = Counting::wrap(p);
        let factory = Factory::once(wrapped);
        if schema.is_some() {
            ctx.admin.pgss_reset().await?;
        }
        crate::logcap::begin();
        // Samples the server time per fetch_orchestration_item call.
        let sampler = schema.clone().map(|s| {
            let url = ctx.url.clone();
            tokio::spawn(sample_fetch(url, s))
        });
        let waits = schema.clone().map(|s| {
            let url = ctx.url.clone();
            tokio::spawn(sample_waits(url, s))
        });
        let cpu_before = crate::cpu::snap(ctx.postmaster);
        let handle = tokio::spawn(async move {
            let r = match test {
                Test::Parallel {
                    delay_ms,
                    orch,
                    work,
                } => {
                    let config = StressTestConfig {
                        max_concurrent: 20,
                        duration_secs: duration,
                        tasks_per_instance: 5,
                        activity_delay_ms: delay_ms,
                        orch_concurrency: orch,
                        worker_concurrency: work,
                        wait_timeout_secs: 60,
                    };
                    run_parallel_orchestrations_test_with_config(&factory, config).await
                }
                Test::LargePayload => {
                    let mut config = LargePayloadConfig::default();
                    config.base.duration_secs = duration;
                    run_large_payload_test_with_config(&factory, config).await
                }
            };
            r.map_err(|e| e.to_string())
        });
        let result = match handle.await {
            Ok(r) => r,
            Err(e) if e.is_panic() => Err("panicked (see stderr)".to_string()),
            Err(e) => Err(e.to_string()),
        };
        let cpu = crate::cpu::snap(ctx.postmaster).since(&cpu_before);
        let logs = crate::logcap::end();
        let mut waits = stop_sampler(waits, &WAITS).await;
        let samples = waits
            .iter()
            .find(|((t, _), _)| t.is_empty())
            .map_or(0, |(_, n)| *n);
        waits.retain(|((t, _), _)| !t.is_empty());
        let fetch_ms_series = stop_sampler(sampler, &SERIES).await;
        let tables = match &schema {
            Some(s) => table_stats(ctx, s).await.unwrap_or_else(|e| e.to_string()),
            None => String::new(),
        };
        let (statements, times) = match &schema {
            Some(s) => (
                ctx.admin.pgss_calls_in_schema(s).await?,
                ctx.admin.pgss_time_by_function(s).await?,
            ),
            None => (None, Vec::new()),
        };
        let by_function = times.iter().map(|f| (f.name.clone(), f.calls)).collect();
        Ok(Row {
            kind,
            test,
            result,
            calls: counts.snapshot(),
            statements,
            by_function,
            times,
            waits,
            samples,
            fetch_ms_series,
            tables,
            cpu,
            logs,
        })
    })
    .await
    .map_err(|e| err(format!("{} {tag}: {e}", kind.label())))
}

/// Where the server's time goes under the runtime (issue 11): per SQL
/// function, calls per completed orchestration and server ms per call in
/// the 0 ms fan-out runs, the lowest concurrency next to the highest.
fn per_call_table(rows: &[Row]) {
    let runs: Vec<&Row> = rows
        .iter()
        .filter(|r| {
            r.kind == Kind::Postgres
                && !r.times.is_empty()
                && matches!(r.test, Test::Parallel { delay_ms: 0, .. })
                && r.result.as_ref().is_ok_and(|x| x.completed > 0)
        })
        .collect();
    let (Some(low), Some(high)) = (runs.first(), runs.last()) else {
        return;
    };
    let (_, lo) = label(low.test);
    let (_, hi) = label(high.test);
    let completed = |r: &Row| r.result.as_ref().map(|x| x.completed).unwrap_or(0).max(1) as f64;
    println!(
        "  server time per call, fan-out 0 ms, {lo} next to {hi} (pg_stat_statements, top-level \
         statements; target: {hi} ms/call <= 1.5 x {lo}):"
    );
    let mut t = Table::new(
        &[
            "function",
            &format!("calls/orch {lo}"),
            &format!("ms/call {lo}"),
            &format!("calls/orch {hi}"),
            &format!("ms/call {hi}"),
            "ratio",
            &format!("server s {hi}"),
            &format!("server ms/orch {hi}"),
        ],
        1,
    );
    let mut total_hi = 0.0;
    for f in high.times.iter().filter(|f| f.exec_ms >= 1.0) {
        let at_low = low.times.iter().find(|g| g.name == f.name);
        let per = |g: &crate::pg::FunctionTime| g.exec_ms / g.calls.max(1) as f64;
        total_hi += f.exec_ms;
        t.row(vec![
            f.name.chars().take(40).collect(),
            at_low
                .map(|g| format!("{:.2}", g.calls as f64 / completed(low)))
                .unwrap_or_else(|| "-".into()),
            at_low
                .map(|g| format!("{:.3}", per(g)))
                .unwrap_or_else(|| "-".into()),
            format!("{:.2}", f.calls as f64 / completed(high)),
            format!("{:.3}", per(f)),
            at_low
                .map(|g| format!("{:.2}x", per(f) / per(g).max(1e-9)))
                .unwrap_or_else(|| "-".into()),
            format!("{:.2}", f.exec_ms / 1000.0),
            format!("{:.2}", f.exec_ms / completed(high)),
        ]);
    }
    t.print();
    println!(
        "  server execution time of these calls at {hi}: {:.1} ms per completed orchestration",
        total_hi / completed(high)
    );
}

/// Machine CPU per completed orchestration, split into the PostgreSQL
/// server's processes, this process (the runtime, the stress test and the
/// bench), the kernel and other programs.
fn cpu_budget(rows: &[Row]) {
    println!(
        "  CPU per completed orchestration (ms; /proc): machine = server + runtime (this \
         process) + kernel + other programs"
    );
    let mut t = Table::new(
        &[
            "test", "o:w", "store", "machine", "server", "runtime", "kernel", "other",
        ],
        3,
    );
    for row in rows {
        let Ok(r) = &row.result else { continue };
        if r.completed == 0 {
            continue;
        }
        let (name, conc) = label(row.test);
        let n = r.completed as f64;
        let u = &row.cpu;
        t.row(vec![
            name,
            conc,
            row.kind.label().into(),
            format!("{:.2}", u.machine_ms / n),
            u.server_ms
                .map(|s| format!("{:.2}", s / n))
                .unwrap_or_else(|| "-".into()),
            format!("{:.2}", u.own_ms / n),
            format!("{:.2}", u.kernel_ms / n),
            format!("{:.2}", u.other_ms() / n),
        ]);
    }
    t.print();
}

/// Where the store's backends spent their time while active, from
/// `pg_stat_activity` sampled every 10 ms: running (CPU) or waiting, and
/// for what (lock waits are what concurrency adds on its own; CPU shared by
/// more backends than cores is the rest).
fn wait_table(rows: &[Row]) {
    println!(
        "  active backends of the store by wait event (pg_stat_activity every 10 ms; share of \
         active samples; CPU = running or runnable):"
    );
    for row in rows
        .iter()
        .filter(|r| r.kind == Kind::Postgres && !r.waits.is_empty())
    {
        let (name, conc) = label(row.test);
        let total: u64 = row.waits.iter().map(|(_, n)| n).sum();
        let mut sorted = row.waits.clone();
        sorted.sort_by_key(|w| std::cmp::Reverse(w.1));
        let parts: Vec<String> = sorted
            .iter()
            .take(6)
            .map(|((t, e), n)| {
                let what = if t == "CPU" {
                    "CPU".to_string()
                } else {
                    format!("{t}:{e}")
                };
                format!("{what} {:.0}%", 100.0 * *n as f64 / total.max(1) as f64)
            })
            .collect();
        let locks: u64 = row
            .waits
            .iter()
            .filter(|((t, _), _)| t == "Lock")
            .map(|(_, n)| n)
            .sum();
        println!(
            "    {name} {conc}: {} (lock waits {:.1}%, {:.2} active backends on average)",
            parts.join(", "),
            100.0 * locks as f64 / total.max(1) as f64,
            total as f64 / row.samples.max(1) as f64
        );
    }
}

/// Stops a sampling task and takes what it collected in `into`.
async fn stop_sampler<T>(
    task: Option<tokio::task::JoinHandle<()>>,
    into: &Mutex<Vec<T>>,
) -> Vec<T> {
    let Some(task) = task else {
        return Vec::new();
    };
    task.abort();
    let _ = task.await;
    into.lock()
        .map(|mut v| std::mem::take(&mut *v))
        .unwrap_or_default()
}

static WAITS: Mutex<Vec<((String, String), u64)>> = Mutex::new(Vec::new());

/// Every 10 ms: the wait events of the store's active backends (the
/// provider's connections run statements of `schema` only), added up in
/// [`WAITS`] with the number of samples under ("", "samples"). Runs until
/// aborted.
async fn sample_waits(url: String, schema: String) {
    if let Ok(mut v) = WAITS.lock() {
        v.clear();
    }
    let Ok(client) = crate::pg::connect(&url).await else {
        return;
    };
    let needle = format!("\"{schema}\".");
    let Ok(statement) = client
        .prepare(
            "SELECT coalesce(wait_event_type, 'CPU'), coalesce(wait_event, ''), count(*)::bigint \
             FROM pg_stat_activity WHERE state = 'active' AND pid <> pg_backend_pid() \
               AND strpos(query, $1) > 0 GROUP BY 1, 2",
        )
        .await
    else {
        return;
    };
    let mut tick = tokio::time::interval(std::time::Duration::from_millis(10));
    loop {
        tick.tick().await;
        let Ok(found) = client.query(&statement, &[&needle]).await else {
            return;
        };
        let Ok(mut v) = WAITS.lock() else { return };
        let mut add = |key: (String, String), n: u64| match v.iter_mut().find(|(k, _)| *k == key) {
            Some(e) => e.1 += n,
            None => v.push((key, n)),
        };
        add((String::new(), "samples".into()), 1);
        for r in found {
            add((r.get(0), r.get(1)), r.get::<_, i64>(2) as u64);
        }
    }
}

static SERIES: Mutex<Vec<f64>> = Mutex::new(Vec::new());

/// Every 2 s: mean server execution time of the fetch_orchestration_item
/// calls made in the last window, appended to [`SERIES`]. Runs until aborted.
async fn sample_fetch(url: String, schema: String) {
    if let Ok(mut v) = SERIES.lock() {
        v.clear();
    }
    let Ok(client) = crate::pg::connect(&url).await else {
        return;
    };
    // Any build's function set: `fetch_orchestration_item__<tag>(`.
    let needle = format!("\"{schema}\".fetch_orchestration_item__");
    let mut last: Option<(i64, f64)> = None;
    loop {
        tokio::time::sleep(std::time::Duration::from_secs(2)).await;
        let row = client
            .query_one(
                "SELECT coalesce(sum(calls), 0)::bigint, coalesce(sum(total_exec_time), 0)::float8 \
                 FROM pg_stat_statements WHERE strpos(query, $1) > 0",
                &[&needle],
            )
            .await;
        let Ok(row) = row else { return };
        let (calls, total): (i64, f64) = (row.get(0), row.get(1));
        let (c0, t0) = last.unwrap_or((0, 0.0));
        if calls > c0 {
            if let Ok(mut v) = SERIES.lock() {
                v.push((total - t0) / (calls - c0) as f64);
            }
        }
        last = Some((calls, total));
    }
}

/// Live/dead rows of the queue and history tables, and whether they were
/// ever (auto)analyzed.
async fn table_stats(ctx: &Ctx, schema: &str) -> Result<String> {
    let rows = ctx
        .admin
        .client
        .query(
            "SELECT relname, n_live_tup, n_dead_tup, \
                    (last_analyze IS NOT NULL OR last_autoanalyze IS NOT NULL), \
                    autovacuum_count + vacuum_count \
             FROM pg_stat_user_tables WHERE schemaname = $1 \
               AND relname IN ('orchestrator_queue', 'worker_queue', 'instance_locks', \
                               'history', 'instances', 'executions') \
             ORDER BY relname",
            &[&schema],
        )
        .await?;
    let mut parts = Vec::new();
    for r in rows {
        let (name, live, dead, analyzed, vacuums): (String, i64, i64, bool, i64) =
            (r.get(0), r.get(1), r.get(2), r.get(3), r.get(4));
        parts.push(format!(
            "{name} live {live} dead {dead}{}{}",
            if analyzed {
                " analyzed"
            } else {
                " never-analyzed"
            },
            if vacuums > 0 { " vacuumed" } else { "" }
        ));
    }
    Ok(parts.join("; "))
}
