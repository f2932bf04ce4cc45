//! Section "citus": the store on a Citus coordinator with schema-based
//! sharding (`DUROXIDE_CITUS_URL`), next to the same on the single server of
//! the run (docs/scale-out.md, "Citus"; docs/decisions/0013).
//!
//! * Per call: the p50 of store calls that Citus can plan (a lookup by id,
//!   the queue depths, a fetch from an empty queue) and of `SELECT 1`, the
//!   round trip itself, on the single server, on the coordinator (the
//!   function runs there and routes each statement to the schema's worker),
//!   and on the coordinator with the functions delegated
//!   (`create_distributed_function(…, colocate_with := <a table of the
//!   schema>)`, the function runs on the worker).
//! * Provider turns and runtime stress (sections 1 and 2, as the remote
//!   section measures them) on both; a measurement that fails prints its
//!   first error.
//!
//! Skipped when `DUROXIDE_CITUS_URL` is not set.

use crate::util::{fmt_ms, fmt_num, heading, Result, Samples, Table};
use crate::Ctx;
use duroxide::providers::Provider;
use duroxide_postgres::{PostgresOptions, PostgresProvider};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The store calls measured per call (installed name prefix, label).
const CALLS: [(&str, &str); 3] = [
    ("latest_execution_id", "latest_execution_id (by id)"),
    ("get_queue_depths", "get_queue_depths (whole schema)"),
    ("fetch_orchestration_item", "fetch, empty queue"),
];

pub async fn run(ctx: &Ctx) -> Result<()> {
    heading("C. Citus: the store on a coordinator with schema-based sharding");
    let url = match std::env::var("DUROXIDE_CITUS_URL") {
        Ok(url) if !url.trim().is_empty() => url,
        _ => {
            println!("  skipped: DUROXIDE_CITUS_URL is not set (a Citus coordinator's URL)");
            return Ok(());
        }
    };
    let citus = Ctx {
        admin: crate::pg::Admin::connect(&url).await?,
        url: url.clone(),
        quick: ctx.quick,
        postmaster: None,
        stress_secs: ctx.stress_secs,
        soak_minutes: ctx.soak_minutes,
        tmpdir: ctx.tmpdir.clone(),
        floor: None,
    };
    let n = if ctx.quick { 200 } else { 1000 };

    // Per call.
    println!("  per call: p50 of {n} sequential calls on one connection pool, idle store");
    let single = per_call(&ctx.url, n, false).await;
    let coordinator = per_call(&url, n, false).await;
    let delegated = per_call(&url, n, true).await;
    let columns = [
        ("single server", &single),
        ("Citus coordinator", &coordinator),
        ("coordinator, delegated", &delegated),
    ];
    let mut t = Table::new(
        &std::iter::once("p50 (ms)")
            .chain(columns.iter().map(|c| c.0))
            .collect::<Vec<_>>(),
        1,
    );
    for (i, label) in std::iter::once("SELECT 1 (the round trip)")
        .chain(CALLS.iter().map(|c| c.1))
        .enumerate()
    {
        t.row(
            std::iter::once(label.to_string())
                .chain(columns.iter().map(|c| match &c.1 {
                    Ok(p50s) => fmt_ms(p50s[i]),
                    Err(_) => "-".into(),
                }))
                .collect(),
        );
    }
    t.print();
    for (label, r) in columns {
        if let Err(e) = r {
            println!("  error ({label}): {e}");
        }
    }

    // Turns and stress.
    let sizes = crate::remote::Sizes::of(ctx);
    let crate::remote::Sizes {
        n1,
        n8,
        stress_secs,
        ..
    } = sizes;
    println!(
        "  provider turns (section 1's, c=1: {n1}, c=8: {n8}) and runtime stress 4:4, 0 ms \
         activities ({stress_secs} s, section 2's)"
    );
    let mut turn_columns = Vec::new();
    for (c, label) in [(ctx, "single server"), (&citus, "Citus coordinator")] {
        eprintln!("  [citus] {label}");
        turn_columns.push(crate::remote::measure_column(c, label, &sizes).await);
        c.admin.drop_all_schemas().await;
    }
    let mut t = Table::new(
        &std::iter::once("")
            .chain(turn_columns.iter().map(|c| c.label.as_str()))
            .collect::<Vec<_>>(),
        1,
    );
    let figure = |v: Option<f64>| v.map(fmt_num).unwrap_or_else(|| "-".into());
    for (name, cells) in [
        (
            "orchestration turn p50, c=1 (ms)",
            turn_columns
                .iter()
                .map(|c| fmt_ms(c.orch_turn_p50))
                .collect::<Vec<_>>(),
        ),
        (
            "worker turn p50, c=1 (ms)",
            turn_columns
                .iter()
                .map(|c| fmt_ms(c.work_turn_p50))
                .collect(),
        ),
        (
            "orchestration turns/s, c=8",
            turn_columns
                .iter()
                .map(|c| figure(c.orch_turns_s_c8))
                .collect(),
        ),
        (
            "runtime stress 4:4, 0 ms, orch/s",
            turn_columns
                .iter()
                .map(|c| figure(c.stress_orch_s))
                .collect(),
        ),
    ] {
        t.row(std::iter::once(name.to_string()).chain(cells).collect());
    }
    t.print();
    for c in &turn_columns {
        for e in &c.errors {
            println!("  error ({}): {e}", c.label);
        }
    }
    Ok(())
}

/// p50s of `SELECT 1` and of each of [`CALLS`] on a fresh store at `url`,
/// with the measured functions delegated to the schema's worker if
/// `delegate`.
async fn per_call(url: &str, n: usize, delegate: bool) -> Result<Vec<Option<Duration>>> {
    let schema = crate::pg::schema_name(if delegate {
        "citus_deleg"
    } else {
        "citus_call"
    });
    let admin = crate::pg::connect(url).await?;
    let store = Arc::new(
        PostgresProvider::connect(
            url,
            PostgresOptions::new()
                .schema(schema.as_str())
                .application_name("duroxide-postgres-bench"),
        )
        .await?,
    );
    let outcome = async {
        if delegate {
            for (name, _) in CALLS {
                let function: String = admin
                    .query_one(
                        "SELECT p.oid::regprocedure::text FROM pg_proc p
                         JOIN pg_namespace n ON n.oid = p.pronamespace
                         WHERE n.nspname = $1 AND p.proname = $2",
                        &[&schema, &format!("{name}__{}", store.function_set())],
                    )
                    .await?
                    .get(0);
                admin
                    .execute(
                        "SELECT create_distributed_function($1::text::regprocedure, \
                         colocate_with := $2)",
                        &[&function, &format!("\"{schema}\".instances")],
                    )
                    .await?;
            }
        }
        let mut p50s = Vec::new();
        let mut samples = Vec::with_capacity(n);
        for _ in 0..n {
            let at = Instant::now();
            admin.query_one("SELECT 1", &[]).await?;
            samples.push(at.elapsed());
        }
        p50s.push(Samples::new(samples).p50());
        let admin_calls = store
            .as_management_capability()
            .ok_or("no management capability")?;
        for (name, _) in CALLS {
            let mut samples = Vec::with_capacity(n);
            for _ in 0..n {
                let at = Instant::now();
                match name {
                    "latest_execution_id" => {
                        admin_calls.latest_execution_id("bench-none").await.ok();
                    }
                    "get_queue_depths" => {
                        admin_calls
                            .get_queue_depths()
                            .await
                            .map_err(|e| e.to_string())?;
                    }
                    _ => {
                        store
                            .fetch_orchestration_item(Duration::from_secs(30), Duration::ZERO, None)
                            .await
                            .map_err(|e| e.to_string())?;
                    }
                }
                samples.push(at.elapsed());
            }
            p50s.push(Samples::new(samples).p50());
        }
        Ok::<_, crate::util::BoxError>(p50s)
    }
    .await;
    drop(store);
    let _ = admin
        .batch_execute(&format!("DROP SCHEMA IF EXISTS \"{schema}\" CASCADE"))
        .await;
    outcome
}
