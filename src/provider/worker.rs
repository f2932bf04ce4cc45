//! Worker queue calls: `sql/functions/worker_queue.sql`.

use super::{Polled, PostgresProvider};
use crate::codec::{self, millis};
use duroxide::providers::{ProviderError, SessionFetchConfig, TagFilter, WorkItem};
use std::time::Duration;

impl PostgresProvider {
    pub(super) async fn enqueue_worker(&self, item: &WorkItem) -> Result<(), ProviderError> {
        const OP: &str = "enqueue_for_worker";
        let route = codec::worker_route(OP, item)?;
        let text = codec::encode_item(OP, item)?;
        self.call(
            OP,
            "enqueue_worker",
            &[
                &text,
                &route.instance,
                &route.execution_id,
                &route.activity_id,
                &route.session_id,
                &route.tag,
            ],
        )
        .await?;
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
        let (tag_mode, tags): (i16, Vec<String>) = match tag_filter {
            TagFilter::None => return Ok(None),
            TagFilter::DefaultOnly => (0, vec![]),
            TagFilter::Tags(set) => (1, set.iter().cloned().collect()),
            TagFilter::DefaultAnd(set) => (2, set.iter().cloned().collect()),
            TagFilter::Any => (3, vec![]),
        };
        let lock_ms = millis(lock_timeout);
        let owner = session.map(|s| s.owner_id.as_str());
        let session_lock_ms = session.map_or(0, |s| millis(s.lock_timeout));
        self.poll(poll_timeout, &self.signals.worker, || async {
            let row = self
                .call_one(
                    OP,
                    "fetch_work_item",
                    &[&lock_ms, &owner, &session_lock_ms, &tag_mode, &tags],
                )
                .await?;
            let text: Option<String> = row.get("work_item");
            let Some(text) = text else {
                return Ok(Polled::empty(row.get("next_visible_in_ms")));
            };
            let token: String = row.get("lock_token");
            let attempts: i32 = row.get("attempt_count");
            match codec::decode_item(&text) {
                Ok(item) => Ok(Polled::Ready((item, token, attempts.max(0) as u32))),
                // The lease stays held and expires: the item is not lost, and
                // its attempt count keeps growing where an operator can see it.
                Err(e) => Err(crate::error::corrupt(
                    OP,
                    format!("{e} (lock token {token})"),
                )),
            }
        })
        .await
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
        self.call(OP, "ack_work_item", &[&token, &target, &kind, &text])
            .await?;
        Ok(())
    }

    pub(super) async fn renew_work(
        &self,
        token: &str,
        extend_for: Duration,
    ) -> Result<(), ProviderError> {
        let extend_ms = millis(extend_for);
        self.retry_idempotent(|| async {
            self.call(
                "renew_work_item_lock",
                "renew_work_item_lock",
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
        let delay_ms = delay.map(millis);
        self.call(
            "abandon_work_item",
            "abandon_work_item",
            &[&token, &delay_ms, &ignore_attempt],
        )
        .await?;
        Ok(())
    }
}
