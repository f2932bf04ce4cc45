//! Section "failover": a primary with a synchronous standby on loopback
//! (`tests/common/standby.rs`), a runtime and four clients running
//! one-activity orchestrations through the two-host URL
//! (`target_session_attrs=read-write`), and a failover under them: the
//! primary is stopped with `-m immediate` and the standby promoted at once
//! (an HA manager's detection time is left out; it adds to every figure).
//!
//! Measured per run: kill → promoted; kill → the first turn committed on the
//! new primary (new history rows, polled every millisecond on it; the
//! baseline is read on the standby once it has replayed everything it
//! received, so any new row is a commit of the new primary); kill → the last
//! orchestration that was in flight at the kill completed; caller-visible
//! failures (client calls that failed, orchestrations that failed);
//! duplicates (history events twice: event ids not contiguous, or more than
//! one completion) and activities executed more than once (at-least-once
//! redelivery, not visible in history).

use crate::standby::{self, Pair};
use crate::util::{err, fmt_ms, heading, Result, Samples, Table};
use crate::Ctx;
use duroxide::runtime::registry::ActivityRegistry;
use duroxide::runtime::Runtime;
use duroxide::{
    ActivityContext, Client, EventKind, OrchestrationContext, OrchestrationRegistry,
    OrchestrationStatus, RuntimeOptions,
};
use duroxide_postgres::{PostgresOptions, PostgresProvider};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const SCHEMA: &str = "bench_failover";
const CLIENTS: usize = 4;

/// An orchestration a client started: id, when, and when it was seen
/// completed (for "in flight at the kill").
type Span = (String, Instant, Option<Instant>);

struct Outcome {
    promoted: Duration,
    first_turn: Option<Duration>,
    in_flight_done: Option<Duration>,
    orchestrations: usize,
    client_failures: Vec<String>,
    failed: usize,
    duplicate_events: usize,
    activities_twice: usize,
    longest_call: Duration,
}

pub async fn run(ctx: &Ctx) -> Result<()> {
    heading("F. Failover to a synchronous standby (pg_basebackup -R, pg_ctl promote)");
    let runs = if ctx.quick { 2 } else { 5 };
    println!(
        "  {CLIENTS} clients start one-activity orchestrations back to back and wait for each; \
         runtime 4:4, default options; the primary is killed (-m immediate) and the standby \
         promoted at once; {runs} runs, a fresh pair each"
    );
    let mut t = Table::new(
        &[
            "run",
            "kill -> promoted",
            "kill -> first turn",
            "kill -> in-flight done",
            "orchestrations",
            "client calls failed",
            "orch failed",
            "duplicate events",
            "activities run twice",
            "longest client call",
        ],
        1,
    );
    let mut first_turns = Vec::new();
    for i in 0..runs {
        eprintln!("  [failover] run {}", i + 1);
        let o = one().await?;
        if let Some(d) = o.first_turn {
            first_turns.push(d);
        }
        t.row(vec![
            (i + 1).to_string(),
            fmt_ms(Some(o.promoted)),
            fmt_ms(o.first_turn),
            fmt_ms(o.in_flight_done),
            o.orchestrations.to_string(),
            o.client_failures.len().to_string(),
            o.failed.to_string(),
            o.duplicate_events.to_string(),
            o.activities_twice.to_string(),
            fmt_ms(Some(o.longest_call)),
        ]);
        for f in o.client_failures.iter().take(3) {
            println!("  client failure (run {}): {f}", i + 1);
        }
    }
    t.print();
    println!(
        "  (ms) kill -> first turn p50 {} ms over {} runs",
        fmt_ms(Samples::new(first_turns.clone()).p50()),
        first_turns.len()
    );
    Ok(())
}

fn registries(runs: Arc<Mutex<HashMap<String, u32>>>) -> (ActivityRegistry, OrchestrationRegistry) {
    let activities = ActivityRegistry::builder()
        .register("Record", move |_: ActivityContext, id: String| {
            let runs = runs.clone();
            async move {
                *runs.lock().unwrap().entry(id.clone()).or_default() += 1;
                Ok(id)
            }
        })
        .build();
    let orchestrations = OrchestrationRegistry::builder()
        .register("Once", |ctx: OrchestrationContext, id: String| async move {
            ctx.schedule_activity("Record", id).await
        })
        .build();
    (activities, orchestrations)
}

async fn one() -> Result<Outcome> {
    let pair = Pair::start().await;
    let store = Arc::new(
        PostgresProvider::connect(&pair.url(), PostgresOptions::new().schema(SCHEMA)).await?,
    );
    let activity_runs = Arc::new(Mutex::new(HashMap::new()));
    let (activities, orchestrations) = registries(activity_runs.clone());
    let rt = Runtime::start_with_options(
        store.clone(),
        activities,
        orchestrations,
        RuntimeOptions {
            orchestration_concurrency: 4,
            worker_concurrency: 4,
            ..Default::default()
        },
    )
    .await;

    // Clients: start, wait, repeat, until told to stop.
    let stop = Arc::new(AtomicBool::new(false));
    let next = Arc::new(AtomicUsize::new(0));
    let completed = Arc::new(AtomicUsize::new(0));
    let spans: Arc<Mutex<Vec<Span>>> = Default::default();
    let mut clients = Vec::new();
    for _ in 0..CLIENTS {
        let client = Client::new(store.clone());
        let (stop, next, completed, spans) =
            (stop.clone(), next.clone(), completed.clone(), spans.clone());
        clients.push(tokio::spawn(async move {
            let mut failures = Vec::new();
            let mut longest = Duration::ZERO;
            while !stop.load(Ordering::SeqCst) {
                let id = format!("once-{}", next.fetch_add(1, Ordering::SeqCst));
                let began = Instant::now();
                let index = {
                    let mut s = spans.lock().unwrap();
                    s.push((id.clone(), began, None));
                    s.len() - 1
                };
                if let Err(e) = client.start_orchestration(&id, "Once", id.clone()).await {
                    failures.push(format!("start {id}: {e}"));
                    continue;
                }
                longest = longest.max(began.elapsed());
                match client
                    .wait_for_orchestration(&id, Duration::from_secs(60))
                    .await
                {
                    Ok(OrchestrationStatus::Completed { .. }) => {
                        spans.lock().unwrap()[index].2 = Some(Instant::now());
                        completed.fetch_add(1, Ordering::SeqCst);
                    }
                    Ok(other) => failures.push(format!("{id}: {other:?}")),
                    Err(e) => failures.push(format!("wait {id}: {e}")),
                }
            }
            (failures, longest)
        }));
    }
    let warm = Instant::now();
    while completed.load(Ordering::SeqCst) < 40 {
        if warm.elapsed() > Duration::from_secs(30) {
            return Err(err("the workload did not start"));
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    let monitor = standby::connect(pair.standby_port).await?;
    let count_sql = format!("SELECT count(*) FROM {SCHEMA}.history");
    pair.kill_primary();
    let killed = Instant::now();
    // Everything the standby received is replayed (nothing more comes):
    // its history count is what the old primary committed.
    loop {
        let caught_up: bool = monitor
            .query_one(
                "SELECT pg_last_wal_receive_lsn() <= pg_last_wal_replay_lsn()",
                &[],
            )
            .await?
            .get(0);
        if caught_up {
            break;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let baseline: i64 = monitor.query_one(&count_sql, &[]).await?.get(0);
    pair.promote().await;
    let promoted = killed.elapsed();
    let mut first_turn = None;
    while killed.elapsed() < Duration::from_secs(60) {
        let now: i64 = monitor.query_one(&count_sql, &[]).await?.get(0);
        if now > baseline {
            first_turn = Some(killed.elapsed());
            break;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    // Let the workload run on the new primary for a while, then stop.
    let after = completed.load(Ordering::SeqCst);
    let resumed = Instant::now();
    while completed.load(Ordering::SeqCst) < after + 40
        && resumed.elapsed() < Duration::from_secs(30)
    {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    stop.store(true, Ordering::SeqCst);
    let mut client_failures = Vec::new();
    let mut longest_call = Duration::ZERO;
    for c in clients {
        let (f, l) = c.await?;
        client_failures.extend(f);
        longest_call = longest_call.max(l);
    }
    rt.shutdown(None).await;

    let spans = spans.lock().unwrap().clone();
    let in_flight_done = spans
        .iter()
        .filter(|(_, began, done)| *began <= killed && done.is_none_or(|d| d > killed))
        .map(|(_, _, done)| done.map(|d| d - killed))
        .try_fold(Duration::ZERO, |acc, d| d.map(|d| acc.max(d)));

    // Duplicates and failures, from the store.
    let client = Client::new(store.clone());
    let mut failed = 0;
    let mut duplicate_events = 0;
    for (id, _, _) in &spans {
        let history = match client.read_execution_history(id, 1).await {
            Ok(h) => h,
            Err(_) => continue, // never started (a failed start)
        };
        let contiguous = history
            .iter()
            .enumerate()
            .all(|(i, e)| e.event_id == i as u64 + 1);
        let completions = history
            .iter()
            .filter(|e| matches!(e.kind, EventKind::OrchestrationCompleted { .. }))
            .count();
        if !contiguous || completions > 1 {
            duplicate_events += 1;
        }
        if history
            .iter()
            .any(|e| matches!(e.kind, EventKind::OrchestrationFailed { .. }))
        {
            failed += 1;
        }
    }
    let activities_twice = activity_runs
        .lock()
        .unwrap()
        .values()
        .filter(|n| **n > 1)
        .count();
    drop(client);
    drop(store);
    Ok(Outcome {
        promoted,
        first_turn,
        in_flight_done,
        orchestrations: spans.len(),
        client_failures,
        failed,
        duplicate_events,
        activities_twice,
        longest_call,
    })
}
