//! What the message panes hold: one [`Entry`] per line (a message, a
//! notice, an error…), a [`Pane`] per room with its unread count and
//! scroll position, and how an entry becomes screen rows.

use super::text::hms;
use super::wrap::wrap;
use chat_util::now_unix_ms;
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::Line;
use std::collections::VecDeque;

/// Lines kept per room; older ones are dropped.
pub(super) const HISTORY: usize = 1000;
/// Width of `HH:MM:SS `, the indent of a wrapped line's continuation rows.
const TIME_WIDTH: usize = 9;

/// What one line in a pane is.
#[derive(Debug, Clone)]
pub(super) enum Kind {
    /// Someone's message.
    Message {
        /// Their display name.
        sender: String,
        /// Whether it is ours (underlined).
        mine: bool,
        /// Their colour.
        color: Color,
        /// What they said (the latest edit's text).
        text: String,
        /// Its room sequence number, which edits and deletes name.
        sequence: u64,
        /// Edited since it was sent: the sequence of the edit it shows (0:
        /// not edited).
        edited: u64,
        /// Taken back: its text is gone.
        deleted: bool,
        /// Its reactions: emoji, how many gave it, the user ids known to
        /// have (all of them, or history's first 50).
        reactions: Vec<(String, u32, Vec<String>)>,
    },
    /// Joins, leaves, command output.
    Info(String),
    /// Connection trouble and server notifications.
    Notice(String),
    /// A command or request that failed.
    Error(String),
}

/// One line of a pane.
#[derive(Debug, Clone)]
pub(super) struct Entry {
    /// When it happened (Unix ms): the server's time for messages.
    pub(super) time_ms: i64,
    /// What it is.
    pub(super) kind: Kind,
}

impl Entry {
    /// A line stamped with the current time.
    pub(super) fn now(kind: Kind) -> Entry {
        Entry {
            time_ms: now_unix_ms(),
            kind,
        }
    }

    /// The line as screen rows of at most `width` columns.
    pub(super) fn rows(&self, width: usize) -> Vec<Line<'static>> {
        let time = format!("{} ", hms(self.time_ms));
        let dim = Style::new().fg(Color::DarkGray);
        let (mark, style, text) = match &self.kind {
            Kind::Message {
                sender,
                mine,
                color,
                text,
                edited,
                deleted,
                reactions,
                ..
            } => {
                let mut style = Style::new().fg(*color).add_modifier(Modifier::BOLD);
                if *mine {
                    style = style.add_modifier(Modifier::UNDERLINED);
                }
                let sender = format!("<{sender}>");
                let (text_style, text, mark) = if *deleted {
                    (dim.add_modifier(Modifier::ITALIC), "(message deleted)", "")
                } else {
                    (
                        Style::new(),
                        text.as_str(),
                        if *edited > 0 { " (edited)" } else { "" },
                    )
                };
                let reacted = if reactions.is_empty() || *deleted {
                    String::new()
                } else {
                    let each: Vec<String> = reactions
                        .iter()
                        .map(|(e, n, _)| format!("{e} {n}"))
                        .collect();
                    format!(" [{}]", each.join(", "))
                };
                let segments = [
                    (dim, time.as_str()),
                    (style, sender.as_str()),
                    (Style::new(), " "),
                    (text_style, text),
                    (dim, mark),
                    (Style::new().fg(Color::Yellow), reacted.as_str()),
                ];
                return wrap(&segments, width, TIME_WIDTH);
            }
            Kind::Info(text) => (
                "* ",
                Style::new().fg(Color::Cyan).add_modifier(Modifier::ITALIC),
                text,
            ),
            Kind::Notice(text) => ("* ", Style::new().fg(Color::Yellow), text),
            Kind::Error(text) => (
                "! ",
                Style::new().fg(Color::Red).add_modifier(Modifier::BOLD),
                text,
            ),
        };
        let segments = [(dim, time.as_str()), (style, mark), (style, text.as_str())];
        wrap(&segments, width, TIME_WIDTH)
    }
}

/// A change to a message a pane shows.
#[derive(Debug, Clone, Copy)]
pub(super) enum Change<'a> {
    /// Its new text, and the edit's sequence.
    Edit(&'a str, u64),
    /// It was taken back.
    Delete,
    /// `user` added (or took back) reaction `emoji`.
    React {
        /// The reaction.
        emoji: &'a str,
        /// Who, by user id.
        user: &'a str,
        /// Added, or taken back.
        add: bool,
    },
}

/// Applies one reaction change to a message's `reactions` (emoji, count,
/// the known reactors): a reactor already known is not counted twice, and
/// one taken back by a user beyond the listed ones still counts down.
pub(super) fn react(
    reactions: &mut Vec<(String, u32, Vec<String>)>,
    emoji: &str,
    user: &str,
    add: bool,
) {
    let at = reactions.iter().position(|(e, _, _)| e == emoji);
    match (at, add) {
        (None, true) => reactions.push((emoji.to_string(), 1, vec![user.to_string()])),
        (None, false) => {}
        (Some(at), true) => {
            let (_, count, users) = &mut reactions[at];
            if !users.iter().any(|u| u == user) {
                *count += 1;
                users.push(user.to_string());
            }
        }
        (Some(at), false) => {
            let (_, count, users) = &mut reactions[at];
            let before = users.len();
            users.retain(|u| u != user);
            if users.len() < before || *count as usize > before {
                *count = count.saturating_sub(1);
            }
            if *count == 0 {
                reactions.remove(at);
            }
        }
    }
}

/// One room's history.
#[derive(Debug, Default)]
pub(super) struct Pane {
    /// The last [`HISTORY`] lines, oldest first.
    pub(super) lines: VecDeque<Entry>,
    /// Messages that arrived while another room was shown.
    pub(super) unread: usize,
    /// Messages up to this sequence are counted in `unread` already (the
    /// join's count): a resumed backlog is not counted again.
    pub(super) unread_from: u64,
    /// Rows scrolled up from the bottom; 0 follows new lines.
    pub(super) scroll: usize,
}

impl Pane {
    /// Adds a line at the bottom, dropping the oldest past [`HISTORY`];
    /// `width` is the pane's, to keep a scrolled view still.
    pub(super) fn push(&mut self, entry: Entry, width: u16) {
        if self.scroll > 0 {
            // Keep the rows being read in place while new ones arrive below.
            self.scroll += entry.rows(usize::from(width.max(1))).len();
        }
        if self.lines.len() >= HISTORY {
            self.lines.pop_front();
        }
        self.lines.push_back(entry);
    }

    /// Applies `change` to the message `sequence`, wherever the pane holds
    /// it (a history page can show it a second time).
    pub(super) fn change(&mut self, sequence: u64, change: Change<'_>) {
        for entry in self.lines.iter_mut() {
            if let Kind::Message {
                sequence: s,
                text,
                edited,
                deleted,
                reactions,
                ..
            } = &mut entry.kind
                && *s == sequence
            {
                match change {
                    // Edits in sequence order: one older than the text shown
                    // (from a later history page) changes nothing.
                    Change::Edit(new_text, at) if at > *edited => {
                        *text = new_text.to_string();
                        *edited = at;
                    }
                    Change::Edit(..) => {}
                    Change::Delete => {
                        text.clear();
                        *deleted = true;
                        reactions.clear();
                    }
                    Change::React { emoji, user, add } => react(reactions, emoji, user, add),
                }
            }
        }
    }

    /// The rows a view `height` rows tall shows at `width` columns, top
    /// first, after clamping the scroll to the history. Wraps from the
    /// newest line back, only as far as the view reaches.
    pub(super) fn visible_rows(&mut self, width: usize, height: usize) -> Vec<Line<'static>> {
        let mut rows: Vec<Line<'static>> = Vec::new();
        let wanted = height.saturating_add(self.scroll);
        for entry in self.lines.iter().rev() {
            if rows.len() >= wanted {
                break;
            }
            rows.extend(entry.rows(width).into_iter().rev());
        }
        self.scroll = self.scroll.min(rows.len().saturating_sub(height));
        let mut visible: Vec<Line<'static>> =
            rows.into_iter().skip(self.scroll).take(height).collect();
        visible.reverse();
        visible
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounds_history_and_keeps_scrolled_view_still() {
        let mut pane = Pane::default();
        for i in 0..HISTORY + 5 {
            pane.push(Entry::now(Kind::Info(i.to_string())), 80);
        }
        assert_eq!(pane.lines.len(), HISTORY);
        pane.scroll = 3;
        pane.push(Entry::now(Kind::Info("x".repeat(100))), 80);
        assert_eq!(pane.scroll, 5);
    }

    fn message(sequence: u64, text: &str) -> Entry {
        Entry::now(Kind::Message {
            sender: "ann".into(),
            mine: false,
            color: Color::Green,
            text: text.into(),
            sequence,
            edited: 0,
            deleted: false,
            reactions: Vec::new(),
        })
    }

    fn shown(pane: &mut Pane) -> Vec<String> {
        pane.visible_rows(80, 10)
            .iter()
            .map(|row| {
                row.spans
                    .iter()
                    .map(|s| s.content.as_ref())
                    .collect::<String>()[9..]
                    .to_string()
            })
            .collect()
    }

    #[test]
    fn edits_and_deletes_change_the_message_they_name() {
        let mut pane = Pane::default();
        pane.push(message(1, "helo"), 80);
        pane.push(message(2, "secret"), 80);
        pane.push(message(2, "secret"), 80);
        pane.change(1, Change::Edit("hello", 5));
        pane.change(1, Change::Edit("older", 4));
        pane.change(2, Change::Delete);
        pane.change(9, Change::Delete);
        let react = |emoji, user, add| Change::React { emoji, user, add };
        pane.change(1, react("👍", "bob", true));
        pane.change(1, react("👍", "cat", true));
        pane.change(1, react("👍", "cat", true));
        pane.change(1, react("🎉", "cat", true));
        pane.change(1, react("🎉", "cat", false));
        assert_eq!(
            shown(&mut pane),
            [
                "<ann> hello (edited) [👍 2]",
                "<ann> (message deleted)",
                "<ann> (message deleted)"
            ]
        );
    }

    #[test]
    fn a_reaction_is_counted_once_per_user_even_beyond_the_listed_ones() {
        let mut reactions = vec![("👍".to_string(), 60, vec!["a".to_string()])];
        react(&mut reactions, "👍", "a", true);
        assert_eq!(reactions[0].1, 60, "a is known to have it");
        react(&mut reactions, "👍", "z", false);
        assert_eq!(reactions[0].1, 59, "z was among the unlisted");
        react(&mut reactions, "👍", "a", false);
        assert_eq!(reactions[0].1, 58);
        let mut one = vec![("🎉".to_string(), 1, vec!["a".to_string()])];
        react(&mut one, "🎉", "b", false);
        assert_eq!(one.len(), 1, "b never had it");
        react(&mut one, "🎉", "a", false);
        assert!(one.is_empty());
    }
}
