//! Section 6: chaos. duroxide's stress test (2:2 dispatchers, 0 ms
//! activities, 20 in flight) while the database misbehaves, on a private
//! throwaway server on 127.0.0.1 (never `DATABASE_URL`: the server is
//! restarted):
//!
//! * `kill`: every client backend of the store is terminated every 2 s
//!   (`pg_terminate_backend`);
//! * `fast restart`: the server is stopped with `-m fast` and started again
//!   once, 40% into the run;
//! * `immediate restart`: the same with `-m immediate` (crash recovery).
//!
//! Printed per run: orchestrations launched / completed / failed as the
//! caller (duroxide's `Client`) saw them, duplicates (starts inserted into
//! the queue twice for one instance, counted by a trigger the bench installs
//! on the store's queue table), and the latency of a status read issued every
//! 50 ms by a probe client during the run (its worst case is the recovery
//! time a caller sees).

use crate::server::TempServer;
use crate::util::{err, fmt_ms, heading, Result, Samples, Table};
use crate::Ctx;
use duroxide::provider_stress_tests::parallel_orchestrations::{
    run_parallel_orchestrations_test_with_config, ProviderStressFactory,
};
use duroxide::provider_stress_tests::{StressTestConfig, StressTestResult};
use duroxide::providers::Provider;
use duroxide_postgres::{PostgresOptions, PostgresProvider};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The application name of the store's connections (the kill loop's target).
const APP: &str = "dxb-chaos";

#[derive(Clone, Copy, PartialEq)]
enum Fault {
    Kill,
    FastRestart,
    ImmediateRestart,
}

impl Fault {
    fn label(self) -> &'static str {
        match self {
            Fault::Kill => "kill backends every 2 s",
            Fault::FastRestart => "fast restart once",
            Fault::ImmediateRestart => "immediate restart once",
        }
    }

    fn tag(self) -> &'static str {
        match self {
            Fault::Kill => "kill",
            Fault::FastRestart => "fast",
            Fault::ImmediateRestart => "immediate",
        }
    }
}

struct Factory(Mutex<Option<Arc<dyn Provider>>>);

#[async_trait::async_trait]
impl ProviderStressFactory for Factory {
    async fn create_provider(&self) -> Arc<dyn Provider> {
        self.0
            .lock()
            .ok()
            .and_then(|mut p| p.take())
            .expect("the chaos factory hands out one provider per run")
    }
}

struct Outcome {
    fault: Fault,
    result: std::result::Result<StressTestResult, String>,
    duplicates: std::result::Result<i64, String>,
    faults_injected: usize,
    probe: Samples,
    probe_failed: usize,
    logs: crate::logcap::Captured,
}

pub async fn run(ctx: &Ctx) -> Result<()> {
    heading("6. Chaos: callers across killed connections and server restarts");
    let secs = ctx.stress_secs.unwrap_or(if ctx.quick { 6 } else { 20 });
    println!(
        "  duroxide stress test, 2:2 dispatchers, 0 ms activities, 20 in flight, {secs} s per run, \
         on a private throwaway server (127.0.0.1); probe: one status read every 50 ms"
    );
    let server = tokio::task::spawn_blocking(|| std::panic::catch_unwind(TempServer::start))
        .await?
        .map_err(|_| err("could not start a private PostgreSQL server (see stderr)"))?;
    let server = Arc::new(server);

    let mut outcomes = Vec::new();
    for fault in [Fault::Kill, Fault::FastRestart, Fault::ImmediateRestart] {
        let o = one(&server, fault, secs).await?;
        match &o.result {
            Ok(r) => eprintln!(
                "  [chaos] {}: launched {} completed {} failed {}",
                fault.label(),
                r.launched,
                r.completed,
                r.failed
            ),
            Err(e) => eprintln!("  [chaos] {}: failed: {e}", fault.label()),
        }
        outcomes.push(o);
    }

    let mut t = Table::new(
        &[
            "fault",
            "injected",
            "launched",
            "completed",
            "failed (caller)",
            "duplicates",
            "probe reads",
            "probe failed",
            "probe p50",
            "probe p99",
            "probe max",
        ],
        1,
    );
    for o in &outcomes {
        let mut cells = vec![o.fault.label().to_string(), o.faults_injected.to_string()];
        match &o.result {
            Ok(r) => cells.extend([
                r.launched.to_string(),
                r.completed.to_string(),
                r.failed.to_string(),
            ]),
            Err(e) => cells.extend([format!("error: {e}"), "-".into(), "-".into()]),
        }
        cells.push(match &o.duplicates {
            Ok(n) => n.to_string(),
            Err(e) => format!("? ({e})"),
        });
        cells.extend([
            o.probe.len().to_string(),
            o.probe_failed.to_string(),
            fmt_ms(o.probe.p50()),
            fmt_ms(o.probe.pct(99.0)),
            fmt_ms(o.probe.max()),
        ]);
        t.row(cells);
    }
    t.print();
    println!(
        "  failed (caller) = orchestrations whose start or wait returned an error, or that \
         failed; duplicates = instances whose StartOrchestration was inserted more than once;"
    );
    println!(
        "  probe = Client::get_orchestration_status of one instance every 50 ms during the run \
         (successful calls; their max is the longest a caller waited through recovery)"
    );
    crate::logcap::report(
        &outcomes
            .iter()
            .map(|o| (o.fault.label().to_string(), o.logs.clone()))
            .collect::<Vec<_>>(),
    );
    Ok(())
}

async fn one(server: &Arc<TempServer>, fault: Fault, secs: u64) -> Result<Outcome> {
    let url = server.url();
    let schema = format!("dxb_chaos_{}_{}", fault.tag(), std::process::id());
    let log_schema = format!("{schema}_log");
    let provider = PostgresProvider::connect(
        &url,
        PostgresOptions::new()
            .schema(schema.as_str())
            .application_name(APP),
    )
    .await?;
    install_start_log(&url, &schema, &log_schema).await?;
    let provider: Arc<dyn Provider> = Arc::new(provider);

    let stop = Arc::new(AtomicBool::new(false));
    let injected = Arc::new(AtomicUsize::new(0));
    let injector = {
        let (stop, injected, server) = (stop.clone(), injected.clone(), server.clone());
        tokio::spawn(async move { inject(fault, &server, secs, &stop, &injected).await })
    };
    let probe = {
        let (stop, client) = (stop.clone(), duroxide::Client::new(provider.clone()));
        tokio::spawn(async move {
            let (mut ok, mut failed) = (Vec::new(), 0usize);
            while !stop.load(Ordering::Relaxed) {
                let t = Instant::now();
                match client.get_orchestration_status("stress-test-1").await {
                    Ok(_) => ok.push(t.elapsed()),
                    Err(_) => failed += 1,
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            (ok, failed)
        })
    };

    crate::logcap::begin();
    let config = StressTestConfig {
        max_concurrent: 20,
        duration_secs: secs,
        tasks_per_instance: 5,
        activity_delay_ms: 0,
        orch_concurrency: 2,
        worker_concurrency: 2,
        wait_timeout_secs: 60,
    };
    let factory = Factory(Mutex::new(Some(provider.clone())));
    let result = run_parallel_orchestrations_test_with_config(&factory, config)
        .await
        .map_err(|e| e.to_string());
    let logs = crate::logcap::end();
    stop.store(true, Ordering::Relaxed);
    let _ = injector.await;
    let (probe_ok, probe_failed) = probe.await.unwrap_or_default();
    drop(factory);
    drop(provider);

    let duplicates = count_duplicates(&url, &log_schema)
        .await
        .map_err(|e| e.to_string());
    if let Ok(admin) = crate::pg::connect(&url).await {
        let _ = admin
            .batch_execute(&format!(
                "DROP SCHEMA IF EXISTS \"{schema}\" CASCADE; \
                 DROP SCHEMA IF EXISTS \"{log_schema}\" CASCADE"
            ))
            .await;
    }
    Ok(Outcome {
        fault,
        result,
        duplicates,
        faults_injected: injected.load(Ordering::Relaxed),
        probe: Samples::new(probe_ok),
        probe_failed,
        logs,
    })
}

/// Records every StartOrchestration inserted into the store's orchestrator
/// queue (a trigger in a schema of the bench's own, so the provider's
/// function management never sees it).
async fn install_start_log(url: &str, schema: &str, log_schema: &str) -> Result<()> {
    let admin = crate::pg::connect(url).await?;
    admin
        .batch_execute(&format!(
            "DROP SCHEMA IF EXISTS \"{log_schema}\" CASCADE;
             CREATE SCHEMA \"{log_schema}\";
             CREATE TABLE \"{log_schema}\".starts (instance_id TEXT NOT NULL);
             CREATE FUNCTION \"{log_schema}\".log_start() RETURNS trigger LANGUAGE plpgsql AS $$
             BEGIN
                 IF NEW.kind = 'StartOrchestration' THEN
                     INSERT INTO \"{log_schema}\".starts VALUES (NEW.instance_id);
                 END IF;
                 RETURN NULL;
             END $$;
             CREATE TRIGGER chaos_log_start AFTER INSERT ON \"{schema}\".orchestrator_queue
                 FOR EACH ROW EXECUTE FUNCTION \"{log_schema}\".log_start();"
        ))
        .await?;
    Ok(())
}

async fn count_duplicates(url: &str, log_schema: &str) -> Result<i64> {
    let admin = crate::pg::connect(url).await?;
    let row = admin
        .query_one(
            &format!(
                "SELECT count(*) FROM (SELECT instance_id FROM \"{log_schema}\".starts \
                 GROUP BY instance_id HAVING count(*) > 1) d"
            ),
            &[],
        )
        .await?;
    Ok(row.try_get(0)?)
}

/// Injects `fault` until `stop` (kills) or once at 40% of the run.
async fn inject(
    fault: Fault,
    server: &Arc<TempServer>,
    secs: u64,
    stop: &AtomicBool,
    injected: &AtomicUsize,
) {
    match fault {
        Fault::Kill => {
            while !stop.load(Ordering::Relaxed) {
                tokio::time::sleep(Duration::from_secs(2)).await;
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                if let Ok(n) = kill_backends(&server.url()).await {
                    injected.fetch_add(n, Ordering::Relaxed);
                }
            }
        }
        Fault::FastRestart | Fault::ImmediateRestart => {
            tokio::time::sleep(Duration::from_millis(secs * 400)).await;
            let mode = if fault == Fault::FastRestart {
                "fast"
            } else {
                "immediate"
            };
            let server = server.clone();
            let restarted = tokio::task::spawn_blocking(move || {
                std::panic::catch_unwind(|| {
                    server.stop(mode);
                    server.restart();
                })
            })
            .await;
            match restarted {
                Ok(Ok(())) => {
                    injected.fetch_add(1, Ordering::Relaxed);
                }
                _ => eprintln!("  [chaos] restart ({mode}) failed (see stderr)"),
            }
        }
    }
}

/// Terminates every backend of the store (by application name, the LISTEN
/// connection included); returns how many.
async fn kill_backends(url: &str) -> Result<usize> {
    let admin = crate::pg::connect(url).await?;
    let rows = admin
        .query(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
             WHERE application_name = $1 AND pid <> pg_backend_pid()",
            &[&APP],
        )
        .await?;
    Ok(rows.len())
}
