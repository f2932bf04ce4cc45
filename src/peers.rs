//! Which other processes listen on this store's channel, and the payloads
//! they exchange.
//!
//! A notification only matters to another process: this process wakes its
//! own fetchers directly when it commits (`wakeups.rs`). So a process that
//! knows it is alone on its store sends no notification at all, and a turn
//! costs the server exactly its two calls (issue 17: the notification after
//! each work-producing ack was a third statement per turn).
//!
//! How a process learns of the others, on the channel itself:
//!
//! * its listener, once LISTENing, says `hello`; every process that hears a
//!   `hello` answers `here`, so the newcomer learns of it at once;
//! * every listener says `here` every [`HEARTBEAT`]; a process not heard
//!   from for [`PEER_TTL`] (any payload counts) is taken to be gone;
//! * until [`DISCOVERY`] has passed since its own `hello`, and whenever its
//!   listener is down (or it has none: behind a transaction pooler without
//!   a `listen_url`), a process assumes others may listen and announces
//!   everything.
//!
//! Every payload ends with `@` and the sender's id (random per provider), so
//! a process tells its own notifications from others' whichever connection
//! sent them (a client's enqueue notifies from a pooled connection), and
//! ignores its own. A payload without a sender comes from a build older
//! than this protocol; it counts as a live peer all the same.
//!
//! What a missed `hello` costs: a process that joins while another commits
//! may miss that commit's announcement for the time the other needs to hear
//! the `hello` (microseconds to milliseconds); its waiters look when their
//! poll timeout ends, as for work written without a notification.

use crate::wakeups::{Queue, Wake};
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How often a listener says it is still there.
pub(crate) const HEARTBEAT: Duration = Duration::from_secs(10);
/// How long a process unheard of still counts as listening (three missed
/// heartbeats and some slack).
pub(crate) const PEER_TTL: Duration = Duration::from_secs(35);
/// How long after its `hello` a process waits for answers before it
/// believes it is alone.
pub(crate) const DISCOVERY: Duration = Duration::from_millis(200);

/// The sender id of payloads from builds without one.
const LEGACY: &str = "";

/// What a notification says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Message {
    /// Work committed to a queue: how many waiters it may wake.
    Work(Queue, Wake),
    /// A listener started: everybody answers [`Message::Here`].
    Hello,
    /// A listener is (still) there.
    Here,
}

impl Message {
    /// The payload of this message from `sender`.
    pub(crate) fn payload(self, sender: &str) -> String {
        let body = match self {
            Message::Work(queue, wake) => {
                let q = match queue {
                    Queue::Orchestrator => 'o',
                    Queue::Worker => 'w',
                };
                match wake {
                    Wake::Count(n) => format!("{q}:{n}"),
                    Wake::All => format!("{q}:*"),
                }
            }
            Message::Hello => "hello".to_string(),
            Message::Here => "here".to_string(),
        };
        format!("{body}@{sender}")
    }

    /// The sender and message of a payload. The sender is [`LEGACY`] for
    /// a payload without one; the message is `None` for a body this build
    /// does not know (the caller then wakes everything: an unknown sender's
    /// work is still work).
    pub(crate) fn parse(payload: &str) -> (&str, Option<Message>) {
        let (body, sender) = match payload.rsplit_once('@') {
            Some((body, sender)) => (body, sender),
            None => (payload, LEGACY),
        };
        let message = match body {
            "hello" => Some(Message::Hello),
            "here" => Some(Message::Here),
            _ => parse_work(body).map(|(q, w)| Message::Work(q, w)),
        };
        (sender, message)
    }
}

/// `o:3`, `w:*`; a bare `o` or `w` (the oldest builds) means all.
fn parse_work(body: &str) -> Option<(Queue, Wake)> {
    let (q, rest) = body.split_at_checked(1)?;
    let queue = match q {
        "o" => Queue::Orchestrator,
        "w" => Queue::Worker,
        _ => return None,
    };
    let wake = match rest {
        "" | ":*" => Wake::All,
        _ => Wake::Count(rest.strip_prefix(':')?.parse().ok()?),
    };
    Some((queue, wake))
}

/// The other processes heard on the channel, by sender id.
#[derive(Debug)]
pub(crate) struct Peers {
    /// This provider's sender id.
    own: String,
    heard: Mutex<HashMap<String, Instant>>,
    /// Until when this process assumes others may listen although it has
    /// heard none (set by its `hello`).
    discovering_until: Mutex<Option<Instant>>,
}

impl Default for Peers {
    fn default() -> Self {
        Self {
            own: format!("{:016x}", fastrand::u64(..)),
            heard: Mutex::new(HashMap::new()),
            discovering_until: Mutex::new(None),
        }
    }
}

impl Peers {
    /// This provider's sender id.
    pub(crate) fn own(&self) -> &str {
        &self.own
    }

    /// Our listener said `hello`: answers may come for [`DISCOVERY`].
    pub(crate) fn said_hello(&self) {
        *self.discovering_until.lock().expect("peers lock") = Some(Instant::now() + DISCOVERY);
    }

    /// A payload from `sender` arrived; returns false for our own.
    pub(crate) fn heard(&self, sender: &str) -> bool {
        if sender == self.own {
            return false;
        }
        self.heard
            .lock()
            .expect("peers lock")
            .insert(sender.to_string(), Instant::now());
        true
    }

    /// Whether another process may be listening. `listening`: our listener
    /// is up, so we would have heard it; without that, nobody can be ruled
    /// out.
    pub(crate) fn may_exist(&self, listening: bool) -> bool {
        if !listening {
            return true;
        }
        let now = Instant::now();
        if self
            .discovering_until
            .lock()
            .expect("peers lock")
            .is_some_and(|until| until > now)
        {
            return true;
        }
        let mut heard = self.heard.lock().expect("peers lock");
        heard.retain(|_, at| now.duration_since(*at) < PEER_TTL);
        !heard.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads_round_trip_and_old_payloads_mean_all() {
        for queue in [Queue::Orchestrator, Queue::Worker] {
            for wake in [Wake::Count(1), Wake::Count(7), Wake::All] {
                let m = Message::Work(queue, wake);
                assert_eq!(Message::parse(&m.payload("ab12")), ("ab12", Some(m)));
            }
        }
        for m in [Message::Hello, Message::Here] {
            assert_eq!(Message::parse(&m.payload("x")), ("x", Some(m)));
        }
        let all = |q| Some(Message::Work(q, Wake::All));
        assert_eq!(Message::parse("o"), (LEGACY, all(Queue::Orchestrator)));
        assert_eq!(Message::parse("w:*"), (LEGACY, all(Queue::Worker)));
        assert_eq!(
            Message::parse("o:3"),
            (
                LEGACY,
                Some(Message::Work(Queue::Orchestrator, Wake::Count(3)))
            )
        );
        assert_eq!(Message::parse("x:1@s").1, None);
        assert_eq!(Message::parse("o:-1@s").1, None);
        assert_eq!(Message::parse("").1, None);
    }

    #[test]
    fn alone_only_after_discovery_and_while_listening() {
        let peers = Peers::default();
        assert!(
            peers.may_exist(false),
            "without a listener nobody is ruled out"
        );
        assert!(
            !peers.may_exist(true),
            "listening, no hello said, nobody heard"
        );
        peers.said_hello();
        assert!(peers.may_exist(true), "answers to the hello may still come");
        *peers.discovering_until.lock().unwrap() = Some(Instant::now());
        assert!(!peers.may_exist(true), "nobody answered in time");
        assert!(!peers.heard(peers.own()), "our own payloads are not a peer");
        assert!(!peers.may_exist(true));
        assert!(peers.heard("other"));
        assert!(peers.may_exist(true));
        peers
            .heard
            .lock()
            .unwrap()
            .insert("other".into(), Instant::now() - PEER_TTL);
        assert!(!peers.may_exist(true), "a peer unheard for its TTL is gone");
    }
}
