//! The command line, declared with clap's derive: every subcommand has
//! `--help`, the tool has `--version`, and a wrong argument is named in an
//! error that exits with status 2.

use clap::{Args, CommandFactory, Parser, Subcommand};
use clap_complete::Shell;
use std::process::ExitCode;
use std::time::Duration;

/// Operate a duroxide-postgres store: schema, health, instances, stuck work,
/// writes through duroxide's client, purge, a live terminal view and a web
/// dashboard.
#[derive(Parser, Debug)]
#[command(name = "duroxide-postgres", version, max_term_width = 100)]
#[command(after_help = "Exit status: 0 ok, 1 error (including an unknown instance), 2 usage.")]
pub struct Cli {
    #[command(flatten)]
    pub common: Common,
    #[command(subcommand)]
    pub command: Command,
}

/// Options every command takes, before or after its name.
#[derive(Args, Debug)]
pub struct Common {
    /// PostgreSQL URL (or libpq key=value string); default $DATABASE_URL.
    #[arg(long, global = true, value_name = "URL")]
    pub url: Option<String>,
    /// Schema of the store (default duroxide).
    #[arg(long, global = true, value_name = "NAME")]
    pub schema: Option<String>,
    /// Print JSON instead of a table.
    #[arg(long, global = true)]
    pub json: bool,
    /// The URL is PgBouncer in transaction mode (unnamed statements;
    /// statement_timeout must be set on the role).
    #[arg(long, global = true)]
    pub transaction_pooler: bool,
}

/// The subcommands.
#[derive(Subcommand, Debug)]
pub enum Command {
    /// Create or upgrade the schema.
    Migrate {
        /// Drop the functions of other builds (after a rollout finished).
        #[arg(long = "retire-other-function-sets")]
        retire: bool,
        /// The URL, as an alternative to --url.
        #[arg(value_name = "URL")]
        at: Option<String>,
    },
    /// Check the schema, running no DDL.
    Verify {
        /// The URL, as an alternative to --url.
        #[arg(value_name = "URL")]
        at: Option<String>,
    },
    /// Health: instances, queues, leases, vacuum, tables.
    Status {
        /// Fetch count from which a message counts as a poison candidate.
        #[arg(long, default_value_t = 5, value_name = "N")]
        attempts: u32,
    },
    /// An instance: executions, history timeline, pending work, KV.
    Show {
        /// Instance id.
        id: String,
        /// At most this many history events (the latest).
        #[arg(long, default_value_t = 200, value_name = "N")]
        history: u32,
    },
    /// Instances, newest first, a page at a time (pass the printed cursor
    /// for the next page).
    List(ListArgs),
    /// Work that does not move, and why.
    Stuck {
        /// Listed when claimable for this many seconds.
        #[arg(long, default_value_t = 60, value_name = "SECS")]
        ready_for: u64,
        /// Listed when fetched this many times.
        #[arg(long, default_value_t = 5, value_name = "N")]
        attempts: u32,
        /// At most this many entries.
        #[arg(long, default_value_t = 50, value_name = "N")]
        limit: u32,
    },
    /// Cancel a running instance.
    Cancel {
        /// Instance id.
        id: String,
        /// The reason recorded with the cancellation.
        #[arg(long, value_name = "TEXT")]
        reason: Option<String>,
    },
    /// Raise an external event on an instance.
    Raise {
        /// Instance id.
        id: String,
        /// Event name.
        name: String,
        /// Event data.
        data: String,
    },
    /// Delete an instance (and its sub-orchestrations).
    Delete {
        /// Instance id.
        id: String,
        /// Delete even a running instance.
        #[arg(long)]
        force: bool,
    },
    /// Delete finished root instance trees older than an age, in short
    /// batches; --dry-run only counts.
    Purge(PurgeArgs),
    /// A live terminal view of the store, refreshed until Ctrl-C.
    Top {
        /// Print one sample and exit.
        #[arg(long)]
        once: bool,
        /// Seconds between refreshes.
        #[arg(long, default_value_t = 1, value_name = "SECS",
              value_parser = clap::value_parser!(u64).range(1..))]
        interval: u64,
        /// Fetch count from which a message counts as a poison candidate.
        #[arg(long, default_value_t = 5, value_name = "N")]
        attempts: u32,
    },
    /// The web dashboard (read-only unless --token and --allow-writes).
    Ui(UiArgs),
    /// Print shell completions (bash, zsh, fish, elvish, powershell).
    Completions {
        /// The shell.
        shell: Shell,
    },
}

/// The filters of `list`.
#[derive(Args, Debug)]
pub struct ListArgs {
    /// Statuses, comma-separated: Running, Completed, Failed, ContinuedAsNew.
    #[arg(long, value_name = "S,..")]
    pub status: Option<String>,
    /// Orchestration name.
    #[arg(long, value_name = "NAME")]
    pub name: Option<String>,
    /// Orchestration version (with --name).
    #[arg(long, value_name = "V")]
    pub version: Option<String>,
    /// Created at most this long ago (30d, 12h, 90m, 45s).
    #[arg(long, value_name = "AGE", value_parser = age)]
    pub since: Option<Duration>,
    /// Created at least this long ago.
    #[arg(long, value_name = "AGE", value_parser = age)]
    pub before: Option<Duration>,
    /// Finished at most this long ago.
    #[arg(long, value_name = "AGE", value_parser = age)]
    pub finished_since: Option<Duration>,
    /// Finished at least this long ago.
    #[arg(long, value_name = "AGE", value_parser = age)]
    pub finished_before: Option<Duration>,
    /// Root instances only (no sub-orchestrations).
    #[arg(long)]
    pub roots: bool,
    /// Sub-orchestrations of this instance.
    #[arg(long, value_name = "ID")]
    pub parent: Option<String>,
    /// Instances per page.
    #[arg(long, default_value_t = 50, value_name = "N")]
    pub limit: u32,
    /// The cursor a previous page printed.
    #[arg(long, value_name = "C")]
    pub cursor: Option<String>,
}

/// The options of `purge`.
#[derive(Args, Debug)]
pub struct PurgeArgs {
    /// Trees that finished longer ago than this (30d, 12h, 90m, 45s).
    #[arg(long, value_name = "AGE", value_parser = age)]
    pub older_than: Duration,
    /// completed and/or failed, comma-separated (default both).
    #[arg(long, value_name = "S,..")]
    pub status: Option<String>,
    /// Count only; delete nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Root trees per batch.
    #[arg(long, value_name = "N")]
    pub batch_size: Option<u32>,
    /// Pause between batches, as a fraction of the batch's time.
    #[arg(long, value_name = "F", value_parser = throttle)]
    pub throttle: Option<f64>,
}

/// The options of `ui`.
#[derive(Args, Debug)]
pub struct UiArgs {
    /// Address to listen on (port 0: any free port).
    #[arg(long, default_value = "127.0.0.1:8080", value_name = "ADDR")]
    pub listen: String,
    /// Every request needs this bearer token (or the cookie /login sets).
    #[arg(long, value_name = "T")]
    pub token: Option<String>,
    /// Offer cancel, raise event and delete on instance pages (needs --token).
    #[arg(long)]
    pub allow_writes: bool,
    /// Seconds between the pages' live refreshes.
    #[arg(long, default_value_t = 5, value_name = "SECS")]
    pub refresh: u64,
}

fn age(s: &str) -> Result<Duration, String> {
    crate::parse_age(s).ok_or_else(|| format!("takes an age such as 30d or 12h, not {s:?}"))
}

fn throttle(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(f) if f.is_finite() && f >= 0.0 => Ok(f),
        _ => Err(format!("takes a number >= 0, not {s:?}")),
    }
}

/// Prints a usage error found after parsing (one clap cannot see, such as
/// a missing URL) the way clap prints its own, and returns status 2.
pub fn usage_error(message: String) -> ExitCode {
    let err = Cli::command().error(clap::error::ErrorKind::MissingRequiredArgument, message);
    let _ = err.print();
    ExitCode::from(2)
}

/// Writes the completions of `shell` to stdout.
pub fn print_completions(shell: Shell) {
    let mut command = Cli::command();
    clap_complete::generate(
        shell,
        &mut command,
        "duroxide-postgres",
        &mut std::io::stdout(),
    );
}
