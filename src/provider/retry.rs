//! The retry policy of calls the runtime does not retry itself.
//!
//! duroxide's `Client` (start, raise event, cancel, wait, status) and
//! management callers do not retry provider errors: a transient failure
//! (connection lost, server restarting, pool timeout, serialization failure)
//! would reach the user's application. So the provider rides those out
//! itself, per the call's [`Class`] (named per SQL function in
//! `functions.rs`, nowhere else):
//!
//! * [`Class::Read`]: changes nothing, so any attempt may be repeated.
//! * [`Class::Write`]: changes something, and is made safe to repeat: the
//!   enqueues and history appends carry a request id generated once per call
//!   and recorded in the same transaction (`first_request` in
//!   `sql/functions/common.sql`), so an attempt whose reply was lost after
//!   commit is not applied again; deletes and prunes are idempotent in effect
//!   (a second attempt finds nothing left to delete and reports zero counts).
//! * [`Class::Runtime`]: fetch and session calls. The runtime retries these
//!   itself; a second budget here would only double the runtime's.
//! * [`Class::Lease`]: the calls that settle or extend a lease the runtime
//!   holds (acks, abandons, renewals). One attempt, as for `Runtime` (the
//!   ack resolves an unknown outcome in `ack.rs`), but such a call waits for
//!   a pooled connection as long as the longest lease this provider handed
//!   out rather than `acquire_timeout`: nothing was sent while it waits, the
//!   function refuses a lease that had expired when the call arrived, and
//!   failing instead would turn a finished activity into a repeated one
//!   (the runtime abandons an item whose ack failed).
//!
//! Read and Write calls are retried on a retryable error (a fresh pooled
//! connection per attempt: the pool discards closed ones), with exponential
//! backoff and full jitter, until [`PostgresOptions::client_retry_budget`]
//! runs out; then the last error is returned.
//!
//! [`PostgresOptions::client_retry_budget`]: crate::PostgresOptions::client_retry_budget

use duroxide::providers::ProviderError;
use std::future::Future;
use std::time::Duration;
// tokio's clock, which is the system's unless a test pauses it: the budget
// tests then measure the waits themselves, not the machine's scheduling.
use tokio::time::Instant;

/// How a call is retried (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Class {
    /// Changes nothing: retried within the budget.
    Read,
    /// Changes something, made safe to repeat: retried within the budget.
    Write,
    /// The runtime's own calls: one attempt here.
    Runtime,
    /// A runtime call on a lease it holds: one attempt; waits for a pooled
    /// connection as long as a lease lasts.
    Lease,
}

/// First backoff delay; doubled per attempt up to [`MAX_DELAY`].
const FIRST_DELAY: Duration = Duration::from_millis(50);
const MAX_DELAY: Duration = Duration::from_secs(2);

/// The longest budget accepted: the request-id records of
/// `sql/migrations/0002_request_ids.sql` expire after one hour, which must
/// stay far beyond any retry.
pub(crate) const MAX_BUDGET: Duration = Duration::from_secs(600);

/// Runs `attempt` once for [`Class::Runtime`], otherwise until it succeeds,
/// fails permanently, or the next wait would end past `budget`.
pub(crate) async fn run<T, F, Fut>(
    op: &str,
    class: Class,
    budget: Duration,
    mut attempt: F,
) -> Result<T, ProviderError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, ProviderError>>,
{
    if matches!(class, Class::Runtime | Class::Lease) {
        return attempt().await;
    }
    let deadline = Instant::now() + budget.min(MAX_BUDGET);
    let mut ceiling = FIRST_DELAY;
    let mut retries = 0u32;
    loop {
        let error = match attempt().await {
            Err(e) if e.is_retryable() => e,
            other => return other,
        };
        // Full jitter: callers that failed together do not come back together.
        let wait = ceiling.mul_f64(0.5 + fastrand::f64() / 2.0);
        if Instant::now() + wait >= deadline {
            if retries > 0 {
                tracing::warn!(target: "duroxide_postgres", op, retries, error = %error,
                    "giving up: retry budget spent");
            }
            return Err(error);
        }
        retries += 1;
        tracing::debug!(target: "duroxide_postgres", op, retries, error = %error, "retrying");
        tokio::time::sleep(wait).await;
        ceiling = (ceiling * 2).min(MAX_DELAY);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    fn transient() -> ProviderError {
        ProviderError::retryable("op", "connection closed")
    }

    #[tokio::test]
    async fn read_retries_until_success() {
        let n = AtomicU32::new(0);
        let r = run("op", Class::Read, Duration::from_secs(5), || async {
            if n.fetch_add(1, Ordering::SeqCst) < 3 {
                Err(transient())
            } else {
                Ok(7)
            }
        })
        .await;
        assert_eq!(r.unwrap(), 7);
        assert_eq!(n.load(Ordering::SeqCst), 4);
    }

    #[tokio::test]
    async fn runtime_calls_run_once() {
        let n = AtomicU32::new(0);
        let r: Result<(), _> = run("op", Class::Runtime, Duration::from_secs(5), || async {
            n.fetch_add(1, Ordering::SeqCst);
            Err(transient())
        })
        .await;
        assert!(r.unwrap_err().is_retryable());
        assert_eq!(n.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn permanent_errors_are_not_retried() {
        let n = AtomicU32::new(0);
        let r: Result<(), _> = run("op", Class::Write, Duration::from_secs(5), || async {
            n.fetch_add(1, Ordering::SeqCst);
            Err(ProviderError::permanent("op", "bad"))
        })
        .await;
        assert!(!r.unwrap_err().is_retryable());
        assert_eq!(n.load(Ordering::SeqCst), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn the_budget_bounds_retries_and_the_last_error_is_returned() {
        let n = AtomicU32::new(0);
        let started = Instant::now();
        let r: Result<(), _> = run("op", Class::Read, Duration::from_millis(300), || async {
            let i = n.fetch_add(1, Ordering::SeqCst);
            Err(ProviderError::retryable("op", format!("attempt {i}")))
        })
        .await;
        let attempts = n.load(Ordering::SeqCst);
        assert!(attempts >= 2, "retried at least once: {attempts}");
        assert!(started.elapsed() < Duration::from_millis(300));
        assert!(r
            .unwrap_err()
            .to_string()
            .contains(&format!("attempt {}", attempts - 1)));
    }
}
