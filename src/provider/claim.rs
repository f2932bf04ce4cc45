//! Claims that outlive their caller.
//!
//! The runtime drops fetch futures (at shutdown, or when it races a fetch
//! against cancellation). A fetch statement already sent still runs and
//! commits its claim, and nobody would ever receive the item: it would stay
//! invisible for its whole lease. So a claiming call runs on a task of its
//! own, which always observes the result, and the claimed row travels back
//! inside a [`Claim`] that releases the lease (without counting the attempt)
//! if it is dropped before the fetch hands the item over.

use super::functions::SqlFn;
use super::{run_call, Call, Db, PostgresProvider};
use crate::wakeups::{Made, Queue, Signals};
use duroxide::providers::ProviderError;
use std::sync::Arc;
use tokio_postgres::types::ToSql;
use tokio_postgres::Row;

/// An owned call parameter (moved into the task that runs the call).
pub(super) type Param = Box<dyn ToSql + Send + Sync>;

/// The rows of a claiming call. Dropping it without [`Claim::accept`]
/// releases the lease it carries.
pub(super) struct Claim {
    rows: Vec<Row>,
    release: Option<Release>,
}

impl Claim {
    /// The rows, now owned by the caller: the claim is no longer released.
    pub(super) fn accept(mut self) -> Vec<Row> {
        if let Some(mut release) = self.release.take() {
            release.token = None;
        }
        std::mem::take(&mut self.rows)
    }

    /// The lease this claim carries, until it is accepted.
    pub(super) fn token(&self) -> Option<&str> {
        self.release.as_ref().and_then(|r| r.token.as_deref())
    }
}

/// How to give back a lease: the queue's abandon function, called with
/// `ignore_attempt`, so an attempt nobody received is not counted.
struct Release {
    db: Db,
    call: Option<Call>,
    token: Option<String>,
    signals: Arc<Signals>,
    queue: Queue,
}

/// What a claim gave back (released, or undone with its transaction) made
/// ready: its orchestrator instance; or its worker item, which may be bound
/// to a session only its owner may take, so every worker looks.
fn released(queue: Queue) -> Made {
    match queue {
        Queue::Orchestrator => Made {
            orchestrator: 1,
            ..Made::default()
        },
        Queue::Worker => Made {
            worker: 1,
            worker_for_sessions: true,
            ..Made::default()
        },
    }
}

impl Drop for Release {
    fn drop(&mut self) {
        let Some(token) = self.token.take() else {
            return;
        };
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            tracing::warn!(target: "duroxide_postgres", %token,
                "claim dropped outside a runtime; it is released when its lease expires");
            return;
        };
        let Some(call) = self.call.take() else {
            return;
        };
        let (db, signals, queue) = (self.db.clone(), self.signals.clone(), self.queue);
        runtime.spawn(async move {
            let no_delay: Option<i64> = None;
            let result = run_call(
                &db,
                &call,
                "release_unreceived_claim",
                &[&token, &no_delay, &true],
            )
            .await;
            match result {
                Ok(_) => {
                    tracing::debug!(target: "duroxide_postgres", %token,
                        "released a claim whose fetch was dropped");
                    signals.committed(released(queue), false);
                }
                Err((e, _)) => tracing::warn!(target: "duroxide_postgres", %token, error = %e,
                    "could not release a claim whose fetch was dropped; it is released when its \
                     lease expires"),
            }
        });
    }
}

impl PostgresProvider {
    /// The claim carried by `row` of a call that claims as it commits
    /// something else (an ack's next turn, `prefetch.rs`), whose lease
    /// `token` names: released with `abandon`, as a fetch's claim is, if
    /// dropped before it is accepted.
    pub(super) fn carried_claim(
        &self,
        row: Row,
        token: String,
        abandon: &'static SqlFn,
        queue: Queue,
    ) -> Claim {
        Claim {
            rows: vec![row],
            release: Some(Release {
                db: self.db.clone(),
                call: Some(self.prepared(abandon)),
                token: Some(token),
                signals: self.signals.clone(),
                queue,
            }),
        }
    }

    /// Calls the claiming function `f` (which returns `lock_token` in its
    /// first row when it claimed something) on a task of its own; see the
    /// module docs. `abandon` is the queue's abandon function.
    pub(super) async fn claim(
        &self,
        op: &'static str,
        f: &'static SqlFn,
        params: Vec<Param>,
        abandon: &'static SqlFn,
        queue: Queue,
    ) -> Result<Claim, ProviderError> {
        let db = self.db.clone();
        if params.len() != f.params.len() || abandon.params.len() != 3 {
            // A bug of this crate, caught before anything is sent.
            return Err(ProviderError::permanent(
                op,
                format!("{} or {} called with the wrong arity", f.name, abandon.name),
            ));
        }
        let call = self.prepared(f);
        let release = Release {
            db: self.db.clone(),
            call: Some(self.prepared(abandon)),
            token: None,
            signals: self.signals.clone(),
            queue,
        };
        let task = tokio::spawn(async move {
            let refs: Vec<&(dyn ToSql + Sync)> = params
                .iter()
                .map(|p| p.as_ref() as &(dyn ToSql + Sync))
                .collect();
            let rows = match run_call(&db, &call, op, &refs).await {
                Ok(rows) => rows,
                Err((e, _)) => {
                    // A claim undone with its transaction leaves its work
                    // ready without a commit: fetches that skipped it while
                    // it was locked, here or elsewhere, must look again.
                    release.signals.committed(released(release.queue), false);
                    return Err(e);
                }
            };
            let token = match rows.first() {
                Some(row) => row
                    .try_get::<_, Option<String>>("lock_token")
                    .map_err(|e| ProviderError::permanent(op, e.to_string()))?,
                None => None,
            };
            let mut release = release;
            release.token = token;
            Ok(Claim {
                rows,
                release: Some(release),
            })
        });
        task.await
            .map_err(|e| ProviderError::retryable(op, format!("claiming task failed: {e}")))?
    }
}
