//! The wire form of a room event between instances: who published it, the
//! room, its sequence number, and the already-encoded `ServerFrame` (or a
//! typing announcement).

use super::{Origin, RoomFrame, TypingNote};
use crate::domain::User;
use crate::domain::validate::RoomName;
use crate::telemetry::trace::{self, TraceParent};
use bytes::Bytes;
use chat_proto::EncodedFrame;
use prost::Message;

/// A room event as it travels over Redis or NATS (protobuf, see the field
/// tags below).
#[derive(Clone, PartialEq, Message)]
pub struct Envelope {
    /// The publishing instance's id.
    #[prost(string, tag = "1")]
    pub origin: String,
    /// The room.
    #[prost(string, tag = "2")]
    pub room: String,
    /// The room sequence number of a message; 0 for presence events.
    #[prost(uint64, tag = "3")]
    pub sequence: u64,
    /// The encoded `ServerFrame` members receive.
    #[prost(bytes = "bytes", tag = "4")]
    pub frame: Bytes,
    /// When the store acknowledged the message (Unix microseconds).
    #[prost(uint64, tag = "5")]
    pub acked_at_unix_us: u64,
    /// The W3C `traceparent` of the publishing span; empty when untraced.
    #[prost(string, tag = "6")]
    pub traceparent: String,
    /// The publishing process's incarnation (see [`Origin`]); 0 from a
    /// sender that predates it.
    #[prost(uint64, tag = "7")]
    pub incarnation: u64,
    /// From an instance older than coalesced typing: the typing user whose
    /// connections were to skip `frame` (a typing event of the old shape).
    /// Such envelopes are dropped: their frame would show this version's
    /// clients an empty typing state. Empty from this version.
    #[prost(string, tag = "8")]
    pub legacy_skip_user: String,
    /// A typing announcement (then `frame` is empty).
    #[prost(message, optional, tag = "9")]
    pub typing: Option<Typist>,
}

/// Who is typing (or stopped) in an [`Envelope`]'s room.
#[derive(Clone, PartialEq, Message)]
pub struct Typist {
    /// The user's id.
    #[prost(string, tag = "1")]
    pub user_id: String,
    /// The user's display name.
    #[prost(string, tag = "2")]
    pub display_name: String,
    /// Typing (true) or stopped (false).
    #[prost(bool, tag = "3")]
    pub typing: bool,
}

/// A backplane message that is not a valid envelope.
#[derive(Debug, thiserror::Error)]
pub enum EnvelopeError {
    /// Not protobuf of the expected shape.
    #[error("undecodable envelope: {0}")]
    Decode(#[from] prost::DecodeError),
    /// The room name is invalid.
    #[error("envelope names an invalid room")]
    Room,
    /// The typing user's id or name is invalid.
    #[error("envelope names an invalid typist")]
    Typist,
    /// A typing frame from an instance older than coalesced typing.
    #[error("typing event from an older version, dropped")]
    Outdated,
}

impl Envelope {
    /// Encodes `frame` as published by `origin`.
    pub fn encode_frame(origin: &Origin, frame: &RoomFrame) -> Bytes {
        Envelope {
            origin: origin.id.to_string(),
            incarnation: origin.incarnation,
            room: frame.room.to_string(),
            sequence: frame.sequence.unwrap_or(0),
            frame: frame.frame.0.clone(),
            acked_at_unix_us: frame.acked_at_unix_us,
            traceparent: frame.trace.map(|t| t.to_string()).unwrap_or_default(),
            legacy_skip_user: String::new(),
            typing: frame.typing.as_ref().map(|note| Typist {
                user_id: note.user.user_id.to_string(),
                display_name: note.user.display_name.to_string(),
                typing: note.typing,
            }),
        }
        .encode_to_vec()
        .into()
    }

    /// Decodes a received payload into its origin's id and incarnation and
    /// the frame; the frame bytes are shared, not copied.
    pub fn decode_frame(payload: Bytes) -> Result<(String, u64, RoomFrame), EnvelopeError> {
        let envelope = Envelope::decode(payload)?;
        let room = RoomName::parse(&envelope.room).map_err(|_| EnvelopeError::Room)?;
        if !envelope.legacy_skip_user.is_empty() {
            return Err(EnvelopeError::Outdated);
        }
        let typing = match envelope.typing {
            Some(t) => Some(TypingNote {
                user: User::parse(&t.user_id, &t.display_name)
                    .map_err(|_| EnvelopeError::Typist)?,
                typing: t.typing,
            }),
            None => None,
        };
        let frame = RoomFrame {
            room,
            sequence: (envelope.sequence > 0).then_some(envelope.sequence),
            frame: EncodedFrame(envelope.frame),
            acked_at_unix_us: envelope.acked_at_unix_us,
            // An invalid one starts no trace; it does not drop the event.
            trace: (trace::enabled() && !envelope.traceparent.is_empty())
                .then(|| TraceParent::parse(&envelope.traceparent))
                .flatten(),
            typing,
        };
        Ok((envelope.origin, envelope.incarnation, frame))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_rejects_garbage() {
        let frame = RoomFrame {
            room: RoomName::parse("lobby").unwrap(),
            sequence: Some(7),
            frame: EncodedFrame(Bytes::from_static(b"\x1a\x03abc")),
            acked_at_unix_us: 1_795_000_000_000_000,
            trace: None,
            typing: Some(TypingNote {
                user: User::new("ann", "Ann"),
                typing: true,
            }),
        };
        let node = Origin {
            id: "node-1".into(),
            incarnation: 9,
        };
        let (origin, incarnation, back) =
            Envelope::decode_frame(Envelope::encode_frame(&node, &frame)).unwrap();
        assert_eq!((origin.as_str(), incarnation), ("node-1", 9));
        assert!(node.is_echo(&origin, incarnation));
        assert!(
            !node.is_echo(&origin, 10),
            "a second process with the same id"
        );
        assert!(
            node.is_echo(&origin, 0),
            "a sender from before incarnations"
        );
        assert!(!node.is_echo("node-2", 9));
        assert_eq!(back.room, frame.room);
        assert_eq!(back.sequence, Some(7));
        assert_eq!(back.frame, frame.frame);
        assert_eq!(back.acked_at_unix_us, frame.acked_at_unix_us);
        assert_eq!(back.typing, frame.typing);
        assert!(Envelope::decode_frame(Bytes::from_static(b"\xff\xff\xff")).is_err());
        let bad_room = Envelope {
            origin: "x".into(),
            room: "no spaces".into(),
            sequence: 0,
            frame: Bytes::new(),
            acked_at_unix_us: 0,
            traceparent: String::new(),
            incarnation: 0,
            legacy_skip_user: String::new(),
            typing: None,
        };
        assert!(Envelope::decode_frame(bad_room.encode_to_vec().into()).is_err());
        let bad_typist = Envelope {
            room: "lobby".into(),
            typing: Some(Typist {
                user_id: String::new(),
                display_name: "Nobody".into(),
                typing: true,
            }),
            ..bad_room
        };
        let refused = Envelope::decode_frame(bad_typist.encode_to_vec().into());
        assert!(matches!(refused, Err(EnvelopeError::Typist)));
        let outdated = Envelope {
            legacy_skip_user: "ann".into(),
            typing: None,
            ..bad_typist
        };
        let refused = Envelope::decode_frame(outdated.encode_to_vec().into());
        assert!(matches!(refused, Err(EnvelopeError::Outdated)));
    }
}
