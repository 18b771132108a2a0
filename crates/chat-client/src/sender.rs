//! Who sent a message: a person, or an application posting through the
//! server API as one of its bots or as the system (docs/API.md). The server
//! keeps those user ids (`system`, `bot:…`) from every client, so a client
//! can mark such messages whatever their display name says.

/// What posted a message whose sender has `user_id`, if it was an
/// application: `"bot"` (user id `bot:…`) or `"system"`; `None` for a
/// person.
pub fn application_sender(user_id: &str) -> Option<&'static str> {
    if user_id.eq_ignore_ascii_case("system") {
        Some("system")
    } else if user_id
        .get(..4)
        .is_some_and(|p| p.eq_ignore_ascii_case("bot:"))
    {
        Some("bot")
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_server_apis_senders_are_told_apart() {
        assert_eq!(application_sender("system"), Some("system"));
        assert_eq!(application_sender("bot:ci"), Some("bot"));
        assert_eq!(application_sender("alice"), None);
        assert_eq!(application_sender("robot:x"), None);
        assert_eq!(application_sender("bö"), None);
    }
}
