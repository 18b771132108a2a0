//! End-to-end behaviour of one server: rooms, messages, presence, errors,
//! notifications.

use crate::common::*;
use chat_client::proto::ErrorCode;
use chat_client::{ClientError, Event};
use std::collections::BTreeSet;
use std::time::Duration;

/// Whether `e` says that `name` joined (members also see their own join).
fn joined(e: &Event, name: &str) -> bool {
    member_joined(e, name)
}

fn names(members: &[chat_client::proto::Member]) -> BTreeSet<String> {
    members.iter().map(|m| m.display_name.clone()).collect()
}

#[tokio::test]
async fn three_clients_in_two_rooms_exchange_messages() {
    let server = TestServer::start(config()).await;
    let url = server.url();
    let (alice, mut alice_ev) = connect(&url, "alice").await;
    let (bob, mut bob_ev) = connect(&url, "bob").await;
    let (carol, mut carol_ev) = connect(&url, "carol").await;

    // alice: lobby + dev; bob: lobby; carol: dev.
    let j = alice.join("lobby").await.unwrap();
    assert_eq!(names(&j.members), BTreeSet::from(["alice".to_string()]));
    assert_eq!(j.latest_sequence, 0);
    alice.join("dev").await.unwrap();
    let j = bob.join("lobby").await.unwrap();
    assert_eq!(
        names(&j.members),
        BTreeSet::from(["alice".into(), "bob".into()])
    );
    carol.join("dev").await.unwrap();

    let ack = alice.send("lobby", "hello lobby").await.unwrap();
    assert_eq!((ack.room.as_str(), ack.sequence), ("lobby", 1));
    assert!(!ack.message_id.is_empty());
    let ack = alice.send("dev", "hello dev").await.unwrap();
    assert_eq!(ack.sequence, 1, "sequences are per room");
    bob.send("lobby", "hi alice").await.unwrap();
    carol.send("dev", "hi from dev").await.unwrap();

    // Each sees its rooms' messages, in sequence order, and nothing else.
    assert_eq!(
        expect_message(&mut bob_ev, "lobby").await,
        ("alice".into(), "hello lobby".into(), 1)
    );
    assert_eq!(
        expect_message(&mut bob_ev, "lobby").await,
        ("bob".into(), "hi alice".into(), 2)
    );
    assert_eq!(
        expect_message(&mut carol_ev, "dev").await,
        ("alice".into(), "hello dev".into(), 1)
    );
    assert_eq!(
        expect_message(&mut carol_ev, "dev").await,
        ("carol".into(), "hi from dev".into(), 2)
    );
    let mut alice_lobby = Vec::new();
    let mut alice_dev = Vec::new();
    while alice_lobby.len() < 2 || alice_dev.len() < 2 {
        match expect_event(&mut alice_ev, "message", |e| matches!(e, Event::Message(_))).await {
            Event::Message(m) if m.room == "lobby" => alice_lobby.push(m.sequence),
            Event::Message(m) => alice_dev.push(m.sequence),
            _ => unreachable!(),
        }
    }
    assert_eq!((alice_lobby, alice_dev), (vec![1, 2], vec![1, 2]));
    expect_no_event(
        &mut bob_ev,
        Duration::from_millis(200),
        |e| matches!(e, Event::Message(m) if m.room == "dev"),
    )
    .await;

    assert_eq!(alice.list_rooms().await.unwrap(), vec!["dev", "lobby"]);
    let members = alice.list_members("dev").await.unwrap();
    assert_eq!(
        names(&members),
        BTreeSet::from(["alice".into(), "carol".into()])
    );
    server.stop().await;
}

#[tokio::test]
async fn members_see_joins_and_leaves_and_a_user_is_listed_once() {
    let server = TestServer::start(config()).await;
    let url = server.url();
    let (alice, mut alice_ev) = connect(&url, "alice").await;
    alice.join("lobby").await.unwrap();

    let (bob1, _bob1_ev) = connect(&url, "bob").await;
    bob1.join("lobby").await.unwrap();
    let joined = expect_event(&mut alice_ev, "bob joined", |e| joined(e, "bob")).await;
    let Event::MembersChanged(j) = joined else {
        unreachable!()
    };
    // alice's own join may share bob's tick: listed too, as it is now.
    assert!(names(&j.joined).contains("bob"), "{j:?}");
    assert_eq!(
        (j.room.as_str(), j.left.len(), j.member_count),
        ("lobby", 0, 2)
    );

    // bob again, from a second place: still one member, no second "joined".
    let (bob2, _bob2_ev) = connect(&url, "bob").await;
    let j = bob2.join("lobby").await.unwrap();
    assert_eq!(j.members.len(), 2);
    assert_eq!(alice.list_members("lobby").await.unwrap().len(), 2);
    expect_no_event(&mut alice_ev, Duration::from_millis(300), presence_event).await;

    // bob's first connection leaves: bob is still there.
    bob1.leave("lobby").await.unwrap();
    expect_no_event(&mut alice_ev, Duration::from_millis(300), presence_event).await;
    assert_eq!(names(&alice.list_members("lobby").await.unwrap()).len(), 2);

    // The second one disconnects abruptly: now bob has left.
    bob2.close();
    let left = expect_event(&mut alice_ev, "bob left", |e| member_left(e, "bob")).await;
    let Event::MembersChanged(l) = left else {
        unreachable!()
    };
    assert_eq!(
        (names(&l.left), l.joined.len(), l.member_count),
        (BTreeSet::from(["bob".to_string()]), 0, 1)
    );
    assert_eq!(
        names(&alice.list_members("lobby").await.unwrap()),
        BTreeSet::from(["alice".into()])
    );
    server.stop().await;
}

#[tokio::test]
async fn a_raw_session_dropped_mid_stream_leaves_its_rooms() {
    let server = TestServer::start(config()).await;
    let url = server.url();
    let (alice, mut alice_ev) = connect(&url, "alice").await;
    alice.join("lobby").await.unwrap();
    let mut raw = RawSession::open(&url, "mallory").await.unwrap();
    raw.send(
        1,
        chat_client::proto::client_frame::Request::JoinRoom(chat_client::proto::JoinRoomRequest {
            room: "lobby".into(),
            since_sequence: None,
        }),
    )
    .await;
    expect_event(&mut alice_ev, "mallory joined", |e| joined(e, "mallory")).await;
    assert!(matches!(
        raw.next().await,
        Some(chat_client::proto::server_frame::Frame::Welcome(_))
    ));
    assert!(matches!(
        raw.next().await,
        Some(chat_client::proto::server_frame::Frame::Reply(_))
    ));
    drop(raw); // the transport goes away without a goodbye
    expect_event(&mut alice_ev, "mallory left", |e| member_left(e, "mallory")).await;
    server.stop().await;
}

fn code_of<T: std::fmt::Debug>(r: Result<T, ClientError>) -> ErrorCode {
    match r {
        Err(ClientError::Server { code, .. }) => code,
        other => panic!("expected a server error, got {other:?}"),
    }
}

#[tokio::test]
async fn every_invalid_request_gets_its_error_and_changes_nothing() {
    let mut config = config();
    config.limits.max_rooms_per_connection = 2;
    config.limits.max_text_bytes = 10;
    let server = TestServer::start(config).await;
    let url = server.url();
    let (alice, mut alice_ev) = connect(&url, "alice").await;
    let (bob, mut bob_ev) = connect(&url, "bob").await;
    bob.join("lobby").await.unwrap();

    // INVALID_ARGUMENT: bad room names.
    for bad in ["", "has space", &"x".repeat(65), "ünïcode", "a/b"] {
        assert_eq!(
            code_of(alice.join(bad).await),
            ErrorCode::InvalidArgument,
            "{bad:?}"
        );
    }
    // NOT_A_MEMBER: send, leave, list members of a room not joined.
    assert_eq!(
        code_of(alice.send("lobby", "hi").await),
        ErrorCode::NotAMember
    );
    assert_eq!(code_of(alice.leave("lobby").await), ErrorCode::NotAMember);
    assert_eq!(
        code_of(alice.list_members("lobby").await),
        ErrorCode::NotAMember
    );
    assert!(
        alice.list_rooms().await.unwrap().is_empty(),
        "nothing joined by failures"
    );

    alice.join("lobby").await.unwrap();
    // ALREADY_A_MEMBER.
    assert_eq!(
        code_of(alice.join("lobby").await),
        ErrorCode::AlreadyAMember
    );
    // TOO_MANY_ROOMS (limit 2).
    alice.join("dev").await.unwrap();
    assert_eq!(code_of(alice.join("third").await), ErrorCode::TooManyRooms);
    assert_eq!(alice.list_rooms().await.unwrap(), vec!["dev", "lobby"]);
    // MESSAGE_TOO_LARGE (limit 10 bytes) and INVALID_ARGUMENT for empty text / id.
    assert_eq!(
        code_of(alice.send("lobby", "12345678901").await),
        ErrorCode::MessageTooLarge
    );
    assert_eq!(
        code_of(alice.send("lobby", "ééééé!").await),
        ErrorCode::MessageTooLarge
    );
    assert_eq!(
        code_of(alice.send("lobby", "").await),
        ErrorCode::InvalidArgument
    );
    assert_eq!(
        code_of(alice.send_with_id("lobby", "", "hi").await),
        ErrorCode::InvalidArgument
    );
    assert_eq!(
        code_of(alice.send("bad room", "hi").await),
        ErrorCode::InvalidArgument
    );

    // None of those reached bob or consumed a sequence number.
    let ack = alice.send("lobby", "0123456789").await.unwrap();
    assert_eq!(ack.sequence, 1);
    let (_, text, seq) = expect_message(&mut bob_ev, "lobby").await;
    assert_eq!((text.as_str(), seq), ("0123456789", 1));
    expect_no_event(&mut alice_ev, Duration::from_millis(100), |e| {
        matches!(e, Event::Disconnected { .. })
    })
    .await;
    server.stop().await;
}

#[tokio::test]
async fn a_frame_without_a_request_and_a_bad_name_are_invalid_arguments() {
    let server = TestServer::start(config()).await;
    let url = server.url();
    let mut raw = RawSession::open(&url, "alice").await.unwrap();
    assert!(matches!(
        raw.next().await,
        Some(chat_client::proto::server_frame::Frame::Welcome(_))
    ));
    raw.tx
        .send(chat_client::proto::ClientFrame {
            request_id: 42,
            traceparent: String::new(),
            request: None,
        })
        .await
        .unwrap();
    match raw.next().await {
        Some(chat_client::proto::server_frame::Frame::Reply(r)) => {
            assert_eq!(r.request_id, 42);
            match r.result {
                Some(chat_client::proto::reply::Result::Error(e)) => {
                    assert_eq!(e.code, ErrorCode::InvalidArgument as i32)
                }
                other => panic!("expected an error, got {other:?}"),
            }
        }
        other => panic!("expected a reply, got {other:?}"),
    }

    // A display name with a control character is refused at the door.
    let mut client =
        chat_client::proto::chat_service_client::ChatServiceClient::connect(url.clone())
            .await
            .unwrap();
    let mut request = tonic::Request::new(tokio_stream::empty());
    request.metadata_mut().insert_bin(
        "chat-name-bin",
        tonic::metadata::MetadataValue::from_bytes(b"bad\x07name"),
    );
    let status = client.session(request).await.expect_err("refused");
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    assert_eq!(
        status.metadata().get("chat-error-code").unwrap(),
        "INVALID_ARGUMENT"
    );
    // No name at all.
    let status = client
        .session(tokio_stream::empty())
        .await
        .expect_err("refused");
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    server.stop().await;
}

#[tokio::test]
async fn every_client_receives_the_periodic_notification() {
    let mut config = config();
    config.notifications.enabled = true;
    config.notifications.interval = Duration::from_millis(150);
    config.notifications.text = "tick".into();
    let server = TestServer::start(config).await;
    let url = server.url();
    let (_a, mut a_ev) = connect(&url, "alice").await;
    let (_b, mut b_ev) = connect(&url, "bob").await;
    for events in [&mut a_ev, &mut b_ev] {
        for _ in 0..2 {
            match expect_event(events, "notification", |e| {
                matches!(e, Event::Notification(_))
            })
            .await
            {
                Event::Notification(n) => {
                    assert_eq!(n.text, "tick");
                    assert!(n.server_time_unix_ms > 0);
                }
                _ => unreachable!(),
            }
        }
    }
    server.stop().await;
}

#[tokio::test]
async fn notifications_can_be_turned_off() {
    let server = TestServer::start(config()).await; // off in the test config
    let (_a, mut a_ev) = connect(&server.url(), "alice").await;
    expect_no_event(&mut a_ev, Duration::from_millis(400), |e| {
        matches!(e, Event::Notification(_))
    })
    .await;
    server.stop().await;
}

#[tokio::test]
async fn ping_answers_with_the_server_clock() {
    let server = TestServer::start(config()).await;
    let (alice, _ev) = connect(&server.url(), "alice").await;
    let pong = alice.ping().await.unwrap();
    assert!(pong.client_time_unix_ms > 0 && pong.server_time_unix_ms > 0);
    server.stop().await;
}

#[tokio::test]
async fn a_retried_send_is_delivered_once_and_gets_the_original_ack() {
    let server = TestServer::start(config()).await;
    let url = server.url();
    let (alice, _alice_ev) = connect(&url, "alice").await;
    let (bob, mut bob_ev) = connect(&url, "bob").await;
    alice.join("lobby").await.unwrap();
    bob.join("lobby").await.unwrap();
    let first = alice
        .send_with_id("lobby", "retry-me", "once")
        .await
        .unwrap();
    // The same send again, as after a timeout, and once more from a new
    // connection of the same user, as after a reconnect.
    let again = alice
        .send_with_id("lobby", "retry-me", "once")
        .await
        .unwrap();
    assert_eq!(again, first, "the retry gets the original acknowledgement");
    let (alice2, _ev2) = connect(&url, "alice").await;
    alice2.join("lobby").await.unwrap();
    assert_eq!(
        alice2
            .send_with_id("lobby", "retry-me", "once")
            .await
            .unwrap(),
        first
    );

    assert_eq!(expect_message(&mut bob_ev, "lobby").await.1, "once");
    expect_no_event(&mut bob_ev, Duration::from_millis(300), |e| {
        matches!(e, Event::Message(_))
    })
    .await;
    let next = alice.send("lobby", "next").await.unwrap();
    assert_eq!(
        next.sequence,
        first.sequence + 1,
        "retries took no sequence number"
    );
    server.stop().await;
}

#[tokio::test]
async fn history_pages_a_room_backwards_and_forwards() {
    use chat_client::proto::HistoryDirection::{Backward, Forward};
    let server = TestServer::start(config()).await;
    let (alice, _ev) = connect(&server.url(), "alice").await;
    alice.join("lobby").await.unwrap();
    for i in 1..=30 {
        alice.send("lobby", &format!("m{i}")).await.unwrap();
    }
    let seqs = |page: &chat_client::proto::HistoryResponse| {
        page.messages.iter().map(|m| m.sequence).collect::<Vec<_>>()
    };
    let latest = alice.history("lobby", Backward, 0, 10).await.unwrap();
    assert_eq!(seqs(&latest), (21..=30).collect::<Vec<_>>());
    assert_eq!(latest.latest_sequence, 30);
    assert_eq!(latest.messages[0].text, "m21");
    assert_eq!(
        latest.messages[0].sender.as_ref().unwrap().display_name,
        "alice"
    );
    let older = alice.history("lobby", Backward, 21, 10).await.unwrap();
    assert_eq!(seqs(&older), (11..=20).collect::<Vec<_>>());
    let newer = alice.history("lobby", Forward, 25, 0).await.unwrap();
    assert_eq!(seqs(&newer), (26..=30).collect::<Vec<_>>());
    let default = alice.history("lobby", Backward, 0, 0).await.unwrap();
    assert_eq!(
        default.messages.len(),
        30,
        "default page (50) holds them all"
    );
    // Anyone identified may read; nothing is joined by reading.
    let (bob, _ev) = connect(&server.url(), "bob").await;
    assert_eq!(
        bob.history("lobby", Forward, 0, 5)
            .await
            .unwrap()
            .messages
            .len(),
        5
    );
    assert!(bob.list_rooms().await.unwrap().is_empty());
    assert!(
        bob.history("empty", Backward, 0, 5)
            .await
            .unwrap()
            .messages
            .is_empty()
    );
    assert_eq!(
        code_of(bob.history("bad room", Backward, 0, 5).await),
        ErrorCode::InvalidArgument
    );
    server.stop().await;
}

#[tokio::test]
async fn history_on_the_session_stream_answers_like_the_call() {
    use chat_client::proto::HistoryDirection::Backward;
    use chat_client::proto::{HistoryRequest, client_frame::Request, reply, server_frame::Frame};
    let server = TestServer::start(config()).await;
    let (alice, _ev) = connect(&server.url(), "alice").await;
    alice.join("lobby").await.unwrap();
    for i in 1..=12 {
        alice.send("lobby", &format!("m{i}")).await.unwrap();
    }
    let call = alice.history("lobby", Backward, 0, 5).await.unwrap();
    // A session that joined nothing reads the same page on its stream.
    let mut raw = RawSession::open(&server.url(), "bob").await.unwrap();
    let mut ask = async |request_id: u64, room: &str| {
        raw.send(
            request_id,
            Request::History(HistoryRequest {
                room: room.into(),
                direction: Backward as i32,
                from_sequence: 0,
                limit: 5,
            }),
        )
        .await;
        loop {
            match raw.next().await {
                Some(Frame::Reply(r)) if r.request_id == request_id => return r.result,
                Some(_) => {}
                None => panic!("stream ended"),
            }
        }
    };
    match ask(1, "lobby").await {
        Some(reply::Result::History(page)) => assert_eq!(page, call),
        other => panic!("no history page: {other:?}"),
    }
    match ask(2, "bad room").await {
        Some(reply::Result::Error(e)) => assert_eq!(e.code, ErrorCode::InvalidArgument as i32),
        other => panic!("a bad room name was answered: {other:?}"),
    }
    // The session goes on: the refusal changed nothing.
    assert!(matches!(
        ask(3, "lobby").await,
        Some(reply::Result::History(_))
    ));
    server.stop().await;
}

/// Joins `room` on a raw session with `since`; returns the reply's result.
async fn raw_join(
    raw: &mut RawSession,
    request_id: u64,
    since: Option<u64>,
) -> chat_client::proto::JoinRoomResult {
    use chat_client::proto::{JoinRoomRequest, client_frame::Request, reply, server_frame::Frame};
    raw.send(
        request_id,
        Request::JoinRoom(JoinRoomRequest {
            room: "lobby".into(),
            since_sequence: since,
        }),
    )
    .await;
    loop {
        match raw.next().await {
            Some(Frame::Reply(r)) if r.request_id == request_id => match r.result {
                Some(reply::Result::JoinRoom(j)) => return j,
                other => panic!("join failed: {other:?}"),
            },
            Some(Frame::Message(m)) => panic!("message {} before the join reply", m.sequence),
            Some(_) => {}
            None => panic!("stream ended"),
        }
    }
}

/// Reads message sequences from a raw session until `last` arrives.
async fn raw_sequences_until(raw: &mut RawSession, last: u64) -> Vec<u64> {
    use chat_client::proto::server_frame::Frame;
    let mut seqs = Vec::new();
    while seqs.last() != Some(&last) {
        match raw.next().await {
            Some(Frame::Message(m)) => seqs.push(m.sequence),
            Some(_) => {}
            None => panic!("stream ended after {seqs:?}"),
        }
    }
    seqs
}

#[tokio::test]
async fn resuming_while_messages_flow_has_no_gap_and_no_duplicate() {
    let server = TestServer::start(config()).await;
    let url = server.url();
    let (alice, _ev) = connect(&url, "alice").await;
    alice.join("lobby").await.unwrap();
    for i in 1..=20 {
        alice.send("lobby", &format!("m{i}")).await.unwrap();
    }
    // Keep sending while the resuming join happens.
    const TOTAL: u64 = 300;
    let sender = tokio::spawn(async move {
        for i in 21..=TOTAL {
            alice.send("lobby", &format!("m{i}")).await.unwrap();
        }
    });
    let mut raw = RawSession::open(&url, "bob").await.unwrap();
    let joined = raw_join(&mut raw, 1, Some(10)).await;
    assert_eq!(joined.backlog_after_sequence, 10);
    assert!(!joined.backlog_incomplete);
    assert!(joined.latest_sequence >= 20);
    let seqs = raw_sequences_until(&mut raw, TOTAL).await;
    assert_eq!(
        seqs,
        (11..=TOTAL).collect::<Vec<_>>(),
        "backlog then live, in order, once each"
    );
    sender.await.unwrap();
    server.stop().await;
}

#[tokio::test]
async fn resuming_from_too_far_back_says_what_was_lost() {
    let server = TestServer::start(config()).await;
    let url = server.url();
    let (alice, mut alice_ev) = connect(&url, "alice").await;
    // alice reads her own echoes, or her event queue would fill.
    tokio::spawn(async move { while alice_ev.next().await.is_some() {} });
    alice.join("lobby").await.unwrap();
    for i in 1..=1100 {
        alice.send("lobby", &format!("m{i}")).await.unwrap();
    }
    let mut raw = RawSession::open(&url, "bob").await.unwrap();
    let joined = raw_join(&mut raw, 1, Some(0)).await;
    assert_eq!(joined.latest_sequence, 1100);
    assert!(joined.backlog_incomplete, "{joined:?}");
    assert_eq!(joined.backlog_after_sequence, 100, "the latest 1000 follow");
    assert_eq!(
        raw_sequences_until(&mut raw, 1100).await,
        (101..=1100).collect::<Vec<_>>()
    );
    // Resuming from the present: nothing to send, nothing lost.
    let mut raw2 = RawSession::open(&url, "carol").await.unwrap();
    let joined = raw_join(&mut raw2, 1, Some(1100)).await;
    assert_eq!(
        (joined.backlog_after_sequence, joined.backlog_incomplete),
        (1100, false)
    );
    server.stop().await;
}

#[tokio::test]
async fn a_room_of_typists_costs_each_member_about_one_event_a_second() {
    const TYPISTS: usize = 30;
    let server = TestServer::start(config()).await;
    let url = server.url();
    let (watcher, mut watcher_ev) = connect(&url, "watcher").await;
    watcher.join("crowd").await.unwrap();
    let mut crowd = Vec::new();
    for i in 0..TYPISTS {
        let (c, ev) = connect(&url, &format!("typist-{i:02}")).await;
        c.join("crowd").await.unwrap();
        crowd.push((c, ev));
    }
    // Everyone starts typing at once (one announcement each).
    let started = std::time::Instant::now();
    let saying = crowd.iter().map(|(c, _)| c.typing("crowd", true));
    for said in futures::future::join_all(saying).await {
        said.expect("typing accepted");
    }
    // Over the next 2.5 s the watcher is told the state a few times, not
    // once per typist, and the last state counts them all.
    let window = Duration::from_millis(2500);
    let mut seen = Vec::new();
    while let Some(left) = window.checked_sub(started.elapsed()) {
        match tokio::time::timeout(left, watcher_ev.next()).await {
            Ok(Some(e)) => seen.extend(typists(&e, "crowd")),
            _ => break,
        }
    }
    assert!(
        (1..=5).contains(&seen.len()),
        "{} typing events for {TYPISTS} typists in 2.5 s: {seen:?}",
        seen.len()
    );
    let (listed, count) = seen.last().unwrap();
    assert_eq!(*count as usize, TYPISTS, "{seen:?}");
    assert_eq!(listed.len(), 5, "the first five are listed: {listed:?}");
    // Each typist sees the others, never itself.
    for (i, (_, events)) in crowd.iter_mut().enumerate() {
        let me = format!("typist-{i:02}");
        let e = expect_event(events, "the others typing", |e| {
            typists(e, "crowd").is_some_and(|(_, n)| n as usize == TYPISTS - 1)
        })
        .await;
        let (listed, count) = typists(&e, "crowd").unwrap();
        assert_eq!(count as usize, TYPISTS - 1);
        assert!(!listed.contains(&me), "{me} sees itself: {listed:?}");
    }
    let m = scrape_metrics(server.addr()).await;
    let sent = m["chat_typing_events_sent_total"];
    // Uncoalesced this would be 30 × 30 = 900.
    assert!(
        sent <= (5 * (TYPISTS + 1)) as f64,
        "{sent} typing events sent"
    );
    server.stop().await;
}
