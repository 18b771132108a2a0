//! What a client observes: server events and its own connection changes.

use crate::error::ClientError;
use chat_proto::v1::{
    DirectConversation, DisconnectNotice, JoinRoomResult, MemberJoined, MemberLeft, MembersChanged,
    MessageEvent, Notification, ReadReceipts, RemovedFromRoom, Typing, Welcome,
};
use std::time::Duration;
use tokio::sync::mpsc;

/// One thing that happened, in the order it happened.
#[derive(Debug, Clone)]
pub enum Event {
    /// A session is open (the first time, or again after a reconnect).
    /// Rooms are rejoined right after; each gives a [`Event::Rejoined`].
    Connected(Welcome),
    /// A room the client was in was joined again on a new session, or
    /// could not be. A rejoin with no reply in time is reported as a
    /// `Timeout` failure and asked again; if its late reply then says it
    /// happened, that comes as a second `Rejoined` with `Ok` (the repeated
    /// ask's `ALREADY_A_MEMBER` is not reported).
    Rejoined {
        /// The room.
        room: String,
        /// The join's outcome.
        result: Result<JoinRoomResult, ClientError>,
    },
    /// A numbered event in one of the client's rooms: a message, or an
    /// edit or a delete of an earlier one (`kind`, `target_sequence`).
    Message(MessageEvent),
    /// Members of one of the client's rooms changed: who joined and who
    /// left since the room's previous such event (coalesced by the server,
    /// per room: at once when quiet, then at most one a second). Apply as
    /// set operations: a user listed that
    /// the room's list already has (or lacks) changes nothing.
    MembersChanged(MembersChanged),
    /// Someone joined one of the client's rooms (from a server older than
    /// [`Event::MembersChanged`]).
    MemberJoined(MemberJoined),
    /// Someone left one of the client's rooms (from an older server).
    MemberLeft(MemberLeft),
    /// A server notification.
    Notification(Notification),
    /// Another member of one of the client's rooms is typing, or stopped
    /// (ephemeral: show it until `typing` is false, their message arrives,
    /// or `expires_after_ms` pass without a repeat).
    Typing(Typing),
    /// Members of one of the client's rooms (this user too, from another
    /// session) have read it up to these sequences (coalesced: about one a
    /// second per room).
    ReadReceipts(ReadReceipts),
    /// A direct conversation of this user was opened (by either user, from
    /// any session). With [`crate::ClientConfig::join_direct`] (the
    /// default) the client joins its room.
    DirectOpened(DirectConversation),
    /// An application removed this user from one of the client's rooms
    /// (server API): the client is no longer in it and does not rejoin it.
    Removed(RemovedFromRoom),
    /// The session ended.
    Disconnected {
        /// The server's notice, if it sent one before closing.
        notice: Option<DisconnectNotice>,
        /// What ended it, in words.
        reason: String,
    },
    /// A connection attempt failed or a session ended; the next attempt
    /// follows after `delay`.
    Reconnecting {
        /// Attempt number since the last successful session, from 1.
        attempt: u32,
        /// Wait before the attempt.
        delay: Duration,
        /// Why the previous attempt or session ended.
        error: String,
    },
    /// The client stopped for good: the server refused its credentials
    /// (`UNAUTHENTICATED`) for a reason the same token keeps (missing,
    /// malformed, expired, bad signature, wrong issuer or audience, …; not
    /// an unknown key or a `nbf` ahead, which may pass) and it has no way
    /// to get others (no token, or a [`crate::TokenProvider::fixed`] one).
    /// Also sent when the server ended the session for good
    /// (`DisconnectNotice.stay_disconnected`: an application's disconnect),
    /// with the notice's message. The last event.
    Stopped {
        /// The server's refusal, or the notice's message, in words.
        reason: String,
    },
}

/// The client's events, in order. Ends when the client is closed.
#[derive(Debug)]
pub struct Events {
    pub(crate) rx: mpsc::Receiver<Event>,
}

impl Events {
    /// The next event; `None` once the client is closed.
    pub async fn next(&mut self) -> Option<Event> {
        self.rx.recv().await
    }
}
