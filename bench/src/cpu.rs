//! CPU accounting from /proc: the whole machine, this process, and the
//! local PostgreSQL server (the postmaster and its children), so that each
//! measurement can say where the CPU went and how much other processes on
//! the machine took meanwhile.

use std::time::Instant;

/// Linux reports process and machine times in USER_HZ ticks (100 per second
/// on every mainstream architecture).
const TICK_MS: f64 = 10.0;

#[derive(Debug, Clone, Copy)]
pub struct Snap {
    at: Instant,
    machine_busy: u64,
    own: u64,
    server: Option<u64>,
    kernel: u64,
}

/// CPU used between two snapshots, in milliseconds.
#[derive(Debug, Clone, Copy, Default)]
pub struct Usage {
    pub wall_ms: f64,
    pub machine_ms: f64,
    pub own_ms: f64,
    /// `None` when the server is not a local process we can see.
    pub server_ms: Option<f64>,
    /// Kernel threads (block I/O, journal, ...) and interrupt handling.
    pub kernel_ms: f64,
}

impl Usage {
    /// CPU of everything but this process, the server and the kernel:
    /// other programs on the machine (and hypervisor steal).
    pub fn other_ms(&self) -> f64 {
        (self.machine_ms - self.own_ms - self.server_ms.unwrap_or(0.0) - self.kernel_ms).max(0.0)
    }

    /// Machine CPU busy, as a share of all cores.
    pub fn busy_pct(&self, cores: usize) -> f64 {
        if self.wall_ms <= 0.0 {
            return 0.0;
        }
        100.0 * self.machine_ms / (self.wall_ms * cores.max(1) as f64)
    }

    /// Other processes' CPU, as a share of all cores.
    pub fn other_pct(&self, cores: usize) -> f64 {
        if self.wall_ms <= 0.0 {
            return 0.0;
        }
        100.0 * self.other_ms() / (self.wall_ms * cores.max(1) as f64)
    }
}

pub fn cores() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
}

/// Busy ticks of the whole machine (all but idle and iowait), and the
/// interrupt ticks (irq + softirq) among them.
fn machine_busy() -> (u64, u64) {
    let Ok(stat) = std::fs::read_to_string("/proc/stat") else {
        return (0, 0);
    };
    let Some(line) = stat.lines().next() else {
        return (0, 0);
    };
    let v: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|x| x.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal ...
    let total: u64 = v.iter().take(8).sum();
    let at = |i: usize| v.get(i).copied().unwrap_or(0);
    (total.saturating_sub(at(3) + at(4)), at(5) + at(6))
}

/// CPU ticks of kernel threads (kthreadd, pid 2, and its children).
fn kthread_ticks() -> u64 {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return 0;
    };
    let mut total = 0;
    for entry in dir.flatten() {
        let name = entry.file_name();
        let Some(pid) = name.to_str().and_then(|n| n.parse::<i64>().ok()) else {
            continue;
        };
        if let Some((ppid, ticks)) = proc_stat(&format!("/proc/{pid}/stat")) {
            if pid == 2 || ppid == 2 {
                total += ticks;
            }
        }
    }
    total
}

/// (ppid, utime + stime) of a /proc/<pid>/stat file.
fn proc_stat(path: &str) -> Option<(i64, u64)> {
    let s = std::fs::read_to_string(path).ok()?;
    // The command name may contain spaces; fields restart after the last ')'.
    let rest = &s[s.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // rest[0] is field 3 (state): ppid is field 4, utime 14, stime 15.
    let ppid = f.get(1)?.parse().ok()?;
    let utime: u64 = f.get(11)?.parse().ok()?;
    let stime: u64 = f.get(12)?.parse().ok()?;
    Some((ppid, utime + stime))
}

/// Ticks of children the process has reaped (cutime + cstime).
fn reaped_children_ticks(path: &str) -> Option<u64> {
    let s = std::fs::read_to_string(path).ok()?;
    let rest = &s[s.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let cutime: u64 = f.get(13)?.parse().ok()?;
    let cstime: u64 = f.get(14)?.parse().ok()?;
    Some(cutime + cstime)
}

/// CPU ticks of the postmaster and all its children, including backends
/// that have exited (the postmaster reaps them, which adds their time to
/// its children's total).
fn server_ticks(postmaster: i64) -> Option<u64> {
    let path = format!("/proc/{postmaster}/stat");
    let (_, own) = proc_stat(&path)?;
    let mut total = own + reaped_children_ticks(&path).unwrap_or(0);
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let name = entry.file_name();
        let Some(pid) = name.to_str().and_then(|n| n.parse::<i64>().ok()) else {
            continue;
        };
        if pid == postmaster {
            continue;
        }
        if let Some((ppid, ticks)) = proc_stat(&format!("/proc/{pid}/stat")) {
            if ppid == postmaster {
                total += ticks;
            }
        }
    }
    Some(total)
}

pub fn snap(postmaster: Option<i64>) -> Snap {
    let (machine_busy, irq) = machine_busy();
    Snap {
        at: Instant::now(),
        machine_busy,
        kernel: irq + kthread_ticks(),
        own: proc_stat("/proc/self/stat").map(|(_, t)| t).unwrap_or(0),
        server: postmaster.and_then(server_ticks),
    }
}

impl Snap {
    pub fn since(&self, earlier: &Snap) -> Usage {
        Usage {
            wall_ms: self.at.duration_since(earlier.at).as_secs_f64() * 1000.0,
            machine_ms: self.machine_busy.saturating_sub(earlier.machine_busy) as f64 * TICK_MS,
            own_ms: self.own.saturating_sub(earlier.own) as f64 * TICK_MS,
            kernel_ms: self.kernel.saturating_sub(earlier.kernel) as f64 * TICK_MS,
            server_ms: match (self.server, earlier.server) {
                (Some(a), Some(b)) => Some(a.saturating_sub(b) as f64 * TICK_MS),
                _ => None,
            },
        }
    }
}

/// The postmaster's pid, when the server runs on this machine: the parent
/// of the admin connection's backend process.
pub async fn find_postmaster(client: &tokio_postgres::Client) -> Option<i64> {
    let row = client
        .query_one("SELECT pg_backend_pid()", &[])
        .await
        .ok()?;
    let backend: i32 = row.try_get(0).ok()?;
    let comm = std::fs::read_to_string(format!("/proc/{backend}/comm")).ok()?;
    if !comm.trim().starts_with("postgres") {
        return None;
    }
    let (ppid, _) = proc_stat(&format!("/proc/{backend}/stat"))?;
    Some(ppid)
}

/// Waits until other programs use less than 10% of the CPU during one
/// `window`, for at most `max`. Returns the time waited when it was more
/// than one window (and whether the machine was quiet in the end).
pub async fn settle(
    postmaster: Option<i64>,
    window: std::time::Duration,
    max: std::time::Duration,
) -> Option<(f64, bool)> {
    let start = Instant::now();
    loop {
        let before = snap(postmaster);
        tokio::time::sleep(window).await;
        let other = snap(postmaster).since(&before).other_pct(cores());
        let waited = start.elapsed();
        if other < 10.0 {
            return (waited > window.mul_f64(1.5)).then_some((waited.as_secs_f64(), true));
        }
        if waited >= max {
            return Some((waited.as_secs_f64(), false));
        }
    }
}
