//! Reclaiming queue segments (`reclaim_orchestrator_queue`,
//! `reclaim_worker_queue`; decision 0005).
//!
//! Each queue is three segments in a ring, one per epoch second. The segment
//! that inserts reach next must be emptied (live rows moved, then TRUNCATE)
//! before its second comes. A background task of each provider does that
//! every [`INTERVAL`] while fetches run here, and for [`ACTIVE_WINDOW`]
//! after the last one, so that the segments written before a quiet period
//! are emptied during it. It used to run inline, before a fetch: the first
//! fetch after a quiet period then paid for truncating what the last burst
//! left (issue 11: 10-13 ms of an 18 ms start-to-completion). Several
//! processes may race: the SQL side makes a second call in the same second
//! a no-op, and an empty segment costs one size check.

use super::functions::{self as sql, SqlFn};
use super::{rows, run_call, Call, Db};
use crate::function_set::FunctionSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::Notify;
use tokio::task::JoinHandle;

/// How often the task reclaims (four times per segment second, so a
/// segment is reclaimed even when an attempt meets a lock).
const INTERVAL: Duration = Duration::from_millis(250);

/// How long after the last fetch the task keeps going: every ring segment
/// written until then has become the next one, and been emptied, by the
/// end of it.
const ACTIVE_WINDOW: Duration = Duration::from_secs(4);

/// Fetch activity, shared by the provider and its reclaim task.
#[derive(Debug)]
struct Activity {
    start: Instant,
    /// Milliseconds since `start` of the last fetch.
    last_ms: AtomicU64,
    /// Rung when a fetch comes after the task went idle.
    resumed: Notify,
}

impl Activity {
    fn now_ms(&self) -> u64 {
        self.start.elapsed().as_millis() as u64
    }

    fn idle(&self) -> bool {
        self.now_ms()
            .saturating_sub(self.last_ms.load(Ordering::Relaxed))
            > ACTIVE_WINDOW.as_millis() as u64
    }
}

/// The reclaim task of one provider; aborted when the provider is dropped.
#[derive(Debug)]
pub(super) struct Reclaimer {
    activity: Arc<Activity>,
    task: JoinHandle<()>,
}

impl Drop for Reclaimer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Reclaimer {
    /// Starts the task; it first reclaims after a fetch.
    pub(super) fn start(db: Db, quoted: &str, functions: &FunctionSet) -> Self {
        let activity = Arc::new(Activity {
            start: Instant::now(),
            last_ms: AtomicU64::new(0),
            resumed: Notify::new(),
        });
        let calls = [&sql::RECLAIM_ORCHESTRATOR_QUEUE, &sql::RECLAIM_WORKER_QUEUE]
            .map(|f: &'static SqlFn| (f.name, Call::new(quoted, functions, f)));
        let task = tokio::spawn(run(db, calls, activity.clone()));
        Self { activity, task }
    }

    /// A fetch is about to look: keep reclaiming (no statement here).
    pub(super) fn fetching(&self) {
        let was_idle = self.activity.idle();
        self.activity
            .last_ms
            .store(self.activity.now_ms(), Ordering::Relaxed);
        if was_idle {
            self.activity.resumed.notify_one();
        }
    }
}

async fn run(db: Db, calls: [(&'static str, Call); 2], activity: Arc<Activity>) {
    loop {
        if activity.idle() {
            activity.resumed.notified().await;
        }
        tokio::time::sleep(INTERVAL).await;
        for (function, call) in &calls {
            reclaim(&db, function, call).await;
        }
    }
}

/// Reclaims one queue's next segment. A failure is logged, not returned:
/// the next attempt comes [`INTERVAL`] later.
async fn reclaim(db: &Db, function: &'static str, call: &Call) {
    let moved = match run_call(db, call, function, &[]).await {
        Ok(rows) => match rows.first() {
            Some(row) => rows::get::<i64, _>(function, row, 0),
            None => Ok(0),
        },
        Err((e, _)) => Err(e),
    };
    match moved {
        Ok(moved) if moved < 0 => {
            tracing::debug!(target: "duroxide_postgres", function,
                "queue segment busy (lock not granted); retrying later");
        }
        Ok(_) => {}
        Err(e) => {
            tracing::warn!(target: "duroxide_postgres", function, error = %e,
                "could not reclaim a queue segment");
        }
    }
}
