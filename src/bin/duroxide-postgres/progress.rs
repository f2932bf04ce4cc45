//! Progress of long commands: an animated line on a terminal (indicatif, on
//! stderr), nothing extra when the output is a pipe or a file, where the
//! commands print plain lines instead.

use indicatif::{ProgressBar, ProgressStyle};
use std::io::IsTerminal;
use std::time::Duration;

/// Whether progress is drawn: stderr is a terminal.
pub fn on_terminal() -> bool {
    std::io::stderr().is_terminal()
}

/// A spinner with a message, drawn only on a terminal.
pub struct Spinner(Option<ProgressBar>);

impl Spinner {
    /// Starts a spinner saying `message` (on a terminal; otherwise a no-op).
    pub fn start(message: &str) -> Self {
        if !on_terminal() {
            return Spinner(None);
        }
        let bar = ProgressBar::new_spinner();
        bar.set_style(
            ProgressStyle::with_template("{spinner} {msg} ({elapsed})")
                .unwrap_or_else(|_| ProgressStyle::default_spinner()),
        );
        bar.set_message(message.to_string());
        bar.enable_steady_tick(Duration::from_millis(100));
        Spinner(Some(bar))
    }

    /// Replaces the message.
    pub fn set(&self, message: String) {
        if let Some(bar) = &self.0 {
            bar.set_message(message);
        }
    }

    /// Whether it draws (so the caller prints plain lines when it does not).
    pub fn drawn(&self) -> bool {
        self.0.is_some()
    }

    /// Removes the line.
    pub fn finish(self) {
        if let Some(bar) = self.0 {
            bar.finish_and_clear();
        }
    }
}
