//! Section "remote": the database across a network. A TCP proxy on
//! loopback, inside this process, delays each direction of every
//! connection by a one-way latency; the turns, stress and latency
//! measurements of sections 1–3 run through it at 0.5 ms and 2.5 ms one
//! way (1 ms and 5 ms round trip), next to the direct run. The proxy also
//! counts round trips: how often a connection's client sends after it has
//! received (see [`Proxy`]), per provider call and per orchestration.
//!
//! Only a loopback server is proxied (DATABASE_URL pointing elsewhere skips
//! the section): the delay is the proxy's, not a real network's.

use crate::counting::Counting;
use crate::stores::{Kind, Store};
use crate::turns::Queue;
use crate::util::{err, fmt_ms, fmt_num, heading, ms, verdict, Result, Samples, Table};
use crate::Ctx;
use duroxide::runtime::Runtime;
use duroxide::{Client, OrchestrationStatus, RuntimeOptions};
use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

/// One-way delays measured next to the direct run.
const DELAYS_US: [u64; 2] = [500, 2_500];

/// What the proxy counted (cumulative; subtract two snapshots).
#[derive(Debug, Default, Clone, Copy)]
pub struct Counted {
    /// Turnarounds: the client sent after the server had sent it something.
    pub round_trips: u64,
    /// Of those, the ones that began with an extended-protocol message
    /// (Parse, Bind, Describe, Execute, Sync: the provider's calls) and with a
    /// simple query (`Q`: LISTEN, NOTIFY, `batch_execute`); the rest are
    /// connection start-up and authentication.
    pub extended: u64,
    pub simple: u64,
    /// Connections accepted.
    pub connections: u64,
    /// Chunks delivered (both directions).
    pub chunks: u64,
    /// Sum and maximum of how late chunks were delivered past their due
    /// time (the sleep's overshoot), in microseconds.
    pub late_us_sum: u64,
    pub late_us_max: u64,
}

impl Counted {
    fn since(&self, earlier: &Counted) -> Counted {
        Counted {
            round_trips: self.round_trips - earlier.round_trips,
            extended: self.extended - earlier.extended,
            simple: self.simple - earlier.simple,
            connections: self.connections - earlier.connections,
            chunks: self.chunks - earlier.chunks,
            late_us_sum: self.late_us_sum - earlier.late_us_sum,
            late_us_max: self.late_us_max,
        }
    }
}

#[derive(Default)]
struct Stats {
    round_trips: AtomicU64,
    extended: AtomicU64,
    simple: AtomicU64,
    connections: AtomicU64,
    chunks: AtomicU64,
    late_us_sum: AtomicU64,
    late_us_max: AtomicU64,
}

/// A loopback TCP proxy to `upstream` that delays each direction by a
/// fixed one-way latency, in order.
///
/// Each direction of each connection is two OS threads: one reads chunks
/// as they come and queues each with its due time (arrival + delay), the
/// other delivers them in queue order, sleeping only until the head's due
/// time. So chunks are never reordered, and a burst is delayed once, not
/// once per chunk. OS threads rather than tokio tasks: tokio's timer has
/// a 1 ms granularity, which would round 0.5 ms up to 1 ms;
/// `std::thread::sleep` overshoots by tens of microseconds (the lateness
/// is measured and printed).
///
/// Round trips are counted per connection as turnarounds: each time the
/// client sends after the server's last delivery to it (the client waited
/// for a reply, or at least could have). A pipelined batch of messages
/// sent without waiting (Parse/Bind/Execute/Sync) is one; a connection's
/// start-up (TLS request, start-up, authentication, parameter status) is a
/// few; a NOTIFY delivered to the listener and followed later by its own
/// NOTIFY counts one too. Each turnaround is classed by the type byte of
/// the message that starts it: extended protocol (the provider's calls),
/// simple query (the LISTEN connection's LISTEN and NOTIFY), or other
/// (start-up, authentication).
pub struct Proxy {
    /// The port the proxy listens on (127.0.0.1).
    pub port: u16,
    stats: Arc<Stats>,
    stop: Arc<AtomicBool>,
}

const CLIENT_SENT: u8 = 1;
const SERVER_SENT: u8 = 2;

impl Proxy {
    /// Listens on a free loopback port and forwards to `upstream`.
    pub fn start(upstream: SocketAddr, one_way: Duration) -> std::io::Result<Proxy> {
        let listener = TcpListener::bind(("127.0.0.1", 0))?;
        let port = listener.local_addr()?.port();
        let stats = Arc::new(Stats::default());
        let stop = Arc::new(AtomicBool::new(false));
        let (s, st) = (stats.clone(), stop.clone());
        std::thread::Builder::new()
            .name("proxy-accept".into())
            .spawn(move || {
                for client in listener.incoming() {
                    if st.load(Ordering::SeqCst) {
                        break;
                    }
                    let Ok(client) = client else { continue };
                    let Ok(server) = TcpStream::connect(upstream) else {
                        continue;
                    };
                    s.connections.fetch_add(1, Ordering::Relaxed);
                    let _ = client.set_nodelay(true);
                    let _ = server.set_nodelay(true);
                    let last = Arc::new(AtomicU8::new(SERVER_SENT));
                    let (c2, s2) = match (client.try_clone(), server.try_clone()) {
                        (Ok(c), Ok(sv)) => (c, sv),
                        _ => continue,
                    };
                    pump(client, server, one_way, true, last.clone(), s.clone());
                    pump(s2, c2, one_way, false, last, s.clone());
                }
            })?;
        Ok(Proxy { port, stats, stop })
    }

    /// The counts so far.
    pub fn counted(&self) -> Counted {
        let s = &self.stats;
        Counted {
            round_trips: s.round_trips.load(Ordering::SeqCst),
            extended: s.extended.load(Ordering::SeqCst),
            simple: s.simple.load(Ordering::SeqCst),
            connections: s.connections.load(Ordering::SeqCst),
            chunks: s.chunks.load(Ordering::SeqCst),
            late_us_sum: s.late_us_sum.load(Ordering::SeqCst),
            late_us_max: s.late_us_max.load(Ordering::SeqCst),
        }
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wakes the accept loop so that it sees the flag.
        let _ = TcpStream::connect(("127.0.0.1", self.port));
    }
}

/// One direction: `from` → `to`, each chunk delivered `delay` after it was
/// read. `client_side` is the client → server direction, where
/// turnarounds are counted.
fn pump(
    mut from: TcpStream,
    mut to: TcpStream,
    delay: Duration,
    client_side: bool,
    last: Arc<AtomicU8>,
    stats: Arc<Stats>,
) {
    let (tx, rx) = mpsc::channel::<(Instant, Vec<u8>)>();
    let reader_last = last.clone();
    let reader_stats = stats.clone();
    let _ = std::thread::Builder::new()
        .name("proxy-read".into())
        .spawn(move || {
            let mut buf = vec![0u8; 64 * 1024];
            loop {
                let n = match from.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => n,
                };
                let due = Instant::now() + delay;
                if client_side && reader_last.swap(CLIENT_SENT, Ordering::SeqCst) == SERVER_SENT {
                    reader_stats.round_trips.fetch_add(1, Ordering::Relaxed);
                    // The first byte of a chunk that starts a turnaround is
                    // a message type (start-up messages have none; TLS
                    // hides it, so through TLS every turnaround is "other").
                    match buf[0] {
                        b'P' | b'B' | b'D' | b'E' | b'S' | b'H' | b'C' => {
                            reader_stats.extended.fetch_add(1, Ordering::Relaxed);
                        }
                        b'Q' => {
                            reader_stats.simple.fetch_add(1, Ordering::Relaxed);
                        }
                        _ => {}
                    }
                }
                if tx.send((due, buf[..n].to_vec())).is_err() {
                    break;
                }
            }
        });
    let _ = std::thread::Builder::new()
        .name("proxy-write".into())
        .spawn(move || {
            for (due, bytes) in rx {
                let now = Instant::now();
                if due > now {
                    std::thread::sleep(due - now);
                }
                let late = Instant::now().saturating_duration_since(due).as_micros() as u64;
                stats.late_us_sum.fetch_add(late, Ordering::Relaxed);
                stats.late_us_max.fetch_max(late, Ordering::Relaxed);
                stats.chunks.fetch_add(1, Ordering::Relaxed);
                if to.write_all(&bytes).is_err() {
                    break;
                }
                if !client_side {
                    last.store(SERVER_SENT, Ordering::SeqCst);
                }
            }
            let _ = to.shutdown(Shutdown::Write);
        });
}

/// The loopback address of `url`'s first host, and `url` with that host
/// and port replaced by the proxy's. `None`: not a loopback TCP server.
fn upstream_of(url: &str) -> Result<Option<SocketAddr>> {
    let config: tokio_postgres::Config = url.parse()?;
    let host = match config.get_hosts().first() {
        Some(tokio_postgres::config::Host::Tcp(h)) => h.clone(),
        _ => return Ok(None),
    };
    let port = config.get_ports().first().copied().unwrap_or(5432);
    let addr = (host.as_str(), port).to_socket_addrs()?.next();
    Ok(addr.filter(|a| a.ip().is_loopback()))
}

fn proxied_url(url: &str, port: u16) -> Result<String> {
    use tokio_postgres::config::SslMode;
    let config: tokio_postgres::Config = url.parse()?;
    let quote = |v: &str| format!("'{}'", v.replace('\\', "\\\\").replace('\'', "\\'"));
    let mut parts = vec!["host=127.0.0.1".to_string(), format!("port={port}")];
    if let Some(user) = config.get_user() {
        parts.push(format!("user={}", quote(user)));
    }
    if let Some(password) = config.get_password() {
        parts.push(format!(
            "password={}",
            quote(&String::from_utf8_lossy(password))
        ));
    }
    if let Some(db) = config.get_dbname() {
        parts.push(format!("dbname={}", quote(db)));
    }
    let ssl = match config.get_ssl_mode() {
        SslMode::Disable => "disable",
        SslMode::Require => "require",
        _ => "prefer",
    };
    parts.push(format!("sslmode={ssl}"));
    Ok(parts.join(" "))
}

/// A context like `ctx` whose stores connect to `url` (monitoring stays on
/// the direct connection).
async fn ctx_through(ctx: &Ctx, url: String) -> Result<Ctx> {
    Ok(Ctx {
        url,
        admin: crate::pg::Admin::connect(&ctx.url).await?,
        quick: ctx.quick,
        postmaster: ctx.postmaster,
        stress_secs: ctx.stress_secs,
        soak_minutes: ctx.soak_minutes,
        tmpdir: ctx.tmpdir.clone(),
        floor: None,
    })
}

/// One column of the main table.
#[derive(Default)]
pub(crate) struct Column {
    pub(crate) label: String,
    pub(crate) orch_turn_p50: Option<Duration>,
    pub(crate) work_turn_p50: Option<Duration>,
    pub(crate) orch_turns_s_c8: Option<f64>,
    pub(crate) stress_orch_s: Option<f64>,
    exact_p50: Option<Duration>,
    wait_for_p50: Option<Duration>,
    after_quiet_p50: Option<Duration>,
    pub(crate) errors: Vec<String>,
}

pub async fn run(ctx: &Ctx) -> Result<()> {
    heading("R. The database across a network (loopback TCP proxy, one-way delay)");
    let Some(upstream) = upstream_of(&ctx.url)? else {
        println!("  skipped: the server is not on loopback (only a loopback server is proxied)");
        return Ok(());
    };
    let sizes = Sizes::of(ctx);
    let Sizes {
        n1,
        n8,
        stress_secs,
        ..
    } = sizes;
    let (lat_n, lat_exact, quiet, quiet_n) = if ctx.quick {
        (30, 20, Duration::from_secs(5), 2)
    } else {
        (100, 50, Duration::from_secs(5), 4)
    };
    println!(
        "  each column: provider turns (section 1's, c=1: {n1}, c=8: {n8}), runtime stress \
         4:4 with 0 ms activities ({stress_secs} s, section 2's), one-activity latency \
         (section 3's: wait_for n={lat_n}, exact n={lat_exact}, after {} s quiet n={quiet_n})",
        quiet.as_secs()
    );

    let mut columns = Vec::new();
    let mut counts = None;
    for delay_us in std::iter::once(0).chain(DELAYS_US) {
        let (label, proxy, through) = if delay_us == 0 {
            ("direct".to_string(), None, None)
        } else {
            let proxy = Proxy::start(upstream, Duration::from_micros(delay_us))?;
            let url = proxied_url(&ctx.url, proxy.port)?;
            let through = ctx_through(ctx, url).await?;
            (
                format!("{} ms one way", delay_us as f64 / 1000.0),
                Some(proxy),
                Some(through),
            )
        };
        let c = through.as_ref().unwrap_or(ctx);
        eprintln!("  [remote] {label}");
        let before = proxy.as_ref().map(Proxy::counted);
        let mut col = measure_column(c, &label, &sizes).await;
        let (m, e) = latency(c, lat_n, lat_exact, quiet, quiet_n).await;
        if let Some(m) = m {
            col.exact_p50 = m.precise.p50();
            col.wait_for_p50 = m.wait_for.p50();
            col.after_quiet_p50 = m.idle_exact.p50();
        }
        col.errors.extend(e);
        if let (Some(proxy), Some(before)) = (&proxy, before) {
            let d = proxy.counted().since(&before);
            let late = d.late_us_sum as f64 / d.chunks.max(1) as f64;
            println!(
                "  proxy at {label}: {} chunks, delivered late by {late:.0} µs on average \
                 (max {} µs) past their due time: an effective one-way delay of {:.2} ms",
                d.chunks,
                d.late_us_max,
                (delay_us as f64 + late) / 1000.0
            );
        }
        if delay_us == DELAYS_US[0] {
            if let (Some(proxy), Some(through)) = (&proxy, &through) {
                counts = Some(round_trips(through, proxy).await);
            }
        }
        if let Some(through) = &through {
            through.admin.drop_all_schemas().await;
        }
        columns.push(col);
    }

    let mut t = Table::new(
        &std::iter::once("")
            .chain(columns.iter().map(|c| c.label.as_str()))
            .collect::<Vec<_>>(),
        1,
    );
    let row = |name: &str, f: &dyn Fn(&Column) -> String| {
        std::iter::once(name.to_string())
            .chain(columns.iter().map(f))
            .collect::<Vec<_>>()
    };
    t.row(row("orchestration turn p50, c=1 (ms)", &|c| {
        fmt_ms(c.orch_turn_p50)
    }));
    t.row(row("worker turn p50, c=1 (ms)", &|c| {
        fmt_ms(c.work_turn_p50)
    }));
    t.row(row("orchestration turns/s, c=8", &|c| {
        c.orch_turns_s_c8.map(fmt_num).unwrap_or_else(|| "-".into())
    }));
    t.row(row("runtime stress 4:4, 0 ms, orch/s", &|c| {
        c.stress_orch_s.map(fmt_num).unwrap_or_else(|| "-".into())
    }));
    t.row(row("start -> Completed p50, 1 ms polls (ms)", &|c| {
        fmt_ms(c.exact_p50)
    }));
    t.row(row("start -> Completed p50, wait_for (ms)", &|c| {
        fmt_ms(c.wait_for_p50)
    }));
    t.row(row(
        &format!("first after {} s quiet p50 (ms)", quiet.as_secs()),
        &|c| fmt_ms(c.after_quiet_p50),
    ));
    t.print();
    for c in &columns {
        for e in &c.errors {
            println!("  error ({}): {e}", c.label);
        }
    }

    // The targets at 1 ms round trip (0.5 ms one way), and the
    // same rules at 5 ms.
    let direct = &columns[0];
    for (i, c) in columns.iter().enumerate().skip(1) {
        let rtt_ms = 2.0 * DELAYS_US[i - 1] as f64 / 1000.0;
        let exact_ok = c
            .exact_p50
            .zip(direct.exact_p50)
            .map(|(r, d)| ms(r) <= ms(d) + 12.0 * rtt_ms);
        let stress_ok = c
            .stress_orch_s
            .zip(direct.stress_orch_s)
            .map(|(r, d)| r >= 0.5 * d);
        println!(
            "  target at {rtt_ms} ms RTT: start -> Completed p50 {} ms <= direct {} ms + 12 round trips \
             ({:.0} ms) -> {}; stress 4:4 {} >= 50% of direct {} -> {}",
            fmt_ms(c.exact_p50),
            fmt_ms(direct.exact_p50),
            12.0 * rtt_ms,
            verdict(exact_ok),
            c.stress_orch_s.map(fmt_num).unwrap_or_else(|| "-".into()),
            direct
                .stress_orch_s
                .map(fmt_num)
                .unwrap_or_else(|| "-".into()),
            verdict(stress_ok),
        );
    }
    match counts {
        Some(Ok(())) => {}
        Some(Err(e)) => println!("  round-trip counts failed: {e}"),
        None => {}
    }
    Ok(())
}

/// How many turns and how long a stress run a column measures (sections 1
/// and 2's shapes, smaller with `--quick`).
#[derive(Clone, Copy)]
pub(crate) struct Sizes {
    pub(crate) n1: usize,
    pub(crate) n8: usize,
    pub(crate) cap: Duration,
    pub(crate) stress: crate::stress::Test,
    pub(crate) stress_secs: u64,
}

impl Sizes {
    pub(crate) fn of(ctx: &Ctx) -> Sizes {
        let (n1, n8, cap) = if ctx.quick {
            (100, 300, Duration::from_secs(20))
        } else {
            (500, 1500, Duration::from_secs(60))
        };
        Sizes {
            n1,
            n8,
            cap,
            stress: crate::stress::Test::Parallel {
                delay_ms: 0,
                orch: 4,
                work: 4,
            },
            stress_secs: ctx.stress_secs.unwrap_or(if ctx.quick { 3 } else { 10 }),
        }
    }
}

pub(crate) async fn measure_column(ctx: &Ctx, label: &str, sizes: &Sizes) -> Column {
    let Sizes {
        n1,
        n8,
        cap,
        stress,
        stress_secs,
    } = *sizes;
    let mut col = Column {
        label: label.to_string(),
        ..Default::default()
    };
    for (conc, n) in [(1usize, n1), (8, n8)] {
        crate::settle(ctx, &format!("remote turns {label} c={conc}")).await;
        let r = async {
            // Section 1's tag: `turns::one` reads the statements of that schema.
            let store = Store::create(ctx, Kind::Postgres, &format!("turns_c{conc}")).await?;
            crate::with_store(ctx, store, |p| {
                crate::turns::one(ctx, Kind::Postgres, p, conc, n, cap)
            })
            .await
        }
        .await;
        match r {
            Ok(run) => {
                for (phase, what) in [(&run.orch, "orchestration"), (&run.work, "worker")] {
                    if let Some(e) = &phase.first_error {
                        col.errors.push(format!("{what} turns c={conc}: {e}"));
                    }
                }
                if conc == 1 {
                    col.orch_turn_p50 = run.orch.turn.p50();
                    col.work_turn_p50 = run.work.turn.p50();
                } else {
                    col.orch_turns_s_c8 = Some(run.orch.per_s());
                }
            }
            Err(e) => col.errors.push(format!("turns c={conc}: {e}")),
        }
    }
    crate::settle(ctx, &format!("remote stress {label}")).await;
    match crate::stress::one(ctx, Kind::Postgres, stress, stress_secs).await {
        Ok(row) => match &row.result {
            Ok(r) => {
                col.stress_orch_s = Some(r.orch_throughput);
                if r.failed > 0 {
                    col.errors
                        .push(format!("stress: {} orchestrations failed", r.failed));
                }
            }
            Err(e) => col.errors.push(format!("stress: {e}")),
        },
        Err(e) => col.errors.push(format!("stress: {e}")),
    }
    col
}

async fn latency(
    ctx: &Ctx,
    n: usize,
    n_exact: usize,
    quiet: Duration,
    quiet_n: usize,
) -> (Option<crate::latency::Measured>, Vec<String>) {
    crate::settle(ctx, "remote latency").await;
    let r = async {
        let store = Store::create(ctx, Kind::Postgres, "remote_latency").await?;
        crate::with_store(ctx, store, |p| {
            crate::latency::measure(Kind::Postgres, p, n, n_exact, quiet, quiet_n)
        })
        .await
    }
    .await;
    match r {
        Ok(m) => (Some(m), Vec::new()),
        Err(e) => (None, vec![format!("latency: {e}")]),
    }
}

/// Round trips per provider call (each called alone, one at a time, on a
/// warm connection) and per orchestration (a runtime and a client on one
/// store; the client's calls included), counted at the proxy.
async fn round_trips(ctx: &Ctx, proxy: &Proxy) -> Result<()> {
    const N: usize = 50;
    println!();
    println!(
        "  round trips, counted at the 0.5 ms proxy (client turnarounds; each call alone, \
         one at a time, n={N}; background tasks of the store included):"
    );
    let store = Store::create(ctx, Kind::Postgres, "remote_rt").await?;
    let r = crate::with_store(ctx, store, |p| async move {
        let (p, calls) = Counting::wrap(p);
        let mut t = Table::new(
            &[
                "what",
                "provider calls",
                "round trips",
                "of which calls (extended protocol)",
                "NOTIFY/LISTEN",
                "per provider call",
            ],
            1,
        );
        let measured = |name: &str, before: (Counted, u64), now: (Counted, u64)| {
            let d = now.0.since(&before.0);
            let n = now.1 - before.1;
            vec![
                name.to_string(),
                n.to_string(),
                d.round_trips.to_string(),
                d.extended.to_string(),
                d.simple.to_string(),
                format!("{:.2}", d.extended as f64 / n.max(1) as f64),
            ]
        };
        let now = || (proxy.counted(), calls.snapshot().total_calls());
        // Warm: the pool's connection is open and its statements prepared.
        for i in 0..5 {
            p.enqueue_for_orchestrator(crate::turns::start_item(&format!("warm-{i}")), None)
                .await?;
        }
        crate::turns::drive(
            p.clone(),
            Queue::Orchestrator,
            5,
            1,
            Duration::from_secs(30),
        )
        .await;
        crate::turns::drive(p.clone(), Queue::Worker, 5, 1, Duration::from_secs(30)).await;

        let before = now();
        for i in 0..N {
            p.enqueue_for_orchestrator(crate::turns::start_item(&format!("rt-{i}")), None)
                .await?;
        }
        t.row(measured(
            "enqueue_for_orchestrator (a client's start)",
            before,
            now(),
        ));
        for (queue, name) in [
            (
                Queue::Orchestrator,
                "fetch_orchestration_item + ack_orchestration_item",
            ),
            (Queue::Worker, "fetch_work_item + ack_work_item"),
        ] {
            let before = now();
            crate::turns::drive(p.clone(), queue, N, 1, Duration::from_secs(60)).await;
            t.row(measured(name, before, now()));
        }
        let client = Client::new(p.clone());
        let before = now();
        for _ in 0..N {
            client.get_orchestration_status("rt-0").await?;
        }
        t.row(measured(
            "Client::get_orchestration_status (read + get_custom_status)",
            before,
            now(),
        ));
        t.print();
        Ok::<_, crate::util::BoxError>(())
    })
    .await;
    r?;

    // Per orchestration: one activity, started by a client and waited for
    // with wait_for_orchestration, on an otherwise idle runtime.
    let store = Store::create(ctx, Kind::Postgres, "remote_rt_orch").await?;
    crate::with_store(ctx, store, |p| async move {
        let (counted_p, calls) = Counting::wrap(p);
        let (activities, orchestrations) = crate::latency::registries();
        let rt = Runtime::start_with_options(
            counted_p.clone(),
            activities,
            orchestrations,
            RuntimeOptions::default(),
        )
        .await;
        let client = Client::new(counted_p.clone());
        let run = |id: String| {
            let client = &client;
            async move {
                client.start_orchestration(&id, "OneActivity", "x").await?;
                match client
                    .wait_for_orchestration(&id, Duration::from_secs(30))
                    .await?
                {
                    OrchestrationStatus::Completed { .. } => Ok(()),
                    other => Err(err(format!("{id}: {other:?}"))),
                }
            }
        };
        let r = async {
            tokio::time::sleep(Duration::from_millis(300)).await;
            for i in 0..5 {
                run(format!("rt-orch-warm-{i}")).await?;
            }
            let n = 20;
            let before = proxy.counted();
            let calls_before = calls.snapshot();
            let mut took = Vec::new();
            for i in 0..n {
                let t0 = Instant::now();
                run(format!("rt-orch-{i}")).await?;
                took.push(t0.elapsed());
            }
            let d = proxy.counted().since(&before);
            let c = calls.snapshot().since(&calls_before);
            println!(
                "  per orchestration (one activity; start + wait_for_orchestration, n={n}): \
                 {:.1} round trips ({:.1} by provider calls, {:.1} NOTIFY/LISTEN, {:.1} other), \
                 {:.1} provider calls ({:.2} round trips per call), {:.1} new connections; p50 {} ms",
                d.round_trips as f64 / n as f64,
                d.extended as f64 / n as f64,
                d.simple as f64 / n as f64,
                (d.round_trips - d.extended - d.simple) as f64 / n as f64,
                c.total_calls() as f64 / n as f64,
                d.extended as f64 / c.total_calls().max(1) as f64,
                d.connections as f64 / n as f64,
                fmt_ms(Samples::new(took).p50()),
            );
            println!("    provider calls in those {n}: {}", c.describe());
            Ok::<_, crate::util::BoxError>(())
        }
        .await;
        rt.shutdown(None).await;
        drop(counted_p);
        r
    })
    .await
}
