//! Joining the client's rooms again on a new session, each from the last
//! sequence it saw, so the backlog fills the gap. The replies are reported
//! by [`dispatch`](super::dispatch) as they arrive, in stream order.

use super::{Inner, Join};
use crate::error::ClientError;
use crate::event::Event;
use chat_proto::v1::{ErrorCode, JoinRoomRequest, client_frame::Request};
use chat_util::lock;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;

/// Rejoins every room the client is in, reporting each outcome. The joins
/// go out at once, in the rooms' order (the server answers them in that
/// order, and reads their states together): a client in many rooms is
/// back in all of them after about one round trip, not one per room.
pub(super) async fn rejoin(inner: Arc<Inner>, events: mpsc::Sender<Event>) {
    let rooms: Vec<String> = lock(&inner.rooms).iter().cloned().collect();
    let rejoins = rooms
        .into_iter()
        .map(|room| rejoin_room(&inner, &events, room));
    futures::future::join_all(rejoins).await;
}

/// Rejoins `room`. A join the server could not do now (its store or
/// backplane is busy, or the reply was late) is tried again within the
/// session, or the client would sit connected but outside the room.
async fn rejoin_room(inner: &Inner, events: &mpsc::Sender<Event>, room: String) {
    let mut delay = Duration::from_millis(100);
    loop {
        if !lock(&inner.rooms).contains(&room) {
            break;
        }
        let since = lock(&inner.last_seen).get(&room).copied();
        let request = Request::JoinRoom(JoinRoomRequest {
            room: room.clone(),
            since_sequence: since,
        });
        let join = Join {
            room: room.clone(),
            rejoin: true,
            resumed: since.is_some(),
            timed_out: false,
        };
        let retry = match inner.request_as(request, Some(join)).await {
            // A reply was reported by `dispatch` when it arrived.
            Ok(_) => false,
            // After a late reply the join may have happened after all.
            Err(ClientError::Server {
                code: ErrorCode::AlreadyAMember,
                ..
            }) => false,
            Err(ClientError::Server { code, .. }) => retryable(code),
            Err(ClientError::UnexpectedReply) => false,
            Err(e @ ClientError::Timeout(_)) => {
                report_failure(events, &room, e).await;
                true
            }
            // The session is gone; the next one rejoins.
            Err(e) => {
                report_failure(events, &room, e).await;
                break;
            }
        };
        if !retry {
            break;
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_secs(2));
    }
}

/// Tells the application that rejoining `room` failed with `error`.
async fn report_failure(events: &mpsc::Sender<Event>, room: &str, error: ClientError) {
    let _ = events
        .send(Event::Rejoined {
            room: room.to_string(),
            result: Err(error),
        })
        .await;
}

/// Whether a refused join may succeed if tried again later.
pub(super) fn retryable(code: ErrorCode) -> bool {
    matches!(
        code,
        ErrorCode::Unavailable | ErrorCode::RateLimited | ErrorCode::Internal
    )
}
