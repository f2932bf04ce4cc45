//! [`PostgresProvider`]: construction, the connection pool, and the
//! `Provider` trait, whose methods delegate to one module per area.

mod ack;
mod claim;
pub(crate) mod functions;
mod history;
mod kv;
pub mod listing;
mod maintenance;
mod management;
mod orchestrator;
mod pooler;
mod prefetch;
mod reclaim;
mod retry;
pub(crate) mod rows;
mod sessions;
mod worker;

#[doc(hidden)]
pub use functions::signatures as __sql_function_signatures;

use crate::credentials::Connector;
use crate::error::{from_pg, from_pool, Error};
use crate::function_set::FunctionSet;
use crate::migrations;
use crate::notifier::{self, Listener};
use crate::options::PostgresOptions;
use crate::schema::SchemaName;
use crate::telemetry::{self, Target};
use crate::tls;
use crate::wakeups::{self, deadline_after, Made, Polled, Queue, Signals, WaitSpec, Wake};
use async_trait::async_trait;
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use duroxide::providers::{
    DispatcherCapabilityFilter, ExecutionMetadata, OrchestrationItem, Provider, ProviderAdmin,
    ProviderError, ScheduledActivityIdentifier, SessionFetchConfig, TagFilter, WorkItem,
};
use duroxide::Event;
use functions::SqlFn;
use retry::Class;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_postgres::error::SqlState;
use tokio_postgres::types::{ToSql, Type};
use tokio_postgres::Row;
use tracing::Instrument;

/// A duroxide store in one PostgreSQL schema.
///
/// Every provider call is one round trip: a single call of a PostgreSQL
/// function in the store's schema, in one transaction. Many processes may
/// share one store; leases are decided by the database clock.
///
/// ```no_run
/// # async fn example() -> Result<(), duroxide_postgres::Error> {
/// use duroxide_postgres::PostgresProvider;
/// use std::sync::Arc;
///
/// let store = Arc::new(PostgresProvider::new("postgres://app@db.internal/app").await?);
/// // hand `store` to duroxide::runtime::Runtime::start_with_store and duroxide::Client::new
/// # Ok(()) }
/// ```
pub struct PostgresProvider {
    /// The pool and the telemetry target every call goes through.
    db: Db,
    schema: SchemaName,
    /// The quoted schema, prefixed to every function call.
    quoted: String,
    /// This build's stored procedures, the only ones it calls.
    functions: Arc<FunctionSet>,
    signals: Arc<Signals>,
    long_poll: bool,
    /// A LISTEN connection runs (long polling, unless behind a transaction
    /// pooler without `listen_url`; then a relay task only sends this
    /// process's notifications).
    listening: bool,
    recheck_interval: Duration,
    /// How long Read and Write calls ride out transient failures (retry.rs).
    retry_budget: Duration,
    _listener: Option<Listener>,
    _health: Option<telemetry::health::Sampler>,
    /// Empties queue segments in the background while fetches run.
    reclaimer: reclaim::Reclaimer,
    /// Turns claimed by the ack of the turn before (`prefetch.rs`).
    orchestration_prefetch: prefetch::Prefetch<prefetch::OrchestrationAsk>,
    work_prefetch: prefetch::Prefetch<prefetch::WorkAsk>,
    _maintenance: Option<maintenance::MaintenanceHandle>,
}

/// What a call runs on: the pool, and the labels and span attributes of the
/// store. Cloned into tasks that call on their own (claims, health samples).
#[derive(Clone)]
pub(crate) struct Db {
    pub(crate) pool: Pool,
    pub(crate) target: Arc<Target>,
    /// Behind a transaction pooler: send every statement unnamed (see
    /// `run_statement`).
    pub(crate) unnamed_statements: bool,
    /// The longest lease a fetch of this provider asked for, in
    /// milliseconds: how long a [`Class::Lease`] call waits for a
    /// connection (at least the pool's own wait).
    pub(crate) longest_lease_ms: Arc<AtomicU64>,
}

impl Db {
    /// A fetch asked for a lease of `lease`.
    pub(crate) fn leases_last(&self, lease: Duration) {
        let ms = u64::try_from(lease.as_millis()).unwrap_or(u64::MAX);
        self.longest_lease_ms.fetch_max(ms, Ordering::Relaxed);
    }
}

/// A call of one SQL function of this build's set, ready to run.
#[derive(Debug, Clone)]
pub(crate) struct Call {
    /// `SELECT * FROM schema.function__tag(p_a => $1, ...)`.
    sql: String,
    types: Vec<Type>,
    /// The function's plain name (the span's `db.operation.name`).
    function: &'static str,
    /// Its installed name (`db.stored_procedure.name`).
    installed: String,
    /// The position of its instance-id parameter, if it has one.
    instance_param: Option<usize>,
    /// Its class is [`Class::Lease`]: it waits for a connection as long
    /// as a lease lasts.
    on_lease: bool,
}

impl std::fmt::Debug for PostgresProvider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresProvider")
            .field("schema", &self.schema.as_str())
            .field("long_poll", &self.long_poll)
            .finish_non_exhaustive()
    }
}

impl PostgresProvider {
    /// Connects to `database_url`, brings the default schema (`duroxide`) up
    /// to date, and returns a ready provider.
    ///
    /// `database_url` is a `postgres://` URL or a libpq key=value string; TLS
    /// follows its `sslmode` (see the crate docs).
    pub async fn new(database_url: &str) -> Result<Self, Error> {
        Self::connect(database_url, PostgresOptions::new()).await
    }

    /// Like [`new`](Self::new), in the schema `schema`, so that many
    /// independent stores can share one database. The name must be a plain
    /// identifier (ASCII letters, digits and underscores, not starting with a
    /// digit or `pg_`, at most 63 bytes); anything else is refused with
    /// [`Error::InvalidSchemaName`] before any SQL runs.
    pub async fn new_with_schema(database_url: &str, schema: &str) -> Result<Self, Error> {
        Self::connect(database_url, PostgresOptions::new().schema(schema)).await
    }

    /// Connects with explicit [`PostgresOptions`].
    pub async fn connect(database_url: &str, options: PostgresOptions) -> Result<Self, Error> {
        let schema = SchemaName::parse(&options.schema)?;
        let functions = match options.function_files.clone() {
            None => FunctionSet::embedded(),
            Some(files) => Arc::new(FunctionSet::from_files(files)?),
        };
        if options.max_connections == 0 {
            return Err(Error::Config("max_connections must be at least 1".into()));
        }
        let statement_timeout = options.startup_statement_timeout()?;
        let listen = pooler::Listen::of(&options)?;
        let spec = tls::parse(database_url)?;
        let mut config = spec.config;
        config.application_name(&options.application_name);
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(options.acquire_timeout);
        }

        // Migrate on a connection of its own, before the pool exists, and
        // without the statement timeout meant for provider calls.
        let connector = Connector::new(
            spec.tls,
            options.credentials.clone(),
            options.credential_retry_budget,
        );
        {
            let (mut client, connection) = connector.connect(&config).await?;
            let driver = tokio::spawn(connection);
            let mut result =
                migrations::run(&mut client, &schema, options.migration_policy, &functions).await;
            if result.is_ok() && options.transaction_pooler {
                result = pooler::check_server_timeout(&client).await;
            }
            drop(client);
            let _ = driver.await;
            result?;
        }

        if let Some(timeout) = statement_timeout {
            // Added to any `options` the URL already carries.
            let ms = timeout.as_millis().max(1);
            let setting = format!("-c statement_timeout={ms}");
            let combined = match config.get_options() {
                Some(existing) if !existing.is_empty() => format!("{existing} {setting}"),
                _ => setting,
            };
            config.options(combined);
        }

        let target = Arc::new(Target::new(&config, schema.as_str()));
        // Every pooled connection is opened by the connector (credentials).
        let manager = Manager::from_connect(
            config.clone(),
            connector.clone(),
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(options.max_connections)
            // The connection used last is handed out first: its backend's
            // caches and CPU caches are warm, and the others stay idle
            // (decision 0012: -17 % server CPU per orchestration turn).
            .queue_mode(deadpool_postgres::QueueMode::Lifo)
            .wait_timeout(Some(options.acquire_timeout))
            .create_timeout(Some(connector.create_timeout(options.acquire_timeout)))
            .runtime(deadpool_postgres::Runtime::Tokio1)
            .build()
            .map_err(|e| Error::Pool(e.to_string()))?;

        let signals = Arc::new(Signals::new(!options.announce_all_wakes));
        let listen = listen.connection(config, connector, &options);
        let listening = listen.is_some();
        let listener = match listen {
            Some((config, connector)) => Some(notifier::start(
                config,
                connector,
                schema.channel(),
                signals.clone(),
                options.listener_reconnect_delay,
                target.clone(),
            )),
            // No LISTEN connection (long polling off, or behind a pooler
            // without a listen_url): other processes are still told.
            None => Some(notifier::relay(
                pool.clone(),
                schema.channel(),
                signals.clone(),
            )),
        };
        let db = Db {
            pool,
            target,
            unnamed_statements: options.transaction_pooler,
            longest_lease_ms: Arc::new(AtomicU64::new(0)),
        };
        let quoted = schema.quoted();
        let health = options.health_sample_interval.map(|interval| {
            let call = Call::new(&quoted, &functions, &functions::HEALTH_SAMPLE);
            telemetry::health::start(db.clone(), call, interval, options.health_attempts)
        });
        let reclaimer = reclaim::Reclaimer::start(db.clone(), &quoted, &functions);
        let mut provider = Self {
            db,
            quoted,
            functions,
            schema,
            signals,
            long_poll: options.long_poll,
            listening,
            recheck_interval: options.listener_reconnect_delay,
            retry_budget: options.client_retry_budget,
            _listener: listener,
            _health: health,
            reclaimer,
            orchestration_prefetch: prefetch::Prefetch::default(),
            work_prefetch: prefetch::Prefetch::default(),
            _maintenance: None,
        };
        if let Some(policy) = options.retention {
            provider._maintenance = maintenance::spawn(maintenance::Runner::of(&provider), policy);
        }
        Ok(provider)
    }

    /// The schema this store lives in.
    pub fn schema(&self) -> &str {
        self.schema.as_str()
    }

    /// Where the store lives: `host:port/database|schema`.
    pub(crate) fn location(&self) -> String {
        self.db.target.location()
    }

    /// The tag of the function set this provider calls: its functions are
    /// named `<function>__<tag>` in the store's schema (see
    /// `docs/operations.md`, rolling upgrades).
    pub fn function_set(&self) -> &str {
        self.functions.tag()
    }

    /// Drops every function of the store's schema that is not in this
    /// provider's set: the sets of other builds and the unversioned
    /// functions of builds before sets existed. Run it once no process of another
    /// build uses the store any more (`duroxide-postgres migrate
    /// --retire-other-function-sets`). Returns the signatures dropped.
    pub async fn retire_other_function_sets(&self) -> Result<Vec<String>, Error> {
        let mut client = self
            .db
            .pool
            .get()
            .await
            .map_err(|e| Error::Pool(crate::error::describe_pool(&e)))?;
        let client: &mut tokio_postgres::Client = &mut client;
        migrations::retire_other_function_sets(client, &self.schema, &self.functions).await
    }

    /// The highest schema migration this build applies.
    pub fn schema_version() -> i32 {
        migrations::latest_version()
    }

    /// Calls the SQL function `f` of this store's schema with `params`, in
    /// one round trip (the prepared statement is cached per connection).
    /// Read and Write functions are retried on transient failures within the
    /// retry budget; the runtime's own calls run once (see `retry.rs`).
    pub(crate) async fn call(
        &self,
        op: &str,
        f: &SqlFn,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Vec<Row>, ProviderError> {
        check_arity(op, f, params.len())?;
        call_retrying(
            &self.db,
            &self.prepared(f),
            f,
            self.retry_budget,
            op,
            params,
        )
        .await
    }

    /// One attempt of a call, also returning the SQLSTATE of a failure (for
    /// callers that must tell one condition of ours from another).
    async fn call_with_state(
        &self,
        op: &str,
        f: &SqlFn,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Vec<Row>, (ProviderError, Option<String>)> {
        check_arity(op, f, params.len()).map_err(|e| (e, None))?;
        run_call(&self.db, &self.prepared(f), op, params).await
    }

    /// The call of `f` of this build's function set.
    fn prepared(&self, f: &SqlFn) -> Call {
        Call::new(&self.quoted, &self.functions, f)
    }

    /// Like [`call`](Self::call), for functions returning one row.
    async fn call_one(
        &self,
        op: &str,
        f: &SqlFn,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Row, ProviderError> {
        first_row(op, f, self.call(op, f, params).await?)
    }

    /// Runs `attempt` until it yields something or `poll_timeout` runs out,
    /// waiting between attempts as `wakeups.rs` describes (see
    /// [`WaitSpec`] for the two keys).
    async fn poll<T, F, Fut>(
        &self,
        queue: Queue,
        (filter_key, fetcher_key): (&str, &str),
        poll_timeout: Duration,
        attempt: F,
    ) -> Result<Option<T>, ProviderError>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<Polled<T>, ProviderError>>,
    {
        let spec = WaitSpec {
            queue,
            filter_key,
            fetcher_key,
            poll_timeout,
            long_poll: self.long_poll,
            recheck: self.recheck_interval,
            backoff: !self.listening,
            on_wake: &|| self.db.target.wakeup(queue),
            on_park: &|delta| self.db.target.fetches_waiting(queue, delta),
        };
        wakeups::poll(&self.signals, spec, attempt).await
    }

    /// A call committed and made `made` ready: see [`Signals::committed`],
    /// the one place that decides who wakes. `announced`: the call told
    /// other processes itself (a client's enqueue).
    fn committed(&self, made: Made, announced: bool) {
        self.signals.committed(made, announced);
    }

    /// The `p_announce` argument of a client's enqueue (see
    /// [`Signals::announcement`]).
    fn announcement(&self, queue: Queue, wake: Wake) -> Option<String> {
        self.signals.announcement(queue, wake)
    }

    /// Retries a lease renewal on retryable errors for up to `budget`.
    ///
    /// The runtime treats any renewal error as the end of the lease: an
    /// orchestration stops renewing (and its ack later fails), an activity
    /// is cancelled and its work item acked *without* a completion. So a
    /// renewal may fail only when the lease is really gone. A renewal is
    /// idempotent (it never shortens a lease) and is refused once the lease
    /// has expired, so retrying until the lease could have run out (the
    /// requested extension bounds what is left of it) is safe.
    async fn renew_retrying<F, Fut>(
        &self,
        queue: Queue,
        budget: Duration,
        mut op: F,
    ) -> Result<(), ProviderError>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<(), ProviderError>>,
    {
        let deadline = deadline_after(budget);
        let mut delay = Duration::from_millis(20);
        loop {
            match op().await {
                Err(e) if e.is_retryable() && Instant::now() + delay < deadline => {
                    self.db.target.renewal_retried(queue);
                    tracing::debug!(target: "duroxide_postgres", error = %e, "retrying lease renewal");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_millis(500));
                }
                other => return other,
            }
        }
    }
}

impl Call {
    /// The call of `f` in the set `functions` of the schema `quoted`. The
    /// only dynamic SQL of a call: the validated schema, a function name and
    /// parameter names from this crate, and `$n` placeholders. Values are
    /// parameters.
    pub(crate) fn new(quoted: &str, functions: &FunctionSet, f: &SqlFn) -> Self {
        let installed = functions.function(f.name);
        Self {
            sql: format!(
                "SELECT * FROM {quoted}.{invocation}",
                invocation = f.invocation_as(&installed)
            ),
            types: f.types(),
            function: f.name,
            installed,
            instance_param: f.instance_param(),
            on_lease: f.class == Class::Lease,
        }
    }
}

/// The first of `rows` of a call of `f` that returns exactly one row; its
/// absence is a permanent error naming the function.
pub(crate) fn first_row(op: &str, f: &SqlFn, rows: Vec<Row>) -> Result<Row, ProviderError> {
    rows.into_iter()
        .next()
        .ok_or_else(|| ProviderError::permanent(op, format!("{} returned no row", f.name)))
}

/// `params` must match `f`'s descriptor: a mismatch is a bug of this crate,
/// caught before anything is sent.
pub(crate) fn check_arity(op: &str, f: &SqlFn, given: usize) -> Result<(), ProviderError> {
    if given == f.params.len() {
        return Ok(());
    }
    Err(ProviderError::permanent(
        op,
        format!(
            "{} takes {} parameters, {given} given",
            f.name,
            f.params.len()
        ),
    ))
}

/// Runs `call` (of `f`), retried per `f`'s class within `budget` (see
/// `retry.rs`): the provider's calls and the maintenance task's.
pub(crate) async fn call_retrying(
    db: &Db,
    call: &Call,
    f: &SqlFn,
    budget: Duration,
    op: &str,
    params: &[&(dyn ToSql + Sync)],
) -> Result<Vec<Row>, ProviderError> {
    retry::run(op, f.class, budget, || async {
        run_call(db, call, op, params).await.map_err(|(e, _)| e)
    })
    .await
}

/// Runs `call` on a pooled connection (the prepared statement is cached per
/// connection, or, behind a transaction pooler, sent unnamed), returning the
/// SQLSTATE of a failure too. Every call of a SQL function goes through
/// here, so this is where each gets its span: the OpenTelemetry database
/// attributes, the instance id (from the instance-id parameter, or the
/// `instance_id` column a claim returns), and the SQLSTATE of a failure;
/// never a payload.
pub(crate) async fn run_call(
    db: &Db,
    call: &Call,
    op: &str,
    params: &[&(dyn ToSql + Sync)],
) -> Result<Vec<Row>, (ProviderError, Option<String>)> {
    let span = db.target.span(call.function, &call.installed, op);
    if !span.is_disabled() {
        if let Some(id) = call
            .instance_param
            .and_then(|i| params.get(i))
            .and_then(|p| text_param(*p))
        {
            span.record("duroxide.instance_id", id.as_str());
        }
    }
    let wait = call
        .on_lease
        .then(|| Duration::from_millis(db.longest_lease_ms.load(Ordering::Relaxed)));
    let result = run_statement(db, &call.sql, &call.types, op, params, wait)
        .instrument(span.clone())
        .await;
    db.target.finish(&span, &result);
    result
}

/// The text of a TEXT parameter, encoded as it would be sent (its UTF-8
/// bytes); `None` for NULL.
fn text_param(param: &(dyn ToSql + Sync)) -> Option<String> {
    let mut buf = bytes::BytesMut::new();
    match param.to_sql_checked(&Type::TEXT, &mut buf) {
        Ok(tokio_postgres::types::IsNull::No) => String::from_utf8(buf.to_vec()).ok(),
        _ => None,
    }
}

async fn run_statement(
    db: &Db,
    sql: &str,
    types: &[Type],
    op: &str,
    params: &[&(dyn ToSql + Sync)],
    wait: Option<Duration>,
) -> Result<Vec<Row>, (ProviderError, Option<String>)> {
    let client = connection(db, op, wait).await.map_err(|e| (e, None))?;
    let result = statement_on(db, &client, sql, types, op, params).await;
    if matches!(&result, Err((_, Some(code))) if code == crate::error::READ_ONLY) {
        // The server answered "read-only": a standby, or a primary being
        // demoted in a failover. The connection is closed instead of going
        // back to the pool, so the retry opens one to the new primary.
        drop(deadpool_postgres::Object::take(client));
    }
    result
}

async fn statement_on(
    db: &Db,
    client: &deadpool_postgres::Object,
    sql: &str,
    types: &[Type],
    op: &str,
    params: &[&(dyn ToSql + Sync)],
) -> Result<Vec<Row>, (ProviderError, Option<String>)> {
    let pg = |e: tokio_postgres::Error| (from_pg(op, &e), e.code().map(|c| c.code().to_string()));
    if db.unnamed_statements {
        // Behind a transaction pooler the next statement may run on another
        // server connection, where a named statement does not exist (or
        // another client's of the same name does). The unnamed statement,
        // with the types given, is parsed, bound and run in one round trip
        // and lives only until the next one.
        let typed: Vec<(&(dyn ToSql + Sync), Type)> = params
            .iter()
            .zip(types)
            .map(|(p, t)| (*p, t.clone()))
            .collect();
        return client.query_typed(sql, &typed).await.map_err(pg);
    }
    let statement = client.prepare_typed_cached(sql, types).await.map_err(pg)?;
    match client.query(&statement, params).await {
        // "cached plan must not change result type": a function this
        // statement calls was replaced by one with other result columns, so
        // this connection's prepared statement can never run again. Nothing
        // ran; prepare it afresh, once.
        Err(e) if e.code() == Some(&SqlState::FEATURE_NOT_SUPPORTED) => {
            tracing::warn!(target: "duroxide_postgres", %sql, error = %e,
                "re-preparing a statement whose function changed");
            client.statement_cache.remove(sql, types);
            let statement = client.prepare_typed_cached(sql, types).await.map_err(pg)?;
            client.query(&statement, params).await.map_err(pg)
        }
        other => other.map_err(pg),
    }
}

/// A pooled connection that is not known to be closed. The pool checks
/// `is_closed()` when it hands a connection out (`RecyclingMethod::Fast`,
/// no round trip); a connection whose server went away since then is
/// discarded here and another taken, so no call is sent on a connection
/// the client already knows is dead. `wait`: how long to wait for one, when
/// longer than the pool's own wait (a [`Class::Lease`] call).
async fn connection(
    db: &Db,
    op: &str,
    wait: Option<Duration>,
) -> Result<deadpool_postgres::Object, ProviderError> {
    let pool = &db.pool;
    let mut timeouts = pool.timeouts();
    if let Some(wait) = wait {
        timeouts.wait = timeouts.wait.map(|w| w.max(wait));
    }
    let started = Instant::now();
    for _ in 0..=pool.status().max_size {
        let client = pool
            .timeout_get(&timeouts)
            .await
            .map_err(|e| from_pool(op, &e))?;
        if !client.is_closed() {
            db.target.pool_acquired(pool, started.elapsed());
            return Ok(client);
        }
        drop(deadpool_postgres::Object::take(client));
    }
    Err(ProviderError::retryable(
        op,
        "connection error: every pooled connection was closed",
    ))
}

#[async_trait]
impl Provider for PostgresProvider {
    fn name(&self) -> &str {
        "duroxide-postgres"
    }

    fn version(&self) -> &str {
        env!("CARGO_PKG_VERSION")
    }

    async fn fetch_orchestration_item(
        &self,
        lock_timeout: Duration,
        poll_timeout: Duration,
        filter: Option<&DispatcherCapabilityFilter>,
    ) -> Result<Option<(OrchestrationItem, String, u32)>, ProviderError> {
        self.fetch_orchestration(lock_timeout, poll_timeout, filter)
            .await
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
        self.ack_orchestration(
            lock_token,
            execution_id,
            &history_delta,
            &worker_items,
            &orchestrator_items,
            &metadata,
            &cancelled_activities,
        )
        .await
    }

    async fn abandon_orchestration_item(
        &self,
        lock_token: &str,
        delay: Option<Duration>,
        ignore_attempt: bool,
    ) -> Result<(), ProviderError> {
        self.abandon_orchestration(lock_token, delay, ignore_attempt)
            .await
    }

    async fn read(&self, instance: &str) -> Result<Vec<Event>, ProviderError> {
        self.read_events("read", instance, None).await
    }

    async fn read_with_execution(
        &self,
        instance: &str,
        execution_id: u64,
    ) -> Result<Vec<Event>, ProviderError> {
        self.read_events("read_with_execution", instance, Some(execution_id))
            .await
    }

    async fn append_with_execution(
        &self,
        instance: &str,
        execution_id: u64,
        new_events: Vec<Event>,
    ) -> Result<(), ProviderError> {
        self.append_events(instance, execution_id, &new_events)
            .await
    }

    async fn enqueue_for_worker(&self, item: WorkItem) -> Result<(), ProviderError> {
        self.enqueue_worker(&item).await
    }

    async fn fetch_work_item(
        &self,
        lock_timeout: Duration,
        poll_timeout: Duration,
        session: Option<&SessionFetchConfig>,
        tag_filter: &TagFilter,
    ) -> Result<Option<(WorkItem, String, u32)>, ProviderError> {
        self.fetch_work(lock_timeout, poll_timeout, session, tag_filter)
            .await
    }

    async fn ack_work_item(
        &self,
        token: &str,
        completion: Option<WorkItem>,
    ) -> Result<(), ProviderError> {
        self.ack_work(token, completion.as_ref()).await
    }

    async fn renew_work_item_lock(
        &self,
        token: &str,
        extend_for: Duration,
    ) -> Result<(), ProviderError> {
        self.renew_work(token, extend_for).await
    }

    async fn renew_session_lock(
        &self,
        owner_ids: &[&str],
        extend_for: Duration,
        idle_timeout: Duration,
    ) -> Result<usize, ProviderError> {
        self.renew_sessions(owner_ids, extend_for, idle_timeout)
            .await
    }

    async fn cleanup_orphaned_sessions(
        &self,
        idle_timeout: Duration,
    ) -> Result<usize, ProviderError> {
        self.cleanup_sessions(idle_timeout).await
    }

    async fn abandon_work_item(
        &self,
        token: &str,
        delay: Option<Duration>,
        ignore_attempt: bool,
    ) -> Result<(), ProviderError> {
        self.abandon_work(token, delay, ignore_attempt).await
    }

    async fn renew_orchestration_item_lock(
        &self,
        token: &str,
        extend_for: Duration,
    ) -> Result<(), ProviderError> {
        self.renew_orchestration(token, extend_for).await
    }

    async fn enqueue_for_orchestrator(
        &self,
        item: WorkItem,
        delay: Option<Duration>,
    ) -> Result<(), ProviderError> {
        self.enqueue_orchestrator(&item, delay).await
    }

    fn as_management_capability(&self) -> Option<&dyn ProviderAdmin> {
        Some(self)
    }

    async fn get_custom_status(
        &self,
        instance: &str,
        last_seen_version: u64,
    ) -> Result<Option<(Option<String>, u64)>, ProviderError> {
        self.custom_status(instance, last_seen_version).await
    }

    async fn get_kv_value(
        &self,
        instance: &str,
        key: &str,
    ) -> Result<Option<String>, ProviderError> {
        self.kv_value(instance, key).await
    }

    async fn get_kv_all_values(
        &self,
        instance: &str,
    ) -> Result<std::collections::HashMap<String, String>, ProviderError> {
        self.kv_all_values(instance).await
    }

    async fn get_instance_stats(
        &self,
        instance: &str,
    ) -> Result<Option<duroxide::SystemStats>, ProviderError> {
        self.instance_stats(instance).await
    }
}
