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
        /// Edited since it was sent.
        edited: bool,
        /// Taken back: its text is gone.
        deleted: bool,
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
                        if *edited { " (edited)" } else { "" },
                    )
                };
                let segments = [
                    (dim, time.as_str()),
                    (style, sender.as_str()),
                    (Style::new(), " "),
                    (text_style, text),
                    (dim, mark),
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

/// One room's history.
#[derive(Debug, Default)]
pub(super) struct Pane {
    /// The last [`HISTORY`] lines, oldest first.
    pub(super) lines: VecDeque<Entry>,
    /// Messages that arrived while another room was shown.
    pub(super) unread: usize,
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

    /// Applies an edit (`Some(text)`) or a delete (`None`) to the message
    /// `sequence`, if the pane holds it.
    pub(super) fn change(&mut self, sequence: u64, new_text: Option<&str>) {
        for entry in self.lines.iter_mut().rev() {
            if let Kind::Message {
                sequence: s,
                text,
                edited,
                deleted,
                ..
            } = &mut entry.kind
                && *s == sequence
            {
                match new_text {
                    Some(new_text) => {
                        *text = new_text.to_string();
                        *edited = true;
                    }
                    None => {
                        text.clear();
                        *deleted = true;
                    }
                }
                return;
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
            edited: false,
            deleted: false,
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
        pane.change(1, Some("hello"));
        pane.change(2, None);
        pane.change(9, None);
        assert_eq!(
            shown(&mut pane),
            ["<ann> hello (edited)", "<ann> (message deleted)"]
        );
    }
}
