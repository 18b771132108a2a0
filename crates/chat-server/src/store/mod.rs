//! The message store: the source of truth for a room's messages and the
//! authority that assigns each message its id and per-room sequence number.
//!
//! One trait, several implementations chosen by configuration. This issue
//! ships the in-memory store; the durable SQLite and PostgreSQL stores plug
//! in behind the same trait.

mod memory;

pub use memory::MemoryStore;

use crate::validate::RoomName;
use futures::future::BoxFuture;
use std::sync::Arc;

/// Who sent a message, as stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Sender {
    /// Stable user id.
    pub user_id: Arc<str>,
    /// Display name at the time of sending.
    pub display_name: Arc<str>,
}

/// A message as it arrives, before the store has sequenced it.
#[derive(Clone, Debug)]
pub struct NewMessage {
    /// Target room.
    pub room: RoomName,
    /// Sender.
    pub sender: Sender,
    /// The client's id for the message.
    pub client_message_id: String,
    /// The text.
    pub text: String,
}

/// A message the store has accepted.
#[derive(Clone, Debug)]
pub struct StoredMessage {
    /// Server-assigned id (a UUIDv7: unique and time-ordered).
    pub id: String,
    /// Its sequence number in the room; the room's first message is 1.
    pub sequence: u64,
    /// When the store accepted it.
    pub time_unix_ms: i64,
    /// What was sent.
    pub message: NewMessage,
}

/// A store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The store cannot be reached or refused the operation.
    #[error("store unavailable: {0}")]
    Unavailable(String),
}

/// Where messages are kept and sequenced.
pub trait MessageStore: Send + Sync + 'static {
    /// Short name for logs and the readiness report.
    fn name(&self) -> &'static str;

    /// Stores `message` as the next message of its room and returns it with
    /// its id, sequence number and time. When this returns, the message is
    /// as durable as the store makes anything.
    fn append(&self, message: NewMessage) -> BoxFuture<'_, Result<StoredMessage, StoreError>>;

    /// The sequence number of the room's latest message, 0 if it has none.
    fn latest_sequence<'a>(&'a self, room: &'a RoomName) -> BoxFuture<'a, Result<u64, StoreError>>;

    /// Whether the store answers, for readiness.
    fn check(&self) -> BoxFuture<'_, Result<(), StoreError>>;
}
