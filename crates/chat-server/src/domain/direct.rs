//! Direct conversations: one room per pair of users, named so that both
//! users (and every instance) find the same one without asking anybody:
//! `dm.` and 40 hex digits of the SHA-256 of the two user ids in order.
//! Rooms with that prefix are never ordinary rooms: only the pair may join,
//! read or write to them.

use super::{RequestError, RoomName};
use sha2::{Digest, Sha256};

/// What every direct conversation's room name starts with.
pub const PREFIX: &str = "dm.";

/// The longest user id a direct conversation may name.
pub const MAX_USER_ID_BYTES: usize = 128;

/// The room of the conversation between users `a` and `b` (in either
/// order).
pub fn room(a: &str, b: &str) -> RoomName {
    let (first, second) = if a <= b { (a, b) } else { (b, a) };
    let mut hash = Sha256::new();
    hash.update((first.len() as u64).to_be_bytes());
    hash.update(first.as_bytes());
    hash.update(second.as_bytes());
    let digest = hash.finalize();
    let hex: String = digest[..20].iter().map(|b| format!("{b:02x}")).collect();
    RoomName::parse(&format!("{PREFIX}{hex}")).expect("a valid room name")
}

/// Whether `room` is a direct conversation's.
pub fn is_direct(room: &RoomName) -> bool {
    room.as_str().starts_with(PREFIX)
}

/// Validates the other user of a conversation `me` opens: 1 to
/// [`MAX_USER_ID_BYTES`] bytes without control characters, and not `me`.
pub fn peer<'a>(peer: &'a str, me: &str) -> Result<&'a str, RequestError> {
    if peer.is_empty() || peer.len() > MAX_USER_ID_BYTES || peer.chars().any(char::is_control) {
        return Err(RequestError::InvalidArgument(format!(
            "user_id must be 1 to {MAX_USER_ID_BYTES} bytes without control characters"
        )));
    }
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
    fn the_room_is_the_same_both_ways_and_differs_per_pair() {
        let ab = room("alice", "bob");
        assert_eq!(ab, room("bob", "alice"));
        assert!(is_direct(&ab));
        assert_eq!(ab.as_str().len(), PREFIX.len() + 40);
        assert_ne!(ab, room("alice", "bobby"));
        // The length prefix keeps ("ab", "c") apart from ("a", "bc").
        assert_ne!(room("ab", "c"), room("a", "bc"));
        assert!(!is_direct(&RoomName::parse("lobby").unwrap()));
    }

    #[test]
    fn a_peer_is_another_valid_user_id() {
        assert!(peer("bob", "alice").is_ok());
        assert!(peer("alice", "alice").is_err());
        assert!(peer("", "alice").is_err());
        assert!(peer("a\nb", "alice").is_err());
        assert!(peer(&"x".repeat(129), "alice").is_err());
    }
}
