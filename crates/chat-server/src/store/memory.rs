//! The in-memory store: sequences messages and keeps a bounded window of
//! each room's latest messages (for history and retried sends). Nothing
//! survives a restart; for tests and throwaway runs.

use super::{
    Appended, Ban, Capture, CaptureCell, Claim, Conversation, Direction, Kind, MAX_BANS_LISTED,
    MAX_DIRECT_LISTED, MAX_EMOJIS_PER_MESSAGE, MAX_REACTIONS_PER_USER, MembershipChange,
    MessageStore, NewMessage, Page, Queued, QueuedEvent, REACTORS_LISTED, Reactions, ReadState,
    Retention, StoreError, StoredMessage, TRIM_CHUNK, Trimmed, UNREAD_COUNT_CAP, check_change,
    direct_users,
};
use crate::domain::User;
use crate::domain::validate::RoomName;
use chat_util::lock;
use chat_util::now_unix_ms;
use futures::future::{BoxFuture, FutureExt, ready};
use std::collections::{HashMap, VecDeque};
use std::hash::{BuildHasher, RandomState};
use std::sync::{Arc, Mutex};

const SHARDS: usize = 32;
/// Messages kept per room.
pub const WINDOW: usize = 1000;

#[derive(Default)]
struct RoomLog {
    last: u64,
    recent: VecDeque<StoredMessage>,
    /// (sender id, client message id) → sequence, for messages in `recent`.
    by_client_id: HashMap<(Arc<str>, String), u64>,
    /// User id → the last sequence that user read.
    read: HashMap<String, u64>,
}

/// A conversation's two user ids, the lower first.
type Pair = (Arc<str>, Arc<str>);

/// Per-room logs, sharded so rooms do not contend.
pub struct MemoryStore {
    hasher: RandomState,
    shards: Box<[Mutex<HashMap<RoomName, RoomLog>>]>,
    /// Direct conversations by their pair of user ids (in order), with when
    /// each was last opened (a counter).
    directs: Mutex<HashMap<Pair, (Conversation, u64)>>,
    /// Counts conversations opened, for their order.
    opened: std::sync::atomic::AtomicU64,
    /// Bans by room and user.
    bans: Mutex<HashMap<(RoomName, String), Ban>>,
    /// Which events are queued for the webhook.
    capture: CaptureCell,
    /// The webhook's queue (lost with the process, as everything here).
    queue: Mutex<EventQueue>,
}

/// The webhook's queue: entries by their position.
#[derive(Default)]
struct EventQueue {
    /// The last position given.
    last: i64,
    /// Waiting entries, oldest first.
    entries: std::collections::BTreeMap<i64, QueueEntry>,
}

/// One waiting event.
struct QueueEntry {
    /// A room event by its room and sequence, or a presence change.
    what: Result<(RoomName, u64), MembershipChange>,
    /// When it was queued (Unix ms).
    queued_at_ms: i64,
    /// Times claimed.
    attempts: u32,
    /// Not due before then (Unix ms).
    next_attempt_ms: i64,
    /// Leased until then (Unix ms).
    lease_until_ms: i64,
}

impl EventQueue {
    /// Queues `what`, queued at `now_ms`.
    fn push(&mut self, what: Result<(RoomName, u64), MembershipChange>, now_ms: i64) {
        self.last += 1;
        self.entries.insert(
            self.last,
            QueueEntry {
                what,
                queued_at_ms: now_ms,
                attempts: 0,
                next_attempt_ms: 0,
                lease_until_ms: 0,
            },
        );
    }
}

impl Default for MemoryStore {
    fn default() -> Self {
        MemoryStore {
            hasher: RandomState::new(),
            shards: (0..SHARDS).map(|_| Mutex::default()).collect(),
            directs: Mutex::default(),
            opened: std::sync::atomic::AtomicU64::new(0),
            bans: Mutex::default(),
            capture: CaptureCell::default(),
            queue: Mutex::default(),
        }
    }
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    fn shard(&self, room: &RoomName) -> std::sync::MutexGuard<'_, HashMap<RoomName, RoomLog>> {
        let i = self.hasher.hash_one(room) as usize % self.shards.len();
        lock(&self.shards[i])
    }
}

impl RoomLog {
    fn find(&self, sequence: u64) -> Option<&StoredMessage> {
        let first = self.recent.front()?.sequence;
        self.recent.get(sequence.checked_sub(first)? as usize)
    }

    fn find_mut(&mut self, sequence: u64) -> Option<&mut StoredMessage> {
        let first = self.recent.front()?.sequence;
        self.recent.get_mut(sequence.checked_sub(first)? as usize)
    }

    /// The stored copy of a retry of `message`, if it is still kept.
    fn original(&self, message: &NewMessage) -> Option<&StoredMessage> {
        let key = (
            message.sender.user_id.clone(),
            message.client_message_id.clone(),
        );
        self.by_client_id.get(&key).and_then(|seq| self.find(*seq))
    }

    /// `user`'s read position and the unread messages after it (of those
    /// still in the window).
    fn read_state(&self, user: &str) -> ReadState {
        let read_sequence = self.read.get(user).copied().unwrap_or(0);
        let unread = self
            .recent
            .iter()
            .filter(|m| m.sequence > read_sequence && m.message.kind == Kind::Message)
            .filter(|m| !m.deleted && *m.message.sender.user_id != *user)
            .take(UNREAD_COUNT_CAP as usize)
            .count() as u32;
        ReadState {
            read_sequence,
            unread,
        }
    }

    /// Numbers `message` and keeps it (within the window).
    fn push(&mut self, message: NewMessage) -> StoredMessage {
        self.last += 1;
        let stored = StoredMessage {
            id: uuid::Uuid::now_v7().to_string(),
            sequence: self.last,
            time_unix_ms: now_unix_ms(),
            message,
            edited_at_ms: 0,
            edited_sequence: 0,
            deleted: false,
            reactions: Vec::new(),
        };
        let key = (
            stored.message.sender.user_id.clone(),
            stored.message.client_message_id.clone(),
        );
        self.by_client_id.insert(key, stored.sequence);
        self.recent.push_back(stored.clone());
        if self.recent.len() > WINDOW
            && let Some(old) = self.recent.pop_front()
        {
            self.by_client_id
                .remove(&(old.message.sender.user_id, old.message.client_message_id));
        }
        stored
    }
}

/// `message` as history shows it: each reaction with its count and the
/// first [`REACTORS_LISTED`] users (the store keeps them all).
fn listed(mut message: StoredMessage) -> StoredMessage {
    for r in &mut message.reactions {
        r.count = r.users.len() as u32;
        r.users.truncate(REACTORS_LISTED);
    }
    message
}

impl MessageStore for MemoryStore {
    fn name(&self) -> &'static str {
        "memory"
    }

    fn is_shared(&self) -> bool {
        false
    }

    fn append(&self, message: NewMessage) -> BoxFuture<'_, Result<Appended, StoreError>> {
        let mut shard = self.shard(&message.room);
        let log = shard.entry(message.room.clone()).or_default();
        let appended = match log.original(&message) {
            Some(original) => Appended {
                message: original.clone(),
                duplicate: true,
            },
            None => Appended {
                message: log.push(message),
                duplicate: false,
            },
        };
        if !appended.duplicate && self.capture.get().has(Capture::MESSAGE) {
            let stored = &appended.message;
            lock(&self.queue).push(
                Ok((stored.message.room.clone(), stored.sequence)),
                stored.time_unix_ms,
            );
        }
        ready(Ok(appended)).boxed()
    }

    fn change(
        &self,
        change: NewMessage,
        operator: bool,
    ) -> BoxFuture<'_, Result<Appended, StoreError>> {
        let mut shard = self.shard(&change.room);
        let log = shard.entry(change.room.clone()).or_default();
        if let Some(original) = log.original(&change) {
            let appended = Appended {
                message: original.clone(),
                duplicate: true,
            };
            return ready(Ok(appended)).boxed();
        }
        let target = change.kind.target();
        let state = log
            .find(target)
            .map(|m| (m.message.kind, &*m.message.sender.user_id, m.deleted));
        if let Err(e) = check_change(change.kind, state, &change.sender.user_id, operator) {
            return ready(Err(e)).boxed();
        }
        if let (Kind::ReactionAdded(_), Some(message)) = (change.kind, log.find(target)) {
            let user = &*change.sender.user_id;
            let others = message
                .reactions
                .iter()
                .filter(|r| r.emoji != change.text && r.users.iter().any(|u| &*u.user_id == user))
                .count();
            let emojis = message
                .reactions
                .iter()
                .filter(|r| r.emoji != change.text)
                .count();
            if others >= MAX_REACTIONS_PER_USER as usize
                || emojis >= MAX_EMOJIS_PER_MESSAGE as usize
            {
                return ready(Err(StoreError::TooManyReactions(target))).boxed();
            }
        }
        let stored = log.push(change);
        let now = stored.time_unix_ms;
        if let Some(message) = log.find_mut(target) {
            match stored.message.kind {
                Kind::Edit(_) => {
                    message.message.text = stored.message.text.clone();
                    message.edited_at_ms = now;
                    message.edited_sequence = stored.sequence;
                }
                Kind::ReactionAdded(_) => {
                    let (emoji, user) = (&stored.message.text, &stored.message.sender);
                    match message.reactions.iter_mut().find(|r| r.emoji == *emoji) {
                        Some(r) if r.users.iter().any(|u| u.user_id == user.user_id) => {}
                        Some(r) => r.users.push(user.clone()),
                        None => message.reactions.push(Reactions {
                            emoji: emoji.clone(),
                            count: 0,
                            users: vec![user.clone()],
                        }),
                    }
                }
                Kind::ReactionRemoved(_) => {
                    let (emoji, user) = (&stored.message.text, &stored.message.sender);
                    for r in message.reactions.iter_mut().filter(|r| r.emoji == *emoji) {
                        r.users.retain(|u| u.user_id != user.user_id);
                    }
                    message.reactions.retain(|r| !r.users.is_empty());
                }
                Kind::Delete(_) | Kind::Message => {
                    message.message.text.clear();
                    message.deleted = true;
                    message.reactions.clear();
                }
            }
        }
        if matches!(stored.message.kind, Kind::Delete(_)) {
            for edit in log.recent.iter_mut() {
                if edit.message.kind == Kind::Edit(target) {
                    edit.message.text.clear();
                }
            }
        }
        if self.capture.get().room_event(stored.message.kind) {
            lock(&self.queue).push(
                Ok((stored.message.room.clone(), stored.sequence)),
                stored.time_unix_ms,
            );
        }
        ready(Ok(Appended {
            message: stored,
            duplicate: false,
        }))
        .boxed()
    }

    fn set_ban<'a>(
        &'a self,
        room: &'a RoomName,
        user: &'a str,
        ban: Option<Ban>,
    ) -> BoxFuture<'a, Result<bool, StoreError>> {
        let now = ban.as_ref().map_or_else(now_unix_ms, |b| b.created_at_ms);
        let key = (room.clone(), user.to_string());
        let mut bans = lock(&self.bans);
        let before = match ban {
            Some(ban) => bans.insert(key, ban),
            None => bans.remove(&key),
        };
        // The room's bans that ended go with any change to its bans.
        bans.retain(|(r, u), b| r != room || u == user || b.until_ms > now);
        ready(Ok(before.is_some_and(|b| b.until_ms > now))).boxed()
    }

    fn ban<'a>(
        &'a self,
        room: &'a RoomName,
        user: &'a str,
        now_ms: i64,
    ) -> BoxFuture<'a, Result<Option<Ban>, StoreError>> {
        let found = lock(&self.bans)
            .get(&(room.clone(), user.to_string()))
            .filter(|b| b.until_ms > now_ms)
            .cloned();
        ready(Ok(found)).boxed()
    }

    fn bans<'a>(
        &'a self,
        room: &'a RoomName,
        now_ms: i64,
    ) -> BoxFuture<'a, Result<Vec<Ban>, StoreError>> {
        let mut found: Vec<Ban> = lock(&self.bans)
            .iter()
            .filter(|((r, _), b)| r == room && b.until_ms > now_ms)
            .map(|(_, b)| b.clone())
            .collect();
        found.sort_by(|a, b| a.user_id.cmp(&b.user_id));
        found.truncate(MAX_BANS_LISTED);
        ready(Ok(found)).boxed()
    }

    fn read_state<'a>(
        &'a self,
        room: &'a RoomName,
        user: &'a str,
    ) -> BoxFuture<'a, Result<ReadState, StoreError>> {
        let state = self
            .shard(room)
            .get(room)
            .map(|log| log.read_state(user))
            .unwrap_or_default();
        ready(Ok(state)).boxed()
    }

    fn join_state<'a>(
        &'a self,
        room: &'a RoomName,
        user: &'a str,
        now_ms: i64,
    ) -> BoxFuture<'a, Result<(ReadState, Option<Ban>), StoreError>> {
        let state = self
            .shard(room)
            .get(room)
            .map(|log| log.read_state(user))
            .unwrap_or_default();
        let ban = lock(&self.bans)
            .get(&(room.clone(), user.to_string()))
            .filter(|b| b.until_ms > now_ms)
            .cloned();
        ready(Ok((state, ban))).boxed()
    }

    fn mark_read<'a>(
        &'a self,
        room: &'a RoomName,
        user: &'a str,
        sequence: u64,
    ) -> BoxFuture<'a, Result<ReadState, StoreError>> {
        let mut shard = self.shard(room);
        let log = shard.entry(room.clone()).or_default();
        let clamped = sequence.min(log.last);
        let read = log.read.entry(user.to_string()).or_default();
        *read = (*read).max(clamped);
        ready(Ok(log.read_state(user))).boxed()
    }

    fn open_direct<'a>(
        &'a self,
        me: &'a User,
        peer: &'a str,
    ) -> BoxFuture<'a, Result<Conversation, StoreError>> {
        let users = direct_users(me, peer);
        let pair = (users[0].user_id.clone(), users[1].user_id.clone());
        let mut directs = lock(&self.directs);
        let order = self
            .opened
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let (direct, opened) = directs.entry(pair).or_insert_with(|| {
            let room = crate::domain::direct::new_room();
            (Conversation { room, users }, order)
        });
        *opened = order;
        if let Some(mine) = direct.users.iter_mut().find(|u| u.user_id == me.user_id) {
            mine.display_name = me.display_name.clone();
        }
        let found = direct.clone();
        ready(Ok(found)).boxed()
    }

    fn direct<'a>(
        &'a self,
        room: &'a RoomName,
    ) -> BoxFuture<'a, Result<Option<Conversation>, StoreError>> {
        let found = lock(&self.directs)
            .values()
            .find(|(d, _)| d.room == *room)
            .map(|(d, _)| d.clone());
        ready(Ok(found)).boxed()
    }

    fn list_direct<'a>(
        &'a self,
        user_id: &'a str,
    ) -> BoxFuture<'a, Result<Vec<Conversation>, StoreError>> {
        let directs = lock(&self.directs);
        let mut mine: Vec<&(Conversation, u64)> =
            directs.values().filter(|(d, _)| d.has(user_id)).collect();
        mine.sort_by_key(|(_, opened)| std::cmp::Reverse(*opened));
        let listed = mine
            .into_iter()
            .take(MAX_DIRECT_LISTED)
            .map(|(d, _)| d.clone())
            .collect();
        ready(Ok(listed)).boxed()
    }

    fn latest_sequence<'a>(&'a self, room: &'a RoomName) -> BoxFuture<'a, Result<u64, StoreError>> {
        let latest = self.shard(room).get(room).map_or(0, |log| log.last);
        ready(Ok(latest)).boxed()
    }

    fn history<'a>(
        &'a self,
        room: &'a RoomName,
        page: Page,
    ) -> BoxFuture<'a, Result<Vec<StoredMessage>, StoreError>> {
        let shard = self.shard(room);
        let Some(log) = shard.get(room) else {
            return ready(Ok(Vec::new())).boxed();
        };
        let messages: Vec<StoredMessage> = match page.direction {
            Direction::Forward => log
                .recent
                .iter()
                .filter(|m| m.sequence > page.from)
                .take(page.limit)
                .cloned()
                .collect(),
            Direction::Backward => {
                let before = if page.from == 0 { u64::MAX } else { page.from };
                let mut newest: Vec<StoredMessage> = log
                    .recent
                    .iter()
                    .rev()
                    .filter(|m| m.sequence < before)
                    .take(page.limit)
                    .cloned()
                    .collect();
                newest.reverse();
                newest
            }
        };
        let messages = messages.into_iter().map(listed).collect();
        ready(Ok(messages)).boxed()
    }

    fn set_capture(&self, capture: Capture) -> BoxFuture<'_, Result<(), StoreError>> {
        self.capture.set(capture);
        ready(Ok(())).boxed()
    }

    fn queue_membership(
        &self,
        changes: Vec<MembershipChange>,
    ) -> BoxFuture<'_, Result<(), StoreError>> {
        let mut queue = lock(&self.queue);
        for change in changes {
            let now = change.time_unix_ms;
            queue.push(Err(change), now);
        }
        ready(Ok(())).boxed()
    }

    fn claim_events(&self, claim: Claim) -> BoxFuture<'_, Result<Vec<QueuedEvent>, StoreError>> {
        let mut claimed = Vec::new();
        {
            let mut queue = lock(&self.queue);
            let due = queue.entries.iter_mut().filter(|(_, e)| {
                e.next_attempt_ms <= claim.now_ms && e.lease_until_ms <= claim.now_ms
            });
            for (id, entry) in due.take(claim.max) {
                entry.attempts += 1;
                entry.lease_until_ms = claim.lease_until_ms;
                claimed.push((*id, entry.attempts, entry.queued_at_ms, entry.what.clone()));
            }
        }
        // The rows are read after the queue's lock is let go (appends take
        // a shard's lock, then the queue's).
        let events = claimed
            .into_iter()
            .map(|(queue_id, attempts, queued_at_ms, what)| {
                let what = match what {
                    Err(change) => Queued::Membership(change),
                    Ok((room, sequence)) => {
                        let found = self
                            .shard(&room)
                            .get(&room)
                            .and_then(|log| log.find(sequence).cloned());
                        match found {
                            Some(message) => Queued::Room(message),
                            None => Queued::Gone { room, sequence },
                        }
                    }
                };
                QueuedEvent {
                    queue_id,
                    attempts,
                    queued_at_ms,
                    what,
                }
            })
            .collect();
        ready(Ok(events)).boxed()
    }

    fn settle_events<'a>(
        &'a self,
        done: &'a [i64],
        retry: &'a [i64],
        retry_at_ms: i64,
        lease_until_ms: i64,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        let mut queue = lock(&self.queue);
        for id in done {
            queue.entries.remove(id);
        }
        for id in retry {
            if let Some(entry) = queue.entries.get_mut(id)
                && entry.lease_until_ms == lease_until_ms
            {
                entry.lease_until_ms = 0;
                entry.next_attempt_ms = retry_at_ms;
            }
        }
        ready(Ok(())).boxed()
    }

    fn trim_events(
        &self,
        oldest_ms: i64,
        max_pending: u64,
    ) -> BoxFuture<'_, Result<Trimmed, StoreError>> {
        let mut queue = lock(&self.queue);
        let before = queue.entries.len();
        queue.entries.retain(|_, e| e.queued_at_ms >= oldest_ms);
        let expired = (before - queue.entries.len()) as u64;
        let mut overflowed = 0;
        while queue.entries.len() as u64 > max_pending && overflowed < TRIM_CHUNK {
            queue.entries.pop_first();
            overflowed += 1;
        }
        let trimmed = Trimmed {
            expired,
            overflowed,
            pending: queue.entries.len() as u64,
        };
        ready(Ok(trimmed)).boxed()
    }

    fn check(&self) -> BoxFuture<'_, Result<(), StoreError>> {
        ready(Ok(())).boxed()
    }

    fn enforce_retention(&self, retention: Retention) -> BoxFuture<'_, Result<u64, StoreError>> {
        let cutoff = retention.cutoff_ms();
        let keep = retention.max_messages_per_room.unwrap_or(u64::MAX);
        let mut deleted = 0;
        for shard in self.shards.iter() {
            let mut shard = lock(shard);
            for log in shard.values_mut() {
                while let Some(oldest) = log.recent.front() {
                    let too_old = oldest.time_unix_ms < cutoff;
                    let too_many = log.last.saturating_sub(oldest.sequence) >= keep;
                    if !(too_old || too_many) {
                        break;
                    }
                    if let Some(old) = log.recent.pop_front() {
                        // Its edits lose their text with it.
                        for edit in log.recent.iter_mut() {
                            if edit.message.kind == Kind::Edit(old.sequence) {
                                edit.message.text.clear();
                            }
                        }
                        log.by_client_id
                            .remove(&(old.message.sender.user_id, old.message.client_message_id));
                        deleted += 1;
                    }
                }
            }
        }
        ready(Ok(deleted)).boxed()
    }
}
