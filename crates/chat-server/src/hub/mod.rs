//! The hub: this instance's sessions and rooms, and the paths a message
//! takes — sequenced by the store, published once on the backplane, fanned
//! out locally as one shared encoding.

mod outbox;
mod rooms;

pub use outbox::{Outbox, OutboxStream, disconnect_frame, outbox};
pub use rooms::{ConnId, Joined, Left, Rooms};

use crate::backplane::{Backplane, RoomFrame};
use crate::config::Limits;
use crate::error::RequestError;
use crate::store::{MessageStore, NewMessage, Sender, StoredMessage};
use crate::validate::RoomName;
use chat_proto::EncodedFrame;
use chat_proto::v1::{Member, MemberJoined, MemberLeft, MessageEvent, server_frame::Frame};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

const SESSION_SHARDS: usize = 16;

/// Shared state of one server instance.
pub struct Hub {
    server_id: String,
    limits: Limits,
    rooms: Arc<Rooms>,
    store: Arc<dyn MessageStore>,
    backplane: Arc<dyn Backplane>,
    next_conn: AtomicU64,
    sessions: Box<[Mutex<HashMap<ConnId, Outbox>>]>,
}

impl Hub {
    /// A hub over `rooms`, which `backplane` delivers into.
    pub fn new(
        server_id: String,
        limits: Limits,
        rooms: Arc<Rooms>,
        store: Arc<dyn MessageStore>,
        backplane: Arc<dyn Backplane>,
    ) -> Hub {
        Hub {
            server_id,
            limits,
            rooms,
            store,
            backplane,
            next_conn: AtomicU64::new(1),
            sessions: (0..SESSION_SHARDS).map(|_| Mutex::default()).collect(),
        }
    }

    /// This instance's id.
    pub fn server_id(&self) -> &str {
        &self.server_id
    }

    /// The per-client limits.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// The store.
    pub fn store(&self) -> &Arc<dyn MessageStore> {
        &self.store
    }

    /// The backplane.
    pub fn backplane(&self) -> &Arc<dyn Backplane> {
        &self.backplane
    }

    /// The rooms with local members.
    pub fn rooms(&self) -> &Rooms {
        &self.rooms
    }

    fn session_shard(&self, conn: ConnId) -> &Mutex<HashMap<ConnId, Outbox>> {
        &self.sessions[conn as usize % self.sessions.len()]
    }

    /// Registers a new connection and returns its id.
    pub fn register(&self, outbox: Outbox) -> ConnId {
        let conn = self.next_conn.fetch_add(1, Ordering::Relaxed);
        lock(self.session_shard(conn)).insert(conn, outbox);
        conn
    }

    /// Forgets a connection (after it left its rooms).
    pub fn unregister(&self, conn: ConnId) {
        lock(self.session_shard(conn)).remove(&conn);
    }

    /// How many sessions are open on this instance.
    pub fn session_count(&self) -> usize {
        self.sessions.iter().map(|s| lock(s).len()).sum()
    }

    /// Queues `frame` for every session on this instance; returns how many
    /// received it.
    pub fn broadcast(&self, frame: &EncodedFrame) -> usize {
        let mut sent = 0;
        for shard in self.sessions.iter() {
            for outbox in lock(shard).values() {
                sent += usize::from(outbox.push(frame.clone()));
            }
        }
        sent
    }

    /// Joins connection `conn` of `user` to `room`, subscribing the
    /// backplane if the room is new here. Returns the room's members, its
    /// latest sequence, and whether this is the user's first connection in
    /// it (then the caller announces them with [`Hub::announce_joined`] once
    /// it has replied).
    pub async fn join(
        &self,
        room: &RoomName,
        conn: ConnId,
        user: &Sender,
        outbox: Outbox,
    ) -> Result<(Vec<Sender>, u64, bool), RequestError> {
        let latest = self.store.latest_sequence(room).await.map_err(|e| {
            tracing::warn!(%room, error = %e, "join failed: store");
            RequestError::Unavailable(e.to_string())
        })?;
        let joined = self.rooms.join(room, conn, user, outbox);
        if joined.created
            && let Err(e) = self.backplane.subscribe(room).await
        {
            tracing::warn!(%room, error = %e, "join failed: backplane subscribe");
            self.rooms.leave(room, conn, &user.user_id);
            return Err(RequestError::Unavailable(e.to_string()));
        }
        Ok((joined.members, latest, joined.first_for_user))
    }

    /// Tells `room`'s members, the user included, that `user` joined.
    pub async fn announce_joined(&self, room: &RoomName, user: &Sender) {
        let frame = Frame::MemberJoined(MemberJoined {
            room: room.to_string(),
            member: Some(member(user)),
        });
        self.publish_presence(room, frame).await;
    }

    /// Removes connection `conn` of `user` from `room`; announces the user's
    /// departure if it was their last connection there. Returns false if the
    /// connection was not in the room.
    pub async fn leave(&self, room: &RoomName, conn: ConnId, user: &Sender) -> bool {
        let Some(left) = self.rooms.leave(room, conn, &user.user_id) else {
            return false;
        };
        if left.last_for_user {
            let frame = Frame::MemberLeft(MemberLeft {
                room: room.to_string(),
                member: Some(member(user)),
            });
            self.publish_presence(room, frame).await;
        }
        if left.removed
            && let Err(e) = self.backplane.unsubscribe(room).await
        {
            tracing::warn!(%room, error = %e, "backplane unsubscribe failed");
        }
        true
    }

    async fn publish_presence(&self, room: &RoomName, frame: Frame) {
        let frame = RoomFrame {
            room: room.clone(),
            sequence: None,
            frame: EncodedFrame::from(frame),
        };
        if let Err(e) = self.backplane.publish(frame).await {
            tracing::debug!(%room, error = %e, "presence event not published");
        }
    }

    /// Stores `message` (which assigns its sequence), then publishes it once.
    /// The caller must be a member of the room.
    pub async fn send(&self, message: NewMessage) -> Result<StoredMessage, RequestError> {
        let room = self
            .rooms
            .get(&message.room)
            .ok_or_else(|| RequestError::NotAMember(message.room.to_string()))?;
        // Sequencing and publishing under one per-room lock keeps the
        // room's publications in sequence order.
        let _ordered = room.send_lock.lock().await;
        let stored = self.store.append(message).await.map_err(|e| {
            tracing::warn!(error = %e, "send failed: store");
            RequestError::Unavailable(e.to_string())
        })?;
        let m = &stored.message;
        let event = Frame::Message(MessageEvent {
            message_id: stored.id.clone(),
            room: m.room.to_string(),
            sequence: stored.sequence,
            sender: Some(member(&m.sender)),
            text: m.text.clone(),
            server_time_unix_ms: stored.time_unix_ms,
            client_message_id: m.client_message_id.clone(),
        });
        let frame = RoomFrame {
            room: m.room.clone(),
            sequence: Some(stored.sequence),
            frame: EncodedFrame::from(event),
        };
        // The message is stored and local members have it; a failed publish
        // loses only the copy to other instances. The backplane logs the
        // outage once and counts the failures.
        if let Err(e) = self.backplane.publish(frame).await {
            tracing::debug!(room = %m.room, sequence = stored.sequence, error = %e, "message not published");
        }
        Ok(stored)
    }
}

/// The wire form of a user.
pub fn member(user: &Sender) -> Member {
    Member {
        user_id: user.user_id.to_string(),
        display_name: user.display_name.to_string(),
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}
