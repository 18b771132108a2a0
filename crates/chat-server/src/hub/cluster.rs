//! The cluster task: heartbeats this instance to the others, keeps the
//! presence table in step with theirs, and forgets instances that stop
//! sending heartbeats.

use super::Hub;
use crate::backplane::control::{
    Control, ControlEvent, ControlKind, Heartbeat, PresenceEntry, PresenceSnapshot, SyncRequest,
};
use crate::domain::User;
use crate::domain::validate::{self, RoomName};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// How often a second process using this instance's `server_id` is logged
/// at most (it is counted every time).
const DUPLICATE_LOG_EVERY: Duration = Duration::from_secs(30);

/// Runs until `shutdown`: a heartbeat every `heartbeat`, instances silent
/// for `expiry` forgotten (their members leave), control events applied.
pub async fn run(
    hub: Arc<Hub>,
    mut events: mpsc::Receiver<ControlEvent>,
    heartbeat: Duration,
    expiry: Duration,
    shutdown: CancellationToken,
) {
    let mut ticks = tokio::time::interval(heartbeat);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut cluster = Cluster {
        hub,
        heartbeat,
        last_sync_request: None,
        last_duplicate_log: None,
    };
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = ticks.tick() => cluster.tick(expiry).await,
            event = events.recv() => match event {
                Some(ControlEvent::Connected | ControlEvent::Overflowed) => cluster.resync().await,
                Some(ControlEvent::Message(control)) => cluster.apply(control).await,
                Some(ControlEvent::Resubscribed(room)) => cluster.hub.rooms().request_repair(&room),
                None => return,
            },
        }
    }
}

/// The cluster task's state.
struct Cluster {
    /// This instance.
    hub: Arc<Hub>,
    /// The heartbeat interval, also the shortest time between two sync
    /// requests.
    heartbeat: Duration,
    /// When this instance last asked the others for their presence: an
    /// unknown instance triggers a request, at most once per heartbeat.
    last_sync_request: Option<Instant>,
    /// When a second process with this `server_id` was last logged.
    last_duplicate_log: Option<Instant>,
}

impl Cluster {
    /// Says this instance is alive (with its counts) and forgets instances
    /// silent for longer than `expiry`.
    async fn tick(&self, expiry: Duration) {
        let heartbeat = Heartbeat {
            connections: self.hub.session_count() as u64,
            rooms: self.hub.rooms().len() as u64,
        };
        self.hub
            .publish_control(ControlKind::Heartbeat(heartbeat))
            .await;
        let now = Instant::now().into_std();
        self.hub.update_presence(|p| ((), p.expire(now, expiry)));
    }

    /// After a (re)connection or lost control messages: fills every room
    /// from the store (messages published meanwhile are there), tells the
    /// others what is here and asks for theirs.
    async fn resync(&mut self) {
        for room in self.hub.rooms().names() {
            self.hub.rooms().request_repair(&room);
        }
        publish_snapshot(&self.hub).await;
        self.request_sync().await;
    }

    async fn request_sync(&mut self) {
        self.hub
            .publish_control(ControlKind::SyncRequest(SyncRequest {}))
            .await;
        self.last_sync_request = Some(Instant::now());
    }

    /// Counts a control message from a second process using this
    /// instance's `server_id`, and says so loudly (at most every
    /// `DUPLICATE_LOG_EVERY`): the two drop each other's room events as
    /// echoes, so their clients get them only through repair, if at all.
    fn duplicate_id(&mut self) {
        self.hub
            .metrics()
            .duplicate_server_id
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        if self
            .last_duplicate_log
            .is_none_or(|t| t.elapsed() >= DUPLICATE_LOG_EVERY)
        {
            self.last_duplicate_log = Some(Instant::now());
            tracing::error!(
                server_id = self.hub.server_id(),
                "another process uses this instance's server_id: each drops the other's \
                 messages as its own echoes; give every instance its own server_id"
            );
        }
    }

    /// Applies a control message from another instance.
    async fn apply(&mut self, control: Control) {
        let Some(kind) = control.kind else { return };
        if control.origin == self.hub.server_id() {
            // Our own echo, or another process with our id.
            if control.incarnation != 0 && control.incarnation != self.hub.incarnation() {
                self.duplicate_id();
            }
            return;
        }
        if control.origin.is_empty() {
            return;
        }
        let origin: Arc<str> = Arc::from(control.origin);
        let now = Instant::now().into_std();
        let hub = &self.hub;
        match kind {
            ControlKind::Heartbeat(h) => {
                let holds = (h.connections, h.rooms);
                let unknown =
                    hub.update_presence(|p| (p.heartbeat(&origin, now, holds), Vec::new()));
                let recently = self
                    .last_sync_request
                    .is_some_and(|t| t.elapsed() < self.heartbeat);
                if unknown && !recently {
                    tracing::info!(instance = %origin, "new instance; exchanging presence");
                    self.request_sync().await;
                }
            }
            ControlKind::Presence(change) => {
                let Some((room, user)) = change.entry.as_ref().and_then(valid_entry) else {
                    return;
                };
                hub.update_presence(|p| {
                    let t = p.remote_set(&origin, &room, &user, change.present, now);
                    ((), t.into_iter().collect())
                });
            }
            ControlKind::SyncRequest(_) => publish_snapshot(hub).await,
            ControlKind::Broadcast(b) => {
                if validate::message_text(&b.text, hub.limits().max_text_bytes).is_ok() {
                    let sent = hub.notify_local(&b.text);
                    tracing::info!(instance = %origin, sessions = sent, "operator broadcast relayed");
                }
            }
            ControlKind::Snapshot(snapshot) => {
                let entries = snapshot.entries.iter().filter_map(valid_entry).collect();
                hub.update_presence(|p| ((), p.replace_origin(&origin, entries, now)));
            }
        }
    }
}

/// Publishes everything present on this instance.
async fn publish_snapshot(hub: &Hub) {
    let entries = hub
        .local_presence()
        .into_iter()
        .map(|(room, user)| PresenceEntry {
            room: room.to_string(),
            user_id: user.user_id.to_string(),
            display_name: user.display_name.to_string(),
        })
        .collect();
    hub.publish_control(ControlKind::Snapshot(PresenceSnapshot { entries }))
        .await;
}

/// An entry from another instance, validated like a client's input.
fn valid_entry(entry: &PresenceEntry) -> Option<(RoomName, User)> {
    let room = entry.room()?;
    let user = User::parse(&entry.user_id, &entry.display_name).ok()?;
    Some((room, user))
}
