//! `duroxide-postgres`: operate a store from the command line.
//!
//! ```text
//! duroxide-postgres migrate [--schema NAME] [--retire-other-function-sets] [URL]
//!     create or upgrade the schema and install this build's function set;
//!     with --retire-other-function-sets, then drop every other build's
//!     functions (run it once no process of an older build remains)
//! duroxide-postgres verify  [--schema NAME] [URL]   check it, running no DDL
//! ```
//!
//! The URL defaults to `$DATABASE_URL`, the schema to `duroxide`. Exit status
//! 0 on success, 1 on a schema or connection error, 2 on bad usage.

use duroxide_postgres::{MigrationPolicy, PostgresOptions, PostgresProvider, DEFAULT_SCHEMA};
use std::process::ExitCode;

const USAGE: &str = "usage: duroxide-postgres migrate [--schema NAME] [--retire-other-function-sets] [DATABASE_URL]\n       duroxide-postgres verify [--schema NAME] [DATABASE_URL]";

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    let policy = match args.next().as_deref() {
        Some("migrate") => MigrationPolicy::Apply,
        Some("verify") => MigrationPolicy::VerifyOnly,
        _ => return usage(),
    };
    let mut schema = DEFAULT_SCHEMA.to_string();
    let mut url = std::env::var("DATABASE_URL").ok();
    let mut retire = false;
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--retire-other-function-sets" if policy == MigrationPolicy::Apply => retire = true,
            "--schema" => match args.next() {
                Some(s) => schema = s,
                None => return usage(),
            },
            _ if arg.starts_with('-') => return usage(),
            _ => url = Some(arg),
        }
    }
    let Some(url) = url else {
        eprintln!("no database URL: pass one or set DATABASE_URL");
        return usage();
    };

    let options = PostgresOptions::new()
        .schema(&schema)
        .migration_policy(policy)
        .long_poll(false)
        .max_connections(1);
    match PostgresProvider::connect(&url, options).await {
        Ok(store) => {
            if retire {
                match store.retire_other_function_sets().await {
                    Ok(dropped) => {
                        for signature in &dropped {
                            println!("retired {signature}");
                        }
                        println!("{} function(s) of other builds retired", dropped.len());
                    }
                    Err(e) => {
                        eprintln!("error: {e}");
                        return ExitCode::FAILURE;
                    }
                }
            }
            let verb = match policy {
                MigrationPolicy::Apply => "is up to date",
                MigrationPolicy::VerifyOnly => "verified",
            };
            println!(
                "schema {schema} {verb} (migration {:04}, function set {})",
                PostgresProvider::schema_version(),
                store.function_set()
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn usage() -> ExitCode {
    eprintln!("{USAGE}");
    ExitCode::from(2)
}
