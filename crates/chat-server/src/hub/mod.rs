//! The hub: this instance's sessions and rooms, and the paths a message
//! takes — sequenced by the store, published once on the backplane, fanned
//! out locally as one shared encoding.

pub mod cluster;
mod coalesce;
pub mod members;
pub mod notifier;
mod outbox;
pub mod presence;
pub mod receipts;
pub mod repair;
mod rooms;
mod snapshot;
pub mod typing;

pub use outbox::{Deferred, Direct, Outbox, OutboxStream, Taken, Wire, disconnect_frame, outbox};
pub use rooms::{ConnId, Rooms};

use crate::backplane::control::{
    Broadcast, Control, ControlKind, DirectOpened, DisconnectUser, PresenceChange, PresenceEntry,
    RemoveMember,
};
use crate::telemetry::trace::{self, TraceParent};
use chat_util::lock;
use chat_util::now_unix_ms;
pub use presence::{MemberCursor, MemberPage};
use presence::{Presence, Transition};
use tracing::Instrument;

use crate::backplane::{Backplane, RoomFrame, TypingNote};
use crate::config::Limits;
use crate::domain::RequestError;
use crate::domain::User;
use crate::domain::validate::RoomName;
use crate::metrics::JoinQuery;
use crate::store::{
    Ban, Capture, Conversation, Direction, Kind, MembershipChange, MessageStore, NewMessage, Page,
    ReadState, StoreError, StoredMessage,
};
use chat_proto::EncodedFrame;
use chat_proto::v1::{
    DirectConversation, DisconnectNotice, DisconnectReason, Member, MessageEvent, MessageKind,
    Notification, Reaction, server_frame::Frame,
};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

const SESSION_SHARDS: usize = 16;

/// Shared state of one server instance.
pub struct Hub {
    server_id: String,
    limits: Limits,
    rooms: Arc<Rooms>,
    store: Arc<dyn MessageStore>,
    backplane: Arc<dyn Backplane>,
    next_conn: AtomicU64,
    /// This instance's sessions: each connection's user and outbox.
    sessions: Box<[Mutex<Sessions>]>,
    /// Cluster-wide membership. Held while a join reply or a presence
    /// event is queued, so members see them in a consistent order; never
    /// on the message path.
    presence: Mutex<Presence>,
    /// The counters `/metrics` shows that no component keeps itself.
    metrics: crate::metrics::Metrics,
    /// This process's mark on its control messages (random, never 0): a
    /// control message with this `server_id` and another mark comes from a
    /// second process using the same id.
    incarnation: u64,
    /// When a failed control publish was last logged at warn (Unix ms), so
    /// a run of failures logs once per `CONTROL_WARN_EVERY`.
    control_warned_at_ms: AtomicU64,
    /// Read positions moved since the last announcement
    /// ([`receipts::run`] publishes them).
    receipts: receipts::Receipts,
    /// Where users becoming (or ceasing to be) members go for the webhook,
    /// when it sends joins or leaves.
    membership_feed: Option<MembershipFeed>,
    /// Whether this instance's readiness check passed last (set by the
    /// health watch; told to the others in heartbeats).
    ready: std::sync::atomic::AtomicBool,
    /// Rooms' latest sequences being read for joins: the joiners of one
    /// room asking at once share one read.
    latest_reads: coalesce::Coalesce<RoomName, Result<u64, String>>,
    /// Backlogs being read for resuming joiners (room, after, up to): the
    /// joiners of one room resuming from the same point share one read.
    backlog_reads: coalesce::Coalesce<BacklogKey, Result<Arc<[StoredMessage]>, String>>,
    /// Bounds the backlog reads running at once, so a storm of resumes
    /// leaves the store's connections to appends.
    backlog_permits: Arc<tokio::sync::Semaphore>,
    /// This instance's presence edges (a user's first connection here
    /// joined a room, or its last left) not yet told to the others, in
    /// order; queued under the presence lock, published once per tick.
    presence_out: Mutex<Vec<PresenceChange>>,
}

/// The hand-off of membership changes to the webhook's queue: the hub
/// never waits on the store for them (a full hand-off drops the change,
/// counted as `busy`).
pub struct MembershipFeed {
    /// Joins, leaves or both.
    pub capture: Capture,
    /// To the task that writes them to the store in batches.
    pub changes: tokio::sync::mpsc::Sender<MembershipChange>,
}

/// A backlog read: the room, after which sequence, up to which.
type BacklogKey = (RoomName, u64, u64);

/// One shard of the sessions: each connection's user id and outbox.
type Sessions = HashMap<ConnId, (Arc<str>, Outbox)>;

/// How often a run of failed control publishes is logged at warn at most
/// (every one is counted).
const CONTROL_WARN_EVERY: std::time::Duration = std::time::Duration::from_secs(10);

impl Hub {
    /// A hub over `rooms`, which `backplane` delivers into.
    pub fn new(
        server_id: String,
        limits: Limits,
        rooms: Arc<Rooms>,
        store: Arc<dyn MessageStore>,
        backplane: Arc<dyn Backplane>,
    ) -> Hub {
        Hub {
            server_id,
            limits,
            rooms,
            store,
            backplane,
            next_conn: AtomicU64::new(1),
            sessions: (0..SESSION_SHARDS).map(|_| Mutex::default()).collect(),
            presence: Mutex::default(),
            metrics: crate::metrics::Metrics::default(),
            incarnation: new_incarnation(),
            control_warned_at_ms: AtomicU64::new(0),
            receipts: receipts::Receipts::default(),
            membership_feed: None,
            ready: std::sync::atomic::AtomicBool::new(false),
            presence_out: Mutex::default(),
            latest_reads: coalesce::Coalesce::default(),
            backlog_reads: coalesce::Coalesce::default(),
            backlog_permits: Arc::new(tokio::sync::Semaphore::new(BACKLOG_READS)),
        }
    }

    /// Records whether this instance's readiness check passes.
    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::Relaxed);
    }

    /// Whether this instance's readiness check passed last.
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Relaxed)
    }

    /// The hub handing membership changes to `feed` (for the webhook).
    pub fn with_membership_feed(mut self, feed: MembershipFeed) -> Hub {
        self.membership_feed = Some(feed);
        self
    }

    /// Hands `user` joining (or leaving) `room` to the webhook's feed, if
    /// it takes that change; never waits.
    fn feed_membership(&self, room: &RoomName, user: &User, joined: bool) {
        let Some(feed) = &self.membership_feed else {
            return;
        };
        let wanted = if joined {
            Capture::JOIN
        } else {
            Capture::LEAVE
        };
        if !feed.capture.has(wanted) {
            return;
        }
        let change = MembershipChange {
            event_id: uuid::Uuid::now_v7().to_string(),
            room: room.clone(),
            user: user.clone(),
            joined,
            time_unix_ms: now_unix_ms(),
        };
        if feed.changes.try_send(change).is_err() {
            self.metrics
                .webhook
                .dropped
                .inc(crate::metrics::WebhookDrop::Busy);
        }
    }

    /// The hub with `incarnation` as its process's mark (the one the
    /// backplane stamps on room events).
    pub fn with_incarnation(mut self, incarnation: u64) -> Hub {
        self.incarnation = incarnation;
        self
    }

    /// This process's mark on its control messages (see [`Control`]).
    pub fn incarnation(&self) -> u64 {
        self.incarnation
    }

    /// This instance's id.
    pub fn server_id(&self) -> &str {
        &self.server_id
    }

    /// The other instances this one hears from: id, time since last
    /// heard, and `(connections, rooms)` from their last heartbeat.
    pub fn instances_seen(&self) -> Vec<(Arc<str>, std::time::Duration, presence::Load)> {
        lock(&self.presence).instances_seen(std::time::Instant::now())
    }

    /// The instance's metrics.
    pub fn metrics(&self) -> &crate::metrics::Metrics {
        &self.metrics
    }

    /// The per-client limits.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// The store.
    pub fn store(&self) -> &Arc<dyn MessageStore> {
        &self.store
    }

    /// The backplane.
    pub fn backplane(&self) -> &Arc<dyn Backplane> {
        &self.backplane
    }

    /// The rooms with local members.
    pub fn rooms(&self) -> &Rooms {
        &self.rooms
    }

    fn session_shard(&self, conn: ConnId) -> &Mutex<Sessions> {
        &self.sessions[conn as usize % self.sessions.len()]
    }

    /// Registers a new connection and returns its id.
    pub fn register(&self, user: Arc<str>, outbox: Outbox) -> ConnId {
        let conn = self.next_conn.fetch_add(1, Ordering::Relaxed);
        lock(self.session_shard(conn)).insert(conn, (user, outbox));
        conn
    }

    /// Forgets a connection (after it left its rooms).
    pub fn unregister(&self, conn: ConnId) {
        lock(self.session_shard(conn)).remove(&conn);
    }

    /// How many sessions are open on this instance.
    pub fn session_count(&self) -> usize {
        self.sessions.iter().map(|s| lock(s).len()).sum()
    }

    /// Queues `frame` for every session on this instance; returns how many
    /// received it.
    pub fn broadcast(&self, frame: &EncodedFrame) -> usize {
        let mut sent = 0;
        for shard in self.sessions.iter() {
            for (_, outbox) in lock(shard).values() {
                // Under the shard's lock: no socket is written here.
                sent += usize::from(outbox.queue(frame.clone()));
            }
        }
        sent
    }

    /// Tells the sessions of `direct`'s two users on this instance that
    /// their conversation is open (each hears of the other user); returns
    /// how many sessions heard.
    pub fn notify_direct(&self, direct: &Conversation) -> usize {
        let frames = direct.users.each_ref().map(|me| {
            EncodedFrame::from(Frame::DirectOpened(DirectConversation {
                room: direct.room.to_string(),
                peer: Some(member(direct.peer(&me.user_id))),
            }))
        });
        let mut sent = 0;
        for shard in self.sessions.iter() {
            for (user, outbox) in lock(shard).values() {
                if let Some(i) = direct.users.iter().position(|u| u.user_id == *user) {
                    sent += usize::from(outbox.queue(frames[i].clone()));
                }
            }
        }
        sent
    }

    /// Opens (or finds) `me`'s direct conversation with `peer`, and tells
    /// both users' sessions on every instance.
    pub async fn open_direct(&self, me: &User, peer: &str) -> Result<Conversation, RequestError> {
        let direct = self.store.open_direct(me, peer).await.map_err(|e| {
            tracing::warn!(error = %e, "open direct failed: store");
            RequestError::Unavailable(e.to_string())
        })?;
        self.metrics.directs_opened.fetch_add(1, Ordering::Relaxed);
        self.notify_direct(&direct);
        self.publish_control(ControlKind::DirectOpened(DirectOpened {
            room: direct.room.to_string(),
            user_ids: direct.users.iter().map(|u| u.user_id.to_string()).collect(),
            names: direct
                .users
                .iter()
                .map(|u| u.display_name.to_string())
                .collect(),
        }))
        .await;
        Ok(direct)
    }

    /// Ends the sessions of user `user_id` on this instance with a notice
    /// saying `reason`; returns how many.
    pub fn disconnect_local(&self, user_id: &str, reason: &str, reconnect: bool) -> usize {
        let notice = EncodedFrame::from(Frame::Disconnect(DisconnectNotice {
            reason: DisconnectReason::Disconnected as i32,
            message: reason.to_string(),
            reconnect_after_ms: 0,
            stay_disconnected: !reconnect,
        }));
        // Under the shard's lock: no socket is written here.
        self.each_session_of(user_id, |outbox| outbox.disconnect(notice.clone()))
    }

    /// Calls `f` with the outbox of each live session of user `user_id` on
    /// this instance, under its shard's lock; returns how many.
    fn each_session_of(&self, user_id: &str, mut f: impl FnMut(&Outbox)) -> usize {
        let mut count = 0;
        for shard in self.sessions.iter() {
            for (user, outbox) in lock(shard).values() {
                if **user == *user_id && !outbox.is_ended() {
                    f(outbox);
                    count += 1;
                }
            }
        }
        count
    }

    /// Ends every session of user `user_id`, on every instance, with a
    /// notice saying `reason` and whether their clients may `reconnect` on
    /// their own; returns how many ended here.
    pub async fn disconnect_user(&self, user_id: &str, reason: &str, reconnect: bool) -> usize {
        let ended = self.disconnect_local(user_id, reason, reconnect);
        self.publish_control(ControlKind::Disconnect(DisconnectUser {
            user_id: user_id.to_string(),
            reason: reason.to_string(),
            stay_disconnected: !reconnect,
        }))
        .await;
        ended
    }

    /// Tells the sessions of user `user_id` on this instance to leave
    /// `room` (those in it do, and their clients hear `reason`); returns
    /// how many were told.
    pub fn remove_local(&self, room: &RoomName, user_id: &str, reason: &str) -> usize {
        let reason: Arc<str> = Arc::from(reason);
        self.each_session_of(user_id, |outbox| outbox.remove_from(room, &reason))
    }

    /// Takes user `user_id` out of `room` on every instance, telling them
    /// `reason`; returns how many sessions here were told.
    pub async fn remove_member(&self, room: &RoomName, user_id: &str, reason: &str) -> usize {
        let told = self.remove_local(room, user_id, reason);
        self.publish_control(ControlKind::Remove(RemoveMember {
            room: room.to_string(),
            user_id: user_id.to_string(),
            reason: reason.to_string(),
        }))
        .await;
        told
    }

    /// Bars user `user_id` from `room` under `ban` (stored first, so their
    /// joins are refused from now on everywhere), then takes them out of it
    /// on every instance; returns whether a ban was in force before and how
    /// many of their sessions here were told to leave.
    pub async fn ban(
        &self,
        room: &RoomName,
        user_id: &str,
        ban: Ban,
    ) -> Result<(bool, usize), RequestError> {
        let reason = ban.reason.clone();
        let before = self
            .store
            .set_ban(room, user_id, Some(ban))
            .await
            .map_err(|e| {
                tracing::warn!(error = %e, "ban failed: store");
                RequestError::Unavailable(e.to_string())
            })?;
        let told = self.remove_member(room, user_id, &reason).await;
        Ok((before, told))
    }

    /// Lifts user `user_id`'s ban from `room`; whether one was in force.
    pub async fn lift_ban(&self, room: &RoomName, user_id: &str) -> Result<bool, RequestError> {
        self.store.set_ban(room, user_id, None).await.map_err(|e| {
            tracing::warn!(error = %e, "lifting a ban failed: store");
            RequestError::Unavailable(e.to_string())
        })
    }

    /// The ban on `user` in `room` in force now, if the store says so within
    /// [`READ_STATE_WAIT`] (a join does not wait longer; one the store
    /// cannot answer is let through, and logged).
    pub async fn ban_of(&self, room: &RoomName, user: &User) -> Option<Ban> {
        let asked = self.store.ban(room, &user.user_id, now_unix_ms());
        match tokio::time::timeout(READ_STATE_WAIT, asked).await {
            Ok(Ok(ban)) => ban,
            Ok(Err(e)) => {
                tracing::warn!(%room, error = %e, "ban check skipped: store");
                None
            }
            Err(_) => {
                tracing::warn!(%room, "ban check skipped: the store did not answer in time");
                None
            }
        }
    }

    /// A user's rooms with members anywhere (by name), and the instances
    /// where they are in one.
    pub fn user_presence(&self, user_id: &str) -> (Vec<RoomName>, Vec<Arc<str>>) {
        lock(&self.presence).user(user_id, self.server_id())
    }

    /// How many sessions user `user_id` has on this instance.
    pub fn sessions_of(&self, user_id: &str) -> usize {
        self.each_session_of(user_id, |_| {})
    }

    /// Sends `text` as a notification to every client of this instance.
    pub fn notify_local(&self, text: &str) -> usize {
        // Encoded once; every session gets the same bytes.
        let frame = EncodedFrame::from(Frame::Notification(Notification {
            text: text.to_string(),
            server_time_unix_ms: now_unix_ms(),
        }));
        self.broadcast(&frame)
    }

    /// An operator's broadcast: every client of every instance receives
    /// `text` once. Returns how many clients of this instance got it.
    pub async fn operator_broadcast(&self, text: &str) -> usize {
        let sent = self.notify_local(text);
        self.publish_control(ControlKind::Broadcast(Broadcast {
            text: text.to_string(),
        }))
        .await;
        sent
    }

    /// Joins connection `conn` of `user` to `room`: subscribes the
    /// backplane if the room is new here; when resuming (`since`), reads
    /// the messages after `since` from the store; then queues the reply
    /// built by `reply(members, join)`, the backlog, and the live frames
    /// that arrived meanwhile, in that order. Announces the user if they
    /// just became a member (after their reply), and tells the other
    /// instances if this is their first connection here.
    pub async fn join(
        &self,
        room: &RoomName,
        conn: ConnId,
        user: &User,
        outbox: Outbox,
        since: Option<u64>,
        reply: impl FnOnce(&MemberPage, &JoinInfo) -> EncodedFrame,
    ) -> Result<(), RequestError> {
        let unavailable = |what: &str, e: String| {
            tracing::warn!(%room, error = %e, "join failed: {what}");
            RequestError::Unavailable(e)
        };
        // The previous joins' backlogs are read first (all but a little): a
        // client that does not read holds one backlog at most, and one that
        // reads, however slowly, is never kicked for what it asked to catch
        // up on.
        if !outbox.burst_read(BURST_STALL).await {
            outbox.push_overflowed();
            return Err(RequestError::Unavailable(
                "the previous join's backlog is not being read".into(),
            ));
        }
        // A room this instance serves in order knows where it stands: a
        // fresh join, or a resume from no further than that, needs no store
        // read (a storm of rejoins then costs the store nothing). Otherwise
        // the store says, and a resume point beyond it is a reset.
        let served = match self.rooms.is_ordered() {
            true => self.rooms.delivered(room),
            false => None,
        };
        let latest = match served {
            Some(delivered) if since.is_none_or(|s| s <= delivered) => delivered,
            _ => {
                let store = self.store.clone();
                let read = room.clone();
                let (latest, asked) = self
                    .latest_reads
                    .get(room.clone(), move || async move {
                        store
                            .latest_sequence(&read)
                            .await
                            .map_err(|e| e.to_string())
                    })
                    .await;
                if asked {
                    self.count_join_query(JoinQuery::LatestSequence);
                }
                let latest = latest.map_err(|e| unavailable("store", e))?;
                match since {
                    // A read shared with others may have started before a
                    // message this client has seen was stored: a resume
                    // point beyond it is asked again before it counts as
                    // a reset.
                    Some(s) if !asked && s > latest => {
                        self.count_join_query(JoinQuery::LatestSequence);
                        self.store
                            .latest_sequence(room)
                            .await
                            .map_err(|e| unavailable("store", e.to_string()))?
                    }
                    _ => latest,
                }
            }
        };
        // The client saw messages the store does not have: the room's
        // numbering went back (a store that restarted empty, a database
        // restored from a backup). Its numbers say nothing about what it
        // has now, so it resumes from 0, and the reply says so. Unordered
        // (per-instance stores) a client's numbers come from several
        // stores and are routinely above this one's: that is no reset, and
        // calling it one would make clients drop what they hold.
        let reset = self.rooms.is_ordered() && since.is_some_and(|s| s > latest);
        let since = if reset { Some(0) } else { since };
        let (created, delivered) =
            self.rooms
                .begin_join(room, conn, &user.user_id, outbox.clone(), latest);
        let prepared = async {
            if created {
                self.backplane
                    .subscribe(room)
                    .await
                    .map_err(|e| unavailable("backplane subscribe", e.to_string()))?;
                // A message published before the subscription took hold is
                // in the store: the repair task fetches it.
                self.rooms.request_repair(room);
            }
            let (mut info, backlog) = self.backlog(room, since, delivered).await?;
            info.sequence_reset = reset;
            Ok((info, backlog))
        };
        let (info, backlog) = match prepared.await {
            Ok(prepared) => prepared,
            Err(e) => {
                if self.rooms.leave(room, conn) == Some(true) {
                    let _ = self.backplane.unsubscribe(room).await;
                }
                return Err(e);
            }
        };
        {
            let mut presence = lock(&self.presence);
            let change = presence.local_join(room, user);
            let mut first = Vec::with_capacity(backlog.len() + 1);
            let page = presence.member_page(room, None, members::JOIN_PAGE);
            first.push(reply(&page, &info));
            first.extend(backlog);
            // A client resuming from beyond what this instance delivered
            // (it saw more elsewhere) must not get those messages again.
            // Unordered (per-instance stores), numbers from elsewhere say
            // nothing about this instance's: nothing is withheld.
            let seen = match self.rooms.is_ordered() {
                true => since.filter(|s| *s > delivered).unwrap_or(0),
                false => 0,
            };
            self.rooms.finish_join(room, conn, first, seen);
            if change.transition {
                presence.note(&Transition::Joined(room.clone(), user.clone()));
                // This instance made the user a member: it tells the webhook.
                if change.edge {
                    self.feed_membership(room, user, true);
                }
            }
            if change.edge {
                // Under the presence lock: the edges go out in order.
                self.queue_presence(room, user, true);
            }
        }
        self.metrics.joins.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// Counts a store statement a join issued.
    fn count_join_query(&self, query: JoinQuery) {
        self.metrics.join_store_queries.inc(query);
    }

    /// The messages a resuming joiner missed: those after `since` up to
    /// `delivered` (later ones reach it live), at most `RESUME_LIMIT` (the
    /// latest ones).
    async fn backlog(
        &self,
        room: &RoomName,
        since: Option<u64>,
        delivered: u64,
    ) -> Result<(JoinInfo, Vec<EncodedFrame>), RequestError> {
        let mut info = JoinInfo {
            latest_sequence: delivered,
            backlog_after: delivered,
            backlog_incomplete: false,
            sequence_reset: false,
        };
        let Some(since) = since else {
            return Ok((info, Vec::new()));
        };
        let since = since.min(delivered);
        let from = since.max(delivered.saturating_sub(RESUME_LIMIT));
        let page = Page {
            direction: Direction::Forward,
            from,
            limit: (delivered - from) as usize,
        };
        let messages: Arc<[StoredMessage]> = if page.limit == 0 {
            Arc::from([])
        } else {
            let key = (room.clone(), from, delivered);
            let (store, read) = (self.store.clone(), room.clone());
            let permits = self.backlog_permits.clone();
            let (messages, asked) = self
                .backlog_reads
                .get(key, move || async move {
                    let _permit = permits.acquire_owned().await;
                    store
                        .history(&read, page)
                        .await
                        .map(Arc::from)
                        .map_err(|e| e.to_string())
                })
                .await;
            if asked {
                self.count_join_query(JoinQuery::Backlog);
            }
            messages.map_err(|e| {
                tracing::warn!(%room, error = %e, "resume failed: store");
                RequestError::Unavailable(e)
            })?
        };
        let messages: Vec<&StoredMessage> = messages
            .iter()
            .filter(|m| m.sequence <= delivered)
            .collect();
        info.backlog_after = match messages.first() {
            Some(first) => first.sequence - 1,
            None => delivered,
        };
        info.backlog_incomplete = info.backlog_after > since;
        let frames = messages
            .into_iter()
            .map(|m| EncodedFrame::from(Frame::Message(message_event(m))))
            .collect();
        Ok((info, frames))
    }

    /// Removes connection `conn` of `user` from `room`; announces the user's
    /// departure if they are no longer a member anywhere. Returns false if
    /// the connection was not in the room.
    pub async fn leave(&self, room: &RoomName, conn: ConnId, user: &User) -> bool {
        let Some(removed) = self.rooms.leave(room, conn) else {
            return false;
        };
        {
            let mut presence = lock(&self.presence);
            let change = presence.local_leave(room, &user.user_id);
            if change.transition {
                presence.note(&Transition::Left(room.clone(), user.clone()));
                if change.edge {
                    self.feed_membership(room, user, false);
                }
            }
            if change.edge {
                self.queue_presence(room, user, false);
            }
        }
        if removed && let Err(e) = self.backplane.unsubscribe(room).await {
            tracing::warn!(%room, error = %e, "backplane unsubscribe failed");
        }
        true
    }

    /// The room's members across the cluster, each user once, all of them
    /// (for tests and checks; clients and the API read pages).
    pub fn members(&self, room: &RoomName) -> Vec<User> {
        lock(&self.presence).members(room)
    }

    /// A page of the room's members across the cluster, each user once:
    /// those after `after` (from the first when `None`), at most `limit`.
    pub fn member_page(
        &self,
        room: &RoomName,
        after: Option<&MemberCursor>,
        limit: usize,
    ) -> MemberPage {
        lock(&self.presence).member_page(room, after, limit)
    }

    /// Rooms with members across the cluster, by name after `after`, the
    /// first `limit`, with their member counts.
    pub fn room_counts(&self, after: Option<&str>, limit: usize) -> Vec<(RoomName, usize)> {
        lock(&self.presence).room_counts(after, limit)
    }

    /// Applies `change` to the presence table and notes every resulting
    /// transition for the next presence tick ([`members::run`] tells local
    /// members).
    pub fn update_presence<T>(
        &self,
        change: impl FnOnce(&mut Presence) -> (T, Vec<Transition>),
    ) -> T {
        let mut presence = lock(&self.presence);
        let (result, transitions) = change(&mut presence);
        for t in &transitions {
            presence.note(t);
        }
        result
    }

    /// Every (room, user) with a connection here, for snapshots.
    pub fn local_presence(&self) -> Vec<(RoomName, User)> {
        lock(&self.presence).local_entries()
    }

    /// Queues, for the next presence tick, telling the other instances that
    /// `user` arrived in or left `room` here ([`members::run`] publishes a
    /// tick's changes in one control message).
    fn queue_presence(&self, room: &RoomName, user: &User, present: bool) {
        lock(&self.presence_out).push(PresenceChange {
            entry: Some(PresenceEntry {
                room: room.to_string(),
                user_id: user.user_id.to_string(),
                display_name: user.display_name.to_string(),
            }),
            present,
        });
    }

    /// Sends a control message to the other instances. A failure is
    /// counted, and logged at warn (at most every `CONTROL_WARN_EVERY`)
    /// unless the backplane is down, which is logged as an outage: the
    /// presence digests repair what it leaves out of step.
    pub async fn publish_control(&self, kind: ControlKind) {
        let control = Control::new(&self.server_id, self.incarnation, kind);
        let Err(e) = self.backplane.publish_control(control.to_bytes()).await else {
            return;
        };
        self.metrics
            .control_publish_failed
            .fetch_add(1, Ordering::Relaxed);
        let now = now_unix_ms().max(0) as u64;
        let last = self.control_warned_at_ms.load(Ordering::Relaxed);
        let due = now.saturating_sub(last) >= CONTROL_WARN_EVERY.as_millis() as u64;
        if self.backplane.is_healthy()
            && due
            && self
                .control_warned_at_ms
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            tracing::warn!(error = %e, "control message not published (presence is repaired from the digests)");
        } else {
            tracing::debug!(error = %e, "control message not published");
        }
    }

    /// Stores `message` (which assigns its sequence), then publishes it once.
    /// The caller must be a member of the room.
    pub async fn send(&self, message: NewMessage) -> Result<StoredMessage, RequestError> {
        self.sequence_and_publish(message, Sender::Member).await
    }

    /// Stores a message from the server API (a bot or the system, members
    /// of no room) and publishes it once, like a member's send; in order
    /// with this instance's other publishes to the room when it has
    /// members here (elsewhere, ordered delivery puts it in sequence).
    pub async fn post(&self, message: NewMessage) -> Result<StoredMessage, RequestError> {
        self.sequence_and_publish(message, Sender::Application)
            .await
    }

    /// [`Hub::send`] from a connection that said its user is typing in the
    /// room: the published message also tells every instance the sender
    /// stopped, without a publish of its own.
    pub async fn send_ending_typing(
        &self,
        message: NewMessage,
    ) -> Result<StoredMessage, RequestError> {
        self.sequence_and_publish(message, Sender::Typist).await
    }

    /// Stores `change` (an edit or a delete, which the store checks and
    /// applies to its message) as the room's next event, then publishes it
    /// once, like a message. `operator`: may delete others' messages. The
    /// caller must be a member of the room.
    pub async fn change(
        &self,
        change: NewMessage,
        operator: bool,
    ) -> Result<StoredMessage, RequestError> {
        let sender = if operator {
            Sender::Operator
        } else {
            Sender::Member
        };
        self.sequence_and_publish(change, sender).await
    }

    async fn sequence_and_publish(
        &self,
        message: NewMessage,
        sender: Sender,
    ) -> Result<StoredMessage, RequestError> {
        let room = self.rooms.get(&message.room);
        if room.is_none() && sender != Sender::Application {
            return Err(RequestError::NotAMember(message.room.to_string()));
        }
        // Sequencing and publishing under one per-room lock keeps the
        // room's publications in sequence order.
        let _ordered = match &room {
            Some(room) => Some(room.send_lock.lock().await),
            None => None,
        };
        let operator = sender == Sender::Operator;
        let ends_typing = sender == Sender::Typist;
        let started = std::time::Instant::now();
        let kind = message.kind;
        // For a refusal's message only (a reference count, not a copy).
        let room_name = message.room.clone();
        let reaction = kind.is_reaction().then(|| message.text.clone());
        let stored = match kind {
            Kind::Message => {
                self.store
                    .append(message)
                    .instrument(trace::step_span("store.append"))
                    .await
            }
            Kind::Edit(_) | Kind::Delete(_) | Kind::ReactionAdded(_) | Kind::ReactionRemoved(_) => {
                self.store
                    .change(message, operator)
                    .instrument(trace::step_span("store.change"))
                    .await
            }
        };
        let appended = stored.map_err(|e| match e {
            StoreError::MessageNotFound(sequence) => RequestError::MessageNotFound {
                room: room_name.to_string(),
                sequence,
            },
            StoreError::NotTheAuthor(sequence) => RequestError::NotTheAuthor {
                room: room_name.to_string(),
                sequence,
            },
            StoreError::TooManyReactions(sequence) => RequestError::TooManyReactions {
                room: room_name.to_string(),
                sequence,
            },
            e => {
                tracing::warn!(error = %e, "send failed: store");
                RequestError::Unavailable(e.to_string())
            }
        })?;
        self.metrics.store_append.observe(started.elapsed());
        let stored = appended.message;
        // A retry is the same request: the same id naming another kind of
        // event (a send's id reused for an edit, another reaction) is the
        // client's mistake, and must not be answered or republished as if
        // it were this one.
        if appended.duplicate
            && (stored.message.kind != kind
                || reaction.is_some_and(|emoji| emoji != stored.message.text))
        {
            return Err(RequestError::InvalidArgument(format!(
                "client_message_id {:?} already names sequence {} of room {}, another request",
                stored.message.client_message_id, stored.sequence, stored.message.room
            )));
        }
        if appended.duplicate {
            // A retried send: the retry gets the original acknowledgement.
            // Whether the original was published is unknown (an error can
            // surface after the store kept it, before the publish). Ordered,
            // every instance drops a sequence it has delivered, so it is
            // published again; unordered nothing could drop the copy, so it
            // is not (the documented cost of per-instance stores).
            if !self.rooms.is_ordered() {
                return Ok(stored);
            }
        } else {
            let counter = match kind {
                Kind::Message => &self.metrics.messages_received,
                Kind::Edit(_) => &self.metrics.messages_edited,
                Kind::Delete(_) => &self.metrics.messages_deleted,
                Kind::ReactionAdded(_) | Kind::ReactionRemoved(_) => &self.metrics.reactions,
            };
            counter.fetch_add(1, Ordering::Relaxed);
        }
        let m = &stored.message;
        let event = Frame::Message(message_event(&stored));
        // Local members get it inside the publish, so its span covers both.
        let publishing = trace::step_span("backplane.publish");
        let frame = RoomFrame {
            room: m.room.clone(),
            sequence: Some(stored.sequence),
            frame: EncodedFrame::from(event),
            acked_at_unix_us: chat_util::now_unix_us(),
            trace: TraceParent::of(&publishing),
            typing: ends_typing.then(|| TypingNote {
                user: m.sender.clone(),
                typing: false,
            }),
        };
        // The message is stored and local members have it; a failed publish
        // loses only the copy to other instances. The backplane logs the
        // outage once and counts the failures.
        if let Err(e) = self.backplane.publish(frame).instrument(publishing).await {
            tracing::debug!(room = %m.room, sequence = stored.sequence, error = %e, "message not published");
        }
        Ok(stored)
    }
}

impl Hub {
    /// Tells every instance that `user` is typing in `room` (or stopped);
    /// each instance's rooms tell their members, coalesced (`typing`).
    /// Ephemeral: nothing is stored or numbered, and a backplane that is
    /// away costs only the other instances' copy.
    pub async fn typing(&self, room: &RoomName, user: &User, typing: bool) {
        let frame = RoomFrame {
            room: room.clone(),
            sequence: None,
            frame: EncodedFrame(bytes::Bytes::new()),
            acked_at_unix_us: 0,
            trace: None,
            typing: Some(TypingNote {
                user: user.clone(),
                typing,
            }),
        };
        if let Err(e) = self.backplane.publish(frame).await {
            tracing::debug!(%room, error = %e, "typing not published");
        }
    }
}

impl Hub {
    /// Moves `user`'s read position in `room` up to `sequence` (the store
    /// clamps it and never moves it back) and gathers it for the next
    /// announcement to the room; returns the state after.
    pub async fn mark_read(
        &self,
        room: &RoomName,
        user: &User,
        sequence: u64,
    ) -> Result<ReadState, RequestError> {
        let state = self
            .store
            .mark_read(room, &user.user_id, sequence)
            .await
            .map_err(|e| {
                tracing::warn!(error = %e, "mark read failed: store");
                RequestError::Unavailable(e.to_string())
            })?;
        self.metrics.read_marks.fetch_add(1, Ordering::Relaxed);
        self.receipts.note(room, user, state.read_sequence);
        Ok(state)
    }

    /// What a join needs of the store, in one query: `user`'s read state
    /// in `room` and the ban on them there, if any. A query that fails or
    /// takes longer than [`READ_STATE_WAIT`] gives no read state (zeros),
    /// and the ban is then asked alone ([`Hub::ban_of`]: the join goes
    /// ahead unchecked only if that fails too, logged).
    pub async fn join_state(
        &self,
        room: &RoomName,
        user: &User,
    ) -> (Option<ReadState>, Option<Ban>) {
        // A store that batches them counts its statements itself.
        if self.store.join_batches().is_none() {
            self.count_join_query(JoinQuery::JoinState);
        }
        let asked = self.store.join_state(room, &user.user_id, now_unix_ms());
        match tokio::time::timeout(READ_STATE_WAIT, asked).await {
            Ok(Ok((state, ban))) => (Some(state), ban),
            Ok(Err(e)) => {
                tracing::debug!(%room, error = %e, "read state unavailable; the ban alone");
                (None, self.ban_of(room, user).await)
            }
            // The unread count may be what is slow: the ban alone is a
            // key lookup, asked on its own before the join goes ahead.
            Err(_) => (None, self.ban_of(room, user).await),
        }
    }
}

/// The longest reason a user's sessions are ended with, in bytes.
pub const MAX_DISCONNECT_REASON_BYTES: usize = 512;

/// Who a numbered event comes from, where storing or publishing it differs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Sender {
    /// A member of the room (its connection is in it here).
    Member,
    /// A member whose connection said it is typing there: the published
    /// message also ends its typing.
    Typist,
    /// An operator: may delete others' messages.
    Operator,
    /// An application through the server API: in no room.
    Application,
}

/// How long a join waits for the joiner's read state at most.
pub const READ_STATE_WAIT: std::time::Duration = std::time::Duration::from_secs(1);

/// A fresh process mark: random, never 0 (0 means "a sender that
/// predates marks").
pub fn new_incarnation() -> u64 {
    uuid::Uuid::new_v4().as_u64_pair().0 | 1
}

#[cfg(test)]
mod tests;

/// Most messages a resuming joiner receives; beyond, the latest ones.
pub const RESUME_LIMIT: u64 = 1000;

/// How long a join waits, while the connection reads nothing at all, for
/// the previous join's backlog to be read before the connection is cut off
/// as a slow consumer.
const BURST_STALL: std::time::Duration = std::time::Duration::from_secs(10);

/// Backlog reads running at once at most (identical ones share a read):
/// a storm of resumes holds this many store connections, and appends keep
/// the rest.
const BACKLOG_READS: usize = 4;

/// What a join reply says about sequences.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct JoinInfo {
    /// Live messages after this one follow.
    pub latest_sequence: u64,
    /// The backlog holds the messages after this one (resume only).
    pub backlog_after: u64,
    /// Some messages after `since` are not in the backlog.
    pub backlog_incomplete: bool,
    /// `since` was above the store's latest: the numbering went back, and
    /// the join resumed from 0.
    pub sequence_reset: bool,
}

/// The wire form of a stored message.
pub fn message_event(stored: &StoredMessage) -> MessageEvent {
    let m = &stored.message;
    MessageEvent {
        message_id: stored.id.clone(),
        room: m.room.to_string(),
        sequence: stored.sequence,
        sender: Some(member(&m.sender)),
        text: m.text.clone(),
        server_time_unix_ms: stored.time_unix_ms,
        client_message_id: m.client_message_id.clone(),
        kind: match m.kind {
            Kind::Message => MessageKind::Message,
            Kind::Edit(_) => MessageKind::Edit,
            Kind::Delete(_) => MessageKind::Delete,
            Kind::ReactionAdded(_) => MessageKind::ReactionAdded,
            Kind::ReactionRemoved(_) => MessageKind::ReactionRemoved,
        } as i32,
        target_sequence: m.kind.target(),
        edited_at_unix_ms: stored.edited_at_ms,
        edited_sequence: stored.edited_sequence,
        deleted: stored.deleted,
        reactions: stored
            .reactions
            .iter()
            .map(|r| Reaction {
                emoji: r.emoji.clone(),
                count: r.count,
                members: r.users.iter().map(member).collect(),
            })
            .collect(),
    }
}

/// The wire form of a user.
pub fn member(user: &User) -> Member {
    Member {
        user_id: user.user_id.to_string(),
        display_name: user.display_name.to_string(),
    }
}
