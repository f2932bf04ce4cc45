//! Captures WARN and ERROR events (duroxide's runtime, the providers) instead
//! of letting duroxide's default subscriber print them to stdout, so they
//! can be counted per measurement and summarised in the report.

use std::fmt::Write as _;
use std::sync::Mutex;
use tracing::field::{Field, Visit};
use tracing::subscriber::Interest;
use tracing::{Event, Level, Metadata, Subscriber};
use tracing_subscriber::layer::{Context, Layer, SubscriberExt};
use tracing_subscriber::util::SubscriberInitExt;

/// What was logged during one measurement.
#[derive(Debug, Clone, Default)]
pub struct Captured {
    pub warnings: usize,
    pub errors: usize,
    /// Up to three distinct messages (first seen first).
    pub examples: Vec<String>,
}

impl Captured {
    pub fn total(&self) -> usize {
        self.warnings + self.errors
    }

    /// "none", or "N warnings, M errors; e.g. ...".
    pub fn describe(&self, max_len: usize) -> String {
        if self.total() == 0 {
            return "none".into();
        }
        let mut s = format!("{} warnings, {} errors", self.warnings, self.errors);
        if let Some(first) = self.examples.first() {
            let ex: String = first.chars().take(max_len).collect();
            let _ = write!(s, "; e.g. {ex}");
            if first.chars().count() > max_len {
                s.push_str("...");
            }
        }
        s
    }
}

static CURRENT: Mutex<Option<Captured>> = Mutex::new(None);

struct Capture;

fn interesting(meta: &Metadata<'_>) -> bool {
    // More verbose levels compare greater.
    *meta.level() <= Level::WARN
}

struct Message(String);

impl Visit for Message {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if !self.0.is_empty() {
            self.0.push(' ');
        }
        if field.name() == "message" {
            let _ = write!(self.0, "{value:?}");
        } else {
            let _ = write!(self.0, "{}={value:?}", field.name());
        }
    }
}

impl<S: Subscriber> Layer<S> for Capture {
    fn register_callsite(&self, meta: &'static Metadata<'static>) -> Interest {
        if interesting(meta) {
            Interest::always()
        } else {
            Interest::never()
        }
    }

    fn enabled(&self, meta: &Metadata<'_>, _ctx: Context<'_, S>) -> bool {
        interesting(meta)
    }

    fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
        let meta = event.metadata();
        if !interesting(meta) {
            return;
        }
        let Ok(mut current) = CURRENT.lock() else {
            return;
        };
        let Some(c) = current.as_mut() else {
            // Outside a measurement: show it rather than lose it.
            let mut m = Message(String::new());
            event.record(&mut m);
            eprintln!("{} {}: {}", meta.level(), meta.target(), m.0);
            return;
        };
        if *meta.level() == Level::ERROR {
            c.errors += 1;
        } else {
            c.warnings += 1;
        }
        if c.examples.len() < 3 {
            let mut m = Message(String::new());
            event.record(&mut m);
            let line = format!("{} {}: {}", meta.level(), meta.target(), m.0);
            // Distinct by the first 60 characters (messages differ in ids).
            let key: String = line.chars().take(60).collect();
            if !c.examples.iter().any(|e| e.starts_with(&key)) {
                c.examples.push(line);
            }
        }
    }
}

/// Installs the capturing subscriber (before any duroxide runtime starts,
/// so that duroxide's own stdout subscriber is not installed).
pub fn install() {
    let _ = tracing_subscriber::registry().with(Capture).try_init();
}

/// Starts capturing for a new measurement (discarding anything pending).
pub fn begin() {
    if let Ok(mut c) = CURRENT.lock() {
        *c = Some(Captured::default());
    }
}

/// Stops capturing and returns what was logged since [`begin`].
pub fn end() -> Captured {
    CURRENT
        .lock()
        .ok()
        .and_then(|mut c| c.take())
        .unwrap_or_default()
}

/// Prints what was logged per measurement, one line each (or one "none").
pub fn report(rows: &[(String, Captured)]) {
    if rows.iter().all(|(_, c)| c.total() == 0) {
        println!("  warnings/errors logged by duroxide and the providers: none");
        return;
    }
    println!("  warnings/errors logged by duroxide and the providers:");
    let width = rows.iter().map(|(l, _)| l.len()).max().unwrap_or(0);
    for (label, c) in rows {
        println!("    {label:<width$}  {}", c.describe(160));
    }
}
