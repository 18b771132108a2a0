//! The server API as the gRPC service `chat.v1.ChatApi`: the calls of
//! [`crate::api`] with the HTTP API's semantics, its refusals as gRPC
//! statuses carrying the stable `chat-error-code` (and
//! `chat-retry-after-ms` over the rate), like `ChatService`'s.

use crate::api::{Author, Post, ServerApi};
use crate::domain::RequestError;
use crate::endpoint::admin::AdminAccess;
use crate::endpoint::grpc::{refusal, refuse};
use crate::hub::members;
use crate::metrics::ApiCall;
use crate::telemetry::trace;
use axum::http::StatusCode;
use chat_proto::v1::chat_api_server::ChatApi;
use chat_proto::v1::{
    ApiBan, ApiBanRequest, ApiBanResult, ApiBansRequest, ApiBansResult, ApiDisconnectRequest,
    ApiDisconnectResult, ApiLiftBanRequest, ApiLiftBanResult, ApiPostRequest, ApiRemoveRequest,
    ApiRemoveResult, ApiRoom, ApiRoomsRequest, ApiRoomsResult, ApiUserRequest, ApiUserResult,
    HistoryRequest, HistoryResponse, ListMembersRequest, ListMembersResult, SendMessageResult,
};
use std::sync::Arc;
use tonic::{Request, Response, Status};
use tracing::Instrument;

/// The `ChatApi` service of one instance.
pub(super) struct ApiGrpc {
    /// The calls, and the instance's API rate (shared with HTTP).
    api: Arc<ServerApi>,
    /// Who may call.
    access: AdminAccess,
}

impl ApiGrpc {
    pub(super) fn new(api: Arc<ServerApi>, access: AdminAccess) -> ApiGrpc {
        ApiGrpc { api, access }
    }

    /// Runs one call: the caller's credentials, the instance's API rate,
    /// then `run`, in a span of its own; counts the call, and a refusal or
    /// failure.
    async fn answer<T, R, F>(
        &self,
        call: ApiCall,
        request: Request<R>,
        run: impl FnOnce(R) -> F,
    ) -> Result<Response<T>, Status>
    where
        F: Future<Output = Result<T, RequestError>>,
    {
        let span = trace::request_span(super::span_name(call), 0, self.api.server_id(), None);
        async {
            let headers = request.metadata().clone().into_headers();
            if let Some((status, body)) = self.access.api_refusal(&headers) {
                self.api.refused(call);
                let message = body.0["error"].as_str().unwrap_or_default().to_string();
                return Err(match status {
                    StatusCode::FORBIDDEN => {
                        refuse(tonic::Code::PermissionDenied, "PERMISSION_DENIED", message)
                    }
                    _ => refuse(tonic::Code::Unauthenticated, "UNAUTHENTICATED", message),
                });
            }
            let result = match self.api.admit(call) {
                Ok(()) => run(request.into_inner()).await,
                Err(e) => Err(e),
            };
            result.map(Response::new).map_err(|e| {
                self.api.failed(call);
                if trace::enabled() {
                    trace::record_error(&tracing::Span::current(), e.code_name());
                }
                refusal(&e)
            })
        }
        .instrument(span)
        .await
    }
}

#[tonic::async_trait]
impl ChatApi for ApiGrpc {
    async fn post(
        &self,
        request: Request<ApiPostRequest>,
    ) -> Result<Response<SendMessageResult>, Status> {
        let api = &self.api;
        self.answer(ApiCall::Post, request, |r| async move {
            let author = match r.bot {
                Some(bot) => Author::Bot {
                    id: bot.id,
                    name: bot.name,
                },
                None => Author::System,
            };
            let stored = api
                .post(Post {
                    room: r.room,
                    author,
                    idempotency_key: r.idempotency_key,
                    text: r.text,
                })
                .await?;
            Ok(SendMessageResult {
                message_id: stored.id,
                room: stored.message.room.to_string(),
                sequence: stored.sequence,
                server_time_unix_ms: stored.time_unix_ms,
                client_message_id: stored.message.client_message_id,
            })
        })
        .await
    }

    async fn list_rooms(
        &self,
        request: Request<ApiRoomsRequest>,
    ) -> Result<Response<ApiRoomsResult>, Status> {
        let api = &self.api;
        self.answer(ApiCall::Rooms, request, |r| async move {
            let after = (!r.after.is_empty()).then_some(r.after.as_str());
            let page = api.rooms(after, r.limit as usize);
            Ok(ApiRoomsResult {
                rooms: page
                    .rooms
                    .into_iter()
                    .map(|room| ApiRoom {
                        room: room.room.to_string(),
                        members: u32::try_from(room.members).unwrap_or(u32::MAX),
                    })
                    .collect(),
                next: page.next.unwrap_or_default(),
            })
        })
        .await
    }

    async fn list_members(
        &self,
        request: Request<ListMembersRequest>,
    ) -> Result<Response<ListMembersResult>, Status> {
        let api = &self.api;
        self.answer(ApiCall::Members, request, |r| async move {
            let limit = usize::try_from(r.limit).unwrap_or(usize::MAX);
            let page = api.members(&r.room, &r.page_after, limit)?;
            Ok(members::list_result(&r.room, &page))
        })
        .await
    }

    async fn history(
        &self,
        request: Request<HistoryRequest>,
    ) -> Result<Response<HistoryResponse>, Status> {
        let api = &self.api;
        self.answer(ApiCall::History, request, |r| async move {
            let room = r.room.clone();
            api.history(&room, r).await
        })
        .await
    }

    async fn disconnect_user(
        &self,
        request: Request<ApiDisconnectRequest>,
    ) -> Result<Response<ApiDisconnectResult>, Status> {
        let api = &self.api;
        self.answer(ApiCall::Disconnect, request, |r| async move {
            let ended = api.disconnect(&r.user_id, &r.reason, r.reconnect).await?;
            Ok(ApiDisconnectResult {
                sessions_here: u32::try_from(ended).unwrap_or(u32::MAX),
            })
        })
        .await
    }

    async fn remove_member(
        &self,
        request: Request<ApiRemoveRequest>,
    ) -> Result<Response<ApiRemoveResult>, Status> {
        let api = &self.api;
        self.answer(ApiCall::Remove, request, |r| async move {
            let told = api.remove(&r.room, &r.user_id, &r.reason).await?;
            Ok(ApiRemoveResult {
                sessions_here: u32::try_from(told).unwrap_or(u32::MAX),
            })
        })
        .await
    }

    async fn ban_member(
        &self,
        request: Request<ApiBanRequest>,
    ) -> Result<Response<ApiBanResult>, Status> {
        let api = &self.api;
        self.answer(ApiCall::Ban, request, |r| async move {
            let (was_banned, told) = api
                .ban(&r.room, &r.user_id, r.until_unix_ms, &r.reason)
                .await?;
            Ok(ApiBanResult {
                was_banned,
                sessions_here: u32::try_from(told).unwrap_or(u32::MAX),
            })
        })
        .await
    }

    async fn lift_ban(
        &self,
        request: Request<ApiLiftBanRequest>,
    ) -> Result<Response<ApiLiftBanResult>, Status> {
        let api = &self.api;
        self.answer(ApiCall::LiftBan, request, |r| async move {
            let lifted = api.lift_ban(&r.room, &r.user_id).await?;
            Ok(ApiLiftBanResult { lifted })
        })
        .await
    }

    async fn list_bans(
        &self,
        request: Request<ApiBansRequest>,
    ) -> Result<Response<ApiBansResult>, Status> {
        let api = &self.api;
        self.answer(ApiCall::Bans, request, |r| async move {
            let bans = api.bans(&r.room).await?;
            Ok(ApiBansResult {
                bans: bans
                    .into_iter()
                    .map(|b| ApiBan {
                        user_id: b.user_id,
                        until_unix_ms: b.until_ms,
                        reason: b.reason,
                        created_at_unix_ms: b.created_at_ms,
                    })
                    .collect(),
            })
        })
        .await
    }

    async fn get_user(
        &self,
        request: Request<ApiUserRequest>,
    ) -> Result<Response<ApiUserResult>, Status> {
        let api = &self.api;
        self.answer(ApiCall::User, request, |r| async move {
            let user = api.user(&r.user_id)?;
            Ok(ApiUserResult {
                user_id: r.user_id,
                rooms: user.rooms.iter().map(|room| room.to_string()).collect(),
                sessions_here: u32::try_from(user.sessions_here).unwrap_or(u32::MAX),
                instances: user.instances.iter().map(|i| i.to_string()).collect(),
            })
        })
        .await
    }
}
