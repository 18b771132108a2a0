//! The `chat` console's full-screen terminal UI: status, rooms, messages and input.

use super::command::{self, Command};
use chat_client::proto::{
    DisconnectNotice, DisconnectReason, ErrorCode, HistoryDirection, HistoryResponse,
    JoinRoomResult, LeaveRoomResult, Member, MessageEvent, SendMessageResult,
};
use chat_client::{Client, ClientError, ConnectionState, Event, Events};
use chat_util::now_unix_ms;
use crossterm::event::{
    Event as TermEvent, EventStream, KeyCode, KeyEvent, KeyEventKind, KeyModifiers,
};
use crossterm::{cursor, execute, terminal};
use futures::StreamExt;
use ratatui::Frame;
use ratatui::Terminal;
use ratatui::backend::CrosstermBackend;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, List, ListItem, Paragraph};
use std::collections::{HashMap, HashSet, VecDeque};
use std::future::Future;
use std::io::Stdout;
use std::panic::PanicHookInfo;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError, TryLockError};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};
use tokio::time::{Instant, MissedTickBehavior};

/// Lines kept per room; older ones are dropped.
const HISTORY: usize = 1000;
/// Stored messages shown when a room is joined (and by a bare `/history`).
const HISTORY_ON_JOIN: u32 = 20;
/// Redraw period while idle, so the reconnect countdown moves.
const TICK: Duration = Duration::from_millis(250);
/// Width of `HH:MM:SS `, the indent of a wrapped line's continuation rows.
const TIME_WIDTH: usize = 9;
/// Below this terminal width the rooms pane is hidden to leave room for text.
const MIN_WIDTH_FOR_ROOMS: u16 = 50;

/// Runs the full-screen UI until `/quit`, Ctrl-C or the end of input.
pub async fn run(
    client: Client,
    events: Events,
    server: String,
    rooms: Vec<String>,
) -> anyhow::Result<()> {
    let mut screen = Screen::enter()?;
    let (outcomes_tx, outcomes) = mpsc::unbounded_channel();
    let app = App::new(client.clone(), server, rooms, outcomes_tx);
    let result = app.run(&mut screen.terminal, events, outcomes).await;
    client.close();
    // Restore before returning so an error is printed on the normal screen.
    drop(screen);
    result
}

// ---------------------------------------------------------------------------
// Terminal setup and restoration

/// Whether the terminal is in raw mode on the alternate screen; makes
/// restoring idempotent, because a second "leave alternate screen" can move
/// the cursor back over a panic message already printed.
static TERMINAL_TAKEN: AtomicBool = AtomicBool::new(false);
/// Set by the panic hook: once the terminal is restored behind the UI's back
/// the UI cannot go on drawing, so the loop ends.
static PANICKED: AtomicBool = AtomicBool::new(false);
/// Held while drawing, so a panic on another thread (a request task) does
/// not restore the terminal mid-frame and have the rest of the frame paint
/// over its message.
static DRAWING: Mutex<()> = Mutex::new(());

type PanicHook = dyn Fn(&PanicHookInfo<'_>) + Sync + Send + 'static;

fn restore_terminal() {
    if TERMINAL_TAKEN.swap(false, Ordering::SeqCst) {
        let _ = terminal::disable_raw_mode();
        let _ = execute!(
            std::io::stdout(),
            terminal::LeaveAlternateScreen,
            cursor::Show
        );
    }
}

/// Restores the terminal and the previous panic hook when dropped, whatever
/// the way out (return, `?`, panic unwinding through `run`).
struct Restore {
    previous_hook: Arc<PanicHook>,
}

impl Drop for Restore {
    fn drop(&mut self) {
        restore_terminal();
        // Changing the hook while panicking would abort the process.
        if !std::thread::panicking() {
            let previous = self.previous_hook.clone();
            let _ours = std::panic::take_hook();
            std::panic::set_hook(Box::new(move |info| previous(info)));
        }
    }
}

/// The terminal, taken over for the life of the UI.
struct Screen {
    terminal: Terminal<CrosstermBackend<Stdout>>,
    // Declared last so it drops after the terminal (whose drop writes).
    _restore: Restore,
}

impl Screen {
    fn enter() -> anyhow::Result<Screen> {
        terminal::enable_raw_mode()?;
        TERMINAL_TAKEN.store(true, Ordering::SeqCst);
        let previous_hook: Arc<PanicHook> = Arc::from(std::panic::take_hook());
        let chained = previous_hook.clone();
        std::panic::set_hook(Box::new(move |info| {
            PANICKED.store(true, Ordering::SeqCst);
            // A panic inside the draw itself holds the lock on this thread:
            // waiting for it would deadlock, hence the deadline.
            let deadline = std::time::Instant::now() + Duration::from_millis(200);
            let _drawing = loop {
                match DRAWING.try_lock() {
                    Ok(guard) => break Some(guard),
                    Err(TryLockError::Poisoned(p)) => break Some(p.into_inner()),
                    Err(TryLockError::WouldBlock) if std::time::Instant::now() < deadline => {
                        std::thread::sleep(Duration::from_millis(1));
                    }
                    Err(TryLockError::WouldBlock) => break None,
                }
            };
            // Restore first, or the message lands on the alternate screen in
            // raw mode and vanishes.
            restore_terminal();
            chained(info);
        }));
        // From here on every early return restores through `restore`.
        let restore = Restore { previous_hook };
        execute!(std::io::stdout(), terminal::EnterAlternateScreen)?;
        let mut terminal = Terminal::new(CrosstermBackend::new(std::io::stdout()))?;
        terminal.clear()?;
        Ok(Screen {
            terminal,
            _restore: restore,
        })
    }
}

// ---------------------------------------------------------------------------
// State

/// Where the connection stands, as the status line shows it.
#[derive(Debug, Clone)]
enum Conn {
    Connecting,
    Connected,
    Reconnecting {
        attempt: u32,
        at: Instant,
        error: String,
    },
    Disconnected(String),
    Closed,
}

/// What one line in a pane is.
#[derive(Debug, Clone)]
enum Kind {
    Message {
        sender: String,
        mine: bool,
        color: Color,
        text: String,
    },
    /// Joins, leaves, command output.
    Info(String),
    /// Connection trouble and server notifications.
    Notice(String),
    Error(String),
}

#[derive(Debug, Clone)]
struct Entry {
    time_ms: i64,
    kind: Kind,
}

impl Entry {
    fn now(kind: Kind) -> Entry {
        Entry {
            time_ms: now_unix_ms(),
            kind,
        }
    }

    /// The line as screen rows of at most `width` columns.
    fn rows(&self, width: usize) -> Vec<Line<'static>> {
        let time = format!("{} ", hms(self.time_ms));
        let dim = Style::new().fg(Color::DarkGray);
        let (mark, style, text) = match &self.kind {
            Kind::Message {
                sender,
                mine,
                color,
                text,
            } => {
                let mut style = Style::new().fg(*color).add_modifier(Modifier::BOLD);
                if *mine {
                    style = style.add_modifier(Modifier::UNDERLINED);
                }
                let sender = format!("<{sender}>");
                let segments = [
                    (dim, time.as_str()),
                    (style, sender.as_str()),
                    (Style::new(), " "),
                    (Style::new(), text.as_str()),
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
struct Pane {
    lines: VecDeque<Entry>,
    /// Messages that arrived while another room was shown.
    unread: usize,
    /// Rows scrolled up from the bottom; 0 follows new lines.
    scroll: usize,
}

impl Pane {
    fn push(&mut self, entry: Entry, width: u16) {
        if self.scroll > 0 {
            // Keep the rows being read in place while new ones arrive below.
            self.scroll += entry.rows(usize::from(width.max(1))).len();
        }
        if self.lines.len() >= HISTORY {
            self.lines.pop_front();
        }
        self.lines.push_back(entry);
    }
}

/// The input line; `cursor` counts characters, not bytes.
#[derive(Debug, Default)]
struct Input {
    text: String,
    cursor: usize,
}

impl Input {
    fn byte_index(&self, chars: usize) -> usize {
        self.text
            .char_indices()
            .nth(chars)
            .map_or(self.text.len(), |(i, _)| i)
    }

    fn len(&self) -> usize {
        self.text.chars().count()
    }

    fn insert(&mut self, c: char) {
        let at = self.byte_index(self.cursor);
        self.text.insert(at, c);
        self.cursor += 1;
    }

    fn backspace(&mut self) {
        if self.cursor > 0 {
            self.cursor -= 1;
            let at = self.byte_index(self.cursor);
            self.text.remove(at);
        }
    }

    fn delete(&mut self) {
        if self.cursor < self.len() {
            let at = self.byte_index(self.cursor);
            self.text.remove(at);
        }
    }

    fn left(&mut self) {
        self.cursor = self.cursor.saturating_sub(1);
    }

    fn right(&mut self) {
        self.cursor = (self.cursor + 1).min(self.len());
    }

    fn home(&mut self) {
        self.cursor = 0;
    }

    fn end(&mut self) {
        self.cursor = self.len();
    }

    fn clear_to_start(&mut self) {
        let at = self.byte_index(self.cursor);
        self.text.replace_range(..at, "");
        self.cursor = 0;
    }

    fn take(&mut self) -> String {
        self.cursor = 0;
        std::mem::take(&mut self.text)
    }
}

/// What a request task reports back to the UI loop.
#[derive(Debug)]
enum Outcome {
    Joined {
        room: String,
        result: Result<JoinRoomResult, ClientError>,
    },
    Left {
        room: String,
        result: Result<LeaveRoomResult, ClientError>,
    },
    Sent {
        room: String,
        text: String,
        result: Result<SendMessageResult, ClientError>,
    },
    Members {
        room: String,
        result: Result<Vec<Member>, ClientError>,
    },
    Rooms(Result<Vec<String>, ClientError>),
    History {
        room: String,
        result: Result<HistoryResponse, ClientError>,
    },
}

struct App {
    client: Client,
    server: String,
    /// Who the server says we are; unknown until the first welcome.
    me: Option<Member>,
    conn: Conn,
    /// Sessions opened so far, to tell a first join from a rejoin.
    sessions: u32,
    /// The rooms pane, in the order they were joined.
    rooms: Vec<String>,
    /// Rooms asked for but not yet confirmed: their events may arrive before
    /// the join reply, and must not be lost.
    joining: HashSet<String>,
    panes: HashMap<String, Pane>,
    /// Shown when in no room, so command output still has somewhere to go.
    system: Pane,
    current: Option<String>,
    input: Input,
    outcomes: mpsc::UnboundedSender<Outcome>,
    /// Completes when the last request spawned has finished.
    previous_request: Option<oneshot::Receiver<()>>,
    in_flight: usize,
    /// The message pane's inner size at the last draw.
    pane_width: u16,
    pane_height: u16,
    /// The last connection trouble shown, so retries do not flood the panes.
    last_trouble: Option<String>,
    quit: bool,
}

impl App {
    fn new(
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
            quit: false,
        };
        app.sync_rooms();
        app.info(format!(
            "connecting to {}… /help lists the commands",
            app.server
        ));
        app
    }

    async fn run(
        mut self,
        terminal: &mut Terminal<CrosstermBackend<Stdout>>,
        mut events: Events,
        mut outcomes: mpsc::UnboundedReceiver<Outcome>,
    ) -> anyhow::Result<()> {
        let mut keys = EventStream::new();
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(MissedTickBehavior::Skip);
        let mut events_open = true;
        loop {
            if self.quit {
                return Ok(());
            }
            {
                let _drawing = DRAWING.lock().unwrap_or_else(PoisonError::into_inner);
                if PANICKED.load(Ordering::SeqCst) {
                    anyhow::bail!("the chat client panicked (see above)");
                }
                terminal.draw(|frame| self.draw(frame))?;
            }
            tokio::select! {
                key = keys.next() => match key {
                    Some(Ok(event)) => self.on_terminal(event),
                    Some(Err(e)) => return Err(e.into()),
                    None => return Ok(()),
                },
                event = events.next(), if events_open => match event {
                    Some(event) => self.on_event(event),
                    None => {
                        events_open = false;
                        self.conn = Conn::Closed;
                        self.broadcast(Kind::Notice("the client stopped; /quit to exit".into()));
                    }
                },
                Some(outcome) = outcomes.recv() => self.on_outcome(outcome),
                _ = tick.tick() => {
                    if matches!(self.client.state(), ConnectionState::Closed) {
                        self.conn = Conn::Closed;
                    }
                }
            }
        }
    }

    // -- panes ---------------------------------------------------------------

    /// Makes the rooms pane match the rooms the client is in (which the
    /// library changes on join, leave and failed rejoins).
    fn sync_rooms(&mut self) {
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

    fn switch_to(&mut self, room: Option<String>) {
        if let Some(pane) = room.as_ref().and_then(|r| self.panes.get_mut(r)) {
            pane.unread = 0;
        }
        self.current = room;
    }

    fn cycle_room(&mut self, forward: bool) {
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

    fn current_pane(&mut self) -> &mut Pane {
        match self.current.as_ref().and_then(|c| self.panes.get_mut(c)) {
            Some(pane) => pane,
            None => &mut self.system,
        }
    }

    fn push_current(&mut self, kind: Kind) {
        let width = self.pane_width;
        self.current_pane().push(Entry::now(kind), width);
    }

    /// Adds a line to `room`'s pane, or to the current one if that room is
    /// not shown (e.g. it was just left).
    fn push_room(&mut self, room: &str, entry: Entry) {
        let width = self.pane_width;
        match self.panes.get_mut(room) {
            Some(pane) => pane.push(entry, width),
            None => self.current_pane().push(entry, width),
        }
    }

    /// Connection notices and server notifications go to every pane, so
    /// whichever room is shown tells the same story.
    fn broadcast(&mut self, kind: Kind) {
        self.broadcast_at(now_unix_ms(), kind);
    }

    fn broadcast_at(&mut self, time_ms: i64, kind: Kind) {
        let width = self.pane_width;
        let entry = Entry { time_ms, kind };
        for (name, pane) in self.panes.iter_mut() {
            if self.rooms.contains(name) {
                pane.push(entry.clone(), width);
            }
        }
        self.system.push(entry, width);
    }

    fn info(&mut self, text: String) {
        self.push_current(Kind::Info(text));
    }

    fn error(&mut self, text: String) {
        self.push_current(Kind::Error(text));
    }

    fn is_me(&self, member: Option<&Member>) -> bool {
        match (member, &self.me) {
            (Some(m), Some(me)) => m.user_id == me.user_id,
            _ => false,
        }
    }

    // -- input -----------------------------------------------------------------

    fn on_terminal(&mut self, event: TermEvent) {
        match event {
            // Some terminals also report releases; acting on them would type
            // every key twice.
            TermEvent::Key(key) if key.kind != KeyEventKind::Release => self.on_key(key),
            // A resize needs nothing here: `Terminal::draw` picks up the new
            // size, and the loop draws after every event.
            _ => {}
        }
    }

    fn on_key(&mut self, key: KeyEvent) {
        let ctrl = key.modifiers.contains(KeyModifiers::CONTROL);
        let page = usize::from(self.pane_height.saturating_sub(1).max(1));
        match key.code {
            KeyCode::Char('c') if ctrl => self.quit = true,
            KeyCode::Char('a') if ctrl => self.input.home(),
            KeyCode::Char('e') if ctrl => self.input.end(),
            KeyCode::Char('u') if ctrl => self.input.clear_to_start(),
            KeyCode::Char(_) if ctrl || key.modifiers.contains(KeyModifiers::ALT) => {}
            KeyCode::Char(c) => self.input.insert(c),
            KeyCode::Backspace => self.input.backspace(),
            KeyCode::Delete => self.input.delete(),
            KeyCode::Left => self.input.left(),
            KeyCode::Right => self.input.right(),
            KeyCode::Home => self.input.home(),
            KeyCode::End => self.input.end(),
            KeyCode::Up => self.scroll_up(1),
            KeyCode::Down => self.scroll_down(1),
            KeyCode::PageUp => self.scroll_up(page),
            KeyCode::PageDown => self.scroll_down(page),
            KeyCode::Esc => self.current_pane().scroll = 0,
            KeyCode::Tab => self.cycle_room(true),
            KeyCode::BackTab => self.cycle_room(false),
            KeyCode::Enter => {
                let line = self.input.take();
                self.submit(&line);
            }
            _ => {}
        }
    }

    fn scroll_up(&mut self, rows: usize) {
        let pane = self.current_pane();
        // Clamped to the history at the next draw.
        pane.scroll = pane.scroll.saturating_add(rows);
    }

    fn scroll_down(&mut self, rows: usize) {
        let pane = self.current_pane();
        pane.scroll = pane.scroll.saturating_sub(rows);
    }

    /// Runs one line as line mode would, but with requests in the background.
    fn submit(&mut self, line: &str) {
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
                    Outcome::Joined { room, result }
                });
            }
            Command::Leave(room) => {
                let Some(room) = room.or_else(|| self.current.clone()) else {
                    self.error("INVALID_COMMAND: no current room".into());
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
                let Some(room) = room.or_else(|| self.current.clone()) else {
                    self.error("INVALID_COMMAND: no current room".into());
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
                let Some(room) = self.current.clone() else {
                    self.error("INVALID_COMMAND: no current room".into());
                    return;
                };
                self.fetch_history(room, n.unwrap_or(HISTORY_ON_JOIN));
            }
            Command::Say(text) => {
                let Some(room) = self.current.clone() else {
                    self.error("INVALID_COMMAND: join a room first (/join ROOM)".into());
                    return;
                };
                self.spawn(move |client| async move {
                    let result = client.send(&room, &text).await;
                    Outcome::Sent { room, text, result }
                });
            }
        }
    }

    /// How a message is shown, live or from history.
    fn message_entry(&self, m: &MessageEvent) -> Entry {
        let mine = self.is_me(m.sender.as_ref());
        let (sender, color) = match &m.sender {
            Some(s) => (s.display_name.clone(), color_for(&s.user_id)),
            None => ("?".to_string(), Color::Gray),
        };
        Entry {
            time_ms: m.server_time_unix_ms,
            kind: Kind::Message {
                sender,
                mine,
                color,
                text: m.text.clone(),
            },
        }
    }

    /// Fetches the room's last `n` stored messages into its pane.
    fn fetch_history(&mut self, room: String, n: u32) {
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
    fn spawn<F, Fut>(&mut self, request: F)
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

    // -- results -------------------------------------------------------------

    fn on_outcome(&mut self, outcome: Outcome) {
        self.in_flight = self.in_flight.saturating_sub(1);
        match outcome {
            Outcome::Joined { room, result } => {
                self.joining.remove(&room);
                self.sync_rooms();
                match result {
                    Ok(r) => {
                        self.switch_to(Some(room.clone()));
                        self.push_room(&room, Entry::now(Kind::Info(joined_text("joined", &r))));
                        self.fetch_history(room.clone(), HISTORY_ON_JOIN);
                    }
                    Err(e)
                        if e.code() == Some(ErrorCode::AlreadyAMember)
                            && self.rooms.contains(&room) =>
                    {
                        self.switch_to(Some(room.clone()));
                        self.info(format!("already in {room}"));
                    }
                    Err(e) => self.error(format!("cannot join {room}: {e}")),
                }
            }
            Outcome::Left { room, result } => {
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
            Outcome::Members { room, result } => match result {
                Ok(members) => self.info(format!(
                    "members of {room} ({}): {}",
                    members.len(),
                    names(&members)
                )),
                Err(e) => self.error(format!("cannot list members of {room}: {e}")),
            },
            Outcome::History { room, result } => match result {
                Ok(page) => {
                    let text = format!(
                        "last {} stored message(s) of {room} (latest #{}):",
                        page.messages.len(),
                        page.latest_sequence
                    );
                    self.push_room(&room, Entry::now(Kind::Info(text)));
                    for m in page.messages {
                        let entry = self.message_entry(&m);
                        self.push_room(&room, entry);
                    }
                }
                Err(e) => self.error(format!("cannot read the history of {room}: {e}")),
            },
            Outcome::Rooms(result) => match result {
                Ok(rooms) if rooms.is_empty() => self.info("rooms: none".into()),
                Ok(rooms) => self.info(format!("rooms: {}", rooms.join(", "))),
                Err(e) => self.error(format!("cannot list rooms: {e}")),
            },
        }
    }

    fn on_event(&mut self, event: Event) {
        match event {
            Event::Connected(welcome) => {
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
            }
            Event::Rejoined { room, result } => {
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
            Event::Message(m) => {
                if !self.panes.contains_key(&m.room) {
                    return;
                }
                let entry = self.message_entry(&m);
                let is_current = self.current.as_deref() == Some(m.room.as_str());
                let width = self.pane_width;
                if let Some(pane) = self.panes.get_mut(&m.room) {
                    if !is_current {
                        pane.unread += 1;
                    }
                    pane.push(entry, width);
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
            Event::Notification(n) => {
                let time = if n.server_time_unix_ms > 0 {
                    n.server_time_unix_ms
                } else {
                    now_unix_ms()
                };
                self.broadcast_at(time, Kind::Notice(format!("notice: {}", n.text)));
            }
            Event::Disconnected { notice, reason } => {
                let text = match &notice {
                    Some(n) => notice_text(n),
                    None => reason.clone(),
                };
                self.conn = Conn::Disconnected(text.clone());
                self.last_trouble = Some(reason);
                self.broadcast(Kind::Notice(format!("disconnected: {text}")));
            }
            Event::Reconnecting {
                attempt,
                delay,
                error,
            } => {
                // The status line counts down each attempt; the panes only
                // hear about a new kind of failure.
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
            Event::Stopped { reason } => {
                self.broadcast(Kind::Notice(format!(
                    "stopped: {reason} (a fresh token is needed; /quit to exit)"
                )));
                self.conn = Conn::Closed;
            }
        }
    }

    // -- drawing ---------------------------------------------------------------

    fn draw(&mut self, frame: &mut Frame<'_>) {
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
        self.draw_input(frame, input);
    }

    fn draw_status(&self, frame: &mut Frame<'_>, area: Rect) {
        let bar = Style::new().bg(Color::DarkGray).fg(Color::White);
        let (state, color) = match &self.conn {
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
        };
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

    fn draw_rooms(&self, frame: &mut Frame<'_>, area: Rect) {
        let mut items: Vec<ListItem<'_>> = Vec::new();
        for room in &self.rooms {
            let current = self.current.as_deref() == Some(room.as_str());
            let unread = self.panes.get(room).map_or(0, |p| p.unread);
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
            items.push(ListItem::new(Line::from(spans)));
        }
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

    fn draw_messages(&mut self, frame: &mut Frame<'_>, area: Rect) {
        let title = match &self.current {
            Some(room) => format!(" {room} "),
            None => " no room — /join ROOM ".to_string(),
        };
        let mut block = Block::bordered()
            .title(title)
            .title_top(Line::from(" times UTC ").right_aligned());
        let inner = block.inner(area);
        self.pane_width = inner.width;
        self.pane_height = inner.height;
        let width = usize::from(inner.width.max(1));
        let height = usize::from(inner.height);
        let pane = match self.current.as_ref().and_then(|c| self.panes.get_mut(c)) {
            Some(pane) => pane,
            None => &mut self.system,
        };
        // Wrap from the newest line back, only as far as the view reaches.
        let mut rows: Vec<Line<'static>> = Vec::new();
        let wanted = height.saturating_add(pane.scroll);
        for entry in pane.lines.iter().rev() {
            if rows.len() >= wanted {
                break;
            }
            rows.extend(entry.rows(width).into_iter().rev());
        }
        pane.scroll = pane.scroll.min(rows.len().saturating_sub(height));
        let scroll = pane.scroll;
        if scroll > 0 {
            block = block.title_bottom(
                Line::styled(
                    format!(" ↑ {scroll} rows up — Down/PgDn/Esc to return "),
                    Style::new().fg(Color::Yellow),
                )
                .right_aligned(),
            );
        }
        let visible: Vec<Line<'static>> = rows
            .into_iter()
            .skip(scroll)
            .take(height)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect();
        frame.render_widget(block, area);
        frame.render_widget(Paragraph::new(visible), inner);
    }

    fn draw_input(&self, frame: &mut Frame<'_>, area: Rect) {
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
        let prompt = "> ";
        let avail = usize::from(inner.width).saturating_sub(prompt.len()).max(1);
        let chars: Vec<char> = self.input.text.chars().collect();
        let widths: Vec<usize> = chars.iter().map(|c| char_width(*c)).collect();
        let cursor = self.input.cursor.min(chars.len());
        // Scroll horizontally just enough to keep the cursor in view.
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
        let line = Line::from(vec![
            Span::styled(
                prompt,
                Style::new().fg(Color::Cyan).add_modifier(Modifier::BOLD),
            ),
            Span::raw(shown),
        ]);
        frame.render_widget(Paragraph::new(line), inner);
        let x = inner.x + u16::try_from(prompt.len() + before).unwrap_or(inner.width);
        frame.set_cursor_position((x.min(inner.right().saturating_sub(1)), inner.y));
    }
}

// ---------------------------------------------------------------------------
// Helpers

fn joined_text(verb: &str, r: &JoinRoomResult) -> String {
    format!(
        "{verb} {} — {} member{}: {}",
        r.room,
        r.members.len(),
        if r.members.len() == 1 { "" } else { "s" },
        names(&r.members)
    )
}

fn names(members: &[Member]) -> String {
    members
        .iter()
        .map(|m| m.display_name.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

fn display(member: &Option<Member>) -> String {
    member
        .as_ref()
        .map_or_else(|| "someone".to_string(), |m| m.display_name.clone())
}

fn notice_text(n: &DisconnectNotice) -> String {
    let reason = DisconnectReason::try_from(n.reason)
        .unwrap_or(DisconnectReason::Unspecified)
        .as_str_name()
        .trim_start_matches("DISCONNECT_REASON_")
        .to_string();
    format!("{reason}: {}", n.message)
}

/// A stable colour per user, so a name looks the same everywhere.
fn color_for(user_id: &str) -> Color {
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
fn hms(unix_ms: i64) -> String {
    let secs = unix_ms.div_euclid(1000).rem_euclid(86_400);
    format!(
        "{:02}:{:02}:{:02}",
        secs / 3600,
        secs % 3600 / 60,
        secs % 60
    )
}

/// Columns a character takes on screen (0 for combining marks, 2 for wide).
fn char_width(c: char) -> usize {
    let mut buf = [0u8; 4];
    Span::raw(&*c.encode_utf8(&mut buf)).width()
}

/// Breaks styled text into rows of at most `width` columns, at spaces where
/// it can, indenting continuation rows by `indent` so the time column stays
/// clear. Done here rather than by `Paragraph`'s wrapping because scrolling
/// needs to know how many rows each line takes.
fn wrap(segments: &[(Style, &str)], width: usize, indent: usize) -> Vec<Line<'static>> {
    let width = width.max(1);
    let indent = if indent * 2 > width { 0 } else { indent };
    let mut cells: Vec<(char, usize, Style)> = Vec::new();
    for (style, text) in segments {
        for c in text.chars() {
            // Other control characters would be dropped silently by the
            // renderer: show that one was there.
            let c = match c {
                '\t' => ' ',
                '\r' => continue,
                '\n' => '\n',
                c if c.is_control() => '\u{fffd}',
                c => c,
            };
            let w = if c == '\n' { 0 } else { char_width(c) };
            cells.push((c, w, *style));
        }
    }

    let mut rows: Vec<Line<'static>> = Vec::new();
    let mut start = 0;
    loop {
        let first = rows.is_empty();
        let avail = if first { width } else { width - indent };
        // Break at a space only past the time column and the row's middle:
        // an early break wastes more room than splitting a long word.
        let past_time = if first { indent + 1 } else { 1 };
        let earliest = start + past_time.max(avail / 2);
        let mut used = 0;
        let mut end = start;
        let next;
        loop {
            let Some(&(c, w, _)) = cells.get(end) else {
                next = None;
                break;
            };
            if c == '\n' {
                next = Some(end + 1);
                break;
            }
            if used + w > avail && end > start {
                if c == ' ' {
                    next = Some(end + 1);
                } else if let Some(space) = (earliest..end).rev().find(|&k| cells[k].0 == ' ') {
                    end = space;
                    next = Some(space + 1);
                } else {
                    next = Some(end);
                }
                break;
            }
            used += w;
            end += 1;
        }
        let mut spans: Vec<Span<'static>> = Vec::new();
        if !first && indent > 0 {
            spans.push(Span::raw(" ".repeat(indent)));
        }
        let mut run = String::new();
        let mut run_style = Style::new();
        for &(c, _, style) in &cells[start..end] {
            if style != run_style && !run.is_empty() {
                spans.push(Span::styled(std::mem::take(&mut run), run_style));
            }
            run_style = style;
            run.push(c);
        }
        if !run.is_empty() {
            spans.push(Span::styled(run, run_style));
        }
        rows.push(Line::from(spans));
        match next {
            Some(next) => start = next,
            None => return rows,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(line: &Line<'_>) -> String {
        line.spans.iter().map(|s| s.content.as_ref()).collect()
    }

    #[test]
    fn formats_times_in_utc() {
        assert_eq!(hms(0), "00:00:00");
        assert_eq!(hms(1_700_000_000_123), "22:13:20");
        assert_eq!(hms(-1000), "23:59:59");
    }

    #[test]
    fn wraps_with_indent_and_breaks_on_newlines() {
        let rows = wrap(
            &[
                (Style::new(), "12345678 "),
                (Style::new(), "abcdefghijklmnopqrstuvwxyz\nxy"),
            ],
            20,
            9,
        );
        let rows: Vec<String> = rows.iter().map(text).collect();
        assert_eq!(
            rows,
            [
                "12345678 abcdefghijk",
                "         lmnopqrstuv",
                "         wxyz",
                "         xy"
            ]
        );
        let rows = wrap(&[(Style::new(), "12345678 hello brave new world")], 20, 9);
        let rows: Vec<String> = rows.iter().map(text).collect();
        assert_eq!(rows, ["12345678 hello brave", "         new world"]);
        for row in wrap(&[(Style::new(), "日本語のテキスト")], 5, 0) {
            assert!(row.width() <= 5);
        }
        let rows = wrap(&[(Style::new(), "a\u{1b}[31mb")], 80, 0);
        assert_eq!(text(&rows[0]), "a\u{fffd}[31mb");
    }

    #[test]
    fn edits_input_by_characters() {
        let mut input = Input::default();
        for c in "héllo".chars() {
            input.insert(c);
        }
        input.left();
        input.left();
        input.backspace();
        assert_eq!(input.text, "hélo");
        input.home();
        input.delete();
        input.end();
        input.insert('!');
        assert_eq!(input.text, "élo!");
        input.left();
        input.clear_to_start();
        assert_eq!((input.text.as_str(), input.cursor), ("!", 0));
        assert_eq!(input.take(), "!");
        assert!(input.text.is_empty());
    }

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
}
