//! `duroxide-postgres`: operate a store from the command line.
//!
//! ```text
//! duroxide-postgres migrate [--retire-other-function-sets]   create or upgrade the schema
//! duroxide-postgres verify                  check it, running no DDL
//! duroxide-postgres status [--attempts N]   instances, queues, leases, vacuum, tables
//! duroxide-postgres show ID [--history N]   one instance: executions, timeline, pending, KV
//! duroxide-postgres list [--status S,..] [--name N [--version V]] [--since AGE] [--before AGE]
//!                        [--finished-since AGE] [--finished-before AGE]
//!                        [--roots] [--parent ID] [--limit N] [--cursor C]
//!     instances newest first, a page at a time (keyset: pass the printed
//!     cursor for the next page)
//! duroxide-postgres stuck [--ready-for SECS] [--attempts N] [--limit N]
//! duroxide-postgres cancel ID [--reason TEXT]
//! duroxide-postgres raise ID NAME DATA
//! duroxide-postgres delete ID [--force]
//! duroxide-postgres ui [--listen 127.0.0.1:8080] [--token T]   read-only web dashboard
//! duroxide-postgres purge --older-than AGE [--status completed,failed] [--dry-run]
//!                         [--batch-size N] [--throttle F]
//!     delete finished root instance trees (with their sub-orchestrations)
//!     that completed more than AGE ago (30d, 12h, 90m, 45s), in short
//!     batches, printing progress; --dry-run only counts
//!
//! common: [--url URL | URL] [--schema NAME] [--json] [--transaction-pooler]
//! ```
//!
//! The URL defaults to `$DATABASE_URL`, the schema to `duroxide`.
//! `--transaction-pooler`: the URL goes through PgBouncer in transaction
//! mode (`PostgresOptions::transaction_pooler`). Read
//! commands print a table that fits 100 columns, or JSON with `--json`. They
//! and the writing commands run no DDL (the schema must be migrated); cancel,
//! raise and delete go through duroxide's `Client`, so the runtime's rules
//! apply. Exit status 0 on success, 1 on an error (including an unknown
//! instance), 2 on bad usage.

mod purge;
mod render;
#[cfg(feature = "ui")]
mod ui;

use duroxide::Client;
use duroxide_postgres::inspect::InstanceList;
use duroxide_postgres::inspect::{human_ms, InstanceDetail, LeaseState, Status, StuckWork};
use duroxide_postgres::{
    InstanceCursor, InstanceQuery, MigrationPolicy, PostgresOptions, PostgresProvider,
    PurgeRequest, TerminalStatus, DEFAULT_SCHEMA,
};
use render::{bytes, opt_time, time, Table};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

const USAGE: &str = "\
usage: duroxide-postgres COMMAND [--url URL | URL] [--schema NAME] [--json]
                         [--transaction-pooler] ...
  migrate [--retire-other-function-sets]   create or upgrade the schema
  verify                                   check the schema, running no DDL
  status [--attempts N]                    health: instances, queues, leases, vacuum
  show ID [--history N]                    an instance, its timeline and pending work
  list [--status S,..] [--name N [--version V]] [--since AGE] [--before AGE] [--roots]
       [--finished-since AGE] [--finished-before AGE] [--parent ID] [--limit N] [--cursor C]
                                           instances, newest first, a page at a time
  stuck [--ready-for SECS] [--attempts N] [--limit N]
                                           work that does not move, and why
  cancel ID [--reason TEXT]                cancel an instance
  raise ID NAME DATA                       raise an external event
  delete ID [--force]                      delete an instance (and its children)
  ui [--listen ADDR] [--token T]           read-only web dashboard (default 127.0.0.1:8080)
  purge --older-than AGE [--status completed,failed] [--dry-run] [--batch-size N] [--throttle F]
                                           delete finished root trees older than AGE (30d, 12h)
URL defaults to $DATABASE_URL, NAME to duroxide. --transaction-pooler: URL is PgBouncer
in transaction mode (unnamed statements; statement_timeout must be set on the role).";

/// A failed command: exit status 1 with a message, or 2 with the usage.
enum Failure {
    Error(String),
    Usage(String),
}

type Outcome = Result<(), Failure>;

fn error(e: impl std::fmt::Display) -> Failure {
    Failure::Error(e.to_string())
}

/// Parsed command line.
#[derive(Default)]
struct Args {
    command: String,
    positional: Vec<String>,
    url: Option<String>,
    schema: Option<String>,
    json: bool,
    retire: bool,
    transaction_pooler: bool,
    force: bool,
    attempts: Option<u32>,
    ready_for: Option<u64>,
    limit: Option<u32>,
    history: Option<u32>,
    reason: Option<String>,
    listen: Option<String>,
    token: Option<String>,
    older_than: Option<Duration>,
    status: Option<String>,
    name: Option<String>,
    version: Option<String>,
    since: Option<Duration>,
    before: Option<Duration>,
    finished_since: Option<Duration>,
    finished_before: Option<Duration>,
    roots: bool,
    parent: Option<String>,
    cursor: Option<String>,
    dry_run: bool,
    batch_size: Option<u32>,
    throttle: Option<f64>,
}

fn parse(raw: Vec<String>) -> Result<Args, Failure> {
    let mut it = raw.into_iter();
    let mut args = Args {
        command: it
            .next()
            .ok_or_else(|| Failure::Usage("no command".into()))?,
        ..Args::default()
    };
    fn value(it: &mut impl Iterator<Item = String>, flag: &str) -> Result<String, Failure> {
        it.next()
            .ok_or_else(|| Failure::Usage(format!("{flag} needs a value")))
    }
    fn number<T: std::str::FromStr>(v: String, flag: &str) -> Result<T, Failure> {
        v.parse()
            .map_err(|_| Failure::Usage(format!("{flag} takes a number, not {v:?}")))
    }
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--url" => args.url = Some(value(&mut it, &arg)?),
            "--schema" => args.schema = Some(value(&mut it, &arg)?),
            "--json" => args.json = true,
            "--retire-other-function-sets" => args.retire = true,
            "--transaction-pooler" => args.transaction_pooler = true,
            "--force" => args.force = true,
            "--attempts" => args.attempts = Some(number(value(&mut it, &arg)?, &arg)?),
            "--ready-for" => args.ready_for = Some(number(value(&mut it, &arg)?, &arg)?),
            "--limit" => args.limit = Some(number(value(&mut it, &arg)?, &arg)?),
            "--history" => args.history = Some(number(value(&mut it, &arg)?, &arg)?),
            "--reason" => args.reason = Some(value(&mut it, &arg)?),
            "--listen" => args.listen = Some(value(&mut it, &arg)?),
            "--token" => args.token = Some(value(&mut it, &arg)?),
            "--older-than" | "--since" | "--before" | "--finished-since" | "--finished-before" => {
                let v = value(&mut it, &arg)?;
                let age = parse_age(&v).ok_or_else(|| {
                    Failure::Usage(format!("{arg} takes an age such as 30d or 12h, not {v:?}"))
                })?;
                match arg.as_str() {
                    "--older-than" => args.older_than = Some(age),
                    "--since" => args.since = Some(age),
                    "--before" => args.before = Some(age),
                    "--finished-since" => args.finished_since = Some(age),
                    _ => args.finished_before = Some(age),
                }
            }
            "--status" => args.status = Some(value(&mut it, &arg)?),
            "--name" => args.name = Some(value(&mut it, &arg)?),
            "--version" => args.version = Some(value(&mut it, &arg)?),
            "--roots" => args.roots = true,
            "--parent" => args.parent = Some(value(&mut it, &arg)?),
            "--cursor" => args.cursor = Some(value(&mut it, &arg)?),
            "--dry-run" => args.dry_run = true,
            "--batch-size" => args.batch_size = Some(number(value(&mut it, &arg)?, &arg)?),
            "--throttle" => {
                let f: f64 = number(value(&mut it, &arg)?, &arg)?;
                if !(f.is_finite() && f >= 0.0) {
                    return Err(Failure::Usage("--throttle takes a number >= 0".into()));
                }
                args.throttle = Some(f);
            }
            "--" => args.positional.extend(it.by_ref()),
            _ if arg.starts_with("--") => {
                return Err(Failure::Usage(format!("unknown option {arg}")))
            }
            _ => args.positional.push(arg),
        }
    }
    Ok(args)
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let result = match parse(std::env::args().skip(1).collect()) {
        Ok(args) => run(args).await,
        Err(f) => Err(f),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure::Error(message)) => {
            eprintln!("error: {message}");
            ExitCode::FAILURE
        }
        Err(Failure::Usage(message)) => {
            eprintln!("{message}\n{USAGE}");
            ExitCode::from(2)
        }
    }
}

/// The positional arguments of a command (the last one may be the URL of
/// migrate and verify, as before `--url` existed).
fn positionals(args: &mut Args, names: &[&str], url_last: bool) -> Result<Vec<String>, Failure> {
    if url_last && args.url.is_none() && args.positional.len() == names.len() + 1 {
        args.url = args.positional.pop();
    }
    if args.positional.len() != names.len() {
        return Err(Failure::Usage(format!(
            "{} takes {}",
            args.command,
            if names.is_empty() {
                "no arguments".to_string()
            } else {
                names.join(" ")
            }
        )));
    }
    Ok(std::mem::take(&mut args.positional))
}

async fn run(mut args: Args) -> Outcome {
    let verb = args.command.clone();
    let (policy, names): (MigrationPolicy, &[&str]) = match verb.as_str() {
        "migrate" => (MigrationPolicy::Apply, &[]),
        "verify" | "status" | "list" | "stuck" | "ui" | "purge" => {
            (MigrationPolicy::VerifyOnly, &[])
        }
        "show" | "cancel" | "delete" => (MigrationPolicy::VerifyOnly, &["ID"]),
        "raise" => (MigrationPolicy::VerifyOnly, &["ID", "NAME", "DATA"]),
        "help" | "--help" | "-h" => {
            println!("{USAGE}");
            return Ok(());
        }
        other => return Err(Failure::Usage(format!("unknown command {other:?}"))),
    };
    if args.retire && verb != "migrate" {
        return Err(Failure::Usage(
            "--retire-other-function-sets belongs to migrate".into(),
        ));
    }
    let pos = positionals(
        &mut args,
        names,
        matches!(verb.as_str(), "migrate" | "verify"),
    )?;
    // Usage errors of list and purge exit 2 before any connection.
    let listing = (verb == "list").then(|| list_query(&args)).transpose()?;
    let purging = (verb == "purge")
        .then(|| purge_request(&args))
        .transpose()?;
    let url = args
        .url
        .clone()
        .or_else(|| std::env::var("DATABASE_URL").ok())
        .ok_or_else(|| Failure::Usage("no database URL: pass --url or set DATABASE_URL".into()))?;
    let schema = args
        .schema
        .clone()
        .unwrap_or_else(|| DEFAULT_SCHEMA.to_string());
    let options = PostgresOptions::new()
        .schema(&schema)
        .migration_policy(policy)
        .long_poll(false)
        .health_sample_interval(None)
        .max_connections(2)
        .transaction_pooler(args.transaction_pooler);
    let store = PostgresProvider::connect(&url, options)
        .await
        .map_err(error)?;
    let attempts = args.attempts.unwrap_or(5);
    match verb.as_str() {
        "migrate" | "verify" => schema_command(&store, &verb, &schema, args.retire).await,
        "status" => {
            let status = store.inspect().status(attempts).await.map_err(error)?;
            emit(args.json, &status, print_status)
        }
        "show" => {
            let limit = args.history.unwrap_or(200);
            let detail = store
                .inspect()
                .instance(&pos[0], limit)
                .await
                .map_err(error)?;
            let detail = detail.ok_or_else(|| error(format!("no instance {:?}", pos[0])))?;
            emit(args.json, &detail, print_instance)
        }
        "list" => {
            let (query, cursor) = listing.expect("parsed above");
            let page = store
                .inspect()
                .list(&query, cursor.as_ref())
                .await
                .map_err(error)?;
            emit(args.json, &page, print_list)
        }
        "stuck" => {
            let ready_for = Duration::from_secs(args.ready_for.unwrap_or(60));
            let limit = args.limit.unwrap_or(50);
            let stuck = store
                .inspect()
                .stuck(ready_for, attempts, limit)
                .await
                .map_err(error)?;
            emit(args.json, &stuck, print_stuck)
        }
        "ui" => serve(store, &args).await,
        "purge" => {
            let request = purging.expect("parsed above");
            purge::run(&store, &schema, &request).await
        }
        _ => client_command(store, &verb, &pos, &args).await,
    }
}

#[cfg(feature = "ui")]
async fn serve(store: PostgresProvider, args: &Args) -> Outcome {
    let listen = args.listen.as_deref().unwrap_or("127.0.0.1:8080");
    ui::serve(store, listen, args.token.clone())
        .await
        .map_err(error)
}

#[cfg(not(feature = "ui"))]
async fn serve(_store: PostgresProvider, _args: &Args) -> Outcome {
    Err(error(
        "this build has no dashboard (built without the \"ui\" feature)",
    ))
}

async fn schema_command(
    store: &PostgresProvider,
    verb: &str,
    schema: &str,
    retire: bool,
) -> Outcome {
    if retire {
        let dropped = store.retire_other_function_sets().await.map_err(error)?;
        for signature in &dropped {
            println!("retired {signature}");
        }
        println!("{} function(s) of other builds retired", dropped.len());
    }
    let verb = if verb == "migrate" {
        "is up to date"
    } else {
        "verified"
    };
    println!(
        "schema {schema} {verb} (migration {:04}, function set {})",
        PostgresProvider::schema_version(),
        store.function_set()
    );
    Ok(())
}

/// cancel, raise, delete: through duroxide's `Client`, after checking that
/// the instance exists (the client would otherwise queue a message for an
/// instance that may never start).
async fn client_command(
    store: PostgresProvider,
    verb: &str,
    pos: &[String],
    args: &Args,
) -> Outcome {
    let id = &pos[0];
    let exists = store.inspect().instance(id, 0).await.map_err(error)?;
    let Some(instance) = exists else {
        return Err(error(format!("no instance {id:?}")));
    };
    let client = Client::new(Arc::new(store));
    let report = match verb {
        "cancel" => {
            if instance.status != "Running" {
                return Err(error(format!(
                    "instance {id:?} is {}, not running: nothing to cancel",
                    instance.status
                )));
            }
            let reason = args
                .reason
                .clone()
                .unwrap_or_else(|| "cancelled by operator".into());
            client
                .cancel_instance(id.as_str(), reason.as_str())
                .await
                .map_err(error)?;
            serde_json::json!({"instance_id": id, "cancel_requested": true, "reason": reason})
        }
        "raise" => {
            client
                .raise_event(id.as_str(), pos[1].as_str(), pos[2].as_str())
                .await
                .map_err(error)?;
            serde_json::json!({"instance_id": id, "event_raised": pos[1]})
        }
        _ => {
            let r = client
                .delete_instance(id, args.force)
                .await
                .map_err(error)?;
            serde_json::json!({
                "instance_id": id,
                "instances_deleted": r.instances_deleted,
                "executions_deleted": r.executions_deleted,
                "events_deleted": r.events_deleted,
                "queue_messages_deleted": r.queue_messages_deleted,
            })
        }
    };
    if args.json {
        println!("{report}");
    } else {
        match verb {
            "cancel" => println!("cancellation of {id} requested"),
            "raise" => println!("event {} raised on {id}", pos[1]),
            _ => println!(
                "deleted {id}: {} instance(s), {} execution(s), {} event(s), {} queued message(s)",
                report["instances_deleted"],
                report["executions_deleted"],
                report["events_deleted"],
                report["queue_messages_deleted"]
            ),
        }
    }
    Ok(())
}

/// The request of `purge` from its flags.
fn purge_request(args: &Args) -> Result<PurgeRequest, Failure> {
    let older_than = args
        .older_than
        .ok_or_else(|| Failure::Usage("purge needs --older-than".into()))?;
    let mut request = PurgeRequest::older_than(older_than);
    if let Some(v) = &args.status {
        let parsed: Option<Vec<TerminalStatus>> = v
            .split(',')
            .map(|s| TerminalStatus::parse(s.trim()))
            .collect();
        request.statuses = parsed.filter(|l| !l.is_empty()).ok_or_else(|| {
            Failure::Usage("--status takes completed and/or failed, comma-separated".into())
        })?;
    }
    request.dry_run = args.dry_run;
    if let Some(n) = args.batch_size.filter(|n| *n > 0) {
        request.batch_size = n;
    }
    if let Some(f) = args.throttle {
        request.throttle = f;
    }
    Ok(request)
}

/// The listing's statuses, as the store spells them.
const LIST_STATUSES: [&str; 4] = ["Running", "Completed", "Failed", "ContinuedAsNew"];

/// A status of `list`, in any case (`failed`, `Failed`).
pub(crate) fn list_status(s: &str) -> Option<&'static str> {
    LIST_STATUSES
        .into_iter()
        .find(|known| known.eq_ignore_ascii_case(s.trim()))
}

/// The query and cursor of `list` from its flags.
fn list_query(args: &Args) -> Result<(InstanceQuery, Option<InstanceCursor>), Failure> {
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0);
    let ago = |d: Option<Duration>| d.map(|d| now_ms.saturating_sub(d.as_millis() as u64));
    let mut query = InstanceQuery::new()
        .created_between(ago(args.since), ago(args.before))
        .completed_between(ago(args.finished_since), ago(args.finished_before))
        .limit(args.limit.unwrap_or(50));
    if let Some(v) = &args.status {
        for s in v.split(',') {
            let status = list_status(s).ok_or_else(|| {
                Failure::Usage(format!(
                    "--status takes {}, comma-separated, not {s:?}",
                    LIST_STATUSES.join(", ")
                ))
            })?;
            query = query.status(status);
        }
    }
    match (&args.name, &args.version) {
        (Some(name), version) => query = query.orchestration(name, version.as_deref()),
        (None, Some(_)) => return Err(Failure::Usage("--version needs --name".into())),
        (None, None) => {}
    }
    if args.roots {
        query = query.roots_only();
    }
    if let Some(parent) = &args.parent {
        query = query.parent(parent);
    }
    let cursor = match &args.cursor {
        None => None,
        Some(c) => Some(InstanceCursor::from_token(c).ok_or_else(|| {
            Failure::Usage(format!(
                "--cursor takes the cursor a previous list printed, not {c:?}"
            ))
        })?),
    };
    Ok((query, cursor))
}

fn print_list(page: &InstanceList) {
    if page.items.is_empty() {
        println!("no instances");
        return;
    }
    let mut t = Table::new(&[
        "INSTANCE",
        "ORCHESTRATION",
        "VERSION",
        "STATUS",
        "EXEC",
        "CREATED",
        "FINISHED",
    ]);
    for i in &page.items {
        t.row(vec![
            i.instance_id.clone(),
            i.orchestration_name.clone(),
            i.orchestration_version.clone(),
            i.status.clone(),
            i.current_execution_id.to_string(),
            time(i.created_at_ms as i64),
            opt_time(i.completed_at_ms.map(|m| m as i64)),
        ]);
    }
    print!("{}", t.render());
    if let Some(c) = &page.next_cursor {
        println!("\nmore: the same command with --cursor {c}");
    }
}

fn emit<T: serde::Serialize>(json: bool, value: &T, text: fn(&T)) -> Outcome {
    if json {
        println!("{}", serde_json::to_string_pretty(value).map_err(error)?);
    } else {
        text(value);
    }
    Ok(())
}

fn age(ms: Option<u64>) -> String {
    ms.map(human_ms).unwrap_or_else(|| "-".into())
}

fn print_status(s: &Status) {
    println!("store {}", s.schema);
    let counts: Vec<String> = s
        .instances
        .iter()
        .map(|c| format!("{} {}", c.status, c.instances))
        .collect();
    let total: u64 = s.instances.iter().map(|c| c.instances).sum();
    println!(
        "instances: {total}{}{}\n",
        if counts.is_empty() { "" } else { " — " },
        counts.join(", ")
    );

    let threshold = format!(">={} TRIES", s.health.attempts_threshold);
    let mut q = Table::new(&[
        "QUEUE",
        "READY",
        "DELAYED",
        "LEASED",
        "EXPIRED LEASES",
        "OLDEST READY",
        &threshold,
        "DEAD TUPLES",
    ]);
    for h in &s.health.queues {
        q.row(vec![
            h.queue.as_str().to_string(),
            h.ready.to_string(),
            h.delayed.to_string(),
            h.leased.to_string(),
            h.expired_leases.to_string(),
            age(h.oldest_ready_age_ms),
            h.at_attempts.to_string(),
            h.dead_tuples.to_string(),
        ]);
    }
    print!("{}", q.render());

    println!();
    match &s.health.vacuum_holder {
        None => println!("vacuum: no other session holds a snapshot"),
        Some(h) => {
            let line =
                format!(
                "vacuum: oldest snapshot held by pid {} ({}), transaction {} old, query started {}",
                h.pid,
                h.application.as_deref().filter(|a| !a.is_empty()).unwrap_or("?"),
                age(h.transaction_age_ms),
                opt_time(h.query_start_ms)
            );
            println!("{}", render::wrap(&line, 8));
        }
    }
    println!(
        "notifications: {:.2}% of the server's LISTEN/NOTIFY queue in use\n",
        s.health.notification_queue_usage * 100.0
    );

    let mut t = Table::new(&["TABLE", "LIVE", "DEAD", "SIZE", "LAST VACUUM"]);
    for table in &s.tables {
        t.row(vec![
            table.table.clone(),
            table.live_tuples.to_string(),
            table.dead_tuples.to_string(),
            bytes(table.total_bytes),
            opt_time(table.last_vacuum_ms),
        ]);
    }
    print!("{}", t.render());
}

fn print_instance(d: &InstanceDetail) {
    let version = d.orchestration_version.as_deref().unwrap_or("-");
    println!("instance   {}", d.instance_id);
    println!("orchestr.  {} (version {version})", d.orchestration_name);
    println!(
        "status     {} (execution {}), created {}, updated {}",
        d.status,
        d.current_execution_id,
        time(d.created_at_ms),
        time(d.updated_at_ms)
    );
    if let Some(p) = &d.parent_instance_id {
        println!("parent     {p}");
    }
    if let Some(c) = &d.custom_status {
        println!(
            "custom     {} (v{})",
            render::cut(c, 88),
            d.custom_status_version
        );
    }
    if let Some(o) = &d.output {
        println!("output     {}", render::cut(o, 88));
    }

    println!("\nEXECUTIONS");
    let mut t = Table::new(&["ID", "STATUS", "STARTED", "COMPLETED", "EVENTS", "OUTPUT"]);
    for e in &d.executions {
        t.row(vec![
            e.execution_id.to_string(),
            e.status.clone(),
            time(e.started_at_ms),
            opt_time(e.completed_at_ms),
            e.events.to_string(),
            e.output.clone().unwrap_or_default(),
        ]);
    }
    print!("{}", t.render());

    println!(
        "\nHISTORY{}",
        if d.history_truncated {
            " (latest events only; --history N for more)"
        } else {
            ""
        }
    );
    let mut t = Table::new(&["TIME", "EXEC", "#", "KIND", "NAME", "DETAIL"]);
    for h in &d.history {
        let mut kind = h.kind.clone();
        if h.failed {
            kind.push_str(" !");
        }
        let detail = match (h.source_event_id, &h.summary) {
            (Some(src), Some(s)) => format!("(#{src}) {s}"),
            (Some(src), None) => format!("(#{src})"),
            (None, s) => s.clone().unwrap_or_default(),
        };
        t.row(vec![
            h.time_ms.map(|t| time(t as i64)).unwrap_or_default(),
            h.execution_id.to_string(),
            h.event_id.to_string(),
            kind,
            h.name.clone().unwrap_or_default(),
            detail,
        ]);
    }
    print!("{}", t.render());

    println!("\nPENDING");
    if d.pending.is_empty() {
        println!("(nothing queued)");
    } else {
        let mut t = Table::new(&["QUEUE", "ID", "KIND", "VISIBLE", "TRIES", "LEASE"]);
        for p in &d.pending {
            let lease = match (p.lease, p.locked_until_ms) {
                (LeaseState::Held, Some(until)) => format!("held until {}", time(until)),
                (LeaseState::Expired, Some(until)) => format!("expired at {}", time(until)),
                _ => "none".to_string(),
            };
            t.row(vec![
                p.queue.as_str().to_string(),
                p.item_id.to_string(),
                p.kind.clone(),
                time(p.visible_at_ms),
                p.attempt_count.to_string(),
                lease,
            ]);
        }
        print!("{}", t.render());
    }

    if !d.kv.is_empty() {
        println!("\nKV");
        let mut t = Table::new(&["KEY", "VALUE"]);
        for (k, v) in &d.kv {
            t.row(vec![k.clone(), v.clone()]);
        }
        print!("{}", t.render());
    }
    if !d.children.is_empty() {
        println!("\nCHILDREN");
        for c in &d.children {
            println!("  {c}");
        }
    }
}

fn print_stuck(items: &Vec<StuckWork>) {
    if items.is_empty() {
        println!("nothing stuck");
        return;
    }
    let mut t = Table::new(&[
        "QUEUE",
        "INSTANCE",
        "KIND",
        "READY FOR",
        "TRIES",
        "LEASE EXPIRED",
    ]);
    for w in items {
        t.row(vec![
            w.queue.as_str().to_string(),
            w.instance_id.clone(),
            w.kind.clone(),
            age(w.ready_age_ms),
            w.attempt_count.to_string(),
            w.lease_expired_ms
                .map(|m| format!("{} ago", human_ms(m)))
                .unwrap_or_else(|| "-".into()),
        ]);
    }
    print!("{}", t.render());
    println!();
    for w in items {
        let line = format!("{} {}: {}", w.queue.as_str(), w.instance_id, w.why);
        println!("{}", render::wrap(&line, 4));
    }
}

/// `30d`, `12h`, `90m`, `45s`.
pub(crate) fn parse_age(s: &str) -> Option<Duration> {
    let s = s.trim();
    let unit = s.chars().last()?;
    let n: u64 = s[..s.len() - unit.len_utf8()].parse().ok()?;
    let secs = match unit {
        's' => n,
        'm' => n.checked_mul(60)?,
        'h' => n.checked_mul(3600)?,
        'd' => n.checked_mul(86_400)?,
        _ => return None,
    };
    Some(Duration::from_secs(secs))
}
