//! The backplane carries room traffic between server instances: an instance
//! publishes each room event once, and every instance with local members in
//! that room delivers it to them.
//!
//! The in-process backplane ships now (one instance); Redis and NATS plug in
//! behind the same trait.

pub mod control;
mod envelope;
mod local;
mod nats;
mod outage;
mod redis;
mod subscriptions;

pub use envelope::Envelope;
pub use local::LocalBackplane;
pub use nats::NatsBackplane;
pub use redis::RedisBackplane;

use crate::domain::User;
use crate::domain::validate::RoomName;
use crate::metrics::Histogram;
use crate::telemetry::trace::{self, TraceParent};
use chat_proto::EncodedFrame;
use futures::future::BoxFuture;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;

/// One event for a room, already encoded as the `ServerFrame` its members
/// receive, so the delivering instance never re-encodes it.
#[derive(Clone, Debug)]
pub struct RoomFrame {
    /// The room.
    pub room: RoomName,
    /// For messages, the room sequence number; `None` for presence events.
    pub sequence: Option<u64>,
    /// The encoded `ServerFrame`.
    pub frame: EncodedFrame,
    /// For messages, when the store acknowledged it (Unix microseconds, on
    /// the clock of the instance that stored it); 0: not a message, or
    /// unknown. Feeds the delivery latency metric.
    pub acked_at_unix_us: u64,
    /// The trace the event continues, when traces are on (the span that
    /// published it).
    pub trace: Option<TraceParent>,
    /// A typing announcement instead of a frame (`frame` is empty): each
    /// instance's rooms turn them into their members' typing events
    /// (`hub::typing`).
    pub typing: Option<TypingNote>,
}

/// Someone is typing in a room, or stopped.
#[derive(Clone, Debug, PartialEq)]
pub struct TypingNote {
    /// Who.
    pub user: User,
    /// Typing (true) or stopped (false).
    pub typing: bool,
}

/// Receives the room frames a backplane brings in, for local delivery.
pub trait FrameSink: Send + Sync + 'static {
    /// Hands `frame` to this instance's members of its room.
    fn deliver(&self, frame: &RoomFrame);
}

/// A backplane operation failed.
#[derive(Debug, thiserror::Error)]
pub enum BackplaneError {
    /// The backplane cannot be reached now (timeout, outage).
    #[error("backplane unavailable: {0}")]
    Unavailable(String),
    /// Redis refused or failed a command.
    #[error("backplane unavailable: {0}")]
    Redis(#[from] ::redis::RedisError),
    /// NATS refused or failed an operation.
    #[error("backplane unavailable: {0}")]
    Nats(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// `redis.url` or `nats.url` is not usable.
    #[error("{setting} {url}: not usable")]
    Url {
        /// The setting (`redis.url`, `nats.url`).
        setting: &'static str,
        /// The URL with its credentials redacted.
        url: String,
        /// What the client library said.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The backplane's configuration is unusable.
    #[error("backplane configuration: {0}")]
    Config(String),
}

impl BackplaneError {
    /// A NATS failure, its cause kept.
    pub fn nats(e: impl std::error::Error + Send + Sync + 'static) -> BackplaneError {
        BackplaneError::Nats(Box::new(e))
    }
}

impl BackplaneStats {
    /// The counts by name, as `/health/ready` shows them.
    pub fn snapshot(&self) -> std::collections::BTreeMap<&'static str, u64> {
        use std::sync::atomic::Ordering::Relaxed;
        [
            ("published", self.published.load(Relaxed)),
            ("publish_failed", self.publish_failed.load(Relaxed)),
            ("received", self.received.load(Relaxed)),
            ("malformed", self.malformed.load(Relaxed)),
            ("dropped", self.dropped.load(Relaxed)),
            ("outages", self.outages.load(Relaxed)),
            ("control_dropped", self.control_dropped.load(Relaxed)),
            ("reconnects", self.reconnects.load(Relaxed)),
        ]
        .into_iter()
        .collect()
    }
}

/// What a backplane counted, for logs and (later) metrics. Nothing is
/// buffered between the backplane and the rooms, so overflow shows up as
/// failed publishes, not as a growing queue.
#[derive(Debug, Default)]
pub struct BackplaneStats {
    /// Room events published.
    pub published: AtomicU64,
    /// Publishes that failed (backplane away or too slow); the event
    /// reached local members only.
    pub publish_failed: AtomicU64,
    /// Room events received and delivered locally.
    pub received: AtomicU64,
    /// Received messages that could not be decoded, dropped.
    pub malformed: AtomicU64,
    /// Times the backplane client dropped messages it could not buffer
    /// (a NATS slow-consumer event).
    pub dropped: AtomicU64,
    /// Times the backplane connection was lost.
    pub outages: AtomicU64,
    /// Control messages dropped because the cluster task lagged (each
    /// triggers a presence resynchronisation).
    pub control_dropped: AtomicU64,
    /// Times the backplane connection came back after an outage.
    pub reconnects: AtomicU64,
    /// How long publishing a room event took (until the backplane server
    /// had it).
    pub publish_latency: Histogram,
    /// From the store's acknowledgement on the publishing instance to the
    /// receipt here, for events from other instances (clock differences
    /// included).
    pub receive_delay: Histogram,
}

impl BackplaneStats {
    /// Hands `frame`, received from another instance, to the local members
    /// of instance `server_id`: counts it, records how long it travelled,
    /// and continues its trace.
    pub fn deliver_received(&self, server_id: &str, sink: &dyn FrameSink, frame: &RoomFrame) {
        self.received
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        if frame.acked_at_unix_us > 0 {
            let micros = chat_util::now_unix_us().saturating_sub(frame.acked_at_unix_us);
            self.receive_delay
                .observe(std::time::Duration::from_micros(micros));
        }
        match frame.trace {
            Some(parent) => {
                trace::receive_span(parent, server_id, frame.sequence)
                    .in_scope(|| sink.deliver(frame));
            }
            None => sink.deliver(frame),
        }
    }
}

/// Who publishes: this instance's id, and its process's random incarnation
/// (the hub's, see `Control::incarnation`), stamped on every room event.
#[derive(Clone, Debug)]
pub struct Origin {
    /// The instance's `server_id`.
    pub id: Arc<str>,
    /// Random per process, never 0.
    pub incarnation: u64,
}

impl Origin {
    /// Whether an event stamped `id` and `incarnation` is this process's own
    /// echo (delivered to local members when it was published). Another
    /// process with the same id (a misconfiguration, detected and logged by
    /// the cluster task) is not: its events are delivered. An incarnation of
    /// 0 comes from a sender that predates them: judged by the id alone.
    pub fn is_echo(&self, id: &str, incarnation: u64) -> bool {
        id == &*self.id && (incarnation == self.incarnation || incarnation == 0)
    }
}

/// The default bound of [`Backplane::max_control_bytes`]: well under
/// NATS's default `max_payload` (1 MiB), and small enough that instances
/// exchanging snapshots stay far from Redis's pub/sub output-buffer limits.
pub const MAX_CONTROL_BYTES: usize = 256 * 1024;

/// Carries room frames between instances.
pub trait Backplane: Send + Sync + 'static {
    /// Short name for logs and the readiness report.
    fn name(&self) -> &'static str;

    /// Starts receiving `room`'s frames; called when the room gets its first
    /// local member. Returns once frames published afterwards will arrive.
    fn subscribe<'a>(&'a self, room: &'a RoomName) -> BoxFuture<'a, Result<(), BackplaneError>>;

    /// Stops receiving `room`'s frames; called when its last local member left.
    fn unsubscribe<'a>(&'a self, room: &'a RoomName) -> BoxFuture<'a, Result<(), BackplaneError>>;

    /// Sends `frame` to every instance subscribed to its room, this one
    /// included. One call per event, never one per recipient.
    fn publish(&self, frame: RoomFrame) -> BoxFuture<'_, Result<(), BackplaneError>>;

    /// Sends an encoded [`control::Control`] to every other instance.
    fn publish_control(&self, control: bytes::Bytes) -> BoxFuture<'_, Result<(), BackplaneError>>;

    /// The largest control message to publish: bigger ones (presence
    /// snapshots) are sent in parts of at most this size.
    fn max_control_bytes(&self) -> usize {
        MAX_CONTROL_BYTES
    }

    /// Whether the backplane is connected, for readiness.
    fn is_healthy(&self) -> bool;
}
