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
//! on its own connection. Notifications it sent itself are ignored when they
//! come back. The payload names the queue and how many waiters to wake
//! (`wakeups.rs`).
//! (Enqueues from clients, which may run without a listener, still notify
//! inside their transaction.)
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
    let listen = format!("LISTEN {channel}; SELECT pg_backend_pid()");
    let subscribe = client.simple_query(&listen);
    tokio::pin!(subscribe);
    let mut own_pid: Option<i32> = None;
    let mut sending: Option<Sending<'_>> = None;
    loop {
        tokio::select! {
            result = &mut subscribe, if own_pid.is_none() => {
                own_pid = Some(backend_pid(&result?));
                signals.set_connected(true);
                on_listening();
                // Work may have been committed while we were not listening,
                // and notifications may be waiting to go out.
                signals.wake_all();
                signals.outgoing.notify_one();
            }
            _ = signals.outgoing.notified(), if own_pid.is_some() && sending.is_none() => {
                if let Some(statement) = signals.take_outgoing(channel) {
                    sending = Some(Box::pin(async move { client.batch_execute(&statement).await }));
                }
            }
            result = async { sending.as_mut().expect("guarded").await }, if sending.is_some() => {
                sending = None;
                result?;
            }
            message = poll_fn(|cx| connection.poll_message(cx)) => match message {
                Some(Ok(AsyncMessage::Notification(n))) => {
                    if Some(n.process_id()) == own_pid {
                        continue; // ours: this process was woken when it committed
                    }
                    signals.received(n.payload());
                }
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

/// The backend PID from the reply to `LISTEN ...; SELECT pg_backend_pid()`.
fn backend_pid(messages: &[tokio_postgres::SimpleQueryMessage]) -> i32 {
    messages
        .iter()
        .find_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::Row(row) => row.get(0).and_then(|v| v.parse().ok()),
            _ => None,
        })
        .unwrap_or(0)
}
