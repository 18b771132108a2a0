//! The domain: the types every other layer speaks in, depending on nothing
//! else of this crate. Who a user is ([`User`]), what a room is called
//! ([`RoomName`]) and what a client may name (`validate`), what a request
//! can fail with ([`RequestError`] and its stable [`ErrorCode`]), the rooms of
//! direct conversations (`direct`), values
//! that must never print ([`Secret`]), and cheap spread-out fractions
//! (`random`). The wall clock is `chat_util::now_unix_ms`.

pub mod direct;
pub mod error;
pub mod random;
pub mod user;
pub mod validate;

/// Values that must never print (tokens, secrets), shared with the client.
pub use chat_util::Secret;
pub use error::{ErrorCode, RequestError};
pub use user::User;
pub use validate::RoomName;
