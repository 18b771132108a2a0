//! The server API over HTTP JSON, at `/v1/api/…` (docs/API.md). The
//! caller is checked before anything of the request is read (a layer in
//! front of the routes), then the instance's API rate, then the path,
//! query and body.

use crate::api::{Author, Post, ServerApi};
use crate::domain::RequestError;
use crate::endpoint::admin::AdminAccess;
use crate::metrics::ApiCall;
use crate::telemetry::trace;
use axum::Json;
use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, JsonRejection, PathRejection, QueryRejection};
use axum::extract::{Path, Query, Request, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post as post_route};
use chat_proto::v1::{HistoryDirection, HistoryRequest, MessageEvent, MessageKind};
use serde::Deserialize;
use serde_json::{Value, json};
use std::sync::Arc;
use tracing::Instrument;

/// Smallest limit on a request body; larger when `limits.max_text_bytes`
/// needs it (a text's JSON escapes may take six bytes per byte).
const MIN_BODY: usize = 64 * 1024;

struct Endpoint {
    api: Arc<ServerApi>,
    access: AdminAccess,
}

/// The HTTP routes of `api`; `max_text_bytes`: the longest text a post may
/// carry.
pub(super) fn routes(api: Arc<ServerApi>, access: AdminAccess, max_text_bytes: usize) -> Router {
    let endpoint = Arc::new(Endpoint { api, access });
    let max_body = MIN_BODY.max(max_text_bytes.saturating_mul(6).saturating_add(4096));
    Router::new()
        .route("/v1/api/rooms", get(rooms))
        .route("/v1/api/rooms/{room}/members", get(members))
        .route(
            "/v1/api/rooms/{room}/members/{user}/remove",
            post_route(remove),
        )
        .route("/v1/api/rooms/{room}/messages", get(history).post(post))
        .route("/v1/api/rooms/{room}/bans", get(bans).post(ban))
        .route(
            "/v1/api/rooms/{room}/bans/{user}",
            axum::routing::delete(lift_ban),
        )
        .route("/v1/api/users/{user}", get(user))
        .route("/v1/api/users/{user}/disconnect", post_route(disconnect))
        .route_layer(middleware::from_fn_with_state(endpoint.clone(), authorize))
        .layer(axum::extract::DefaultBodyLimit::max(max_body))
        .with_state(endpoint)
}

/// The call a request is, by its method and path (for the metrics of a
/// caller refused before its request is read).
fn call_of(method: &Method, path: &str) -> ApiCall {
    let post = method == Method::POST;
    // By the path's shape (`v1/api/` stripped), never by a room's or a
    // user's name.
    let segments: Vec<&str> = path.trim_start_matches("/v1/api/").split('/').collect();
    match segments.as_slice() {
        ["users", _, "disconnect"] => ApiCall::Disconnect,
        ["users", ..] => ApiCall::User,
        ["rooms", _, "members", _, "remove"] => ApiCall::Remove,
        ["rooms", _, "members"] => ApiCall::Members,
        ["rooms", _, "bans", _] => ApiCall::LiftBan,
        ["rooms", _, "bans"] if post => ApiCall::Ban,
        ["rooms", _, "bans"] => ApiCall::Bans,
        ["rooms", _, "messages"] if post => ApiCall::Post,
        ["rooms", _, "messages"] => ApiCall::History,
        _ => ApiCall::Rooms,
    }
}

/// Lets only a caller with the credentials through, before its request
/// is read: 401 (`UNAUTHENTICATED`) or 403 (`PERMISSION_DENIED`) otherwise.
async fn authorize(
    State(endpoint): State<Arc<Endpoint>>,
    request: Request,
    next: Next,
) -> Response {
    let Some((status, Json(body))) = endpoint.access.api_refusal(request.headers()) else {
        return next.run(request).await;
    };
    endpoint
        .api
        .refused(call_of(request.method(), request.uri().path()));
    let code = match status {
        StatusCode::FORBIDDEN => "PERMISSION_DENIED",
        _ => "UNAUTHENTICATED",
    };
    let error = body.get("error").cloned().unwrap_or_default();
    (status, Json(json!({ "error": error, "code": code }))).into_response()
}

/// Body of `POST /v1/api/rooms/{room}/messages`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PostBody {
    /// The text.
    text: String,
    /// The caller's id for this message (retries reuse it).
    idempotency_key: String,
    /// The bot it is from; absent: the system.
    #[serde(default)]
    bot: Option<BotBody>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct BotBody {
    id: String,
    name: String,
}

/// Query of `GET /v1/api/rooms`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RoomsQuery {
    after: Option<String>,
    #[serde(default)]
    limit: usize,
}

/// Query of `GET /v1/api/rooms/{room}/members`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct MembersQuery {
    /// The previous page's `next` (absent: the first page).
    after: Option<String>,
    /// Most members in the page (0 or absent: 100; at most 1000).
    #[serde(default)]
    limit: usize,
}

/// Query of `GET /v1/api/rooms/{room}/messages`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct HistoryQuery {
    /// `backward` (default: newest first, before `from`) or `forward`.
    direction: Option<String>,
    #[serde(default)]
    from: u64,
    #[serde(default)]
    limit: u32,
}

/// Runs one call of a caller [`authorize`] let through: the instance's API
/// rate, then `run` (which reads the path, query and body), in a span of
/// its own; counts the call, and a refusal or failure.
async fn answer<F>(endpoint: &Endpoint, call: ApiCall, run: F) -> Response
where
    F: Future<Output = Result<Value, Failure>>,
{
    let span = trace::request_span(super::span_name(call), 0, endpoint.api.server_id(), None);
    async {
        let result = match endpoint.api.admit(call) {
            Ok(()) => run.await,
            Err(e) => Err(Failure::from(e)),
        };
        match result {
            Ok(body) => (StatusCode::OK, Json(body)).into_response(),
            Err(failure) => {
                endpoint.api.failed(call);
                if trace::enabled() {
                    trace::record_error(&tracing::Span::current(), failure.code);
                }
                *failure.response
            }
        }
    }
    .instrument(span)
    .await
}

/// A refused or failed call: its answer, and its code for the span.
struct Failure {
    /// Boxed: a `Result` carrying it stays small.
    response: Box<Response>,
    code: &'static str,
}

impl From<RequestError> for Failure {
    fn from(e: RequestError) -> Failure {
        Failure {
            code: e.code_name(),
            response: Box::new(refusal(&e)),
        }
    }
}

/// A path or query the caller got wrong.
fn invalid(text: String) -> RequestError {
    RequestError::InvalidArgument(text)
}

/// A body that may be left out (then every field's default), else JSON of
/// `T`.
fn optional_body<T: serde::de::DeserializeOwned + Default>(
    body: Result<Bytes, BytesRejection>,
) -> Result<T, Failure> {
    let bytes = body.map_err(|e| {
        if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            too_large()
        } else {
            invalid(e.body_text()).into()
        }
    })?;
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    serde_json::from_slice(&bytes).map_err(|e| invalid(format!("not the call's JSON: {e}")).into())
}

/// A body over the request limit: 413, `MESSAGE_TOO_LARGE`.
fn too_large() -> Failure {
    let code = "MESSAGE_TOO_LARGE";
    let error = "the request body is over this server's limit";
    Failure {
        response: Box::new(
            (
                StatusCode::PAYLOAD_TOO_LARGE,
                Json(json!({ "error": error, "code": code })),
            )
                .into_response(),
        ),
        code,
    }
}

/// A body the caller got wrong: over the size limit (413,
/// `MESSAGE_TOO_LARGE`), or not the call's JSON.
fn bad_body(e: JsonRejection) -> Failure {
    if e.status() != StatusCode::PAYLOAD_TOO_LARGE {
        return invalid(e.body_text()).into();
    }
    too_large()
}

/// A refused request as HTTP: its status, `{"error", "code"}`, and
/// `Retry-After` when rate limited.
fn refusal(e: &RequestError) -> Response {
    let status = match e {
        RequestError::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
        RequestError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
        RequestError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        RequestError::PermissionDenied(_) => StatusCode::FORBIDDEN,
        RequestError::MessageTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
        _ => StatusCode::BAD_REQUEST,
    };
    let code = e.code_name();
    let mut response = (
        status,
        Json(json!({ "error": e.to_string(), "code": code })),
    )
        .into_response();
    if let Some(wait) = ServerApi::retry_after(e) {
        let seconds = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
        if let Ok(value) = HeaderValue::from_str(&seconds.max(1).to_string()) {
            response.headers_mut().insert(header::RETRY_AFTER, value);
        }
    }
    response
}

/// `POST /v1/api/rooms/{room}/messages`: posts a message as a bot or the
/// system.
async fn post(
    State(endpoint): State<Arc<Endpoint>>,
    room: Result<Path<String>, PathRejection>,
    body: Result<Json<PostBody>, JsonRejection>,
) -> Response {
    let api = &endpoint.api;
    answer(&endpoint, ApiCall::Post, async {
        let Path(room) = room.map_err(|e| invalid(e.body_text()))?;
        let Json(body) = body.map_err(bad_body)?;
        let author = match body.bot {
            Some(bot) => Author::Bot {
                id: bot.id,
                name: bot.name,
            },
            None => Author::System,
        };
        let post = Post {
            room,
            author,
            idempotency_key: body.idempotency_key,
            text: body.text,
        };
        let stored = api.post(post).await?;
        Ok(json!({
            "room": stored.message.room.as_str(),
            "sequence": stored.sequence,
            "message_id": stored.id,
            "time_unix_ms": stored.time_unix_ms,
            "idempotency_key": stored.message.client_message_id,
            "sender": {
                "user_id": &*stored.message.sender.user_id,
                "display_name": &*stored.message.sender.display_name,
            },
        }))
    })
    .await
}

/// `GET /v1/api/rooms?after=&limit=`: the rooms with members, by name.
async fn rooms(
    State(endpoint): State<Arc<Endpoint>>,
    query: Result<Query<RoomsQuery>, QueryRejection>,
) -> Response {
    let api = &endpoint.api;
    answer(&endpoint, ApiCall::Rooms, async {
        let Query(query) = query.map_err(|e| invalid(e.body_text()))?;
        let page = api.rooms(query.after.as_deref(), query.limit);
        let rooms: Vec<Value> = page
            .rooms
            .iter()
            .map(|r| json!({ "room": r.room.as_str(), "members": r.members }))
            .collect();
        Ok(json!({ "rooms": rooms, "next": page.next }))
    })
    .await
}

/// `GET /v1/api/rooms/{room}/members?after=&limit=`: a page of a room's
/// members across the cluster.
async fn members(
    State(endpoint): State<Arc<Endpoint>>,
    room: Result<Path<String>, PathRejection>,
    query: Result<Query<MembersQuery>, QueryRejection>,
) -> Response {
    let api = &endpoint.api;
    answer(&endpoint, ApiCall::Members, async {
        let Path(room) = room.map_err(|e| invalid(e.body_text()))?;
        let Query(query) = query.map_err(|e| invalid(e.body_text()))?;
        let page = api.members(&room, query.after.as_deref().unwrap_or(""), query.limit)?;
        let members: Vec<Value> = page
            .members
            .iter()
            .map(|u| json!({ "user_id": &*u.user_id, "display_name": &*u.display_name }))
            .collect();
        Ok(json!({
            "room": room,
            "members": members,
            "count": page.count,
            "next": page.next.map(|c| c.encode()),
        }))
    })
    .await
}

/// `GET /v1/api/rooms/{room}/messages?direction=&from=&limit=`: one page
/// of a room's history.
async fn history(
    State(endpoint): State<Arc<Endpoint>>,
    room: Result<Path<String>, PathRejection>,
    query: Result<Query<HistoryQuery>, QueryRejection>,
) -> Response {
    let api = &endpoint.api;
    answer(&endpoint, ApiCall::History, async {
        let Path(room) = room.map_err(|e| invalid(e.body_text()))?;
        let Query(query) = query.map_err(|e| invalid(e.body_text()))?;
        let direction = match query.direction.as_deref() {
            None | Some("backward") => HistoryDirection::Backward,
            Some("forward") => HistoryDirection::Forward,
            Some(other) => {
                let wrong = format!("direction must be backward or forward, not {other:?}");
                return Err(invalid(wrong).into());
            }
        };
        let request = HistoryRequest {
            room: room.clone(),
            direction: direction.into(),
            from_sequence: query.from,
            limit: query.limit,
        };
        let page = api.history(&room, request).await?;
        let messages: Vec<Value> = page.messages.iter().map(message_json).collect();
        Ok(json!({
            "room": page.room,
            "latest_sequence": page.latest_sequence,
            "messages": messages,
        }))
    })
    .await
}

/// Body of a removal.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ReasonBody {
    /// What the user is shown.
    #[serde(default)]
    reason: String,
}

/// Body of `POST /v1/api/users/{user}/disconnect`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct DisconnectBody {
    /// What the user is shown.
    #[serde(default)]
    reason: String,
    /// Whether their clients may reconnect on their own.
    #[serde(default)]
    reconnect: bool,
}

/// `POST /v1/api/users/{user}/disconnect`: ends every session of the
/// user, on every instance.
async fn disconnect(
    State(endpoint): State<Arc<Endpoint>>,
    user: Result<Path<String>, PathRejection>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let api = &endpoint.api;
    answer(&endpoint, ApiCall::Disconnect, async {
        let Path(user) = user.map_err(|e| invalid(e.body_text()))?;
        let body: DisconnectBody = optional_body(body)?;
        let ended = api.disconnect(&user, &body.reason, body.reconnect).await?;
        Ok(json!({ "user_id": user, "sessions_here": ended }))
    })
    .await
}

/// `POST /v1/api/rooms/{room}/members/{user}/remove`: takes the user out
/// of the room on every instance.
async fn remove(
    State(endpoint): State<Arc<Endpoint>>,
    path: Result<Path<(String, String)>, PathRejection>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let api = &endpoint.api;
    answer(&endpoint, ApiCall::Remove, async {
        let Path((room, user)) = path.map_err(|e| invalid(e.body_text()))?;
        let body: ReasonBody = optional_body(body)?;
        let told = api.remove(&room, &user, &body.reason).await?;
        Ok(json!({ "room": room, "user_id": user, "sessions_here": told }))
    })
    .await
}

/// Body of `POST /v1/api/rooms/{room}/bans`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct BanBody {
    /// The user.
    user_id: String,
    /// Barred until then (Unix ms).
    until_unix_ms: i64,
    /// What the user is shown.
    #[serde(default)]
    reason: String,
}

/// `POST /v1/api/rooms/{room}/bans`: bars a user from the room until a
/// time, taking them out of it everywhere.
async fn ban(
    State(endpoint): State<Arc<Endpoint>>,
    room: Result<Path<String>, PathRejection>,
    body: Result<Json<BanBody>, JsonRejection>,
) -> Response {
    let api = &endpoint.api;
    answer(&endpoint, ApiCall::Ban, async {
        let Path(room) = room.map_err(|e| invalid(e.body_text()))?;
        let Json(body) = body.map_err(bad_body)?;
        let (was_banned, told) = api
            .ban(&room, &body.user_id, body.until_unix_ms, &body.reason)
            .await?;
        Ok(json!({
            "room": room,
            "user_id": body.user_id,
            "until_unix_ms": body.until_unix_ms,
            "was_banned": was_banned,
            "sessions_here": told,
        }))
    })
    .await
}

/// `DELETE /v1/api/rooms/{room}/bans/{user}`: lifts a ban.
async fn lift_ban(
    State(endpoint): State<Arc<Endpoint>>,
    path: Result<Path<(String, String)>, PathRejection>,
) -> Response {
    let api = &endpoint.api;
    answer(&endpoint, ApiCall::LiftBan, async {
        let Path((room, user)) = path.map_err(|e| invalid(e.body_text()))?;
        let lifted = api.lift_ban(&room, &user).await?;
        Ok(json!({ "room": room, "user_id": user, "lifted": lifted }))
    })
    .await
}

/// `GET /v1/api/rooms/{room}/bans`: the bans in force in the room.
async fn bans(
    State(endpoint): State<Arc<Endpoint>>,
    room: Result<Path<String>, PathRejection>,
) -> Response {
    let api = &endpoint.api;
    answer(&endpoint, ApiCall::Bans, async {
        let Path(room) = room.map_err(|e| invalid(e.body_text()))?;
        let bans: Vec<Value> = api
            .bans(&room)
            .await?
            .iter()
            .map(|b| {
                json!({
                    "user_id": b.user_id,
                    "until_unix_ms": b.until_ms,
                    "reason": b.reason,
                    "created_at_unix_ms": b.created_at_ms,
                })
            })
            .collect();
        Ok(json!({ "room": room, "bans": bans }))
    })
    .await
}

/// `GET /v1/api/users/{user}`: the user's rooms and where they are
/// connected.
async fn user(
    State(endpoint): State<Arc<Endpoint>>,
    user: Result<Path<String>, PathRejection>,
) -> Response {
    let api = &endpoint.api;
    answer(&endpoint, ApiCall::User, async {
        let Path(user) = user.map_err(|e| invalid(e.body_text()))?;
        let summary = api.user(&user)?;
        let rooms: Vec<&str> = summary.rooms.iter().map(|r| r.as_str()).collect();
        let instances: Vec<&str> = summary.instances.iter().map(|i| &**i).collect();
        Ok(json!({
            "user_id": user,
            "rooms": rooms,
            "sessions_here": summary.sessions_here,
            "instances": instances,
        }))
    })
    .await
}

/// A stored message as the API shows it.
fn message_json(m: &MessageEvent) -> Value {
    let sender = m.sender.clone().unwrap_or_default();
    let kind = MessageKind::try_from(m.kind).unwrap_or(MessageKind::Message);
    let reactions: Vec<Value> = m
        .reactions
        .iter()
        .map(|r| {
            let users: Vec<&str> = r.members.iter().map(|u| u.user_id.as_str()).collect();
            json!({ "emoji": r.emoji, "count": r.count, "user_ids": users })
        })
        .collect();
    json!({
        "sequence": m.sequence,
        "message_id": m.message_id,
        "kind": kind.as_str_name().trim_start_matches("MESSAGE_KIND_").to_lowercase(),
        "target_sequence": m.target_sequence,
        "sender": { "user_id": sender.user_id, "display_name": sender.display_name },
        "text": m.text,
        "time_unix_ms": m.server_time_unix_ms,
        "client_message_id": m.client_message_id,
        "edited_at_unix_ms": m.edited_at_unix_ms,
        "deleted": m.deleted,
        "reactions": reactions,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_call_is_known_by_the_paths_shape_not_by_names_in_it() {
        let call = |method: Method, path: &str| call_of(&method, path);
        assert_eq!(call(Method::GET, "/v1/api/rooms"), ApiCall::Rooms);
        assert_eq!(
            call(Method::GET, "/v1/api/rooms/bans/members"),
            ApiCall::Members
        );
        assert_eq!(
            call(Method::POST, "/v1/api/rooms/remove/messages"),
            ApiCall::Post
        );
        assert_eq!(
            call(Method::GET, "/v1/api/rooms/x/messages"),
            ApiCall::History
        );
        assert_eq!(call(Method::POST, "/v1/api/rooms/bans/bans"), ApiCall::Ban);
        assert_eq!(call(Method::GET, "/v1/api/rooms/x/bans"), ApiCall::Bans);
        assert_eq!(
            call(Method::DELETE, "/v1/api/rooms/x/bans/remove"),
            ApiCall::LiftBan
        );
        assert_eq!(
            call(Method::POST, "/v1/api/rooms/x/members/disconnect/remove"),
            ApiCall::Remove
        );
        assert_eq!(call(Method::GET, "/v1/api/users/remove"), ApiCall::User);
        assert_eq!(
            call(Method::POST, "/v1/api/users/bans/disconnect"),
            ApiCall::Disconnect
        );
    }
}
