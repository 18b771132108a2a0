//! Rate limits and connection limits end to end: sends, joins and History
//! calls over a connection's or a user's token bucket are refused with RATE_LIMITED and
//! a retry time, store and deliver nothing, and succeed once the time has
//! passed; connections over a limit (per user, per address, in total) are
//! refused with RESOURCE_EXHAUSTED, and their counts come back when
//! connections end.

use crate::common::*;
use chat_client::proto::{ErrorCode, HistoryDirection};
use chat_client::{ClientError, Event};
use std::time::Duration;

fn limited<T: std::fmt::Debug>(result: Result<T, ClientError>, what: &str) -> Duration {
    match result {
        Err(ClientError::Server {
            code: ErrorCode::RateLimited,
            retry_after_ms,
            ..
        }) => {
            assert!(retry_after_ms > 0, "{what}: a retry time");
            Duration::from_millis(retry_after_ms.into())
        }
        other => panic!("{what}: expected RATE_LIMITED, got {other:?}"),
    }
}

/// Read marks are store writes: over the connection's rate they are
/// refused and nothing moves.
#[tokio::test]
async fn read_marks_over_the_connection_rate_are_refused_and_change_nothing() {
    let mut c = config();
    c.limits.read_rate = 2.0;
    c.limits.read_burst = 2;
    let server = TestServer::start(c).await;
    let (alice, _alice_ev) = connect(&server.url(), "alice").await;
    let (bob, _bob_ev) = connect(&server.url(), "bob").await;
    alice.join("lobby").await.unwrap();
    bob.join("lobby").await.unwrap();
    for text in ["one", "two", "three"] {
        bob.send("lobby", text).await.unwrap();
    }
    alice.mark_read("lobby", 1).await.expect("within the burst");
    alice.mark_read("lobby", 2).await.expect("within the burst");
    let wait = limited(alice.mark_read("lobby", 3).await, "3rd mark");
    assert!(wait <= Duration::from_millis(501), "2/s: {wait:?}");
    alice.leave("lobby").await.unwrap();
    let joined = alice.join("lobby").await.unwrap();
    assert_eq!(
        (joined.read_sequence, joined.unread_count),
        (2, 1),
        "the refused mark moved nothing"
    );
    let m = scrape_metrics(server.addr()).await;
    assert_eq!(m["chat_rate_limited_total{action=\"read\"}"], 1.0);
    server.stop().await;
}

#[tokio::test]
async fn typing_over_the_connection_rate_is_refused_and_announced_to_nobody() {
    let mut c = config();
    c.limits.typing_rate = 2.0;
    c.limits.typing_burst = 2;
    let server = TestServer::start(c).await;
    let (alice, _alice_ev) = connect(&server.url(), "alice").await;
    let (bob, mut bob_ev) = connect(&server.url(), "bob").await;
    alice.join("lobby").await.unwrap();
    bob.join("lobby").await.unwrap();
    alice.typing("lobby", true).await.expect("within the burst");
    alice
        .typing("lobby", false)
        .await
        .expect("within the burst");
    let wait = limited(alice.typing("lobby", true).await, "3rd typing");
    assert!(wait <= Duration::from_millis(501), "2/s: {wait:?}");
    // Told at once, then the stop after the room's gap.
    expect_typists(&mut bob_ev, "lobby", &["alice"], 1).await;
    expect_typists(&mut bob_ev, "lobby", &[], 0).await;
    expect_no_event(&mut bob_ev, Duration::from_millis(1500), |e| {
        matches!(e, Event::Typing(_))
    })
    .await;
    // A room the connection is not in costs no token: NOT_A_MEMBER.
    tokio::time::sleep(wait).await;
    let refused = alice.typing("elsewhere", true).await.unwrap_err();
    assert!(
        matches!(
            refused,
            ClientError::Server {
                code: ErrorCode::NotAMember,
                ..
            }
        ),
        "{refused:?}"
    );
    alice
        .typing("lobby", true)
        .await
        .expect("the token came back");
    server.stop().await;
}

#[tokio::test]
async fn sends_over_the_connection_rate_are_refused_and_store_nothing() {
    let mut c = config();
    c.limits.send_rate = 5.0;
    c.limits.send_burst = 3;
    let server = TestServer::start(c).await;
    let (alice, _alice_ev) = connect(&server.url(), "alice").await;
    let (bob, mut bob_ev) = connect(&server.url(), "bob").await;
    alice.join("lobby").await.unwrap();
    bob.join("lobby").await.unwrap();
    for i in 0..3 {
        alice
            .send("lobby", &format!("m{i}"))
            .await
            .expect("within the burst");
    }
    let wait = limited(alice.send("lobby", "one too many").await, "4th send");
    assert!(
        wait <= Duration::from_millis(201),
        "5/s: one token in 200 ms: {wait:?}"
    );
    for i in 0..3 {
        assert_eq!(
            expect_message(&mut bob_ev, "lobby").await.1,
            format!("m{i}")
        );
    }
    expect_no_event(
        &mut bob_ev,
        Duration::from_millis(100),
        |e| matches!(e, Event::Message(m) if m.text == "one too many"),
    )
    .await;
    let history = bob
        .history("lobby", HistoryDirection::Backward, 0, 10)
        .await
        .unwrap();
    assert_eq!(history.messages.len(), 3, "nothing stored");

    tokio::time::sleep(wait).await;
    let ack = alice
        .send("lobby", "after waiting")
        .await
        .expect("the retry time was right");
    assert_eq!(ack.sequence, 4, "the refused send took no number");
    // Bob is not limited by Alice's bucket.
    bob.send("lobby", "bob's own").await.unwrap();
    server.stop().await;
}

#[tokio::test]
async fn history_calls_over_the_users_rate_are_refused_with_a_retry_time() {
    let mut c = config();
    c.limits.user_history_rate = 5.0;
    c.limits.user_history_burst = 2;
    let server = TestServer::start(c).await;
    let (alice, _alice_ev) = connect(&server.url(), "alice").await;
    let (bob, _bob_ev) = connect(&server.url(), "bob").await;
    let history = |client: &chat_client::Client| {
        let client = client.clone();
        async move {
            client
                .history("lobby", HistoryDirection::Backward, 0, 10)
                .await
        }
    };
    history(&alice).await.expect("within the burst");
    history(&alice).await.expect("within the burst");
    let wait = limited(history(&alice).await, "3rd history call");
    assert!(
        wait <= Duration::from_millis(201),
        "5/s: one token in 200 ms: {wait:?}"
    );
    // History requests on the session stream draw on the same bucket.
    let mut raw = RawSession::open(&server.url(), "alice").await.unwrap();
    let request = chat_client::proto::HistoryRequest {
        room: "lobby".into(),
        direction: HistoryDirection::Backward as i32,
        from_sequence: 0,
        limit: 10,
    };
    raw.send(
        7,
        chat_client::proto::client_frame::Request::History(request),
    )
    .await;
    let refused = loop {
        match raw.next().await {
            Some(chat_client::proto::server_frame::Frame::Reply(r)) if r.request_id == 7 => {
                break r.result;
            }
            Some(_) => {}
            None => panic!("stream ended"),
        }
    };
    match refused {
        Some(chat_client::proto::reply::Result::Error(e)) => {
            assert_eq!(e.code, ErrorCode::RateLimited as i32);
            assert!(e.retry_after_ms > 0 && e.retry_after_ms <= 201, "{e:?}");
        }
        other => panic!("the stream's history request was not limited: {other:?}"),
    }
    // Bob has his own bucket.
    history(&bob).await.expect("another user");
    let metrics = scrape_metrics(server.addr()).await;
    assert_eq!(metrics["chat_rate_limited_total{action=\"history\"}"], 2.0);
    tokio::time::sleep(wait).await;
    history(&alice).await.expect("the retry time was right");
    server.stop().await;
}

#[tokio::test]
async fn a_users_connections_share_the_user_buckets_and_joins_are_limited() {
    let mut c = config();
    c.limits.user_send_rate = 1.0;
    c.limits.user_send_burst = 2;
    c.limits.join_rate = 1.0;
    c.limits.join_burst = 2;
    let server = TestServer::start(c).await;
    let (one, _one_ev) = connect(&server.url(), "carol").await;
    let (two, _two_ev) = connect(&server.url(), "carol").await;
    one.join("a").await.unwrap();
    two.join("a").await.unwrap();
    one.send("a", "1").await.unwrap();
    two.send("a", "2").await.unwrap();
    limited(one.send("a", "3").await, "the user's third send");
    limited(two.send("a", "3").await, "from the other connection too");

    one.join("b").await.expect("second join, within the burst");
    limited(one.join("c").await, "third join");
    assert_eq!(
        one.rooms(),
        vec!["a".to_string(), "b".to_string()],
        "not joined"
    );
    two.join("c")
        .await
        .expect("join buckets are per connection");
    server.stop().await;
}

/// A Session stream opened on `channel` (so many share one TCP
/// connection) as `name`, never read.
async fn open_on(
    channel: &tonic::transport::Channel,
    name: &str,
) -> Result<
    (
        tokio::sync::mpsc::Sender<chat_client::proto::ClientFrame>,
        tonic::Streaming<chat_client::proto::ServerFrame>,
    ),
    tonic::Status,
> {
    let mut grpc = chat_client::proto::chat_service_client::ChatServiceClient::new(channel.clone());
    let (tx, rx) = tokio::sync::mpsc::channel(1);
    let mut request = tonic::Request::new(tokio_stream::wrappers::ReceiverStream::new(rx));
    request
        .metadata_mut()
        .insert("chat-name", name.parse().unwrap());
    let stream = tokio::time::timeout(WAIT, grpc.session(request))
        .await
        .expect("an answer")?
        .into_inner();
    Ok((tx, stream))
}

/// Session streams over a limit (per user, per address, in total) are
/// refused with RESOURCE_EXHAUSTED, and admitted again once one ends. The
/// streams share one TCP connection, so the TCP-level count (one) stays
/// under every limit.
#[tokio::test]
async fn sessions_over_a_limit_are_refused_until_one_ends() {
    let mut c = config();
    c.limits.max_connections_per_user = 1;
    c.limits.max_connections_per_address = 2;
    c.limits.max_connections = 3;
    let server = TestServer::start(c).await;
    let channel = tonic::transport::Endpoint::from_shared(server.url())
        .unwrap()
        .connect()
        .await
        .unwrap();
    let refused = |r: Result<_, tonic::Status>, says: &str| {
        let Err(status) = r else {
            panic!("expected a refusal");
        };
        assert_eq!(status.code(), tonic::Code::ResourceExhausted, "{status:?}");
        assert_eq!(
            status.metadata().get("chat-error-code").unwrap(),
            "RATE_LIMITED"
        );
        assert!(
            status.message().contains(says),
            "{:?} should say {says:?}",
            status.message()
        );
    };

    let first = open_on(&channel, "dave").await.expect("first");
    refused(open_on(&channel, "dave").await, "this user");
    let second = open_on(&channel, "erin")
        .await
        .expect("second address slot");
    refused(open_on(&channel, "frank").await, "your address");
    drop(first);
    // The count comes back when the server sees the stream end.
    let deadline = tokio::time::Instant::now() + WAIT;
    let again = loop {
        match open_on(&channel, "dave").await {
            Ok(s) => break s,
            Err(_) if tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(20)).await
            }
            Err(e) => panic!("dave's count never came back: {e:?}"),
        }
    };
    drop((again, second));
    server.stop().await;
}

/// A client that opens Session streams on one connection and never reads
/// them: the per-user limit refuses the extra streams, the open ones hold
/// nothing else up, and everything is given back when it goes away.
#[tokio::test]
async fn a_client_that_opens_streams_without_reading_them_is_contained() {
    use chat_client::proto::chat_service_client::ChatServiceClient;
    let mut c = config();
    c.limits.max_connections_per_user = 4;
    c.limits.max_streams_per_connection = 8;
    let server = TestServer::start(c).await;
    let url = server.url();
    let channel = tonic::transport::Endpoint::from_shared(url.clone())
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut held = Vec::new();
    let mut refused = 0;
    for _ in 0..6 {
        let mut grpc = ChatServiceClient::new(channel.clone());
        let (tx, rx) = tokio::sync::mpsc::channel(1);
        let mut request = tonic::Request::new(tokio_stream::wrappers::ReceiverStream::new(rx));
        request
            .metadata_mut()
            .insert("chat-name", "hog".parse().unwrap());
        match tokio::time::timeout(WAIT, grpc.session(request))
            .await
            .expect("an answer")
        {
            // Opened, and never read from.
            Ok(stream) => held.push((tx, stream)),
            Err(status) => {
                assert_eq!(status.code(), tonic::Code::ResourceExhausted, "{status:?}");
                refused += 1;
            }
        }
    }
    assert_eq!(
        (held.len(), refused),
        (4, 2),
        "four admitted, the rest refused"
    );

    // Everyone else is served as usual.
    let (alice, _a) = connect(&url, "alice").await;
    let (bob, mut bob_ev) = connect(&url, "bob").await;
    alice.join("lobby").await.unwrap();
    bob.join("lobby").await.unwrap();
    alice.send("lobby", "unaffected").await.unwrap();
    assert_eq!(expect_message(&mut bob_ev, "lobby").await.1, "unaffected");

    drop(held);
    drop(channel);
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        if let Ok(s) = RawSession::open(&url, "hog").await {
            drop(s);
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "hog's slots never came back"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    server.stop().await;
}

/// TCP connections that never open a stream count against the limits too:
/// over the per-address limit, a new connection is closed at once.
#[tokio::test]
async fn idle_tcp_connections_count_against_the_address_limit() {
    use tokio::io::AsyncReadExt;
    let mut c = config();
    c.limits.max_connections_per_address = 3;
    let server = TestServer::start(c).await;
    let mut idle = Vec::new();
    for _ in 0..3 {
        idle.push(tokio::net::TcpStream::connect(server.addr()).await.unwrap());
    }
    let mut fourth = tokio::net::TcpStream::connect(server.addr()).await.unwrap();
    let mut byte = [0u8; 1];
    let read = tokio::time::timeout(WAIT, fourth.read(&mut byte))
        .await
        .expect("the server closes it within the wait");
    assert!(matches!(read, Ok(0) | Err(_)), "closed, got {read:?}");

    drop(idle);
    let (client, _events) = connect(&server.url(), "after").await;
    client
        .join("lobby")
        .await
        .expect("served once the idle ones left");
    server.stop().await;
}

/// Issue 15, report 2 (the server's half): a send refused because the
/// connection is not in the room costs no send token, so a client retrying
/// while its room is being rejoined does not drain its bucket.
#[tokio::test]
async fn sends_refused_for_membership_cost_no_token() {
    let mut c = config();
    c.limits.send_rate = 0.1;
    c.limits.send_burst = 3;
    let server = TestServer::start(c).await;
    let (alice, _events) = connect(&server.url(), "alice").await;
    for _ in 0..10 {
        match alice.send("lobby", "too early").await {
            Err(ClientError::Server {
                code: ErrorCode::NotAMember,
                ..
            }) => {}
            other => panic!("not a member yet: {other:?}"),
        }
    }
    alice.join("lobby").await.unwrap();
    for i in 0..3 {
        alice
            .send("lobby", &format!("m{i}"))
            .await
            .expect("the whole burst is left");
    }
    server.stop().await;
}
