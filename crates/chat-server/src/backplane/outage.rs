//! One backplane's outage bookkeeping: whether it is connected (readiness),
//! when the current outage began, and the counts, log lines and presence
//! exchange that go with losing and regaining the connection.
//!
//! The Redis supervisor and the NATS client's connection events both report
//! here, so both backplanes follow the same rules:
//! - an outage is counted (`outages`) and logged once, when a connection
//!   that was up is lost; further losses and failed attempts during it are
//!   only logged at debug level;
//! - a connection that returns after an outage counts a `reconnects`
//!   before readiness returns, so a ready instance shows it;
//! - failing to connect before the first connection is no outage (nothing
//!   counted), but once reported as "unreachable" its end is logged as a
//!   recovery;
//! - every (re)connection asks for a presence exchange
//!   ([`ControlEvent::Connected`]).
//!
//! The log lines go out under the backplane's own module (target), as they
//! did before this bookkeeping was shared, so log filters such as
//! `chat_server::backplane::redis=debug` keep showing them.

use super::BackplaneStats;
use super::control::{ControlEvent, ControlSender};
use chat_util::lock;
use std::fmt::Display;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Which backplane the bookkeeping is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Kind {
    /// [`super::RedisBackplane`].
    Redis,
    /// [`super::NatsBackplane`].
    Nats,
}

impl Kind {
    /// The backplane's name in log lines.
    fn name(self) -> &'static str {
        match self {
            Kind::Redis => "redis",
            Kind::Nats => "nats",
        }
    }
}

/// Logs at `$level` (a `tracing` macro) under the target of `$kind`'s
/// module. The target of a log line is fixed where it is written, hence
/// one call per backplane.
macro_rules! log {
    ($kind:expr, $level:ident, $($arg:tt)+) => {
        match $kind {
            Kind::Redis => tracing::$level!(target: super::redis::LOG_TARGET, $($arg)+),
            Kind::Nats => tracing::$level!(target: super::nats::LOG_TARGET, $($arg)+),
        }
    };
}

/// Where a backplane's connection stands.
#[derive(Clone, Copy, Debug)]
enum State {
    /// Never connected yet. `unreachable_since`: when a failed first
    /// attempt was reported as "unreachable" (the NATS client reports none).
    Starting { unreachable_since: Option<Instant> },
    /// Connected.
    Up,
    /// Was connected; lost since `since`.
    Down { since: Instant },
}

/// What a connection ended, as [`Outage::connected`] reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Connected {
    /// Nothing: the first connection at the first attempt (or a repeated
    /// report of one).
    NoOutage,
    /// The first connection, after failed attempts that began this long
    /// ago; not a reconnect.
    Reached(Duration),
    /// The connection came back after an outage this long; a reconnect.
    Recovered(Duration),
}

/// The outage bookkeeping of one backplane.
pub(super) struct Outage {
    /// Which backplane: names it in log lines, and picks their target.
    kind: Kind,
    /// The configured address, for the log lines about reaching it.
    url: String,
    /// Whether the connection is up: readiness reads it and publishes fail
    /// fast without it. Apart from `state` so reading it takes no lock.
    healthy: AtomicBool,
    /// Where the connection stands. The lock also makes each transition
    /// (state, counts, readiness, log line, presence event) one step.
    state: Mutex<State>,
    /// Where outages and reconnects are counted.
    stats: Arc<BackplaneStats>,
    /// Told after every (re)connection, so presence is exchanged afresh.
    control: ControlSender,
}

impl Outage {
    /// Bookkeeping for a backplane of `kind` at `url`, not connected yet.
    pub(super) fn new(
        kind: Kind,
        url: String,
        stats: Arc<BackplaneStats>,
        control: ControlSender,
    ) -> Outage {
        Outage {
            kind,
            url,
            healthy: AtomicBool::new(false),
            state: Mutex::new(State::Starting {
                unreachable_since: None,
            }),
            stats,
            control,
        }
    }

    /// Whether the backplane is connected.
    pub(super) fn is_healthy(&self) -> bool {
        self.healthy.load(Ordering::SeqCst)
    }

    /// The backplane is connected (again): counts a reconnect if it ends an
    /// outage, marks it healthy, logs, and asks for a presence exchange.
    /// `rooms`: how many rooms the backplane resubscribed itself (Redis);
    /// `None` when its client does that unseen (NATS).
    pub(super) fn connected(&self, rooms: Option<usize>) -> Connected {
        let mut state = lock(&self.state);
        let ended = match std::mem::replace(&mut *state, State::Up) {
            State::Down { since } => Connected::Recovered(since.elapsed()),
            State::Starting {
                unreachable_since: Some(since),
            } => Connected::Reached(since.elapsed()),
            State::Starting {
                unreachable_since: None,
            }
            | State::Up => Connected::NoOutage,
        };
        // Counted before readiness returns, so a ready instance shows it.
        if matches!(ended, Connected::Recovered(_)) {
            self.stats.reconnects.fetch_add(1, Ordering::Relaxed);
        }
        self.healthy.store(true, Ordering::SeqCst);
        let (kind, name) = (self.kind, self.kind.name());
        match (ended, rooms) {
            (Connected::NoOutage, _) => {
                log!(kind, info, url = %self.url, "{name} backplane connected")
            }
            (Connected::Reached(outage) | Connected::Recovered(outage), Some(rooms)) => log!(
                kind,
                warn,
                ?outage,
                rooms,
                "{name} backplane recovered; resubscribed every room"
            ),
            (Connected::Reached(outage) | Connected::Recovered(outage), None) => {
                log!(kind, warn, ?outage, "{name} backplane recovered")
            }
        }
        self.control.send(ControlEvent::Connected, &self.stats);
        ended
    }

    /// The connection is gone: marks the backplane unhealthy and, if it was
    /// up, starts an outage (counted and logged once). Returns whether an
    /// outage started.
    pub(super) fn lost(&self) -> bool {
        let mut state = lock(&self.state);
        self.healthy.store(false, Ordering::SeqCst);
        if !matches!(*state, State::Up) {
            return false;
        }
        *state = State::Down {
            since: Instant::now(),
        };
        self.stats.outages.fetch_add(1, Ordering::Relaxed);
        log!(
            self.kind,
            warn,
            "{} backplane lost: serving local members only; messages to other instances are not delivered until it returns",
            self.kind.name()
        );
        true
    }

    /// Attempt number `attempt` to connect failed with `error`: the first
    /// failure before any connection is reported at warning level, the
    /// others (and those during an outage, already reported) at debug
    /// level.
    pub(super) fn attempt_failed(&self, error: &dyn Display, attempt: u32) {
        let mut state = lock(&self.state);
        let (kind, name) = (self.kind, self.kind.name());
        match *state {
            State::Starting {
                unreachable_since: None,
            } => {
                *state = State::Starting {
                    unreachable_since: Some(Instant::now()),
                };
                log!(kind, warn, url = %self.url, error = %error, "{name} backplane unreachable; retrying with backoff");
            }
            // `Up` cannot fail an attempt: attempts are made only after
            // the connection was declared lost.
            State::Starting { .. } | State::Down { .. } | State::Up => {
                log!(kind, debug, error = %error, attempt, "{name} reconnect attempt failed")
            }
        }
    }

    /// The backplane shuts down: unhealthy from now on, no outage counted.
    pub(super) fn stopped(&self) {
        self.healthy.store(false, Ordering::SeqCst);
    }
}

#[cfg(test)]
mod tests {
    use super::super::control::control_queue;
    use super::*;
    use tokio::sync::mpsc::Receiver;

    fn outage() -> (Outage, Receiver<ControlEvent>) {
        let (control, events) = control_queue();
        let stats = Arc::new(BackplaneStats::default());
        let outage = Outage::new(Kind::Redis, "redis://test".into(), stats, control);
        (outage, events)
    }

    /// (outages, reconnects) counted so far.
    fn counts(outage: &Outage) -> (u64, u64) {
        let stats = &outage.stats;
        (
            stats.outages.load(Ordering::Relaxed),
            stats.reconnects.load(Ordering::Relaxed),
        )
    }

    /// How many presence exchanges were asked for.
    fn exchanges(events: &mut Receiver<ControlEvent>) -> usize {
        std::iter::from_fn(|| events.try_recv().ok())
            .filter(|e| matches!(e, ControlEvent::Connected))
            .count()
    }

    #[test]
    fn a_first_connection_is_no_outage() {
        let (outage, mut events) = outage();
        assert!(!outage.is_healthy());
        assert_eq!(outage.connected(None), Connected::NoOutage);
        assert!(outage.is_healthy());
        assert_eq!(counts(&outage), (0, 0));
        assert_eq!(exchanges(&mut events), 1);
    }

    #[test]
    fn an_outage_is_counted_once_and_its_end_is_a_reconnect() {
        let (outage, mut events) = outage();
        outage.connected(Some(3));
        assert!(outage.lost());
        assert!(!outage.is_healthy());
        // Further losses and failed attempts belong to the same outage.
        assert!(!outage.lost());
        outage.attempt_failed(&"refused", 0);
        outage.attempt_failed(&"refused", 1);
        assert_eq!(counts(&outage), (1, 0));
        assert!(matches!(outage.connected(Some(3)), Connected::Recovered(_)));
        assert!(outage.is_healthy());
        assert_eq!(counts(&outage), (1, 1));
        assert_eq!(exchanges(&mut events), 2);
        // The next loss is a new outage.
        assert!(outage.lost());
        assert_eq!(counts(&outage), (2, 1));
    }

    #[test]
    fn failing_before_the_first_connection_is_no_outage() {
        let (outage, _events) = outage();
        outage.attempt_failed(&"refused", 0);
        outage.attempt_failed(&"refused", 1);
        assert!(!outage.lost());
        assert!(!outage.is_healthy());
        assert_eq!(counts(&outage), (0, 0));
        // Reported as unreachable, so its end is reported too; but it was
        // no outage, so not a reconnect.
        assert!(matches!(outage.connected(None), Connected::Reached(_)));
        assert_eq!(counts(&outage), (0, 0));
    }

    #[test]
    fn a_loss_before_the_first_connection_is_no_outage() {
        let (outage, _events) = outage();
        assert!(!outage.lost());
        assert_eq!(outage.connected(None), Connected::NoOutage);
        assert_eq!(counts(&outage), (0, 0));
    }

    #[test]
    fn a_repeated_connection_report_changes_nothing() {
        let (outage, mut events) = outage();
        outage.connected(None);
        assert_eq!(outage.connected(None), Connected::NoOutage);
        assert_eq!(counts(&outage), (0, 0));
        // Each report still asks for a presence exchange.
        assert_eq!(exchanges(&mut events), 2);
    }

    #[test]
    fn stopping_leaves_it_unhealthy_without_an_outage() {
        let (outage, _events) = outage();
        outage.connected(None);
        outage.stopped();
        assert!(!outage.is_healthy());
        assert_eq!(counts(&outage), (0, 0));
    }
}
