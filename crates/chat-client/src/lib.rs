//! Client library for the chat server: one [`Client`] keeps a session
//! stream open — connecting, reconnecting with exponential backoff and
//! jitter, rejoining its rooms, and pinging so it notices a dead server —
//! and offers typed requests with replies plus a stream of [`Event`]s.

#![forbid(unsafe_code)]

mod backoff;
mod client;
mod error;
mod event;
mod sender;
mod token;

pub use backoff::Backoff;
pub use client::{Client, ClientConfig, ClientTls, ConnectionState};
pub use error::ClientError;
pub use event::{Event, Events};
pub use sender::application_sender;
pub use token::TokenProvider;

/// The wire types, for callers that want them.
pub use chat_proto::v1 as proto;
