//! Reclaiming queue segments (`reclaim_orchestrator_queue`,
//! `reclaim_worker_queue`; decision 0005).
//!
//! Each queue is three segments in a ring, one per epoch second. The segment
//! that inserts reach next must be emptied (live rows moved, then TRUNCATE)
//! before its second comes; fetches trigger that here, at most once per
//! [`INTERVAL`] per queue and process, as one extra call. Several processes
//! may race: the SQL side makes a second call in the same second a no-op.

use super::functions::{self as sql, SqlFn};
use super::{rows, PostgresProvider};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// How often a process tries (four times per segment second, so a segment
/// is reclaimed even when an attempt meets a lock).
const INTERVAL: Duration = Duration::from_millis(250);

/// When each queue's next reclaim is due, per process.
#[derive(Debug)]
pub(super) struct Reclaimer {
    start: Instant,
    /// Milliseconds since `start`: orchestrator queue, worker queue.
    due: [AtomicU64; 2],
}

impl Default for Reclaimer {
    fn default() -> Self {
        Self {
            start: Instant::now(),
            // Not on a new process's first fetch: that one should answer
            // at once (a short poll is timed by the validation suite).
            due: [
                AtomicU64::new(INTERVAL.as_millis() as u64),
                AtomicU64::new(INTERVAL.as_millis() as u64),
            ],
        }
    }
}

/// Which queue to reclaim.
#[derive(Debug, Clone, Copy)]
pub(super) enum QueueKind {
    Orchestrator,
    Worker,
}

impl QueueKind {
    fn index(self) -> usize {
        match self {
            QueueKind::Orchestrator => 0,
            QueueKind::Worker => 1,
        }
    }

    fn function(self) -> &'static SqlFn {
        match self {
            QueueKind::Orchestrator => &sql::RECLAIM_ORCHESTRATOR_QUEUE,
            QueueKind::Worker => &sql::RECLAIM_WORKER_QUEUE,
        }
    }
}

impl Reclaimer {
    /// Claims the right to reclaim `queue` now, if it is due.
    fn claim(&self, queue: QueueKind) -> bool {
        let now = self.start.elapsed().as_millis() as u64;
        let due = &self.due[queue.index()];
        let at = due.load(Ordering::Relaxed);
        now >= at
            && due
                .compare_exchange(
                    at,
                    now + INTERVAL.as_millis() as u64,
                    Ordering::Relaxed,
                    Ordering::Relaxed,
                )
                .is_ok()
    }
}

impl PostgresProvider {
    /// Reclaims `queue`'s next segment if this process is due to. A failure
    /// is logged, not returned: the fetch that triggered it is unaffected
    /// and the next attempt comes [`INTERVAL`] later.
    pub(super) async fn reclaim_if_due(&self, queue: QueueKind) {
        if !self.reclaimer.claim(queue) {
            return;
        }
        let function = queue.function().name;
        let moved = match self.call_one(function, queue.function(), &[]).await {
            Ok(row) => rows::get::<i64, _>(function, &row, 0),
            Err(e) => Err(e),
        };
        match moved {
            Ok(moved) => {
                if moved < 0 {
                    tracing::debug!(target: "duroxide_postgres", function,
                        "queue segment busy (lock not granted); retrying later");
                }
            }
            Err(e) => {
                tracing::warn!(target: "duroxide_postgres", function, error = %e,
                    "could not reclaim a queue segment");
            }
        }
    }
}
