//! Embedded, ordered, checked schema migrations and SQL function files.
//!
//! * Numbered migrations (`sql/migrations/NNNN_name.sql`) hold tables and
//!   indexes. They are applied in order, once, and recorded with a checksum
//!   in `_duroxide_migrations`. A released migration is never edited: start-up
//!   refuses a ledger whose checksums differ from the embedded files, a ledger
//!   with versions this build does not know (a newer build wrote it), or a
//!   ledger with gaps.
//! * Function files (`sql/functions/*.sql`) hold every stored procedure. When
//!   the set of checksums recorded in `_duroxide_functions` differs from the
//!   embedded files, all of the schema's functions are dropped and recreated
//!   in the same transaction, so a changed signature never leaves a stale
//!   overload behind.
//! * Everything runs in one transaction holding a transaction-level advisory
//!   lock keyed by the schema name, so processes starting together on an
//!   empty database serialize: the first migrates, the rest find it done.

use crate::error::Error;
use crate::schema::{hex, SchemaName};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;

/// How start-up treats the schema.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum MigrationPolicy {
    /// Create the schema if needed and bring it up to date (the default).
    #[default]
    Apply,
    /// Run no DDL: check that the schema is exactly what this version
    /// expects and fail otherwise. For roles that may use the store but not
    /// change it.
    VerifyOnly,
}

struct Migration {
    version: i32,
    name: &'static str,
    sql: &'static str,
}

const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        name: "initial",
        sql: include_str!("../sql/migrations/0001_initial.sql"),
    },
    Migration {
        version: 5,
        name: "longevity",
        sql: include_str!("../sql/migrations/0005_longevity.sql"),
    },
];

/// Function files in the order they are created (common helpers first).
const FUNCTION_FILES: &[(&str, &str)] = &[
    ("common", include_str!("../sql/functions/common.sql")),
    ("stats", include_str!("../sql/functions/stats.sql")),
    (
        "orchestrator_queue",
        include_str!("../sql/functions/orchestrator_queue.sql"),
    ),
    (
        "worker_queue",
        include_str!("../sql/functions/worker_queue.sql"),
    ),
    ("sessions", include_str!("../sql/functions/sessions.sql")),
    ("history", include_str!("../sql/functions/history.sql")),
    ("kv_status", include_str!("../sql/functions/kv_status.sql")),
    (
        "management",
        include_str!("../sql/functions/management.sql"),
    ),
    ("listing", include_str!("../sql/functions/listing.sql")),
    ("retention", include_str!("../sql/functions/retention.sql")),
];

/// Tables the provider needs; checked after migrating and in verify-only mode.
const TABLES: &[&str] = &[
    "instances",
    "executions",
    "history",
    "instance_locks",
    "orchestrator_queue",
    "worker_queue",
    "sessions",
    "kv_store",
    "kv_delta",
    "stat_totals",
    "stat_deltas",
    "maintenance_leases",
];

/// First key of the start-up advisory lock ("dxpg"); the second is a hash of
/// the schema name, so different schemas migrate in parallel.
const ADVISORY_LOCK_CLASS: i32 = 0x6478_7067;

fn checksum(sql: &str) -> String {
    hex(&Sha256::digest(sql.as_bytes()))
}

fn schema_error(schema: &SchemaName, message: impl Into<String>) -> Error {
    Error::Schema {
        schema: schema.as_str().to_string(),
        message: message.into(),
    }
}

/// The highest migration version this build knows.
pub(crate) fn latest_version() -> i32 {
    MIGRATIONS.last().map_or(0, |m| m.version)
}

/// Brings `schema` up to date (or only verifies it), per `policy`.
pub(crate) async fn run(
    client: &mut tokio_postgres::Client,
    schema: &SchemaName,
    policy: MigrationPolicy,
) -> Result<(), Error> {
    let tx = client.transaction().await?;
    let q = schema.quoted();
    match policy {
        MigrationPolicy::Apply => {
            tx.execute(
                "SELECT pg_advisory_xact_lock($1, hashtext($2))",
                &[&ADVISORY_LOCK_CLASS, &schema.as_str()],
            )
            .await?;
            tx.batch_execute(&format!(
                "CREATE SCHEMA IF NOT EXISTS {q};
                 CREATE TABLE IF NOT EXISTS {q}._duroxide_migrations (
                     version INTEGER PRIMARY KEY, name TEXT NOT NULL, checksum TEXT NOT NULL,
                     applied_at TIMESTAMPTZ NOT NULL DEFAULT now());
                 CREATE TABLE IF NOT EXISTS {q}._duroxide_functions (
                     name TEXT PRIMARY KEY, checksum TEXT NOT NULL,
                     applied_at TIMESTAMPTZ NOT NULL DEFAULT now());"
            ))
            .await?;
        }
        MigrationPolicy::VerifyOnly => {
            tx.batch_execute("SET TRANSACTION READ ONLY").await?;
            for ledger in ["_duroxide_migrations", "_duroxide_functions"] {
                if !relation_exists(&tx, schema, ledger).await? {
                    return Err(schema_error(
                        schema,
                        format!(
                            "{ledger} is missing: the schema was never migrated. Start once with \
                             MigrationPolicy::Apply as a role that may create it"
                        ),
                    ));
                }
            }
        }
    }

    // 1. Check the migration ledger against the embedded files.
    let rows = tx
        .query(
            &format!(
                "SELECT version, name, checksum FROM {q}._duroxide_migrations ORDER BY version"
            ),
            &[],
        )
        .await?;
    let applied: Vec<(i32, String, String)> = rows
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    for (i, (version, name, sum)) in applied.iter().enumerate() {
        let Some(known) = MIGRATIONS.iter().find(|m| m.version == *version) else {
            return Err(schema_error(
                schema,
                format!(
                    "migration {version:04}_{name} was applied by a newer duroxide-postgres \
                     (this build knows up to {:04}); upgrade this process instead of downgrading the store",
                    latest_version()
                ),
            ));
        };
        if MIGRATIONS[i].version != *version {
            return Err(schema_error(
                schema,
                format!("migration ledger has a gap before version {version:04}"),
            ));
        }
        if checksum(known.sql) != *sum {
            return Err(schema_error(
                schema,
                format!(
                    "migration {version:04}_{name} in the database differs from the one this build \
                     embeds (checksum mismatch); released migrations must never be edited"
                ),
            ));
        }
    }

    // 2. Apply what is missing.
    let pending = &MIGRATIONS[applied.len()..];
    if !pending.is_empty() {
        if policy == MigrationPolicy::VerifyOnly {
            return Err(schema_error(
                schema,
                format!(
                    "{} migration(s) pending (up to {:04}); verify-only mode runs no DDL",
                    pending.len(),
                    latest_version()
                ),
            ));
        }
        for m in pending {
            tx.batch_execute(&schema.render(m.sql)).await.map_err(|e| {
                schema_error(
                    schema,
                    format!(
                        "applying migration {:04}_{}: {}",
                        m.version,
                        m.name,
                        crate::error::describe(&e)
                    ),
                )
            })?;
            tx.execute(
                &format!("INSERT INTO {q}._duroxide_migrations (version, name, checksum) VALUES ($1, $2, $3)"),
                &[&m.version, &m.name, &checksum(m.sql)],
            )
            .await?;
        }
    }

    for table in TABLES {
        if !relation_exists(&tx, schema, table).await? {
            return Err(schema_error(
                schema,
                format!("table {table} is missing although the ledger says it was created"),
            ));
        }
    }

    // 3. Functions: recreate all of them when any file changed.
    let rows = tx
        .query(
            &format!("SELECT name, checksum FROM {q}._duroxide_functions"),
            &[],
        )
        .await?;
    let recorded: BTreeMap<String, String> = rows.iter().map(|r| (r.get(0), r.get(1))).collect();
    let expected: BTreeMap<String, String> = FUNCTION_FILES
        .iter()
        .map(|(name, sql)| (name.to_string(), checksum(sql)))
        .collect();
    if recorded != expected {
        if policy == MigrationPolicy::VerifyOnly {
            return Err(schema_error(
                schema,
                "stored procedures differ from this build's; start once with MigrationPolicy::Apply",
            ));
        }
        let existing = tx
            .query(
                "SELECT p.oid::regprocedure::text FROM pg_proc p
                 JOIN pg_namespace n ON n.oid = p.pronamespace WHERE n.nspname = $1",
                &[&schema.as_str()],
            )
            .await?;
        for row in existing {
            // regprocedure text is the catalog's own quoted, schema-qualified name.
            let signature: String = row.get(0);
            tx.batch_execute(&format!("DROP FUNCTION {signature}"))
                .await?;
        }
        tx.execute(&format!("DELETE FROM {q}._duroxide_functions"), &[])
            .await?;
        for (name, sql) in FUNCTION_FILES {
            tx.batch_execute(&schema.render(sql)).await.map_err(|e| {
                schema_error(
                    schema,
                    format!(
                        "creating functions of {name}.sql: {}",
                        crate::error::describe(&e)
                    ),
                )
            })?;
            tx.execute(
                &format!("INSERT INTO {q}._duroxide_functions (name, checksum) VALUES ($1, $2)"),
                &[name, &checksum(sql)],
            )
            .await?;
        }
    }

    tx.commit().await?;
    Ok(())
}

async fn relation_exists(
    tx: &tokio_postgres::Transaction<'_>,
    schema: &SchemaName,
    table: &str,
) -> Result<bool, Error> {
    let row = tx
        .query_one(
            "SELECT EXISTS (SELECT 1 FROM pg_tables WHERE schemaname = $1 AND tablename = $2)",
            &[&schema.as_str(), &table],
        )
        .await?;
    Ok(row.get(0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn migrations_are_numbered_from_one_in_order() {
        // 0002-0004 are developed on other branches; once they are merged the
        // list has no gaps again (the ledger check compares positions, so a
        // gap in this list is harmless either way).
        assert_eq!(MIGRATIONS[0].version, 1);
        for pair in MIGRATIONS.windows(2) {
            assert!(
                pair[1].version > pair[0].version,
                "migration {} out of order",
                pair[1].name
            );
        }
    }

    #[test]
    fn sql_files_only_reach_the_schema_through_the_placeholder() {
        for sql in MIGRATIONS
            .iter()
            .map(|m| m.sql)
            .chain(FUNCTION_FILES.iter().map(|f| f.1))
        {
            assert!(
                !sql.contains("search_path"),
                "SQL must not depend on search_path"
            );
        }
    }
}
