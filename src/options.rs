//! Connection, pool, timeout and polling options.

use crate::credentials::{CredentialSource, Credentials};
use crate::migrations::MigrationPolicy;
use crate::retention::RetentionPolicy;
use crate::schema::DEFAULT_SCHEMA;
use std::time::Duration;

/// The statement timeout of a direct connection unless one is set.
const DEFAULT_STATEMENT_TIMEOUT: Duration = Duration::from_secs(60);

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
    /// `None` until set: then the default of the connection mode applies
    /// (see [`PostgresOptions::statement_timeout`]).
    pub(crate) statement_timeout: Option<Option<Duration>>,
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
    pub(crate) credentials: Option<Credentials>,
    pub(crate) credential_retry_budget: Duration,
    pub(crate) transaction_pooler: bool,
    pub(crate) listen_url: Option<String>,
    pub(crate) announce_all_wakes: bool,
}

impl Default for PostgresOptions {
    fn default() -> Self {
        Self {
            schema: DEFAULT_SCHEMA.to_string(),
            max_connections: 10,
            acquire_timeout: Duration::from_secs(10),
            statement_timeout: None,
            application_name: "duroxide-postgres".to_string(),
            migration_policy: MigrationPolicy::Apply,
            long_poll: true,
            listener_reconnect_delay: Duration::from_millis(500),
            function_files: None,
            client_retry_budget: Duration::from_secs(30),
            health_sample_interval: Some(Duration::from_secs(15)),
            health_attempts: 5,
            retention: None,
            credentials: None,
            credential_retry_budget: Duration::from_secs(30),
            transaction_pooler: false,
            listen_url: None,
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
    ///
    /// It is sent as a connection start-up option, which a transaction
    /// pooler cannot carry: with [`transaction_pooler`](Self::transaction_pooler)
    /// the default is the server's setting, and an explicit `Some` is
    /// refused by `connect` with [`Error::Config`](crate::Error::Config). Set
    /// the timeout on the server instead (`ALTER ROLE app SET
    /// statement_timeout = '60s'`; see `docs/operations.md`, "Behind
    /// PgBouncer").
    pub fn statement_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.statement_timeout = Some(timeout);
        self
    }

    /// The statement timeout `connect` sends as a start-up option, or why
    /// it cannot be sent.
    pub(crate) fn startup_statement_timeout(&self) -> Result<Option<Duration>, crate::Error> {
        match (self.transaction_pooler, self.statement_timeout) {
            (false, None) => Ok(Some(DEFAULT_STATEMENT_TIMEOUT)),
            (false, Some(timeout)) | (true, Some(timeout @ None)) => Ok(timeout),
            (true, None) => Ok(None),
            (true, Some(Some(timeout))) => Err(crate::Error::Config(format!(
                "statement_timeout({timeout:?}) cannot be applied through a transaction pooler: \
                 it is a connection start-up option, which PgBouncer refuses, and a SET would \
                 leak to other clients of the server connection. Set it on the server \
                 (ALTER ROLE <role> SET statement_timeout = '{}ms') and pass \
                 statement_timeout(None)",
                timeout.as_millis().max(1)
            ))),
        }
    }

    /// The URL runs through a transaction pooler such as PgBouncer with
    /// `pool_mode = transaction` (default off): each statement may run on a
    /// different server connection, so the provider keeps no state in a
    /// server session.
    ///
    /// * Statements are sent unnamed with their parameter types (one round
    ///   trip, as before), never as named prepared statements.
    /// * No start-up options: the statement timeout comes from the server
    ///   (see [`statement_timeout`](Self::statement_timeout)).
    /// * LISTEN cannot pass a transaction pooler: long polling listens on
    ///   [`listen_url`](Self::listen_url), a direct connection, if given;
    ///   without one an idle fetch re-checks the queue with a backoff from
    ///   10 ms to 1 s (commits of this process still wake it at once).
    ///
    /// Migrations run as one transaction under a transaction-level advisory
    /// lock, so they work through the pooler as well.
    pub fn transaction_pooler(mut self, enabled: bool) -> Self {
        self.transaction_pooler = enabled;
        self
    }

    /// The URL of the dedicated LISTEN connection of long polling, when it
    /// must not be `database_url` (default: `database_url`): with
    /// [`transaction_pooler`](Self::transaction_pooler), a direct connection
    /// to the PostgreSQL server behind the pooler. It is one connection per
    /// provider. Refused by `connect` when long polling is off.
    pub fn listen_url(mut self, url: impl Into<String>) -> Self {
        self.listen_url = Some(url.into());
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
    /// `poll_timeout` for new work, woken by LISTEN/NOTIFY (with
    /// [`transaction_pooler`](Self::transaction_pooler) and no
    /// [`listen_url`](Self::listen_url): by re-checking with a backoff).
    /// Off: fetches return at once and the runtime's own poll interval
    /// applies.
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

    /// Asks `source` for the password of every connection the store opens
    /// (the pool's, the migration connection, the LISTEN connection and its
    /// reconnects), for credentials that rotate such as cloud IAM tokens.
    /// A password in the URL is then ignored. Connections already open keep
    /// working when the password changes. See [`CredentialSource`] for an
    /// example and [`credential_retry_budget`](Self::credential_retry_budget)
    /// for what happens when the server refuses what it returns.
    pub fn password_source(mut self, source: impl CredentialSource) -> Self {
        self.credentials = Some(Credentials(std::sync::Arc::new(source)));
        self
    }

    /// How long a new connection keeps trying while the server refuses its
    /// credentials (SQLSTATE `28000`/`28P01`), asking the
    /// [`password_source`](Self::password_source) again before each attempt,
    /// with backoff from 100 ms to 2 s (default 30 s: a rotation may reach
    /// the database before it reaches the source). Then the connection fails
    /// with a [`ConnectError`](crate::ConnectError) naming the host, port,
    /// user and SQLSTATE. Only with a password source: a password in the URL
    /// cannot change, so its refusal is reported at once. A provider call
    /// waiting for a pooled connection waits up to the
    /// [`acquire_timeout`](Self::acquire_timeout) plus this budget.
    pub fn credential_retry_budget(mut self, budget: Duration) -> Self {
        self.credential_retry_budget = budget;
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_startup_statement_timeout_follows_the_connection_mode() {
        let s = Duration::from_secs(5);
        let direct = PostgresOptions::new();
        assert_eq!(
            direct.startup_statement_timeout().ok(),
            Some(Some(DEFAULT_STATEMENT_TIMEOUT))
        );
        let set = direct.clone().statement_timeout(Some(s));
        assert_eq!(set.startup_statement_timeout().ok(), Some(Some(s)));
        let none = direct.clone().statement_timeout(None);
        assert_eq!(none.startup_statement_timeout().ok(), Some(None));

        // Behind a pooler: never a start-up option; an explicit one is refused.
        let pooled = PostgresOptions::new().transaction_pooler(true);
        assert_eq!(pooled.startup_statement_timeout().ok(), Some(None));
        let none = pooled.clone().statement_timeout(None);
        assert_eq!(none.startup_statement_timeout().ok(), Some(None));
        let set = pooled.statement_timeout(Some(s));
        assert!(matches!(
            set.startup_statement_timeout(),
            Err(crate::Error::Config(msg)) if msg.contains("ALTER ROLE")
        ));
    }
}
