//! How an idle fetch waits, and what wakes it: the one place that decides.
//!
//! **Who wakes.** Every SQL function that makes work ready returns what it
//! made ready ([`Made`]: ready instances, the released instance's own
//! messages, delayed work, worker items and whether one is bound to a
//! session). After the call commits, [`Signals::committed`] alone decides
//! whom that wakes: this process's waiters at once, other processes through
//! the listener task (`notifier.rs`), and only while another process listens
//! on the store's channel (`peers.rs`). No SQL function decides who wakes; a
//! client's enqueue only carries the payload this module chose into its own
//! transaction ([`Signals::announcement`]), so that a process which exits
//! right after the call still wakes the others.
//!
//! **Counted, per group.** A commit that makes `n` units ready wakes `n`
//! waiters, not all: with four idle dispatchers, one commit costs one fetch
//! (issue 11). Waiters are grouped by what they may take (the fetch's
//! filter); a wake goes to every group, so a waiter whose filter excludes the
//! work never stands between the work and one that could take it. Work only
//! some waiters of a group may take (a session's item) wakes them all.
//!
//! A fetch that finds nothing waits until one of:
//!
//! * **a wake** for committed work, from this process or another;
//! * **a due time**: an empty fetch reports when delayed work becomes visible
//!   or a lease holding ready work expires, and a fetch that claims the only
//!   ready instance reports when its own lease ends (if its holder never acks
//!   nor abandons, what it held becomes claimable then, with no commit to say
//!   so). The time is kept per group, not per waiter, so it is not forgotten
//!   when the waiter that learned it leaves with other work; one waiter of
//!   the group takes it when it comes, and if that waiter finds work it wakes
//!   one more (several items may fall due together);
//! * **an owed look** for handed-back work (below);
//! * **its deadline** (the caller's poll timeout), or, while the listener is
//!   disconnected, the re-check interval;
//! * **its backoff**, when the provider has no listener at all (behind a
//!   transaction pooler without a direct `listen_url`, or long polling off):
//!   other processes' commits cannot wake it, so it looks again after 10 ms,
//!   then 20, 40, ... up to 1 s, starting over when the group finds work.
//!
//! **Nothing new, no statement.** Every wake of a group advances its epoch.
//! While the epoch is the one at which a fetch of the group last found
//! nothing, or claimed the only ready instance ([`Polled::ReadyLast`]), a
//! dispatcher coming back from a turn, or a waiter woken by a commit whose
//! work a fetch of its group has already claimed, waits without a statement;
//! should nothing wake it, it looks once at its deadline, so a fetch never
//! reports "nothing" without having looked. Work written behind the
//! provider's back (without a notification) is therefore found at the latest
//! when a waiting fetch's poll timeout ends.
//!
//! **Handed back** (decision 0011): messages that arrived for an instance
//! while it was leased become ready when its ack ends the lease, and the
//! dispatcher that acked fetches again at once. Waking a waiter for them
//! would make the two race; the group owes a look instead, which the next
//! fetch of the group takes on.
//!
//! **Across processes** (decision 0009): a process does not announce
//! orchestrator work that its own parked waiters can absorb (one group, that
//! many parked): each such wake leaves a ticket, and a fetch that looks after
//! the commit and finds nothing it may take announces one unit after all; one
//! that claims the only ready instance settles them. Worker work is always
//! announced (an activity can hold a worker slot for hours).
//!
//! A waiter is registered before its fetch runs, so work committed while the
//! fetch's statement runs wakes it; a waiter that is woken but leaves with
//! other work passes its wake on (tokio's `Notify` forwards an unreceived
//! `notify_one` when its future is dropped).

use crate::peers::{Message, Peers};
use duroxide::providers::ProviderError;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::Notify;

/// A queue that received work.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Queue {
    /// The orchestrator queue (payload prefix `o`).
    Orchestrator,
    /// The worker queue (payload prefix `w`).
    Worker,
}

/// How many waiters of each group committed work may wake.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Wake {
    /// As many as ready units of work were committed (instances for the
    /// orchestrator queue, items for the worker queue).
    Count(u32),
    /// Every waiter: work that not every waiter of a group may take.
    All,
}

/// More wakes than this per group and commit only cost fetches: no process
/// runs that many idle dispatchers of one kind.
const MAX_COUNT: u32 = 64;

/// How long a look handed back to the dispatcher that acked may wait for
/// it ([`Signals::committed`]); that dispatcher fetches again within
/// microseconds unless it is stopping.
const HANDBACK_GRACE: Duration = Duration::from_millis(100);

/// The first and the longest wait between looks without a listener.
const BACKOFF_MIN: Duration = Duration::from_millis(10);
const BACKOFF_MAX: Duration = Duration::from_secs(1);

/// `Count(ALL_COUNT)` in the outgoing accumulator means [`Wake::All`].
const ALL_COUNT: u64 = u64::MAX;

/// The waiters of one queue with one filter.
#[derive(Debug)]
struct Group {
    /// Wakes for committed work.
    notify: Notify,
    /// The earliest time some work this group may be waiting for becomes
    /// claimable without a commit (a delay or a lease ends).
    due: Mutex<Option<Instant>>,
    /// Rung when `due` moves earlier, so sleepers re-arm their timers.
    due_changed: Notify,
    /// Counts every wake of the group (commits, notifications, due times,
    /// reconnects).
    epoch: AtomicU64,
    /// Per fetcher identity (the filter and anything else that changes
    /// what a fetch may take, such as its session owner): the epoch at
    /// which an attempt that found nothing started. While it equals
    /// `epoch`, nothing was committed since, so such a fetch coming back
    /// from a turn waits without looking first.
    quiet_at: Mutex<HashMap<String, u64>>,
    /// Without a listener: the next wait between looks.
    backoff: Mutex<Duration>,
    /// Waiters parked in `poll`'s wait with their wake registered: each of
    /// them is woken by one `notify_one` and then looks.
    parked: AtomicUsize,
    /// Wakes this process took on itself instead of telling the other
    /// processes (see [`Signals::committed`]), by the epoch of their commit;
    /// settled by attempts that started at or after it ([`settle_tickets`]).
    tickets: Mutex<Vec<u64>>,
    /// A look owed to work an ack made ready for the dispatcher that is
    /// about to come back ([`Signals::committed`]): when a waiter takes
    /// it if no fetch has (see [`look`]).
    owed: Mutex<Option<Instant>>,
}

impl Default for Group {
    fn default() -> Self {
        Self {
            notify: Notify::new(),
            due: Mutex::new(None),
            due_changed: Notify::new(),
            epoch: AtomicU64::new(0),
            quiet_at: Mutex::new(HashMap::new()),
            backoff: Mutex::new(BACKOFF_MIN),
            parked: AtomicUsize::new(0),
            tickets: Mutex::new(Vec::new()),
            owed: Mutex::new(None),
        }
    }
}

impl Group {
    fn epoch(&self) -> u64 {
        self.epoch.load(Ordering::Acquire)
    }

    /// Advances the epoch; returns the new one.
    fn bump(&self) -> u64 {
        self.epoch.fetch_add(1, Ordering::AcqRel) + 1
    }

    /// An attempt of `fetcher` that started at `epoch` found nothing.
    fn mark_quiet(&self, fetcher: &str, epoch: u64) {
        let mut quiet = self.quiet_at.lock().expect("quiet lock");
        match quiet.get_mut(fetcher) {
            Some(q) => *q = (*q).max(epoch),
            None => {
                quiet.insert(fetcher.to_string(), epoch);
            }
        }
    }

    /// Nothing woke the group since an attempt of `fetcher` found nothing.
    fn quiet(&self, fetcher: &str) -> bool {
        let epoch = self.epoch();
        self.quiet_at
            .lock()
            .expect("quiet lock")
            .get(fetcher)
            .is_some_and(|q| *q == epoch)
    }

    /// The wait before the next look without a listener; the one after
    /// it is twice as long, up to [`BACKOFF_MAX`].
    fn next_backoff(&self) -> Duration {
        let mut backoff = self.backoff.lock().expect("backoff lock");
        let wait = *backoff;
        *backoff = (wait * 2).min(BACKOFF_MAX);
        wait
    }

    /// A fetch of the group found work: look often again.
    fn reset_backoff(&self) {
        *self.backoff.lock().expect("backoff lock") = BACKOFF_MIN;
    }

    fn due(&self) -> Option<Instant> {
        *self.due.lock().expect("due lock")
    }

    fn lower_due(&self, at: Instant) {
        let mut due = self.due.lock().expect("due lock");
        if due.is_none_or(|d| at < d) {
            *due = Some(at);
            drop(due);
            self.due_changed.notify_waiters();
        }
    }

    /// Discharges every ticket of a commit no later than `epoch` (an
    /// attempt that started at `epoch` saw those commits); how many.
    fn discharge_tickets(&self, epoch: u64) -> usize {
        let mut tickets = self.tickets.lock().expect("tickets lock");
        let before = tickets.len();
        tickets.retain(|t| *t > epoch);
        before - tickets.len()
    }

    fn owed(&self) -> Option<Instant> {
        *self.owed.lock().expect("owed lock")
    }

    /// Owes a look, at `at` at the latest.
    fn owe(&self, at: Instant) {
        let mut owed = self.owed.lock().expect("owed lock");
        *owed = Some(owed.map_or(at, |a| a.min(at)));
        drop(owed);
        self.due_changed.notify_waiters();
    }

    /// Takes the owed look, due or not (a fetch is about to look).
    fn take_owed_now(&self) -> bool {
        self.owed.lock().expect("owed lock").take().is_some()
    }

    /// Takes the owed look if it is due (one waiter of the group does).
    fn take_owed(&self) -> bool {
        let mut owed = self.owed.lock().expect("owed lock");
        if owed.is_some_and(|at| at <= Instant::now()) {
            *owed = None;
            true
        } else {
            false
        }
    }

    /// Takes the due time if it has come (one waiter of the group does).
    fn take_due(&self) -> bool {
        let mut due = self.due.lock().expect("due lock");
        if due.is_some_and(|d| d <= Instant::now()) {
            *due = None;
            self.bump();
            true
        } else {
            false
        }
    }
}

/// The waiter groups of one queue, by filter key.
#[derive(Debug, Default)]
struct Waiters {
    groups: Mutex<HashMap<String, Arc<Group>>>,
}

impl Waiters {
    fn group(&self, key: &str) -> Arc<Group> {
        let mut groups = self.groups.lock().expect("groups lock");
        groups.entry(key.to_string()).or_default().clone()
    }

    fn wake(&self, wake: Wake) {
        self.wake_absorbing(wake, false);
    }

    /// Work of this queue falls due at `at`: every group keeps the time.
    fn lower_due(&self, at: Instant) {
        for g in self.groups.lock().expect("groups lock").values() {
            g.lower_due(at);
        }
    }

    /// Wakes as [`Waiters::wake`] does. With `absorb`, and one group of
    /// waiters, also returns how many of a count the group has parked
    /// waiters for (otherwise 0): each of those waiters looks after this
    /// commit (it is woken, or was woken already and looks again), so
    /// other processes need not be told; the group gets that many tickets.
    /// With several groups nothing is absorbed: a group whose filter
    /// excludes the work could stand for one that can take it.
    fn wake_absorbing(&self, wake: Wake, absorb: bool) -> u32 {
        self.wake_or_owe(wake, absorb, None)
    }

    /// As [`Waiters::wake_absorbing`]; with `owe_at`, waiters are not woken
    /// now: each group owes one look at that time instead (see
    /// [`Signals::committed`]).
    fn wake_or_owe(&self, wake: Wake, absorb: bool, owe_at: Option<Instant>) -> u32 {
        let groups: Vec<Arc<Group>> = self
            .groups
            .lock()
            .expect("groups lock")
            .values()
            .cloned()
            .collect();
        let absorbed = match (wake, groups.as_slice()) {
            (Wake::Count(n), [g]) if absorb => {
                // Counted before the epoch moves: a waiter that parks
                // later looks after the commit anyway (not quiet).
                n.min(u32::try_from(g.parked.load(Ordering::SeqCst)).unwrap_or(u32::MAX))
            }
            _ => 0,
        };
        for g in groups {
            let epoch = g.bump();
            if absorbed > 0 {
                let mut tickets = g.tickets.lock().expect("tickets lock");
                tickets.extend(std::iter::repeat_n(epoch, absorbed as usize));
            }
            if let Some(at) = owe_at {
                g.owe(at);
                continue;
            }
            match wake {
                Wake::All => g.notify.notify_waiters(),
                Wake::Count(n) => {
                    for _ in 0..n.min(MAX_COUNT) {
                        g.notify.notify_one();
                    }
                }
            }
        }
        absorbed
    }
}

/// Wake-up state shared by the listener task and the fetchers of one
/// provider.
#[derive(Debug, Default)]
pub(crate) struct Signals {
    orchestrator: Waiters,
    worker: Waiters,
    connected: AtomicBool,
    /// Wakes to send to other processes (a count, or [`ALL_COUNT`]), and
    /// the listener task's doorbell.
    outgoing_orchestrator: AtomicU64,
    outgoing_worker: AtomicU64,
    pub(crate) outgoing: Notify,
    /// Control messages for the listener task to send.
    say_hello: AtomicBool,
    say_here: AtomicBool,
    /// The other processes on the channel (`peers.rs`).
    pub(crate) peers: Peers,
    /// Off: every wake is announced to the other processes (none absorbed).
    absorb: bool,
}

/// What a committed call made ready, as its SQL function returned it (or,
/// when that reply was lost, as much as the call could have made ready):
/// the one input of [`Signals::committed`].
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Made {
    /// Instances that now have ready orchestrator messages, besides `own`.
    pub orchestrator: u32,
    /// The instance the call released (an ack's or abandon's) has ready
    /// messages: the dispatcher that called fetches next.
    pub own: bool,
    /// When the earliest delayed orchestrator message the call queued
    /// becomes visible.
    pub orchestrator_due: Option<Duration>,
    /// Worker items ready now.
    pub worker: u32,
    /// One of them (or an item made ready later, see `worker_due`) is bound
    /// to a session: only its owner may take it, so every worker looks.
    pub worker_for_sessions: bool,
    /// When a delayed worker item becomes visible.
    pub worker_due: Option<Duration>,
}

impl Made {
    /// From the millisecond columns the SQL functions return.
    pub(crate) fn due(ms: Option<i64>) -> Option<Duration> {
        in_ms(ms)
    }
}

impl Signals {
    /// Signals that absorb wakes locally where they can (see
    /// [`Signals::committed`]) if `absorb`.
    pub(crate) fn new(absorb: bool) -> Self {
        Self {
            absorb,
            ..Self::default()
        }
    }

    fn waiters(&self, queue: Queue) -> &Waiters {
        match queue {
            Queue::Orchestrator => &self.orchestrator,
            Queue::Worker => &self.worker,
        }
    }

    fn outgoing(&self, queue: Queue) -> &AtomicU64 {
        match queue {
            Queue::Orchestrator => &self.outgoing_orchestrator,
            Queue::Worker => &self.outgoing_worker,
        }
    }

    /// How many times the group of `queue`'s waiters with `filter_key` was
    /// woken (its epoch): while it is unchanged, nothing was committed for
    /// that group, so an answer read before is still the answer (the
    /// prefetch of `provider/prefetch.rs` relies on this as `poll` does).
    pub(crate) fn epoch(&self, queue: Queue, filter_key: &str) -> u64 {
        self.waiters(queue).group(filter_key).epoch()
    }

    /// Whether the LISTEN connection is up (notifications will arrive).
    pub(crate) fn connected(&self) -> bool {
        self.connected.load(Ordering::Acquire)
    }

    /// Called by the listener task when it (dis)connects.
    pub(crate) fn set_connected(&self, up: bool) {
        self.connected.store(up, Ordering::Release);
    }

    /// Wakes every waiter (the listener (re)connected: work may have been
    /// committed while nobody listened).
    pub(crate) fn wake_all(&self) {
        self.orchestrator.wake(Wake::All);
        self.worker.wake(Wake::All);
    }

    /// The one decision of who wakes, after this process committed a call
    /// that made `made` ready: this process's waiters now, other processes
    /// through the listener (or relay) task, unless `announced` (a client's
    /// enqueue told them in its own transaction) or nobody else listens
    /// (`peers.rs`).
    ///
    /// * **Orchestrator work** of other instances wakes as many waiters of
    ///   each group as instances became ready. Of that count, as many units
    ///   as the one group has parked waiters are taken on locally and not
    ///   announced (issue 10: each announced unit wakes a waiter in every
    ///   other process, and all but one find nothing). Each such wake leaves
    ///   a ticket; a fetch that looks after the commit and finds nothing it
    ///   may take announces one unit after all ([`Self::forward`],
    ///   [`settle_tickets`]), so a waiter elsewhere that could take the work
    ///   is still woken.
    /// * **The released instance's own messages** (they arrived during its
    ///   lease) are handed back: the dispatcher that acked fetches again
    ///   within microseconds, and waking a parked waiter only makes the two
    ///   race (issue 11). The group owes one look instead, which the next
    ///   fetch of the group takes on; if none has within [`HANDBACK_GRACE`]
    ///   (the dispatcher stopped), a parked waiter looks.
    /// * **Delayed work** lowers every group's due time; other processes
    ///   are told one unit, so that one of their waiters looks and learns
    ///   the time.
    /// * **Worker items** wake as many worker waiters, or every one when an
    ///   item is bound to a session. They are never absorbed: a worker fetch
    ///   cannot say whether more is ready, and its dispatcher may be away
    ///   for as long as an activity runs.
    pub(crate) fn committed(&self, made: Made, announced: bool) {
        let announce = |queue, add| {
            if !announced && add > 0 {
                self.announce(queue, add);
            }
        };
        let absorb = self.absorb;
        if made.orchestrator > 0 {
            let wake = Wake::Count(made.orchestrator);
            let absorbed = self.orchestrator.wake_absorbing(wake, absorb);
            announce(Queue::Orchestrator, u64::from(made.orchestrator - absorbed));
        }
        if made.own {
            let owe_at = Instant::now() + HANDBACK_GRACE;
            let absorbed = self
                .orchestrator
                .wake_or_owe(Wake::Count(1), absorb, Some(owe_at));
            announce(Queue::Orchestrator, u64::from(1 - absorbed));
        }
        if let Some(due) = made.orchestrator_due {
            self.orchestrator.lower_due(Instant::now() + due);
            announce(Queue::Orchestrator, 1);
        }
        if made.worker_for_sessions {
            self.worker.wake(Wake::All);
            announce(Queue::Worker, ALL_COUNT);
        } else if made.worker > 0 {
            self.worker.wake(Wake::Count(made.worker));
            announce(Queue::Worker, u64::from(made.worker));
        }
        if let Some(due) = made.worker_due {
            self.worker.lower_due(Instant::now() + due);
            announce(Queue::Worker, 1);
        }
    }

    /// The payload a client's enqueue sends in its own transaction for
    /// `wake` on `queue`, or `None` when no other process listens (then
    /// [`Self::committed`] wakes this process's waiters alone).
    pub(crate) fn announcement(&self, queue: Queue, wake: Wake) -> Option<String> {
        self.peers
            .may_exist(self.connected())
            .then(|| Message::Work(queue, wake).payload(self.peers.own()))
    }

    /// A fetch found nothing and discharged a ticket: tell the other
    /// processes about the one unit this process had taken on.
    fn forward(&self, queue: Queue) {
        self.announce(queue, 1);
    }

    /// Adds `add` wakes (or [`ALL_COUNT`]) for the listener task to send,
    /// unless no other process listens.
    fn announce(&self, queue: Queue, add: u64) {
        if !self.peers.may_exist(self.connected()) {
            return;
        }
        // Saturating: ALL_COUNT stays all.
        let _ = self
            .outgoing(queue)
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |v| {
                Some(v.saturating_add(add))
            });
        self.outgoing.notify_one();
    }

    /// A notification arrived on the channel (see `peers.rs`): ours are
    /// ignored, a `hello` is answered, work wakes waiters, and a body this
    /// build does not know wakes everyone.
    pub(crate) fn received(&self, payload: &str) {
        let (sender, message) = Message::parse(payload);
        if !self.peers.heard(sender) {
            return;
        }
        match message {
            Some(Message::Work(queue, wake)) => self.waiters(queue).wake(wake),
            Some(Message::Hello) => self.say(&self.say_here),
            Some(Message::Here) => {}
            None => self.wake_all(),
        }
    }

    /// Our listener is LISTENing: say `hello` (see `peers.rs`).
    pub(crate) fn hello(&self) {
        self.peers.said_hello();
        self.say(&self.say_hello);
    }

    /// The heartbeat: say `here`.
    pub(crate) fn here(&self) {
        self.say(&self.say_here);
    }

    fn say(&self, flag: &AtomicBool) {
        flag.store(true, Ordering::Release);
        self.outgoing.notify_one();
    }

    /// The NOTIFY statements for what is pending, if anything.
    pub(crate) fn take_outgoing(&self, channel: &str) -> Option<String> {
        let mut messages = Vec::new();
        for queue in [Queue::Orchestrator, Queue::Worker] {
            let n = self.outgoing(queue).swap(0, Ordering::AcqRel);
            if n == 0 {
                continue;
            }
            let wake = match u32::try_from(n) {
                Ok(n) if n < u32::MAX => Wake::Count(n),
                _ => Wake::All,
            };
            messages.push(Message::Work(queue, wake));
        }
        if self.say_hello.swap(false, Ordering::AcqRel) {
            messages.push(Message::Hello);
        }
        if self.say_here.swap(false, Ordering::AcqRel) {
            messages.push(Message::Here);
        }
        let own = self.peers.own();
        let statements: Vec<String> = messages
            .into_iter()
            .map(|m| {
                let payload = m.payload(own);
                format!("NOTIFY {channel}, '{payload}'")
            })
            .collect();
        (!statements.is_empty()).then(|| statements.join("; "))
    }
}

/// The outcome of one fetch attempt.
pub(crate) enum Polled<T> {
    Ready(T),
    /// Claimed, and nothing else was ready when the claim ran; like
    /// `Empty`, says when something may become claimable.
    ReadyLast {
        value: T,
        next_visible_in: Option<Duration>,
    },
    Empty {
        next_visible_in: Option<Duration>,
    },
    /// Ready work exists that this fetch's filter excluded, and only the
    /// caller can change the filter (the runtime fetches without a session
    /// while its session capacity is full): return now instead of waiting.
    Skipped,
}

impl<T> Polled<T> {
    pub(crate) fn empty(next_visible_in_ms: Option<i64>) -> Self {
        Polled::Empty {
            next_visible_in: in_ms(next_visible_in_ms),
        }
    }

    pub(crate) fn ready_last(value: T, next_visible_in_ms: Option<i64>) -> Self {
        Polled::ReadyLast {
            value,
            next_visible_in: in_ms(next_visible_in_ms),
        }
    }
}

fn in_ms(ms: Option<i64>) -> Option<Duration> {
    ms.map(|ms| Duration::from_millis(ms.max(0) as u64))
}

/// How a fetch waits: its queue, its filter and its limits.
pub(crate) struct WaitSpec<'a> {
    pub queue: Queue,
    /// Fetches with equal keys may take the same work, unless their
    /// `fetcher_key`s differ only in what only that fetcher may take (a
    /// session owner's own sessions): wakes go to groups of equal
    /// `filter_key`, "nothing new" is remembered per `fetcher_key`.
    pub filter_key: &'a str,
    /// `filter_key` plus whatever else changes what a fetch may take.
    pub fetcher_key: &'a str,
    pub poll_timeout: Duration,
    /// Off: one attempt, no waiting.
    pub long_poll: bool,
    /// How often to re-check while the listener is disconnected.
    pub recheck: Duration,
    /// No listener: look again with a backoff (module docs) instead.
    pub backoff: bool,
    /// Called when a commit or notification wakes this fetch (a metric).
    pub on_wake: &'a (dyn Fn() + Sync),
    /// Called with 1 when this fetch starts waiting and -1 when it stops
    /// (a gauge of waiting fetches).
    pub on_park: &'a (dyn Fn(f64) + Sync),
}

/// Runs `attempt` until it yields something or the poll timeout runs out,
/// waiting between attempts as the module docs describe. Dropping the
/// future at any await point leaves nothing behind.
pub(crate) async fn poll<T, F, Fut>(
    signals: &Signals,
    spec: WaitSpec<'_>,
    mut attempt: F,
) -> Result<Option<T>, ProviderError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<Polled<T>, ProviderError>>,
{
    let group = signals.waiters(spec.queue).group(spec.filter_key);
    let deadline = deadline_after(spec.poll_timeout);
    let mut took_due = false;
    // Nothing was committed since a fetch of this group last found nothing:
    // wait first. A fetch that never looked looks once at its deadline.
    let may_skip = || spec.long_poll && !spec.poll_timeout.is_zero() && signals.connected();
    let mut skip = may_skip();
    let mut looked = false;
    loop {
        let notified = group.notify.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        let epoch = group.epoch();
        // Checked after `notified` is enabled: a commit from here on wakes
        // this waiter again.
        let polled = if std::mem::take(&mut skip) && group.quiet(spec.fetcher_key) {
            Polled::Empty {
                next_visible_in: None,
            }
        } else {
            looked = true;
            look(signals, &group, spec.queue, epoch, &mut attempt).await?
        };
        match polled {
            Polled::ReadyLast {
                value,
                next_visible_in,
            } => {
                group.mark_quiet(spec.fetcher_key, epoch);
                if let Some(d) = next_visible_in {
                    group.lower_due(Instant::now() + d);
                }
                if spec.backoff {
                    group.reset_backoff();
                }
                return Ok(Some(value));
            }
            Polled::Ready(value) => {
                if spec.backoff {
                    group.reset_backoff();
                }
                if took_due {
                    // More may have fallen due at the same time.
                    group.notify.notify_one();
                }
                return Ok(Some(value));
            }
            Polled::Skipped => return Ok(None),
            Polled::Empty { next_visible_in } => {
                if looked {
                    group.mark_quiet(spec.fetcher_key, epoch);
                }
                if let Some(d) = next_visible_in {
                    group.lower_due(Instant::now() + d);
                }
            }
        }
        if !spec.long_poll || Instant::now() >= deadline {
            return last_look(signals, &group, spec.queue, looked, &mut attempt).await;
        }
        took_due = false;
        let look_at = spec.backoff.then(|| Instant::now() + group.next_backoff());
        // Counted while parked below with the wake registered (`notified`
        // was enabled before this attempt): a `notify_one` then reaches it.
        let _parked = Parked::new(&group.parked, spec.on_park);
        loop {
            let changed = group.due_changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            let mut wake = deadline;
            if let Some(due) = group.due() {
                wake = wake.min(due);
            }
            if let Some(owed) = group.owed() {
                wake = wake.min(owed);
            }
            if let Some(at) = look_at {
                wake = wake.min(at);
            }
            let disconnected = !spec.backoff && !signals.connected();
            if disconnected {
                wake = wake.min(Instant::now() + spec.recheck);
            }
            tokio::select! {
                _ = &mut notified => {
                    (spec.on_wake)();
                    // A fetch of this group that started after the commit
                    // that woke us may already have claimed its work and
                    // seen nothing else ready (the dispatcher back from a
                    // turn looks at once): then looking finds nothing.
                    skip = may_skip();
                    break;
                }
                _ = &mut changed => continue,
                _ = tokio::time::sleep_until(wake.into()) => {
                    if Instant::now() >= deadline {
                        return last_look(signals, &group, spec.queue, looked, &mut attempt).await;
                    }
                    if group.take_due() {
                        took_due = true;
                        break;
                    }
                    if group.take_owed() {
                        break;
                    }
                    if disconnected || look_at.is_some_and(|at| Instant::now() >= at) {
                        break;
                    }
                }
            }
        }
    }
}

/// The end of a poll: nothing, unless this fetch never looked (it waited
/// on "nothing new"), which then looks once: "nothing" is never reported
/// without a look.
async fn last_look<T, F, Fut>(
    signals: &Signals,
    group: &Group,
    queue: Queue,
    looked: bool,
    attempt: &mut F,
) -> Result<Option<T>, ProviderError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<Polled<T>, ProviderError>>,
{
    if looked {
        return Ok(None);
    }
    Ok(
        match look(signals, group, queue, group.epoch(), attempt).await? {
            Polled::Ready(value) | Polled::ReadyLast { value, .. } => Some(value),
            Polled::Empty { .. } | Polled::Skipped => None,
        },
    )
}

/// One attempt of a fetch that started at `epoch`. It takes on the look
/// the group owes to handed-back work ([`Signals::committed`]), if any:
/// it looks, so no waiter needs to; should it not complete (an error, or
/// its future dropped), the look is owed again at once.
async fn look<T, F, Fut>(
    signals: &Signals,
    group: &Group,
    queue: Queue,
    epoch: u64,
    attempt: &mut F,
) -> Result<Polled<T>, ProviderError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<Polled<T>, ProviderError>>,
{
    let mut owed = OwedLook {
        group,
        taken: group.take_owed_now(),
    };
    let polled = attempt().await?;
    owed.taken = false;
    settle_tickets(signals, group, queue, epoch, &polled);
    Ok(polled)
}

/// A handed-back look a fetch took on; owed again if dropped while taken.
struct OwedLook<'a> {
    group: &'a Group,
    taken: bool,
}

impl Drop for OwedLook<'_> {
    fn drop(&mut self) {
        if self.taken {
            self.group.owe(Instant::now());
        }
    }
}

/// What an attempt that started at `epoch` did for the tickets of its
/// group (wakes this process took on instead of announcing them; see
/// [`Signals::committed`]). It saw every commit up to `epoch`, so:
///
/// * it claimed the only ready instance (`ReadyLast`: no other instance has
///   a ready message, leased or not): every ticket up to `epoch` is settled;
/// * it found nothing it may take (`Empty`, `Skipped`): the work of those
///   tickets was taken, or this group's filter excludes it; they are
///   settled and one wake goes to the other processes after all (a waiter
///   there that takes such work and sees more ready comes back for it);
/// * it claimed an instance while others have ready messages (`Ready`):
///   nothing is settled. The group cannot be quiet while a ticket is left
///   (only an attempt that started at the current epoch and found nothing
///   or the only ready instance marks it quiet, and that attempt settles
///   every ticket), so the fetch's dispatcher, back within a turn, looks
///   again.
fn settle_tickets<T>(
    signals: &Signals,
    group: &Group,
    queue: Queue,
    epoch: u64,
    polled: &Polled<T>,
) {
    match polled {
        Polled::ReadyLast { .. } => {
            group.discharge_tickets(epoch);
        }
        Polled::Empty { .. } | Polled::Skipped => {
            if group.discharge_tickets(epoch) > 0 {
                signals.forward(queue);
            }
        }
        Polled::Ready(_) => {}
    }
}

/// Counts a parked waiter for as long as it lives (also when the waiting
/// future is dropped), in its group and in the waiting-fetches gauge.
struct Parked<'a> {
    count: &'a AtomicUsize,
    gauge: &'a (dyn Fn(f64) + Sync),
}

impl<'a> Parked<'a> {
    fn new(count: &'a AtomicUsize, gauge: &'a (dyn Fn(f64) + Sync)) -> Self {
        count.fetch_add(1, Ordering::SeqCst);
        gauge(1.0);
        Parked { count, gauge }
    }
}

impl Drop for Parked<'_> {
    fn drop(&mut self) {
        self.count.fetch_sub(1, Ordering::SeqCst);
        (self.gauge)(-1.0);
    }
}

/// `Instant::now() + d`, saturating (a caller may pass `Duration::MAX`).
pub(crate) fn deadline_after(d: Duration) -> Instant {
    let now = Instant::now();
    now.checked_add(d)
        .unwrap_or_else(|| now + Duration::from_secs(100 * 365 * 24 * 3600))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn orchestrator(n: u32) -> Made {
        Made {
            orchestrator: n,
            ..Made::default()
        }
    }

    /// Signals whose peers may exist (no listener: nobody is ruled out).
    fn with_peers() -> Signals {
        Signals::default()
    }

    /// What `take_outgoing("ch")` returns for messages with these bodies.
    fn notifies(s: &Signals, bodies: &[&str]) -> Option<String> {
        let own = s.peers.own();
        let statements: Vec<String> = bodies
            .iter()
            .map(|body| ["NOTIFY ch, '", body, "@", own, "'"].concat())
            .collect();
        Some(statements.join("; "))
    }

    #[test]
    fn outgoing_counts_add_up_and_all_wins() {
        let s = with_peers();
        s.committed(orchestrator(2), false);
        s.committed(orchestrator(3), false);
        s.committed(
            Made {
                worker: 1,
                ..Made::default()
            },
            false,
        );
        s.committed(
            Made {
                worker: 1,
                worker_for_sessions: true,
                ..Made::default()
            },
            false,
        );
        assert_eq!(s.take_outgoing("ch"), notifies(&s, &["o:5", "w:*"]));
        assert_eq!(s.take_outgoing("ch"), None);
        s.committed(orchestrator(1), true);
        assert_eq!(s.take_outgoing("ch"), None, "announced by the call itself");
    }

    #[test]
    fn alone_nothing_is_announced_but_hello_and_here() {
        let s = with_peers();
        s.set_connected(true);
        s.committed(orchestrator(2), false);
        assert_eq!(s.announcement(Queue::Orchestrator, Wake::Count(1)), None);
        assert_eq!(s.take_outgoing("ch"), None, "nobody else listens");
        s.here();
        assert_eq!(s.take_outgoing("ch"), notifies(&s, &["here"]));
        s.received(&Message::Hello.payload("peer"));
        assert_eq!(
            s.take_outgoing("ch"),
            notifies(&s, &["here"]),
            "a hello is answered"
        );
        s.committed(orchestrator(2), false);
        assert_eq!(
            s.take_outgoing("ch"),
            notifies(&s, &["o:2"]),
            "a peer was heard"
        );
        assert!(s
            .announcement(Queue::Orchestrator, Wake::Count(1))
            .is_some());
    }

    #[test]
    fn own_notifications_are_ignored() {
        let s = with_peers();
        let a = s.waiters(Queue::Orchestrator).group("a");
        let mut f = Box::pin(a.notify.notified());
        f.as_mut().enable();
        let own = s.peers.own().to_string();
        s.received(&Message::Work(Queue::Orchestrator, Wake::All).payload(&own));
        assert!(!futures_ready(f.as_mut()), "our own payload wakes nobody");
        s.received(&Message::Work(Queue::Orchestrator, Wake::All).payload("other"));
        assert!(futures_ready(f.as_mut()));
    }

    #[tokio::test]
    async fn a_count_wakes_that_many_waiters_of_each_group() {
        let s = Arc::new(Signals::default());
        let a = s.waiters(Queue::Orchestrator).group("a");
        let b = s.waiters(Queue::Orchestrator).group("b");
        let mut futures = Vec::new();
        for g in [&a, &a, &a, &b] {
            let mut f = Box::pin(g.notify.notified());
            f.as_mut().enable();
            futures.push(f);
        }
        s.committed(orchestrator(2), false);
        let woken: Vec<bool> = futures
            .iter_mut()
            .map(|f| futures_ready(f.as_mut()))
            .collect();
        // Two of group a's three waiters, and group b's one.
        assert_eq!(woken.iter().filter(|w| **w).count(), 3);
        assert!(woken[3]);
    }

    /// Without a listener an idle fetch looks again, ever less often, and
    /// starts over once a fetch of its group finds work.
    #[tokio::test]
    async fn without_a_listener_a_fetch_looks_again_with_a_backoff() {
        let s = Signals::default();
        let spec = |poll_timeout| WaitSpec {
            queue: Queue::Worker,
            filter_key: "k",
            fetcher_key: "k",
            poll_timeout,
            long_poll: true,
            recheck: Duration::from_secs(3600),
            backoff: true,
            on_wake: &|| {},
            on_park: &|_| {},
        };
        let looks = AtomicU64::new(0);
        let empty = || async {
            looks.fetch_add(1, Ordering::Relaxed);
            Ok(Polled::<()>::empty(None))
        };
        // Looks at 0, 10, 30, 70 and 150 ms (fewer on a slow machine).
        let got = poll(&s, spec(Duration::from_millis(200)), empty).await;
        assert!(matches!(got, Ok(None)));
        let first = looks.swap(0, Ordering::Relaxed);
        assert!((2..=5).contains(&first), "{first} looks in 200 ms");
        // The interval carries over: 160 ms, then 320 ms.
        let got = poll(&s, spec(Duration::from_millis(200)), empty).await;
        assert!(matches!(got, Ok(None)));
        let second = looks.swap(0, Ordering::Relaxed);
        assert!(
            (1..=2).contains(&second),
            "{second} looks in the next 200 ms"
        );
        // Work found: back to the shortest interval.
        let group = s.waiters(Queue::Worker).group("k");
        assert!(group.next_backoff() > BACKOFF_MIN * 16);
        let got = poll(&s, spec(Duration::from_millis(200)), || async {
            Ok(Polled::Ready(7))
        })
        .await;
        assert_eq!(got.ok().flatten(), Some(7));
        assert_eq!(group.next_backoff(), BACKOFF_MIN);
    }

    fn futures_ready(f: std::pin::Pin<&mut tokio::sync::futures::Notified<'_>>) -> bool {
        let waker = std::task::Waker::noop();
        let mut cx = std::task::Context::from_waker(waker);
        std::future::Future::poll(f, &mut cx).is_ready()
    }
}
