//! The Redis backplane: each room is a pub/sub channel; an instance
//! subscribes to the rooms it has local members in and publishes each room
//! event once. Against Redis Cluster (`redis.cluster`) the channels are
//! sharded (`SSUBSCRIBE`/`SPUBLISH`), so each room lives on the shard that
//! owns its slot.
//!
//! One RESP3 connection (a cluster connection in cluster mode) carries both
//! directions. Its push messages are
//! decoded and delivered on the spot (the fan-out only `try_send`s), so
//! nothing queues between Redis and the members. A supervisor task owns the
//! connection: when Redis goes away it marks the backplane unhealthy, logs
//! the outage once, reconnects with backoff and resubscribes every room the
//! instance still needs. An instance delivers its own events to its local
//! members directly (and skips their echo from Redis), so while Redis is
//! away local members are still served; the publish fails fast and is
//! counted.

mod supervisor;

use super::control::{Control, ControlEvent, ControlSender};
use super::outage::{Kind, Outage};
use super::subscriptions::{Edge, Subscriptions};
use super::{Backplane, BackplaneError, BackplaneStats, Envelope, FrameSink, Origin};
use crate::config::RedisConfig;
use crate::config::redact_url;
use crate::domain::validate::RoomName;
use bytes::Bytes;
use chat_util::lock;
use futures::future::{BoxFuture, FutureExt};
use redis::aio::MultiplexedConnection;
use redis::cluster_async::ClusterConnection;
use redis::{ConnectionInfo, IntoConnectionInfo, ProtocolVersion, PushInfo, PushKind, Value};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

/// Where this backplane's log lines go, its outage bookkeeping's included.
pub(super) const LOG_TARGET: &str = module_path!();

/// Rooms over Redis pub/sub.
pub struct RedisBackplane {
    shared: Arc<Shared>,
}

/// A live connection: to one server, or to a cluster.
#[derive(Clone)]
enum Conn {
    Single(MultiplexedConnection),
    Cluster(ClusterConnection),
}

impl Conn {
    async fn set_subscribed(&mut self, channel: &str, on: bool) -> redis::RedisResult<()> {
        match (self, on) {
            (Conn::Single(c), true) => c.subscribe(channel).await,
            (Conn::Single(c), false) => c.unsubscribe(channel).await,
            (Conn::Cluster(c), true) => c.ssubscribe(channel).await,
            (Conn::Cluster(c), false) => c.sunsubscribe(channel).await,
        }
    }

    async fn publish(&mut self, channel: &str, payload: &[u8]) -> redis::RedisResult<i64> {
        let command_name = match self {
            Conn::Single(_) => "PUBLISH",
            Conn::Cluster(_) => "SPUBLISH",
        };
        let mut command = redis::cmd(command_name);
        command.arg(channel).arg(payload);
        match self {
            Conn::Single(c) => command.query_async(c).await,
            Conn::Cluster(c) => command.query_async(c).await,
        }
    }

    async fn ping(&mut self) -> redis::RedisResult<()> {
        let command = redis::cmd("PING");
        match self {
            Conn::Single(c) => command.query_async(c).await,
            Conn::Cluster(c) => command.query_async(c).await,
        }
    }
}

/// What the backplane, its push callback and its supervisor share.
struct Shared {
    /// The server (or the cluster's seed nodes), RESP3.
    nodes: Vec<ConnectionInfo>,
    /// Channel prefix, timeouts, backoff limit, cluster mode.
    config: RedisConfig,
    /// This instance's id: stamped on what it publishes, and how it
    /// recognises (and skips) its own echoes.
    origin: Origin,
    /// Where room events from other instances are delivered.
    sink: Arc<dyn FrameSink>,
    /// Where control messages from other instances go.
    control: ControlSender,
    /// Subscription count per room. The async mutex orders
    /// subscribe/unsubscribe commands with the counts they follow from.
    rooms: tokio::sync::Mutex<Subscriptions<()>>,
    /// The live connection, if any, with its generation.
    connection: Mutex<Option<(u64, Conn)>>,
    /// Incremented per connection, so news from an old one is ignored.
    generation: AtomicU64,
    /// Woken when the connection reports that it dropped.
    lost: Notify,
    /// Readiness, and the outage counts and log lines.
    outage: Outage,
    /// The counts `/health/ready` and `/metrics` show.
    stats: Arc<BackplaneStats>,
}

impl RedisBackplane {
    /// Starts the backplane: a supervisor connects (and reconnects) in the
    /// background until `shutdown`. Returns at once; until Redis answers the
    /// backplane reports unhealthy.
    pub fn start(
        config: RedisConfig,
        origin: Origin,
        sink: Arc<dyn FrameSink>,
        control: ControlSender,
        stats: Arc<BackplaneStats>,
        shutdown: CancellationToken,
    ) -> Result<RedisBackplane, BackplaneError> {
        let mut nodes = Vec::new();
        for url in config
            .url
            .split(',')
            .map(str::trim)
            .filter(|u| !u.is_empty())
        {
            let info = url
                .into_connection_info()
                .map_err(|e| BackplaneError::Url {
                    setting: "redis.url",
                    url: redact_url(url),
                    source: Box::new(e),
                })?;
            // RESP3 lets one connection publish while subscribed, and pushes
            // messages to a callback instead of a separate pub/sub connection.
            let settings = info
                .redis_settings()
                .clone()
                .set_protocol(ProtocolVersion::RESP3);
            nodes.push(info.set_redis_settings(settings));
        }
        if nodes.is_empty() || (!config.cluster && nodes.len() > 1) {
            return Err(BackplaneError::Config(
                "redis.url must name one server, or (with redis.cluster = true) one or more seed nodes".into(),
            ));
        }
        let outage = Outage::new(
            Kind::Redis,
            config.url.clone(),
            stats.clone(),
            control.clone(),
        );
        let shared = Arc::new(Shared {
            nodes,
            config,
            origin,
            sink,
            control,
            rooms: tokio::sync::Mutex::default(),
            connection: Mutex::default(),
            generation: AtomicU64::new(0),
            lost: Notify::new(),
            outage,
            stats,
        });
        tokio::spawn(supervisor::supervise(shared.clone(), shutdown));
        Ok(RedisBackplane { shared })
    }
}

impl Shared {
    fn channel(&self, room: &RoomName) -> String {
        format!("{}room:{}", self.config.channel_prefix, room)
    }

    /// The cluster-wide channel of heartbeats and presence.
    fn control_channel(&self) -> String {
        format!("{}control", self.config.channel_prefix)
    }

    /// PUBLISHes `payload` on `channel`, failing fast while Redis is away.
    async fn publish(&self, channel: String, payload: &[u8]) -> Result<(), BackplaneError> {
        let Some((generation, mut conn)) = self.current() else {
            self.stats.publish_failed.fetch_add(1, Ordering::Relaxed);
            return Err(BackplaneError::Unavailable("redis is unreachable".into()));
        };
        let publish = conn.publish(&channel, payload);
        match tokio::time::timeout(self.config.command_timeout, publish).await {
            Ok(Ok(_)) => {
                self.stats.published.fetch_add(1, Ordering::Relaxed);
                Ok(())
            }
            Ok(Err(e)) => {
                self.stats.publish_failed.fetch_add(1, Ordering::Relaxed);
                Err(BackplaneError::Redis(e))
            }
            Err(_) => {
                self.stats.publish_failed.fetch_add(1, Ordering::Relaxed);
                self.connection_failed(generation);
                Err(BackplaneError::Unavailable(
                    "redis publish timed out".into(),
                ))
            }
        }
    }

    fn current(&self) -> Option<(u64, Conn)> {
        lock(&self.connection).clone()
    }

    /// Declares connection `generation` broken (if it is still the current
    /// one): the supervisor replaces it and resubscribes.
    fn connection_failed(&self, generation: u64) {
        if self.generation.load(Ordering::SeqCst) == generation {
            self.lost.notify_one();
        }
    }

    /// (S)SUBSCRIBE or (S)UNSUBSCRIBE `channel`, bounded in time.
    async fn set_subscribed(
        &self,
        conn: &mut Conn,
        channel: &str,
        on: bool,
    ) -> redis::RedisResult<()> {
        let command = conn.set_subscribed(channel, on);
        match tokio::time::timeout(self.config.command_timeout, command).await {
            Ok(result) => result,
            Err(_) => Err(redis::RedisError::from((
                redis::ErrorKind::Io,
                "subscription command timed out",
            ))),
        }
    }

    /// Handles one push from Redis: a room message is delivered at once.
    fn on_push(&self, generation: u64, push: PushInfo) {
        match push.kind {
            PushKind::Message | PushKind::SMessage => {}
            PushKind::Disconnection => {
                self.connection_failed(generation);
                return;
            }
            _ => return,
        }
        let mut data = push.data.into_iter();
        let (Some(Value::BulkString(channel)), Some(Value::BulkString(payload))) =
            (data.next(), data.next())
        else {
            self.stats.malformed.fetch_add(1, Ordering::Relaxed);
            return;
        };
        let payload = Bytes::from(payload);
        if channel == self.control_channel().as_bytes() {
            match <Control as prost::Message>::decode(payload) {
                // Its own echoes included: the cluster task tells them
                // from a second process using the same id.
                Ok(control) => self
                    .control
                    .send(ControlEvent::Message(control), &self.stats),
                Err(_) => {
                    self.stats.malformed.fetch_add(1, Ordering::Relaxed);
                }
            }
            return;
        }
        match Envelope::decode_frame(payload) {
            // This instance delivered its own events when it published them.
            Ok((origin, incarnation, _)) if self.origin.is_echo(&origin, incarnation) => {}
            Ok((_, _, frame)) => self
                .stats
                .deliver_received(&self.origin.id, &*self.sink, &frame),
            Err(e) => {
                self.stats.malformed.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(error = %e, "dropped a malformed backplane message");
            }
        }
    }
}

impl Backplane for RedisBackplane {
    fn name(&self) -> &'static str {
        "redis"
    }

    fn subscribe<'a>(&'a self, room: &'a RoomName) -> BoxFuture<'a, Result<(), BackplaneError>> {
        self.change(room, 1).boxed()
    }

    fn unsubscribe<'a>(&'a self, room: &'a RoomName) -> BoxFuture<'a, Result<(), BackplaneError>> {
        self.change(room, -1).boxed()
    }

    fn publish(&self, frame: super::RoomFrame) -> BoxFuture<'_, Result<(), BackplaneError>> {
        async move {
            let shared = &self.shared;
            // Local members get the event straight away, Redis or not.
            shared.sink.deliver(&frame);
            let payload = Envelope::encode_frame(&shared.origin, &frame);
            let started = Instant::now();
            shared
                .publish(shared.channel(&frame.room), &payload)
                .await?;
            shared.stats.publish_latency.observe(started.elapsed());
            Ok(())
        }
        .boxed()
    }

    fn publish_control(&self, control: Bytes) -> BoxFuture<'_, Result<(), BackplaneError>> {
        async move {
            let shared = &self.shared;
            shared.publish(shared.control_channel(), &control).await
        }
        .boxed()
    }

    fn is_healthy(&self) -> bool {
        self.shared.outage.is_healthy()
    }
}

impl RedisBackplane {
    /// Adjusts a room's subscription count and (un)subscribes on the edge.
    /// While Redis is away only the count changes; the supervisor
    /// resubscribes from the counts when it reconnects.
    async fn change(&self, room: &RoomName, delta: i64) -> Result<(), BackplaneError> {
        let shared = &self.shared;
        // Held until the command is sent (see `Subscriptions`).
        let mut rooms = shared.rooms.lock().await;
        let on = match rooms.change(room, delta) {
            Edge::Unchanged => return Ok(()),
            Edge::Subscribe => true,
            Edge::Unsubscribe(_) => false,
        };
        let Some((generation, mut conn)) = shared.current() else {
            return Ok(());
        };
        if let Err(e) = shared
            .set_subscribed(&mut conn, &shared.channel(room), on)
            .await
        {
            // Retried by the supervisor, which checks the connection now
            // (and replaces it if it is gone; the new one subscribes from
            // the counts).
            tracing::warn!(%room, error = %e, subscribe = on, "redis (un)subscribe failed; retrying");
            rooms.failed(room);
            shared.connection_failed(generation);
        }
        Ok(())
    }
}
