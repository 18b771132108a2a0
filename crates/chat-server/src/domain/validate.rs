//! Validation of everything a client names: rooms, display names, message
//! ids and texts. Each check returns the stable error a client sees.

use super::error::RequestError;
use std::sync::Arc;

/// Longest room name, in characters.
pub const MAX_ROOM_CHARS: usize = 64;
/// Longest display name, in characters.
pub const MAX_NAME_CHARS: usize = 32;
/// Longest client message id, in bytes.
pub const MAX_CLIENT_MESSAGE_ID_BYTES: usize = 128;

/// A validated room name: 1–64 characters of `[A-Za-z0-9_.-]`. Cheap to
/// clone (shared).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RoomName(Arc<str>);

impl RoomName {
    /// Validates `name`.
    pub fn parse(name: &str) -> Result<RoomName, RequestError> {
        let valid_char = |c: u8| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'.' | b'-');
        if name.is_empty() || name.len() > MAX_ROOM_CHARS || !name.bytes().all(valid_char) {
            return Err(RequestError::InvalidArgument(format!(
                "room name must be 1 to {MAX_ROOM_CHARS} characters of A-Z a-z 0-9 _ . - (got {:?})",
                truncate_for_message(name)
            )));
        }
        Ok(RoomName(Arc::from(name)))
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for RoomName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// Validates a display name: 1–32 characters, none of them a control
/// character, and not only whitespace. Returns it unchanged.
pub fn display_name(name: &str) -> Result<&str, RequestError> {
    let chars = name.chars().count();
    if chars == 0 || chars > MAX_NAME_CHARS {
        return Err(RequestError::InvalidArgument(format!(
            "display name must be 1 to {MAX_NAME_CHARS} characters (got {chars})"
        )));
    }
    if name.chars().any(char::is_control) {
        return Err(RequestError::InvalidArgument(
            "display name must not contain control characters".into(),
        ));
    }
    if name.trim().is_empty() {
        return Err(RequestError::InvalidArgument(
            "display name must not be only whitespace".into(),
        ));
    }
    Ok(name)
}

/// Validates message text: 1 up to `max_bytes` bytes (UTF-8 is guaranteed by
/// protobuf decoding).
pub fn message_text(text: &str, max_bytes: usize) -> Result<&str, RequestError> {
    if text.is_empty() {
        return Err(RequestError::InvalidArgument(
            "message text is empty".into(),
        ));
    }
    if text.len() > max_bytes {
        return Err(RequestError::MessageTooLarge {
            size: text.len(),
            limit: max_bytes,
        });
    }
    Ok(text)
}

/// Validates the sequence an edit or a delete names: a message's, so at
/// least 1 (and within the store's signed 64-bit numbers).
pub fn target_sequence(sequence: u64) -> Result<u64, RequestError> {
    if sequence == 0 || sequence > i64::MAX as u64 {
        return Err(RequestError::InvalidArgument(format!(
            "sequence {sequence} names no message (they start at 1)"
        )));
    }
    Ok(sequence)
}

/// Emoji reactions are at most this long, in bytes (a flag, a skin-toned
/// emoji or a short family sequence fits).
pub const MAX_EMOJI_BYTES: usize = 32;

/// Validates a reaction: 1 to [`MAX_EMOJI_BYTES`] bytes, no whitespace,
/// control characters or bidirectional overrides (which would turn the
/// text shown around it).
pub fn emoji(emoji: &str) -> Result<&str, RequestError> {
    let bidi = |c: char| matches!(c, '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}');
    if emoji.is_empty()
        || emoji.len() > MAX_EMOJI_BYTES
        || emoji
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || bidi(c))
    {
        return Err(RequestError::InvalidArgument(format!(
            "a reaction is 1 to {MAX_EMOJI_BYTES} bytes without spaces or control characters"
        )));
    }
    Ok(emoji)
}

/// Validates the client's own message id: 1 to 128 bytes without control
/// characters.
pub fn client_message_id(id: &str) -> Result<&str, RequestError> {
    if id.is_empty() || id.len() > MAX_CLIENT_MESSAGE_ID_BYTES || id.chars().any(char::is_control) {
        return Err(RequestError::InvalidArgument(format!(
            "client_message_id must be 1 to {MAX_CLIENT_MESSAGE_ID_BYTES} bytes without control characters"
        )));
    }
    Ok(id)
}

/// Keeps hostile input out of error messages at a readable size.
fn truncate_for_message(s: &str) -> &str {
    match s.char_indices().nth(MAX_ROOM_CHARS + 1) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::ErrorCode;

    fn code<T>(r: Result<T, RequestError>) -> ErrorCode {
        match r {
            Ok(_) => panic!("expected an error"),
            Err(e) => e.code(),
        }
    }

    #[test]
    fn room_names() {
        for ok in ["lobby", "a", "Team_1.dev-ops", &"x".repeat(64)] {
            assert_eq!(RoomName::parse(ok).expect(ok).as_str(), ok);
        }
        for bad in [
            "",
            &"x".repeat(65),
            "has space",
            "slash/",
            "ümlaut",
            "tab\t",
            "a:b",
            "#room",
        ] {
            assert_eq!(
                code(RoomName::parse(bad)),
                ErrorCode::InvalidArgument,
                "{bad:?}"
            );
        }
    }

    #[test]
    fn display_names() {
        for ok in [
            "alice",
            "Bob Smith",
            "Zoë",
            "日本語の名前",
            &"n".repeat(32),
            "a-b_c.d!",
        ] {
            assert_eq!(display_name(ok).expect(ok), ok);
        }
        for bad in [
            "",
            &"n".repeat(33),
            "new\nline",
            "bell\u{7}",
            "   ",
            "esc\u{1b}[31m",
        ] {
            assert_eq!(
                code(display_name(bad)),
                ErrorCode::InvalidArgument,
                "{bad:?}"
            );
        }
        // 32 characters of a multi-byte script are fine: the limit counts characters.
        assert!(display_name(&"é".repeat(32)).is_ok());
    }

    #[test]
    fn texts() {
        assert_eq!(message_text("hi", 4096).unwrap(), "hi");
        assert_eq!(message_text(&"x".repeat(4096), 4096).unwrap().len(), 4096);
        assert_eq!(code(message_text("", 4096)), ErrorCode::InvalidArgument);
        assert_eq!(
            code(message_text(&"x".repeat(4097), 4096)),
            ErrorCode::MessageTooLarge
        );
        // The limit is in bytes: 2 two-byte characters exceed 3 bytes.
        assert_eq!(code(message_text("éé", 3)), ErrorCode::MessageTooLarge);
    }

    #[test]
    fn client_message_ids() {
        assert!(client_message_id("0b0f6c52-3a43-4d0e-9d59-8d8cf0f7e0a1").is_ok());
        assert_eq!(code(client_message_id("")), ErrorCode::InvalidArgument);
        assert_eq!(
            code(client_message_id(&"i".repeat(129))),
            ErrorCode::InvalidArgument
        );
        assert_eq!(
            code(client_message_id("a\u{0}b")),
            ErrorCode::InvalidArgument
        );
    }
}
