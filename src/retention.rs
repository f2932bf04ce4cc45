//! Retention settings: what the maintenance task deletes, and how gently.
//!
//! See [`RetentionPolicy`]; the task itself is in `provider/maintenance.rs`
//! and the SQL in `sql/functions/retention.sql`.

use std::time::Duration;

/// A terminal instance status retention may delete.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TerminalStatus {
    /// The orchestration completed.
    Completed,
    /// The orchestration failed.
    Failed,
}

impl TerminalStatus {
    /// Both terminal statuses.
    pub const ALL: [TerminalStatus; 2] = [TerminalStatus::Completed, TerminalStatus::Failed];

    /// The status as stored (and as duroxide names it).
    pub fn as_str(self) -> &'static str {
        match self {
            TerminalStatus::Completed => "Completed",
            TerminalStatus::Failed => "Failed",
        }
    }

    /// Parses `completed` / `failed` (any case).
    pub fn parse(s: &str) -> Option<TerminalStatus> {
        match s.to_ascii_lowercase().as_str() {
            "completed" => Some(TerminalStatus::Completed),
            "failed" => Some(TerminalStatus::Failed),
            _ => None,
        }
    }
}

/// Retention run by a maintenance task in the background (off unless set in
/// [`PostgresOptions::retention`](crate::PostgresOptions::retention)).
///
/// Exactly one process per schema runs it at a time (a lease row on the
/// database clock, taken over when its holder stops renewing it). It deletes
/// whole terminal root instance trees a given time after completion, and/or
/// prunes continue-as-new chains to their last executions, in small
/// transactions that never wait for a turn, pausing between batches.
///
/// ```
/// use duroxide_postgres::{PostgresOptions, RetentionPolicy};
/// use std::time::Duration;
///
/// // One line: delete finished instance trees 30 days after completion.
/// let options = PostgresOptions::new()
///     .retention(RetentionPolicy::delete_after(Duration::from_secs(30 * 86_400)));
/// # let _ = options;
/// ```
#[derive(Debug, Clone)]
pub struct RetentionPolicy {
    pub(crate) delete_after: Option<Duration>,
    pub(crate) statuses: Vec<TerminalStatus>,
    pub(crate) keep_last_executions: Option<u32>,
    pub(crate) batch_size: u32,
    pub(crate) throttle: f64,
    pub(crate) interval: Duration,
    pub(crate) lease: Duration,
}

impl Default for RetentionPolicy {
    fn default() -> Self {
        Self {
            delete_after: None,
            statuses: TerminalStatus::ALL.to_vec(),
            keep_last_executions: None,
            batch_size: 500,
            throttle: 1.0,
            interval: Duration::from_secs(60),
            lease: Duration::from_secs(30),
        }
    }
}

impl RetentionPolicy {
    /// Delete root instances (with their sub-orchestrations) that completed
    /// or failed more than `age` ago. Trees with a member still running are
    /// kept.
    pub fn delete_after(age: Duration) -> Self {
        Self {
            delete_after: Some(age),
            ..Self::default()
        }
    }

    /// Keep only the last `n` executions (at least 1, the current one) of
    /// continue-as-new chains; may be combined with
    /// [`delete_after`](Self::delete_after).
    pub fn keep_last_executions(mut self, n: u32) -> Self {
        self.keep_last_executions = Some(n.max(1));
        self
    }

    /// Only delete instances with these statuses (default both).
    pub fn statuses(mut self, statuses: &[TerminalStatus]) -> Self {
        self.statuses = statuses.to_vec();
        self
    }

    /// Upper bound of root trees per transaction (default 500; the task
    /// adapts below it to keep each transaction near 50 ms).
    pub fn batch_size(mut self, n: u32) -> Self {
        self.batch_size = n.max(1);
        self
    }

    /// Pause after each batch, as a multiple of the batch's duration
    /// (default 1.0: the task uses at most half of one connection's time).
    pub fn throttle(mut self, factor: f64) -> Self {
        self.throttle = if factor.is_finite() {
            factor.max(0.0)
        } else {
            1.0
        };
        self
    }

    /// Time between passes over the store (default 60 s).
    pub fn interval(mut self, interval: Duration) -> Self {
        self.interval = interval;
        self
    }

    /// Length of the maintenance lease (default 30 s): how long after its
    /// holder died another process takes the task over.
    pub fn lease_duration(mut self, lease: Duration) -> Self {
        self.lease = lease.max(Duration::from_millis(100));
        self
    }

    pub(crate) fn is_active(&self) -> bool {
        self.delete_after.is_some() || self.keep_last_executions.is_some()
    }
}

/// A one-off purge ([`PostgresProvider::purge`](crate::PostgresProvider::purge),
/// `duroxide-postgres purge`).
#[derive(Debug, Clone)]
pub struct PurgeRequest {
    /// Delete trees whose root completed more than this long ago.
    pub older_than: Duration,
    /// Root statuses to delete.
    pub statuses: Vec<TerminalStatus>,
    /// Count what would go; delete nothing.
    pub dry_run: bool,
    /// Upper bound of root trees per transaction.
    pub batch_size: u32,
    /// Pause after each batch as a multiple of its duration.
    pub throttle: f64,
}

impl PurgeRequest {
    /// Completed and failed trees older than `older_than`, batches of up to
    /// 2,000 roots (sized to take about 200 ms each), no pause between
    /// batches.
    pub fn older_than(older_than: Duration) -> Self {
        Self {
            older_than,
            statuses: TerminalStatus::ALL.to_vec(),
            dry_run: false,
            batch_size: 2000,
            throttle: 0.0,
        }
    }
}

/// Running totals of a purge or a retention pass.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PurgeProgress {
    /// Batches (transactions) run.
    pub batches: u64,
    /// Root instances looked at.
    pub roots_seen: u64,
    /// Root trees deleted (dry run: that would be deleted).
    pub roots_deleted: u64,
    /// Instances deleted, sub-orchestrations included (dry run: that would be).
    pub instances_deleted: u64,
    /// Executions deleted.
    pub executions_deleted: u64,
    /// History events deleted.
    pub events_deleted: u64,
    /// Queue messages deleted.
    pub queue_messages_deleted: u64,
    /// Longest batch, in milliseconds.
    pub longest_batch_ms: u64,
}
