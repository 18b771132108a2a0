//! The user's commands, run as requests in the background so the UI never
//! waits on the network (one after another, in the order typed), and what
//! their outcomes show.

use super::pane::{Entry, Kind};
use super::state::{App, TYPING_REPEAT};
use super::text::joined_text;
use crate::console::command::{self, Command};
use crate::console::describe::names;
use chat_client::proto::{
    DirectConversation, ErrorCode, HistoryDirection, HistoryResponse, JoinRoomResult,
    LeaveRoomResult, Member, MessageEvent, MessageKind, SendMessageResult,
};
use chat_client::{Client, ClientError};
use std::future::Future;
use tokio::sync::oneshot;
use tokio::time::Instant;

/// The most recent direct conversations joined at the first connection.
pub(super) const DIRECTS_JOINED: usize = 20;

/// Stored messages shown when a room is joined (and by a bare `/history`).
pub(super) const HISTORY_ON_JOIN: u32 = 20;

/// What a request task reports back to the UI loop.
#[derive(Debug)]
pub(super) enum Outcome {
    /// `/join`, or a direct conversation listed at start.
    Joined {
        /// The room asked for.
        room: String,
        /// The server's answer.
        result: Result<JoinRoomResult, ClientError>,
        /// Whether to show it once joined (a `/join` does).
        show: bool,
    },
    /// `/leave`.
    Left {
        /// The room asked for.
        room: String,
        /// The server's answer.
        result: Result<LeaveRoomResult, ClientError>,
    },
    /// A message typed.
    Sent {
        /// Where it went.
        room: String,
        /// What it said, repeated if it was not sent.
        text: String,
        /// The server's answer.
        result: Result<SendMessageResult, ClientError>,
    },
    /// `/who`.
    Members {
        /// The room asked about.
        room: String,
        /// Its members.
        result: Result<Vec<Member>, ClientError>,
    },
    /// `/rooms`: the rooms as the server sees them.
    Rooms(Result<Vec<String>, ClientError>),
    /// `/edit` or `/delete`.
    Changed {
        /// The room.
        room: String,
        /// `edit` or `delete`.
        what: &'static str,
        /// The server's answer.
        result: Result<SendMessageResult, ClientError>,
    },
    /// `/dm`: the conversation, joined.
    Direct(Result<DirectConversation, ClientError>),
    /// The direct conversations listed at the first connection, to join.
    Directs(Result<Vec<DirectConversation>, ClientError>),
    /// `/history`, or the page shown on joining.
    History {
        /// The room asked about.
        room: String,
        /// Its last stored messages.
        result: Result<HistoryResponse, ClientError>,
    },
}

impl App {
    /// Runs one line as line mode would, but with requests in the background.
    pub(super) fn submit(&mut self, line: &str) {
        match command::parse(line) {
            Command::Nothing => {}
            Command::Quit => self.quit = true,
            Command::Help => self.info(command::HELP.to_string()),
            Command::Invalid(why) => self.error(format!("INVALID_COMMAND: {why}")),
            Command::Join(room) => {
                self.joining.insert(room.clone());
                self.panes.entry(room.clone()).or_default();
                self.spawn(move |client| async move {
                    let result = client.join(&room).await;
                    Outcome::Joined {
                        room,
                        result,
                        show: true,
                    }
                });
            }
            Command::Leave(room) => {
                let Some(room) = self.room_or_current(room) else {
                    return;
                };
                self.spawn(move |client| async move {
                    let result = client.leave(&room).await;
                    Outcome::Left { room, result }
                });
            }
            Command::Switch(room) => {
                if self.rooms.contains(&room) {
                    self.switch_to(Some(room));
                } else {
                    self.error(format!("NOT_A_MEMBER: not in room {room}; /join it first"));
                }
            }
            Command::Who(room) => {
                let Some(room) = self.room_or_current(room) else {
                    return;
                };
                self.spawn(move |client| async move {
                    let result = client.list_members(&room).await;
                    Outcome::Members { room, result }
                });
            }
            Command::Rooms => {
                self.spawn(|client| async move { Outcome::Rooms(client.list_rooms().await) })
            }
            Command::History(n) => {
                let Some(room) = self.room_or_current(None) else {
                    return;
                };
                self.fetch_history(room, n.unwrap_or(HISTORY_ON_JOIN));
            }
            Command::Say(text) => self.say(text),
            Command::React(sequence, emoji, add) => {
                let Some(room) = self.room_or_current(None) else {
                    return;
                };
                let Some(sequence) = sequence.or_else(|| self.own.latest(&room)) else {
                    self.error(format!(
                        "INVALID_COMMAND: no message in {room} to react to; name one: #SEQ"
                    ));
                    return;
                };
                self.spawn(move |client| async move {
                    let result = client.react(&room, sequence, &emoji, add).await;
                    let what = if add { "reaction" } else { "unreaction" };
                    Outcome::Changed { room, what, result }
                });
            }
            Command::Direct(user) => {
                self.spawn(move |client| async move {
                    Outcome::Direct(client.open_direct(&user).await)
                });
            }
            Command::Read => {
                self.marked_at = None;
                self.mark_shown_read();
                self.info("marked read".into());
            }
            Command::Edit(sequence, text) => {
                let Some((room, sequence)) = self.change_target(sequence) else {
                    return;
                };
                self.spawn(move |client| async move {
                    let result = client.edit(&room, sequence, &text).await;
                    Outcome::Changed {
                        room,
                        what: "edit",
                        result,
                    }
                });
            }
            Command::Delete(sequence) => {
                let Some((room, sequence)) = self.change_target(sequence) else {
                    return;
                };
                self.spawn(move |client| async move {
                    let result = client.delete(&room, sequence).await;
                    Outcome::Changed {
                        room,
                        what: "delete",
                        result,
                    }
                });
            }
        }
    }

    /// The current room and the message an `/edit` or `/delete` changes:
    /// the one numbered, or this user's last one there.
    fn change_target(&mut self, sequence: Option<u64>) -> Option<(String, u64)> {
        let room = self.room_or_current(None)?;
        match sequence.or_else(|| self.own.last(&room)) {
            Some(sequence) => Some((room, sequence)),
            None => {
                self.error(format!(
                    "INVALID_COMMAND: no message of yours in {room} to change; name one: #SEQ (see /history)"
                ));
                None
            }
        }
    }

    /// Notes this user's messages (live or from history), and deletes, for
    /// `/edit` and `/delete` without a number.
    pub(super) fn remember(&mut self, m: &MessageEvent) {
        if m.kind() == MessageKind::Message && !m.deleted {
            self.own.seen(&m.room, m.sequence);
        }
        match m.kind() {
            MessageKind::Message if !m.deleted && self.is_me(m.sender.as_ref()) => {
                self.own.sent(&m.room, m.sequence)
            }
            MessageKind::Delete => self.own.deleted(&m.room, m.target_sequence),
            _ => {}
        }
    }

    /// The room a command names, or the current one; with neither, says so
    /// and gives `None`.
    fn room_or_current(&mut self, room: Option<String>) -> Option<String> {
        let room = room.or_else(|| self.current.clone());
        if room.is_none() {
            self.error("INVALID_COMMAND: no current room".into());
        }
        room
    }

    /// Sends `text` to the current room.
    fn say(&mut self, text: String) {
        let Some(room) = self.current.clone() else {
            self.error("INVALID_COMMAND: join a room first (/join ROOM)".into());
            return;
        };
        // Sent: the next keystroke says "typing" afresh.
        self.typing_said = None;
        self.spawn(move |client| async move {
            let result = client.send(&room, &text).await;
            Outcome::Sent { room, text, result }
        });
    }

    /// After the input line or the room shown changed: tells the current
    /// room this user is typing while the line holds a message (at most
    /// every [`TYPING_REPEAT`]; never for a command), and tells the room
    /// it was said to that it stopped once the line is emptied or another
    /// room is shown. Never waited for or reported (an announcement
    /// refused or lost matters to nobody).
    pub(super) fn typing_changed(&mut self) {
        let text = self.input.text.trim_start();
        let command = text.starts_with('/') && !text.starts_with("//");
        let typing_in = self
            .current
            .clone()
            .filter(|_| !text.trim().is_empty() && !command);
        let now = Instant::now();
        if let Some((said, at)) = self.typing_said.clone() {
            if typing_in.as_ref() == Some(&said) && now.duration_since(at) < TYPING_REPEAT {
                return;
            }
            if typing_in.as_ref() != Some(&said) {
                self.typing_said = None;
                self.say_typing(said, false);
            }
        }
        if let Some(room) = typing_in {
            self.typing_said = Some((room.clone(), now));
            self.say_typing(room, true);
        }
    }

    fn say_typing(&self, room: String, typing: bool) {
        let client = self.client.clone();
        tokio::spawn(async move {
            let _ = client.typing(&room, typing).await;
        });
    }

    /// Fetches the room's last `n` stored messages into its pane.
    pub(super) fn fetch_history(&mut self, room: String, n: u32) {
        self.spawn(move |client| async move {
            let result = client
                .history(&room, HistoryDirection::Backward, 0, n)
                .await;
            Outcome::History { room, result }
        });
    }

    /// Runs a request in its own task, so the UI never waits on the network.
    /// Each starts only once the one before has finished: the server must
    /// see messages in the order they were typed, and a join before what is
    /// sent to the room.
    pub(super) fn spawn<F, Fut>(&mut self, request: F)
    where
        F: FnOnce(Client) -> Fut + Send + 'static,
        Fut: Future<Output = Outcome> + Send + 'static,
    {
        let (done, next) = oneshot::channel::<()>();
        let previous = self.previous_request.replace(next);
        let client = self.client.clone();
        let outcomes = self.outcomes.clone();
        self.in_flight += 1;
        tokio::spawn(async move {
            if let Some(previous) = previous {
                // An error only means the previous task is gone: go ahead.
                let _ = previous.await;
            }
            let outcome = request(client).await;
            drop(done);
            // Fails only when the UI has exited, and then nobody cares.
            let _ = outcomes.send(outcome);
        });
    }

    /// Shows what a finished request came to.
    pub(super) fn on_outcome(&mut self, outcome: Outcome) {
        self.in_flight = self.in_flight.saturating_sub(1);
        match outcome {
            Outcome::Joined { room, result, show } => self.on_joined(room, result, show),
            Outcome::Left { room, result } => {
                self.typing.remove(&room);
                self.sync_rooms();
                match result {
                    Ok(r) => self.info(format!("left {}", r.room)),
                    Err(e) => self.error(format!("cannot leave {room}: {e}")),
                }
            }
            Outcome::Sent { room, text, result } => {
                // Success shows when the message comes back as an event.
                if let Err(e) = result {
                    let text = format!("not sent to {room}: {e} — {text:?}");
                    self.push_room(&room, Entry::now(Kind::Error(text)));
                }
            }
            Outcome::Changed { room, what, result } => {
                // Success shows when the change comes back as an event.
                if let Err(e) = result {
                    let text = format!("{what} refused in {room}: {e}");
                    self.push_room(&room, Entry::now(Kind::Error(text)));
                }
            }
            Outcome::Direct(result) => match result {
                Ok(d) => {
                    let peer = d.peer.map(|p| p.display_name).unwrap_or_default();
                    self.directs.insert(d.room.clone(), peer.clone());
                    self.panes.entry(d.room.clone()).or_default();
                    self.sync_rooms();
                    self.switch_to(Some(d.room.clone()));
                    self.info(format!("direct conversation with {peer}"));
                    self.fetch_history(d.room, HISTORY_ON_JOIN);
                }
                Err(e) => self.error(format!("cannot open the direct conversation: {e}")),
            },
            Outcome::Directs(result) => match result {
                Ok(list) => {
                    for d in list.into_iter().take(DIRECTS_JOINED) {
                        let peer = d.peer.map(|p| p.display_name).unwrap_or_default();
                        self.directs.insert(d.room.clone(), peer);
                        if !self.rooms.contains(&d.room) {
                            // Listed, not shown: the room in view stays.
                            let room = d.room;
                            self.joining.insert(room.clone());
                            self.panes.entry(room.clone()).or_default();
                            self.spawn(move |client| async move {
                                let result = client.join(&room).await;
                                Outcome::Joined {
                                    room,
                                    result,
                                    show: false,
                                }
                            });
                        }
                    }
                }
                Err(e) => self.error(format!("cannot list the direct conversations: {e}")),
            },
            Outcome::Members { room, result } => match result {
                Ok(members) => self.info(format!(
                    "members of {room} ({}): {}",
                    members.len(),
                    names(&members)
                )),
                Err(e) => self.error(format!("cannot list members of {room}: {e}")),
            },
            Outcome::History { room, result } => self.on_history(room, result),
            Outcome::Rooms(result) => match result {
                Ok(rooms) if rooms.is_empty() => self.info("rooms: none".into()),
                Ok(rooms) => self.info(format!("rooms: {}", rooms.join(", "))),
                Err(e) => self.error(format!("cannot list rooms: {e}")),
            },
        }
    }

    /// A `/join` done: show the room and what was said in it.
    fn on_joined(&mut self, room: String, result: Result<JoinRoomResult, ClientError>, show: bool) {
        self.joining.remove(&room);
        self.sync_rooms();
        match result {
            Ok(r) => {
                if show {
                    self.switch_to(Some(room.clone()));
                }
                self.push_room(&room, Entry::now(Kind::Info(joined_text("joined", &r))));
                self.read_state(&room, r.read_sequence, r.unread_count, r.latest_sequence);
                self.fetch_history(room.clone(), HISTORY_ON_JOIN);
            }
            Err(e) if e.code() == Some(ErrorCode::AlreadyAMember) && self.rooms.contains(&room) => {
                self.switch_to(Some(room.clone()));
                self.info(format!("already in {room}"));
            }
            Err(e) => self.error(format!("cannot join {room}: {e}")),
        }
    }

    /// A page of history: a heading, then the messages, oldest first.
    fn on_history(&mut self, room: String, result: Result<HistoryResponse, ClientError>) {
        match result {
            Ok(page) => {
                let text = format!(
                    "last {} stored message(s) of {room} (latest #{}):",
                    page.messages.len(),
                    page.latest_sequence
                );
                self.push_room(&room, Entry::now(Kind::Info(text)));
                for m in page.messages {
                    self.remember(&m);
                    // A change is already applied to its message.
                    if m.kind() != MessageKind::Message {
                        continue;
                    }
                    let entry = self.message_entry(&m);
                    self.push_room(&room, entry);
                }
            }
            Err(e) => self.error(format!("cannot read the history of {room}: {e}")),
        }
    }
}
