//! Quickstart: run a durable orchestration on PostgreSQL.
//!
//! The orchestration calls two activities, waits on a durable timer and
//! returns a combined result; afterwards the example prints the history that
//! the provider persisted.
//!
//! Run with `cargo run --example quickstart`. If `DATABASE_URL` is set that
//! server is used; otherwise a throwaway local PostgreSQL server is started
//! (PostgreSQL must be installed) and removed again at exit.

#[path = "../tests/common/server.rs"]
mod server;

use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use duroxide::providers::Provider;
use duroxide::runtime::registry::ActivityRegistry;
use duroxide::runtime::Runtime;
use duroxide::{
    ActivityContext, Client, OrchestrationContext, OrchestrationRegistry, OrchestrationStatus,
};
use duroxide_postgres::PostgresProvider;

type BoxError = Box<dyn std::error::Error>;

#[tokio::main]
async fn main() -> ExitCode {
    // 1. Find a PostgreSQL server. `_server` stops and deletes the throwaway
    //    server when it goes out of scope at the end of `main`.
    let (url, _server) = match std::env::var("DATABASE_URL") {
        Ok(url) if !url.is_empty() => {
            println!("using DATABASE_URL");
            (url, None)
        }
        _ => {
            let server = server::TempServer::start();
            println!(
                "started a throwaway local PostgreSQL server at {} (it is removed at exit)",
                server.url()
            );
            (server.url(), Some(server))
        }
    };

    match run(&url).await {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Runs the orchestration; returns whether it completed successfully.
async fn run(url: &str) -> Result<bool, BoxError> {
    // 2. Connect the provider. It creates its schema ("duroxide") if needed.
    let store = Arc::new(PostgresProvider::new(url).await?);

    // 3. Register the activities and the orchestration (defined below) by name.
    let activities = ActivityRegistry::builder()
        .register("Greet", greet)
        .register("Shout", shout)
        .build();
    let orchestrations = OrchestrationRegistry::builder()
        .register("Quickstart", quickstart)
        .build();

    // 4. Start the runtime (dispatchers polling the provider's queues) and a
    //    client that talks to the same store.
    let runtime = Runtime::start_with_store(store.clone(), activities, orchestrations).await;
    let client = Client::new(store.clone());

    // 5. Start an instance with a unique id and wait for it to finish.
    let millis = SystemTime::now().duration_since(UNIX_EPOCH)?.as_millis();
    let instance = format!("quickstart-{millis}");
    let outcome = async {
        client
            .start_orchestration(&instance, "Quickstart", "PostgreSQL")
            .await?;
        println!("started orchestration instance {instance}");
        let status = client
            .wait_for_orchestration(&instance, Duration::from_secs(30))
            .await?;
        let completed = match &status {
            OrchestrationStatus::Completed { output, .. } => {
                println!("status: Completed\noutput: {output}");
                true
            }
            OrchestrationStatus::Failed { details, .. } => {
                println!("status: Failed\nerror: {}", details.display_message());
                false
            }
            other => {
                println!("status: {other:?}");
                false
            }
        };

        // 6. Read the persisted history straight from the provider.
        println!("history:");
        for event in store.read(&instance).await? {
            println!("  {:>3} {:?}", event.event_id, event.kind);
        }
        Ok::<bool, BoxError>(completed)
    }
    .await;

    // 7. Stop the runtime's dispatchers, also when something above failed.
    runtime.shutdown(None).await;
    outcome
}

/// Activity: does the actual work. Activities may run any async code and have
/// side effects; their results are recorded in the orchestration's history.
async fn greet(_ctx: ActivityContext, name: String) -> Result<String, String> {
    Ok(format!("Hello, {name}!"))
}

/// Activity: upper-cases its input.
async fn shout(_ctx: ActivityContext, text: String) -> Result<String, String> {
    Ok(text.to_uppercase())
}

/// Orchestration: deterministic code that schedules activities and timers.
/// Every step is recorded in the history, so after a crash the orchestration
/// is replayed from there instead of doing the work again.
async fn quickstart(ctx: OrchestrationContext, name: String) -> Result<String, String> {
    let greeting = ctx.schedule_activity("Greet", name).await?;
    let shouted = ctx.schedule_activity("Shout", greeting.clone()).await?;

    // A durable timer: it is stored in PostgreSQL and survives restarts.
    ctx.schedule_timer(Duration::from_millis(500)).await;

    Ok(serde_json::json!({ "greeting": greeting, "shouted": shouted }).to_string())
}
