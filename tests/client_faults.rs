//! Faults the store's callers must never see: duroxide's `Client` does not
//! retry provider errors, so the provider rides out transient failures of
//! its calls (see `src/provider/retry.rs`), and never applies a retried
//! write twice.
//!
//! Restarts use a private `TempServer`; backend kills and the cut reply use
//! the shared server, touching only this test's own connections.

#[allow(dead_code)]
mod common;

use duroxide::runtime::registry::ActivityRegistry;
use duroxide::runtime::{Runtime, RuntimeOptions};
use duroxide::{Client, OrchestrationContext, OrchestrationRegistry, OrchestrationStatus};
use duroxide_postgres::{PostgresOptions, PostgresProvider};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Upper bound for any wait; outcomes normally arrive far sooner.
const WAIT: Duration = Duration::from_secs(60);

/// "Echo" waits for the event "Go" and returns its data.
fn echo() -> OrchestrationRegistry {
    OrchestrationRegistry::builder()
        .register(
            "Echo",
            |ctx: OrchestrationContext, _input: String| async move {
                Ok(ctx.schedule_wait("Go").await)
            },
        )
        .build()
}

async fn runtime(store: &Arc<PostgresProvider>) -> Arc<Runtime> {
    let options = RuntimeOptions {
        dispatcher_min_poll_interval: Duration::from_millis(10),
        ..Default::default()
    };
    Runtime::start_with_options(
        store.clone(),
        ActivityRegistry::builder().build(),
        echo(),
        options,
    )
    .await
}

async fn wait_running(client: &Client, instance: &str) {
    common::wait::until(&format!("{instance} runs"), || async {
        matches!(
            client.get_orchestration_status(instance).await,
            Ok(OrchestrationStatus::Running { .. })
        )
    })
    .await;
}

async fn assert_completed(client: &Client, instance: &str, output: &str) {
    match client.wait_for_orchestration(instance, WAIT).await {
        Ok(OrchestrationStatus::Completed { output: o, .. }) => assert_eq!(o, output),
        other => panic!("{instance}: {other:?}"),
    }
}

/// While the server is down (stopped fast, restarted a second later), a
/// client starts an orchestration, raises an event and reads a status; every
/// call succeeds once the server is back, and both orchestrations complete.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_calls_succeed_across_a_server_restart() {
    let server = Arc::new(
        tokio::task::spawn_blocking(common::server::TempServer::start)
            .await
            .unwrap(),
    );
    let store = Arc::new(
        PostgresProvider::connect(&server.url(), PostgresOptions::new())
            .await
            .unwrap(),
    );
    let rt = runtime(&store).await;
    let client = Client::new(store.clone());
    client
        .start_orchestration("before", "Echo", "")
        .await
        .unwrap();
    wait_running(&client, "before").await;

    let s = server.clone();
    tokio::task::spawn_blocking(move || s.stop("fast"))
        .await
        .unwrap();
    // Issued while the server is down.
    let calls = {
        let client = Client::new(store.clone());
        tokio::spawn(async move {
            let raised = client.raise_event("before", "Go", "one").await;
            let started = client.start_orchestration("during", "Echo", "").await;
            let status = client.get_orchestration_status("before").await;
            (raised, started, status)
        })
    };
    // The outage lasts a second; the calls are still under way when it ends.
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(
        !calls.is_finished(),
        "the calls ended while the server was down"
    );
    let s = server.clone();
    tokio::task::spawn_blocking(move || s.restart())
        .await
        .unwrap();

    let (raised, started, status) = calls.await.unwrap();
    raised.expect("raise_event across the restart");
    started.expect("start_orchestration across the restart");
    status.expect("get_orchestration_status across the restart");
    assert_completed(&client, "before", "one").await;
    wait_running(&client, "during").await;
    client.raise_event("during", "Go", "two").await.unwrap();
    assert_completed(&client, "during", "two").await;
    rt.shutdown(None).await;
}

/// Before every client call (start, status read, raise event), every
/// connection of the store is terminated: the pool still holds connections
/// the server has just closed. No call fails, and every orchestration
/// completes with its event's data.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_calls_succeed_while_backends_are_killed() {
    let app = common::unique_schema("kill_app");
    let (store, _schemas) =
        common::provider("cf_kill", PostgresOptions::new().application_name(&app)).await;
    let rt = runtime(&store).await;
    let client = Client::new(store.clone());
    let admin = common::admin_client().await;
    let mut killed = 0usize;
    let mut kill = async || {
        killed += admin
            .query(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
                 WHERE application_name = $1",
                &[&app],
            )
            .await
            .unwrap()
            .len();
    };

    for i in 0..8 {
        let id = format!("k-{i}");
        kill().await;
        client.start_orchestration(&id, "Echo", "").await.unwrap();
        wait_running(&client, &id).await;
        kill().await;
        client.get_orchestration_status(&id).await.unwrap();
        kill().await;
        client.raise_event(&id, "Go", &id).await.unwrap();
    }
    assert!(killed > 0, "no backend was terminated");
    for i in 0..8 {
        let id = format!("k-{i}");
        assert_completed(&client, &id, &id).await;
    }
    rt.shutdown(None).await;
}

/// A TCP proxy to the shared server that, once, lets a request through and
/// then cuts the connection instead of returning the server's reply: the
/// first request whose bytes contain `marker` commits on the server, and its
/// caller sees a broken connection (an unknown outcome).
struct CutProxy {
    port: u16,
    cut: Arc<AtomicBool>,
}

impl CutProxy {
    async fn start(upstream: (String, u16), marker: String) -> CutProxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let cut = Arc::new(AtomicBool::new(false));
        let done = cut.clone();
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let server = TcpStream::connect(upstream.clone()).await.unwrap();
                tokio::spawn(relay(
                    client,
                    server,
                    marker.clone().into_bytes(),
                    done.clone(),
                ));
            }
        });
        CutProxy { port, cut }
    }
}

async fn relay(client: TcpStream, server: TcpStream, marker: Vec<u8>, done: Arc<AtomicBool>) {
    let (mut cr, mut cw) = client.into_split();
    let (mut sr, mut sw) = server.into_split();
    let armed = Arc::new(AtomicBool::new(false));
    let arm = armed.clone();
    let done_up = done.clone();
    let up = tokio::spawn(async move {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = match cr.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            let chunk = &buf[..n];
            if !done_up.load(Ordering::SeqCst) && chunk.windows(marker.len()).any(|w| w == marker) {
                arm.store(true, Ordering::SeqCst);
            }
            if sw.write_all(chunk).await.is_err() {
                return;
            }
        }
    });
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = match sr.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        // The server answers after the request's implicit transaction
        // committed (it flushes at ReadyForQuery): drop the answer and both
        // sockets, once.
        if armed.load(Ordering::SeqCst) && !done.swap(true, Ordering::SeqCst) {
            break;
        }
        if cw.write_all(&buf[..n]).await.is_err() {
            break;
        }
    }
    up.abort();
}

/// `host:port` of the shared test server's URL.
fn upstream() -> (String, u16) {
    let url = common::server::database_url();
    let config: tokio_postgres::Config = url.parse().unwrap();
    let host = match &config.get_hosts()[0] {
        tokio_postgres::config::Host::Tcp(h) => h.clone(),
        #[allow(unreachable_patterns)]
        _ => "127.0.0.1".to_string(),
    };
    (host, config.get_ports().first().copied().unwrap_or(5432))
}

/// `url` with its host and port replaced by the proxy's.
fn via_proxy(port: u16) -> String {
    let (host, upstream_port) = upstream();
    common::server::database_url().replace(
        &format!("{host}:{upstream_port}"),
        &format!("127.0.0.1:{port}"),
    )
}

/// Client calls whose first attempt committed but whose reply was lost are
/// retried, and the retry applies nothing: one start and one event in the
/// queue, not two.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retried_enqueue_whose_first_attempt_committed_is_not_applied_twice() {
    let schemas = common::Schemas::default();
    let schema = common::unique_schema("cf_cut");
    schemas.track(&schema);
    let admin = common::admin_client().await;
    for (what, instance) in [("start", "cut-start"), ("event", "cut-event")] {
        let marker = format!("{instance}-{schema}");
        let proxy = CutProxy::start(upstream(), marker.clone()).await;
        let store = Arc::new(
            PostgresProvider::connect(
                &via_proxy(proxy.port),
                PostgresOptions::new().schema(&schema).long_poll(false),
            )
            .await
            .unwrap(),
        );
        let client = Client::new(store.clone());
        match what {
            "start" => client.start_orchestration(&marker, "Echo", "").await,
            _ => client.raise_event(&marker, "Go", "data").await,
        }
        .unwrap_or_else(|e| panic!("{what}: {e}"));
        assert!(
            proxy.cut.load(Ordering::SeqCst),
            "{what}: the reply was never cut"
        );
        let queued: i64 = admin
            .query_one(
                &format!(
                    "SELECT count(*) FROM \"{schema}\".orchestrator_queue WHERE instance_id = $1"
                ),
                &[&marker],
            )
            .await
            .unwrap()
            .get(0);
        assert_eq!(queued, 1, "{what}: applied {queued} times");
    }
}
