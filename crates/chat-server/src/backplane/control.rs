//! Messages between instances that are not room events: heartbeats and
//! presence (who is in which room on which instance).

use crate::domain::validate::RoomName;
use bytes::Bytes;
use prost::Message;
use tokio::sync::mpsc;

/// A control message on the cluster-wide control channel (protobuf).
#[derive(Clone, PartialEq, Message)]
pub struct Control {
    /// The sending instance's id.
    #[prost(string, tag = "1")]
    pub origin: String,
    /// What it says.
    #[prost(oneof = "ControlKind", tags = "2, 3, 4, 5, 6, 8, 9, 10, 11")]
    pub kind: Option<ControlKind>,
    /// Random for each process (never 0 when set): a message with this
    /// instance's `origin` but another incarnation comes from a second
    /// process using the same `server_id` (0: a sender that predates it).
    #[prost(uint64, tag = "7")]
    pub incarnation: u64,
}

/// The kinds of control message.
#[derive(Clone, PartialEq, prost::Oneof)]
pub enum ControlKind {
    /// "I am alive."
    #[prost(message, tag = "2")]
    Heartbeat(Heartbeat),
    /// A user's presence in a room on the origin changed.
    #[prost(message, tag = "3")]
    Presence(PresenceChange),
    /// "Everyone, send me your snapshot."
    #[prost(message, tag = "4")]
    SyncRequest(SyncRequest),
    /// Everything the origin has: replaces what others knew of it. A
    /// snapshot that fits one message.
    #[prost(message, tag = "5")]
    Snapshot(PresenceSnapshot),
    /// One part of a snapshot sent in several: a kind of its own, which
    /// instances that predate parts ignore (they would take each part for
    /// the whole).
    #[prost(message, tag = "8")]
    SnapshotPart(PresenceSnapshot),
    /// An operator's notice for every client of every instance.
    #[prost(message, tag = "6")]
    Broadcast(Broadcast),
    /// A direct conversation was opened: its two users' sessions on every
    /// instance hear of it (older instances ignore the kind).
    #[prost(message, tag = "9")]
    DirectOpened(DirectOpened),
    /// An application ended a user's sessions: every instance ends its
    /// own (older instances ignore the kind).
    #[prost(message, tag = "10")]
    Disconnect(DisconnectUser),
    /// An application removed a user from a room: every instance removes
    /// its connections of the user (older instances ignore the kind).
    #[prost(message, tag = "11")]
    Remove(RemoveMember),
    /// Users arrived in or left rooms on the origin, in order: one
    /// presence tick's changes (older instances ignore the kind, and
    /// their digest checks ask for a snapshot instead).
    #[prost(message, tag = "12")]
    PresenceBatch(PresenceChanges),
}

/// Several presence changes of the origin, in the order they happened.
#[derive(Clone, PartialEq, Message)]
pub struct PresenceChanges {
    /// The changes.
    #[prost(message, repeated, tag = "1")]
    pub changes: Vec<PresenceChange>,
}

/// A user to take out of a room, and why, as a control message carries it.
#[derive(Clone, PartialEq, Message)]
pub struct RemoveMember {
    /// The room.
    #[prost(string, tag = "1")]
    pub room: String,
    /// The user.
    #[prost(string, tag = "2")]
    pub user_id: String,
    /// What the user is shown.
    #[prost(string, tag = "3")]
    pub reason: String,
}

/// A user whose sessions end, and why, as a control message carries it.
#[derive(Clone, PartialEq, Message)]
pub struct DisconnectUser {
    /// The user.
    #[prost(string, tag = "1")]
    pub user_id: String,
    /// What the user is shown.
    #[prost(string, tag = "2")]
    pub reason: String,
    /// Whether their clients are told to stay disconnected. Absent (false)
    /// from an instance that predates it, whose own clients were told
    /// nothing and reconnect: the others do the same.
    #[prost(bool, tag = "3")]
    pub stay_disconnected: bool,
}

/// A direct conversation, as a control message carries it.
#[derive(Clone, PartialEq, Message)]
pub struct DirectOpened {
    /// Its room.
    #[prost(string, tag = "1")]
    pub room: String,
    /// Its two users: id and display name each.
    #[prost(string, repeated, tag = "2")]
    pub user_ids: Vec<String>,
    /// Their display names, in the same order.
    #[prost(string, repeated, tag = "3")]
    pub names: Vec<String>,
}

/// An operator's broadcast.
#[derive(Clone, PartialEq, Message)]
pub struct Broadcast {
    /// The notification text.
    #[prost(string, tag = "1")]
    pub text: String,
}

/// Liveness of an instance, with what it holds (for `chat-server status`;
/// instances that send an empty heartbeat show zeros).
#[derive(Clone, PartialEq, Message)]
pub struct Heartbeat {
    /// Session streams open on the instance.
    #[prost(uint64, tag = "1")]
    pub connections: u64,
    /// Rooms with members on the instance.
    #[prost(uint64, tag = "2")]
    pub rooms: u64,
    /// (room, user) pairs present on the instance: the count of its
    /// presence digest.
    #[prost(uint64, tag = "3")]
    pub presence_entries: u64,
    /// The sum of its presence digest (see `hub::presence::Digest`).
    #[prost(fixed64, tag = "4")]
    pub presence_sum: u64,
    /// Whether the two fields above are set (a sender that predates them
    /// leaves it false, and is not checked).
    #[prost(bool, tag = "5")]
    pub has_digest: bool,
    /// Messages its clients sent that were stored (its counter).
    #[prost(uint64, tag = "6")]
    pub messages_received: u64,
    /// Message frames it queued for its connections (its counter).
    #[prost(uint64, tag = "7")]
    pub messages_delivered: u64,
    /// Room events it published to the backplane (its counter).
    #[prost(uint64, tag = "8")]
    pub backplane_published: u64,
    /// Room events it received from the backplane (its counter).
    #[prost(uint64, tag = "9")]
    pub backplane_received: u64,
    /// Its publishes that failed (its counter).
    #[prost(uint64, tag = "10")]
    pub backplane_publish_failures: u64,
    /// Whether its readiness check passes.
    #[prost(bool, tag = "11")]
    pub ready: bool,
    /// Whether the six fields above are set (a sender that predates them
    /// leaves it false: its load reads as unknown).
    #[prost(bool, tag = "12")]
    pub has_load: bool,
}

/// Asks for snapshots: of every instance, or of one.
#[derive(Clone, PartialEq, Message)]
pub struct SyncRequest {
    /// The instance asked; empty: every instance.
    #[prost(string, tag = "1")]
    pub target: String,
}

/// One user in one room.
#[derive(Clone, PartialEq, Message)]
pub struct PresenceEntry {
    /// The room.
    #[prost(string, tag = "1")]
    pub room: String,
    /// The user's id.
    #[prost(string, tag = "2")]
    pub user_id: String,
    /// The user's display name.
    #[prost(string, tag = "3")]
    pub display_name: String,
}

/// A user arrived in or left a room on the origin.
#[derive(Clone, PartialEq, Message)]
pub struct PresenceChange {
    /// Who and where.
    #[prost(message, optional, tag = "1")]
    pub entry: Option<PresenceEntry>,
    /// Present now (true) or gone (false).
    #[prost(bool, tag = "2")]
    pub present: bool,
}

/// Every user in every room on the origin, or one part of it: a snapshot
/// is sent in parts of bounded size (a backplane message has a size
/// limit), and replaces what others knew of the origin once all its parts
/// arrived.
#[derive(Clone, PartialEq, Message)]
pub struct PresenceSnapshot {
    /// The entries (of this part).
    #[prost(message, repeated, tag = "1")]
    pub entries: Vec<PresenceEntry>,
    /// Numbers the origin's snapshots, increasing: a part of an older one
    /// than a receiver is assembling is dropped.
    #[prost(uint64, tag = "2")]
    pub snapshot_id: u64,
    /// This part's index, from 0.
    #[prost(uint32, tag = "3")]
    pub part: u32,
    /// How many parts the snapshot has; 0 (a sender that predates parts)
    /// means one.
    #[prost(uint32, tag = "4")]
    pub parts: u32,
}

impl Control {
    /// A message from incarnation `incarnation` of `origin`.
    pub fn new(origin: &str, incarnation: u64, kind: ControlKind) -> Control {
        Control {
            origin: origin.to_string(),
            kind: Some(kind),
            incarnation,
        }
    }

    /// Encodes for the wire.
    pub fn to_bytes(&self) -> Bytes {
        self.encode_to_vec().into()
    }
}

impl PresenceEntry {
    /// The entry's room, if its name is valid.
    pub fn room(&self) -> Option<RoomName> {
        RoomName::parse(&self.room).ok()
    }
}

/// What a backplane tells the instance besides room frames.
#[derive(Debug)]
pub enum ControlEvent {
    /// A control message from another instance.
    Message(Control),
    /// The backplane (re)connected: exchange snapshots.
    Connected,
    /// Control messages were dropped (queue full): resynchronise.
    Overflowed,
    /// A room's subscription took only on a retry: what was published
    /// before it is fetched from the store.
    Resubscribed(RoomName),
}

/// The bounded queue from a backplane to the instance's cluster task.
#[derive(Clone, Debug)]
pub struct ControlSender {
    tx: mpsc::Sender<ControlEvent>,
    overflowed: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

/// How many control events may wait for the cluster task.
pub const CONTROL_QUEUE: usize = 4096;

/// Creates the control queue.
pub fn control_queue() -> (ControlSender, mpsc::Receiver<ControlEvent>) {
    let (tx, rx) = mpsc::channel(CONTROL_QUEUE);
    let sender = ControlSender {
        tx,
        overflowed: Default::default(),
    };
    (sender, rx)
}

impl ControlSender {
    /// Queues `event` without waiting; on a full queue the event is dropped,
    /// counted, and an `Overflowed` follows as soon as there is room.
    pub fn send(&self, event: ControlEvent, stats: &super::BackplaneStats) {
        use std::sync::atomic::Ordering;
        if self.overflowed.load(Ordering::Relaxed)
            && self.tx.try_send(ControlEvent::Overflowed).is_ok()
        {
            self.overflowed.store(false, Ordering::Relaxed);
        }
        if self.tx.try_send(event).is_err() {
            stats.control_dropped.fetch_add(1, Ordering::Relaxed);
            self.overflowed.store(true, Ordering::Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A control message as an instance from before snapshot parts reads
    /// it: the kinds it knew.
    #[derive(Clone, PartialEq, Message)]
    struct LegacyControl {
        #[prost(string, tag = "1")]
        origin: String,
        #[prost(oneof = "LegacyKind", tags = "2, 5")]
        kind: Option<LegacyKind>,
    }

    #[derive(Clone, PartialEq, prost::Oneof)]
    enum LegacyKind {
        #[prost(message, tag = "2")]
        Heartbeat(Heartbeat),
        #[prost(message, tag = "5")]
        Snapshot(PresenceSnapshot),
    }

    /// A disconnect as an instance from before `stay_disconnected` sent
    /// it: user and reason only.
    #[derive(Clone, PartialEq, Message)]
    struct LegacyDisconnect {
        #[prost(string, tag = "1")]
        user_id: String,
        #[prost(string, tag = "2")]
        reason: String,
    }

    /// Review of the kick: an older instance's disconnect (whose own
    /// clients reconnect) reads as one whose clients may reconnect, so a
    /// call behaves the same on every instance during an upgrade.
    #[test]
    fn an_older_instances_disconnect_lets_clients_reconnect() {
        let old = LegacyDisconnect {
            user_id: "ann".into(),
            reason: "bye".into(),
        };
        let read = DisconnectUser::decode(old.encode_to_vec().as_slice()).unwrap();
        assert_eq!(
            (
                read.user_id.as_str(),
                read.reason.as_str(),
                read.stay_disconnected
            ),
            ("ann", "bye", false)
        );
    }

    /// Review: an instance from before snapshot parts ignores a part
    /// (it would take each for the whole snapshot) and still reads a
    /// snapshot that fits one message.
    #[test]
    fn older_instances_ignore_snapshot_parts() {
        let part = PresenceSnapshot {
            entries: vec![PresenceEntry {
                room: "lobby".into(),
                user_id: "alice".into(),
                display_name: "alice".into(),
            }],
            snapshot_id: 3,
            part: 1,
            parts: 2,
        };
        let sent = Control::new("a", 1, ControlKind::SnapshotPart(part.clone())).to_bytes();
        let read = LegacyControl::decode(sent).unwrap();
        assert_eq!((read.origin.as_str(), read.kind), ("a", None));
        let whole = Control::new("a", 1, ControlKind::Snapshot(part)).to_bytes();
        let read = LegacyControl::decode(whole).unwrap();
        assert!(matches!(read.kind, Some(LegacyKind::Snapshot(s)) if s.entries.len() == 1));
    }
}
