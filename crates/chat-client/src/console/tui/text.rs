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
    format!(
        "{verb} {} — {} member{}: {}{unread}",
        r.room,
        r.members.len(),
        if r.members.len() == 1 { "" } else { "s" },
        names(&r.members)
    )
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_times_in_utc() {
        assert_eq!(hms(0), "00:00:00");
        assert_eq!(hms(1_700_000_000_123), "22:13:20");
        assert_eq!(hms(-1000), "23:59:59");
    }
}
