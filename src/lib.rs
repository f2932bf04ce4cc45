//! # duroxide-postgres
//!
//! A PostgreSQL store ("provider") for [duroxide](https://crates.io/crates/duroxide)
//! durable orchestrations, for many workers on many machines sharing one
//! database.
//!
//! ```no_run
//! # async fn example() -> Result<(), Box<dyn std::error::Error>> {
//! use duroxide_postgres::PostgresProvider;
//! use std::sync::Arc;
//!
//! let store = Arc::new(PostgresProvider::new("postgres://app@localhost/app").await?);
//! let client = duroxide::Client::new(store.clone());
//! # let _ = client; Ok(()) }
//! ```
//!
//! ## How it works
//!
//! * **One round trip per call.** Every `Provider` and `ProviderAdmin` method
//!   is a single call of a PostgreSQL function in the store's schema (see
//!   `sql/functions/`), executed in one transaction. A whole orchestration
//!   turn is committed by one call, and fetched by one call.
//! * **Leases on the database clock.** Claim, renewal and the ownership check
//!   at ack compare against the server's `clock_timestamp()` at the moment
//!   of the statement, so a worker with a skewed clock can neither steal a
//!   live lease nor keep a dead one. Times the runtime computes (a timer's
//!   fire time, an abandon delay) are honoured as given.
//!
//!   ```text
//!   fetch:  lock lease row (SKIP LOCKED) -> tag visible messages -> lease = now + timeout
//!   ack:    lock lease row by token -> check lease live -> write turn -> delete tagged -> release
//!   ```
//! * **No convoys.** Concurrent fetchers skip instances others are claiming
//!   and keep looking; a fetch returns nothing only when nothing is ready.
//! * **Long polling.** An idle fetch waits on LISTEN/NOTIFY (one dedicated
//!   connection per provider) up to the runtime's `poll_timeout`.
//! * **Behind PgBouncer.** With
//!   [`PostgresOptions::transaction_pooler`] every call works through a
//!   transaction pooler: unnamed statements, no session state, LISTEN over
//!   a direct [`listen_url`](PostgresOptions::listen_url) or polling with a
//!   backoff (`docs/operations.md`, "Behind PgBouncer").
//! * **Schema isolation and migrations.** Each store lives in its own schema
//!   ([`PostgresProvider::new_with_schema`]); migrations are embedded,
//!   checksummed and applied under an advisory lock
//!   ([`MigrationPolicy`]).
//! * **Errors by SQLSTATE.** Retryable versus permanent is decided from the
//!   SQLSTATE alone ([`is_retryable_sqlstate`]).
//!
//! ## TLS
//!
//! TLS follows the URL's `sslmode`: `disable`, `prefer` (default), `require`
//! (encrypted, not verified), `verify-ca` and `verify-full` (verified against
//! the system roots plus `sslrootcert=<pem file>`).

#![warn(missing_docs)]

mod citus;
mod codec;
mod credentials;
mod error;
mod function_set;
pub mod inspect;
mod migrations;
mod notifier;
mod options;
mod peers;
mod provider;
mod retention;
mod schema;
mod shards;
mod statements;
mod telemetry;
mod tls;
mod wakeups;

pub use credentials::{BoxError, ConnectError, CredentialSource};
pub use error::{is_retryable_sqlstate, Error};
#[doc(hidden)]
pub use function_set::embedded_function_files;
pub use migrations::MigrationPolicy;
pub use options::PostgresOptions;
#[doc(hidden)]
pub use provider::__sql_function_signatures;
pub use provider::listing::{InstanceCursor, InstancePage, InstanceQuery, InstanceSummary};
pub use provider::PostgresProvider;
pub use retention::{PurgeProgress, PurgeRequest, RetentionPolicy, TerminalStatus};
pub use schema::DEFAULT_SCHEMA;
pub use shards::Shards;
#[doc(hidden)]
pub use telemetry::metric_names;
