//! A throwaway PgBouncer (transaction pooling) in front of a PostgreSQL
//! server, stopped when dropped.
//!
//! Binary: `PGBOUNCER` (a path), else `/usr/sbin/pgbouncer` (Debian's
//! package), else `pgbouncer` on `PATH`; looked up before anything is
//! started, so that without it a test fails at once with the install hint.
//! PgBouncer refuses to run as root, so when the tests run as root it runs
//! as the `postgres` OS user, like the test server.
//!
//! Included next to `common` (it uses `common::server::find_program`).
#![allow(dead_code)]

use std::fs;
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Users PgBouncer lets in (`auth_type = trust` still needs them listed):
/// the test server's superuser and the role of the statement-timeout test.
pub const USERS: &[&str] = &["postgres", "dxpg_pgbouncer_timeout"];

/// The database alias whose pool has a single server connection: every
/// client's statements run on it, so what a client leaves in its session
/// (a named prepared statement) is visible to the next.
pub const SINGLE: &str = "single";

/// A running PgBouncer in transaction mode.
pub struct PgBouncer {
    child: Child,
    dir: PathBuf,
    port: u16,
}

impl PgBouncer {
    /// Starts PgBouncer on a free port of 127.0.0.1 in front of the server
    /// at 127.0.0.1:`server_port`. Every database name maps to the server's
    /// database of the same name (pool of up to 40 server connections per
    /// user), except [`SINGLE`], which maps to `postgres` with a pool of one.
    ///
    /// The error says how to install PgBouncer when it is missing, or holds
    /// its log when it did not come up.
    pub fn try_start(server_port: u16) -> Result<PgBouncer, String> {
        let binary = binary()?;
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        let dir = std::env::temp_dir().join(format!(
            "duroxide-postgres-pgbouncer-{}-{nanos}",
            std::process::id()
        ));
        fs::create_dir_all(&dir).expect("create the PgBouncer directory");
        let port = free_port();
        let userlist: String = USERS.iter().map(|u| format!("\"{u}\" \"\"\n")).collect();
        fs::write(dir.join("userlist.txt"), userlist).expect("write userlist.txt");
        let d = dir.display();
        let ini = format!(
            "[databases]\n\
             {SINGLE} = host=127.0.0.1 port={server_port} dbname=postgres pool_size=1\n\
             * = host=127.0.0.1 port={server_port}\n\
             [pgbouncer]\n\
             listen_addr = 127.0.0.1\n\
             listen_port = {port}\n\
             unix_socket_dir =\n\
             auth_type = trust\n\
             auth_file = {d}/userlist.txt\n\
             pool_mode = transaction\n\
             max_client_conn = 2000\n\
             default_pool_size = 40\n\
             logfile = {d}/pgbouncer.log\n\
             pidfile = {d}/pgbouncer.pid\n"
        );
        fs::write(dir.join("pgbouncer.ini"), ini).expect("write pgbouncer.ini");

        // A shell that stops PgBouncer when its stdin reaches end-of-file:
        // when this is dropped, or when the test process exits without
        // dropping it (a PgBouncer shared by the tests of a binary lives in
        // a static, and statics are never dropped).
        let mut cmd = Command::new("sh");
        cmd.arg("-c")
            .arg(r#""$0" "$1" & pid=$!; read -r _; kill "$pid"; wait "$pid""#)
            .arg(&binary)
            .arg(dir.join("pgbouncer.ini"))
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        if let Some((uid, gid)) = postgres_user_when_root() {
            let status = Command::new("chown")
                .arg("-R")
                .arg(format!("{uid}:{gid}"))
                .arg(&dir)
                .status()
                .expect("run chown");
            assert!(status.success(), "chown {}", dir.display());
            cmd.uid(uid).gid(gid);
        }
        let child = cmd
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", binary.display()))?;
        let bouncer = PgBouncer { child, dir, port };
        let started = Instant::now();
        while !port_accepts(port) {
            if started.elapsed() > Duration::from_secs(20) {
                return Err(format!(
                    "PgBouncer ({}) did not come up:\n{}",
                    binary.display(),
                    bouncer.log()
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(bouncer)
    }

    /// `postgres://{user}@127.0.0.1:{port}/{database}` through PgBouncer.
    pub fn url(&self, user: &str, database: &str) -> String {
        format!("postgres://{user}@127.0.0.1:{}/{database}", self.port)
    }

    /// PgBouncer's log so far.
    pub fn log(&self) -> String {
        fs::read_to_string(self.dir.join("pgbouncer.log")).unwrap_or_default()
    }
}

impl Drop for PgBouncer {
    fn drop(&mut self) {
        // End-of-file on the shell's stdin stops PgBouncer.
        drop(self.child.stdin.take());
        let _ = self.child.wait();
        let _ = fs::remove_dir_all(&self.dir);
    }
}

/// The PgBouncer binary, or how to install it.
pub fn binary() -> Result<PathBuf, String> {
    crate::common::server::find_program(
        "pgbouncer",
        "PGBOUNCER",
        &["/usr/sbin/pgbouncer"],
        "apt-get install pgbouncer",
    )
}

/// The uid and gid of the `postgres` OS user when running as root.
fn postgres_user_when_root() -> Option<(u32, u32)> {
    let id = |flag: &str, user: Option<&str>| -> u32 {
        let out = Command::new("id")
            .arg(flag)
            .args(user)
            .output()
            .expect("run id");
        String::from_utf8_lossy(&out.stdout)
            .trim()
            .parse()
            .expect("numeric id")
    };
    (id("-u", None) == 0).then(|| (id("-u", Some("postgres")), id("-g", Some("postgres"))))
}

fn free_port() -> u16 {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("pick a free port")
}

fn port_accepts(port: u16) -> bool {
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    TcpStream::connect_timeout(&addr, Duration::from_secs(1)).is_ok()
}
