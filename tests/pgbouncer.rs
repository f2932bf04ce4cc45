//! The provider behind PgBouncer in transaction mode (`pool_mode =
//! transaction`), started by these tests in front of the shared test server
//! (`common/pgbouncer.rs`).
//!
//! * The full duroxide validation suite (the list in
//!   `common/validation_suite.rs`, shared with `validation.rs`) runs through
//!   PgBouncer with [`PostgresOptions::transaction_pooler`] and no
//!   `listen_url`: no statement depends on a server session, and idle
//!   fetches poll with a backoff.
//! * End to end: a real duroxide `Runtime` and `Client` run orchestrations
//!   (activities, a timer, an external event, sub-orchestrations) through
//!   PgBouncer, with long polling over a direct `listen_url` and without.
//! * Transaction pooler mode leaves no named prepared statement on a server
//!   connection, where the default mode does; without the option PgBouncer
//!   refuses the pool's connections; an explicit statement timeout is
//!   refused, and the one set on the role applies.

// `common` is shared with other test binaries; not every helper is used here.
#[path = "common/pgbouncer.rs"]
mod bouncer;
#[allow(dead_code)]
mod common;

use bouncer::PgBouncer;
use common::items::start;
use common::PgFactory;
use duroxide::provider_validations::ProviderFactory;
use duroxide::providers::Provider;
use duroxide::runtime::registry::ActivityRegistry;
use duroxide::runtime::{Runtime, RuntimeOptions};
use duroxide::OrchestrationStatus;
use duroxide::{ActivityContext, Client, OrchestrationContext, OrchestrationRegistry};
use duroxide_postgres::{Error, PostgresOptions, PostgresProvider};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

/// Upper bound for any wait; outcomes normally arrive far sooner.
const WAIT: Duration = Duration::from_secs(30);

/// The PgBouncer every test of this binary goes through (stopped when the
/// process exits: see `PgBouncer::try_start`). Started once: when it is missing
/// or does not come up, every test fails at once with that first error.
fn bouncer() -> &'static PgBouncer {
    static BOUNCER: OnceLock<Result<PgBouncer, String>> = OnceLock::new();
    let started = BOUNCER.get_or_init(|| {
        // Before the test server: a missing PgBouncer is reported first.
        bouncer::binary()?;
        let config: tokio_postgres::Config = common::server::database_url()
            .parse()
            .expect("test server URL");
        let port = config.get_ports().first().copied().unwrap_or(5432);
        PgBouncer::try_start(port)
    });
    match started {
        Ok(bouncer) => bouncer,
        Err(msg) => panic!("{msg}"),
    }
}

/// The test database through PgBouncer, as the server's superuser.
fn pooled_url() -> String {
    bouncer().url("postgres", "postgres")
}

fn pooler_options() -> PostgresOptions {
    PostgresOptions::new().transaction_pooler(true)
}

/// Long polling on, through PgBouncer, no `listen_url`: fetches wait by
/// polling with a backoff.
fn long_poll_factory() -> PgFactory {
    PgFactory::through(pooled_url(), pooler_options(), true)
}

/// Long polling off, through PgBouncer.
fn short_poll_factory() -> PgFactory {
    PgFactory::through(pooled_url(), pooler_options(), false)
}

include!("common/validation_suite.rs");

// ---------------------------------------------------------------------------
// End to end
// ---------------------------------------------------------------------------

/// A provider on `url` with `options` in a fresh schema.
async fn store(
    prefix: &str,
    url: &str,
    options: PostgresOptions,
) -> (Arc<PostgresProvider>, common::Schemas) {
    let schemas = common::Schemas::default();
    let schema = common::unique_schema(prefix);
    schemas.track(&schema);
    let provider = PostgresProvider::connect(url, options.schema(&schema))
        .await
        .expect("connect through PgBouncer");
    (Arc::new(provider), schemas)
}

/// Runs a workflow touching every queue on `store`: an activity chain, a
/// fan-out, a timer, an external event, and sub-orchestrations; checks every
/// result.
async fn run_workflow(store: Arc<PostgresProvider>) {
    let activities = ActivityRegistry::builder()
        .register(
            "Double",
            |_ctx: ActivityContext, input: String| async move {
                let n: i64 = input.parse().map_err(|e| format!("{input}: {e}"))?;
                Ok((n * 2).to_string())
            },
        )
        .build();
    let orchestrations = OrchestrationRegistry::builder()
        .register(
            "Child",
            |ctx: OrchestrationContext, input: String| async move {
                ctx.schedule_activity("Double", input).await
            },
        )
        .register(
            "Parent",
            |ctx: OrchestrationContext, input: String| async move {
                let doubled = ctx.schedule_activity("Double", input).await?;
                let fan: Vec<_> = (1..=5)
                    .map(|i| ctx.schedule_activity("Double", i.to_string()))
                    .collect();
                let mut sum = 0i64;
                for r in ctx.join(fan).await {
                    sum += r?.parse::<i64>().map_err(|e| e.to_string())?;
                }
                ctx.schedule_timer(Duration::from_millis(200)).await;
                // Committed with the turn that subscribes to the event.
                ctx.set_custom_status("waiting");
                let event = ctx.schedule_wait("Go").await;
                let children: Vec<_> = (1..=2)
                    .map(|i| ctx.schedule_sub_orchestration("Child", i.to_string()))
                    .collect();
                let mut outputs = Vec::new();
                for r in ctx.join(children).await {
                    outputs.push(r?);
                }
                Ok(format!("{doubled}|{sum}|{event}|{}", outputs.join(",")))
            },
        )
        .build();
    let options = RuntimeOptions {
        dispatcher_min_poll_interval: Duration::from_millis(10),
        orchestration_concurrency: 2,
        worker_concurrency: 2,
        ..Default::default()
    };
    let rt = Runtime::start_with_options(store.clone(), activities, orchestrations, options).await;
    let client = Client::new(store.clone());
    let instances: Vec<String> = (0..3).map(|i| format!("pgb-{i}")).collect();
    for (i, id) in instances.iter().enumerate() {
        client
            .start_orchestration(id, "Parent", i.to_string())
            .await
            .expect("start");
    }
    for id in &instances {
        // An event raised before the orchestration waits for it is dropped.
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            match client.get_orchestration_status(id).await.expect("status") {
                OrchestrationStatus::Running {
                    custom_status: Some(s),
                    ..
                } if s == "waiting" => break,
                _ => {
                    assert!(tokio::time::Instant::now() < deadline, "{id} never waited");
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
        }
        client.raise_event(id, "Go", "go").await.expect("raise");
    }
    for (i, id) in instances.iter().enumerate() {
        match client.wait_for_orchestration(id, WAIT).await {
            Ok(OrchestrationStatus::Completed { output, .. }) => {
                assert_eq!(output, format!("{}|30|go|2,4", i * 2), "{id}");
            }
            other => panic!("{id}: expected Completed, got {other:?}"),
        }
    }
    rt.shutdown(None).await;
}

/// Long polling over a direct LISTEN connection (`listen_url`), every
/// provider call through PgBouncer.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_runtime_runs_orchestrations_through_pgbouncer_with_a_direct_listen_url() {
    let options = pooler_options().listen_url(common::server::database_url());
    let (store, _schemas) = store("pgb_listen", &pooled_url(), options).await;
    run_workflow(store).await;
}

/// No LISTEN at all: idle fetches poll with a backoff.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_runtime_runs_orchestrations_through_pgbouncer_without_listen_url() {
    let (store, _schemas) = store("pgb_poll", &pooled_url(), pooler_options()).await;
    run_workflow(store).await;
}

/// Work committed by another process, which cannot wake a provider without a
/// listener, is still found by a waiting fetch long before its poll timeout
/// ends (the backoff looks again).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn without_a_listener_a_waiting_fetch_finds_work_of_another_process() {
    let admin = common::admin_client().await;
    common::wait::statement_stats(&admin).await;
    let (a, _schemas) = store("pgb_other", &pooled_url(), pooler_options()).await;
    let b = PostgresProvider::connect(&pooled_url(), pooler_options().schema(a.schema()))
        .await
        .expect("second provider");
    let waiter = tokio::spawn({
        let a = a.clone();
        async move {
            a.fetch_orchestration_item(Duration::from_secs(30), Duration::from_secs(60), None)
                .await
        }
    });
    // It has found nothing and waits: the work below is found by its backoff.
    common::wait::calls_reach(&admin, &a, "fetch_orchestration_item", 1).await;
    b.enqueue_for_orchestrator(start("other", "x"), None)
        .await
        .expect("enqueue by the other provider");
    // Far below the 60 s poll timeout: found by polling, not at the deadline.
    let got = tokio::time::timeout(Duration::from_secs(20), waiter)
        .await
        .expect("the waiting fetch found the work before its poll timeout")
        .expect("fetch task")
        .expect("fetch");
    assert!(got.is_some(), "the waiting fetch returned nothing");
}

/// A provider without a LISTEN connection still tells other processes
/// about the work its acks commit (its relay sends the notification through
/// PgBouncer): a listening process's waiting fetch is woken, long before its
/// poll timeout ends.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn acks_without_a_listener_wake_a_listening_process() {
    common::recorder::recorder();
    let admin = common::admin_client().await;
    common::wait::statement_stats(&admin).await;
    let (pooled, _schemas) = store("pgb_relay", &pooled_url(), pooler_options()).await;
    let app = common::unique_schema("app_pgb_relay");
    let direct = Arc::new(
        PostgresProvider::connect(
            &common::server::database_url(),
            PostgresOptions::new()
                .schema(pooled.schema())
                .application_name(&app),
        )
        .await
        .expect("a direct provider"),
    );
    common::wait::listening(&admin, direct.schema(), &app).await;
    pooled
        .enqueue_for_orchestrator(start("relay", "x"), None)
        .await
        .expect("enqueue");
    let (_, token, _) = pooled
        .fetch_orchestration_item(Duration::from_secs(30), Duration::ZERO, None)
        .await
        .expect("fetch")
        .expect("the start");
    let waiter = tokio::spawn({
        let direct = direct.clone();
        async move {
            direct
                .fetch_work_item(
                    Duration::from_secs(30),
                    Duration::from_secs(60),
                    None,
                    &duroxide::providers::TagFilter::default(),
                )
                .await
        }
    });
    // It listens and has found nothing: only a notification wakes it soon.
    common::wait::calls_reach(&admin, &direct, "fetch_work_item", 1).await;
    pooled
        .ack_orchestration_item(
            &token,
            1,
            vec![common::items::started_event("relay", "x")],
            vec![common::items::activity("relay", 1, "in", None)],
            vec![],
            common::items::first_turn_metadata(),
            vec![],
        )
        .await
        .expect("ack");
    let got = tokio::time::timeout(Duration::from_secs(20), waiter)
        .await
        .expect("the listening fetch was woken before its poll timeout")
        .expect("fetch task")
        .expect("fetch");
    assert!(got.is_some(), "the woken fetch returned nothing");
}

// ---------------------------------------------------------------------------
// What the mode changes
// ---------------------------------------------------------------------------

/// The names of the prepared statements of the server connection behind
/// PgBouncer's single-connection pool.
async fn prepared_statements_of_the_single_connection() -> Vec<String> {
    let client = common::client_at(&bouncer().url("postgres", bouncer::SINGLE)).await;
    // The simple protocol prepares nothing itself.
    let rows = client
        .simple_query("SELECT name FROM pg_prepared_statements ORDER BY name")
        .await
        .expect("read pg_prepared_statements");
    rows.iter()
        .filter_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::Row(r) => r.get(0).map(str::to_string),
            _ => None,
        })
        .collect()
}

/// Some calls of every kind, on `store`.
async fn exercise(store: &PostgresProvider) {
    store
        .enqueue_for_orchestrator(start("prep", "x"), None)
        .await
        .expect("enqueue");
    let (_, token, _) = store
        .fetch_orchestration_item(Duration::from_secs(30), Duration::ZERO, None)
        .await
        .expect("fetch")
        .expect("an item");
    store
        .abandon_orchestration_item(&token, None, false)
        .await
        .expect("abandon");
    store.read("prep").await.expect("read");
}

/// PgBouncer's `single` pool has one server connection, so whatever a
/// client leaves in the server session stays visible. In transaction pooler
/// mode the provider (migrations included) leaves no prepared statement
/// there; the default mode, on the same connection, leaves one per
/// statement (which is what breaks it when the next transaction lands on
/// another server connection): the check can fail.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn pooler_mode_leaves_no_named_prepared_statement_on_the_server() {
    let single = bouncer().url("postgres", bouncer::SINGLE);
    let _lock = SINGLE_POOL.lock().await;

    let (pooled, _s1) = store("pgb_unnamed", &single, pooler_options().long_poll(false)).await;
    exercise(&pooled).await;
    let left = prepared_statements_of_the_single_connection().await;
    assert!(
        left.is_empty(),
        "pooler mode left prepared statements: {left:?}"
    );

    // The default mode, with the start-up option PgBouncer refuses left out.
    let direct_options = PostgresOptions::new()
        .statement_timeout(None)
        .long_poll(false);
    let (named, _s2) = store("pgb_named", &single, direct_options).await;
    exercise(&named).await;
    let left = prepared_statements_of_the_single_connection().await;
    assert!(
        !left.is_empty(),
        "the default mode left no prepared statement: the check cannot see them"
    );
    // Leave the shared server connection clean.
    drop(named);
    let client = common::client_at(&single).await;
    client
        .batch_execute("DEALLOCATE ALL")
        .await
        .expect("deallocate");
}

/// Tests using the single-connection pool run one at a time.
static SINGLE_POOL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Without the option the pool's connections carry `statement_timeout` as a
/// start-up option, which PgBouncer refuses: the option is needed.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn without_the_option_pgbouncer_refuses_the_pool_connections() {
    let result = PostgresProvider::connect(
        &pooled_url(),
        PostgresOptions::new()
            .schema(common::unique_schema("pgb_refused"))
            .long_poll(false)
            .client_retry_budget(Duration::ZERO),
    )
    .await;
    let schemas = common::Schemas::default();
    let store = match result {
        Ok(store) => {
            schemas.track(store.schema());
            store
        }
        Err(e) => {
            let text = e.to_string();
            assert!(text.contains("unsupported startup parameter"), "{text}");
            return;
        }
    };
    let err = store
        .read("x")
        .await
        .expect_err("a call through PgBouncer with a start-up option");
    let text = err.to_string();
    assert!(
        text.contains("unsupported startup parameter: options"),
        "unexpected error: {text}"
    );
    eprintln!("refused as expected: {text}");
}

/// An explicit statement timeout cannot be sent through a pooler: refused
/// before anything connects, with the way to set it instead.
#[tokio::test]
async fn pooler_mode_refuses_an_explicit_statement_timeout() {
    let err = PostgresProvider::connect(
        "postgres://nobody@127.0.0.1:1/none",
        pooler_options().statement_timeout(Some(Duration::from_secs(5))),
    )
    .await
    .expect_err("an explicit statement timeout in pooler mode");
    match err {
        Error::Config(msg) => assert!(
            msg.contains("ALTER ROLE") && msg.contains("statement_timeout(None)"),
            "{msg}"
        ),
        other => panic!("expected Error::Config, got {other}"),
    }
    // A listen_url without long polling is a mistake too.
    let err = PostgresProvider::connect(
        "postgres://nobody@127.0.0.1:1/none",
        pooler_options()
            .long_poll(false)
            .listen_url("postgres://nobody@127.0.0.1:1/none"),
    )
    .await
    .expect_err("listen_url with long polling off");
    assert!(matches!(err, Error::Config(_)), "{err}");
    // `None` (the server's setting) is accepted: it fails only on connecting.
    let err = PostgresProvider::connect(
        "postgres://nobody@127.0.0.1:1/none",
        pooler_options().statement_timeout(None),
    )
    .await
    .expect_err("nothing listens on port 1");
    assert!(!matches!(err, Error::Config(_)), "{err}");
}

/// The statement timeout behind a pooler is the server's: set on the role,
/// it cancels a provider call that waits too long, through PgBouncer.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_role_statement_timeout_cancels_a_call_through_pgbouncer() {
    let role = bouncer::USERS[1];
    let admin = common::admin_client().await;
    admin
        .batch_execute(&format!(
            "DO $$ BEGIN CREATE ROLE {role} LOGIN; EXCEPTION WHEN duplicate_object THEN NULL; END $$;
             ALTER ROLE {role} SET statement_timeout = '700ms';
             GRANT CREATE ON DATABASE postgres TO {role};"
        ))
        .await
        .expect("create the role");
    let url = bouncer().url(role, "postgres");
    let (store, _schemas) = store(
        "pgb_timeout",
        &url,
        pooler_options()
            .long_poll(false)
            .client_retry_budget(Duration::ZERO),
    )
    .await;
    store.read("i").await.expect("a call that does not wait");

    // Hold a lock the read must wait for, longer than the timeout.
    let mut holder = common::admin_client().await;
    let tx = holder.transaction().await.expect("begin");
    tx.batch_execute(&format!(
        "LOCK TABLE \"{}\".history IN ACCESS EXCLUSIVE MODE",
        store.schema()
    ))
    .await
    .expect("lock history");
    let err = store
        .read("i")
        .await
        .expect_err("the read waits past the role's statement timeout");
    tx.rollback().await.expect("rollback");
    let text = err.to_string();
    assert!(
        text.contains("57014"),
        "expected a statement timeout: {text}"
    );
    assert!(
        err.is_retryable(),
        "a cancelled statement is retryable: {text}"
    );
}

/// The CLI through PgBouncer with `--transaction-pooler`. (Without it the
/// pool's start-up option is refused, as in
/// `without_the_option_pgbouncer_refuses_the_pool_connections`; the CLI
/// retries that connection error for its 30 s budget before it fails.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_reads_through_pgbouncer_with_transaction_pooler() {
    let (store, _schemas) = store("pgb_cli", &pooled_url(), pooler_options()).await;
    let cli = |extra: &[&str]| -> std::process::Output {
        std::process::Command::new(env!("CARGO_BIN_EXE_duroxide-postgres"))
            .args(["status", "--json", "--url", &pooled_url()])
            .args(["--schema", store.schema()])
            .args(extra)
            .output()
            .expect("run duroxide-postgres")
    };
    let out = cli(&["--transaction-pooler"]);
    assert!(
        out.status.success(),
        "status through PgBouncer failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let status: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON status");
    assert!(status.is_object(), "{status}");
}
