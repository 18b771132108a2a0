//! Drawing one frame of the [`App`]: the status line, the rooms pane (on
//! wide enough terminals), the current room's messages and the input box.

use super::input::Input;
use super::state::{App, Conn};
use super::wrap::char_width;
use ratatui::Frame;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, List, ListItem, Paragraph};
use tokio::time::Instant;

/// Below this terminal width the rooms pane is hidden to leave room for text.
const MIN_WIDTH_FOR_ROOMS: u16 = 50;
/// What precedes the input line.
const PROMPT: &str = "> ";

impl App {
    /// Draws the whole screen; records the message pane's size for wrapping
    /// and paging.
    pub(super) fn draw(&mut self, frame: &mut Frame<'_>) {
        let [status, body, input] = Layout::vertical([
            Constraint::Length(1),
            Constraint::Min(3),
            Constraint::Length(3),
        ])
        .areas(frame.area());
        self.draw_status(frame, status);
        let messages = if body.width >= MIN_WIDTH_FOR_ROOMS {
            let [rooms, messages] =
                Layout::horizontal([Constraint::Length(self.rooms_width()), Constraint::Min(10)])
                    .areas(body);
            self.draw_rooms(frame, rooms);
            messages
        } else {
            body
        };
        self.draw_messages(frame, messages);
        draw_input(&self.input, frame, input);
    }

    /// The status line: server, who we are, the connection, pending requests.
    fn draw_status(&self, frame: &mut Frame<'_>, area: Rect) {
        let bar = Style::new().bg(Color::DarkGray).fg(Color::White);
        let (state, color) = conn_text(&self.conn);
        let mut spans = vec![
            Span::styled(" chat ", bar.add_modifier(Modifier::BOLD)),
            Span::styled(format!("{} ", self.server), bar),
        ];
        if let Some(me) = &self.me {
            spans.push(Span::styled(
                format!("as {} ", me.display_name),
                bar.add_modifier(Modifier::BOLD),
            ));
        }
        spans.push(Span::styled("│ ", bar));
        spans.push(Span::styled(
            state,
            bar.fg(color).add_modifier(Modifier::BOLD),
        ));
        if self.in_flight > 0 {
            spans.push(Span::styled(format!(" │ {} pending", self.in_flight), bar));
        }
        frame.render_widget(Paragraph::new(Line::from(spans)).style(bar), area);
    }

    /// The rooms pane's width: the widest name, within bounds.
    fn rooms_width(&self) -> u16 {
        let widest = self
            .rooms
            .iter()
            .chain(self.joining.iter())
            // Marker, name and room for an unread count such as " (12)",
            // reserved so the pane does not jump when one appears.
            .map(|r| 1 + Span::raw(r.as_str()).width() + 6)
            .max()
            .unwrap_or(0);
        // Borders, then a sane range so neither pane starves.
        u16::try_from(widest + 2).unwrap_or(u16::MAX).clamp(12, 28)
    }

    /// The rooms pane: joined rooms with unread counts, then those being
    /// joined, dimmed.
    fn draw_rooms(&self, frame: &mut Frame<'_>, area: Rect) {
        let mut items: Vec<ListItem<'_>> =
            self.rooms.iter().map(|room| self.room_item(room)).collect();
        let mut pending: Vec<&String> = self
            .joining
            .iter()
            .filter(|r| !self.rooms.contains(r))
            .collect();
        pending.sort();
        for room in pending {
            items.push(ListItem::new(Line::styled(
                format!(" {room}…"),
                Style::new().fg(Color::DarkGray),
            )));
        }
        let block = Block::bordered().title(" rooms ");
        frame.render_widget(List::new(items).block(block), area);
    }

    /// One joined room in the rooms pane: marked if current, else with its
    /// unread count.
    fn room_item(&self, room: &str) -> ListItem<'static> {
        let current = self.current.as_deref() == Some(room);
        let unread = self.panes.get(room).map_or(0, |p| p.unread);
        let room = self.room_label(room);
        let mut spans = vec![];
        if current {
            let style = Style::new()
                .fg(Color::Black)
                .bg(Color::Cyan)
                .add_modifier(Modifier::BOLD);
            spans.push(Span::styled(format!("▸{room}"), style));
        } else {
            spans.push(Span::raw(format!(" {room}")));
        }
        if unread > 0 && !current {
            let count = if unread > 999 {
                "999+".to_string()
            } else {
                unread.to_string()
            };
            spans.push(Span::styled(
                format!(" ({count})"),
                Style::new().fg(Color::Yellow).add_modifier(Modifier::BOLD),
            ));
        }
        ListItem::new(Line::from(spans))
    }

    /// The current pane's rows that fit, scrolled as the user left it.
    fn draw_messages(&mut self, frame: &mut Frame<'_>, area: Rect) {
        let title = match &self.current {
            Some(room) => format!(" {} ", self.room_label(room)),
            None => " no room — /join ROOM ".to_string(),
        };
        let mut block = Block::bordered()
            .title(title)
            .title_top(Line::from(" times UTC ").right_aligned());
        let inner = block.inner(area);
        self.pane_width = inner.width;
        self.pane_height = inner.height;
        let pane = self.current_pane();
        let visible = pane.visible_rows(usize::from(inner.width.max(1)), usize::from(inner.height));
        let scroll = pane.scroll;
        let typing = self
            .current
            .as_deref()
            .and_then(|room| self.typing_line(room));
        if let (0, Some(line)) = (scroll, typing) {
            block = block.title_bottom(
                Line::styled(format!(" {line} "), Style::new().fg(Color::DarkGray)).left_aligned(),
            );
        }
        if scroll > 0 {
            block = block.title_bottom(
                Line::styled(
                    format!(" ↑ {scroll} rows up — Down/PgDn/Esc to return "),
                    Style::new().fg(Color::Yellow),
                )
                .right_aligned(),
            );
        }
        frame.render_widget(block, area);
        frame.render_widget(Paragraph::new(visible), inner);
    }
}

/// The status line's words and colour for the connection state.
fn conn_text(conn: &Conn) -> (String, Color) {
    match conn {
        Conn::Connecting => ("connecting…".to_string(), Color::Yellow),
        Conn::Connected => ("connected".to_string(), Color::LightGreen),
        Conn::Reconnecting { attempt, at, error } => {
            let left = at.saturating_duration_since(Instant::now());
            if left.is_zero() {
                (format!("connecting… (attempt {attempt})"), Color::Yellow)
            } else {
                let secs = left.as_secs_f64();
                (
                    format!("reconnecting in {secs:.1}s (attempt {attempt}): {error}"),
                    Color::Yellow,
                )
            }
        }
        Conn::Disconnected(reason) => (format!("disconnected: {reason}"), Color::LightRed),
        Conn::Closed => ("closed".to_string(), Color::LightRed),
    }
}

/// The input box: the prompt, the part of the line around the cursor that
/// fits, the cursor, and the longest key hint that fits in the border.
fn draw_input(input: &Input, frame: &mut Frame<'_>, area: Rect) {
    // The longest hint that fits; a truncated one would eat the corner.
    let hint = [
        " Enter send · /help · Tab room · ↑↓ PgUp/PgDn scroll · Ctrl-C quit ",
        " /help · Ctrl-C quit ",
        "",
    ]
    .into_iter()
    .find(|h| Span::raw(*h).width() + 4 <= usize::from(area.width))
    .unwrap_or_default();
    let block = Block::bordered()
        .title_bottom(Line::styled(hint, Style::new().fg(Color::DarkGray)).right_aligned());
    let inner = block.inner(area);
    frame.render_widget(block, area);
    let avail = usize::from(inner.width).saturating_sub(PROMPT.len()).max(1);
    let (shown, before) = visible_input(input, avail);
    let line = Line::from(vec![
        Span::styled(
            PROMPT,
            Style::new().fg(Color::Cyan).add_modifier(Modifier::BOLD),
        ),
        Span::raw(shown),
    ]);
    frame.render_widget(Paragraph::new(line), inner);
    let x = inner.x + u16::try_from(PROMPT.len() + before).unwrap_or(inner.width);
    frame.set_cursor_position((x.min(inner.right().saturating_sub(1)), inner.y));
}

/// What of the input line fits in `avail` columns, scrolled horizontally
/// just enough to keep the cursor in view (control characters as spaces),
/// and the columns before the cursor.
fn visible_input(input: &Input, avail: usize) -> (String, usize) {
    let chars: Vec<char> = input.text.chars().collect();
    let widths: Vec<usize> = chars.iter().map(|c| char_width(*c)).collect();
    let cursor = input.cursor.min(chars.len());
    let mut start = cursor;
    let mut before = 0;
    while start > 0 && before + widths[start - 1] < avail {
        start -= 1;
        before += widths[start];
    }
    let mut shown = String::new();
    let mut used = 0;
    for (c, w) in chars.iter().zip(&widths).skip(start) {
        if used + w > avail {
            break;
        }
        shown.push(if c.is_control() { ' ' } else { *c });
        used += w;
    }
    (shown, before)
}
