//! `duroxide-postgres`: operate a store from the command line.
//!
//! Every subcommand has `--help`; `duroxide-postgres --help` lists them and
//! `duroxide-postgres completions SHELL` prints shell completions. The URL
//! comes from `--url` (or a last positional argument of `migrate` and
//! `verify`) or `$DATABASE_URL`, the schema from `--schema` (default
//! `duroxide`). `--transaction-pooler`: the URL goes through PgBouncer in
//! transaction mode (`PostgresOptions::transaction_pooler`). Read commands
//! print tables that fit 100 columns, or JSON with `--json`. They and the
//! writing commands run no DDL (the schema must be migrated); cancel, raise
//! and delete go through duroxide's `Client`, so the runtime's rules apply.
//! Exit status 0 on success, 1 on an error (including an unknown instance),
//! 2 on bad usage.

mod cli;
mod progress;
mod purge;
mod render;
mod top;
#[cfg(feature = "ui")]
mod ui;

use clap::Parser;
use cli::{Cli, Command, ListArgs, PurgeArgs};
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

/// A failed command: exit status 1 with a message, or 2 with the usage.
enum Failure {
    Error(String),
    Usage(String),
}

type Outcome = Result<(), Failure>;

fn error(e: impl std::fmt::Display) -> Failure {
    Failure::Error(e.to_string())
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    // Help and version exit 0, bad usage 2 (clap's conventions).
    let parsed = Cli::parse();
    match run(parsed).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure::Error(message)) => {
            eprintln!("error: {message}");
            ExitCode::FAILURE
        }
        Err(Failure::Usage(message)) => cli::usage_error(message),
    }
}

async fn run(cli: Cli) -> Outcome {
    let Cli { common, command } = cli;
    if let Command::Completions { shell } = &command {
        cli::print_completions(*shell);
        return Ok(());
    }
    let policy = match command {
        Command::Migrate { .. } => MigrationPolicy::Apply,
        _ => MigrationPolicy::VerifyOnly,
    };
    // Usage errors of list and purge exit 2 before any connection.
    let listing = match &command {
        Command::List(l) => Some(list_query(l)?),
        _ => None,
    };
    let purging = match &command {
        Command::Purge(p) => Some(purge_request(p)?),
        _ => None,
    };
    if let Command::Ui(ui) = &command {
        if ui.allow_writes && ui.token.is_none() {
            return Err(Failure::Usage(
                "--allow-writes needs --token: writes are never open to anyone who can connect"
                    .into(),
            ));
        }
    }
    let positional_url = match &command {
        Command::Migrate { at, .. } | Command::Verify { at } => at.clone(),
        _ => None,
    };
    let url = common
        .url
        .clone()
        .or(positional_url)
        .or_else(|| std::env::var("DATABASE_URL").ok())
        .ok_or_else(|| Failure::Usage("no database URL: pass --url or set DATABASE_URL".into()))?;
    let schema = common
        .schema
        .clone()
        .unwrap_or_else(|| DEFAULT_SCHEMA.to_string());
    let options = PostgresOptions::new()
        .schema(&schema)
        .migration_policy(policy)
        .long_poll(false)
        .health_sample_interval(None)
        .max_connections(2)
        .transaction_pooler(common.transaction_pooler);
    let connecting = matches!(command, Command::Migrate { .. })
        .then(|| progress::Spinner::start(&format!("migrating schema {schema}")));
    let connected = PostgresProvider::connect(&url, options).await;
    if let Some(spinner) = connecting {
        spinner.finish();
    }
    let store = connected.map_err(error)?;
    let json = common.json;
    match command {
        Command::Migrate { retire, .. } => schema_command(&store, true, &schema, retire).await,
        Command::Verify { .. } => schema_command(&store, false, &schema, false).await,
        Command::Status { attempts } => {
            let status = store.inspect().status(attempts).await.map_err(error)?;
            emit(json, &status, print_status)
        }
        Command::Show { id, history } => {
            let detail = store
                .inspect()
                .instance(&id, history)
                .await
                .map_err(error)?;
            let detail = detail.ok_or_else(|| error(format!("no instance {id:?}")))?;
            emit(json, &detail, print_instance)
        }
        Command::List(_) => {
            let (query, cursor) = listing.expect("parsed above");
            let page = store
                .inspect()
                .list(&query, cursor.as_ref())
                .await
                .map_err(error)?;
            emit(json, &page, print_list)
        }
        Command::Stuck {
            ready_for,
            attempts,
            limit,
        } => {
            let stuck = store
                .inspect()
                .stuck(Duration::from_secs(ready_for), attempts, limit)
                .await
                .map_err(error)?;
            emit(json, &stuck, print_stuck)
        }
        Command::Top {
            once,
            interval,
            attempts,
        } => top::run(&store, json, once, interval, attempts).await,
        Command::Ui(ui) => serve(store, ui).await,
        Command::Purge(_) => {
            let request = purging.expect("parsed above");
            purge::run(&store, &schema, &request).await
        }
        Command::Cancel { id, reason } => {
            let reason = reason.unwrap_or_else(|| "cancelled by operator".into());
            client_command(store, json, &id, Write::Cancel(reason)).await
        }
        Command::Raise { id, name, data } => {
            client_command(store, json, &id, Write::Raise(name, data)).await
        }
        Command::Delete { id, force } => {
            client_command(store, json, &id, Write::Delete(force)).await
        }
        Command::Completions { .. } => unreachable!("answered before connecting"),
    }
}

#[cfg(feature = "ui")]
async fn serve(store: PostgresProvider, args: cli::UiArgs) -> Outcome {
    let options = ui::Options {
        token: args.token,
        allow_writes: args.allow_writes,
        refresh: Duration::from_secs(args.refresh.max(1)),
    };
    ui::serve(store, &args.listen, options).await.map_err(error)
}

#[cfg(not(feature = "ui"))]
async fn serve(_store: PostgresProvider, _args: cli::UiArgs) -> Outcome {
    Err(error(
        "this build has no dashboard (built without the \"ui\" feature)",
    ))
}

async fn schema_command(
    store: &PostgresProvider,
    migrate: bool,
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
    let verb = if migrate { "is up to date" } else { "verified" };
    println!(
        "schema {schema} {verb} (migration {:04}, function set {})",
        PostgresProvider::schema_version(),
        store.function_set()
    );
    Ok(())
}

/// A write of `cancel`, `raise` or `delete`.
enum Write {
    /// Cancel with this reason.
    Cancel(String),
    /// Raise the event of this name with this data.
    Raise(String, String),
    /// Delete (with `--force`: even a running instance).
    Delete(bool),
}

/// cancel, raise, delete: through duroxide's `Client`, after checking that
/// the instance exists (the client would otherwise queue a message for an
/// instance that may never start).
async fn client_command(store: PostgresProvider, json: bool, id: &str, write: Write) -> Outcome {
    let exists = store.inspect().instance(id, 0).await.map_err(error)?;
    let Some(instance) = exists else {
        return Err(error(format!("no instance {id:?}")));
    };
    let client = Client::new(Arc::new(store));
    let (report, text) = match write {
        Write::Cancel(reason) => {
            if instance.status != "Running" {
                return Err(error(format!(
                    "instance {id:?} is {}, not running: nothing to cancel",
                    instance.status
                )));
            }
            client
                .cancel_instance(id, reason.as_str())
                .await
                .map_err(error)?;
            (
                serde_json::json!({"instance_id": id, "cancel_requested": true, "reason": reason}),
                format!("cancellation of {id} requested"),
            )
        }
        Write::Raise(name, data) => {
            client
                .raise_event(id, name.as_str(), data.as_str())
                .await
                .map_err(error)?;
            (
                serde_json::json!({"instance_id": id, "event_raised": name}),
                format!("event {name} raised on {id}"),
            )
        }
        Write::Delete(force) => {
            let r = client.delete_instance(id, force).await.map_err(error)?;
            (
                serde_json::json!({
                    "instance_id": id,
                    "instances_deleted": r.instances_deleted,
                    "executions_deleted": r.executions_deleted,
                    "events_deleted": r.events_deleted,
                    "queue_messages_deleted": r.queue_messages_deleted,
                }),
                format!(
                    "deleted {id}: {} instance(s), {} execution(s), {} event(s), \
                     {} queued message(s)",
                    r.instances_deleted,
                    r.executions_deleted,
                    r.events_deleted,
                    r.queue_messages_deleted
                ),
            )
        }
    };
    if json {
        println!("{report}");
    } else {
        println!("{text}");
    }
    Ok(())
}

/// The request of `purge` from its flags.
fn purge_request(args: &PurgeArgs) -> Result<PurgeRequest, Failure> {
    let mut request = PurgeRequest::older_than(args.older_than);
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
fn list_query(args: &ListArgs) -> Result<(InstanceQuery, Option<InstanceCursor>), Failure> {
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0);
    let ago = |d: Option<Duration>| d.map(|d| now_ms.saturating_sub(d.as_millis() as u64));
    let mut query = InstanceQuery::new()
        .created_between(ago(args.since), ago(args.before))
        .completed_between(ago(args.finished_since), ago(args.finished_before))
        .limit(args.limit);
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

/// The queue-health table of `status` and `top`; `status` adds the dead
/// tuples column.
fn queue_table(s: &Status, dead_tuples: bool) -> Table {
    let threshold = format!(">={} TRIES", s.health.attempts_threshold);
    let mut headers = vec![
        "QUEUE",
        "READY",
        "DELAYED",
        "LEASED",
        "EXPIRED LEASES",
        "OLDEST READY",
        threshold.as_str(),
    ];
    if dead_tuples {
        headers.push("DEAD TUPLES");
    }
    let mut q = Table::new(&headers);
    for h in &s.health.queues {
        let mut row = vec![
            h.queue.as_str().to_string(),
            h.ready.to_string(),
            h.delayed.to_string(),
            h.leased.to_string(),
            h.expired_leases.to_string(),
            age(h.oldest_ready_age_ms),
            h.at_attempts.to_string(),
        ];
        if dead_tuples {
            row.push(h.dead_tuples.to_string());
        }
        q.row(row);
    }
    q
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

    let q = queue_table(s, true);
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
