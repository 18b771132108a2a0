//! What a client request can fail with.

use chat_proto::v1::ErrorCode;
use std::time::Duration;

/// A request did not succeed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ClientError {
    /// The server refused the request with a stable code; nothing changed.
    #[error("{}: {message}", code.as_str_name().trim_start_matches("ERROR_CODE_"))]
    Server {
        /// The stable code.
        code: ErrorCode,
        /// The server's explanation.
        message: String,
        /// When to retry, if the server said (milliseconds).
        retry_after_ms: u32,
    },
    /// There is no session right now (connecting or reconnecting).
    #[error("not connected to the server")]
    NotConnected,
    /// The session ended before the reply arrived; the request may or may
    /// not have taken effect.
    #[error("the connection was lost before the reply arrived")]
    Disconnected,
    /// No reply within the request timeout.
    #[error("no reply within {0:?}")]
    Timeout(Duration),
    /// The server URL cannot be used.
    #[error("invalid server URL: {0}")]
    InvalidUrl(String),
    /// The server answered with a reply of another kind.
    #[error("the server sent a reply of the wrong kind")]
    UnexpectedReply,
    /// The client was closed.
    #[error("the client is closed")]
    Closed,
}

impl ClientError {
    /// The server's stable code, if the server refused the request.
    pub fn code(&self) -> Option<ErrorCode> {
        match self {
            ClientError::Server { code, .. } => Some(*code),
            _ => None,
        }
    }
}
