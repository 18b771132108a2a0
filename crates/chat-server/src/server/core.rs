//! Build step: the instance's state. The store, the rooms, the backplane
//! and the hub over them, in that order (each needs the one before); and,
//! with `webhooks.url`, what the store queues for the webhook and the
//! sender that empties the queue.

use super::ServerError;
use crate::backplane::control::{ControlEvent, ControlSender, control_queue};
use crate::backplane::{
    Backplane, BackplaneStats, LocalBackplane, NatsBackplane, Origin, RedisBackplane,
};
use crate::config::{BackplaneKind, Config};
use crate::domain::RoomName;
use crate::hub::{Hub, MembershipFeed, Rooms, repair};
use crate::store::{self, Capture, MembershipChange, MessageStore};
use crate::webhook;
use std::sync::Arc;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// The instance's state, and what its background tasks consume.
pub(super) struct Core {
    /// Sessions, rooms, store and backplane together.
    pub hub: Arc<Hub>,
    /// The backplane's counters (readiness and `/metrics` read them).
    pub stats: Arc<BackplaneStats>,
    /// What only the background tasks take: they own these receivers.
    pub background: Background,
}

/// The receiving ends the background tasks own.
pub(super) struct Background {
    /// The rooms, for the repair task (it offers fetched messages to them).
    pub rooms: Arc<Rooms>,
    /// Rooms that need gaps repaired, sent by the rooms.
    pub repair: mpsc::Receiver<RoomName>,
    /// Control messages (heartbeats, presence) from other instances.
    pub control: mpsc::Receiver<ControlEvent>,
    /// The backplane's counters, for the heartbeats.
    pub stats: Arc<BackplaneStats>,
    /// The webhook's sender, with `webhooks.url`.
    pub webhook: Option<webhook::Sender>,
    /// Membership changes the hub hands to the webhook's queue, when the
    /// webhook sends joins or leaves.
    pub memberships: Option<mpsc::Receiver<MembershipChange>>,
}

/// The configured backplane, delivering into `rooms` and `control`.
async fn backplane(
    config: &Config,
    server_id: &str,
    incarnation: u64,
    rooms: &Arc<Rooms>,
    control: ControlSender,
    stats: &Arc<BackplaneStats>,
    shutdown: &CancellationToken,
) -> Result<Arc<dyn Backplane>, ServerError> {
    let server = Origin {
        id: Arc::from(server_id),
        incarnation,
    };
    Ok(match config.backplane {
        BackplaneKind::Local => Arc::new(LocalBackplane::new(rooms.clone())),
        BackplaneKind::Redis => Arc::new(RedisBackplane::start(
            config.redis.clone(),
            server,
            rooms.clone(),
            control,
            stats.clone(),
            shutdown.clone(),
        )?),
        BackplaneKind::Nats => Arc::new(
            NatsBackplane::start(
                config.nats.clone(),
                server,
                rooms.clone(),
                control,
                stats.clone(),
                shutdown.clone(),
            )
            .await?,
        ),
    })
}

/// Opens the store, then builds the rooms, the backplane and the hub.
pub(super) async fn build(
    config: &Config,
    server_id: &str,
    shutdown: &CancellationToken,
) -> Result<Core, ServerError> {
    let store: Arc<dyn MessageStore> = store::open(&config.store.url).await?;
    let sender = webhook::Sender::build(&config.webhooks)?;
    let capture = match sender {
        Some(_) => webhook::capture(&config.webhooks.events),
        None => Capture::NONE,
    };
    store.set_capture(capture).await?;
    // Messages can be delivered in sequence order (with gaps repaired from
    // the store) when one store numbers them for every instance.
    let ordered = config.backplane == BackplaneKind::Local || store.is_shared();
    let (repair_tx, repair_rx) = mpsc::channel(repair::QUEUE);
    let rooms = Arc::new(Rooms::new(ordered, Some(repair_tx)));
    let stats = Arc::new(BackplaneStats::default());
    let (control_tx, control_rx) = control_queue();
    // The process's mark, on room events and control messages alike.
    let incarnation = crate::hub::new_incarnation();
    let backplane = backplane(
        config,
        server_id,
        incarnation,
        &rooms,
        control_tx,
        &stats,
        shutdown,
    )
    .await?;
    if config.backplane != BackplaneKind::Local && !store.is_shared() {
        tracing::warn!(
            store = store.name(),
            "the message store is per instance: each instance numbers a room's messages on its own, \
             so sequence numbers are not comparable across instances; use store.url = postgres://… \
             for several instances"
        );
    }
    let mut hub = Hub::new(
        server_id.to_string(),
        config.limits.clone(),
        rooms.clone(),
        store,
        backplane,
    )
    .with_incarnation(incarnation);
    let mut memberships = None;
    if capture.has(Capture::JOIN) || capture.has(Capture::LEAVE) {
        let (changes, receiver) = mpsc::channel(webhook::FEED_QUEUE);
        hub = hub.with_membership_feed(MembershipFeed { capture, changes });
        memberships = Some(receiver);
    }
    let hub = Arc::new(hub);
    Ok(Core {
        hub,
        stats: stats.clone(),
        background: Background {
            rooms,
            repair: repair_rx,
            control: control_rx,
            stats,
            webhook: sender,
            memberships,
        },
    })
}
