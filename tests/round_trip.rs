//! Data round trips, long polling and error classification, seen only
//! through duroxide's `Provider` trait, against a real PostgreSQL server.

#[allow(dead_code)]
mod common;

use common::items::{
    activity, completed, first_turn_metadata, start, started_event, tagged_activity,
};
use duroxide::providers::{ExecutionMetadata, Provider, ProviderError, TagFilter, WorkItem};
use duroxide::{Event, EventKind};
use duroxide_postgres::{PostgresOptions, PostgresProvider};
use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

const LOCK: Duration = Duration::from_secs(30);
const NO_WAIT: Duration = Duration::ZERO;
const LONG_POLL: Duration = Duration::from_secs(10);

/// Text that breaks naive quoting, escaping or encoding. Contains NUL, which
/// is legal inside a payload (JSON escapes it) but not in a text column.
const NASTY: &str = concat!(
    "nul:\u{0000}|nul-as-text:\\u0000|single:'|two singles:''|double:\"|",
    "backslash:\\|backslash-quote:\\'|dollar:$$|tagged:$x$ $1 $$;|",
    "emoji:🦀👩‍👩‍👧🏳️‍🌈|crlf:\r\n|tab:\t|bell:\u{7}|del:\u{7f}|",
    "bmp-end:\u{FFFF}|astral:\u{10FFFF}|bom:\u{FEFF}|rtl:\u{202E}|",
    "json:{\"a\":[1,\"b\"]}|sql:'); DROP TABLE history; --|percent:%_"
);

/// [`NASTY`] without NUL: for values that are also routing columns (tags).
fn nasty_without_nul() -> String {
    NASTY.replace('\0', "")
}

/// At least 16 MiB of [`NASTY`] (so every escape is exercised at scale).
fn big_payload() -> String {
    let target = 16 * 1024 * 1024;
    let mut s = String::with_capacity(target + NASTY.len());
    let mut i = 0u64;
    while s.len() < target {
        s.push_str(NASTY);
        s.push_str(&i.to_string());
        i += 1;
    }
    s
}

/// Equality without printing megabytes on failure.
fn assert_same<T: PartialEq + std::fmt::Debug>(got: &T, want: &T, what: &str) {
    if got != want {
        let g = format!("{got:?}");
        let w = format!("{want:?}");
        let at = g
            .bytes()
            .zip(w.bytes())
            .position(|(a, b)| a != b)
            .unwrap_or(g.len().min(w.len()));
        let from = at.saturating_sub(80);
        let excerpt = |s: &str| {
            s.get(from..(at + 80).min(s.len()))
                .unwrap_or("<not on a char boundary>")
                .to_string()
        };
        panic!(
            "{what} differs at byte {at} of its Debug form (lengths {} vs {}):\n got: {}\nwant: {}",
            g.len(),
            w.len(),
            excerpt(&g),
            excerpt(&w)
        );
    }
}

fn assert_permanent<T: std::fmt::Debug>(result: Result<T, ProviderError>, what: &str) {
    match result {
        Err(e) => assert!(!e.is_retryable(), "{what}: expected permanent, got {e:?}"),
        Ok(v) => panic!("{what}: expected a permanent error, got Ok({v:?})"),
    }
}

async fn fetch_work(p: &dyn Provider, filter: &TagFilter) -> Option<(WorkItem, String, u32)> {
    p.fetch_work_item(LOCK, NO_WAIT, None, filter)
        .await
        .unwrap()
}

async fn fetch_orch(
    p: &dyn Provider,
) -> Option<(duroxide::providers::OrchestrationItem, String, u32)> {
    p.fetch_orchestration_item(LOCK, NO_WAIT, None)
        .await
        .unwrap()
}

/// Acks the turn leased as `token` with no events, items or metadata.
async fn ack_empty_turn(p: &dyn Provider, token: &str) {
    p.ack_orchestration_item(
        token,
        1,
        vec![],
        vec![],
        vec![],
        ExecutionMetadata::default(),
        vec![],
    )
    .await
    .unwrap();
}

async fn pg_provider(
    prefix: &str,
    options: PostgresOptions,
) -> (Arc<dyn Provider>, common::Schemas) {
    let (p, schemas) = common::provider(prefix, options).await;
    (p as Arc<dyn Provider>, schemas)
}

// ---------------------------------------------------------------------------
// 1. Payloads
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread")]
async fn hostile_strings_and_a_16_mb_payload_round_trip_exactly() {
    let (p, _schemas) = pg_provider("rt_data", PostgresOptions::new()).await;
    let p = p.as_ref();
    let big = big_payload();
    assert!(big.len() >= 10 * 1024 * 1024);
    let tag = nasty_without_nul();

    // Worker queue: enqueued == fetched, for each item.
    let work = [
        (activity("w", 1, NASTY, None), TagFilter::DefaultOnly),
        (activity("w", 2, &big, None), TagFilter::DefaultOnly),
        (
            tagged_activity("w", 3, NASTY, &tag),
            TagFilter::Tags(HashSet::from([tag.clone()])),
        ),
    ];
    for (item, filter) in &work {
        p.enqueue_for_worker(item.clone()).await.unwrap();
        let (fetched, token, _) = fetch_work(p, filter).await.expect("the enqueued item");
        assert_same(&fetched, item, "fetched work item");
        p.ack_work_item(&token, None).await.unwrap();
    }
    assert!(fetch_work(p, &TagFilter::Any).await.is_none());

    // Orchestrator queue and history.
    let instance = "h";
    let start_item = start(instance, NASTY);
    p.enqueue_for_orchestrator(start_item.clone(), None)
        .await
        .unwrap();
    let (item, token, _) = fetch_orch(p).await.expect("the start");
    assert_eq!(item.instance, instance);
    assert_same(&item.messages, &vec![start_item], "fetched messages");
    assert!(item.history.is_empty());

    let turn1 = vec![
        started_event(instance, NASTY),
        Event::with_event_id(
            2,
            instance,
            1,
            None,
            EventKind::ActivityScheduled {
                name: NASTY.to_string(),
                input: big.clone(),
                session_id: None,
                tag: None,
            },
        ),
        Event::with_event_id(
            3,
            instance,
            1,
            None,
            EventKind::ExternalSubscribed {
                name: NASTY.to_string(),
            },
        ),
        Event::with_event_id(
            4,
            instance,
            1,
            None,
            EventKind::OrchestrationChained {
                name: NASTY.to_string(),
                instance: NASTY.to_string(),
                input: NASTY.to_string(),
            },
        ),
    ];
    let scheduled = activity(instance, 2, &big, None);
    let raised = WorkItem::ExternalRaised {
        instance: instance.to_string(),
        name: NASTY.to_string(),
        data: NASTY.to_string(),
    };
    p.ack_orchestration_item(
        &token,
        1,
        turn1.clone(),
        vec![scheduled.clone()],
        vec![raised.clone()],
        first_turn_metadata(),
        vec![],
    )
    .await
    .unwrap();
    assert_same(
        &p.read(instance).await.unwrap(),
        &turn1,
        "history after turn 1",
    );

    // The activity the turn scheduled, and its completion.
    let (fetched, token, _) = fetch_work(p, &TagFilter::DefaultOnly)
        .await
        .expect("the scheduled activity");
    assert_same(&fetched, &scheduled, "scheduled activity");
    let completion = completed(instance, 2, &big);
    p.ack_work_item(&token, Some(completion.clone()))
        .await
        .unwrap();

    // Turn 2 sees both messages and the history, exactly.
    let (item, token, _) = fetch_orch(p).await.expect("turn 2");
    assert_eq!(item.instance, instance);
    assert_same(&item.messages, &vec![raised, completion], "turn 2 messages");
    assert_same(&item.history, &turn1, "turn 2 history");

    let turn2 = vec![
        Event::with_event_id(
            5,
            instance,
            1,
            None,
            EventKind::ExternalEvent {
                name: NASTY.to_string(),
                data: NASTY.to_string(),
            },
        ),
        Event::with_event_id(
            6,
            instance,
            1,
            Some(2),
            EventKind::ActivityCompleted {
                result: big.clone(),
            },
        ),
        Event::with_event_id(
            7,
            instance,
            1,
            None,
            EventKind::TimerCreated {
                fire_at_ms: u64::MAX >> 1,
            },
        ),
    ];
    // A non-terminal turn: values that the runtime also copies into
    // metadata or columns (output, custom status, KV) are covered by
    // `user_values_with_nul_reach_their_columns`.
    p.ack_orchestration_item(
        &token,
        1,
        turn2.clone(),
        vec![],
        vec![],
        ExecutionMetadata::default(),
        vec![],
    )
    .await
    .unwrap();

    let all: Vec<Event> = turn1.into_iter().chain(turn2).collect();
    assert_same(&p.read(instance).await.unwrap(), &all, "full history");
    assert_same(
        &p.read_with_execution(instance, 1).await.unwrap(),
        &all,
        "history of execution 1",
    );
    assert!(fetch_orch(p).await.is_none());
}

// ---------------------------------------------------------------------------
// 2. Instance ids
// ---------------------------------------------------------------------------

/// An id of `len` bytes that does not compress (so it cannot hide in a
/// compressed index entry).
fn incompressible_id(len: usize) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut state = 0x9E37_79B9_7F4A_7C15u64;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            ALPHABET[(state % ALPHABET.len() as u64) as usize] as char
        })
        .collect()
}

/// One complete life of `instance`: start turn, an activity and its
/// completion, a final turn. Checks every value on the way.
async fn run_instance(p: &dyn Provider, instance: &str) {
    let start_item = start(instance, "{}");
    p.enqueue_for_orchestrator(start_item.clone(), None)
        .await
        .unwrap();
    let (item, token, _) = fetch_orch(p).await.expect("the start");
    assert_eq!(item.instance, instance);
    assert_eq!(item.messages, vec![start_item]);

    let turn1 = vec![started_event(instance, "{}")];
    let work = activity(instance, 2, "in", None);
    p.ack_orchestration_item(
        &token,
        1,
        turn1.clone(),
        vec![work.clone()],
        vec![],
        first_turn_metadata(),
        vec![],
    )
    .await
    .unwrap();
    assert_eq!(p.read(instance).await.unwrap(), turn1);

    let (fetched, token, _) = fetch_work(p, &TagFilter::DefaultOnly)
        .await
        .expect("the activity");
    assert_eq!(fetched, work);
    let done = completed(instance, 2, "out");
    p.ack_work_item(&token, Some(done.clone())).await.unwrap();

    let (item, token, _) = fetch_orch(p).await.expect("the completion");
    assert_eq!(item.instance, instance);
    assert_eq!(item.messages, vec![done]);
    assert_eq!(item.history, turn1);
    let last = Event::with_event_id(
        2,
        instance,
        1,
        None,
        EventKind::OrchestrationCompleted {
            output: "out".to_string(),
        },
    );
    p.ack_orchestration_item(
        &token,
        1,
        vec![last.clone()],
        vec![],
        vec![],
        ExecutionMetadata {
            status: Some("Completed".to_string()),
            output: Some("out".to_string()),
            ..Default::default()
        },
        vec![],
    )
    .await
    .unwrap();
    assert_eq!(
        p.read(instance).await.unwrap(),
        vec![turn1[0].clone(), last]
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn hostile_instance_ids_round_trip() {
    let (p, _schemas) = pg_provider("rt_ids", PostgresOptions::new()).await;
    let p = p.as_ref();
    let ids: Vec<String> = vec![
        "it's".into(),
        "''".into(),
        "say \"hi\"".into(),
        "semi;colon; DROP TABLE instances; --".into(),
        "$$".into(),
        "$tag$ body $tag$".into(),
        "back\\slash".into(),
        "emoji 🦀👩‍👩‍👧".into(),
        "percent%_".into(),
        " leading and trailing ".into(),
        "line\nbreak".into(),
        nasty_without_nul(),
        "🦀".repeat(256),        // 1 KB, multi-byte
        "x".repeat(1024),        // the longest accepted
        incompressible_id(1024), // the longest accepted, incompressible
    ];
    for id in &ids {
        run_instance(p, id).await;
    }
    // Each id kept its own history.
    for id in &ids {
        let history = p.read(id).await.unwrap();
        assert_eq!(history.len(), 2, "history of {id:?}");
        assert!(history.iter().all(|e| &e.instance_id == id));
    }
    assert!(fetch_orch(p).await.is_none());
    assert!(fetch_work(p, &TagFilter::Any).await.is_none());
}

/// Ids are index keys, and a PostgreSQL B-tree entry holds at most 2704
/// bytes: the provider accepts ids of up to 1024 bytes and refuses longer
/// ones with a clear, permanent error before writing anything.
#[tokio::test(flavor = "multi_thread")]
async fn instance_ids_over_1024_bytes_are_refused_clearly() {
    let (p, _schemas) = pg_provider("rt_id4k", PostgresOptions::new()).await;
    let p = p.as_ref();
    for id in [
        incompressible_id(4096),
        "x".repeat(4096),
        incompressible_id(1025),
    ] {
        let err = p
            .enqueue_for_orchestrator(start(&id, "{}"), None)
            .await
            .expect_err("an over-long id must be refused");
        assert!(!err.is_retryable(), "refusal must be permanent: {err}");
        assert!(
            err.message.contains("at most 1024"),
            "unclear refusal: {err}"
        );
        let err = p
            .enqueue_for_worker(activity(&id, 2, "in", None))
            .await
            .expect_err("an over-long id must be refused by the worker queue too");
        assert!(
            err.message.contains("at most 1024"),
            "unclear refusal: {err}"
        );
    }
    assert!(fetch_orch(p).await.is_none(), "nothing was queued");
    assert!(
        fetch_work(p, &TagFilter::Any).await.is_none(),
        "nothing was queued"
    );
    // The longest accepted id still works end to end.
    let id = incompressible_id(1024);
    run_instance(p, &id).await;
    assert_eq!(p.read(&id).await.unwrap().len(), 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_instance_id_with_nul_is_refused_permanently_and_harms_nothing() {
    let (p, _schemas) = pg_provider("rt_nul", PostgresOptions::new()).await;
    let p = p.as_ref();
    let bad = "bad\0id";

    assert_permanent(
        p.enqueue_for_orchestrator(start(bad, "{}"), None).await,
        "enqueue_for_orchestrator",
    );
    assert_permanent(
        p.enqueue_for_worker(activity(bad, 1, "x", None)).await,
        "enqueue_for_worker",
    );
    match p.read(bad).await {
        Ok(events) => assert!(events.is_empty()),
        Err(e) => assert!(!e.is_retryable(), "read: expected permanent, got {e:?}"),
    }
    // Nothing was queued by the refused calls.
    assert!(fetch_orch(p).await.is_none());
    assert!(fetch_work(p, &TagFilter::Any).await.is_none());

    // A turn that would send a message to a NUL instance fails as a whole
    // (permanently), keeps its lease, and can be acked without it.
    p.enqueue_for_orchestrator(start("good", "{}"), None)
        .await
        .unwrap();
    let (item, token, _) = fetch_orch(p).await.expect("the good start");
    assert_eq!(item.instance, "good");
    let turn = vec![started_event("good", "{}")];
    assert_permanent(
        p.ack_orchestration_item(
            &token,
            1,
            turn.clone(),
            vec![activity(bad, 2, "x", None)],
            vec![start(bad, "{}")],
            first_turn_metadata(),
            vec![],
        )
        .await,
        "ack_orchestration_item to a NUL instance",
    );
    assert!(
        p.read("good").await.unwrap().is_empty(),
        "nothing committed"
    );
    p.ack_orchestration_item(
        &token,
        1,
        turn.clone(),
        vec![],
        vec![],
        first_turn_metadata(),
        vec![],
    )
    .await
    .expect("the same turn without the bad message");
    assert_eq!(p.read("good").await.unwrap(), turn);

    // A worker completion addressed to a NUL instance fails too, and the
    // item stays leased to its worker (the ack can be repeated correctly).
    let work = activity("good", 2, "x", None);
    p.enqueue_for_worker(work.clone()).await.unwrap();
    let (fetched, token, _) = fetch_work(p, &TagFilter::DefaultOnly).await.unwrap();
    assert_eq!(fetched, work);
    assert_permanent(
        p.ack_work_item(&token, Some(completed(bad, 2, "r"))).await,
        "ack_work_item with a completion for a NUL instance",
    );
    p.ack_work_item(&token, Some(completed("good", 2, "r")))
        .await
        .unwrap();

    let (item, token, _) = fetch_orch(p).await.expect("good's completion");
    assert_eq!(item.instance, "good");
    assert_eq!(item.messages, vec![completed("good", 2, "r")]);
    assert_eq!(item.history, turn);
    ack_empty_turn(p, &token).await;

    // Another instance works normally, and nothing else is left.
    run_instance(p, "other").await;
    assert!(fetch_orch(p).await.is_none());
    assert!(fetch_work(p, &TagFilter::Any).await.is_none());
}

// ---------------------------------------------------------------------------
// 2b. NUL in values the runtime also writes to columns
// ---------------------------------------------------------------------------

/// Starts `instance` and commits its first turn with `events` after the
/// OrchestrationStarted event, with the metadata the runtime would compute
/// (`ExecutionMetadata` from the events, as duroxide's
/// `compute_execution_metadata` does).
async fn first_turn(
    p: &dyn Provider,
    instance: &str,
    events: Vec<Event>,
    status: Option<(&str, &str)>,
) -> Result<Vec<Event>, ProviderError> {
    p.enqueue_for_orchestrator(start(instance, "{}"), None)
        .await
        .unwrap();
    let (item, token, _) = fetch_orch(p).await.expect("the start");
    assert_eq!(item.instance, instance);
    let mut turn = vec![started_event(instance, "{}")];
    turn.extend(events);
    let mut metadata = first_turn_metadata();
    if let Some((status, output)) = status {
        metadata.status = Some(status.to_string());
        metadata.output = Some(output.to_string());
    }
    let result = p
        .ack_orchestration_item(&token, 1, turn.clone(), vec![], vec![], metadata, vec![])
        .await;
    if result.is_err() {
        // Leave the queue clean for the next case.
        p.abandon_orchestration_item(&token, None, true)
            .await
            .unwrap();
        let (_, token, _) = fetch_orch(p).await.expect("the start again");
        ack_empty_turn(p, &token).await;
    }
    result.map(|()| turn)
}

/// An orchestration's output, custom status and KV entries are user
/// strings; each may contain NUL. The runtime writes them both into history
/// events (JSON, which escapes NUL) and into `ExecutionMetadata` / derived
/// columns. A turn carrying one must commit, or the orchestration can never
/// finish (the ack fails permanently on every attempt).
#[tokio::test(flavor = "multi_thread")]
async fn user_values_with_nul_reach_their_columns() {
    let (p, _schemas) = pg_provider("rt_nulcol", PostgresOptions::new()).await;
    let p = p.as_ref();
    let mut failures = Vec::new();

    // Output of a completed orchestration (metadata.output = event output).
    let completed_event = Event::with_event_id(
        2,
        "out",
        1,
        None,
        EventKind::OrchestrationCompleted {
            output: NASTY.to_string(),
        },
    );
    match first_turn(p, "out", vec![completed_event], Some(("Completed", NASTY))).await {
        Ok(turn) => {
            assert_same(&p.read("out").await.unwrap(), &turn, "history of out");
            let info = p
                .as_management_capability()
                .expect("management")
                .get_instance_info("out")
                .await
                .unwrap();
            assert_same(&info.output, &Some(NASTY.to_string()), "stored output");
        }
        Err(e) => failures.push(format!("orchestration output with NUL: {e}")),
    }

    // Custom status.
    let status_event = Event::with_event_id(
        2,
        "status",
        1,
        None,
        EventKind::CustomStatusUpdated {
            status: Some(NASTY.to_string()),
        },
    );
    match first_turn(p, "status", vec![status_event], None).await {
        Ok(_) => {
            let got = p.get_custom_status("status", 0).await.unwrap();
            assert_same(
                &got.map(|(s, _)| s),
                &Some(Some(NASTY.to_string())),
                "custom status",
            );
        }
        Err(e) => failures.push(format!("custom status with NUL: {e}")),
    }

    // KV value.
    for (instance, key, value) in [("kv_value", "k", NASTY)] {
        let kv_event = Event::with_event_id(
            2,
            instance,
            1,
            None,
            EventKind::KeyValueSet {
                key: key.to_string(),
                value: value.to_string(),
                last_updated_at_ms: 1,
            },
        );
        match first_turn(p, instance, vec![kv_event], None).await {
            Ok(_) => {
                let got = p.get_kv_value(instance, key).await.unwrap();
                assert_same(&got, &Some(value.to_string()), "KV value");
            }
            Err(e) => failures.push(format!("{instance} with NUL: {e}")),
        }
    }

    assert!(
        failures.is_empty(),
        "turns carrying NUL in user values were refused:\n{}",
        failures.join("\n")
    );

    // A KV key is an index key stored as text: NUL is refused clearly and
    // the turn commits nothing.
    let kv_event = Event::with_event_id(
        2,
        "kv_key",
        1,
        None,
        EventKind::KeyValueSet {
            key: NASTY.to_string(),
            value: "v".to_string(),
            last_updated_at_ms: 1,
        },
    );
    let err = first_turn(p, "kv_key", vec![kv_event], None)
        .await
        .expect_err("a KV key with NUL must be refused");
    assert!(err.to_string().contains("NUL"), "unclear refusal: {err}");
    assert!(
        p.read("kv_key").await.unwrap().is_empty(),
        "nothing committed"
    );
}

// ---------------------------------------------------------------------------
// 3. Long polling
// ---------------------------------------------------------------------------

/// Another provider on `p`'s schema, without long polling: a producer, as
/// another process would be.
async fn producer_for(p: &PostgresProvider) -> PostgresProvider {
    PostgresProvider::connect(
        &common::server::database_url(),
        PostgresOptions::new().schema(p.schema()).long_poll(false),
    )
    .await
    .unwrap()
}

/// A long-polling provider in a fresh schema whose listener listens, and
/// the admin connection that saw it (pg_stat_statements readable).
async fn listening(
    prefix: &str,
) -> (
    Arc<PostgresProvider>,
    common::Schemas,
    tokio_postgres::Client,
) {
    common::recorder::recorder();
    let admin = common::admin_client().await;
    common::wait::statement_stats(&admin).await;
    let (p, schemas, app) = common::provider_with_app(prefix, PostgresOptions::new()).await;
    common::wait::listening(&admin, p.schema(), &app).await;
    (p, schemas, admin)
}

#[tokio::test(flavor = "multi_thread")]
async fn long_poll_wakes_an_idle_work_item_fetch() {
    let (p, _schemas, admin) = listening("lp_w").await;
    // The producer is another provider on the same schema, as another
    // process would be.
    let producer = producer_for(&p).await;
    let item = activity("lp", 1, "woken", None);
    // With no notification, this returns None at the 10 s deadline.
    let fetch = {
        let p = p.clone();
        tokio::spawn(async move {
            p.fetch_work_item(LOCK, LONG_POLL, None, &TagFilter::DefaultOnly)
                .await
                .unwrap()
        })
    };
    // It has found the queue empty and waits.
    common::wait::calls_reach(&admin, &p, "fetch_work_item", 1).await;
    producer.enqueue_for_worker(item.clone()).await.unwrap();
    let got = fetch.await.unwrap();
    let (fetched, token, _) = got.expect("woken by the enqueue");
    assert_eq!(fetched, item);
    p.ack_work_item(&token, None).await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn long_poll_wakes_an_idle_orchestration_fetch() {
    let (p, _schemas, admin) = listening("lp_o").await;
    let producer = producer_for(&p).await;
    let message = start("lp", "woken");
    let fetch = {
        let p = p.clone();
        tokio::spawn(async move {
            p.fetch_orchestration_item(LOCK, LONG_POLL, None)
                .await
                .unwrap()
        })
    };
    common::wait::calls_reach(&admin, &p, "fetch_orchestration_item", 1).await;
    producer
        .enqueue_for_orchestrator(message.clone(), None)
        .await
        .unwrap();
    let got = fetch.await.unwrap();
    let (item, _, _) = got.expect("woken by the enqueue");
    assert_eq!(item.instance, "lp");
    assert_eq!(item.messages, vec![message]);
}

#[tokio::test(flavor = "multi_thread")]
async fn long_poll_returns_a_delayed_message_once_it_is_visible() {
    let (p, _schemas) = common::provider("lp_d", PostgresOptions::new()).await;
    let message = start("delayed", "later");
    p.enqueue_for_orchestrator(message.clone(), Some(Duration::from_millis(300)))
        .await
        .unwrap();
    let (item, _, _) = p
        .fetch_orchestration_item(LOCK, LONG_POLL, None)
        .await
        .unwrap()
        .expect("the delayed message, before the deadline");
    assert_eq!(item.messages, vec![message]);
}

#[tokio::test(flavor = "multi_thread")]
async fn without_long_poll_an_empty_fetch_returns_none() {
    let (p, _schemas) = common::provider("lp_off", PostgresOptions::new().long_poll(false)).await;
    assert!(p
        .fetch_work_item(LOCK, LONG_POLL, None, &TagFilter::DefaultOnly)
        .await
        .unwrap()
        .is_none());
    assert!(p
        .fetch_orchestration_item(LOCK, LONG_POLL, None)
        .await
        .unwrap()
        .is_none());
    // And work is still found without long polling.
    let item = activity("short", 1, "x", None);
    p.enqueue_for_worker(item.clone()).await.unwrap();
    let (fetched, _, _) = p
        .fetch_work_item(LOCK, LONG_POLL, None, &TagFilter::DefaultOnly)
        .await
        .unwrap()
        .expect("ready work");
    assert_eq!(fetched, item);
}

// ---------------------------------------------------------------------------
// 4. Error classification
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread")]
async fn unknown_lock_tokens_are_permanent_errors() {
    let (p, _schemas) = pg_provider("err_tok", PostgresOptions::new()).await;
    let p = p.as_ref();
    let unknown = "lock_00000000-0000-0000-0000-000000000000";
    assert_permanent(p.ack_work_item(unknown, None).await, "ack_work_item");
    assert_permanent(
        p.ack_work_item(unknown, Some(completed("x", 1, "r"))).await,
        "ack_work_item with completion",
    );
    assert_permanent(
        p.ack_orchestration_item(
            unknown,
            1,
            vec![started_event("x", "{}")],
            vec![],
            vec![],
            first_turn_metadata(),
            vec![],
        )
        .await,
        "ack_orchestration_item",
    );
    assert_permanent(
        p.renew_work_item_lock(unknown, LOCK).await,
        "renew_work_item_lock",
    );
    assert_permanent(
        p.renew_orchestration_item_lock(unknown, LOCK).await,
        "renew_orchestration_item_lock",
    );
    assert_permanent(
        p.abandon_work_item(unknown, None, false).await,
        "abandon_work_item",
    );
    assert_permanent(
        p.abandon_orchestration_item(unknown, None, false).await,
        "abandon_orchestration_item",
    );
    // Nothing was written by the failed calls.
    assert!(p.read("x").await.unwrap().is_empty());
    assert!(fetch_orch(p).await.is_none());
}

#[tokio::test(flavor = "multi_thread")]
async fn an_ack_after_the_lease_expired_is_permanent_and_the_item_returns() {
    let (p, _schemas) = pg_provider("err_exp", PostgresOptions::new()).await;
    let p = p.as_ref();
    let short = Duration::from_millis(200);
    let item = activity("exp", 1, "x", None);
    p.enqueue_for_worker(item.clone()).await.unwrap();

    let (fetched, token, attempts) = p
        .fetch_work_item(short, NO_WAIT, None, &TagFilter::DefaultOnly)
        .await
        .unwrap()
        .expect("the item");
    assert_eq!(fetched, item);
    assert_eq!(attempts, 1);
    tokio::time::sleep(Duration::from_millis(400)).await;

    assert_permanent(
        p.ack_work_item(&token, Some(completed("exp", 1, "late")))
            .await,
        "ack_work_item after the lease expired",
    );
    // The item is fetchable again, as a new attempt (that the failed ack
    // enqueued no completion is checked on the batch below).
    let (again, token2, attempts) = fetch_work(p, &TagFilter::DefaultOnly)
        .await
        .expect("the item after its lease expired");
    assert_eq!(again, item);
    assert_eq!(attempts, 2);
    assert_ne!(token2, token);
    // The old token stays dead while the new lease is live.
    assert_permanent(
        p.ack_work_item(&token, None).await,
        "ack with the old token",
    );
    p.ack_work_item(&token2, Some(completed("exp", 1, "on time")))
        .await
        .unwrap();
    // "exp" was never started: its completion is held until a start comes
    // (issue 7 item 1), then delivered with it.
    p.enqueue_for_orchestrator(start("exp", "in"), None)
        .await
        .unwrap();
    let (orch, _, _) = fetch_orch(p).await.expect("the completion");
    assert_eq!(
        orch.messages,
        vec![completed("exp", 1, "on time"), start("exp", "in")],
        "only the on-time ack enqueued its completion"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn an_orchestration_ack_after_the_lease_expired_is_permanent() {
    let (p, _schemas) = pg_provider("err_oexp", PostgresOptions::new()).await;
    let p = p.as_ref();
    let message = start("oexp", "{}");
    p.enqueue_for_orchestrator(message.clone(), None)
        .await
        .unwrap();
    let (_, token, attempts) = p
        .fetch_orchestration_item(Duration::from_millis(200), NO_WAIT, None)
        .await
        .unwrap()
        .expect("the start");
    assert_eq!(attempts, 1);
    tokio::time::sleep(Duration::from_millis(400)).await;

    assert_permanent(
        p.ack_orchestration_item(
            &token,
            1,
            vec![started_event("oexp", "{}")],
            vec![activity("oexp", 2, "x", None)],
            vec![],
            first_turn_metadata(),
            vec![],
        )
        .await,
        "ack_orchestration_item after the lease expired",
    );
    assert!(
        p.read("oexp").await.unwrap().is_empty(),
        "nothing committed"
    );
    assert!(fetch_work(p, &TagFilter::Any).await.is_none());
    let (item, _, attempts) = fetch_orch(p).await.expect("the start, again");
    assert_eq!(item.messages, vec![message]);
    assert_eq!(attempts, 2);
}

/// A history of 50,000 events committed in one turn comes back exactly, from
/// `read` and from the next fetch.
#[tokio::test(flavor = "multi_thread")]
async fn a_history_of_50_000_events_round_trips() {
    let (p, _schemas) = pg_provider("rt_50k", PostgresOptions::new()).await;
    let p = p.as_ref();
    p.enqueue_for_orchestrator(common::items::start("big", "{}"), None)
        .await
        .unwrap();
    let (_, token, _) = fetch_orch(p).await.expect("the start");
    let mut history = vec![common::items::started_event("big", "{}")];
    history.extend((2..=50_000u64).map(|id| {
        Event::with_event_id(
            id,
            "big",
            1,
            None,
            EventKind::TimerCreated { fire_at_ms: id * 7 },
        )
    }));
    p.ack_orchestration_item(
        &token,
        1,
        history.clone(),
        vec![],
        vec![],
        common::items::first_turn_metadata(),
        vec![],
    )
    .await
    .unwrap();
    assert_same(
        &p.read("big").await.unwrap(),
        &history,
        "read of 50,000 events",
    );

    p.enqueue_for_orchestrator(common::items::external("big", "e", "x"), None)
        .await
        .unwrap();
    let (item, _, _) = fetch_orch(p).await.expect("the event");
    assert!(item.history_error.is_none());
    assert_same(&item.history, &history, "fetched history of 50,000 events");
}

/// An ack's notification is sent after its commit by the committing
/// process's listener task (not inside the transaction): another process's
/// idle fetcher is still woken by it, and so is one in the same process.
#[tokio::test(flavor = "multi_thread")]
async fn an_ack_wakes_idle_fetchers_in_this_and_other_processes() {
    let (p, _schemas, admin) = listening("lp_ack").await;
    // Another process: its own provider, long polling on (it notifies after commit).
    let other = PostgresProvider::connect(
        &common::server::database_url(),
        PostgresOptions::new().schema(p.schema()),
    )
    .await
    .unwrap();
    other
        .enqueue_for_orchestrator(start("lp_ack", "{}"), None)
        .await
        .unwrap();
    let (_, token, _) = fetch_orch(&other).await.expect("the start");

    let scheduled = activity("lp_ack", 2, "woken", None);
    // With no notification, this returns None at the 10 s deadline.
    let fetch = {
        let p = p.clone();
        tokio::spawn(async move {
            p.fetch_work_item(LOCK, LONG_POLL, None, &TagFilter::DefaultOnly)
                .await
                .unwrap()
        })
    };
    // It has found the queue empty and waits.
    common::wait::calls_reach(&admin, &p, "fetch_work_item", 1).await;
    other
        .ack_orchestration_item(
            &token,
            1,
            vec![started_event("lp_ack", "{}")],
            vec![scheduled.clone()],
            vec![],
            first_turn_metadata(),
            vec![],
        )
        .await
        .unwrap();
    let got = fetch.await.unwrap();
    let (fetched, token, _) = got.expect("woken by the other process's ack");
    assert_eq!(fetched, scheduled);

    drop(other);

    // And in the committing process itself (whose listener ignores its own
    // notifications): its ack of the activity wakes its idle orchestration
    // fetcher directly.
    let looked = common::wait::calls(&admin, &p, "fetch_orchestration_item").await;
    let waiter = {
        let p = p.clone();
        tokio::spawn(async move {
            p.fetch_orchestration_item(LOCK, LONG_POLL, None)
                .await
                .unwrap()
        })
    };
    common::wait::calls_reach(&admin, &p, "fetch_orchestration_item", looked + 1).await;
    p.ack_work_item(&token, Some(completed("lp_ack", 2, "done")))
        .await
        .unwrap();
    let (item, _, _) = waiter.await.unwrap().expect("woken by its own ack");
    assert_eq!(item.messages, vec![completed("lp_ack", 2, "done")]);
}
