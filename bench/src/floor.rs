//! Section 0: PostgreSQL floor: what one round trip and one durable commit cost on
//! this machine, measured with plain tokio-postgres.

use crate::pg;
use crate::util::{fmt_ms, fmt_num, heading, ratio, ratio_d, Result, Samples, Table};
use crate::Ctx;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The reference figures other sections compare against.
#[derive(Debug, Clone)]
pub struct Floor {
    pub select1_p50: Duration,
    pub commit_p50: Duration,
    pub commit_p99: Duration,
    pub commits_per_s_8: f64,
    pub commit_p50_8: Duration,
    /// INSERT + NOTIFY + commit per second at 8 clients.
    pub notify_commits_per_s_8: f64,
}

impl Floor {
    /// One turn needs two round trips, one of which commits; the reference
    /// for a turn is two durable commits.
    pub fn turn_reference(&self) -> Duration {
        self.commit_p50 * 2
    }
}

const PAYLOAD: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef\
                       0123456789abcdef0123456789abcdef";

pub async fn run(ctx: &Ctx) -> Result<Floor> {
    heading("0. PostgreSQL floor (tokio-postgres, prepared statements)");
    let schema = pg::schema_name("floor");
    ctx.admin.track_schema(&schema);
    let r = measure(ctx, &schema).await;
    ctx.admin.drop_schema(&schema).await;
    r
}

async fn measure(ctx: &Ctx, schema: &str) -> Result<Floor> {
    let (select_n, commit_n, multi_secs) = if ctx.quick {
        (500, 200, 1.5)
    } else {
        (3000, 600, 3.0)
    };
    ctx.admin
        .client
        .batch_execute(&format!(
            "DROP SCHEMA IF EXISTS \"{schema}\" CASCADE; CREATE SCHEMA \"{schema}\"; \
             CREATE TABLE \"{schema}\".scratch (id BIGSERIAL PRIMARY KEY, payload TEXT NOT NULL)"
        ))
        .await?;
    let insert_sql = format!("INSERT INTO \"{schema}\".scratch (payload) VALUES ($1)");
    // The same insert plus a NOTIFY in the same transaction (as the
    // provider's enqueue and ack functions do), with one listener connected.
    let channel = format!("{schema}_chan");
    let notify_sql = format!(
        "WITH n AS (SELECT pg_notify('{channel}', 'o')) \
         INSERT INTO \"{schema}\".scratch (payload) SELECT $1 FROM n"
    );
    let listener = pg::connect(&ctx.url).await?;
    listener.batch_execute(&format!("LISTEN {channel}")).await?;

    // SELECT 1 round trip.
    let client = pg::connect(&ctx.url).await?;
    let stmt = client.prepare("SELECT 1").await?;
    for _ in 0..100 {
        client.query_one(&stmt, &[]).await?;
    }
    let mut lat = Vec::with_capacity(select_n);
    for _ in 0..select_n {
        let t = Instant::now();
        client.query_one(&stmt, &[]).await?;
        lat.push(t.elapsed());
    }
    let select1 = Samples::new(lat);
    drop(client);

    let commit1 = single(&ctx.url, &insert_sql, commit_n).await?;
    let (commits8, per_s_8) = multi(&ctx.url, &insert_sql, 8, multi_secs).await?;
    let notify1 = single(&ctx.url, &notify_sql, commit_n).await?;
    let (notify8, notify_per_s_8) = multi(&ctx.url, &notify_sql, 8, multi_secs).await?;
    drop(listener);

    let floor = Floor {
        select1_p50: select1.p50().unwrap_or_default(),
        commit_p50: commit1.p50().unwrap_or_default(),
        commit_p99: commit1.pct(99.0).unwrap_or_default(),
        commits_per_s_8: per_s_8,
        commit_p50_8: commits8.p50().unwrap_or_default(),
        notify_commits_per_s_8: notify_per_s_8,
    };

    let mut t = Table::new(&["measure", "value", "reference", "ratio"], 1);
    t.row(vec![
        format!("SELECT 1 round trip p50 (n={select_n})"),
        format!("{} ms", fmt_ms(select1.p50())),
        "-".into(),
        "-".into(),
    ]);
    t.row(vec![
        "SELECT 1 round trip p99".into(),
        format!("{} ms", fmt_ms(select1.pct(99.0))),
        format!("{} ms (p50)", fmt_ms(select1.p50())),
        ratio_d(select1.pct(99.0), select1.p50()),
    ]);
    t.row(vec![
        format!("INSERT+commit p50, 1 client (n={commit_n})"),
        format!("{} ms", fmt_ms(commit1.p50())),
        format!("{} ms (SELECT 1 p50)", fmt_ms(select1.p50())),
        ratio_d(commit1.p50(), select1.p50()),
    ]);
    t.row(vec![
        "INSERT+commit p99, 1 client".into(),
        format!("{} ms", fmt_ms(commit1.pct(99.0))),
        format!("{} ms (p50)", fmt_ms(commit1.p50())),
        ratio_d(commit1.pct(99.0), commit1.p50()),
    ]);
    let one_client_rate = commit1.p50().map(|d| 1.0 / d.as_secs_f64());
    t.row(vec![
        format!("INSERT+commit/s, 8 clients ({multi_secs} s)"),
        format!("{} /s", fmt_num(per_s_8)),
        format!(
            "{} /s (1 client, 1/p50)",
            one_client_rate.map(fmt_num).unwrap_or_else(|| "-".into())
        ),
        ratio(Some(per_s_8), one_client_rate),
    ]);
    t.row(vec![
        "INSERT+commit p50, 8 clients".into(),
        format!("{} ms", fmt_ms(commits8.p50())),
        format!("{} ms (1 client)", fmt_ms(commit1.p50())),
        ratio_d(commits8.p50(), commit1.p50()),
    ]);
    t.row(vec![
        "INSERT+NOTIFY+commit p50, 1 client".into(),
        format!("{} ms", fmt_ms(notify1.p50())),
        format!("{} ms (no NOTIFY)", fmt_ms(commit1.p50())),
        ratio_d(notify1.p50(), commit1.p50()),
    ]);
    t.row(vec![
        "INSERT+NOTIFY+commit/s, 8 clients".into(),
        format!("{} /s", fmt_num(notify_per_s_8)),
        format!("{} /s (no NOTIFY)", fmt_num(per_s_8)),
        ratio(Some(notify_per_s_8), Some(per_s_8)),
    ]);
    t.row(vec![
        "INSERT+NOTIFY+commit p50, 8 clients".into(),
        format!("{} ms", fmt_ms(notify8.p50())),
        format!("{} ms (no NOTIFY)", fmt_ms(commits8.p50())),
        ratio_d(notify8.p50(), commits8.p50()),
    ]);
    t.print();
    println!(
        "  turn reference = 2 x INSERT+commit p50 = {} ms; NOTIFY: one listener connected, \
         as with the provider's long polling",
        fmt_ms(Some(floor.turn_reference()))
    );
    Ok(floor)
}

/// `sql` (one text parameter) executed `n` times in a row on one
/// connection, after a short warm-up.
async fn single(url: &str, sql: &str, n: usize) -> Result<Samples> {
    let client = pg::connect(url).await?;
    let stmt = client.prepare(sql).await?;
    for _ in 0..20 {
        client.execute(&stmt, &[&PAYLOAD]).await?;
    }
    let mut lat = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        client.execute(&stmt, &[&PAYLOAD]).await?;
        lat.push(t.elapsed());
    }
    Ok(Samples::new(lat))
}

/// `sql` executed in a loop by `clients` connections for `secs`: the
/// latencies and the total rate.
async fn multi(url: &str, sql: &str, clients: usize, secs: f64) -> Result<(Samples, f64)> {
    let deadline = Instant::now() + Duration::from_secs_f64(secs);
    let sql = Arc::new(sql.to_string());
    let mut tasks = Vec::new();
    for _ in 0..clients {
        let url = url.to_string();
        let sql = sql.clone();
        tasks.push(tokio::spawn(async move {
            let client = pg::connect(&url).await?;
            let stmt = client.prepare(&sql).await?;
            let mut lat = Vec::new();
            while Instant::now() < deadline {
                let t = Instant::now();
                client.execute(&stmt, &[&PAYLOAD]).await?;
                lat.push(t.elapsed());
            }
            Ok::<_, crate::util::BoxError>(lat)
        }));
    }
    let start = Instant::now();
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await??);
    }
    let elapsed = start.elapsed().as_secs_f64();
    let samples = Samples::new(all);
    let rate = samples.len() as f64 / elapsed;
    Ok((samples, rate))
}
