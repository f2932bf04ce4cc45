//! Embedded, ordered, checked schema migrations and SQL function files.
//!
//! * Numbered migrations (`sql/migrations/NNNN_name.sql`) hold tables and
//!   indexes. They are applied in order, once, and recorded with a checksum
//!   in `_duroxide_migrations`. A released migration is never edited: start-up
//!   refuses a ledger whose checksums differ from the embedded files, a ledger
//!   with versions this build does not know (a newer build wrote it), or a
//!   ledger with gaps.
//! * Function files (`sql/functions/*.sql`) hold every stored procedure.
//!   They are installed as one versioned set per build (see
//!   `function_set.rs` and docs/decisions/0004): a build creates its own set
//!   when the ledger `_duroxide_function_sets` does not list it, and never
//!   drops or replaces another build's. Sets of other builds are removed
//!   only on request ([`retire_other_function_sets`], `duroxide-postgres
//!   migrate --retire-other-function-sets`).
//! * Table migrations must stay usable by the previous release's functions
//!   (expand now, contract in a later release), since both run against one
//!   schema during a rolling upgrade.
//! * Everything runs in one transaction holding a transaction-level advisory
//!   lock keyed by the schema name, so processes starting together on an
//!   empty database serialize: the first migrates, the rest find it done.
//!   Statements are sent unnamed (`query_typed`, or the simple protocol), so
//!   this runs through a transaction pooler as well: a named statement
//!   could outlive the transaction on a server connection another client
//!   gets next.
//! * Each file is sent one statement per query (`statements.rs`: a Citus
//!   coordinator relays some DDL to its workers as the original query
//!   string). On a Citus coordinator a migration Citus refuses as written
//!   runs in its Citus form and records the released file's checksum
//!   (`citus.rs`).

use crate::citus::{self, Engine};
use crate::error::Error;
use crate::function_set::FunctionSet;
use crate::schema::{hex, SchemaName};
use sha2::{Digest, Sha256};
use tokio_postgres::types::Type;

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
        version: 2,
        name: "request_ids",
        sql: include_str!("../sql/migrations/0002_request_ids.sql"),
    },
    Migration {
        version: 3,
        name: "vacuum_proof_queues",
        sql: include_str!("../sql/migrations/0003_vacuum_proof_queues.sql"),
    },
    Migration {
        version: 4,
        name: "longevity",
        sql: include_str!("../sql/migrations/0004_longevity.sql"),
    },
    Migration {
        version: 5,
        name: "long_lived_segment",
        sql: include_str!("../sql/migrations/0005_long_lived_segment.sql"),
    },
];

/// Tables the provider needs; checked after migrating and in verify-only mode.
const TABLES: &[&str] = &[
    "instances",
    "executions",
    "history",
    "instance_locks",
    "orchestrator_queue",
    "orchestrator_held",
    "worker_queue",
    "sessions",
    "kv_store",
    "kv_delta",
    "request_ids",
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

/// Brings `schema` up to date and installs `functions` (or only verifies
/// both), per `policy`.
pub(crate) async fn run(
    client: &mut tokio_postgres::Client,
    schema: &SchemaName,
    policy: MigrationPolicy,
    functions: &FunctionSet,
) -> Result<(), Error> {
    let tx = client.transaction().await?;
    let q = schema.quoted();
    match policy {
        MigrationPolicy::Apply => {
            lock(&tx, schema).await?;
            execute_each(
                &tx,
                &format!(
                    "CREATE SCHEMA IF NOT EXISTS {q};
                     CREATE TABLE IF NOT EXISTS {q}._duroxide_migrations (
                         version INTEGER PRIMARY KEY, name TEXT NOT NULL, checksum TEXT NOT NULL,
                         applied_at TIMESTAMPTZ NOT NULL DEFAULT now());
                     CREATE TABLE IF NOT EXISTS {q}._duroxide_function_sets (
                         tag TEXT PRIMARY KEY, functions TEXT[] NOT NULL,
                         installed_at TIMESTAMPTZ NOT NULL DEFAULT now());"
                ),
            )
            .await?;
        }
        MigrationPolicy::VerifyOnly => {
            tx.batch_execute("SET TRANSACTION READ ONLY").await?;
            for ledger in ["_duroxide_migrations", "_duroxide_function_sets"] {
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

    // Asked once: migrations and the function set are adapted to Citus.
    let engine = Engine::detect(&tx).await?;

    // 1. Check the migration ledger against the embedded files.
    let rows = tx
        .query_typed(
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
        if let Engine::Citus { version } = &engine {
            tracing::info!(target: "duroxide_postgres", schema = schema.as_str(), citus = version.as_str(),
                "migrating on a Citus coordinator");
        }
        for m in pending {
            let sql = citus::migration_sql(&engine, m.version, m.sql);
            execute_each(&tx, &schema.render(sql)).await.map_err(|e| {
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
            tx.execute_typed(
                &format!("INSERT INTO {q}._duroxide_migrations (version, name, checksum) VALUES ($1, $2, $3)"),
                &[(&m.version, Type::INT4), (&m.name, Type::TEXT), (&checksum(m.sql), Type::TEXT)],
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

    // 3. Functions: install this build's set unless it is there; never
    // touch another build's.
    if !set_installed(&tx, schema, functions).await? {
        if policy == MigrationPolicy::VerifyOnly {
            return Err(schema_error(
                schema,
                format!(
                    "this build's stored procedures (function set {}) are not installed; run \
                     `duroxide-postgres migrate` of this build (or start it once with \
                     MigrationPolicy::Apply) as a role that may create functions",
                    functions.tag()
                ),
            ));
        }
        install_set(&tx, schema, functions).await?;
    }
    // On Citus, also for a set installed before the store moved there
    // (`pg_dump` of a single-server store, then `citus_schema_distribute`);
    // a set already adapted is left as it is.
    if policy == MigrationPolicy::Apply && engine.is_citus() {
        citus::adapt_function_set(&tx, schema.as_str(), &functions.installed_names()).await?;
    }

    tx.commit().await?;
    Ok(())
}

/// Whether the ledger lists `set` and all its functions exist.
async fn set_installed(
    tx: &tokio_postgres::Transaction<'_>,
    schema: &SchemaName,
    set: &FunctionSet,
) -> Result<bool, Error> {
    let names = set.installed_names();
    let row = tx
        .query_typed_one(
            &format!(
                "SELECT EXISTS (SELECT 1 FROM {q}._duroxide_function_sets WHERE tag = $1),
                        (SELECT count(DISTINCT p.proname) FROM pg_proc p
                         JOIN pg_namespace n ON n.oid = p.pronamespace
                         WHERE n.nspname = $2 AND p.proname = ANY ($3))",
                q = schema.quoted()
            ),
            &[
                (&set.tag(), Type::TEXT),
                (&schema.as_str(), Type::TEXT),
                (&names, Type::TEXT_ARRAY),
            ],
        )
        .await?;
    let listed: bool = row.get(0);
    let present: i64 = row.get(1);
    Ok(listed && present == names.len() as i64)
}

/// Creates `set`'s functions (replacing an incomplete earlier attempt of
/// the same set, never anything else) and records it in the ledger.
async fn install_set(
    tx: &tokio_postgres::Transaction<'_>,
    schema: &SchemaName,
    set: &FunctionSet,
) -> Result<(), Error> {
    let names = set.installed_names();
    let partial = tx
        .query_typed(
            "SELECT p.oid::regprocedure::text FROM pg_proc p
             JOIN pg_namespace n ON n.oid = p.pronamespace
             WHERE n.nspname = $1 AND p.proname = ANY ($2)",
            &[(&schema.as_str(), Type::TEXT), (&names, Type::TEXT_ARRAY)],
        )
        .await?;
    for row in partial {
        // regprocedure text is the catalog's own quoted, schema-qualified name.
        let signature: String = row.get(0);
        tx.batch_execute(&format!("DROP FUNCTION {signature}"))
            .await?;
    }
    for (name, sql) in set.rendered(schema) {
        execute_each(tx, &sql).await.map_err(|e| {
            schema_error(
                schema,
                format!(
                    "creating functions of {name}.sql (set {}): {}",
                    set.tag(),
                    crate::error::describe(&e)
                ),
            )
        })?;
    }
    tx.execute_typed(
        &format!(
            "INSERT INTO {q}._duroxide_function_sets (tag, functions) VALUES ($1, $2)
             ON CONFLICT (tag) DO UPDATE SET functions = EXCLUDED.functions,
                 installed_at = EXCLUDED.installed_at",
            q = schema.quoted()
        ),
        &[(&set.tag(), Type::TEXT), (&names, Type::TEXT_ARRAY)],
    )
    .await?;
    tracing::info!(target: "duroxide_postgres", schema = schema.as_str(), set = set.tag(),
        "installed this build's function set");
    Ok(())
}

/// Drops every function of `schema` that is not in `current` (other
/// builds' sets, and the unversioned functions of releases before sets
/// existed) and removes the other sets from the ledger. Returns the
/// signatures dropped. Refuses unless `current` is installed.
pub(crate) async fn retire_other_function_sets(
    client: &mut tokio_postgres::Client,
    schema: &SchemaName,
    current: &FunctionSet,
) -> Result<Vec<String>, Error> {
    let tx = client.transaction().await?;
    lock(&tx, schema).await?;
    if !relation_exists(&tx, schema, "_duroxide_function_sets").await?
        || !set_installed(&tx, schema, current).await?
    {
        return Err(schema_error(
            schema,
            format!(
                "this build's function set {} is not installed; migrate before retiring others",
                current.tag()
            ),
        ));
    }
    let others = tx
        .query_typed(
            "SELECT p.oid::regprocedure::text FROM pg_proc p
             JOIN pg_namespace n ON n.oid = p.pronamespace
             WHERE n.nspname = $1 AND p.prokind = 'f' AND NOT (p.proname = ANY ($2))
             ORDER BY 1",
            &[
                (&schema.as_str(), Type::TEXT),
                (&current.installed_names(), Type::TEXT_ARRAY),
            ],
        )
        .await?;
    let mut dropped = Vec::with_capacity(others.len());
    for row in others {
        let signature: String = row.get(0);
        tx.batch_execute(&format!("DROP FUNCTION {signature}"))
            .await?;
        dropped.push(signature);
    }
    tx.execute_typed(
        &format!(
            "DELETE FROM {q}._duroxide_function_sets WHERE tag <> $1",
            q = schema.quoted()
        ),
        &[(&current.tag(), Type::TEXT)],
    )
    .await?;
    tx.commit().await?;
    Ok(dropped)
}

/// Runs the statements of `sql` in order, one query each (see the module
/// comment).
async fn execute_each(
    tx: &tokio_postgres::Transaction<'_>,
    sql: &str,
) -> Result<(), tokio_postgres::Error> {
    for statement in crate::statements::split(sql) {
        tx.batch_execute(statement).await?;
    }
    Ok(())
}

/// Takes the schema's migration lock until the transaction ends.
async fn lock(tx: &tokio_postgres::Transaction<'_>, schema: &SchemaName) -> Result<(), Error> {
    tx.execute_typed(
        "SELECT pg_advisory_xact_lock($1, hashtext($2))",
        &[
            (&ADVISORY_LOCK_CLASS, Type::INT4),
            (&schema.as_str(), Type::TEXT),
        ],
    )
    .await?;
    Ok(())
}

async fn relation_exists(
    tx: &tokio_postgres::Transaction<'_>,
    schema: &SchemaName,
    table: &str,
) -> Result<bool, Error> {
    let row = tx
        .query_typed_one(
            "SELECT EXISTS (SELECT 1 FROM pg_tables WHERE schemaname = $1 AND tablename = $2)",
            &[(&schema.as_str(), Type::TEXT), (&table, Type::TEXT)],
        )
        .await?;
    Ok(row.get(0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn migrations_are_numbered_from_one_without_gaps() {
        for (i, m) in MIGRATIONS.iter().enumerate() {
            assert_eq!(
                m.version as usize,
                i + 1,
                "migration {} out of order",
                m.name
            );
        }
    }

    #[test]
    fn sql_files_only_reach_the_schema_through_the_placeholder() {
        let functions = crate::function_set::embedded_function_files();
        let citus = crate::citus::Engine::Citus {
            version: String::new(),
        };
        for sql in MIGRATIONS
            .iter()
            .map(|m| crate::citus::migration_sql(&citus, m.version, m.sql))
            .chain(MIGRATIONS.iter().map(|m| m.sql))
            .chain(functions.iter().map(|f| f.1.as_str()))
        {
            assert!(
                !sql.contains("search_path"),
                "SQL must not depend on search_path"
            );
        }
    }
}
