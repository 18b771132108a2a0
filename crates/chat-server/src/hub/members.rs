//! Presence events, coalesced per room: the presence table notes every
//! membership change, and every tick each room with changes sends its
//! local connections one `MembersChanged` frame listing who joined and
//! who left (each as they are at the tick): at the next tick when the room
//! was quiet, then at most once per [`GAP`]. A storm of joins then costs
//! each member a frame a second per room, not one per joiner, and the frames are
//! built under the presence lock, so they keep their order with join
//! replies: a member's list (its join reply, then these frames) ends equal
//! to the room's once changes stop.
//!
//! Also the sizes of member pages: what a join reply lists, and what a
//! `ListMembers` request may ask.

use super::outbox::Deferred;
use super::presence::{MemberCursor, MemberPage};
use super::{Hub, Outbox, member};
use crate::backplane::control::{ControlKind, PresenceChanges};
use crate::domain::RequestError;
use crate::domain::validate::RoomName;
use chat_proto::EncodedFrame;
use chat_proto::v1::{ListMembersResult, MembersChanged, server_frame::Frame};
use chat_util::lock;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// How often rooms' changes are gathered: a change in a quiet room is told
/// this late at most (beside the tick's own work).
pub const TICK: Duration = Duration::from_millis(100);

/// How often one room's members are told of its changes at most: a room
/// in a storm of joins (or leaves) costs each member one frame per gap.
pub const GAP: Duration = Duration::from_secs(1);

/// Most users one `MembersChanged` frame lists; more changes in one tick
/// go in several frames.
pub const MAX_LISTED: usize = 500;

/// Members a join reply lists (the first page): a handful to show at once;
/// a client that shows more asks for pages. Every member listed costs
/// every join, so a storm of joins into big rooms pays for each one.
pub const JOIN_PAGE: usize = 20;

/// Members a `ListMembers` page lists when the request names no limit.
pub const DEFAULT_PAGE: usize = 100;

/// The most members a `ListMembers` page lists.
pub const MAX_PAGE: usize = 1000;

/// A page of `room`'s members as a `ListMembers` answer carries it.
pub fn list_result(room: &str, page: &MemberPage) -> ListMembersResult {
    ListMembersResult {
        room: room.to_string(),
        members: page.members.iter().map(member).collect(),
        next_page: page.next_page(),
        member_count: page.member_count(),
    }
}

/// Reads a page request's cursor (empty: the first page) and limit (0:
/// [`DEFAULT_PAGE`]); a cursor that is not one, or a limit above
/// [`MAX_PAGE`], is refused.
pub fn page_request(
    page_after: &str,
    limit: usize,
) -> Result<(Option<MemberCursor>, usize), RequestError> {
    let after = match page_after {
        "" => None,
        text => Some(MemberCursor::parse(text).ok_or_else(|| {
            RequestError::InvalidArgument("page_after is not a member page's cursor".into())
        })?),
    };
    let limit = match limit {
        0 => DEFAULT_PAGE,
        n if n > MAX_PAGE => {
            return Err(RequestError::InvalidArgument(format!(
                "a member page lists at most {MAX_PAGE} members"
            )));
        }
        n => n,
    };
    Ok((after, limit))
}

impl Hub {
    /// Queues on `outbox` the frame `reply` builds from a page of `room`'s
    /// members (after `after`, at most `limit`), under the presence lock:
    /// the presence frames queued before it are changes the page shows,
    /// the ones after it changes it does not.
    pub fn queue_member_page(
        &self,
        room: &RoomName,
        after: Option<&MemberCursor>,
        limit: usize,
        outbox: &Outbox,
        reply: impl FnOnce(&MemberPage) -> EncodedFrame,
    ) {
        let mut writes = Deferred::default();
        let presence = lock(&self.presence);
        let page = presence.member_page(room, after, limit);
        outbox.push_deferred(reply(&page), &mut writes);
        drop(presence);
        // The socket is written once the lock is let go.
        drop(writes);
    }

    /// Tells each room's local connections of the membership changes
    /// since the last call, one frame per room (per [`MAX_LISTED`] users);
    /// returns how many frames were queued for connections.
    pub fn flush_presence(&self) -> u64 {
        let mut presence = lock(&self.presence);
        let changes = presence.take_changes(std::time::Instant::now(), GAP);
        let mut queued = 0;
        for change in changes {
            let count = u32::try_from(change.count).unwrap_or(u32::MAX);
            let mut joined = change.joined.chunks(MAX_LISTED);
            let mut left = change.left.chunks(MAX_LISTED);
            loop {
                let (j, l) = (joined.next(), left.next());
                if j.is_none() && l.is_none() {
                    break;
                }
                let frame = Frame::MembersChanged(MembersChanged {
                    room: change.room.to_string(),
                    joined: j.unwrap_or_default().iter().map(member).collect(),
                    left: l.unwrap_or_default().iter().map(member).collect(),
                    member_count: count,
                });
                // Under the presence lock (the order with join replies);
                // no socket is written here.
                queued += self
                    .rooms
                    .deliver_presence(&change.room, &EncodedFrame::from(frame));
            }
        }
        drop(presence);
        self.metrics
            .presence_frames
            .fetch_add(queued, Ordering::Relaxed);
        queued
    }
}

impl Hub {
    /// Tells the other instances of this instance's presence edges since
    /// the last call, in order, [`MAX_LISTED`] per control message; returns
    /// how many.
    pub async fn publish_presence(&self) -> usize {
        let edges = std::mem::take(&mut *lock(&self.presence_out));
        let count = edges.len();
        // Bounded in changes and in bytes (half what the backplane takes:
        // room for the envelope).
        let max_bytes = self.backplane.max_control_bytes() / 2;
        let (mut changes, mut bytes) = (Vec::new(), 0);
        for edge in edges {
            let size = prost::Message::encoded_len(&edge) + 4;
            if !changes.is_empty() && (changes.len() >= MAX_LISTED || bytes + size > max_bytes) {
                let full = std::mem::take(&mut changes);
                self.publish_control(ControlKind::PresenceBatch(PresenceChanges {
                    changes: full,
                }))
                .await;
                bytes = 0;
            }
            bytes += size;
            changes.push(edge);
        }
        if !changes.is_empty() {
            self.publish_control(ControlKind::PresenceBatch(PresenceChanges { changes }))
                .await;
        }
        count
    }
}

/// Every `tick`: tells rooms of their membership changes, and the other
/// instances of this one's. After `shutdown` it goes on while sessions are
/// still here (each leaves its rooms as it says goodbye, and the other
/// instances must hear of it), at most [`STOPPING_TICKS`] ticks, then
/// once more.
pub async fn run(hub: Arc<Hub>, tick: Duration, shutdown: CancellationToken) {
    let mut ticks = tokio::time::interval(tick);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let stopping = tokio::select! {
            _ = shutdown.cancelled() => true,
            _ = ticks.tick() => false,
        };
        hub.flush_presence();
        hub.publish_presence().await;
        if stopping {
            break;
        }
    }
    for _ in 0..STOPPING_TICKS {
        if hub.session_count() == 0 {
            break;
        }
        ticks.tick().await;
        hub.flush_presence();
        hub.publish_presence().await;
    }
    hub.flush_presence();
    hub.publish_presence().await;
}

/// Ticks a stopping instance goes on for at most while its sessions leave
/// (the drain's own timeout ends it sooner).
const STOPPING_TICKS: u32 = 600;
