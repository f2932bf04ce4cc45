//! Section 4: History size: one instance whose current execution holds 10,000
//! events (built by 100 acked turns of 100 events), then the cost of
//! fetching it (fetch_orchestration_item + abandon) and the process RSS.

use crate::stores::{Kind, Store};
use crate::turns::{metadata_first_turn, start_item, started_kind};
use crate::util::{
    err, fmt_mib, fmt_ms, heading, ms, ratio_d, rss_kib, verdict, Result, Samples, Table,
};
use crate::Ctx;
use duroxide::providers::{ExecutionMetadata, Provider, WorkItem};
use duroxide::{Event, EventKind};
use std::sync::Arc;
use std::time::{Duration, Instant};

const TURNS: u64 = 100;
const PER_TURN: u64 = 100;
const INSTANCE: &str = "history-10k";
const LOCK: Duration = Duration::from_secs(30);

struct Measured {
    kind: Kind,
    events: usize,
    json_bytes: usize,
    build: Duration,
    build_fetch_last: Option<Duration>,
    fetch: Samples,
    rss_before: Option<u64>,
    rss_after_build: Option<u64>,
    rss_after: Option<u64>,
    logs: crate::logcap::Captured,
}

pub async fn run(ctx: &Ctx) -> Result<()> {
    heading("4. History size (one instance, 10,000-event current execution)");
    let fetches = if ctx.quick { 10 } else { 20 };
    println!(
        "  built with {TURNS} acked turns of {PER_TURN} events (ActivityScheduled/ActivityCompleted \
         pairs, ~100-byte payloads); then {fetches} x (fetch_orchestration_item + abandon)"
    );
    let mut results = Vec::new();
    for kind in Kind::BOTH {
        crate::settle(ctx, &format!("history {}", kind.label())).await;
        let store = Store::create(ctx, kind, "history").await?;
        crate::logcap::begin();
        let m = crate::with_store(ctx, store, |p| measure(kind, p, fetches)).await;
        let logs = crate::logcap::end();
        let mut m = m?;
        m.logs = logs;
        results.push(m);
    }
    let sqlite_p50 = results
        .iter()
        .find(|m| m.kind == Kind::Sqlite)
        .and_then(|m| m.fetch.p50());
    let mut t = Table::new(
        &[
            "store",
            "events",
            "json",
            "build",
            "last build fetch",
            "fetch p50",
            "fetch max",
            "p50 vs sqlite",
            "RSS before",
            "after build",
            "after fetches",
        ],
        1,
    );
    for m in &results {
        t.row(vec![
            m.kind.label().into(),
            m.events.to_string(),
            format!("{:.1} MiB", m.json_bytes as f64 / 1024.0 / 1024.0),
            format!("{:.2} s", m.build.as_secs_f64()),
            format!("{} ms", fmt_ms(m.build_fetch_last)),
            format!("{} ms", fmt_ms(m.fetch.p50())),
            format!("{} ms", fmt_ms(m.fetch.max())),
            ratio_d(m.fetch.p50(), sqlite_p50),
            fmt_mib(m.rss_before),
            fmt_mib(m.rss_after_build),
            fmt_mib(m.rss_after),
        ]);
    }
    t.print();
    println!(
        "  RSS is this process (SQLite's page cache lives here, PostgreSQL's in the server); \
         json = serialized size of the fetched history"
    );
    crate::logcap::report(
        &results
            .iter()
            .map(|m| (m.kind.label().to_string(), m.logs.clone()))
            .collect::<Vec<_>>(),
    );
    if let Some(pg) = results.iter().find(|m| m.kind == Kind::Postgres) {
        println!(
            "  target: 10,000-event history fetched in <= 50 ms: p50 {} ms -> {}",
            fmt_ms(pg.fetch.p50()),
            verdict(pg.fetch.p50().map(|d| ms(d) <= 50.0))
        );
    }
    Ok(())
}

fn payload(tag: &str, i: u64) -> String {
    format!("{{\"{tag}\":{i},\"data\":\"{}\"}}", "x".repeat(80))
}

async fn measure(kind: Kind, p: Arc<dyn Provider>, fetches: usize) -> Result<Measured> {
    let rss_before = rss_kib();
    let t0 = Instant::now();
    p.enqueue_for_orchestrator(start_item(INSTANCE), None)
        .await?;
    let mut next_id = 1u64;
    let mut build_fetch_last = None;
    for turn in 0..TURNS {
        let tf = Instant::now();
        let (item, token, _) = p
            .fetch_orchestration_item(LOCK, Duration::ZERO, None)
            .await?
            .ok_or_else(|| err(format!("turn {turn}: nothing to fetch")))?;
        build_fetch_last = Some(tf.elapsed());
        if item.history.len() as u64 != next_id - 1 {
            return Err(err(format!(
                "turn {turn}: history has {} events, expected {}",
                item.history.len(),
                next_id - 1
            )));
        }
        let mut delta = Vec::with_capacity(PER_TURN as usize);
        if next_id == 1 {
            delta.push(Event::with_event_id(1, INSTANCE, 1, None, started_kind()));
            next_id += 1;
        }
        while (delta.len() as u64) < PER_TURN {
            // Scheduled at even positions, completed right after.
            let kind = if next_id.is_multiple_of(2) {
                (
                    None,
                    EventKind::ActivityScheduled {
                        name: "Work".into(),
                        input: payload("in", next_id),
                        session_id: None,
                        tag: None,
                    },
                )
            } else {
                (
                    Some(next_id - 1),
                    EventKind::ActivityCompleted {
                        result: payload("out", next_id),
                    },
                )
            };
            delta.push(Event::with_event_id(next_id, INSTANCE, 1, kind.0, kind.1));
            next_id += 1;
        }
        // A message visible at once, so the next turn can fetch the instance.
        let next = WorkItem::ExternalRaised {
            instance: INSTANCE.into(),
            name: "next".into(),
            data: format!("{turn}"),
        };
        let metadata = if turn == 0 {
            metadata_first_turn()
        } else {
            ExecutionMetadata::default()
        };
        p.ack_orchestration_item(&token, 1, delta, vec![], vec![next], metadata, vec![])
            .await?;
    }
    let build = t0.elapsed();
    let rss_after_build = rss_kib();

    let mut lat = Vec::with_capacity(fetches);
    let mut events = 0;
    let mut json_bytes = 0;
    for i in 0..fetches {
        let t = Instant::now();
        let (item, token, _) = p
            .fetch_orchestration_item(LOCK, Duration::ZERO, None)
            .await?
            .ok_or_else(|| err(format!("fetch {i}: nothing to fetch")))?;
        lat.push(t.elapsed());
        if i == 0 {
            events = item.history.len();
            json_bytes = serde_json::to_string(&item.history)
                .map(|s| s.len())
                .unwrap_or(0);
        }
        drop(item);
        p.abandon_orchestration_item(&token, None, true).await?;
    }
    let rss_after = rss_kib();
    if events as u64 != TURNS * PER_TURN {
        return Err(err(format!(
            "{}: fetched history has {events} events, expected {}",
            kind.label(),
            TURNS * PER_TURN
        )));
    }
    eprintln!("  [history] {} done", kind.label());
    Ok(Measured {
        kind,
        events,
        json_bytes,
        build,
        build_fetch_last,
        fetch: Samples::new(lat),
        rss_before,
        rss_after_build,
        rss_after,
        logs: Default::default(),
    })
}
