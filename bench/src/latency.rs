//! Section 3: End-to-end latency: an idle runtime (default RuntimeOptions), one
//! orchestration with one activity, from `Client::start_orchestration` to
//! the orchestration being seen Completed.

use crate::stores::{Kind, Store};
use crate::util::{err, fmt_ms, heading, ms, ratio_d, verdict, Result, Samples, Table};
use crate::Ctx;
use duroxide::providers::Provider;
use duroxide::runtime::registry::ActivityRegistry;
use duroxide::runtime::Runtime;
use duroxide::{
    ActivityContext, Client, OrchestrationContext, OrchestrationRegistry, OrchestrationStatus,
    RuntimeOptions,
};
use std::sync::Arc;
use std::time::{Duration, Instant};

pub(crate) struct Measured {
    kind: Kind,
    pub(crate) wait_for: Samples,
    pub(crate) precise: Samples,
    /// After a quiet period, 4+4 dispatchers: exact start -> Completed.
    pub(crate) idle_exact: Samples,
    /// The same runtime warm (back-to-back runs).
    pub(crate) warm_exact: Samples,
    logs: crate::logcap::Captured,
}

pub fn registries() -> (ActivityRegistry, OrchestrationRegistry) {
    let activities = ActivityRegistry::builder()
        .register("Echo", |_ctx: ActivityContext, input: String| async move {
            Ok(input)
        })
        .build();
    let orchestrations = OrchestrationRegistry::builder()
        .register(
            "OneActivity",
            |ctx: OrchestrationContext, input: String| async move {
                ctx.schedule_activity("Echo", input).await
            },
        )
        .build();
    (activities, orchestrations)
}

pub async fn run(ctx: &Ctx) -> Result<()> {
    heading("3. End-to-end latency (idle runtime, default RuntimeOptions)");
    let (n, n_precise) = if ctx.quick { (50, 25) } else { (200, 100) };
    let (quiet, idle_samples) = if ctx.quick {
        (Duration::from_secs(5), 2)
    } else {
        (Duration::from_secs(10), 4)
    };
    println!(
        "  one orchestration with one activity; wait_for = Client::wait_for_orchestration \
         (polls at 0, 5, 15, 35, 75 ms, ... after start), n={n};"
    );
    println!("  exact = get_orchestration_status polled every 1 ms (separate runs), n={n_precise}");
    let mut results = Vec::new();
    for kind in Kind::BOTH {
        crate::settle(ctx, &format!("latency {}", kind.label())).await;
        let store = Store::create(ctx, kind, "latency").await?;
        let m = crate::with_store(ctx, store, |p| {
            measure(kind, p, n, n_precise, quiet, idle_samples)
        })
        .await?;
        results.push(m);
    }

    let sqlite = results.iter().find(|m| m.kind == Kind::Sqlite);
    let mut t = Table::new(
        &[
            "store",
            "wait_for p50",
            "p99",
            "mean",
            "exact p50",
            "p99",
            "p50 vs sqlite",
            "exact p50 vs sqlite",
        ],
        1,
    );
    for m in &results {
        t.row(vec![
            m.kind.label().into(),
            fmt_ms(m.wait_for.p50()),
            fmt_ms(m.wait_for.pct(99.0)),
            fmt_ms(m.wait_for.mean()),
            fmt_ms(m.precise.p50()),
            fmt_ms(m.precise.pct(99.0)),
            ratio_d(m.wait_for.p50(), sqlite.and_then(|s| s.wait_for.p50())),
            ratio_d(m.precise.p50(), sqlite.and_then(|s| s.precise.p50())),
        ]);
    }
    t.print();
    println!("  (ms)");
    crate::logcap::report(
        &results
            .iter()
            .map(|m| (m.kind.label().to_string(), m.logs.clone()))
            .collect::<Vec<_>>(),
    );
    println!(
        "  after a quiet period ({} s without work, 4+4 dispatchers, exact start -> Completed, \
         n={idle_samples}; warm = back-to-back runs on the same runtime):",
        quiet.as_secs()
    );
    for m in &results {
        println!(
            "    {:<8} warm p50 {} ms, after quiet p50 {} ms, max {} ms ({})",
            m.kind.label(),
            fmt_ms(m.warm_exact.p50()),
            fmt_ms(m.idle_exact.p50()),
            fmt_ms(m.idle_exact.pct(100.0)),
            ratio_d(m.idle_exact.p50(), m.warm_exact.p50()),
        );
    }
    if let Some(pg) = results.iter().find(|m| m.kind == Kind::Postgres) {
        let (idle, warm) = (pg.idle_exact.pct(100.0), pg.warm_exact.p50());
        println!(
            "  target: the first orchestration after a quiet period as fast as the rest: \
             worst after-quiet {} ms vs warm p50 {} ms -> {}",
            fmt_ms(idle),
            fmt_ms(warm),
            verdict(idle.zip(warm).map(|(i, w)| ms(i) <= 2.0 * ms(w) + 5.0)),
        );
        let p50 = pg.wait_for.p50();
        println!(
            "  target: postgres end-to-end p50 <= 10 ms: wait_for {} ms -> {}; exact {} ms -> {}",
            fmt_ms(p50),
            verdict(p50.map(|d| ms(d) <= 10.0)),
            fmt_ms(pg.precise.p50()),
            verdict(pg.precise.p50().map(|d| ms(d) <= 10.0)),
        );
    }
    Ok(())
}

/// The latency runs on one store (also the remote section's, through its
/// proxy).
pub(crate) async fn measure(
    kind: Kind,
    p: Arc<dyn Provider>,
    n: usize,
    n_precise: usize,
    quiet: Duration,
    idle_samples: usize,
) -> Result<Measured> {
    let (activities, orchestrations) = registries();
    crate::logcap::begin();
    let rt = Runtime::start_with_options(
        p.clone(),
        activities,
        orchestrations,
        RuntimeOptions::default(),
    )
    .await;
    let client = Client::new(p.clone());
    let r = async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        // Warm-up (connections, prepared statements).
        for i in 0..5 {
            let id = format!("lat-warm-{i}");
            client.start_orchestration(&id, "OneActivity", "w").await?;
            expect_completed(
                client
                    .wait_for_orchestration(&id, Duration::from_secs(30))
                    .await?,
            )?;
        }
        let mut wait_for = Vec::with_capacity(n);
        for i in 0..n {
            let id = format!("lat-{i}");
            let t = Instant::now();
            client.start_orchestration(&id, "OneActivity", "x").await?;
            expect_completed(
                client
                    .wait_for_orchestration(&id, Duration::from_secs(30))
                    .await?,
            )?;
            wait_for.push(t.elapsed());
        }
        let mut precise = Vec::with_capacity(n_precise);
        for i in 0..n_precise {
            let id = format!("lat-exact-{i}");
            precise.push(exact_run(&client, &id).await?);
        }
        Ok::<_, crate::util::BoxError>((wait_for, precise))
    }
    .await;
    rt.shutdown(None).await;
    let (wait_for, precise) = r.map_err(|e| err(format!("{}: {e}", kind.label())))?;
    let (warm_exact, idle_exact) = after_idle(&p, quiet, idle_samples).await?;
    let logs = crate::logcap::end();
    eprintln!("  [latency] {} done", kind.label());
    Ok(Measured {
        kind,
        wait_for: Samples::new(wait_for),
        precise: Samples::new(precise),
        idle_exact: Samples::new(idle_exact),
        warm_exact: Samples::new(warm_exact),
        logs,
    })
}

fn expect_completed(s: OrchestrationStatus) -> Result<()> {
    match s {
        OrchestrationStatus::Completed { .. } => Ok(()),
        other => Err(err(format!("orchestration did not complete: {other:?}"))),
    }
}

/// Start -> Completed of one orchestration, the status polled every 1 ms.
async fn exact_run(client: &Client, id: &str) -> Result<Duration> {
    let t = Instant::now();
    client.start_orchestration(id, "OneActivity", "x").await?;
    loop {
        match client.get_orchestration_status(id).await? {
            OrchestrationStatus::Completed { .. } => return Ok(t.elapsed()),
            s @ OrchestrationStatus::Failed { .. } => {
                return Err(err(format!("{id} failed: {s:?}")))
            }
            _ => {}
        }
        if t.elapsed() > Duration::from_secs(30) {
            return Err(err(format!("{id} not completed after 30 s")));
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

/// Issue 11: the first orchestration after a quiet period. A runtime with
/// 4+4 dispatchers; `samples` runs each after `quiet` without work, and as
/// many back-to-back (warm) runs for reference, exact start -> Completed.
async fn after_idle(
    p: &Arc<dyn Provider>,
    quiet: Duration,
    samples: usize,
) -> Result<(Vec<Duration>, Vec<Duration>)> {
    let (activities, orchestrations) = registries();
    let rt = Runtime::start_with_options(
        p.clone(),
        activities,
        orchestrations,
        RuntimeOptions {
            orchestration_concurrency: 4,
            worker_concurrency: 4,
            ..RuntimeOptions::default()
        },
    )
    .await;
    let client = Client::new(p.clone());
    let r = async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let mut warm = Vec::new();
        for i in 0..samples.max(10) {
            warm.push(exact_run(&client, &format!("idle-warm-{i}")).await?);
        }
        let mut idle = Vec::new();
        for i in 0..samples {
            tokio::time::sleep(quiet).await;
            idle.push(exact_run(&client, &format!("idle-{i}")).await?);
        }
        Ok::<_, crate::util::BoxError>((warm, idle))
    }
    .await;
    rt.shutdown(None).await;
    r
}
