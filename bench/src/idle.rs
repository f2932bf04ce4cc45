//! Section 5: Idle cost: a runtime with 4 orchestration + 4 worker dispatchers and
//! no work. PostgreSQL: statements per second (pg_stat_statements); both
//! stores: provider calls per second (counting wrapper); then how fast a new
//! start is picked up after the idle period.

use crate::counting::Counting;
use crate::stores::{Kind, Store};
use crate::util::{
    err, fmt_ms, fmt_num, heading, ms, ratio, ratio_d, verdict, Result, Samples, Table,
};
use crate::Ctx;
use duroxide::providers::Provider;
use duroxide::runtime::registry::ActivityRegistry;
use duroxide::runtime::Runtime;
use duroxide::{
    ActivityContext, Client, OrchestrationContext, OrchestrationRegistry, OrchestrationStatus,
    RuntimeOptions,
};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const DISPATCHERS: usize = 8;

/// First time the orchestration body ran, first time the activity ran.
type Marks = Arc<Mutex<HashMap<String, (Option<Instant>, Option<Instant>)>>>;

struct Measured {
    kind: Kind,
    idle: Duration,
    calls: u64,
    calls_desc: String,
    statements: Option<i64>,
    statements_all: Option<i64>,
    orch_pickup: Vec<Duration>,
    act_pickup: Vec<Duration>,
    logs: crate::logcap::Captured,
    cpu: crate::cpu::Usage,
}

impl Measured {
    fn calls_per_s(&self) -> f64 {
        self.calls as f64 / self.idle.as_secs_f64()
    }
    fn stmts_per_s(&self) -> Option<f64> {
        self.statements.map(|s| s as f64 / self.idle.as_secs_f64())
    }
}

fn registries(marks: Marks) -> (ActivityRegistry, OrchestrationRegistry) {
    let m1 = marks.clone();
    let activities = ActivityRegistry::builder()
        .register("Mark", move |_ctx: ActivityContext, input: String| {
            let marks = m1.clone();
            async move {
                if let Ok(mut m) = marks.lock() {
                    m.entry(input.clone())
                        .or_default()
                        .1
                        .get_or_insert(Instant::now());
                }
                Ok(input)
            }
        })
        .build();
    let orchestrations = OrchestrationRegistry::builder()
        .register("Pickup", move |ctx: OrchestrationContext, input: String| {
            let marks = marks.clone();
            async move {
                if let Ok(mut m) = marks.lock() {
                    m.entry(input.clone())
                        .or_default()
                        .0
                        .get_or_insert(Instant::now());
                }
                ctx.schedule_activity("Mark", input).await
            }
        })
        .build();
    (activities, orchestrations)
}

pub async fn run(ctx: &Ctx) -> Result<()> {
    heading("5. Idle cost (runtime, 4 orchestration + 4 worker dispatchers, default long poll)");
    let (idle_secs, pickups) = if ctx.quick { (3, 3) } else { (10, 5) };
    println!(
        "  idle {idle_secs} s after a 1 s settle; then {pickups} starts, the first right after the \
         idle period, the others 1 s apart;"
    );
    println!(
        "  pickup = Client::start_orchestration -> orchestration body first runs (orch) / \
         activity first runs (activity)"
    );
    let mut results = Vec::new();
    for kind in Kind::BOTH {
        crate::settle(ctx, &format!("idle {}", kind.label())).await;
        let store = Store::create(ctx, kind, "idle").await?;
        let schema = store.schema.clone();
        let m = crate::with_store(ctx, store, |p| {
            measure(ctx, kind, p, schema.clone(), idle_secs, pickups)
        })
        .await?;
        results.push(m);
    }

    let sqlite = results.iter().find(|m| m.kind == Kind::Sqlite);
    let mut t = Table::new(
        &[
            "store",
            "provider calls/s",
            "vs sqlite",
            "stmts/s (schema)",
            "stmts/s (all)",
            "per dispatcher/s",
            "orch pickup first",
            "median",
            "activity first",
            "median",
            "bench cpu ms/s",
            "server cpu ms/s",
        ],
        1,
    );
    for m in &results {
        let orch = Samples::new(m.orch_pickup.clone());
        let act = Samples::new(m.act_pickup.clone());
        t.row(vec![
            m.kind.label().into(),
            fmt_num(m.calls_per_s()),
            ratio(Some(m.calls_per_s()), sqlite.map(|s| s.calls_per_s())),
            m.stmts_per_s().map(fmt_num).unwrap_or_else(|| "-".into()),
            m.statements_all
                .map(|s| fmt_num(s as f64 / m.idle.as_secs_f64()))
                .unwrap_or_else(|| "-".into()),
            m.stmts_per_s()
                .map(|s| fmt_num(s / DISPATCHERS as f64))
                .unwrap_or_else(|| fmt_num(m.calls_per_s() / DISPATCHERS as f64) + " calls"),
            format!("{} ms", fmt_ms(m.orch_pickup.first().copied())),
            format!("{} ms", fmt_ms(orch.p50())),
            format!("{} ms", fmt_ms(m.act_pickup.first().copied())),
            format!("{} ms", fmt_ms(act.p50())),
            fmt_num(m.cpu.own_ms / m.idle.as_secs_f64()),
            m.cpu
                .server_ms
                .map(|v| fmt_num(v / m.idle.as_secs_f64()))
                .unwrap_or_else(|| "-".into()),
        ]);
    }
    t.print();
    for m in &results {
        println!(
            "  {} idle provider calls: {}",
            m.kind.label(),
            if m.calls_desc.is_empty() {
                "none".to_string()
            } else {
                m.calls_desc.clone()
            }
        );
    }
    crate::logcap::report(
        &results
            .iter()
            .map(|m| (m.kind.label().to_string(), m.logs.clone()))
            .collect::<Vec<_>>(),
    );
    if let Some(pg) = results.iter().find(|m| m.kind == Kind::Postgres) {
        let orch = Samples::new(pg.orch_pickup.clone());
        let per_disp = pg.stmts_per_s().map(|s| s / DISPATCHERS as f64);
        println!(
            "  target: <= 1 query per dispatcher per second: {} -> {}",
            per_disp
                .map(|v| format!("{} /s", fmt_num(v)))
                .unwrap_or_else(|| "n/a (no pg_stat_statements)".into()),
            verdict(per_disp.map(|v| v <= 1.0))
        );
        println!(
            "  target: new work picked up within 10 ms: first {} ms, median {} ms, max {} ms -> {} \
             (sqlite median {} ms, ratio {})",
            fmt_ms(pg.orch_pickup.first().copied()),
            fmt_ms(orch.p50()),
            fmt_ms(orch.max()),
            verdict(orch.max().map(|d| ms(d) <= 10.0)),
            fmt_ms(sqlite.and_then(|s| Samples::new(s.orch_pickup.clone()).p50())),
            ratio_d(
                orch.p50(),
                sqlite.and_then(|s| Samples::new(s.orch_pickup.clone()).p50())
            ),
        );
    }
    Ok(())
}

async fn measure(
    ctx: &Ctx,
    kind: Kind,
    p: Arc<dyn Provider>,
    schema: Option<String>,
    idle_secs: u64,
    pickups: usize,
) -> Result<Measured> {
    let (wrapped, counts) = Counting::wrap(p);
    let marks: Marks = Arc::default();
    let (activities, orchestrations) = registries(marks.clone());
    let options = RuntimeOptions {
        orchestration_concurrency: 4,
        worker_concurrency: 4,
        ..Default::default()
    };
    crate::logcap::begin();
    let rt =
        Runtime::start_with_options(wrapped.clone(), activities, orchestrations, options).await;
    let client = Client::new(wrapped.clone());
    let r = async {
        tokio::time::sleep(Duration::from_secs(1)).await;
        if schema.is_some() {
            ctx.admin.pgss_reset().await?;
        }
        let before = counts.snapshot();
        let cpu_before = crate::cpu::snap(ctx.postmaster);
        let t = Instant::now();
        tokio::time::sleep(Duration::from_secs(idle_secs)).await;
        let cpu = crate::cpu::snap(ctx.postmaster).since(&cpu_before);
        let (statements, statements_all) = match &schema {
            Some(s) => (
                ctx.admin.pgss_calls_in_schema(s).await?,
                ctx.admin.pgss_calls_all().await?,
            ),
            None => (None, None),
        };
        let idle = t.elapsed();
        let delta = counts.snapshot().since(&before);

        let mut orch_pickup = Vec::new();
        let mut act_pickup = Vec::new();
        for k in 0..pickups {
            if k > 0 {
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            let id = format!("pickup-{k}");
            let t0 = Instant::now();
            client.start_orchestration(&id, "Pickup", &id).await?;
            match client
                .wait_for_orchestration(&id, Duration::from_secs(30))
                .await?
            {
                OrchestrationStatus::Completed { .. } => {}
                other => return Err(err(format!("{id}: {other:?}"))),
            }
            let (o, a) = marks
                .lock()
                .ok()
                .and_then(|m| m.get(&id).copied())
                .unwrap_or_default();
            let (Some(o), Some(a)) = (o, a) else {
                return Err(err(format!("{id}: no pickup marks recorded")));
            };
            orch_pickup.push(o.saturating_duration_since(t0));
            act_pickup.push(a.saturating_duration_since(t0));
        }
        Ok::<_, crate::util::BoxError>(Measured {
            kind,
            idle,
            calls: delta.total_calls(),
            calls_desc: delta.describe(),
            statements,
            statements_all,
            orch_pickup,
            act_pickup,
            logs: Default::default(),
            cpu,
        })
    }
    .await;
    rt.shutdown(None).await;
    let logs = crate::logcap::end();
    eprintln!("  [idle] {} done", kind.label());
    let mut m = r.map_err(|e| err(format!("{}: {e}", kind.label())))?;
    m.logs = logs;
    Ok(m)
}
