//! This instance's rooms: who is in each, and local fan-out.
//!
//! Rooms live in shards keyed by name, so joins, leaves and deliveries in
//! different rooms never share a lock. A room exists while it has local
//! members. A user connected several times is one member; they join with
//! their first connection and leave with their last.

use super::outbox::Outbox;
use crate::backplane::{FrameSink, RoomFrame};
use crate::store::Sender;
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
    /// One entry per user, in join order.
    members: Vec<MemberEntry>,
}

struct MemberEntry {
    user: Sender,
    connections: usize,
}

/// What a join changed.
pub struct Joined {
    /// The members after the join, each user once.
    pub members: Vec<Sender>,
    /// Whether this was the user's first connection in the room.
    pub first_for_user: bool,
    /// Whether the room was created (it had no local members before).
    pub created: bool,
}

/// What a leave changed.
pub struct Left {
    /// Whether this was the user's last connection in the room.
    pub last_for_user: bool,
    /// Whether the room is gone (it has no local members now).
    pub removed: bool,
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

    /// Adds connection `conn` of `user` to `room`, creating the room if needed.
    pub fn join(&self, room: &RoomName, conn: ConnId, user: &Sender, outbox: Outbox) -> Joined {
        let mut shard = lock(self.shard(room));
        let mut created = false;
        let entry = shard.entry(room.clone()).or_insert_with(|| {
            created = true;
            Arc::new(Room {
                state: Mutex::default(),
                send_lock: tokio::sync::Mutex::new(()),
            })
        });
        let mut state = lock(&entry.state);
        state.recipients.push((conn, outbox));
        let first_for_user = match state
            .members
            .iter_mut()
            .find(|m| m.user.user_id == user.user_id)
        {
            Some(member) => {
                member.connections += 1;
                false
            }
            None => {
                state.members.push(MemberEntry {
                    user: user.clone(),
                    connections: 1,
                });
                true
            }
        };
        Joined {
            members: state.members.iter().map(|m| m.user.clone()).collect(),
            first_for_user,
            created,
        }
    }

    /// Removes connection `conn` of user `user_id` from `room`; removes the
    /// room when it is empty. Returns `None` if the connection was not in it.
    pub fn leave(&self, room: &RoomName, conn: ConnId, user_id: &str) -> Option<Left> {
        let mut shard = lock(self.shard(room));
        let entry = shard.get(room)?;
        let mut state = lock(&entry.state);
        let at = state.recipients.iter().position(|(c, _)| *c == conn)?;
        state.recipients.swap_remove(at);
        let mut last_for_user = false;
        if let Some(i) = state
            .members
            .iter()
            .position(|m| &*m.user.user_id == user_id)
        {
            state.members[i].connections -= 1;
            if state.members[i].connections == 0 {
                state.members.remove(i);
                last_for_user = true;
            }
        }
        let removed = state.recipients.is_empty();
        drop(state);
        if removed {
            shard.remove(room);
        }
        Some(Left {
            last_for_user,
            removed,
        })
    }

    /// The room's members, each user once; empty if it has no local members.
    pub fn members(&self, room: &RoomName) -> Vec<Sender> {
        match self.get(room) {
            Some(r) => lock(&r.state)
                .members
                .iter()
                .map(|m| m.user.clone())
                .collect(),
            None => Vec::new(),
        }
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

    fn user(id: &str) -> Sender {
        Sender {
            user_id: Arc::from(id),
            display_name: Arc::from(id),
        }
    }

    #[test]
    fn a_user_with_two_connections_is_one_member() {
        let rooms = Rooms::default();
        let lobby = RoomName::parse("lobby").unwrap();
        let (o1, _s1) = outbox(4);
        let (o2, _s2) = outbox(4);
        let (o3, _s3) = outbox(4);
        let j = rooms.join(&lobby, 1, &user("alice"), o1);
        assert!(j.created && j.first_for_user);
        let j = rooms.join(&lobby, 2, &user("alice"), o2);
        assert!(!j.created && !j.first_for_user);
        assert_eq!(j.members.len(), 1);
        let j = rooms.join(&lobby, 3, &user("bob"), o3);
        assert!(j.first_for_user);
        assert_eq!(j.members.len(), 2);

        let l = rooms.leave(&lobby, 1, "alice").unwrap();
        assert!(!l.last_for_user && !l.removed);
        assert_eq!(rooms.members(&lobby).len(), 2);
        let l = rooms.leave(&lobby, 2, "alice").unwrap();
        assert!(l.last_for_user && !l.removed);
        assert_eq!(rooms.members(&lobby).len(), 1);
        assert!(rooms.leave(&lobby, 2, "alice").is_none(), "already left");
        let l = rooms.leave(&lobby, 3, "bob").unwrap();
        assert!(l.last_for_user && l.removed);
        assert!(rooms.is_empty());
    }
}
