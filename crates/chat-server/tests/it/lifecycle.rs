//! Health, graceful shutdown, reconnect after restart, slow consumers,
//! malformed frames and idle sessions.

use crate::common::*;
use bytes::BufMut;
use chat_client::Event;
use chat_client::proto::{
    DisconnectReason, JoinRoomRequest, ServerFrame, client_frame::Request, server_frame::Frame,
};
use std::time::Duration;
use tonic::codec::{Codec, EncodeBuf, Encoder};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

async fn health_client(url: &str) -> HealthClient<tonic::transport::Channel> {
    let channel = tonic::transport::Endpoint::from_shared(url.to_string())
        .unwrap()
        .connect()
        .await
        .unwrap();
    HealthClient::new(channel)
}

fn disconnect_reason(frame: &Frame) -> Option<DisconnectReason> {
    match frame {
        Frame::Disconnect(n) => DisconnectReason::try_from(n.reason).ok(),
        _ => None,
    }
}

#[tokio::test]
async fn health_endpoints_share_the_port_with_grpc() {
    let server = TestServer::start(config()).await;
    let live = http(server.addr(), HttpRequest::get("/health/live")).await;
    assert_eq!(live.status, 200);
    assert!(live.body.contains("live"), "{}", live.body);
    let HttpResponse { status, body, .. } =
        http(server.addr(), HttpRequest::get("/health/ready")).await;
    assert_eq!(status, 200, "{body}");
    let report: serde_json::Value =
        serde_json::from_str(body.trim()).unwrap_or_else(|e| panic!("{e}: {body}"));
    assert_eq!(report["status"], "ready");
    for check in ["accepting", "store", "backplane"] {
        assert_eq!(report["checks"][check], "up", "{report}");
    }
    let missing = http(server.addr(), HttpRequest::get("/no/such/thing")).await;
    assert_eq!(missing.status, 404);

    let mut health = health_client(&server.url()).await;
    for service in ["", "chat.v1.ChatService"] {
        let r = health
            .check(HealthCheckRequest {
                service: service.into(),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(
            r.status,
            ServingStatus::Serving as i32,
            "service {service:?}"
        );
    }
    server.stop().await;
}

#[tokio::test]
async fn graceful_shutdown_notifies_everyone_and_ends_within_the_drain_timeout() {
    let mut config = config();
    config.shutdown.drain_timeout = Duration::from_secs(2);
    let server = TestServer::start(config).await;
    let url = server.url();

    let mut no_reconnect = client_config(&url, "alice");
    no_reconnect.reconnect = false;
    let (alice, mut alice_ev) = connect_with(no_reconnect).await;
    alice.join("lobby").await.unwrap();
    // A client that never hangs up: it keeps its request stream open.
    let mut stubborn = RawSession::open(&url, "stubborn").await.unwrap();
    stubborn
        .send(
            1,
            Request::JoinRoom(JoinRoomRequest {
                room: "lobby".into(),
                since_sequence: None,
            }),
        )
        .await;
    // Someone watching health sees NOT_SERVING as soon as the drain starts.
    let mut health = health_client(&url).await;
    let mut watch = health
        .watch(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    let first = watch.message().await.unwrap().unwrap();
    assert_eq!(first.status, ServingStatus::Serving as i32);

    let took = server.stop().await;
    assert!(
        took < Duration::from_secs(2) + Duration::from_millis(1500),
        "drain took {took:?}"
    );

    let next = tokio::time::timeout(WAIT, watch.message())
        .await
        .expect("health update");
    assert_eq!(
        next.unwrap().unwrap().status,
        ServingStatus::NotServing as i32
    );

    let frames = stubborn.drain().await;
    let last = frames.last().expect("frames");
    assert_eq!(
        disconnect_reason(last),
        Some(DisconnectReason::ShuttingDown),
        "{frames:?}"
    );
    // Its join was answered before the notice: in-flight requests finish.
    assert!(
        frames
            .iter()
            .any(|f| matches!(f, Frame::Reply(r) if r.request_id == 1))
    );

    match expect_event(&mut alice_ev, "disconnect", |e| {
        matches!(e, Event::Disconnected { .. })
    })
    .await
    {
        Event::Disconnected {
            notice: Some(n), ..
        } => {
            assert_eq!(n.reason, DisconnectReason::ShuttingDown as i32)
        }
        other => panic!("expected a notice, got {other:?}"),
    }
}

#[tokio::test]
async fn clients_reconnect_and_rejoin_after_a_restart() {
    let server = TestServer::start(config()).await;
    let addr = server.addr();
    let url = server.url();
    let (alice, mut alice_ev) = connect(&url, "alice").await;
    let (bob, mut bob_ev) = connect(&url, "bob").await;
    alice.join("lobby").await.unwrap();
    alice.join("dev").await.unwrap();
    bob.join("lobby").await.unwrap();

    server.stop().await;
    for events in [&mut alice_ev, &mut bob_ev] {
        match expect_event(events, "disconnect", |e| {
            matches!(e, Event::Disconnected { .. })
        })
        .await
        {
            Event::Disconnected { notice, .. } => {
                assert_eq!(
                    notice.unwrap().reason,
                    DisconnectReason::ShuttingDown as i32
                )
            }
            _ => unreachable!(),
        }
        expect_event(events, "reconnecting", |e| {
            matches!(e, Event::Reconnecting { .. })
        })
        .await;
    }
    // Failed attempts keep being reported while the server is away.
    expect_event(
        &mut alice_ev,
        "another attempt",
        |e| matches!(e, Event::Reconnecting { attempt, .. } if *attempt >= 2),
    )
    .await;

    let mut again = config();
    again.listen = addr;
    let server = TestServer::start(again).await;
    expect_event(&mut alice_ev, "reconnected", |e| {
        matches!(e, Event::Connected(_))
    })
    .await;
    let mut rejoined = Vec::new();
    while rejoined.len() < 2 {
        if let Event::Rejoined { room, result } = expect_event(&mut alice_ev, "rejoined", |e| {
            matches!(e, Event::Rejoined { .. })
        })
        .await
        {
            result.expect("rejoin succeeds");
            rejoined.push(room);
        }
    }
    rejoined.sort();
    assert_eq!(rejoined, vec!["dev", "lobby"]);
    expect_event(&mut bob_ev, "bob rejoined", |e| {
        matches!(e, Event::Rejoined { .. })
    })
    .await;

    bob.send("lobby", "back again").await.unwrap();
    assert_eq!(expect_message(&mut alice_ev, "lobby").await.1, "back again");
    server.stop().await;
}

#[tokio::test]
async fn a_shutdown_spreads_its_clients_reconnects_and_the_client_waits_its_share() {
    let mut config = config();
    config.session.reconnect_spread = Duration::from_secs(3);
    let server = TestServer::start(config).await;
    let url = server.url();
    let (_alice, mut alice_ev) = connect(&url, "alice").await;
    let mut raw = Vec::new();
    for i in 0..30 {
        let mut s = RawSession::open(&url, &format!("user-{i}")).await.unwrap();
        assert!(matches!(s.next().await, Some(Frame::Welcome(_))));
        raw.push(s);
    }
    server.stop().await;

    let mut waits = Vec::new();
    for s in &mut raw {
        let frames = s.drain().await;
        match frames.last() {
            Some(Frame::Disconnect(n)) => {
                assert_eq!(n.reason, DisconnectReason::ShuttingDown as i32);
                waits.push(n.reconnect_after_ms);
            }
            other => panic!("expected the shutdown notice last, got {other:?}"),
        }
    }
    // Each within the window, and spread over it: not one instant.
    assert!(waits.iter().all(|&w| w <= 3000), "{waits:?}");
    let (min, max) = (waits.iter().min().unwrap(), waits.iter().max().unwrap());
    assert!(max - min >= 1500, "{waits:?}");
    let mut distinct = waits.clone();
    distinct.sort();
    distinct.dedup();
    assert!(distinct.len() >= 25, "{waits:?}");

    // The client library waits at least what its notice asked.
    let asked = match expect_event(&mut alice_ev, "disconnect", |e| {
        matches!(e, Event::Disconnected { .. })
    })
    .await
    {
        Event::Disconnected {
            notice: Some(n), ..
        } => n.reconnect_after_ms,
        other => panic!("expected a notice, got {other:?}"),
    };
    // The first connection's share is fixed (the spread is a function of
    // the connection's number): large enough to tell from a backoff.
    assert!(asked >= 300, "alice was asked to wait {asked} ms");
    match expect_event(&mut alice_ev, "reconnecting", |e| {
        matches!(e, Event::Reconnecting { .. })
    })
    .await
    {
        Event::Reconnecting {
            attempt: 1, delay, ..
        } => assert!(
            delay >= Duration::from_millis(asked.into()),
            "waits {delay:?}, asked {asked} ms"
        ),
        other => panic!("expected the first attempt, got {other:?}"),
    }
}

#[tokio::test]
async fn closed_returns_once_the_client_has_stopped_and_its_points_are_final() {
    let server = TestServer::start(config()).await;
    let (alice, mut alice_ev) = connect(&server.url(), "alice").await;
    let (bob, _bob_ev) = connect(&server.url(), "bob").await;
    alice.join("lobby").await.unwrap();
    bob.join("lobby").await.unwrap();
    for i in 0..20 {
        bob.send("lobby", &format!("m{i}")).await.unwrap();
    }
    alice.close();
    tokio::time::timeout(WAIT, alice.closed())
        .await
        .expect("closed returns");
    assert!(matches!(
        alice.state(),
        chat_client::ConnectionState::Closed
    ));
    // Its points cover exactly the messages its events carried.
    let point = alice.last_seen("lobby").unwrap_or(0);
    let mut last = 0;
    while let Some(event) = tokio::time::timeout(WAIT, alice_ev.next())
        .await
        .expect("the events end")
    {
        if let Event::Message(m) = event {
            last = m.sequence;
        }
    }
    assert_eq!(point, last, "the resume point is the last message received");
    server.stop().await;
}

#[tokio::test]
async fn a_client_that_does_not_read_is_disconnected_as_a_slow_consumer() {
    let mut config = config();
    config.limits.outbound_queue = 32;
    let server = TestServer::start(config).await;
    let url = server.url();

    let mut slow = RawSession::open(&url, "slow").await.unwrap();
    slow.send(
        1,
        Request::JoinRoom(JoinRoomRequest {
            room: "lobby".into(),
            since_sequence: None,
        }),
    )
    .await;
    assert!(matches!(slow.next().await, Some(Frame::Welcome(_))));
    assert!(matches!(slow.next().await, Some(Frame::Reply(_))));
    // From here on `slow` reads nothing.

    let (flooder, mut flooder_ev) = connect(&url, "flooder").await;
    flooder.join("lobby").await.unwrap();
    let (watcher, mut watcher_ev) = connect(&url, "watcher").await;
    watcher.join("lobby").await.unwrap();
    // The flooder and the watcher read everything, so only `slow` lags.
    let slow_left = tokio::spawn(async move {
        expect_event(&mut watcher_ev, "slow left", |e| member_left(e, "slow")).await;
        let mut messages = 0;
        while let Ok(Some(e)) =
            tokio::time::timeout(Duration::from_millis(500), watcher_ev.next()).await
        {
            messages += usize::from(matches!(e, Event::Message(_)));
        }
        messages
    });
    tokio::spawn(async move { while flooder_ev.next().await.is_some() {} });

    const SENT: usize = 3000;
    let text = "x".repeat(4000);
    for _ in 0..SENT {
        flooder
            .send("lobby", &text)
            .await
            .expect("the flooder is never slowed down");
    }
    tokio::time::timeout(WAIT, slow_left)
        .await
        .expect("slow is dropped")
        .unwrap();

    let frames = slow.drain().await;
    let last = frames.last().expect("frames");
    assert_eq!(
        disconnect_reason(last),
        Some(DisconnectReason::SlowConsumer)
    );
    let received = frames
        .iter()
        .filter(|f| matches!(f, Frame::Message(_)))
        .count();
    assert!(
        received < SENT,
        "slow got {received} of {SENT}: it was cut off, not buffered"
    );
    assert_eq!(
        server.server.hub().session_count(),
        2,
        "slow's session is gone"
    );
    let members = flooder.list_members("lobby").await.unwrap();
    assert_eq!(members.len(), 2);
    server.stop().await;
}

/// Sends raw bytes as gRPC messages, to forge malformed frames.
#[derive(Clone, Default)]
struct RawCodec;

struct RawEncoder;

impl Encoder for RawEncoder {
    type Item = Vec<u8>;
    type Error = tonic::Status;
    fn encode(&mut self, item: Vec<u8>, buf: &mut EncodeBuf<'_>) -> Result<(), tonic::Status> {
        buf.put_slice(&item);
        Ok(())
    }
}

impl Codec for RawCodec {
    type Encode = Vec<u8>;
    type Decode = ServerFrame;
    type Encoder = RawEncoder;
    type Decoder = tonic_prost::ProstDecoder<ServerFrame>;
    fn encoder(&mut self) -> RawEncoder {
        RawEncoder
    }
    fn decoder(&mut self) -> Self::Decoder {
        tonic_prost::ProstCodec::<ServerFrame, ServerFrame>::raw_decoder(Default::default())
    }
}

/// Opens a session, sends `bytes` as one frame, returns every frame received.
async fn send_raw_frame(url: &str, bytes: Vec<u8>) -> (Vec<Frame>, Option<tonic::Status>) {
    let channel = tonic::transport::Endpoint::from_shared(url.to_string())
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await.unwrap();
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    tx.send(bytes).await.unwrap();
    let mut request = tonic::Request::new(tokio_stream::wrappers::ReceiverStream::new(rx));
    request
        .metadata_mut()
        .insert("chat-name", "mallory".parse().unwrap());
    let path = http::uri::PathAndQuery::from_static("/chat.v1.ChatService/Session");
    let mut stream = grpc
        .streaming(request, path, RawCodec)
        .await
        .unwrap()
        .into_inner();
    let mut frames = Vec::new();
    let mut error = None;
    tokio::time::timeout(WAIT, async {
        loop {
            match stream.message().await {
                Ok(Some(f)) => frames.extend(f.frame),
                Ok(None) => break,
                Err(status) => {
                    error = Some(status);
                    break;
                }
            }
        }
    })
    .await
    .expect("the server ends the session within the wait");
    drop(tx);
    (frames, error)
}

#[tokio::test]
async fn malformed_and_oversized_frames_end_only_that_session() {
    let server = TestServer::start(config()).await;
    let url = server.url();
    let (alice, mut alice_ev) = connect(&url, "alice").await;
    alice.join("lobby").await.unwrap();
    let (bob, mut bob_ev) = connect(&url, "bob").await;
    bob.join("lobby").await.unwrap();

    // Field 10 (join_room), length 3, containing field 1 (room) with invalid UTF-8.
    let invalid_utf8 = vec![0x52, 0x04, 0x0a, 0x02, 0xc3, 0x28];
    let garbage = vec![0xff; 32];
    let oversized = {
        // A well-formed ClientFrame far above the 64 KiB frame limit.
        let mut v = vec![0x52, 0x80, 0x80, 0x05, 0x0a, 0xfc, 0xff, 0x04];
        v.resize(8 + 0x13ffc, b'a');
        v
    };
    for (what, bytes) in [
        ("invalid utf-8", invalid_utf8),
        ("garbage", garbage),
        ("oversized", oversized),
    ] {
        let (frames, error) = send_raw_frame(&url, bytes).await;
        let noticed = frames.last().and_then(disconnect_reason);
        assert_eq!(
            noticed,
            Some(DisconnectReason::ProtocolViolation),
            "{what}: frames {frames:?}, error {error:?}"
        );
        assert!(
            !frames.iter().any(|f| matches!(f, Frame::Reply(_))),
            "{what}: nothing was executed"
        );
    }
    // Nobody else noticed: the room still works, mallory never got in.
    alice.send("lobby", "still here").await.unwrap();
    assert_eq!(expect_message(&mut bob_ev, "lobby").await.1, "still here");
    assert_eq!(alice.list_members("lobby").await.unwrap().len(), 2);
    expect_no_event(&mut alice_ev, Duration::from_millis(200), |e| {
        matches!(e, Event::Disconnected { .. }) || member_joined(e, "mallory")
    })
    .await;
    server.stop().await;
}

#[tokio::test]
async fn a_silent_session_is_closed_after_the_idle_timeout() {
    let mut config = config();
    config.session.idle_timeout = Duration::from_millis(300);
    let server = TestServer::start(config).await;
    let url = server.url();
    let mut silent = RawSession::open(&url, "silent").await.unwrap();
    let frames = silent.drain().await;
    assert!(matches!(frames.first(), Some(Frame::Welcome(w)) if w.idle_timeout_ms == 300));
    assert_eq!(
        frames.last().and_then(disconnect_reason),
        Some(DisconnectReason::IdleTimeout)
    );

    // The library pings often enough to stay connected.
    let (alice, mut alice_ev) = connect(&url, "alice").await;
    expect_no_event(&mut alice_ev, Duration::from_millis(900), |e| {
        matches!(e, Event::Disconnected { .. })
    })
    .await;
    alice.ping().await.unwrap();
    server.stop().await;
}

#[tokio::test]
async fn a_session_at_its_longest_lifetime_ends_and_the_client_resumes() {
    let mut config = config();
    config.session.max_lifetime = Duration::from_millis(500);
    let server = TestServer::start(config).await;
    let url = server.url();
    let mut client = client_config(&url, "alice");
    client.rooms = vec!["lobby".into()];
    let opened = std::time::Instant::now();
    let (alice, mut alice_ev) = connect_with(client).await;
    expect_event(&mut alice_ev, "joined", |e| {
        matches!(e, Event::Rejoined { .. })
    })
    .await;

    // At 500 ms ± 10 % the server ends the session, saying why.
    match expect_event(&mut alice_ev, "the lifetime's end", |e| {
        matches!(e, Event::Disconnected { .. })
    })
    .await
    {
        Event::Disconnected { notice, .. } => assert_eq!(
            notice.map(|n| n.reason),
            Some(DisconnectReason::MaxLifetime as i32)
        ),
        _ => unreachable!(),
    }
    let lived = opened.elapsed();
    assert!(
        lived >= Duration::from_millis(450) && lived < Duration::from_millis(1500),
        "{lived:?}"
    );
    // The client reconnects, rejoins and misses nothing sent meanwhile
    // (bob's session is new: it has its whole lifetime ahead).
    let (bob, _bob_ev) = connect(&url, "bob").await;
    bob.join("lobby").await.unwrap();
    bob.send("lobby", "during").await.unwrap();
    assert_eq!(expect_message(&mut alice_ev, "lobby").await.1, "during");
    let metrics = scrape_metrics(server.addr()).await;
    assert!(metrics["chat_connections_closed_total{reason=\"max_lifetime\"}"] >= 1.0);
    drop(alice);
    server.stop().await;
}

#[tokio::test]
async fn the_default_sqlite_store_keeps_sequences_across_a_restart() {
    let dir = std::env::temp_dir().join(format!("chat-restart-{}", std::process::id()));
    let mut config = config();
    config.store.url = format!("sqlite://{}/data/chat.db", dir.display());
    let server = TestServer::start(config.clone()).await;
    let (alice, _ev) = connect(&server.url(), "alice").await;
    alice.join("lobby").await.unwrap();
    for text in ["one", "two", "three"] {
        alice.send("lobby", text).await.unwrap();
    }
    let first_id = alice
        .send_with_id("lobby", "kept-id", "four")
        .await
        .unwrap();
    server.stop().await;

    let server = TestServer::start(config).await;
    let (bob, _ev) = connect(&server.url(), "bob").await;
    assert_eq!(bob.join("lobby").await.unwrap().latest_sequence, 4);
    assert_eq!(bob.send("lobby", "five").await.unwrap().sequence, 5);
    // alice's retry after the restart is still recognised.
    let (alice, _ev) = connect(&server.url(), "alice").await;
    alice.join("lobby").await.unwrap();
    assert_eq!(
        alice
            .send_with_id("lobby", "kept-id", "four")
            .await
            .unwrap(),
        first_id
    );
    server.stop().await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn a_send_made_while_disconnected_is_retried_and_delivered_once() {
    let server = TestServer::start(config()).await;
    let addr = server.addr();
    let url = server.url();
    let (alice, _alice_ev) = connect(&url, "alice").await;
    let (bob, mut bob_ev) = connect(&url, "bob").await;
    alice.join("lobby").await.unwrap();
    bob.join("lobby").await.unwrap();
    server.stop().await;

    // The send waits for the reconnection, then goes out with its id.
    let sending = tokio::spawn({
        let alice = alice.clone();
        async move {
            alice
                .send_with_id("lobby", "while-away", "sent while away")
                .await
        }
    });
    let mut again = config();
    again.listen = addr;
    let server = TestServer::start(again).await;
    let ack = tokio::time::timeout(WAIT, sending)
        .await
        .expect("retried")
        .unwrap()
        .expect("acknowledged");
    assert_eq!(ack.client_message_id, "while-away");
    let (_, text, seq) = expect_message(&mut bob_ev, "lobby").await;
    assert_eq!((text.as_str(), seq), ("sent while away", ack.sequence));
    expect_no_event(&mut bob_ev, Duration::from_millis(300), |e| {
        matches!(e, Event::Message(_))
    })
    .await;
    server.stop().await;
}

/// Issue 15, report 7: a resume's backlog does not count against the
/// client's outbound queue, so resuming rooms whose backlogs together
/// exceed `limits.outbound_queue` never kicks a client that reads, even one
/// that reads only after a pause; the next resume waits for the last one's
/// backlog to be read.
#[tokio::test]
async fn resuming_backlogs_larger_than_the_queue_does_not_kick_a_reader() {
    let mut config = config();
    config.limits.outbound_queue = 64;
    let server = TestServer::start(config).await;
    let url = server.url();
    const EACH: usize = 300;
    let (writer, _events) = connect(&url, "writer").await;
    for room in ["a", "b"] {
        writer.join(room).await.unwrap();
        for i in 0..EACH {
            writer.send(room, &format!("{room}{i}")).await.unwrap();
        }
    }

    let mut resumer = RawSession::open(&url, "resumer").await.unwrap();
    for (id, room) in [(1, "a"), (2, "b")] {
        let join = JoinRoomRequest {
            room: room.into(),
            since_sequence: Some(0),
        };
        resumer.send(id, Request::JoinRoom(join)).await;
    }
    // Busy for a moment before reading anything.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (mut replies, mut messages) = (0, Vec::new());
    while replies < 2 || messages.len() < 2 * EACH {
        match resumer.next().await {
            Some(Frame::Reply(_)) => replies += 1,
            Some(Frame::Message(m)) => messages.push((m.room, m.sequence)),
            Some(Frame::Welcome(_) | Frame::MembersChanged(_)) => {}
            other => panic!(
                "after {replies} replies and {} messages: {other:?}",
                messages.len()
            ),
        }
    }
    for room in ["a", "b"] {
        let sequences: Vec<u64> = messages
            .iter()
            .filter(|m| m.0 == room)
            .map(|m| m.1)
            .collect();
        assert_eq!(
            sequences,
            (1..=EACH as u64).collect::<Vec<_>>(),
            "{room}: all, once, in order"
        );
    }
    server.stop().await;
}

/// Issue 15, report 14: a connection that sends nothing, or less than an
/// HTTP/2 preface, is closed once `tls.handshake_timeout` has passed, so
/// idle sockets cannot hold the connection limits' places forever.
#[tokio::test]
async fn a_connection_that_sends_no_request_is_closed_after_the_handshake_timeout() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut config = config();
    config.tls.handshake_timeout = Duration::from_millis(500);
    let server = TestServer::start(config).await;
    for first in [&b""[..], b"PRI * HT"] {
        let mut raw = tokio::net::TcpStream::connect(server.addr()).await.unwrap();
        raw.write_all(first).await.unwrap();
        let mut buf = [0u8; 64];
        let read = tokio::time::timeout(Duration::from_secs(5), raw.read(&mut buf))
            .await
            .expect("closed by the server within the wait");
        assert!(matches!(read, Ok(0) | Err(_)), "{first:?}: {read:?}");
    }
    server.stop().await;
}

/// Issue 15, report 13: a store whose numbering went back (the memory store
/// restarted; a database restored from a backup) must not hide its new
/// messages from a client resuming from a sequence above its latest. The
/// rejoin is a reset: the reply says so, the client's resume point starts
/// over, and what the store holds now arrives, then live messages.
#[tokio::test]
async fn a_store_whose_numbering_went_back_is_a_reset_not_a_filter() {
    let server = TestServer::start(config()).await;
    let addr = server.addr();
    let url = server.url();
    let (alice, mut alice_ev) = connect(&url, "alice").await;
    let (bob, mut bob_ev) = connect(&url, "bob").await;
    alice.join("lobby").await.unwrap();
    bob.join("lobby").await.unwrap();
    for n in 1..=5 {
        bob.send("lobby", &format!("old {n}")).await.unwrap();
        assert_eq!(expect_message(&mut alice_ev, "lobby").await.2, n);
    }
    assert_eq!(alice.last_seen("lobby"), Some(5));

    // The memory store starts over from 1.
    server.stop().await;
    let mut again = config();
    again.listen = addr;
    let server = TestServer::start(again).await;
    expect_event(&mut bob_ev, "bob rejoined", |e| {
        matches!(e, Event::Rejoined { .. })
    })
    .await;
    match expect_event(&mut alice_ev, "alice rejoined", |e| {
        matches!(e, Event::Rejoined { .. })
    })
    .await
    {
        Event::Rejoined { result: Ok(r), .. } => {
            assert!(
                r.sequence_reset,
                "the reply says the numbering went back: {r:?}"
            );
            assert_eq!(r.latest_sequence, 0);
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(
        alice.last_seen("lobby"),
        Some(0),
        "the resume point starts over"
    );
    for n in 1..=3u64 {
        bob.send("lobby", &format!("new {n}")).await.unwrap();
        assert_eq!(
            expect_message(&mut alice_ev, "lobby").await,
            ("bob".into(), format!("new {n}"), n)
        );
    }
    assert_eq!(alice.last_seen("lobby"), Some(3));
    server.stop().await;
}
