//! The webhook queue's types: which events the store captures
//! ([`Capture`]), what waits in the queue ([`QueuedEvent`]) and what a trim
//! took out ([`Trimmed`]).
//!
//! The queue lives in the store so that an event is durable exactly when
//! what it tells is: a room event (message, edit, delete, reaction) is
//! queued in the transaction that stores it, by its room and sequence; its
//! content is read from the message row when it is claimed. Presence
//! events (a user became a member of a room, or stopped being one) are not
//! stored anywhere else, so they carry their user. Several instances
//! sharing a store claim disjoint batches: a claim is a lease, and an
//! instance that dies holding one lets it expire for another to take.

use super::{Kind, StoredMessage};
use crate::domain::{RoomName, User};
use sqlx::{ColumnIndex, Decode, Row, Type};
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};

/// Which events the store queues for the webhook, as bits.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Capture(u8);

impl Capture {
    /// Nothing: the webhook is off.
    pub const NONE: Capture = Capture(0);
    /// New messages.
    pub const MESSAGE: Capture = Capture(1);
    /// Edits.
    pub const EDIT: Capture = Capture(2);
    /// Deletes.
    pub const DELETE: Capture = Capture(4);
    /// Reactions added or removed.
    pub const REACTION: Capture = Capture(8);
    /// A user became a member of a room.
    pub const JOIN: Capture = Capture(16);
    /// A user stopped being a member of a room.
    pub const LEAVE: Capture = Capture(32);

    /// Both sets' events.
    pub const fn with(self, other: Capture) -> Capture {
        Capture(self.0 | other.0)
    }

    /// Whether every event of `other` is captured.
    pub const fn has(self, other: Capture) -> bool {
        self.0 & other.0 == other.0 && other.0 != 0
    }

    /// Whether room events of `kind` are captured.
    pub fn room_event(self, kind: Kind) -> bool {
        self.has(match kind {
            Kind::Message => Capture::MESSAGE,
            Kind::Edit(_) => Capture::EDIT,
            Kind::Delete(_) => Capture::DELETE,
            Kind::ReactionAdded(_) | Kind::ReactionRemoved(_) => Capture::REACTION,
        })
    }

    /// Whether nothing is captured.
    pub const fn is_none(self) -> bool {
        self.0 == 0
    }

    /// The room event kinds captured, as bit `1 << kind` of the `kind`
    /// column's codes (SQLite's trigger reads it).
    pub fn kind_mask(self) -> i64 {
        [
            (Capture::MESSAGE, 0b00001),
            (Capture::EDIT, 0b00010),
            (Capture::DELETE, 0b00100),
            (Capture::REACTION, 0b11000),
        ]
        .into_iter()
        .filter(|(capture, _)| self.has(*capture))
        .fold(0, |mask, (_, bits)| mask | bits)
    }
}

/// Events one trim drops at most of each kind (too old, too many): a
/// store with one writer lets appends through between trims, and the
/// sender trims again while a trim drops this many.
pub const TRIM_CHUNK: u64 = 1000;

/// A [`Capture`] the store reads on every append and the wiring sets once:
/// one atomic byte, so the append path pays a load for it.
#[derive(Debug, Default)]
pub struct CaptureCell(AtomicU8);

impl CaptureCell {
    /// What is captured now.
    pub fn get(&self) -> Capture {
        Capture(self.0.load(Ordering::Relaxed))
    }

    /// From now on, capture `capture`.
    pub fn set(&self, capture: Capture) {
        self.0.store(capture.0, Ordering::Relaxed);
    }
}

/// A presence change to queue: `user` joined (or left) `room`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MembershipChange {
    /// The event's id for the receiver (a UUIDv7 made when it happened).
    pub event_id: String,
    /// The room.
    pub room: RoomName,
    /// Who.
    pub user: User,
    /// Joined (true) or left.
    pub joined: bool,
    /// When (Unix ms).
    pub time_unix_ms: i64,
}

/// What a queued event tells.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Queued {
    /// A room event as its row reads now (a message's current text).
    Room(StoredMessage),
    /// A presence change.
    Membership(MembershipChange),
    /// A room event whose row is gone (retention deleted it first): there
    /// is nothing left to send.
    Gone {
        /// Its room.
        room: RoomName,
        /// Its sequence.
        sequence: u64,
    },
}

/// An event claimed from the queue.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QueuedEvent {
    /// Its position in the queue: what settling names.
    pub queue_id: i64,
    /// Times it was claimed, this one included.
    pub attempts: u32,
    /// When it was queued (Unix ms).
    pub queued_at_ms: i64,
    /// What it tells.
    pub what: Queued,
}

/// A claim: events due now, leased to the claimer until a time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Claim {
    /// Now (Unix ms): events due by then, not leased to anyone.
    pub now_ms: i64,
    /// The lease's end (Unix ms): after it, another claim may take them.
    pub lease_until_ms: i64,
    /// At most this many, the oldest first.
    pub max: usize,
}

/// What a trim took out of the queue (at most [`TRIM_CHUNK`] of each
/// kind), and what it left.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Trimmed {
    /// Events older than the age bound.
    pub expired: u64,
    /// The oldest events beyond the size bound.
    pub overflowed: u64,
    /// Events left in the queue.
    pub pending: u64,
}

/// A claimed row of either SQL store as a [`QueuedEvent`]: the queue's
/// columns (`q_id`, `q_room`, `q_sequence`, `presence`, `event_id`,
/// `user_id`, `user_name`, `queued_at_ms`, `attempts`, the integers as
/// 64-bit) and the message row it names, read by `message` when there is
/// one.
pub(super) fn queued_from_row<R>(
    row: &R,
    message: impl FnOnce(&RoomName, &R) -> Result<StoredMessage, sqlx::Error>,
) -> Result<QueuedEvent, sqlx::Error>
where
    R: Row,
    for<'c> &'c str: ColumnIndex<R>,
    for<'r> String: Decode<'r, R::Database> + Type<R::Database>,
    for<'r> i64: Decode<'r, R::Database> + Type<R::Database>,
{
    let room: String = row.try_get("q_room")?;
    let room = RoomName::parse(&room)
        .map_err(|e| sqlx::Error::Protocol(format!("queued room {room:?}: {e}")))?;
    let sequence: i64 = row.try_get("q_sequence")?;
    let presence: i64 = row.try_get("presence")?;
    let what = if presence != 0 {
        Queued::Membership(MembershipChange {
            event_id: row.try_get("event_id")?,
            room,
            user: User {
                user_id: Arc::from(row.try_get::<String, _>("user_id")?),
                display_name: Arc::from(row.try_get::<String, _>("user_name")?),
            },
            joined: presence == 1,
            time_unix_ms: row.try_get("queued_at_ms")?,
        })
    } else if row.try_get::<Option<String>, _>("id")?.is_some() {
        Queued::Room(message(&room, row)?)
    } else {
        Queued::Gone {
            room,
            sequence: sequence.max(0) as u64,
        }
    };
    Ok(QueuedEvent {
        queue_id: row.try_get("q_id")?,
        attempts: row.try_get::<i64, _>("attempts")?.clamp(0, u32::MAX.into()) as u32,
        queued_at_ms: row.try_get("queued_at_ms")?,
        what,
    })
}
