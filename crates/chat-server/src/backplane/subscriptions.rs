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
use std::collections::{HashMap, HashSet};

/// Subscription counts per room, with each subscribed room's handle `H`
/// (what the backplane keeps for a live subscription: NATS its reader
/// task; Redis nothing, `()`).
///
/// Rooms whose (un)subscribe command failed while the connection stayed
/// up are kept in a retry set beside the counts: the backplane marks them
/// ([`failed`]), whoever retries (for Redis, the supervisor after a good
/// PING) asks for them with the state their count wants ([`to_retry`]) and
/// settles each that took ([`settled`]), under this same lock. A new edge
/// of the room supersedes the failed command; a new connection, which
/// subscribes every wanted room, clears the set.
///
/// [`failed`]: Subscriptions::failed
/// [`to_retry`]: Subscriptions::to_retry
/// [`settled`]: Subscriptions::settled
pub(super) struct Subscriptions<H> {
    /// Every room with a nonzero count.
    rooms: HashMap<RoomName, Room<H>>,
    /// Rooms whose last command failed: not in the state their count wants.
    failed: HashSet<RoomName>,
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
            failed: HashSet::new(),
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
        if !matches!(edge, Edge::Unchanged) {
            // The command this edge sends supersedes a failed one.
            self.failed.remove(room);
        }
        edge
    }

    /// `room`'s last (un)subscribe command failed: it is retried.
    pub(super) fn failed(&mut self, room: &RoomName) {
        self.failed.insert(room.clone());
    }

    /// The rooms to retry, each with whether it must be subscribed (its
    /// count is positive) or unsubscribed.
    pub(super) fn to_retry(&self) -> Vec<(RoomName, bool)> {
        self.failed
            .iter()
            .map(|room| {
                let wanted = self.rooms.get(room).is_some_and(|entry| entry.count > 0);
                (room.clone(), wanted)
            })
            .collect()
    }

    /// The state `room`'s retry must bring it to (subscribed while its
    /// count is positive), or `None` if it is no longer in the retry set.
    pub(super) fn retry_state(&self, room: &RoomName) -> Option<bool> {
        self.failed
            .contains(room)
            .then(|| self.rooms.get(room).is_some_and(|entry| entry.count > 0))
    }

    /// A retried command for `room` took.
    pub(super) fn settled(&mut self, room: &RoomName) {
        self.failed.remove(room);
    }

    /// A new connection subscribed every wanted room: nothing to retry.
    pub(super) fn clear_failed(&mut self) {
        self.failed.clear();
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
    fn failed_commands_are_retried_in_the_state_the_count_wants() {
        let mut table = Subscriptions::<()>::default();
        let (a, b) = (room("a"), room("b"));
        assert_eq!(table.change(&a, 1), Edge::Subscribe);
        table.failed(&a);
        assert_eq!(table.change(&b, 1), Edge::Subscribe);
        table.failed(&b);
        assert_eq!(table.change(&b, -1), Edge::Unsubscribe(None));
        // b's unsubscribe superseded its failed subscribe.
        assert_eq!(table.to_retry(), [(a.clone(), true)]);
        table.failed(&b);
        let mut retry = table.to_retry();
        retry.sort();
        assert_eq!(retry, [(a.clone(), true), (b.clone(), false)]);
        table.settled(&a);
        assert_eq!(table.retry_state(&a), None);
        assert_eq!(table.retry_state(&b), Some(false));
        assert_eq!(table.to_retry(), [(b, false)]);
        table.clear_failed();
        assert!(table.to_retry().is_empty());
    }

    #[test]
    fn attaching_to_a_forgotten_room_keeps_nothing() {
        let mut table = Subscriptions::<u32>::default();
        table.attach(&room("lobby"), 7);
        assert!(table.rooms.is_empty());
    }
}
