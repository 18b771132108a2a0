//! Direct conversations: one room per pair of users, named `dm.` and 40
//! random hex digits when the pair first opens it (the store keeps which
//! pair a room is for), so nobody can guess it or have written there
//! first. Rooms with that prefix are never ordinary rooms: only the pair
//! may join, read or write to them.

use super::{RequestError, RoomName};

/// What every direct conversation's room name starts with.
pub const PREFIX: &str = "dm.";

/// The longest user id a direct conversation may name.
pub const MAX_USER_ID_BYTES: usize = 128;

/// A fresh room for a conversation: `dm.` and 40 random hex digits (160
/// bits from the system's random source).
pub fn new_room() -> RoomName {
    let (a, b) = (uuid::Uuid::new_v4(), uuid::Uuid::new_v4());
    let hex = format!("{}{}", a.simple(), b.simple());
    // A v4 UUID's version and variant digits are fixed: skip them.
    let random: String = hex
        .char_indices()
        .filter(|(i, _)| !matches!(i % 32, 12 | 16))
        .map(|(_, c)| c)
        .take(40)
        .collect();
    RoomName::parse(&format!("{PREFIX}{random}")).expect("a valid room name")
}

/// Whether `room` is a direct conversation's.
pub fn is_direct(room: &RoomName) -> bool {
    room.as_str().starts_with(PREFIX)
}

/// Validates the other user of a conversation `me` opens: 1 to
/// [`MAX_USER_ID_BYTES`] bytes without control characters, not one of the
/// server API's senders (no one could answer there), and not `me`.
pub fn peer<'a>(peer: &'a str, me: &str) -> Result<&'a str, RequestError> {
    if peer.is_empty() || peer.len() > MAX_USER_ID_BYTES || peer.chars().any(char::is_control) {
        return Err(RequestError::InvalidArgument(format!(
            "user_id must be 1 to {MAX_USER_ID_BYTES} bytes without control characters"
        )));
    }
    super::user::client_user_id(peer)?;
    if peer == me {
        return Err(RequestError::InvalidArgument(
            "a direct conversation is with another user".into(),
        ));
    }
    Ok(peer)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_room_is_a_direct_room_and_never_the_same() {
        let (one, two) = (new_room(), new_room());
        assert!(is_direct(&one));
        assert_eq!(one.as_str().len(), PREFIX.len() + 40);
        assert!(
            one.as_str()[PREFIX.len()..]
                .chars()
                .all(|c| c.is_ascii_hexdigit())
        );
        assert_ne!(one, two);
        assert!(!is_direct(&RoomName::parse("lobby").unwrap()));
    }

    #[test]
    fn a_peer_is_another_valid_user_id() {
        assert!(peer("bob", "alice").is_ok());
        assert!(peer("alice", "alice").is_err());
        assert!(peer("", "alice").is_err());
        assert!(peer("a\nb", "alice").is_err());
        assert!(peer(&"x".repeat(129), "alice").is_err());
        assert!(peer("system", "alice").is_err(), "the server API's sender");
        assert!(peer("bot:ci", "alice").is_err());
    }
}
