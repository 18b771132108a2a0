//! The message store: the source of truth for a room's messages and the
//! authority that assigns each message its id and per-room sequence number.
//! Changes to a message (edits, deletes) are numbered events of the room
//! too, stored in the same sequence, and applied to the message they name in
//! the same transaction.
//!
//! One trait, three implementations chosen by `store.url`: `memory`
//! (nothing durable), `sqlite://…` (the embedded default) and
//! `postgres://…` (shared by several instances). `tests/it/store.rs` runs one
//! suite against all three.
//!
//! The store also holds the webhook's queue ([`queue`]): room events are
//! queued in the transaction that stores them, when [`Capture`] says so.

mod memory;
mod postgres;
mod queue;
mod sqlite;

pub use memory::MemoryStore;
pub use postgres::PostgresStore;
pub use queue::{
    Capture, CaptureCell, Claim, MembershipChange, Queued, QueuedEvent, TRIM_CHUNK, Trimmed,
};
pub use sqlite::SqliteStore;

use crate::config::StoreConfig;
use crate::domain::{RoomName, User};
use futures::future::BoxFuture;
use std::sync::Arc;

/// A message as it arrives, before the store has sequenced it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewMessage {
    /// Target room.
    pub room: RoomName,
    /// Who sent it.
    pub sender: User,
    /// The client's id for the message; with the room and the sender, it
    /// identifies the message across retries.
    pub client_message_id: String,
    /// The text (empty for a delete).
    pub text: String,
    /// A message, or a change to an earlier one.
    pub kind: Kind,
}

/// What a numbered room event is.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Kind {
    /// A message.
    #[default]
    Message,
    /// A new text for the message with this sequence.
    Edit(u64),
    /// Takes back the message with this sequence.
    Delete(u64),
    /// The sender's reaction (the text, an emoji) to the message with this
    /// sequence.
    ReactionAdded(u64),
    /// The sender takes back its reaction (the text) to the message with
    /// this sequence.
    ReactionRemoved(u64),
}

impl Kind {
    /// The `kind` column's value (the wire's `MessageKind` number).
    fn code(self) -> i16 {
        match self {
            Kind::Message => 0,
            Kind::Edit(_) => 1,
            Kind::Delete(_) => 2,
            Kind::ReactionAdded(_) => 3,
            Kind::ReactionRemoved(_) => 4,
        }
    }

    /// Whether it is a reaction, added or removed.
    pub fn is_reaction(self) -> bool {
        matches!(self, Kind::ReactionAdded(_) | Kind::ReactionRemoved(_))
    }

    /// The message a change applies to (0 for a message).
    pub fn target(self) -> u64 {
        match self {
            Kind::Message => 0,
            Kind::Edit(target)
            | Kind::Delete(target)
            | Kind::ReactionAdded(target)
            | Kind::ReactionRemoved(target) => target,
        }
    }

    /// From the `kind` and `target_sequence` columns; a kind this build
    /// does not know reads as a message.
    fn from_columns(code: i64, target: i64) -> Kind {
        let target = target.max(0) as u64;
        match code {
            1 => Kind::Edit(target),
            2 => Kind::Delete(target),
            3 => Kind::ReactionAdded(target),
            4 => Kind::ReactionRemoved(target),
            _ => Kind::Message,
        }
    }
}

/// Whether `by` (an operator or not) may make `change` to a message whose
/// row holds `target` (kind, sender, deleted), or `None` if there is none.
/// Only live messages can change; only their author edits them; their
/// author or an operator deletes them; any member reacts to them.
fn check_change(
    change: Kind,
    target: Option<(Kind, &str, bool)>,
    by: &str,
    operator: bool,
) -> Result<(), StoreError> {
    let sequence = change.target();
    let Some((Kind::Message, sender, false)) = target else {
        return Err(StoreError::MessageNotFound(sequence));
    };
    let allowed =
        sender == by || (operator && matches!(change, Kind::Delete(_))) || change.is_reaction();
    if !allowed {
        return Err(StoreError::NotTheAuthor(sequence));
    }
    Ok(())
}

/// A message the store has accepted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredMessage {
    /// Server-assigned id (a UUIDv7: unique and time-ordered).
    pub id: String,
    /// Its sequence number in the room; the room's first message is 1.
    pub sequence: u64,
    /// When the store accepted it.
    pub time_unix_ms: i64,
    /// What was sent. For a message read back, the current text: the last
    /// edit's, or empty once deleted.
    pub message: NewMessage,
    /// When the text was last edited (0: never).
    pub edited_at_ms: i64,
    /// The sequence of the edit whose text it holds (0: none).
    pub edited_sequence: u64,
    /// The message was taken back; its text is gone.
    pub deleted: bool,
    /// Its reactions, one entry per emoji in the order first given (for a
    /// message read from history; empty otherwise).
    pub reactions: Vec<Reactions>,
}

/// The reactions with one emoji on a message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reactions {
    /// The emoji.
    pub emoji: String,
    /// How many users gave it.
    pub count: u32,
    /// Who, the first [`REACTORS_LISTED`].
    pub users: Vec<User>,
}

/// Reactors listed per emoji and message in history (the count is exact).
pub const REACTORS_LISTED: usize = 50;

/// Different reactions one user may have on one message.
pub const MAX_REACTIONS_PER_USER: u32 = 20;

/// Different emojis one message may carry (so a history page stays
/// bounded: at most this many entries of at most [`REACTORS_LISTED`]
/// users per message).
pub const MAX_EMOJIS_PER_MESSAGE: u32 = 50;

/// The outcome of an append.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Appended {
    /// The stored message: the new one, or the original of a retry.
    pub message: StoredMessage,
    /// True if the message had been stored before (a retried send); it must
    /// not be delivered again.
    pub duplicate: bool,
}

/// How far a user has read a room.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ReadState {
    /// The last sequence read (0: none).
    pub read_sequence: u64,
    /// Messages after it that others sent and that are not deleted, up to
    /// [`UNREAD_COUNT_CAP`].
    pub unread: u32,
}

/// Unread messages are counted up to this many (a count reads at most this
/// many rows).
pub const UNREAD_COUNT_CAP: u32 = 1000;

/// A direct conversation: its room and its two users, ordered by id.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Conversation {
    /// The room ([`crate::domain::direct::room`] of the two ids).
    pub room: RoomName,
    /// The two users, the lower id first; each name as that user last gave
    /// it (the id until then).
    pub users: [User; 2],
}

impl Conversation {
    /// Whether `user_id` is one of the two.
    pub fn has(&self, user_id: &str) -> bool {
        self.users.iter().any(|u| &*u.user_id == user_id)
    }

    /// The other user than `me` (the second if `me` is neither).
    pub fn peer(&self, me: &str) -> &User {
        if &*self.users[1].user_id == me {
            &self.users[0]
        } else {
            &self.users[1]
        }
    }
}

/// Direct conversations listed per user at most.
pub const MAX_DIRECT_LISTED: usize = 500;

/// A room's bans listed at most.
pub const MAX_BANS_LISTED: usize = 1000;

/// A user barred from joining a room until a time.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ban {
    /// The user.
    pub user_id: String,
    /// Barred until then (Unix ms).
    pub until_ms: i64,
    /// Why, as the application put it.
    pub reason: String,
    /// When the ban was set (Unix ms).
    pub created_at_ms: i64,
}

/// Which way a history page goes from its starting point.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    /// Messages with sequence below `from` (`from = 0`: the latest ones).
    Backward,
    /// Messages with sequence above `from`.
    Forward,
}

/// One page of a room's history.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Page {
    /// Which way.
    pub direction: Direction,
    /// The exclusive starting sequence.
    pub from: u64,
    /// At most this many messages.
    pub limit: usize,
}

/// A store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The store cannot be reached or refused the operation.
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// The database driver failed (connection, statement, pool).
    #[error("store unavailable: {0}")]
    Database(#[from] sqlx::Error),
    /// The schema migrations did not run.
    #[error("migration failed: {0}")]
    Migration(#[from] sqlx::migrate::MigrateError),
    /// `store.url` is not usable.
    #[error("store configuration: {0}")]
    Config(String),
    /// A change names no live message of the room.
    #[error("no message {0} to change in this room")]
    MessageNotFound(u64),
    /// A change to another user's message.
    #[error("message {0} was sent by another user")]
    NotTheAuthor(u64),
    /// A user's reactions on one message, or the message's different
    /// emojis, are at the limit.
    #[error(
        "at most {MAX_REACTIONS_PER_USER} different reactions per message and user, \
         {MAX_EMOJIS_PER_MESSAGE} different emojis per message"
    )]
    TooManyReactions(u64),
}

/// Where messages are kept and sequenced.
pub trait MessageStore: Send + Sync + 'static {
    /// Short name for logs and the readiness report.
    fn name(&self) -> &'static str;

    /// Whether several instances can share this store (so sequence numbers
    /// are the same everywhere).
    fn is_shared(&self) -> bool;

    /// Stores `message` as the next message of its room and returns it with
    /// its id, sequence number and time — or, if the same sender already
    /// stored a message with this client message id in this room, returns
    /// that one, marked duplicate. When this returns, the message is as
    /// durable as the store makes anything.
    fn append(&self, message: NewMessage) -> BoxFuture<'_, Result<Appended, StoreError>>;

    /// Stores `change` (an edit or a delete) as the next event of its room
    /// and applies it to the message it names, in one transaction: an edit
    /// replaces the text and sets its edit time; a delete empties the text
    /// of the message and of its earlier edits. Refused with
    /// [`StoreError::MessageNotFound`] or [`StoreError::NotTheAuthor`] (an
    /// `operator` may delete anyone's message). A retry (same sender and
    /// client message id) answers with the original change, as `append`.
    fn change(
        &self,
        change: NewMessage,
        operator: bool,
    ) -> BoxFuture<'_, Result<Appended, StoreError>>;

    /// What a join needs of the store, in one query: how far `user` has
    /// read `room` (as [`MessageStore::read_state`]) and the ban on them
    /// there in force at `now_ms` (as [`MessageStore::ban`]).
    fn join_state<'a>(
        &'a self,
        room: &'a RoomName,
        user: &'a str,
        now_ms: i64,
    ) -> BoxFuture<'a, Result<(ReadState, Option<Ban>), StoreError>>;

    /// How far `user` has read `room`, and what is unread after it.
    fn read_state<'a>(
        &'a self,
        room: &'a RoomName,
        user: &'a str,
    ) -> BoxFuture<'a, Result<ReadState, StoreError>>;

    /// Moves `user`'s read position in `room` up to `sequence` (clamped to
    /// the room's latest; never backwards) and returns the state after.
    fn mark_read<'a>(
        &'a self,
        room: &'a RoomName,
        user: &'a str,
        sequence: u64,
    ) -> BoxFuture<'a, Result<ReadState, StoreError>>;

    /// Opens (or finds) the direct conversation of `me` with `peer` (a user
    /// id) and records `me`'s display name in it.
    fn open_direct<'a>(
        &'a self,
        me: &'a User,
        peer: &'a str,
    ) -> BoxFuture<'a, Result<Conversation, StoreError>>;

    /// The direct conversation whose room is `room`, if there is one.
    fn direct<'a>(
        &'a self,
        room: &'a RoomName,
    ) -> BoxFuture<'a, Result<Option<Conversation>, StoreError>>;

    /// Bars `user` from `room` under `ban` (replacing a ban there was), or
    /// with `None` lifts it; returns whether a ban was in force before (at
    /// `ban`'s creation time, or now). The room's other bans that have
    /// ended by then are deleted (so ended bans do not pile up).
    fn set_ban<'a>(
        &'a self,
        room: &'a RoomName,
        user: &'a str,
        ban: Option<Ban>,
    ) -> BoxFuture<'a, Result<bool, StoreError>>;

    /// The ban on `user` in `room` in force at `now_ms`, if any.
    fn ban<'a>(
        &'a self,
        room: &'a RoomName,
        user: &'a str,
        now_ms: i64,
    ) -> BoxFuture<'a, Result<Option<Ban>, StoreError>>;

    /// The bans in force in `room` at `now_ms`, by user id (at most
    /// [`MAX_BANS_LISTED`]).
    fn bans<'a>(
        &'a self,
        room: &'a RoomName,
        now_ms: i64,
    ) -> BoxFuture<'a, Result<Vec<Ban>, StoreError>>;

    /// `user_id`'s direct conversations, the most recently opened first (at
    /// most [`MAX_DIRECT_LISTED`]).
    fn list_direct<'a>(
        &'a self,
        user_id: &'a str,
    ) -> BoxFuture<'a, Result<Vec<Conversation>, StoreError>>;

    /// The sequence number of the room's latest message, 0 if it has none.
    fn latest_sequence<'a>(&'a self, room: &'a RoomName) -> BoxFuture<'a, Result<u64, StoreError>>;

    /// A page of the room's messages, in increasing sequence order.
    fn history<'a>(
        &'a self,
        room: &'a RoomName,
        page: Page,
    ) -> BoxFuture<'a, Result<Vec<StoredMessage>, StoreError>>;

    /// The sizes of the groups appends are written in (SQLite commits,
    /// PostgreSQL statements); `None` for a store that writes one by one.
    fn batch_sizes(&self) -> Option<&crate::metrics::Histogram> {
        None
    }

    /// The sizes of the groups joins' states are read in (PostgreSQL:
    /// joins per statement); `None` for a store that reads them one by one.
    fn join_batches(&self) -> Option<&crate::metrics::Histogram> {
        None
    }

    /// How long appends waited for a connection of the store's pool
    /// (PostgreSQL); `None` for a store without one.
    fn pool_waits(&self) -> Option<&crate::metrics::Histogram> {
        None
    }

    /// From now on, queues the events `capture` names for the webhook:
    /// room events in the transaction that stores them (nothing is queued
    /// until this is called; a SQLite file keeps the last setting).
    fn set_capture(&self, capture: Capture) -> BoxFuture<'_, Result<(), StoreError>>;

    /// Queues presence changes for the webhook, in one write.
    fn queue_membership(
        &self,
        changes: Vec<MembershipChange>,
    ) -> BoxFuture<'_, Result<(), StoreError>>;

    /// Leases the oldest events due at `claim.now_ms` that no one holds, at
    /// most `claim.max`, until `claim.lease_until_ms`, in queue order; each
    /// as its row reads now.
    fn claim_events(&self, claim: Claim) -> BoxFuture<'_, Result<Vec<QueuedEvent>, StoreError>>;

    /// Takes the events `done` names out of the queue, and makes those
    /// `retry` names due again at `retry_at_ms` — those still leased until
    /// `lease_until_ms`, the claim's: events another claim took since are
    /// left to it.
    fn settle_events<'a>(
        &'a self,
        done: &'a [i64],
        retry: &'a [i64],
        retry_at_ms: i64,
        lease_until_ms: i64,
    ) -> BoxFuture<'a, Result<(), StoreError>>;

    /// Drops the events queued before `oldest_ms`, then the oldest beyond
    /// `max_pending` (SQLite, whose one writer also stores the messages, at
    /// most [`TRIM_CHUNK`] of each per call); says how many went and how
    /// many are left.
    fn trim_events(
        &self,
        oldest_ms: i64,
        max_pending: u64,
    ) -> BoxFuture<'_, Result<Trimmed, StoreError>>;

    /// Whether the store answers, for readiness.
    fn check(&self) -> BoxFuture<'_, Result<(), StoreError>>;

    /// Deletes what `retention` no longer keeps; returns how many messages
    /// went. Room counters stay, so sequence numbers are never reused.
    fn enforce_retention(&self, retention: Retention) -> BoxFuture<'_, Result<u64, StoreError>>;
}

/// How much history a store keeps.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Retention {
    /// Messages older than this go (`None`: no age limit).
    pub max_age: Option<std::time::Duration>,
    /// Each room keeps at most its latest this many (`None`: no limit).
    pub max_messages_per_room: Option<u64>,
}

impl Retention {
    /// The policy `store.retention_*` describes (0 turns a limit off).
    pub fn from_config(config: &StoreConfig) -> Retention {
        Retention {
            max_age: (!config.retention_max_age.is_zero()).then_some(config.retention_max_age),
            max_messages_per_room: (config.retention_max_messages_per_room > 0)
                .then_some(config.retention_max_messages_per_room),
        }
    }

    /// The oldest creation time kept, in Unix milliseconds (or `i64::MIN`).
    fn cutoff_ms(&self) -> i64 {
        match self.max_age {
            Some(age) => chat_util::now_unix_ms()
                .saturating_sub(age.as_millis().min(i64::MAX as u128) as i64),
            None => i64::MIN,
        }
    }

    /// Whether it deletes anything at all.
    pub fn is_unlimited(&self) -> bool {
        self.max_age.is_none() && self.max_messages_per_room.is_none()
    }
}

/// Enforces `retention` on `store` every `interval` until `shutdown`.
pub async fn retain(
    store: Arc<dyn MessageStore>,
    retention: Retention,
    interval: std::time::Duration,
    shutdown: tokio_util::sync::CancellationToken,
) {
    if retention.is_unlimited() {
        return;
    }
    let mut ticks = tokio::time::interval(interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = ticks.tick() => {}
        }
        // A store that hangs (it is down) does not hold up the shutdown.
        let outcome = tokio::select! {
            _ = shutdown.cancelled() => return,
            outcome = store.enforce_retention(retention) => outcome,
        };
        match outcome {
            Ok(0) => {}
            Ok(deleted) => tracing::info!(deleted, "retention: old messages deleted"),
            Err(e) => tracing::warn!(error = %e, "retention failed; retrying at the next interval"),
        }
    }
}

/// Opens the store `url` names: `memory`, `sqlite://PATH` or
/// `postgres://…`. SQLite files (and their folder) are created on first use;
/// schemas are migrated.
pub async fn open(url: &str) -> Result<Arc<dyn MessageStore>, StoreError> {
    if url == "memory" {
        Ok(Arc::new(MemoryStore::new()))
    } else if url.starts_with("sqlite:") {
        Ok(Arc::new(SqliteStore::open(url).await?))
    } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        Ok(Arc::new(PostgresStore::open(url).await?))
    } else {
        Err(StoreError::Config(format!(
            "store.url {url:?}: expected memory, sqlite://PATH or postgres://…"
        )))
    }
}

/// The conversation row (`room, user_a, name_a, user_b, name_b`) as a
/// [`Conversation`].
fn direct_from_row(room: &str, a: (String, String), b: (String, String)) -> Option<Conversation> {
    let user = |(id, name): (String, String)| User {
        user_id: Arc::from(id),
        display_name: Arc::from(name),
    };
    Some(Conversation {
        room: RoomName::parse(room).ok()?,
        users: [user(a), user(b)],
    })
}

/// The two users of `me`'s conversation with `peer` in row order (lower id
/// first): `me` with its name, `peer` with its id for a name.
fn direct_users(me: &User, peer: &str) -> [User; 2] {
    let other = User {
        user_id: Arc::from(peer),
        display_name: Arc::from(peer),
    };
    if *me.user_id <= *peer {
        [me.clone(), other]
    } else {
        [other, me.clone()]
    }
}

/// The columns an append reads back.
const SELECT_COLUMNS: &str =
    "sequence, id, sender_id, sender_name, client_message_id, text, created_at_ms";

/// The columns history reads: an append's, and what changes wrote.
const HISTORY_COLUMNS: &str = "sequence, id, sender_id, sender_name, client_message_id, text, \
     created_at_ms, kind, target_sequence, edited_at_ms, edited_sequence, deleted";

/// Reads a message row's fields into a [`StoredMessage`] (a message, not
/// edited; [`StoredMessage::with_changes`] adds the rest).
#[allow(clippy::too_many_arguments)]
fn row_to_message(
    room: &RoomName,
    sequence: i64,
    id: String,
    sender_id: String,
    sender_name: String,
    client_message_id: String,
    text: String,
    created_at_ms: i64,
) -> StoredMessage {
    StoredMessage {
        id,
        sequence: sequence.max(0) as u64,
        time_unix_ms: created_at_ms,
        message: NewMessage {
            room: room.clone(),
            sender: User {
                user_id: Arc::from(sender_id),
                display_name: Arc::from(sender_name),
            },
            client_message_id,
            text,
            kind: Kind::Message,
        },
        edited_at_ms: 0,
        edited_sequence: 0,
        deleted: false,
        reactions: Vec::new(),
    }
}

/// One row of a page's reactions: message sequence, emoji, user id, display
/// name, and how many gave that emoji to that message.
type ReactionRow = (i64, String, String, String, i64);

/// Puts `rows` (ordered by message, then emoji in the order first given,
/// then reactor) on the messages of `page` they belong to.
fn with_reactions(page: &mut [StoredMessage], rows: Vec<ReactionRow>) {
    let mut rows = rows.into_iter().peekable();
    for message in page.iter_mut() {
        let sequence = message.sequence as i64;
        while rows.peek().is_some_and(|row| row.0 < sequence) {
            rows.next();
        }
        while let Some((_, emoji, user_id, display_name, count)) =
            rows.next_if(|row| row.0 == sequence)
        {
            if message.message.kind != Kind::Message {
                continue;
            }
            let user = User {
                user_id: Arc::from(user_id),
                display_name: Arc::from(display_name),
            };
            match message.reactions.last_mut() {
                Some(last) if last.emoji == emoji => last.users.push(user),
                _ => message.reactions.push(Reactions {
                    emoji,
                    count: count.clamp(0, i64::from(u32::MAX)) as u32,
                    users: vec![user],
                }),
            }
        }
    }
}

/// A join's row: read position, unread count, and the ban's until, reason
/// and creation time (absent without a ban in force).
type JoinStateRow = (i64, i64, Option<i64>, Option<String>, Option<i64>);

/// The read state and ban of `user` from a join's row.
fn join_state_from_row(
    user: &str,
    (read, unread, until, reason, created): JoinStateRow,
) -> (ReadState, Option<Ban>) {
    let state = ReadState {
        read_sequence: read.max(0) as u64,
        unread: unread.clamp(0, i64::from(UNREAD_COUNT_CAP)) as u32,
    };
    let ban = until.map(|until_ms| Ban {
        user_id: user.to_string(),
        until_ms,
        reason: reason.unwrap_or_default(),
        created_at_ms: created.unwrap_or_default(),
    });
    (state, ban)
}

/// A ban from its row: user id, until, reason, created at.
fn ban_from_row((user_id, until_ms, reason, created_at_ms): (String, i64, String, i64)) -> Ban {
    Ban {
        user_id,
        until_ms,
        reason,
        created_at_ms,
    }
}

impl StoredMessage {
    /// With the kind and the change columns of its row: kind, target,
    /// edit time, edit sequence, deleted.
    fn with_changes(mut self, kind: i64, target: i64, edited: (i64, i64), deleted: bool) -> Self {
        self.message.kind = Kind::from_columns(kind, target);
        self.edited_at_ms = edited.0;
        self.edited_sequence = edited.1.max(0) as u64;
        self.deleted = deleted;
        self
    }

    /// With the kind columns of an append's row (a retry may find a row
    /// that is a change: the caller refuses that).
    fn with_kind(mut self, kind: i64, target: i64) -> Self {
        self.message.kind = Kind::from_columns(kind, target);
        self
    }
}

/// A store for tests of what must not wait on it: every call waits until
/// `open` is notified (never: it hangs, as a store that is down), then
/// answers as an empty store; `checks` counts its `check` calls.
#[cfg(test)]
#[derive(Default)]
pub(crate) struct GatedStore {
    /// Lets the calls waiting now answer.
    pub open: tokio::sync::Notify,
    /// How many times `check` was called.
    pub checks: std::sync::atomic::AtomicUsize,
}

#[cfg(test)]
impl GatedStore {
    /// Waits for `open`, then answers `value`.
    fn gated<'a, T: Send + 'a>(&'a self, value: T) -> BoxFuture<'a, Result<T, StoreError>> {
        Box::pin(async move {
            self.open.notified().await;
            Ok(value)
        })
    }
}

#[cfg(test)]
impl MessageStore for GatedStore {
    fn name(&self) -> &'static str {
        "gated"
    }

    fn is_shared(&self) -> bool {
        false
    }

    fn append(&self, _: NewMessage) -> BoxFuture<'_, Result<Appended, StoreError>> {
        Box::pin(futures::future::pending())
    }

    fn change(&self, _: NewMessage, _: bool) -> BoxFuture<'_, Result<Appended, StoreError>> {
        Box::pin(futures::future::pending())
    }

    fn read_state<'a>(
        &'a self,
        _: &'a RoomName,
        _: &'a str,
    ) -> BoxFuture<'a, Result<ReadState, StoreError>> {
        self.gated(ReadState::default())
    }

    fn join_state<'a>(
        &'a self,
        _: &'a RoomName,
        _: &'a str,
        _: i64,
    ) -> BoxFuture<'a, Result<(ReadState, Option<Ban>), StoreError>> {
        self.gated((ReadState::default(), None))
    }

    fn set_ban<'a>(
        &'a self,
        _: &'a RoomName,
        _: &'a str,
        _: Option<Ban>,
    ) -> BoxFuture<'a, Result<bool, StoreError>> {
        self.gated(false)
    }

    fn ban<'a>(
        &'a self,
        _: &'a RoomName,
        _: &'a str,
        _: i64,
    ) -> BoxFuture<'a, Result<Option<Ban>, StoreError>> {
        self.gated(None)
    }

    fn bans<'a>(&'a self, _: &'a RoomName, _: i64) -> BoxFuture<'a, Result<Vec<Ban>, StoreError>> {
        self.gated(Vec::new())
    }

    fn mark_read<'a>(
        &'a self,
        _: &'a RoomName,
        _: &'a str,
        _: u64,
    ) -> BoxFuture<'a, Result<ReadState, StoreError>> {
        self.gated(ReadState::default())
    }

    fn open_direct<'a>(
        &'a self,
        _: &'a User,
        _: &'a str,
    ) -> BoxFuture<'a, Result<Conversation, StoreError>> {
        Box::pin(futures::future::pending())
    }

    fn direct<'a>(
        &'a self,
        _: &'a RoomName,
    ) -> BoxFuture<'a, Result<Option<Conversation>, StoreError>> {
        self.gated(None)
    }

    fn list_direct<'a>(
        &'a self,
        _: &'a str,
    ) -> BoxFuture<'a, Result<Vec<Conversation>, StoreError>> {
        self.gated(Vec::new())
    }

    fn latest_sequence<'a>(&'a self, _: &'a RoomName) -> BoxFuture<'a, Result<u64, StoreError>> {
        self.gated(0)
    }

    fn history<'a>(
        &'a self,
        _: &'a RoomName,
        _: Page,
    ) -> BoxFuture<'a, Result<Vec<StoredMessage>, StoreError>> {
        self.gated(Vec::new())
    }

    fn set_capture(&self, _: Capture) -> BoxFuture<'_, Result<(), StoreError>> {
        self.gated(())
    }

    fn queue_membership(&self, _: Vec<MembershipChange>) -> BoxFuture<'_, Result<(), StoreError>> {
        self.gated(())
    }

    fn claim_events(&self, _: Claim) -> BoxFuture<'_, Result<Vec<QueuedEvent>, StoreError>> {
        self.gated(Vec::new())
    }

    fn settle_events<'a>(
        &'a self,
        _: &'a [i64],
        _: &'a [i64],
        _: i64,
        _: i64,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        self.gated(())
    }

    fn trim_events(&self, _: i64, _: u64) -> BoxFuture<'_, Result<Trimmed, StoreError>> {
        self.gated(Trimmed::default())
    }

    fn check(&self) -> BoxFuture<'_, Result<(), StoreError>> {
        self.checks
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        self.gated(())
    }

    fn enforce_retention(&self, _: Retention) -> BoxFuture<'_, Result<u64, StoreError>> {
        self.gated(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// Issue 15, report 14: retention stops at shutdown even while its
    /// store call hangs (the store is down).
    #[tokio::test]
    async fn retention_stops_at_shutdown_while_the_store_hangs() {
        let retention = Retention {
            max_age: None,
            max_messages_per_room: Some(10),
        };
        let shutdown = tokio_util::sync::CancellationToken::new();
        let task = tokio::spawn(retain(
            Arc::new(GatedStore::default()),
            retention,
            Duration::from_millis(10),
            shutdown.clone(),
        ));
        tokio::time::sleep(Duration::from_millis(100)).await;
        shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(2), task)
            .await
            .expect("retention ended with the shutdown")
            .unwrap();
    }
}
