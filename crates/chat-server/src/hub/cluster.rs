//! The cluster task: heartbeats this instance to the others (with the
//! digest of its presence), keeps the presence table in step with theirs
//! (asking an instance for its snapshot when what is known of it keeps
//! differing from its digest), and forgets instances that stop sending
//! heartbeats.

use super::Hub;
use super::presence::{Counters, Digest, Load};
use super::snapshot::{self, Assembler};
use crate::backplane::BackplaneStats;
use crate::backplane::control::{
    Control, ControlEvent, ControlKind, Heartbeat, PresenceEntry, SyncRequest,
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
    stats: Arc<BackplaneStats>,
    mut events: mpsc::Receiver<ControlEvent>,
    heartbeat: Duration,
    expiry: Duration,
    shutdown: CancellationToken,
) {
    let mut ticks = tokio::time::interval(heartbeat);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut cluster = Cluster {
        hub,
        stats,
        heartbeat,
        last_sync_request: None,
        last_duplicate_log: None,
        // Increasing across restarts too (unless the clock goes back), so
        // others never drop a new process's snapshots as older ones.
        next_snapshot: chat_util::now_unix_us(),
        snapshots: Assembler::default(),
        last_snapshot: None,
        snapshot_due: false,
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
    /// Its backplane's counters, for its heartbeats.
    stats: Arc<BackplaneStats>,
    /// The heartbeat interval, also the shortest time between two sync
    /// requests.
    heartbeat: Duration,
    /// When this instance last asked the others for their presence: an
    /// unknown instance triggers a request, at most once per heartbeat.
    last_sync_request: Option<Instant>,
    /// When a second process with this `server_id` was last logged.
    last_duplicate_log: Option<Instant>,
    /// The id of this instance's next snapshot.
    next_snapshot: u64,
    /// Other instances' snapshots whose parts are arriving.
    snapshots: Assembler,
    /// When this instance last published its snapshot.
    last_snapshot: Option<Instant>,
    /// A snapshot was asked for while one had just gone out: it goes at
    /// the next heartbeat.
    snapshot_due: bool,
}

impl Cluster {
    /// Says this instance is alive (with its counts) and forgets instances
    /// silent for longer than `expiry`.
    async fn tick(&mut self, expiry: Duration) {
        let digest = self.hub.update_presence(|p| (p.local_digest(), Vec::new()));
        let load = |counter: &std::sync::atomic::AtomicU64| {
            counter.load(std::sync::atomic::Ordering::Relaxed)
        };
        let heartbeat = Heartbeat {
            connections: self.hub.session_count() as u64,
            rooms: self.hub.rooms().len() as u64,
            presence_entries: digest.entries,
            presence_sum: digest.sum,
            has_digest: true,
            messages_received: load(&self.hub.metrics().messages_received),
            messages_delivered: self.hub.rooms().deliveries(),
            backplane_published: load(&self.stats.published),
            backplane_received: load(&self.stats.received),
            backplane_publish_failures: load(&self.stats.publish_failed),
            ready: self.hub.is_ready(),
            has_load: true,
        };
        self.hub
            .publish_control(ControlKind::Heartbeat(heartbeat))
            .await;
        let now = Instant::now().into_std();
        self.hub.update_presence(|p| ((), p.expire(now, expiry)));
        self.snapshots.expire(now, expiry);
        if self.snapshot_due {
            self.publish_snapshot().await;
        }
    }

    /// After a (re)connection or lost control messages: fills every room
    /// from the store (messages published meanwhile are there), tells the
    /// others what is here and asks for theirs.
    async fn resync(&mut self) {
        for room in self.hub.rooms().names() {
            self.hub.rooms().request_repair(&room);
        }
        self.snapshot_soon().await;
        self.request_sync().await;
    }

    /// Asks every instance for its snapshot.
    async fn request_sync(&mut self) {
        let request = SyncRequest {
            target: String::new(),
        };
        self.hub
            .publish_control(ControlKind::SyncRequest(request))
            .await;
        self.last_sync_request = Some(Instant::now());
    }

    /// Publishes everything present on this instance, in parts that each
    /// fit one backplane message.
    async fn publish_snapshot(&mut self) {
        let entries = self
            .hub
            .local_presence()
            .into_iter()
            .map(|(room, user)| PresenceEntry {
                room: room.to_string(),
                user_id: user.user_id.to_string(),
                display_name: user.display_name.to_string(),
            })
            .collect();
        let id = self.next_snapshot;
        self.next_snapshot += 1;
        self.last_snapshot = Some(Instant::now());
        self.snapshot_due = false;
        let max_bytes = self.hub.backplane().max_control_bytes();
        let parts = snapshot::split(entries, id, max_bytes);
        if parts.len() > snapshot::MAX_PARTS as usize {
            tracing::warn!(
                parts = parts.len(),
                "presence snapshot has more parts than others accept; not sent"
            );
            return;
        }
        let whole = parts.len() == 1;
        for part in parts {
            let kind = match whole {
                true => ControlKind::Snapshot(part),
                false => ControlKind::SnapshotPart(part),
            };
            self.hub.publish_control(kind).await;
        }
    }

    /// Publishes this instance's snapshot now, or at the next heartbeat if
    /// one went out less than a heartbeat ago: however many instances ask
    /// at once (a failed publish leaves all of them out of step), one
    /// snapshot per heartbeat answers them all.
    async fn snapshot_soon(&mut self) {
        let recent = self
            .last_snapshot
            .is_some_and(|t| t.elapsed() < self.heartbeat);
        if recent {
            self.snapshot_due = true;
        } else {
            self.publish_snapshot().await;
        }
    }

    /// Counts a control message from a second process using this
    /// instance's `server_id`, and says so loudly (at most every
    /// `DUPLICATE_LOG_EVERY`): room events tell the two apart by their
    /// incarnation, but presence is kept per `server_id`, so the two
    /// overwrite each other's members in the others' tables.
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
                "another process uses this instance's server_id: the other instances \
                 cannot keep the two's presence apart; give every instance its own server_id"
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
                let holds = Load {
                    connections: h.connections,
                    rooms: h.rooms,
                    counters: h.has_load.then_some(Counters {
                        messages_received: h.messages_received,
                        messages_delivered: h.messages_delivered,
                        backplane_published: h.backplane_published,
                        backplane_received: h.backplane_received,
                        backplane_publish_failures: h.backplane_publish_failures,
                        ready: h.ready,
                    }),
                };
                let unknown =
                    hub.update_presence(|p| (p.heartbeat(&origin, now, holds), Vec::new()));
                let recently = self
                    .last_sync_request
                    .is_some_and(|t| t.elapsed() < self.heartbeat);
                if unknown && !recently {
                    tracing::info!(instance = %origin, "new instance; exchanging presence");
                    self.request_sync().await;
                } else if h.has_digest {
                    let reported = Digest {
                        entries: h.presence_entries,
                        sum: h.presence_sum,
                    };
                    let ask = hub
                        .update_presence(|p| (p.check_digest(&origin, reported, now), Vec::new()));
                    if ask {
                        self.repair_presence(origin).await;
                    }
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
            ControlKind::PresenceBatch(batch) => {
                // Each change checked like a lone one; the invalid ones
                // skipped. One lock for the batch.
                // A sender splits its batches at `MAX_LISTED`: more is
                // not taken (the digests repair what is left out).
                let changes: Vec<(RoomName, User, bool)> = batch
                    .changes
                    .iter()
                    .take(super::members::MAX_LISTED)
                    .filter_map(|c| {
                        let (room, user) = c.entry.as_ref().and_then(valid_entry)?;
                        Some((room, user, c.present))
                    })
                    .collect();
                hub.update_presence(|p| {
                    let t = changes
                        .iter()
                        .filter_map(|(room, user, present)| {
                            p.remote_set(&origin, room, user, *present, now)
                        })
                        .collect();
                    ((), t)
                });
            }
            ControlKind::SyncRequest(r) => {
                if r.target.is_empty() || r.target == hub.server_id() {
                    self.snapshot_soon().await;
                }
            }
            ControlKind::Broadcast(b) => {
                if validate::message_text(&b.text, hub.limits().max_text_bytes).is_ok() {
                    let sent = hub.notify_local(&b.text);
                    tracing::info!(instance = %origin, sessions = sent, "operator broadcast relayed");
                }
            }
            ControlKind::Disconnect(d) => {
                // Hostile until checked: a user id, and a reason of bounded size.
                if crate::domain::user::user_id(&d.user_id).is_ok() && valid_reason(&d.reason) {
                    let ended = hub.disconnect_local(&d.user_id, &d.reason, !d.stay_disconnected);
                    tracing::info!(instance = %origin, user = %d.user_id, sessions = ended, "user disconnected by the server API");
                }
            }
            ControlKind::Remove(r) => {
                // Hostile until checked, like a disconnect; and a room name.
                if let Ok(room) = RoomName::parse(&r.room)
                    && crate::domain::user::user_id(&r.user_id).is_ok()
                    && valid_reason(&r.reason)
                {
                    let told = hub.remove_local(&room, &r.user_id, &r.reason);
                    tracing::info!(instance = %origin, %room, user = %r.user_id, sessions = told, "member removed by the server API");
                }
            }
            ControlKind::DirectOpened(opened) => {
                // Hostile until checked: the room must be the pair's.
                if let Some(direct) = valid_direct(&opened) {
                    hub.notify_direct(&direct);
                }
            }
            ControlKind::Snapshot(part) | ControlKind::SnapshotPart(part) => {
                let Some(whole) = self.snapshots.add(&origin, part, now) else {
                    return;
                };
                let entries = whole.iter().filter_map(valid_entry).collect();
                hub.update_presence(|p| ((), p.replace_origin(&origin, entries, now)));
            }
        }
    }

    /// What is known of `origin` keeps differing from its digest: asks it
    /// (alone) for its snapshot, and counts the repair.
    async fn repair_presence(&mut self, origin: Arc<str>) {
        self.hub
            .metrics()
            .presence_repairs
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        tracing::info!(instance = %origin, "presence known of an instance differs from its digest; asking for its snapshot");
        let request = SyncRequest {
            target: origin.to_string(),
        };
        self.hub
            .publish_control(ControlKind::SyncRequest(request))
            .await;
    }
}

/// An entry from another instance, validated like a client's input.
fn valid_entry(entry: &PresenceEntry) -> Option<(RoomName, User)> {
    let room = entry.room()?;
    let user = User::parse(&entry.user_id, &entry.display_name).ok()?;
    Some((room, user))
}

/// A conversation from another instance, if it is one: a direct room and
/// two valid, different users (it only tells their sessions; each join is
/// checked against the store).
/// Whether a reason another instance sends is one a user may be shown:
/// bounded, no control characters.
fn valid_reason(reason: &str) -> bool {
    reason.len() <= super::MAX_DISCONNECT_REASON_BYTES && !reason.chars().any(char::is_control)
}

fn valid_direct(
    opened: &crate::backplane::control::DirectOpened,
) -> Option<crate::store::Conversation> {
    let ([a, b], [name_a, name_b]) = (opened.user_ids.as_slice(), opened.names.as_slice()) else {
        return None;
    };
    let room = RoomName::parse(&opened.room).ok()?;
    if !crate::domain::direct::is_direct(&room) || a == b {
        return None;
    }
    // A name the other user never gave is their id, which need not be a
    // valid display name: then the id stands for it.
    let user = |id: &str, name: &str| {
        let id = crate::domain::user::user_id(id).ok()?;
        Some(User::parse(id, name).unwrap_or_else(|_| User::new(id, id)))
    };
    Some(crate::store::Conversation {
        room,
        users: [user(a, name_a)?, user(b, name_b)?],
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backplane::control::DirectOpened;

    fn opened(room: &str, ids: &[&str]) -> DirectOpened {
        DirectOpened {
            room: room.into(),
            user_ids: ids.iter().map(|s| s.to_string()).collect(),
            names: ids.iter().map(|s| s.to_uppercase()).collect(),
        }
    }

    /// A conversation from another instance is hostile until checked: the
    /// room must be the pair's own.
    #[test]
    fn only_a_pairs_own_room_is_taken_from_another_instance() {
        let room = crate::domain::direct::new_room();
        let taken = valid_direct(&opened(room.as_str(), &["ann", "bob"])).expect("valid");
        assert_eq!(taken.room, room);
        assert!(taken.has("ann") && taken.has("bob"));
        assert_eq!(&*taken.peer("ann").display_name, "BOB");
        // A plain room, one user twice, a third user, a bad name.
        assert!(valid_direct(&opened("lobby", &["ann", "bob"])).is_none());
        assert!(valid_direct(&opened(room.as_str(), &["ann", "ann"])).is_none());
        assert!(valid_direct(&opened(room.as_str(), &["ann", "bob", "eve"])).is_none());
        assert!(valid_direct(&opened("not a room!", &["ann", "bob"])).is_none());
    }
}
