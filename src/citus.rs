//! The one place that tells a Citus coordinator from plain PostgreSQL
//! (docs/decisions/0013, docs/scale-out.md "Citus").
//!
//! A store on Citus with schema-based sharding is the same store: the same
//! tables, functions and ledger, its schema placed on one worker node. Only
//! the installer needs to know, because Citus refuses one statement of a
//! released migration (see [`migration_sql`]); every other difference is
//! handled for both engines alike (one statement per query,
//! `statements.rs`).

use crate::error::Error;

/// What the store's database is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Engine {
    /// PostgreSQL without the Citus extension (or with it, but a database
    /// where it is not created).
    Postgres,
    /// A database with the Citus extension, at this version.
    Citus { version: String },
}

impl Engine {
    /// Asks the connected database once, at start-up.
    pub(crate) async fn detect(client: &tokio_postgres::Transaction<'_>) -> Result<Engine, Error> {
        let row = client
            .query_typed_opt(
                "SELECT extversion FROM pg_extension WHERE extname = 'citus'",
                &[],
            )
            .await?;
        Ok(match row {
            Some(row) => Engine::Citus {
                version: row.get(0),
            },
            None => Engine::Postgres,
        })
    }

    pub(crate) fn is_citus(&self) -> bool {
        matches!(self, Engine::Citus { .. })
    }
}

/// Adapts a freshly installed function set to a Citus coordinator, where
/// the coordinator plans each statement of a function and routes it to the
/// node of the schema. Two kinds of function cannot be planned there as
/// written (both SQLSTATE 0A000), so they are altered in the catalog (the
/// SQL files stay as they are):
///
/// * Set-returning SQL functions that PostgreSQL would inline into the
///   calling query (`LANGUAGE sql`, one `SELECT`, not `VOLATILE`) become
///   volatile, which PostgreSQL never inlines. The coordinator decides
///   whether a query needs distributed planning before the inlining, so
///   `SELECT * FROM get_queue_depths()` with its body pulled in fails
///   ("parameterized queries for SQL functions referencing distributed
///   tables are not supported"); run as a function, its statements are
///   planned one by one. The only difference: each statement of such a
///   function takes a fresh snapshot instead of sharing the caller's, which
///   a function called as a statement of its own cannot tell apart.
/// * Functions that force generic plans (`SET plan_cache_mode =
///   force_generic_plan`, chosen on PostgreSQL to save re-planning) force
///   custom plans instead: Citus cannot plan an `INSERT … SELECT` whose
///   parameters are unknown ("could not create distributed plan"), and with
///   the values known it routes the statement to one node.
pub(crate) async fn adapt_function_set(
    tx: &tokio_postgres::Transaction<'_>,
    schema: &str,
    names: &[String],
) -> Result<(), Error> {
    let rows = tx
        .query_typed(
            "SELECT p.oid::regprocedure::text,
                    l.lanname = 'sql' AND p.proretset AND p.provolatile <> 'v',
                    'plan_cache_mode=force_generic_plan' = ANY (coalesce(p.proconfig, '{}'))
             FROM pg_proc p
             JOIN pg_namespace n ON n.oid = p.pronamespace
             JOIN pg_language l ON l.oid = p.prolang
             WHERE n.nspname = $1 AND p.proname = ANY ($2)",
            &[
                (&schema, tokio_postgres::types::Type::TEXT),
                (&names, tokio_postgres::types::Type::TEXT_ARRAY),
            ],
        )
        .await?;
    for row in rows {
        // regprocedure text is the catalog's own quoted, qualified name.
        let signature: String = row.get(0);
        if row.get::<_, bool>(1) {
            tx.batch_execute(&format!("ALTER FUNCTION {signature} VOLATILE"))
                .await?;
        }
        if row.get::<_, bool>(2) {
            tx.batch_execute(&format!(
                "ALTER FUNCTION {signature} SET plan_cache_mode = force_custom_plan"
            ))
            .await?;
        }
    }
    Ok(())
}

/// Citus's form of migration 0003. Citus refuses `ALTER SEQUENCE … OWNED
/// BY` on a sequence owned by a distributed table (SQLSTATE 0A000), which
/// every table of a distributed schema is. 0003 used it to keep the queue
/// id sequences across the rebuild of the two queue tables. The variant
/// instead renames the old sequence aside, lets the new table create the
/// sequence of the same name as `BIGSERIAL` (owned by the new `id` column,
/// with the same default), continues it from the old one, and drops the old
/// one with its table. The end state is the same as 0003's; the ledger
/// records 0003's own checksum, since it is the same migration.
const CITUS_0003: &str = include_str!("../sql/migrations/citus/0003_vacuum_proof_queues.sql");

/// The SQL to run for migration `version` whose file is `sql`, on `engine`.
pub(crate) fn migration_sql(engine: &Engine, version: i32, sql: &'static str) -> &'static str {
    match (engine, version) {
        (Engine::Citus { .. }, 3) => CITUS_0003,
        _ => sql,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::statements::split;

    /// The Citus form differs from 0003 only in how the queue sequences
    /// are carried over: every other statement is the same, in the same
    /// order.
    #[test]
    fn citus_0003_is_0003_but_for_the_sequences() {
        let plain = include_str!("../sql/migrations/0003_vacuum_proof_queues.sql");
        let original: Vec<String> = split(plain)
            .into_iter()
            .filter(|s| !s.contains(" OWNED BY "))
            .map(|s| {
                let mut s = s.to_string();
                for q in ["orchestrator_queue", "worker_queue"] {
                    s = s.replace(
                        &format!("BIGINT NOT NULL DEFAULT nextval('__SCHEMA__.{q}_id_seq')"),
                        "BIGSERIAL",
                    );
                }
                strip_comments(&s)
            })
            .collect();
        let variant: Vec<String> = split(CITUS_0003)
            .into_iter()
            .filter(|s| !s.contains("_0001_id_seq"))
            .map(strip_comments)
            .collect();
        assert_eq!(original, variant);
        assert_eq!(
            migration_sql(
                &Engine::Citus {
                    version: "13.2-1".into()
                },
                3,
                plain
            ),
            CITUS_0003
        );
        assert_eq!(migration_sql(&Engine::Postgres, 3, plain), plain);
        assert_eq!(
            migration_sql(
                &Engine::Citus {
                    version: "13.2-1".into()
                },
                4,
                "x"
            ),
            "x"
        );
    }

    fn strip_comments(s: &str) -> String {
        s.lines()
            .filter(|l| !l.trim_start().starts_with("--"))
            .map(|l| l.split(" -- ").next().unwrap_or(l).trim_end())
            .collect::<Vec<_>>()
            .join("\n")
    }
}
