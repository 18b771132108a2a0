//! The words and colours the UI puts in its panes: join summaries, member
//! names, disconnect notices, times and a colour per user.

use crate::console::describe::{names, reason_name};
use chat_client::proto::{DisconnectNotice, JoinRoomResult, Member};
use ratatui::style::Color;

/// "joined ROOM — N members: a, b" (`verb`: joined or rejoined).
pub(super) fn joined_text(verb: &str, r: &JoinRoomResult) -> String {
    let unread = match r.unread_count {
        0 => String::new(),
        n if n >= 1000 => " — 1000+ unread".to_string(),
        n => format!(" — {n} unread"),
    };
    // A server older than member pages sends no count: the list is all.
    let count = (r.member_count as usize).max(r.members.len());
    let more = match count - r.members.len() {
        0 => String::new(),
        n => format!(" and {n} more"),
    };
    format!(
        "{verb} {} — {} member{}: {}{more}{unread}",
        r.room,
        count,
        if count == 1 { "" } else { "s" },
        names(&r.members)
    )
}

/// Names for a line: all of them up to five, else the first five and how
/// many more.
pub(super) fn list_names(names: &[String]) -> String {
    const SHOWN: usize = 5;
    match names.len() {
        n if n <= SHOWN => names.join(", "),
        n => format!("{} and {} more", names[..SHOWN].join(", "), n - SHOWN),
    }
}

/// A member's display name, or "someone".
pub(super) fn display(member: &Option<Member>) -> String {
    member
        .as_ref()
        .map_or_else(|| "someone".to_string(), |m| m.display_name.clone())
}

/// "REASON: message" of the server's disconnect notice.
pub(super) fn notice_text(n: &DisconnectNotice) -> String {
    format!("{}: {}", reason_name(n.reason), n.message)
}

/// A stable colour per user, so a name looks the same everywhere.
pub(super) fn color_for(user_id: &str) -> Color {
    const PALETTE: [Color; 8] = [
        Color::LightCyan,
        Color::LightGreen,
        Color::LightMagenta,
        Color::LightBlue,
        Color::LightRed,
        Color::Green,
        Color::Magenta,
        Color::Blue,
    ];
    // FNV-1a: std's hasher is randomly seeded per process, which would give
    // a user a different colour in every run.
    let hash = user_id.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    });
    PALETTE[(hash % PALETTE.len() as u64) as usize]
}

/// `HH:MM:SS` of a Unix time in milliseconds, in UTC: the local offset would
/// need a time-zone database (a date crate), which this client does without.
pub(super) fn hms(unix_ms: i64) -> String {
    let secs = unix_ms.div_euclid(1000).rem_euclid(86_400);
    format!(
        "{:02}:{:02}:{:02}",
        secs / 3600,
        secs % 3600 / 60,
        secs % 60
    )
}

/// "Ann is typing…", "Ann and Bob are typing…", "Ann, Bob and 3 others
/// are typing…" for the first `names` of `count` typists; `None` for none.
pub(super) fn typing_sentence(names: &[&str], count: usize) -> Option<String> {
    let others = |n: usize| match n {
        1 => "1 other".to_string(),
        n => format!("{n} others"),
    };
    // The count covers the names shown; a server saying less is not believed.
    let count = count.max(names.len().min(2));
    match (names, count) {
        (_, 0) => None,
        ([], 1) => Some("someone is typing…".into()),
        ([], n) => Some(format!("{n} people are typing…")),
        ([one], 1) => Some(format!("{one} is typing…")),
        ([one, two, ..], 2) => Some(format!("{one} and {two} are typing…")),
        ([one], n) => Some(format!("{one} and {} are typing…", others(n - 1))),
        ([one, two, ..], n) => Some(format!("{one}, {two} and {} are typing…", others(n - 2))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn typing_sentences_name_the_first_two_and_count_the_rest() {
        assert_eq!(typing_sentence(&[], 0), None);
        assert_eq!(typing_sentence(&["Ann"], 1).unwrap(), "Ann is typing…");
        assert_eq!(
            typing_sentence(&["Ann", "Bob"], 2).unwrap(),
            "Ann and Bob are typing…"
        );
        assert_eq!(
            typing_sentence(&["Ann"], 2).unwrap(),
            "Ann and 1 other are typing…"
        );
        assert_eq!(
            typing_sentence(&["Ann", "Bob", "Cat"], 1000).unwrap(),
            "Ann, Bob and 998 others are typing…"
        );
        assert_eq!(
            typing_sentence(&["Ann", "Bob"], 3).unwrap(),
            "Ann, Bob and 1 other are typing…"
        );
        assert_eq!(typing_sentence(&[], 4).unwrap(), "4 people are typing…");
        assert_eq!(
            typing_sentence(&["Ann", "Bob"], 1).unwrap(),
            "Ann and Bob are typing…"
        );
    }

    #[test]
    fn formats_times_in_utc() {
        assert_eq!(hms(0), "00:00:00");
        assert_eq!(hms(1_700_000_000_123), "22:13:20");
        assert_eq!(hms(-1000), "23:59:59");
    }
}
