//! The retention maintenance task and one-off purges:
//! `sql/functions/retention.sql`.
//!
//! One process per schema runs retention at a time: each pass first takes
//! the `retention` lease (database clock) and gives it back at its end; a
//! process that dies mid-pass stops renewing and another takes over once the
//! lease ran out. Each batch is one short transaction; the batch size adapts
//! to keep it near [`TARGET_BATCH`], and the task pauses after each batch in
//! proportion to its duration so a running workload keeps its latency.

use super::functions::{self as sql, SqlFn};
use super::rows::{count, get};
use super::{call_retrying, check_arity, first_row, Call, Db, PostgresProvider};
use crate::function_set::FunctionSet;
use crate::retention::{PurgeProgress, PurgeRequest, RetentionPolicy, TerminalStatus};
use duroxide::providers::ProviderError;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::task::JoinHandle;
use tokio_postgres::types::ToSql;
use tokio_postgres::Row;

/// The lease row's task name.
const TASK: &str = "retention";
/// Batch duration the adaptive batch size of the background task aims at
/// (well under the 100 ms a maintenance transaction may take).
const TARGET_BATCH: Duration = Duration::from_millis(50);
/// Batch duration a one-off purge aims at: four times fewer commits than
/// the background task for the same work (the bench's purge under load
/// spent much of its time in ~50 ms batches' commits and fixed costs), and
/// still far from the 1 s a purge transaction may take.
const PURGE_TARGET_BATCH: Duration = Duration::from_millis(200);
const MIN_BATCH: u32 = 10;

/// Calls the store's maintenance SQL functions (through their descriptors,
/// like the provider's own calls) without holding the provider, so the
/// background task ends when the provider is dropped.
#[derive(Clone)]
pub(crate) struct Runner {
    db: Db,
    quoted: String,
    functions: Arc<FunctionSet>,
    retry_budget: Duration,
}

/// Aborts the background task when the provider is dropped.
pub(crate) struct MaintenanceHandle(JoinHandle<()>);

impl Drop for MaintenanceHandle {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// A lease owner id unique to this process and call.
fn owner_id(role: &str) -> String {
    use std::hash::{BuildHasher, Hasher};
    use std::sync::atomic::{AtomicU64, Ordering};
    // Randomly keyed hash of a per-process counter: unique, no clock read.
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(NEXT.fetch_add(1, Ordering::Relaxed));
    format!("{role}:pid{}:{:016x}", std::process::id(), h.finish())
}

fn ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// The next batch size: double while batches are quick, halve when slow
/// (relative to `target`).
fn adapt(size: u32, took: Duration, max: u32, target: Duration) -> u32 {
    if took < target / 2 {
        size.saturating_mul(2).min(max)
    } else if took > target * 2 {
        (size / 2).max(MIN_BATCH.min(max))
    } else {
        size
    }
}

impl Runner {
    /// A runner calling `provider`'s function set on its pool.
    pub(crate) fn of(provider: &PostgresProvider) -> Self {
        Self {
            db: provider.db.clone(),
            quoted: provider.quoted.clone(),
            functions: provider.functions.clone(),
            retry_budget: provider.retry_budget,
        }
    }

    /// Calls `f`, retried per its class (as `PostgresProvider::call`).
    async fn call(
        &self,
        op: &str,
        f: &SqlFn,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Vec<Row>, ProviderError> {
        check_arity(op, f, params.len())?;
        let call = Call::new(&self.quoted, &self.functions, f);
        call_retrying(&self.db, &call, f, self.retry_budget, op, params).await
    }

    async fn one(
        &self,
        op: &str,
        f: &SqlFn,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Row, ProviderError> {
        first_row(op, f, self.call(op, f, params).await?)
    }

    async fn now_ms(&self) -> Result<i64, ProviderError> {
        const OP: &str = "now_ms";
        get(OP, &self.one(OP, &sql::NOW_MS, &[]).await?, 0)
    }

    /// Takes or renews the lease; `Err(holder, remaining)` when another
    /// process holds it.
    async fn acquire(
        &self,
        owner: &str,
        lease: Duration,
    ) -> Result<Result<(), (String, i64)>, ProviderError> {
        const OP: &str = "maintenance_acquire";
        let row = self
            .one(OP, &sql::MAINTENANCE_ACQUIRE, &[&TASK, &owner, &ms(lease)])
            .await?;
        if get::<bool, _>(OP, &row, "acquired")? {
            Ok(Ok(()))
        } else {
            Ok(Err((
                get(OP, &row, "holder")?,
                get(OP, &row, "remaining_ms")?,
            )))
        }
    }

    async fn release(&self, owner: &str) -> Result<(), ProviderError> {
        const OP: &str = "maintenance_release";
        self.call(OP, &sql::MAINTENANCE_RELEASE, &[&TASK, &owner])
            .await?;
        Ok(())
    }

    /// Purges everything `statuses` completed before `cutoff_ms`, batch by
    /// batch (sized to take about `target` each), renewing the lease as it goes (not in a dry run, which needs
    /// no lease). Calls `progress` after each batch.
    #[allow(clippy::too_many_arguments)]
    async fn purge_pass(
        &self,
        owner: &str,
        lease: Duration,
        cutoff_ms: i64,
        statuses: &[TerminalStatus],
        max_batch: u32,
        target: Duration,
        throttle: f64,
        dry_run: bool,
        progress: &mut (dyn FnMut(&PurgeProgress) + Send),
    ) -> Result<PurgeProgress, ProviderError> {
        const OP: &str = "retention_purge_batch";
        let statuses: Vec<&str> = statuses.iter().map(|s| s.as_str()).collect();
        let mut total = PurgeProgress::default();
        let (mut after_ms, mut after_id) = (i64::MIN, String::new());
        let mut size = max_batch.clamp(1, 50).max(MIN_BATCH.min(max_batch));
        let mut renewed = Instant::now();
        loop {
            if !dry_run && renewed.elapsed() > lease / 3 {
                if let Err((holder, _)) = self.acquire(owner, lease).await? {
                    return Err(ProviderError::permanent(
                        "purge",
                        format!("the retention lease was taken over by {holder}"),
                    ));
                }
                renewed = Instant::now();
            }
            let limit = size as i32;
            let started = Instant::now();
            let row = self
                .one(
                    OP,
                    &sql::RETENTION_PURGE_BATCH,
                    &[
                        &owner, &cutoff_ms, &statuses, &limit, &after_ms, &after_id, &dry_run,
                    ],
                )
                .await?;
            let took = started.elapsed();
            let seen = count(OP, &row, "roots_seen")?;
            total.batches += 1;
            total.roots_seen += seen;
            total.roots_deleted += count(OP, &row, "roots_deleted")?;
            total.instances_deleted += count(OP, &row, "instances")?;
            total.executions_deleted += count(OP, &row, "executions")?;
            total.events_deleted += count(OP, &row, "events")?;
            total.queue_messages_deleted += count(OP, &row, "queue_messages")?;
            total.longest_batch_ms = total.longest_batch_ms.max(took.as_millis() as u64);
            progress(&total);
            if seen < u64::from(size) {
                return Ok(total);
            }
            after_ms = get(OP, &row, "cursor_completed_ms")?;
            after_id = get(OP, &row, "cursor_id")?;
            size = adapt(size, took, max_batch, target);
            if throttle > 0.0 {
                tokio::time::sleep(took.mul_f64(throttle)).await;
            }
        }
    }

    /// Prunes continue-as-new chains to their last `keep_last` executions.
    async fn prune_pass(
        &self,
        owner: &str,
        keep_last: u32,
        max_batch: u32,
        throttle: f64,
    ) -> Result<u64, ProviderError> {
        const OP: &str = "retention_prune_batch";
        let keep = i64::from(keep_last);
        let mut after_id = String::new();
        let mut size = max_batch.clamp(1, 50);
        let mut deleted = 0;
        loop {
            let limit = size as i32;
            let started = Instant::now();
            let row = self
                .one(
                    OP,
                    &sql::RETENTION_PRUNE_BATCH,
                    &[&owner, &keep, &limit, &after_id],
                )
                .await?;
            let took = started.elapsed();
            deleted += count(OP, &row, "executions_deleted")?;
            if count(OP, &row, "instances_seen")? < u64::from(size) {
                return Ok(deleted);
            }
            after_id = get(OP, &row, "cursor_id")?;
            size = adapt(size, took, max_batch, TARGET_BATCH);
            if throttle > 0.0 {
                tokio::time::sleep(took.mul_f64(throttle)).await;
            }
        }
    }

    /// One retention pass if this process gets the lease; `Ok(false)` if
    /// another process holds it.
    async fn retention_pass(
        &self,
        owner: &str,
        policy: &RetentionPolicy,
    ) -> Result<bool, ProviderError> {
        if self.acquire(owner, policy.lease).await?.is_err() {
            return Ok(false);
        }
        let result = async {
            if let Some(age) = policy.delete_after {
                let cutoff = self.now_ms().await?.saturating_sub(ms(age));
                let done = self
                    .purge_pass(
                        owner,
                        policy.lease,
                        cutoff,
                        &policy.statuses,
                        policy.batch_size,
                        TARGET_BATCH,
                        policy.throttle,
                        false,
                        &mut |_| {},
                    )
                    .await?;
                if done.roots_deleted > 0 {
                    tracing::info!(target: "duroxide_postgres", roots = done.roots_deleted,
                        instances = done.instances_deleted, batches = done.batches,
                        "retention deleted finished instance trees");
                }
            }
            if let Some(keep) = policy.keep_last_executions {
                if self.acquire(owner, policy.lease).await?.is_err() {
                    return Ok(());
                }
                let pruned = self
                    .prune_pass(owner, keep, policy.batch_size, policy.throttle)
                    .await?;
                if pruned > 0 {
                    tracing::info!(target: "duroxide_postgres", executions = pruned,
                        "retention pruned continue-as-new executions");
                }
            }
            Ok::<(), ProviderError>(())
        }
        .await;
        // Give the lease back so that a one-off purge (or another process)
        // need not wait for it to run out.
        let released = self.release(owner).await;
        result?;
        released?;
        Ok(true)
    }
}

/// Starts the background retention task of a provider.
pub(crate) fn spawn(runner: Runner, policy: RetentionPolicy) -> Option<MaintenanceHandle> {
    if !policy.is_active() {
        return None;
    }
    let owner = owner_id("maintenance");
    Some(MaintenanceHandle(tokio::spawn(async move {
        loop {
            match runner.retention_pass(&owner, &policy).await {
                Ok(ran) => {
                    tracing::debug!(target: "duroxide_postgres", ran, "retention pass")
                }
                Err(e) => {
                    tracing::warn!(target: "duroxide_postgres", error = %e, "retention pass failed")
                }
            }
            tokio::time::sleep(policy.interval).await;
        }
    })))
}

impl PostgresProvider {
    /// Deletes, once, every root instance tree that completed (or failed)
    /// more than `request.older_than` ago, as the retention task would: in
    /// short batches, whole terminal trees only, never waiting for a turn.
    /// Takes the retention lease for its duration (waiting up to a minute
    /// while another process holds it). A dry run only counts. `progress`
    /// is called after each batch.
    pub async fn purge(
        &self,
        request: &PurgeRequest,
        mut progress: impl FnMut(&PurgeProgress) + Send,
    ) -> Result<PurgeProgress, ProviderError> {
        let runner = Runner::of(self);
        let owner = owner_id("purge");
        let lease = Duration::from_secs(30);
        if !request.dry_run {
            let deadline = Instant::now() + Duration::from_secs(60);
            loop {
                match runner.acquire(&owner, lease).await? {
                    Ok(()) => break,
                    Err((holder, remaining)) if Instant::now() < deadline => {
                        tracing::info!(target: "duroxide_postgres", holder, remaining_ms = remaining,
                            "waiting for the retention lease");
                        tokio::time::sleep(Duration::from_millis(500)).await;
                    }
                    Err((holder, remaining)) => {
                        return Err(ProviderError::permanent(
                            "purge",
                            format!(
                                "another process ({holder}) is running retention (lease for \
                                 {remaining} ms more); try again later"
                            ),
                        ))
                    }
                }
            }
        }
        let cutoff = runner
            .now_ms()
            .await?
            .saturating_sub(ms(request.older_than));
        let result = runner
            .purge_pass(
                &owner,
                lease,
                cutoff,
                &request.statuses,
                request.batch_size.max(1),
                PURGE_TARGET_BATCH,
                request.throttle,
                request.dry_run,
                &mut progress,
            )
            .await;
        if !request.dry_run {
            runner.release(&owner).await?;
        }
        result
    }
}
