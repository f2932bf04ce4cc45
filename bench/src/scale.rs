//! Section: scale. The same calls on an empty store and on a store holding
//! 1,000,000 finished instances (10,000,000 history rows), 100,000 future
//! timers, 10,000 leased instances with ready messages, 10,000 ready worker
//! items with a tag no fetcher serves and 1,000 sessions owned by another
//! worker (`--quick`: a tenth). Then a purge of the finished instances while
//! a workload runs.
//!
//! The loader writes the store's tables directly, one INSERT ... SELECT
//! generate_series per table; history rows are real duroxide events (JSON
//! from duroxide's own types), so reads decode them.

use crate::util::{fmt_ms, heading, ms, now_epoch_ms, Result, Samples};
use crate::Ctx;
use duroxide::providers::{
    ExecutionMetadata, InstanceFilter, Provider, ProviderAdmin, PruneOptions, SessionFetchConfig,
    TagFilter, WorkItem,
};
use duroxide::{Event, EventKind};
use duroxide_postgres::{InstanceQuery, PostgresOptions, PostgresProvider, PurgeRequest};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const LOCK: Duration = Duration::from_secs(30);
const NAME: &str = "BenchOrchestration";
const VERSION: &str = "1.0.0";
const DAY_MS: i64 = 86_400_000;

/// Sizes of the big store.
struct Sizes {
    finished: i64,
    timers: i64,
    leased: i64,
    tagged: i64,
    sessions: i64,
}

pub async fn run(ctx: &Ctx) -> Result<()> {
    heading("Scale: the same calls on an empty store and on a big one");
    let sizes = if ctx.quick {
        Sizes {
            finished: 100_000,
            timers: 10_000,
            leased: 1_000,
            tagged: 1_000,
            sessions: 100,
        }
    } else {
        Sizes {
            finished: 1_000_000,
            timers: 100_000,
            leased: 10_000,
            tagged: 10_000,
            sessions: 1_000,
        }
    };
    let lives = if ctx.quick { 300 } else { 1000 };

    let empty = store(ctx, "scale_empty").await?;
    let big = store(ctx, "scale_big").await?;
    let started = Instant::now();
    load_finished(ctx, big.schema(), &sizes).await?;
    println!(
        "  big store: {} finished instances loaded in {:.0} s ({} history rows; every 10th a \
         sub-orchestration, every 10th failed, every 50th with 3 executions)",
        sizes.finished,
        started.elapsed().as_secs_f64(),
        count(ctx, big.schema(), "history").await?,
    );
    println!("  {}", size_report(ctx, big.schema()).await?);
    println!();
    println!(
        "  turns: {lives} whole lives per store at concurrency 1 (start, orchestration turn \
         scheduling an activity, worker turn with a session config and the default tag \
         filter, final orchestration turn), alternating stores; ms"
    );
    compare_turns(
        ctx,
        &empty,
        &big,
        lives,
        "finished",
        "a: big = finished instances only",
    )
    .await?;
    let started = Instant::now();
    load_pending(ctx, &big, &sizes).await?;
    println!(
        "  big store: + {} future timers, {} leased instances with a ready message, {} ready \
         worker items tagged 'nobody', {} sessions of another worker with an item each \
         ({:.0} s)",
        sizes.timers,
        sizes.leased,
        sizes.tagged,
        sizes.sessions,
        started.elapsed().as_secs_f64()
    );
    compare_turns(
        ctx,
        &empty,
        &big,
        lives,
        "pending",
        "b: big = finished + work it cannot take",
    )
    .await?;

    // 2. ProviderAdmin and listing calls.
    println!();
    println!("  admin calls: median of 20 (max), ms; target <= 20 ms on the big store");
    let probe_empty = "finished-r0-life-0".to_string();
    let probe_big = format!("done-{}", sizes.finished / 2);
    for (label, p, probe) in [("empty", &empty, &probe_empty), ("big", &big, &probe_big)] {
        let mut line = Vec::new();
        let calls = admin_calls(p, probe);
        for (name, call) in calls {
            let mut s = Vec::new();
            for _ in 0..20 {
                let t = Instant::now();
                call().await?;
                s.push(t.elapsed());
            }
            let s = Samples::new(s);
            line.push(format!("{name} {} ({})", fmt_ms(s.p50()), fmt_ms(s.max())));
        }
        println!("  {label:<5} {}", line.join(", "));
    }

    // 3. Bulk delete and prune batches of 1,000 on the big store.
    println!();
    let cutoff = now_epoch_ms() - DAY_MS as u64;
    let mut deleted = Vec::new();
    for _ in 0..3 {
        let t = Instant::now();
        let r = big
            .delete_instance_bulk(InstanceFilter {
                completed_before: Some(cutoff),
                limit: Some(1000),
                ..Default::default()
            })
            .await?;
        deleted.push(format!(
            "{} ms ({} instances, {} events)",
            t.elapsed().as_millis(),
            r.instances_deleted,
            r.events_deleted
        ));
    }
    println!(
        "  delete_instance_bulk(limit 1000) x3: {} (target <= 1 s each, each a new 1,000 roots)",
        deleted.join("; ")
    );
    let mut pruned = Vec::new();
    for _ in 0..3 {
        let t = Instant::now();
        let r = big
            .prune_executions_bulk(
                InstanceFilter {
                    limit: Some(1000),
                    ..Default::default()
                },
                PruneOptions {
                    keep_last: Some(1),
                    ..Default::default()
                },
            )
            .await?;
        pruned.push(format!(
            "{} ms ({} instances, {} executions)",
            t.elapsed().as_millis(),
            r.instances_processed,
            r.executions_deleted
        ));
    }
    println!(
        "  prune_executions_bulk(limit 1000, keep_last 1) x3: {} (target <= 1 s, progressing)",
        pruned.join("; ")
    );

    // 4. Purge everything finished while a workload runs.
    println!();
    purge_under_load(ctx, &big, if ctx.quick { 5 } else { 15 }).await?;
    Ok(())
}

/// Turn latencies on the empty and the big store, alternating rounds.
async fn compare_turns(
    ctx: &Ctx,
    empty: &Arc<PostgresProvider>,
    big: &Arc<PostgresProvider>,
    lives: usize,
    tag: &str,
    title: &str,
) -> Result<()> {
    let mut e = Turns::default();
    let mut b = Turns::default();
    for round in 0..2 {
        for (p, acc) in [(empty, &mut e), (big, &mut b)] {
            crate::settle(ctx, "scale turns").await;
            acc.extend(lives_at(p.clone(), &format!("{tag}-r{round}"), lives / 2, 1).await?);
        }
    }
    println!("  {title}");
    for (what, se, sb) in [
        (
            "orchestration turn",
            Samples::new(e.orch),
            Samples::new(b.orch),
        ),
        ("worker turn", Samples::new(e.work), Samples::new(b.work)),
    ] {
        let ratio = ms(sb.p50().unwrap_or_default()) / ms(se.p50().unwrap_or_default()).max(1e-9);
        println!(
            "    {what:<20} empty p50 {} p99 {} | big p50 {} p99 {} | p50 big/empty {ratio:.2}x \
             (target <= 1.2x) {}",
            fmt_ms(se.p50()),
            fmt_ms(se.pct(99.0)),
            fmt_ms(sb.p50()),
            fmt_ms(sb.pct(99.0)),
            if ratio <= 1.2 { "ok" } else { "MISSED" }
        );
    }
    Ok(())
}

mod futures_like {
    pub type Fut<'a> =
        std::pin::Pin<Box<dyn std::future::Future<Output = crate::util::Result<()>> + Send + 'a>>;
    /// A named admin call, repeatable.
    pub type Call<'a> = (&'static str, Box<dyn Fn() -> Fut<'a> + Send + Sync + 'a>);
}

fn admin_calls<'a>(p: &'a Arc<PostgresProvider>, probe: &'a str) -> Vec<futures_like::Call<'a>> {
    vec![
        (
            "instance_info",
            Box::new(move || {
                Box::pin(async move {
                    p.get_instance_info(probe).await?;
                    Ok(())
                })
            }),
        ),
        (
            "execution_info",
            Box::new(move || {
                Box::pin(async move {
                    let e = p.latest_execution_id(probe).await?;
                    p.get_execution_info(probe, e).await?;
                    Ok(())
                })
            }),
        ),
        (
            "read_history",
            Box::new(move || {
                Box::pin(async move {
                    p.read_history(probe).await?;
                    Ok(())
                })
            }),
        ),
        (
            "queue_depths",
            Box::new(move || {
                Box::pin(async move {
                    p.get_queue_depths().await?;
                    Ok(())
                })
            }),
        ),
        (
            "system_metrics",
            Box::new(move || {
                Box::pin(async move {
                    p.get_system_metrics().await?;
                    Ok(())
                })
            }),
        ),
        (
            "list_page(Completed,100)",
            Box::new(move || {
                Box::pin(async move {
                    p.list_instance_page(&InstanceQuery::new().status("Completed"), None)
                        .await?;
                    Ok(())
                })
            }),
        ),
        (
            "counts_by_status",
            Box::new(move || {
                Box::pin(async move {
                    p.count_instances_by_status().await?;
                    Ok(())
                })
            }),
        ),
    ]
}

/// A fresh PostgreSQL store of the concrete type (listing and purge are
/// not on the trait).
async fn store(ctx: &Ctx, tag: &str) -> Result<Arc<PostgresProvider>> {
    let schema = crate::pg::schema_name(tag);
    ctx.admin.drop_schema(&schema).await;
    ctx.admin.track_schema(&schema);
    Ok(Arc::new(
        PostgresProvider::connect(
            &ctx.url,
            PostgresOptions::new()
                .schema(schema.as_str())
                .application_name("duroxide-postgres-bench")
                .max_connections(16),
        )
        .await?,
    ))
}

async fn count(ctx: &Ctx, schema: &str, table: &str) -> Result<i64> {
    let row = ctx
        .admin
        .client
        .query_one(&format!("SELECT count(*) FROM \"{schema}\".{table}"), &[])
        .await?;
    Ok(row.get(0))
}

async fn size_report(ctx: &Ctx, schema: &str) -> Result<String> {
    let row = ctx
        .admin
        .client
        .query_one(
            "SELECT pg_size_pretty(sum(pg_total_relation_size(c.oid))::bigint) FROM pg_class c \
             JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = $1 AND c.relkind = 'r'",
            &[&schema],
        )
        .await?;
    Ok(format!(
        "big store size on disk (tables + indexes): {}",
        row.get::<_, String>(0)
    ))
}

fn event_json(event_id: u64, kind: EventKind) -> Result<String> {
    Ok(serde_json::to_string(&Event::with_event_id(
        event_id, "__ID__", 1, None, kind,
    ))?)
}

/// The ten events of a finished life, with `__ID__` for the instance id.
fn life_events() -> Result<Vec<String>> {
    let mut v = vec![event_json(1, crate::turns::started_kind())?];
    for k in 0..4u64 {
        v.push(event_json(
            2 + 2 * k,
            EventKind::ActivityScheduled {
                name: "BenchActivity".into(),
                input: "{\"order\":12345}".into(),
                session_id: None,
                tag: None,
            },
        )?);
        v.push(serde_json::to_string(&Event::with_event_id(
            3 + 2 * k,
            "__ID__",
            1,
            Some(2 + 2 * k),
            EventKind::ActivityCompleted {
                result: "{\"ok\":true}".into(),
            },
        ))?);
    }
    v.push(event_json(
        10,
        EventKind::OrchestrationCompleted {
            output: "\"done\"".into(),
        },
    )?);
    Ok(v)
}

async fn load_finished(ctx: &Ctx, schema: &str, s: &Sizes) -> Result<()> {
    let c = &ctx.admin.client;
    let q = format!("\"{schema}\"");
    let now = now_epoch_ms() as i64;
    let base = now - 60 * DAY_MS;
    let events = life_events()?;
    c.batch_execute("SET synchronous_commit = off").await?;
    let n = s.finished;
    // Finished instances: every 10th a sub-orchestration of the one before,
    // every 10th (another) failed, every 50th with two continued-as-new
    // executions before its current one.
    c.execute(
        &format!(
            "INSERT INTO {q}.instances (instance_id, orchestration_name, orchestration_version,
                 current_execution_id, parent_instance_id, created_at_ms, updated_at_ms, status,
                 completed_at_ms, counted_execution_id)
             SELECT 'done-' || g, '{NAME}', '{VERSION}', CASE WHEN g % 50 = 3 THEN 3 ELSE 1 END,
                    CASE WHEN g % 10 = 1 THEN 'done-' || (g - 1) END, $1::bigint + g, $1::bigint + g + 1000,
                    CASE WHEN g % 10 = 5 THEN 'Failed' ELSE 'Completed' END, $1::bigint + g + 1000,
                    CASE WHEN g % 50 = 3 THEN 3 ELSE 1 END
             FROM generate_series(1, $2::bigint) g"
        ),
        &[&base, &n],
    )
    .await
    .map_err(|e| crate::pg::db_message(&e))?;
    c.execute(
        &format!(
            "INSERT INTO {q}.executions (instance_id, execution_id, status, output, started_at_ms,
                 completed_at_ms)
             SELECT 'done-' || g, e,
                    CASE WHEN e < (CASE WHEN g % 50 = 3 THEN 3 ELSE 1 END) THEN 'ContinuedAsNew'
                         WHEN g % 10 = 5 THEN 'Failed' ELSE 'Completed' END,
                    convert_to('\"done\"', 'UTF8'), $1::bigint + g, $1::bigint + g + 1000
             FROM generate_series(1, $2::bigint) g,
                  LATERAL generate_series(1, CASE WHEN g % 50 = 3 THEN 3 ELSE 1 END) e"
        ),
        &[&base, &n],
    )
    .await
    .map_err(|e| crate::pg::db_message(&e))?;
    c.execute(
        &format!(
            "INSERT INTO {q}.history (instance_id, execution_id, event_id, event_data)
             SELECT 'done-' || g, CASE WHEN g % 50 = 3 THEN 3 ELSE 1 END, k,
                    replace(($3::text[])[k], '__ID__', 'done-' || g)
             FROM generate_series(1, $2::bigint) g, generate_series(1, 10) k
             UNION ALL
             SELECT 'done-' || g, e, 1, replace(($3::text[])[1], '__ID__', 'done-' || g)
             FROM generate_series(1, $2::bigint) g, generate_series(1, 2) e
             WHERE g % 50 = 3 AND $1::bigint IS NOT NULL"
        ),
        &[&base, &n, &events],
    )
    .await
    .map_err(|e| crate::pg::db_message(&e))?;
    c.execute(
        &format!(
            "INSERT INTO {q}.instance_locks (instance_id, last_acked_token)
             SELECT 'done-' || g, 'lock_done_' || g FROM generate_series(1, $1::bigint) g"
        ),
        &[&n],
    )
    .await
    .map_err(|e| crate::pg::db_message(&e))?;

    refresh(ctx, schema).await
}

/// Work no fetcher of the bench can take: future timers, instances leased
/// by another runtime with a ready message, worker items tagged for nobody,
/// sessions owned by another worker.
async fn load_pending(ctx: &Ctx, store: &PostgresProvider, s: &Sizes) -> Result<()> {
    let schema = store.schema();
    let c = &ctx.admin.client;
    let q = format!("\"{schema}\"");
    let now = now_epoch_ms() as i64;
    let events = life_events()?;
    let timer = serde_json::to_string(&WorkItem::TimerFired {
        instance: "__ID__".into(),
        execution_id: 1,
        id: 2,
        fire_at_ms: (now + 3_600_000) as u64,
    })?;
    let ext = serde_json::to_string(&WorkItem::ExternalRaised {
        instance: "__ID__".into(),
        name: "poke".into(),
        data: "{}".into(),
    })?;
    let act = |tag: Option<&str>, session: Option<&str>| {
        serde_json::to_string(&WorkItem::ActivityExecute {
            instance: "__ID__".into(),
            execution_id: 1,
            id: 2,
            name: "BenchActivity".into(),
            input: "{}".into(),
            session_id: session.map(str::to_string),
            tag: tag.map(str::to_string),
        })
    };
    let tagged = act(Some("nobody"), None)?;
    let in_session = act(None, Some("__SESSION__"))?;
    c.batch_execute("SET synchronous_commit = off").await?;
    // Running instances waiting on a timer an hour away.
    c.execute(
        &format!(
            "WITH ids AS (SELECT 'timer-' || g AS id FROM generate_series(1, $1::bigint) g),
             i AS (INSERT INTO {q}.instances (instance_id, orchestration_name, orchestration_version,
                       created_at_ms, updated_at_ms, counted_execution_id)
                   SELECT id, '{NAME}', '{VERSION}', $2, $2, 1 FROM ids),
             e AS (INSERT INTO {q}.executions (instance_id, execution_id, started_at_ms)
                   SELECT id, 1, $2 FROM ids),
             h AS (INSERT INTO {q}.history (instance_id, execution_id, event_id, event_data)
                   SELECT id, 1, 1, replace($4, '__ID__', id) FROM ids),
             l AS (INSERT INTO {q}.instance_locks (instance_id) SELECT id FROM ids)
             INSERT INTO {q}.orchestrator_queue (instance_id, kind, work_item, visible_at_ms, created_at_ms)
             SELECT id, 'TimerFired', replace($3, '__ID__', id), $2::bigint + 3600000, $2 FROM ids"
        ),
        &[&s.timers, &now, &timer, &events[0]],
    )
    .await
    .map_err(|e| crate::pg::db_message(&e))?;
    // Instances leased by another runtime for an hour, with a ready message.
    c.execute(
        &format!(
            "WITH ids AS (SELECT 'leased-' || g AS id FROM generate_series(1, $1::bigint) g),
             i AS (INSERT INTO {q}.instances (instance_id, orchestration_name, orchestration_version,
                       created_at_ms, updated_at_ms, counted_execution_id)
                   SELECT id, '{NAME}', '{VERSION}', $2, $2, 1 FROM ids),
             e AS (INSERT INTO {q}.executions (instance_id, execution_id, started_at_ms)
                   SELECT id, 1, $2 FROM ids),
             h AS (INSERT INTO {q}.history (instance_id, execution_id, event_id, event_data)
                   SELECT id, 1, 1, replace($3, '__ID__', id) FROM ids),
             l AS (INSERT INTO {q}.instance_locks (instance_id, lock_token, locked_until_ms)
                   SELECT id, 'lock_other_' || id, $2::bigint + 3600000 FROM ids)
             SELECT count(*) FROM ids"
        ),
        &[&s.leased, &now, &events[0]],
    )
    .await
    .map_err(|e| crate::pg::db_message(&e))?;
    // Their messages arrive the way a client's do (the store's enqueue
    // function, so whatever it does with a leased target applies).
    c.execute(
        &format!(
            "SELECT {q}.\"enqueue_orchestrator__{set}\"('leased-' || g, 'ExternalRaised',
                 replace($2, '__ID__', 'leased-' || g), 0, NULL)
             FROM generate_series(1, $1::bigint) g",
            set = store.function_set()
        ),
        &[&s.leased, &ext],
    )
    .await
    .map_err(|e| crate::pg::db_message(&e))?;
    // Ready worker items no fetcher serves, and sessions of another worker.
    c.execute(
        &format!(
            "INSERT INTO {q}.worker_queue (work_item, visible_at_ms, instance_id, execution_id,
                 activity_id, tag, created_at_ms)
             SELECT replace($3, '__ID__', 'timer-' || g), $2, 'timer-' || g, 1, 2, 'nobody', $2
             FROM generate_series(1, $1::bigint) g"
        ),
        &[&s.tagged, &now, &tagged],
    )
    .await
    .map_err(|e| crate::pg::db_message(&e))?;
    c.execute(
        &format!(
            "WITH s AS (INSERT INTO {q}.sessions (session_id, worker_id, locked_until_ms,
                            last_activity_at_ms)
                        SELECT 'sess-' || g, 'another-worker', $2::bigint + 3600000, $2
                        FROM generate_series(1, $1::bigint) g)
             INSERT INTO {q}.worker_queue (work_item, visible_at_ms, instance_id, execution_id,
                 activity_id, session_id, created_at_ms)
             SELECT replace(replace($3, '__ID__', 'timer-' || g), '__SESSION__', 'sess-' || g), $2,
                    'timer-' || g, 1, 3, 'sess-' || g, $2
             FROM generate_series(1, $1::bigint) g"
        ),
        &[&s.sessions, &now, &in_session],
    )
    .await
    .map_err(|e| crate::pg::db_message(&e))?;
    refresh(ctx, schema).await
}

/// Totals as the acks would have kept them, and fresh statistics.
async fn refresh(ctx: &Ctx, schema: &str) -> Result<()> {
    let c = &ctx.admin.client;
    let q = format!("\"{schema}\"");
    // The totals the acks would have kept.
    c.batch_execute(&format!(
        "DELETE FROM {q}.stat_deltas;
         UPDATE {q}.stat_totals SET
             instances = (SELECT count(*) FROM {q}.instances),
             executions = (SELECT count(*) FROM {q}.executions),
             events = (SELECT count(*) FROM {q}.history),
             running = (SELECT count(*) FROM {q}.instances WHERE status = 'Running'),
             completed = (SELECT count(*) FROM {q}.instances WHERE status = 'Completed'),
             failed = (SELECT count(*) FROM {q}.instances WHERE status = 'Failed'),
             continued_as_new = 0"
    ))
    .await
    .map_err(|e| crate::pg::db_message(&e))?;
    c.batch_execute(&format!(
        "VACUUM ANALYZE {q}.instances, {q}.executions, {q}.history, {q}.instance_locks,
             {q}.orchestrator_queue, {q}.worker_queue, {q}.sessions"
    ))
    .await
    .map_err(|e| crate::pg::db_message(&e))?;
    c.batch_execute("SET synchronous_commit = on")
        .await
        .map_err(|e| crate::pg::db_message(&e))?;
    Ok(())
}

/// Turn latencies of lives.
#[derive(Default)]
struct Turns {
    orch: Vec<Duration>,
    work: Vec<Duration>,
    /// (end time since the run started, turn latency) of every turn.
    timeline: Vec<(Duration, Duration)>,
}

impl Turns {
    fn extend(&mut self, other: Turns) {
        self.orch.extend(other.orch);
        self.work.extend(other.work);
        self.timeline.extend(other.timeline);
    }
}

/// `n` whole lives (ids `{tag}-life-{i}`) at concurrency `conc`.
async fn lives_at(p: Arc<PostgresProvider>, tag: &str, n: usize, conc: usize) -> Result<Turns> {
    let next = Arc::new(AtomicUsize::new(0));
    let out = Arc::new(Mutex::new(Turns::default()));
    let origin = Instant::now();
    let mut tasks = Vec::new();
    for w in 0..conc {
        let (p, next, out, tag) = (p.clone(), next.clone(), out.clone(), tag.to_string());
        tasks.push(tokio::spawn(async move {
            let session = SessionFetchConfig {
                owner_id: format!("bench-worker-{w}"),
                lock_timeout: LOCK,
            };
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= n {
                    return Ok::<(), String>(());
                }
                let id = format!("{tag}-life-{i}");
                let t = life(&p, &id, &session).await?;
                let mut o = out.lock().map_err(|e| e.to_string())?;
                for d in &t.0 {
                    o.timeline.push((origin.elapsed(), *d));
                }
                o.timeline.push((origin.elapsed(), t.1));
                o.orch.extend(t.0);
                o.work.push(t.1);
            }
        }));
    }
    for t in tasks {
        t.await?
            .map_err(|e| -> crate::util::BoxError { e.into() })?;
    }
    let mut guard = out.lock().map_err(|e| e.to_string())?;
    Ok(std::mem::take(&mut *guard))
}

/// One life through the Provider trait; returns the two orchestration turn
/// latencies and the worker turn latency.
async fn life(
    p: &PostgresProvider,
    id: &str,
    session: &SessionFetchConfig,
) -> std::result::Result<([Duration; 2], Duration), String> {
    let e = |e: duroxide::providers::ProviderError| e.to_string();
    p.enqueue_for_orchestrator(crate::turns::start_item(id), None)
        .await
        .map_err(e)?;
    // Orchestration turn 1: started + an activity.
    let t1 = Instant::now();
    let (item, token, _) = fetch_orch(p, id).await?;
    let exec = item.execution_id;
    let events = vec![
        Event::with_event_id(1, id, exec, None, crate::turns::started_kind()),
        Event::with_event_id(
            2,
            id,
            exec,
            None,
            EventKind::ActivityScheduled {
                name: "BenchActivity".into(),
                input: "{}".into(),
                session_id: None,
                tag: None,
            },
        ),
    ];
    let activity = WorkItem::ActivityExecute {
        instance: id.to_string(),
        execution_id: exec,
        id: 2,
        name: "BenchActivity".into(),
        input: "{}".into(),
        session_id: None,
        tag: None,
    };
    p.ack_orchestration_item(
        &token,
        exec,
        events,
        vec![activity],
        vec![],
        crate::turns::metadata_first_turn(),
        vec![],
    )
    .await
    .map_err(e)?;
    let d1 = t1.elapsed();
    // Worker turn.
    let t2 = Instant::now();
    let (work, wtoken, _) = loop {
        match p
            .fetch_work_item(LOCK, Duration::ZERO, Some(session), &TagFilter::DefaultOnly)
            .await
            .map_err(e)?
        {
            Some(x) => break x,
            None => tokio::task::yield_now().await,
        }
    };
    let WorkItem::ActivityExecute {
        instance,
        execution_id,
        id: act_id,
        ..
    } = work
    else {
        return Err(format!("unexpected work item {work:?}"));
    };
    p.ack_work_item(
        &wtoken,
        Some(WorkItem::ActivityCompleted {
            instance,
            execution_id,
            id: act_id,
            result: "{\"ok\":true}".into(),
        }),
    )
    .await
    .map_err(e)?;
    let d2 = t2.elapsed();
    // Orchestration turn 2: the completion, and the end.
    let t3 = Instant::now();
    let (item, token, _) = fetch_orch(p, id).await?;
    let exec = item.execution_id;
    let events = vec![
        Event::with_event_id(
            3,
            id,
            exec,
            Some(2),
            EventKind::ActivityCompleted {
                result: "{\"ok\":true}".into(),
            },
        ),
        Event::with_event_id(
            4,
            id,
            exec,
            None,
            EventKind::OrchestrationCompleted {
                output: "\"done\"".into(),
            },
        ),
    ];
    p.ack_orchestration_item(
        &token,
        exec,
        events,
        vec![],
        vec![],
        ExecutionMetadata {
            status: Some("Completed".into()),
            output: Some("\"done\"".into()),
            orchestration_name: Some(NAME.into()),
            orchestration_version: Some(VERSION.into()),
            ..Default::default()
        },
        vec![],
    )
    .await
    .map_err(e)?;
    Ok(([d1, t3.elapsed()], d2))
}

/// Fetches until an item arrives (other workers' lives are claimable too:
/// any ready instance is fine, but a life only continues with its own).
async fn fetch_orch(
    p: &PostgresProvider,
    id: &str,
) -> std::result::Result<(duroxide::providers::OrchestrationItem, String, u32), String> {
    loop {
        match p
            .fetch_orchestration_item(LOCK, Duration::ZERO, None)
            .await
            .map_err(|e| e.to_string())?
        {
            Some((item, token, n)) if item.instance == id => return Ok((item, token, n)),
            Some((_, token, _)) => {
                // Another life's instance: give it back at once.
                p.abandon_orchestration_item(&token, None, true)
                    .await
                    .map_err(|e| e.to_string())?;
            }
            None => tokio::task::yield_now().await,
        }
    }
}

/// Workload alone, then workload plus a purge of everything finished.
async fn purge_under_load(ctx: &Ctx, big: &Arc<PostgresProvider>, secs: u64) -> Result<()> {
    let conc = 2;
    let finished = count(ctx, big.schema(), "instances").await?;
    println!(
        "  purge: workload of {conc} loops of whole lives alone for {secs} s, then the same \
         workload while `purge --older-than 1d` (batches <= 2,000 roots, ~200 ms each, no pause) runs \
         over {finished} instances"
    );
    crate::settle(ctx, "scale purge").await;
    let alone = timed_load(big.clone(), "alone", conc, Duration::from_secs(secs), None).await?;
    // What `duroxide-postgres purge --older-than 1d` runs (no throttle).
    let request = PurgeRequest::older_than(Duration::from_secs(86_400));
    let purger = big.clone();
    let done = Arc::new(AtomicBool::new(false));
    let done2 = done.clone();
    let purge = tokio::spawn(async move {
        let t = Instant::now();
        let r = purger.purge(&request, |_| {}).await;
        done2.store(true, Ordering::Relaxed);
        r.map(|p| (p, t.elapsed()))
    });
    let during = timed_load(
        big.clone(),
        "during",
        conc,
        Duration::from_secs(3600),
        Some(done),
    )
    .await?;
    let (progress, took) = purge.await??;
    let (a, d) = (Samples::new(alone.all()), Samples::new(during.all()));
    let ratio = ms(d.pct(99.0).unwrap_or_default()) / ms(a.pct(99.0).unwrap_or_default()).max(1e-9);
    let rate = progress.instances_deleted as f64 / took.as_secs_f64();
    println!(
        "  purge deleted {} instances ({} trees, {} events) in {:.1} s: {rate:.0} instances/s \
         (target >= 5,000) {}; {} batches, longest {} ms (target: no transaction > 1 s) {}",
        progress.instances_deleted,
        progress.roots_deleted,
        progress.events_deleted,
        took.as_secs_f64(),
        if rate >= 5000.0 { "ok" } else { "MISSED" },
        progress.batches,
        progress.longest_batch_ms,
        if progress.longest_batch_ms <= 1000 {
            "ok"
        } else {
            "MISSED"
        },
    );
    println!(
        "  workload turns alone: {} turns, p50 {} p99 {} | during purge: {} turns, p50 {} p99 {} \
         | p99 during/alone {ratio:.2}x (target <= 2x) {}",
        a.len(),
        fmt_ms(a.p50()),
        fmt_ms(a.pct(99.0)),
        d.len(),
        fmt_ms(d.p50()),
        fmt_ms(d.pct(99.0)),
        if ratio <= 2.0 { "ok" } else { "MISSED" }
    );
    let left = count(ctx, big.schema(), "instances").await?;
    println!("  instances left after the purge (workload's and running ones): {left}");
    Ok(())
}

impl Turns {
    fn all(&self) -> Vec<Duration> {
        self.timeline.iter().map(|(_, d)| *d).collect()
    }
}

/// Lives at concurrency `conc` until `limit` passed or `stop` is set.
async fn timed_load(
    p: Arc<PostgresProvider>,
    tag: &str,
    conc: usize,
    limit: Duration,
    stop: Option<Arc<AtomicBool>>,
) -> Result<Turns> {
    let deadline = Instant::now() + limit;
    let out = Arc::new(Mutex::new(Turns::default()));
    let origin = Instant::now();
    let mut tasks = Vec::new();
    for w in 0..conc {
        let (p, out, tag, stop) = (p.clone(), out.clone(), tag.to_string(), stop.clone());
        tasks.push(tokio::spawn(async move {
            let session = SessionFetchConfig {
                owner_id: format!("bench-load-{w}"),
                lock_timeout: LOCK,
            };
            let mut i = 0;
            while Instant::now() < deadline
                && !stop.as_ref().is_some_and(|s| s.load(Ordering::Relaxed))
            {
                let id = format!("{tag}-w{w}-{i}");
                i += 1;
                let t = life(&p, &id, &session).await?;
                let mut o = out.lock().map_err(|e| e.to_string())?;
                for d in t.0 {
                    o.timeline.push((origin.elapsed(), d));
                }
                o.timeline.push((origin.elapsed(), t.1));
            }
            Ok::<(), String>(())
        }));
    }
    for t in tasks {
        t.await?
            .map_err(|e| -> crate::util::BoxError { e.into() })?;
    }
    let mut guard = out.lock().map_err(|e| e.to_string())?;
    Ok(std::mem::take(&mut *guard))
}
