//! The store's metrics, observed from outside: a metrics recorder installed
//! once for this test binary, after real provider calls and a real duroxide
//! runtime (spans: `tests/spans.rs`).
//!
//! Every metric carries the store's `schema` label, so each test reads only
//! its own store's values although the recorder is shared.

#[allow(dead_code)]
mod common;

use common::recorder::{get, metrics_of, recorder, until};
use duroxide::providers::{Provider, TagFilter};
use duroxide::runtime::registry::ActivityRegistry;
use duroxide::runtime::{Runtime, RuntimeOptions};
use duroxide::{ActivityContext, Client, OrchestrationContext, OrchestrationRegistry};
use duroxide_postgres::PostgresOptions;
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(30);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_runtime_on_the_store_produces_pool_listener_wakeup_and_health_metrics() {
    recorder();
    let admin = common::admin_client().await;
    common::wait::statement_stats(&admin).await;
    let options = PostgresOptions::new().health_sample_interval(Some(Duration::from_millis(100)));
    let (store, _schemas, app) = common::provider_with_app("tm_rt", options).await;
    let schema = store.schema().to_string();

    let activities = ActivityRegistry::builder()
        .register("Echo", |_ctx: ActivityContext, input: String| async move {
            Ok(input)
        })
        .build();
    let orchestrations = OrchestrationRegistry::builder()
        .register(
            "Twice",
            |ctx: OrchestrationContext, input: String| async move {
                let a = ctx.schedule_activity("Echo", input).await?;
                let b = ctx.schedule_activity("Echo", a).await?;
                Ok(b)
            },
        )
        .build();
    let rt_options = RuntimeOptions {
        dispatcher_min_poll_interval: Duration::from_millis(10),
        ..Default::default()
    };
    let runtime =
        Runtime::start_with_options(store.clone(), activities, orchestrations, rt_options).await;
    let client = Client::new(store.clone());
    // The dispatchers go idle on LISTEN first (both have looked and found
    // nothing), so that the work below arrives as wake-ups.
    common::wait::listening(&admin, &schema, &app).await;
    common::wait::calls_reach(&admin, &store, "fetch_orchestration_item", 1).await;
    common::wait::calls_reach(&admin, &store, "fetch_work_item", 1).await;
    client
        .start_orchestration("tm-1", "Twice", "x")
        .await
        .unwrap();
    client.wait_for_orchestration("tm-1", WAIT).await.unwrap();

    // An activity with a tag no worker fetches: ready, and ageing.
    store
        .enqueue_for_worker(common::items::tagged_activity("tm-orphan", 1, "in", "gpu"))
        .await
        .unwrap();

    let m = until(&schema, "health sample with the tagged item", |m| {
        get(m, "duroxide_postgres_queue_ready", &[("queue", "worker")]) == Some(1.0)
            && get(
                m,
                "duroxide_postgres_queue_oldest_ready_age_seconds",
                &[("queue", "worker")],
            )
            .is_some_and(|age| age > 0.0)
    })
    .await;
    runtime.shutdown(None).await;

    // Pool: every call acquired a connection.
    assert!(get(&m, "duroxide_postgres_pool_acquire_seconds", &[]).unwrap_or(0.0) > 0.0);
    let in_use = get(
        &m,
        "duroxide_postgres_pool_connections",
        &[("state", "in_use")],
    );
    let idle = get(
        &m,
        "duroxide_postgres_pool_connections",
        &[("state", "idle")],
    );
    assert!(
        in_use.is_some() && idle.is_some(),
        "pool gauges: {in_use:?} {idle:?}"
    );
    assert!(
        in_use.unwrap() + idle.unwrap() <= 10.0,
        "at most the pool size"
    );
    assert_eq!(get(&m, "duroxide_postgres_pool_waiting", &[]), Some(0.0));
    // Idle fetchers were woken by the work they waited for.
    let wakeups = get(
        &m,
        "duroxide_postgres_wakeups_total",
        &[("queue", "orchestrator")],
    )
    .unwrap_or(0.0)
        + get(
            &m,
            "duroxide_postgres_wakeups_total",
            &[("queue", "worker")],
        )
        .unwrap_or(0.0);
    assert!(wakeups >= 1.0, "wake-ups: {wakeups}");
    // Health: the orchestration finished, its queue is empty; the tagged
    // item waits; nothing is leased or expired.
    assert_eq!(
        get(
            &m,
            "duroxide_postgres_queue_ready",
            &[("queue", "orchestrator")]
        ),
        Some(0.0)
    );
    assert_eq!(
        get(
            &m,
            "duroxide_postgres_queue_expired_leases",
            &[("queue", "worker")]
        ),
        Some(0.0)
    );
    assert_eq!(
        get(
            &m,
            "duroxide_postgres_queue_at_attempts",
            &[("queue", "worker")]
        ),
        Some(0.0)
    );
    assert!(get(
        &m,
        "duroxide_postgres_queue_dead_tuples",
        &[("queue", "worker")]
    )
    .is_some());
    assert!(get(&m, "duroxide_postgres_vacuum_horizon_age_seconds", &[]).is_some_and(|a| a >= 0.0));
    let usage = get(&m, "duroxide_postgres_notification_queue_usage", &[]).unwrap();
    assert!((0.0..=1.0).contains(&usage));
    assert!(get(&m, "duroxide_postgres_health_sample_duration_seconds", &[]).unwrap_or(0.0) > 0.0);
    assert_eq!(
        get(&m, "duroxide_postgres_health_sample_errors_total", &[]),
        None
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fetch_that_takes_over_an_expired_lease_is_counted() {
    recorder();
    let options = PostgresOptions::new()
        .long_poll(false)
        .health_sample_interval(None);
    let (store, _schemas) = common::provider("tm_take", options).await;
    let schema = store.schema().to_string();
    store
        .enqueue_for_worker(common::items::activity("tk-1", 1, "in", None))
        .await
        .unwrap();
    let (_, _token, attempts) = store
        .fetch_work_item(
            Duration::from_millis(50),
            Duration::ZERO,
            None,
            &TagFilter::Any,
        )
        .await
        .unwrap()
        .expect("the item");
    assert_eq!(attempts, 1);
    assert_eq!(
        get(
            &metrics_of(&schema),
            "duroxide_postgres_lease_takeovers_total",
            &[("queue", "worker")]
        ),
        None,
        "a first claim takes nothing over"
    );
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (_, _, attempts) = store
        .fetch_work_item(
            Duration::from_secs(30),
            Duration::ZERO,
            None,
            &TagFilter::Any,
        )
        .await
        .unwrap()
        .expect("the expired item again");
    assert_eq!(attempts, 2);
    assert_eq!(
        get(
            &metrics_of(&schema),
            "duroxide_postgres_lease_takeovers_total",
            &[("queue", "worker")]
        ),
        Some(1.0)
    );

    // The orchestrator queue: the same through the instance's lease.
    store
        .enqueue_for_orchestrator(common::items::start("tk-o", "in"), None)
        .await
        .unwrap();
    let first = store
        .fetch_orchestration_item(Duration::from_millis(50), Duration::ZERO, None)
        .await
        .unwrap();
    assert!(first.is_some());
    tokio::time::sleep(Duration::from_millis(200)).await;
    let again = store
        .fetch_orchestration_item(Duration::from_secs(30), Duration::ZERO, None)
        .await
        .unwrap();
    assert!(again.is_some());
    assert_eq!(
        get(
            &metrics_of(&schema),
            "duroxide_postgres_lease_takeovers_total",
            &[("queue", "orchestrator")]
        ),
        Some(1.0)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_sampling_is_off_when_disabled() {
    recorder();
    let options = PostgresOptions::new().health_sample_interval(None);
    let (store, _schemas) = common::provider("tm_off", options).await;
    store
        .enqueue_for_worker(common::items::activity("off-1", 1, "in", None))
        .await
        .unwrap();
    // A store that samples every 100 ms, started after it, samples three
    // times: long enough for the disabled store to have sampled were it on.
    let sampling = PostgresOptions::new().health_sample_interval(Some(Duration::from_millis(100)));
    let (control, _control_schemas) = common::provider("tm_on", sampling).await;
    until(
        control.schema(),
        "three samples of the sampling store",
        |m| get(m, "duroxide_postgres_health_sample_duration_seconds", &[]).unwrap_or(0.0) >= 3.0,
    )
    .await;
    let m = metrics_of(store.schema());
    assert_eq!(
        get(&m, "duroxide_postgres_health_sample_duration_seconds", &[]),
        None,
        "the disabled store sampled"
    );
    assert_eq!(
        get(&m, "duroxide_postgres_queue_ready", &[("queue", "worker")]),
        None
    );
    // The call itself was measured.
    assert!(get(&m, "duroxide_postgres_pool_acquire_seconds", &[]).is_some());
}

/// Holds a row lock on every worker_queue row of `schema` for `hold` from an
/// administrator's connection, so that provider calls touching them wait
/// and run into their statement timeout (a retryable error that commits
/// nothing).
async fn lock_worker_rows(schema: &str, hold: Duration) -> tokio::task::JoinHandle<()> {
    let admin = common::admin_client().await;
    admin
        .batch_execute(&format!(
            "BEGIN; SELECT id FROM \"{schema}\".worker_queue FOR UPDATE"
        ))
        .await
        .unwrap();
    tokio::spawn(async move {
        tokio::time::sleep(hold).await;
        admin.batch_execute("COMMIT").await.unwrap();
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn renewals_retried_and_acks_resolved_after_a_failed_reply_are_counted() {
    recorder();
    let options = PostgresOptions::new()
        .long_poll(false)
        .health_sample_interval(None)
        .statement_timeout(Some(Duration::from_millis(150)));
    let (store, _schemas) = common::provider("tm_ack", options).await;
    let schema = store.schema().to_string();
    store
        .enqueue_for_worker(common::items::activity("ack-1", 1, "in", None))
        .await
        .unwrap();
    let (_, token, _) = store
        .fetch_work_item(
            Duration::from_secs(60),
            Duration::ZERO,
            None,
            &TagFilter::Any,
        )
        .await
        .unwrap()
        .expect("the item");

    // The renewal waits on the lock, times out, and is retried until the
    // lock is gone.
    let release = lock_worker_rows(&schema, Duration::from_millis(600)).await;
    store
        .renew_work_item_lock(&token, Duration::from_secs(60))
        .await
        .unwrap();
    release.await.unwrap();
    let retries = get(
        &metrics_of(&schema),
        "duroxide_postgres_lease_renewal_retries_total",
        &[("queue", "worker")],
    );
    assert!(
        retries.is_some_and(|n| n >= 1.0),
        "renewal retries: {retries:?}"
    );

    // The ack fails the same way; the store asks what became of the lease
    // (still held, nothing committed) and acks again.
    let release = lock_worker_rows(&schema, Duration::from_millis(600)).await;
    store.ack_work_item(&token, None).await.unwrap();
    release.await.unwrap();
    let m = metrics_of(&schema);
    assert_eq!(
        get(
            &m,
            "duroxide_postgres_ack_resolutions_total",
            &[("queue", "worker"), ("outcome", "retried")]
        ),
        Some(1.0),
        "{m:#?}"
    );
    // The item is gone: the ack committed exactly once.
    assert!(store
        .fetch_work_item(
            Duration::from_secs(1),
            Duration::ZERO,
            None,
            &TagFilter::Any
        )
        .await
        .unwrap()
        .is_none());
}
