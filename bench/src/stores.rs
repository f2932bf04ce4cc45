//! Fresh stores for each measurement: a new PostgreSQL schema or a new
//! SQLite file in the bench's temporary directory.

use crate::util::Result;
use crate::Ctx;
use duroxide::providers::sqlite::SqliteProvider;
use duroxide::providers::Provider;
use duroxide_postgres::{PostgresOptions, PostgresProvider};
use std::path::PathBuf;
use std::sync::Arc;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Postgres,
    Sqlite,
}

impl Kind {
    pub const BOTH: [Kind; 2] = [Kind::Postgres, Kind::Sqlite];

    pub fn label(self) -> &'static str {
        match self {
            Kind::Postgres => "postgres",
            Kind::Sqlite => "sqlite",
        }
    }

    fn short(self) -> &'static str {
        match self {
            Kind::Postgres => "pg",
            Kind::Sqlite => "sq",
        }
    }
}

/// One fresh store. Call [`Store::cleanup`] when done (drops the schema or
/// deletes the file); the provider must have been dropped by then.
pub struct Store {
    pub kind: Kind,
    pub provider: Arc<dyn Provider>,
    /// PostgreSQL: the schema.
    pub schema: Option<String>,
    /// SQLite: the database file.
    pub file: Option<PathBuf>,
}

impl Store {
    /// A fresh store named after `tag` (unique per process and call site).
    pub async fn create(ctx: &Ctx, kind: Kind, tag: &str) -> Result<Store> {
        let name = format!("{tag}_{}", kind.short());
        match kind {
            Kind::Postgres => {
                let schema = crate::pg::schema_name(&name);
                // Start clean if a previous run with the same pid left it.
                ctx.admin.drop_schema(&schema).await;
                ctx.admin.track_schema(&schema);
                let provider = PostgresProvider::connect(
                    &ctx.url,
                    PostgresOptions::new()
                        .schema(schema.as_str())
                        .application_name("duroxide-postgres-bench"),
                )
                .await?;
                Ok(Store {
                    kind,
                    provider: Arc::new(provider),
                    schema: Some(schema),
                    file: None,
                })
            }
            Kind::Sqlite => {
                let path = ctx.tmpdir.join(format!("{name}.db"));
                remove_sqlite_files(&path);
                std::fs::File::create(&path)?;
                let url = format!("sqlite:{}", path.display());
                let provider = SqliteProvider::new(&url, None).await?;
                Ok(Store {
                    kind,
                    provider: Arc::new(provider),
                    schema: None,
                    file: Some(path),
                })
            }
        }
    }

    /// Drops the schema / deletes the SQLite files. Takes the store by value
    /// so the caller's provider handle is gone; other clones (a runtime that
    /// was shut down) should be dropped first.
    pub async fn cleanup(self, ctx: &Ctx) {
        let Store {
            provider,
            schema,
            file,
            ..
        } = self;
        drop(provider);
        // Give pooled connections a moment to close.
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        if let Some(schema) = schema {
            ctx.admin.drop_schema(&schema).await;
        }
        if let Some(path) = file {
            remove_sqlite_files(&path);
        }
    }
}

fn remove_sqlite_files(path: &std::path::Path) {
    let _ = std::fs::remove_file(path);
    for suffix in ["-wal", "-shm", "-journal"] {
        let mut p = path.as_os_str().to_owned();
        p.push(suffix);
        let _ = std::fs::remove_file(PathBuf::from(p));
    }
}
