//! The server API's endpoints (docs/API.md): HTTP JSON at `/v1/api/…`
//! (`http`) and the gRPC service `chat.v1.ChatApi` (`grpc`), the same calls
//! over one [`ServerApi`] (so one API rate for the instance), for callers
//! with the admin token or, with auth on, a JWT with `api: true` (or
//! `admin: true`). Closed unless one of those is configured, and served
//! where the operator endpoints are (the main listener, or `admin.listen`).

mod grpc;
mod http;

use crate::api::ServerApi;
use crate::endpoint::admin::AdminAccess;
use crate::metrics::ApiCall;
use axum::Router;
use chat_proto::v1::chat_api_server::ChatApiServer;
use std::sync::Arc;

/// What the API's endpoints need to know of the configuration.
pub struct Limits {
    /// The longest text a post may carry (`limits.max_text_bytes`).
    pub max_text_bytes: usize,
    /// The largest gRPC message read (`limits.max_frame_bytes`).
    pub max_frame_bytes: usize,
}

/// Both endpoints of `api`; nothing (404, and `UNIMPLEMENTED` for gRPC
/// callers) when `access` opens nothing.
pub fn routes(api: ServerApi, access: AdminAccess, limits: Limits) -> Router {
    if !access.is_open() {
        return Router::new();
    }
    let api = Arc::new(api);
    let grpc = ChatApiServer::new(grpc::ApiGrpc::new(api.clone(), access.clone()))
        .max_decoding_message_size(limits.max_frame_bytes.max(limits.max_text_bytes * 2));
    http::routes(api, access, limits.max_text_bytes)
        .merge(tonic::service::Routes::new(grpc).into_axum_router())
}

/// The span of a call, whichever way it came.
fn span_name(call: ApiCall) -> &'static str {
    match call {
        ApiCall::Post => "chat.api.post",
        ApiCall::Rooms => "chat.api.rooms",
        ApiCall::Members => "chat.api.members",
        ApiCall::History => "chat.api.history",
        ApiCall::Disconnect => "chat.api.disconnect",
        ApiCall::User => "chat.api.user",
        ApiCall::Remove => "chat.api.remove",
        ApiCall::Ban => "chat.api.ban",
        ApiCall::LiftBan => "chat.api.lift_ban",
        ApiCall::Bans => "chat.api.bans",
    }
}
