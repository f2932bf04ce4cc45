//! Errors: the crate's own [`Error`] for construction and migration, and the
//! mapping of database failures to duroxide's [`ProviderError`].
//!
//! Whether a failure is worth retrying is decided from its SQLSTATE alone
//! ([`is_retryable_sqlstate`]), never from message text. Conditions raised by
//! this crate's SQL functions use the private class `DX` and are permanent.

use crate::credentials::{self, ConnectError};
use duroxide::providers::ProviderError;

/// Errors from creating a [`PostgresProvider`](crate::PostgresProvider):
/// bad configuration, connection failures and schema (migration) problems.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The schema name is not a plain identifier; nothing was sent to the database.
    #[error("invalid schema name {name:?}: {reason}")]
    InvalidSchemaName {
        /// The name as given.
        name: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The connection URL or an option is invalid.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// The database reported an error, or an open connection failed.
    #[error("database error: {}", describe(.0))]
    Database(#[from] tokio_postgres::Error),
    /// A connection could not be opened (where to, as whom, the SQLSTATE
    /// and the cause: see [`ConnectError`]).
    #[error(transparent)]
    Connect(#[from] ConnectError),
    /// No pooled connection could be obtained.
    #[error("connection pool error: {0}")]
    Pool(String),
    /// The schema in the database does not match what this version expects
    /// (written by a newer version, edited ledger, missing table, or not yet
    /// migrated in verify-only mode). The message says what is wrong.
    #[error("schema {schema:?}: {message}")]
    Schema {
        /// The provider's schema.
        schema: String,
        /// What is wrong and what to do.
        message: String,
    },
}

/// A database error with its SQLSTATE and the server's message and detail
/// (tokio-postgres' own Display says only "db error").
pub(crate) fn describe(err: &tokio_postgres::Error) -> String {
    match err.as_db_error() {
        Some(db) => match db.detail() {
            Some(detail) => format!("[{}] {} ({detail})", db.code().code(), db.message()),
            None => format!("[{}] {}", db.code().code(), db.message()),
        },
        None => err.to_string(),
    }
}

/// Whether an error with this SQLSTATE may succeed if the operation is retried.
///
/// Retryable: connection exceptions (class 08), serialization failure
/// (40001), deadlock (40P01), insufficient resources (class 53), operator
/// intervention such as admin shutdown, crash shutdown and cannot-connect-now
/// (57P01–57P03) and query cancellation / statement timeout (57014), lock not
/// available (55P03), cached-plan invalidation after a function was
/// replaced (0A000), and a read-only transaction (25006): the connection
/// reached a standby or a primary being demoted in a failover, and a new
/// connection finds the new primary (the pool discards the connection that
/// answered it, see `provider::run_statement`). Everything else — including every `DX` code of this
/// crate, constraint violations (class 23) and data exceptions (class 22) —
/// is permanent.
pub fn is_retryable_sqlstate(code: &str) -> bool {
    matches!(
        code,
        "40001" | "40P01" | "57P01" | "57P02" | "57P03" | "57014" | "55P03" | "0A000" | "25006"
    ) || code.starts_with("08")
        || code.starts_with("53")
}

/// SQLSTATE 25006, read_only_sql_transaction: the server does not take
/// writes, so the connection that got it is on a standby and is not reused.
pub(crate) const READ_ONLY: &str = "25006";

/// Maps a database error to a `ProviderError` for `operation`.
pub(crate) fn from_pg(operation: &str, err: &tokio_postgres::Error) -> ProviderError {
    match err.code() {
        Some(state) => {
            let code = state.code();
            let message = describe(err);
            if is_retryable_sqlstate(code) {
                ProviderError::retryable(operation, message)
            } else {
                ProviderError::permanent(operation, message)
            }
        }
        None if retryable_without_sqlstate(err) => {
            ProviderError::retryable(operation, format!("connection error: {err}"))
        }
        None => ProviderError::permanent(operation, describe_chain(err)),
    }
}

/// Whether a failure that carries no SQLSTATE may succeed on a new
/// connection: only a closed connection or an I/O failure (reset, refused,
/// broken pipe, end of stream, timed out). Everything else — encoding a
/// parameter or decoding a column (ToSql/FromSql), a missing column, an
/// unexpected or unparsable message, a bad configuration — is a mismatch
/// between this build and the database and fails the same way every time.
/// tokio-postgres exposes no error kind, so this looks at what it does
/// expose: `is_closed()` and the `std::io::Error` in the cause chain, whose
/// kind tells a broken connection (retryable) from undecodable data
/// (`InvalidData`/`InvalidInput`, the kinds of its parse/encode errors).
pub(crate) fn retryable_without_sqlstate(err: &tokio_postgres::Error) -> bool {
    err.is_closed() || io_kind(err).is_some_and(io_kind_is_transient)
}

/// The kind of the first `std::io::Error` in `err`'s cause chain.
fn io_kind(err: &(dyn std::error::Error + 'static)) -> Option<std::io::ErrorKind> {
    let mut cause = std::error::Error::source(err);
    while let Some(c) = cause {
        if let Some(io) = c.downcast_ref::<std::io::Error>() {
            return Some(io.kind());
        }
        cause = c.source();
    }
    None
}

/// I/O failures of a connection, as opposed to data that could not be
/// encoded or decoded.
fn io_kind_is_transient(kind: std::io::ErrorKind) -> bool {
    !matches!(
        kind,
        std::io::ErrorKind::InvalidData | std::io::ErrorKind::InvalidInput
    )
}

/// `err` with its causes ("error deserializing column 2: invalid type"),
/// each once.
pub(crate) fn describe_chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut text = err.to_string();
    let mut cause = err.source();
    while let Some(c) = cause {
        let next = c.to_string();
        if !text.contains(&next) {
            text.push_str(": ");
            text.push_str(&next);
        }
        cause = c.source();
    }
    text
}

/// Maps a pool error to a `ProviderError` for `operation`.
pub(crate) fn from_pool(operation: &str, err: &deadpool_postgres::PoolError) -> ProviderError {
    use deadpool_postgres::PoolError;
    match err {
        // A connection the pool could not open (see credentials::carry).
        PoolError::Backend(e) => match credentials::carried(e) {
            Some(connect) if connect.is_retryable() => {
                ProviderError::retryable(operation, connect.to_string())
            }
            Some(connect) => ProviderError::permanent(operation, connect.to_string()),
            None => from_pg(operation, e),
        },
        PoolError::Closed => ProviderError::permanent(operation, "connection pool is closed"),
        PoolError::NoRuntimeSpecified => ProviderError::permanent(operation, err.to_string()),
        // Waiting for, creating or recycling a connection timed out: a later
        // attempt may succeed.
        PoolError::Timeout(_) => {
            ProviderError::retryable(operation, format!("connection pool: {err}"))
        }
        // Post-create hooks (none are installed): treated as a failed connect.
        PoolError::PostCreateHook(_) => {
            ProviderError::retryable(operation, format!("connection pool: {err}"))
        }
    }
}

/// A pool error as text, with the [`ConnectError`] of a connection the
/// pool could not open.
pub(crate) fn describe_pool(err: &deadpool_postgres::PoolError) -> String {
    match err {
        deadpool_postgres::PoolError::Backend(e) => match credentials::carried(e) {
            Some(connect) => connect.to_string(),
            None => describe(e),
        },
        other => other.to_string(),
    }
}

/// A permanent error for data that cannot be encoded or decoded.
pub(crate) fn corrupt(operation: &str, message: impl Into<String>) -> ProviderError {
    ProviderError::permanent(operation, message)
}

#[cfg(test)]
mod tests {
    use super::{io_kind_is_transient, is_retryable_sqlstate, retryable_without_sqlstate};
    use std::io::ErrorKind;

    #[test]
    fn failures_without_sqlstate_table() {
        let table: &[(ErrorKind, bool, &str)] = &[
            (ErrorKind::ConnectionReset, true, "reset by the server"),
            (
                ErrorKind::ConnectionRefused,
                true,
                "server not listening (restarting)",
            ),
            (ErrorKind::ConnectionAborted, true, "aborted"),
            (ErrorKind::BrokenPipe, true, "write to a closed socket"),
            (ErrorKind::UnexpectedEof, true, "stream ended mid-message"),
            (ErrorKind::TimedOut, true, "connect timeout"),
            (ErrorKind::NotConnected, true, "not connected"),
            (
                ErrorKind::InvalidData,
                false,
                "unparsable message from the server",
            ),
            (
                ErrorKind::InvalidInput,
                false,
                "message that cannot be encoded",
            ),
        ];
        for (kind, retryable, what) in table {
            assert_eq!(io_kind_is_transient(*kind), *retryable, "{kind:?} ({what})");
        }
        // tokio-postgres' timeout kind has neither an I/O cause nor a closed
        // connection: like every error that is neither, it is permanent.
        let no_cause = tokio_postgres::Error::__private_api_timeout();
        assert!(!retryable_without_sqlstate(&no_cause));
    }

    #[test]
    fn sqlstate_classification_table() {
        let table: &[(&str, bool, &str)] = &[
            ("08000", true, "connection_exception"),
            ("08003", true, "connection_does_not_exist"),
            ("08006", true, "connection_failure"),
            ("08001", true, "sqlclient_unable_to_establish_sqlconnection"),
            ("08P01", true, "protocol_violation (class 08)"),
            ("40001", true, "serialization_failure"),
            ("40P01", true, "deadlock_detected"),
            ("53000", true, "insufficient_resources"),
            ("53100", true, "disk_full"),
            ("53200", true, "out_of_memory"),
            ("53300", true, "too_many_connections"),
            ("57P01", true, "admin_shutdown"),
            ("57P02", true, "crash_shutdown"),
            ("57P03", true, "cannot_connect_now"),
            ("57014", true, "query_canceled / statement_timeout"),
            ("55P03", true, "lock_not_available"),
            (
                "0A000",
                true,
                "feature_not_supported (cached plan must not change result type)",
            ),
            ("DX001", false, "invalid lock token"),
            ("DX002", false, "lock expired"),
            ("DX003", false, "not found"),
            ("DX004", false, "still running"),
            ("DX005", false, "would orphan a sub-orchestration"),
            ("DX006", false, "maintenance lease not held"),
            ("23505", false, "unique_violation"),
            ("23503", false, "foreign_key_violation"),
            ("23502", false, "not_null_violation"),
            ("22P02", false, "invalid_text_representation"),
            ("22021", false, "character_not_in_repertoire (NUL in text)"),
            ("42P01", false, "undefined_table"),
            ("42883", false, "undefined_function"),
            ("42501", false, "insufficient_privilege"),
            ("P0001", false, "raise_exception"),
            ("XX000", false, "internal_error"),
            (
                "25006",
                true,
                "read_only_sql_transaction (a standby, or a failover under way)",
            ),
            ("25P02", false, "in_failed_sql_transaction"),
        ];
        for (code, retryable, name) in table {
            assert_eq!(
                is_retryable_sqlstate(code),
                *retryable,
                "{code} ({name}) should be {}",
                if *retryable { "retryable" } else { "permanent" }
            );
        }
    }
}
