//! The store's `tracing` spans, captured by a span-recording layer after
//! real provider calls. Alone in its test binary: a scoped subscriber
//! (`set_default`) and other tests' threads registering the same callsites
//! at the same time make tracing's interest cache miss spans now and then.

#[allow(dead_code)]
mod common;

use duroxide::providers::Provider;
use duroxide_postgres::PostgresOptions;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

// ---------------------------------------------------------------------------
// Spans
// ---------------------------------------------------------------------------

/// Every field recorded on every span, per span.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<HashMap<u64, HashMap<String, String>>>>);

struct Visitor<'a>(&'a mut HashMap<String, String>);

impl tracing::field::Visit for Visitor<'_> {
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        self.0.insert(
            field.name().to_string(),
            format!("{value:?}").trim_matches('"').to_string(),
        );
    }
    fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
        self.0.insert(field.name().to_string(), value.to_string());
    }
}

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for Captured {
    fn on_new_span(
        &self,
        attrs: &tracing::span::Attributes<'_>,
        id: &tracing::span::Id,
        _ctx: tracing_subscriber::layer::Context<'_, S>,
    ) {
        let mut fields = HashMap::new();
        fields.insert("span.name".to_string(), attrs.metadata().name().to_string());
        attrs.record(&mut Visitor(&mut fields));
        self.0.lock().unwrap().insert(id.into_u64(), fields);
    }
    fn on_record(
        &self,
        id: &tracing::span::Id,
        values: &tracing::span::Record<'_>,
        _ctx: tracing_subscriber::layer::Context<'_, S>,
    ) {
        if let Some(fields) = self.0.lock().unwrap().get_mut(&id.into_u64()) {
            values.record(&mut Visitor(fields));
        }
    }
}

impl Captured {
    fn calls(&self, function: &str) -> Vec<HashMap<String, String>> {
        self.0
            .lock()
            .unwrap()
            .values()
            .filter(|f| f.get("db.operation.name").map(String::as_str) == Some(function))
            .cloned()
            .collect()
    }
}

#[tokio::test(flavor = "current_thread")]
async fn every_call_has_a_database_span_with_the_instance_and_sqlstate_but_no_payload() {
    use tracing_subscriber::layer::SubscriberExt;
    let captured = Captured::default();
    let subscriber = tracing_subscriber::registry().with(captured.clone());
    let _guard = tracing::subscriber::set_default(subscriber);

    let options = PostgresOptions::new()
        .long_poll(false)
        .health_sample_interval(None);
    let (store, _schemas) = common::provider("tm_span", options).await;
    let schema = store.schema().to_string();
    const SECRET: &str = "secret-payload-4711";

    store
        .enqueue_for_orchestrator(common::items::start("span-1", SECRET), None)
        .await
        .unwrap();
    let (item, token, _) = store
        .fetch_orchestration_item(Duration::from_secs(30), Duration::ZERO, None)
        .await
        .unwrap()
        .expect("the start");
    assert_eq!(item.instance, "span-1");
    store
        .abandon_orchestration_item(&token, None, false)
        .await
        .unwrap();
    let error = store
        .abandon_orchestration_item("lock_not-a-token", None, false)
        .await
        .unwrap_err();
    assert!(!error.is_retryable());
    store.read("span-1").await.unwrap();

    let enqueue = captured.calls("enqueue_orchestrator");
    assert_eq!(enqueue.len(), 1, "one span per call");
    let e = &enqueue[0];
    assert_eq!(e["span.name"], "db.call");
    assert_eq!(e["db.system.name"], "postgresql");
    assert!(
        e["db.namespace"].ends_with(&format!("|{schema}")),
        "namespace {}",
        e["db.namespace"]
    );
    assert_eq!(e["duroxide.instance_id"], "span-1");
    assert_eq!(e["duroxide.operation"], "enqueue_for_orchestrator");
    assert!(e["db.stored_procedure.name"]
        .starts_with(&format!("enqueue_orchestrator__{}", store.function_set())));
    assert_eq!(e["server.address"], "127.0.0.1");
    assert!(!e.contains_key("db.response.status_code"), "success: {e:?}");

    // A claim learns its instance from the row it returns.
    let fetch = captured.calls("fetch_orchestration_item");
    assert_eq!(fetch.len(), 1);
    assert_eq!(fetch[0]["duroxide.instance_id"], "span-1");
    assert_eq!(fetch[0]["db.response.returned_rows"], "1");

    // The failed abandon carries its SQLSTATE (DX001: unknown token).
    let abandons = captured.calls("abandon_orchestration_item");
    assert_eq!(abandons.len(), 2);
    let failed: Vec<_> = abandons
        .iter()
        .filter(|a| a.contains_key("db.response.status_code"))
        .collect();
    assert_eq!(failed.len(), 1, "{abandons:?}");
    assert_eq!(failed[0]["db.response.status_code"], "DX001");
    assert_eq!(failed[0]["error.type"], "DX001");
    assert_eq!(failed[0]["otel.status_code"], "ERROR");

    assert_eq!(
        captured.calls("read_history")[0]["duroxide.instance_id"],
        "span-1"
    );

    // Never a payload.
    for fields in captured.0.lock().unwrap().values() {
        for (name, value) in fields {
            assert!(
                !value.contains(SECRET),
                "{name} carries the payload: {value}"
            );
        }
    }
}
