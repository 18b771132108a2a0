//! Room permissions from a token's claims: which rooms a user may join and
//! send to (`rooms`), which only join and read (`read_only_rooms`), and
//! what the rest allow (`auth.default_room_access`).
//!
//! A rule is an exact room name or a prefix pattern ending in `*`
//! (`team-*` covers `team-a` and `team-`; `*` alone covers every room).

use crate::config::DefaultRoomAccess;

/// Most rules a token may carry, across both lists.
pub const MAX_RULES: usize = 256;
/// Longest rule, in bytes.
pub const MAX_RULE_BYTES: usize = 128;

/// What a user may do in one room.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Access {
    /// Nothing: joining and reading history are refused.
    None,
    /// Join and read, not send.
    Read,
    /// Join, read and send.
    Write,
}

/// One rule: an exact name or a prefix.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Rule {
    Exact(String),
    Prefix(String),
}

impl Rule {
    fn parse(rule: &str) -> Result<Rule, String> {
        if rule.is_empty() || rule.len() > MAX_RULE_BYTES {
            return Err(format!(
                "room rule {rule:?} must be 1 to {MAX_RULE_BYTES} bytes"
            ));
        }
        match rule.strip_suffix('*') {
            Some(prefix) if prefix.contains('*') => {
                Err(format!("room rule {rule:?}: `*` may only end a rule"))
            }
            Some(prefix) => Ok(Rule::Prefix(prefix.to_string())),
            None if rule.contains('*') => {
                Err(format!("room rule {rule:?}: `*` may only end a rule"))
            }
            None => Ok(Rule::Exact(rule.to_string())),
        }
    }

    fn covers(&self, room: &str) -> bool {
        match self {
            Rule::Exact(name) => name == room,
            Rule::Prefix(prefix) => room.starts_with(prefix.as_str()),
        }
    }
}

/// A user's room permissions.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RoomAccess {
    write: Vec<Rule>,
    read: Vec<Rule>,
    default: Access,
}

impl RoomAccess {
    /// Everything allowed: development mode, without tokens, when the
    /// default is open.
    pub fn with_default(default: DefaultRoomAccess) -> RoomAccess {
        RoomAccess {
            write: Vec::new(),
            read: Vec::new(),
            default: match default {
                DefaultRoomAccess::Open => Access::Write,
                DefaultRoomAccess::Closed => Access::None,
            },
        }
    }

    /// The permissions of a token's `rooms` and `read_only_rooms` claims.
    pub fn from_claims(
        rooms: &[String],
        read_only_rooms: &[String],
        default: DefaultRoomAccess,
    ) -> Result<RoomAccess, String> {
        if rooms.len() + read_only_rooms.len() > MAX_RULES {
            return Err(format!("a token may carry at most {MAX_RULES} room rules"));
        }
        let parse = |rules: &[String]| {
            rules
                .iter()
                .map(|r| Rule::parse(r))
                .collect::<Result<Vec<_>, _>>()
        };
        Ok(RoomAccess {
            write: parse(rooms)?,
            read: parse(read_only_rooms)?,
            ..RoomAccess::with_default(default)
        })
    }

    /// What the user may do in `room`: the broadest rule that covers it,
    /// or the default if none does.
    pub fn access(&self, room: &str) -> Access {
        if self.write.iter().any(|r| r.covers(room)) {
            Access::Write
        } else if self.read.iter().any(|r| r.covers(room)) {
            Access::Read
        } else {
            self.default
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn exact_names_prefixes_and_the_default() {
        let access = RoomAccess::from_claims(
            &strings(&["lobby", "team-*"]),
            &strings(&["announcements", "team-readonly"]),
            DefaultRoomAccess::Closed,
        )
        .unwrap();
        assert_eq!(access.access("lobby"), Access::Write);
        assert_eq!(access.access("lobby2"), Access::None, "exact means exact");
        assert_eq!(access.access("team-a"), Access::Write);
        assert_eq!(access.access("team-"), Access::Write);
        assert_eq!(access.access("team"), Access::None);
        assert_eq!(access.access("announcements"), Access::Read);
        assert_eq!(
            access.access("team-readonly"),
            Access::Write,
            "the broadest rule wins"
        );
        assert_eq!(access.access("elsewhere"), Access::None);

        let open =
            RoomAccess::from_claims(&strings(&[]), &strings(&["news"]), DefaultRoomAccess::Open)
                .unwrap();
        assert_eq!(open.access("news"), Access::Read);
        assert_eq!(open.access("anything"), Access::Write);
        let all =
            RoomAccess::from_claims(&strings(&["*"]), &[], DefaultRoomAccess::Closed).unwrap();
        assert_eq!(all.access("x"), Access::Write);
    }

    #[test]
    fn malformed_rules_are_refused() {
        for bad in ["", "a*b", "**", "*a"] {
            assert!(
                RoomAccess::from_claims(&strings(&[bad]), &[], DefaultRoomAccess::Open).is_err(),
                "{bad:?}"
            );
        }
        let long = "x".repeat(MAX_RULE_BYTES + 1);
        assert!(RoomAccess::from_claims(&[long], &[], DefaultRoomAccess::Open).is_err());
        let many = vec!["a".to_string(); MAX_RULES + 1];
        assert!(RoomAccess::from_claims(&many, &[], DefaultRoomAccess::Open).is_err());
    }
}
