//! Entry points for fuzzing (`fuzz/`, `cargo fuzz`) and for the tests that
//! feed them random bytes on stable Rust: what the server does with bytes
//! from the network before any state changes, which must never panic.

use crate::auth::Authenticator;
use crate::config::{AuthConfig, AuthMode};
use crate::domain::validate::{self, RoomName};
use chat_proto::v1::{ClientFrame, client_frame::Request};
use prost::Message;
use std::sync::LazyLock;

/// Decodes `data` as a client frame, as the Session stream does, and runs
/// every validation a request of that kind goes through.
pub fn client_frame(data: &[u8]) {
    let Ok(frame) = ClientFrame::decode(data) else {
        return;
    };
    let limit = crate::config::Limits::default().max_text_bytes;
    match frame.request {
        Some(Request::JoinRoom(r)) => {
            let _ = RoomName::parse(&r.room);
        }
        Some(Request::LeaveRoom(r)) => {
            let _ = RoomName::parse(&r.room);
        }
        Some(Request::ListMembers(r)) => {
            let _ = RoomName::parse(&r.room);
        }
        Some(Request::Typing(r)) => {
            let _ = RoomName::parse(&r.room);
        }
        Some(Request::History(r)) => {
            let _ = RoomName::parse(&r.room);
            let _ = chat_proto::v1::HistoryDirection::try_from(r.direction);
        }
        Some(Request::SendMessage(r)) => {
            let _ = RoomName::parse(&r.room);
            let _ = validate::client_message_id(&r.client_message_id);
            let _ = validate::message_text(&r.text, limit);
        }
        Some(Request::EditMessage(r)) => {
            let _ = RoomName::parse(&r.room);
            let _ = validate::client_message_id(&r.client_message_id);
            let _ = validate::message_text(&r.text, limit);
            let _ = validate::target_sequence(r.sequence);
        }
        Some(Request::DeleteMessage(r)) => {
            let _ = RoomName::parse(&r.room);
            let _ = validate::client_message_id(&r.client_message_id);
            let _ = validate::target_sequence(r.sequence);
        }
        Some(Request::React(r)) => {
            let _ = RoomName::parse(&r.room);
            let _ = validate::client_message_id(&r.client_message_id);
            let _ = validate::emoji(&r.emoji);
            let _ = validate::target_sequence(r.sequence);
        }
        Some(Request::OpenDirect(r)) => {
            let _ = crate::domain::direct::peer(&r.user_id, "fuzzer");
        }
        Some(Request::MarkRead(r)) => {
            let _ = RoomName::parse(&r.room);
        }
        Some(Request::ListRooms(_))
        | Some(Request::ListDirect(_))
        | Some(Request::Ping(_))
        | None => {}
    }
}

static AUTH: LazyLock<Authenticator> = LazyLock::new(|| {
    Authenticator::new(&AuthConfig {
        mode: AuthMode::Jwt,
        secret: "fuzzing-secret-fuzzing-secret-fuzzing".into(),
        ..AuthConfig::default()
    })
    .expect("a valid fuzzing configuration")
});

/// Checks `data` as an `authorization` header value, and as a display
/// name.
pub fn credentials(data: &[u8]) {
    let _ = AUTH.check_header(Some(data));
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = validate::display_name(text);
    }
}
