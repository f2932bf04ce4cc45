//! A metrics recorder for tests: installed once per test binary, read
//! without resetting. Every metric of the store carries its `schema` label,
//! so concurrent tests each read their own store's values.
//!
//! Install it ([`recorder`]) before creating the provider under test: a
//! gauge set before the recorder existed (the listener's, at connect) is
//! never seen.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

/// Metric values by (name, labels other than `schema`, sorted).
pub type Metrics = HashMap<(String, Vec<(String, String)>), f64>;

#[derive(Default)]
pub struct TestRecorder {
    counters: Mutex<HashMap<metrics::Key, Arc<AtomicU64>>>,
    gauges: Mutex<HashMap<metrics::Key, Arc<AtomicU64>>>,
    histograms: Mutex<HashMap<metrics::Key, Arc<Samples>>>,
}

#[derive(Default)]
struct Samples(Mutex<Vec<f64>>);

impl metrics::HistogramFn for Samples {
    fn record(&self, value: f64) {
        self.0.lock().unwrap().push(value);
    }
}

impl metrics::Recorder for TestRecorder {
    fn describe_counter(
        &self,
        _: metrics::KeyName,
        _: Option<metrics::Unit>,
        _: metrics::SharedString,
    ) {
    }
    fn describe_gauge(
        &self,
        _: metrics::KeyName,
        _: Option<metrics::Unit>,
        _: metrics::SharedString,
    ) {
    }
    fn describe_histogram(
        &self,
        _: metrics::KeyName,
        _: Option<metrics::Unit>,
        _: metrics::SharedString,
    ) {
    }
    fn register_counter(&self, key: &metrics::Key, _: &metrics::Metadata<'_>) -> metrics::Counter {
        let c = self
            .counters
            .lock()
            .unwrap()
            .entry(key.clone())
            .or_default()
            .clone();
        metrics::Counter::from_arc(c)
    }
    fn register_gauge(&self, key: &metrics::Key, _: &metrics::Metadata<'_>) -> metrics::Gauge {
        let g = self
            .gauges
            .lock()
            .unwrap()
            .entry(key.clone())
            .or_default()
            .clone();
        metrics::Gauge::from_arc(g)
    }
    fn register_histogram(
        &self,
        key: &metrics::Key,
        _: &metrics::Metadata<'_>,
    ) -> metrics::Histogram {
        let h = self
            .histograms
            .lock()
            .unwrap()
            .entry(key.clone())
            .or_default()
            .clone();
        metrics::Histogram::from_arc(h)
    }
}

static RECORDER: OnceLock<&'static TestRecorder> = OnceLock::new();

/// The recorder of this test binary, installed on first use.
pub fn recorder() -> &'static TestRecorder {
    RECORDER.get_or_init(|| {
        let recorder: &'static TestRecorder = Box::leak(Box::default());
        metrics::set_global_recorder(recorder).expect("the only recorder of this binary");
        recorder
    })
}

/// Whether [`recorder`] was called in this binary.
pub fn installed() -> bool {
    RECORDER.get().is_some()
}

/// `key`'s name and labels other than `schema`, if its schema is `schema`.
fn of_schema(key: &metrics::Key, schema: &str) -> Option<(String, Vec<(String, String)>)> {
    let mut labels: Vec<(String, String)> = key
        .labels()
        .map(|l| (l.key().to_string(), l.value().to_string()))
        .collect();
    if !labels.iter().any(|(k, v)| k == "schema" && v == schema) {
        return None;
    }
    labels.retain(|(k, _)| k != "schema");
    labels.sort();
    Some((key.name().to_string(), labels))
}

/// Current value of every metric of `schema`. A histogram reads as its
/// sample count.
pub fn metrics_of(schema: &str) -> Metrics {
    let r = recorder();
    let mut out = HashMap::new();
    for (key, c) in r.counters.lock().unwrap().iter() {
        if let Some(k) = of_schema(key, schema) {
            out.insert(k, c.load(Ordering::SeqCst) as f64);
        }
    }
    for (key, g) in r.gauges.lock().unwrap().iter() {
        if let Some(k) = of_schema(key, schema) {
            out.insert(k, f64::from_bits(g.load(Ordering::SeqCst)));
        }
    }
    for (key, h) in r.histograms.lock().unwrap().iter() {
        if let Some(k) = of_schema(key, schema) {
            out.insert(k, h.0.lock().unwrap().len() as f64);
        }
    }
    out
}

/// The value of metric `name` with exactly the labels `labels` (besides
/// `schema`).
pub fn get(m: &Metrics, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let mut labels: Vec<(String, String)> = labels
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    labels.sort();
    m.get(&(name.to_string(), labels)).copied()
}

/// Waits (bounded by [`super::wait::LIMIT`]) until `check` holds for the
/// metrics of `schema`; returns them.
pub async fn until(schema: &str, what: &str, check: impl Fn(&Metrics) -> bool) -> Metrics {
    let mut last = Metrics::new();
    let seen = super::wait::within(super::wait::LIMIT, || {
        last = metrics_of(schema);
        let holds = check(&last);
        async move { holds }
    })
    .await;
    if !seen {
        panic!("{what}: never observed; metrics of {schema}: {last:#?}");
    }
    last
}
