//! The webhook request's body: `{"events": [...]}`, one object per event,
//! in queue order. Every event carries a stable `id` (a receiver drops
//! repeats by it: delivery is at least once) and its `room`; room events
//! carry their `sequence` (a receiver orders a room's events by it).
//! docs/WEBHOOKS.md lists the fields of each type.

use crate::store::{Kind, MembershipChange, Queued, QueuedEvent, StoredMessage};
use serde::Serialize;

/// The body of one request.
#[derive(Serialize)]
struct Body<'a> {
    events: Vec<Event<'a>>,
}

/// A user as events name them.
#[derive(Serialize)]
struct Person<'a> {
    id: &'a str,
    name: &'a str,
}

/// One event.
#[derive(Serialize)]
struct Event<'a> {
    /// Stable across retries: the stored event's id, or the presence
    /// change's.
    id: &'a str,
    #[serde(rename = "type")]
    kind: &'static str,
    room: &'a str,
    /// The room event's sequence (absent for presence).
    #[serde(skip_serializing_if = "Option::is_none")]
    sequence: Option<u64>,
    time_unix_ms: i64,
    /// Who sent the room event, or whose presence changed.
    user: Person<'a>,
    /// The message the change applies to.
    #[serde(skip_serializing_if = "Option::is_none")]
    target_sequence: Option<u64>,
    /// A message's text as it reads now, an edit's new text, a reaction's
    /// emoji.
    #[serde(skip_serializing_if = "Option::is_none")]
    text: Option<&'a str>,
    /// The sender's id for the message (its retries carry the same).
    #[serde(skip_serializing_if = "Option::is_none")]
    client_message_id: Option<&'a str>,
    /// A message edited since (Unix ms).
    #[serde(skip_serializing_if = "Option::is_none")]
    edited_at_ms: Option<i64>,
    /// A message deleted since.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    deleted: bool,
}

/// The `type` of a room event of `kind`.
fn room_type(kind: Kind) -> &'static str {
    match kind {
        Kind::Message => "message.created",
        Kind::Edit(_) => "message.edited",
        Kind::Delete(_) => "message.deleted",
        Kind::ReactionAdded(_) => "reaction.added",
        Kind::ReactionRemoved(_) => "reaction.removed",
    }
}

impl<'a> Event<'a> {
    fn room(m: &'a StoredMessage) -> Event<'a> {
        let kind = m.message.kind;
        let message = kind == Kind::Message;
        Event {
            id: &m.id,
            kind: room_type(kind),
            room: m.message.room.as_str(),
            sequence: Some(m.sequence),
            time_unix_ms: m.time_unix_ms,
            user: Person {
                id: &m.message.sender.user_id,
                name: &m.message.sender.display_name,
            },
            target_sequence: (!message).then(|| kind.target()),
            text: (!matches!(kind, Kind::Delete(_))).then_some(m.message.text.as_str()),
            client_message_id: Some(&m.message.client_message_id),
            edited_at_ms: (message && m.edited_at_ms != 0).then_some(m.edited_at_ms),
            deleted: message && m.deleted,
        }
    }

    fn presence(p: &'a MembershipChange) -> Event<'a> {
        Event {
            id: &p.event_id,
            kind: if p.joined {
                "member.joined"
            } else {
                "member.left"
            },
            room: p.room.as_str(),
            sequence: None,
            time_unix_ms: p.time_unix_ms,
            user: Person {
                id: &p.user.user_id,
                name: &p.user.display_name,
            },
            target_sequence: None,
            text: None,
            client_message_id: None,
            edited_at_ms: None,
            deleted: false,
        }
    }
}

/// The body for `events` (those that are gone are left out).
pub fn body(events: &[QueuedEvent]) -> Vec<u8> {
    let events = events
        .iter()
        .filter_map(|e| match &e.what {
            Queued::Room(m) => Some(Event::room(m)),
            Queued::Membership(p) => Some(Event::presence(p)),
            Queued::Gone { .. } => None,
        })
        .collect();
    serde_json::to_vec(&Body { events }).expect("events serialize")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{RoomName, User};
    use crate::store::NewMessage;
    use std::sync::Arc;

    fn user(id: &str) -> User {
        User {
            user_id: Arc::from(id),
            display_name: Arc::from(id.to_uppercase()),
        }
    }

    fn stored(sequence: u64, kind: Kind, text: &str) -> StoredMessage {
        StoredMessage {
            id: format!("id-{sequence}"),
            sequence,
            time_unix_ms: 1000 + sequence as i64,
            message: NewMessage {
                room: RoomName::parse("lobby").unwrap(),
                sender: user("ann"),
                client_message_id: format!("c{sequence}"),
                text: text.into(),
                kind,
            },
            edited_at_ms: 0,
            edited_sequence: 0,
            deleted: false,
            reactions: Vec::new(),
        }
    }

    fn queued(id: i64, what: Queued) -> QueuedEvent {
        QueuedEvent {
            queue_id: id,
            attempts: 1,
            queued_at_ms: 0,
            what,
        }
    }

    #[test]
    fn each_type_has_its_fields_and_gone_events_are_left_out() {
        let events = [
            queued(1, Queued::Room(stored(1, Kind::Message, "hi"))),
            queued(2, Queued::Room(stored(2, Kind::Edit(1), "hello"))),
            queued(3, Queued::Room(stored(3, Kind::Delete(1), ""))),
            queued(
                4,
                Queued::Gone {
                    room: RoomName::parse("lobby").unwrap(),
                    sequence: 9,
                },
            ),
            queued(5, Queued::Room(stored(4, Kind::ReactionAdded(1), "👍"))),
            queued(
                6,
                Queued::Membership(MembershipChange {
                    event_id: "p-1".into(),
                    room: RoomName::parse("lobby").unwrap(),
                    user: user("bob"),
                    joined: false,
                    time_unix_ms: 77,
                }),
            ),
        ];
        let body: serde_json::Value = serde_json::from_slice(&body(&events)).unwrap();
        let events = body["events"].as_array().unwrap();
        assert_eq!(events.len(), 5, "the gone event is not sent: {body}");
        assert_eq!(
            events[0],
            serde_json::json!({"id": "id-1", "type": "message.created", "room": "lobby",
                "sequence": 1, "time_unix_ms": 1001, "user": {"id": "ann", "name": "ANN"},
                "text": "hi", "client_message_id": "c1"})
        );
        assert_eq!(events[1]["type"], "message.edited");
        assert_eq!(events[1]["target_sequence"], 1);
        assert_eq!(events[1]["text"], "hello");
        assert_eq!(events[2]["type"], "message.deleted");
        assert!(events[2].get("text").is_none());
        assert_eq!(events[3]["type"], "reaction.added");
        assert_eq!(events[3]["text"], "👍");
        assert_eq!(
            events[4],
            serde_json::json!({"id": "p-1", "type": "member.left", "room": "lobby",
                "time_unix_ms": 77, "user": {"id": "bob", "name": "BOB"}})
        );
    }
}
