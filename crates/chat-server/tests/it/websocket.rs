//! The WebSocket transport (`/v1/ws`, docs/PROTOCOL.md) end to end, with an
//! independent client (tokio-tungstenite): the same session as gRPC, next
//! to gRPC clients; history and resume on the stream; the Origin check;
//! credentials in the subprotocol list; bad input closing with its code and
//! changing nothing; connection limits; shutdown.

use crate::common::*;
use chat_client::proto::{
    ClientFrame, DisconnectReason, ErrorCode, HistoryDirection, HistoryRequest, JoinRoomRequest,
    PingRequest, SendMessageRequest, ServerFrame, client_frame::Request, reply,
    server_frame::Frame,
};
use chat_server::auth::{self, TokenRequest};
use chat_server::config::{AuthConfig, AuthMode, JwtAlgorithm};
use chat_server::metrics::AuthFailure;
use futures::{SinkExt, StreamExt};
use prost::Message as _;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

type Socket = WebSocketStream<MaybeTlsStream<tokio::net::TcpStream>>;

/// A WebSocket session: the socket and the request ids it used.
struct Ws {
    socket: Socket,
    next_id: u64,
}

/// The `name.<base64url>` subprotocol.
fn name_protocol(name: &str) -> String {
    use base64::Engine;
    format!(
        "name.{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(name.as_bytes())
    )
}

/// Opens `/v1/ws` on `server` offering `protocols` (after `chat.v1`) and,
/// if given, an `Origin`.
async fn open(
    server: &TestServer,
    protocols: &[String],
    origin: Option<&str>,
) -> Result<Ws, WsError> {
    open_with(server, protocols, origin, None).await
}

/// [`open`], with the client socket's receive buffer set to
/// `receive_buffer` bytes if given (a client whose window fills fast).
async fn open_with(
    server: &TestServer,
    protocols: &[String],
    origin: Option<&str>,
    receive_buffer: Option<u32>,
) -> Result<Ws, WsError> {
    let mut request = format!("ws://{}/v1/ws", server.addr())
        .into_client_request()
        .unwrap();
    let mut offered = vec!["chat.v1".to_string()];
    offered.extend(protocols.iter().cloned());
    request.headers_mut().insert(
        "sec-websocket-protocol",
        HeaderValue::from_str(&offered.join(", ")).unwrap(),
    );
    if let Some(origin) = origin {
        request
            .headers_mut()
            .insert("origin", HeaderValue::from_str(origin).unwrap());
    }
    let tcp = tokio::net::TcpSocket::new_v4().unwrap();
    if let Some(bytes) = receive_buffer {
        tcp.set_recv_buffer_size(bytes).unwrap();
    }
    let tcp = tcp.connect(server.addr()).await.expect("connects");
    let handshake = tokio_tungstenite::client_async(request, MaybeTlsStream::Plain(tcp));
    let (socket, response) = tokio::time::timeout(WAIT, handshake)
        .await
        .expect("handshake in time")?;
    assert_eq!(
        response.headers().get("sec-websocket-protocol").unwrap(),
        "chat.v1",
        "the server selects chat.v1 and never echoes credentials"
    );
    Ok(Ws { socket, next_id: 1 })
}

/// Opens a session with auth off as `name`.
async fn open_as(server: &TestServer, name: &str) -> Ws {
    open_windowed(server, name, None).await
}

/// [`open_as`] with the receive buffer of [`open_with`].
async fn open_windowed(server: &TestServer, name: &str, receive_buffer: Option<u32>) -> Ws {
    let mut ws = open_with(server, &[name_protocol(name)], None, receive_buffer)
        .await
        .expect("opens");
    match ws.frame().await {
        Some(Frame::Welcome(w)) => assert_eq!(w.you.unwrap().display_name, name),
        other => panic!("no welcome first: {other:?}"),
    }
    ws
}

impl Ws {
    /// Sends `request`; returns its id.
    async fn send(&mut self, request: Request) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        let frame = ClientFrame {
            request_id: id,
            traceparent: String::new(),
            request: Some(request),
        };
        self.socket
            .send(Message::Binary(frame.encode_to_vec().into()))
            .await
            .expect("send");
        id
    }

    /// The next server frame (pings are answered by the client library);
    /// `None` once the server closed.
    async fn frame(&mut self) -> Option<Frame> {
        loop {
            let next = tokio::time::timeout(WAIT, self.socket.next())
                .await
                .expect("a frame in time");
            match next {
                Some(Ok(Message::Binary(bytes))) => {
                    return ServerFrame::decode(bytes).expect("a ServerFrame").frame;
                }
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return None,
                Some(Ok(other)) => panic!("unexpected message {other:?}"),
            }
        }
    }

    /// Sends `request` and returns its reply's result, skipping events.
    async fn ask(&mut self, request: Request) -> reply::Result {
        let id = self.send(request).await;
        loop {
            match self.frame().await {
                Some(Frame::Reply(r)) if r.request_id == id => return r.result.expect("a result"),
                Some(_) => {}
                None => panic!("closed before the reply to {id}"),
            }
        }
    }

    async fn join(&mut self, room: &str, since: Option<u64>) -> reply::Result {
        self.ask(Request::JoinRoom(JoinRoomRequest {
            room: room.into(),
            since_sequence: since,
        }))
        .await
    }

    async fn say(&mut self, room: &str, id: &str, text: &str) -> u64 {
        match self
            .ask(Request::SendMessage(SendMessageRequest {
                room: room.into(),
                client_message_id: id.into(),
                text: text.into(),
            }))
            .await
        {
            reply::Result::SendMessage(ack) => ack.sequence,
            other => panic!("send refused: {other:?}"),
        }
    }

    /// Reads until the server closes; returns the frames before and the
    /// close code.
    async fn until_closed(&mut self) -> (Vec<Frame>, Option<u16>) {
        let mut frames = Vec::new();
        loop {
            let next = tokio::time::timeout(WAIT, self.socket.next())
                .await
                .expect("the close in time");
            match next {
                Some(Ok(Message::Binary(bytes))) => {
                    frames.extend(ServerFrame::decode(bytes).unwrap().frame);
                }
                Some(Ok(Message::Close(close))) => {
                    return (frames, close.map(|c| u16::from(c.code)));
                }
                Some(Ok(_)) => {}
                None | Some(Err(_)) => return (frames, None),
            }
        }
    }
}

/// The reason of the close frame that must come next, with `code`.
async fn closed_with(ws: &mut Ws, code: u16) -> String {
    match tokio::time::timeout(WAIT, ws.socket.next()).await.unwrap() {
        Some(Ok(Message::Close(Some(close)))) => {
            assert_eq!(close.code, CloseCode::from(code), "{close:?}");
            close.reason.to_string()
        }
        other => panic!("not closed with {code}: {other:?}"),
    }
}

/// The text of the next message event in `room`, skipping other frames.
async fn next_message(ws: &mut Ws) -> (String, String, u64) {
    loop {
        match ws.frame().await {
            Some(Frame::Message(m)) => {
                return (m.sender.unwrap().display_name, m.text, m.sequence);
            }
            Some(_) => {}
            None => panic!("closed while waiting for a message"),
        }
    }
}

#[tokio::test]
async fn websocket_and_grpc_clients_share_a_room() {
    let server = TestServer::start(config()).await;
    let mut ann = open_as(&server, "Ann").await;
    let mut zoe = open_as(&server, "Zoë").await;
    let (grpc, mut grpc_events) = connect(&server.url(), "carl").await;
    assert!(matches!(
        ann.join("lobby", None).await,
        reply::Result::JoinRoom(_)
    ));
    assert!(matches!(
        zoe.join("lobby", None).await,
        reply::Result::JoinRoom(_)
    ));
    grpc.join("lobby").await.unwrap();

    let first = ann.say("lobby", "a-1", "hello from a browser").await;
    assert_eq!(
        next_message(&mut zoe).await,
        ("Ann".into(), "hello from a browser".into(), first)
    );
    let (from, text, _) = expect_message(&mut grpc_events, "lobby").await;
    assert_eq!(
        (from.as_str(), text.as_str()),
        ("Ann", "hello from a browser")
    );

    grpc.send("lobby", "hello from gRPC").await.unwrap();
    assert_eq!(next_message(&mut ann).await.1, "hello from gRPC");
    assert_eq!(next_message(&mut zoe).await.1, "hello from gRPC");

    // A retried send (same client message id) is stored once.
    assert_eq!(ann.say("lobby", "a-1", "hello from a browser").await, first);
    match ann
        .ask(Request::Ping(PingRequest {
            client_time_unix_ms: 7,
        }))
        .await
    {
        reply::Result::Pong(p) => assert_eq!(p.client_time_unix_ms, 7),
        other => panic!("{other:?}"),
    }
    server.stop().await;
}

#[tokio::test]
async fn history_and_resume_work_on_the_websocket() {
    let server = TestServer::start(config()).await;
    let mut ann = open_as(&server, "Ann").await;
    ann.join("lobby", None).await;
    for i in 1..=5 {
        ann.say("lobby", &format!("m{i}"), &format!("m{i}")).await;
    }
    match ann
        .ask(Request::History(HistoryRequest {
            room: "lobby".into(),
            direction: HistoryDirection::Backward as i32,
            from_sequence: 0,
            limit: 3,
        }))
        .await
    {
        reply::Result::History(page) => {
            let seqs: Vec<u64> = page.messages.iter().map(|m| m.sequence).collect();
            assert_eq!(seqs, [3, 4, 5]);
            assert_eq!(page.latest_sequence, 5);
        }
        other => panic!("{other:?}"),
    }
    // Bob saw up to 2, went away, and resumes: exactly 3..=5 follow the reply.
    let mut bob = open_as(&server, "Bob").await;
    match bob.join("lobby", Some(2)).await {
        reply::Result::JoinRoom(j) => assert_eq!(j.latest_sequence, 5),
        other => panic!("{other:?}"),
    }
    let mut seqs = Vec::new();
    for _ in 0..3 {
        seqs.push(next_message(&mut bob).await.2);
    }
    assert_eq!(seqs, [3, 4, 5]);
    server.stop().await;
}

#[tokio::test]
async fn a_foreign_origin_is_refused_before_the_upgrade() {
    let mut c = config();
    c.websocket.allowed_origins = vec!["https://chat.example.com".into()];
    let server = TestServer::start(c).await;
    let refused = open(
        &server,
        &[name_protocol("eve")],
        Some("https://evil.example"),
    )
    .await;
    match refused {
        Err(WsError::Http(response)) => assert_eq!(response.status(), 403),
        other => panic!("not refused with 403: {:?}", other.map(|_| ())),
    }
    assert_eq!(server.server.hub().session_count(), 0);
    // The server's own origin, loopback and the configured one may.
    let own = format!("http://{}", server.addr());
    for origin in [
        own.as_str(),
        "http://localhost:3000",
        "https://chat.example.com",
    ] {
        open(&server, &[name_protocol("amy")], Some(origin))
            .await
            .unwrap_or_else(|e| panic!("{origin} refused: {e}"));
    }
    // Without chat.v1, or not an upgrade at all: 400.
    let mut raw = tokio::net::TcpStream::connect(server.addr()).await.unwrap();
    raw.write_all(b"GET /v1/ws HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut answer = String::new();
    raw.read_to_string(&mut answer).await.unwrap();
    assert!(answer.starts_with("HTTP/1.1 400 "), "{answer}");
    server.stop().await;
}

#[tokio::test]
async fn bad_input_closes_with_its_code_and_changes_nothing() {
    let mut c = config();
    c.limits.max_text_bytes = 100;
    c.limits.max_frame_bytes = 1024;
    let server = TestServer::start(c).await;
    let mut watcher = open_as(&server, "watcher").await;
    watcher.join("lobby", None).await;

    // A text message: 1003, after a PROTOCOL_VIOLATION notice.
    let mut text = open_as(&server, "texter").await;
    text.join("lobby", None).await;
    text.socket
        .send(Message::Text("hello".into()))
        .await
        .unwrap();
    let (frames, code) = text.until_closed().await;
    assert_eq!(code, Some(1003));
    assert!(frames.iter().any(|f| matches!(f,
        Frame::Disconnect(d) if d.reason == DisconnectReason::ProtocolViolation as i32)));

    // Bytes that are not a ClientFrame: 1007.
    let mut garbage = open_as(&server, "garbage").await;
    garbage
        .socket
        .send(Message::Binary(vec![0xFF; 16].into()))
        .await
        .unwrap();
    assert_eq!(garbage.until_closed().await.1, Some(1007));

    // Above limits.max_frame_bytes: 1009.
    let mut big = open_as(&server, "big").await;
    big.socket
        .send(Message::Binary(vec![0; 2048].into()))
        .await
        .unwrap();
    assert_eq!(big.until_closed().await.1, Some(1009));

    // Nothing was sent to the room; the watcher's session goes on, and the
    // closed sessions left (the texter's leave is all it saw).
    let seen = watcher.ask(Request::Ping(PingRequest::default())).await;
    assert!(matches!(seen, reply::Result::Pong(_)));
    match watcher
        .ask(Request::History(HistoryRequest {
            room: "lobby".into(),
            direction: HistoryDirection::Backward as i32,
            from_sequence: 0,
            limit: 10,
        }))
        .await
    {
        reply::Result::History(page) => assert!(page.messages.is_empty()),
        other => panic!("{other:?}"),
    }
    tokio::time::timeout(WAIT, async {
        while server.server.hub().session_count() != 1 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("the closed sessions are gone");
    server.stop().await;
}

#[tokio::test]
async fn tokens_travel_in_the_subprotocol_list() {
    let auth = AuthConfig {
        mode: AuthMode::Jwt,
        algorithm: JwtAlgorithm::HS256,
        secret: "ws-test-secret-ws-test-secret-ws-test!".into(),
        issuer: "chat-test".into(),
        audience: "chat-test-aud".into(),
        ..AuthConfig::default()
    };
    let mut c = config();
    c.auth = auth.clone();
    let server = TestServer::start(c).await;
    let token = auth::mint(
        &auth,
        &TokenRequest {
            sub: "u-1".into(),
            name: Some("Ann".into()),
            ttl: Duration::from_secs(600),
            ..TokenRequest::default()
        },
    )
    .unwrap();
    let mut ann = open(&server, &[format!("bearer.{token}")], None)
        .await
        .unwrap();
    match ann.frame().await {
        Some(Frame::Welcome(w)) => {
            let you = w.you.unwrap();
            assert_eq!(
                (you.user_id.as_str(), you.display_name.as_str()),
                ("u-1", "Ann")
            );
        }
        other => panic!("{other:?}"),
    }
    // No token, a name (auth is on), a forged token: closed with 4401 and
    // the reason, before any frame.
    for (protocols, reason) in [
        (vec![], "missing"),
        (vec![name_protocol("mallory")], "missing"),
        (vec![format!("bearer.{token}x")], "signature"),
    ] {
        let mut refused = open(&server, &protocols, None).await.unwrap();
        assert_eq!(closed_with(&mut refused, 4401).await, reason);
    }
    let failures = &server.server.hub().metrics().auth_failures;
    assert_eq!(failures.get(AuthFailure::Missing), 2);
    assert_eq!(failures.get(AuthFailure::Signature), 1);
    server.stop().await;
}

#[tokio::test]
async fn new_sessions_beyond_the_servers_pace_are_refused_with_the_time_to_retry() {
    let mut c = config();
    c.limits.session_rate = 1.0;
    c.limits.session_burst = 2;
    let server = TestServer::start(c).await;
    let _first = open_as(&server, "ann").await;
    let _second = RawSession::open(&server.url(), "bob").await.unwrap();
    // Over the pace: a WebSocket is closed with 4429 `rate:<ms>`...
    let mut third = open(&server, &[name_protocol("cat")], None).await.unwrap();
    let reason = closed_with(&mut third, 4429).await;
    let ms: u64 = reason
        .strip_prefix("rate:")
        .and_then(|ms| ms.parse().ok())
        .unwrap_or_else(|| panic!("no retry time in {reason:?}"));
    assert!((1..=2000).contains(&ms), "retry in {ms} ms");
    // ...and a gRPC stream is refused with the retry time in its metadata.
    match RawSession::open(&server.url(), "dan").await {
        Err(status) => {
            assert_eq!(status.code(), tonic::Code::ResourceExhausted, "{status:?}");
            let ms: u64 = status
                .metadata()
                .get("chat-retry-after-ms")
                .and_then(|v| v.to_str().ok()?.parse().ok())
                .expect("a retry time");
            // Second in line: its turn comes a second after the first's.
            assert!((1001..=3000).contains(&ms), "retry in {ms} ms");
            assert!(status.message().contains("bounded pace"), "{status:?}");
        }
        Ok(_) => panic!("admitted over the pace"),
    }
    // The client library waits at least the retry time, then gets in.
    let (client, mut events) = chat_client::Client::connect(client_config(&server.url(), "eve"));
    match expect_event(&mut events, "refused", |e| {
        matches!(e, chat_client::Event::Reconnecting { .. })
    })
    .await
    {
        chat_client::Event::Reconnecting {
            attempt: 1,
            delay,
            error,
        } => {
            assert!(error.contains("bounded pace"), "{error}");
            assert!(delay >= Duration::from_millis(500), "waits only {delay:?}");
        }
        other => panic!("expected the first attempt, got {other:?}"),
    }
    client
        .wait_connected(WAIT)
        .await
        .expect("admitted at the pace");
    server.stop().await;
}

#[tokio::test]
async fn connection_limits_count_websockets_like_streams() {
    let mut c = config();
    c.limits.max_connections_per_user = 1;
    let server = TestServer::start(c).await;
    let _first = open_as(&server, "ann").await;
    let mut second = open(&server, &[name_protocol("ann")], None).await.unwrap();
    assert_eq!(closed_with(&mut second, 4429).await, "user");
    // The same user over gRPC is refused too: one count for both.
    let refused = RawSession::open(&server.url(), "ann").await;
    assert!(refused.is_err());
    server.stop().await;
}

#[tokio::test]
async fn shutdown_says_goodbye_and_closes_with_going_away() {
    let server = TestServer::start(config()).await;
    let mut ann = open_as(&server, "ann").await;
    ann.join("lobby", None).await;
    let stopping = tokio::spawn(server.stop());
    let (frames, code) = ann.until_closed().await;
    assert_eq!(code, Some(1001));
    assert!(frames.iter().any(|f| matches!(f,
        Frame::Disconnect(d) if d.reason == DisconnectReason::ShuttingDown as i32)));
    let took = stopping.await.unwrap();
    assert!(took < Duration::from_secs(3), "drained at once: {took:?}");
}

#[tokio::test]
async fn a_client_that_answers_no_ping_is_dropped_and_leaves() {
    let mut c = config();
    c.session.keepalive_interval = Duration::from_millis(200);
    c.session.keepalive_timeout = Duration::from_millis(200);
    let server = TestServer::start(c).await;
    let mut watcher = open_as(&server, "watcher").await;
    watcher.join("lobby", None).await;
    // A client that completes the handshake, joins, then reads nothing more
    // and sends nothing (so it never answers a ping).
    let mut mute = open_as(&server, "mute").await;
    mute.join("lobby", None).await;
    let mute_socket = mute.socket;
    // The watcher keeps answering pings while it waits for mute to leave.
    let left = loop {
        match watcher.frame().await {
            Some(Frame::MembersChanged(m)) if !m.left.is_empty() => break m,
            Some(_) => {}
            None => panic!("the watcher was closed"),
        }
    };
    assert_eq!(left.left[0].display_name, "mute");
    drop(mute_socket);
    server.stop().await;
}

#[tokio::test]
async fn errors_come_back_as_replies_and_the_session_goes_on() {
    let server = TestServer::start(config()).await;
    let mut ann = open_as(&server, "ann").await;
    match ann.join("bad room", None).await {
        reply::Result::Error(e) => assert_eq!(e.code, ErrorCode::InvalidArgument as i32),
        other => panic!("{other:?}"),
    }
    match ann
        .ask(Request::SendMessage(SendMessageRequest {
            room: "lobby".into(),
            client_message_id: "x".into(),
            text: "not a member".into(),
        }))
        .await
    {
        reply::Result::Error(e) => assert_eq!(e.code, ErrorCode::NotAMember as i32),
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        ann.join("lobby", None).await,
        reply::Result::JoinRoom(_)
    ));
    server.stop().await;
}

#[tokio::test]
async fn a_client_close_is_answered_and_the_session_leaves() {
    client_close_leaves(config()).await;
}

/// Over Redis, leaving waits on the network: the close must not spin the
/// connection's task while it does (found in review).
#[tokio::test]
async fn a_client_close_is_answered_over_the_redis_backplane_too() {
    let redis = or_skip!(redis());
    let mut c = config();
    c.backplane = chat_server::config::BackplaneKind::Redis;
    c.redis.url = redis.url();
    client_close_leaves(c).await;
}

async fn client_close_leaves(c: chat_server::Config) {
    let server = TestServer::start(c).await;
    let mut watcher = open_as(&server, "watcher").await;
    watcher.join("lobby", None).await;
    let mut ann = open_as(&server, "ann").await;
    ann.join("lobby", None).await;
    ann.socket.close(None).await.expect("close sent");
    let (_, code) = ann.until_closed().await;
    assert!(
        matches!(code, Some(1000) | None),
        "the server's answer: {code:?}"
    );
    let left = loop {
        match watcher.frame().await {
            Some(Frame::MembersChanged(m)) if !m.left.is_empty() => break m,
            Some(_) => {}
            None => panic!("the watcher was closed"),
        }
    };
    assert_eq!(left.left[0].display_name, "ann");
    // The watcher's session, in the same process, still answers.
    assert!(matches!(
        watcher.ask(Request::Ping(PingRequest::default())).await,
        reply::Result::Pong(_)
    ));
    server.stop().await;
}

#[tokio::test]
async fn frames_sent_right_behind_the_request_head_are_read() {
    let server = TestServer::start(config()).await;
    let mut raw = tokio::net::TcpStream::connect(server.addr()).await.unwrap();
    // The head, then at once a masked ping request in the same write.
    let mut bytes = format!(
        "GET /v1/ws HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
         Sec-WebSocket-Protocol: chat.v1, {}\r\n\r\n",
        server.addr(),
        name_protocol("eager")
    )
    .into_bytes();
    let frame = ClientFrame {
        request_id: 9,
        traceparent: String::new(),
        request: Some(Request::Ping(PingRequest {
            client_time_unix_ms: 42,
        })),
    }
    .encode_to_vec();
    let mask = [1u8, 2, 3, 4];
    bytes.extend([0x82, 0x80 | frame.len() as u8]);
    bytes.extend(mask);
    bytes.extend(frame.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    raw.write_all(&bytes).await.unwrap();
    // Read the 101, then binary messages until the pong's reply.
    let mut got = Vec::new();
    let pong = tokio::time::timeout(WAIT, async {
        let mut buf = [0u8; 4096];
        loop {
            let n = raw.read(&mut buf).await.unwrap();
            assert!(n > 0, "closed before the reply");
            got.extend_from_slice(&buf[..n]);
            let Some(head) = got.windows(4).position(|w| w == b"\r\n\r\n") else {
                continue;
            };
            let mut at = head + 4;
            while at + 2 <= got.len() {
                let len = (got[at + 1] & 0x7F) as usize;
                if at + 2 + len > got.len() {
                    break;
                }
                let frame = ServerFrame::decode(&got[at + 2..at + 2 + len]).unwrap();
                if let Some(Frame::Reply(r)) = frame.frame
                    && r.request_id == 9
                {
                    return r.result;
                }
                at += 2 + len;
            }
        }
    })
    .await
    .expect("the eager request answered");
    match pong {
        Some(reply::Result::Pong(p)) => assert_eq!(p.client_time_unix_ms, 42),
        other => panic!("{other:?}"),
    }
    server.stop().await;
}

#[tokio::test]
async fn an_idle_plain_connection_still_reaches_http_after_a_pause() {
    let server = TestServer::start(config()).await;
    // A pooled client's connection: open, silent a while, then a request.
    let mut raw = tokio::net::TcpStream::connect(server.addr()).await.unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    raw.write_all(b"GET /health/live HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut answer = String::new();
    raw.read_to_string(&mut answer).await.unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    server.stop().await;
}

/// Frames pushed while a client's socket is full are written partly by
/// their producer and the rest by the connection's writer: a client that
/// pauses (a 4 KB receive window) still gets every message whole, once and
/// in order, and so does one that reads all along.
#[tokio::test]
async fn a_client_that_pauses_gets_every_message_whole_and_in_order() {
    let mut config = config();
    // Room for everything the socket buffers do not hold.
    config.limits.outbound_queue = 4096;
    let server = TestServer::start(config).await;
    let mut paused = open_windowed(&server, "paused", Some(4096)).await;
    assert!(matches!(
        paused.join("lobby", None).await,
        reply::Result::JoinRoom(_)
    ));
    let mut reading = open_as(&server, "reading").await;
    assert!(matches!(
        reading.join("lobby", None).await,
        reply::Result::JoinRoom(_)
    ));
    let mut sender = open_as(&server, "sender").await;
    assert!(matches!(
        sender.join("lobby", None).await,
        reply::Result::JoinRoom(_)
    ));

    // 6 MB: beyond what the socket buffers hold for `paused` (the server's
    // send buffer grows to 4 MB at most, net.ipv4.tcp_wmem).
    const SENT: usize = 2000;
    let text = |i: usize| {
        format!(
            "{i:05}{}",
            char::from(b'a' + (i % 26) as u8).to_string().repeat(3000)
        )
    };
    let reader = tokio::spawn(async move {
        let mut got = Vec::new();
        while got.len() < SENT {
            let (_, text, sequence) = next_message(&mut reading).await;
            got.push((text, sequence));
        }
        got
    });
    for i in 0..SENT {
        sender.say("lobby", &format!("m{i}"), &text(i)).await;
    }
    let read_all_along = tokio::time::timeout(WAIT, reader)
        .await
        .expect("in time")
        .unwrap();
    let mut after_pause = Vec::new();
    while after_pause.len() < SENT {
        let (_, text, sequence) = next_message(&mut paused).await;
        after_pause.push((text, sequence));
    }
    for got in [&read_all_along, &after_pause] {
        for (i, (text_got, _)) in got.iter().enumerate() {
            assert!(
                *text_got == text(i),
                "message {i} arrived whole and in order"
            );
        }
        assert!(
            got.windows(2).all(|w| w[1].1 == w[0].1 + 1),
            "sequences in order, no gap"
        );
    }
    server.stop().await;
}

/// A WebSocket client that stops reading is cut off as a slow consumer
/// (its notice and close come after what it was sent whole), and the room
/// goes on without it.
#[tokio::test]
async fn a_websocket_client_that_does_not_read_is_disconnected_as_a_slow_consumer() {
    let mut config = config();
    config.limits.outbound_queue = 16;
    let server = TestServer::start(config).await;
    let mut slow = open_windowed(&server, "slow", Some(4096)).await;
    assert!(matches!(
        slow.join("lobby", None).await,
        reply::Result::JoinRoom(_)
    ));
    let mut sender = open_as(&server, "sender").await;
    assert!(matches!(
        sender.join("lobby", None).await,
        reply::Result::JoinRoom(_)
    ));

    // Bounded: the socket buffers and 16 queued frames hold far less than
    // 3,000 messages of 3 KB.
    const MOST: usize = 3000;
    let text = "y".repeat(3000);
    let mut sent = 0;
    while server.server.hub().session_count() == 2 && sent < MOST {
        sender.say("lobby", &format!("m{sent}"), &text).await;
        sent += 1;
    }
    assert_eq!(
        server.server.hub().session_count(),
        1,
        "slow was cut off after {sent} messages"
    );
    let (frames, code) = slow.until_closed().await;
    let messages: Vec<_> = frames
        .iter()
        .filter_map(|f| match f {
            Frame::Message(m) => Some(m.sequence),
            _ => None,
        })
        .collect();
    assert!(
        messages.len() < sent,
        "cut off, not buffered: {} of {sent}",
        messages.len()
    );
    assert!(
        messages.windows(2).all(|w| w[1] == w[0] + 1),
        "what came, came in order"
    );
    match frames.last() {
        Some(Frame::Disconnect(n)) => assert_eq!(n.reason, DisconnectReason::SlowConsumer as i32),
        other => panic!("the notice comes last, got {other:?}"),
    }
    assert_eq!(code, Some(1000), "then a normal close");
    sender.say("lobby", "after", "the room goes on").await;
    server.stop().await;
}

#[tokio::test]
async fn a_name_that_is_the_server_apis_sender_is_refused() {
    let server = TestServer::start(config()).await;
    for name in ["system", "System", "bot:news"] {
        let mut refused = open(&server, &[name_protocol(name)], None).await.unwrap();
        assert_eq!(closed_with(&mut refused, 4401).await, "name", "{name}");
    }
    open_as(&server, "systems").await;
    server.stop().await;
}
