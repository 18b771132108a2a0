//! This user's own messages in each room, and each room's latest message,
//! as the events showed them: what `/edit`, `/delete` and `/react` change
//! when no message number is given.

use std::collections::HashMap;

/// Own messages remembered per room, at most.
const KEPT: usize = 100;

/// The sequence numbers of this user's live (not deleted) messages, per
/// room, oldest first.
#[derive(Debug, Default)]
pub(super) struct OwnMessages {
    /// By room; each list sorted, at most [`KEPT`] long.
    by_room: HashMap<String, Vec<u64>>,
    /// By room: the latest message seen (anyone's).
    latest: HashMap<String, u64>,
}

impl OwnMessages {
    /// One of this user's messages arrived (live, resumed or from history).
    pub(super) fn sent(&mut self, room: &str, sequence: u64) {
        let list = self.by_room.entry(room.to_string()).or_default();
        if let Err(at) = list.binary_search(&sequence) {
            list.insert(at, sequence);
            if list.len() > KEPT {
                list.remove(0);
            }
        }
    }

    /// A message (anyone's) arrived.
    pub(super) fn seen(&mut self, room: &str, sequence: u64) {
        let latest = self.latest.entry(room.to_string()).or_default();
        *latest = (*latest).max(sequence);
    }

    /// The latest message seen in `room`.
    pub(super) fn latest(&self, room: &str) -> Option<u64> {
        self.latest.get(room).copied()
    }

    /// A message was deleted (by anyone).
    pub(super) fn deleted(&mut self, room: &str, sequence: u64) {
        if let Some(list) = self.by_room.get_mut(room)
            && let Ok(at) = list.binary_search(&sequence)
        {
            list.remove(at);
        }
    }

    /// This user's latest live message in `room`.
    pub(super) fn last(&self, room: &str) -> Option<u64> {
        self.by_room.get(room)?.last().copied()
    }

    /// Forgets `room` (left).
    pub(super) fn forget(&mut self, room: &str) {
        self.by_room.remove(room);
        self.latest.remove(room);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_last_live_message_is_the_default_target() {
        let mut own = OwnMessages::default();
        assert_eq!(own.last("lobby"), None);
        own.sent("lobby", 3);
        own.sent("lobby", 7);
        own.sent("lobby", 5);
        own.sent("lobby", 7);
        assert_eq!(own.last("lobby"), Some(7));
        own.deleted("lobby", 7);
        assert_eq!(own.last("lobby"), Some(5));
        own.deleted("elsewhere", 5);
        assert_eq!(own.last("lobby"), Some(5));
        for s in 10..10 + KEPT as u64 + 5 {
            own.sent("lobby", s);
        }
        assert_eq!(own.by_room["lobby"].len(), KEPT);
        own.forget("lobby");
        assert_eq!(own.last("lobby"), None);
    }
}
