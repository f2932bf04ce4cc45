//! Connection, pool, timeout and polling options.

use crate::migrations::MigrationPolicy;
use crate::retention::RetentionPolicy;
use crate::schema::DEFAULT_SCHEMA;
use std::time::Duration;

/// Options for [`PostgresProvider::connect`](crate::PostgresProvider::connect).
///
/// ```
/// use duroxide_postgres::{MigrationPolicy, PostgresOptions};
/// use std::time::Duration;
///
/// let options = PostgresOptions::new()
///     .schema("orders")
///     .max_connections(16)
///     .acquire_timeout(Duration::from_secs(5))
///     .statement_timeout(Some(Duration::from_secs(30)))
///     .application_name("orders-worker")
///     .migration_policy(MigrationPolicy::VerifyOnly)
///     .long_poll(true);
/// assert_eq!(options.schema_name(), "orders");
/// ```
#[derive(Debug, Clone)]
pub struct PostgresOptions {
    pub(crate) schema: String,
    pub(crate) max_connections: usize,
    pub(crate) acquire_timeout: Duration,
    pub(crate) statement_timeout: Option<Duration>,
    pub(crate) application_name: String,
    pub(crate) migration_policy: MigrationPolicy,
    pub(crate) long_poll: bool,
    pub(crate) listener_reconnect_delay: Duration,
    /// Function files installed and called instead of the embedded ones.
    pub(crate) function_files: Option<Vec<(String, String)>>,
    pub(crate) client_retry_budget: Duration,
    pub(crate) health_sample_interval: Option<Duration>,
    pub(crate) health_attempts: u32,
    pub(crate) retention: Option<RetentionPolicy>,
    pub(crate) announce_all_wakes: bool,
}

impl Default for PostgresOptions {
    fn default() -> Self {
        Self {
            schema: DEFAULT_SCHEMA.to_string(),
            max_connections: 10,
            acquire_timeout: Duration::from_secs(10),
            statement_timeout: Some(Duration::from_secs(60)),
            application_name: "duroxide-postgres".to_string(),
            migration_policy: MigrationPolicy::Apply,
            long_poll: true,
            listener_reconnect_delay: Duration::from_millis(500),
            function_files: None,
            client_retry_budget: Duration::from_secs(30),
            health_sample_interval: Some(Duration::from_secs(15)),
            health_attempts: 5,
            retention: None,
            announce_all_wakes: false,
        }
    }
}

impl PostgresOptions {
    /// The defaults: schema `duroxide`, 10 connections, 10 s acquire timeout,
    /// 60 s statement timeout, migrations applied, long polling on.
    pub fn new() -> Self {
        Self::default()
    }

    /// The schema holding the store (a plain identifier; see
    /// [`PostgresProvider::new_with_schema`](crate::PostgresProvider::new_with_schema)).
    pub fn schema(mut self, schema: impl Into<String>) -> Self {
        self.schema = schema.into();
        self
    }

    /// The configured schema name.
    pub fn schema_name(&self) -> &str {
        &self.schema
    }

    /// Maximum pooled connections (default 10). Long polling uses one more,
    /// dedicated connection for LISTEN.
    pub fn max_connections(mut self, n: usize) -> Self {
        self.max_connections = n;
        self
    }

    /// How long a call waits for a pooled connection before failing with a
    /// retryable error (default 10 s).
    pub fn acquire_timeout(mut self, timeout: Duration) -> Self {
        self.acquire_timeout = timeout;
        self
    }

    /// Server-side `statement_timeout` of every pooled connection (default
    /// 60 s; `None` leaves the server's setting). A statement cancelled by it
    /// fails with a retryable error and commits nothing.
    pub fn statement_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.statement_timeout = timeout;
        self
    }

    /// `application_name` reported to PostgreSQL (default `duroxide-postgres`),
    /// shown in `pg_stat_activity`.
    pub fn application_name(mut self, name: impl Into<String>) -> Self {
        self.application_name = name.into();
        self
    }

    /// Apply migrations at start-up (default) or only verify the schema.
    pub fn migration_policy(mut self, policy: MigrationPolicy) -> Self {
        self.migration_policy = policy;
        self
    }

    /// Long polling (default on): an idle fetch waits up to the runtime's
    /// `poll_timeout` for new work, woken by LISTEN/NOTIFY. Off: fetches
    /// return at once and the runtime's own poll interval applies.
    pub fn long_poll(mut self, enabled: bool) -> Self {
        self.long_poll = enabled;
        self
    }

    /// Announce every orchestrator wake to the other processes, as builds
    /// before issue 10 did, instead of taking on locally what this
    /// process's idle fetches can absorb (`src/wakeups.rs`). For measuring
    /// the difference (the benchmark's `processes` section); default off.
    #[doc(hidden)]
    pub fn announce_all_wakes(mut self, enabled: bool) -> Self {
        self.announce_all_wakes = enabled;
        self
    }

    /// Delay between attempts to re-establish the LISTEN connection after it
    /// was lost (default 500 ms). While it is down, idle fetches re-check the
    /// queue at this interval, so no wake-up is missed.
    pub fn listener_reconnect_delay(mut self, delay: Duration) -> Self {
        self.listener_reconnect_delay = delay;
        self
    }

    /// Installs and calls these function files (name, SQL) instead of the
    /// ones this build embeds: for tests that run two builds' function sets
    /// side by side. Not for production use.
    #[doc(hidden)]
    pub fn function_files(mut self, files: Vec<(String, String)>) -> Self {
        self.function_files = Some(files);
        self
    }

    /// How long calls outside the runtime's own loop — reads, status, KV,
    /// management, and the enqueues duroxide's `Client` uses to start, raise
    /// events and cancel — ride out transient failures (lost connection,
    /// server restarting, pool timeout, serialization failure) before failing
    /// with the last error (default 30 s: a fast restart or a managed-service
    /// failover). Retried writes are never applied twice. Capped at 10
    /// minutes; zero disables the retries. The runtime's own calls (fetch,
    /// ack, abandon, renew) are not affected: the runtime retries those.
    pub fn client_retry_budget(mut self, budget: Duration) -> Self {
        self.client_retry_budget = budget;
        self
    }

    /// How often the store's health is sampled into metrics (default 15 s;
    /// `None` never): queue depths, oldest ready age, expired leases,
    /// messages at or past [`health_attempts`](Self::health_attempts)
    /// fetches, dead tuples of the queue tables, and the age of the oldest
    /// transaction holding back vacuum, in one statement per sample. Samples
    /// are taken only while a `metrics` recorder is installed (see
    /// `docs/operations.md`, "Metrics").
    pub fn health_sample_interval(mut self, interval: Option<Duration>) -> Self {
        self.health_sample_interval = interval.filter(|d| !d.is_zero());
        self
    }

    /// The fetch count at which the health sample counts a message as a
    /// poison candidate (`duroxide_postgres_queue_at_attempts`; default 5).
    pub fn health_attempts(mut self, attempts: u32) -> Self {
        self.health_attempts = attempts.max(1);
        self
    }

    /// Retention run by a background maintenance task (default: none, the
    /// store keeps everything). See [`RetentionPolicy`]; exactly one process
    /// per schema runs it at a time.
    pub fn retention(mut self, policy: RetentionPolicy) -> Self {
        self.retention = Some(policy);
        self
    }
}
