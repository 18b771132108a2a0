//! The cluster task: heartbeats this instance to the others, keeps the
//! presence table in step with theirs, and forgets instances that stop
//! sending heartbeats.

use super::Hub;
use crate::backplane::control::{
    ControlEvent, ControlKind, Heartbeat, PresenceEntry, PresenceSnapshot, SyncRequest,
};
use crate::domain::User;
use crate::domain::validate::{self, RoomName};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

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
    // Unknown instances trigger a sync request, at most once per heartbeat.
    let mut last_sync_request: Option<Instant> = None;
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = ticks.tick() => {
                let heartbeat = Heartbeat {
                    connections: hub.session_count() as u64,
                    rooms: hub.rooms().len() as u64,
                };
                hub.publish_control(ControlKind::Heartbeat(heartbeat)).await;
                let now = Instant::now().into_std();
                hub.update_presence(|p| ((), p.expire(now, expiry)));
            }
            event = events.recv() => {
                let Some(event) = event else { return };
                match event {
                    ControlEvent::Connected | ControlEvent::Overflowed => {
                        // Messages published while the backplane was away
                        // are in the store: fill every room from it.
                        for room in hub.rooms().names() {
                            hub.rooms().request_repair(&room);
                        }
                        // Tell the others what is here; ask for theirs.
                        publish_snapshot(&hub).await;
                        hub.publish_control(ControlKind::SyncRequest(SyncRequest {})).await;
                        last_sync_request = Some(Instant::now());
                    }
                    ControlEvent::Message(control) => {
                        let Some(kind) = control.kind else { continue };
                        if control.origin.is_empty() || control.origin == hub.server_id() {
                            continue;
                        }
                        let origin: Arc<str> = Arc::from(control.origin);
                        let now = Instant::now().into_std();
                        match kind {
                            ControlKind::Heartbeat(h) => {
                                let holds = (h.connections, h.rooms);
                                let unknown = hub.update_presence(|p| (p.heartbeat(&origin, now, holds), Vec::new()));
                                let recently = last_sync_request.is_some_and(|t| t.elapsed() < heartbeat);
                                if unknown && !recently {
                                    tracing::info!(instance = %origin, "new instance; exchanging presence");
                                    hub.publish_control(ControlKind::SyncRequest(SyncRequest {})).await;
                                    last_sync_request = Some(Instant::now());
                                }
                            }
                            ControlKind::Presence(change) => {
                                let Some((room, user)) = change.entry.as_ref().and_then(valid_entry) else {
                                    continue;
                                };
                                hub.update_presence(|p| {
                                    let t = p.remote_set(&origin, &room, &user, change.present, now);
                                    ((), t.into_iter().collect())
                                });
                            }
                            ControlKind::SyncRequest(_) => publish_snapshot(&hub).await,
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
