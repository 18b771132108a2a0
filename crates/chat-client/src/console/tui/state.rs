//! The UI's state ([`App`]), which keys, library events and request
//! outcomes update and each frame draws, and the bookkeeping of its rooms
//! and panes: which rooms are shown, which is current, where a line goes.

use super::input::Input;
use super::pane::{Entry, Kind, Pane};
use super::requests::Outcome;
use super::text::color_for;
use crate::console::own::OwnMessages;
use chat_client::Client;
use chat_client::proto::{Member, MessageEvent};
use chat_util::now_unix_ms;
use ratatui::style::Color;
use std::collections::{HashMap, HashSet};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

/// Where the connection stands, as the status line shows it.
#[derive(Debug, Clone)]
pub(super) enum Conn {
    /// The first connection attempt.
    Connecting,
    /// A session is open.
    Connected,
    /// Waiting for the next attempt.
    Reconnecting {
        /// Attempt number since the last session.
        attempt: u32,
        /// When it starts, for the countdown.
        at: Instant,
        /// Why the last one failed.
        error: String,
    },
    /// The session ended, for this reason.
    Disconnected(String),
    /// The client stopped; no more attempts.
    Closed,
}

/// Who else is typing in a room, as the server's last typing event for
/// it said; shown until `until`.
pub(super) struct Typists {
    /// The first few, by user id and display name (a typist's message
    /// takes them off).
    pub(super) listed: Vec<(String, String)>,
    /// How many are typing, the listed ones and the rest.
    pub(super) count: u32,
    /// When it is forgotten unless the server says more.
    pub(super) until: Instant,
}

/// How often the console repeats "typing" while its user types.
pub(super) const TYPING_REPEAT: std::time::Duration = std::time::Duration::from_secs(3);

/// The longest typists are shown without a new event, whatever the server
/// says.
pub(super) const TYPING_LONGEST: std::time::Duration = std::time::Duration::from_secs(60);

/// How often the room shown is marked read at most (the server allows a
/// few marks a second per connection).
pub(super) const MARK_READ_EVERY: std::time::Duration = std::time::Duration::from_secs(1);

/// Everything the UI shows and remembers.
pub(super) struct App {
    /// The connection, for requests and its room list.
    pub(super) client: Client,
    /// The server's URL, for the status line.
    pub(super) server: String,
    /// Who the server says we are; unknown until the first welcome.
    pub(super) me: Option<Member>,
    /// The status line's connection state.
    pub(super) conn: Conn,
    /// Sessions opened so far, to tell a first join from a rejoin.
    pub(super) sessions: u32,
    /// The rooms pane, in the order they were joined.
    pub(super) rooms: Vec<String>,
    /// Rooms asked for but not yet confirmed: their events may arrive before
    /// the join reply, and must not be lost.
    pub(super) joining: HashSet<String>,
    /// Each room's lines, by room.
    pub(super) panes: HashMap<String, Pane>,
    /// Shown when in no room, so command output still has somewhere to go.
    pub(super) system: Pane,
    /// The room shown and typed to.
    pub(super) current: Option<String>,
    /// The line being typed.
    pub(super) input: Input,
    /// Where request tasks report their outcome.
    pub(super) outcomes: mpsc::UnboundedSender<Outcome>,
    /// Completes when the last request spawned has finished.
    pub(super) previous_request: Option<oneshot::Receiver<()>>,
    /// Requests not finished yet, for the status line.
    pub(super) in_flight: usize,
    /// The message pane's inner width at the last draw, for wrapping.
    pub(super) pane_width: u16,
    /// The message pane's inner height at the last draw, for paging.
    pub(super) pane_height: u16,
    /// The last connection trouble shown, so retries do not flood the panes.
    pub(super) last_trouble: Option<String>,
    /// Who else is typing, by room.
    pub(super) typing: HashMap<String, Typists>,
    /// When this user last told the current room it is typing (repeated
    /// at most every [`TYPING_REPEAT`]).
    pub(super) typing_said: Option<(String, Instant)>,
    /// This user's messages, for `/edit` and `/delete` without a number.
    pub(super) own: OwnMessages,
    /// Per room, the sequence last marked read (the room shown is marked
    /// read up to what it shows, at most once per [`MARK_READ_EVERY`]).
    pub(super) marked_read: HashMap<String, u64>,
    /// When a room was last marked read.
    pub(super) marked_at: Option<Instant>,
    /// Direct conversations' rooms, shown as `@` and the other user's name.
    pub(super) directs: HashMap<String, String>,
    /// Set to leave the loop.
    pub(super) quit: bool,
}

impl App {
    /// The state before the first connection, showing `initial` rooms.
    pub(super) fn new(
        client: Client,
        server: String,
        initial: Vec<String>,
        outcomes: mpsc::UnboundedSender<Outcome>,
    ) -> App {
        let mut rooms: Vec<String> = Vec::new();
        for room in initial {
            if !rooms.contains(&room) {
                rooms.push(room);
            }
        }
        let current = rooms.first().cloned();
        let mut app = App {
            client,
            server,
            me: None,
            conn: Conn::Connecting,
            sessions: 0,
            rooms,
            joining: HashSet::new(),
            panes: HashMap::new(),
            system: Pane::default(),
            current,
            input: Input::default(),
            outcomes,
            previous_request: None,
            in_flight: 0,
            pane_width: 80,
            pane_height: 20,
            last_trouble: None,
            typing: HashMap::new(),
            typing_said: None,
            own: OwnMessages::default(),
            marked_read: HashMap::new(),
            marked_at: None,
            directs: HashMap::new(),
            quit: false,
        };
        app.sync_rooms();
        app.info(format!(
            "connecting to {}… /help lists the commands",
            app.server
        ));
        app
    }

    /// Makes the rooms pane match the rooms the client is in (which the
    /// library changes on join, leave and failed rejoins).
    pub(super) fn sync_rooms(&mut self) {
        let joined = self.client.rooms();
        let index = self
            .current
            .as_ref()
            .and_then(|c| self.rooms.iter().position(|r| r == c));
        self.rooms.retain(|r| joined.contains(r));
        for room in joined {
            if !self.rooms.contains(&room) {
                self.rooms.push(room);
            }
        }
        for room in &self.rooms {
            self.panes.entry(room.clone()).or_default();
        }
        self.panes
            .retain(|name, _| self.rooms.contains(name) || self.joining.contains(name));
        let current_ok = self
            .current
            .as_ref()
            .is_some_and(|c| self.rooms.contains(c));
        if !current_ok {
            // The room after the one that went, as when closing a tab.
            let next = index
                .map(|i| i.min(self.rooms.len().saturating_sub(1)))
                .and_then(|i| self.rooms.get(i))
                .or_else(|| self.rooms.first())
                .cloned();
            self.switch_to(next);
        }
    }

    /// Shows `room` (none: the system pane) and marks it read.
    pub(super) fn switch_to(&mut self, room: Option<String>) {
        if let Some(pane) = room.as_ref().and_then(|r| self.panes.get_mut(r)) {
            pane.unread = 0;
        }
        self.current = room;
        self.typing_changed();
    }

    /// Shows the next room (or the previous one), wrapping around.
    pub(super) fn cycle_room(&mut self, forward: bool) {
        if self.rooms.is_empty() {
            return;
        }
        let n = self.rooms.len();
        let i = self
            .current
            .as_ref()
            .and_then(|c| self.rooms.iter().position(|r| r == c))
            .map_or(0, |i| {
                if forward {
                    (i + 1) % n
                } else {
                    (i + n - 1) % n
                }
            });
        let next = self.rooms.get(i).cloned();
        self.switch_to(next);
    }

    /// The pane shown: the current room's, or the system pane.
    pub(super) fn current_pane(&mut self) -> &mut Pane {
        match self.current.as_ref().and_then(|c| self.panes.get_mut(c)) {
            Some(pane) => pane,
            None => &mut self.system,
        }
    }

    /// Adds a line, stamped now, to the pane shown.
    pub(super) fn push_current(&mut self, kind: Kind) {
        let width = self.pane_width;
        self.current_pane().push(Entry::now(kind), width);
    }

    /// Adds a line to `room`'s pane, or to the current one if that room is
    /// not shown (e.g. it was just left).
    pub(super) fn push_room(&mut self, room: &str, entry: Entry) {
        let width = self.pane_width;
        match self.panes.get_mut(room) {
            Some(pane) => pane.push(entry, width),
            None => self.current_pane().push(entry, width),
        }
    }

    /// Connection notices and server notifications go to every pane, so
    /// whichever room is shown tells the same story.
    pub(super) fn broadcast(&mut self, kind: Kind) {
        self.broadcast_at(now_unix_ms(), kind);
    }

    /// [`App::broadcast`], stamped `time_ms`.
    pub(super) fn broadcast_at(&mut self, time_ms: i64, kind: Kind) {
        let width = self.pane_width;
        let entry = Entry { time_ms, kind };
        for (name, pane) in self.panes.iter_mut() {
            if self.rooms.contains(name) {
                pane.push(entry.clone(), width);
            }
        }
        self.system.push(entry, width);
    }

    /// Command output, in the pane shown.
    pub(super) fn info(&mut self, text: String) {
        self.push_current(Kind::Info(text));
    }

    /// A failure, in the pane shown.
    pub(super) fn error(&mut self, text: String) {
        self.push_current(Kind::Error(text));
    }

    /// How `room` is shown: a direct conversation as `@name`.
    pub(super) fn room_label(&self, room: &str) -> String {
        match self.directs.get(room) {
            Some(name) => format!("@{name}"),
            None => room.to_string(),
        }
    }

    /// Whether `member` is this client's user.
    pub(super) fn is_me(&self, member: Option<&Member>) -> bool {
        match (member, &self.me) {
            (Some(m), Some(me)) => m.user_id == me.user_id,
            _ => false,
        }
    }

    /// How a message is shown, live or from history.
    pub(super) fn message_entry(&self, m: &MessageEvent) -> Entry {
        let mine = self.is_me(m.sender.as_ref());
        let (sender, color) = match &m.sender {
            // An application's bot or the system is marked as such.
            Some(s) => match chat_client::application_sender(&s.user_id) {
                Some(what) => (
                    format!("{} [{what}]", s.display_name),
                    color_for(&s.user_id),
                ),
                None => (s.display_name.clone(), color_for(&s.user_id)),
            },
            None => ("?".to_string(), Color::Gray),
        };
        Entry {
            time_ms: m.server_time_unix_ms,
            kind: Kind::Message {
                sender,
                mine,
                color,
                text: m.text.clone(),
                sequence: m.sequence,
                edited: m.edited_sequence,
                deleted: m.deleted,
                reactions: m
                    .reactions
                    .iter()
                    .map(|r| {
                        let users = r.members.iter().map(|u| u.user_id.clone()).collect();
                        (r.emoji.clone(), r.count, users)
                    })
                    .collect(),
            },
        }
    }
}
