//! The store's metrics (and duroxide's own) on a Prometheus endpoint.
//!
//! Installs `metrics-exporter-prometheus` as the process's metrics recorder
//! with its HTTP listener on 127.0.0.1:9187 (`METRICS_LISTEN` to change),
//! starts a runtime on PostgreSQL, runs a small orchestration every 200 ms,
//! and after a few seconds prints the `duroxide_postgres_*` lines its own
//! endpoint serves. It stops after `EXAMPLE_SECONDS` seconds (default 10; scrape it
//! meanwhile with `curl -s 127.0.0.1:9187/metrics`).
//!
//! Run with `cargo run --example prometheus`. `DATABASE_URL` as in the
//! quickstart (a throwaway local server when unset).
//!
//! Spans: every database call is a `db.call` span (target
//! `duroxide_postgres::db`); route them to OpenTelemetry with
//! `tracing-opentelemetry` (`docs/operations.md` lists their fields).

#[path = "../tests/common/server.rs"]
mod server;

use duroxide::runtime::registry::ActivityRegistry;
use duroxide::runtime::Runtime;
use duroxide::{ActivityContext, Client, OrchestrationContext, OrchestrationRegistry};
use duroxide_postgres::{PostgresOptions, PostgresProvider};
use metrics_exporter_prometheus::PrometheusBuilder;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

type BoxError = Box<dyn std::error::Error>;

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let listen: SocketAddr = std::env::var("METRICS_LISTEN")
        .unwrap_or_else(|_| "127.0.0.1:9187".into())
        .parse()?;
    let seconds: u64 = std::env::var("EXAMPLE_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(10);

    // 1. The recorder first: the provider's health sampler runs only while
    //    one is installed.
    PrometheusBuilder::new()
        .with_http_listener(listen)
        .install()?;
    println!("metrics on http://{listen}/metrics for {seconds} s");

    let (url, _server) = match std::env::var("DATABASE_URL") {
        Ok(url) if !url.is_empty() => (url, None),
        _ => {
            let server = server::TempServer::start();
            (server.url(), Some(server))
        }
    };

    // 2. A store sampling its health every second.
    let store = Arc::new(
        PostgresProvider::connect(
            &url,
            PostgresOptions::new()
                .schema("prometheus_example")
                .health_sample_interval(Some(Duration::from_secs(1))),
        )
        .await?,
    );
    let activities = ActivityRegistry::builder()
        .register("Greet", |_ctx: ActivityContext, name: String| async move {
            Ok(format!("hello {name}"))
        })
        .build();
    let orchestrations = OrchestrationRegistry::builder()
        .register(
            "Hello",
            |ctx: OrchestrationContext, name: String| async move {
                ctx.schedule_activity("Greet", name).await
            },
        )
        .build();
    let runtime = Runtime::start_with_store(store.clone(), activities, orchestrations).await;
    let client = Client::new(store.clone());

    // 3. Some traffic, then what the endpoint serves.
    let started = Instant::now();
    let mut printed = false;
    let mut n = 0u64;
    while started.elapsed() < Duration::from_secs(seconds) {
        n += 1;
        let id = format!("hello-{}-{n}", std::process::id());
        client.start_orchestration(&id, "Hello", "metrics").await?;
        tokio::time::sleep(Duration::from_millis(200)).await;
        if !printed && started.elapsed() > Duration::from_secs(3) {
            printed = true;
            let body = tokio::task::spawn_blocking(move || scrape(listen)).await??;
            for line in body.lines().filter(|l| l.starts_with("duroxide_postgres_")) {
                println!("{line}");
            }
        }
    }
    runtime.shutdown(None).await;
    Ok(())
}

/// GET /metrics from the exporter (plain HTTP/1.0 on loopback).
fn scrape(addr: SocketAddr) -> Result<String, std::io::Error> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    stream.write_all(b"GET /metrics HTTP/1.0\r\nHost: localhost\r\n\r\n")?;
    let mut body = String::new();
    stream.read_to_string(&mut body)?;
    Ok(body)
}
