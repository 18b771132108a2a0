//! The process's recent warnings and errors, for the operator's view
//! (`GET /admin/errors`): a layer that keeps the last [`KEPT`] events at
//! `WARN` or `ERROR` from any module, each cut to [`MAX_TEXT`] bytes, in
//! memory. It has its own level filter, not the log lines' (a module
//! silenced in the log still shows here, so `log.level = "error"` does not
//! hide warnings from the operator). It records what a log line would
//! say (which never holds a secret: they are `Secret`s) and never blocks:
//! a lock held for a push.

use chat_util::lock;
use std::collections::VecDeque;
use std::fmt::Write;
use std::sync::Mutex;
use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::Layer;
use tracing_subscriber::layer::Context;

/// Events kept.
pub const KEPT: usize = 100;

/// Longest text kept per event.
pub const MAX_TEXT: usize = 512;

/// The events kept, oldest first.
static RECENT: Mutex<VecDeque<Recent>> = Mutex::new(VecDeque::new());

/// A warning or an error, as logged.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Recent {
    /// When (Unix ms).
    pub time_unix_ms: i64,
    /// `WARN` or `ERROR`.
    pub level: &'static str,
    /// Where from (the module).
    pub target: String,
    /// Its message, then its fields as `name=value`.
    pub text: String,
}

/// The events kept, the newest first.
pub fn recent() -> Vec<Recent> {
    lock(&RECENT).iter().rev().cloned().collect()
}

/// The layer that keeps them.
pub fn layer<S: Subscriber>() -> impl Layer<S> {
    Keeper
}

struct Keeper;

impl<S: Subscriber> Layer<S> for Keeper {
    fn on_event(&self, event: &Event<'_>, _: Context<'_, S>) {
        let level = *event.metadata().level();
        if level > Level::WARN || event.metadata().target() == super::trace::TARGET {
            return;
        }
        let mut text = Text(String::new());
        event.record(&mut text);
        let mut text = text.0;
        if text.len() > MAX_TEXT {
            let mut cut = MAX_TEXT;
            while !text.is_char_boundary(cut) {
                cut -= 1;
            }
            text.truncate(cut);
            text.push('…');
        }
        let kept = Recent {
            time_unix_ms: chat_util::now_unix_ms(),
            level: if level == Level::ERROR {
                "ERROR"
            } else {
                "WARN"
            },
            target: event.metadata().target().to_string(),
            text,
        };
        let mut recent = lock(&RECENT);
        if recent.len() == KEPT {
            recent.pop_front();
        }
        recent.push_back(kept);
    }
}

/// An event's message, then its fields.
struct Text(String);

impl Visit for Text {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if self.0.len() > MAX_TEXT {
            return;
        }
        if field.name() == "message" {
            let fields = std::mem::take(&mut self.0);
            let _ = write!(self.0, "{value:?}");
            if !fields.is_empty() {
                self.0.push(' ');
                self.0.push_str(fields.trim_start());
            }
        } else {
            let _ = write!(self.0, " {}={value:?}", field.name());
        }
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.record_debug(field, &format_args!("{value}"));
        } else {
            self.record_debug(field, &value);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tracing_subscriber::layer::SubscriberExt;

    #[test]
    fn keeps_warnings_and_errors_newest_first_bounded_and_cut() {
        let subscriber = tracing_subscriber::registry().with(layer());
        tracing::subscriber::with_default(subscriber, || {
            tracing::info!("not kept");
            tracing::warn!(room = "lobby", count = 3, "first warning");
            tracing::error!(error = %"boom", "then an error");
            tracing::warn!("{}", "x".repeat(2 * MAX_TEXT));
        });
        let kept = recent();
        let ours: Vec<&Recent> = kept
            .iter()
            .filter(|r| r.target.ends_with("recent::tests"))
            .collect();
        assert!(ours.len() >= 3, "{kept:?}");
        assert!(ours[0].text.len() <= MAX_TEXT + '…'.len_utf8());
        assert_eq!(ours[1].level, "ERROR");
        assert_eq!(ours[1].text, "then an error error=boom");
        assert_eq!(ours[2].level, "WARN");
        assert_eq!(ours[2].text, "first warning room=\"lobby\" count=3");
        assert!(!kept.iter().any(|r| r.text.contains("not kept")));
        assert!(kept.len() <= KEPT);
    }
}
