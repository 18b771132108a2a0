//! What a client's request can fail with, each with a stable code from the
//! contract. (What can stop the server is `server::ServerError`.)

use chat_proto::v1::Error as WireError;
pub use chat_proto::v1::ErrorCode;

/// A request failed; it changed nothing. Each variant maps to one stable
/// [`ErrorCode`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    /// A malformed field.
    #[error("{0}")]
    InvalidArgument(String),
    /// Message text above the limit.
    #[error("message text is {size} bytes; the limit is {limit}")]
    MessageTooLarge {
        /// The text's size in bytes.
        size: usize,
        /// The configured limit.
        limit: usize,
    },
    /// Not a member of the room.
    #[error("not a member of room {0}")]
    NotAMember(String),
    /// Already a member of the room.
    #[error("already a member of room {0}")]
    AlreadyAMember(String),
    /// The rooms-per-connection limit is reached.
    #[error("a connection may be in at most {0} rooms")]
    TooManyRooms(usize),
    /// Over a rate limit; nothing was done.
    #[error("too many {what}; retry in {} ms", retry_after.as_millis())]
    RateLimited {
        /// What was limited (`messages`, `joins`).
        what: &'static str,
        /// When a retry can succeed.
        retry_after: std::time::Duration,
    },
    /// The user's token does not allow this in this room.
    #[error("{0}")]
    PermissionDenied(String),
    /// A change names no live message of the room.
    #[error("room {room} has no message {sequence} that can be changed")]
    MessageNotFound {
        /// The room.
        room: String,
        /// The sequence the change named.
        sequence: u64,
    },
    /// A change to another user's message.
    #[error("message {sequence} of room {room} was sent by another user")]
    NotTheAuthor {
        /// The room.
        room: String,
        /// The sequence the change named.
        sequence: u64,
    },
    /// A user's reactions on one message are at the limit.
    #[error("message {sequence} of room {room} has as many of your reactions as allowed")]
    TooManyReactions {
        /// The room.
        room: String,
        /// The message.
        sequence: u64,
    },
    /// The user is banned from the room.
    #[error("you are banned from room {room} until {until} (Unix ms): {reason}")]
    Banned {
        /// The room.
        room: String,
        /// Until when (Unix ms).
        until: i64,
        /// Why.
        reason: String,
    },
    /// The server cannot serve the request now.
    #[error("{0}")]
    Unavailable(String),
    /// A fault inside the server; details are in its log.
    #[error("internal error: {0}")]
    Internal(String),
}

impl RequestError {
    /// The stable code's name without its `ERROR_CODE_` prefix, as
    /// metadata, JSON answers and spans carry it.
    pub fn code_name(&self) -> &'static str {
        let name = self.code().as_str_name();
        name.strip_prefix("ERROR_CODE_").unwrap_or(name)
    }

    /// The stable code clients see.
    pub fn code(&self) -> ErrorCode {
        match self {
            RequestError::InvalidArgument(_) => ErrorCode::InvalidArgument,
            RequestError::MessageTooLarge { .. } => ErrorCode::MessageTooLarge,
            RequestError::NotAMember(_) => ErrorCode::NotAMember,
            RequestError::AlreadyAMember(_) => ErrorCode::AlreadyAMember,
            RequestError::TooManyRooms(_) => ErrorCode::TooManyRooms,
            RequestError::RateLimited { .. } => ErrorCode::RateLimited,
            RequestError::PermissionDenied(_) => ErrorCode::PermissionDenied,
            RequestError::MessageNotFound { .. } => ErrorCode::MessageNotFound,
            RequestError::NotTheAuthor { .. } => ErrorCode::NotTheAuthor,
            RequestError::TooManyReactions { .. } => ErrorCode::TooManyReactions,
            RequestError::Banned { .. } => ErrorCode::Banned,
            RequestError::Unavailable(_) => ErrorCode::Unavailable,
            RequestError::Internal(_) => ErrorCode::Internal,
        }
    }

    /// The error as it goes on the wire.
    pub fn to_wire(&self) -> WireError {
        WireError {
            code: self.code() as i32,
            message: self.to_string(),
            retry_after_ms: match self {
                RequestError::RateLimited { retry_after, .. } => {
                    // Rounded up: retrying at the time given succeeds.
                    retry_after
                        .as_millis()
                        .saturating_add(1)
                        .min(u32::MAX as u128) as u32
                }
                _ => 0,
            },
        }
    }
}
