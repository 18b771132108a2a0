//! Words both console modes use for the same things: a list of members and
//! a disconnect reason.

use chat_client::proto::{DisconnectReason, Member};

/// The members' display names, comma-separated.
pub(super) fn names(members: &[Member]) -> String {
    members
        .iter()
        .map(|m| m.display_name.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

/// A disconnect reason's stable name, e.g. `SHUTDOWN` (`UNSPECIFIED` for a
/// value this client does not know).
pub(super) fn reason_name(reason: i32) -> String {
    DisconnectReason::try_from(reason)
        .unwrap_or(DisconnectReason::Unspecified)
        .as_str_name()
        .trim_start_matches("DISCONNECT_REASON_")
        .to_string()
}
