//! This instance's rooms: which local connections are in each, and local
//! fan-out. (Who the members are, cluster-wide, is `hub::presence`.)
//!
//! Rooms live in shards keyed by name, so joins, leaves and deliveries in
//! different rooms never share a lock. A room exists while it has local
//! connections.

use super::outbox::Outbox;
use crate::backplane::{FrameSink, RoomFrame};
use crate::validate::RoomName;
use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::sync::{Arc, Mutex};

const SHARDS: usize = 64;

/// Identifies one connection (one Session stream) on this instance.
pub type ConnId = u64;

type Shard = Mutex<HashMap<RoomName, Arc<Room>>>;

/// Every room with local members.
pub struct Rooms {
    hasher: RandomState,
    shards: Box<[Shard]>,
}

/// One room's local state.
pub struct Room {
    state: Mutex<RoomState>,
    /// Held from sequencing a message until it is published, so a room's
    /// messages are published in sequence order.
    pub(crate) send_lock: tokio::sync::Mutex<()>,
}

#[derive(Default)]
struct RoomState {
    /// One entry per local connection: the fan-out list.
    recipients: Vec<(ConnId, Outbox)>,
}

impl Default for Rooms {
    fn default() -> Self {
        Rooms {
            hasher: RandomState::new(),
            shards: (0..SHARDS).map(|_| Mutex::default()).collect(),
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A panic elsewhere must not wedge every room in the shard.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Rooms {
    fn shard(&self, room: &RoomName) -> &Shard {
        &self.shards[self.hasher.hash_one(room) as usize % self.shards.len()]
    }

    /// The room, if it has local members.
    pub fn get(&self, room: &RoomName) -> Option<Arc<Room>> {
        lock(self.shard(room)).get(room).cloned()
    }

    /// Adds connection `conn` to `room`, creating the room if needed;
    /// returns whether it was created.
    pub fn join(&self, room: &RoomName, conn: ConnId, outbox: Outbox) -> bool {
        let mut shard = lock(self.shard(room));
        let mut created = false;
        let entry = shard.entry(room.clone()).or_insert_with(|| {
            created = true;
            Arc::new(Room {
                state: Mutex::default(),
                send_lock: tokio::sync::Mutex::new(()),
            })
        });
        lock(&entry.state).recipients.push((conn, outbox));
        created
    }

    /// Removes connection `conn` from `room`, and the room when it is
    /// empty. Returns `None` if the connection was not in it, else whether
    /// the room was removed.
    pub fn leave(&self, room: &RoomName, conn: ConnId) -> Option<bool> {
        let mut shard = lock(self.shard(room));
        let entry = shard.get(room)?;
        let mut state = lock(&entry.state);
        let at = state.recipients.iter().position(|(c, _)| *c == conn)?;
        state.recipients.swap_remove(at);
        let removed = state.recipients.is_empty();
        drop(state);
        if removed {
            shard.remove(room);
        }
        Some(removed)
    }

    /// How many rooms have local members.
    pub fn len(&self) -> usize {
        self.shards.iter().map(|s| lock(s).len()).sum()
    }

    /// Whether no room has local members.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl FrameSink for Rooms {
    /// Hands the same encoded bytes to every local connection in the room;
    /// a connection whose queue is full is kicked, never waited for.
    fn deliver(&self, frame: &RoomFrame) {
        let Some(room) = self.get(&frame.room) else {
            return;
        };
        let state = lock(&room.state);
        for (_, outbox) in &state.recipients {
            outbox.push(frame.frame.clone());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hub::outbox::outbox;
    use bytes::Bytes;
    use chat_proto::EncodedFrame;
    use futures::StreamExt;

    #[tokio::test]
    async fn rooms_live_while_they_have_connections_and_deliver_to_each() {
        let rooms = Rooms::default();
        let lobby = RoomName::parse("lobby").unwrap();
        let (o1, mut s1) = outbox(4);
        let (o2, mut s2) = outbox(4);
        assert!(rooms.join(&lobby, 1, o1));
        assert!(!rooms.join(&lobby, 2, o2));
        let frame = EncodedFrame(Bytes::from_static(b"x"));
        rooms.deliver(&RoomFrame {
            room: lobby.clone(),
            sequence: Some(1),
            frame: frame.clone(),
        });
        assert_eq!(s1.next().await.unwrap().unwrap(), frame);
        assert_eq!(s2.next().await.unwrap().unwrap(), frame);
        assert_eq!(rooms.leave(&lobby, 1), Some(false));
        assert_eq!(rooms.leave(&lobby, 1), None, "already left");
        assert_eq!(rooms.leave(&lobby, 2), Some(true));
        assert!(rooms.is_empty());
    }
}
