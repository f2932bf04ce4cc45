//! `duroxide-postgres top`: a live terminal view of the store, redrawn every
//! interval until Ctrl-C, for operators on a server without a browser.
//! `--once` prints one frame (two samples an interval apart, so the rates
//! are real) and exits; with `--json` each frame is one JSON line.

use super::render::time;
use super::{error, queue_table, Outcome};
use duroxide_postgres::inspect::{Status, WriteCounters};
use duroxide_postgres::PostgresProvider;
use std::io::{IsTerminal, Write};
use std::time::Duration;

/// One frame: the store's status and the rates between two samples.
#[derive(serde::Serialize)]
struct Frame {
    status: Status,
    /// History events appended per second (each turn appends at least one).
    history_events_per_s: Option<f64>,
    /// Instances that finished in the last minute.
    finished_last_minute: u64,
    /// Instances that failed in the last minute.
    failed_last_minute: u64,
    sampled_at_ms: i64,
}

/// The events-per-second rate between two counter samples.
fn rate(before: Option<WriteCounters>, now: WriteCounters) -> Option<f64> {
    let before = before?;
    let ms = now.sampled_at_ms - before.sampled_at_ms;
    (ms > 0).then(|| {
        now.history_inserted.saturating_sub(before.history_inserted) as f64 * 1000.0 / ms as f64
    })
}

async fn frame(
    store: &PostgresProvider,
    attempts: u32,
    before: Option<WriteCounters>,
) -> Result<(Frame, WriteCounters), String> {
    let inspect = store.inspect();
    let status = inspect.status(attempts).await.map_err(|e| e.to_string())?;
    let counters = inspect.write_counters().await.map_err(|e| e.to_string())?;
    let last = inspect
        .activity(Duration::from_secs(60), 1)
        .await
        .map_err(|e| e.to_string())?;
    let frame = Frame {
        status,
        history_events_per_s: rate(before, counters),
        finished_last_minute: last.completed() + last.failed(),
        failed_last_minute: last.failed(),
        sampled_at_ms: counters.sampled_at_ms,
    };
    Ok((frame, counters))
}

/// The frame as text, every line within 100 columns.
fn render(f: &Frame, interval: u64, live: bool) -> String {
    let s = &f.status;
    let mut out = format!(
        "duroxide-postgres top · store {} · {}{}\n",
        s.schema,
        time(f.sampled_at_ms),
        if live {
            format!(" · every {interval} s, Ctrl-C quits")
        } else {
            String::new()
        }
    );
    let total: u64 = s.instances.iter().map(|c| c.instances).sum();
    let counts: Vec<String> = s
        .instances
        .iter()
        .map(|c| format!("{} {}", c.status, c.instances))
        .collect();
    out.push_str(&format!(
        "instances   {total} — {}\n",
        if counts.is_empty() {
            "none".to_string()
        } else {
            counts.join(", ")
        }
    ));
    out.push_str(&format!(
        "activity    {} history events/s (turns append ≥1 each), {} finished in the last minute \
         ({} failed)\n\n",
        f.history_events_per_s
            .map(|r| format!("{r:.1}"))
            .unwrap_or_else(|| "-".into()),
        f.finished_last_minute,
        f.failed_last_minute
    ));
    let q = queue_table(s, false);
    out.push_str(&q.render());
    let poison: u64 = s.health.queues.iter().map(|q| q.at_attempts).sum();
    let leases: u64 = s.health.queues.iter().map(|q| q.leased).sum();
    let expired: u64 = s.health.queues.iter().map(|q| q.expired_leases).sum();
    out.push_str(&format!(
        "\nleases      {leases} live, {expired} expired and not claimed again\n\
         poison      {poison} message(s) fetched {} times or more (`stuck` says why)\n",
        s.health.attempts_threshold
    ));
    out
}

/// Runs `top`.
pub(crate) async fn run(
    store: &PostgresProvider,
    json: bool,
    once: bool,
    interval: u64,
    attempts: u32,
) -> Outcome {
    let pause = Duration::from_secs(interval);
    let (_, mut counters) = frame(store, attempts, None).await.map_err(error)?;
    // Clearing the screen only makes sense on a terminal; a pipe gets frames
    // one after the other.
    let clear = !once && !json && std::io::stdout().is_terminal();
    loop {
        tokio::time::sleep(pause).await;
        let (f, now) = frame(store, attempts, Some(counters))
            .await
            .map_err(error)?;
        counters = now;
        let mut stdout = std::io::stdout().lock();
        let text = if json {
            serde_json::to_string(&f).map_err(error)? + "\n"
        } else {
            render(&f, interval, !once)
        };
        let _ = write!(stdout, "{}{text}", if clear { "\x1b[H\x1b[2J" } else { "" });
        if !clear && !once && !json {
            let _ = writeln!(stdout);
        }
        let _ = stdout.flush();
        if once {
            return Ok(());
        }
    }
}
