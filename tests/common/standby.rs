//! A primary and a synchronous streaming standby on loopback, made with
//! PostgreSQL's own tools (`initdb`, `pg_basebackup -R`, `pg_ctl`), for the
//! failover test (`tests/failover.rs`) and the benchmark's failover section.
//!
//! The primary runs with `wal_level=replica` and
//! `synchronous_standby_names='*'`, so a commit returns only once the
//! standby has flushed its WAL. Both settings are given on the command
//! line, not in `postgresql.conf`: `pg_basebackup` copies the configuration
//! files, and a promoted standby that also waited for a synchronous standby
//! of its own would hang every commit.
//!
//! Binaries come from `PG_BIN`, else the newest `/usr/lib/postgresql/*/bin`.
//! PostgreSQL refuses to run as root, so when the current user is root the
//! tools run as the `postgres` OS user (`runuser`), which owns the files.
//! Only the standard library and tokio-postgres are used, so the bench can
//! include this file too (`#[path]`).
#![allow(dead_code)]

use std::fs;
use std::net::{Ipv4Addr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// How long [`Pair`] waits for any state (start, streaming, promotion).
const STATE_LIMIT: Duration = Duration::from_secs(60);

/// A primary and its synchronous standby, stopped (`-m immediate`) and
/// deleted on drop.
pub struct Pair {
    dir: PathBuf,
    bin: PathBuf,
    /// Port of the primary (127.0.0.1).
    pub primary_port: u16,
    /// Port of the standby (127.0.0.1).
    pub standby_port: u16,
}

impl Pair {
    /// Initialises and starts the primary, clones the standby from it with
    /// `pg_basebackup -R`, starts it, and returns once the primary reports
    /// it streaming with `sync_state = 'sync'`.
    ///
    /// # Panics
    ///
    /// If a tool fails or a state is not reached within a minute; the
    /// message carries the tool's output or the server log.
    pub async fn start() -> Pair {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        let dir = std::env::temp_dir().join(format!(
            "duroxide-postgres-pair-{}-{nanos}",
            std::process::id()
        ));
        fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("create {}: {e}", dir.display()));
        let pair = Pair {
            bin: bin_dir(),
            primary_port: free_port(),
            standby_port: free_port(),
            dir,
        };
        pair.give_to_server(&pair.dir);
        let primary = pair.data("primary");
        pair.run_ok(
            "initdb",
            &[
                "-D",
                &primary,
                "-U",
                "postgres",
                "--auth=trust",
                "-E",
                "UTF8",
                "--locale=C",
            ],
        );
        pair.start_server("primary", pair.primary_port, true);
        let standby = pair.data("standby");
        let port = pair.primary_port.to_string();
        pair.run_ok(
            "pg_basebackup",
            &[
                "-h",
                "127.0.0.1",
                "-p",
                &port,
                "-U",
                "postgres",
                "-D",
                &standby,
                "-R",
                "-X",
                "stream",
                "-c",
                "fast",
            ],
        );
        pair.start_server("standby", pair.standby_port, false);
        pair.wait_until("the standby streams synchronously", || async {
            let primary = connect(pair.primary_port).await.ok()?;
            let row = primary
                .query_one(
                    "SELECT count(*) FROM pg_stat_replication \
                     WHERE state = 'streaming' AND sync_state = 'sync'",
                    &[],
                )
                .await
                .ok()?;
            (row.get::<_, i64>(0) >= 1).then_some(())
        })
        .await;
        pair
    }

    /// The URL the store connects with: both hosts, primary first, and
    /// `target_session_attrs=read-write`.
    pub fn url(&self) -> String {
        format!(
            "postgres://postgres@127.0.0.1:{},127.0.0.1:{}/postgres?target_session_attrs=read-write",
            self.primary_port, self.standby_port
        )
    }

    /// The primary's own URL.
    pub fn primary_url(&self) -> String {
        format!(
            "postgres://postgres@127.0.0.1:{}/postgres",
            self.primary_port
        )
    }

    /// The standby's own URL.
    pub fn standby_url(&self) -> String {
        format!(
            "postgres://postgres@127.0.0.1:{}/postgres",
            self.standby_port
        )
    }

    /// `pg_ctl stop -m immediate` of the primary: its processes quit at
    /// once, without a checkpoint, as if the machine had died (clients see
    /// their connections drop).
    pub fn kill_primary(&self) {
        let data = self.data("primary");
        self.run_ok(
            "pg_ctl",
            &["stop", "-m", "immediate", "-w", "-t", "60", "-D", &data],
        );
    }

    /// `pg_ctl promote` of the standby, then waits until it answers
    /// `pg_is_in_recovery() = false` (it takes writes).
    pub async fn promote(&self) {
        let data = self.data("standby");
        self.run_ok("pg_ctl", &["promote", "-w", "-t", "60", "-D", &data]);
        self.wait_until("the standby is promoted", || async {
            let standby = connect(self.standby_port).await.ok()?;
            let row = standby
                .query_one("SELECT pg_is_in_recovery()", &[])
                .await
                .ok()?;
            (!row.get::<_, bool>(0)).then_some(())
        })
        .await;
    }

    /// Polls `check` every 20 ms until it answers `Some`.
    async fn wait_until<F, Fut>(&self, what: &str, check: F)
    where
        F: Fn() -> Fut,
        Fut: std::future::Future<Output = Option<()>>,
    {
        let deadline = Instant::now() + STATE_LIMIT;
        while check().await.is_none() {
            assert!(
                Instant::now() < deadline,
                "{what}: not within {STATE_LIMIT:?}\n--- primary log ---\n{}\n--- standby log ---\n{}",
                self.log_tail("primary"),
                self.log_tail("standby")
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn data(&self, name: &str) -> String {
        self.dir.join(name).to_string_lossy().into_owned()
    }

    fn log(&self, name: &str) -> PathBuf {
        self.dir.join(format!("{name}.log"))
    }

    fn log_tail(&self, name: &str) -> String {
        let text = fs::read_to_string(self.log(name)).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }

    /// Starts the cluster `name` on `port`; the primary also with the
    /// settings that make its standby synchronous (see the module docs).
    fn start_server(&self, name: &str, port: u16, primary: bool) {
        let mut options = format!(
            "-c listen_addresses=127.0.0.1 -p {port} -c unix_socket_directories='{}' \
             -c max_connections=300 -c fsync=on -c wal_level=replica -c max_wal_senders=5 \
             -c hot_standby=on -c wal_receiver_status_interval=1s",
            self.dir.display()
        );
        if primary {
            options.push_str(" -c synchronous_standby_names='*' -c synchronous_commit=on");
        }
        let data = self.data(name);
        let log = self.log(name).to_string_lossy().into_owned();
        let out = self.run(
            "pg_ctl",
            &[
                "start", "-w", "-t", "60", "-D", &data, "-l", &log, "-o", &options,
            ],
        );
        assert!(
            out.status.success(),
            "pg_ctl start {name}: {}\n--- log ---\n{}",
            String::from_utf8_lossy(&out.stderr),
            self.log_tail(name)
        );
    }

    fn run_ok(&self, tool: &str, args: &[&str]) {
        let out = self.run(tool, args);
        assert!(
            out.status.success(),
            "{tool} {}: {}\n{}",
            args.join(" "),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Runs a PostgreSQL tool in the pair's directory, as `postgres` when
    /// root. Its output goes to a file, not a pipe: `pg_ctl start` leaves a
    /// postmaster behind that would hold a pipe open.
    fn run(&self, tool: &str, args: &[&str]) -> Output {
        let program = self.bin.join(tool);
        let mut cmd = if is_root() {
            let mut cmd = Command::new("runuser");
            cmd.args(["-u", "postgres", "--"]).arg(&program);
            cmd
        } else {
            Command::new(&program)
        };
        let capture = self.dir.join(format!(".{tool}.out"));
        let file = fs::File::create(&capture).expect("create capture file");
        let status = cmd
            .args(args)
            .current_dir(&self.dir)
            .stdin(Stdio::null())
            .stdout(file.try_clone().expect("clone capture file"))
            .stderr(file)
            .status()
            .unwrap_or_else(|e| panic!("run {}: {e}", program.display()));
        let text = fs::read(&capture).unwrap_or_default();
        let _ = fs::remove_file(&capture);
        Output {
            status,
            stdout: Vec::new(),
            stderr: text,
        }
    }

    fn give_to_server(&self, path: &Path) {
        if is_root() {
            let status = Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(path)
                .status()
                .expect("run chown");
            assert!(status.success(), "chown -R postgres {}", path.display());
        }
    }
}

impl Drop for Pair {
    fn drop(&mut self) {
        for name in ["primary", "standby"] {
            let data = self.data(name);
            if Path::new(&data).join("postmaster.pid").exists() {
                let _ = self.run("pg_ctl", &["stop", "-m", "immediate", "-D", &data]);
            }
        }
        let _ = fs::remove_dir_all(&self.dir);
    }
}

/// A plain connection to 127.0.0.1:`port` (monitoring queries).
pub async fn connect(port: u16) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
    let url = format!("postgres://postgres@127.0.0.1:{port}/postgres?connect_timeout=2");
    let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls).await?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    Ok(client)
}

fn bin_dir() -> PathBuf {
    let has_tools = |dir: &Path| {
        ["postgres", "initdb", "pg_ctl", "pg_basebackup"]
            .iter()
            .all(|tool| dir.join(tool).is_file())
    };
    if let Some(dir) = std::env::var_os("PG_BIN").filter(|d| !d.is_empty()) {
        let dir = PathBuf::from(dir);
        assert!(
            has_tools(&dir),
            "PG_BIN={} lacks postgres, initdb, pg_ctl or pg_basebackup",
            dir.display()
        );
        return dir;
    }
    let mut versioned: Vec<(u32, PathBuf)> = fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let version = entry.file_name().to_string_lossy().parse::<u32>().ok()?;
            let bin = entry.path().join("bin");
            has_tools(&bin).then_some((version, bin))
        })
        .collect();
    versioned.sort();
    versioned
        .pop()
        .map(|(_, bin)| bin)
        .expect("no PostgreSQL binaries in /usr/lib/postgresql/*/bin; set PG_BIN")
}

fn free_port() -> u16 {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("pick a free port")
}

fn is_root() -> bool {
    fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(2).map(|u| u == "0"))
        })
        .unwrap_or(false)
}
