//! Who is in which room, cluster-wide: this instance's connections (counted
//! per user) and every other instance's users, learned from the control
//! channel and forgotten when an instance stops sending heartbeats.
//!
//! A user is a member of a room while they have a connection in it on any
//! instance. The methods report the transitions — a user becoming present
//! or absent — which are exactly when members hear "joined" or "left".
//!
//! Each instance keeps a [`Digest`] of its own (room, user) pairs and, for
//! every other instance, of what it believes that instance holds. Heartbeats
//! carry the sender's digest; a receiver whose belief keeps differing asks
//! that instance for its snapshot ([`Presence::check_digest`]). That heals a
//! change whose publish failed, or a snapshot overtaken by a later change,
//! without a reconnect.

use crate::domain::User;
use crate::domain::validate::RoomName;
use std::collections::{BTreeSet, HashMap, HashSet};
use std::ops::Bound;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The presence table. Not locked itself: the hub holds it under one mutex
/// together with the order of join replies and presence events.
#[derive(Default)]
pub struct Presence {
    /// Every room with a member anywhere, and its users (only present
    /// ones once a change is applied: see `prune`).
    rooms: HashMap<RoomName, HashMap<Arc<str>, UserEntry>>,
    /// The names of `rooms`, in order, so a listing reads one page of them
    /// instead of every room.
    names: BTreeSet<RoomName>,
    /// The other instances heard from, and what they hold.
    origins: HashMap<Arc<str>, Origin>,
    /// The (room, user) pairs with a connection here, as heartbeats carry
    /// them: the others compare it with what they believe.
    local_digest: Digest,
    /// Users whose membership changed since the last presence tick, per
    /// room (kept with their names: one who left is no longer in `rooms`).
    /// The tick tells each room's members once ([`Presence::take_changes`]),
    /// so a burst of joins costs each member one frame, not one per joiner.
    changed: HashMap<RoomName, HashMap<Arc<str>, User>>,
    /// When each room whose members were told of changes lately was told
    /// (forgotten once that is `gap` ago): a room that keeps changing is
    /// told at most once per `gap`.
    told: HashMap<RoomName, Instant>,
}

/// A room's membership changes since the last presence tick, each changed
/// user's state as of now.
#[derive(Debug, PartialEq, Eq)]
pub struct RoomChanges {
    /// The room.
    pub room: RoomName,
    /// Changed users who are members now, by display name.
    pub joined: Vec<User>,
    /// Changed users who are not, by display name.
    pub left: Vec<User>,
    /// How many members the room has now.
    pub count: usize,
}

/// Where a page of members starts: after this (display name, user id).
/// On the wire an opaque string: the two joined by a control character
/// no display name holds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MemberCursor {
    /// The last listed member's display name.
    display_name: String,
    /// And user id.
    user_id: String,
}

/// The separator of a [`MemberCursor`]'s two parts (display names hold no
/// control character, so the first one splits them).
const CURSOR_SEPARATOR: char = '\u{1f}';
/// The longest cursor accepted, in bytes: a display name and a user id.
const MAX_CURSOR_BYTES: usize = 512;

impl MemberCursor {
    /// The cursor after `user`.
    pub fn after(user: &User) -> MemberCursor {
        MemberCursor {
            display_name: user.display_name.to_string(),
            user_id: user.user_id.to_string(),
        }
    }

    /// Reads a cursor a client sent back; `None` if it is not one.
    pub fn parse(text: &str) -> Option<MemberCursor> {
        if text.len() > MAX_CURSOR_BYTES {
            return None;
        }
        let (name, id) = text.split_once(CURSOR_SEPARATOR)?;
        Some(MemberCursor {
            display_name: name.to_string(),
            user_id: id.to_string(),
        })
    }

    /// The opaque string a client sends back.
    pub fn encode(&self) -> String {
        format!("{}{CURSOR_SEPARATOR}{}", self.display_name, self.user_id)
    }

    fn is_before(&self, user: &User) -> bool {
        (self.display_name.as_str(), self.user_id.as_str()) < (&*user.display_name, &*user.user_id)
    }
}

/// One page of a room's members.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct MemberPage {
    /// The members, by display name then user id.
    pub members: Vec<User>,
    /// Where the next page starts, if there are more.
    pub next: Option<MemberCursor>,
    /// How many members the room has.
    pub count: usize,
}

impl MemberPage {
    /// The next page's cursor as the wire carries it (empty: none).
    pub fn next_page(&self) -> String {
        self.next
            .as_ref()
            .map(MemberCursor::encode)
            .unwrap_or_default()
    }

    /// The room's member count as the wire carries it.
    pub fn member_count(&self) -> u32 {
        u32::try_from(self.count).unwrap_or(u32::MAX)
    }
}

/// Orders users as member lists show them: by display name, then id.
fn by_name(a: &User, b: &User) -> std::cmp::Ordering {
    (&a.display_name, &a.user_id).cmp(&(&b.display_name, &b.user_id))
}

/// An order-independent summary of a set of (room, user id) pairs: their
/// number and the wrapping sum of a fixed hash of each. Two instances
/// holding the same set compute the same digest, whatever the order the
/// pairs came in; it changes in O(1) per pair added or removed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Digest {
    /// How many pairs.
    pub entries: u64,
    /// The wrapping sum of their hashes.
    pub sum: u64,
}

impl Digest {
    fn add(&mut self, room: &RoomName, user_id: &str) {
        self.entries += 1;
        self.sum = self.sum.wrapping_add(pair_hash(room, user_id));
    }

    fn remove(&mut self, room: &RoomName, user_id: &str) {
        self.entries = self.entries.saturating_sub(1);
        self.sum = self.sum.wrapping_sub(pair_hash(room, user_id));
    }

    fn of<'a>(pairs: impl Iterator<Item = &'a (RoomName, Arc<str>)>) -> Digest {
        let mut digest = Digest::default();
        for (room, user_id) in pairs {
            digest.add(room, user_id);
        }
        digest
    }
}

/// A hash of one pair that is the same in every process and every build
/// (FNV-1a over the two names with a separator no name contains, then a
/// 64-bit finaliser so sums of similar names do not cancel out).
fn pair_hash(room: &RoomName, user_id: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in room
        .as_str()
        .bytes()
        .chain(std::iter::once(0xff))
        .chain(user_id.bytes())
    {
        h ^= u64::from(byte);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    // splitmix64's finaliser.
    h = (h ^ (h >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h = (h ^ (h >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^ (h >> 31)
}

/// How many heartbeats in a row may disagree with what this instance
/// believes of their sender before it asks for a snapshot: while the
/// sender's digest stays the same (it is quiet), and at most.
const MISMATCHES_WHILE_QUIET: u32 = 2;
const MISMATCHES_AT_MOST: u32 = 5;

struct UserEntry {
    user: User,
    /// This instance's connections of the user in the room.
    local: usize,
    /// Other instances where the user is in the room.
    remote: Vec<Arc<str>>,
}

impl UserEntry {
    fn present(&self) -> bool {
        self.local > 0 || !self.remote.is_empty()
    }
}

/// What an instance's last heartbeat said of it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Load {
    /// Session streams open on it.
    pub connections: u64,
    /// Rooms with members on it.
    pub rooms: u64,
    /// Its counters (for rates: the difference between two reports), and
    /// whether its readiness check passes; `None` from an instance that
    /// predates them.
    pub counters: Option<Counters>,
}

/// An instance's counters, as its heartbeats carry them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    /// Messages its clients sent that were stored.
    pub messages_received: u64,
    /// Message frames queued for its connections.
    pub messages_delivered: u64,
    /// Room events published to the backplane.
    pub backplane_published: u64,
    /// Room events received from the backplane.
    pub backplane_received: u64,
    /// Publishes that failed.
    pub backplane_publish_failures: u64,
    /// Whether its readiness check passes.
    pub ready: bool,
}

struct Origin {
    /// When it was last heard from; it expires after a silence.
    last_seen: Instant,
    /// What its last heartbeat said.
    holds: Load,
    /// (room, user id) pairs present on that instance.
    entries: HashSet<(RoomName, Arc<str>)>,
    /// The digest of `entries`, kept as they change.
    digest: Digest,
    /// Heartbeats in a row whose digest differed from `digest`.
    mismatches: u32,
    /// The digest the last of those heartbeats carried.
    last_reported: Option<Digest>,
}

/// A user became present in or absent from a room.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Transition {
    /// The user is now a member.
    Joined(RoomName, User),
    /// The user is no longer a member.
    Left(RoomName, User),
}

/// What a local join or leave changed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LocalChange {
    /// The user's cluster-wide membership changed (announce it).
    pub transition: bool,
    /// The user's first (joining) or last (leaving) connection on this
    /// instance (tell the other instances).
    pub edge: bool,
}

impl Presence {
    /// The room's members, each user once, in list order: all of them.
    pub fn members(&self, room: &RoomName) -> Vec<User> {
        self.member_page(room, None, usize::MAX).members
    }

    /// The room's members after `after` (from the first when `None`), at
    /// most `limit` of them (at least 1), in list order, and how many it
    /// has. O(members) to select, O(`limit` log `limit`) to sort: a page
    /// of a big room does not sort the whole room.
    pub fn member_page(
        &self,
        room: &RoomName,
        after: Option<&MemberCursor>,
        limit: usize,
    ) -> MemberPage {
        let limit = limit.max(1);
        let Some(users) = self.rooms.get(room) else {
            return MemberPage::default();
        };
        let mut members: Vec<User> = users
            .values()
            .filter(|u| u.present() && after.is_none_or(|c| c.is_before(&u.user)))
            .map(|u| u.user.clone())
            .collect();
        let more = members.len() > limit;
        if more {
            members.select_nth_unstable_by(limit, by_name);
            members.truncate(limit);
        }
        members.sort_unstable_by(by_name);
        let next = match more {
            true => members.last().map(MemberCursor::after),
            false => None,
        };
        MemberPage {
            members,
            next,
            count: self.count(room),
        }
    }

    /// Notes `transition` for the next presence tick.
    pub fn note(&mut self, transition: &Transition) {
        let (Transition::Joined(room, user) | Transition::Left(room, user)) = transition;
        self.changed
            .entry(room.clone())
            .or_default()
            .insert(user.user_id.clone(), user.clone());
    }

    /// The changes of every room due at `now`, each changed user as they
    /// are now (a user who joined and left in between is listed as left:
    /// a member that saw them join learns they are gone, one that did not
    /// drops nothing it has). A room is due unless its members were told
    /// less than `gap` ago: a quiet room's change goes out at the next
    /// tick, a room in a storm of joins gets one frame per `gap`. Rooms not
    /// due keep their changes for a later call.
    pub fn take_changes(&mut self, now: Instant, gap: Duration) -> Vec<RoomChanges> {
        self.told.retain(|_, at| now.duration_since(*at) < gap);
        let due: Vec<RoomName> = self
            .changed
            .keys()
            .filter(|room| !self.told.contains_key(*room))
            .cloned()
            .collect();
        due.into_iter()
            .filter_map(|room| {
                let users = self.changed.remove(&room)?;
                self.told.insert(room.clone(), now);
                let present = self.rooms.get(&room);
                let (mut joined, mut left): (Vec<User>, Vec<User>) =
                    users.into_values().partition(|u| {
                        present
                            .and_then(|p| p.get(&u.user_id))
                            .is_some_and(UserEntry::present)
                    });
                joined.sort_unstable_by(by_name);
                left.sort_unstable_by(by_name);
                let count = self.count(&room);
                Some(RoomChanges {
                    room,
                    joined,
                    left,
                    count,
                })
            })
            .collect()
    }

    /// The rooms with a member anywhere, named after `after` (all when
    /// `None`), the first `limit` by name, each with its number of members.
    /// O(`limit`) rooms looked at, whatever the table's size.
    pub fn room_counts(&self, after: Option<&str>, limit: usize) -> Vec<(RoomName, usize)> {
        // Room names sort as their strings do.
        let start = match after.map(RoomName::parse) {
            None => Bound::Unbounded,
            Some(Ok(after)) => Bound::Excluded(after),
            // Not a room name: start at the first name above it.
            Some(Err(_)) => {
                let after = after.unwrap_or_default();
                return self
                    .names
                    .iter()
                    .filter(|room| room.as_str() > after)
                    .take(limit)
                    .map(|room| (room.clone(), self.count(room)))
                    .collect();
            }
        };
        self.names
            .range((start, Bound::Unbounded))
            .take(limit)
            .map(|room| (room.clone(), self.count(room)))
            .collect()
    }

    /// User `user_id`'s rooms (by name) and the instances where they are
    /// in one (`here` for this one), by id.
    pub fn user(&self, user_id: &str, here: &str) -> (Vec<RoomName>, Vec<Arc<str>>) {
        // A scan of every room, not an index: a rare operator's call, and
        // an index would cost every present user memory on every instance.
        let mut rooms = Vec::new();
        let mut instances: BTreeSet<Arc<str>> = BTreeSet::new();
        for (room, users) in &self.rooms {
            if let Some(entry) = users.get(user_id) {
                rooms.push(room.clone());
                if entry.local > 0 {
                    instances.insert(Arc::from(here));
                }
                instances.extend(entry.remote.iter().cloned());
            }
        }
        rooms.sort_unstable();
        (rooms, instances.into_iter().collect())
    }

    /// How many users `room` has: every entry is a present user once its
    /// change is applied (`prune` drops the others).
    fn count(&self, room: &RoomName) -> usize {
        self.rooms.get(room).map_or(0, HashMap::len)
    }

    /// A connection of `user` on this instance joined `room`.
    pub fn local_join(&mut self, room: &RoomName, user: &User) -> LocalChange {
        let entry = self.entry(room, user);
        let was = entry.present();
        entry.local += 1;
        let change = LocalChange {
            transition: !was,
            edge: entry.local == 1,
        };
        if change.edge {
            self.local_digest.add(room, &user.user_id);
        }
        change
    }

    /// A connection of user `user_id` on this instance left `room`.
    pub fn local_leave(&mut self, room: &RoomName, user_id: &str) -> LocalChange {
        let Some(users) = self.rooms.get_mut(room) else {
            return LocalChange {
                transition: false,
                edge: false,
            };
        };
        let Some(entry) = users.get_mut(user_id) else {
            return LocalChange {
                transition: false,
                edge: false,
            };
        };
        if entry.local == 0 {
            return LocalChange {
                transition: false,
                edge: false,
            };
        }
        entry.local -= 1;
        let change = LocalChange {
            transition: !entry.present(),
            edge: entry.local == 0,
        };
        if change.edge {
            self.local_digest.remove(room, user_id);
        }
        self.prune(room, user_id);
        change
    }

    /// Another instance says `user` is (or is no longer) in `room` there.
    pub fn remote_set(
        &mut self,
        origin: &Arc<str>,
        room: &RoomName,
        user: &User,
        present: bool,
        now: Instant,
    ) -> Option<Transition> {
        let known = self.origin(origin, now);
        let key = (room.clone(), user.user_id.clone());
        if present {
            if known.entries.insert(key) {
                known.digest.add(room, &user.user_id);
            }
            let entry = self.entry(room, user);
            let was = entry.present();
            if !entry.remote.contains(origin) {
                entry.remote.push(origin.clone());
            }
            (!was).then(|| Transition::Joined(room.clone(), user.clone()))
        } else {
            if known.entries.remove(&key) {
                known.digest.remove(room, &user.user_id);
            }
            self.remove_remote(origin, room, &user.user_id)
        }
    }

    /// Notes that `origin` is alive and what it holds; returns true if it
    /// was unknown.
    pub fn heartbeat(&mut self, origin: &Arc<str>, now: Instant, holds: Load) -> bool {
        let unknown = !self.origins.contains_key(origin);
        self.origin(origin, now).holds = holds;
        unknown
    }

    /// This instance's digest, for its heartbeats.
    pub fn local_digest(&self) -> Digest {
        self.local_digest
    }

    /// Compares `reported`, the digest `origin`'s heartbeat carried, with
    /// what this instance believes `origin` holds. Returns true when it is
    /// time to ask `origin` for its snapshot: the two differed on
    /// `MISMATCHES_WHILE_QUIET` heartbeats in a row carrying the same
    /// digest (changes in flight explain a single one), or on
    /// `MISMATCHES_AT_MOST` in a row however busy it is.
    pub fn check_digest(&mut self, origin: &Arc<str>, reported: Digest, now: Instant) -> bool {
        let known = self.origin(origin, now);
        if known.digest == reported {
            known.mismatches = 0;
            known.last_reported = None;
            return false;
        }
        known.mismatches += 1;
        let quiet = known.last_reported == Some(reported);
        known.last_reported = Some(reported);
        let ask = (quiet && known.mismatches >= MISMATCHES_WHILE_QUIET)
            || known.mismatches >= MISMATCHES_AT_MOST;
        if ask {
            known.mismatches = 0;
            known.last_reported = None;
        }
        ask
    }

    /// The other instances: id, time since last heard, and what their last
    /// heartbeat said.
    pub fn instances_seen(&self, now: Instant) -> Vec<(Arc<str>, Duration, Load)> {
        let mut out: Vec<_> = self
            .origins
            .iter()
            .map(|(id, o)| {
                (
                    id.clone(),
                    now.saturating_duration_since(o.last_seen),
                    o.holds,
                )
            })
            .collect();
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }

    /// Replaces everything known of `origin` with `entries`.
    pub fn replace_origin(
        &mut self,
        origin: &Arc<str>,
        entries: Vec<(RoomName, User)>,
        now: Instant,
    ) -> Vec<Transition> {
        let old = self
            .origins
            .get(origin)
            .map(|o| o.entries.clone())
            .unwrap_or_default();
        let new: HashSet<(RoomName, Arc<str>)> = entries
            .iter()
            .map(|(room, user)| (room.clone(), user.user_id.clone()))
            .collect();
        let mut transitions = Vec::new();
        for (room, user_id) in old.difference(&new) {
            transitions.extend(self.remove_remote(origin, room, user_id));
        }
        for (room, user) in &entries {
            transitions.extend(self.remote_set(origin, room, user, true, now));
        }
        let known = self.origin(origin, now);
        known.digest = Digest::of(new.iter());
        known.entries = new;
        transitions
    }

    /// Forgets instances not heard from for `expiry`; returns who left.
    pub fn expire(&mut self, now: Instant, expiry: Duration) -> Vec<Transition> {
        let dead: Vec<Arc<str>> = self
            .origins
            .iter()
            .filter(|(_, o)| now.duration_since(o.last_seen) > expiry)
            .map(|(id, _)| id.clone())
            .collect();
        let mut transitions = Vec::new();
        for origin in dead {
            tracing::warn!(instance = %origin, "instance stopped sending heartbeats; its members are gone");
            if let Some(o) = self.origins.remove(&origin) {
                for (room, user_id) in o.entries {
                    transitions.extend(self.remove_remote(&origin, &room, &user_id));
                }
            }
        }
        transitions
    }

    /// Every (room, user) with a connection on this instance.
    pub fn local_entries(&self) -> Vec<(RoomName, User)> {
        let mut out = Vec::new();
        for (room, users) in &self.rooms {
            for entry in users.values().filter(|u| u.local > 0) {
                out.push((room.clone(), entry.user.clone()));
            }
        }
        out
    }

    /// How many other instances are known.
    pub fn instances(&self) -> usize {
        self.origins.len()
    }

    fn origin(&mut self, origin: &Arc<str>, now: Instant) -> &mut Origin {
        let o = self
            .origins
            .entry(origin.clone())
            .or_insert_with(|| Origin {
                last_seen: now,
                holds: Load::default(),
                entries: HashSet::new(),
                digest: Digest::default(),
                mismatches: 0,
                last_reported: None,
            });
        o.last_seen = o.last_seen.max(now);
        o
    }

    fn entry(&mut self, room: &RoomName, user: &User) -> &mut UserEntry {
        if !self.rooms.contains_key(room) {
            self.names.insert(room.clone());
        }
        self.rooms
            .entry(room.clone())
            .or_default()
            .entry(user.user_id.clone())
            .or_insert_with(|| UserEntry {
                user: user.clone(),
                local: 0,
                remote: Vec::new(),
            })
    }

    fn remove_remote(
        &mut self,
        origin: &Arc<str>,
        room: &RoomName,
        user_id: &str,
    ) -> Option<Transition> {
        let entry = self.rooms.get_mut(room)?.get_mut(user_id)?;
        let was = entry.present();
        entry.remote.retain(|o| o != origin);
        let left =
            (was && !entry.present()).then(|| Transition::Left(room.clone(), entry.user.clone()));
        self.prune(room, user_id);
        left
    }

    /// Drops entries of users no longer present, and empty rooms.
    fn prune(&mut self, room: &RoomName, user_id: &str) {
        if let Some(users) = self.rooms.get_mut(room) {
            if users.get(user_id).is_some_and(|u| !u.present()) {
                users.remove(user_id);
            }
            if users.is_empty() {
                self.rooms.remove(room);
                self.names.remove(room);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(id: &str) -> User {
        User {
            user_id: Arc::from(id),
            display_name: Arc::from(id),
        }
    }

    fn room(name: &str) -> RoomName {
        RoomName::parse(name).unwrap()
    }

    #[test]
    fn rooms_are_listed_by_name_a_page_at_a_time_with_their_members() {
        let mut p = Presence::default();
        let now = Instant::now();
        let b: Arc<str> = Arc::from("b");
        for (name, users) in [
            ("r3", &["cat"][..]),
            ("r1", &["ann"]),
            ("r2", &["ann", "bob"]),
        ] {
            for u in users {
                p.local_join(&room(name), &user(u));
            }
        }
        p.remote_set(&b, &room("r2"), &user("dan"), true, now);
        p.remote_set(&b, &room("r2"), &user("ann"), true, now);
        let names = |page: Vec<(RoomName, usize)>| -> Vec<(String, usize)> {
            page.into_iter().map(|(r, n)| (r.to_string(), n)).collect()
        };
        assert_eq!(
            names(p.room_counts(None, 2)),
            [("r1".to_string(), 1), ("r2".to_string(), 3)]
        );
        assert_eq!(names(p.room_counts(Some("r2"), 2)), [("r3".to_string(), 1)]);
        assert_eq!(
            names(p.room_counts(Some("r10"), 1)),
            [("r2".to_string(), 3)]
        );
        assert_eq!(
            names(p.room_counts(Some("not a room"), 5)).len(),
            3,
            "'n' < 'r'"
        );
        // Emptied rooms leave the listing.
        p.local_leave(&room("r1"), "ann");
        p.local_leave(&room("r3"), "cat");
        assert_eq!(names(p.room_counts(None, 10)), [("r2".to_string(), 3)]);
        assert_eq!(p.names.len(), p.rooms.len());
        let (rooms, instances) = p.user("ann", "a");
        let rooms: Vec<&str> = rooms.iter().map(RoomName::as_str).collect();
        let instances: Vec<&str> = instances.iter().map(|i| &**i).collect();
        assert_eq!((rooms, instances), (vec!["r2"], vec!["a", "b"]));
        assert_eq!(p.user("dan", "a").1, [Arc::from("b")], "only on b");
        p.local_leave(&room("r2"), "ann");
        p.local_leave(&room("r2"), "bob");
        p.remote_set(&b, &room("r2"), &user("ann"), false, now);
        assert!(p.user("ann", "a").0.is_empty());
    }

    #[test]
    fn a_user_is_present_while_connected_anywhere() {
        let mut p = Presence::default();
        let now = Instant::now();
        let b: Arc<str> = Arc::from("b");
        let lobby = room("lobby");
        assert_eq!(
            p.local_join(&lobby, &user("alice")),
            LocalChange {
                transition: true,
                edge: true
            }
        );
        assert_eq!(
            p.local_join(&lobby, &user("alice")),
            LocalChange {
                transition: false,
                edge: false
            }
        );
        // alice also on instance b: no transition.
        assert_eq!(p.remote_set(&b, &lobby, &user("alice"), true, now), None);
        assert_eq!(
            p.local_leave(&lobby, "alice"),
            LocalChange {
                transition: false,
                edge: false
            }
        );
        assert_eq!(
            p.local_leave(&lobby, "alice"),
            LocalChange {
                transition: false,
                edge: true
            }
        );
        assert_eq!(p.members(&lobby).len(), 1, "still there through b");
        assert_eq!(
            p.remote_set(&b, &lobby, &user("alice"), false, now),
            Some(Transition::Left(lobby.clone(), user("alice")))
        );
        assert!(p.members(&lobby).is_empty());
        assert!(p.rooms.is_empty(), "pruned");
    }

    #[test]
    fn a_silent_instance_expires_and_a_snapshot_replaces() {
        let mut p = Presence::default();
        let t0 = Instant::now();
        let b: Arc<str> = Arc::from("b");
        let (lobby, dev) = (room("lobby"), room("dev"));
        p.local_join(&lobby, &user("alice"));
        let holds = Load {
            connections: 3,
            rooms: 1,
            counters: None,
        };
        assert!(p.heartbeat(&b, t0, holds), "first heard");
        assert_eq!(p.instances_seen(t0)[0].2, holds, "what it holds");
        let t = p.replace_origin(
            &b,
            vec![(lobby.clone(), user("bob")), (dev.clone(), user("bob"))],
            t0,
        );
        assert_eq!(t.len(), 2);
        // A newer snapshot without dev: bob left dev.
        let t = p.replace_origin(&b, vec![(lobby.clone(), user("bob"))], t0);
        assert_eq!(t, vec![Transition::Left(dev.clone(), user("bob"))]);
        assert!(!p.heartbeat(&b, t0 + Duration::from_secs(1), Load::default()));
        assert!(
            p.expire(t0 + Duration::from_secs(5), Duration::from_secs(10))
                .is_empty()
        );
        let gone = p.expire(t0 + Duration::from_secs(12), Duration::from_secs(10));
        assert_eq!(gone, vec![Transition::Left(lobby.clone(), user("bob"))]);
        assert_eq!(p.members(&lobby), vec![user("alice")]);
        assert_eq!(p.instances(), 0);
        assert_eq!(p.local_entries(), vec![(lobby, user("alice"))]);
    }

    /// Issue 15, report 5: what an instance believes of another is
    /// summarised the same way as that instance's own presence, whatever
    /// the order things happened in; a lasting difference asks for a
    /// snapshot, a passing one does not.
    #[test]
    fn digests_agree_on_the_same_presence_and_a_lasting_difference_asks_for_a_snapshot() {
        let t0 = Instant::now();
        let a: Arc<str> = Arc::from("a");
        let (lobby, dev) = (room("lobby"), room("dev"));
        // Instance a's own view.
        let mut on_a = Presence::default();
        on_a.local_join(&lobby, &user("alice"));
        on_a.local_join(&lobby, &user("alice"));
        on_a.local_join(&dev, &user("bob"));
        on_a.local_join(&lobby, &user("carol"));
        on_a.local_leave(&lobby, "carol");
        on_a.local_leave(&lobby, "nobody");
        // b learns it in another order, with a snapshot in between.
        let mut on_b = Presence::default();
        on_b.remote_set(&a, &dev, &user("bob"), true, t0);
        on_b.replace_origin(&a, vec![(lobby.clone(), user("carol"))], t0);
        on_b.remote_set(&a, &lobby, &user("alice"), true, t0);
        on_b.remote_set(&a, &lobby, &user("carol"), false, t0);
        on_b.remote_set(&a, &dev, &user("bob"), true, t0);
        assert_eq!(on_a.local_digest().entries, 2);
        assert!(!on_b.check_digest(&a, on_a.local_digest(), t0));

        // A change b never heard of: one differing heartbeat is a change in
        // flight; the second with the same digest asks.
        on_a.local_join(&dev, &user("dave"));
        let reported = on_a.local_digest();
        assert!(!on_b.check_digest(&a, reported, t0));
        assert!(on_b.check_digest(&a, reported, t0));
        // The snapshot heals it.
        on_b.replace_origin(&a, on_a.local_entries().into_iter().collect(), t0);
        assert!(!on_b.check_digest(&a, reported, t0));

        // A busy instance (its digest moves every time) is asked at most
        // every fifth heartbeat.
        let mut asked = 0;
        for i in 0..10 {
            let mut busy = reported;
            busy.sum = busy.sum.wrapping_add(i + 1);
            asked += usize::from(on_b.check_digest(&a, busy, t0));
        }
        assert_eq!(asked, 2);
    }

    #[test]
    fn the_pair_hash_is_fixed_across_processes() {
        // Heartbeats compare these between processes and builds.
        assert_eq!(
            pair_hash(&room("lobby"), "alice"),
            pair_hash(&room("lobby"), "alice")
        );
        assert_ne!(
            pair_hash(&room("lobby"), "alice"),
            pair_hash(&room("alice"), "lobby")
        );
        assert_eq!(pair_hash(&room("lobby"), "alice"), 0xb898_faff_9900_a60a);
    }

    #[test]
    fn member_pages_cover_a_room_once_in_order_whatever_joins_between_them() {
        let mut p = Presence::default();
        let lobby = room("lobby");
        for i in (0..250).rev() {
            p.local_join(&lobby, &user(&format!("u{i:03}")));
        }
        let first = p.member_page(&lobby, None, 100);
        assert_eq!((first.members.len(), first.count), (100, 250));
        assert_eq!(&*first.members[0].user_id, "u000");
        // A member before the cursor arrives, and one after it leaves:
        // the next pages neither repeat nor skip those who stayed.
        p.local_join(&lobby, &user("a-newcomer"));
        p.local_leave(&lobby, "u200");
        let cursor = MemberCursor::parse(&first.next.unwrap().encode()).unwrap();
        let second = p.member_page(&lobby, Some(&cursor), 100);
        let third = p.member_page(&lobby, second.next.as_ref(), 100);
        assert!(third.next.is_none(), "the last page says so");
        let listed: Vec<String> = [first.members, second.members, third.members]
            .concat()
            .iter()
            .map(|u| u.user_id.to_string())
            .collect();
        let stayed: Vec<String> = (0..250)
            .filter(|i| *i != 200)
            .map(|i| format!("u{i:03}"))
            .collect();
        assert_eq!(listed, stayed);
        assert!(MemberCursor::parse("no separator").is_none());
        assert!(
            MemberCursor::parse(&"x\u{1f}".repeat(300)).is_none(),
            "too long"
        );
    }

    #[test]
    fn changes_are_gathered_per_room_as_each_user_is_at_the_tick() {
        let mut p = Presence::default();
        let (lobby, dev) = (room("lobby"), room("dev"));
        let joined = |p: &mut Presence, r: &RoomName, u: &str| {
            if p.local_join(r, &user(u)).transition {
                p.note(&Transition::Joined(r.clone(), user(u)));
            }
        };
        let left = |p: &mut Presence, r: &RoomName, u: &str| {
            if p.local_leave(r, u).transition {
                p.note(&Transition::Left(r.clone(), user(u)));
            }
        };
        joined(&mut p, &lobby, "ann");
        joined(&mut p, &lobby, "bob");
        joined(&mut p, &lobby, "cat");
        left(&mut p, &lobby, "cat");
        joined(&mut p, &dev, "ann");
        let now = Instant::now();
        let gap = Duration::from_secs(1);
        let mut changes = p.take_changes(now, gap);
        changes.sort_by(|a, b| a.room.as_str().cmp(b.room.as_str()));
        let names = |users: &[User]| {
            users
                .iter()
                .map(|u| u.user_id.to_string())
                .collect::<Vec<_>>()
        };
        assert_eq!(changes.len(), 2, "one entry per room");
        assert_eq!(
            (names(&changes[0].joined), changes[0].count),
            (vec!["ann".to_string()], 1)
        );
        assert_eq!(names(&changes[1].joined), ["ann", "bob"]);
        assert_eq!(
            names(&changes[1].left),
            ["cat"],
            "joined and left within the tick: gone"
        );
        assert_eq!(changes[1].count, 2);
        assert!(p.take_changes(now, gap).is_empty(), "taking empties");
        // A room told just now waits its gap; another room does not.
        joined(&mut p, &lobby, "dan");
        joined(&mut p, &room("ops"), "eve");
        let soon = p.take_changes(now + gap / 2, gap);
        assert_eq!(soon.len(), 1);
        assert_eq!(soon[0].room.as_str(), "ops");
        let later = p.take_changes(now + gap, gap);
        assert_eq!(later.len(), 1, "lobby's change waited, not lost");
        assert_eq!(names(&later[0].joined), ["dan"]);
    }
}
