//! Pages of a room's stored history, for any transport: the rate limit per
//! user, the room permission check, the page bounds, then the store. The
//! gRPC `History` call is this, answered as a unary reply; so is a
//! `history` request on the session stream, answered as its `Reply`.

use crate::auth::{Access, Identity};
use crate::domain::{RequestError, RoomName, direct};
use crate::hub::{Hub, message_event};
use crate::metrics::RateLimitedAction;
use crate::store::{Direction, Page, StoreError};
use chat_proto::v1::{HistoryDirection, HistoryRequest, HistoryResponse};
use std::time::Duration;

/// What `identity` may do in `room`: the pair of a direct conversation
/// read and write it and nobody else may do anything there, whatever the
/// token says; any other room is as the token says.
pub async fn room_access(
    hub: &Hub,
    identity: &Identity,
    room: &RoomName,
) -> Result<Access, RequestError> {
    if !direct::is_direct(room) {
        return Ok(identity.rooms.access(room.as_str()));
    }
    match hub.store().direct(room).await {
        Ok(Some(conversation)) if conversation.has(&identity.user.user_id) => Ok(Access::Write),
        Ok(_) => Ok(Access::None),
        Err(e) => {
            tracing::warn!(%room, error = %e, "direct room check failed: store");
            Err(RequestError::Unavailable(e.to_string()))
        }
    }
}

/// History page size when the request names none.
pub const DEFAULT_LIMIT: usize = 50;
/// Largest history page.
pub const MAX_LIMIT: usize = 500;

/// One page of `request.room`'s history for `identity`; refused (changing
/// nothing) when the user is over their history rate (`rate`: the
/// caller's check of the user's history bucket), may not read the room, or
/// asks for something malformed.
pub async fn page(
    hub: &Hub,
    identity: &Identity,
    rate: Result<(), Duration>,
    request: HistoryRequest,
) -> Result<HistoryResponse, RequestError> {
    if let Err(retry_after) = rate {
        hub.metrics().rate_limited.inc(RateLimitedAction::History);
        return Err(RequestError::RateLimited {
            what: "history calls",
            retry_after,
        });
    }
    let room = RoomName::parse(&request.room)?;
    if room_access(hub, identity, &room).await? == Access::None {
        return Err(RequestError::PermissionDenied(format!(
            "you may not read room {room}"
        )));
    }
    // A banned user reads the room no more than they join it.
    if let Some(ban) = hub.ban_of(&room, &identity.user).await {
        return Err(RequestError::Banned {
            room: room.to_string(),
            until: ban.until_ms,
            reason: ban.reason,
        });
    }
    read(hub, &room, request).await
}

/// One page of `room`'s history as `request` bounds it (its `room` is not
/// looked at), for a caller already allowed to read it: a member through
/// [`page`], or an application through the server API.
pub async fn read(
    hub: &Hub,
    room: &RoomName,
    request: HistoryRequest,
) -> Result<HistoryResponse, RequestError> {
    let page = Page {
        direction: direction(request.direction)?,
        from: request.from_sequence,
        limit: match request.limit as usize {
            0 => DEFAULT_LIMIT,
            n => n.min(MAX_LIMIT),
        },
    };
    let unavailable = |e: StoreError| {
        tracing::warn!(%room, error = %e, "history failed: store");
        RequestError::Unavailable(e.to_string())
    };
    let store = hub.store();
    let latest_sequence = store.latest_sequence(room).await.map_err(unavailable)?;
    let messages = store.history(room, page).await.map_err(unavailable)?;
    Ok(HistoryResponse {
        room: room.to_string(),
        messages: messages.iter().map(message_event).collect(),
        latest_sequence,
    })
}

/// The page's direction, from its wire value.
fn direction(wire: i32) -> Result<Direction, RequestError> {
    match HistoryDirection::try_from(wire) {
        Ok(HistoryDirection::Backward) => Ok(Direction::Backward),
        Ok(HistoryDirection::Forward) => Ok(Direction::Forward),
        Err(_) => Err(RequestError::InvalidArgument(format!(
            "unknown direction {wire}"
        ))),
    }
}
