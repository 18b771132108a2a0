//! Typing indicators: who is typing in each room with local members, told
//! to those members as one `Typing` event per room holding the room's whole
//! typing state (the first few typists and how many there are). The event
//! goes out at once when the room was quiet, then at most once per [`GAP`],
//! the announcements in between coalesced: a room of a thousand typists
//! costs each member about one event a second, not one per typist.
//!
//! Every instance keeps the boards of its own rooms from the announcements
//! the backplane brings it (its own clients' too); only the announcements
//! cross instances. A member's own typing is never in the event it gets:
//! the frame has at most [`SHOWN`] + 3 variants (for members not typing;
//! for typists not among the first [`SHOWN`] + 1; one for each of those),
//! each encoded once, whatever the room's size. A member who would only be
//! told again that nobody else is typing is not told (the typist's own
//! connections, in a room where only they type).

use super::{Hub, member};
use crate::domain::User;
use chat_proto::EncodedFrame;
use chat_proto::v1::{Typing, server_frame::Frame};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

/// Shortest time between two events for one room.
pub const GAP: Duration = Duration::from_secs(1);

/// How often rooms whose next event waits for its gap are looked at.
pub const TICK: Duration = Duration::from_millis(250);

/// Typists an event lists at most (the rest are only counted).
pub const SHOWN: usize = 5;

/// Typists one room's board holds at most; later ones are not counted
/// until some stop (bounds the board's memory).
pub const MAX_TYPISTS: usize = 10_000;

/// How long a typist stays on the board, and members show an event,
/// unless repeated: clients repeat `typing = true` every few seconds while
/// typing (docs/PROTOCOL.md).
pub const EXPIRES_AFTER: Duration = Duration::from_secs(6);

/// One room's typists, on one instance.
#[derive(Debug, Default)]
pub struct Board {
    /// Who is typing, by user id.
    typists: HashMap<Arc<str>, Typist>,
    /// When the room's members were last told; `None`: not yet.
    last_sent: Option<Instant>,
    /// Whether the room waits in its rooms' due list for its next event.
    queued: bool,
    /// Who the last event said was typing, as far as telling a member
    /// that nobody else is needs it.
    last_told: Told,
    /// When the full board last dropped its quiet typists (at most once
    /// per [`GAP`], so a crowd beyond [`MAX_TYPISTS`] cannot make every
    /// note a scan of the board).
    pruned: Option<Instant>,
}

/// Who an event said was typing: nobody, one user, or more.
#[derive(Debug, Default, Clone)]
enum Told {
    /// Nobody (or no event yet: members start knowing of no typist).
    #[default]
    Nobody,
    /// This user alone.
    One(Arc<str>),
    /// Several.
    Many,
}

/// One member typing.
#[derive(Debug)]
struct Typist {
    /// The name members show.
    name: Arc<str>,
    /// Since when (the longest typing are listed first).
    since: Instant,
    /// Off the board after this, unless repeated.
    until: Instant,
}

/// What a note asks of the room.
#[derive(Debug, PartialEq)]
pub enum Next {
    /// Tell the members now ([`Board::event`]).
    Now,
    /// Put the room on the due list: its gap has not passed.
    Queue,
    /// Nothing: no change, or the room is already due.
    Nothing,
}

impl Board {
    /// A new board for a room whose members were last told at `last_sent`
    /// (its previous board had nothing left to say), so the room's gap
    /// holds across boards.
    pub fn after(last_sent: Option<Instant>) -> Board {
        Board {
            last_sent,
            ..Board::default()
        }
    }

    /// When the room's members were last told.
    pub fn last_sent(&self) -> Option<Instant> {
        self.last_sent
    }

    /// `user` is typing (or stopped) at `now`: updates the board and says
    /// what the room needs. A repeat is a change (it keeps the members'
    /// display alive); a stop from someone not on the board is not.
    pub fn note(&mut self, user: &User, typing: bool, now: Instant) -> Next {
        let changed = if typing {
            let until = now + EXPIRES_AFTER;
            if self.typists.len() >= MAX_TYPISTS
                && !self.typists.contains_key(&user.user_id)
                && self
                    .pruned
                    .is_none_or(|at| now.saturating_duration_since(at) >= GAP)
            {
                // Full: make room from the ones who went quiet.
                self.pruned = Some(now);
                self.typists.retain(|_, t| t.until > now);
            }
            if let Some(t) = self.typists.get_mut(&user.user_id) {
                if t.until <= now {
                    // Gone quiet (their stop was lost): typing afresh.
                    t.since = now;
                }
                t.until = until;
                if t.name != user.display_name {
                    t.name = user.display_name.clone();
                }
                true
            } else if self.typists.len() < MAX_TYPISTS {
                let name = user.display_name.clone();
                let typist = Typist {
                    name,
                    since: now,
                    until,
                };
                self.typists.insert(user.user_id.clone(), typist);
                true
            } else {
                false
            }
        } else {
            self.typists.remove(&user.user_id).is_some()
        };
        if !changed || self.queued {
            Next::Nothing
        } else if self.is_due(now) {
            Next::Now
        } else {
            self.queued = true;
            Next::Queue
        }
    }

    /// Whether the room's gap has passed at `now`.
    pub fn is_due(&self, now: Instant) -> bool {
        self.last_sent
            .is_none_or(|at| now.saturating_duration_since(at) >= GAP)
    }

    /// Whether the room waits on its rooms' due list.
    pub fn is_queued(&self) -> bool {
        self.queued
    }

    /// Whether nothing is left to tell or wait for: no typists, not due.
    pub fn is_idle(&self) -> bool {
        self.typists.is_empty() && !self.queued
    }

    /// The event for `room`'s members at `now`: drops the expired typists
    /// and counts the room as told.
    pub fn event(&mut self, room: &str, now: Instant) -> Event<'_> {
        self.typists.retain(|_, t| t.until > now);
        self.last_sent = Some(now);
        self.queued = false;
        let mut first: Vec<(&Arc<str>, &Typist)> = self.typists.iter().collect();
        let longest = |a: &(&Arc<str>, &Typist), b: &(&Arc<str>, &Typist)| {
            (a.1.since, a.0).cmp(&(b.1.since, b.0))
        };
        if first.len() > SHOWN + 1 {
            first.select_nth_unstable_by(SHOWN, longest);
            first.truncate(SHOWN + 1);
        }
        first.sort_unstable_by(longest);
        let told = match first.as_slice() {
            [] => Told::Nobody,
            [(id, _)] => Told::One((*id).clone()),
            _ => Told::Many,
        };
        Event {
            room: room.to_string(),
            count: self.typists.len(),
            typists: &self.typists,
            first,
            before: std::mem::replace(&mut self.last_told, told),
            frames: Default::default(),
        }
    }
}

/// One room's event, in the variants its members need.
pub struct Event<'a> {
    /// The room.
    room: String,
    /// How many are typing.
    count: usize,
    /// Everyone typing, to tell a typist from a member who is not.
    typists: &'a HashMap<Arc<str>, Typist>,
    /// The first [`SHOWN`] + 1 typists, the longest typing first (one more
    /// than listed, to fill in for a listed one who receives it).
    first: Vec<(&'a Arc<str>, &'a Typist)>,
    /// Who the room's previous event said was typing.
    before: Told,
    /// The encoded variants, by [`Event::variant`], made when first needed.
    frames: [Option<EncodedFrame>; SHOWN + 3],
}

impl Event<'_> {
    /// The frame for a member who is `user`; `None` if it would only say
    /// again that nobody else is typing.
    pub fn frame_for(&mut self, user: &str) -> Option<&EncodedFrame> {
        let variant = self.variant(user);
        let others = self.count - usize::from(variant != 0);
        let knew_nobody = match &self.before {
            Told::Nobody => true,
            Told::One(id) => **id == *user,
            Told::Many => false,
        };
        if others == 0 && knew_nobody {
            return None;
        }
        if self.frames[variant].is_none() {
            let frame = self.encode(variant);
            self.frames[variant] = Some(frame);
        }
        self.frames[variant].as_ref()
    }

    /// 0: `user` is not typing; 1: typing but not among the first; 2 + j:
    /// the j-th of the first.
    fn variant(&self, user: &str) -> usize {
        if !self.typists.contains_key(user) {
            return 0;
        }
        match self.first.iter().position(|(id, _)| ***id == *user) {
            Some(j) => 2 + j,
            None => 1,
        }
    }

    fn encode(&self, variant: usize) -> EncodedFrame {
        let skip = variant.checked_sub(2);
        let typists = self
            .first
            .iter()
            .enumerate()
            .filter(|(j, _)| Some(*j) != skip)
            .take(SHOWN)
            .map(|(_, (id, t))| member(&User::new((*id).clone(), t.name.clone())))
            .collect();
        let others = if variant == 0 { 0 } else { 1 };
        EncodedFrame::from(Frame::Typing(Typing {
            room: self.room.clone(),
            typists,
            count: u32::try_from(self.count - others).unwrap_or(u32::MAX),
            expires_after_ms: EXPIRES_AFTER.as_millis() as u32,
        }))
    }
}

/// Every `tick` until `shutdown`, tells the rooms whose gap has passed
/// who is typing (typing is ephemeral: nothing is owed after a shutdown).
pub async fn run(hub: Arc<Hub>, tick: Duration, shutdown: CancellationToken) {
    let mut ticks = tokio::time::interval(tick);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = ticks.tick() => hub.rooms().flush_typing(Instant::now()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chat_proto::v1::ServerFrame;
    use prost::Message;

    fn user(id: &str) -> User {
        User::new(id, id.to_uppercase())
    }

    /// The ids listed and the count in the event `user` gets.
    fn seen_by(event: &mut Event<'_>, user: &str) -> (Vec<String>, u32) {
        let frame = event.frame_for(user).expect("told");
        match ServerFrame::decode(frame.0.clone()).unwrap().frame {
            Some(Frame::Typing(t)) => (t.typists.into_iter().map(|m| m.user_id).collect(), t.count),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn the_first_note_goes_out_at_once_then_changes_wait_for_the_gap() {
        let mut board = Board::default();
        let t0 = Instant::now();
        assert_eq!(board.note(&user("ann"), true, t0), Next::Now);
        board.event("lobby", t0);
        let soon = t0 + GAP / 2;
        assert_eq!(board.note(&user("bob"), true, soon), Next::Queue);
        assert_eq!(board.note(&user("ann"), true, soon), Next::Nothing, "due");
        assert!(!board.is_due(soon));
        assert!(board.is_due(t0 + GAP));
        let mut event = board.event("lobby", t0 + GAP);
        assert_eq!(
            seen_by(&mut event, "cat"),
            (vec!["ann".into(), "bob".into()], 2)
        );
        assert_eq!(
            board.note(&user("dan"), false, t0 + GAP * 3),
            Next::Nothing,
            "not typing"
        );
        assert_eq!(board.note(&user("ann"), false, t0 + GAP * 3), Next::Now);
    }

    #[test]
    fn nobody_sees_their_own_typing_and_the_count_leaves_them_out() {
        let mut board = Board::default();
        let t0 = Instant::now();
        let ids: Vec<String> = (0..9).map(|i| format!("u{i}")).collect();
        for (i, id) in ids.iter().enumerate() {
            board.note(&user(id), true, t0 + Duration::from_millis(i as u64));
        }
        let mut event = board.event("lobby", t0 + GAP);
        let first5: Vec<String> = ids[..5].to_vec();
        assert_eq!(seen_by(&mut event, "watcher"), (first5.clone(), 9));
        assert_eq!(
            seen_by(&mut event, "u8"),
            (first5.clone(), 8),
            "not listed: counted out"
        );
        let (listed, count) = seen_by(&mut event, "u2");
        assert_eq!(count, 8);
        assert_eq!(listed, ["u0", "u1", "u3", "u4", "u5"], "the sixth fills in");
        for id in &ids {
            assert!(!seen_by(&mut event, id).0.contains(id), "{id} sees itself");
        }
        let made = event.frames.iter().filter(|f| f.is_some()).count();
        assert_eq!(
            made,
            1 + 1 + SHOWN + 1,
            "one frame per variant, not per member"
        );
    }

    #[test]
    fn a_lone_typist_is_not_told_that_nobody_else_types() {
        let mut board = Board::default();
        let t0 = Instant::now();
        board.note(&user("ann"), true, t0);
        let mut event = board.event("dm", t0);
        assert!(
            event.frame_for("ann").is_none(),
            "ann alone: nothing new for her"
        );
        assert_eq!(seen_by(&mut event, "bob"), (vec!["ann".into()], 1));
        drop(event);
        board.note(&user("bob"), true, t0 + GAP);
        let mut event = board.event("dm", t0 + GAP);
        assert_eq!(seen_by(&mut event, "ann"), (vec!["bob".into()], 1));
        drop(event);
        board.note(&user("bob"), false, t0 + GAP * 2);
        board.note(&user("ann"), false, t0 + GAP * 2);
        let mut event = board.event("dm", t0 + GAP * 2);
        assert_eq!(seen_by(&mut event, "ann"), (vec![], 0), "bob stopped: told");
        assert_eq!(seen_by(&mut event, "bob"), (vec![], 0), "ann stopped: told");
        drop(event);
        assert!(board.is_idle());
        let mut again = board.event("dm", t0 + GAP * 3);
        assert!(again.frame_for("cat").is_none(), "nobody, twice: not told");
    }

    #[test]
    fn typists_expire_and_the_board_is_bounded() {
        let mut board = Board::default();
        let t0 = Instant::now();
        board.note(&user("ann"), true, t0);
        board.note(&user("bob"), true, t0 + EXPIRES_AFTER / 2);
        let mut event = board.event("lobby", t0 + EXPIRES_AFTER);
        assert_eq!(
            seen_by(&mut event, "cat"),
            (vec!["bob".into()], 1),
            "ann expired"
        );
        let mut board = Board::default();
        for i in 0..MAX_TYPISTS + 10 {
            board.note(&user(&format!("u{i}")), true, t0);
        }
        assert_eq!(board.typists.len(), MAX_TYPISTS);
        let mut event = board.event("lobby", t0);
        assert_eq!(seen_by(&mut event, "cat").1 as usize, MAX_TYPISTS);
        let stopped = board.note(&user("u0"), false, t0);
        assert_eq!(stopped, Next::Queue);
        assert!(!board.is_idle());
        // Once the crowd went quiet, newcomers get in again.
        let mut full = Board::default();
        for i in 0..MAX_TYPISTS {
            full.note(&user(&format!("u{i}")), true, t0);
        }
        let later = t0 + EXPIRES_AFTER * 2;
        assert_eq!(full.note(&user("newcomer"), true, later), Next::Now);
        assert_eq!(full.typists.len(), 1, "the quiet crowd made room");
        // A typist whose stop was lost and who types again is typing afresh.
        let mut board = Board::default();
        board.note(&user("ann"), true, t0);
        board.note(&user("bob"), true, t0 + GAP);
        let back = t0 + EXPIRES_AFTER + GAP / 2;
        board.note(&user("bob"), true, back);
        board.note(&user("ann"), true, back);
        let mut event = board.event("lobby", back);
        assert_eq!(
            seen_by(&mut event, "cat").0,
            ["bob", "ann"],
            "ann went quiet in between"
        );
    }
}
