//! Section `soak`: does a store stay as fast as it started?
//!
//! Steady load on one store at concurrency 8: each loop runs whole
//! orchestration lives through the `Provider` trait (enqueue a start, an
//! orchestration turn scheduling one activity, the worker turn completing
//! it, the final orchestration turn completing the instance). Every minute
//! it prints the orchestration turn p50/p99 (fetch + ack), lives/s and the
//! live/dead tuples of each table of the store. It runs twice: plainly, and
//! while another connection holds a REPEATABLE READ snapshot for the whole
//! run (what a report, `pg_dump` or an idle-in-transaction client does):
//! vacuum can then remove nothing that died after the snapshot.

use crate::stores::{Kind, Store};
use crate::turns::{start_item, started_kind, ACTIVITY_INPUT, ACTIVITY_NAME};
use crate::util::{fmt_ms, fmt_num, heading, Result, Samples};
use crate::Ctx;
use duroxide::providers::{ExecutionMetadata, OrchestrationItem, Provider, TagFilter, WorkItem};
use duroxide::{Event, EventKind};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const CONCURRENCY: usize = 8;
const LOCK_TIMEOUT: Duration = Duration::from_secs(30);

/// One interval's figures.
struct Interval {
    turns: Samples,
    lives: u64,
    errors: u64,
    secs: f64,
}

impl Interval {
    fn lives_per_s(&self) -> f64 {
        self.lives as f64 / self.secs.max(0.001)
    }
}

/// What the loops record between two reports.
#[derive(Default)]
struct Acc {
    turns: Vec<Duration>,
    lives: u64,
    errors: u64,
    first_error: Option<String>,
}

pub async fn run(ctx: &Ctx) -> Result<()> {
    heading("Soak: steady load, per minute (concurrency 8, one store)");
    let (intervals, interval) = if ctx.quick {
        (ctx.soak_minutes.unwrap_or(2), Duration::from_secs(15))
    } else {
        (ctx.soak_minutes.unwrap_or(10), Duration::from_secs(60))
    };
    println!(
        "  life = enqueue start + orchestration turn (schedules 1 activity) + worker turn + \
         final orchestration turn; turn = fetch + ack of an orchestration item"
    );
    println!(
        "  {intervals} intervals of {} s per run; dead/live tuples from pg_stat_user_tables \
         (estimates, updated by the stats collector)",
        interval.as_secs()
    );
    let mut summary = Vec::new();
    for snapshot in [false, true] {
        crate::settle(ctx, "soak").await;
        let label = if snapshot {
            "with a REPEATABLE READ snapshot held by another connection"
        } else {
            "plain"
        };
        println!();
        println!("  run: {label}");
        let store = Store::create(
            ctx,
            Kind::Postgres,
            if snapshot { "soak_s" } else { "soak_p" },
        )
        .await?;
        let schema = store.schema.clone().unwrap_or_default();
        let provider = store.provider.clone();
        let r = one_run(ctx, provider, &schema, snapshot, intervals, interval).await;
        store.cleanup(ctx).await;
        let rows = r?;
        if let (Some(first), Some(last)) = (rows.first(), rows.last()) {
            summary.push((label, ratios(first, last)));
        }
    }
    println!();
    println!("  summary (last interval / first interval, same run):");
    for (label, (p50, tput)) in summary {
        println!(
            "    {label:<60} turn p50 x{}  throughput {:.0}%",
            fmt_num(p50),
            tput * 100.0
        );
    }
    println!("  targets: plain p50 <= x1.1; with snapshot p50 <= x1.5 and throughput >= 70%");
    Ok(())
}

fn ratios(first: &Interval, last: &Interval) -> (f64, f64) {
    let p = |i: &Interval| i.turns.p50().map(|d| d.as_secs_f64()).unwrap_or(f64::NAN);
    (
        p(last) / p(first),
        last.lives_per_s() / first.lives_per_s().max(0.001),
    )
}

async fn one_run(
    ctx: &Ctx,
    provider: Arc<dyn Provider>,
    schema: &str,
    snapshot: bool,
    intervals: u64,
    interval: Duration,
) -> Result<Vec<Interval>> {
    // The snapshot holder: a report reading the store's history in one long
    // REPEATABLE READ transaction (its snapshot pins the xmin horizon).
    let holder = if snapshot {
        let c = crate::pg::connect(&ctx.url).await?;
        c.batch_execute(&format!(
            "BEGIN ISOLATION LEVEL REPEATABLE READ; SELECT 1 FROM \"{schema}\".history LIMIT 1"
        ))
        .await?;
        Some(c)
    } else {
        None
    };
    let stats = crate::pg::connect(&ctx.url).await?;

    let stop = Arc::new(AtomicBool::new(false));
    let acc = Arc::new(Mutex::new(Acc::default()));
    let next_id = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for _ in 0..CONCURRENCY {
        let (p, stop, acc, next_id) =
            (provider.clone(), stop.clone(), acc.clone(), next_id.clone());
        tasks.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let n = next_id.fetch_add(1, Ordering::Relaxed);
                if let Err(e) = life_step(&p, &format!("soak-{n}"), &acc, &stop).await {
                    if let Ok(mut a) = acc.lock() {
                        a.errors += 1;
                        a.first_error.get_or_insert(e);
                    }
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            }
        }));
    }

    println!(
        "  {:>4} {:>8} {:>9} {:>9} {:>8} {:>6}  dead/live tuples",
        "min", "turns", "p50 ms", "p99 ms", "lives/s", "errors"
    );
    let mut rows = Vec::new();
    let mut last = Instant::now();
    for i in 1..=intervals {
        tokio::time::sleep(interval).await;
        let taken = match acc.lock() {
            Ok(mut a) => std::mem::take(&mut *a),
            Err(_) => Acc::default(),
        };
        let secs = last.elapsed().as_secs_f64();
        last = Instant::now();
        let row = Interval {
            turns: Samples::new(taken.turns),
            lives: taken.lives,
            errors: taken.errors,
            secs,
        };
        let tuples = dead_tuples(&stats, schema)
            .await
            .unwrap_or_else(|e| format!("? ({e})"));
        println!(
            "  {:>4} {:>8} {:>9} {:>9} {:>8} {:>6}  {tuples}",
            format!("{}", i as f64 * interval.as_secs_f64() / 60.0),
            row.turns.len(),
            fmt_ms(row.turns.p50()),
            fmt_ms(row.turns.pct(99.0)),
            fmt_num(row.lives_per_s()),
            row.errors
        );
        if let Some(e) = taken.first_error {
            println!("       first error: {e}");
        }
        rows.push(row);
    }
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        let _ = t.await;
    }
    if let Some(h) = holder {
        let age = h
            .query_one("SELECT date_trunc('second', clock_timestamp() - xact_start)::text FROM pg_stat_activity WHERE pid = pg_backend_pid()", &[])
            .await
            .map(|r| r.get::<_, String>(0))
            .unwrap_or_else(|e| format!("? ({e})"));
        println!("  (snapshot held for {age})");
        let _ = h.batch_execute("ROLLBACK").await;
    }
    Ok(rows)
}

/// `table dead/live` for each table of the schema (partitions included).
async fn dead_tuples(c: &tokio_postgres::Client, schema: &str) -> Result<String> {
    let rows = c
        .query(
            "SELECT relname::text, n_dead_tup, n_live_tup FROM pg_stat_user_tables \
             WHERE schemaname = $1 AND relname NOT LIKE '\\_%' ORDER BY relname",
            &[&schema],
        )
        .await?;
    Ok(rows
        .iter()
        .filter(|r| r.get::<_, i64>(1) + r.get::<_, i64>(2) > 0)
        .map(|r| {
            format!(
                "{} {}/{}",
                r.get::<_, String>(0),
                r.get::<_, i64>(1),
                r.get::<_, i64>(2)
            )
        })
        .collect::<Vec<_>>()
        .join(", "))
}

/// One loop step: start a life, then take one orchestration turn and one
/// worker turn (of whatever instance the fetches return) and one more
/// orchestration turn. In steady state every life is finished by some loop.
async fn life_step(
    p: &Arc<dyn Provider>,
    instance: &str,
    acc: &Mutex<Acc>,
    stop: &AtomicBool,
) -> std::result::Result<(), String> {
    p.enqueue_for_orchestrator(start_item(instance), None)
        .await
        .map_err(|e| format!("enqueue: {e}"))?;
    orch_turn(p, acc, stop).await?;
    work_turn(p, stop).await?;
    orch_turn(p, acc, stop).await
}

async fn orch_turn(
    p: &Arc<dyn Provider>,
    acc: &Mutex<Acc>,
    stop: &AtomicBool,
) -> std::result::Result<(), String> {
    for _ in 0..200 {
        if stop.load(Ordering::Relaxed) {
            return Ok(());
        }
        let t0 = Instant::now();
        let fetched = p
            .fetch_orchestration_item(LOCK_TIMEOUT, Duration::ZERO, None)
            .await
            .map_err(|e| format!("fetch orchestration: {e}"))?;
        let Some((item, token, _)) = fetched else {
            tokio::time::sleep(Duration::from_millis(1)).await;
            continue;
        };
        let finished = ack_orch(p, &item, &token).await?;
        let d = t0.elapsed();
        if let Ok(mut a) = acc.lock() {
            a.turns.push(d);
            if finished {
                a.lives += 1;
            }
        }
        return Ok(());
    }
    Ok(())
}

/// First turn: start + schedule the activity. Later turn: complete.
async fn ack_orch(
    p: &Arc<dyn Provider>,
    item: &OrchestrationItem,
    token: &str,
) -> std::result::Result<bool, String> {
    let inst = item.instance.as_str();
    let exec = item.execution_id;
    let base = item.history.len() as u64;
    let first = base == 0;
    let (delta, worker_items, metadata) = if first {
        let delta = vec![
            Event::with_event_id(1, inst, exec, None, started_kind()),
            Event::with_event_id(
                2,
                inst,
                exec,
                None,
                EventKind::ActivityScheduled {
                    name: ACTIVITY_NAME.into(),
                    input: ACTIVITY_INPUT.into(),
                    session_id: None,
                    tag: None,
                },
            ),
        ];
        let work = vec![WorkItem::ActivityExecute {
            instance: inst.to_string(),
            execution_id: exec,
            id: 2,
            name: ACTIVITY_NAME.into(),
            input: ACTIVITY_INPUT.into(),
            session_id: None,
            tag: None,
        }];
        (delta, work, crate::turns::metadata_first_turn())
    } else {
        let delta = vec![
            Event::with_event_id(
                base + 1,
                inst,
                exec,
                Some(2),
                EventKind::ActivityCompleted {
                    result: "42".into(),
                },
            ),
            Event::with_event_id(
                base + 2,
                inst,
                exec,
                None,
                EventKind::OrchestrationCompleted {
                    output: "\"done\"".into(),
                },
            ),
        ];
        let metadata = ExecutionMetadata {
            status: Some("Completed".into()),
            output: Some("\"done\"".into()),
            ..Default::default()
        };
        (delta, vec![], metadata)
    };
    p.ack_orchestration_item(token, exec, delta, worker_items, vec![], metadata, vec![])
        .await
        .map_err(|e| format!("ack orchestration: {e}"))?;
    Ok(!first)
}

async fn work_turn(p: &Arc<dyn Provider>, stop: &AtomicBool) -> std::result::Result<(), String> {
    for _ in 0..200 {
        if stop.load(Ordering::Relaxed) {
            return Ok(());
        }
        let fetched = p
            .fetch_work_item(LOCK_TIMEOUT, Duration::ZERO, None, &TagFilter::default())
            .await
            .map_err(|e| format!("fetch work: {e}"))?;
        let Some((item, token, _)) = fetched else {
            tokio::time::sleep(Duration::from_millis(1)).await;
            continue;
        };
        let WorkItem::ActivityExecute {
            instance,
            execution_id,
            id,
            ..
        } = item
        else {
            return Err(format!("unexpected work item {item:?}"));
        };
        let completion = WorkItem::ActivityCompleted {
            instance,
            execution_id,
            id,
            result: "42".into(),
        };
        return p
            .ack_work_item(&token, Some(completion))
            .await
            .map_err(|e| format!("ack work: {e}"));
    }
    Ok(())
}
