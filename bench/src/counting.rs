//! A `Provider` decorator that counts calls per method (and empty fetches),
//! so that runtime sections can report provider calls for both stores and,
//! for PostgreSQL, statements per provider call.

use async_trait::async_trait;
use duroxide::providers::{
    DispatcherCapabilityFilter, ExecutionMetadata, OrchestrationItem, Provider, ProviderAdmin,
    ProviderError, ScheduledActivityIdentifier, SessionFetchConfig, TagFilter, WorkItem,
};
use duroxide::Event;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Counted methods, in report order.
pub const METHODS: &[&str] = &[
    "fetch_orchestration_item",
    "ack_orchestration_item",
    "abandon_orchestration_item",
    "fetch_work_item",
    "ack_work_item",
    "abandon_work_item",
    "renew_orchestration_item_lock",
    "renew_work_item_lock",
    "renew_session_lock",
    "cleanup_orphaned_sessions",
    "enqueue_for_orchestrator",
    "enqueue_for_worker",
    "read",
    "read_with_execution",
    "append_with_execution",
    "get_custom_status",
    "get_kv_value",
    "get_kv_all_values",
    "get_instance_stats",
    "empty_fetch_orchestration_item",
    "empty_fetch_work_item",
];

#[derive(Default)]
pub struct Counts {
    calls: [AtomicU64; METHODS.len()],
}

impl Counts {
    fn bump(&self, method: &str) {
        if let Some(i) = METHODS.iter().position(|m| *m == method) {
            self.calls[i].fetch_add(1, Ordering::Relaxed);
        }
    }

    pub fn snapshot(&self) -> Snapshot {
        Snapshot(
            METHODS
                .iter()
                .zip(self.calls.iter())
                .map(|(m, c)| (*m, c.load(Ordering::Relaxed)))
                .collect(),
        )
    }
}

/// Call counts at one moment.
#[derive(Debug, Clone, Default)]
pub struct Snapshot(HashMap<&'static str, u64>);

impl Snapshot {
    pub fn get(&self, method: &str) -> u64 {
        self.0.get(method).copied().unwrap_or(0)
    }

    /// All provider calls (empty fetches are calls already counted).
    pub fn total_calls(&self) -> u64 {
        self.0
            .iter()
            .filter(|(m, _)| !m.starts_with("empty_"))
            .map(|(_, n)| *n)
            .sum()
    }

    /// `self - earlier`, per method.
    pub fn since(&self, earlier: &Snapshot) -> Snapshot {
        Snapshot(
            self.0
                .iter()
                .map(|(m, n)| (*m, n.saturating_sub(earlier.get(m))))
                .collect(),
        )
    }

    /// Non-zero counts, in report order, as "method=n".
    pub fn describe(&self) -> String {
        METHODS
            .iter()
            .filter(|m| self.get(m) > 0)
            .map(|m| format!("{m}={}", self.get(m)))
            .collect::<Vec<_>>()
            .join(" ")
    }
}

pub struct Counting {
    inner: Arc<dyn Provider>,
    counts: Arc<Counts>,
}

impl Counting {
    pub fn wrap(inner: Arc<dyn Provider>) -> (Arc<dyn Provider>, Arc<Counts>) {
        let counts = Arc::new(Counts::default());
        let provider: Arc<dyn Provider> = Arc::new(Counting {
            inner,
            counts: counts.clone(),
        });
        (provider, counts)
    }
}

#[async_trait]
impl Provider for Counting {
    fn name(&self) -> &str {
        self.inner.name()
    }

    fn version(&self) -> &str {
        self.inner.version()
    }

    async fn fetch_orchestration_item(
        &self,
        lock_timeout: Duration,
        poll_timeout: Duration,
        filter: Option<&DispatcherCapabilityFilter>,
    ) -> Result<Option<(OrchestrationItem, String, u32)>, ProviderError> {
        self.counts.bump("fetch_orchestration_item");
        let r = self
            .inner
            .fetch_orchestration_item(lock_timeout, poll_timeout, filter)
            .await;
        if matches!(r, Ok(None)) {
            self.counts.bump("empty_fetch_orchestration_item");
        }
        r
    }

    async fn ack_orchestration_item(
        &self,
        lock_token: &str,
        execution_id: u64,
        history_delta: Vec<Event>,
        worker_items: Vec<WorkItem>,
        orchestrator_items: Vec<WorkItem>,
        metadata: ExecutionMetadata,
        cancelled_activities: Vec<ScheduledActivityIdentifier>,
    ) -> Result<(), ProviderError> {
        self.counts.bump("ack_orchestration_item");
        self.inner
            .ack_orchestration_item(
                lock_token,
                execution_id,
                history_delta,
                worker_items,
                orchestrator_items,
                metadata,
                cancelled_activities,
            )
            .await
    }

    async fn abandon_orchestration_item(
        &self,
        lock_token: &str,
        delay: Option<Duration>,
        ignore_attempt: bool,
    ) -> Result<(), ProviderError> {
        self.counts.bump("abandon_orchestration_item");
        self.inner
            .abandon_orchestration_item(lock_token, delay, ignore_attempt)
            .await
    }

    async fn read(&self, instance: &str) -> Result<Vec<Event>, ProviderError> {
        self.counts.bump("read");
        self.inner.read(instance).await
    }

    async fn read_with_execution(
        &self,
        instance: &str,
        execution_id: u64,
    ) -> Result<Vec<Event>, ProviderError> {
        self.counts.bump("read_with_execution");
        self.inner.read_with_execution(instance, execution_id).await
    }

    async fn append_with_execution(
        &self,
        instance: &str,
        execution_id: u64,
        new_events: Vec<Event>,
    ) -> Result<(), ProviderError> {
        self.counts.bump("append_with_execution");
        self.inner
            .append_with_execution(instance, execution_id, new_events)
            .await
    }

    async fn enqueue_for_worker(&self, item: WorkItem) -> Result<(), ProviderError> {
        self.counts.bump("enqueue_for_worker");
        self.inner.enqueue_for_worker(item).await
    }

    async fn fetch_work_item(
        &self,
        lock_timeout: Duration,
        poll_timeout: Duration,
        session: Option<&SessionFetchConfig>,
        tag_filter: &TagFilter,
    ) -> Result<Option<(WorkItem, String, u32)>, ProviderError> {
        self.counts.bump("fetch_work_item");
        let r = self
            .inner
            .fetch_work_item(lock_timeout, poll_timeout, session, tag_filter)
            .await;
        if matches!(r, Ok(None)) {
            self.counts.bump("empty_fetch_work_item");
        }
        r
    }

    async fn ack_work_item(
        &self,
        token: &str,
        completion: Option<WorkItem>,
    ) -> Result<(), ProviderError> {
        self.counts.bump("ack_work_item");
        self.inner.ack_work_item(token, completion).await
    }

    async fn renew_work_item_lock(
        &self,
        token: &str,
        extend_for: Duration,
    ) -> Result<(), ProviderError> {
        self.counts.bump("renew_work_item_lock");
        self.inner.renew_work_item_lock(token, extend_for).await
    }

    async fn renew_session_lock(
        &self,
        owner_ids: &[&str],
        extend_for: Duration,
        idle_timeout: Duration,
    ) -> Result<usize, ProviderError> {
        self.counts.bump("renew_session_lock");
        self.inner
            .renew_session_lock(owner_ids, extend_for, idle_timeout)
            .await
    }

    async fn cleanup_orphaned_sessions(
        &self,
        idle_timeout: Duration,
    ) -> Result<usize, ProviderError> {
        self.counts.bump("cleanup_orphaned_sessions");
        self.inner.cleanup_orphaned_sessions(idle_timeout).await
    }

    async fn abandon_work_item(
        &self,
        token: &str,
        delay: Option<Duration>,
        ignore_attempt: bool,
    ) -> Result<(), ProviderError> {
        self.counts.bump("abandon_work_item");
        self.inner
            .abandon_work_item(token, delay, ignore_attempt)
            .await
    }

    async fn renew_orchestration_item_lock(
        &self,
        token: &str,
        extend_for: Duration,
    ) -> Result<(), ProviderError> {
        self.counts.bump("renew_orchestration_item_lock");
        self.inner
            .renew_orchestration_item_lock(token, extend_for)
            .await
    }

    async fn enqueue_for_orchestrator(
        &self,
        item: WorkItem,
        delay: Option<Duration>,
    ) -> Result<(), ProviderError> {
        self.counts.bump("enqueue_for_orchestrator");
        self.inner.enqueue_for_orchestrator(item, delay).await
    }

    fn as_management_capability(&self) -> Option<&dyn ProviderAdmin> {
        self.inner.as_management_capability()
    }

    async fn get_custom_status(
        &self,
        instance: &str,
        last_seen_version: u64,
    ) -> Result<Option<(Option<String>, u64)>, ProviderError> {
        self.counts.bump("get_custom_status");
        self.inner
            .get_custom_status(instance, last_seen_version)
            .await
    }

    async fn get_kv_value(
        &self,
        instance: &str,
        key: &str,
    ) -> Result<Option<String>, ProviderError> {
        self.counts.bump("get_kv_value");
        self.inner.get_kv_value(instance, key).await
    }

    async fn get_kv_all_values(
        &self,
        instance: &str,
    ) -> Result<HashMap<String, String>, ProviderError> {
        self.counts.bump("get_kv_all_values");
        self.inner.get_kv_all_values(instance).await
    }

    async fn get_instance_stats(
        &self,
        instance: &str,
    ) -> Result<Option<duroxide::SystemStats>, ProviderError> {
        self.counts.bump("get_instance_stats");
        self.inner.get_instance_stats(instance).await
    }
}
