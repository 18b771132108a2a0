//! The client library's events as the UI shows them: connection changes
//! on the status line and in every pane, messages and members in their
//! room's pane.

use super::pane::{Change, Entry, Kind};
use super::requests::{HISTORY_ON_JOIN, Outcome};
use super::state::{App, Conn, MARK_READ_EVERY, TYPING_LONGEST, Typists};
use super::text::{display, joined_text, list_names, notice_text, typing_sentence};
use chat_client::proto::{
    DisconnectNotice, JoinRoomResult, Member, MessageEvent, MessageKind, Typing, Welcome,
};
use chat_client::{ClientError, Event};
use chat_util::now_unix_ms;
use std::time::Duration;
use tokio::time::Instant;

impl App {
    /// One event from the client library.
    pub(super) fn on_event(&mut self, event: Event) {
        match event {
            Event::Connected(welcome) => self.on_connected(welcome),
            Event::Rejoined { room, result } => self.on_rejoined(room, result),
            Event::Message(m) => self.on_message(m),
            Event::MembersChanged(m) => {
                if self.panes.contains_key(&m.room) {
                    // Our own join is reported by the join itself.
                    let others = |users: &[Member]| -> Vec<String> {
                        users
                            .iter()
                            .filter(|u| !self.is_me(Some(u)))
                            .map(|u| u.display_name.clone())
                            .collect()
                    };
                    let (joined, left) = (others(&m.joined), others(&m.left));
                    if !joined.is_empty() {
                        let text = format!("{} joined {}", list_names(&joined), m.room);
                        self.push_room(&m.room, Entry::now(Kind::Info(text)));
                    }
                    if !left.is_empty() {
                        let text = format!("{} left {}", list_names(&left), m.room);
                        self.push_room(&m.room, Entry::now(Kind::Info(text)));
                    }
                }
            }
            Event::MemberJoined(m) => {
                // Our own join is reported by the join itself.
                if !self.is_me(m.member.as_ref()) && self.panes.contains_key(&m.room) {
                    let text = format!("{} joined {}", display(&m.member), m.room);
                    self.push_room(&m.room, Entry::now(Kind::Info(text)));
                }
            }
            Event::MemberLeft(m) => {
                if !self.is_me(m.member.as_ref()) && self.panes.contains_key(&m.room) {
                    let text = format!("{} left {}", display(&m.member), m.room);
                    self.push_room(&m.room, Entry::now(Kind::Info(text)));
                }
            }
            Event::Typing(t) => self.on_typing(t),
            Event::Removed(r) => {
                self.typing.remove(&r.room);
                // Its pane goes with it: the status line says why.
                self.error(format!("removed from {}: {}", r.room, r.reason));
                self.sync_rooms();
            }
            Event::DirectOpened(d) => {
                let peer = d
                    .peer
                    .as_ref()
                    .map_or_else(String::new, |p| p.display_name.clone());
                self.info(format!(
                    "direct conversation with {peer} opened: {}",
                    d.room
                ));
                self.directs.insert(d.room.clone(), peer);
                self.panes.entry(d.room).or_default();
                self.sync_rooms();
            }
            Event::ReadReceipts(r) => {
                // This user read the room in another session: nothing
                // there is unread any more up to that point.
                let mine = r.positions.iter().find(|p| self.is_me(p.member.as_ref()));
                if let (Some(mine), Some(pane)) = (mine, self.panes.get_mut(&r.room))
                    && Some(mine.sequence) >= self.client.last_seen(&r.room)
                {
                    pane.unread = 0;
                    let marked = self.marked_read.entry(r.room.clone()).or_default();
                    *marked = (*marked).max(mine.sequence);
                }
            }
            Event::Notification(n) => {
                let time = if n.server_time_unix_ms > 0 {
                    n.server_time_unix_ms
                } else {
                    now_unix_ms()
                };
                self.broadcast_at(time, Kind::Notice(format!("notice: {}", n.text)));
            }
            Event::Disconnected { notice, reason } => self.on_disconnected(notice, reason),
            Event::Reconnecting {
                attempt,
                delay,
                error,
            } => self.on_reconnecting(attempt, delay, error),
            Event::Stopped { reason } => {
                self.broadcast(Kind::Notice(format!(
                    "stopped: {reason} (sign in again with a fresh session; /quit to exit)"
                )));
                self.conn = Conn::Closed;
            }
        }
    }

    /// A session opened: who we are, and "connected" or "reconnected".
    fn on_connected(&mut self, welcome: Welcome) {
        self.sessions += 1;
        self.me = welcome.you;
        self.conn = Conn::Connected;
        self.last_trouble = None;
        let name = self
            .me
            .as_ref()
            .map(|m| m.display_name.clone())
            .unwrap_or_default();
        let verb = if self.sessions == 1 {
            "connected"
        } else {
            "reconnected"
        };
        self.broadcast(Kind::Notice(format!("{verb} to {} as {name}", self.server)));
        if self.sessions == 1 {
            // The user's direct conversations, joined like the rooms given
            // at start (later sessions rejoin them with the rest).
            self.spawn(|client| async move { Outcome::Directs(client.list_direct().await) });
        }
    }

    /// A room joined again on a new session (or first joined, for the
    /// rooms given at start), with any messages missed for good.
    fn on_rejoined(&mut self, room: String, result: Result<JoinRoomResult, ClientError>) {
        // Rooms the server will never accept are dropped by the library.
        self.sync_rooms();
        let verb = if self.sessions <= 1 {
            "joined"
        } else {
            "rejoined"
        };
        match result {
            Ok(r) => {
                self.push_room(&room, Entry::now(Kind::Info(joined_text(verb, &r))));
                self.read_state(&room, r.read_sequence, r.unread_count, r.latest_sequence);
                if r.sequence_reset {
                    let text = format!(
                        "the numbering of {room} started over on the server (its store was reset): \
                         what it holds now follows"
                    );
                    self.push_room(&room, Entry::now(Kind::Error(text)));
                }
                if r.backlog_incomplete {
                    // Say what was lost rather than pretend.
                    let text = format!(
                        "messages of {room} before #{} were missed and are no longer available",
                        r.backlog_after_sequence + 1
                    );
                    self.push_room(&room, Entry::now(Kind::Error(text)));
                }
                if self.sessions <= 1 {
                    self.fetch_history(room.clone(), HISTORY_ON_JOIN);
                }
            }
            Err(e) => {
                let retry = if self.rooms.contains(&room) {
                    " (retried on the next connection)"
                } else {
                    ""
                };
                let text = format!("cannot join {room}: {e}{retry}");
                self.push_room(&room, Entry::now(Kind::Error(text)));
            }
        }
    }

    /// Who else is typing in one of our rooms now: replaces what the last
    /// event said, kept until the next, a typist's message, or the event's
    /// time passing.
    fn on_typing(&mut self, t: Typing) {
        if !self.panes.contains_key(&t.room) {
            return;
        }
        if t.count == 0 {
            self.typing.remove(&t.room);
            return;
        }
        let shown = Duration::from_millis(t.expires_after_ms.into()).min(TYPING_LONGEST);
        let listed = t
            .typists
            .into_iter()
            .filter(|m| !self.is_me(Some(m)))
            .map(|m| (m.user_id, m.display_name))
            .collect();
        let typists = Typists {
            listed,
            count: t.count,
            until: Instant::now() + shown,
        };
        self.typing.insert(t.room, typists);
    }

    /// The typing line of `room`: who else is typing there now, if anyone.
    pub(super) fn typing_line(&self, room: &str) -> Option<String> {
        let typists = self.typing.get(room).filter(|t| t.until > Instant::now())?;
        let names: Vec<&str> = typists.listed.iter().map(|(_, n)| n.as_str()).collect();
        typing_sentence(&names, typists.count as usize)
    }

    /// A message, into its room's pane (counted unread if not shown).
    /// What a join said of the room's read state: the unread count shows
    /// in the rooms pane until the room is shown.
    pub(super) fn read_state(&mut self, room: &str, read: u64, unread: u32, latest: u64) {
        let marked = self.marked_read.entry(room.to_string()).or_default();
        *marked = (*marked).max(read);
        let shown = self.current.as_deref() == Some(room);
        if let Some(pane) = self.panes.get_mut(room) {
            pane.unread_from = latest;
            if !shown {
                pane.unread = unread as usize;
            }
        }
    }

    /// Marks the room shown read up to its last message, if it moved, at
    /// most once per [`MARK_READ_EVERY`] (never waited for).
    pub(super) fn mark_shown_read(&mut self) {
        let Some(room) = self.current.clone() else {
            return;
        };
        let Some(seen) = self.client.last_seen(&room) else {
            return;
        };
        let now = Instant::now();
        if self.marked_read.get(&room).is_some_and(|m| *m >= seen)
            || self
                .marked_at
                .is_some_and(|at| now.duration_since(at) < MARK_READ_EVERY)
        {
            return;
        }
        self.marked_at = Some(now);
        self.marked_read.insert(room.clone(), seen);
        let client = self.client.clone();
        tokio::spawn(async move {
            let _ = client.mark_read(&room, seen).await;
        });
    }

    fn on_message(&mut self, m: MessageEvent) {
        if !self.panes.contains_key(&m.room) {
            return;
        }
        self.remember(&m);
        let user = m.sender.as_ref().map_or("", |s| s.user_id.as_str());
        let react = |add| Change::React {
            emoji: &m.text,
            user,
            add,
        };
        let change = match m.kind() {
            MessageKind::Message => None,
            MessageKind::Edit => Some(Change::Edit(&m.text, m.sequence)),
            MessageKind::Delete => Some(Change::Delete),
            MessageKind::ReactionAdded => Some(react(true)),
            MessageKind::ReactionRemoved => Some(react(false)),
        };
        if let Some(change) = change {
            // Shown on the message it changes, if the pane holds it.
            if let Some(pane) = self.panes.get_mut(&m.room) {
                pane.change(m.target_sequence, change);
            }
            return;
        }
        // Their message ends their typing.
        if let (Some(typists), Some(sender)) = (self.typing.get_mut(&m.room), &m.sender) {
            let before = typists.listed.len();
            typists.listed.retain(|(id, _)| *id != sender.user_id);
            if typists.listed.len() < before {
                typists.count = typists.count.saturating_sub(1);
            }
        }
        let entry = self.message_entry(&m);
        let is_current =
            self.current.as_deref() == Some(m.room.as_str()) || self.is_me(m.sender.as_ref());
        let width = self.pane_width;
        if let Some(pane) = self.panes.get_mut(&m.room) {
            if !is_current && m.sequence > pane.unread_from {
                pane.unread += 1;
            }
            pane.push(entry, width);
        }
    }

    /// The session ended: the server's notice if it sent one, else why.
    fn on_disconnected(&mut self, notice: Option<DisconnectNotice>, reason: String) {
        let text = match &notice {
            Some(n) => notice_text(n),
            None => reason.clone(),
        };
        self.conn = Conn::Disconnected(text.clone());
        self.last_trouble = Some(reason);
        self.broadcast(Kind::Notice(format!("disconnected: {text}")));
    }

    /// The next attempt is scheduled.
    fn on_reconnecting(&mut self, attempt: u32, delay: Duration, error: String) {
        // The status line counts down each attempt; the panes only hear
        // about a new kind of failure.
        if self.last_trouble.as_deref() != Some(error.as_str()) {
            self.broadcast(Kind::Notice(format!(
                "reconnecting (attempt {attempt}): {error}"
            )));
            self.last_trouble = Some(error.clone());
        }
        self.conn = Conn::Reconnecting {
            attempt,
            at: Instant::now() + delay,
            error,
        };
    }
}
