//! Turns claimed by the ack of the turn before.
//!
//! A dispatcher acks its turn and fetches the next one at once. So each ack
//! claims that next turn itself, in its own transaction, after the turn's
//! writes (`ack_orchestration_item` runs `fetch_orchestration_item`, and
//! `ack_work_item` runs `fetch_work_item`, with the arguments of the fetch
//! that handed out the lease being acked: its filter, lease length and
//! session owner), and the fetch that follows takes it from here: a turn
//! costs one round trip and one commit instead of two (decision 0014). The
//! acking orchestration itself is not claimed: messages it received during
//! its lease are handed back as before (`wakeups.rs`), and its next fetch
//! looks for them. An activity ack claims nothing when the next item is
//! bound to a session: claiming sessions would have acks lock each other's
//! session rows (a deadlock), and skipping to a later item would break the
//! queue's order. The rules, and why each holds:
//!
//! * **Only for the same question.** A claimed turn waits here with the
//!   filter and lease length it was claimed with, and only a fetch asking
//!   for exactly those takes it. Any other fetch first gives back what waits
//!   here (abandoned without counting the attempt, and awaited), so it finds
//!   that work as if nothing had been claimed.
//! * **Briefly.** A claimed turn waits at most [`HOLD`] (or half its lease,
//!   if that is shorter), then it is given back (the claim's release,
//!   `claim.rs`): a dispatcher that stops after its ack holds nothing for
//!   longer, and the lease a fetch receives has at most that much less left
//!   than it asked for.
//! * **An empty answer counts** (orchestrations). When the ack found
//!   nothing to claim, the next fetch does not look again while nothing has
//!   woken its group since the ack was sent (the group's epoch,
//!   `wakeups.rs`): everything committed before that was visible to the
//!   ack's claim. It waits for a wake or the due time the ack reported
//!   instead. A short poll, which must wait for claims in progress
//!   (`orchestrator_queue.sql`), always looks.
//! * **As a fetch would have.** A claimed turn's `more_ready` (whether the
//!   fetch may report it as the only ready instance) is used only while the
//!   group's epoch is the one the ack saw; otherwise the turn is reported as
//!   one of several, and the dispatcher looks again after it.
//! * **Nothing lost.** A claim whose ack reply never arrives (its connection
//!   broke) ends with its lease, as a fetch's does; one still waiting when
//!   the provider is dropped is released.

use super::claim::Claim;
use super::functions as sql;
use super::rows::get;
use super::PostgresProvider;
use crate::wakeups::Queue;
use duroxide::providers::ProviderError;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio_postgres::Row;

/// How long a claimed turn waits for the fetch that takes it. The runtime's
/// dispatcher fetches within microseconds of its ack.
pub(super) const HOLD: Duration = Duration::from_millis(100);

/// What an orchestration fetch asks for: a capability range (`None`: any)
/// and a lease length.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct OrchestrationAsk {
    pub min: Option<Vec<i64>>,
    pub max: Option<Vec<i64>>,
    pub lock_ms: i64,
}

impl OrchestrationAsk {
    /// The waiter group of fetches with this filter (`wakeups.rs`).
    pub(super) fn filter_key(&self) -> String {
        format!("{:?}..{:?}", self.min, self.max)
    }
}

/// What a worker fetch asks for: its tag filter (`fetch_work_item`'s mode
/// and tags), its session owner and that session lease's length (`None`:
/// only items bound to no session), and a lease length. The owner is part
/// of the question because it decides which item is next in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct WorkAsk {
    pub tag_mode: i16,
    pub tags: Vec<String>,
    pub session: Option<(String, i64)>,
    pub lock_ms: i64,
}

/// What an ack's claim of the next turn found.
enum Found {
    /// A claimed turn: the ack's row (its fetch columns) in a claim that
    /// releases its lease if dropped.
    Turn { claim: Box<Claim> },
    /// Nothing to claim; in how many milliseconds something may become
    /// claimable without a commit.
    Nothing { next_visible_in_ms: Option<i64> },
}

struct Entry<A> {
    id: u64,
    ask: A,
    /// The epoch of the ask's waiter group when the ack was sent.
    epoch: u64,
    /// The end of its hold.
    until: Instant,
    found: Found,
}

/// What a fetch takes from here.
pub(super) enum Taken {
    /// A claimed turn's row, now the fetch's; `current`: nothing woke the
    /// group since the ack was sent, so its `more_ready` still holds.
    Turn { row: Row, current: bool },
    /// The ack found nothing, and nothing woke the group since.
    Nothing { next_visible_in_ms: Option<i64> },
}

/// Leases handed out and not yet acked or abandoned that are remembered
/// with their question; past this many (leases that ran out unacked), the
/// memory starts over, and acks of the forgotten ones claim nothing.
const TRACKED: usize = 4096;

/// One queue's questions (`A`: what a fetch asks) by the leases they were
/// answered with, and the answers acks found for them.
pub(super) struct Prefetch<A> {
    asked: Mutex<HashMap<String, A>>,
    waiting: Arc<Mutex<Vec<Entry<A>>>>,
    next_id: AtomicU64,
}

impl<A> Default for Prefetch<A> {
    fn default() -> Self {
        Self {
            asked: Mutex::new(HashMap::new()),
            waiting: Arc::new(Mutex::new(Vec::new())),
            next_id: AtomicU64::new(0),
        }
    }
}

impl<A: Clone + PartialEq + Send + 'static> Prefetch<A> {
    /// A fetch asking `ask` handed out the lease `token`: its ack claims
    /// with that question.
    pub(super) fn handed(&self, token: &str, ask: &A) {
        let mut asked = self.asked.lock().expect("prefetch lock");
        if asked.len() >= TRACKED {
            asked.clear();
        }
        asked.insert(token.to_string(), ask.clone());
    }

    /// The question the lease `token` answered, forgotten now (its ack or
    /// abandon is under way).
    pub(super) fn asked_for(&self, token: &str) -> Option<A> {
        self.asked.lock().expect("prefetch lock").remove(token)
    }

    /// Keeps what an ack sent at group epoch `epoch` found for `ask`, whose
    /// lease is `lease_ms` long, for at most [`HOLD`] or half the lease.
    fn put(&self, ask: A, epoch: u64, found: Found, lease_ms: i64) {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let hold = HOLD.min(Duration::from_millis(lease_ms.max(0) as u64 / 2));
        let until = Instant::now() + hold;
        self.waiting.lock().expect("prefetch lock").push(Entry {
            id,
            ask,
            epoch,
            until,
            found,
        });
        let waiting = Arc::downgrade(&self.waiting);
        tokio::spawn(async move {
            tokio::time::sleep(hold).await;
            let Some(waiting) = waiting.upgrade() else {
                return;
            };
            let expired = {
                let mut waiting = waiting.lock().expect("prefetch lock");
                let at = waiting.iter().position(|e| e.id == id);
                at.map(|at| waiting.remove(at))
            };
            // Dropped outside the lock: a claim's release spawns its abandon.
            drop(expired);
        });
    }

    /// The answer waiting for a fetch asking `ask` while its group is at
    /// `epoch`: a claimed turn first, else an empty answer still current
    /// (never for a short poll).
    pub(super) fn take(&self, ask: &A, epoch: u64, short_poll: bool) -> Option<Taken> {
        let now = Instant::now();
        let entry = {
            let mut waiting = self.waiting.lock().expect("prefetch lock");
            // Past its hold, a claim is its timer's to give back.
            let turn = waiting.iter().position(|e| {
                e.ask == *ask && e.until > now && matches!(e.found, Found::Turn { .. })
            });
            let at = turn.or_else(|| {
                waiting
                    .iter()
                    .position(|e| e.ask == *ask && e.epoch == epoch && e.until > now && !short_poll)
            })?;
            waiting.remove(at)
        };
        let current = entry.epoch == epoch;
        match entry.found {
            Found::Turn { claim, .. } => {
                let row = claim.accept().into_iter().next()?;
                Some(Taken::Turn { row, current })
            }
            Found::Nothing { next_visible_in_ms } => Some(Taken::Nothing { next_visible_in_ms }),
        }
    }

    /// Removes every claimed turn waiting for another question than `ask`
    /// (and every empty answer to one), for the fetch asking `ask` to give
    /// back.
    fn others(&self, ask: &A) -> Vec<Claim> {
        let mut waiting = self.waiting.lock().expect("prefetch lock");
        waiting
            .extract_if(.., |e| e.ask != *ask)
            .filter_map(|e| match e.found {
                Found::Turn { claim } => Some(*claim),
                Found::Nothing { .. } => None,
            })
            .collect()
    }
}

impl PostgresProvider {
    /// Before a fetch of `queue` asking `ask`: gives back (abandoned, the
    /// attempt not counted) the turns acks claimed in `prefetch` for another
    /// question, so that this fetch may find them. A claim whose abandon
    /// failed is dropped unaccepted, so that its own release tries again.
    pub(super) async fn give_back<A: Clone + PartialEq + Send + 'static>(
        &self,
        prefetch: &Prefetch<A>,
        queue: Queue,
        ask: &A,
    ) {
        for claim in prefetch.others(ask) {
            let Some(token) = claim.token().map(str::to_string) else {
                continue;
            };
            let given = match queue {
                Queue::Orchestrator => self.abandon_orchestration(&token, None, true).await,
                Queue::Worker => self.abandon_work(&token, None, true).await,
            };
            match given {
                Ok(()) => drop(claim.accept()),
                Err(e) => tracing::debug!(target: "duroxide_postgres", %token, error = %e,
                    "could not give back a prefetched turn"),
            }
        }
    }

    /// Keeps what an orchestration ack's claim of the next turn found (the
    /// ack's `row`), claimed for `ask` at group epoch `epoch`.
    pub(super) fn orchestration_prefetched(
        &self,
        ask: OrchestrationAsk,
        epoch: u64,
        row: Row,
    ) -> Result<(), ProviderError> {
        let found = self.found(row, "ack_orchestration_item", Queue::Orchestrator)?;
        let lease_ms = ask.lock_ms;
        self.orchestration_prefetch.put(ask, epoch, found, lease_ms);
        Ok(())
    }

    /// Keeps the item an activity ack claimed (the ack's `row`) for `ask`.
    /// An empty answer is not kept: only orchestration fetches take those
    /// (a worker's next fetch looks).
    pub(super) fn work_prefetched(&self, ask: WorkAsk, row: Row) -> Result<(), ProviderError> {
        match self.found(row, "ack_work_item", Queue::Worker)? {
            found @ Found::Turn { .. } => {
                let lease_ms = ask.lock_ms;
                self.work_prefetch.put(ask, 0, found, lease_ms)
            }
            Found::Nothing { .. } => {}
        }
        Ok(())
    }

    /// What the claim in an ack's `row` found: its `lock_token` column names
    /// the claimed lease, released with the queue's abandon if unused.
    fn found(&self, row: Row, op: &str, queue: Queue) -> Result<Found, ProviderError> {
        let token: Option<String> = get(op, &row, "lock_token")?;
        let abandon = match queue {
            Queue::Orchestrator => &sql::ABANDON_ORCHESTRATION_ITEM,
            Queue::Worker => &sql::ABANDON_WORK_ITEM,
        };
        Ok(match token {
            Some(token) => Found::Turn {
                claim: Box::new(self.carried_claim(row, token, abandon, queue)),
            },
            None => Found::Nothing {
                next_visible_in_ms: get(op, &row, "next_visible_in_ms")?,
            },
        })
    }
}
