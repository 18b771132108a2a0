//! The `chat.v1` gRPC contract (`proto/chat/v1/chat.proto`) as Rust types.
//!
//! Clients use [`v1::chat_service_client`] with ordinary prost messages. The
//! server side ([`v1::chat_service_server`]) sends [`EncodedFrame`]s: a
//! `ServerFrame` is encoded once and the same bytes go to every recipient.
//! The server API for applications is [`v1::chat_api_server`] (and
//! [`v1::chat_api_client`] for its callers).

#![forbid(unsafe_code)]

pub mod codec;

/// Generated types of package `chat.v1` (generated code follows the
/// generators' style, not the workspace lints).
#[allow(clippy::all, missing_docs, unused_qualifications, trivial_casts)]
pub mod v1 {
    include!(concat!(env!("OUT_DIR"), "/chat.v1.rs"));
    include!(concat!(env!("OUT_DIR"), "/chat.v1.ChatService.rs"));
    include!(concat!(env!("OUT_DIR"), "/chat.v1.ChatApi.rs"));
}

use bytes::Bytes;
use prost::Message;

/// A `ServerFrame` already encoded in protobuf wire format. Cloning it is a
/// reference-count increment, so one encoding serves many recipients.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EncodedFrame(pub Bytes);

impl EncodedFrame {
    /// Encodes `frame` once.
    pub fn encode(frame: &v1::ServerFrame) -> Self {
        EncodedFrame(Bytes::from(frame.encode_to_vec()))
    }

    /// The encoded length in bytes.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether the encoding is empty (an empty `ServerFrame`).
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl From<v1::server_frame::Frame> for EncodedFrame {
    fn from(frame: v1::server_frame::Frame) -> Self {
        EncodedFrame::encode(&v1::ServerFrame { frame: Some(frame) })
    }
}
