//! What only the store knows, through the `metrics` facade duroxide itself
//! records with, and one `tracing` span per database call.
//!
//! duroxide already times and counts every provider call
//! (`duroxide_provider_operation_duration_seconds`, `..._errors_total`); this
//! module adds the store's own view: the pool, the LISTEN connection,
//! wake-ups, acks resolved after a lost reply, renewal retries, lease
//! takeovers, and the periodic health sample (`health.rs`). Every name is
//! spelled here once, prefixed `duroxide_postgres_`, and labelled with the
//! store's `schema` so that several stores in one process stay apart.
//! `docs/operations.md` lists them with their labels.
//!
//! Nothing here costs anything when no recorder is installed beyond the
//! facade's own no-op, and nothing here reads a payload.

pub(crate) mod health;

use crate::wakeups::Queue;
use deadpool_postgres::Pool;
use duroxide::providers::ProviderError;
use std::time::Duration;
use tokio_postgres::Row;
use tracing::field::Empty;

/// Metric names (see `docs/operations.md` for labels and meaning).
pub(crate) mod names {
    /// Gauge: pooled connections, by `state` (`in_use`, `idle`).
    pub const POOL_CONNECTIONS: &str = "duroxide_postgres_pool_connections";
    /// Gauge: calls waiting for a pooled connection.
    pub const POOL_WAITING: &str = "duroxide_postgres_pool_waiting";
    /// Histogram: seconds a call waited for a pooled connection.
    pub const POOL_ACQUIRE_SECONDS: &str = "duroxide_postgres_pool_acquire_seconds";
    /// Gauge: 1 while the LISTEN connection is up, else 0.
    pub const LISTENER_CONNECTED: &str = "duroxide_postgres_listener_connected";
    /// Counter: LISTEN connections re-established after a loss.
    pub const LISTENER_RECONNECTS: &str = "duroxide_postgres_listener_reconnects_total";
    /// Counter: idle fetches woken by a notification, by `queue`.
    pub const WAKEUPS: &str = "duroxide_postgres_wakeups_total";
    /// Gauge: idle fetches waiting for a wake-up or a due time, by `queue`.
    pub const FETCHES_WAITING: &str = "duroxide_postgres_fetches_waiting";
    /// Counter: acks whose reply was lost, by `queue` and `outcome`.
    pub const ACK_RESOLUTIONS: &str = "duroxide_postgres_ack_resolutions_total";
    /// Counter: lease renewals retried after a transient failure, by `queue`.
    pub const RENEWAL_RETRIES: &str = "duroxide_postgres_lease_renewal_retries_total";
    /// Counter: leases taken over by a fetch after they expired, by `queue`.
    pub const LEASE_TAKEOVERS: &str = "duroxide_postgres_lease_takeovers_total";
    /// Gauge: messages claimable now, by `queue`.
    pub const QUEUE_READY: &str = "duroxide_postgres_queue_ready";
    /// Gauge: messages not visible yet (timers, delays), by `queue`.
    pub const QUEUE_DELAYED: &str = "duroxide_postgres_queue_delayed";
    /// Gauge: messages under a live lease, by `queue`.
    pub const QUEUE_LEASED: &str = "duroxide_postgres_queue_leased";
    /// Gauge: seconds the oldest claimable message has been ready, by `queue`.
    pub const QUEUE_OLDEST_READY_SECONDS: &str = "duroxide_postgres_queue_oldest_ready_age_seconds";
    /// Gauge: leases expired and not claimed again, by `queue`.
    pub const QUEUE_EXPIRED_LEASES: &str = "duroxide_postgres_queue_expired_leases";
    /// Gauge: messages fetched at least the threshold number of times, by `queue`.
    pub const QUEUE_AT_ATTEMPTS: &str = "duroxide_postgres_queue_at_attempts";
    /// Gauge: dead tuples of a queue table (partitions included), by `queue`.
    pub const QUEUE_DEAD_TUPLES: &str = "duroxide_postgres_queue_dead_tuples";
    /// Gauge: age in seconds of the oldest transaction holding back vacuum.
    pub const VACUUM_HORIZON_AGE_SECONDS: &str = "duroxide_postgres_vacuum_horizon_age_seconds";
    /// Gauge: fraction of the server's notification queue in use.
    pub const NOTIFICATION_QUEUE_USAGE: &str = "duroxide_postgres_notification_queue_usage";
    /// Histogram: seconds one health sample took.
    pub const HEALTH_SAMPLE_SECONDS: &str = "duroxide_postgres_health_sample_duration_seconds";
    /// Counter: health samples that failed.
    pub const HEALTH_SAMPLE_ERRORS: &str = "duroxide_postgres_health_sample_errors_total";

    /// Every name, for documentation tests.
    pub const ALL: &[&str] = &[
        POOL_CONNECTIONS,
        POOL_WAITING,
        POOL_ACQUIRE_SECONDS,
        LISTENER_CONNECTED,
        LISTENER_RECONNECTS,
        WAKEUPS,
        FETCHES_WAITING,
        ACK_RESOLUTIONS,
        RENEWAL_RETRIES,
        LEASE_TAKEOVERS,
        QUEUE_READY,
        QUEUE_DELAYED,
        QUEUE_LEASED,
        QUEUE_OLDEST_READY_SECONDS,
        QUEUE_EXPIRED_LEASES,
        QUEUE_AT_ATTEMPTS,
        QUEUE_DEAD_TUPLES,
        VACUUM_HORIZON_AGE_SECONDS,
        NOTIFICATION_QUEUE_USAGE,
        HEALTH_SAMPLE_SECONDS,
        HEALTH_SAMPLE_ERRORS,
    ];
}

/// Every metric name this crate records (for tests and tooling).
#[doc(hidden)]
pub fn metric_names() -> &'static [&'static str] {
    names::ALL
}

impl Queue {
    /// The `queue` label.
    pub(crate) fn label(self) -> &'static str {
        match self {
            Queue::Orchestrator => "orchestrator",
            Queue::Worker => "worker",
        }
    }
}

/// What became of an ack whose reply was lost (`outcome` label).
#[derive(Debug, Clone, Copy)]
pub(crate) enum AckOutcome {
    /// The first attempt had committed.
    Committed,
    /// Nothing was committed and the lease was live: the ack was sent again
    /// and succeeded.
    Retried,
    /// Nothing was committed and the lease had expired.
    Lost,
    /// The outcome could not be learned before giving up.
    Unresolved,
}

impl AckOutcome {
    fn label(self) -> &'static str {
        match self {
            AckOutcome::Committed => "committed",
            AckOutcome::Retried => "retried",
            AckOutcome::Lost => "lost",
            AckOutcome::Unresolved => "unresolved",
        }
    }
}

/// The store a provider talks to: the labels of its metrics and the
/// attributes of its spans.
#[derive(Debug)]
pub(crate) struct Target {
    /// The `schema` label.
    schema: String,
    /// OpenTelemetry `db.namespace`: `database|schema`.
    namespace: String,
    server_address: Option<String>,
    server_port: Option<u16>,
}

impl Target {
    pub(crate) fn new(config: &tokio_postgres::Config, schema: &str) -> Self {
        let namespace = match config.get_dbname() {
            Some(db) => format!("{db}|{schema}"),
            None => schema.to_string(),
        };
        let server_address = config.get_hosts().first().map(|h| match h {
            tokio_postgres::config::Host::Tcp(name) => name.clone(),
            #[cfg(unix)]
            tokio_postgres::config::Host::Unix(path) => path.display().to_string(),
        });
        Self {
            schema: schema.to_string(),
            namespace,
            server_address,
            server_port: config.get_ports().first().copied(),
        }
    }

    /// `host:port/database|schema`: where the store lives, for messages.
    pub(crate) fn location(&self) -> String {
        format!(
            "{}:{}/{}",
            self.server_address.as_deref().unwrap_or("?"),
            self.server_port.map_or("?".to_string(), |p| p.to_string()),
            self.namespace
        )
    }

    /// The `schema` label value.
    pub(crate) fn schema(&self) -> &str {
        &self.schema
    }

    /// The span of one call of the SQL function `function` (its plain name;
    /// `installed` is its name in this build's function set) for the
    /// provider operation `op`. Fields follow OpenTelemetry's database
    /// conventions; the instance id and the outcome are recorded later.
    pub(crate) fn span(&self, function: &str, installed: &str, op: &str) -> tracing::Span {
        tracing::info_span!(
            target: "duroxide_postgres::db",
            "db.call",
            otel.name = function,
            otel.kind = "client",
            otel.status_code = Empty,
            db.system.name = "postgresql",
            db.namespace = %self.namespace,
            db.operation.name = function,
            db.stored_procedure.name = installed,
            db.response.status_code = Empty,
            db.response.returned_rows = Empty,
            error.type = Empty,
            server.address = self.server_address.as_deref(),
            server.port = self.server_port,
            duroxide.operation = op,
            duroxide.instance_id = Empty,
        )
    }

    /// Records a call's outcome on its span.
    pub(crate) fn finish(
        &self,
        span: &tracing::Span,
        result: &Result<Vec<Row>, (ProviderError, Option<String>)>,
    ) {
        if span.is_disabled() {
            return;
        }
        match result {
            Ok(rows) => {
                span.record("db.response.returned_rows", rows.len() as u64);
                if let Some(row) = rows.first() {
                    // Claims learn their instance from the row they return.
                    let has_instance = row.columns().iter().any(|c| c.name() == "instance_id");
                    if has_instance {
                        if let Ok(Some(id)) = row.try_get::<_, Option<&str>>("instance_id") {
                            span.record("duroxide.instance_id", id);
                        }
                    }
                }
            }
            Err((error, state)) => {
                span.record("otel.status_code", "ERROR");
                match state {
                    Some(code) => {
                        span.record("db.response.status_code", code.as_str());
                        span.record("error.type", code.as_str());
                    }
                    None => {
                        let kind = if error.is_retryable() {
                            "connection"
                        } else {
                            "client"
                        };
                        span.record("error.type", kind);
                    }
                }
            }
        }
    }

    /// A connection was handed out after `waited`: the acquire time and the
    /// pool's state now.
    pub(crate) fn pool_acquired(&self, pool: &Pool, waited: Duration) {
        metrics::histogram!(names::POOL_ACQUIRE_SECONDS, "schema" => self.schema.clone())
            .record(waited.as_secs_f64());
        self.pool_state(pool);
    }

    /// The pool's connections in use, idle, and the callers waiting.
    pub(crate) fn pool_state(&self, pool: &Pool) {
        let status = pool.status();
        let idle = status.available;
        let in_use = status.size.saturating_sub(idle);
        metrics::gauge!(names::POOL_CONNECTIONS, "schema" => self.schema.clone(), "state" => "in_use")
            .set(in_use as f64);
        metrics::gauge!(names::POOL_CONNECTIONS, "schema" => self.schema.clone(), "state" => "idle")
            .set(idle as f64);
        metrics::gauge!(names::POOL_WAITING, "schema" => self.schema.clone())
            .set(status.waiting as f64);
    }

    /// An idle fetch of `queue` was woken by a notification.
    pub(crate) fn wakeup(&self, queue: Queue) {
        metrics::counter!(names::WAKEUPS, "schema" => self.schema.clone(), "queue" => queue.label())
            .increment(1);
    }

    /// One more (`delta` 1) or one fewer (-1) idle fetch of `queue` waits.
    pub(crate) fn fetches_waiting(&self, queue: Queue, delta: f64) {
        metrics::gauge!(names::FETCHES_WAITING, "schema" => self.schema.clone(),
            "queue" => queue.label())
        .increment(delta);
    }

    /// An ack of `queue` whose reply was lost ended with `outcome`.
    pub(crate) fn ack_resolved(&self, queue: Queue, outcome: AckOutcome) {
        metrics::counter!(names::ACK_RESOLUTIONS, "schema" => self.schema.clone(),
            "queue" => queue.label(), "outcome" => outcome.label())
        .increment(1);
    }

    /// A lease renewal of `queue` is retried.
    pub(crate) fn renewal_retried(&self, queue: Queue) {
        metrics::counter!(names::RENEWAL_RETRIES, "schema" => self.schema.clone(),
            "queue" => queue.label())
        .increment(1);
    }

    /// A fetch of `queue` took over a lease that had expired.
    pub(crate) fn lease_taken_over(&self, queue: Queue) {
        metrics::counter!(names::LEASE_TAKEOVERS, "schema" => self.schema.clone(),
            "queue" => queue.label())
        .increment(1);
    }

    /// The LISTEN connection is up (`true`) or down.
    pub(crate) fn listener_connected(&self, up: bool) {
        metrics::gauge!(names::LISTENER_CONNECTED, "schema" => self.schema.clone()).set(if up {
            1.0
        } else {
            0.0
        });
    }

    /// The LISTEN connection was re-established after a loss.
    pub(crate) fn listener_reconnected(&self) {
        metrics::counter!(names::LISTENER_RECONNECTS, "schema" => self.schema.clone()).increment(1);
    }
}

/// Whether a metrics recorder is installed: the facade falls back to its
/// no-op recorder, a zero-sized type, and every real recorder holds state.
/// (A zero-sized recorder of one's own that forwards elsewhere would read as
/// "none": the health sample would then not run.)
pub(crate) fn recorder_installed() -> bool {
    metrics::with_recorder(|r| std::mem::size_of_val(r) != 0)
}

#[cfg(test)]
mod tests {
    use super::recorder_installed;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// A recorder with state, as every real one has.
    #[derive(Default)]
    struct Counting(AtomicUsize);

    impl metrics::Recorder for Counting {
        fn describe_counter(
            &self,
            _: metrics::KeyName,
            _: Option<metrics::Unit>,
            _: metrics::SharedString,
        ) {
        }
        fn describe_gauge(
            &self,
            _: metrics::KeyName,
            _: Option<metrics::Unit>,
            _: metrics::SharedString,
        ) {
        }
        fn describe_histogram(
            &self,
            _: metrics::KeyName,
            _: Option<metrics::Unit>,
            _: metrics::SharedString,
        ) {
        }
        fn register_counter(
            &self,
            _: &metrics::Key,
            _: &metrics::Metadata<'_>,
        ) -> metrics::Counter {
            self.0.fetch_add(1, Ordering::SeqCst);
            metrics::Counter::noop()
        }
        fn register_gauge(&self, _: &metrics::Key, _: &metrics::Metadata<'_>) -> metrics::Gauge {
            metrics::Gauge::noop()
        }
        fn register_histogram(
            &self,
            _: &metrics::Key,
            _: &metrics::Metadata<'_>,
        ) -> metrics::Histogram {
            metrics::Histogram::noop()
        }
    }

    #[test]
    fn the_facade_tells_whether_a_recorder_is_installed() {
        // This unit-test binary installs no global recorder.
        assert!(!recorder_installed());
        assert!(!metrics::with_local_recorder(
            &metrics::NoopRecorder,
            recorder_installed
        ));
        let recorder = Counting::default();
        assert!(metrics::with_local_recorder(&recorder, recorder_installed));
    }
}
