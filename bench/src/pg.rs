//! The bench's own PostgreSQL connection: environment queries, schema
//! clean-up and `pg_stat_statements`.

use crate::util::Result;
use std::sync::Mutex;
use tokio_postgres::{Client, NoTls};

/// Opens a plain connection (no TLS; `sslmode=prefer` falls back to it).
pub async fn connect(url: &str) -> Result<Client> {
    let (client, connection) = tokio_postgres::connect(url, NoTls).await?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    Ok(client)
}

/// The admin connection plus what the bench learned about the server.
pub struct Admin {
    pub client: Client,
    /// `None` when `pg_stat_statements` works; otherwise why it does not.
    pub pgss_unavailable: Option<String>,
    /// Schemas created by the bench and not dropped yet.
    schemas: Mutex<Vec<String>>,
}

impl Admin {
    pub async fn connect(url: &str) -> Result<Admin> {
        let client = connect(url).await?;
        let pgss_unavailable = match client
            .batch_execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
            .await
        {
            Err(e) => Some(format!("CREATE EXTENSION failed: {}", db_message(&e))),
            Ok(()) => match client
                .query_one("SELECT count(*) FROM pg_stat_statements", &[])
                .await
            {
                Err(e) => Some(format!(
                    "not loaded (needs shared_preload_libraries): {}",
                    db_message(&e)
                )),
                Ok(_) => None,
            },
        };
        Ok(Admin {
            client,
            pgss_unavailable,
            schemas: Mutex::new(Vec::new()),
        })
    }

    pub fn pgss(&self) -> bool {
        self.pgss_unavailable.is_none()
    }

    /// One text value (`SHOW x`, `SELECT version()`).
    pub async fn text(&self, sql: &str) -> Result<String> {
        let row = self.client.query_one(sql, &[]).await?;
        Ok(row.try_get::<_, String>(0)?)
    }

    /// Remembers a schema the bench is about to create (through a provider or
    /// directly), so that it is dropped even if the section fails.
    pub fn track_schema(&self, schema: &str) {
        if let Ok(mut list) = self.schemas.lock() {
            if !list.iter().any(|s| s == schema) {
                list.push(schema.to_string());
            }
        }
    }

    /// `DROP SCHEMA ... CASCADE` (errors are reported, not fatal).
    pub async fn drop_schema(&self, schema: &str) {
        let sql = format!("DROP SCHEMA IF EXISTS \"{schema}\" CASCADE");
        if let Err(e) = self.client.batch_execute(&sql).await {
            eprintln!(
                "warning: could not drop schema {schema}: {}",
                db_message(&e)
            );
            return;
        }
        if let Ok(mut list) = self.schemas.lock() {
            list.retain(|s| s != schema);
        }
    }

    /// Drops every schema still tracked.
    pub async fn drop_all_schemas(&self) {
        let left: Vec<String> = self.schemas.lock().map(|l| l.clone()).unwrap_or_default();
        for schema in left {
            self.drop_schema(&schema).await;
        }
    }

    /// `pg_stat_statements_reset()`; no-op without the extension.
    pub async fn pgss_reset(&self) -> Result<()> {
        if !self.pgss() {
            return Ok(());
        }
        self.client
            .batch_execute("SELECT pg_stat_statements_reset()")
            .await?;
        Ok(())
    }

    /// Calls of statements whose text mentions `schema` since the last reset
    /// (`None` without the extension).
    pub async fn pgss_calls_in_schema(&self, schema: &str) -> Result<Option<i64>> {
        if !self.pgss() {
            return Ok(None);
        }
        let row = self
            .client
            .query_one(
                "SELECT coalesce(sum(calls), 0)::bigint FROM pg_stat_statements \
                 WHERE strpos(query, $1) > 0",
                &[&schema],
            )
            .await?;
        Ok(Some(row.try_get(0)?))
    }

    /// Calls of all statements since the last reset, except the bench's own
    /// monitoring queries (those mention pg_stat_statements).
    pub async fn pgss_calls_all(&self) -> Result<Option<i64>> {
        if !self.pgss() {
            return Ok(None);
        }
        let row = self
            .client
            .query_one(
                "SELECT coalesce(sum(calls), 0)::bigint FROM pg_stat_statements \
                 WHERE strpos(query, 'pg_stat_statements') = 0",
                &[],
            )
            .await?;
        Ok(Some(row.try_get(0)?))
    }

    /// Calls per SQL function of `schema` (the name after `"schema".` in the
    /// statement text; other statements keep a shortened text).
    pub async fn pgss_by_function(&self, schema: &str) -> Result<Vec<(String, i64)>> {
        Ok(self
            .pgss_time_by_function(schema)
            .await?
            .into_iter()
            .map(|f| (f.name, f.calls))
            .collect())
    }

    /// Calls and server execution time per SQL function of `schema`, most
    /// called first (top-level statements: a function's time includes the
    /// statements it runs).
    pub async fn pgss_time_by_function(&self, schema: &str) -> Result<Vec<FunctionTime>> {
        let mut out: Vec<FunctionTime> = Vec::new();
        if !self.pgss() {
            return Ok(out);
        }
        let prefix = format!("\"{schema}\".");
        let rows = self
            .client
            .query(
                "SELECT calls, total_exec_time, regexp_replace(query, '\\s+', ' ', 'g') \
                 FROM pg_stat_statements WHERE strpos(query, $1) > 0 ORDER BY calls DESC",
                &[&schema],
            )
            .await?;
        for row in rows {
            let (calls, ms, query): (i64, f64, String) =
                (row.try_get(0)?, row.try_get(1)?, row.try_get(2)?);
            let name = match query.find(&prefix) {
                Some(i) => {
                    let rest = &query[i + prefix.len()..];
                    let installed = rest
                        .split(|c: char| c == '(' || c.is_whitespace())
                        .next()
                        .unwrap_or(rest);
                    // Functions are installed as `<name>__<set tag>`.
                    match installed.rsplit_once("__") {
                        Some((base, _tag)) => base.to_string(),
                        None => installed.to_string(),
                    }
                }
                None => query.chars().take(60).collect(),
            };
            match out.iter_mut().find(|f| f.name == name) {
                Some(f) => {
                    f.calls += calls;
                    f.exec_ms += ms;
                }
                None => out.push(FunctionTime {
                    name,
                    calls,
                    exec_ms: ms,
                }),
            }
        }
        out.sort_by(|a, b| b.exec_ms.total_cmp(&a.exec_ms));
        Ok(out)
    }

    /// The most called statements mentioning `schema` (for the report).
    pub async fn pgss_top(&self, schema: &str, limit: i64) -> Result<Vec<(i64, String)>> {
        if !self.pgss() {
            return Ok(Vec::new());
        }
        let rows = self
            .client
            .query(
                "SELECT calls, regexp_replace(query, '\\s+', ' ', 'g') FROM pg_stat_statements \
                 WHERE strpos(query, $1) > 0 ORDER BY calls DESC LIMIT $2",
                &[&schema, &limit],
            )
            .await?;
        let mut out = Vec::new();
        for row in rows {
            out.push((row.try_get(0)?, row.try_get(1)?));
        }
        Ok(out)
    }
}

/// One SQL function's calls and server execution time (pg_stat_statements).
#[derive(Debug, Clone)]
pub struct FunctionTime {
    /// The function's name without its set tag.
    pub name: String,
    pub calls: i64,
    /// Total execution time on the server, ms.
    pub exec_ms: f64,
}

/// "function sql/provider=ratio, ..." for the provider methods that were
/// called: SQL function calls (pg_stat_statements) over provider calls
/// (counting wrapper). Method names map to the provider's SQL functions.
pub fn per_method(calls: &crate::counting::Snapshot, by_function: &[(String, i64)]) -> String {
    let sql_name = |method: &str| -> String {
        match method {
            "enqueue_for_orchestrator" => "enqueue_orchestrator",
            "enqueue_for_worker" => "enqueue_worker",
            "read" | "read_with_execution" => "read_history",
            "append_with_execution" => "append_history",
            other => other,
        }
        .to_string()
    };
    let mut parts = Vec::new();
    let mut seen: Vec<String> = Vec::new();
    for method in crate::counting::METHODS {
        if calls.get(method) == 0 || method.starts_with("empty_") {
            continue;
        }
        let f = sql_name(method);
        if seen.contains(&f) {
            continue;
        }
        // Provider calls mapping to the same function are added up.
        let provider_calls: u64 = crate::counting::METHODS
            .iter()
            .filter(|m| !m.starts_with("empty_") && sql_name(m) == f)
            .map(|m| calls.get(m))
            .sum();
        let sql: i64 = by_function
            .iter()
            .filter(|(name, _)| *name == f)
            .map(|(_, c)| *c)
            .sum();
        parts.push(format!(
            "{f} {sql}/{provider_calls}={:.2}",
            sql as f64 / provider_calls.max(1) as f64
        ));
        seen.push(f);
    }
    let others: Vec<String> = by_function
        .iter()
        .filter(|(name, _)| !seen.contains(name))
        .map(|(n, c)| format!("{n}={c}"))
        .collect();
    if !others.is_empty() {
        parts.push(format!("other statements: {}", others.join(" ")));
    }
    parts.join(", ")
}

/// The server's message for a database error, else the error's text.
pub fn db_message(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!("{}: {}", db.code().code(), db.message()),
        None => e.to_string(),
    }
}

/// A schema name unique to this process: `dxb_<what>_<pid>`.
pub fn schema_name(what: &str) -> String {
    format!("dxb_{what}_{}", std::process::id())
}
