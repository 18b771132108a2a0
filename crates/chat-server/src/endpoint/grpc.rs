//! The gRPC face of the hub: accepts Session streams and hands each to a
//! [`Session`] task. Thin on purpose; the logic lives in the hub.

use crate::auth::{Authenticator, Identity};
use crate::config::SessionConfig;
use crate::domain::RequestError;
use crate::domain::validate;
use crate::hub::{Hub, OutboxStream};
use crate::limiter::Admission;
use crate::metrics::Label;
use crate::session::{InboundError, Session, history};
use crate::telemetry::trace;
use chat_proto::EncodedFrame;
use chat_proto::v1::chat_service_server::ChatService;
use chat_proto::v1::{ClientFrame, HistoryRequest, HistoryResponse};
use futures::{Stream, StreamExt};
use std::sync::Arc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tonic::metadata::MetadataMap;
use tonic::{Request, Response, Status, Streaming};
use tracing::Instrument;

/// Metadata key naming the client (ASCII names).
pub const NAME_HEADER: &str = "chat-name";
/// Metadata key naming the client (any UTF-8, binary header).
pub const NAME_BIN_HEADER: &str = "chat-name-bin";

/// Metadata key carrying the bearer token.
pub const AUTHORIZATION_HEADER: &str = "authorization";

/// Metadata key of an UNAUTHENTICATED refusal: why the token was refused,
/// one of [`crate::metrics::AuthFailure`].
pub const AUTH_REASON_HEADER: &str = "chat-auth-reason";

/// Metadata key of a rate-limited call's refusal: milliseconds until a
/// retry succeeds.
pub const RETRY_AFTER_HEADER: &str = "chat-retry-after-ms";

/// The `chat.v1.ChatService` implementation.
pub struct ChatGrpc {
    /// The instance's state every session works on.
    hub: Arc<Hub>,
    /// Who a caller is: tokens checked, or the name given with auth off.
    auth: Arc<Authenticator>,
    /// Connection limits and the per-user history rate.
    admission: Arc<Admission>,
    /// Idle timeout, keepalive and lifetime of each session.
    timing: SessionConfig,
    /// Refuses new sessions and ends running ones when cancelled.
    shutdown: CancellationToken,
    /// Where session tasks run, so the drain waits for their goodbyes.
    tasks: TaskTracker,
}

impl ChatGrpc {
    /// A service over `hub`; session tasks are tracked by `tasks` and end
    /// when `shutdown` fires.
    pub fn new(
        hub: Arc<Hub>,
        auth: Arc<Authenticator>,
        admission: Arc<Admission>,
        timing: SessionConfig,
        shutdown: CancellationToken,
        tasks: TaskTracker,
    ) -> Self {
        ChatGrpc {
            hub,
            auth,
            admission,
            timing,
            shutdown,
            tasks,
        }
    }
}

/// A refusal of the Session call, carrying the stable code in metadata too.
pub(crate) fn refuse(code: tonic::Code, chat_code: &'static str, message: String) -> Status {
    let mut metadata = MetadataMap::new();
    metadata.insert(
        "chat-error-code",
        tonic::metadata::MetadataValue::from_static(chat_code),
    );
    Status::with_metadata(code, message, metadata)
}

/// Reads and validates the client's display name from the call metadata.
fn display_name(metadata: &MetadataMap) -> Result<String, Status> {
    let invalid = |m: String| refuse(tonic::Code::InvalidArgument, "INVALID_ARGUMENT", m);
    let name = if let Some(v) = metadata.get_bin(NAME_BIN_HEADER) {
        let bytes = v
            .to_bytes()
            .map_err(|_| invalid(format!("{NAME_BIN_HEADER} is not valid base64")))?;
        String::from_utf8(bytes.to_vec())
            .map_err(|_| invalid(format!("{NAME_BIN_HEADER} is not UTF-8")))?
    } else if let Some(v) = metadata.get(NAME_HEADER) {
        v.to_str()
            .map_err(|_| {
                invalid(format!(
                    "{NAME_HEADER} must be ASCII; use {NAME_BIN_HEADER}"
                ))
            })?
            .to_string()
    } else {
        return Err(invalid(format!(
            "missing {NAME_HEADER} metadata: say who you are"
        )));
    };
    validate::display_name(&name).map_err(|e| invalid(e.to_string()))?;
    // With auth off the name is the user id.
    crate::domain::user::client_user_id(&name).map_err(|e| invalid(e.to_string()))?;
    Ok(name)
}

/// Who is calling: the bearer token's identity (auth on), or the name the
/// client gives (auth off).
fn identify(hub: &Hub, auth: &Authenticator, metadata: &MetadataMap) -> Result<Identity, Status> {
    if !auth.is_enabled() {
        return Ok(auth.anonymous(display_name(metadata)?));
    }
    let header = metadata.get(AUTHORIZATION_HEADER).map(|v| v.as_bytes());
    auth.check_header(header).map_err(|e| {
        tracing::info!(reason = %e.reason(), error = %e, "authentication failed");
        hub.metrics().auth_failures.inc(e.reason());
        let mut status = refuse(
            tonic::Code::Unauthenticated,
            "UNAUTHENTICATED",
            e.to_string(),
        );
        status.metadata_mut().insert(
            AUTH_REASON_HEADER,
            tonic::metadata::MetadataValue::from_static(e.reason().as_str()),
        );
        status
    })
}

impl ChatGrpc {
    /// A page of a room's history, for the History call.
    async fn history_page(
        &self,
        request: Request<HistoryRequest>,
    ) -> Result<Response<HistoryResponse>, Status> {
        let identity = identify(&self.hub, &self.auth, request.metadata())?;
        let rate = self.admission.check_history(&identity.user.user_id);
        history::page(&self.hub, &identity, rate, request.into_inner())
            .await
            .map(Response::new)
            .map_err(|e| refusal(&e))
    }
}

/// A refused request as a gRPC status: the matching gRPC code, the stable
/// code in `chat-error-code`, and for a rate limit the time until a retry
/// succeeds in `chat-retry-after-ms`.
pub(crate) fn refusal(error: &RequestError) -> Status {
    let code = match error {
        RequestError::InvalidArgument(_) | RequestError::MessageTooLarge { .. } => {
            tonic::Code::InvalidArgument
        }
        RequestError::NotAMember(_) | RequestError::AlreadyAMember(_) => {
            tonic::Code::FailedPrecondition
        }
        RequestError::TooManyRooms(_) | RequestError::RateLimited { .. } => {
            tonic::Code::ResourceExhausted
        }
        RequestError::PermissionDenied(_)
        | RequestError::NotTheAuthor { .. }
        | RequestError::Banned { .. } => tonic::Code::PermissionDenied,
        RequestError::MessageNotFound { .. } => tonic::Code::NotFound,
        RequestError::TooManyReactions { .. } => tonic::Code::ResourceExhausted,
        RequestError::Unavailable(_) => tonic::Code::Unavailable,
        RequestError::Internal(_) => tonic::Code::Internal,
    };
    let mut status = refuse(code, error.code_name(), error.to_string());
    if let RequestError::RateLimited { .. } = error
        && let Ok(value) = error.to_wire().retry_after_ms.to_string().parse()
    {
        status.metadata_mut().insert(RETRY_AFTER_HEADER, value);
    }
    status
}

#[tonic::async_trait]
impl ChatService for ChatGrpc {
    async fn history(
        &self,
        request: Request<HistoryRequest>,
    ) -> Result<Response<HistoryResponse>, Status> {
        let parent = trace::from_metadata(request.metadata());
        let span = trace::request_span("chat.history", 0, self.hub.server_id(), parent);
        let result = self.history_page(request).instrument(span.clone()).await;
        if let Err(status) = &result {
            let code = status.metadata().get("chat-error-code");
            let code = code.and_then(|c| c.to_str().ok()).unwrap_or("UNKNOWN");
            trace::record_error(&span, code);
        }
        result
    }

    type SessionStream = SessionFrames;

    async fn session(
        &self,
        request: Request<Streaming<ClientFrame>>,
    ) -> Result<Response<Self::SessionStream>, Status> {
        if self.shutdown.is_cancelled() {
            return Err(refuse(
                tonic::Code::Unavailable,
                "UNAVAILABLE",
                "the server is shutting down".into(),
            ));
        }
        let identity = identify(&self.hub, &self.auth, request.metadata())?;
        let address = request.remote_addr().map(|a| a.ip());
        let (session, stream) = Session::admit(
            self.hub.clone(),
            &self.admission,
            identity,
            address,
            &self.timing,
            trace::from_metadata(request.metadata()),
        )
        .map_err(|refusal| {
            let mut status = refuse(
                tonic::Code::ResourceExhausted,
                "RATE_LIMITED",
                refusal.to_string(),
            );
            // A refusal by pace says when to come back.
            if let Ok(value) = refusal.retry_after_ms().to_string().parse()
                && refusal.retry_after_ms() > 0
            {
                status.metadata_mut().insert(RETRY_AFTER_HEADER, value);
            }
            status
        })?;
        let inbound = request
            .into_inner()
            .map(|frame| frame.map_err(inbound_error));
        self.tasks
            .spawn(session.run(inbound, self.shutdown.clone()));
        Ok(Response::new(SessionFrames(stream)))
    }
}

/// What a failed read of the Session stream means for the session: a
/// transport failure (the client reset the stream or the connection broke)
/// carries its cause; a frame that would not decode or was too large does
/// not.
fn inbound_error(status: Status) -> InboundError {
    if std::error::Error::source(&status).is_some() {
        InboundError::ConnectionLost(status.message().to_string())
    } else {
        InboundError::Malformed(status.message().to_string())
    }
}

/// The Session response: the connection's outbox, as the gRPC stream of
/// pre-encoded frames.
pub struct SessionFrames(OutboxStream);

impl Stream for SessionFrames {
    type Item = Result<EncodedFrame, Status>;

    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Self::Item>> {
        std::pin::Pin::new(&mut self.0)
            .poll_next(cx)
            .map(|frame| frame.map(Ok))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_from_metadata() {
        let mut m = MetadataMap::new();
        assert_eq!(
            display_name(&m).unwrap_err().code(),
            tonic::Code::InvalidArgument
        );
        m.insert(NAME_HEADER, "alice".parse().unwrap());
        assert_eq!(display_name(&m).unwrap(), "alice");
        m.insert_bin(
            NAME_BIN_HEADER,
            tonic::metadata::MetadataValue::from_bytes("Zoë".as_bytes()),
        );
        assert_eq!(display_name(&m).unwrap(), "Zoë", "the binary header wins");
        let mut bad = MetadataMap::new();
        bad.insert_bin(
            NAME_BIN_HEADER,
            tonic::metadata::MetadataValue::from_bytes(b"a\nb"),
        );
        let status = display_name(&bad).unwrap_err();
        assert_eq!(status.code(), tonic::Code::InvalidArgument);
        assert_eq!(
            status.metadata().get("chat-error-code").unwrap(),
            "INVALID_ARGUMENT"
        );
    }
}
