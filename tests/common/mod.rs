//! Shared test support: a PostgreSQL server (see `server.rs`), fresh schemas
//! that are dropped afterwards, the duroxide validation-suite factory, waits
//! for a test's preconditions (`wait.rs`) and a metrics recorder
//! (`recorder.rs`).

pub mod items;
pub mod recorder;
pub mod server;
pub mod wait;

use duroxide::provider_validations::ProviderFactory;
use duroxide::providers::Provider;
use duroxide_postgres::{PostgresOptions, PostgresProvider};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// A schema name no other test uses: `t_<prefix>_<random>`.
pub fn unique_schema(prefix: &str) -> String {
    use std::hash::{BuildHasher, Hasher};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
    h.write_u32(std::process::id());
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos(),
    );
    format!("t_{prefix}_{:016x}", h.finish())
}

/// Runs SQL on its own connection to the shared test database (for fault
/// injection and inspection).
pub async fn admin_client() -> tokio_postgres::Client {
    client_at(&server::database_url()).await
}

/// A plain connection to `url` (another server, or another role).
pub async fn client_at(url: &str) -> tokio_postgres::Client {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .unwrap_or_else(|e| panic!("connect to {url}: {e}"));
    tokio::spawn(connection);
    client
}

/// `url` (a `postgres://` URL) with its user replaced by `role` (no password).
pub fn url_as(url: &str, role: &str) -> String {
    let (scheme, rest) = url.split_once("://").expect("a postgres:// URL");
    let host = rest.rsplit_once('@').map_or(rest, |(_, h)| h);
    format!("{scheme}://{role}@{host}")
}

/// Drops the schemas it was given when dropped, so tests leave nothing
/// behind even when they panic. Runs on a thread of its own because Drop
/// cannot await.
#[derive(Default)]
pub struct Schemas {
    names: Mutex<Vec<String>>,
    /// Where they live; the shared test server when `None`.
    url: Option<String>,
}

impl Schemas {
    /// A guard for schemas on the server at `url` (another server than the
    /// shared one, e.g. a Citus coordinator).
    pub fn at(url: &str) -> Self {
        Self {
            names: Mutex::default(),
            url: Some(url.to_string()),
        }
    }

    pub fn track(&self, schema: &str) {
        self.names.lock().unwrap().push(schema.to_string());
    }
}

impl Drop for Schemas {
    fn drop(&mut self) {
        let names = std::mem::take(&mut *self.names.lock().unwrap());
        if names.is_empty() {
            return;
        }
        // No server, no schemas to drop (and no second panic while the
        // test's own panic unwinds).
        let Some(url) = self.url.clone().or_else(|| server::try_database_url().ok()) else {
            return;
        };
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let Ok((client, connection)) =
                    tokio_postgres::connect(&url, tokio_postgres::NoTls).await
                else {
                    return;
                };
                tokio::spawn(connection);
                // Never hang a test run on a lock held by a leftover task.
                let _ = client.batch_execute("SET lock_timeout = '5s'").await;
                for name in names {
                    // Names come from unique_schema (plain identifiers).
                    let _ = client
                        .batch_execute(&format!("DROP SCHEMA IF EXISTS \"{name}\" CASCADE"))
                        .await;
                }
            });
        })
        .join();
    }
}

/// A provider in a fresh schema that is dropped with the returned guard.
pub async fn provider(prefix: &str, options: PostgresOptions) -> (Arc<PostgresProvider>, Schemas) {
    let schemas = Schemas::default();
    let schema = unique_schema(prefix);
    schemas.track(&schema);
    let provider = PostgresProvider::connect(&server::database_url(), options.schema(&schema))
        .await
        .expect("create provider");
    (Arc::new(provider), schemas)
}

/// A provider as [`provider`] makes, whose connections carry an application
/// name of their own (returned), so that `pg_stat_activity` tells its
/// backends apart.
pub async fn provider_with_app(
    prefix: &str,
    options: PostgresOptions,
) -> (Arc<PostgresProvider>, Schemas, String) {
    let app = unique_schema(&format!("app_{prefix}"));
    let (p, guard) = provider(prefix, options.application_name(&app)).await;
    (p, guard, app)
}

/// The validation-suite factory: every `create_provider` is a fresh schema.
pub struct PgFactory {
    long_poll: bool,
    /// Where and how providers connect (the shared server, default options,
    /// unless made by [`PgFactory::through`]).
    url: String,
    options: PostgresOptions,
    current: Mutex<Option<String>>,
    schemas: Schemas,
}

impl PgFactory {
    /// Providers with long polling on (the default configuration).
    pub fn long_poll() -> Self {
        Self::new(true)
    }

    /// Providers with long polling off.
    pub fn short_poll() -> Self {
        Self::new(false)
    }

    /// Providers connecting to `url` with `options` (schema and long
    /// polling are set per provider).
    pub fn through(url: String, options: PostgresOptions, long_poll: bool) -> Self {
        Self {
            url,
            options,
            ..Self::new(long_poll)
        }
    }

    /// Providers on another server than the shared one (`url`, a direct
    /// connection), whose schemas are dropped there.
    pub fn on(url: String, options: PostgresOptions, long_poll: bool) -> Self {
        Self {
            schemas: Schemas::at(&url),
            url,
            options,
            current: Mutex::new(None),
            long_poll,
        }
    }

    fn new(long_poll: bool) -> Self {
        Self {
            long_poll,
            url: server::database_url(),
            options: PostgresOptions::new(),
            current: Mutex::new(None),
            schemas: Schemas::default(),
        }
    }

    /// A direct connection's URL to the providers' server, for inspection.
    fn admin_url(&self) -> String {
        self.schemas
            .url
            .clone()
            .unwrap_or_else(server::database_url)
    }

    fn current_schema(&self) -> String {
        self.current
            .lock()
            .unwrap()
            .clone()
            .expect("create_provider was not called")
    }
}

#[async_trait::async_trait]
impl ProviderFactory for PgFactory {
    async fn create_provider(&self) -> Arc<dyn Provider> {
        let schema = unique_schema("v");
        self.schemas.track(&schema);
        let options = self
            .options
            .clone()
            .schema(&schema)
            .long_poll(self.long_poll);
        let provider = PostgresProvider::connect(&self.url, options)
            .await
            .expect("create provider");
        *self.current.lock().unwrap() = Some(schema);
        Arc::new(provider)
    }

    fn lock_timeout(&self) -> Duration {
        Duration::from_secs(1)
    }

    /// A short-polling fetch on an idle store takes about a millisecond; the
    /// bound leaves room for a loaded 2-core CI machine running 16 tests at
    /// once, where 100 ms (the default) is sometimes exceeded.
    fn short_poll_threshold(&self) -> Duration {
        Duration::from_millis(250)
    }

    /// Writes text that is not JSON over every history row of `instance`.
    async fn corrupt_instance_history(&self, instance: &str) {
        let schema = self.current_schema();
        let n = client_at(&self.admin_url())
            .await
            .execute(
                &format!("UPDATE \"{schema}\".history SET event_data = 'not json {{' WHERE instance_id = $1"),
                &[&instance],
            )
            .await
            .expect("corrupt history");
        assert!(n > 0, "no history to corrupt for {instance}");
    }

    async fn get_max_attempt_count(&self, instance: &str) -> u32 {
        let schema = self.current_schema();
        let row = client_at(&self.admin_url())
            .await
            .query_one(
                &format!(
                    "SELECT COALESCE(max(attempt_count), 0) FROM \"{schema}\".orchestrator_queue WHERE instance_id = $1"
                ),
                &[&instance],
            )
            .await
            .expect("read attempt count");
        row.get::<_, i32>(0) as u32
    }
}

/// A small real workload: orchestration "Twice" doubles its input with the
/// activity "Double", waits `timer`, and doubles again (input n, output 4n).
pub fn twice_registries(
    timer: Duration,
) -> (
    duroxide::runtime::registry::ActivityRegistry,
    duroxide::OrchestrationRegistry,
) {
    use duroxide::{ActivityContext, OrchestrationContext};
    let activities = duroxide::runtime::registry::ActivityRegistry::builder()
        .register("Double", |_: ActivityContext, n: String| async move {
            Ok((n.parse::<i64>().unwrap() * 2).to_string())
        })
        .build();
    let orchestrations = duroxide::OrchestrationRegistry::builder()
        .register(
            "Twice",
            move |ctx: OrchestrationContext, n: String| async move {
                let once = ctx.schedule_activity("Double", n).await?;
                ctx.schedule_timer(timer).await;
                ctx.schedule_activity("Double", once).await
            },
        )
        .build();
    (activities, orchestrations)
}
