//! This instance's rooms: which local connections are in each, and local
//! fan-out. (Who the members are, cluster-wide, is `hub::presence`.)
//!
//! Rooms live in shards keyed by name, so joins, leaves and deliveries in
//! different rooms never share a lock. A room exists while it has local
//! connections.
//!
//! In ordered mode (one store numbers every room's messages) each room
//! hands messages to its members strictly in sequence order: a duplicate is
//! dropped, a message after a gap is held back and a repair is requested
//! (the repair task fills the gap from the store). A joining connection
//! first collects live frames while its backlog is read, then receives
//! reply, backlog and collected frames in that order: no gap, no duplicate.

use super::outbox::{Deferred, Outbox};
use super::typing::{Board, Next};
use crate::backplane::{FrameSink, RoomFrame, TypingNote};
use crate::domain::validate::RoomName;
use chat_proto::EncodedFrame;
use chat_util::lock;
use std::collections::{BTreeMap, HashMap};
use std::hash::{BuildHasher, RandomState};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

const SHARDS: usize = 64;

/// Identifies one connection (one Session stream) on this instance.
pub type ConnId = u64;

type Shard = Mutex<HashMap<RoomName, Arc<Room>>>;

/// Messages held back behind a gap, per room, at most; beyond it the
/// newest are dropped (the repair reads them from the store).
const MAX_HELD: usize = 10_000;
/// Frames a joining connection may collect while its backlog is read.
const MAX_JOIN_PENDING: usize = 10_000;

/// Every room with local members.
pub struct Rooms {
    hasher: RandomState,
    shards: Box<[Shard]>,
    /// Whether messages are delivered in sequence order (see the module).
    ordered: bool,
    /// Where rooms with a gap are reported.
    repairs: Option<tokio::sync::mpsc::Sender<RoomName>>,
    /// Message frames queued for local connections, ever (a metric).
    deliveries: Arc<AtomicU64>,
    /// Stored messages offered by the repair task, ever (a metric).
    repaired: AtomicU64,
    /// From the store's acknowledgement to the hand-off to local
    /// connections, per message arriving here (a metric).
    delivery_latency: crate::metrics::Histogram,
    /// Rooms whose next typing event waits for its gap (see
    /// [`Rooms::flush_typing`]); each is on it once while its board says so.
    typing_due: Mutex<Vec<RoomName>>,
    /// Typing events queued for local connections, ever (a metric).
    typing_events: AtomicU64,
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
    recipients: Vec<Recipient>,
    /// Connections whose join is being completed; live frames wait here.
    joining: Vec<Joining>,
    /// Highest sequence handed to local members (ordered mode).
    delivered: u64,
    /// Messages that arrived after a gap, by sequence (ordered mode).
    held: BTreeMap<u64, EncodedFrame>,
    /// The rooms' delivery counter.
    deliveries: Arc<AtomicU64>,
    /// Who is typing here, while anyone is or an event is owed (boxed:
    /// most rooms have nobody typing most of the time).
    typing: Option<Box<Board>>,
    /// When the members were last told who is typing, kept when the board
    /// goes, so the room's next board keeps its gap.
    typing_told: Option<Instant>,
}

struct Recipient {
    conn: ConnId,
    /// Its user: the typing events it gets leave the user out.
    user: Arc<str>,
    outbox: Outbox,
    /// Messages up to this sequence the connection already has (it resumed
    /// from further on than this instance had delivered): skipped.
    seen: u64,
}

struct Joining {
    conn: ConnId,
    user: Arc<str>,
    outbox: Outbox,
    pending: Vec<(Option<u64>, EncodedFrame)>,
}

impl RoomState {
    /// Queues `frame` (message `sequence`, if it is one) for every member
    /// that does not have it, and for joiners to receive later.
    fn fan_out(&mut self, sequence: Option<u64>, frame: &EncodedFrame, writes: &mut Deferred) {
        let mut queued = 0;
        writes.reserve(self.recipients.len());
        for r in &self.recipients {
            if sequence.is_none_or(|s| s > r.seen) {
                queued += u64::from(r.outbox.push_deferred(frame.clone(), writes));
            }
        }
        if sequence.is_some() {
            self.deliveries.fetch_add(queued, Ordering::Relaxed);
        }
        for joining in &mut self.joining {
            if joining.pending.len() < MAX_JOIN_PENDING {
                joining.pending.push((sequence, frame.clone()));
            } else {
                // It cannot keep up even before it has joined.
                joining.outbox.push_overflowed();
            }
        }
    }

    /// Tells the members who is typing now (`room`'s board's event), each
    /// leaving its own user out (and not telling one again that nobody
    /// else is); returns how many took it. Ephemeral: a
    /// member whose queue is filling misses it rather than being kicked,
    /// and joiners do not get it (the next one reaches them). The board
    /// goes once it has nothing left to say.
    fn tell_typing(&mut self, room: &RoomName, now: Instant, writes: &mut Deferred) -> u64 {
        let Some(board) = self.typing.as_mut() else {
            return 0;
        };
        let mut event = board.event(room.as_str(), now);
        let mut told = 0;
        writes.reserve(self.recipients.len());
        for r in &self.recipients {
            if let Some(frame) = event.frame_for(&r.user) {
                told += u64::from(r.outbox.offer_deferred(frame.clone(), writes));
            }
        }
        drop(event);
        if board.is_idle() {
            self.typing_told = board.last_sent();
            self.typing = None;
        }
        told
    }

    /// Offers message `sequence`; returns whether a gap remains.
    fn offer(&mut self, sequence: u64, frame: &EncodedFrame, writes: &mut Deferred) -> bool {
        if sequence <= self.delivered {
            return !self.held.is_empty();
        }
        if sequence == self.delivered + 1 {
            self.fan_out(Some(sequence), frame, writes);
            self.delivered = sequence;
            while let Some(next) = self.held.remove(&(self.delivered + 1)) {
                self.fan_out(Some(self.delivered + 1), &next, writes);
                self.delivered += 1;
            }
        } else {
            self.held.insert(sequence, frame.clone());
            if self.held.len() > MAX_HELD {
                self.held.pop_last();
            }
        }
        !self.held.is_empty()
    }
}

impl Default for Rooms {
    fn default() -> Self {
        Rooms::new(false, None)
    }
}

impl Rooms {
    /// Rooms delivering in sequence order (`ordered`), reporting gaps to
    /// `repairs`; or passing messages through as they come.
    pub fn new(ordered: bool, repairs: Option<tokio::sync::mpsc::Sender<RoomName>>) -> Rooms {
        Rooms {
            hasher: RandomState::new(),
            shards: (0..SHARDS).map(|_| Mutex::default()).collect(),
            ordered,
            repairs,
            deliveries: Arc::default(),
            repaired: AtomicU64::new(0),
            delivery_latency: crate::metrics::Histogram::default(),
            typing_due: Mutex::default(),
            typing_events: AtomicU64::new(0),
        }
    }

    /// Whether messages are delivered in sequence order.
    pub fn is_ordered(&self) -> bool {
        self.ordered
    }

    fn shard(&self, room: &RoomName) -> &Shard {
        &self.shards[self.hasher.hash_one(room) as usize % self.shards.len()]
    }

    /// The room, if it has local members.
    pub fn get(&self, room: &RoomName) -> Option<Arc<Room>> {
        lock(self.shard(room)).get(room).cloned()
    }

    /// Starts adding connection `conn` to `room`, creating the room if
    /// needed (its delivery starts after `latest`). Live frames collect for
    /// the connection until [`Rooms::finish_join`]. Returns whether the room
    /// was created, and the last sequence already handed to members (the
    /// connection receives later ones live).
    pub fn begin_join(
        &self,
        room: &RoomName,
        conn: ConnId,
        user: &Arc<str>,
        outbox: Outbox,
        latest: u64,
    ) -> (bool, u64) {
        let mut shard = lock(self.shard(room));
        let mut created = false;
        let entry = shard.entry(room.clone()).or_insert_with(|| {
            created = true;
            Arc::new(Room {
                state: Mutex::new(RoomState {
                    delivered: latest,
                    deliveries: self.deliveries.clone(),
                    ..RoomState::default()
                }),
                send_lock: tokio::sync::Mutex::new(()),
            })
        });
        let mut state = lock(&entry.state);
        state.joining.push(Joining {
            conn,
            user: user.clone(),
            outbox,
            pending: Vec::new(),
        });
        // Unordered, messages are not tracked: the store's latest is all
        // there is to go by.
        (
            created,
            if self.ordered {
                state.delivered
            } else {
                latest
            },
        )
    }

    /// Completes a join: queues `first` (the reply and any backlog), then the
    /// frames collected meanwhile except messages up to `seen` (which the
    /// connection already has), and makes the connection a member.
    pub fn finish_join(&self, room: &RoomName, conn: ConnId, first: Vec<EncodedFrame>, seen: u64) {
        let Some(entry) = self.get(room) else { return };
        let mut state = lock(&entry.state);
        let Some(at) = state.joining.iter().position(|j| j.conn == conn) else {
            return;
        };
        let joining = state.joining.swap_remove(at);
        // The reply and the backlog as one burst outside the capacity (see
        // `Outbox::queue_burst`), the live frames collected meanwhile
        // counted as any; all written by the connection's task (this runs
        // under the presence lock too).
        joining.outbox.queue_burst(first);
        for (sequence, frame) in joining.pending {
            if sequence.is_none_or(|s| s > seen) {
                joining.outbox.queue(frame);
            }
        }
        state.recipients.push(Recipient {
            conn,
            user: joining.user,
            outbox: joining.outbox,
            seen,
        });
    }

    /// Offers stored message `sequence` to the room (the repair task's way
    /// in); returns whether a gap remains.
    pub fn offer(&self, room: &RoomName, sequence: u64, frame: &EncodedFrame) -> bool {
        self.repaired.fetch_add(1, Ordering::Relaxed);
        let Some(entry) = self.get(room) else {
            return false;
        };
        let mut writes = Deferred::default();
        let gap = lock(&entry.state).offer(sequence, frame, &mut writes);
        // The room's lock is gone: now the sockets are written.
        drop(writes);
        gap
    }

    /// The last sequence handed to the room's members, if it has any here.
    pub fn delivered(&self, room: &RoomName) -> Option<u64> {
        self.get(room).map(|entry| lock(&entry.state).delivered)
    }

    /// Gives up on messages up to `sequence` (the store no longer has
    /// them), delivering what was held after them.
    pub fn skip_to(&self, room: &RoomName, sequence: u64) {
        if let Some(entry) = self.get(room) {
            let mut writes = Deferred::default();
            let mut state = lock(&entry.state);
            if sequence > state.delivered {
                state.delivered = sequence;
                let later: Vec<(u64, EncodedFrame)> =
                    std::mem::take(&mut state.held).into_iter().collect();
                for (seq, frame) in later {
                    state.offer(seq, &frame, &mut writes);
                }
            }
            drop(state);
            drop(writes);
        }
    }

    /// The names of every room with local connections.
    pub fn names(&self) -> Vec<RoomName> {
        self.shards
            .iter()
            .flat_map(|s| lock(s).keys().cloned().collect::<Vec<_>>())
            .collect()
    }

    /// Asks the repair task to fill `room` from the store.
    pub fn request_repair(&self, room: &RoomName) {
        // Unordered, sequence numbers are not comparable: nothing to repair.
        if !self.ordered {
            return;
        }
        if let Some(repairs) = &self.repairs {
            // A full queue already holds requests that will cover it.
            let _ = repairs.try_send(room.clone());
        }
    }

    /// Removes connection `conn` from `room`, and the room when it is
    /// empty. Returns `None` if the connection was not in it, else whether
    /// the room was removed.
    pub fn leave(&self, room: &RoomName, conn: ConnId) -> Option<bool> {
        let mut shard = lock(self.shard(room));
        let entry = shard.get(room)?;
        let mut state = lock(&entry.state);
        if let Some(at) = state.recipients.iter().position(|r| r.conn == conn) {
            state.recipients.swap_remove(at);
        } else {
            let at = state.joining.iter().position(|j| j.conn == conn)?;
            state.joining.swap_remove(at);
        }
        let removed = state.recipients.is_empty() && state.joining.is_empty();
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

    /// Local connections' room memberships (joins in progress included).
    pub fn memberships(&self) -> usize {
        self.shards
            .iter()
            .map(|s| {
                lock(s)
                    .values()
                    .map(|room| {
                        let state = lock(&room.state);
                        state.recipients.len() + state.joining.len()
                    })
                    .sum::<usize>()
            })
            .sum()
    }

    /// Message frames queued for local connections so far.
    pub fn deliveries(&self) -> u64 {
        self.deliveries.load(Ordering::Relaxed)
    }

    /// Latency from the store's acknowledgement to the hand-off here.
    pub fn delivery_latency(&self) -> &crate::metrics::Histogram {
        &self.delivery_latency
    }

    /// Typing events queued for local connections so far.
    pub fn typing_events(&self) -> u64 {
        self.typing_events.load(Ordering::Relaxed)
    }

    /// Stored messages the repair task offered so far.
    pub fn repaired(&self) -> u64 {
        self.repaired.load(Ordering::Relaxed)
    }

    /// Whether no room has local members.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Rooms {
    /// Queues presence `frame` (unnumbered) for the room's members only,
    /// never writing here (the caller holds the presence lock); returns
    /// how many took it. Connections still joining do not collect it: their
    /// reply's member page, taken later under the same lock, is newer.
    pub fn deliver_presence(&self, room: &RoomName, frame: &EncodedFrame) -> u64 {
        let Some(room) = self.get(room) else {
            return 0;
        };
        let state = lock(&room.state);
        let mut queued = 0;
        for r in &state.recipients {
            queued += u64::from(r.outbox.queue(frame.clone()));
        }
        queued
    }

    /// Hands `frame` to the room's local connections; `writes` writes to
    /// their sockets once the room's lock is released.
    fn deliver_with(&self, frame: &RoomFrame, mut writes: Deferred) {
        if frame.frame.0.is_empty() {
            // A typing announcement alone.
            if let Some(note) = &frame.typing {
                self.note_typing(&frame.room, note, writes);
            }
            return;
        }
        let Some(room) = self.get(&frame.room) else {
            return;
        };
        let _traced = frame
            .trace
            .map(|_| crate::telemetry::trace::fanout_span(&frame.room).entered());
        let gap = {
            let mut state = lock(&room.state);
            match frame.sequence {
                Some(sequence) if self.ordered => state.offer(sequence, &frame.frame, &mut writes),
                sequence => {
                    state.fan_out(sequence, &frame.frame, &mut writes);
                    false
                }
            }
        };
        // The room's lock is gone: now the sockets are written.
        drop(writes);
        if frame.acked_at_unix_us > 0 {
            // Across instances this includes the difference of their clocks.
            let now = chat_util::now_unix_us();
            let micros = now.saturating_sub(frame.acked_at_unix_us);
            self.delivery_latency
                .observe(std::time::Duration::from_micros(micros));
        }
        if gap {
            self.request_repair(&frame.room);
        }
        // A message that ends its sender's typing: after the message, so
        // members see the message before the indicator goes.
        if let Some(note) = &frame.typing {
            self.note_typing(&frame.room, note, Deferred::default());
        }
    }
}

impl Rooms {
    /// A typing announcement for `room`: onto its board, and to its members
    /// now if the room's gap has passed, else when it has (the due list).
    fn note_typing(&self, name: &RoomName, note: &TypingNote, mut writes: Deferred) {
        let Some(room) = self.get(name) else {
            return;
        };
        let now = Instant::now();
        let due = {
            let mut state = lock(&room.state);
            let told = state.typing_told;
            let board = state
                .typing
                .get_or_insert_with(|| Box::new(Board::after(told)));
            match board.note(&note.user, note.typing, now) {
                Next::Now => {
                    let told = state.tell_typing(name, now, &mut writes);
                    self.typing_events.fetch_add(told, Ordering::Relaxed);
                    false
                }
                Next::Queue => true,
                Next::Nothing => {
                    if board.is_idle() {
                        state.typing_told = board.last_sent();
                        state.typing = None;
                    }
                    false
                }
            }
        };
        // The room's lock is gone: now the sockets are written.
        drop(writes);
        if due {
            lock(&self.typing_due).push(name.clone());
        }
    }

    /// Tells the members of every room on the due list whose gap has
    /// passed at `now` who is typing; the others stay on it. Called every
    /// [`super::typing::TICK`].
    pub fn flush_typing(&self, now: Instant) {
        let due = std::mem::take(&mut *lock(&self.typing_due));
        let mut later = Vec::new();
        for name in due {
            let Some(room) = self.get(&name) else {
                continue; // Its last member left: nobody to tell.
            };
            let mut writes = Deferred::default();
            let mut state = lock(&room.state);
            match state.typing.as_deref() {
                Some(board) if board.is_queued() && board.is_due(now) => {
                    let told = state.tell_typing(&name, now, &mut writes);
                    self.typing_events.fetch_add(told, Ordering::Relaxed);
                }
                Some(board) if board.is_queued() => later.push(name),
                // Not owed (the room was emptied and made anew).
                _ => {}
            }
            drop(state);
            // The room's lock is gone: now the sockets are written.
            drop(writes);
        }
        if !later.is_empty() {
            // A room emptied and made anew within a tick can be on it twice.
            later.sort_unstable_by(|a, b| a.as_str().cmp(b.as_str()));
            later.dedup();
            lock(&self.typing_due).extend(later);
        }
    }
}

impl FrameSink for Rooms {
    /// Hands the same encoded bytes to every local connection in the room
    /// (in sequence order, in ordered mode); a connection whose queue is
    /// full is kicked, never waited for. Frames for idle connections with a
    /// wire are written after the room's lock is released.
    fn deliver(&self, frame: &RoomFrame) {
        self.deliver_with(frame, Deferred::default());
    }
}

#[cfg(test)]
mod tests {
    fn f(n: u8) -> EncodedFrame {
        EncodedFrame(Bytes::from(vec![n]))
    }

    #[tokio::test]
    async fn ordered_rooms_hold_back_after_a_gap_and_drop_duplicates() {
        let (tx, mut repairs) = tokio::sync::mpsc::channel(8);
        let rooms = Rooms::new(true, Some(tx));
        let lobby = RoomName::parse("lobby").unwrap();
        let (o, mut s) = outbox(64);
        assert_eq!(
            rooms.begin_join(&lobby, 1, &Arc::from("u"), o, 10),
            (true, 10)
        );
        rooms.finish_join(&lobby, 1, vec![f(0)], 0);
        let offer = |seq: u64| {
            rooms.deliver(&RoomFrame {
                room: lobby.clone(),
                sequence: Some(seq),
                frame: f(seq as u8),
                acked_at_unix_us: 0,
                trace: None,
                typing: None,
            })
        };
        offer(11);
        offer(13); // gap at 12
        assert_eq!(repairs.recv().await.unwrap(), lobby);
        offer(11); // duplicate
        offer(10); // old
        offer(12); // fills the gap
        offer(14);
        let mut got = Vec::new();
        for _ in 0..5 {
            got.push(s.next().await.unwrap().0[0]);
        }
        assert_eq!(got, vec![0, 11, 12, 13, 14]);
        assert_eq!(rooms.delivered(&lobby), Some(14));
    }

    /// Who the typing event in `frame` lists, by user id.
    fn typists(frame: &EncodedFrame) -> Vec<String> {
        use chat_proto::v1::{ServerFrame, server_frame::Frame};
        use prost::Message;
        match ServerFrame::decode(frame.0.clone()).unwrap().frame {
            Some(Frame::Typing(t)) => t.typists.into_iter().map(|m| m.user_id).collect(),
            other => panic!("not a typing event: {other:?}"),
        }
    }

    #[tokio::test]
    async fn typing_is_told_coalesced_never_to_its_user_nor_joiners_nor_full_queues() {
        use super::super::typing::GAP;
        use crate::domain::User;
        let rooms = Rooms::new(true, None);
        let lobby = RoomName::parse("lobby").unwrap();
        let member = |conn: ConnId, user: &str, capacity: usize| {
            let (o, s) = outbox(capacity);
            rooms.begin_join(&lobby, conn, &Arc::from(user), o.clone(), 0);
            rooms.finish_join(&lobby, conn, vec![], 0);
            (o, s)
        };
        let (_ann_o, mut ann) = member(1, "ann", 64);
        let (_ann2_o, mut ann_too) = member(2, "ann", 64);
        let (_bob_o, mut bob) = member(3, "bob", 64);
        // Cal's queue is over half full (nothing is read).
        let (cal_o, mut cal) = member(4, "cal", 4);
        cal_o.queue(f(90));
        cal_o.queue(f(91));
        // Dan is still joining.
        let (dan_o, mut dan) = outbox(64);
        rooms.begin_join(&lobby, 5, &Arc::from("dan"), dan_o, 0);
        let note = |user: &str, typing: bool| RoomFrame {
            room: lobby.clone(),
            sequence: None,
            frame: EncodedFrame(Bytes::new()),
            acked_at_unix_us: 0,
            trace: None,
            typing: Some(TypingNote {
                user: User::new(user, user.to_uppercase()),
                typing,
            }),
        };
        let presence = RoomFrame {
            room: lobby.clone(),
            sequence: None,
            frame: f(8),
            acked_at_unix_us: 0,
            trace: None,
            typing: None,
        };
        // The room was quiet: told at once.
        rooms.deliver(&note("ann", true));
        assert_eq!(rooms.typing_events(), 1, "bob only: ann alone, cal full");
        // Within the gap: waits for the next flush after it.
        rooms.deliver(&note("bob", true));
        rooms.flush_typing(Instant::now());
        assert_eq!(rooms.typing_events(), 1, "the gap has not passed");
        rooms.deliver(&presence);
        rooms.flush_typing(Instant::now() + GAP);
        assert_eq!(
            rooms.typing_events(),
            1 + 3,
            "ann twice and bob; cal still full"
        );
        rooms.finish_join(&lobby, 5, vec![f(1)], 0);
        assert_eq!(typists(&bob.next().await.unwrap()), ["ann"]);
        assert_eq!(bob.next().await.unwrap().0[0], 8);
        assert_eq!(typists(&bob.next().await.unwrap()), ["ann"], "not himself");
        for stream in [&mut ann, &mut ann_too] {
            assert_eq!(
                stream.next().await.unwrap().0[0],
                8,
                "ann is not told of herself"
            );
            assert_eq!(typists(&stream.next().await.unwrap()), ["bob"]);
        }
        let cal_got: Vec<u8> = [cal.next().await, cal.next().await, cal.next().await]
            .into_iter()
            .map(|f| f.unwrap().0[0])
            .collect();
        assert_eq!(
            cal_got,
            vec![90, 91, 8],
            "dropped for a filling queue, not kicked"
        );
        let dan_got: Vec<u8> = [dan.next().await, dan.next().await]
            .into_iter()
            .map(|f| f.unwrap().0[0])
            .collect();
        assert_eq!(dan_got, vec![1, 8], "a joiner gets presence, not typing");
        assert!(lock(&rooms.typing_due).is_empty(), "told: off the due list");
    }

    #[tokio::test]
    async fn a_rooms_typing_gap_holds_when_its_board_goes_and_comes_back() {
        use super::super::typing::GAP;
        use crate::domain::User;
        let rooms = Rooms::new(true, None);
        let lobby = RoomName::parse("lobby").unwrap();
        let (bob_o, _bob) = outbox(64);
        rooms.begin_join(&lobby, 1, &Arc::from("bob"), bob_o, 0);
        rooms.finish_join(&lobby, 1, vec![], 0);
        let note = |typing: bool| RoomFrame {
            room: lobby.clone(),
            sequence: None,
            frame: EncodedFrame(Bytes::new()),
            acked_at_unix_us: 0,
            trace: None,
            typing: Some(TypingNote {
                user: User::new("ann", "Ann"),
                typing,
            }),
        };
        rooms.deliver(&note(true));
        rooms.deliver(&note(false));
        let flushed = Instant::now() + GAP;
        rooms.flush_typing(flushed);
        assert_eq!(rooms.typing_events(), 2, "typing, then nobody");
        // The board had nothing left and went; typing again within the
        // gap waits for it like any change.
        rooms.deliver(&note(true));
        assert_eq!(rooms.typing_events(), 2, "not at once: the gap holds");
        rooms.flush_typing(flushed + GAP);
        assert_eq!(rooms.typing_events(), 3);
    }

    #[tokio::test]
    async fn a_joiner_gets_reply_and_backlog_before_what_arrived_meanwhile() {
        let rooms = Rooms::new(true, None);
        let lobby = RoomName::parse("lobby").unwrap();
        let (o, mut s) = outbox(64);
        let (_, delivered) = rooms.begin_join(&lobby, 1, &Arc::from("u"), o, 5);
        assert_eq!(delivered, 5);
        rooms.deliver(&RoomFrame {
            room: lobby.clone(),
            sequence: Some(6),
            frame: f(6),
            acked_at_unix_us: 0,
            trace: None,
            typing: None,
        });
        rooms.finish_join(&lobby, 1, vec![f(100), f(4), f(5)], 0);
        rooms.deliver(&RoomFrame {
            room: lobby.clone(),
            sequence: Some(7),
            frame: f(7),
            acked_at_unix_us: 0,
            trace: None,
            typing: None,
        });
        let mut got = Vec::new();
        for _ in 0..5 {
            got.push(s.next().await.unwrap().0[0]);
        }
        assert_eq!(got, vec![100, 4, 5, 6, 7]);
    }

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
        for (conn, outbox) in [(1, o1), (2, o2)] {
            rooms.begin_join(&lobby, conn, &Arc::from("u"), outbox, 0);
            rooms.finish_join(&lobby, conn, Vec::new(), 0);
        }
        let frame = EncodedFrame(Bytes::from_static(b"x"));
        rooms.deliver(&RoomFrame {
            room: lobby.clone(),
            sequence: Some(1),
            frame: frame.clone(),
            acked_at_unix_us: 0,
            trace: None,
            typing: None,
        });
        assert_eq!(s1.next().await.unwrap(), frame);
        assert_eq!(s2.next().await.unwrap(), frame);
        assert_eq!(rooms.leave(&lobby, 1), Some(false));
        assert_eq!(rooms.leave(&lobby, 1), None, "already left");
        assert_eq!(rooms.leave(&lobby, 2), Some(true));
        assert!(rooms.is_empty());
    }

    #[tokio::test]
    async fn a_joiner_ahead_of_this_instance_gets_nothing_twice() {
        // It saw up to 7 elsewhere; here only 5 were delivered so far.
        let rooms = Rooms::new(true, None);
        let lobby = RoomName::parse("lobby").unwrap();
        let (o, mut s) = outbox(64);
        assert_eq!(
            rooms.begin_join(&lobby, 1, &Arc::from("u"), o, 5),
            (true, 5)
        );
        let deliver = |seq: u64| {
            rooms.deliver(&RoomFrame {
                room: lobby.clone(),
                sequence: Some(seq),
                frame: f(seq as u8),
                acked_at_unix_us: 0,
                trace: None,
                typing: None,
            })
        };
        deliver(6);
        rooms.finish_join(&lobby, 1, vec![f(100)], 7);
        deliver(7);
        deliver(8);
        let mut got = Vec::new();
        for _ in 0..2 {
            got.push(s.next().await.unwrap().0[0]);
        }
        assert_eq!(got, vec![100, 8]);
    }
}
