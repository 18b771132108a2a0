//! Keys: which [`Action`] a key press asks for ([`action`]), and what each
//! action does to the [`App`]. Ctrl-A/E/U edit as in a shell; Tab cycles
//! the rooms; arrows and PgUp/PgDn scroll; Esc returns to the bottom.

use super::state::App;
use crossterm::event::{Event as TermEvent, KeyCode, KeyEvent, KeyEventKind, KeyModifiers};

/// How far a scroll key moves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Rows {
    /// One row (Up, Down).
    One,
    /// The pane's height less a row (PgUp, PgDn).
    Page,
}

/// What a key asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Action {
    /// Leave the UI (Ctrl-C).
    Quit,
    /// Type a character.
    Type(char),
    /// Delete before the cursor.
    Backspace,
    /// Delete under the cursor.
    Delete,
    /// Cursor one character left.
    Left,
    /// Cursor one character right.
    Right,
    /// Cursor to the start (Home, Ctrl-A).
    Home,
    /// Cursor to the end (End, Ctrl-E).
    End,
    /// Delete everything before the cursor (Ctrl-U).
    ClearToStart,
    /// Scroll the pane towards older lines.
    ScrollUp(Rows),
    /// Scroll the pane towards newer lines.
    ScrollDown(Rows),
    /// Follow new lines again (Esc).
    ScrollToBottom,
    /// Show the next room (Tab).
    NextRoom,
    /// Show the previous room (Shift-Tab).
    PreviousRoom,
    /// Run the typed line (Enter).
    Submit,
}

/// The action of a key press; `None` for keys that do nothing (other
/// Ctrl and Alt chords among them).
pub(super) fn action(key: &KeyEvent) -> Option<Action> {
    let ctrl = key.modifiers.contains(KeyModifiers::CONTROL);
    Some(match key.code {
        KeyCode::Char('c') if ctrl => Action::Quit,
        KeyCode::Char('a') if ctrl => Action::Home,
        KeyCode::Char('e') if ctrl => Action::End,
        KeyCode::Char('u') if ctrl => Action::ClearToStart,
        KeyCode::Char(_) if ctrl || key.modifiers.contains(KeyModifiers::ALT) => return None,
        KeyCode::Char(c) => Action::Type(c),
        KeyCode::Backspace => Action::Backspace,
        KeyCode::Delete => Action::Delete,
        KeyCode::Left => Action::Left,
        KeyCode::Right => Action::Right,
        KeyCode::Home => Action::Home,
        KeyCode::End => Action::End,
        KeyCode::Up => Action::ScrollUp(Rows::One),
        KeyCode::Down => Action::ScrollDown(Rows::One),
        KeyCode::PageUp => Action::ScrollUp(Rows::Page),
        KeyCode::PageDown => Action::ScrollDown(Rows::Page),
        KeyCode::Esc => Action::ScrollToBottom,
        KeyCode::Tab => Action::NextRoom,
        KeyCode::BackTab => Action::PreviousRoom,
        KeyCode::Enter => Action::Submit,
        _ => return None,
    })
}

impl App {
    /// One terminal event.
    pub(super) fn on_terminal(&mut self, event: TermEvent) {
        match event {
            // Some terminals also report releases; acting on them would type
            // every key twice.
            TermEvent::Key(key) if key.kind != KeyEventKind::Release => {
                if let Some(action) = action(&key) {
                    self.apply(action);
                }
            }
            // A resize needs nothing here: `Terminal::draw` picks up the new
            // size, and the loop draws after every event.
            _ => {}
        }
    }

    /// Does what `action` asks.
    fn apply(&mut self, action: Action) {
        match action {
            Action::Quit => self.quit = true,
            Action::Type(c) => {
                self.input.insert(c);
                self.typing_changed();
            }
            Action::Backspace => {
                self.input.backspace();
                self.typing_changed();
            }
            Action::Delete => {
                self.input.delete();
                self.typing_changed();
            }
            Action::Left => self.input.left(),
            Action::Right => self.input.right(),
            Action::Home => self.input.home(),
            Action::End => self.input.end(),
            Action::ClearToStart => {
                self.input.clear_to_start();
                self.typing_changed();
            }
            Action::ScrollUp(rows) => {
                let rows = self.rows(rows);
                let pane = self.current_pane();
                // Clamped to the history at the next draw.
                pane.scroll = pane.scroll.saturating_add(rows);
            }
            Action::ScrollDown(rows) => {
                let rows = self.rows(rows);
                let pane = self.current_pane();
                pane.scroll = pane.scroll.saturating_sub(rows);
            }
            Action::ScrollToBottom => self.current_pane().scroll = 0,
            Action::NextRoom => self.cycle_room(true),
            Action::PreviousRoom => self.cycle_room(false),
            Action::Submit => {
                let line = self.input.take();
                self.submit(&line);
            }
        }
    }

    /// `rows` in rows of the pane as last drawn.
    fn rows(&self, rows: Rows) -> usize {
        match rows {
            Rows::One => 1,
            Rows::Page => usize::from(self.pane_height.saturating_sub(1).max(1)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(code: KeyCode, modifiers: KeyModifiers) -> Option<Action> {
        action(&KeyEvent::new(code, modifiers))
    }

    #[test]
    fn maps_keys_to_actions() {
        assert_eq!(
            key(KeyCode::Char('c'), KeyModifiers::CONTROL),
            Some(Action::Quit)
        );
        assert_eq!(
            key(KeyCode::Char('c'), KeyModifiers::NONE),
            Some(Action::Type('c'))
        );
        assert_eq!(key(KeyCode::Char('x'), KeyModifiers::CONTROL), None);
        assert_eq!(key(KeyCode::Char('x'), KeyModifiers::ALT), None);
        assert_eq!(
            key(KeyCode::PageUp, KeyModifiers::NONE),
            Some(Action::ScrollUp(Rows::Page))
        );
        assert_eq!(
            key(KeyCode::BackTab, KeyModifiers::SHIFT),
            Some(Action::PreviousRoom)
        );
        assert_eq!(key(KeyCode::F(1), KeyModifiers::NONE), None);
    }
}
