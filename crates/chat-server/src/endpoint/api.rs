//! The server API over HTTP JSON, at `/v1/api/…` (docs/API.md): the calls
//! of [`crate::api`], for callers with the admin token or, with auth on, a
//! JWT with `api: true` (or `admin: true`). Closed (404) unless one of
//! those is configured, like the operator endpoints, and served beside them.

use super::admin::AdminAccess;
use crate::api::{Author, Post, ServerApi};
use crate::domain::RequestError;
use crate::metrics::ApiCall;
use crate::telemetry::trace;
use axum::Json;
use axum::Router;
use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use chat_proto::v1::{HistoryDirection, HistoryRequest, MessageEvent, MessageKind};
use serde::Deserialize;
use serde_json::{Value, json};
use std::sync::Arc;
use tracing::Instrument;

/// Largest request body a call reads.
const MAX_BODY: usize = 64 * 1024;

struct Endpoint {
    api: ServerApi,
    access: AdminAccess,
}

/// The API routes; empty (everything 404) when `access` opens nothing.
pub fn routes(api: ServerApi, access: AdminAccess) -> Router {
    if !access.is_open() {
        return Router::new();
    }
    let endpoint = Arc::new(Endpoint { api, access });
    Router::new()
        .route("/v1/api/rooms", get(rooms))
        .route("/v1/api/rooms/{room}/members", get(members))
        .route("/v1/api/rooms/{room}/messages", get(history).post(post))
        .layer(axum::extract::DefaultBodyLimit::max(MAX_BODY))
        .with_state(endpoint)
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

/// Runs one call: the caller's credentials, then the instance's API rate,
/// then `run` (which reads the body or query: a malformed one is refused
/// to authorized callers only), in a span of its own; counts the call, and
/// a refusal or failure.
async fn answer<F>(endpoint: &Endpoint, headers: &HeaderMap, call: ApiCall, run: F) -> Response
where
    F: Future<Output = Result<Value, RequestError>>,
{
    let span = trace::request_span(span_name(call), 0, endpoint.api.server_id(), None);
    async {
        if let Some(refused) = endpoint.access.api_refusal(headers) {
            endpoint.api.refused(call);
            return refused.into_response();
        }
        let result = match endpoint.api.admit(call) {
            Ok(()) => run.await,
            Err(e) => Err(e),
        };
        match result {
            Ok(body) => (StatusCode::OK, Json(body)).into_response(),
            Err(e) => {
                endpoint.api.failed(call);
                if trace::enabled() {
                    let code = e.code().as_str_name().trim_start_matches("ERROR_CODE_");
                    trace::record_error(&tracing::Span::current(), code);
                }
                refusal(&e)
            }
        }
    }
    .instrument(span)
    .await
}

/// The span of a call.
fn span_name(call: ApiCall) -> &'static str {
    match call {
        ApiCall::Post => "chat.api.post",
        ApiCall::Rooms => "chat.api.rooms",
        ApiCall::Members => "chat.api.members",
        ApiCall::History => "chat.api.history",
    }
}

/// A body or query the caller got wrong.
fn invalid(text: String) -> RequestError {
    RequestError::InvalidArgument(text)
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
    let code = e.code().as_str_name().trim_start_matches("ERROR_CODE_");
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
    Path(room): Path<String>,
    headers: HeaderMap,
    body: Result<Json<PostBody>, JsonRejection>,
) -> Response {
    let api = &endpoint.api;
    answer(&endpoint, &headers, ApiCall::Post, async {
        let Json(body) = body.map_err(|e| invalid(e.body_text()))?;
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
    headers: HeaderMap,
    query: Result<Query<RoomsQuery>, QueryRejection>,
) -> Response {
    let api = &endpoint.api;
    answer(&endpoint, &headers, ApiCall::Rooms, async {
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

/// `GET /v1/api/rooms/{room}/members`: a room's members across the
/// cluster.
async fn members(
    State(endpoint): State<Arc<Endpoint>>,
    Path(room): Path<String>,
    headers: HeaderMap,
) -> Response {
    let api = &endpoint.api;
    answer(&endpoint, &headers, ApiCall::Members, async {
        let members: Vec<Value> = api
            .members(&room)?
            .iter()
            .map(|u| json!({ "user_id": &*u.user_id, "display_name": &*u.display_name }))
            .collect();
        Ok(json!({ "room": room, "members": members }))
    })
    .await
}

/// `GET /v1/api/rooms/{room}/messages?direction=&from=&limit=`: one page
/// of a room's history.
async fn history(
    State(endpoint): State<Arc<Endpoint>>,
    Path(room): Path<String>,
    headers: HeaderMap,
    query: Result<Query<HistoryQuery>, QueryRejection>,
) -> Response {
    let api = &endpoint.api;
    answer(&endpoint, &headers, ApiCall::History, async {
        let Query(query) = query.map_err(|e| invalid(e.body_text()))?;
        let direction = match query.direction.as_deref() {
            None | Some("backward") => HistoryDirection::Backward,
            Some("forward") => HistoryDirection::Forward,
            Some(other) => {
                return Err(RequestError::InvalidArgument(format!(
                    "direction must be backward or forward, not {other:?}"
                )));
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
