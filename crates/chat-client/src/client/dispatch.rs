//! Routing the server's frames: each reply to the request waiting for it
//! (a rejoin's also reported as [`Event::Rejoined`]), everything else to
//! the application as an [`Event`].

use super::rejoin::retryable;
use super::{Client, Inner, Join, to_result};
use crate::error::ClientError;
use crate::event::Event;
use chat_proto::v1::{
    ErrorCode, JoinRoomResult, MessageEvent, Reply, ServerFrame, reply, server_frame::Frame,
};
use chat_util::lock;
use std::sync::Arc;
use tokio::sync::mpsc;

/// Routes one server frame: replies to their waiters, the rest to events.
pub(super) async fn dispatch(inner: &Arc<Inner>, events: &mpsc::Sender<Event>, frame: ServerFrame) {
    let event = match frame.frame {
        Some(Frame::Reply(r)) => return on_reply(inner, events, r).await,
        Some(Frame::Message(m)) => {
            saw(inner, &m);
            Event::Message(m)
        }
        Some(Frame::MembersChanged(m)) => Event::MembersChanged(m),
        Some(Frame::MemberJoined(m)) => Event::MemberJoined(m),
        Some(Frame::MemberLeft(m)) => Event::MemberLeft(m),
        Some(Frame::Notification(n)) => Event::Notification(n),
        Some(Frame::Typing(t)) => Event::Typing(t),
        Some(Frame::ReadReceipts(r)) => Event::ReadReceipts(r),
        Some(Frame::DirectOpened(d)) => {
            let known = lock(&inner.rooms).contains(&d.room);
            if inner.config.join_direct && !known {
                // Joined in the background: the connection task must not
                // wait for a reply it is the one to deliver.
                let (client, room) = (Client::from_inner(inner.clone()), d.room.clone());
                tokio::spawn(async move {
                    // ALREADY_A_MEMBER: `open_direct` joined it first.
                    if let Err(e) = client.join(&room).await {
                        tracing::debug!(%room, error = %e, "joining a direct conversation failed");
                    }
                });
            }
            Event::DirectOpened(d)
        }
        Some(Frame::Removed(r)) => {
            // Not rejoined after a reconnect.
            inner.forget(&r.room);
            Event::Removed(r)
        }
        // The notice is reported with `Disconnected` when the stream ends.
        Some(Frame::Disconnect(_)) | Some(Frame::Welcome(_)) | None => return,
    };
    // Waiting here when the application lags pushes back on the server,
    // which disconnects a client that falls too far behind.
    let _ = events.send(event).await;
}

/// Raises the room's last seen sequence to the message's, for rooms the
/// client keeps track of.
fn saw(inner: &Inner, m: &MessageEvent) {
    let mut last_seen = lock(&inner.last_seen);
    if let Some(seen) = last_seen.get_mut(&m.room) {
        *seen = (*seen).max(m.sequence);
    }
}

/// Records that the client has `room` up to `sequence`: the point a rejoin
/// resumes from. Messages and rejoins only raise it; a fresh join sets it,
/// and so does a rejoin whose reply says the room's numbering went back
/// (`sequence_reset`).
fn resume_from(inner: &Inner, room: &str, sequence: u64) {
    let mut last_seen = lock(&inner.last_seen);
    let seen = last_seen.entry(room.to_string()).or_insert(0);
    *seen = (*seen).max(sequence);
}

/// One reply: a join's sets the room's resume point here, in stream order
/// (before the messages behind it), and a rejoin's is reported; then the
/// reply goes to its waiter, if it still waits.
async fn on_reply(inner: &Inner, events: &mpsc::Sender<Event>, r: Reply) {
    let join = lock(&inner.joins).remove(&r.request_id);
    match (join, &r.result) {
        (
            Some(Join {
                room, rejoin: true, ..
            }),
            Some(result),
        ) => {
            let result = rejoin_outcome(inner, &room, result.clone());
            inner.rejoined.send_modify(|n| *n += 1);
            // ALREADY_A_MEMBER answers a rejoin asked again after a late
            // reply, which was reported when it came: the room is joined.
            let repeated = matches!(
                &result,
                Err(ClientError::Server {
                    code: ErrorCode::AlreadyAMember,
                    ..
                })
            ) && lock(&inner.rejoined_rooms).contains(&room);
            if result.is_ok() {
                lock(&inner.rejoined_rooms).insert(room.clone());
            }
            if !repeated {
                let _ = events.send(Event::Rejoined { room, result }).await;
            }
        }
        (
            Some(Join {
                room,
                rejoin: false,
                resumed,
                ..
            }),
            Some(reply::Result::JoinRoom(j)),
        ) => {
            // A fresh join: the room is the client's (also when the caller
            // stopped waiting). Joined afresh, what follows on the stream
            // is after the latest: set, not raised (an older point from
            // before a leave may be above where the room's numbering stands
            // now). Joined from its point, the backlog follows.
            lock(&inner.rooms).insert(room.clone());
            if !resumed || j.sequence_reset {
                let point = match resumed {
                    true => j.backlog_after_sequence,
                    false => j.latest_sequence,
                };
                lock(&inner.last_seen).insert(room, point);
            } else {
                resume_from(inner, &room, j.backlog_after_sequence);
            }
        }
        _ => {}
    }
    let waiter = lock(&inner.pending).remove(&r.request_id);
    if let (Some(waiter), Some(result)) = (waiter, r.result) {
        let _ = waiter.send(result);
    }
}

/// A rejoin's reply as the join's outcome, after recording what it means
/// for the room: where the next rejoin resumes, or that the room is given
/// up.
fn rejoin_outcome(
    inner: &Inner,
    room: &str,
    result: reply::Result,
) -> Result<JoinRoomResult, ClientError> {
    let result = match to_result(result) {
        Ok(reply::Result::JoinRoom(j)) => Ok(j),
        Ok(_) => Err(ClientError::UnexpectedReply),
        Err(e) => Err(e),
    };
    if let Ok(j) = &result {
        // What the client has from here on: the backlog (each message
        // raises it as it arrives), then live messages. The next rejoin
        // resumes from it, also for rooms first joined through
        // `ClientConfig::rooms`.
        if j.sequence_reset {
            // The room's numbering went back: the old point means nothing.
            lock(&inner.last_seen).insert(room.to_string(), j.backlog_after_sequence);
        } else {
            resume_from(inner, room, j.backlog_after_sequence);
        }
    }
    if let Err(ClientError::Server { code, .. }) = &result
        && !retryable(*code)
        && *code != ErrorCode::AlreadyAMember
    {
        // The server will never accept this room (e.g. an invalid name):
        // stop trying. Other failures are retried on the next session.
        inner.forget(room);
    }
    result
}
