//! Throwaway local PostgreSQL servers for tests and examples.
//!
//! * [`database_url`] returns `DATABASE_URL` when it is set; otherwise it makes
//!   sure that one shared throwaway server is running on this machine (shared by
//!   every test process, started at most once, guarded by a file lock) and
//!   returns its URL.
//! * [`TempServer`] starts a private server in a fresh temporary directory and
//!   stops and deletes it when dropped.
//!
//! Binaries come from `PG_BIN` (a directory), else the newest
//! `/usr/lib/postgresql/*/bin`, else `PATH`. PostgreSQL refuses to run as root,
//! so when the current user is root the server files are owned by, and the
//! server runs as, the `postgres` OS user.
//!
//! Only the standard library is used, so the module can be included from any
//! test (`mod server;`) or example
//! (`#[path = "../tests/common/server.rs"] mod server;`).
#![allow(dead_code)]

use std::fs::{self, File};
use std::io::{Read, Seek, SeekFrom};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Name of the shared server's directory inside [`std::env::temp_dir`].
const SHARED_DIR_NAME: &str = "duroxide-postgres-test-server";

/// How many ports to try when the randomly chosen one is taken meanwhile.
const START_ATTEMPTS: usize = 3;

/// Returns the PostgreSQL URL tests should use.
///
/// If the environment variable `DATABASE_URL` is set and non-empty it is
/// returned unchanged. Otherwise one shared throwaway server (data in
/// `$TMPDIR/duroxide-postgres-test-server`) is reused, or initialised and
/// started, and `postgres://postgres@127.0.0.1:{port}/postgres` is returned.
/// The server keeps running after the process exits so that later test
/// processes can reuse it.
///
/// The result is computed once per process.
///
/// # Panics
///
/// Panics if no server can be started (for example when PostgreSQL is not
/// installed); the message says how to fix it.
pub fn database_url() -> String {
    try_database_url().unwrap_or_else(|msg| panic!("{msg}"))
}

/// As [`database_url`], with the reason instead of a panic when there is no
/// server (for code that must not panic, such as a destructor).
pub fn try_database_url() -> Result<String, String> {
    static URL: OnceLock<Result<String, String>> = OnceLock::new();
    URL.get_or_init(|| match std::env::var("DATABASE_URL") {
        Ok(url) if !url.trim().is_empty() => Ok(url),
        _ => shared_server_url(),
    })
    .clone()
}

/// A private throwaway PostgreSQL server in a fresh temporary directory.
///
/// Unlike [`database_url`], the server is not shared with other processes:
/// it is stopped (`pg_ctl stop -m fast`) and its directory deleted on drop.
pub struct TempServer {
    dir: PathBuf,
    port: u16,
}

impl TempServer {
    /// Initialises and starts a new server on a free port on 127.0.0.1.
    ///
    /// # Panics
    ///
    /// Panics if the server cannot be initialised or started; the message
    /// includes the tail of the server log when there is one.
    pub fn start() -> TempServer {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        let dir = std::env::temp_dir().join(format!(
            "duroxide-postgres-tmp-{}-{nanos}",
            std::process::id()
        ));
        match start_private(&dir) {
            Ok(port) => TempServer { dir, port },
            Err(msg) => {
                let _ = fs::remove_dir_all(&dir);
                panic!("{msg}");
            }
        }
    }

    /// The server's URL: `postgres://postgres@127.0.0.1:{port}/postgres`.
    pub fn url(&self) -> String {
        url_for_port(self.port)
    }

    /// The TCP port the server listens on (127.0.0.1).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The server's own directory (its data directory is `dir()/data`).
    /// Files placed here for the server to read (certificates, say) must be
    /// readable by the user it runs as: see [`give_to_server`].
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Stops the server with `pg_ctl stop -m {mode}` (`smart`, `fast` or
    /// `immediate`) and waits until it is down. The data directory is kept, so
    /// [`restart`](Self::restart) brings the same cluster back.
    ///
    /// # Panics
    ///
    /// Panics if `pg_ctl stop` fails.
    pub fn stop(&self, mode: &str) {
        let result = pg_bin_dir().and_then(|pg| stop_server_with_mode(&pg, &self.dir, mode));
        if let Err(msg) = result {
            panic!("{msg}");
        }
    }

    /// Replaces the server's `pg_hba.conf` with `rules` and reloads the
    /// configuration (`pg_ctl reload`): to make some roles log in with a
    /// password, say. The initial file trusts everyone.
    ///
    /// # Panics
    ///
    /// Panics if the file cannot be written or the reload fails.
    pub fn set_hba(&self, rules: &str) {
        let hba = self.dir.join("data").join("pg_hba.conf");
        fs::write(&hba, rules).unwrap_or_else(|e| panic!("write {}: {e}", hba.display()));
        let data = self.dir.join("data").to_string_lossy().into_owned();
        let out = pg_bin_dir()
            .and_then(|pg| run_pg(&pg, "pg_ctl", &["reload", "-D", &data], &self.dir))
            .unwrap_or_else(|msg| panic!("{msg}"));
        assert!(
            out.status.success(),
            "pg_ctl reload: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Starts the stopped server again on the same port, so that
    /// [`url`](Self::url) stays valid. After an `immediate` stop this runs
    /// crash recovery; it returns once the server accepts connections.
    ///
    /// # Panics
    ///
    /// Panics if the server cannot be started (for example when something
    /// else took the port meanwhile); the message includes the server log.
    pub fn restart(&self) {
        let result = pg_bin_dir().and_then(|pg| start_server_on_port(&pg, &self.dir, self.port));
        if let Err(msg) = result {
            panic!("{msg}");
        }
    }
}

/// Makes `path` owned by the user the server runs as (`postgres` when the
/// tests run as root; otherwise the current user already owns it).
pub fn give_to_server(path: &Path) {
    if is_root() {
        let status = Command::new("chown")
            .arg("postgres:postgres")
            .arg(path)
            .status()
            .expect("run chown");
        assert!(status.success(), "chown postgres {}", path.display());
    }
}

impl Drop for TempServer {
    fn drop(&mut self) {
        if let Ok(pg) = pg_bin_dir() {
            let _ = stop_server(&pg, &self.dir);
        }
        let _ = fs::remove_dir_all(&self.dir);
    }
}

// ---------------------------------------------------------------------------
// Shared and private start-up
// ---------------------------------------------------------------------------

fn url_for_port(port: u16) -> String {
    format!("postgres://postgres@127.0.0.1:{port}/postgres")
}

/// Reuses or starts the machine-wide shared server; returns its URL.
fn shared_server_url() -> Result<String, String> {
    let dir = std::env::temp_dir().join(SHARED_DIR_NAME);
    let pg = pg_bin_dir()?;
    fs::create_dir_all(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;

    // Serialise start-up across processes. The lock is released when `lock`
    // is dropped at the end of this function.
    let lock_path = dir.join("lock");
    let lock = File::options()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&lock_path)
        .map_err(|e| format!("cannot open lock file {}: {e}", lock_path.display()))?;
    lock.lock()
        .map_err(|e| format!("cannot lock {}: {e}", lock_path.display()))?;

    let port_file = dir.join("port");
    let data = dir.join("data");
    let running = data.join("postmaster.pid").exists() && server_running(&pg, &dir);
    if running {
        let port = fs::read_to_string(&port_file)
            .ok()
            .and_then(|s| s.trim().parse::<u16>().ok());
        if let Some(port) = port.filter(|&p| port_accepts(p)) {
            return Ok(url_for_port(port));
        }
        // Running but unreachable or port unknown: restart it cleanly. If it
        // cannot be stopped, abandon its (throwaway) data directory instead.
        if stop_server(&pg, &dir).is_err() {
            discard_data(&dir)?;
        }
    }

    // The server is stopped, so nothing changes under `chown -R`.
    prepare_dir(&dir)?;
    init_cluster(&pg, &dir)?;
    let port = start_server(&pg, &dir)?;
    fs::write(&port_file, format!("{port}\n"))
        .map_err(|e| format!("cannot write {}: {e}", port_file.display()))?;
    drop(lock);
    Ok(url_for_port(port))
}

/// Initialises and starts a server in `dir` (created if missing).
fn start_private(dir: &Path) -> Result<u16, String> {
    let pg = pg_bin_dir()?;
    prepare_dir(dir)?;
    init_cluster(&pg, dir)?;
    start_server(&pg, dir)
}

// ---------------------------------------------------------------------------
// Cluster operations (all take the server directory; data lives in `dir/data`)
// ---------------------------------------------------------------------------

/// Creates `dir` and, when running as root, hands it to the `postgres` user.
fn prepare_dir(dir: &Path) -> Result<(), String> {
    fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    if is_root() {
        let out = Command::new("chown")
            .arg("-R")
            .arg("postgres:postgres")
            .arg(dir)
            .output()
            .map_err(|e| format!("cannot run chown: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "`chown -R postgres:postgres {}` failed (running as root needs a `postgres` \
                 OS user, created by `apt-get install postgresql`): {}",
                dir.display(),
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
    }
    Ok(())
}

/// Makes sure `dir/data` holds a cluster for the installed major version.
///
/// initdb runs into `dir/data.initdb` which is then renamed, so an interrupted
/// initdb never leaves a half-initialised `dir/data` behind.
fn init_cluster(pg: &Path, dir: &Path) -> Result<(), String> {
    let data = dir.join("data");
    if let Ok(existing) = fs::read_to_string(data.join("PG_VERSION")) {
        match server_major_version(pg) {
            Some(major) if major != existing.trim() => {
                // Created by another PostgreSQL version: start over.
                fs::remove_dir_all(&data)
                    .map_err(|e| format!("cannot remove {}: {e}", data.display()))?;
            }
            _ => return Ok(()),
        }
    } else if data.exists() {
        fs::remove_dir_all(&data).map_err(|e| format!("cannot remove {}: {e}", data.display()))?;
    }

    let staging = dir.join("data.initdb");
    let mut last_error = String::new();
    for locale in ["--locale=C.UTF-8", "--locale=C"] {
        if staging.exists() {
            fs::remove_dir_all(&staging)
                .map_err(|e| format!("cannot remove {}: {e}", staging.display()))?;
        }
        let staging_arg = staging.to_string_lossy().into_owned();
        let out = run_pg(
            pg,
            "initdb",
            &[
                "-D",
                &staging_arg,
                "-U",
                "postgres",
                "--auth=trust",
                "-E",
                "UTF8",
                locale,
            ],
            dir,
        )?;
        if out.status.success() {
            fs::rename(&staging, &data).map_err(|e| {
                format!(
                    "cannot rename {} to {}: {e}",
                    staging.display(),
                    data.display()
                )
            })?;
            return Ok(());
        }
        last_error = format!(
            "initdb {locale} failed: {}\n{}",
            String::from_utf8_lossy(&out.stdout).trim(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    let _ = fs::remove_dir_all(&staging);
    Err(last_error)
}

/// Starts the cluster in `dir/data` on a free port; returns the port.
fn start_server(pg: &Path, dir: &Path) -> Result<u16, String> {
    let mut last_error = String::new();
    for _ in 0..START_ATTEMPTS {
        let port = free_port()?;
        match start_server_on_port(pg, dir, port) {
            Ok(()) => return Ok(port),
            Err(msg) => last_error = msg,
        }
        // A half-started postmaster must not keep the data directory locked.
        let _ = stop_server(pg, dir);
    }
    Err(last_error)
}

/// Starts the cluster in `dir/data` on `port` and waits until it accepts
/// connections.
fn start_server_on_port(pg: &Path, dir: &Path, port: u16) -> Result<(), String> {
    let data = dir.join("data").to_string_lossy().into_owned();
    let log = dir.join("server.log");
    let log_arg = log.to_string_lossy().into_owned();
    let options = format!(
        "-c listen_addresses=127.0.0.1 -p {port} -c unix_socket_directories='{}' \
         -c max_connections=500 -c shared_buffers=256MB -c fsync=on \
         -c synchronous_commit=on -c shared_preload_libraries=pg_stat_statements",
        dir.display()
    );
    let log_len = fs::metadata(&log).map(|m| m.len()).unwrap_or(0);
    let out = run_pg(
        pg,
        "pg_ctl",
        &[
            "start", "-w", "-t", "60", "-D", &data, "-l", &log_arg, "-o", &options,
        ],
        dir,
    )?;
    if out.status.success() && port_accepts(port) {
        return Ok(());
    }
    Err(format!(
        "could not start PostgreSQL in {dir} on port {port}.\n\
         pg_ctl output: {stdout}\n{stderr}\n\
         --- tail of {log} ---\n{tail}",
        dir = dir.display(),
        stdout = String::from_utf8_lossy(&out.stdout).trim(),
        stderr = String::from_utf8_lossy(&out.stderr).trim(),
        log = log.display(),
        tail = log_tail(&log, log_len),
    ))
}

/// `pg_ctl stop -m fast` for the cluster in `dir/data` (no-op if not running).
fn stop_server(pg: &Path, dir: &Path) -> Result<(), String> {
    stop_server_with_mode(pg, dir, "fast")
}

/// `pg_ctl stop -m {mode}` for the cluster in `dir/data` (no-op if not running).
fn stop_server_with_mode(pg: &Path, dir: &Path, mode: &str) -> Result<(), String> {
    if !server_running(pg, dir) {
        return Ok(());
    }
    let data = dir.join("data").to_string_lossy().into_owned();
    let out = run_pg(
        pg,
        "pg_ctl",
        &["stop", "-m", mode, "-w", "-t", "60", "-D", &data],
        dir,
    )?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "pg_ctl stop failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// Moves `dir/data` out of the way (then tries to delete it) so that a fresh
/// cluster can be initialised even if a stuck postmaster still claims it.
fn discard_data(dir: &Path) -> Result<(), String> {
    let data = dir.join("data");
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let discarded = dir.join(format!("data.discarded-{nanos}"));
    fs::rename(&data, &discarded).map_err(|e| {
        format!(
            "cannot move stuck cluster {} out of the way: {e}",
            data.display()
        )
    })?;
    let _ = fs::remove_dir_all(&discarded);
    Ok(())
}

/// Whether `pg_ctl status` reports a live postmaster for `dir/data`.
fn server_running(pg: &Path, dir: &Path) -> bool {
    let data = dir.join("data");
    if !data.join("PG_VERSION").exists() {
        return false;
    }
    let data = data.to_string_lossy().into_owned();
    run_pg(pg, "pg_ctl", &["status", "-D", &data], dir)
        .map(|out| out.status.success())
        .unwrap_or(false)
}

/// Major version of the `postgres` binary, e.g. "15" (as in `PG_VERSION`).
fn server_major_version(pg: &Path) -> Option<String> {
    let out = Command::new(pg.join("postgres"))
        .arg("--version")
        .output()
        .ok()?;
    // "postgres (PostgreSQL) 15.8 (Debian 15.8-0+deb12u1)"
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let version = text.split_whitespace().nth(2)?;
    let mut parts = version.split('.');
    let major = parts.next()?;
    // Before PostgreSQL 10 the major version had two components ("9.6").
    if major.parse::<u32>().ok()? < 10 {
        Some(format!("{major}.{}", parts.next()?))
    } else {
        Some(major.to_string())
    }
}

// ---------------------------------------------------------------------------
// Processes, users and binaries
// ---------------------------------------------------------------------------

/// Runs a PostgreSQL tool from `pg` in `cwd`; as the `postgres` user if root.
///
/// Output goes to files rather than pipes: `pg_ctl start` leaves a postmaster
/// behind, and a pipe inherited by it would never reach end-of-file.
fn run_pg(pg: &Path, tool: &str, args: &[&str], cwd: &Path) -> Result<Output, String> {
    let program = pg.join(tool).to_string_lossy().into_owned();
    let mut cmd = if is_root() {
        if let Some(runuser) = find_in_path("runuser") {
            let mut cmd = Command::new(runuser);
            cmd.args(["-u", "postgres", "--", &program]).args(args);
            cmd
        } else {
            let script = std::iter::once(program.as_str())
                .chain(args.iter().copied())
                .map(shell_quote)
                .collect::<Vec<_>>()
                .join(" ");
            let mut cmd = Command::new("su");
            cmd.args(["postgres", "-s", "/bin/sh", "-c", &script]);
            cmd
        }
    } else {
        let mut cmd = Command::new(&program);
        cmd.args(args);
        cmd
    };
    let mut stdout = capture_file("out")?;
    let mut stderr = capture_file("err")?;
    let status = cmd
        .current_dir(cwd)
        .stdin(Stdio::null())
        .stdout(clone_file(&stdout)?)
        .stderr(clone_file(&stderr)?)
        .status()
        .map_err(|e| format!("cannot run {program}: {e}"))?;
    Ok(Output {
        status,
        stdout: read_back(&mut stdout),
        stderr: read_back(&mut stderr),
    })
}

/// An anonymous (created, then unlinked) file for capturing command output.
fn capture_file(suffix: &str) -> Result<File, String> {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let path = std::env::temp_dir().join(format!(
        ".duroxide-pg-cmd-{}-{n}.{suffix}",
        std::process::id()
    ));
    let file = File::options()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(&path)
        .map_err(|e| format!("cannot create {}: {e}", path.display()))?;
    let _ = fs::remove_file(&path);
    Ok(file)
}

fn clone_file(file: &File) -> Result<File, String> {
    file.try_clone()
        .map_err(|e| format!("cannot duplicate file handle: {e}"))
}

fn read_back(file: &mut File) -> Vec<u8> {
    let mut buf = Vec::new();
    let _ = file.seek(SeekFrom::Start(0));
    let _ = file.read_to_end(&mut buf);
    buf
}

fn shell_quote(arg: &str) -> String {
    format!("'{}'", arg.replace('\'', r"'\''"))
}

/// Whether the effective user id is 0, from `/proc/self/status` or `id -u`.
fn is_root() -> bool {
    static ROOT: OnceLock<bool> = OnceLock::new();
    *ROOT.get_or_init(|| {
        if let Ok(status) = fs::read_to_string("/proc/self/status") {
            if let Some(line) = status.lines().find(|l| l.starts_with("Uid:")) {
                // "Uid:\treal\teffective\tsaved\tfs"
                if let Some(euid) = line.split_whitespace().nth(2) {
                    return euid == "0";
                }
            }
        }
        Command::new("id")
            .arg("-u")
            .output()
            .map(|out| String::from_utf8_lossy(&out.stdout).trim() == "0")
            .unwrap_or(false)
    })
}

/// The directory holding `initdb`, `pg_ctl` and `postgres`.
pub fn pg_bin_dir() -> Result<PathBuf, String> {
    static DIR: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    DIR.get_or_init(find_pg_bin_dir).clone()
}

fn find_pg_bin_dir() -> Result<PathBuf, String> {
    const HELP: &str = "install PostgreSQL (`apt-get install postgresql`), \
                        set PG_BIN to its bin directory, or set DATABASE_URL to an existing server";
    let has_tools = |dir: &Path| {
        ["postgres", "initdb", "pg_ctl"]
            .iter()
            .all(|tool| dir.join(tool).is_file())
    };

    if let Some(dir) = std::env::var_os("PG_BIN").filter(|d| !d.is_empty()) {
        let dir = PathBuf::from(dir);
        return if has_tools(&dir) {
            Ok(dir)
        } else {
            Err(format!(
                "PG_BIN={} does not contain postgres, initdb and pg_ctl; {HELP}",
                dir.display()
            ))
        };
    }

    // Debian/Ubuntu layout: /usr/lib/postgresql/<version>/bin, newest first.
    let mut versioned: Vec<(Vec<u32>, PathBuf)> = fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let name = entry.file_name().to_string_lossy().into_owned();
            let version = name
                .split('.')
                .map(|part| part.parse::<u32>().ok())
                .collect::<Option<Vec<u32>>>()?;
            let bin = entry.path().join("bin");
            has_tools(&bin).then_some((version, bin))
        })
        .collect();
    versioned.sort();
    if let Some((_, bin)) = versioned.pop() {
        return Ok(bin);
    }

    // Anything on PATH that has all three tools.
    std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .find(|dir| has_tools(dir))
        .ok_or_else(|| format!("no PostgreSQL server binaries found; {HELP}"))
}

/// An external program a test needs: the path in the environment variable
/// `env` when that is set, else the first of `candidates` that exists, else
/// `name` on `PATH`. Looked up before anything slow is started, so that a
/// missing program fails a test at once; the error says how to install it
/// (`install`, a command such as `apt-get install openssl`).
pub fn find_program(
    name: &str,
    env: &str,
    candidates: &[&str],
    install: &str,
) -> Result<PathBuf, String> {
    if let Some(path) = std::env::var_os(env).filter(|p| !p.is_empty()) {
        let path = PathBuf::from(path);
        return if is_executable(&path) {
            Ok(path)
        } else {
            Err(format!(
                "{env}={} is not an executable file: install {name} (`{install}`) \
                 or set {env} to its path",
                path.display()
            ))
        };
    }
    candidates
        .iter()
        .map(PathBuf::from)
        .find(|path| is_executable(path))
        .or_else(|| find_in_path(name).filter(|path| is_executable(path)))
        .ok_or_else(|| {
            format!(
                "{name} not found{}or on PATH: install it (`{install}`) or set {env} to its path",
                if candidates.is_empty() {
                    " ".to_string()
                } else {
                    format!(" at {} ", candidates.join(", "))
                }
            )
        })
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

fn find_in_path(program: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .map(|dir| dir.join(program))
        .find(|path| path.is_file())
}

// ---------------------------------------------------------------------------
// Network and log helpers
// ---------------------------------------------------------------------------

/// A port that was free a moment ago (bind to port 0, read it, release it).
fn free_port() -> Result<u16, String> {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .map_err(|e| format!("cannot bind 127.0.0.1:0 to pick a port: {e}"))?;
    listener
        .local_addr()
        .map(|addr| addr.port())
        .map_err(|e| format!("cannot read local port: {e}"))
}

/// Whether something accepts TCP connections on 127.0.0.1:`port`.
fn port_accepts(port: u16) -> bool {
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    TcpStream::connect_timeout(&addr, Duration::from_secs(2)).is_ok()
}

/// The last lines of the server log written since byte offset `from`
/// (or of the whole log when it was rotated or truncated).
fn log_tail(log: &Path, from: u64) -> String {
    let Ok(bytes) = fs::read(log) else {
        return "(no server log)".to_string();
    };
    let start = if (from as usize) <= bytes.len() {
        from as usize
    } else {
        0
    };
    let text = String::from_utf8_lossy(&bytes[start..]);
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(40)..].join("\n")
}
