//! Line mode, for scripts and pipes: each input line is a command or a
//! message; each event is printed as one line in a stable format
//! (documented in README.md, "Line mode").

use super::command::{self, Command};
use super::describe::{names, reason_name};
use super::own::OwnMessages;
use chat_client::{Client, ClientError, Event, Events};
use chat_proto::v1::{HistoryDirection, JoinRoomResult, Member, MessageEvent, MessageKind};
use std::collections::VecDeque;
use tokio::io::{AsyncBufReadExt, BufReader};

/// Runs line mode until `/quit` or the end of stdin.
/// Runs until stdin ends, `/quit`, or the client stops; `Err` with the
/// server's refusal if the client stopped for good ([`Event::Stopped`]).
pub async fn run(
    client: Client,
    mut events: Events,
    initial_rooms: Vec<String>,
) -> Result<(), String> {
    let mut current: Option<String> = initial_rooms.first().cloned();
    // Input waits until the first session has joined the initial rooms.
    let mut awaiting: usize = initial_rooms.len();
    let mut ready = false;
    let mut queued: VecDeque<String> = VecDeque::new();
    let mut stdin = BufReader::new(tokio::io::stdin()).lines();
    let mut stdin_open = true;
    let mut stopped = None;
    // This user's messages, for `/edit` and `/delete` without a number.
    let mut own = OwnMessages::default();
    let mut me = String::new();

    loop {
        if ready {
            while let Some(line) = queued.pop_front() {
                if !execute(&client, &mut current, &mut own, command::parse(&line)).await {
                    client.close();
                    return Ok(());
                }
            }
            if !stdin_open {
                client.close();
                return Ok(());
            }
        }
        tokio::select! {
            event = events.next() => match event {
                Some(event) => {
                    print_event(&event);
                    match &event {
                        Event::Connected(w) => me = w.you.as_ref().map(|m| m.user_id.clone()).unwrap_or_default(),
                        Event::Message(m) => remember(&mut own, &me, m),
                        _ => {}
                    }
                    if let Event::Stopped { reason } = &event {
                        stopped = Some(reason.clone());
                    }
                    if let Event::Rejoined { room, result: Ok(_) } = &event
                        && awaiting > 0
                    {
                        // The first joins of the initial rooms show what was said.
                        print_history(&client, room, HISTORY_ON_JOIN, Some((&mut own, &me))).await;
                    }
                    if let Event::Rejoined { .. } = &event {
                        awaiting = awaiting.saturating_sub(1);
                    }
                    if awaiting == 0 && matches!(event, Event::Connected(_) | Event::Rejoined { .. }) {
                        ready = true;
                    }
                }
                None => return stopped.map_or(Ok(()), Err),
            },
            line = stdin.next_line(), if stdin_open => match line {
                Ok(Some(line)) => queued.push_back(line),
                Ok(None) | Err(_) => stdin_open = false,
            },
        }
    }
}

/// Stored messages shown when a room is joined (and by a bare `/history`).
const HISTORY_ON_JOIN: u32 = 10;

/// Notes one of this user's messages (`me`), or a delete, in `own`.
fn remember(own: &mut OwnMessages, me: &str, m: &MessageEvent) {
    if m.kind() == MessageKind::Message && !m.deleted {
        own.seen(&m.room, m.sequence);
    }
    match m.kind() {
        MessageKind::Message
            if !m.deleted && m.sender.as_ref().is_some_and(|s| s.user_id == me) =>
        {
            own.sent(&m.room, m.sequence)
        }
        MessageKind::Delete => own.deleted(&m.room, m.target_sequence),
        _ => {}
    }
}

/// Prints the room's last `n` stored messages as `history` lines (each
/// with its current text, marked `(edited)` or `(deleted)`; the edits and
/// deletes themselves are not printed), then `history-end`. With `own`,
/// this user's messages among them are remembered.
async fn print_history(
    client: &Client,
    room: &str,
    n: u32,
    mut own: Option<(&mut OwnMessages, &str)>,
) {
    match client.history(room, HistoryDirection::Backward, 0, n).await {
        Ok(page) => {
            for m in &page.messages {
                if let Some((own, me)) = own.as_mut() {
                    remember(own, me, m);
                }
                if m.kind() != MessageKind::Message {
                    continue;
                }
                let mark = if m.deleted {
                    " (deleted)"
                } else if m.edited_at_unix_ms > 0 {
                    " (edited)"
                } else {
                    ""
                };
                let reactions = if m.reactions.is_empty() {
                    String::new()
                } else {
                    let each: Vec<String> = m
                        .reactions
                        .iter()
                        .map(|r| format!("{} {}", one_line(&r.emoji), r.count))
                        .collect();
                    format!(" [{}]", each.join(", "))
                };
                println!(
                    "history {} {} {}{mark}{reactions}: {}",
                    m.room,
                    m.sequence,
                    one_line(
                        &m.sender
                            .as_ref()
                            .map(|s| s.display_name.clone())
                            .unwrap_or_default()
                    ),
                    one_line(&m.text)
                );
            }
            println!(
                "history-end {room} shown={} latest={}",
                page.messages.len(),
                page.latest_sequence
            );
        }
        Err(e) => print_error(&e),
    }
}

/// Runs one command; returns false to quit.
async fn execute(
    client: &Client,
    current: &mut Option<String>,
    own: &mut OwnMessages,
    command: Command,
) -> bool {
    match command {
        Command::Nothing => {}
        Command::Quit => return false,
        Command::Help => println!("help {}", command::HELP),
        Command::Invalid(why) => println!("error INVALID_COMMAND: {why}"),
        Command::Join(room) => join(client, current, &room).await,
        Command::Leave(room) => {
            if let Some(room) = room_or_current(room, current) {
                own.forget(&room);
                leave(client, current, &room).await;
            }
        }
        Command::Direct(user) => match client.open_direct(&user).await {
            Ok(d) => {
                let peer = d
                    .peer
                    .as_ref()
                    .map_or(user.as_str(), |p| p.display_name.as_str());
                println!("direct {} {}", d.room, one_line(peer));
                *current = Some(d.room);
            }
            Err(e) => print_error(&e),
        },
        Command::Read => {
            if let Some(room) = room_or_current(None, current) {
                let seen = client.last_seen(&room).unwrap_or(0);
                match client.mark_read(&room, seen).await {
                    Ok(r) => println!(
                        "read-marked {} {} unread={}",
                        r.room, r.read_sequence, r.unread_count
                    ),
                    Err(e) => print_error(&e),
                }
            }
        }
        Command::Edit(sequence, text) => {
            if let Some((room, sequence)) = target(current, own, sequence) {
                match client.edit(&room, sequence, &text).await {
                    Ok(ack) => println!("edit-sent {} {}", ack.room, ack.sequence),
                    Err(e) => print_error(&e),
                }
            }
        }
        Command::React(sequence, emoji, add) => {
            let Some(room) = room_or_current(None, current) else {
                return true;
            };
            let Some(sequence) = sequence.or_else(|| own.latest(&room)) else {
                println!("error INVALID_COMMAND: no message in {room} to react to; name one: #SEQ");
                return true;
            };
            match client.react(&room, sequence, &emoji, add).await {
                Ok(ack) => println!("react-sent {} {}", ack.room, ack.sequence),
                Err(e) => print_error(&e),
            }
        }
        Command::Delete(sequence) => {
            if let Some((room, sequence)) = target(current, own, sequence) {
                match client.delete(&room, sequence).await {
                    Ok(ack) => println!("delete-sent {} {}", ack.room, ack.sequence),
                    Err(e) => print_error(&e),
                }
            }
        }
        Command::Switch(room) => {
            if client.rooms().contains(&room) {
                println!("switched {room}");
                *current = Some(room);
            } else {
                println!("error NOT_A_MEMBER: not in room {room}; /join it first");
            }
        }
        Command::Who(room) => {
            if let Some(room) = room_or_current(room, current) {
                match client.list_members(&room).await {
                    Ok(members) => println!("members {room}: {}", names(&members)),
                    Err(e) => print_error(&e),
                }
            }
        }
        Command::History(n) => {
            if let Some(room) = room_or_current(None, current) {
                print_history(client, &room, n.unwrap_or(HISTORY_ON_JOIN), None).await;
            }
        }
        Command::Rooms => match client.list_rooms().await {
            Ok(rooms) => println!("rooms: {}", rooms.join(", ")),
            Err(e) => print_error(&e),
        },
        Command::Say(text) => say(client, current.as_deref(), &text).await,
    }
    true
}

/// The current room and the message an `/edit` or `/delete` changes: the
/// one numbered, or this user's last one there; if there is none, says so.
fn target(
    current: &Option<String>,
    own: &OwnMessages,
    sequence: Option<u64>,
) -> Option<(String, u64)> {
    let room = room_or_current(None, current)?;
    match sequence.or_else(|| own.last(&room)) {
        Some(sequence) => Some((room, sequence)),
        None => {
            println!(
                "error INVALID_COMMAND: no message of yours in {room} to change; name one: #SEQ"
            );
            None
        }
    }
}

/// The room a command names, or the current one; with neither, says so.
fn room_or_current(room: Option<String>, current: &Option<String>) -> Option<String> {
    let room = room.or_else(|| current.clone());
    if room.is_none() {
        println!("error INVALID_COMMAND: no current room");
    }
    room
}

/// `/join`: the room becomes the current one.
async fn join(client: &Client, current: &mut Option<String>, room: &str) {
    match client.join(room).await {
        Ok(r) => {
            println!(
                "joined {} members={} latest={} read={} unread={}",
                r.room,
                member_count(&r),
                r.latest_sequence,
                r.read_sequence,
                r.unread_count
            );
            *current = Some(r.room);
        }
        Err(e) => print_error(&e),
    }
}

/// `/leave`: leaving the current room makes another one current.
async fn leave(client: &Client, current: &mut Option<String>, room: &str) {
    match client.leave(room).await {
        Ok(r) => {
            println!("left {}", r.room);
            if current.as_deref() == Some(r.room.as_str()) {
                *current = client.rooms().into_iter().next();
            }
        }
        Err(e) => print_error(&e),
    }
}

/// A message to the current room.
async fn say(client: &Client, current: Option<&str>, text: &str) {
    let Some(room) = current else {
        println!("error INVALID_COMMAND: join a room first (/join ROOM)");
        return;
    };
    match client.send(room, text).await {
        Ok(ack) => println!("sent {} {}", ack.room, ack.sequence),
        Err(e) => print_error(&e),
    }
}

fn print_error(e: &ClientError) {
    match e {
        ClientError::Server { .. } => println!("error {e}"),
        other => println!("error CLIENT: {other}"),
    }
}

/// Keeps one event on one line.
fn one_line(text: &str) -> String {
    text.replace('\\', "\\\\")
        .replace('\n', "\\n")
        .replace('\r', "\\r")
}

/// How many members a join reply says its room has (a server older than
/// member pages sends no count: its list is all of them).
fn member_count(r: &JoinRoomResult) -> usize {
    (r.member_count as usize).max(r.members.len())
}

/// The stable one-line form of an event.
pub fn format_event(event: &Event) -> String {
    let display = |m: &Option<Member>| {
        m.as_ref()
            .map(|m| m.display_name.clone())
            .unwrap_or_default()
    };
    match event {
        Event::Connected(w) => format!("connected server={} as={}", w.server_id, display(&w.you)),
        Event::Rejoined {
            room,
            result: Ok(r),
        } => format!(
            "joined {room} members={} latest={} read={} unread={}{}",
            member_count(r),
            r.latest_sequence,
            r.read_sequence,
            r.unread_count,
            if r.backlog_incomplete {
                format!(" missed-before={}", r.backlog_after_sequence + 1)
            } else {
                String::new()
            }
        ),
        Event::Rejoined {
            room,
            result: Err(e),
        } => format!("error rejoin {room}: {e}"),
        Event::Message(m) => match m.kind() {
            MessageKind::Edit => format!(
                "edited {} {} #{} {}: {}",
                m.room,
                m.sequence,
                m.target_sequence,
                one_line(&display(&m.sender)),
                one_line(&m.text)
            ),
            MessageKind::Delete => format!(
                "deleted {} {} #{} {}",
                m.room,
                m.sequence,
                m.target_sequence,
                one_line(&display(&m.sender)),
            ),
            MessageKind::ReactionAdded | MessageKind::ReactionRemoved => format!(
                "{} {} {} #{} {}: {}",
                if m.kind() == MessageKind::ReactionAdded {
                    "reacted"
                } else {
                    "unreacted"
                },
                m.room,
                m.sequence,
                m.target_sequence,
                one_line(&display(&m.sender)),
                one_line(&m.text)
            ),
            MessageKind::Message => format!(
                "message {} {} {}: {}",
                m.room,
                m.sequence,
                one_line(&display(&m.sender)),
                one_line(&m.text)
            ),
        },
        Event::MembersChanged(m) => {
            let line = |what: &str, member: &Member| {
                format!("{what} {} {}", m.room, one_line(&member.display_name))
            };
            let joined = m.joined.iter().map(|u| line("member-joined", u));
            let left = m.left.iter().map(|u| line("member-left", u));
            joined.chain(left).collect::<Vec<_>>().join("\n")
        }
        Event::MemberJoined(m) => {
            format!("member-joined {} {}", m.room, one_line(&display(&m.member)))
        }
        Event::MemberLeft(m) => format!("member-left {} {}", m.room, one_line(&display(&m.member))),
        Event::Notification(n) => format!("notification {}", one_line(&n.text)),
        Event::Removed(r) => format!("removed {}: {}", r.room, one_line(&r.reason)),
        Event::DirectOpened(d) => format!(
            "direct-opened {} {} {}",
            d.room,
            one_line(
                &d.peer
                    .as_ref()
                    .map(|p| p.user_id.clone())
                    .unwrap_or_default()
            ),
            one_line(&display(&d.peer))
        ),
        Event::ReadReceipts(r) => r
            .positions
            .iter()
            .map(|p| {
                format!(
                    "read {} {} {}",
                    r.room,
                    p.sequence,
                    one_line(&display(&p.member))
                )
            })
            .collect::<Vec<_>>()
            .join("\n"),
        Event::Typing(t) => {
            let names: Vec<String> = t
                .typists
                .iter()
                .map(|m| one_line(&m.display_name))
                .collect();
            format!("typing {} {} {}", t.room, t.count, names.join(", "))
                .trim_end()
                .to_string()
        }
        Event::Disconnected {
            notice: Some(n), ..
        } => {
            let reason = reason_name(n.reason);
            format!("disconnected {reason}: {}", one_line(&n.message))
        }
        Event::Disconnected {
            notice: None,
            reason,
        } => {
            format!("disconnected CONNECTION_LOST: {}", one_line(reason))
        }
        Event::Reconnecting {
            attempt,
            delay,
            error,
        } => format!(
            "reconnecting attempt={attempt} in={}ms: {}",
            delay.as_millis(),
            one_line(error)
        ),
        Event::Stopped { reason } => format!("stopped: {}", one_line(reason)),
    }
}

fn print_event(event: &Event) {
    println!("{}", format_event(event));
}
