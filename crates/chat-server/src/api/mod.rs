//! The server API: what an application's backend does without a client
//! connection — post a message as a bot or as the system, list the rooms
//! and their members across the cluster, read any room's history. One core
//! for every endpoint that offers it (HTTP JSON at `/v1/api/…` today,
//! `endpoint::api`); who may call it is the endpoint's business, how often
//! is this instance's API rate (`limits.api_rate`).

use crate::domain::user::{self, BOT_PREFIX, SYSTEM_ID};
use crate::domain::validate::{self, RoomName};
use crate::domain::{RequestError, User};
use crate::hub::{Hub, MAX_DISCONNECT_REASON_BYTES, MemberPage, members};
use crate::limiter::TokenBucket;
use crate::metrics::{ApiCall, RateLimitedAction};
use crate::session::history;
use crate::store::{Ban, Kind, NewMessage, StoredMessage};
use chat_proto::v1::{HistoryRequest, HistoryResponse};
use chat_util::lock;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::time::Instant;

/// Longest bot id, in bytes (the user id is `bot:` and this).
pub const MAX_BOT_ID_BYTES: usize = 64;

/// The longest ban: 100 years, in milliseconds.
pub const MAX_BAN_MS: i64 = 100 * 365 * 24 * 3600 * 1000;

/// Rooms a listing returns when the call names no limit.
pub const DEFAULT_ROOMS: usize = 100;
/// Most rooms one listing returns.
pub const MAX_ROOMS: usize = 1000;

/// The server API of this instance.
pub struct ServerApi {
    /// Where messages are stored and published, and presence is known.
    hub: Arc<Hub>,
    /// This instance's API rate, all callers together (`None`: no limit).
    rate: Option<Mutex<TokenBucket>>,
}

/// Who a posted message is from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Author {
    /// A bot of the application's: user id `bot:<id>`, shown as `name`.
    Bot {
        /// The bot's id: 1 to [`MAX_BOT_ID_BYTES`] of `a-z`, `0-9`, `-`,
        /// `_`, `.`.
        id: String,
        /// The name members see.
        name: String,
    },
    /// The system itself: user id `system`, shown as "System".
    System,
}

impl Author {
    /// The sender members see, validated.
    fn user(&self) -> Result<User, RequestError> {
        match self {
            Author::System => Ok(User::new(SYSTEM_ID, "System")),
            Author::Bot { id, name } => {
                let valid = !id.is_empty()
                    && id.len() <= MAX_BOT_ID_BYTES
                    && id.bytes().all(|b| {
                        b.is_ascii_lowercase() || b.is_ascii_digit() || b"-_.".contains(&b)
                    });
                if !valid {
                    return Err(RequestError::InvalidArgument(format!(
                        "bot id must be 1 to {MAX_BOT_ID_BYTES} of a-z, 0-9, '-', '_', '.'"
                    )));
                }
                validate::display_name(name)?;
                Ok(User::new(format!("{BOT_PREFIX}{id}"), name.as_str()))
            }
        }
    }
}

/// A message to post.
#[derive(Clone, Debug)]
pub struct Post {
    /// The room (it need not have members).
    pub room: String,
    /// Who it is from.
    pub author: Author,
    /// The caller's id for it: a retry with the same id (and author) is
    /// answered with the original, never stored twice.
    pub idempotency_key: String,
    /// The text.
    pub text: String,
}

/// A room and how many members it has, cluster-wide.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RoomSummary {
    /// The room.
    pub room: RoomName,
    /// Its members (users, each once).
    pub members: usize,
}

/// `reason` if it is one the user may be shown: up to
/// [`MAX_DISCONNECT_REASON_BYTES`], no control characters; `default` for
/// an empty one.
fn valid_reason<'a>(reason: &'a str, default: &'static str) -> Result<&'a str, RequestError> {
    if reason.len() > MAX_DISCONNECT_REASON_BYTES {
        return Err(RequestError::InvalidArgument(format!(
            "reason is {} bytes; the limit is {MAX_DISCONNECT_REASON_BYTES}",
            reason.len()
        )));
    }
    if reason.chars().any(char::is_control) {
        return Err(RequestError::InvalidArgument(
            "reason must not contain control characters".into(),
        ));
    }
    Ok(if reason.is_empty() { default } else { reason })
}

/// A user as the cluster knows them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UserSummary {
    /// Their rooms, anywhere, by name.
    pub rooms: Vec<RoomName>,
    /// Their sessions on this instance.
    pub sessions_here: usize,
    /// The instances where they are in a room, by id.
    pub instances: Vec<Arc<str>>,
}

/// One page of the room listing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RoomsPage {
    /// Rooms with members, by name.
    pub rooms: Vec<RoomSummary>,
    /// The name to list after for the next page; `None`: this was the last.
    pub next: Option<String>,
}

impl ServerApi {
    /// The API of `hub`'s instance, answering `rate` calls a second at
    /// most (`burst` at once; rate 0: no limit).
    pub fn new(hub: Arc<Hub>, rate: f64, burst: u32) -> ServerApi {
        ServerApi {
            hub,
            rate: TokenBucket::new(rate, burst).map(Mutex::new),
        }
    }

    /// Counts a call, and refuses it when the instance's API rate is spent.
    pub fn admit(&self, call: ApiCall) -> Result<(), RequestError> {
        let metrics = self.hub.metrics();
        metrics.api_calls.inc(call);
        let Some(rate) = &self.rate else {
            return Ok(());
        };
        lock(rate).take(Instant::now()).map_err(|retry_after| {
            metrics.rate_limited.inc(RateLimitedAction::Api);
            RequestError::RateLimited {
                what: "server API calls",
                retry_after,
            }
        })
    }

    /// Counts a failed call, or one refused after [`ServerApi::admit`].
    pub fn failed(&self, call: ApiCall) {
        self.hub.metrics().api_errors.inc(call);
    }

    /// Counts a call refused before [`ServerApi::admit`] (its caller's
    /// credentials).
    pub fn refused(&self, call: ApiCall) {
        let metrics = self.hub.metrics();
        metrics.api_calls.inc(call);
        metrics.api_errors.inc(call);
    }

    /// This instance's id, for spans.
    pub fn server_id(&self) -> &str {
        self.hub.server_id()
    }

    /// Stores `post` as the room's next message and delivers it to every
    /// member on every instance, once: the same guarantees as a member's
    /// send (a retry with the same key is answered with the original).
    pub async fn post(&self, post: Post) -> Result<StoredMessage, RequestError> {
        let room = RoomName::parse(&post.room)?;
        let sender = post.author.user()?;
        validate::client_message_id(&post.idempotency_key)?;
        validate::message_text(&post.text, self.hub.limits().max_text_bytes)?;
        if post.idempotency_key.is_empty() {
            return Err(RequestError::InvalidArgument(
                "idempotency_key is required: a retry must not post twice".into(),
            ));
        }
        let stored = self
            .hub
            .post(NewMessage {
                room,
                sender: sender.clone(),
                client_message_id: post.idempotency_key,
                text: post.text.clone(),
                kind: Kind::Message,
            })
            .await?;
        // Only a retry of an earlier post can come back different: the key
        // named another message then, and this one is not posted.
        let original = &stored.message;
        if original.text != post.text || original.sender.display_name != sender.display_name {
            return Err(RequestError::InvalidArgument(format!(
                "idempotency_key {:?} already names message {} of room {} from this sender, with another text or name",
                original.client_message_id, stored.sequence, original.room
            )));
        }
        Ok(stored)
    }

    /// The rooms with members anywhere in the cluster, by name, after
    /// `after` (exclusive), `limit` at most (0: [`DEFAULT_ROOMS`]; capped
    /// at [`MAX_ROOMS`]).
    pub fn rooms(&self, after: Option<&str>, limit: usize) -> RoomsPage {
        let limit = match limit {
            0 => DEFAULT_ROOMS,
            n => n.min(MAX_ROOMS),
        };
        let mut rooms = self.hub.room_counts(after, limit + 1);
        let next = (rooms.len() > limit).then(|| {
            rooms.truncate(limit);
            rooms.last().map(|(room, _)| room.to_string())
        });
        RoomsPage {
            rooms: rooms
                .into_iter()
                .map(|(room, members)| RoomSummary { room, members })
                .collect(),
            next: next.flatten(),
        }
    }

    /// A page of `room`'s members across the cluster, each user once:
    /// after the cursor `page_after` (empty: from the first), at most
    /// `limit` (0: the default page).
    pub fn members(
        &self,
        room: &str,
        page_after: &str,
        limit: usize,
    ) -> Result<MemberPage, RequestError> {
        let room = RoomName::parse(room)?;
        let (after, limit) = members::page_request(page_after, limit)?;
        Ok(self.hub.member_page(&room, after.as_ref(), limit))
    }

    /// One page of `room`'s history, whoever its members are.
    pub async fn history(
        &self,
        room: &str,
        request: HistoryRequest,
    ) -> Result<HistoryResponse, RequestError> {
        history::read(&self.hub, &RoomName::parse(room)?, request).await
    }

    /// Ends every session of user `user_id` on every instance, telling
    /// them `reason` (empty: a default text); returns how many ended here.
    pub async fn disconnect(
        &self,
        user_id: &str,
        reason: &str,
        reconnect: bool,
    ) -> Result<usize, RequestError> {
        user::user_id(user_id)?;
        let reason = valid_reason(reason, "the application ended your session")?;
        Ok(self.hub.disconnect_user(user_id, reason, reconnect).await)
    }

    /// Takes user `user_id` out of `room` on every instance, telling them
    /// `reason` (empty: a default text); returns how many of their sessions
    /// here were told.
    pub async fn remove(
        &self,
        room: &str,
        user_id: &str,
        reason: &str,
    ) -> Result<usize, RequestError> {
        let room = RoomName::parse(room)?;
        user::user_id(user_id)?;
        let reason = valid_reason(reason, "the application removed you from the room")?;
        Ok(self.hub.remove_member(&room, user_id, reason).await)
    }

    /// Bars user `user_id` from `room` until `until_ms` (Unix ms) and takes
    /// them out of it everywhere; returns whether a ban was in force before
    /// and how many of their sessions here were told to leave.
    pub async fn ban(
        &self,
        room: &str,
        user_id: &str,
        until_ms: i64,
        reason: &str,
    ) -> Result<(bool, usize), RequestError> {
        let room = RoomName::parse(room)?;
        user::user_id(user_id)?;
        let reason = valid_reason(reason, "the application banned you from the room")?;
        let now = chat_util::now_unix_ms();
        if until_ms <= now || until_ms > now.saturating_add(MAX_BAN_MS) {
            return Err(RequestError::InvalidArgument(
                "until_unix_ms must be in the future, within 100 years".into(),
            ));
        }
        let ban = Ban {
            user_id: user_id.to_string(),
            until_ms,
            reason: reason.to_string(),
            created_at_ms: now,
        };
        self.hub.ban(&room, user_id, ban).await
    }

    /// Lifts user `user_id`'s ban from `room`; whether one was in force.
    pub async fn lift_ban(&self, room: &str, user_id: &str) -> Result<bool, RequestError> {
        let room = RoomName::parse(room)?;
        user::user_id(user_id)?;
        self.hub.lift_ban(&room, user_id).await
    }

    /// The bans in force in `room`, by user id.
    pub async fn bans(&self, room: &str) -> Result<Vec<Ban>, RequestError> {
        let room = RoomName::parse(room)?;
        let now = chat_util::now_unix_ms();
        self.hub.store().bans(&room, now).await.map_err(|e| {
            tracing::warn!(error = %e, "listing bans failed: store");
            RequestError::Unavailable(e.to_string())
        })
    }

    /// User `user_id` as the cluster knows them: their rooms, their
    /// sessions here, and the instances where they are in a room.
    pub fn user(&self, user_id: &str) -> Result<UserSummary, RequestError> {
        user::user_id(user_id)?;
        let (rooms, instances) = self.hub.user_presence(user_id);
        Ok(UserSummary {
            rooms,
            sessions_here: self.hub.sessions_of(user_id),
            instances,
        })
    }

    /// How long a refused caller should wait, for a `Retry-After`.
    pub fn retry_after(error: &RequestError) -> Option<Duration> {
        match error {
            RequestError::RateLimited { retry_after, .. } => Some(*retry_after),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn authors_are_the_reserved_senders_and_bot_ids_are_checked() {
        let system = Author::System.user().unwrap();
        assert_eq!(&*system.user_id, "system");
        let bot = Author::Bot {
            id: "news-feed.v2".into(),
            name: "News".into(),
        };
        let user = bot.user().unwrap();
        assert_eq!(
            (&*user.user_id, &*user.display_name),
            ("bot:news-feed.v2", "News")
        );
        assert!(user::is_reserved(&user.user_id));
        for id in ["", "News", "a b", "ü", &"a".repeat(MAX_BOT_ID_BYTES + 1)] {
            let bad = Author::Bot {
                id: id.into(),
                name: "x".into(),
            };
            assert!(bad.user().is_err(), "{id:?}");
        }
        let unnamed = Author::Bot {
            id: "ok".into(),
            name: String::new(),
        };
        assert!(unnamed.user().is_err());
    }
}
