//! Worker queue calls: `sql/functions/worker_queue.sql`.

use super::claim::Param;
use super::functions as sql;
use super::prefetch::{Taken, WorkAsk};
use super::rows::{count, get};
use super::PostgresProvider;
use crate::codec::{self, millis};
use crate::wakeups::{Made, Polled, Queue, Wake};
use duroxide::providers::{ProviderError, SessionFetchConfig, TagFilter, WorkItem};
use duroxide::ErrorDetails;
use std::time::Duration;
use tokio_postgres::Row;

/// Fetches of an undecodable worker item before it is failed. Until then it
/// is released for others after [`CORRUPT_ITEM_RETRY`]: during a rolling
/// upgrade a newer build may still decode it. Matches duroxide's default
/// `max_attempts`.
const CORRUPT_ITEM_MAX_ATTEMPTS: u32 = 10;
const CORRUPT_ITEM_RETRY: Duration = Duration::from_secs(1);

impl PostgresProvider {
    pub(super) async fn enqueue_worker(&self, item: &WorkItem) -> Result<(), ProviderError> {
        const OP: &str = "enqueue_for_worker";
        let route = codec::worker_route(OP, item)?;
        let text = codec::encode_item(OP, item)?;
        // Generated once per call: every retry of this call carries it.
        let request_id = uuid::Uuid::new_v4();
        let for_session = route.session_id.is_some();
        // An item bound to a session wakes every worker: only the
        // session's owner may take it.
        let wake = if for_session {
            Wake::All
        } else {
            Wake::Count(1)
        };
        let announce = self.announcement(Queue::Worker, wake);
        self.call(
            OP,
            &sql::ENQUEUE_WORKER,
            &[
                &text,
                &route.instance,
                &route.execution_id,
                &route.activity_id,
                &route.session_id,
                &route.tag,
                &request_id,
                &announce,
            ],
        )
        .await?;
        let made = Made {
            worker: 1,
            worker_for_sessions: for_session,
            ..Made::default()
        };
        self.committed(made, announce.is_some());
        Ok(())
    }

    pub(super) async fn fetch_work(
        &self,
        lock_timeout: Duration,
        poll_timeout: Duration,
        session: Option<&SessionFetchConfig>,
        tag_filter: &TagFilter,
    ) -> Result<Option<(WorkItem, String, u32)>, ProviderError> {
        const OP: &str = "fetch_work_item";
        let (tag_mode, mut tags): (i16, Vec<String>) = match tag_filter {
            TagFilter::None => return Ok(None),
            TagFilter::DefaultOnly => (0, vec![]),
            TagFilter::Tags(set) => (1, set.iter().cloned().collect()),
            TagFilter::DefaultAnd(set) => (2, set.iter().cloned().collect()),
            TagFilter::Any => (3, vec![]),
        };
        // In one order, so that equal filters ask the same (prefetch.rs).
        tags.sort();
        self.db.leases_last(lock_timeout);
        let ask = WorkAsk {
            tag_mode,
            tags,
            session: session.map(|s| (s.owner_id.clone(), millis(s.lock_timeout))),
            lock_ms: millis(lock_timeout),
        };
        self.give_back(&self.work_prefetch, Queue::Worker, &ask)
            .await;
        let owner = session.map(|s| s.owner_id.as_str());
        let session_lock_ms = session.map_or(0, |s| millis(s.lock_timeout));
        // A session owner also sees its own sessions' work.
        let filter_key = format!(
            "{}:{:?}:session={}",
            ask.tag_mode,
            ask.tags,
            owner.is_some()
        );
        let fetcher_key = format!("{filter_key}:owner={owner:?}");
        let keys = (filter_key.as_str(), fetcher_key.as_str());
        let fetched = self
            .poll(Queue::Worker, keys, poll_timeout, || async {
                self.reclaimer.fetching();
                // The item the ack before this fetch claimed for it (prefetch.rs).
                let mut taken = match self.work_prefetch.take(&ask, 0, true) {
                    Some(Taken::Turn { row, .. }) => Some(row),
                    _ => None,
                };
                // Loops only past corrupt items, which are set aside first.
                loop {
                    let row = match taken.take() {
                        Some(row) => row,
                        None => {
                            let params: Vec<Param> = vec![
                                Box::new(ask.lock_ms),
                                Box::new(owner.map(str::to_string)),
                                Box::new(session_lock_ms),
                                Box::new(ask.tag_mode),
                                Box::new(ask.tags.clone()),
                                Box::new(true),
                            ];
                            let claim = self
                                .claim(
                                    OP,
                                    &sql::FETCH_WORK_ITEM,
                                    params,
                                    &sql::ABANDON_WORK_ITEM,
                                    Queue::Worker,
                                )
                                .await?;
                            // Accepted with no await before the item is returned.
                            claim.accept().into_iter().next().ok_or_else(|| {
                                ProviderError::permanent(OP, "fetch_work_item returned no row")
                            })?
                        }
                    };
                    let text: Option<String> = get(OP, &row, "work_item")?;
                    let Some(text) = text else {
                        if get::<Option<bool>, _>(OP, &row, "session_work_skipped")? == Some(true) {
                            return Ok(Polled::Skipped);
                        }
                        return Ok(Polled::empty(get(OP, &row, "next_visible_in_ms")?));
                    };
                    let token: String = get(OP, &row, "lock_token")?;
                    let attempts = get::<i32, _>(OP, &row, "attempt_count")?.max(0) as u32;
                    if get::<Option<bool>, _>(OP, &row, "took_over")? == Some(true) {
                        self.db.target.lease_taken_over(Queue::Worker);
                    }
                    match codec::decode_item(&text) {
                        Ok(item) => return Ok(Polled::Ready((item, token, attempts))),
                        Err(e) => self.handle_corrupt_item(&row, &token, attempts, &e).await?,
                    }
                }
            })
            .await?;
        if let Some((_, token, _)) = &fetched {
            self.work_prefetch.handed(token, &ask);
        }
        Ok(fetched)
    }

    /// An undecodable worker item is never dropped silently and never
    /// blocks the queue: it is released for a later attempt, and after
    /// [`CORRUPT_ITEM_MAX_ATTEMPTS`] fetches it is completed as a failed
    /// activity whose error names the corruption, so its orchestration
    /// fails visibly.
    async fn handle_corrupt_item(
        &self,
        row: &Row,
        token: &str,
        attempts: u32,
        error: &str,
    ) -> Result<(), ProviderError> {
        const OP: &str = "fetch_work_item";
        let instance: String = get(OP, row, "instance_id")?;
        let execution_id = count(OP, row, "execution_id")?;
        let activity_id = count(OP, row, "activity_id")?;
        tracing::error!(
            target: "duroxide_postgres",
            %instance, execution_id, activity_id, attempts, %error,
            "corrupt worker item"
        );
        if attempts < CORRUPT_ITEM_MAX_ATTEMPTS {
            return self
                .abandon_work(token, Some(CORRUPT_ITEM_RETRY), false)
                .await;
        }
        let failed = WorkItem::ActivityFailed {
            instance: instance.clone(),
            execution_id,
            id: activity_id,
            details: ErrorDetails::Infrastructure {
                operation: "fetch_work_item".to_string(),
                message: format!(
                    "worker item for activity {activity_id} of instance {instance} is corrupt \
                     after {attempts} attempts: {error}"
                ),
                retryable: false,
            },
        };
        self.ack_work(token, Some(&failed)).await
    }

    pub(super) async fn ack_work(
        &self,
        token: &str,
        completion: Option<&WorkItem>,
    ) -> Result<(), ProviderError> {
        const OP: &str = "ack_work_item";
        let (target, kind, text) = match completion {
            None => (None, None, None),
            Some(item) => {
                let route = codec::orchestrator_route(OP, item)?;
                (
                    Some(route.instance),
                    Some(route.kind),
                    Some(codec::encode_item(OP, item)?),
                )
            }
        };
        // The next item, claimed by this ack for the fetch that follows it
        // (prefetch.rs).
        let next = self.work_prefetch.asked_for(token);
        let (next_lock_ms, next_mode, next_tags) = match &next {
            Some(ask) => (
                Some(ask.lock_ms),
                Some(ask.tag_mode),
                Some(ask.tags.clone()),
            ),
            None => (None, None, None),
        };
        let next_owner = next
            .as_ref()
            .and_then(|a| a.session.as_ref().map(|(owner, _)| owner.clone()));
        let row = self
            .ack_resolving(
                OP,
                Queue::Worker,
                &sql::ACK_WORK_ITEM,
                &sql::WORK_ACK_OUTCOME,
                token,
                &[
                    &token,
                    &target,
                    &kind,
                    &text,
                    &next_lock_ms,
                    &next_owner,
                    &next_mode,
                    &next_tags,
                ],
            )
            .await?;
        // A completion deferred behind its instance's lease wakes nobody
        // now: the ack or abandon that ends the lease does (issue 11: at 4
        // dispatchers such wakes were a third of the orchestrator fetches).
        let ready = super::ack::ready_or_unknown(OP, &row)?;
        if completion.is_some() && ready {
            let made = Made {
                orchestrator: 1,
                ..Made::default()
            };
            self.committed(made, false);
        }
        if let (Some(row), Some(ask)) = (row, next) {
            self.work_prefetched(ask, row)?;
        }
        Ok(())
    }

    pub(super) async fn renew_work(
        &self,
        token: &str,
        extend_for: Duration,
    ) -> Result<(), ProviderError> {
        let extend_ms = millis(extend_for);
        self.renew_retrying(Queue::Worker, extend_for, || async {
            self.call(
                "renew_work_item_lock",
                &sql::RENEW_WORK_ITEM_LOCK,
                &[&token, &extend_ms],
            )
            .await
            .map(|_| ())
        })
        .await
    }

    pub(super) async fn abandon_work(
        &self,
        token: &str,
        delay: Option<Duration>,
        ignore_attempt: bool,
    ) -> Result<(), ProviderError> {
        const OP: &str = "abandon_work_item";
        self.work_prefetch.asked_for(token);
        let delay_ms = delay.map(millis);
        let row = self
            .call_one(
                OP,
                &sql::ABANDON_WORK_ITEM,
                &[&token, &delay_ms, &ignore_attempt],
            )
            .await?;
        let due = Made::due(get(OP, &row, "due_in_ms")?);
        let made = Made {
            worker: u32::from(due.is_none()),
            worker_for_sessions: get(OP, &row, "for_session")?,
            worker_due: due,
            ..Made::default()
        };
        self.committed(made, false);
        Ok(())
    }
}
