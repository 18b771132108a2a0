//! Clients through the client library, and bounded waits for their events.

use super::WAIT;
use chat_client::{Backoff, Client, ClientConfig, Event, Events};
use std::time::Duration;

/// Client settings for tests: quick reconnects.
pub fn client_config(url: &str, name: &str) -> ClientConfig {
    let mut c = ClientConfig::new(url, name);
    c.backoff = Backoff {
        initial: Duration::from_millis(50),
        max: Duration::from_millis(500),
    };
    c.request_timeout = Duration::from_secs(5);
    c
}

/// A connected client named `name` with the test settings.
pub async fn connect(url: &str, name: &str) -> (Client, Events) {
    connect_with(client_config(url, name)).await
}

/// A connected client with `config`.
pub async fn connect_with(config: ClientConfig) -> (Client, Events) {
    let (client, mut events) = Client::connect(config);
    client.wait_connected(WAIT).await.expect("client connects");
    // Consume the Connected event so tests see only what follows.
    expect_event(&mut events, "connected", |e| {
        matches!(e, Event::Connected(_))
    })
    .await;
    (client, events)
}

/// Waits (bounded) for the first event matching `pred`, skipping others.
pub async fn expect_event(
    events: &mut Events,
    what: &str,
    mut pred: impl FnMut(&Event) -> bool,
) -> Event {
    let mut seen = Vec::new();
    let found = tokio::time::timeout(WAIT, async {
        while let Some(e) = events.next().await {
            if pred(&e) {
                return Some(e);
            }
            seen.push(format!("{e:?}"));
        }
        None
    })
    .await;
    match found {
        Ok(Some(e)) => e,
        Ok(None) => panic!("events ended before {what}; saw {seen:#?}"),
        Err(_) => panic!("no {what} within {WAIT:?}; saw {seen:#?}"),
    }
}

/// Waits for the next message event in `room` and returns (sender, text, sequence).
pub async fn expect_message(events: &mut Events, room: &str) -> (String, String, u64) {
    let what = format!("message in {room}");
    match expect_event(
        events,
        &what,
        |e| matches!(e, Event::Message(m) if m.room == room),
    )
    .await
    {
        Event::Message(m) => (
            m.sender.unwrap_or_default().display_name,
            m.text,
            m.sequence,
        ),
        _ => unreachable!(),
    }
}

/// Asserts that no event matching `pred` arrives within `quiet`.
pub async fn expect_no_event(
    events: &mut Events,
    quiet: Duration,
    mut pred: impl FnMut(&Event) -> bool,
) {
    let _ = tokio::time::timeout(quiet, async {
        while let Some(e) = events.next().await {
            assert!(!pred(&e), "unexpected event {e:?}");
        }
    })
    .await;
}

/// The stable code of a request the server refused; panics on success or a
/// failure on the client's side.
pub fn refusal<T: std::fmt::Debug>(
    result: Result<T, chat_client::ClientError>,
) -> chat_client::proto::ErrorCode {
    match result {
        Err(chat_client::ClientError::Server { code, .. }) => code,
        other => panic!("expected a refusal, got {other:?}"),
    }
}

/// Who a typing event says is typing in `room`: the listed display names
/// and the count; `None` for any other event.
pub fn typists(e: &Event, room: &str) -> Option<(Vec<String>, u32)> {
    match e {
        Event::Typing(t) if t.room == room => Some((
            t.typists.iter().map(|m| m.display_name.clone()).collect(),
            t.count,
        )),
        _ => None,
    }
}

/// Waits for a typing event in `room` saying exactly `names` (in order)
/// and `count` are typing; earlier typing events (coalesced states on the
/// way) are passed over.
pub async fn expect_typists(events: &mut Events, room: &str, names: &[&str], count: u32) {
    let what = format!("typing in {room}: {names:?} of {count}");
    expect_event(events, &what, |e| {
        typists(e, room).is_some_and(|(listed, n)| listed == names && n == count)
    })
    .await;
}

/// Whether `e` says that a user named `name` joined a room (in a
/// coalesced `MembersChanged`).
pub fn member_joined(e: &Event, name: &str) -> bool {
    matches!(e, Event::MembersChanged(m) if m.joined.iter().any(|u| u.display_name == name))
}

/// Whether `e` says that a user named `name` left a room.
pub fn member_left(e: &Event, name: &str) -> bool {
    matches!(e, Event::MembersChanged(m) if m.left.iter().any(|u| u.display_name == name))
}

/// Whether `e` is a presence event (anyone joined or left).
pub fn presence_event(e: &Event) -> bool {
    matches!(
        e,
        Event::MembersChanged(_) | Event::MemberJoined(_) | Event::MemberLeft(_)
    )
}
