//! The checks of `tests/citus.rs` beyond the validation suite. Each returns
//! a line of detail on success and says what went wrong otherwise.

use super::workload;
use crate::common::{self, client_at, unique_schema, Schemas};
use duroxide::runtime::{Runtime, RuntimeOptions};
use duroxide::{Client, OrchestrationStatus};
use duroxide_postgres::{PostgresOptions, PostgresProvider, Shards};
use sha2::{Digest, Sha256};
use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

type Outcome = Result<String, String>;

/// Upper bound of any wait for a precondition or an outcome.
const LIMIT: Duration = Duration::from_secs(120);

fn fail(what: &str) -> impl Fn(tokio_postgres::Error) -> String + '_ {
    move |e| match e.as_db_error() {
        Some(db) => format!("{what}: [{}] {}", db.code().code(), db.message()),
        None => format!("{what}: {e}"),
    }
}

/// Waits until `holds` is true, or fails after [`LIMIT`] saying `what`
/// (`common::wait::within`, as an error instead of a panic: this binary has
/// no test harness to catch one).
async fn until<F, Fut>(what: &str, holds: F) -> Result<(), String>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    if common::wait::within(LIMIT, holds).await {
        Ok(())
    } else {
        Err(format!("never happened within {LIMIT:?}: {what}"))
    }
}

async fn connect(
    url: &str,
    schema: &str,
    options: PostgresOptions,
) -> Result<Arc<PostgresProvider>, String> {
    PostgresProvider::connect(url, options.schema(schema))
        .await
        .map(Arc::new)
        .map_err(|e| format!("connect a store in {schema}: {e}"))
}

/// The nodes (`host:port`) holding the shards of `schema`'s tables.
pub async fn nodes_of(db: &tokio_postgres::Client, schema: &str) -> Result<Vec<String>, String> {
    let rows = db
        .query(
            "SELECT DISTINCT cs.nodename || ':' || cs.nodeport
             FROM citus_shards cs JOIN pg_dist_schema s ON s.colocationid = cs.colocation_id
             WHERE s.schemaid = $1::text::regnamespace ORDER BY 1",
            &[&schema],
        )
        .await
        .map_err(fail("read citus_shards"))?;
    Ok(rows.iter().map(|r| r.get(0)).collect())
}

/// Whether `schema` is a distributed schema (in `pg_dist_schema`).
async fn distributed(db: &tokio_postgres::Client, schema: &str) -> Result<bool, String> {
    let row = db
        .query_one(
            "SELECT count(*) FROM pg_dist_schema WHERE schemaid = $1::text::regnamespace",
            &[&schema],
        )
        .await
        .map_err(fail("read pg_dist_schema"))?;
    Ok(row.get::<_, i64>(0) == 1)
}

/// The active worker nodes, as `host:port`.
async fn workers(db: &tokio_postgres::Client) -> Result<Vec<(String, i32)>, String> {
    let rows = db
        .query(
            "SELECT node_name::text, node_port::int FROM citus_get_active_worker_nodes() ORDER BY 1, 2",
            &[],
        )
        .await
        .map_err(fail("list worker nodes"))?;
    Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
}

/// Moves `schema` to the worker that does not hold it; returns the target.
async fn move_to_other_worker(db: &tokio_postgres::Client, schema: &str) -> Result<String, String> {
    let from = nodes_of(db, schema).await?;
    let (host, port) = workers(db)
        .await?
        .into_iter()
        .find(|(h, p)| !from.contains(&format!("{h}:{p}")))
        .ok_or_else(|| format!("no worker other than {from:?}"))?;
    // block_writes: the queue tables have no replica identity (no primary
    // key), which logical replication of a move would need for updates.
    db.execute(
        "SELECT citus_schema_move($1::text::regnamespace, $2, $3, 'block_writes')",
        &[&schema, &host, &port],
    )
    .await
    .map_err(fail("citus_schema_move"))?;
    Ok(format!("{host}:{port}"))
}

/// The store's catalog as text (schema name replaced by `S`), to compare a
/// store on Citus with one on plain PostgreSQL: columns with types,
/// nullability and defaults, constraints, indexes, storage options,
/// sequence owners, and the functions' names and arguments.
async fn catalog(db: &tokio_postgres::Client, schema: &str) -> Result<Vec<String>, String> {
    let rows = db
        .query(
            "SELECT replace(x, $1, 'S') FROM (
               SELECT 'column ' || c.relname || '.' || a.attname || ' ' ||
                      format_type(a.atttypid, a.atttypmod) || ' notnull=' || a.attnotnull ||
                      ' default=' || coalesce(pg_get_expr(d.adbin, d.adrelid), '') AS x
               FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid
               JOIN pg_namespace n ON n.oid = c.relnamespace
               LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
               WHERE n.nspname = $1 AND a.attnum > 0 AND NOT a.attisdropped
                 AND c.relkind IN ('r', 'p')
               UNION ALL
               SELECT 'relation ' || c.relname || ' ' || c.relkind::text || ' ' ||
                      coalesce(c.reloptions::text, '') || ' ' ||
                      coalesce(pg_get_expr(c.relpartbound, c.oid), '')
               FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
               WHERE n.nspname = $1 AND c.relkind IN ('r', 'p', 'S', 'i', 'I')
               UNION ALL
               SELECT 'constraint ' || t.relname || ' ' || k.conname || ' ' || pg_get_constraintdef(k.oid)
               FROM pg_constraint k JOIN pg_class t ON t.oid = k.conrelid
               JOIN pg_namespace n ON n.oid = t.relnamespace WHERE n.nspname = $1
               UNION ALL
               SELECT 'index ' || pg_get_indexdef(i.indexrelid)
               FROM pg_index i JOIN pg_class c ON c.oid = i.indrelid
               JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = $1
               UNION ALL
               SELECT 'sequence ' || s.relname || ' owned by ' || t.relname || '.' || a.attname
               FROM pg_depend dep JOIN pg_class s ON s.oid = dep.objid AND s.relkind = 'S'
               JOIN pg_class t ON t.oid = dep.refobjid
               JOIN pg_attribute a ON a.attrelid = t.oid AND a.attnum = dep.refobjsubid
               JOIN pg_namespace n ON n.oid = s.relnamespace
               WHERE n.nspname = $1 AND dep.classid = 'pg_class'::regclass AND dep.deptype = 'a'
               UNION ALL
               SELECT 'function ' || p.proname || '(' || pg_get_function_identity_arguments(p.oid) || ')'
               FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace WHERE n.nspname = $1
             ) q ORDER BY 1",
            &[&schema],
        )
        .await
        .map_err(fail("read the catalog"))?;
    Ok(rows.iter().map(|r| r.get(0)).collect())
}

async fn ledger(db: &tokio_postgres::Client, schema: &str) -> Result<Vec<String>, String> {
    let rows = db
        .query(
            &format!(
                "SELECT version || ' ' || name || ' ' || checksum FROM \"{schema}\"._duroxide_migrations ORDER BY version"
            ),
            &[],
        )
        .await
        .map_err(fail("read the migration ledger"))?;
    Ok(rows.iter().map(|r| r.get(0)).collect())
}

/// A new store on the coordinator is a distributed schema on one worker,
/// with the same migration ledger and catalog as a store on plain
/// PostgreSQL (the shared test server), and a second start finds it up to
/// date.
pub async fn install(url: String) -> Outcome {
    let schemas = Schemas::at(&url);
    let schema = unique_schema("c_install");
    schemas.track(&schema);
    connect(&url, &schema, PostgresOptions::new()).await?;
    // Started again: verifies the ledger, installs nothing.
    connect(&url, &schema, PostgresOptions::new()).await?;
    let db = client_at(&url).await;
    if !distributed(&db, &schema).await? {
        return Err(format!(
            "{schema} is not a distributed schema: is citus.enable_schema_based_sharding on?"
        ));
    }
    let nodes = nodes_of(&db, &schema).await?;
    if nodes.len() != 1 {
        return Err(format!(
            "{schema}'s tables are on {nodes:?}, not on one node"
        ));
    }

    let plain_url = common::server::database_url();
    let plain_schemas = Schemas::default();
    let plain = unique_schema("c_plain");
    plain_schemas.track(&plain);
    connect(&plain_url, &plain, PostgresOptions::new()).await?;
    let plain_db = client_at(&plain_url).await;

    let (ours, theirs) = (
        ledger(&db, &schema).await?,
        ledger(&plain_db, &plain).await?,
    );
    if ours != theirs {
        return Err(format!(
            "ledgers differ:\ncitus: {ours:#?}\nplain: {theirs:#?}"
        ));
    }
    let mut on_citus = catalog(&db, &schema).await?;
    let mut on_plain = catalog(&plain_db, &plain).await?;
    for list in [&mut on_citus, &mut on_plain] {
        list.iter_mut()
            .for_each(|l| *l = l.replace(&schema, "S").replace(&plain, "S"));
    }
    let only_citus: Vec<_> = on_citus.iter().filter(|l| !on_plain.contains(l)).collect();
    let only_plain: Vec<_> = on_plain.iter().filter(|l| !on_citus.contains(l)).collect();
    if !only_citus.is_empty() || !only_plain.is_empty() {
        return Err(format!(
            "catalogs differ:\nonly on citus: {only_citus:#?}\nonly on plain: {only_plain:#?}"
        ));
    }
    Ok(format!(
        "{schema} on {}; {} migrations with the same checksums, {} catalog entries equal to plain PostgreSQL's",
        nodes[0],
        ours.len(),
        on_citus.len()
    ))
}

/// Fast runtime options for the checks (short leases, quick polling).
fn runtime_options() -> RuntimeOptions {
    RuntimeOptions {
        dispatcher_min_poll_interval: Duration::from_millis(10),
        orchestration_concurrency: 2,
        worker_concurrency: 2,
        ..Default::default()
    }
}

/// Starts `ids` as "Twice" with inputs `first`, `first + 1`, … and waits
/// until each completed with four times its input.
async fn run_twice(client: &Client, ids: &[String], first: usize) -> Result<(), String> {
    for (n, id) in (first..).zip(ids) {
        client
            .start_orchestration(id, "Twice", n.to_string())
            .await
            .map_err(|e| format!("start {id}: {e}"))?;
    }
    for (n, id) in (first..).zip(ids) {
        match client.wait_for_orchestration(id, LIMIT).await {
            Ok(OrchestrationStatus::Completed { output, .. }) if output == (n * 4).to_string() => {}
            other => return Err(format!("{id}: {other:?}")),
        }
    }
    Ok(())
}

/// A duroxide runtime runs orchestrations (an activity, a durable timer,
/// another activity) end to end on a store whose schema is on a worker.
pub async fn e2e(url: String) -> Outcome {
    let schemas = Schemas::at(&url);
    let schema = unique_schema("c_e2e");
    schemas.track(&schema);
    let store = connect(&url, &schema, PostgresOptions::new()).await?;
    let (activities, orchestrations) = common::twice_registries(Duration::from_millis(200));
    let runtime =
        Runtime::start_with_options(store.clone(), activities, orchestrations, runtime_options())
            .await;
    let ids: Vec<String> = (0..10).map(|i| format!("e2e-{i}")).collect();
    let outcome = run_twice(&Client::new(store.clone()), &ids, 1).await;
    runtime.shutdown(None).await;
    outcome?;
    let db = client_at(&url).await;
    Ok(format!(
        "10 orchestrations completed; {schema} on {:?}",
        nodes_of(&db, &schema).await?
    ))
}

/// The store's LISTEN/NOTIFY channel (as `SchemaName::channel` derives it).
fn channel(schema: &str) -> String {
    let digest = Sha256::digest(schema.as_bytes());
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    format!("duroxide_pg_{}", &hex[..16])
}

/// An idle long-polling fetch is woken by the enqueue of another process:
/// the enqueue's NOTIFY is raised by the store's function where it runs,
/// the coordinator, so the listener connects to the coordinator. Checked by
/// a fetch that waits up to 60 s returning the message well before, and by
/// a LISTEN of our own on the coordinator receiving the notification.
pub async fn wakeups(url: String) -> Outcome {
    let schemas = Schemas::at(&url);
    let schema = unique_schema("c_wake");
    schemas.track(&schema);
    let app = unique_schema("app_c_wake");
    let waiter = connect(&url, &schema, PostgresOptions::new().application_name(&app)).await?;
    let producer = connect(&url, &schema, PostgresOptions::new().long_poll(false)).await?;
    let db = client_at(&url).await;
    // Our own listener on the coordinator.
    let (own, mut own_conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .map_err(fail("connect our listener"))?;
    let received = Arc::new(AtomicUsize::new(0));
    {
        let received = received.clone();
        tokio::spawn(async move {
            use futures_util::StreamExt;
            let mut messages = futures_util::stream::poll_fn(move |cx| own_conn.poll_message(cx));
            while let Some(Ok(message)) = messages.next().await {
                if let tokio_postgres::AsyncMessage::Notification(_) = message {
                    received.fetch_add(1, Ordering::SeqCst);
                }
            }
        });
    }
    own.batch_execute(&format!("LISTEN {}", channel(&schema)))
        .await
        .map_err(fail("LISTEN"))?;
    // The waiter's listener is up on the coordinator.
    until("the store's LISTEN ran on the coordinator", || async {
        db.query_one(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = $1 \
             AND (query LIKE 'LISTEN %' OR query LIKE 'NOTIFY %')",
            &[&app],
        )
        .await
        .map(|r| r.get::<_, i64>(0) > 0)
        .unwrap_or(false)
    })
    .await?;
    let poll_timeout = Duration::from_secs(60);
    let fetcher = {
        let waiter = waiter.clone();
        tokio::spawn(async move {
            let at = Instant::now();
            let item = duroxide::providers::Provider::fetch_orchestration_item(
                &*waiter,
                Duration::from_secs(30),
                poll_timeout,
                None,
            )
            .await;
            (
                item.map(|i| i.map(|(item, _, _)| item.instance)),
                at.elapsed(),
            )
        })
    };
    // The fetch took its first look (and found nothing) before the enqueue:
    // its backend is idle again after running the fetch function.
    until("the waiter's first look at the empty queue", || async {
        db.query_one(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = $1 \
             AND state = 'idle' AND query LIKE '%fetch_orchestration_item%'",
            &[&app],
        )
        .await
        .map(|r| r.get::<_, i64>(0) > 0)
        .unwrap_or(false)
    })
    .await?;
    Client::new(producer.clone())
        .start_orchestration("woken", "Twice", "1")
        .await
        .map_err(|e| format!("enqueue: {e}"))?;
    let (item, took) = fetcher.await.map_err(|e| e.to_string())?;
    let item = item.map_err(|e| format!("fetch: {e:?}"))?;
    if item.as_deref() != Some("woken") {
        return Err(format!("the fetch returned {item:?} after {took:?}"));
    }
    if took >= poll_timeout / 2 {
        return Err(format!("the fetch returned after {took:?}: not woken"));
    }
    until(
        "our LISTEN on the coordinator received the notification",
        || async { received.load(Ordering::SeqCst) > 0 },
    )
    .await?;
    Ok(format!(
        "fetch waiting up to {poll_timeout:?} returned the new message after {took:?}; \
         {} notification(s) received by a LISTEN on the coordinator",
        received.load(Ordering::SeqCst)
    ))
}

/// Test g of `faults.rs` on Citus: four workload processes on one store
/// whose schema is on a worker, one SIGKILLed mid-run. Without the history's
/// primary key (dropped, as test g does) a turn committed twice would leave
/// its events twice; none may, every execution's event ids are exactly
/// 1..=n, and every orchestration (roots and children) completes once with
/// its expected output.
pub async fn fault_g(url: String) -> Outcome {
    const N: usize = 30;
    let schemas = Schemas::at(&url);
    let schema = unique_schema("c_fault_g");
    schemas.track(&schema);
    let store = connect(&url, &schema, PostgresOptions::new()).await?;
    let db = client_at(&url).await;
    db.batch_execute(&format!(
        "ALTER TABLE \"{schema}\".history DROP CONSTRAINT history_pkey"
    ))
    .await
    .map_err(fail("drop the history's primary key"))?;
    db.batch_execute(&format!(
        "CREATE INDEX history_ledger_idx ON \"{schema}\".history (instance_id, execution_id, event_id)"
    ))
    .await
    .map_err(fail("index the history"))?;
    let roots = workload::instance_ids("wl", N);
    let all_rows: i64 = roots
        .iter()
        .flat_map(|r| workload::expected(r))
        .map(|e| e.steps.len() as i64)
        .sum();
    let names = ["p1", "p2", "p3", "p4"].map(|n| format!("{schema}-{n}"));
    let apps = names
        .clone()
        .map(|n| format!("duroxide-postgres-workload-{n}"));
    let dir = std::env::temp_dir();
    let mut children = Vec::new();
    for name in &names {
        let log =
            std::fs::File::create(dir.join(format!("{name}.log"))).map_err(|e| e.to_string())?;
        children.push(
            tokio::process::Command::new(env!("CARGO_BIN_EXE_duroxide-postgres-workload"))
                .args(["--schema", &schema, "--url", &url, "--prefix", "wl"])
                .args(["--orchestrations", &N.to_string(), "--run-for-secs", "180"])
                .args(["--name", name])
                .stdin(std::process::Stdio::null())
                .stdout(log.try_clone().map_err(|e| e.to_string())?)
                .stderr(log)
                .kill_on_drop(true)
                .spawn()
                .map_err(|e| format!("spawn the workload: {e}"))?,
        );
    }
    let apps_list = apps.to_vec();
    until("the four processes connected", || async {
        db.query_one(
            "SELECT count(DISTINCT application_name) FROM pg_stat_activity WHERE application_name = ANY($1)",
            &[&apps_list],
        )
        .await
        .map(|r| r.get::<_, i64>(0) == 4)
        .unwrap_or(false)
    })
    .await?;
    workload::start_missing(&Client::new(store.clone()), &roots)
        .await
        .map_err(|e| format!("start the roots: {e}"))?;
    let rows = || async {
        db.query_one(
            &format!("SELECT count(*) FROM \"{schema}\".workload_activity_runs"),
            &[],
        )
        .await
        .map(|r| r.get::<_, i64>(0))
        .unwrap_or(0)
    };
    until("a quarter of the activities ran", || async {
        rows().await * 4 >= all_rows
    })
    .await?;
    let at_kill = rows().await;
    if at_kill >= all_rows {
        return Err("every activity ran before the kill".into());
    }
    children[1]
        .kill()
        .await
        .map_err(|e| format!("SIGKILL p2: {e}"))?;
    for (i, child) in children.into_iter().enumerate() {
        let status = child
            .wait_with_output()
            .await
            .map_err(|e| e.to_string())?
            .status;
        if i != 1 && !status.success() {
            let log =
                std::fs::read_to_string(dir.join(format!("{}.log", names[i]))).unwrap_or_default();
            return Err(format!("{} failed ({status}):\n{log}", names[i]));
        }
    }
    let client = Client::new(store.clone());
    let mut instances = 0;
    for root in &roots {
        for e in workload::expected(root) {
            instances += 1;
            match client.get_orchestration_status(&e.instance).await {
                Ok(OrchestrationStatus::Completed { output, .. }) if output == e.output => {}
                other => return Err(format!("{}: {other:?}", e.instance)),
            }
        }
    }
    let row = db
        .query_one(
            &format!(
                "SELECT (SELECT count(*) FROM (SELECT 1 FROM \"{schema}\".history
                         GROUP BY instance_id, execution_id, event_id HAVING count(*) > 1) d),
                        (SELECT count(*) FROM (SELECT 1 FROM \"{schema}\".history
                         GROUP BY instance_id, execution_id
                         HAVING min(event_id) <> 1 OR max(event_id) <> count(*)) g),
                        (SELECT count(*) FROM \"{schema}\".orchestrator_queue),
                        (SELECT count(*) FROM \"{schema}\".worker_queue)"
            ),
            &[],
        )
        .await
        .map_err(fail("check the history"))?;
    let (twice, gaps, queued, work): (i64, i64, i64, i64) =
        (row.get(0), row.get(1), row.get(2), row.get(3));
    if twice + gaps + queued + work > 0 {
        return Err(format!(
            "events committed twice: {twice}, executions with gaps: {gaps}, left in queues: {queued} + {work}"
        ));
    }
    Ok(format!(
        "{instances} orchestrations completed once, p2 killed after {at_kill} of {all_rows} activity runs; \
         no event twice, no gap; {schema} on {:?}",
        nodes_of(&db, &schema).await?
    ))
}

/// N stores (schemas) under `Shards`, spread over the two workers: each
/// schema's tables all on one node, both workers used (a schema is moved
/// if Citus placed them all on one), and trees routed by root complete in
/// their shard.
pub async fn shards(url: String) -> Outcome {
    const N: usize = 4;
    let schemas = Schemas::at(&url);
    let db = client_at(&url).await;
    let mut stores = Vec::new();
    let mut names = Vec::new();
    for _ in 0..N {
        let schema = unique_schema("c_shard");
        schemas.track(&schema);
        stores.push(connect(&url, &schema, PostgresOptions::new()).await?);
        names.push(schema);
    }
    let mut placement = Vec::new();
    for schema in &names {
        let nodes = nodes_of(&db, schema).await?;
        if nodes.len() != 1 {
            return Err(format!("{schema} is on {nodes:?}, not on one node"));
        }
        placement.push(nodes[0].clone());
    }
    let mut moved = String::new();
    if placement.iter().collect::<BTreeSet<_>>().len() < 2 {
        placement[0] = move_to_other_worker(&db, &names[0]).await?;
        moved = format!(" ({} moved there to spread them)", names[0]);
    }
    let used: BTreeSet<_> = placement.iter().collect();
    if used.len() != 2 {
        return Err(format!("the schemas are on {used:?}, not on both workers"));
    }
    let shards = Shards::new(stores.clone()).map_err(|e| e.to_string())?;
    let mut runtimes = Vec::new();
    for store in &stores {
        let (activities, orchestrations) = common::twice_registries(Duration::from_millis(50));
        runtimes.push(
            Runtime::start_with_options(
                store.clone(),
                activities,
                orchestrations,
                runtime_options(),
            )
            .await,
        );
    }
    let ids: Vec<String> = (0..16).map(|i| format!("tree-{i}")).collect();
    let mut outcome = Ok(());
    for (n, id) in ids.iter().enumerate() {
        if let Err(e) = run_twice(&shards.client_for(id), std::slice::from_ref(id), n + 1).await {
            outcome = Err(e);
            break;
        }
    }
    for runtime in runtimes {
        runtime.shutdown(None).await;
    }
    outcome.map_err(|e| {
        format!(
            "placement checked ({N} schemas, each on one node, on {placement:?}{moved}); then: {e}"
        )
    })?;
    let mut per_shard = vec![0; N];
    for id in &ids {
        let home = shards.index_of(id);
        for (i, store) in stores.iter().enumerate() {
            let status = Client::new(store.clone())
                .get_orchestration_status(id)
                .await
                .map_err(|e| e.to_string())?;
            let found = !matches!(status, OrchestrationStatus::NotFound);
            if found != (i == home) {
                return Err(format!(
                    "{id} routes to shard {home} but is found={found} in shard {i}"
                ));
            }
        }
        per_shard[home] += 1;
    }
    Ok(format!(
        "{N} schemas on {placement:?}{moved}; 16 orchestrations completed in the shard of their root ({per_shard:?})"
    ))
}

/// `citus_schema_move` of a store's schema to the other worker while its
/// runtime runs and a client keeps starting orchestrations: no client call
/// fails, every orchestration started before, during and after the move
/// completes with its output, and the schema ends on the other node.
pub async fn schema_move(url: String) -> Outcome {
    let schemas = Schemas::at(&url);
    let schema = unique_schema("c_move");
    schemas.track(&schema);
    let store = connect(&url, &schema, PostgresOptions::new()).await?;
    let db = client_at(&url).await;
    let before = nodes_of(&db, &schema).await?;
    let (activities, orchestrations) = common::twice_registries(Duration::from_millis(20));
    let runtime =
        Runtime::start_with_options(store.clone(), activities, orchestrations, runtime_options())
            .await;
    let client = Client::new(store.clone());
    let stop = Arc::new(AtomicBool::new(false));
    let started = Arc::new(Mutex::new(Vec::<String>::new()));
    let errors = Arc::new(Mutex::new(Vec::<String>::new()));
    let starter = {
        let (client, stop, started, errors) = (
            client.clone(),
            stop.clone(),
            started.clone(),
            errors.clone(),
        );
        tokio::spawn(async move {
            let mut n = 0;
            while !stop.load(Ordering::SeqCst) {
                n += 1;
                let id = format!("move-{n}");
                match client
                    .start_orchestration(&id, "Twice", n.to_string())
                    .await
                {
                    Ok(()) => started.lock().unwrap().push(id),
                    Err(e) => errors.lock().unwrap().push(format!("start {id}: {e}")),
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
    };
    let completed = |client: Client, from: usize| async move {
        let id = format!("move-{from}");
        matches!(
            client.get_orchestration_status(&id).await,
            Ok(OrchestrationStatus::Completed { .. })
        )
    };
    // Running: the 20th has completed before the move (a failed start
    // ends the wait: it is the outcome).
    let failed_start = || errors.lock().unwrap().first().cloned();
    until("20 orchestrations completed before the move", || {
        let done = completed(client.clone(), 20);
        let failed = failed_start().is_some();
        async move { failed || done.await }
    })
    .await?;
    if let Some(e) = failed_start() {
        stop.store(true, Ordering::SeqCst);
        runtime.shutdown(None).await;
        return Err(format!("before the move: {e}"));
    }
    let moving = Instant::now();
    let target = move_to_other_worker(&db, &schema).await;
    let move_took = moving.elapsed();
    let target = target?;
    let at_move = started.lock().unwrap().len();
    // And after it: 20 more started and the last of them completed.
    let until_n = at_move + 20;
    until("20 more started after the move", || {
        let started = started.clone();
        async move { started.lock().unwrap().len() >= until_n }
    })
    .await?;
    stop.store(true, Ordering::SeqCst);
    starter.await.map_err(|e| e.to_string())?;
    let ids = started.lock().unwrap().clone();
    let mut outcome = Ok(());
    for id in &ids {
        let n: usize = id["move-".len()..].parse().unwrap();
        match client.wait_for_orchestration(id, LIMIT).await {
            Ok(OrchestrationStatus::Completed { output, .. }) if output == (n * 4).to_string() => {}
            other => {
                outcome = Err(format!("{id}: {other:?}"));
                break;
            }
        }
    }
    runtime.shutdown(None).await;
    outcome?;
    let errors = errors.lock().unwrap().clone();
    if !errors.is_empty() {
        return Err(format!("client calls failed: {errors:?}"));
    }
    let after = nodes_of(&db, &schema).await?;
    if after != vec![target.clone()] {
        return Err(format!(
            "{schema} is on {after:?} after the move to {target}"
        ));
    }
    Ok(format!(
        "{schema} moved {before:?} -> {after:?} in {move_took:.1?} while running; {} orchestrations \
         completed ({at_move} started before the move returned), no client call failed",
        ids.len()
    ))
}
