//! `duroxide-postgres-workload`: runs a fixed, self-checking duroxide workload
//! on a PostgreSQL store.
//!
//! ```text
//! duroxide-postgres-workload --schema S --url URL --orchestrations N
//!                            [--prefix P] [--start] [--run-for-secs T]
//!                            [--name NAME]
//! ```
//!
//! What it is for: smoke- and soak-testing a deployment (does a real runtime
//! make progress on this database, with these credentials, over this
//! network?), and as the process under test of the fault-injection tests
//! (`tests/faults.rs`), which SIGKILL it mid-run and start it again. Those
//! tests also run the same workload in-process by including this file as a
//! module, so everything but `main` is written to be reused.
//!
//! It connects a `PostgresProvider` to schema `S` (migrating it if needed),
//! creates the side table `"S".workload_activity_runs` if missing, and runs a
//! duroxide runtime serving the orchestration `Workload`. Each of its two
//! executions runs two activities in sequence, a fan-out of three, a 50 ms
//! durable timer and the sub-orchestration `Child` (one activity); the first
//! execution then continues as new (its input carries a round counter and a
//! digest of the results so far), the second completes with an output derived
//! from the instance id and every result ([`expected`] says what each root
//! leaves behind).
//!
//! Every activity execution inserts one row (instance id, step) into the side
//! table, so repeated executions are visible afterwards: each step has at
//! least one row, and more than one only if the activity ran again (after a
//! lost lease or a failed ack; duroxide runs activities at least once).
//!
//! With `--start` it first starts `P-0` … `P-(N-1)` (prefix default
//! `workload`), skipping instances that already exist, and prints
//! `workload started K of N orchestrations` (a run killed before that line
//! must be repeated with `--start`). It then runs the runtime until all N are
//! terminal or `--run-for-secs` elapse, prints one summary line
//! (`workload schema=… completed=C …`), and exits 0 if all N completed with
//! the expected output, 1 otherwise, 2 on bad usage.
//!
//! `--name NAME` appends `-NAME` to the provider's `application_name`
//! (`duroxide-postgres-workload-NAME`), so that several processes on one
//! store can be told apart in `pg_stat_activity` and by triggers.
//!
//! The side table is written over its own small connection pool; its TLS
//! follows `sslmode` `disable`, `prefer` or `require` (certificate not
//! verified; the `verify-*` modes are not supported for this connection).
//! The runtime uses 2 s leases, so the work of a killed process is taken over
//! within seconds.

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use duroxide::runtime::registry::ActivityRegistry;
use duroxide::runtime::{Runtime, RuntimeOptions};
use duroxide::{ActivityContext, Client, OrchestrationContext, OrchestrationRegistry};
use duroxide::{ClientError, OrchestrationStatus};
use duroxide_postgres::{PostgresOptions, PostgresProvider};
use serde_json::json;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

const USAGE: &str = "usage: duroxide-postgres-workload --schema S --url URL --orchestrations N \
                     [--prefix P] [--start] [--run-for-secs T] [--name NAME]";

/// The root orchestration.
pub const ORCHESTRATION: &str = "Workload";
/// The sub-orchestration each execution of the root calls once.
pub const CHILD: &str = "Child";
/// The one activity; its input names the step.
const ACTIVITY: &str = "Step";
/// Executions of each root: the first continues as new, the last completes.
const ROUNDS: u64 = 2;
/// Steps of each root execution, in the order their results are folded in:
/// two in sequence, then a fan-out of three.
const SEQUENCE: [&str; 2] = ["seq1", "seq2"];
const FAN_OUT: [&str; 3] = ["fan1", "fan2", "fan3"];
/// The step of the child.
const CHILD_STEP: &str = "child";
/// `application_name` of the tool's own provider and of its side-table pool.
const APPLICATION_NAME: &str = "duroxide-postgres-workload";
const SIDE_APPLICATION_NAME: &str = "duroxide-postgres-workload-side";
/// Lease of orchestration turns and activities.
const LEASE: Duration = Duration::from_secs(2);

#[tokio::main]
async fn main() -> ExitCode {
    let args = match Args::parse(std::env::args().skip(1)) {
        Ok(args) => args,
        Err(message) => {
            eprintln!("{message}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    match run(&args).await {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(message) => {
            eprintln!("error: {message}");
            ExitCode::FAILURE
        }
    }
}

/// Runs the workload; `Ok(true)` if all N completed with the expected output.
async fn run(args: &Args) -> Result<bool, String> {
    let began = Instant::now();
    let application_name = match &args.name {
        Some(name) => format!("{APPLICATION_NAME}-{name}"),
        None => APPLICATION_NAME.to_string(),
    };
    let options = PostgresOptions::new()
        .schema(&args.schema)
        .application_name(&application_name);
    let store = Arc::new(
        PostgresProvider::connect(&args.url, options)
            .await
            .map_err(|e| e.to_string())?,
    );
    let side = SideTable::connect(&args.url, store.schema()).await?;
    let client = Client::new(store.clone());

    // Start before the runtime runs, and say so: a run killed before this
    // line must be repeated with --start.
    let ids = instance_ids(&args.prefix, args.orchestrations);
    if args.start {
        let started = start_missing(&client, &ids)
            .await
            .map_err(|e| format!("cannot start orchestrations: {e}"))?;
        println!("workload started {started} of {} orchestrations", ids.len());
    }
    let runtime =
        Runtime::start_with_options(store, activities(side), orchestrations(), runtime_options())
            .await;
    let tally = wait_until_terminal(&client, &ids, args.run_for).await;
    runtime.shutdown(Some(5_000)).await;

    for (id, problem) in tally.problems.iter().take(10) {
        eprintln!("{id}: {problem}");
    }
    println!(
        "workload schema={} prefix={} orchestrations={} completed={} \
         not_completed={} unfinished={} elapsed={:.1}s",
        args.schema,
        args.prefix,
        ids.len(),
        tally.completed,
        tally.problems.len(),
        tally.unfinished,
        began.elapsed().as_secs_f64()
    );
    Ok(tally.completed == ids.len())
}

/// Command-line arguments.
struct Args {
    schema: String,
    url: String,
    orchestrations: usize,
    prefix: String,
    start: bool,
    run_for: Option<Duration>,
    name: Option<String>,
}

impl Args {
    fn parse(mut args: impl Iterator<Item = String>) -> Result<Args, String> {
        let (mut schema, mut url, mut orchestrations) = (None, None, None);
        let (mut prefix, mut start, mut run_for) = ("workload".to_string(), false, None);
        let mut name = None;
        while let Some(flag) = args.next() {
            if flag == "--start" {
                start = true;
                continue;
            }
            let value = args.next().ok_or(format!("{flag} needs a value"))?;
            let number = || {
                value
                    .parse::<u64>()
                    .map_err(|_| format!("{flag}: not a number: {value}"))
            };
            match flag.as_str() {
                "--schema" => schema = Some(value.clone()),
                "--url" => url = Some(value.clone()),
                "--orchestrations" => orchestrations = Some(number()? as usize),
                "--prefix" => prefix = value.clone(),
                "--run-for-secs" => run_for = Some(Duration::from_secs(number()?)),
                "--name" => name = Some(value.clone()),
                _ => return Err(format!("unknown argument {flag}")),
            }
        }
        Ok(Args {
            schema: schema.ok_or("--schema is required")?,
            url: url.ok_or("--url is required")?,
            orchestrations: orchestrations.ok_or("--orchestrations is required")?,
            prefix,
            start,
            run_for,
            name,
        })
    }
}

// ---------------------------------------------------------------------------
// The workload
// ---------------------------------------------------------------------------

/// Runtime options of the tool: 2 s leases (renewed every second), fast idle
/// polling, four orchestration and four activity slots.
pub fn runtime_options() -> RuntimeOptions {
    RuntimeOptions {
        dispatcher_min_poll_interval: Duration::from_millis(10),
        orchestration_concurrency: 4,
        worker_concurrency: 4,
        orchestrator_lock_timeout: LEASE,
        worker_lock_timeout: LEASE,
        ..Default::default()
    }
}

/// `Workload` and `Child`.
pub fn orchestrations() -> OrchestrationRegistry {
    OrchestrationRegistry::builder()
        .register(ORCHESTRATION, workload)
        .register(CHILD, child)
        .build()
}

/// The activity `Step`, recording each execution in `side`.
pub fn activities(side: SideTable) -> ActivityRegistry {
    ActivityRegistry::builder()
        .register(ACTIVITY, move |ctx: ActivityContext, step: String| {
            let side = side.clone();
            async move {
                side.record(&ctx, &step).await?;
                Ok(step_result(ctx.instance_id(), &step))
            }
        })
        .build()
}

/// The root instance ids `<prefix>-0` … `<prefix>-(n-1)`.
pub fn instance_ids(prefix: &str, n: usize) -> Vec<String> {
    (0..n).map(|i| format!("{prefix}-{i}")).collect()
}

/// What one instance leaves behind when its root completed.
#[derive(Debug, Clone)]
pub struct Expected {
    pub instance: String,
    pub output: String,
    /// Its executions are 1..=executions.
    pub executions: u64,
    /// Steps recorded in the side table under this instance id.
    pub steps: Vec<String>,
}

/// The root `root` and its children, as they are once the root completed.
pub fn expected(root: &str) -> Vec<Expected> {
    let mut digest = FNV_OFFSET;
    let mut children = Vec::new();
    let mut root_steps = Vec::new();
    for round in 0..ROUNDS {
        for step in SEQUENCE.iter().chain(&FAN_OUT) {
            let step = root_step(round, step);
            digest = fold(digest, &step_result(root, &step));
            root_steps.push(step);
        }
        let child = child_id(root, round);
        let output = step_result(&child, CHILD_STEP);
        digest = fold(digest, &output);
        children.push(Expected {
            instance: child,
            output,
            executions: 1,
            steps: vec![CHILD_STEP.to_string()],
        });
    }
    let mut all = vec![Expected {
        instance: root.to_string(),
        output: root_output(root, digest),
        executions: ROUNDS,
        steps: root_steps,
    }];
    all.extend(children);
    all
}

async fn workload(ctx: OrchestrationContext, input: String) -> Result<String, String> {
    let state: serde_json::Value =
        serde_json::from_str(&input).map_err(|e| format!("bad input {input}: {e}"))?;
    let (Some(round), Some(mut digest)) = (state["round"].as_u64(), state["digest"].as_u64())
    else {
        return Err(format!("bad input {input}: needs round and digest"));
    };
    let instance = ctx.instance_id();

    for step in SEQUENCE {
        let result = ctx
            .schedule_activity(ACTIVITY, root_step(round, step))
            .await?;
        digest = fold(digest, &result);
    }
    let fan_out = FAN_OUT
        .iter()
        .map(|step| ctx.schedule_activity(ACTIVITY, root_step(round, step)))
        .collect();
    for result in ctx.join(fan_out).await {
        digest = fold(digest, &result?);
    }
    ctx.schedule_timer(Duration::from_millis(50)).await;
    let child = ctx
        .schedule_sub_orchestration_with_id(CHILD, child_id(&instance, round), "")
        .await?;
    digest = fold(digest, &child);

    if round + 1 < ROUNDS {
        let next = json!({ "round": round + 1, "digest": digest });
        return ctx.continue_as_new(next.to_string()).await;
    }
    Ok(root_output(&instance, digest))
}

async fn child(ctx: OrchestrationContext, _input: String) -> Result<String, String> {
    ctx.schedule_activity(ACTIVITY, CHILD_STEP).await
}

/// The input of a root's first execution.
fn initial_input() -> String {
    json!({ "round": 0, "digest": FNV_OFFSET }).to_string()
}

fn root_step(round: u64, step: &str) -> String {
    format!("r{round}.{step}")
}

/// Child ids are explicit: auto-generated ones restart with each execution's
/// event ids and would collide across continue-as-new.
fn child_id(root: &str, round: u64) -> String {
    format!("{root}-child{round}")
}

fn step_result(instance: &str, step: &str) -> String {
    format!("{step}@{instance}")
}

fn root_output(instance: &str, digest: u64) -> String {
    format!("{instance} done {digest:016x}")
}

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;

/// 64-bit FNV-1a of `text`, continuing from `digest`.
fn fold(digest: u64, text: &str) -> u64 {
    text.bytes().fold(digest, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

// ---------------------------------------------------------------------------
// Starting and waiting
// ---------------------------------------------------------------------------

/// Starts each of `ids` that does not exist yet; returns how many it started.
///
/// An instance exists once a runtime has processed its start. A start still
/// queued from an earlier run is not seen, and a second one is enqueued; the
/// runtime ignores the duplicate start of an existing instance.
pub async fn start_missing(client: &Client, ids: &[String]) -> Result<usize, ClientError> {
    let mut started = 0;
    for id in ids {
        if client.get_orchestration_status(id).await? == OrchestrationStatus::NotFound {
            client
                .start_orchestration(id, ORCHESTRATION, initial_input())
                .await?;
            started += 1;
        }
    }
    Ok(started)
}

/// Where the roots stand at the end of [`wait_until_terminal`].
#[derive(Debug, Default)]
pub struct Tally {
    /// Completed with the expected output.
    pub completed: usize,
    /// Terminal, but failed or with an unexpected output: (id, what).
    pub problems: Vec<(String, String)>,
    /// Not terminal (or unreadable) when the wait ended.
    pub unfinished: usize,
}

/// Polls the roots `ids` until all are terminal or `limit` (if any) passed.
/// Read errors count as "not terminal yet", so it rides out outages.
pub async fn wait_until_terminal(
    client: &Client,
    ids: &[String],
    limit: Option<Duration>,
) -> Tally {
    let deadline = limit.map(|limit| Instant::now() + limit);
    let mut tally = Tally::default();
    let mut pending: Vec<&String> = ids.iter().collect();
    loop {
        let mut still = Vec::new();
        for id in pending {
            match client.get_orchestration_status(id).await {
                Ok(OrchestrationStatus::Completed { output, .. }) => {
                    if output == expected(id)[0].output {
                        tally.completed += 1;
                    } else {
                        tally
                            .problems
                            .push((id.clone(), format!("unexpected output {output:?}")));
                    }
                }
                Ok(OrchestrationStatus::Failed { details, .. }) => {
                    tally
                        .problems
                        .push((id.clone(), format!("failed: {}", details.display_message())));
                }
                _ => still.push(id),
            }
        }
        pending = still;
        if pending.is_empty() || deadline.is_some_and(|d| Instant::now() >= d) {
            tally.unfinished = pending.len();
            return tally;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

// ---------------------------------------------------------------------------
// The side table
// ---------------------------------------------------------------------------

/// `"<schema>".workload_activity_runs`: one row per activity execution.
#[derive(Clone)]
pub struct SideTable {
    pool: Pool,
    /// The quoted schema: a validated identifier in double quotes, the only
    /// thing spliced into this tool's SQL.
    q: String,
}

impl SideTable {
    /// Connects a small pool to `url` and creates the table if missing.
    /// `schema` must be a validated identifier (a provider's `schema()`).
    pub async fn connect(url: &str, schema: &str) -> Result<SideTable, String> {
        let mut config: tokio_postgres::Config = url
            .parse()
            .map_err(|e| format!("side table connection: invalid URL: {e}"))?;
        config.application_name(SIDE_APPLICATION_NAME);
        let tls = native_tls::TlsConnector::builder()
            .danger_accept_invalid_certs(true)
            .danger_accept_invalid_hostnames(true)
            .build()
            .map_err(|e| format!("side table connection: TLS: {e}"))?;
        let manager = Manager::from_config(
            config,
            postgres_native_tls::MakeTlsConnector::new(tls),
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(4)
            .wait_timeout(Some(Duration::from_secs(10)))
            .create_timeout(Some(Duration::from_secs(10)))
            .runtime(deadpool_postgres::Runtime::Tokio1)
            .build()
            .map_err(|e| format!("side table connection: {e}"))?;
        let q = format!("\"{schema}\"");
        // Several processes may start at once: CREATE TABLE IF NOT EXISTS
        // is not safe against a concurrent one (duplicate pg_type row), so
        // creators take turns under a transaction-scoped advisory lock (one
        // for all schemas: it is held only while the table is created).
        let ddl = format!(
            "BEGIN; \
             SELECT pg_advisory_xact_lock(hashtext('duroxide-postgres-workload side table')); \
             CREATE TABLE IF NOT EXISTS {q}.workload_activity_runs (instance_id text NOT NULL, \
             activity text NOT NULL, run_at timestamptz NOT NULL DEFAULT now()); \
             COMMIT"
        );
        let client = pool.get().await.map_err(|e| e.to_string())?;
        client.batch_execute(&ddl).await.map_err(|e| {
            let cause = match e.as_db_error() {
                Some(db) => format!("{}: {}", db.code().code(), db.message()),
                None => e.to_string(),
            };
            format!("cannot create {q}.workload_activity_runs: {cause}")
        })?;
        Ok(SideTable { pool, q })
    }

    /// Records one execution of `step`, retrying until it is stored or the
    /// activity is cancelled: an outage must not fail the activity.
    ///
    /// The execution's start time identifies its row, so a retry after a
    /// failure whose insert did commit (the reply was lost) adds nothing.
    async fn record(&self, ctx: &ActivityContext, step: &str) -> Result<(), String> {
        let run_at = SystemTime::now();
        let sql = format!(
            "INSERT INTO {q}.workload_activity_runs (instance_id, activity, run_at) \
             SELECT $1::text, $2::text, $3::timestamptz \
             WHERE NOT EXISTS (SELECT 1 FROM {q}.workload_activity_runs \
                               WHERE instance_id = $1 AND activity = $2 AND run_at = $3)",
            q = self.q
        );
        let mut delay = Duration::from_millis(50);
        loop {
            let attempt = async {
                let client = self.pool.get().await.map_err(|e| e.to_string())?;
                client
                    .execute(&sql, &[&ctx.instance_id(), &step, &run_at])
                    .await
                    .map_err(|e| e.to_string())
            };
            match attempt.await {
                Ok(_) => return Ok(()),
                Err(e) => ctx.trace_warn(format!("recording {step} failed, retrying: {e}")),
            }
            tokio::select! {
                _ = ctx.cancelled() => return Err(format!("cancelled while recording {step}")),
                _ = tokio::time::sleep(delay) => {}
            }
            delay = (delay * 2).min(Duration::from_secs(1));
        }
    }
}
