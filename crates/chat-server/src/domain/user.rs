//! Who a user is: the stable id tokens carry in `sub` (or, with auth off,
//! the name a client gives), and the display name shown beside their
//! messages. One rule for a user id, used by auth and by what other
//! instances report.

use super::error::RequestError;
use std::sync::Arc;

/// Longest user id, in bytes.
pub const MAX_USER_ID_BYTES: usize = 128;

/// The user id prefix of the bots an application posts as through the
/// server API (`bot:` and the bot's own id); no client may have it.
pub const BOT_PREFIX: &str = "bot:";

/// The user id the server API posts as for the system itself; no client
/// may have it.
pub const SYSTEM_ID: &str = "system";

/// Whether `id` belongs, or looks like it belongs, to the server API's
/// senders (a bot or the system; in any letter case), never to a client.
pub fn is_reserved(id: &str) -> bool {
    id.eq_ignore_ascii_case(SYSTEM_ID)
        || id
            .get(..BOT_PREFIX.len())
            .is_some_and(|p| p.eq_ignore_ascii_case(BOT_PREFIX))
}

/// Validates a client's user id (a token's `sub`, or its name with auth
/// off): [`user_id`]'s rule, and not one of the server API's senders.
pub fn client_user_id(id: &str) -> Result<&str, RequestError> {
    let id = user_id(id)?;
    if is_reserved(id) {
        return Err(RequestError::InvalidArgument(format!(
            "user id {id:?} is reserved for the server API's senders ({SYSTEM_ID:?}, {BOT_PREFIX:?}…)"
        )));
    }
    Ok(id)
}

/// A user: who sent a message, who is in a room. Cheap to clone (shared).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct User {
    /// Stable user id: the token's `sub`, or the chosen name with auth off.
    pub user_id: Arc<str>,
    /// Display name at the time (of sending, of joining).
    pub display_name: Arc<str>,
}

impl User {
    /// A user from an id and a display name, both already validated.
    pub fn new(user_id: impl Into<Arc<str>>, display_name: impl Into<Arc<str>>) -> User {
        User {
            user_id: user_id.into(),
            display_name: display_name.into(),
        }
    }

    /// A user from untrusted input (another instance, a token): both parts
    /// validated.
    pub fn parse(user_id: &str, display_name: &str) -> Result<User, RequestError> {
        Ok(User::new(
            self::user_id(user_id)?,
            super::validate::display_name(display_name)?,
        ))
    }
}

/// Validates a user id: 1 to [`MAX_USER_ID_BYTES`] bytes, no control
/// character. Returns it unchanged.
pub fn user_id(id: &str) -> Result<&str, RequestError> {
    if id.is_empty() || id.len() > MAX_USER_ID_BYTES || id.chars().any(char::is_control) {
        return Err(RequestError::InvalidArgument(format!(
            "user id must be 1 to {MAX_USER_ID_BYTES} bytes without control characters"
        )));
    }
    Ok(id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_ids_are_bounded_and_printable() {
        assert!(user_id("alice").is_ok());
        assert!(user_id(&"a".repeat(MAX_USER_ID_BYTES)).is_ok());
        assert!(user_id("").is_err());
        assert!(user_id(&"a".repeat(MAX_USER_ID_BYTES + 1)).is_err());
        assert!(client_user_id("alice").is_ok());
        assert!(client_user_id("system").is_err(), "the API's system sender");
        assert!(client_user_id("bot:news").is_err(), "an API bot");
        assert!(client_user_id("robot:x").is_ok());
        assert!(client_user_id("System").is_err(), "in any letter case");
        assert!(client_user_id("BOT:news").is_err());
        assert!(client_user_id("systems").is_ok());
        assert!(client_user_id("é").is_ok(), "not cut inside a character");
        assert!(user_id("bot:news").is_ok(), "a valid id, for the API");
        assert!(user_id("a\nb").is_err());
    }

    #[test]
    fn parse_checks_both_parts() {
        let user = User::parse("u1", "Alice").unwrap();
        assert_eq!(&*user.user_id, "u1");
        assert_eq!(&*user.display_name, "Alice");
        assert!(User::parse("", "Alice").is_err());
        assert!(User::parse("u1", "").is_err());
    }
}
