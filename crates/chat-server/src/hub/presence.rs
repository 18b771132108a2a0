//! Who is in which room, cluster-wide: this instance's connections (counted
//! per user) and every other instance's users, learned from the control
//! channel and forgotten when an instance stops sending heartbeats.
//!
//! A user is a member of a room while they have a connection in it on any
//! instance. The methods report the transitions — a user becoming present
//! or absent — which are exactly when members hear "joined" or "left".

use crate::domain::User;
use crate::domain::validate::RoomName;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The presence table. Not locked itself: the hub holds it under one mutex
/// together with the order of join replies and presence events.
#[derive(Default)]
pub struct Presence {
    rooms: HashMap<RoomName, HashMap<Arc<str>, UserEntry>>,
    origins: HashMap<Arc<str>, Origin>,
}

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

struct Origin {
    last_seen: Instant,
    /// What its last heartbeat said: (connections, rooms).
    holds: (u64, u64),
    /// (room, user id) pairs present on that instance.
    entries: HashSet<(RoomName, Arc<str>)>,
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
    /// The room's members, each user once, sorted by display name.
    pub fn members(&self, room: &RoomName) -> Vec<User> {
        let mut members: Vec<User> = self
            .rooms
            .get(room)
            .map(|users| {
                users
                    .values()
                    .filter(|u| u.present())
                    .map(|u| u.user.clone())
                    .collect()
            })
            .unwrap_or_default();
        members.sort_by(|a, b| (&a.display_name, &a.user_id).cmp(&(&b.display_name, &b.user_id)));
        members
    }

    /// A connection of `user` on this instance joined `room`.
    pub fn local_join(&mut self, room: &RoomName, user: &User) -> LocalChange {
        let entry = self.entry(room, user);
        let was = entry.present();
        entry.local += 1;
        LocalChange {
            transition: !was,
            edge: entry.local == 1,
        }
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
        entry.local = entry.local.saturating_sub(1);
        let change = LocalChange {
            transition: !entry.present(),
            edge: entry.local == 0,
        };
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
            known.entries.insert(key);
            let entry = self.entry(room, user);
            let was = entry.present();
            if !entry.remote.contains(origin) {
                entry.remote.push(origin.clone());
            }
            (!was).then(|| Transition::Joined(room.clone(), user.clone()))
        } else {
            known.entries.remove(&key);
            self.remove_remote(origin, room, &user.user_id)
        }
    }

    /// Notes that `origin` is alive and holds `(connections, rooms)`;
    /// returns true if it was unknown.
    pub fn heartbeat(&mut self, origin: &Arc<str>, now: Instant, holds: (u64, u64)) -> bool {
        let unknown = !self.origins.contains_key(origin);
        self.origin(origin, now).holds = holds;
        unknown
    }

    /// The other instances: id, time since last heard, and what their last
    /// heartbeat said they hold `(connections, rooms)`.
    pub fn instances_seen(&self, now: Instant) -> Vec<(Arc<str>, Duration, (u64, u64))> {
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
        self.origin(origin, now).entries = new;
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
                holds: (0, 0),
                entries: HashSet::new(),
            });
        o.last_seen = o.last_seen.max(now);
        o
    }

    fn entry(&mut self, room: &RoomName, user: &User) -> &mut UserEntry {
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
        assert!(p.heartbeat(&b, t0, (3, 1)), "first heard");
        assert_eq!(p.instances_seen(t0)[0].2, (3, 1), "what it holds");
        let t = p.replace_origin(
            &b,
            vec![(lobby.clone(), user("bob")), (dev.clone(), user("bob"))],
            t0,
        );
        assert_eq!(t.len(), 2);
        // A newer snapshot without dev: bob left dev.
        let t = p.replace_origin(&b, vec![(lobby.clone(), user("bob"))], t0);
        assert_eq!(t, vec![Transition::Left(dev.clone(), user("bob"))]);
        assert!(!p.heartbeat(&b, t0 + Duration::from_secs(1), (0, 0)));
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
}
