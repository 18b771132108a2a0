//! The reference-counted room subscriptions of the networked backplanes: a
//! room is subscribed while it has local members, so the backplane
//! subscribes on the first `subscribe` and unsubscribes after the last
//! `unsubscribe`.
//!
//! The table only counts and says which edge a change crossed; the
//! backplane sends the command itself. It keeps the table behind an async
//! mutex held until the command is sent, so commands leave in the order of
//! the counts they follow from (a leave racing a join of the same room ends
//! in the right state), and a resubscription after a reconnect sees no join
//! or leave halfway.

use super::RoomName;
use std::collections::HashMap;

/// Subscription counts per room, with each subscribed room's handle `H`
/// (what the backplane keeps for a live subscription: NATS its reader
/// task; Redis nothing, `()`).
///
/// Seam for retrying failed subscriptions (issue 15): a room whose count is
/// positive but whose subscribe command failed would go into a retry set
/// kept here beside `rooms`, filled by the backplane when the command
/// fails, drained by whoever retries (for Redis, the supervisor after a
/// good PING) under this same lock, and cleared of a room by [`change`]
/// when the room's count stops being positive.
///
/// [`change`]: Subscriptions::change
pub(super) struct Subscriptions<H> {
    /// Every room with a nonzero count.
    rooms: HashMap<RoomName, Room<H>>,
}

/// One room's entry.
struct Room<H> {
    /// `subscribe` calls minus `unsubscribe` calls; the room is subscribed
    /// while this is positive. A plain sum: an `unsubscribe` without a
    /// `subscribe` before it makes it negative.
    count: i64,
    /// The live subscription's handle; `None` while the count is not
    /// positive, and while subscribing failed.
    handle: Option<H>,
}

/// What a change of a room's count asks the backplane to do.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Edge<H> {
    /// Nothing: the room stays subscribed, or stays unsubscribed.
    Unchanged,
    /// The count became positive: subscribe (then [`attach`] the handle,
    /// if any).
    ///
    /// [`attach`]: Subscriptions::attach
    Subscribe,
    /// The count stopped being positive: unsubscribe, ending the handle
    /// the subscription had, if any.
    Unsubscribe(Option<H>),
}

impl<H> Default for Subscriptions<H> {
    fn default() -> Self {
        Subscriptions {
            rooms: HashMap::new(),
        }
    }
}

impl<H> Subscriptions<H> {
    /// Adds `delta` (+1 for a subscribe, −1 for an unsubscribe) to `room`'s
    /// count; says whether the room must now be subscribed or unsubscribed.
    pub(super) fn change(&mut self, room: &RoomName, delta: i64) -> Edge<H> {
        let entry = self.rooms.entry(room.clone()).or_insert(Room {
            count: 0,
            handle: None,
        });
        let before = entry.count > 0;
        entry.count += delta;
        let after = entry.count > 0;
        let edge = match (before, after) {
            (false, true) => Edge::Subscribe,
            (true, false) => Edge::Unsubscribe(entry.handle.take()),
            _ => Edge::Unchanged,
        };
        if entry.count == 0 {
            self.rooms.remove(room);
        }
        edge
    }

    /// Keeps `handle` for `room`'s new subscription; called under the same
    /// lock right after [`change`](Self::change) said [`Edge::Subscribe`],
    /// so the room's count is positive.
    pub(super) fn attach(&mut self, room: &RoomName, handle: H) {
        if let Some(entry) = self.rooms.get_mut(room) {
            entry.handle = Some(handle);
        }
    }

    /// The rooms that must be subscribed (count positive), for a
    /// resubscription on a new connection.
    pub(super) fn subscribed(&self) -> impl Iterator<Item = &RoomName> {
        self.rooms
            .iter()
            .filter(|(_, entry)| entry.count > 0)
            .map(|(room, _)| room)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn room(name: &str) -> RoomName {
        RoomName::parse(name).unwrap()
    }

    fn subscribed(table: &Subscriptions<u32>) -> Vec<String> {
        let mut rooms: Vec<String> = table.subscribed().map(|r| r.to_string()).collect();
        rooms.sort();
        rooms
    }

    #[test]
    fn the_first_member_subscribes_and_the_last_unsubscribes() {
        let mut table = Subscriptions::<u32>::default();
        let lobby = room("lobby");
        assert_eq!(table.change(&lobby, 1), Edge::Subscribe);
        table.attach(&lobby, 7);
        assert_eq!(table.change(&lobby, 1), Edge::Unchanged);
        assert_eq!(table.change(&lobby, -1), Edge::Unchanged);
        assert_eq!(subscribed(&table), ["lobby"]);
        assert_eq!(table.change(&lobby, -1), Edge::Unsubscribe(Some(7)));
        assert!(subscribed(&table).is_empty());
        assert!(table.rooms.is_empty(), "a room at zero is forgotten");
    }

    #[test]
    fn a_failed_subscription_has_no_handle_to_end() {
        let mut table = Subscriptions::<u32>::default();
        let lobby = room("lobby");
        assert_eq!(table.change(&lobby, 1), Edge::Subscribe);
        // No attach: subscribing failed. The room is still wanted.
        assert_eq!(subscribed(&table), ["lobby"]);
        assert_eq!(table.change(&lobby, -1), Edge::Unsubscribe(None));
        assert!(table.rooms.is_empty());
    }

    #[test]
    fn a_resubscription_lists_only_rooms_with_members() {
        let mut table = Subscriptions::<u32>::default();
        for name in ["a", "b", "c"] {
            table.change(&room(name), 1);
        }
        table.change(&room("b"), -1);
        assert_eq!(subscribed(&table), ["a", "c"]);
    }

    #[test]
    fn counts_are_plain_sums() {
        let mut table = Subscriptions::<u32>::default();
        let lobby = room("lobby");
        // An unsubscribe with no subscribe before it is remembered...
        assert_eq!(table.change(&lobby, -1), Edge::Unchanged);
        assert!(subscribed(&table).is_empty());
        // ...and cancels the next subscribe.
        assert_eq!(table.change(&lobby, 1), Edge::Unchanged);
        assert!(table.rooms.is_empty());
        assert_eq!(table.change(&lobby, 1), Edge::Subscribe);
    }

    #[test]
    fn attaching_to_a_forgotten_room_keeps_nothing() {
        let mut table = Subscriptions::<u32>::default();
        table.attach(&room("lobby"), 7);
        assert!(table.rooms.is_empty());
    }
}
