//! One suite for every message store: memory, SQLite (a temporary file) and
//! PostgreSQL (a fresh database per test).

use crate::common::services::{PostgresDb, or_skip, postgres_db};
use chat_server::domain::User;
use chat_server::domain::validate::RoomName;
use chat_server::store::{self, Ban, Direction, Kind, MessageStore, NewMessage, Page, Retention};
use std::sync::Arc;
use std::time::Duration;

/// A store under test and what keeps its backing alive.
struct Backend {
    url: String,
    _db: Option<PostgresDb>,
    _dir: Option<TempDir>,
}

/// A folder removed when dropped.
struct TempDir(std::path::PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

impl Backend {
    async fn memory() -> Option<Backend> {
        Some(Backend {
            url: "memory".into(),
            _db: None,
            _dir: None,
        })
    }

    async fn sqlite() -> Option<Backend> {
        let dir =
            std::env::temp_dir().join(format!("chat-store-{}", uuid::Uuid::new_v4().simple()));
        // The store creates the folder itself.
        let url = format!("sqlite://{}/nested/chat.db", dir.display());
        Some(Backend {
            url,
            _db: None,
            _dir: Some(TempDir(dir)),
        })
    }

    async fn postgres() -> Option<Backend> {
        let db = postgres_db().await?;
        Some(Backend {
            url: db.url(),
            _db: Some(db),
            _dir: None,
        })
    }

    async fn open(&self) -> Arc<dyn MessageStore> {
        store::open(&self.url)
            .await
            .unwrap_or_else(|e| panic!("open {}: {e}", self.url))
    }

    fn durable(&self) -> bool {
        self.url != "memory"
    }
}

fn room(name: &str) -> RoomName {
    RoomName::parse(name).unwrap()
}

fn message(room_name: &str, user: &str, client_id: &str, text: &str) -> NewMessage {
    NewMessage {
        room: room(room_name),
        sender: User {
            user_id: Arc::from(user),
            display_name: Arc::from(user.to_uppercase()),
        },
        client_message_id: client_id.into(),
        text: text.into(),
        kind: Kind::Message,
    }
}

async fn sequences_are_per_room_gap_free_and_concurrent(backend: Backend) {
    let store = backend.open().await;
    assert_eq!(store.latest_sequence(&room("a")).await.unwrap(), 0);
    let mut tasks = Vec::new();
    for t in 0..8 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            let mut seqs = Vec::new();
            for i in 0..25 {
                let a = store
                    .append(message("a", "u", &format!("{t}-{i}"), "x"))
                    .await
                    .unwrap();
                assert!(!a.duplicate);
                seqs.push(a.message.sequence);
            }
            seqs
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    all.sort_unstable();
    assert_eq!(all, (1..=200).collect::<Vec<u64>>());
    let b = store.append(message("b", "u", "1", "y")).await.unwrap();
    assert_eq!(b.message.sequence, 1, "sequences are per room");
    assert_eq!(store.latest_sequence(&room("a")).await.unwrap(), 200);
}

async fn a_retried_send_is_stored_once(backend: Backend) {
    let store = backend.open().await;
    let first = store
        .append(message("r", "alice", "m-1", "hello"))
        .await
        .unwrap();
    assert!(!first.duplicate);
    let retry = store
        .append(message("r", "alice", "m-1", "hello"))
        .await
        .unwrap();
    assert!(retry.duplicate);
    assert_eq!(retry.message, first.message, "the retry gets the original");
    assert_eq!(
        store.latest_sequence(&room("r")).await.unwrap(),
        1,
        "no number taken"
    );
    // Another sender may use the same id; another room is another message.
    let other = store
        .append(message("r", "bob", "m-1", "hi"))
        .await
        .unwrap();
    assert!(!other.duplicate);
    assert_eq!(other.message.sequence, 2);
    let elsewhere = store
        .append(message("s", "alice", "m-1", "hello"))
        .await
        .unwrap();
    assert!(!elsewhere.duplicate);
    let page = Page {
        direction: Direction::Forward,
        from: 0,
        limit: 10,
    };
    assert_eq!(store.history(&room("r"), page).await.unwrap().len(), 2);
}

async fn history_pages_both_ways(backend: Backend) {
    let store = backend.open().await;
    let empty = store
        .history(
            &room("h"),
            Page {
                direction: Direction::Backward,
                from: 0,
                limit: 5,
            },
        )
        .await;
    assert!(empty.unwrap().is_empty());
    for i in 1..=25 {
        store
            .append(message("h", "u", &i.to_string(), &format!("text {i}")))
            .await
            .unwrap();
    }
    let seqs =
        |page: Vec<store::StoredMessage>| page.iter().map(|m| m.sequence).collect::<Vec<_>>();
    let latest = store
        .history(
            &room("h"),
            Page {
                direction: Direction::Backward,
                from: 0,
                limit: 10,
            },
        )
        .await
        .unwrap();
    assert_eq!(seqs(latest.clone()), (16..=25).collect::<Vec<_>>());
    assert_eq!(latest[0].message.text, "text 16");
    assert_eq!(&*latest[0].message.sender.display_name, "U");
    let older = store
        .history(
            &room("h"),
            Page {
                direction: Direction::Backward,
                from: 16,
                limit: 10,
            },
        )
        .await
        .unwrap();
    assert_eq!(seqs(older), (6..=15).collect::<Vec<_>>());
    let oldest = store
        .history(
            &room("h"),
            Page {
                direction: Direction::Backward,
                from: 6,
                limit: 10,
            },
        )
        .await
        .unwrap();
    assert_eq!(seqs(oldest), (1..=5).collect::<Vec<_>>());
    let newer = store
        .history(
            &room("h"),
            Page {
                direction: Direction::Forward,
                from: 20,
                limit: 10,
            },
        )
        .await
        .unwrap();
    assert_eq!(seqs(newer), (21..=25).collect::<Vec<_>>());
    let first = store
        .history(
            &room("h"),
            Page {
                direction: Direction::Forward,
                from: 0,
                limit: 3,
            },
        )
        .await
        .unwrap();
    assert_eq!(seqs(first), vec![1, 2, 3]);
}

async fn messages_survive_a_restart(backend: Backend) {
    if !backend.durable() {
        return;
    }
    {
        let store = backend.open().await;
        for i in 1..=3 {
            store
                .append(message("d", "u", &i.to_string(), "kept"))
                .await
                .unwrap();
        }
    }
    let store = backend.open().await;
    assert_eq!(store.latest_sequence(&room("d")).await.unwrap(), 3);
    let again = store.append(message("d", "u", "2", "kept")).await.unwrap();
    assert!(
        again.duplicate && again.message.sequence == 2,
        "idempotency survives"
    );
    assert_eq!(
        store
            .append(message("d", "u", "4", "new"))
            .await
            .unwrap()
            .message
            .sequence,
        4
    );
    store.check().await.unwrap();
}

async fn retention_deletes_by_count_and_by_age_but_never_reuses_numbers(backend: Backend) {
    use chat_server::store::Retention;
    use std::time::Duration;
    let store = backend.open().await;
    for i in 1..=10 {
        store
            .append(message("keep", "u", &i.to_string(), "x"))
            .await
            .unwrap();
    }
    for i in 1..=3 {
        store
            .append(message("small", "u", &i.to_string(), "x"))
            .await
            .unwrap();
    }
    let by_count = Retention {
        max_age: None,
        max_messages_per_room: Some(3),
    };
    assert_eq!(store.enforce_retention(by_count).await.unwrap(), 7);
    let all = Page {
        direction: Direction::Forward,
        from: 0,
        limit: 100,
    };
    let kept: Vec<u64> = store
        .history(&room("keep"), all)
        .await
        .unwrap()
        .iter()
        .map(|m| m.sequence)
        .collect();
    assert_eq!(kept, vec![8, 9, 10]);
    assert_eq!(
        store.history(&room("small"), all).await.unwrap().len(),
        3,
        "a small room keeps all"
    );
    assert_eq!(store.latest_sequence(&room("keep")).await.unwrap(), 10);
    assert_eq!(
        store
            .append(message("keep", "u", "11", "x"))
            .await
            .unwrap()
            .message
            .sequence,
        11
    );

    // Everything is older than a millisecond once a few have passed.
    let start = std::time::Instant::now();
    while start.elapsed() < Duration::from_millis(5) {
        tokio::task::yield_now().await;
    }
    let by_age = Retention {
        max_age: Some(Duration::from_millis(1)),
        max_messages_per_room: None,
    };
    assert_eq!(store.enforce_retention(by_age).await.unwrap(), 7);
    assert!(store.history(&room("keep"), all).await.unwrap().is_empty());
    assert_eq!(
        store
            .append(message("keep", "u", "12", "x"))
            .await
            .unwrap()
            .message
            .sequence,
        12
    );
    assert_eq!(
        store.enforce_retention(Retention::default()).await.unwrap(),
        0
    );
}

/// Issue 15, report 14: how far back a retry is recognised. SQLite and
/// PostgreSQL remember the id of every message they keep; the memory store
/// only those of each room's latest `WINDOW` (1000) messages, as
/// GUARANTEES.md now says: an older retry is stored again.
async fn a_retry_behind_a_thousand_newer_messages(backend: Backend) {
    let store = backend.open().await;
    let first = store
        .append(message("w", "alice", "old", "hi"))
        .await
        .unwrap();
    for i in 0..1000 {
        store
            .append(message("w", "bob", &format!("n{i}"), "x"))
            .await
            .unwrap();
    }
    let retry = store
        .append(message("w", "alice", "old", "hi"))
        .await
        .unwrap();
    if backend.url == "memory" {
        assert!(!retry.duplicate, "beyond the memory store's window");
    } else {
        assert!(
            retry.duplicate,
            "a durable store remembers every id it keeps"
        );
        assert_eq!(retry.message, first.message);
    }
}

/// `message` as a change of `kind`.
fn change(room_name: &str, user: &str, client_id: &str, text: &str, kind: Kind) -> NewMessage {
    NewMessage {
        kind,
        ..message(room_name, user, client_id, text)
    }
}

/// Issue 16, point 4: edits and deletes are numbered events stored in the
/// room's sequence; the message keeps its current text (and edit time), a
/// delete leaves no text of it or of its edits anywhere in the store, and
/// every refusal changes nothing.
async fn edits_and_deletes_are_numbered_and_applied(backend: Backend) {
    let store = backend.open().await;
    let first = store
        .append(message("e", "alice", "m1", "helo"))
        .await
        .unwrap();
    store.append(message("e", "bob", "m2", "hi")).await.unwrap();
    let edit = store
        .change(change("e", "alice", "c1", "hello", Kind::Edit(1)), false)
        .await
        .unwrap();
    assert!(!edit.duplicate);
    assert_eq!(
        edit.message.sequence, 3,
        "an edit takes the room's next number"
    );
    assert_eq!(edit.message.message.kind, Kind::Edit(1));
    let retry = store
        .change(change("e", "alice", "c1", "hello", Kind::Edit(1)), false)
        .await
        .unwrap();
    assert!(retry.duplicate, "a retried edit is the same edit");
    assert_eq!(retry.message.sequence, 3);
    assert_eq!(retry.message.message.kind, Kind::Edit(1));

    // Refusals: someone else's message, an operator editing, nothing there,
    // a change as the target. None takes a number.
    let refused = [
        (
            change("e", "bob", "x1", "no", Kind::Edit(1)),
            false,
            "not the author",
        ),
        (
            change("e", "bob", "x2", "", Kind::Delete(1)),
            false,
            "not the author",
        ),
        (
            change("e", "bob", "x3", "no", Kind::Edit(1)),
            true,
            "not the author",
        ),
        (
            change("e", "alice", "x4", "no", Kind::Edit(99)),
            false,
            "no message",
        ),
        (
            change("e", "alice", "x5", "no", Kind::Edit(3)),
            false,
            "no message",
        ),
        (
            change("elsewhere", "alice", "x6", "", Kind::Delete(1)),
            false,
            "no message",
        ),
    ];
    for (refused, operator, why) in refused {
        let e = store.change(refused.clone(), operator).await.unwrap_err();
        assert!(
            e.to_string().contains(if why == "no message" {
                "no message"
            } else {
                "another user"
            }),
            "{refused:?}: {e}"
        );
    }
    assert_eq!(store.latest_sequence(&room("e")).await.unwrap(), 3);

    let latest = Page {
        direction: Direction::Backward,
        from: 0,
        limit: 10,
    };
    let page = store.history(&room("e"), latest).await.unwrap();
    assert_eq!(page.len(), 3);
    assert_eq!(
        page[0].message.text, "hello",
        "history shows the current text"
    );
    assert_eq!(page[0].edited_at_ms, edit.message.time_unix_ms);
    assert!(!page[0].deleted);
    assert_eq!(page[0].id, first.message.id);
    assert_eq!(page[2].message.kind, Kind::Edit(1));
    assert_eq!(page[2].message.text, "hello");

    // An operator deletes bob's message; alice deletes her own.
    let by_operator = store
        .change(change("e", "root", "d0", "", Kind::Delete(2)), true)
        .await
        .unwrap();
    assert_eq!(by_operator.message.sequence, 4);
    let delete = store
        .change(change("e", "alice", "d1", "", Kind::Delete(1)), false)
        .await
        .unwrap();
    assert_eq!(delete.message.sequence, 5);
    assert_eq!(delete.message.message.kind, Kind::Delete(1));
    let again = store
        .change(change("e", "alice", "d2", "", Kind::Delete(1)), false)
        .await
        .unwrap_err();
    assert!(again.to_string().contains("no message"), "{again}");
    let late_edit = store
        .change(change("e", "alice", "c2", "back", Kind::Edit(1)), false)
        .await
        .unwrap_err();
    assert!(late_edit.to_string().contains("no message"), "{late_edit}");

    let page = store.history(&room("e"), latest).await.unwrap();
    let sequences: Vec<u64> = page.iter().map(|m| m.sequence).collect();
    assert_eq!(
        sequences,
        [1, 2, 3, 4, 5],
        "changes are in the history, in order"
    );
    assert!(
        page[0].deleted && page[0].message.text.is_empty(),
        "{:?}",
        page[0]
    );
    assert!(
        page[1].deleted && page[1].message.text.is_empty(),
        "{:?}",
        page[1]
    );
    assert_eq!(
        page[2].message.text, "",
        "the edit's text went with the message"
    );
    assert!(!page[2].deleted, "a change is not itself deleted");
    assert_eq!(page[3].message.kind, Kind::Delete(2));
    assert_eq!(&*page[3].message.sender.user_id, "root");
    assert!(
        page.iter().all(|m| !m.message.text.contains("hel")),
        "no text of a deleted message is left: {page:?}"
    );
    if backend.durable() {
        // And it stays so after a restart.
        drop(store);
        let store = backend.open().await;
        let page = store.history(&room("e"), latest).await.unwrap();
        assert!(page[0].deleted && page.iter().all(|m| !m.message.text.contains("hel")));
    }
}

/// Issue 16, point 3: a user's read position per room never moves back,
/// never passes the room's latest, and the unread count is others' live
/// messages after it.
async fn read_positions_never_move_back_and_count_what_is_unread(backend: Backend) {
    let store = backend.open().await;
    let r = room("reads");
    let state = store.read_state(&r, "ann").await.unwrap();
    assert_eq!((state.read_sequence, state.unread), (0, 0));
    for (i, who) in ["bob", "bob", "ann", "bob", "bob"].iter().enumerate() {
        store
            .append(message("reads", who, &format!("m{i}"), "x"))
            .await
            .unwrap();
    }
    store
        .change(change("reads", "bob", "d", "", Kind::Delete(5)), false)
        .await
        .unwrap();
    // 1, 2, 4 are bob's and live; 3 is ann's own; 5 is deleted; 6 the delete.
    let state = store.read_state(&r, "ann").await.unwrap();
    assert_eq!((state.read_sequence, state.unread), (0, 3));
    let state = store.mark_read(&r, "ann", 2).await.unwrap();
    assert_eq!((state.read_sequence, state.unread), (2, 1));
    let state = store.mark_read(&r, "ann", 1).await.unwrap();
    assert_eq!(state.read_sequence, 2, "never backwards");
    let state = store.mark_read(&r, "ann", u64::MAX).await.unwrap();
    assert_eq!(
        (state.read_sequence, state.unread),
        (6, 0),
        "clamped to the latest"
    );
    // Per user and per room.
    assert_eq!(store.read_state(&r, "bob").await.unwrap().read_sequence, 0);
    assert_eq!(
        store
            .read_state(&room("other"), "ann")
            .await
            .unwrap()
            .read_sequence,
        0
    );
    let state = store.mark_read(&room("empty"), "ann", 5).await.unwrap();
    assert_eq!(
        state.read_sequence, 0,
        "a room without messages has nothing to read"
    );
    if backend.durable() {
        drop(store);
        let store = backend.open().await;
        assert_eq!(store.read_state(&r, "ann").await.unwrap().read_sequence, 6);
    }
}

/// The unread count reads at most its cap of rows.
async fn the_unread_count_stops_at_its_cap(backend: Backend) {
    let store = backend.open().await;
    let r = room("busy");
    let cap = store::UNREAD_COUNT_CAP as usize;
    let appends = (0..cap + 5).map(|i| store.append(message("busy", "bob", &format!("m{i}"), "x")));
    for appended in futures::future::join_all(appends).await {
        appended.unwrap();
    }
    let state = store.read_state(&r, "ann").await.unwrap();
    assert_eq!(state.unread, store::UNREAD_COUNT_CAP);
}

/// Issue 16, point 5: reactions are numbered changes; history shows each
/// message's reactions per emoji (count, who, in the order first given);
/// a user's different reactions on one message are bounded; a delete of
/// the message takes its reactions with it.
async fn reactions_are_numbered_counted_bounded_and_go_with_their_message(backend: Backend) {
    let store = backend.open().await;
    store
        .append(message("rx", "ann", "m1", "hello"))
        .await
        .unwrap();
    store
        .append(message("rx", "bob", "m2", "hi"))
        .await
        .unwrap();
    let react = |user: &str, id: &str, emoji: &str, kind: Kind| change("rx", user, id, emoji, kind);
    let added = store
        .change(react("bob", "r1", "👍", Kind::ReactionAdded(1)), false)
        .await
        .unwrap();
    assert_eq!(added.message.sequence, 3);
    store
        .change(react("cat", "r2", "🎉", Kind::ReactionAdded(1)), false)
        .await
        .unwrap();
    store
        .change(react("cat", "r3", "👍", Kind::ReactionAdded(1)), false)
        .await
        .unwrap();
    // Adding twice is numbered but counts once; a retry is the same change.
    store
        .change(react("cat", "r4", "👍", Kind::ReactionAdded(1)), false)
        .await
        .unwrap();
    let retry = store
        .change(react("cat", "r4", "👍", Kind::ReactionAdded(1)), false)
        .await
        .unwrap();
    assert!(retry.duplicate);
    store
        .change(react("ann", "r5", "🎉", Kind::ReactionAdded(2)), false)
        .await
        .unwrap();
    store
        .change(react("cat", "r6", "🎉", Kind::ReactionRemoved(1)), false)
        .await
        .unwrap();
    let latest = Page {
        direction: Direction::Forward,
        from: 0,
        limit: 100,
    };
    let page = store.history(&room("rx"), latest).await.unwrap();
    let summary = |m: &store::StoredMessage| -> Vec<(String, u32, Vec<String>)> {
        m.reactions
            .iter()
            .map(|r| {
                let users = r.users.iter().map(|u| u.user_id.to_string()).collect();
                (r.emoji.clone(), r.count, users)
            })
            .collect()
    };
    assert_eq!(
        summary(&page[0]),
        [("👍".to_string(), 2, vec!["bob".to_string(), "cat".into()])]
    );
    assert_eq!(
        summary(&page[1]),
        [("🎉".to_string(), 1, vec!["ann".to_string()])]
    );
    assert_eq!(page.len(), 8, "every reaction is numbered");
    assert_eq!(page[2].message.kind, Kind::ReactionAdded(1));
    assert_eq!(page[2].message.text, "👍");
    assert!(page[2].reactions.is_empty(), "changes carry no reactions");

    // At most MAX_REACTIONS_PER_USER different ones per user and message.
    for i in 0..store::MAX_REACTIONS_PER_USER {
        store
            .change(
                react(
                    "dan",
                    &format!("d{i}"),
                    &format!("e{i}"),
                    Kind::ReactionAdded(2),
                ),
                false,
            )
            .await
            .unwrap();
    }
    let e = store
        .change(
            react("dan", "dx", "one-more", Kind::ReactionAdded(2)),
            false,
        )
        .await
        .unwrap_err();
    assert!(matches!(e, store::StoreError::TooManyReactions(2)), "{e}");
    // Again one already given is fine; removing frees a place.
    store
        .change(react("dan", "dy", "e0", Kind::ReactionAdded(2)), false)
        .await
        .unwrap();
    store
        .change(react("dan", "dz", "e0", Kind::ReactionRemoved(2)), false)
        .await
        .unwrap();
    store
        .change(
            react("dan", "dw", "one-more", Kind::ReactionAdded(2)),
            false,
        )
        .await
        .unwrap();
    // Not on a change, nor on a deleted message; the delete takes them.
    let e = store
        .change(react("dan", "dv", "x", Kind::ReactionAdded(3)), false)
        .await
        .unwrap_err();
    assert!(matches!(e, store::StoreError::MessageNotFound(3)), "{e}");
    store
        .change(change("rx", "ann", "del", "", Kind::Delete(1)), false)
        .await
        .unwrap();
    let e = store
        .change(react("bob", "dq", "x", Kind::ReactionAdded(1)), false)
        .await
        .unwrap_err();
    assert!(matches!(e, store::StoreError::MessageNotFound(1)), "{e}");
    let page = store.history(&room("rx"), latest).await.unwrap();
    assert!(page[0].reactions.is_empty(), "{:?}", page[0].reactions);
    assert_eq!(
        page[1].reactions.len(),
        1 + store::MAX_REACTIONS_PER_USER as usize
    );
    // A message carries at most MAX_EMOJIS_PER_MESSAGE different emojis.
    let mut n = page[1].reactions.len();
    while n < store::MAX_EMOJIS_PER_MESSAGE as usize {
        let (user, emoji) = (format!("u{n}"), format!("x{n}"));
        store
            .change(react(&user, &user, &emoji, Kind::ReactionAdded(2)), false)
            .await
            .unwrap();
        n += 1;
    }
    let e = store
        .change(react("zed", "z1", "new", Kind::ReactionAdded(2)), false)
        .await
        .unwrap_err();
    assert!(matches!(e, store::StoreError::TooManyReactions(2)), "{e}");
    // One it carries already may still be given.
    store
        .change(react("zed", "z2", "🎉", Kind::ReactionAdded(2)), false)
        .await
        .unwrap();
}

/// Review of issue 16: retention takes a message's edits' text with it
/// (the numbered rows stay, so the sequence keeps no holes); and a send
/// retried under an id a change took comes back as that change, so the hub
/// can refuse it.
async fn retention_takes_the_text_of_a_removed_messages_edits(backend: Backend) {
    let store = backend.open().await;
    store
        .append(message("old", "ann", "m1", "draft"))
        .await
        .unwrap();
    store
        .change(
            change("old", "ann", "e1", "SECRET-EDIT", Kind::Edit(1)),
            false,
        )
        .await
        .unwrap();
    store
        .append(message("old", "ann", "m2", "kept"))
        .await
        .unwrap();
    let again = store
        .append(message("old", "ann", "e1", "reused"))
        .await
        .unwrap();
    assert!(again.duplicate);
    assert_eq!(
        again.message.message.kind,
        Kind::Edit(1),
        "the row is the edit's"
    );
    // Keeping the latest two removes message 1 only: its edit (2) stays,
    // numbered, and must lose the text.
    let keep_two = Retention {
        max_age: None,
        max_messages_per_room: Some(2),
    };
    store.enforce_retention(keep_two).await.unwrap();
    let all = Page {
        direction: Direction::Forward,
        from: 0,
        limit: 100,
    };
    let page = store.history(&room("old"), all).await.unwrap();
    let sequences: Vec<u64> = page.iter().map(|m| m.sequence).collect();
    assert_eq!(sequences, [2, 3], "the edit's numbered row stays");
    assert_eq!(page[0].message.kind, Kind::Edit(1));
    assert_eq!(page[0].message.text, "", "{page:?}");
    assert_eq!(page[1].message.text, "kept");
}

/// Issue 16, point 1: a direct conversation is one room per pair, found
/// from either side, listed for both, and keeps each user's own name.
async fn direct_conversations_are_one_per_pair_and_listed_for_both(backend: Backend) {
    let store = backend.open().await;
    let user = |id: &str, name: &str| User {
        user_id: Arc::from(id),
        display_name: Arc::from(name),
    };
    let ann_bob = store.open_direct(&user("ann", "Ann"), "bob").await.unwrap();
    assert!(chat_server::domain::direct::is_direct(&ann_bob.room));
    assert_eq!(
        &*ann_bob.peer("ann").display_name,
        "bob",
        "bob's id until he names himself"
    );
    let again = store.open_direct(&user("bob", "Bob"), "ann").await.unwrap();
    assert_eq!(
        again.room, ann_bob.room,
        "one room per pair, from either side"
    );
    assert_eq!(&*again.peer("bob").display_name, "Ann");
    assert_eq!(&*again.peer("ann").display_name, "Bob", "bob's name now");
    let ann_cat = store.open_direct(&user("ann", "Ann"), "cat").await.unwrap();
    assert_ne!(ann_cat.room, ann_bob.room);
    let found = store.direct(&ann_bob.room).await.unwrap().expect("stored");
    assert!(found.has("ann") && found.has("bob") && !found.has("cat"));
    assert_eq!(store.direct(&room("lobby")).await.unwrap(), None);
    let rooms =
        |list: Vec<store::Conversation>| list.into_iter().map(|c| c.room).collect::<Vec<_>>();
    let anns = rooms(store.list_direct("ann").await.unwrap());
    assert_eq!(anns.len(), 2);
    assert!(anns.contains(&ann_bob.room) && anns.contains(&ann_cat.room));
    assert_eq!(
        rooms(store.list_direct("bob").await.unwrap()),
        std::slice::from_ref(&ann_bob.room)
    );
    assert!(store.list_direct("dan").await.unwrap().is_empty());
    if backend.durable() {
        drop(store);
        let store = backend.open().await;
        assert_eq!(store.list_direct("cat").await.unwrap().len(), 1);
    }
}

async fn bans_are_set_replaced_listed_lifted_and_end_on_time(backend: Backend) {
    use chat_server::store::Ban;
    let store = backend.open().await;
    let lobby = RoomName::parse("lobby").unwrap();
    let now = chat_util::now_unix_ms();
    let ban = |user: &str, until_ms: i64, reason: &str| Ban {
        user_id: user.into(),
        until_ms,
        reason: reason.into(),
        created_at_ms: now,
    };
    assert!(
        !store
            .set_ban(&lobby, "ann", Some(ban("ann", now + 60_000, "spam")))
            .await
            .unwrap()
    );
    assert!(
        !store
            .set_ban(&lobby, "bob", Some(ban("bob", now + 1_000, "rude")))
            .await
            .unwrap()
    );
    let found = store
        .ban(&lobby, "ann", now)
        .await
        .unwrap()
        .expect("in force");
    assert_eq!(
        (found.until_ms, found.reason.as_str()),
        (now + 60_000, "spam")
    );
    assert!(store.ban(&lobby, "cat", now).await.unwrap().is_none());
    // A join asks for the read state and the ban in one query.
    for i in 0..3 {
        store
            .append(message("lobby", "zed", &format!("j{i}"), "x"))
            .await
            .unwrap();
    }
    store.mark_read(&lobby, "ann", 1).await.unwrap();
    let (state, found) = store.join_state(&lobby, "ann", now).await.unwrap();
    assert_eq!(
        (state.read_sequence, state.unread),
        (1, 2),
        "read up to 1, two unread after it"
    );
    let found = found.expect("in force");
    assert_eq!(
        (
            found.user_id.as_str(),
            found.until_ms,
            found.reason.as_str()
        ),
        ("ann", now + 60_000, "spam")
    );
    assert!(
        store
            .join_state(&lobby, "cat", now)
            .await
            .unwrap()
            .1
            .is_none()
    );
    assert!(
        store
            .join_state(&lobby, "bob", now + 1_000)
            .await
            .unwrap()
            .1
            .is_none(),
        "ended"
    );
    assert!(
        store
            .ban(&RoomName::parse("dev").unwrap(), "ann", now)
            .await
            .unwrap()
            .is_none(),
        "per room"
    );
    // A ban ends on its time: not found, not listed after it.
    assert!(
        store
            .ban(&lobby, "bob", now + 1_000)
            .await
            .unwrap()
            .is_none()
    );
    let users = |bans: Vec<Ban>| bans.into_iter().map(|b| b.user_id).collect::<Vec<_>>();
    assert_eq!(
        users(store.bans(&lobby, now).await.unwrap()),
        ["ann", "bob"]
    );
    assert_eq!(
        users(store.bans(&lobby, now + 5_000).await.unwrap()),
        ["ann"]
    );
    // A new ban replaces the old one.
    assert!(
        store
            .set_ban(&lobby, "ann", Some(ban("ann", now + 120_000, "again")))
            .await
            .unwrap()
    );
    let found = store.ban(&lobby, "ann", now).await.unwrap().unwrap();
    assert_eq!(
        (found.until_ms, found.reason.as_str()),
        (now + 120_000, "again")
    );
    // A ban set after bob's ended deletes it: asked about a time when it
    // was in force, the store no longer has it.
    let later = Ban {
        created_at_ms: now + 5_000,
        ..ban("cat", now + 60_000, "flood")
    };
    store.set_ban(&lobby, "cat", Some(later)).await.unwrap();
    assert_eq!(
        users(store.bans(&lobby, now).await.unwrap()),
        ["ann", "cat"],
        "the ended ban is gone"
    );
    if backend.durable() {
        drop(store);
        let store = backend.open().await;
        assert!(
            store.ban(&lobby, "ann", now).await.unwrap().is_some(),
            "kept across a restart"
        );
        assert!(store.set_ban(&lobby, "ann", None).await.unwrap(), "lifted");
        assert!(store.ban(&lobby, "ann", now).await.unwrap().is_none());
        assert!(
            !store.set_ban(&lobby, "ann", None).await.unwrap(),
            "nothing left to lift"
        );
    } else {
        assert!(store.set_ban(&lobby, "ann", None).await.unwrap(), "lifted");
        assert!(store.ban(&lobby, "ann", now).await.unwrap().is_none());
    }
}

/// The webhook's queue: nothing is queued before capture is set; then new
/// messages (not retries) and the changes captured are queued in order
/// with the membership changes; a claim leases them (a second claim gets
/// nothing until the lease ends); settling takes the delivered out and
/// makes the rest due later; an event whose message retention deleted
/// reads as gone; trims drop by size, then by age.
async fn the_webhook_queue_captures_leases_settles_and_trims(backend: Backend) {
    use store::{Capture, Claim, MembershipChange, Queued};
    let store = backend.open().await;
    let claim = |now_ms: i64| Claim {
        now_ms,
        lease_until_ms: now_ms + 10_000,
        max: 100,
    };
    store
        .append(message("q", "ann", "before", "x"))
        .await
        .unwrap();
    let now = chat_util::now_unix_ms();
    assert!(store.claim_events(claim(now)).await.unwrap().is_empty());

    store
        .set_capture(Capture::MESSAGE.with(Capture::EDIT).with(Capture::JOIN))
        .await
        .unwrap();
    let first = store
        .append(message("q", "ann", "m1", "one"))
        .await
        .unwrap();
    let retry = store
        .append(message("q", "ann", "m1", "one"))
        .await
        .unwrap();
    assert!(retry.duplicate);
    // Appends queued together (a batch on the stores that batch).
    let batch: Vec<_> = (2..=6)
        .map(|i| {
            let store = store.clone();
            tokio::spawn(async move {
                store
                    .append(message("q", "bob", &format!("m{i}"), "n"))
                    .await
                    .unwrap()
            })
        })
        .collect();
    for task in batch {
        task.await.unwrap();
    }
    let seq = first.message.sequence;
    store
        .change(change("q", "ann", "e1", "uno", Kind::Edit(seq)), false)
        .await
        .unwrap();
    store
        .change(
            change("q", "bob", "r1", "👍", Kind::ReactionAdded(seq)),
            false,
        )
        .await
        .unwrap();
    store
        .queue_membership(vec![MembershipChange {
            event_id: "join-1".into(),
            room: room("q"),
            user: User {
                user_id: Arc::from("cy"),
                display_name: Arc::from("Cy"),
            },
            joined: true,
            time_unix_ms: now,
        }])
        .await
        .unwrap();

    let now = chat_util::now_unix_ms();
    let events = store.claim_events(claim(now)).await.unwrap();
    let kinds: Vec<String> = events
        .iter()
        .map(|e| match &e.what {
            Queued::Room(m) => format!("{}:{:?}:{}", m.sequence, m.message.kind, m.message.text),
            Queued::Membership(p) => format!("{}:{}:{}", p.event_id, p.user.user_id, p.joined),
            Queued::Gone { sequence, .. } => format!("gone {sequence}"),
        })
        .collect();
    assert_eq!(kinds.len(), 8, "6 messages, the edit, the join: {kinds:?}");
    assert_eq!(
        kinds[0],
        format!("{seq}:Message:uno"),
        "the current text: {kinds:?}"
    );
    assert_eq!(
        kinds[6],
        format!("{}:Edit({seq}):uno", seq + 6),
        "{kinds:?}"
    );
    assert_eq!(kinds[7], "join-1:cy:true", "{kinds:?}");
    let mut batch_sequences: Vec<String> = kinds[1..6].to_vec();
    batch_sequences.sort();
    assert_eq!(
        batch_sequences,
        (seq + 1..=seq + 5)
            .map(|s| format!("{s}:Message:n"))
            .collect::<Vec<_>>()
    );
    assert!(events.iter().all(|e| e.attempts == 1));
    assert!(
        events.windows(2).all(|w| w[0].queue_id < w[1].queue_id),
        "in queue order"
    );
    assert!(
        store.claim_events(claim(now)).await.unwrap().is_empty(),
        "leased"
    );

    let ids: Vec<i64> = events.iter().map(|e| e.queue_id).collect();
    // A claimer whose lease was another's cannot make the events due.
    store.settle_events(&[], &ids, now, now + 1).await.unwrap();
    assert!(
        store.claim_events(claim(now + 1)).await.unwrap().is_empty(),
        "still leased: the retry named another lease"
    );
    store
        .settle_events(&ids[..3], &ids[3..], now + 60_000, now + 10_000)
        .await
        .unwrap();
    assert!(
        store.claim_events(claim(now + 1)).await.unwrap().is_empty(),
        "not due yet"
    );
    let again = store.claim_events(claim(now + 60_000)).await.unwrap();
    assert_eq!(
        again.iter().map(|e| e.queue_id).collect::<Vec<_>>(),
        ids[3..].to_vec()
    );
    assert!(again.iter().all(|e| e.attempts == 2));
    // A claimer that died: its lease ends, and another claim takes them.
    let taken_over = store.claim_events(claim(now + 70_001)).await.unwrap();
    assert_eq!(taken_over.len(), 5);
    assert!(taken_over.iter().all(|e| e.attempts == 3));
    let ids: Vec<i64> = taken_over.iter().map(|e| e.queue_id).collect();
    store.settle_events(&ids, &[], 0, 0).await.unwrap();
    assert!(
        store
            .claim_events(claim(now + 100_000))
            .await
            .unwrap()
            .is_empty()
    );

    // Retention deletes a queued message: its event is gone.
    let old = store
        .append(message("old", "ann", "o1", "a"))
        .await
        .unwrap();
    store
        .append(message("old", "ann", "o2", "b"))
        .await
        .unwrap();
    store
        .enforce_retention(Retention {
            max_age: None,
            max_messages_per_room: Some(1),
        })
        .await
        .unwrap();
    let events = store.claim_events(claim(now + 200_000)).await.unwrap();
    assert_eq!(events.len(), 2);
    assert_eq!(
        events[0].what,
        Queued::Gone {
            room: room("old"),
            sequence: old.message.sequence
        }
    );
    assert!(matches!(&events[1].what, Queued::Room(m) if m.message.text == "b"));
    let ids: Vec<i64> = events.iter().map(|e| e.queue_id).collect();
    store.settle_events(&ids, &[], 0, 0).await.unwrap();

    // Bounds: by size (the oldest go), then by age.
    for i in 0..5 {
        store
            .append(message("t", "ann", &format!("t{i}"), "x"))
            .await
            .unwrap();
    }
    let trimmed = store.trim_events(0, 2).await.unwrap();
    assert_eq!(
        (trimmed.expired, trimmed.overflowed, trimmed.pending),
        (0, 3, 2)
    );
    let left = store.claim_events(claim(now + 300_000)).await.unwrap();
    assert!(
        matches!(&left[0].what, Queued::Room(m) if m.message.client_message_id == "t3"),
        "the newest stay: {left:?}"
    );
    let later = chat_util::now_unix_ms() + 1000;
    let trimmed = store.trim_events(later, 100).await.unwrap();
    assert_eq!(
        (trimmed.expired, trimmed.overflowed, trimmed.pending),
        (2, 0, 0)
    );
}

macro_rules! suite {
    ($backend:ident: $($test:ident),* $(,)?) => {
        mod $backend {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $test() {
                    let backend = crate::common::or_skip!(super::Backend::$backend().await);
                    super::$test(backend).await;
                }
            )*
        }
    };
}

suite!(memory: the_webhook_queue_captures_leases_settles_and_trims, sequences_are_per_room_gap_free_and_concurrent, a_retried_send_is_stored_once, a_retry_behind_a_thousand_newer_messages, history_pages_both_ways, messages_survive_a_restart, retention_deletes_by_count_and_by_age_but_never_reuses_numbers, edits_and_deletes_are_numbered_and_applied, read_positions_never_move_back_and_count_what_is_unread, the_unread_count_stops_at_its_cap, reactions_are_numbered_counted_bounded_and_go_with_their_message, retention_takes_the_text_of_a_removed_messages_edits, direct_conversations_are_one_per_pair_and_listed_for_both, bans_are_set_replaced_listed_lifted_and_end_on_time);
suite!(sqlite: the_webhook_queue_captures_leases_settles_and_trims, sequences_are_per_room_gap_free_and_concurrent, a_retried_send_is_stored_once, a_retry_behind_a_thousand_newer_messages, history_pages_both_ways, messages_survive_a_restart, retention_deletes_by_count_and_by_age_but_never_reuses_numbers, edits_and_deletes_are_numbered_and_applied, read_positions_never_move_back_and_count_what_is_unread, the_unread_count_stops_at_its_cap, reactions_are_numbered_counted_bounded_and_go_with_their_message, retention_takes_the_text_of_a_removed_messages_edits, direct_conversations_are_one_per_pair_and_listed_for_both, bans_are_set_replaced_listed_lifted_and_end_on_time);
suite!(postgres: the_webhook_queue_captures_leases_settles_and_trims, sequences_are_per_room_gap_free_and_concurrent, a_retried_send_is_stored_once, a_retry_behind_a_thousand_newer_messages, history_pages_both_ways, messages_survive_a_restart, retention_deletes_by_count_and_by_age_but_never_reuses_numbers, edits_and_deletes_are_numbered_and_applied, read_positions_never_move_back_and_count_what_is_unread, the_unread_count_stops_at_its_cap, reactions_are_numbered_counted_bounded_and_go_with_their_message, retention_takes_the_text_of_a_removed_messages_edits, direct_conversations_are_one_per_pair_and_listed_for_both, bans_are_set_replaced_listed_lifted_and_end_on_time);

/// Review of issue 16: a retried delete racing its original on another
/// instance is answered with the original, never refused because the
/// original already deleted the message.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retried_change_racing_its_original_on_postgres_gets_the_original() {
    let backend = or_skip!(Backend::postgres().await);
    let (one, two) = (backend.open().await, backend.open().await);
    for i in 0..30 {
        let id = format!("m{i}");
        let stored = one.append(message("race", "ann", &id, "x")).await.unwrap();
        let delete = change(
            "race",
            "ann",
            &format!("d{i}"),
            "",
            Kind::Delete(stored.message.sequence),
        );
        let (a, b) = tokio::join!(one.change(delete.clone(), false), two.change(delete, false));
        let (a, b) = (a.unwrap(), b.unwrap());
        assert_eq!(a.message.sequence, b.message.sequence, "one change");
        assert!(a.duplicate != b.duplicate, "one original, one retry");
    }
}

/// Two instances sharing PostgreSQL number one room's messages together.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_postgres_stores_share_one_sequence() {
    let backend = or_skip!(Backend::postgres().await);
    let (one, two) = (backend.open().await, backend.open().await);
    let mut tasks = Vec::new();
    for (n, store) in [one, two].into_iter().enumerate() {
        tasks.push(tokio::spawn(async move {
            let mut seqs = Vec::new();
            for i in 0..50 {
                seqs.push(
                    store
                        .append(message("shared", "u", &format!("{n}-{i}"), "x"))
                        .await
                        .unwrap()
                        .message
                        .sequence,
                );
            }
            seqs
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    all.sort_unstable();
    assert_eq!(all, (1..=100).collect::<Vec<u64>>());
}

/// Retries of one message racing on two instances (the client retried on
/// another instance while the first attempt was in flight): one copy is
/// stored, every attempt gets its sequence, no number is skipped.
#[tokio::test]
async fn racing_retries_on_two_postgres_stores_store_one_copy() {
    let backend = or_skip!(Backend::postgres().await);
    let (one, two) = (
        Arc::new(backend.open().await),
        Arc::new(backend.open().await),
    );
    for i in 0..20u64 {
        let id = format!("retry-{i}");
        let attempts: Vec<_> = [&one, &two, &one, &two]
            .into_iter()
            .map(|store| {
                let store = store.clone();
                let m = message("race", "u", &id, "x");
                tokio::spawn(async move { store.append(m).await.unwrap() })
            })
            .collect();
        let mut stored = Vec::new();
        for a in attempts {
            stored.push(a.await.unwrap());
        }
        let fresh = stored.iter().filter(|a| !a.duplicate).count();
        assert_eq!(fresh, 1, "message {i}: exactly one attempt stores it");
        assert!(
            stored.iter().all(|a| a.message.sequence == i + 1),
            "message {i}: every attempt answers with its sequence: {:?}",
            stored
                .iter()
                .map(|a| a.message.sequence)
                .collect::<Vec<_>>()
        );
    }
    assert_eq!(one.latest_sequence(&room("race")).await.unwrap(), 20);
}

/// Many appends at once from two instances — every message twice, to ten
/// rooms in opposite orders — go in batches that share rooms: each message
/// is stored once, each attempt answers with its sequence, and every
/// room's sequences are gap-free.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_batches_on_two_postgres_stores_keep_rooms_gap_free() {
    let backend = or_skip!(Backend::postgres().await);
    let stores = [backend.open().await, backend.open().await];
    const ROOMS: usize = 10;
    const PER_ROOM: usize = 30;
    let mut attempts = Vec::new();
    for i in 0..PER_ROOM {
        for r in 0..ROOMS {
            for (n, store) in stores.iter().enumerate() {
                // The second instance walks the rooms backwards.
                let r = if n == 0 { r } else { ROOMS - 1 - r };
                let store = store.clone();
                let m = message(&format!("batch-{r}"), "u", &format!("{r}-{i}"), "x");
                attempts.push(tokio::spawn(async move {
                    (r, i, store.append(m).await.unwrap())
                }));
            }
        }
    }
    let mut by_message = std::collections::HashMap::new();
    for attempt in attempts {
        let (r, i, appended) = attempt.await.unwrap();
        by_message
            .entry((r, i))
            .or_insert_with(Vec::new)
            .push(appended);
    }
    assert_eq!(by_message.len(), ROOMS * PER_ROOM);
    let mut sequences = vec![Vec::new(); ROOMS];
    for ((r, i), answers) in &by_message {
        assert_eq!(answers.len(), 2);
        let fresh = answers.iter().filter(|a| !a.duplicate).count();
        assert_eq!(fresh, 1, "message {r}-{i}: stored once: {answers:?}");
        assert_eq!(answers[0].message, answers[1].message, "message {r}-{i}");
        assert_eq!(
            answers[0].message.message.client_message_id,
            format!("{r}-{i}")
        );
        sequences[*r].push(answers[0].message.sequence);
    }
    for (r, mut seqs) in sequences.into_iter().enumerate() {
        seqs.sort_unstable();
        assert_eq!(
            seqs,
            (1..=PER_ROOM as u64).collect::<Vec<_>>(),
            "room batch-{r}"
        );
        let latest = stores[0]
            .latest_sequence(&room(&format!("batch-{r}")))
            .await;
        assert_eq!(latest.unwrap(), PER_ROOM as u64);
    }
}

/// Appends queued while the writer is busy elsewhere go in one commit or
/// statement, and the store's batch-size histogram says so. On a
/// current-thread runtime every append below is queued before the writer
/// runs again.
async fn appends_queued_together_are_written_as_one_batch(backend: Backend) {
    let store = backend.open().await;
    assert_eq!(store.batch_sizes().expect("a batching store").count(), 0);
    let appends = (0..50).map(|i| store.append(message("a", "u", &i.to_string(), "x")));
    let appended = futures::future::join_all(appends).await;
    let mut sequences: Vec<u64> = appended
        .into_iter()
        .map(|a| a.unwrap().message.sequence)
        .collect();
    sequences.sort_unstable();
    assert_eq!(sequences, (1..=50).collect::<Vec<u64>>());
    assert_eq!(store.batch_sizes().unwrap().count(), 1, "one batch of 50");
}

#[tokio::test]
async fn sqlite_appends_queued_together_are_written_as_one_batch() {
    appends_queued_together_are_written_as_one_batch(Backend::sqlite().await.unwrap()).await;
}

#[tokio::test]
async fn postgres_appends_queued_together_are_written_as_one_batch() {
    let backend = or_skip!(Backend::postgres().await);
    appends_queued_together_are_written_as_one_batch(backend).await;
}

/// Issue 18: a storm of joins asks PostgreSQL for their read states and
/// bans in a few statements, not one per join, and each join still gets
/// its own answer (its read position, its unread count, its ban).
#[tokio::test]
async fn postgres_reads_joins_asked_together_in_batches() {
    let backend = or_skip!(Backend::postgres().await);
    let store = backend.open().await;
    let batches = || store.join_batches().expect("a batching store").count();
    assert_eq!(batches(), 0);
    let (lobby, now) = (RoomName::parse("lobby").unwrap(), chat_util::now_unix_ms());
    for i in 0..5 {
        store
            .append(message("lobby", "zed", &format!("m{i}"), "x"))
            .await
            .unwrap();
    }
    // User u{i} has read up to i (so 5 - i unread); u7 is banned.
    for i in 0..5 {
        store.mark_read(&lobby, &format!("u{i}"), i).await.unwrap();
    }
    let ban = Ban {
        user_id: "u7".into(),
        until_ms: now + 60_000,
        reason: "spam".into(),
        created_at_ms: now,
    };
    store.set_ban(&lobby, "u7", Some(ban)).await.unwrap();
    let users: Vec<String> = (0..300).map(|i| format!("u{i}")).collect();
    let asks = users.iter().map(|u| store.join_state(&lobby, u, now));
    let answers = futures::future::join_all(asks).await;
    for (i, answer) in answers.into_iter().enumerate() {
        let (state, ban) = answer.unwrap();
        let read = (i as u64).min(5) * u64::from(i < 5);
        assert_eq!(
            (state.read_sequence, state.unread, ban.is_some()),
            (read, 5 - read as u32, i == 7),
            "u{i}"
        );
    }
    let statements = batches();
    assert!(
        (2..=10).contains(&statements),
        "300 joins in {statements} statements"
    );
}

/// Issue 15, report 9: SQLite's one writer must not hold every send for a
/// whole retention pass. Retention deletes in bounded chunks with the
/// appends waiting meanwhile committed between them, and finds old
/// messages through an index on their time.
#[tokio::test]
async fn sqlite_retention_lets_sends_through_between_its_chunks() {
    let backend = Backend::sqlite().await.unwrap();
    let store = backend.open().await;
    // Old enough to go: 30,000 messages in 10 rooms (a few big batches),
    // dozens of retention chunks.
    const OLD: usize = 30_000;
    let appends = (0..OLD).map(|i| {
        let room = format!("r{}", i % 10);
        store.append(message(&room, "u", &i.to_string(), "old"))
    });
    for appended in futures::future::join_all(appends).await {
        appended.unwrap();
    }
    tokio::time::sleep(Duration::from_millis(20)).await;
    let retention = Retention {
        max_age: Some(Duration::from_millis(10)),
        max_messages_per_room: Some(100),
    };
    // A reader beside the writer (WAL) sees the chunks go.
    let path = backend.url.trim_start_matches("sqlite://");
    let mut reader =
        <sqlx::SqliteConnection as sqlx::Connection>::connect(&format!("sqlite://{path}"))
            .await
            .unwrap();
    let retaining = store.enforce_retention(retention);
    // The send is queued once the pass has deleted something (it is under
    // way), and must be written before the pass has deleted everything.
    let sending = async {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            let (left,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM messages")
                .fetch_one(&mut reader)
                .await
                .unwrap();
            if (left as usize) < OLD {
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "retention never started"
            );
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        let appended = store
            .append(message("r0", "u", "new", "new"))
            .await
            .unwrap();
        // Written between two chunks: old messages are still there.
        let (old_left,): (i64,) =
            sqlx::query_as("SELECT COUNT(*) FROM messages WHERE text = 'old'")
                .fetch_one(&mut reader)
                .await
                .unwrap();
        (appended, old_left)
    };
    let (deleted, (appended, old_left)) = tokio::join!(retaining, sending);
    let deleted = deleted.unwrap();
    assert_eq!(deleted, OLD as u64);
    assert_eq!(appended.message.sequence, OLD as u64 / 10 + 1);
    assert!(
        old_left > 0,
        "the send waited until every old message was deleted"
    );

    // The age limit is found through an index, not a scan of the table.
    let mut conn = reader;
    let plan: Vec<(i64, i64, i64, String)> = sqlx::query_as(
        "EXPLAIN QUERY PLAN SELECT rowid FROM messages WHERE created_at_ms < 1 LIMIT 10",
    )
    .fetch_all(&mut conn)
    .await
    .unwrap();
    let details: Vec<&str> = plan.iter().map(|p| p.3.as_str()).collect();
    assert!(
        details
            .iter()
            .any(|d| d.contains("USING") && d.contains("INDEX")),
        "{details:?}"
    );
}

/// Two instances claiming from one PostgreSQL queue at once take disjoint
/// batches that together hold every event.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_postgres_stores_claim_disjoint_webhook_batches() {
    use store::{Capture, Claim};
    let backend = or_skip!(Backend::postgres().await);
    let (one, two) = (backend.open().await, backend.open().await);
    one.set_capture(Capture::MESSAGE).await.unwrap();
    for i in 0..40 {
        one.append(message("w", "u", &format!("{i}"), "x"))
            .await
            .unwrap();
    }
    let now = chat_util::now_unix_ms();
    let claim = Claim {
        now_ms: now,
        lease_until_ms: now + 10_000,
        max: 15,
    };
    let mut seen = std::collections::BTreeSet::new();
    for _ in 0..2 {
        let (a, b) = tokio::join!(one.claim_events(claim), two.claim_events(claim));
        for event in a.unwrap().into_iter().chain(b.unwrap()) {
            assert!(seen.insert(event.queue_id), "claimed twice: {event:?}");
        }
    }
    assert_eq!(seen.len(), 40, "every event claimed once");
}
