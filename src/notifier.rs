//! Long-poll wake-ups: one dedicated connection LISTENs on the store's
//! channel and wakes idle fetchers when work is committed.
//!
//! The SQL functions `pg_notify` the channel with payload `o` (orchestrator
//! queue) or `w` (worker queue) when they commit work that is visible at
//! once. Notifications are delivered at commit, so a woken fetcher always
//! finds the work (unless another fetcher took it first).
//!
//! The listener task belongs to the provider and is aborted when the provider
//! is dropped. If its connection is lost it reconnects; until it has, waiters
//! re-check the queue every reconnect delay, and after it has, every waiter
//! is woken once, so a notification sent while it was down is never missed.

use std::future::poll_fn;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio_postgres::AsyncMessage;

/// Wake-up signals shared by the listener task and the fetchers.
#[derive(Debug, Default)]
pub(crate) struct Signals {
    pub(crate) orchestrator: Notify,
    pub(crate) worker: Notify,
    connected: AtomicBool,
}

impl Signals {
    /// Whether the LISTEN connection is up (notifications will arrive).
    pub(crate) fn connected(&self) -> bool {
        self.connected.load(Ordering::Acquire)
    }

    fn wake_all(&self) {
        self.orchestrator.notify_waiters();
        self.worker.notify_waiters();
    }
}

/// The running listener; aborts its task on drop.
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
    tls: postgres_native_tls::MakeTlsConnector,
    channel: String,
    signals: Arc<Signals>,
    reconnect_delay: Duration,
) -> Listener {
    let task = tokio::spawn(async move {
        // The channel is derived from a validated schema name (hex digits).
        let listen = format!("LISTEN {channel}");
        loop {
            if let Err(e) = listen_once(&config, tls.clone(), &listen, &signals).await {
                tracing::warn!(target: "duroxide_postgres", error = %e, "LISTEN connection lost; reconnecting");
            }
            signals.connected.store(false, Ordering::Release);
            signals.wake_all();
            tokio::time::sleep(reconnect_delay).await;
        }
    });
    Listener { task }
}

async fn listen_once(
    config: &tokio_postgres::Config,
    tls: postgres_native_tls::MakeTlsConnector,
    listen: &str,
    signals: &Signals,
) -> Result<(), tokio_postgres::Error> {
    let (client, mut connection) = config.connect(tls).await?;
    let subscribe = client.batch_execute(listen);
    tokio::pin!(subscribe);
    let mut subscribed = false;
    loop {
        tokio::select! {
            result = &mut subscribe, if !subscribed => {
                result?;
                subscribed = true;
                signals.connected.store(true, Ordering::Release);
                // Work may have been committed while we were not listening.
                signals.wake_all();
            }
            message = poll_fn(|cx| connection.poll_message(cx)) => match message {
                Some(Ok(AsyncMessage::Notification(n))) => match n.payload() {
                    "o" => signals.orchestrator.notify_waiters(),
                    "w" => signals.worker.notify_waiters(),
                    _ => signals.wake_all(),
                },
                Some(Ok(_)) => {}
                Some(Err(e)) => return Err(e),
                None => return Ok(()),
            },
        }
    }
}
