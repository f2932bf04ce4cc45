//! Long-poll wake-ups: one dedicated connection LISTENs on the store's
//! channel, wakes idle fetchers when work is committed, and sends this
//! process's own notifications.
//!
//! Why notifications are not sent inside the committing transaction: a
//! PostgreSQL transaction that has called `pg_notify` holds a cluster-wide
//! lock from commit until its WAL is flushed, so such commits cannot share a
//! flush (measured in `docs/benchmarks.md`: about 7,000 vs 24,000 one-row
//! commits/s at 8 clients). So after an ack commits, the provider wakes the
//! fetchers of its own process directly and asks this task to tell other
//! processes; the task coalesces those requests into one `NOTIFY` at a time
//! on its own connection, and only while another process listens
//! (`peers.rs`: how processes learn of each other on the channel, and the
//! payloads). Notifications this provider sent itself are ignored when they
//! come back. (A client's enqueue, whose process may exit right after the
//! call, notifies inside its own transaction instead.)
//!
//! Behind a transaction pooler without a direct `listen_url` there is no
//! LISTEN connection; [`relay`] then sends this process's notifications
//! through the pool.
//!
//! The task belongs to the provider and is aborted when the provider is
//! dropped. If its connection is lost it reconnects; until it has, waiters
//! re-check the queue every reconnect delay, and after it has, every waiter
//! is woken once and pending notifications are sent, so nothing is missed.

use crate::credentials::Connector;
use crate::peers::HEARTBEAT;
use crate::telemetry::Target;
use crate::wakeups::Signals;
use std::future::poll_fn;
use std::sync::Arc;
use std::time::Duration;
use tokio::task::JoinHandle;
use tokio_postgres::AsyncMessage;

/// Without a LISTEN connection (behind a transaction pooler, no
/// `listen_url`): sends this process's notifications through the pool,
/// coalesced as the listener does, so that commits keep sharing WAL flushes
/// (see the module docs) and processes that listen are still woken. A
/// notification that cannot be sent is dropped with a warning: it only
/// hastens a wake-up, and waiters find the work at their next look.
pub(crate) fn relay(
    pool: deadpool_postgres::Pool,
    channel: String,
    signals: Arc<Signals>,
) -> Listener {
    let task = tokio::spawn(async move {
        loop {
            signals.outgoing.notified().await;
            let Some(statement) = signals.take_outgoing(&channel) else {
                continue;
            };
            // The simple protocol: one implicit transaction, nothing named,
            // so it passes a transaction pooler.
            let sent = match pool.get().await {
                Ok(client) => client
                    .batch_execute(&statement)
                    .await
                    .map_err(|e| e.to_string()),
                Err(e) => Err(e.to_string()),
            };
            if let Err(e) = sent {
                tracing::warn!(target: "duroxide_postgres", error = %e, "could not send a notification");
            }
        }
    });
    Listener { task }
}

/// The running listener (or relay); aborts its task on drop.
#[derive(Debug)]
pub(crate) struct Listener {
    task: JoinHandle<()>,
}

impl Drop for Listener {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Starts listening on `channel`.
pub(crate) fn start(
    config: tokio_postgres::Config,
    connector: Connector,
    channel: String,
    signals: Arc<Signals>,
    reconnect_delay: Duration,
    target: Arc<Target>,
) -> Listener {
    let task = tokio::spawn(async move {
        target.listener_connected(false);
        let mut was_connected = false;
        loop {
            let result = listen_once(&config, &connector, &channel, &signals, || {
                target.listener_connected(true);
                if was_connected {
                    target.listener_reconnected();
                }
                was_connected = true;
            })
            .await;
            if let Err(e) = result {
                tracing::warn!(target: "duroxide_postgres", error = %e, "LISTEN connection lost; reconnecting");
            }
            target.listener_connected(false);
            signals.set_connected(false);
            signals.wake_all();
            tokio::time::sleep(reconnect_delay).await;
        }
    });
    Listener { task }
}

async fn listen_once(
    config: &tokio_postgres::Config,
    connector: &Connector,
    channel: &str,
    signals: &Signals,
    mut on_listening: impl FnMut(),
) -> Result<(), crate::Error> {
    // A new connection each time: with a credential source, a fresh password.
    let (client, mut connection) = connector.connect(config).await?;
    let client = &client;
    // The channel is derived from a validated schema name (hex digits).
    let listen = format!("LISTEN {channel}");
    let subscribe = client.simple_query(&listen);
    tokio::pin!(subscribe);
    let mut listening = false;
    let mut sending: Option<Sending<'_>> = None;
    let mut heartbeat = tokio::time::interval(HEARTBEAT);
    heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            result = &mut subscribe, if !listening => {
                result?;
                listening = true;
                signals.set_connected(true);
                on_listening();
                // Tell the others we are here (their answers say who they
                // are: peers.rs).
                signals.hello();
                // Work may have been committed while we were not listening,
                // and notifications may be waiting to go out.
                signals.wake_all();
                signals.outgoing.notify_one();
            }
            _ = heartbeat.tick(), if listening => signals.here(),
            _ = signals.outgoing.notified(), if listening && sending.is_none() => {
                if let Some(statement) = signals.take_outgoing(channel) {
                    sending = Some(Box::pin(async move { client.batch_execute(&statement).await }));
                }
            }
            result = async { sending.as_mut().expect("guarded").await }, if sending.is_some() => {
                sending = None;
                result?;
            }
            message = poll_fn(|cx| connection.poll_message(cx)) => match message {
                Some(Ok(AsyncMessage::Notification(n))) => signals.received(n.payload()),
                Some(Ok(_)) => {}
                Some(Err(e)) => return Err(e.into()),
                None => return Ok(()),
            },
        }
    }
}

/// A NOTIFY in flight on the listener's connection.
type Sending<'a> = std::pin::Pin<
    Box<dyn std::future::Future<Output = Result<(), tokio_postgres::Error>> + Send + 'a>,
>;
