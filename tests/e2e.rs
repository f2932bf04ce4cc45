//! End-to-end tests: duroxide's real `Runtime` and `Client` running
//! orchestrations on PostgreSQL through `PostgresProvider`.
//!
//! Every test works in a fresh schema (dropped by its `Schemas` guard), waits
//! for outcomes with generous upper bounds only (`WAIT`; never a sleep used as
//! an assertion, never a timing limit), and shuts its runtimes down at the end.

// `common` is shared with other test binaries; not every helper is used here.
#[allow(dead_code)]
mod common;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use duroxide::providers::{Provider, ProviderAdmin};
use duroxide::runtime::registry::ActivityRegistry;
use duroxide::runtime::{Runtime, RuntimeOptions};
use duroxide::{
    ActivityContext, AppErrorKind, Client, ClientError, Either2, ErrorDetails, Event, EventKind,
    OrchestrationContext, OrchestrationRegistry, OrchestrationStatus,
};
use duroxide_postgres::{PostgresOptions, PostgresProvider};

/// Upper bound for any wait; outcomes normally arrive far sooner.
const WAIT: Duration = Duration::from_secs(30);

// ---------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------

/// Runtime options with fast idle polling and a few dispatcher slots.
fn fast_options() -> RuntimeOptions {
    RuntimeOptions {
        dispatcher_min_poll_interval: Duration::from_millis(10),
        orchestration_concurrency: 4,
        worker_concurrency: 4,
        ..Default::default()
    }
}

async fn start_runtime(
    store: &Arc<PostgresProvider>,
    activities: ActivityRegistry,
    orchestrations: OrchestrationRegistry,
    options: RuntimeOptions,
) -> Arc<Runtime> {
    Runtime::start_with_options(store.clone(), activities, orchestrations, options).await
}

fn client_for(store: &Arc<PostgresProvider>) -> Client {
    Client::new(store.clone())
}

/// A runtime on `store` with [`fast_options`], and a client of it.
async fn start_fast(
    store: &Arc<PostgresProvider>,
    activities: ActivityRegistry,
    orchestrations: OrchestrationRegistry,
) -> (Arc<Runtime>, Client) {
    let rt = start_runtime(store, activities, orchestrations, fast_options()).await;
    (rt, client_for(store))
}

/// Two providers (two pools, two LISTEN connections) on one fresh schema.
async fn two_providers(
    prefix: &str,
) -> (
    Arc<PostgresProvider>,
    Arc<PostgresProvider>,
    common::Schemas,
) {
    let schemas = common::Schemas::default();
    let schema = common::unique_schema(prefix);
    schemas.track(&schema);
    let url = common::server::database_url();
    let a = PostgresProvider::connect(&url, PostgresOptions::new().schema(&schema))
        .await
        .expect("connect provider A");
    let b = PostgresProvider::connect(&url, PostgresOptions::new().schema(&schema))
        .await
        .expect("connect provider B");
    (Arc::new(a), Arc::new(b), schemas)
}

/// Starts `instance` of the orchestration `name` with `input`.
async fn start_instance(client: &Client, instance: &str, name: &str, input: &str) {
    client
        .start_orchestration(instance, name, input)
        .await
        .unwrap();
}

/// Waits for `instance` to finish and returns its output; panics otherwise.
async fn wait_completed(client: &Client, instance: &str) -> String {
    match client.wait_for_orchestration(instance, WAIT).await {
        Ok(OrchestrationStatus::Completed { output, .. }) => output,
        other => panic!("{instance}: expected Completed, got {other:?}"),
    }
}

/// [`wait_completed`], with the custom status and its version at completion.
async fn wait_completed_with_status(
    client: &Client,
    instance: &str,
) -> (String, Option<String>, u64) {
    match client.wait_for_orchestration(instance, WAIT).await {
        Ok(OrchestrationStatus::Completed {
            output,
            custom_status,
            custom_status_version,
        }) => (output, custom_status, custom_status_version),
        other => panic!("{instance}: expected Completed, got {other:?}"),
    }
}

/// Waits for `instance` to fail and returns the failure; panics otherwise.
async fn wait_failed(client: &Client, instance: &str) -> ErrorDetails {
    match client.wait_for_orchestration(instance, WAIT).await {
        Ok(OrchestrationStatus::Failed { details, .. }) => details,
        other => panic!("{instance}: expected Failed, got {other:?}"),
    }
}

/// Waits until the latest execution of `instance` has an event matching `pred`.
async fn wait_for_event(
    store: &Arc<PostgresProvider>,
    instance: &str,
    what: &str,
    pred: impl Fn(&EventKind) -> bool,
) {
    let pred = &pred;
    common::wait::until(&format!("{instance}: {what}"), move || async move {
        store
            .read(instance)
            .await
            .map(|h| h.iter().any(|e| pred(&e.kind)))
            .unwrap_or(false)
    })
    .await;
}

/// Waits until the latest execution of `instance` subscribed to the
/// external event `name`.
async fn wait_subscribed(store: &Arc<PostgresProvider>, instance: &str, name: &str) {
    wait_for_event(
        store,
        instance,
        &format!("subscribed to {name}"),
        |k| matches!(k, EventKind::ExternalSubscribed { name: n } if n == name),
    )
    .await;
}

fn count(history: &[Event], pred: impl Fn(&EventKind) -> bool) -> usize {
    history.iter().filter(|e| pred(&e.kind)).count()
}

/// History event ids of one execution are exactly 1..=n, in order.
fn assert_contiguous(instance: &str, history: &[Event]) {
    let ids: Vec<u64> = history.iter().map(|e| e.event_id).collect();
    let expected: Vec<u64> = (1..=history.len() as u64).collect();
    assert_eq!(ids, expected, "{instance}: event ids not contiguous");
}

fn is_cancelled(details: &ErrorDetails) -> bool {
    matches!(
        details,
        ErrorDetails::Application {
            kind: AppErrorKind::Cancelled { .. },
            ..
        }
    )
}

/// Rows of `table` in the store's schema, optionally for one instance.
async fn row_count(
    store: &PostgresProvider,
    db: &tokio_postgres::Client,
    table: &str,
    instance: Option<&str>,
) -> i64 {
    let schema = store.schema();
    let row = match instance {
        Some(id) => {
            db.query_one(
                &format!("SELECT count(*) FROM \"{schema}\".{table} WHERE instance_id = $1"),
                &[&id],
            )
            .await
        }
        None => {
            db.query_one(&format!("SELECT count(*) FROM \"{schema}\".{table}"), &[])
                .await
        }
    };
    row.unwrap_or_else(|e| panic!("count {table}: {e}")).get(0)
}

/// Activities shared by several tests.
fn math_activities() -> duroxide::runtime::registry::ActivityRegistryBuilder {
    ActivityRegistry::builder()
        .register(
            "Double",
            |_ctx: ActivityContext, input: String| async move {
                let n: i64 = input
                    .parse()
                    .map_err(|e| format!("bad input {input}: {e}"))?;
                Ok((n * 2).to_string())
            },
        )
        .register(
            "Square",
            |_ctx: ActivityContext, input: String| async move {
                let n: i64 = input
                    .parse()
                    .map_err(|e| format!("bad input {input}: {e}"))?;
                Ok((n * n).to_string())
            },
        )
        .register("Add", |_ctx: ActivityContext, input: String| async move {
            let mut sum = 0i64;
            for part in input.split(',') {
                sum += part
                    .parse::<i64>()
                    .map_err(|e| format!("bad input {input}: {e}"))?;
            }
            Ok(sum.to_string())
        })
        .register("Fail", |_ctx: ActivityContext, input: String| async move {
            Err(format!("boom:{input}"))
        })
}

// ---------------------------------------------------------------------------
// Activities
// ---------------------------------------------------------------------------

/// A chain feeds each activity's result into the next; a fan-out of ten runs
/// in parallel and is joined; a failing activity's error reaches the
/// orchestration (handled in one, propagated as a failure in another).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn activities_chain_and_fan_out_fan_in() {
    let (store, _schemas) = common::provider("e2e_act", PostgresOptions::new()).await;

    let orchestrations = OrchestrationRegistry::builder()
        .register(
            "Chain",
            |ctx: OrchestrationContext, input: String| async move {
                let doubled = ctx.schedule_activity("Double", input).await?;
                let added = ctx.schedule_activity("Add", format!("{doubled},4")).await?;
                let squared = ctx.schedule_activity("Square", added.clone()).await?;
                Ok(format!("{doubled},{added},{squared}"))
            },
        )
        .register(
            "FanOut",
            |ctx: OrchestrationContext, input: String| async move {
                let n: i64 = input.parse().map_err(|e| format!("{e}"))?;
                let tasks: Vec<_> = (1..=n)
                    .map(|i| ctx.schedule_activity("Square", i.to_string()))
                    .collect();
                let squares = ctx.join(tasks).await;
                let mut parts = Vec::new();
                for s in squares {
                    parts.push(s?);
                }
                let sum = ctx.schedule_activity("Add", parts.join(",")).await?;
                Ok(format!("sum={sum}"))
            },
        )
        .register(
            "FanOutWithFailure",
            |ctx: OrchestrationContext, _input: String| async move {
                let tasks = vec![
                    ctx.schedule_activity("Square", "2"),
                    ctx.schedule_activity("Fail", "x"),
                    ctx.schedule_activity("Square", "3"),
                ];
                let results = ctx.join(tasks).await;
                let rendered: Vec<String> = results
                    .into_iter()
                    .map(|r| match r {
                        Ok(v) => format!("ok:{v}"),
                        Err(e) => format!("err:{e}"),
                    })
                    .collect();
                Ok(rendered.join(";"))
            },
        )
        .register(
            "Propagate",
            |ctx: OrchestrationContext, _input: String| async move {
                ctx.schedule_activity("Fail", "y").await?;
                Ok("unreachable".to_string())
            },
        )
        .build();

    let (rt, client) = start_fast(&store, math_activities().build(), orchestrations).await;

    start_instance(&client, "chain", "Chain", "3").await;
    start_instance(&client, "fan", "FanOut", "10").await;
    start_instance(&client, "fan-fail", "FanOutWithFailure", "").await;
    start_instance(&client, "propagate", "Propagate", "").await;

    // 3*2 = 6; 6+4 = 10; 10*10 = 100.
    assert_eq!(wait_completed(&client, "chain").await, "6,10,100");
    // 1^2 + ... + 10^2 = 385.
    assert_eq!(wait_completed(&client, "fan").await, "sum=385");
    assert_eq!(
        wait_completed(&client, "fan-fail").await,
        "ok:4;err:boom:x;ok:9"
    );
    let details = wait_failed(&client, "propagate").await;
    assert_eq!(details.category(), "application", "{details:?}");
    assert!(
        details.display_message().contains("boom:y"),
        "failure should carry the activity's error: {details:?}"
    );

    // The chain's history: three activities, each scheduled and completed once.
    let chain = client.read_execution_history("chain", 1).await.unwrap();
    assert_contiguous("chain", &chain);
    let scheduled: Vec<(String, String)> = chain
        .iter()
        .filter_map(|e| match &e.kind {
            EventKind::ActivityScheduled { name, input, .. } => Some((name.clone(), input.clone())),
            _ => None,
        })
        .collect();
    assert_eq!(
        scheduled,
        vec![
            ("Double".to_string(), "3".to_string()),
            ("Add".to_string(), "6,4".to_string()),
            ("Square".to_string(), "10".to_string()),
        ]
    );
    let results: Vec<String> = chain
        .iter()
        .filter_map(|e| match &e.kind {
            EventKind::ActivityCompleted { result } => Some(result.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(results, vec!["6", "10", "100"]);

    // The fan-out: ten squares plus the sum, each completed exactly once, and
    // every completion points at a distinct scheduling event.
    let fan = client.read_execution_history("fan", 1).await.unwrap();
    assert_contiguous("fan", &fan);
    assert_eq!(
        count(&fan, |k| matches!(k, EventKind::ActivityScheduled { .. })),
        11
    );
    let sources: BTreeSet<u64> = fan
        .iter()
        .filter(|e| matches!(e.kind, EventKind::ActivityCompleted { .. }))
        .map(|e| e.source_event_id.expect("completion has a source"))
        .collect();
    assert_eq!(sources.len(), 11, "each activity completes exactly once");
    assert_eq!(
        count(&fan, |k| matches!(
            k,
            EventKind::OrchestrationCompleted { .. }
        )),
        1
    );

    let fan_fail = client.read_execution_history("fan-fail", 1).await.unwrap();
    assert_eq!(
        count(&fan_fail, |k| matches!(k, EventKind::ActivityFailed { .. })),
        1
    );
    assert_eq!(
        count(&fan_fail, |k| matches!(
            k,
            EventKind::ActivityCompleted { .. }
        )),
        2
    );

    rt.shutdown(None).await;
}

// ---------------------------------------------------------------------------
// Timers
// ---------------------------------------------------------------------------

/// A single timer, three parallel timers and a timer racing an event that
/// never comes: every timer fires at its recorded time and the orchestration
/// completes only after the last one.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn durable_timers_fire() {
    let (store, _schemas) = common::provider("e2e_timer", PostgresOptions::new()).await;

    let orchestrations = OrchestrationRegistry::builder()
        .register(
            "Timers",
            |ctx: OrchestrationContext, _input: String| async move {
                let before = ctx.utc_now().await?;
                ctx.schedule_timer(Duration::from_millis(400)).await;
                let after = ctx.utc_now().await?;
                let elapsed = after
                    .duration_since(before)
                    .map_err(|e| format!("clock went backwards: {e}"))?;

                let parallel = vec![
                    ctx.schedule_timer(Duration::from_millis(300)),
                    ctx.schedule_timer(Duration::from_millis(100)),
                    ctx.schedule_timer(Duration::from_millis(200)),
                ];
                let fired = ctx.join(parallel).await.len();

                let race = ctx
                    .select2(
                        ctx.schedule_timer(Duration::from_millis(150)),
                        ctx.schedule_wait("NeverRaised"),
                    )
                    .await;
                let winner = match race {
                    Either2::First(()) => "timer",
                    Either2::Second(_) => "event",
                };
                Ok(format!(
                    "slept_at_least_400ms={};parallel={fired};race={winner}",
                    elapsed >= Duration::from_millis(400)
                ))
            },
        )
        .build();

    let (rt, client) =
        start_fast(&store, ActivityRegistry::builder().build(), orchestrations).await;

    start_instance(&client, "timers", "Timers", "").await;
    assert_eq!(
        wait_completed(&client, "timers").await,
        "slept_at_least_400ms=true;parallel=3;race=timer"
    );

    let history = client.read_execution_history("timers", 1).await.unwrap();
    assert_contiguous("timers", &history);
    let created: HashMap<u64, u64> = history
        .iter()
        .filter_map(|e| match e.kind {
            EventKind::TimerCreated { fire_at_ms } => Some((e.event_id, fire_at_ms)),
            _ => None,
        })
        .collect();
    assert_eq!(created.len(), 5, "five timers created");
    let mut fired_sources = BTreeSet::new();
    for e in &history {
        if let EventKind::TimerFired { fire_at_ms } = e.kind {
            let source = e.source_event_id.expect("TimerFired has a source");
            assert_eq!(
                created.get(&source),
                Some(&fire_at_ms),
                "TimerFired must match its TimerCreated"
            );
            assert!(fired_sources.insert(source), "timer {source} fired twice");
        }
    }
    assert_eq!(fired_sources.len(), 5, "all five timers fired");
    // The losing subscription of the race was cancelled, not satisfied.
    assert_eq!(
        count(&history, |k| matches!(k, EventKind::ExternalEvent { .. })),
        0
    );
    assert_eq!(
        count(&history, |k| matches!(
            k,
            EventKind::ExternalSubscribedCancelled { .. }
        )),
        1
    );
    // The orchestration finished no earlier than its last timer's fire time.
    let last_fire = created.values().copied().max().unwrap();
    let completed = history
        .iter()
        .find(|e| matches!(e.kind, EventKind::OrchestrationCompleted { .. }))
        .expect("completed event");
    assert!(
        completed.timestamp_ms >= last_fire,
        "completed at {} before last timer fire time {last_fire}",
        completed.timestamp_ms
    );

    rt.shutdown(None).await;
}

// ---------------------------------------------------------------------------
// External events
// ---------------------------------------------------------------------------

/// An orchestration waits for one event, then races a second event against a
/// long timer; both events raised by the client are delivered with their data.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn external_events_are_delivered() {
    let (store, _schemas) = common::provider("e2e_event", PostgresOptions::new()).await;

    let orchestrations = OrchestrationRegistry::builder()
        .register(
            "Approval",
            |ctx: OrchestrationContext, input: String| async move {
                let approval = ctx.schedule_wait("Approve").await;
                let comment = match ctx
                    .select2(
                        ctx.schedule_wait("Comment"),
                        ctx.schedule_timer(Duration::from_secs(3600)),
                    )
                    .await
                {
                    Either2::First(data) => data,
                    Either2::Second(()) => "timed out".to_string(),
                };
                Ok(format!("{input}:approve={approval};comment={comment}"))
            },
        )
        .build();

    let (rt, client) =
        start_fast(&store, ActivityRegistry::builder().build(), orchestrations).await;

    for id in ["ev-1", "ev-2"] {
        start_instance(&client, id, "Approval", id).await;
    }
    for id in ["ev-1", "ev-2"] {
        wait_subscribed(&store, id, "Approve").await;
    }
    assert!(matches!(
        client.get_orchestration_status("ev-1").await.unwrap(),
        OrchestrationStatus::Running { .. }
    ));

    client
        .raise_event("ev-1", "Approve", "yes-1")
        .await
        .unwrap();
    client
        .raise_event("ev-2", "Approve", "yes-2")
        .await
        .unwrap();
    for id in ["ev-1", "ev-2"] {
        wait_subscribed(&store, id, "Comment").await;
    }
    client
        .raise_event("ev-2", "Comment", "lgtm-2")
        .await
        .unwrap();
    client
        .raise_event("ev-1", "Comment", "lgtm-1")
        .await
        .unwrap();

    assert_eq!(
        wait_completed(&client, "ev-1").await,
        "ev-1:approve=yes-1;comment=lgtm-1"
    );
    assert_eq!(
        wait_completed(&client, "ev-2").await,
        "ev-2:approve=yes-2;comment=lgtm-2"
    );

    let history = client.read_execution_history("ev-1", 1).await.unwrap();
    assert_contiguous("ev-1", &history);
    let events: Vec<(String, String)> = history
        .iter()
        .filter_map(|e| match &e.kind {
            EventKind::ExternalEvent { name, data } => Some((name.clone(), data.clone())),
            _ => None,
        })
        .collect();
    assert_eq!(
        events,
        vec![
            ("Approve".to_string(), "yes-1".to_string()),
            ("Comment".to_string(), "lgtm-1".to_string()),
        ]
    );

    rt.shutdown(None).await;
}

// ---------------------------------------------------------------------------
// Sub-orchestrations
// ---------------------------------------------------------------------------

/// A parent fans out three children, runs one with an explicit id, and sees a
/// failing child's error; the children are recorded with their parent.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sub_orchestrations_return_results_to_parent() {
    let (store, _schemas) = common::provider("e2e_sub", PostgresOptions::new()).await;

    let orchestrations = OrchestrationRegistry::builder()
        .register(
            "Child",
            |ctx: OrchestrationContext, input: String| async move {
                let squared = ctx.schedule_activity("Square", input.clone()).await?;
                Ok(format!("child{input}={squared}"))
            },
        )
        .register(
            "FailingChild",
            |_ctx: OrchestrationContext, input: String| async move {
                Err(format!("child broke on {input}"))
            },
        )
        .register(
            "Parent",
            |ctx: OrchestrationContext, _input: String| async move {
                let children: Vec<_> = (1..=3)
                    .map(|i| ctx.schedule_sub_orchestration("Child", i.to_string()))
                    .collect();
                let mut outputs = Vec::new();
                for r in ctx.join(children).await {
                    outputs.push(r?);
                }
                let explicit = ctx
                    .schedule_sub_orchestration_with_id("Child", "explicit-child", "7")
                    .await?;
                let failed = match ctx.schedule_sub_orchestration("FailingChild", "z").await {
                    Ok(v) => format!("unexpected ok {v}"),
                    Err(e) => format!("err={e}"),
                };
                Ok(format!("{}|{explicit}|{failed}", outputs.join(",")))
            },
        )
        .build();

    let (rt, client) = start_fast(&store, math_activities().build(), orchestrations).await;

    start_instance(&client, "parent", "Parent", "").await;
    let output = wait_completed(&client, "parent").await;
    let (ok_part, err_part) = output.split_at(output.find("|err=").expect("err part"));
    assert_eq!(ok_part, "child1=1,child2=4,child3=9|child7=49");
    assert!(
        err_part.contains("child broke on z"),
        "failing child's error reaches the parent: {output}"
    );

    let history = client.read_execution_history("parent", 1).await.unwrap();
    assert_contiguous("parent", &history);
    assert_eq!(
        count(&history, |k| matches!(
            k,
            EventKind::SubOrchestrationScheduled { .. }
        )),
        5
    );
    assert_eq!(
        count(&history, |k| matches!(
            k,
            EventKind::SubOrchestrationCompleted { .. }
        )),
        4
    );
    assert_eq!(
        count(&history, |k| matches!(
            k,
            EventKind::SubOrchestrationFailed { .. }
        )),
        1
    );

    // Every child is an instance of its own, linked to the parent.
    let tree = client.get_instance_tree("parent").await.unwrap();
    assert_eq!(tree.size(), 6, "parent + 5 children: {:?}", tree.all_ids);
    let mut completed = 0;
    let mut failed = 0;
    for child in tree.all_ids.iter().filter(|id| *id != "parent") {
        let info = client.get_instance_info(child).await.unwrap();
        assert_eq!(
            info.parent_instance_id.as_deref(),
            Some("parent"),
            "{child}"
        );
        match info.status.as_str() {
            "Completed" => completed += 1,
            "Failed" => failed += 1,
            other => panic!("{child}: unexpected status {other}"),
        }
    }
    assert_eq!((completed, failed), (4, 1));
    let explicit = client.get_instance_info("explicit-child").await.unwrap();
    assert_eq!(explicit.orchestration_name, "Child");
    assert_eq!(explicit.output.as_deref(), Some("child7=49"));

    rt.shutdown(None).await;
}

// ---------------------------------------------------------------------------
// Continue-as-new
// ---------------------------------------------------------------------------

/// A counter continues as new four times: five executions, the first four
/// `ContinuedAsNew` with the next input, the last `Completed`.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn continue_as_new_creates_executions() {
    let (store, _schemas) = common::provider("e2e_can", PostgresOptions::new()).await;

    let orchestrations = OrchestrationRegistry::builder()
        .register(
            "Counter",
            |ctx: OrchestrationContext, input: String| async move {
                let n: u64 = input.parse().map_err(|e| format!("{e}"))?;
                let doubled = ctx.schedule_activity("Double", n.to_string()).await?;
                if n < 4 {
                    return ctx.continue_as_new((n + 1).to_string()).await;
                }
                Ok(format!("final={n};doubled={doubled}"))
            },
        )
        .build();

    let (rt, client) = start_fast(&store, math_activities().build(), orchestrations).await;

    start_instance(&client, "counter", "Counter", "0").await;
    // The status of an instance is that of its latest execution: wait until
    // the fifth one exists, then for it to complete.
    common::wait::until("fifth execution exists", || async {
        client
            .list_executions("counter")
            .await
            .map(|e| e.len() == 5)
            .unwrap_or(false)
    })
    .await;
    assert_eq!(
        wait_completed(&client, "counter").await,
        "final=4;doubled=8"
    );

    assert_eq!(
        client.list_executions("counter").await.unwrap(),
        vec![1, 2, 3, 4, 5]
    );
    assert_eq!(
        store
            .list_executions("counter")
            .await
            .expect("ProviderAdmin::list_executions"),
        vec![1, 2, 3, 4, 5]
    );
    let info = client.get_instance_info("counter").await.unwrap();
    assert_eq!(info.current_execution_id, 5);
    assert_eq!(info.status, "Completed");

    for exec in 1..=5u64 {
        let exec_info = client.get_execution_info("counter", exec).await.unwrap();
        let history = client
            .read_execution_history("counter", exec)
            .await
            .unwrap();
        assert_contiguous(&format!("counter#{exec}"), &history);
        assert!(
            history.iter().all(|e| e.execution_id == exec),
            "events of execution {exec} carry its id"
        );
        match &history.first().expect("non-empty").kind {
            EventKind::OrchestrationStarted { input, .. } => {
                assert_eq!(input, &(exec - 1).to_string(), "input of execution {exec}")
            }
            other => panic!("execution {exec} starts with {other:?}"),
        }
        if exec < 5 {
            assert_eq!(exec_info.status, "ContinuedAsNew", "execution {exec}");
            match &history.last().unwrap().kind {
                EventKind::OrchestrationContinuedAsNew { input } => {
                    assert_eq!(input, &exec.to_string())
                }
                other => panic!("execution {exec} ends with {other:?}"),
            }
        } else {
            assert_eq!(exec_info.status, "Completed");
            assert!(matches!(
                history.last().unwrap().kind,
                EventKind::OrchestrationCompleted { .. }
            ));
        }
        assert_eq!(
            count(&history, |k| matches!(
                k,
                EventKind::ActivityCompleted { .. }
            )),
            1,
            "execution {exec} ran its activity once"
        );
    }

    rt.shutdown(None).await;
}

// ---------------------------------------------------------------------------
// Cancellation
// ---------------------------------------------------------------------------

/// Cancelling a parent waiting on a child (which waits for an event) fails
/// both as cancelled; cancelling a completed instance changes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn cancel_instance_fails_it_as_cancelled() {
    let (store, _schemas) = common::provider("e2e_cancel", PostgresOptions::new()).await;

    let orchestrations = OrchestrationRegistry::builder()
        .register(
            "Waiter",
            |ctx: OrchestrationContext, _input: String| async move {
                let data = ctx.schedule_wait("Go").await;
                Ok(format!("got {data}"))
            },
        )
        .register(
            "Parent",
            |ctx: OrchestrationContext, _input: String| async move {
                let out = ctx
                    .schedule_sub_orchestration_with_id("Waiter", "cancel-child", "")
                    .await?;
                Ok(format!("parent saw {out}"))
            },
        )
        .register(
            "Quick",
            |_ctx: OrchestrationContext, input: String| async move { Ok(input) },
        )
        .build();

    let (rt, client) =
        start_fast(&store, ActivityRegistry::builder().build(), orchestrations).await;

    start_instance(&client, "cancel-parent", "Parent", "").await;
    wait_subscribed(&store, "cancel-child", "Go").await;

    client
        .cancel_instance("cancel-parent", "by test")
        .await
        .unwrap();

    let details = wait_failed(&client, "cancel-parent").await;
    match &details {
        ErrorDetails::Application {
            kind: AppErrorKind::Cancelled { reason },
            ..
        } => assert_eq!(reason, "by test"),
        other => panic!("parent: expected Cancelled, got {other:?}"),
    }
    assert_eq!(details.display_message(), "canceled: by test");
    let history = client
        .read_execution_history("cancel-parent", 1)
        .await
        .unwrap();
    assert!(history.iter().any(|e| matches!(
        &e.kind,
        EventKind::OrchestrationCancelRequested { reason } if reason == "by test"
    )));
    assert_eq!(
        count(&history, |k| matches!(
            k,
            EventKind::OrchestrationFailed { .. }
        )),
        1
    );

    // The cancellation propagates to the child.
    let child = wait_failed(&client, "cancel-child").await;
    assert!(
        is_cancelled(&child),
        "child: expected Cancelled, got {child:?}"
    );
    let child_history = client
        .read_execution_history("cancel-child", 1)
        .await
        .unwrap();
    assert!(child_history
        .iter()
        .any(|e| matches!(e.kind, EventKind::OrchestrationCancelRequested { .. })));
    assert_eq!(
        count(&child_history, |k| matches!(
            k,
            EventKind::ExternalEvent { .. }
        )),
        0
    );

    // Cancelling a completed instance is a no-op.
    start_instance(&client, "quick", "Quick", "fine").await;
    assert_eq!(wait_completed(&client, "quick").await, "fine");
    client.cancel_instance("quick", "too late").await.unwrap();
    let db = common::admin_client().await;
    common::wait::until("the late cancel was consumed", || async {
        row_count(&store, &db, "orchestrator_queue", Some("quick")).await == 0
    })
    .await;
    assert!(matches!(
        client.get_orchestration_status("quick").await.unwrap(),
        OrchestrationStatus::Completed { output, .. } if output == "fine"
    ));

    rt.shutdown(None).await;
}

/// Cancelling an orchestration while its activity runs signals the activity's
/// cancellation token and leaves no work item behind.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn cancel_signals_in_flight_activity() {
    let (store, _schemas) = common::provider("e2e_cancel_act", PostgresOptions::new()).await;

    let (started_tx, mut started_rx) = tokio::sync::mpsc::unbounded_channel::<String>();
    let (cancelled_tx, mut cancelled_rx) = tokio::sync::mpsc::unbounded_channel::<String>();
    let activities = ActivityRegistry::builder()
        .register("Long", move |ctx: ActivityContext, _input: String| {
            let started = started_tx.clone();
            let cancelled = cancelled_tx.clone();
            async move {
                let _ = started.send(ctx.instance_id().to_string());
                tokio::select! {
                    _ = ctx.cancelled() => {
                        let _ = cancelled.send(ctx.instance_id().to_string());
                        Ok("cancelled".to_string())
                    }
                    _ = tokio::time::sleep(Duration::from_secs(120)) => Ok("finished".to_string()),
                }
            }
        })
        .build();
    let orchestrations = OrchestrationRegistry::builder()
        .register(
            "RunLong",
            |ctx: OrchestrationContext, _input: String| async move {
                let out = ctx.schedule_activity("Long", "").await?;
                Ok(format!("activity returned {out}"))
            },
        )
        .build();

    let options = RuntimeOptions {
        // Short worker leases: the renewal notices the cancellation quickly.
        worker_lock_timeout: Duration::from_secs(2),
        worker_lock_renewal_buffer: Duration::from_millis(500),
        activity_cancellation_grace_period: Duration::from_secs(5),
        ..fast_options()
    };
    let rt = start_runtime(&store, activities, orchestrations, options).await;
    let client = client_for(&store);

    start_instance(&client, "long-1", "RunLong", "").await;
    let started = tokio::time::timeout(WAIT, started_rx.recv())
        .await
        .expect("activity started")
        .unwrap();
    assert_eq!(started, "long-1");

    client.cancel_instance("long-1", "stop it").await.unwrap();

    let details = wait_failed(&client, "long-1").await;
    assert!(
        matches!(
            &details,
            ErrorDetails::Application { kind: AppErrorKind::Cancelled { reason }, .. } if reason == "stop it"
        ),
        "expected Cancelled, got {details:?}"
    );
    let cancelled = tokio::time::timeout(WAIT, cancelled_rx.recv())
        .await
        .expect("activity observed its cancellation")
        .unwrap();
    assert_eq!(cancelled, "long-1");

    let db = common::admin_client().await;
    common::wait::until("no worker item left for long-1", || async {
        row_count(&store, &db, "worker_queue", Some("long-1")).await == 0
    })
    .await;
    // The activity never ran again and its late result changed nothing.
    assert!(started_rx.try_recv().is_err(), "activity ran twice");
    let history = client.read_execution_history("long-1", 1).await.unwrap();
    assert_eq!(
        count(&history, |k| matches!(
            k,
            EventKind::ActivityCompleted { .. }
        )),
        0
    );
    assert_eq!(
        count(&history, |k| matches!(
            k,
            EventKind::OrchestrationFailed { details } if is_cancelled(details)
        )),
        1
    );
    // The runtime recorded that it cancelled the outstanding activity.
    let scheduled = history
        .iter()
        .find(|e| matches!(e.kind, EventKind::ActivityScheduled { .. }))
        .expect("activity scheduled")
        .event_id;
    assert!(
        history.iter().any(
            |e| matches!(e.kind, EventKind::ActivityCancelRequested { .. })
                && e.source_event_id == Some(scheduled)
        ),
        "{history:#?}"
    );

    rt.shutdown(None).await;
}

// ---------------------------------------------------------------------------
// Sessions
// ---------------------------------------------------------------------------

/// Session-bound activities (`schedule_activity_on_session`) from several
/// orchestrations, served by two runtimes on one database: every activity of a
/// session runs on the runtime that owns the session, each exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sessions_pin_activities_to_one_worker() {
    let (store_a, store_b, _schemas) = two_providers("e2e_sess").await;

    // (session, node, instance/input) for every activity execution.
    type Log = Arc<Mutex<Vec<(String, String, String)>>>;
    let log: Log = Arc::default();

    fn activities(node: &'static str, log: Log) -> ActivityRegistry {
        ActivityRegistry::builder()
            .register("Work", move |ctx: ActivityContext, input: String| {
                let log = log.clone();
                async move {
                    let session = ctx
                        .session_id()
                        .ok_or_else(|| "activity has no session id".to_string())?
                        .to_string();
                    log.lock().unwrap().push((
                        session.clone(),
                        node.to_string(),
                        format!("{}/{input}", ctx.instance_id()),
                    ));
                    Ok(format!("{input}@{session}"))
                }
            })
            .build()
    }
    fn orchestrations() -> OrchestrationRegistry {
        OrchestrationRegistry::builder()
            .register(
                "SessionOrch",
                |ctx: OrchestrationContext, input: String| async move {
                    let n: u32 = input.parse().map_err(|e| format!("{e}"))?;
                    let session = format!("sess-{}", n % 3);
                    let first = ctx
                        .schedule_activity_on_session("Work", "1", session.clone())
                        .await?;
                    let fan = vec![
                        ctx.schedule_activity_on_session("Work", "2a", session.clone()),
                        ctx.schedule_activity_on_session("Work", "2b", session.clone()),
                    ];
                    let mut parts = vec![first];
                    for r in ctx.join(fan).await {
                        parts.push(r?);
                    }
                    parts.push(
                        ctx.schedule_activity_on_session("Work", "3", session.clone())
                            .await?,
                    );
                    Ok(parts.join(","))
                },
            )
            .build()
    }
    let options = |node: &str| RuntimeOptions {
        worker_node_id: Some(node.to_string()),
        ..fast_options()
    };

    let rt_a = start_runtime(
        &store_a,
        activities("node-A", log.clone()),
        orchestrations(),
        options("node-A"),
    )
    .await;
    let rt_b = start_runtime(
        &store_b,
        activities("node-B", log.clone()),
        orchestrations(),
        options("node-B"),
    )
    .await;
    let client = client_for(&store_a);

    const N: u32 = 9;
    for n in 0..N {
        client
            .start_orchestration(format!("sess-orch-{n}"), "SessionOrch", n.to_string())
            .await
            .unwrap();
    }
    for n in 0..N {
        let s = format!("sess-{}", n % 3);
        assert_eq!(
            wait_completed(&client, &format!("sess-orch-{n}")).await,
            format!("1@{s},2a@{s},2b@{s},3@{s}")
        );
    }

    let log = log.lock().unwrap().clone();
    assert_eq!(
        log.len(),
        (N * 4) as usize,
        "each activity ran exactly once"
    );
    let distinct: BTreeSet<&String> = log.iter().map(|(_, _, what)| what).collect();
    assert_eq!(distinct.len(), log.len(), "no activity ran twice: {log:?}");

    // Every session was served by exactly one runtime.
    let mut nodes_by_session: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (session, node, _) in &log {
        nodes_by_session
            .entry(session.clone())
            .or_default()
            .insert(node.clone());
    }
    assert_eq!(nodes_by_session.len(), 3);
    for (session, nodes) in &nodes_by_session {
        assert_eq!(nodes.len(), 1, "{session} ran on {nodes:?}");
    }

    // The store records the same owner for each session.
    let db = common::admin_client().await;
    let rows = db
        .query(
            &format!(
                "SELECT session_id, worker_id FROM \"{}\".sessions",
                store_a.schema()
            ),
            &[],
        )
        .await
        .unwrap();
    let owners: BTreeMap<String, String> = rows
        .iter()
        .map(|r| (r.get::<_, String>(0), r.get::<_, String>(1)))
        .collect();
    for (session, nodes) in &nodes_by_session {
        assert_eq!(
            owners.get(session),
            nodes.iter().next(),
            "owner of {session} in the sessions table"
        );
    }

    // The session id is recorded with each scheduled activity.
    let history = client
        .read_execution_history("sess-orch-4", 1)
        .await
        .unwrap();
    let sessions: Vec<Option<String>> = history
        .iter()
        .filter_map(|e| match &e.kind {
            EventKind::ActivityScheduled { session_id, .. } => Some(session_id.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(sessions, vec![Some("sess-1".to_string()); 4]);

    rt_a.shutdown(None).await;
    rt_b.shutdown(None).await;
}

// ---------------------------------------------------------------------------
// Key-value store
// ---------------------------------------------------------------------------

/// Values set by an orchestration are readable by the client while it runs
/// and after it completes, survive continue-as-new, honour clears, and are
/// readable from another orchestration.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kv_values_visible_to_client_and_across_executions() {
    let (store, _schemas) = common::provider("e2e_kv", PostgresOptions::new()).await;

    let orchestrations = OrchestrationRegistry::builder()
        .register(
            "Kv",
            |ctx: OrchestrationContext, input: String| async move {
                if input == "first" {
                    ctx.set_kv_value("color", "blue");
                    ctx.set_kv_value("size", "L");
                    ctx.set_kv_value("temp", "scratch");
                    ctx.schedule_wait("Next").await;
                    ctx.clear_kv_value("temp");
                    ctx.set_kv_value("size", "XL");
                    return ctx.continue_as_new("second").await;
                }
                // Second execution: the first one's values are still there.
                let color = ctx.get_kv_value("color");
                let size = ctx.get_kv_value("size");
                let temp = ctx.get_kv_value("temp");
                let summary = format!("{color:?}/{size:?}/{temp:?}");
                ctx.set_kv_value("summary", summary.clone());
                Ok(summary)
            },
        )
        .register(
            "KvReader",
            |ctx: OrchestrationContext, input: String| async move {
                let color = ctx
                    .get_kv_value_from_instance(input.clone(), "color")
                    .await?;
                let missing = ctx.get_kv_value_from_instance(input, "temp").await?;
                Ok(format!("{color:?}/{missing:?}"))
            },
        )
        .build();

    let (rt, client) =
        start_fast(&store, ActivityRegistry::builder().build(), orchestrations).await;

    start_instance(&client, "kv", "Kv", "first").await;
    wait_subscribed(&store, "kv", "Next").await;
    // While the first execution runs, its values are visible.
    assert_eq!(
        client.wait_for_kv_value("kv", "color", WAIT).await.unwrap(),
        "blue"
    );
    assert_eq!(
        client.get_kv_value("kv", "size").await.unwrap().as_deref(),
        Some("L")
    );
    assert_eq!(
        client.get_kv_value("kv", "temp").await.unwrap().as_deref(),
        Some("scratch")
    );
    assert_eq!(client.get_kv_value("kv", "nope").await.unwrap(), None);

    client.raise_event("kv", "Next", "").await.unwrap();
    common::wait::until("second execution exists", || async {
        client
            .list_executions("kv")
            .await
            .map(|e| e.len() == 2)
            .unwrap_or(false)
    })
    .await;
    assert_eq!(
        wait_completed(&client, "kv").await,
        r#"Some("blue")/Some("XL")/None"#
    );

    assert_eq!(
        client.get_kv_value("kv", "color").await.unwrap().as_deref(),
        Some("blue")
    );
    assert_eq!(
        store.get_kv_value("kv", "size").await.unwrap().as_deref(),
        Some("XL")
    );
    assert_eq!(client.get_kv_value("kv", "temp").await.unwrap(), None);
    let all = client.get_kv_all_values("kv").await.unwrap();
    let expected: HashMap<String, String> = [
        ("color", "blue"),
        ("size", "XL"),
        ("summary", r#"Some("blue")/Some("XL")/None"#),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    assert_eq!(all, expected);

    start_instance(&client, "kv-reader", "KvReader", "kv").await;
    assert_eq!(
        wait_completed(&client, "kv-reader").await,
        r#"Some("blue")/None"#
    );

    rt.shutdown(None).await;
}

// ---------------------------------------------------------------------------
// Custom status
// ---------------------------------------------------------------------------

/// Custom status set by the orchestration is reported by the client while it
/// runs (with an increasing version) and kept at completion; a reset clears it.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn custom_status_reported_to_client() {
    let (store, _schemas) = common::provider("e2e_status", PostgresOptions::new()).await;

    let orchestrations = OrchestrationRegistry::builder()
        .register(
            "Progress",
            |ctx: OrchestrationContext, _input: String| async move {
                ctx.set_custom_status("step 1: waiting");
                ctx.schedule_wait("Go").await;
                ctx.set_custom_status("step 2: working");
                let doubled = ctx.schedule_activity("Double", "21").await?;
                ctx.set_custom_status("step 3: done");
                Ok(doubled)
            },
        )
        .register(
            "Resetting",
            |ctx: OrchestrationContext, _input: String| async move {
                ctx.set_custom_status("temporary");
                ctx.schedule_activity("Double", "1").await?;
                ctx.reset_custom_status();
                Ok("reset".to_string())
            },
        )
        .build();

    let (rt, client) = start_fast(&store, math_activities().build(), orchestrations).await;

    start_instance(&client, "progress", "Progress", "").await;
    let first_version = match client
        .wait_for_status_change("progress", 0, Duration::from_millis(20), WAIT)
        .await
        .unwrap()
    {
        OrchestrationStatus::Running {
            custom_status,
            custom_status_version,
        } => {
            assert_eq!(custom_status.as_deref(), Some("step 1: waiting"));
            assert!(custom_status_version >= 1);
            custom_status_version
        }
        other => panic!("expected Running with a custom status, got {other:?}"),
    };
    wait_subscribed(&store, "progress", "Go").await;
    assert!(matches!(
        client.get_orchestration_status("progress").await.unwrap(),
        OrchestrationStatus::Running { custom_status: Some(s), custom_status_version }
            if s == "step 1: waiting" && custom_status_version == first_version
    ));

    client.raise_event("progress", "Go", "").await.unwrap();
    let (output, custom_status, custom_status_version) =
        wait_completed_with_status(&client, "progress").await;
    assert_eq!(output, "42");
    assert_eq!(custom_status.as_deref(), Some("step 3: done"));
    assert!(
        custom_status_version >= first_version + 2,
        "two more updates after version {first_version}, got {custom_status_version}"
    );
    let history = client.read_execution_history("progress", 1).await.unwrap();
    let updates: Vec<Option<String>> = history
        .iter()
        .filter_map(|e| match &e.kind {
            EventKind::CustomStatusUpdated { status } => Some(status.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(
        updates,
        vec![
            Some("step 1: waiting".to_string()),
            Some("step 2: working".to_string()),
            Some("step 3: done".to_string()),
        ]
    );

    start_instance(&client, "resetting", "Resetting", "").await;
    let (output, custom_status, custom_status_version) =
        wait_completed_with_status(&client, "resetting").await;
    assert_eq!(output, "reset");
    assert_eq!(custom_status, None, "reset clears the status");
    assert!(custom_status_version >= 2, "set and reset both count");

    rt.shutdown(None).await;
}

// ---------------------------------------------------------------------------
// Deletion
// ---------------------------------------------------------------------------

/// A completed instance is deleted with everything it stored; a running one is
/// refused without force (`InstanceStillRunning`) and deleted with force; a
/// child cannot be deleted on its own but goes with its root.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn delete_instances_via_client() {
    let (store, _schemas) = common::provider("e2e_delete", PostgresOptions::new()).await;

    let orchestrations = OrchestrationRegistry::builder()
        .register(
            "Done",
            |ctx: OrchestrationContext, input: String| async move {
                ctx.set_kv_value("k", "v");
                ctx.set_custom_status("finishing");
                ctx.schedule_activity("Double", input).await
            },
        )
        .register(
            "Waiting",
            |ctx: OrchestrationContext, _input: String| async move {
                Ok(ctx.schedule_wait("Never").await)
            },
        )
        .register(
            "Child",
            |ctx: OrchestrationContext, input: String| async move {
                ctx.schedule_activity("Square", input).await
            },
        )
        .register(
            "Root",
            |ctx: OrchestrationContext, _input: String| async move {
                let a = ctx
                    .schedule_sub_orchestration_with_id("Child", "del-child", "5")
                    .await?;
                Ok(format!("child={a}"))
            },
        )
        .build();

    let (rt, client) = start_fast(&store, math_activities().build(), orchestrations).await;
    let db = common::admin_client().await;

    // Completed: deleted with its history, executions and KV.
    start_instance(&client, "done", "Done", "4").await;
    assert_eq!(wait_completed(&client, "done").await, "8");
    assert_eq!(row_count(&store, &db, "kv_store", Some("done")).await, 1);
    let deleted = client.delete_instance("done", false).await.unwrap();
    assert_eq!(deleted.instances_deleted, 1);
    assert_eq!(deleted.executions_deleted, 1);
    assert!(deleted.events_deleted >= 4, "{deleted:?}");
    assert!(matches!(
        client.get_orchestration_status("done").await.unwrap(),
        OrchestrationStatus::NotFound
    ));
    assert!(client.get_instance_info("done").await.is_err());
    assert!(!client
        .list_all_instances()
        .await
        .unwrap()
        .contains(&"done".to_string()));
    assert_eq!(client.get_kv_value("done", "k").await.unwrap(), None);
    for table in ["instances", "executions", "history", "kv_store", "kv_delta"] {
        assert_eq!(
            row_count(&store, &db, table, Some("done")).await,
            0,
            "{table} still has rows for the deleted instance"
        );
    }
    // Deleting it again: not found.
    assert!(matches!(
        client.delete_instance("done", false).await,
        Err(ClientError::InstanceNotFound { instance_id }) if instance_id == "done"
    ));

    // Running: refused without force, deleted with force.
    start_instance(&client, "waiting", "Waiting", "").await;
    wait_for_event(&store, "waiting", "subscribed to Never", |k| {
        matches!(k, EventKind::ExternalSubscribed { .. })
    })
    .await;
    match client.delete_instance("waiting", false).await {
        Err(ClientError::InstanceStillRunning { instance_id }) => {
            assert_eq!(instance_id, "waiting")
        }
        other => panic!("expected InstanceStillRunning, got {other:?}"),
    }
    assert!(matches!(
        client.get_orchestration_status("waiting").await.unwrap(),
        OrchestrationStatus::Running { .. }
    ));
    let forced = client.delete_instance("waiting", true).await.unwrap();
    assert_eq!(forced.instances_deleted, 1);
    assert!(matches!(
        client.get_orchestration_status("waiting").await.unwrap(),
        OrchestrationStatus::NotFound
    ));

    // A child is deleted only through its root.
    start_instance(&client, "root", "Root", "").await;
    assert_eq!(wait_completed(&client, "root").await, "child=25");
    assert!(matches!(
        client.delete_instance("del-child", false).await,
        Err(ClientError::CannotDeleteSubOrchestration { instance_id }) if instance_id == "del-child"
    ));
    assert_eq!(wait_completed(&client, "del-child").await, "25");
    let tree = client.delete_instance("root", false).await.unwrap();
    assert_eq!(tree.instances_deleted, 2);
    for id in ["root", "del-child"] {
        assert!(matches!(
            client.get_orchestration_status(id).await.unwrap(),
            OrchestrationStatus::NotFound
        ));
        assert_eq!(row_count(&store, &db, "history", Some(id)).await, 0);
    }

    // The runtime keeps working after the deletions.
    start_instance(&client, "after", "Done", "50").await;
    assert_eq!(wait_completed(&client, "after").await, "100");

    rt.shutdown(None).await;
}

// ---------------------------------------------------------------------------
// Two runtimes on one database
// ---------------------------------------------------------------------------

/// Two runtimes with separate providers on one schema run 40 orchestrations
/// (an activity, a fan-out of three, a timer, a last activity): every
/// orchestration completes with the right output, every activity runs exactly
/// once, and every history is a single clean run.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_runtimes_process_each_instance_once() {
    let (store_a, store_b, _schemas) = two_providers("e2e_two").await;

    // "instance/input" -> executions, shared by both runtimes' activities.
    let runs: Arc<Mutex<HashMap<String, u32>>> = Arc::default();
    let per_runtime = [Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0))];

    fn activities(
        runs: Arc<Mutex<HashMap<String, u32>>>,
        mine: Arc<AtomicUsize>,
    ) -> ActivityRegistry {
        ActivityRegistry::builder()
            .register("Record", move |ctx: ActivityContext, input: String| {
                let runs = runs.clone();
                let mine = mine.clone();
                async move {
                    *runs
                        .lock()
                        .unwrap()
                        .entry(format!("{}/{input}", ctx.instance_id()))
                        .or_insert(0) += 1;
                    mine.fetch_add(1, Ordering::SeqCst);
                    Ok(format!("<{input}>"))
                }
            })
            .build()
    }
    fn orchestrations() -> OrchestrationRegistry {
        OrchestrationRegistry::builder()
            .register(
                "Pipeline",
                |ctx: OrchestrationContext, n: String| async move {
                    let first = ctx
                        .schedule_activity("Record", format!("{n}:first"))
                        .await?;
                    let fan: Vec<_> = (0..3)
                        .map(|i| ctx.schedule_activity("Record", format!("{n}:fan{i}")))
                        .collect();
                    let mut fanned = Vec::new();
                    for r in ctx.join(fan).await {
                        fanned.push(r?);
                    }
                    ctx.schedule_timer(Duration::from_millis(20)).await;
                    let last = ctx.schedule_activity("Record", format!("{n}:last")).await?;
                    Ok(format!("{first}|{}|{last}", fanned.join(",")))
                },
            )
            .build()
    }

    let rt_a = start_runtime(
        &store_a,
        activities(runs.clone(), per_runtime[0].clone()),
        orchestrations(),
        fast_options(),
    )
    .await;
    let rt_b = start_runtime(
        &store_b,
        activities(runs.clone(), per_runtime[1].clone()),
        orchestrations(),
        fast_options(),
    )
    .await;
    let client_a = client_for(&store_a);
    let client_b = client_for(&store_b);

    const N: usize = 40;
    let id = |n: usize| format!("pipe-{n:02}");
    for n in 0..N {
        // Half the starts go through each provider.
        let client = if n % 2 == 0 { &client_a } else { &client_b };
        client
            .start_orchestration(id(n), "Pipeline", n.to_string())
            .await
            .unwrap();
    }
    for n in 0..N {
        assert_eq!(
            wait_completed(&client_a, &id(n)).await,
            format!("<{n}:first>|<{n}:fan0>,<{n}:fan1>,<{n}:fan2>|<{n}:last>")
        );
    }

    // Every activity ran exactly once, on one of the two runtimes.
    let runs = runs.lock().unwrap().clone();
    let expected: BTreeSet<String> = (0..N)
        .flat_map(|n| {
            ["first", "fan0", "fan1", "fan2", "last"]
                .into_iter()
                .map(move |step| format!("{}/{n}:{step}", id(n)))
        })
        .collect();
    assert_eq!(
        runs.keys().cloned().collect::<BTreeSet<_>>(),
        expected,
        "the set of activities that ran"
    );
    let repeated: Vec<_> = runs.iter().filter(|(_, c)| **c != 1).collect();
    assert!(
        repeated.is_empty(),
        "activities not run exactly once: {repeated:?}"
    );
    let (a, b) = (
        per_runtime[0].load(Ordering::SeqCst),
        per_runtime[1].load(Ordering::SeqCst),
    );
    assert_eq!(a + b, N * 5);
    eprintln!("activities run by runtime A: {a}, by runtime B: {b}");

    // Each history is one clean run: contiguous ids, one start, one
    // completion, five activities each scheduled and completed once.
    for n in 0..N {
        let instance = id(n);
        assert_eq!(client_b.list_executions(&instance).await.unwrap(), vec![1]);
        let history = client_b.read_execution_history(&instance, 1).await.unwrap();
        assert_contiguous(&instance, &history);
        let kinds = |pred: fn(&EventKind) -> bool| count(&history, pred);
        assert_eq!(
            kinds(|k| matches!(k, EventKind::OrchestrationStarted { .. })),
            1
        );
        assert_eq!(
            kinds(|k| matches!(k, EventKind::OrchestrationCompleted { .. })),
            1
        );
        assert_eq!(
            kinds(|k| matches!(k, EventKind::ActivityScheduled { .. })),
            5
        );
        assert_eq!(
            kinds(|k| matches!(k, EventKind::ActivityCompleted { .. })),
            5
        );
        assert_eq!(kinds(|k| matches!(k, EventKind::TimerFired { .. })), 1);
        let completion_sources: BTreeSet<u64> = history
            .iter()
            .filter(|e| matches!(e.kind, EventKind::ActivityCompleted { .. }))
            .filter_map(|e| e.source_event_id)
            .collect();
        assert_eq!(
            completion_sources.len(),
            5,
            "{instance}: duplicate completion"
        );
    }

    // Nothing is left queued.
    let db = common::admin_client().await;
    assert_eq!(row_count(&store_a, &db, "worker_queue", None).await, 0);
    assert_eq!(
        row_count(&store_a, &db, "orchestrator_queue", None).await,
        0
    );
    let metrics = client_a.get_system_metrics().await.unwrap();
    assert_eq!(metrics.total_instances, N as u64);
    assert_eq!(metrics.completed_instances, N as u64);

    rt_a.shutdown(None).await;
    rt_b.shutdown(None).await;
}
