//! Several instances behind a backplane — one suite, run against a private
//! Redis and a private NATS: cross-instance delivery, presence, a killed
//! instance, an outage of the backplane, notifications and broadcasts.

use crate::common::services::{self, NatsServer, PostgresDb, RedisServer};
use crate::common::*;
use chat_client::Event;
use chat_client::proto::{
    ErrorCode, HistoryDirection, JoinRoomRequest, MessageEvent, MessageKind, client_frame::Request,
    reply, server_frame::Frame,
};
use chat_server::config::BackplaneKind;
use std::time::{Duration, Instant};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

/// The backplane service under test.
enum Backplane {
    Redis(RedisServer),
    Nats(NatsServer),
}

impl Backplane {
    fn redis() -> Option<Backplane> {
        redis().map(Backplane::Redis)
    }

    fn nats() -> Option<Backplane> {
        nats().map(Backplane::Nats)
    }

    fn kill(&mut self) {
        match self {
            Backplane::Redis(r) => r.kill(),
            Backplane::Nats(n) => n.kill(),
        }
    }

    fn restart(&mut self) {
        match self {
            Backplane::Redis(r) => r.restart(),
            Backplane::Nats(n) => n.restart(),
        }
    }

    /// The environment that points a `chat-server` process at it.
    fn env(&self) -> Vec<(&'static str, String)> {
        match self {
            Backplane::Redis(r) => vec![
                ("CHAT_BACKPLANE", "redis".into()),
                ("CHAT_REDIS__URL", r.url()),
            ],
            Backplane::Nats(n) => vec![
                ("CHAT_BACKPLANE", "nats".into()),
                ("CHAT_NATS__URL", n.url()),
            ],
        }
    }
}

fn cluster_config(backplane: &Backplane, id: &str) -> chat_server::Config {
    let mut c = config();
    c.server_id = id.into();
    match backplane {
        Backplane::Redis(redis) => {
            c.backplane = BackplaneKind::Redis;
            c.redis.url = redis.url();
        }
        Backplane::Nats(nats) => {
            c.backplane = BackplaneKind::Nats;
            c.nats.url = nats.url();
        }
    }
    c.redis.command_timeout = Duration::from_millis(500);
    c.redis.reconnect_max_delay = Duration::from_millis(300);
    c.nats.connect_timeout = Duration::from_millis(500);
    c.presence.heartbeat_interval = Duration::from_millis(200);
    c.presence.expiry = Duration::from_millis(1000);
    c
}

fn joined(e: &Event, name: &str) -> bool {
    member_joined(e, name)
}

fn left(e: &Event, name: &str) -> bool {
    member_left(e, name)
}

/// Waits (bounded) until `server` lists exactly `names` in `room`.
async fn wait_members(server: &TestServer, room: &str, names: &[&str]) {
    let room = chat_server::domain::validate::RoomName::parse(room).unwrap();
    let deadline = Instant::now() + WAIT;
    loop {
        let mut now: Vec<String> = server
            .server
            .hub()
            .members(&room)
            .iter()
            .map(|m| m.display_name.to_string())
            .collect();
        now.sort();
        if now == names {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{} lists {now:?}, not {names:?}",
            server.server.server_id()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Starts an instance and waits (bounded) until its backplane is up.
async fn instance(backplane: &Backplane, id: &str) -> TestServer {
    let server = TestServer::start(cluster_config(backplane, id)).await;
    wait_ready(&server, true).await;
    server
}

/// The `/health/ready` body.
async fn ready_report(server: &TestServer) -> serde_json::Value {
    let body = http(server.addr(), HttpRequest::get("/health/ready"))
        .await
        .body;
    serde_json::from_str(body.trim()).unwrap()
}

async fn grpc_health(server: &TestServer) -> i32 {
    let channel = tonic::transport::Endpoint::from_shared(server.url())
        .unwrap()
        .connect()
        .await
        .unwrap();
    HealthClient::new(channel)
        .check(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .unwrap()
        .into_inner()
        .status
}

async fn clients_on_different_instances_chat_in_several_rooms(backplane: Backplane) {
    let a = instance(&backplane, "a").await;
    let b = instance(&backplane, "b").await;
    let (alice, mut alice_ev) = connect(&a.url(), "alice").await;
    let (bob, mut bob_ev) = connect(&b.url(), "bob").await;
    let (carol, mut carol_ev) = connect(&b.url(), "carol").await;
    assert_eq!(alice.wait_connected(WAIT).await.unwrap().server_id, "a");
    assert_eq!(bob.wait_connected(WAIT).await.unwrap().server_id, "b");

    alice.join("lobby").await.unwrap();
    alice.join("dev").await.unwrap();
    bob.join("lobby").await.unwrap();
    carol.join("dev").await.unwrap();

    alice.send("lobby", "from a to lobby").await.unwrap();
    alice.send("dev", "from a to dev").await.unwrap();
    bob.send("lobby", "from b to lobby").await.unwrap();
    carol.send("dev", "from b to dev").await.unwrap();

    // Sends from different instances are not ordered relative to each
    // other (sequence numbers are per instance with the in-memory store);
    // each member gets each message once.
    for (events, room, expected) in [
        (&mut bob_ev, "lobby", ["from a to lobby", "from b to lobby"]),
        (&mut carol_ev, "dev", ["from a to dev", "from b to dev"]),
    ] {
        let mut got = vec![
            expect_message(events, room).await.1,
            expect_message(events, room).await.1,
        ];
        got.sort();
        assert_eq!(got, expected);
    }
    let mut texts = Vec::new();
    while texts.len() < 4 {
        let Event::Message(m) =
            expect_event(&mut alice_ev, "message", |e| matches!(e, Event::Message(_))).await
        else {
            unreachable!()
        };
        texts.push(format!("{}:{}", m.room, m.text));
    }
    texts.sort();
    assert_eq!(
        texts,
        [
            "dev:from a to dev",
            "dev:from b to dev",
            "lobby:from a to lobby",
            "lobby:from b to lobby"
        ]
    );
    // Each delivered exactly once: nothing more arrives.
    expect_no_event(&mut bob_ev, Duration::from_millis(300), |e| {
        matches!(e, Event::Message(_))
    })
    .await;
    expect_no_event(&mut alice_ev, Duration::from_millis(100), |e| {
        matches!(e, Event::Message(_))
    })
    .await;

    // Each instance published its two messages and received the other's two.
    for server in [&a, &b] {
        let m = scrape_metrics(server.addr()).await;
        assert_eq!(m["chat_backplane_publish_seconds_count"], 2.0, "{m:?}");
        assert_eq!(
            m["chat_backplane_receive_delay_seconds_count"], 2.0,
            "{m:?}"
        );
        assert_eq!(m["chat_backplane_reconnects_total"], 0.0);
    }

    // A room nobody on `b` is in is not sent to `b`'s clients.
    let (dave, _dave_ev) = connect(&a.url(), "dave").await;
    dave.join("quiet").await.unwrap();
    dave.send("quiet", "only on a").await.unwrap();
    expect_no_event(&mut carol_ev, Duration::from_millis(200), |e| {
        matches!(e, Event::Message(_))
    })
    .await;

    a.stop().await;
    b.stop().await;
}

/// [`expect_typists`] for one of `me`'s connections: no typing event on
/// the way lists `me`.
async fn expect_typists_not_me(
    events: &mut chat_client::Events,
    room: &str,
    names: &[&str],
    count: u32,
    me: &str,
) {
    expect_event(events, "typing, never oneself", |e| {
        typists(e, room).is_some_and(|(listed, n)| {
            assert!(
                !listed.iter().any(|l| l == me),
                "{me} told of itself: {listed:?}"
            );
            listed == names && n == count
        })
    })
    .await;
}

async fn typing_reaches_the_other_members_everywhere_but_never_the_typist(backplane: Backplane) {
    let a = instance(&backplane, "a").await;
    let b = instance(&backplane, "b").await;
    // alice has a connection on each instance; bob is on b, carol on a;
    // dave is on b and in another room.
    let (alice, mut alice_ev) = connect(&a.url(), "alice").await;
    let (alice_too, mut alice_too_ev) = connect(&b.url(), "alice").await;
    let (bob, mut bob_ev) = connect(&b.url(), "bob").await;
    let (carol, mut carol_ev) = connect(&a.url(), "carol").await;
    let (dave, mut dave_ev) = connect(&b.url(), "dave").await;
    for c in [&alice, &alice_too, &bob, &carol] {
        c.join("lobby").await.unwrap();
    }
    dave.join("elsewhere").await.unwrap();
    wait_members(&a, "lobby", &["alice", "bob", "carol"]).await;
    wait_members(&b, "lobby", &["alice", "bob", "carol"]).await;

    // The room was quiet: told at once, on both instances.
    alice.typing("lobby", true).await.unwrap();
    for events in [&mut bob_ev, &mut carol_ev] {
        match expect_event(events, "alice typing", |e| typists(e, "lobby").is_some()).await {
            Event::Typing(t) => {
                let names: Vec<&str> = t.typists.iter().map(|m| m.display_name.as_str()).collect();
                assert_eq!((names.as_slice(), t.count), (&["alice"][..], 1));
                assert!(t.expires_after_ms > 0);
            }
            _ => unreachable!(),
        }
    }
    // A second typist within the room's gap: coalesced into the next
    // event, which lists each member's others, the longest typing first.
    bob.typing("lobby", true).await.unwrap();
    expect_typists(&mut carol_ev, "lobby", &["alice", "bob"], 2).await;
    for events in [&mut alice_ev, &mut alice_too_ev] {
        expect_typists_not_me(events, "lobby", &["bob"], 1, "alice").await;
    }
    // alice's message ends her typing without a word from her.
    alice.send("lobby", "done typing").await.unwrap();
    expect_typists(&mut carol_ev, "lobby", &["bob"], 1).await;
    // bob's leaving ends his.
    bob.leave("lobby").await.unwrap();
    expect_typists(&mut carol_ev, "lobby", &[], 0).await;
    expect_typists_not_me(&mut alice_too_ev, "lobby", &[], 0, "alice").await;
    // No event ever listed alice to her own connections, nor reached
    // anyone outside the room.
    for events in [&mut alice_ev, &mut alice_too_ev] {
        expect_no_event(events, Duration::from_millis(300), |e| {
            typists(e, "lobby").is_some_and(|(names, _)| names.iter().any(|n| n == "alice"))
        })
        .await;
    }
    expect_no_event(&mut dave_ev, Duration::from_millis(100), |e| {
        matches!(e, Event::Typing(_))
    })
    .await;

    // Only members may say it, and nothing is stored or numbered.
    let refused = dave.typing("lobby", true).await.unwrap_err();
    assert!(
        matches!(
            refused,
            chat_client::ClientError::Server {
                code: ErrorCode::NotAMember,
                ..
            }
        ),
        "{refused:?}"
    );
    let page = carol
        .history("lobby", HistoryDirection::Backward, 0, 10)
        .await
        .unwrap();
    assert_eq!(page.messages.len(), 1, "alice's message only: {page:?}");
    for server in [&a, &b] {
        let m = scrape_metrics(server.addr()).await;
        // alice's and bob's announcements; the stops their message and
        // leave made are not announcements of theirs.
        assert_eq!(m["chat_typing_received_total"], 1.0, "{m:?}");
        assert!(m["chat_typing_events_sent_total"] >= 2.0, "{m:?}");
    }
    a.stop().await;
    b.stop().await;
}

/// The next message event in `room`, whatever its kind.
async fn expect_numbered(events: &mut chat_client::Events, room: &str) -> MessageEvent {
    match expect_event(
        events,
        room,
        |e| matches!(e, Event::Message(m) if m.room == room),
    )
    .await
    {
        Event::Message(m) => m,
        _ => unreachable!(),
    }
}

/// Issue 16, point 4, over a shared PostgreSQL store: edits and deletes
/// are numbered among the messages, reach every member on every instance
/// in order, are refused with their codes (changing nothing), and history
/// then shows the current text and the tombstone.
async fn edits_and_deletes_reach_every_instance_in_order(backplane: Backplane) {
    let db = or_skip!(postgres_db().await);
    let (a, b) = shared_store_pair(&backplane, &db).await;
    let (alice, mut alice_ev) = connect(&a.url(), "alice").await;
    let (bob, mut bob_ev) = connect(&b.url(), "bob").await;
    alice.join("lobby").await.unwrap();
    bob.join("lobby").await.unwrap();
    wait_members(&a, "lobby", &["alice", "bob"]).await;
    alice.send("lobby", "helo").await.unwrap();
    bob.send("lobby", "hi").await.unwrap();
    for events in [&mut alice_ev, &mut bob_ev] {
        assert_eq!(expect_numbered(events, "lobby").await.sequence, 1);
        assert_eq!(expect_numbered(events, "lobby").await.sequence, 2);
    }

    let edit = alice.edit("lobby", 1, "hello").await.unwrap();
    assert_eq!(edit.sequence, 3);
    for events in [&mut alice_ev, &mut bob_ev] {
        let m = expect_numbered(events, "lobby").await;
        assert_eq!(
            (m.sequence, m.kind(), m.target_sequence, m.text.as_str()),
            (3, MessageKind::Edit, 1, "hello")
        );
        assert_eq!(m.sender.unwrap().user_id, "alice");
    }
    // Refused: nothing is numbered or delivered.
    assert_eq!(
        refusal(bob.edit("lobby", 1, "mine now").await),
        ErrorCode::NotTheAuthor
    );
    assert_eq!(
        refusal(bob.delete("lobby", 1).await),
        ErrorCode::NotTheAuthor
    );
    assert_eq!(
        refusal(alice.edit("lobby", 99, "x").await),
        ErrorCode::MessageNotFound
    );
    assert_eq!(
        refusal(alice.edit("lobby", 3, "x").await),
        ErrorCode::MessageNotFound
    );
    assert_eq!(
        refusal(alice.edit("lobby", 0, "x").await),
        ErrorCode::InvalidArgument
    );
    assert_eq!(
        refusal(alice.edit("lobby", 1, "").await),
        ErrorCode::InvalidArgument
    );
    assert_eq!(
        refusal(alice.delete("elsewhere", 1).await),
        ErrorCode::NotAMember
    );

    let delete = alice.delete("lobby", 1).await.unwrap();
    assert_eq!(delete.sequence, 4, "the refusals took no number");
    for events in [&mut alice_ev, &mut bob_ev] {
        let m = expect_numbered(events, "lobby").await;
        assert_eq!(
            (m.sequence, m.kind(), m.target_sequence, m.text.as_str()),
            (4, MessageKind::Delete, 1, "")
        );
    }
    assert_eq!(
        refusal(alice.edit("lobby", 1, "back").await),
        ErrorCode::MessageNotFound
    );
    bob.send("lobby", "after").await.unwrap();
    assert_eq!(expect_numbered(&mut bob_ev, "lobby").await.sequence, 5);

    // History, from either instance: the tombstone, the other message,
    // the changes in their places.
    let page = bob
        .history("lobby", HistoryDirection::Backward, 0, 10)
        .await
        .unwrap();
    let seen: Vec<_> = page
        .messages
        .iter()
        .map(|m| (m.sequence, m.kind(), m.text.as_str(), m.deleted))
        .collect();
    assert_eq!(
        seen,
        [
            (1, MessageKind::Message, "", true),
            (2, MessageKind::Message, "hi", false),
            (3, MessageKind::Edit, "", false),
            (4, MessageKind::Delete, "", false),
            (5, MessageKind::Message, "after", false),
        ]
    );
    let m = scrape_metrics(a.addr()).await;
    assert_eq!(m["chat_messages_edited_total"], 1.0, "{m:?}");
    assert_eq!(m["chat_messages_deleted_total"], 1.0, "{m:?}");
    assert_eq!(m["chat_messages_received_total"], 1.0, "{m:?}");
    a.stop().await;
    b.stop().await;
}

/// Issue 16, point 5, over a shared PostgreSQL store: reactions are
/// numbered changes that reach every member on every instance; history
/// shows the counts and who; the limits and refusals hold.
async fn reactions_reach_every_instance_and_show_in_history(backplane: Backplane) {
    let db = or_skip!(postgres_db().await);
    let (a, b) = shared_store_pair(&backplane, &db).await;
    let (alice, mut alice_ev) = connect(&a.url(), "alice").await;
    let (bob, mut bob_ev) = connect(&b.url(), "bob").await;
    alice.join("lobby").await.unwrap();
    bob.join("lobby").await.unwrap();
    wait_members(&a, "lobby", &["alice", "bob"]).await;
    alice.send("lobby", "party?").await.unwrap();
    let ack = bob.react("lobby", 1, "🎉", true).await.unwrap();
    assert_eq!(ack.sequence, 2);
    alice.react("lobby", 1, "🎉", true).await.unwrap();
    alice.react("lobby", 1, "👍", true).await.unwrap();
    alice.react("lobby", 1, "👍", false).await.unwrap();
    for events in [&mut alice_ev, &mut bob_ev] {
        assert_eq!(expect_numbered(events, "lobby").await.sequence, 1);
        let m = expect_numbered(events, "lobby").await;
        assert_eq!(
            (m.sequence, m.kind(), m.target_sequence, m.text.as_str()),
            (2, MessageKind::ReactionAdded, 1, "🎉")
        );
        assert_eq!(m.sender.unwrap().user_id, "bob");
        for (seq, kind) in [
            (3, MessageKind::ReactionAdded),
            (4, MessageKind::ReactionAdded),
            (5, MessageKind::ReactionRemoved),
        ] {
            let m = expect_numbered(events, "lobby").await;
            assert_eq!((m.sequence, m.kind()), (seq, kind));
        }
    }
    assert_eq!(
        refusal(bob.react("lobby", 9, "🎉", true).await),
        ErrorCode::MessageNotFound
    );
    assert_eq!(
        refusal(bob.react("lobby", 2, "🎉", true).await),
        ErrorCode::MessageNotFound
    );
    assert_eq!(
        refusal(bob.react("lobby", 1, "", true).await),
        ErrorCode::InvalidArgument
    );
    assert_eq!(
        refusal(bob.react("lobby", 1, "a b", true).await),
        ErrorCode::InvalidArgument
    );
    assert_eq!(
        refusal(bob.react("lobby", 1, &"x".repeat(33), true).await),
        ErrorCode::InvalidArgument
    );
    for i in 0..19 {
        bob.react("lobby", 1, &format!("e{i}"), true).await.unwrap();
    }
    assert_eq!(
        refusal(bob.react("lobby", 1, "one-too-many", true).await),
        ErrorCode::TooManyReactions
    );

    let page = alice
        .history("lobby", HistoryDirection::Forward, 0, 1)
        .await
        .unwrap();
    let party = &page.messages[0];
    assert_eq!(party.reactions.len(), 20, "🎉 and bob's 19 others");
    assert_eq!(party.reactions[0].emoji, "🎉");
    assert_eq!(party.reactions[0].count, 2);
    let who: Vec<&str> = party.reactions[0]
        .members
        .iter()
        .map(|m| m.user_id.as_str())
        .collect();
    assert_eq!(who, ["bob", "alice"], "in the order given");
    let m = scrape_metrics(a.addr()).await;
    assert_eq!(m["chat_reactions_total"], 3.0);
    a.stop().await;
    b.stop().await;
}

/// Issue 16, point 1, over a shared PostgreSQL store: a direct
/// conversation reaches every session of both users on every instance
/// (they join it), carries messages like any room, is the same room from
/// either side, is listed for both, and is closed to everyone else.
async fn a_direct_conversation_reaches_both_users_everywhere_and_nobody_else(backplane: Backplane) {
    let db = or_skip!(postgres_db().await);
    let (a, b) = shared_store_pair(&backplane, &db).await;
    let (alice, _alice_ev) = connect(&a.url(), "alice").await;
    let (alice_too, mut alice_too_ev) = connect(&b.url(), "alice").await;
    let (bob, mut bob_ev) = connect(&b.url(), "bob").await;
    let (carol, _carol_ev) = connect(&a.url(), "carol").await;

    let opened = alice.open_direct("bob").await.unwrap();
    assert!(opened.room.starts_with("dm."), "{opened:?}");
    assert_eq!(opened.peer.as_ref().unwrap().user_id, "bob");
    assert!(alice.rooms().contains(&opened.room), "open_direct joins it");
    for (events, peer) in [(&mut bob_ev, "alice"), (&mut alice_too_ev, "bob")] {
        match expect_event(events, "direct opened", |e| {
            matches!(e, Event::DirectOpened(_))
        })
        .await
        {
            Event::DirectOpened(d) => {
                assert_eq!(d.room, opened.room);
                assert_eq!(d.peer.unwrap().user_id, peer);
            }
            _ => unreachable!(),
        }
    }
    // Both other sessions join it by themselves.
    let deadline = Instant::now() + Duration::from_secs(10);
    while !(bob.rooms().contains(&opened.room) && alice_too.rooms().contains(&opened.room)) {
        assert!(Instant::now() < deadline, "the other sessions did not join");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    wait_members(&a, &opened.room, &["alice", "bob"]).await;
    wait_members(&b, &opened.room, &["alice", "bob"]).await;

    alice.send(&opened.room, "hi bob").await.unwrap();
    for events in [&mut bob_ev, &mut alice_too_ev] {
        let m = expect_numbered(events, &opened.room).await;
        assert_eq!((m.sequence, m.text.as_str()), (1, "hi bob"));
    }
    bob.send(&opened.room, "hi alice").await.unwrap();
    // The same room from the other side; listed for both.
    let again = bob.open_direct("alice").await.unwrap();
    assert_eq!(again.room, opened.room);
    for (client, peer) in [(&bob, "alice"), (&alice_too, "bob")] {
        let listed = client.list_direct().await.unwrap();
        assert_eq!(listed.len(), 1, "{listed:?}");
        assert_eq!(listed[0].room, opened.room);
        assert_eq!(listed[0].peer.as_ref().unwrap().user_id, peer);
    }
    // Nobody else joins, reads or writes.
    assert_eq!(
        refusal(carol.join(&opened.room).await),
        ErrorCode::PermissionDenied
    );
    assert_eq!(
        refusal(
            carol
                .history(&opened.room, HistoryDirection::Backward, 0, 10)
                .await
                .map(|_| ())
        ),
        ErrorCode::PermissionDenied
    );
    assert_eq!(
        refusal(carol.send(&opened.room, "let me in").await),
        ErrorCode::NotAMember
    );
    assert!(carol.list_direct().await.unwrap().is_empty());
    // A conversation nobody opened cannot be joined either, nor one with
    // oneself opened.
    assert_eq!(
        refusal(
            carol
                .join("dm.0000000000000000000000000000000000000000")
                .await
                .map(|_| ())
        ),
        ErrorCode::PermissionDenied
    );
    assert_eq!(
        refusal(carol.open_direct("carol").await),
        ErrorCode::InvalidArgument
    );
    let page = bob
        .history(&opened.room, HistoryDirection::Backward, 0, 10)
        .await
        .unwrap();
    assert_eq!(page.messages.len(), 2);
    a.stop().await;
    b.stop().await;
}

/// The next read receipts of `room` naming `user`: that user's position.
async fn expect_read(events: &mut chat_client::Events, room: &str, user: &str) -> u64 {
    let names = |e: &Event| match e {
        Event::ReadReceipts(r) if r.room == room => r
            .positions
            .iter()
            .find(|p| p.member.as_ref().is_some_and(|m| m.user_id == user))
            .map(|p| p.sequence),
        _ => None,
    };
    let event = expect_event(events, "read receipts", |e| names(e).is_some()).await;
    names(&event).unwrap()
}

/// Issue 16, point 3, over a shared PostgreSQL store: a read mark is
/// stored for the user (all its sessions, on any instance), never moves
/// back, is announced to the room's members on every instance, coalesced
/// (two quick marks, one announcement), and each join reports the joiner's
/// read position and unread count.
async fn read_marks_are_shared_announced_once_and_reported_on_join(backplane: Backplane) {
    let db = or_skip!(postgres_db().await);
    let (a, b) = shared_store_pair(&backplane, &db).await;
    let (bob, mut bob_ev) = connect(&b.url(), "bob").await;
    bob.join("lobby").await.unwrap();
    for text in ["one", "two", "three"] {
        bob.send("lobby", text).await.unwrap();
    }
    let (alice, mut alice_ev) = connect(&a.url(), "alice").await;
    let joined = alice.join("lobby").await.unwrap();
    assert_eq!((joined.read_sequence, joined.unread_count), (0, 3));
    // alice's second session, on the other instance.
    let (alice_too, mut alice_too_ev) = connect(&b.url(), "alice").await;
    alice_too.join("lobby").await.unwrap();
    wait_members(&b, "lobby", &["alice", "bob"]).await;

    let first = alice.mark_read("lobby", 1).await.unwrap();
    assert_eq!((first.read_sequence, first.unread_count), (1, 2));
    let second = alice.mark_read("lobby", 2).await.unwrap();
    assert_eq!((second.read_sequence, second.unread_count), (2, 1));
    for sequence in [2, 1, 2, 2, 1, 2] {
        alice.mark_read("lobby", sequence).await.unwrap();
    }
    // Coalesced: eight marks in a moment, and the members hear alice's
    // latest position once (twice if an announcement fell between them).
    for events in [&mut bob_ev, &mut alice_too_ev, &mut alice_ev] {
        let mut heard = vec![expect_read(events, "lobby", "alice").await];
        let _ = tokio::time::timeout(Duration::from_millis(1500), async {
            heard.push(expect_read(events, "lobby", "alice").await);
        })
        .await;
        assert!(heard.len() <= 2 && heard.last() == Some(&2), "{heard:?}");
    }
    let back = alice_too.mark_read("lobby", 1).await.unwrap();
    assert_eq!(back.read_sequence, 2, "never backwards, from any session");
    assert_eq!(
        refusal(bob.mark_read("elsewhere", 1).await),
        ErrorCode::NotAMember
    );

    // A later join, of either session, reports the shared position.
    alice_too.leave("lobby").await.unwrap();
    let again = alice_too.join("lobby").await.unwrap();
    assert_eq!((again.read_sequence, again.unread_count), (2, 1));
    let last = alice_too.mark_read("lobby", 99).await.unwrap();
    assert_eq!(
        (last.read_sequence, last.unread_count),
        (3, 0),
        "clamped to the latest"
    );
    let m = scrape_metrics(a.addr()).await;
    assert_eq!(m["chat_read_marks_total"], 8.0);
    a.stop().await;
    b.stop().await;
}

async fn a_backplane_outage_keeps_local_members_served_and_heals(mut backplane: Backplane) {
    let a = instance(&backplane, "a").await;
    let b = instance(&backplane, "b").await;
    let (alice, _alice_ev) = connect(&a.url(), "alice").await;
    let (carol, mut carol_ev) = connect(&a.url(), "carol").await;
    let (bob, mut bob_ev) = connect(&b.url(), "bob").await;
    for c in [&alice, &carol, &bob] {
        c.join("lobby").await.unwrap();
    }
    alice.send("lobby", "before").await.unwrap();
    assert_eq!(expect_message(&mut bob_ev, "lobby").await.1, "before");
    assert_eq!(expect_message(&mut carol_ev, "lobby").await.1, "before");
    assert_eq!(grpc_health(&a).await, ServingStatus::Serving as i32);

    backplane.kill();
    wait_ready(&a, false).await;
    wait_ready(&b, false).await;
    let deadline = Instant::now() + WAIT;
    while grpc_health(&a).await != ServingStatus::NotServing as i32 {
        assert!(
            Instant::now() < deadline,
            "gRPC health never said NOT_SERVING"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // The instance stays up for its own members.
    alice
        .send("lobby", "during")
        .await
        .expect("sends are still acknowledged");
    assert_eq!(expect_message(&mut carol_ev, "lobby").await.1, "during");
    // (Messages from the outage do not reach other instances; the durable
    // history makes them recoverable.)

    // The outage and the publish that could not reach the others are counted.
    let report = ready_report(&a).await;
    assert!(
        report["backplane"]["outages"].as_u64().unwrap() >= 1,
        "{report}"
    );
    assert!(
        report["backplane"]["publish_failed"].as_u64().unwrap() >= 1,
        "{report}"
    );
    assert_eq!(report["checks"]["backplane"], "down", "{report}");

    backplane.restart();
    wait_ready(&a, true).await;
    wait_ready(&b, true).await;
    for server in [&a, &b] {
        // Every outage ended in a reconnect.
        let report = ready_report(server).await;
        let reconnects = report["backplane"]["reconnects"].as_u64().unwrap();
        assert!(reconnects >= 1, "{report}");
        assert_eq!(reconnects, report["backplane"]["outages"], "{report}");
    }
    assert_eq!(grpc_health(&a).await, ServingStatus::Serving as i32);
    alice.send("lobby", "after").await.unwrap();
    let (_, text, _) = expect_message(&mut bob_ev, "lobby").await;
    // bob may or may not have seen "during" (it was sent while Redis was
    // down), but "after" arrives.
    let text = if text == "during" {
        expect_message(&mut bob_ev, "lobby").await.1
    } else {
        text
    };
    assert_eq!(text, "after");
    bob.send("lobby", "bob is back").await.unwrap();
    assert_eq!(expect_message(&mut carol_ev, "lobby").await.1, "after");
    assert_eq!(
        expect_message(&mut carol_ev, "lobby").await.1,
        "bob is back"
    );
    a.stop().await;
    b.stop().await;
}

async fn an_instance_started_while_the_backplane_is_down_becomes_ready_later(
    mut backplane: Backplane,
) {
    backplane.kill();
    let a = TestServer::start(cluster_config(&backplane, "a")).await;
    wait_ready(&a, false).await;
    // It serves its own clients meanwhile.
    let (alice, mut alice_ev) = connect(&a.url(), "alice").await;
    alice.join("lobby").await.unwrap();
    alice.send("lobby", "alone").await.unwrap();
    assert_eq!(expect_message(&mut alice_ev, "lobby").await.1, "alone");

    backplane.restart();
    wait_ready(&a, true).await;
    let b = instance(&backplane, "b").await;
    let (bob, mut bob_ev) = connect(&b.url(), "bob").await;
    bob.join("lobby").await.unwrap();
    alice.send("lobby", "hello b").await.unwrap();
    assert_eq!(expect_message(&mut bob_ev, "lobby").await.1, "hello b");
    a.stop().await;
    b.stop().await;
}

async fn presence_is_the_same_from_every_instance(backplane: Backplane) {
    let a = instance(&backplane, "a").await;
    let b = instance(&backplane, "b").await;
    let (alice, mut alice_ev) = connect(&a.url(), "alice").await;
    alice.join("lobby").await.unwrap();
    wait_members(&b, "lobby", &["alice"]).await;

    let (bob, _bob_ev) = connect(&b.url(), "bob").await;
    let j = bob.join("lobby").await.unwrap();
    let mut names: Vec<_> = j.members.iter().map(|m| m.display_name.clone()).collect();
    names.sort();
    assert_eq!(
        names,
        ["alice", "bob"],
        "the join reply lists members of every instance"
    );
    expect_event(&mut alice_ev, "bob joined", |e| joined(e, "bob")).await;
    assert_eq!(alice.list_members("lobby").await.unwrap().len(), 2);

    // bob connects a second time, on a: still one member, no second event.
    let (bob2, _bob2_ev) = connect(&a.url(), "bob").await;
    bob2.join("lobby").await.unwrap();
    bob.leave("lobby").await.unwrap();
    expect_no_event(&mut alice_ev, Duration::from_millis(400), |e| {
        left(e, "bob")
    })
    .await;
    assert_eq!(alice.list_members("lobby").await.unwrap().len(), 2);
    // Now his last connection leaves: everyone sees it.
    bob2.close();
    expect_event(&mut alice_ev, "bob left", |e| left(e, "bob")).await;
    wait_members(&b, "lobby", &["alice"]).await;
    a.stop().await;
    b.stop().await;
}

async fn a_late_instance_learns_who_is_already_there(backplane: Backplane) {
    let a = instance(&backplane, "a").await;
    let (alice, mut alice_ev) = connect(&a.url(), "alice").await;
    alice.join("lobby").await.unwrap();
    alice.join("dev").await.unwrap();

    let b = instance(&backplane, "b").await;
    wait_members(&b, "lobby", &["alice"]).await;
    wait_members(&b, "dev", &["alice"]).await;
    let (bob, _bob_ev) = connect(&b.url(), "bob").await;
    assert_eq!(bob.join("dev").await.unwrap().members.len(), 2);
    expect_event(&mut alice_ev, "bob joined", |e| joined(e, "bob")).await;
    a.stop().await;
    b.stop().await;
}

async fn members_of_a_killed_instance_leave_within_the_expiry(backplane: Backplane) {
    let a = instance(&backplane, "a").await;
    let (alice, mut alice_ev) = connect(&a.url(), "alice").await;
    alice.join("lobby").await.unwrap();

    // Instance c is a real process, so it can be killed without a goodbye.
    let backplane_env = backplane.env();
    let mut env: Vec<(&str, &str)> = backplane_env
        .iter()
        .map(|(k, v)| (*k, v.as_str()))
        .collect();
    env.extend([
        ("CHAT_SERVER_ID", "c"),
        ("CHAT_PRESENCE__HEARTBEAT_INTERVAL", "200ms"),
        ("CHAT_PRESENCE__EXPIRY", "1s"),
        ("CHAT_NOTIFICATIONS__ENABLED", "false"),
    ]);
    let mut c = ServerProcess::start(&env).await;
    let (carol, _carol_ev) = connect(&c.url(), "carol").await;
    carol.join("lobby").await.unwrap();
    expect_event(&mut alice_ev, "carol joined", |e| joined(e, "carol")).await;
    wait_members(&a, "lobby", &["alice", "carol"]).await;

    c.kill();
    let killed = Instant::now();
    expect_event(&mut alice_ev, "carol left", |e| left(e, "carol")).await;
    let took = killed.elapsed();
    assert!(
        took < Duration::from_millis(1000 + 1500),
        "left after {took:?} with a 1 s expiry"
    );
    assert_eq!(alice.list_members("lobby").await.unwrap().len(), 1);
    // a carries on.
    alice.send("lobby", "still here").await.unwrap();
    a.stop().await;
}

/// Issue 18's review: a stopping instance's sessions leave their rooms as
/// they say goodbye, and the other instances hear it then (presence goes
/// out in batches, one per tick, and the ticks go on while the sessions
/// leave), not a presence expiry later.
async fn members_of_a_stopped_instance_leave_at_once(backplane: Backplane) {
    let a = instance(&backplane, "a").await;
    let mut long_expiry = cluster_config(&backplane, "b");
    long_expiry.presence.expiry = Duration::from_secs(30);
    let b = TestServer::start(long_expiry).await;
    wait_ready(&b, true).await;
    let (alice, mut alice_ev) = connect(&a.url(), "alice").await;
    alice.join("lobby").await.unwrap();
    let (carol, _carol_ev) = connect(&b.url(), "carol").await;
    carol.join("lobby").await.unwrap();
    expect_event(&mut alice_ev, "carol joined", |e| joined(e, "carol")).await;
    let stopping = Instant::now();
    b.stop().await;
    expect_event(&mut alice_ev, "carol left", |e| left(e, "carol")).await;
    let took = stopping.elapsed();
    assert!(
        took < Duration::from_secs(5),
        "left after {took:?}, with a 30 s expiry"
    );
    assert_eq!(alice.list_members("lobby").await.unwrap().len(), 1);
    a.stop().await;
}

fn notification(e: &Event, text: &str) -> bool {
    matches!(e, Event::Notification(n) if n.text == text)
}

async fn an_operator_broadcast_reaches_every_client_once(backplane: Backplane) {
    let mut with_admin = cluster_config(&backplane, "a");
    with_admin.admin.token = "t0ken".into();
    let a = TestServer::start(with_admin).await;
    wait_ready(&a, true).await;
    let b = instance(&backplane, "b").await; // no admin token: endpoint disabled
    let (_alice, mut alice_ev) = connect(&a.url(), "alice").await;
    let (_bob, mut bob_ev) = connect(&b.url(), "bob").await;
    let (_carol, mut carol_ev) = connect(&b.url(), "carol").await;
    let broadcast = |addr, token: Option<&'static str>, body: &'static str| async move {
        let post = HttpRequest::new("POST", "/admin/broadcast").bearer(token);
        http(addr, post.json(body)).await.status
    };

    assert_eq!(broadcast(a.addr(), None, r#"{"text":"x"}"#).await, 401);
    assert_eq!(
        broadcast(a.addr(), Some("wrong"), r#"{"text":"x"}"#).await,
        401
    );
    assert_eq!(
        broadcast(a.addr(), Some("t0ken"), r#"{"text":""}"#).await,
        400
    );
    assert_eq!(
        broadcast(a.addr(), Some("t0ken"), r#"{"txt":"x"}"#).await,
        400
    );
    assert_eq!(
        broadcast(b.addr(), Some("t0ken"), r#"{"text":"x"}"#).await,
        404
    );

    assert_eq!(
        broadcast(a.addr(), Some("t0ken"), r#"{"text":"maintenance at noon"}"#).await,
        202
    );
    for events in [&mut alice_ev, &mut bob_ev, &mut carol_ev] {
        expect_event(events, "the broadcast", |e| {
            notification(e, "maintenance at noon")
        })
        .await;
    }
    for events in [&mut alice_ev, &mut bob_ev, &mut carol_ev] {
        expect_no_event(events, Duration::from_millis(300), |e| {
            matches!(e, Event::Notification(_))
        })
        .await;
    }
    a.stop().await;
    b.stop().await;
}

async fn periodic_notifications_come_once_per_interval_in_a_cluster(backplane: Backplane) {
    let interval = Duration::from_millis(300);
    let mut servers = Vec::new();
    for id in ["a", "b"] {
        let mut c = cluster_config(&backplane, id);
        c.notifications.enabled = true;
        c.notifications.interval = interval;
        c.notifications.text = "tick".into();
        let s = TestServer::start(c).await;
        wait_ready(&s, true).await;
        servers.push(s);
    }
    for server in &servers {
        let (_client, mut events) = connect(&server.url(), "watcher").await;
        let mut times = Vec::new();
        while times.len() < 3 {
            if let Event::Notification(n) =
                expect_event(&mut events, "tick", |e| notification(e, "tick")).await
            {
                times.push(n.server_time_unix_ms);
            }
        }
        // Two instances sending to the same client would show up as ticks
        // closer together than the interval.
        for pair in times.windows(2) {
            let gap = pair[1] - pair[0];
            assert!(gap >= 200, "ticks {gap} ms apart: {times:?}");
        }
    }
    for s in servers {
        s.stop().await;
    }
}

/// Runs every scenario above against one backplane.
/// `GET /admin/status` and `chat-server status` show the other instances
/// with what their heartbeats say they hold.
async fn status_shows_the_other_instances_and_their_connections(backplane: Backplane) {
    let mut with_admin = cluster_config(&backplane, "a");
    with_admin.admin.token = "st4tus".into();
    let a = TestServer::start(with_admin).await;
    wait_ready(&a, true).await;
    let b = instance(&backplane, "b").await;
    let (_one, _e1) = connect(&b.url(), "one").await;
    let (two, _e2) = connect(&b.url(), "two").await;
    two.join("lobby").await.unwrap();
    two.send("lobby", "counted").await.unwrap();

    let deadline = Instant::now() + WAIT;
    let status = loop {
        let request = HttpRequest::get("/admin/status").bearer("st4tus");
        let HttpResponse {
            status: code, body, ..
        } = http(a.addr(), request).await;
        assert_eq!(code, 200, "{body}");
        let status: serde_json::Value = serde_json::from_str(&body).unwrap();
        let b_seen = status["instances"]
            .as_array()
            .unwrap()
            .iter()
            .find(|i| i["server_id"] == "b")
            .cloned();
        // Its heartbeats carry its readiness and counters (the operator's
        // view shows them beside its connections and rooms).
        if b_seen.as_ref().is_some_and(|i| {
            i["connections"] == 2
                && i["rooms"] == 1
                && i["ready"] == true
                && i["messages_received"] == 1
                && i["messages_delivered"].as_u64() >= Some(1)
                && i["backplane_counters"]["published"].as_u64() >= Some(1)
                && i["backplane_counters"]["publish_failed"].is_u64()
        }) {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "b not seen with its connections: {body}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(status["server_id"], "a");
    assert_eq!(status["status"], "ready");
    assert_eq!(status["connections"], 0);
    assert_eq!(status["checks"]["backplane"], "up");
    assert_eq!(
        http(a.addr(), HttpRequest::get("/admin/status"))
            .await
            .status,
        401
    );

    // The command an operator runs, against the same instance.
    // (Async: the servers run on this test's runtime meanwhile.)
    let out = tokio::process::Command::new(BIN)
        .arg("status")
        .env("CHAT_LISTEN", a.addr().to_string())
        .env("CHAT_ADMIN__TOKEN", "st4tus")
        .output()
        .await
        .expect("run chat-server status");
    let printed = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{printed}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(printed.contains("a (this instance): ready"), "{printed}");
    assert!(printed.contains("b: 2 connections, 1 rooms"), "{printed}");
    a.stop().await;
    b.stop().await;
}

/// Issue 15, report 1: with per-instance stores each instance numbers a
/// room on its own. A client resuming on an instance from a sequence it got
/// elsewhere must not have this instance's messages withheld as "already
/// seen": numbers from different stores say nothing about each other.
async fn per_instance_stores_withhold_nothing_from_a_client_that_resumes_elsewhere(
    backplane: Backplane,
) {
    let a = instance(&backplane, "a").await;
    let b = instance(&backplane, "b").await;
    let (alice, _alice_ev) = connect(&a.url(), "alice").await;
    let (bob, mut bob_ev) = connect(&b.url(), "bob").await;
    alice.join("lobby").await.unwrap();
    bob.join("lobby").await.unwrap();
    wait_members(&a, "lobby", &["alice", "bob"]).await;
    for n in 1..=5 {
        alice.send("lobby", &format!("a{n}")).await.unwrap();
        // Numbered by a's store.
        assert_eq!(expect_message(&mut bob_ev, "lobby").await.2, n);
    }

    // Carol saw up to 5 (a's numbering) and resumes on b, whose store is
    // behind. Not a reset: numbers from another store are expected here,
    // and a reset would make her client drop what it holds.
    let mut carol = RawSession::open(&b.url(), "carol").await.unwrap();
    let join = JoinRoomRequest {
        room: "lobby".into(),
        since_sequence: Some(5),
    };
    carol.send(1, Request::JoinRoom(join)).await;
    loop {
        match carol.next().await {
            Some(Frame::Reply(r)) => {
                let Some(reply::Result::JoinRoom(j)) = r.result else {
                    panic!("{r:?}");
                };
                assert!(!j.sequence_reset, "{j:?}");
                break;
            }
            Some(_) => {}
            None => panic!("the session ended"),
        }
    }
    // b's own messages, numbered 1 and 2 by b's store, reach her.
    for text in ["b1", "b2"] {
        bob.send("lobby", text).await.unwrap();
    }
    let mut texts = Vec::new();
    while texts.len() < 2 {
        match carol.next().await {
            Some(Frame::Message(m)) => texts.push(m.text),
            Some(_) => {}
            None => panic!("the session ended"),
        }
    }
    assert_eq!(texts, ["b1", "b2"]);
    a.stop().await;
    b.stop().await;
}

/// Issue 15, report 11: a second process started with the same
/// `server_id` is detected (its control messages carry another
/// incarnation): both count it in `/metrics` and log it as an error; and
/// neither drops the other's room events as its own echoes.
async fn a_second_process_with_the_same_server_id_is_detected(backplane: Backplane) {
    let first = instance(&backplane, "twin").await;
    let second = instance(&backplane, "twin").await;
    let metric = "chat_cluster_duplicate_server_id_total";
    let deadline = Instant::now() + WAIT;
    loop {
        let a = scrape_metrics(first.addr()).await;
        let b = scrape_metrics(second.addr()).await;
        let seen = |m: &std::collections::BTreeMap<String, f64>| m.get(metric).copied();
        if seen(&a).is_some_and(|n| n > 0.0) && seen(&b).is_some_and(|n| n > 0.0) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "not detected: {:?} / {:?}",
            seen(&a),
            seen(&b)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Each still delivers the other's room events (it tells them from its
    // own echoes by their incarnation): with per-instance stores nothing
    // else would bring them.
    let (alice, _alice_ev) = connect(&first.url(), "alice").await;
    let (bob, mut bob_ev) = connect(&second.url(), "bob").await;
    alice.join("lobby").await.unwrap();
    bob.join("lobby").await.unwrap();
    until_delivered(&alice, "lobby", &mut bob_ev).await;
    // A single instance alone counts nothing.
    second.stop().await;
    let alone = instance(&backplane, "single").await;
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(scrape_metrics(alone.addr()).await.get(metric), Some(&0.0));
    first.stop().await;
    alone.stop().await;
}

macro_rules! suite {
    ($backplane:ident: $($test:ident),* $(,)?) => {
        mod $backplane {
            $(
                #[tokio::test]
                async fn $test() {
                    let backplane = crate::common::or_skip!(super::Backplane::$backplane());
                    super::$test(backplane).await;
                }
            )*
        }
    };
}

suite!(redis: clients_on_different_instances_chat_in_several_rooms, typing_reaches_the_other_members_everywhere_but_never_the_typist, edits_and_deletes_reach_every_instance_in_order, read_marks_are_shared_announced_once_and_reported_on_join, reactions_reach_every_instance_and_show_in_history, a_direct_conversation_reaches_both_users_everywhere_and_nobody_else, a_backplane_outage_keeps_local_members_served_and_heals, an_instance_started_while_the_backplane_is_down_becomes_ready_later, presence_is_the_same_from_every_instance, a_late_instance_learns_who_is_already_there, members_of_a_killed_instance_leave_within_the_expiry, members_of_a_stopped_instance_leave_at_once, an_operator_broadcast_reaches_every_client_once, periodic_notifications_come_once_per_interval_in_a_cluster, status_shows_the_other_instances_and_their_connections, per_instance_stores_withhold_nothing_from_a_client_that_resumes_elsewhere, a_second_process_with_the_same_server_id_is_detected, an_application_posts_lists_and_reads_without_a_connection, an_application_disconnects_a_users_sessions_everywhere, an_application_removes_a_user_from_a_room_everywhere, a_banned_user_is_taken_out_and_kept_out_until_lifted);
suite!(nats: clients_on_different_instances_chat_in_several_rooms, typing_reaches_the_other_members_everywhere_but_never_the_typist, edits_and_deletes_reach_every_instance_in_order, read_marks_are_shared_announced_once_and_reported_on_join, reactions_reach_every_instance_and_show_in_history, a_direct_conversation_reaches_both_users_everywhere_and_nobody_else, a_backplane_outage_keeps_local_members_served_and_heals, an_instance_started_while_the_backplane_is_down_becomes_ready_later, presence_is_the_same_from_every_instance, a_late_instance_learns_who_is_already_there, members_of_a_killed_instance_leave_within_the_expiry, members_of_a_stopped_instance_leave_at_once, an_operator_broadcast_reaches_every_client_once, periodic_notifications_come_once_per_interval_in_a_cluster, status_shows_the_other_instances_and_their_connections, per_instance_stores_withhold_nothing_from_a_client_that_resumes_elsewhere, a_second_process_with_the_same_server_id_is_detected, an_application_posts_lists_and_reads_without_a_connection, an_application_disconnects_a_users_sessions_everywhere, an_application_removes_a_user_from_a_room_everywhere, a_banned_user_is_taken_out_and_kept_out_until_lifted);

#[tokio::test]
async fn redis_cluster_with_sharded_pub_sub() {
    let redis = or_skip!(redis_cluster());
    let mut servers = Vec::new();
    for id in ["a", "b"] {
        let mut c = config();
        c.server_id = id.into();
        c.backplane = BackplaneKind::Redis;
        c.redis.cluster = true;
        c.redis.url = redis.urls();
        c.presence.heartbeat_interval = Duration::from_millis(200);
        c.presence.expiry = Duration::from_millis(1000);
        let s = TestServer::start(c).await;
        wait_ready(&s, true).await;
        servers.push(s);
    }
    let (a, b) = (&servers[0], &servers[1]);
    let (alice, mut alice_ev) = connect(&a.url(), "alice").await;
    let (bob, mut bob_ev) = connect(&b.url(), "bob").await;
    // Several rooms, so their channels land on different shards.
    let rooms = ["lobby", "dev", "ops", "random", "team-1", "team-2"];
    for room in rooms {
        alice.join(room).await.unwrap();
    }
    wait_members(b, "team-2", &["alice"]).await;
    for room in rooms {
        bob.join(room).await.unwrap();
    }
    expect_event(&mut alice_ev, "bob joined", |e| joined(e, "bob")).await;
    // The rooms are sharded channels spread over the nodes.
    let per_node = redis.shard_channels();
    let mut all: Vec<&String> = per_node.iter().flatten().collect();
    all.sort();
    all.dedup();
    assert_eq!(
        all.len(),
        rooms.len() + 1,
        "every room and the control channel: {per_node:?}"
    );
    assert!(
        per_node.iter().filter(|n| !n.is_empty()).count() >= 2,
        "{per_node:?}"
    );
    for room in rooms {
        alice.send(room, &format!("hello {room}")).await.unwrap();
        assert_eq!(
            expect_message(&mut bob_ev, room).await.1,
            format!("hello {room}")
        );
        bob.send(room, &format!("back in {room}")).await.unwrap();
        assert_eq!(
            expect_message(&mut alice_ev, room).await.1,
            format!("hello {room}")
        );
        assert_eq!(
            expect_message(&mut alice_ev, room).await.1,
            format!("back in {room}")
        );
    }
    for s in servers {
        s.stop().await;
    }
}

async fn an_application_posts_lists_and_reads_without_a_connection(backplane: Backplane) {
    let db = or_skip!(postgres_db().await);
    let servers = api_pair(&backplane, Some(&db)).await;
    let (a, b) = (&servers[0], &servers[1]);
    let (alice, mut alice_ev) = connect(&a.url(), "alice").await;
    let (bob, mut bob_ev) = connect(&b.url(), "bob").await;
    alice.join("news").await.unwrap();
    bob.join("news").await.unwrap();
    wait_members(a, "news", &["alice", "bob"]).await;
    wait_members(b, "news", &["alice", "bob"]).await;
    let body =
        Some(r#"{"text":"deploy done","idempotency_key":"d-1","bot":{"id":"ci","name":"CI"}}"#);
    let (status, ack) = api_call(b, "POST", "/v1/api/rooms/news/messages", body).await;
    assert_eq!(status, 200, "{ack}");
    for events in [&mut alice_ev, &mut bob_ev] {
        let m = expect_numbered(events, "news").await;
        let sender = m.sender.unwrap();
        assert_eq!(
            (m.sequence, sender.user_id.as_str(), m.text.as_str()),
            (1, "bot:ci", "deploy done")
        );
    }
    // The same key through the other instance: the same message, once.
    let (status, again) = api_call(a, "POST", "/v1/api/rooms/news/messages", body).await;
    assert_eq!((status, &again["message_id"]), (200, &ack["message_id"]));
    for events in [&mut alice_ev, &mut bob_ev] {
        expect_no_event(events, Duration::from_millis(300), |e| {
            matches!(e, Event::Message(_))
        })
        .await;
    }
    // A member's message after it is numbered after it, everywhere.
    alice.send("news", "thanks").await.unwrap();
    assert_eq!(expect_numbered(&mut bob_ev, "news").await.sequence, 2);
    // Through an instance with no member of the room: bob, on the other
    // one, gets it, then his own next message after it.
    bob.join("ops").await.unwrap();
    let body = Some(r#"{"text":"disk full","idempotency_key":"o-1"}"#);
    let (status, ack) = api_call(a, "POST", "/v1/api/rooms/ops/messages", body).await;
    assert_eq!(
        (status, &ack["sequence"]),
        (200, &serde_json::json!(1)),
        "{ack}"
    );
    let m = expect_numbered(&mut bob_ev, "ops").await;
    assert_eq!(
        (m.sequence, m.sender.unwrap().user_id.as_str()),
        (1, "system")
    );
    bob.send("ops", "on it").await.unwrap();
    assert_eq!(expect_numbered(&mut bob_ev, "ops").await.sequence, 2);
    bob.leave("ops").await.unwrap();
    wait_members(a, "ops", &[]).await;
    // Rooms, members and history, cluster-wide, from either instance.
    for server in [a, b] {
        let (_, rooms) = api_call(server, "GET", "/v1/api/rooms", None).await;
        assert_eq!(
            rooms["rooms"],
            serde_json::json!([{"room": "news", "members": 2}])
        );
        let (_, members) = api_call(server, "GET", "/v1/api/rooms/news/members", None).await;
        let ids: Vec<&str> = members["members"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["user_id"].as_str().unwrap())
            .collect();
        assert_eq!(ids, ["alice", "bob"]);
        let (_, page) = api_call(server, "GET", "/v1/api/rooms/news/messages", None).await;
        let texts: Vec<&str> = page["messages"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["text"].as_str().unwrap())
            .collect();
        assert_eq!(texts, ["deploy done", "thanks"]);
    }
    for s in servers {
        s.stop().await;
    }
}

async fn an_application_disconnects_a_users_sessions_everywhere(backplane: Backplane) {
    let servers = api_pair(&backplane, None).await;
    let (a, b) = (&servers[0], &servers[1]);
    let (alice, mut alice_ev) = connect(&a.url(), "alice").await;
    let (alice_too, mut alice_too_ev) = connect(&b.url(), "alice").await;
    let (bob, mut bob_ev) = connect(&b.url(), "bob").await;
    alice.join("lobby").await.unwrap();
    alice_too.join("dev").await.unwrap();
    bob.join("lobby").await.unwrap();
    wait_members(a, "dev", &["alice"]).await;
    wait_members(a, "lobby", &["alice", "bob"]).await;
    let (status, found) = api_call(a, "GET", "/v1/api/users/alice", None).await;
    assert_eq!(status, 200, "{found}");
    assert_eq!(found["rooms"], serde_json::json!(["dev", "lobby"]));
    assert_eq!(found["instances"], serde_json::json!(["a", "b"]));
    assert_eq!(found["sessions_here"], 1);

    let body = Some(r#"{"reason":"your account is suspended"}"#);
    let (status, ended) = api_call(b, "POST", "/v1/api/users/alice/disconnect", body).await;
    assert_eq!(
        (status, &ended["sessions_here"]),
        (200, &serde_json::json!(1)),
        "{ended}"
    );
    for events in [&mut alice_ev, &mut alice_too_ev] {
        match expect_event(events, "alice's notice", |e| {
            matches!(e, Event::Disconnected { .. })
        })
        .await
        {
            Event::Disconnected {
                notice: Some(n), ..
            } => {
                assert_eq!(
                    n.reason,
                    chat_client::proto::DisconnectReason::Disconnected as i32
                );
                assert_eq!(n.message, "your account is suspended");
                assert!(n.stay_disconnected, "the API's default: stay disconnected");
            }
            other => panic!("{other:?}"),
        }
        // Both of her clients, on both instances, stop instead of
        // coming back.
        match expect_event(events, "alice's stop", |e| {
            matches!(e, Event::Stopped { .. } | Event::Reconnecting { .. })
        })
        .await
        {
            Event::Stopped { reason } => assert_eq!(reason, "your account is suspended"),
            other => panic!("alice's client reconnects: {other:?}"),
        }
    }
    expect_no_event(&mut bob_ev, Duration::from_millis(300), |e| {
        matches!(e, Event::Disconnected { .. })
    })
    .await;
    wait_members(a, "lobby", &["bob"]).await;
    // With `reconnect`, a nudge: bob's client comes back on its own.
    let body = Some(r#"{"reason":"new permissions","reconnect":true}"#);
    let (status, _) = api_call(a, "POST", "/v1/api/users/bob/disconnect", body).await;
    assert_eq!(status, 200);
    match expect_event(&mut bob_ev, "bob's notice", |e| {
        matches!(e, Event::Disconnected { .. })
    })
    .await
    {
        Event::Disconnected {
            notice: Some(n), ..
        } => assert!(!n.stay_disconnected),
        other => panic!("{other:?}"),
    }
    expect_event(&mut bob_ev, "bob back", |e| {
        matches!(e, Event::Reconnecting { .. })
    })
    .await;
    bob.wait_connected(WAIT).await.unwrap();
    wait_members(a, "lobby", &["bob"]).await;
    // Alice's session on each instance, and bob's on b.
    for (server, ended) in [(a, 1.0), (b, 2.0)] {
        let m = scrape_metrics(server.addr()).await;
        assert_eq!(
            m[r#"chat_connections_closed_total{reason="disconnected"}"#], ended,
            "{m:?}"
        );
    }
    let (status, refused) = api_call(
        a,
        "POST",
        "/v1/api/users/alice/disconnect",
        Some(r#"{"reason":"a\u0007b"}"#),
    )
    .await;
    assert_eq!(
        (status, refused["code"].as_str()),
        (400, Some("INVALID_ARGUMENT"))
    );
    for s in servers {
        s.stop().await;
    }
}

async fn an_application_removes_a_user_from_a_room_everywhere(backplane: Backplane) {
    let servers = api_pair(&backplane, None).await;
    let (a, b) = (&servers[0], &servers[1]);
    let (alice, mut alice_ev) = connect(&a.url(), "alice").await;
    let (alice_too, mut alice_too_ev) = connect(&b.url(), "alice").await;
    let (bob, mut bob_ev) = connect(&b.url(), "bob").await;
    for c in [&alice, &alice_too, &bob] {
        c.join("lobby").await.unwrap();
    }
    alice.join("dev").await.unwrap();
    wait_members(a, "lobby", &["alice", "bob"]).await;
    let path = "/v1/api/rooms/lobby/members/alice/remove";
    let (status, removed) = api_call(a, "POST", path, Some(r#"{"reason":"off-topic"}"#)).await;
    assert_eq!(status, 200, "{removed}");
    for events in [&mut alice_ev, &mut alice_too_ev] {
        match expect_event(events, "removed", |e| matches!(e, Event::Removed(_))).await {
            Event::Removed(r) => {
                assert_eq!((r.room.as_str(), r.reason.as_str()), ("lobby", "off-topic"))
            }
            _ => unreachable!(),
        }
    }
    expect_event(&mut bob_ev, "alice left", |e| left(e, "alice")).await;
    for server in [a, b] {
        wait_members(server, "lobby", &["bob"]).await;
    }
    // Out of that room only, and not rejoined; nothing bars a new join.
    assert_eq!(alice.rooms(), ["dev"]);
    let refused = alice.send("lobby", "hello?").await;
    assert_eq!(refusal(refused), ErrorCode::NotAMember);
    alice.send("dev", "still here").await.unwrap();
    alice.join("lobby").await.unwrap();
    wait_members(b, "lobby", &["alice", "bob"]).await;
    for s in servers {
        s.stop().await;
    }
}

async fn a_banned_user_is_taken_out_and_kept_out_until_lifted(backplane: Backplane) {
    let db = or_skip!(postgres_db().await);
    let servers = api_pair(&backplane, Some(&db)).await;
    let (a, b) = (&servers[0], &servers[1]);
    let (alice, mut alice_ev) = connect(&a.url(), "alice").await;
    let (alice_too, _alice_too_ev) = connect(&b.url(), "alice").await;
    let (bob, _bob_ev) = connect(&b.url(), "bob").await;
    alice.join("lobby").await.unwrap();
    bob.join("lobby").await.unwrap();
    wait_members(b, "lobby", &["alice", "bob"]).await;
    let until = chat_util::now_unix_ms() + 3_600_000;
    let body = format!(r#"{{"user_id":"alice","until_unix_ms":{until},"reason":"spam"}}"#);
    let (status, banned) = api_call(b, "POST", "/v1/api/rooms/lobby/bans", Some(&body)).await;
    assert_eq!(
        (status, &banned["was_banned"]),
        (200, &serde_json::json!(false)),
        "{banned}"
    );
    match expect_event(&mut alice_ev, "removed", |e| matches!(e, Event::Removed(_))).await {
        Event::Removed(r) => assert_eq!((r.room.as_str(), r.reason.as_str()), ("lobby", "spam")),
        _ => unreachable!(),
    }
    wait_members(a, "lobby", &["bob"]).await;
    // Kept out on every instance, with the code, until and why.
    for client in [&alice, &alice_too] {
        let refused = client.join("lobby").await.unwrap_err();
        assert!(refused.to_string().contains("spam"), "{refused}");
        assert_eq!(refusal(Err::<(), _>(refused)), ErrorCode::Banned);
    }
    alice.join("dev").await.expect("other rooms are open");
    let read = alice
        .history("lobby", HistoryDirection::Backward, 0, 10)
        .await;
    // (The unary History call's status: PERMISSION_DENIED, saying why.)
    let read = read.unwrap_err();
    assert!(
        read.to_string().contains("banned"),
        "nor is its history read: {read}"
    );
    let (_, listed) = api_call(a, "GET", "/v1/api/rooms/lobby/bans", None).await;
    assert_eq!(listed["bans"][0]["user_id"], "alice");
    assert_eq!(listed["bans"][0]["until_unix_ms"], until);
    let past = format!(
        r#"{{"user_id":"bob","until_unix_ms":{}}}"#,
        until - 7_200_000
    );
    let (status, refused) = api_call(a, "POST", "/v1/api/rooms/lobby/bans", Some(&past)).await;
    assert_eq!(
        (status, refused["code"].as_str()),
        (400, Some("INVALID_ARGUMENT"))
    );
    let (status, lifted) = api_call(a, "DELETE", "/v1/api/rooms/lobby/bans/alice", None).await;
    assert_eq!(
        (status, &lifted["lifted"]),
        (200, &serde_json::json!(true)),
        "{lifted}"
    );
    alice_too.join("lobby").await.expect("the ban is lifted");
    for s in servers {
        s.stop().await;
    }
}

/// The server API's token in these tests.
const APP_TOKEN: &str = "app-t0ken";

/// Two instances on `backplane` with the server API open (`APP_TOKEN`),
/// sharing `db` as their store when given.
async fn api_pair(backplane: &Backplane, db: Option<&PostgresDb>) -> Vec<TestServer> {
    let mut servers = Vec::new();
    for id in ["a", "b"] {
        let mut c = cluster_config(backplane, id);
        if let Some(db) = db {
            c.store.url = db.url();
        }
        c.admin.token = APP_TOKEN.into();
        let s = TestServer::start(c).await;
        wait_ready(&s, true).await;
        servers.push(s);
    }
    servers
}

/// `method path` on `server`'s API with `APP_TOKEN` (and `body` as JSON):
/// the status and the parsed answer.
async fn api_call(
    server: &TestServer,
    method: &str,
    path: &str,
    body: Option<&str>,
) -> (u16, serde_json::Value) {
    let mut request = HttpRequest::new(method, path).bearer(APP_TOKEN);
    if let Some(body) = body {
        request = request.json(body);
    }
    let response = http(server.addr(), request).await;
    let answer = serde_json::from_str(response.body.trim()).unwrap();
    (response.status, answer)
}

/// Two instances on one Redis and one PostgreSQL store.
async fn shared_store_pair(redis: &Backplane, db: &PostgresDb) -> (TestServer, TestServer) {
    let mut servers = Vec::new();
    for id in ["a", "b"] {
        let mut c = cluster_config(redis, id);
        c.store.url = db.url();
        let s = TestServer::start(c).await;
        wait_ready(&s, true).await;
        servers.push(s);
    }
    let b = servers.pop().unwrap();
    (servers.pop().unwrap(), b)
}

#[tokio::test]
async fn with_a_shared_store_messages_sent_during_an_outage_arrive_afterwards_in_order() {
    let mut backplane = or_skip!(Backplane::redis());
    let db = or_skip!(postgres_db().await);
    let (a, b) = shared_store_pair(&backplane, &db).await;
    let (alice, _alice_ev) = connect(&a.url(), "alice").await;
    let (bob, mut bob_ev) = connect(&b.url(), "bob").await;
    alice.join("lobby").await.unwrap();
    bob.join("lobby").await.unwrap();
    assert_eq!(alice.send("lobby", "before").await.unwrap().sequence, 1);
    assert_eq!(
        expect_message(&mut bob_ev, "lobby").await,
        ("alice".into(), "before".into(), 1)
    );

    backplane.kill();
    wait_ready(&a, false).await;
    for text in ["during 1", "during 2"] {
        alice
            .send("lobby", text)
            .await
            .expect("stored and acknowledged");
    }
    backplane.restart();
    wait_ready(&a, true).await;
    wait_ready(&b, true).await;
    // b fills the gap from the store when the backplane returns...
    assert_eq!(
        expect_message(&mut bob_ev, "lobby").await,
        ("alice".into(), "during 1".into(), 2)
    );
    assert_eq!(
        expect_message(&mut bob_ev, "lobby").await,
        ("alice".into(), "during 2".into(), 3)
    );
    // ...and live delivery continues after them, numbered by the one store.
    let ack = bob.send("lobby", "after").await.unwrap();
    assert_eq!(ack.sequence, 4);
    assert_eq!(
        expect_message(&mut bob_ev, "lobby").await,
        ("bob".into(), "after".into(), 4)
    );
    expect_no_event(&mut bob_ev, Duration::from_millis(300), |e| {
        matches!(e, Event::Message(_))
    })
    .await;
    a.stop().await;
    b.stop().await;
}

#[tokio::test]
async fn a_client_resumes_after_its_instance_restarts_without_gap_or_duplicate() {
    let backplane = or_skip!(Backplane::redis());
    let db = or_skip!(postgres_db().await);
    let (a, b) = shared_store_pair(&backplane, &db).await;
    let b_addr = b.addr();
    let (alice, _alice_ev) = connect(&a.url(), "alice").await;
    let (bob, mut bob_ev) = connect(&b.url(), "bob").await;
    alice.join("lobby").await.unwrap();
    bob.join("lobby").await.unwrap();
    alice.send("lobby", "one").await.unwrap();
    assert_eq!(expect_message(&mut bob_ev, "lobby").await.2, 1);
    assert_eq!(bob.last_seen("lobby"), Some(1));

    b.stop().await;
    expect_event(&mut bob_ev, "disconnected", |e| {
        matches!(e, Event::Disconnected { .. })
    })
    .await;
    for text in ["two", "three", "four"] {
        alice.send("lobby", text).await.unwrap();
    }
    let mut again = cluster_config(&backplane, "b");
    again.store.url = db.url();
    again.listen = b_addr;
    let b = TestServer::start(again).await;
    match expect_event(&mut bob_ev, "rejoined", |e| {
        matches!(e, Event::Rejoined { .. })
    })
    .await
    {
        Event::Rejoined { result: Ok(r), .. } => {
            assert_eq!(r.backlog_after_sequence, 1);
            assert!(!r.backlog_incomplete);
        }
        other => panic!("{other:?}"),
    }
    for (text, seq) in [("two", 2), ("three", 3), ("four", 4)] {
        assert_eq!(
            expect_message(&mut bob_ev, "lobby").await,
            ("alice".into(), text.into(), seq)
        );
    }
    alice.send("lobby", "five").await.unwrap();
    assert_eq!(expect_message(&mut bob_ev, "lobby").await.2, 5);
    expect_no_event(&mut bob_ev, Duration::from_millis(300), |e| {
        matches!(e, Event::Message(_))
    })
    .await;
    a.stop().await;
    b.stop().await;
}

/// Makes Redis user `limited` (password `pw`) with ACL `rules` on
/// `server`; returns the backplane and an admin connection that changes
/// the rules while instances run ([`acl`]).
async fn limited_redis(
    server: RedisServer,
    rules: &[&str],
) -> (Backplane, ::redis::aio::MultiplexedConnection) {
    let admin = ::redis::Client::open(server.url()).unwrap();
    let mut admin = admin.get_multiplexed_async_connection().await.unwrap();
    acl(&mut admin, rules).await;
    (Backplane::Redis(server), admin)
}

/// `ACL SETUSER limited <rules>`.
async fn acl(admin: &mut ::redis::aio::MultiplexedConnection, rules: &[&str]) {
    let _: () = ::redis::cmd("ACL")
        .arg("SETUSER")
        .arg("limited")
        .arg(rules)
        .query_async(admin)
        .await
        .unwrap();
}

/// An instance's configuration on `backplane` as Redis user `limited`.
fn limited_config(backplane: &Backplane, id: &str) -> chat_server::Config {
    let mut config = cluster_config(backplane, id);
    config.redis.url = config
        .redis
        .url
        .replacen("redis://", "redis://limited:pw@", 1);
    config
}

/// Issue 15, report 4: a room subscription Redis refused (here an ACL
/// error; a timeout, MOVED or CLUSTERDOWN alike) while the connection stays
/// up (PING answers) must not stay missing: it is tried again until it
/// holds, and then the room gets the other instances' messages live.
#[tokio::test]
async fn a_refused_redis_subscription_is_retried_until_it_holds() {
    let Backplane::Redis(server) = or_skip!(Backplane::redis()) else {
        unreachable!()
    };
    // A user that may use the control channel but no room channel yet.
    let (backplane, mut admin) = limited_redis(
        server,
        &["on", ">pw", "~*", "+@all", "resetchannels", "&chat:control"],
    )
    .await;
    let a = TestServer::start(limited_config(&backplane, "a")).await;
    wait_ready(&a, true).await;
    let b = instance(&backplane, "b").await;
    let (alice, mut alice_ev) = connect(&a.url(), "alice").await;
    let (bob, _bob_ev) = connect(&b.url(), "bob").await;
    // a's SUBSCRIBE is refused; the join itself succeeds.
    alice.join("lobby").await.unwrap();
    bob.join("lobby").await.unwrap();
    wait_members(&a, "lobby", &["alice", "bob"]).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    // Now the room channels are allowed.
    acl(&mut admin, &["allchannels"]).await;
    // Per-instance stores: no repair fills the room, only the backplane.
    until_delivered(&bob, "lobby", &mut alice_ev).await;
    a.stop().await;
    b.stop().await;
}

/// Review of report 4's fix: a room Redis refuses while the backplane
/// (re)connects must not fail the whole connection (every other room and
/// the control channel with it); it goes into the retry set, and the
/// others are served on the new connection.
#[tokio::test]
async fn a_room_refused_on_reconnect_does_not_keep_the_others_down() {
    let Backplane::Redis(server) = or_skip!(Backplane::redis()) else {
        unreachable!()
    };
    // "open" and the control channel are allowed, "closed" is not.
    let rules = [
        "on",
        ">pw",
        "~*",
        "+@all",
        "resetchannels",
        "&chat:control",
        "&chat:room:open",
    ];
    let (backplane, mut admin) = limited_redis(server, &rules).await;
    let a = TestServer::start(limited_config(&backplane, "a")).await;
    wait_ready(&a, true).await;
    let b = instance(&backplane, "b").await;
    let (alice, mut alice_ev) = connect(&a.url(), "alice").await;
    let (bob, _bob_ev) = connect(&b.url(), "bob").await;
    for room in ["open", "closed"] {
        alice.join(room).await.unwrap();
        bob.join(room).await.unwrap();
        wait_members(&a, room, &["alice", "bob"]).await;
    }
    // a's connection is cut: it reconnects and subscribes both rooms
    // again, and "closed" is refused again.
    let _: () = ::redis::cmd("CLIENT")
        .arg(&["KILL", "USER", "limited"][..])
        .query_async(&mut admin)
        .await
        .unwrap();
    until_delivered(&bob, "open", &mut alice_ev).await;
    wait_ready(&a, true).await;
    // Once allowed, the refused room is subscribed too.
    acl(&mut admin, &["allchannels"]).await;
    until_delivered(&bob, "closed", &mut alice_ev).await;
    a.stop().await;
    b.stop().await;
}

/// Issue 15, report 3: a presence snapshot bigger than one backplane
/// message (here a NATS server whose `max_payload` is 8 KiB, standing in
/// for the default 1 MiB and tens of thousands of memberships) reaches the
/// others in parts: a late instance learns every membership.
#[tokio::test]
async fn a_presence_snapshot_larger_than_a_nats_message_arrives_in_parts() {
    let nats = or_skip!(services::nats_with_config("max_payload: 8192\n"));
    let backplane = Backplane::Nats(nats);
    let a = instance(&backplane, "a").await;
    const ROOMS: usize = 60;
    let names = [
        "alice-with-a-long-name-here",
        "bob-with-a-long-name-here",
        "carol-with-a-long-name-here",
        "dave-with-a-long-name-here",
    ];
    let room = |i: usize| format!("a-room-with-a-long-name-{i:03}");
    let mut clients = Vec::new();
    for name in names {
        let (client, events) = connect(&a.url(), name).await;
        for i in 0..ROOMS {
            client.join(&room(i)).await.unwrap();
        }
        clients.push((client, events));
    }
    // Some 240 memberships of about 100 bytes each: three times the limit.
    let b = instance(&backplane, "b").await;
    let mut sorted = names.to_vec();
    sorted.sort();
    for i in [0, ROOMS / 2, ROOMS - 1] {
        wait_members(&b, &room(i), &sorted).await;
    }
    a.stop().await;
    b.stop().await;
}

/// Issue 15, report 5: a presence change whose publish fails while the
/// backplane stays up (here Redis refuses PUBLISH for a moment, by ACL)
/// leaves another instance out of step; the digest in the heartbeats shows
/// it, and the instance asks for a snapshot: presence heals without a
/// reconnect.
#[tokio::test]
async fn presence_left_out_of_step_by_a_failed_publish_heals_without_a_reconnect() {
    let Backplane::Redis(server) = or_skip!(Backplane::redis()) else {
        unreachable!()
    };
    let (backplane, mut admin) =
        limited_redis(server, &["on", ">pw", "~*", "+@all", "allchannels"]).await;
    // An expiry well beyond the refusal: b must not forget a (and relearn
    // it as a new instance), so only the digest can heal it.
    let expiry = Duration::from_secs(5);
    let mut limited = limited_config(&backplane, "a");
    limited.presence.expiry = expiry;
    let a = TestServer::start(limited).await;
    wait_ready(&a, true).await;
    let mut config = cluster_config(&backplane, "b");
    config.presence.expiry = expiry;
    let b = TestServer::start(config).await;
    wait_ready(&b, true).await;
    // b knows a (and a's empty presence).
    tokio::time::sleep(Duration::from_millis(500)).await;
    acl(&mut admin, &["-publish"]).await;
    let (alice, _alice_ev) = connect(&a.url(), "alice").await;
    alice.join("lobby").await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    acl(&mut admin, &["+publish"]).await;
    wait_members(&b, "lobby", &["alice"]).await;
    let failed = scrape_metrics(a.addr()).await;
    assert!(
        failed
            .get("chat_cluster_control_publish_failed_total")
            .is_some_and(|n| *n > 0.0),
        "{failed:?}"
    );
    let repaired = scrape_metrics(b.addr()).await;
    assert!(
        repaired
            .get("chat_cluster_presence_repairs_total")
            .is_some_and(|n| *n > 0.0),
        "{repaired:?}"
    );
    a.stop().await;
    b.stop().await;
}

/// Sends from `sender` to `room` until one of the messages reaches
/// `events` (within `WAIT`): the room is served again.
async fn until_delivered(
    sender: &chat_client::Client,
    room: &str,
    events: &mut chat_client::Events,
) {
    let deadline = Instant::now() + WAIT;
    let mut sent = 0;
    loop {
        sent += 1;
        sender.send(room, &format!("try {sent}")).await.unwrap();
        if a_message_arrives(events, room, Duration::from_millis(500)).await {
            return;
        }
        assert!(Instant::now() < deadline, "{room} never got messages again");
    }
}

/// Whether a message in `room` arrives on `events` within `wait`.
async fn a_message_arrives(events: &mut chat_client::Events, room: &str, wait: Duration) -> bool {
    tokio::time::timeout(wait, async {
        while let Some(event) = events.next().await {
            if let Event::Message(m) = event
                && m.room == room
            {
                return;
            }
        }
        std::future::pending::<()>().await;
    })
    .await
    .is_ok()
}
