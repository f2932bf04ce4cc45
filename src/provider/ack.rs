//! Acks whose outcome is uncertain.
//!
//! An ack that fails with a retryable error (typically its connection broke)
//! may have failed before or after its commit. Retrying blindly is wrong both
//! ways: a second ack of a committed turn fails with "invalid lock token",
//! which the runtime treats as permanent (for an orchestration turn it then
//! fails the orchestration), and giving up re-runs work that was done. So
//! before each retry the provider asks the database what became of the lease
//! (`ack_outcome`, `work_ack_outcome`):
//!
//! * `done`: the work was committed (or, for a worker item, the item is no
//!   longer this worker's to complete): report success.
//! * `held`: the lease is still live and nothing was committed: retry.
//! * `lost`: not committed and the lease has expired: a permanent error.

use super::functions::SqlFn;
use super::rows::get;
use super::PostgresProvider;
use crate::telemetry::AckOutcome;
use crate::wakeups::Queue;
use duroxide::providers::ProviderError;
use std::time::Duration;
use tokio_postgres::types::ToSql;
use tokio_postgres::Row;

/// Resolution is retried for about 5 s (0.05 + 0.1 + ... capped at 1 s per
/// wait): long enough to ride out a dropped connection or a fast database
/// restart, within the default 5 s orchestration lease.
const ATTEMPTS: u32 = 9;
const FIRST_DELAY: Duration = Duration::from_millis(50);
const MAX_DELAY: Duration = Duration::from_secs(1);

/// Our SQLSTATEs for a token that names no live lease.
fn is_lock_error(state: Option<&str>) -> bool {
    matches!(state, Some("DX001" | "DX002"))
}

/// The boolean an ack function returns (whether it left work ready), from
/// [`PostgresProvider::ack_resolving`]'s row; `true` when unknown (an
/// earlier attempt committed), so that nobody misses a wake.
pub(super) fn ready_or_unknown(op: &str, row: &Option<Row>) -> Result<bool, ProviderError> {
    match row {
        None => Ok(true),
        Some(r) => get::<bool, _>(op, r, 0),
    }
}

impl PostgresProvider {
    /// Calls the ack function `ack` with `params`, resolving a retryable
    /// failure through the outcome function `outcome` (see the module docs).
    /// Returns the ack's result row, or `None` when an earlier attempt turned
    /// out to have committed.
    /// A retry that finds its lease gone (the first attempt may still have
    /// been running on the server) is resolved the same way. Any other error
    /// is returned as it is.
    pub(super) async fn ack_resolving(
        &self,
        op: &'static str,
        queue: Queue,
        ack: &SqlFn,
        outcome: &SqlFn,
        token: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Option<Row>, ProviderError> {
        let error = match self.call(op, ack, params).await {
            Ok(rows) => return Ok(rows.into_iter().next()),
            Err(e) if !e.is_retryable() => return Err(e),
            Err(e) => e,
        };
        let (result, outcome) = self.resolve(op, ack, outcome, token, params, error).await;
        self.db.target.ack_resolved(queue, outcome);
        result
    }

    /// The resolution loop of [`ack_resolving`](Self::ack_resolving), after a
    /// first attempt failed with the retryable `error`; also says how it
    /// ended (the `outcome` label of `duroxide_postgres_ack_resolutions_total`).
    async fn resolve(
        &self,
        op: &'static str,
        ack: &SqlFn,
        outcome: &SqlFn,
        token: &str,
        params: &[&(dyn ToSql + Sync)],
        mut error: ProviderError,
    ) -> (Result<Option<Row>, ProviderError>, AckOutcome) {
        let mut delay = FIRST_DELAY;
        for _ in 1..ATTEMPTS {
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(MAX_DELAY);
            let state = match self.call_one(op, outcome, &[&token]).await {
                Ok(row) => match get::<String, _>(op, &row, 0) {
                    Ok(state) => state,
                    Err(e) => return (Err(e), AckOutcome::Unresolved),
                },
                Err(e) => {
                    error = e;
                    continue;
                }
            };
            match state.as_str() {
                "done" => return (Ok(None), AckOutcome::Committed),
                "held" => match self.call_with_state(op, ack, params).await {
                    Ok(rows) => return (Ok(rows.into_iter().next()), AckOutcome::Retried),
                    Err((e, code)) if e.is_retryable() || is_lock_error(code.as_deref()) => {
                        error = e
                    }
                    Err((e, _)) => return (Err(e), AckOutcome::Unresolved),
                },
                _ => {
                    return (
                        Err(ProviderError::permanent(
                            op,
                            format!("lease lost before the ack could commit (after: {error})"),
                        )),
                        AckOutcome::Lost,
                    )
                }
            }
        }
        (Err(error), AckOutcome::Unresolved)
    }
}
