//! The NATS backplane, for operators who already run NATS: each room is a
//! subject; an instance subscribes to the rooms it has local members in and
//! publishes each room event once.
//!
//! The `async-nats` client reconnects and resubscribes by itself; its
//! connection events drive readiness and the once-per-outage log lines.
//! Each room subscription is read by its own small task that decodes and
//! delivers on the spot. The client's buffers are bounded
//! (`subscription_capacity`, `client_capacity`); a subscription that
//! overflows loses messages, which NATS reports as a slow consumer and the
//! backplane counts.

use super::control::{Control, ControlEvent, ControlSender};
use super::outage::{Kind, Outage};
use super::subscriptions::{Edge, Subscriptions};
use super::{Backplane, BackplaneError, BackplaneStats, Envelope, FrameSink, Origin, RoomFrame};
use crate::config::NatsConfig;
use crate::config::redact_url;
use crate::domain::validate::RoomName;
use bytes::Bytes;
use futures::StreamExt;
use futures::future::{BoxFuture, FutureExt};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// Messages one subscription may hold before NATS drops (and we count).
const SUBSCRIPTION_CAPACITY: usize = 8192;
/// Commands the client may hold (e.g. publishes during a reconnect).
const CLIENT_CAPACITY: usize = 4096;

/// Where this backplane's log lines go, its outage bookkeeping's included.
pub(super) const LOG_TARGET: &str = module_path!();

/// Rooms over NATS subjects.
pub struct NatsBackplane {
    shared: Arc<Shared>,
}

/// What the backplane and its reader tasks share.
struct Shared {
    /// The NATS client; it reconnects and resubscribes by itself.
    client: async_nats::Client,
    /// Subject prefix and timeouts.
    config: NatsConfig,
    /// This instance's id: stamped on what it publishes, and how it
    /// recognises (and skips) its own echoes.
    origin: Origin,
    /// Where room events from other instances are delivered.
    sink: Arc<dyn FrameSink>,
    /// The counts `/health/ready` and `/metrics` show.
    stats: Arc<BackplaneStats>,
    /// Readiness, and the outage counts and log lines; the client's
    /// connection events drive it.
    outage: Arc<Outage>,
    /// Numbers the subjects of [`Shared::round_trip`].
    barriers: AtomicU64,
    /// Subscription count per room, with the task reading each subscribed
    /// room.
    rooms: tokio::sync::Mutex<Subscriptions<JoinHandle<()>>>,
    /// Ends the reader tasks.
    shutdown: CancellationToken,
}

/// Subject-safe form of a room name: `.` separates NATS tokens, so it
/// becomes `~`, which room names cannot contain.
fn subject_token(room: &RoomName) -> String {
    room.as_str().replace('.', "~")
}

impl NatsBackplane {
    /// Starts the backplane. Returns at once; the client connects (and
    /// reconnects) in the background and reports unhealthy until connected.
    pub async fn start(
        config: NatsConfig,
        origin: Origin,
        sink: Arc<dyn FrameSink>,
        control: ControlSender,
        stats: Arc<BackplaneStats>,
        shutdown: CancellationToken,
    ) -> Result<NatsBackplane, BackplaneError> {
        let outage = Arc::new(Outage::new(
            Kind::Nats,
            config.url.clone(),
            stats.clone(),
            control.clone(),
        ));
        let events = Events {
            outage: outage.clone(),
            stats: stats.clone(),
        };
        let client = async_nats::ConnectOptions::new()
            .name(format!("chat-server {}", origin.id))
            .connection_timeout(config.connect_timeout)
            .subscription_capacity(SUBSCRIPTION_CAPACITY)
            .client_capacity(CLIENT_CAPACITY)
            .retry_on_initial_connect()
            .event_callback(move |event| {
                let events = events.clone();
                async move { events.on(event) }
            })
            .connect(config.url.as_str())
            .await
            .map_err(|e| BackplaneError::Url {
                setting: "nats.url",
                url: redact_url(&config.url),
                source: Box::new(e),
            })?;
        let shared = Arc::new(Shared {
            client,
            config,
            origin,
            sink,
            stats,
            outage,
            barriers: AtomicU64::new(0),
            rooms: tokio::sync::Mutex::default(),
            shutdown,
        });
        shared.listen_control(control).await?;
        Ok(NatsBackplane { shared })
    }
}

/// Turns client events into readiness, log lines and counts.
#[derive(Clone)]
struct Events {
    /// Where connection events go.
    outage: Arc<Outage>,
    /// Where slow-consumer drops are counted.
    stats: Arc<BackplaneStats>,
}

impl Events {
    fn on(&self, event: async_nats::Event) {
        match event {
            // The client resubscribed every room itself, unseen.
            async_nats::Event::Connected => {
                self.outage.connected(None);
            }
            async_nats::Event::Disconnected => {
                self.outage.lost();
            }
            async_nats::Event::SlowConsumer(_) => {
                self.stats.dropped.fetch_add(1, Ordering::Relaxed);
            }
            other => tracing::debug!(event = %other, "nats client event"),
        }
    }
}

impl Shared {
    fn room_subject(&self, room: &RoomName) -> String {
        format!(
            "{}.room.{}",
            self.config.subject_prefix,
            subject_token(room)
        )
    }

    fn control_subject(&self) -> String {
        format!("{}.control", self.config.subject_prefix)
    }

    /// Reads the control subject for as long as the backplane runs.
    async fn listen_control(
        self: &Arc<Self>,
        control: ControlSender,
    ) -> Result<(), BackplaneError> {
        let mut subscriber = self
            .client
            .subscribe(self.control_subject())
            .await
            .map_err(BackplaneError::nats)?;
        let shared = self.clone();
        tokio::spawn(async move {
            loop {
                let message = tokio::select! {
                    _ = shared.shutdown.cancelled() => return,
                    m = subscriber.next() => m,
                };
                let Some(message) = message else { return };
                match <Control as prost::Message>::decode(message.payload) {
                    // Its own echoes included: the cluster task tells
                    // them from a second process using the same id.
                    Ok(c) => control.send(ControlEvent::Message(c), &shared.stats),
                    Err(_) => {
                        shared.stats.malformed.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        });
        Ok(())
    }

    /// Subscribes to `room` and spawns the task that delivers its events.
    async fn subscribe_room(
        self: &Arc<Self>,
        room: &RoomName,
    ) -> Result<JoinHandle<()>, BackplaneError> {
        let mut subscriber = self
            .client
            .subscribe(self.room_subject(room))
            .await
            .map_err(BackplaneError::nats)?;
        // Make sure the server has the subscription before the join is
        // answered, so events published after the reply are received.
        // (While NATS is away there is nothing to wait for: the client
        // resubscribes when it reconnects.)
        if self.outage.is_healthy()
            && tokio::time::timeout(self.config.connect_timeout, self.round_trip())
                .await
                .is_err()
        {
            tracing::debug!(%room, "nats did not confirm the subscription in time");
        }
        let shared = self.clone();
        Ok(tokio::spawn(async move {
            loop {
                let message = tokio::select! {
                    _ = shared.shutdown.cancelled() => return,
                    m = subscriber.next() => m,
                };
                let Some(message) = message else { return };
                match Envelope::decode_frame(message.payload) {
                    // This instance delivered its own events when it published them.
                    Ok((origin, incarnation, _)) if shared.origin.is_echo(&origin, incarnation) => {
                    }
                    Ok((_, _, frame)) => {
                        shared
                            .stats
                            .deliver_received(&shared.origin.id, &*shared.sink, &frame)
                    }
                    Err(_) => {
                        shared.stats.malformed.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        }))
    }

    /// Waits until the server has processed everything this client sent so
    /// far: NATS handles a connection's commands in order, so a message to
    /// a fresh subject of our own comes back only after the earlier ones.
    async fn round_trip(&self) {
        let n = self.barriers.fetch_add(1, Ordering::Relaxed);
        let subject = format!(
            "{}.barrier.{}.{n}",
            self.config.subject_prefix, self.origin.id
        );
        let Ok(mut echo) = self.client.subscribe(subject.clone()).await else {
            return;
        };
        if self.client.publish(subject, Bytes::new()).await.is_ok() {
            echo.next().await;
        }
    }

    /// Publishes `payload` on `subject`, failing fast while NATS is away.
    async fn publish(&self, subject: String, payload: Bytes) -> Result<(), BackplaneError> {
        if !self.outage.is_healthy() {
            self.stats.publish_failed.fetch_add(1, Ordering::Relaxed);
            return Err(BackplaneError::Unavailable("nats is unreachable".into()));
        }
        // Flushing makes "acknowledged" mean "handed to the NATS server", as
        // with Redis: a later message cannot overtake this one.
        let publish = async {
            self.client.publish(subject, payload).await?;
            self.client.flush().await.map_err(|e| {
                async_nats::PublishError::with_source(async_nats::client::PublishErrorKind::Send, e)
            })
        };
        match tokio::time::timeout(self.config.connect_timeout, publish).await {
            Ok(Ok(())) => {
                self.stats.published.fetch_add(1, Ordering::Relaxed);
                Ok(())
            }
            Ok(Err(e)) => {
                self.stats.publish_failed.fetch_add(1, Ordering::Relaxed);
                Err(BackplaneError::nats(e))
            }
            Err(_) => {
                self.stats.publish_failed.fetch_add(1, Ordering::Relaxed);
                Err(BackplaneError::Unavailable("nats publish timed out".into()))
            }
        }
    }
}

impl NatsBackplane {
    /// Adjusts a room's subscription count; subscribes on 0 → 1 and
    /// unsubscribes (ends the reader) on 1 → 0.
    async fn change(&self, room: &RoomName, delta: i64) -> Result<(), BackplaneError> {
        let shared = &self.shared;
        // Held until the subscription is made (see `Subscriptions`).
        let mut rooms = shared.rooms.lock().await;
        match rooms.change(room, delta) {
            Edge::Unchanged => {}
            Edge::Subscribe => match shared.subscribe_room(room).await {
                Ok(reader) => rooms.attach(room, reader),
                // Only a closed client refuses; nothing to retry then.
                Err(e) => tracing::warn!(%room, error = %e, "nats subscribe failed"),
            },
            // Dropping the subscriber with its task unsubscribes.
            Edge::Unsubscribe(reader) => {
                if let Some(reader) = reader {
                    reader.abort();
                }
            }
        }
        Ok(())
    }
}

impl Backplane for NatsBackplane {
    fn name(&self) -> &'static str {
        "nats"
    }

    fn subscribe<'a>(&'a self, room: &'a RoomName) -> BoxFuture<'a, Result<(), BackplaneError>> {
        self.change(room, 1).boxed()
    }

    fn unsubscribe<'a>(&'a self, room: &'a RoomName) -> BoxFuture<'a, Result<(), BackplaneError>> {
        self.change(room, -1).boxed()
    }

    fn publish(&self, frame: RoomFrame) -> BoxFuture<'_, Result<(), BackplaneError>> {
        async move {
            let shared = &self.shared;
            // Local members get the event straight away, NATS or not.
            shared.sink.deliver(&frame);
            let payload = Envelope::encode_frame(&shared.origin, &frame);
            let started = Instant::now();
            shared
                .publish(shared.room_subject(&frame.room), payload)
                .await?;
            shared.stats.publish_latency.observe(started.elapsed());
            Ok(())
        }
        .boxed()
    }

    fn publish_control(&self, control: Bytes) -> BoxFuture<'_, Result<(), BackplaneError>> {
        async move {
            let shared = &self.shared;
            shared.publish(shared.control_subject(), control).await
        }
        .boxed()
    }

    fn is_healthy(&self) -> bool {
        self.shared.outage.is_healthy()
    }

    /// The server's `max_payload` (less room for the protocol), if smaller
    /// than the default bound.
    fn max_control_bytes(&self) -> usize {
        match self.shared.client.server_info().max_payload {
            // Not connected yet: the server's limit is unknown.
            0 => super::MAX_CONTROL_BYTES,
            limit => super::MAX_CONTROL_BYTES.min(limit.saturating_sub(1024).max(1024)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn room_names_become_single_subject_tokens() {
        for (room, token) in [
            ("lobby", "lobby"),
            ("a.b", "a~b"),
            ("..x.", "~~x~"),
            ("A-b_c", "A-b_c"),
        ] {
            assert_eq!(subject_token(&RoomName::parse(room).unwrap()), token);
        }
    }
}
