//! A waiting input survives abandons that never reach the store (issue 18,
//! part 1): execution 1 of an instance ended by continue-as-new before its
//! successor's start was queued, and a `QueueMessage` waits for execution 2.
//! The runtime fetches the instance, sees no successor start and abandons;
//! a wrapper makes every abandon fail without calling the store, so the
//! lease runs out and the instance is delivered again under a new token.
//! Once the abandons work again and the successor start is queued,
//! execution 2 must dequeue the message and complete with its data, and
//! execution 1's history must be unchanged.

#[allow(dead_code)]
mod common;

use async_trait::async_trait;
use common::items::{first_turn_metadata, start, started_event};
use duroxide::providers::{
    DispatcherCapabilityFilter, ExecutionMetadata, OrchestrationItem, Provider, ProviderAdmin,
    ProviderError, ScheduledActivityIdentifier, SessionFetchConfig, TagFilter, WorkItem,
};
use duroxide::runtime::registry::ActivityRegistry;
use duroxide::runtime::{Runtime, RuntimeOptions, UnregisteredBackoffConfig};
use duroxide::{
    Client, Event, EventKind, OrchestrationContext, OrchestrationRegistry, OrchestrationStatus,
};
use duroxide_postgres::{PostgresOptions, PostgresProvider};
use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const INSTANCE: &str = "X";

/// The store, with orchestration abandons that fail (without reaching the
/// store) while `failing` is set; records the tokens of the deliveries of
/// [`INSTANCE`].
struct FailingAbandons {
    inner: Arc<PostgresProvider>,
    failing: AtomicBool,
    failed_abandons: AtomicUsize,
    deliveries: Mutex<Vec<(String, u32)>>,
}

#[async_trait]
impl Provider for FailingAbandons {
    async fn fetch_orchestration_item(
        &self,
        lock_timeout: Duration,
        poll_timeout: Duration,
        filter: Option<&DispatcherCapabilityFilter>,
    ) -> Result<Option<(OrchestrationItem, String, u32)>, ProviderError> {
        let fetched = self
            .inner
            .fetch_orchestration_item(lock_timeout, poll_timeout, filter)
            .await?;
        if let Some((item, token, attempts)) = &fetched {
            if item.instance == INSTANCE {
                self.deliveries
                    .lock()
                    .unwrap()
                    .push((token.clone(), *attempts));
            }
        }
        Ok(fetched)
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
        if self.failing.load(Ordering::SeqCst) {
            self.failed_abandons.fetch_add(1, Ordering::SeqCst);
            return Err(ProviderError::retryable(
                "abandon_orchestration_item",
                "injected: the abandon never reached the store",
            ));
        }
        self.inner
            .abandon_orchestration_item(lock_token, delay, ignore_attempt)
            .await
    }

    async fn read(&self, instance: &str) -> Result<Vec<Event>, ProviderError> {
        self.inner.read(instance).await
    }

    async fn read_with_execution(
        &self,
        instance: &str,
        execution_id: u64,
    ) -> Result<Vec<Event>, ProviderError> {
        self.inner.read_with_execution(instance, execution_id).await
    }

    async fn append_with_execution(
        &self,
        instance: &str,
        execution_id: u64,
        new_events: Vec<Event>,
    ) -> Result<(), ProviderError> {
        self.inner
            .append_with_execution(instance, execution_id, new_events)
            .await
    }

    async fn enqueue_for_worker(&self, item: WorkItem) -> Result<(), ProviderError> {
        self.inner.enqueue_for_worker(item).await
    }

    async fn fetch_work_item(
        &self,
        lock_timeout: Duration,
        poll_timeout: Duration,
        session: Option<&SessionFetchConfig>,
        tag_filter: &TagFilter,
    ) -> Result<Option<(WorkItem, String, u32)>, ProviderError> {
        self.inner
            .fetch_work_item(lock_timeout, poll_timeout, session, tag_filter)
            .await
    }

    async fn ack_work_item(
        &self,
        token: &str,
        completion: Option<WorkItem>,
    ) -> Result<(), ProviderError> {
        self.inner.ack_work_item(token, completion).await
    }

    async fn renew_work_item_lock(
        &self,
        token: &str,
        extend_for: Duration,
    ) -> Result<(), ProviderError> {
        self.inner.renew_work_item_lock(token, extend_for).await
    }

    async fn renew_session_lock(
        &self,
        owner_ids: &[&str],
        extend_for: Duration,
        idle_timeout: Duration,
    ) -> Result<usize, ProviderError> {
        self.inner
            .renew_session_lock(owner_ids, extend_for, idle_timeout)
            .await
    }

    async fn cleanup_orphaned_sessions(
        &self,
        idle_timeout: Duration,
    ) -> Result<usize, ProviderError> {
        self.inner.cleanup_orphaned_sessions(idle_timeout).await
    }

    async fn abandon_work_item(
        &self,
        token: &str,
        delay: Option<Duration>,
        ignore_attempt: bool,
    ) -> Result<(), ProviderError> {
        self.inner
            .abandon_work_item(token, delay, ignore_attempt)
            .await
    }

    async fn renew_orchestration_item_lock(
        &self,
        token: &str,
        extend_for: Duration,
    ) -> Result<(), ProviderError> {
        self.inner
            .renew_orchestration_item_lock(token, extend_for)
            .await
    }

    async fn enqueue_for_orchestrator(
        &self,
        item: WorkItem,
        delay: Option<Duration>,
    ) -> Result<(), ProviderError> {
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
        self.inner
            .get_custom_status(instance, last_seen_version)
            .await
    }

    async fn get_kv_value(
        &self,
        instance: &str,
        key: &str,
    ) -> Result<Option<String>, ProviderError> {
        self.inner.get_kv_value(instance, key).await
    }

    async fn get_kv_all_values(
        &self,
        instance: &str,
    ) -> Result<std::collections::HashMap<String, String>, ProviderError> {
        self.inner.get_kv_all_values(instance).await
    }

    async fn get_instance_stats(
        &self,
        instance: &str,
    ) -> Result<Option<duroxide::SystemStats>, ProviderError> {
        self.inner.get_instance_stats(instance).await
    }
}

/// Commits execution 1 of [`INSTANCE`] ended by continue-as-new, without
/// queueing the successor's start; returns its history.
async fn continued_without_successor(store: &PostgresProvider) -> Vec<Event> {
    store
        .enqueue_for_orchestrator(start(INSTANCE, "in"), None)
        .await
        .expect("start");
    let (_, token, _) = store
        .fetch_orchestration_item(Duration::from_secs(30), Duration::ZERO, None)
        .await
        .expect("fetch the start")
        .expect("the start is ready");
    let history = vec![
        started_event(INSTANCE, "in"),
        Event::with_event_id(
            2,
            INSTANCE,
            1,
            None,
            EventKind::OrchestrationContinuedAsNew {
                input: "next".to_string(),
            },
        ),
    ];
    store
        .ack_orchestration_item(
            &token,
            1,
            history.clone(),
            vec![],
            vec![],
            ExecutionMetadata {
                status: Some("ContinuedAsNew".to_string()),
                output: Some("next".to_string()),
                ..first_turn_metadata()
            },
            vec![],
        )
        .await
        .expect("execution 1 ends by continue-as-new");
    store
        .read_with_execution(INSTANCE, 1)
        .await
        .expect("read execution 1")
}

/// Polls `done` every 10 ms until it holds; panics with `what` after 10 s.
async fn until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_waiting_input_survives_abandons_that_never_reach_the_store() {
    let (store, _schemas) = common::provider("abandons", PostgresOptions::new()).await;
    let execution_1 = continued_without_successor(&store).await;
    store
        .enqueue_for_orchestrator(
            WorkItem::QueueMessage {
                instance: INSTANCE.to_string(),
                name: "q".to_string(),
                data: "late".to_string(),
            },
            None,
        )
        .await
        .expect("queue the input");

    let wrapper = Arc::new(FailingAbandons {
        inner: store.clone(),
        failing: AtomicBool::new(true),
        failed_abandons: AtomicUsize::new(0),
        deliveries: Mutex::new(Vec::new()),
    });
    let orchestrations =
        OrchestrationRegistry::builder()
            .register(
                common::items::ORCH,
                |ctx: OrchestrationContext, _input: String| async move {
                    Ok(ctx.dequeue_event("q").await)
                },
            )
            .build();
    let options = RuntimeOptions {
        orchestration_concurrency: 2,
        worker_concurrency: 1,
        orchestrator_lock_timeout: Duration::from_millis(300),
        orchestrator_lock_renewal_buffer: Duration::from_millis(100),
        unregistered_backoff: UnregisteredBackoffConfig {
            base_delay: Duration::from_millis(50),
            max_delay: Duration::from_millis(200),
        },
        dispatcher_min_poll_interval: Duration::from_millis(10),
        ..Default::default()
    };
    let runtime = Runtime::start_with_options(
        wrapper.clone(),
        ActivityRegistry::builder().build(),
        orchestrations,
        options,
    )
    .await;

    // Two deliveries of X, each under its own token, each abandon failed:
    // the second came only because the first's lease ran out.
    until("two deliveries of X with failed abandons", || {
        wrapper.failed_abandons.load(Ordering::SeqCst) >= 2
            && wrapper.deliveries.lock().unwrap().len() >= 2
    })
    .await;
    wrapper.failing.store(false, Ordering::SeqCst);
    {
        let deliveries = wrapper.deliveries.lock().unwrap();
        let tokens: HashSet<&String> = deliveries.iter().map(|(t, _)| t).collect();
        assert_eq!(tokens.len(), deliveries.len(), "a new token per delivery");
        assert!(
            deliveries.windows(2).all(|w| w[1].1 > w[0].1),
            "the attempt count is kept across deliveries: {deliveries:?}"
        );
    }

    store
        .enqueue_for_orchestrator(
            WorkItem::ContinueAsNew {
                instance: INSTANCE.to_string(),
                orchestration: common::items::ORCH.to_string(),
                input: "next".to_string(),
                version: Some(common::items::VERSION.to_string()),
                parent_instance: None,
                parent_id: None,
                parent_execution_id: None,
                carry_forward_events: vec![],
                initial_custom_status: None,
            },
            None,
        )
        .await
        .expect("queue the successor's start");

    let client = Client::new(wrapper.clone());
    let status = client
        .wait_for_orchestration(INSTANCE, Duration::from_secs(10))
        .await;
    runtime.shutdown(None).await;
    match status {
        Ok(OrchestrationStatus::Completed { output, .. }) => assert_eq!(output, "late"),
        other => panic!("expected Completed with the waiting input, got {other:?}"),
    }
    assert_eq!(
        store
            .read_with_execution(INSTANCE, 1)
            .await
            .expect("read execution 1"),
        execution_1,
        "execution 1's history is unchanged"
    );
}
