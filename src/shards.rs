//! Sharding by root instance across several stores: the part of
//! `docs/scale-out.md` that needs no change to the stores themselves.
//!
//! An orchestration and everything its turns write (history, timers,
//! activities, sub-orchestrations with generated ids, their completions)
//! stay in the store whose runtime ran the turn, because duroxide's runtime
//! writes a turn's messages through the provider that fetched it. So a tree
//! of instances lives in one store, and spreading *root* instances over
//! several stores (schemas on one server, or schemas on several servers)
//! needs only two things from the application:
//!
//! * **routing** of client calls (start, raise, cancel, wait, status) to the
//!   store of the instance's root: [`Shards::index_of`] is a stable hash of
//!   the root id, so every process computes the same placement;
//! * **fan-out** of questions about the whole system
//!   ([`Shards::system_metrics`], [`Shards::queue_depths`],
//!   [`Shards::count_instances_by_status`], [`Shards::locate`]).
//!
//! Each store runs its own duroxide runtime (one per shard per process). The
//! number of shards is fixed for the life of the data (the hash maps an id
//! to `hash % n`): to grow, start with more logical shards (schemas) than
//! servers and move whole schemas between servers.
//!
//! ```no_run
//! # async fn example() -> Result<(), Box<dyn std::error::Error>> {
//! use duroxide_postgres::{PostgresProvider, Shards};
//! use std::sync::Arc;
//!
//! let mut stores = Vec::new();
//! for schema in ["shard_0", "shard_1", "shard_2", "shard_3"] {
//!     let url = "postgres://app@localhost/app";
//!     stores.push(Arc::new(PostgresProvider::new_with_schema(url, schema).await?));
//! }
//! let shards = Shards::new(stores)?;
//! let client = shards.client_for("order-42");
//! # let _ = client; Ok(()) }
//! ```

use std::collections::BTreeMap;
use std::sync::Arc;

use duroxide::providers::{ProviderAdmin, ProviderError, QueueDepths, SystemMetrics};
use sha2::{Digest, Sha256};

use crate::{Error, PostgresProvider};

/// The infix of the ids duroxide generates for sub-orchestrations:
/// `{parent}::sub::{n}` (duroxide's `SUB_ORCH_AUTO_PREFIX` behind the parent's id).
const CHILD_INFIX: &str = "::sub::";

/// A fixed, ordered set of stores with instances placed by root id.
#[derive(Clone, Debug)]
pub struct Shards {
    stores: Vec<Arc<PostgresProvider>>,
}

impl Shards {
    /// The shards, in placement order: the order is part of the placement and
    /// must be the same in every process.
    ///
    /// Fails with [`Error::Config`] when `stores` is empty, or when two of
    /// them are the same store (same schema on the same server): the ids
    /// routed to one would be visible through the other.
    pub fn new(stores: Vec<Arc<PostgresProvider>>) -> Result<Self, Error> {
        if stores.is_empty() {
            return Err(Error::Config("a shard set needs at least one store".into()));
        }
        for (i, a) in stores.iter().enumerate() {
            for b in &stores[..i] {
                if a.location() == b.location() {
                    return Err(Error::Config(format!(
                        "the same store appears twice in the shard set: {}",
                        a.location()
                    )));
                }
            }
        }
        Ok(Self { stores })
    }

    /// The stores, in placement order.
    pub fn stores(&self) -> &[Arc<PostgresProvider>] {
        &self.stores
    }

    /// The id of the root of `instance`'s tree as far as the id tells: the
    /// part before the first `::sub::` (ids duroxide generates for
    /// sub-orchestrations), else the id itself. A child started with an
    /// explicit id carries no trace of its parent: find it with
    /// [`locate`](Self::locate).
    pub fn root_of(instance: &str) -> &str {
        instance
            .find(CHILD_INFIX)
            .map_or(instance, |at| &instance[..at])
    }

    /// The shard of `instance`: the first 8 bytes of SHA-256 of its root id
    /// (big-endian) modulo the number of shards. Stable across processes,
    /// builds and platforms.
    pub fn index_of(&self, instance: &str) -> usize {
        let digest = Sha256::digest(Self::root_of(instance).as_bytes());
        let mut first = [0u8; 8];
        first.copy_from_slice(&digest[..8]);
        (u64::from_be_bytes(first) % self.stores.len() as u64) as usize
    }

    /// The store of `instance` (see [`index_of`](Self::index_of)).
    pub fn store_for(&self, instance: &str) -> &Arc<PostgresProvider> {
        &self.stores[self.index_of(instance)]
    }

    /// A duroxide client on the store of `instance`: start, raise, cancel
    /// and wait for that instance (and the children of its tree) through it.
    pub fn client_for(&self, instance: &str) -> duroxide::Client {
        duroxide::Client::new(self.store_for(instance).clone())
    }

    /// The shard that holds `instance`, asking every store (one call each,
    /// concurrently): for children started with an explicit id, which
    /// [`index_of`](Self::index_of) cannot place. `None` when no store
    /// knows the instance.
    pub async fn locate(&self, instance: &str) -> Result<Option<usize>, ProviderError> {
        let answers = self
            .fan_out(|store| async move { store.list_executions(instance).await })
            .await?;
        Ok(answers.iter().position(|executions| !executions.is_empty()))
    }

    /// [`ProviderAdmin::get_system_metrics`] summed over all shards.
    pub async fn system_metrics(&self) -> Result<SystemMetrics, ProviderError> {
        let all = self
            .fan_out(|store| async move { store.get_system_metrics().await })
            .await?;
        Ok(all
            .into_iter()
            .fold(SystemMetrics::default(), |sum, m| SystemMetrics {
                total_instances: sum.total_instances + m.total_instances,
                total_executions: sum.total_executions + m.total_executions,
                running_instances: sum.running_instances + m.running_instances,
                completed_instances: sum.completed_instances + m.completed_instances,
                failed_instances: sum.failed_instances + m.failed_instances,
                total_events: sum.total_events + m.total_events,
            }))
    }

    /// [`ProviderAdmin::get_queue_depths`] summed over all shards.
    pub async fn queue_depths(&self) -> Result<QueueDepths, ProviderError> {
        let all = self
            .fan_out(|store| async move { store.get_queue_depths().await })
            .await?;
        Ok(all
            .into_iter()
            .fold(QueueDepths::default(), |sum, d| QueueDepths {
                orchestrator_queue: sum.orchestrator_queue + d.orchestrator_queue,
                worker_queue: sum.worker_queue + d.worker_queue,
                timer_queue: sum.timer_queue + d.timer_queue,
            }))
    }

    /// [`PostgresProvider::count_instances_by_status`] summed over all
    /// shards, by status name.
    pub async fn count_instances_by_status(&self) -> Result<Vec<(String, u64)>, ProviderError> {
        let all = self
            .fan_out(|store| async move { store.count_instances_by_status().await })
            .await?;
        let mut sum = BTreeMap::<String, u64>::new();
        for (status, n) in all.into_iter().flatten() {
            *sum.entry(status).or_default() += n;
        }
        Ok(sum.into_iter().collect())
    }

    /// Runs `ask` on every store concurrently; the first error wins.
    async fn fan_out<'a, T, F, Fut>(&'a self, ask: F) -> Result<Vec<T>, ProviderError>
    where
        F: Fn(&'a PostgresProvider) -> Fut,
        Fut: std::future::Future<Output = Result<T, ProviderError>>,
    {
        futures_util::future::try_join_all(self.stores.iter().map(|s| ask(s))).await
    }
}
