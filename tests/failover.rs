//! A failover to a synchronous standby, as HA setups and managed services do
//! it: the primary dies (`pg_ctl stop -m immediate`), the standby is promoted
//! (`pg_ctl promote`), and the store, connected with both hosts and
//! `target_session_attrs=read-write`, finds the new primary by itself.
//!
//! A runtime runs orchestrations with an activity, a timer, a
//! sub-orchestration and an external event through it, and a client keeps
//! starting orchestrations and sending events while the primary is gone.
//! Asserted: every orchestration the client started completes exactly once
//! with the right output; no client call fails (each rides out the outage
//! within `client_retry_budget`); the histories committed before the
//! failover are all there after it; the LISTEN connection reconnects (the
//! listener-connected gauge falls to 0 and comes back to 1) and wake-ups
//! work after it (a message committed by another store reaches a runtime
//! whose fetchers wait 60 s, at once).

#[path = "common/recorder.rs"]
mod recorder;
#[path = "common/standby.rs"]
mod standby;
#[path = "common/wait.rs"]
#[allow(dead_code)]
mod wait;

use duroxide::runtime::registry::ActivityRegistry;
use duroxide::runtime::{Runtime, RuntimeOptions};
use duroxide::{
    ActivityContext, Client, EventKind, OrchestrationContext, OrchestrationRegistry,
    OrchestrationStatus,
};
use duroxide_postgres::{PostgresOptions, PostgresProvider};
use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const SCHEMA: &str = "failover";
/// Started, with their events, before the failover; the first
/// [`DONE_BEFORE`] also completed before it.
const BEFORE: usize = 6;
const DONE_BEFORE: usize = 3;
/// Started by the client task while the failover happens.
const DURING: usize = 8;
/// Longer than anything the test waits for: a fetch that was not woken
/// would show as a missed deadline.
const LONG_POLL: Duration = Duration::from_secs(60);
/// How long no server takes writes (kill to promote).
const OUTAGE: Duration = Duration::from_secs(1);
const WAIT: Duration = Duration::from_secs(40);

/// Activity "Double" doubles; "Child" runs it once; "Flow" runs it, waits a
/// timer, runs "Child" on the result, and ends with the event "Go" it
/// receives: input n, output `"{4n}:{event}"`.
fn registries() -> (ActivityRegistry, OrchestrationRegistry) {
    let activities = ActivityRegistry::builder()
        .register("Double", |_: ActivityContext, n: String| async move {
            Ok((n.parse::<i64>().unwrap() * 2).to_string())
        })
        .build();
    let orchestrations = OrchestrationRegistry::builder()
        .register("Child", |ctx: OrchestrationContext, n: String| async move {
            ctx.schedule_activity("Double", n).await
        })
        .register("Flow", |ctx: OrchestrationContext, n: String| async move {
            let doubled = ctx.schedule_activity("Double", n).await?;
            ctx.schedule_timer(Duration::from_millis(100)).await;
            let quadrupled = ctx.schedule_sub_orchestration("Child", doubled).await?;
            let event = ctx.dequeue_event("Go").await;
            Ok(format!("{quadrupled}:{event}"))
        })
        .build();
    (activities, orchestrations)
}

fn id(i: usize) -> String {
    format!("flow-{i}")
}

fn expected(i: usize) -> String {
    format!("{}:go-{i}", 4 * i)
}

/// Starts flow `i` and sends its event (mailbox semantics: the event waits
/// for the orchestration to ask for it).
async fn start_flow(client: &Client, i: usize) -> Result<(), String> {
    client
        .start_orchestration(&id(i), "Flow", i.to_string())
        .await
        .map_err(|e| format!("start {}: {e}", id(i)))?;
    client
        .enqueue_event(&id(i), "Go", format!("go-{i}"))
        .await
        .map_err(|e| format!("event for {}: {e}", id(i)))
}

async fn wait_output(client: &Client, instance: &str) -> String {
    match client.wait_for_orchestration(instance, WAIT).await {
        Ok(OrchestrationStatus::Completed { output, .. }) => output,
        other => panic!("{instance}: {other:?}"),
    }
}

/// The whole history of an instance's only execution, as text (to compare
/// before and after the failover).
async fn history(client: &Client, instance: &str) -> Vec<String> {
    let executions = client.list_executions(instance).await.unwrap();
    assert_eq!(executions, vec![1], "{instance}: one execution");
    client
        .read_execution_history(instance, 1)
        .await
        .unwrap()
        .iter()
        .map(|e| format!("{e:?}"))
        .collect()
}

/// Every event once: ids 1..=n, one completion, each scheduled step
/// scheduled and completed once.
async fn assert_exactly_once(client: &Client, instance: &str) {
    let events = client.read_execution_history(instance, 1).await.unwrap();
    let ids: Vec<u64> = events.iter().map(|e| e.event_id).collect();
    assert_eq!(
        ids,
        (1..=events.len() as u64).collect::<Vec<_>>(),
        "{instance}: event ids"
    );
    let count = |f: fn(&EventKind) -> bool| events.iter().filter(|e| f(&e.kind)).count();
    assert_eq!(
        count(|k| matches!(k, EventKind::OrchestrationCompleted { .. })),
        1,
        "{instance}: completions"
    );
    assert_eq!(
        count(|k| matches!(k, EventKind::ActivityCompleted { .. })),
        1,
        "{instance}: activity results"
    );
    assert_eq!(
        count(|k| matches!(k, EventKind::TimerFired { .. })),
        1,
        "{instance}: timers fired"
    );
    assert_eq!(
        count(|k| matches!(k, EventKind::SubOrchestrationCompleted { .. })),
        1,
        "{instance}: sub-orchestration results"
    );
    assert_eq!(
        count(|k| matches!(k, EventKind::QueueEventDelivered { .. })),
        1,
        "{instance}: events delivered"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn orchestrations_survive_a_failover_to_a_synchronous_standby() {
    recorder::recorder();
    let pair = standby::Pair::start().await;
    // The standby alone is refused, retryably, before any statement: it
    // reports in_hot_standby=on when the session starts.
    match PostgresProvider::connect(&pair.standby_url(), PostgresOptions::new().schema(SCHEMA))
        .await
    {
        Err(duroxide_postgres::Error::Connect(e)) => {
            assert!(e.is_read_only(), "{e}");
            assert_eq!(e.port(), pair.standby_port, "{e}");
        }
        other => panic!("connecting to the standby: {:?}", other.map(|_| ())),
    }
    let url = pair.url();
    let options = PostgresOptions::new()
        .schema(SCHEMA)
        .acquire_timeout(Duration::from_secs(2))
        .client_retry_budget(Duration::from_secs(30))
        .listener_reconnect_delay(Duration::from_millis(100))
        .health_sample_interval(None);
    // The runtime's store, and the client's: another store, like another
    // process, so that what the client commits reaches the runtime only by
    // NOTIFY on the LISTEN connection.
    let store = Arc::new(
        PostgresProvider::connect(&url, options.clone())
            .await
            .unwrap(),
    );
    let client_store = Arc::new(
        PostgresProvider::connect(&url, options.long_poll(false))
            .await
            .unwrap(),
    );
    let client = Client::new(client_store.clone());
    let (activities, orchestrations) = registries();
    let runtime = Runtime::start_with_options(
        store.clone(),
        activities,
        orchestrations,
        RuntimeOptions {
            dispatcher_min_poll_interval: Duration::from_millis(10),
            dispatcher_long_poll_timeout: LONG_POLL,
            orchestration_concurrency: 2,
            worker_concurrency: 2,
            orchestrator_lock_timeout: Duration::from_secs(3),
            worker_lock_timeout: Duration::from_secs(3),
            ..Default::default()
        },
    )
    .await;
    recorder::until(SCHEMA, "listener connected", |m| {
        recorder::get(m, LISTENER, &[]) == Some(1.0)
    })
    .await;

    // Before: some finished, some waiting for their event or mid-flight.
    for i in 0..BEFORE {
        client
            .start_orchestration(&id(i), "Flow", i.to_string())
            .await
            .unwrap();
    }
    for i in 0..DONE_BEFORE {
        client
            .enqueue_event(&id(i), "Go", format!("go-{i}"))
            .await
            .unwrap();
    }
    let mut committed = HashMap::new();
    for i in 0..DONE_BEFORE {
        assert_eq!(wait_output(&client, &id(i)).await, expected(i));
        committed.insert(i, history(&client, &id(i)).await);
    }

    // The client keeps starting flows, one every 50 ms, through the failover.
    let calls_started = Arc::new(AtomicUsize::new(0));
    let calls_finished = Arc::new(AtomicUsize::new(0));
    let driver = {
        let client = Client::new(client_store.clone());
        let calls_started = calls_started.clone();
        let calls_finished = calls_finished.clone();
        tokio::spawn(async move {
            let mut failures = Vec::new();
            let mut longest = Duration::ZERO;
            for i in BEFORE..BEFORE + DURING {
                calls_started.fetch_add(1, Ordering::SeqCst);
                let began = Instant::now();
                if let Err(e) = start_flow(&client, i).await {
                    failures.push(e);
                }
                longest = longest.max(began.elapsed());
                calls_finished.fetch_add(1, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            (failures, longest)
        })
    };
    while calls_started.load(Ordering::SeqCst) < 2 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }

    pair.kill_primary();
    let killed = Instant::now();
    // The loss is seen: the LISTEN connection is down, and a client call is
    // in flight while no server takes writes (it can only succeed by riding
    // out the outage).
    recorder::until(SCHEMA, "listener down after the kill", |m| {
        recorder::get(m, LISTENER, &[]) == Some(0.0)
    })
    .await;
    while calls_started.load(Ordering::SeqCst) == calls_finished.load(Ordering::SeqCst) {
        assert!(killed.elapsed() < WAIT, "the client task stopped calling");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // An HA manager takes a while to decide the primary is dead: the
    // outage lasts OUTAGE, so that every call and fetch meets refused
    // connections and read-only answers for a while.
    tokio::time::sleep(OUTAGE.saturating_sub(killed.elapsed())).await;
    let promoting = killed.elapsed();
    pair.promote().await;
    let outage = killed.elapsed();
    eprintln!("failover: promote issued {promoting:?} after the kill, promoted after {outage:?}");

    for i in DONE_BEFORE..BEFORE {
        client
            .enqueue_event(&id(i), "Go", format!("go-{i}"))
            .await
            .unwrap();
    }
    let (failures, longest_call) = driver.await.unwrap();
    assert!(failures.is_empty(), "client calls failed: {failures:?}");
    assert!(
        longest_call > Duration::ZERO,
        "the client task made its calls"
    );

    for i in 0..BEFORE + DURING {
        assert_eq!(wait_output(&client, &id(i)).await, expected(i), "{}", id(i));
        assert_exactly_once(&client, &id(i)).await;
    }
    for (i, before) in &committed {
        let after = history(&client, &id(*i)).await;
        assert_eq!(
            &after,
            before,
            "{}: history committed before the failover",
            id(*i)
        );
    }
    let instances = client_store
        .count_instances_by_status()
        .await
        .unwrap()
        .into_iter()
        .filter(|(_, n)| *n > 0)
        .collect::<HashMap<_, _>>();
    // Each flow and its one child, nothing else, all completed.
    assert_eq!(
        instances,
        HashMap::from([("Completed".to_string(), 2 * (BEFORE + DURING) as u64)]),
        "instances by status"
    );

    // The listener came back on the new primary, and wakes the runtime: a
    // flow whose event is sent (by the client's store, which has no
    // listener of its own) only once it waits for it completes within a
    // fraction of the 60 s its idle fetchers would otherwise wait.
    recorder::until(SCHEMA, "listener reconnected", |m| {
        recorder::get(m, LISTENER, &[]) == Some(1.0)
    })
    .await;
    let reconnects = recorder::get(&recorder::metrics_of(SCHEMA), RECONNECTS, &[]);
    assert!(
        reconnects >= Some(1.0),
        "reconnects counted: {reconnects:?}"
    );
    let last = BEFORE + DURING;
    client
        .start_orchestration(&id(last), "Flow", last.to_string())
        .await
        .unwrap();
    let asked = Instant::now();
    loop {
        let events = client.read_execution_history(&id(last), 1).await.unwrap();
        if events
            .iter()
            .any(|e| matches!(&e.kind, EventKind::QueueSubscribed { .. }))
        {
            break;
        }
        assert!(
            asked.elapsed() < WAIT,
            "{} never reached its event",
            id(last)
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let sent = Instant::now();
    client
        .enqueue_event(&id(last), "Go", format!("go-{last}"))
        .await
        .unwrap();
    assert_eq!(wait_output(&client, &id(last)).await, expected(last));
    let woken_in = sent.elapsed();
    assert!(
        woken_in < Duration::from_secs(5),
        "an event committed after the failover took {woken_in:?} to be processed \
         (fetchers wait {LONG_POLL:?} unless woken)"
    );
    eprintln!(
        "failover: outage (kill to promoted) {outage:?}, longest client call {longest_call:?}, \
         wake-up after it {woken_in:?}"
    );
    runtime.shutdown(None).await;
}

const LISTENER: &str = "duroxide_postgres_listener_connected";
const RECONNECTS: &str = "duroxide_postgres_listener_reconnects_total";

/// A server that stops taking writes (as a primary being demoted does; here
/// `default_transaction_read_only`, which existing sessions pick up at a
/// reload) answers 25006: the store retries the call, and the pooled
/// connection that answered is closed rather than reused, so that the call
/// succeeds on a fresh connection once the server takes writes again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_only_answer_is_retried_on_a_new_connection() {
    let pair = standby::Pair::start().await;
    let app = "duroxide-ro-test";
    let store = Arc::new(
        PostgresProvider::connect(
            &pair.primary_url(),
            PostgresOptions::new()
                .schema("read_only")
                .max_connections(1)
                .long_poll(false)
                .health_sample_interval(None)
                .application_name(app)
                .client_retry_budget(Duration::from_secs(30)),
        )
        .await
        .unwrap(),
    );
    let client = Client::new(store.clone());
    client
        .start_orchestration("before", "Flow", "1")
        .await
        .unwrap();
    let admin = standby::connect(pair.primary_port).await.unwrap();
    let pids =
        |rows: Vec<tokio_postgres::Row>| -> Vec<i32> { rows.iter().map(|r| r.get(0)).collect() };
    let store_pids = "SELECT pid FROM pg_stat_activity WHERE application_name = $1";
    let before = pids(admin.query(store_pids, &[&app]).await.unwrap());
    assert_eq!(
        before.len(),
        1,
        "the store's one pooled connection: {before:?}"
    );

    for sql in [
        "ALTER SYSTEM SET default_transaction_read_only = on",
        "SELECT pg_reload_conf()",
    ] {
        admin.batch_execute(sql).await.unwrap();
    }
    // The reload is asynchronous: once a new session sees the setting, the
    // postmaster has read it and signalled every backend, so the store's
    // connection applies it before its next statement.
    let deadline = Instant::now() + WAIT;
    loop {
        let fresh = standby::connect(pair.primary_port).await.unwrap();
        let row = fresh
            .query_one("SHOW default_transaction_read_only", &[])
            .await
            .unwrap();
        if row.get::<_, String>(0) == "on" {
            break;
        }
        assert!(Instant::now() < deadline, "the reload never took effect");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let call = {
        let client = Client::new(store.clone());
        tokio::spawn(async move { client.start_orchestration("during", "Flow", "2").await })
    };
    // The connection that answered 25006 is closed.
    let deadline = Instant::now() + WAIT;
    while pids(admin.query(store_pids, &[&app]).await.unwrap()).contains(&before[0]) {
        assert!(
            Instant::now() < deadline,
            "the read-only connection was kept"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    if call.is_finished() {
        panic!(
            "the call did not wait for a server that takes writes: {:?}",
            call.await.unwrap()
        );
    }
    for sql in [
        "ALTER SYSTEM RESET default_transaction_read_only",
        "SELECT pg_reload_conf()",
    ] {
        admin.batch_execute(sql).await.unwrap();
    }
    call.await
        .unwrap()
        .expect("the call rode out the read-only period");
    // Applied once: one start message waits for a runtime.
    let queued: i64 = admin
        .query_one(
            "SELECT count(*) FROM read_only.orchestrator_queue WHERE instance_id = 'during'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(queued, 1, "start messages of the retried call");
}
