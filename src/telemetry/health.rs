//! The periodic health sample: one statement (`health_sample` in
//! `sql/functions/inspect.sql`) every [`PostgresOptions::health_sample_interval`],
//! published as gauges. It runs only while a metrics recorder is installed
//! (checked before every sample, so a recorder installed after the provider
//! is picked up), and the task ends with the provider.
//!
//! [`PostgresOptions::health_sample_interval`]: crate::PostgresOptions::health_sample_interval

use super::names;
use crate::inspect::{parse_health, Health};
use crate::provider::{run_call, Call, Db};
use std::time::{Duration, Instant};
use tokio::task::JoinHandle;

/// The running sampler; aborts its task on drop.
#[derive(Debug)]
pub(crate) struct Sampler {
    task: JoinHandle<()>,
}

impl Drop for Sampler {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Starts sampling with `call` (the `health_sample` function) every
/// `interval`, counting messages fetched `attempts` times or more.
pub(crate) fn start(db: Db, call: Call, interval: Duration, attempts: u32) -> Sampler {
    let task = tokio::spawn(async move {
        let mut ticks = tokio::time::interval(interval);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticks.tick().await;
            if !super::recorder_installed() {
                continue;
            }
            sample(&db, &call, attempts).await;
        }
    });
    Sampler { task }
}

async fn sample(db: &Db, call: &Call, attempts: u32) {
    const OP: &str = "health_sample";
    let target = &db.target;
    let schema = target.schema().to_string();
    let started = Instant::now();
    let threshold = i64::from(attempts);
    let result = run_call(db, call, OP, &[&threshold])
        .await
        .map_err(|(e, _)| e)
        .and_then(|rows| parse_health(OP, &rows, attempts));
    metrics::histogram!(names::HEALTH_SAMPLE_SECONDS, "schema" => schema.clone())
        .record(started.elapsed().as_secs_f64());
    match result {
        Ok(health) => publish(&schema, &health),
        Err(e) => {
            metrics::counter!(names::HEALTH_SAMPLE_ERRORS, "schema" => schema).increment(1);
            tracing::warn!(target: "duroxide_postgres", error = %e, "health sample failed");
        }
    }
    target.pool_state(&db.pool);
}

fn publish(schema: &str, health: &Health) {
    for q in &health.queues {
        let labels = [
            ("schema", schema.to_string()),
            ("queue", q.queue.as_str().to_string()),
        ];
        metrics::gauge!(names::QUEUE_READY, &labels).set(q.ready as f64);
        metrics::gauge!(names::QUEUE_DELAYED, &labels).set(q.delayed as f64);
        metrics::gauge!(names::QUEUE_LEASED, &labels).set(q.leased as f64);
        metrics::gauge!(names::QUEUE_EXPIRED_LEASES, &labels).set(q.expired_leases as f64);
        metrics::gauge!(names::QUEUE_AT_ATTEMPTS, &labels).set(q.at_attempts as f64);
        metrics::gauge!(names::QUEUE_DEAD_TUPLES, &labels).set(q.dead_tuples as f64);
        // 0 when nothing is ready: the alert is on age, not on presence.
        let oldest = q.oldest_ready_age_ms.unwrap_or(0) as f64 / 1000.0;
        metrics::gauge!(names::QUEUE_OLDEST_READY_SECONDS, &labels).set(oldest);
    }
    let horizon = health
        .vacuum_holder
        .as_ref()
        .and_then(|h| h.transaction_age_ms)
        .unwrap_or(0) as f64
        / 1000.0;
    metrics::gauge!(names::VACUUM_HORIZON_AGE_SECONDS, "schema" => schema.to_string()).set(horizon);
    metrics::gauge!(names::NOTIFICATION_QUEUE_USAGE, "schema" => schema.to_string())
        .set(health.notification_queue_usage);
}
