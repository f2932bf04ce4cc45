//! Section "pgbouncer": the provider behind PgBouncer in transaction mode
//! next to a direct connection, in the same run on the same server.
//!
//! Four modes: direct (the default), direct with the pooler mode's unnamed
//! statements (what they cost without PgBouncer's hop), PgBouncer with long
//! polling over a direct `listen_url`, and PgBouncer alone (idle fetches
//! poll with a backoff). Per mode: provider turns (fetch + ack of first turns driven
//! directly, 4 tasks, poll timeout zero), runtime throughput (duroxide's
//! parallel-orchestrations stress test: 20 in flight, 5 activities each,
//! 2+2 dispatchers), and the statements an idle runtime (2+2 dispatchers)
//! sends per second.

#[path = "../../tests/common/pgbouncer.rs"]
mod bouncer;

use crate::stress::Factory;
use crate::turns::{self, Queue};
use crate::util::{err, fmt_ms, fmt_num, heading, Result, Table};
use crate::Ctx;
use duroxide::provider_stress_tests::parallel_orchestrations::run_parallel_orchestrations_test_with_config;
use duroxide::provider_stress_tests::StressTestConfig;
use duroxide::providers::Provider;
use duroxide::runtime::registry::ActivityRegistry;
use duroxide::runtime::{Runtime, RuntimeOptions};
use duroxide::OrchestrationRegistry;
use duroxide_postgres::{PostgresOptions, PostgresProvider};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(Clone, Copy)]
enum Mode {
    Direct,
    /// Direct, but with the pooler's unnamed statements: what the statement
    /// mode costs apart from PgBouncer's hop.
    DirectUnnamed,
    PoolerListen,
    PoolerPoll,
}

impl Mode {
    const ALL: [Mode; 4] = [
        Mode::Direct,
        Mode::DirectUnnamed,
        Mode::PoolerListen,
        Mode::PoolerPoll,
    ];

    fn label(self) -> &'static str {
        match self {
            Mode::Direct => "direct",
            Mode::DirectUnnamed => "direct, unnamed statements",
            Mode::PoolerListen => "pgbouncer + direct listen_url",
            Mode::PoolerPoll => "pgbouncer, no listen_url",
        }
    }

    fn short(self) -> &'static str {
        match self {
            Mode::Direct => "d",
            Mode::DirectUnnamed => "du",
            Mode::PoolerListen => "pl",
            Mode::PoolerPoll => "pp",
        }
    }
}

/// A fresh provider of `mode` in a fresh schema (tracked for clean-up).
async fn provider(
    ctx: &Ctx,
    bouncer_url: &str,
    mode: Mode,
    what: &str,
) -> Result<(Arc<PostgresProvider>, String)> {
    let schema = crate::pg::schema_name(&format!("pgb_{what}_{}", mode.short()));
    ctx.admin.drop_schema(&schema).await;
    ctx.admin.track_schema(&schema);
    let base = PostgresOptions::new()
        .schema(schema.as_str())
        .application_name("duroxide-postgres-bench");
    let (url, options) = match mode {
        Mode::Direct => (ctx.url.as_str(), base),
        Mode::DirectUnnamed => (
            ctx.url.as_str(),
            base.transaction_pooler(true).listen_url(ctx.url.clone()),
        ),
        Mode::PoolerListen => (
            bouncer_url,
            base.transaction_pooler(true).listen_url(ctx.url.clone()),
        ),
        Mode::PoolerPoll => (bouncer_url, base.transaction_pooler(true)),
    };
    let p = PostgresProvider::connect(url, options).await?;
    Ok((Arc::new(p), schema))
}

/// One mode's results over all rounds.
#[derive(Default)]
struct Row {
    turns_per_s: Vec<f64>,
    turn_p50: Vec<Duration>,
    turn_errors: usize,
    orch_per_s: Vec<f64>,
    stress_error: Option<String>,
    idle_per_s: Option<f64>,
}

/// The median and the range of `v`: "m (lo–hi)".
fn spread(v: &[f64]) -> String {
    if v.is_empty() {
        return "-".into();
    }
    let mut v = v.to_vec();
    v.sort_by(|a, b| a.total_cmp(b));
    format!(
        "{} ({}–{})",
        fmt_num(v[v.len() / 2]),
        fmt_num(v[0]),
        fmt_num(v[v.len() - 1])
    )
}

pub async fn run(ctx: &Ctx) -> Result<()> {
    heading("PgBouncer (transaction pooling) next to direct");
    let config: tokio_postgres::Config = ctx.url.parse()?;
    let port = config.get_ports().first().copied().unwrap_or(5432);
    let pgb = bouncer::PgBouncer::try_start(port)
        .map_err(|e| err(format!("could not start PgBouncer: {e}")))?;
    let bouncer_url = pgb.url(
        config.get_user().unwrap_or("postgres"),
        config.get_dbname().unwrap_or("postgres"),
    );
    let n = if ctx.quick { 1_000 } else { 4_000 };
    let duration = ctx.stress_secs.unwrap_or(if ctx.quick { 3 } else { 10 });
    let idle_secs = if ctx.quick { 5 } else { 10 };
    let rounds = if ctx.quick { 3 } else { 5 };
    println!(
        "  PgBouncer 1.18, pool_mode = transaction, default_pool_size 40, on 127.0.0.1; \
         turns: {n} first turns, 4 tasks; stress: 20 in flight, 5 activities, 2+2 \
         dispatchers, {duration} s; {rounds} rounds, the modes taking turns (median and \
         range); idle: 2+2 dispatchers, {idle_secs} s, once"
    );

    let mut rows: Vec<Row> = Mode::ALL.iter().map(|_| Row::default()).collect();
    for round in 1..=rounds {
        for (mode, row) in Mode::ALL.into_iter().zip(rows.iter_mut()) {
            crate::settle(ctx, &format!("pgbouncer {} round {round}", mode.label())).await;
            // Provider turns.
            let (p, schema) = provider(ctx, &bouncer_url, mode, "turns").await?;
            let dynp: Arc<dyn Provider> = p.clone();
            for i in 0..n {
                dynp.enqueue_for_orchestrator(turns::start_item(&format!("t-{i:06}")), None)
                    .await?;
            }
            let phase =
                turns::drive(dynp, Queue::Orchestrator, n, 4, Duration::from_secs(120)).await;
            if let Some(e) = &phase.first_error {
                eprintln!("  [pgbouncer] {} turns: {e}", mode.label());
            }
            drop(p);
            ctx.admin.drop_schema(&schema).await;

            // Runtime throughput.
            let (p, schema) = provider(ctx, &bouncer_url, mode, "stress").await?;
            let factory = Factory::once(p as Arc<dyn Provider>);
            let stress = run_parallel_orchestrations_test_with_config(
                &factory,
                StressTestConfig {
                    max_concurrent: 20,
                    duration_secs: duration,
                    tasks_per_instance: 5,
                    activity_delay_ms: 0,
                    orch_concurrency: 2,
                    worker_concurrency: 2,
                    wait_timeout_secs: 60,
                },
            )
            .await
            // The error is not Send: keep its text only.
            .map(|r| r.orch_throughput)
            .map_err(|e| e.to_string());
            drop(factory);
            ctx.admin.drop_schema(&schema).await;

            eprintln!(
                "  [pgbouncer] round {round} {}: {:.0} turns/s, {} orch/s",
                mode.label(),
                phase.per_s(),
                stress.as_ref().map_or("-".into(), |v| fmt_num(*v))
            );
            row.turns_per_s.push(phase.per_s());
            row.turn_p50.extend(phase.turn.p50());
            row.turn_errors += phase.errors;
            match stress {
                Ok(v) => row.orch_per_s.push(v),
                Err(e) => {
                    row.stress_error.get_or_insert(e);
                }
            }
        }
    }
    for (mode, row) in Mode::ALL.into_iter().zip(rows.iter_mut()) {
        row.idle_per_s = idle(ctx, &bouncer_url, mode, idle_secs).await?;
    }
    drop(pgb);

    let mut t = Table::new(
        &[
            "mode",
            "turns/s",
            "turn p50 (median)",
            "errors",
            "runtime orch/s",
            "idle statements/s",
        ],
        1,
    );
    for (mode, r) in Mode::ALL.into_iter().zip(&rows) {
        let mut p50 = r.turn_p50.clone();
        p50.sort();
        t.row(vec![
            mode.label().to_string(),
            spread(&r.turns_per_s),
            fmt_ms(p50.get(p50.len() / 2).copied()),
            r.turn_errors.to_string(),
            match &r.stress_error {
                None => spread(&r.orch_per_s),
                Some(e) => format!("{} (a run failed: {e})", spread(&r.orch_per_s)),
            },
            r.idle_per_s.map_or("-".into(), |v| format!("{v:.1}")),
        ]);
    }
    t.print();
    Ok(())
}

/// Statements per second an idle runtime (2+2 dispatchers) sends, from
/// pg_stat_statements (`None` without it).
async fn idle(ctx: &Ctx, bouncer_url: &str, mode: Mode, secs: u64) -> Result<Option<f64>> {
    let (p, schema) = provider(ctx, bouncer_url, mode, "idle").await?;
    let rt = Runtime::start_with_options(
        p.clone(),
        ActivityRegistry::builder().build(),
        OrchestrationRegistry::builder().build(),
        RuntimeOptions {
            orchestration_concurrency: 2,
            worker_concurrency: 2,
            ..Default::default()
        },
    )
    .await;
    // Let start-up and the backoff settle, then count.
    tokio::time::sleep(Duration::from_secs(3)).await;
    ctx.admin.pgss_reset().await?;
    let started = Instant::now();
    tokio::time::sleep(Duration::from_secs(secs)).await;
    let statements = ctx.admin.pgss_calls_in_schema(&schema).await?;
    let elapsed = started.elapsed().as_secs_f64();
    rt.shutdown(None).await;
    drop(p);
    ctx.admin.drop_schema(&schema).await;
    Ok(statements.map(|s| s as f64 / elapsed))
}
