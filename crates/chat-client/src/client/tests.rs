//! The client against a scripted server: each test plays the server's side
//! of a session frame by frame, so races that a real server only sometimes
//! produces (a reply and a message in one read, a reply after the request's
//! timeout, a refusal before a rejoin) happen every time.

use super::{Client, ClientConfig};
use crate::error::ClientError;
use crate::event::{Event, Events};
use chat_proto::EncodedFrame;
use chat_proto::v1::chat_service_server::{ChatService, ChatServiceServer};
use chat_proto::v1::{
    ClientFrame, Error as ErrorReply, ErrorCode, HistoryRequest, HistoryResponse, JoinRoomResult,
    MessageEvent, Reply, SendMessageResult, ServerFrame, Welcome, client_frame::Request, reply,
    server_frame::Frame,
};
use futures::StreamExt;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_stream::wrappers::{TcpListenerStream, UnboundedReceiverStream};

/// Every wait in these tests is bounded by this.
const WAIT: Duration = Duration::from_secs(10);

/// One session as the scripted server sees it.
struct Session {
    /// What the client sent, in order.
    requests: mpsc::UnboundedReceiver<ClientFrame>,
    /// What the server sends; dropping it ends the session.
    frames: mpsc::UnboundedSender<ServerFrame>,
}

impl Session {
    /// The client's next request (bounded wait).
    async fn next(&mut self) -> ClientFrame {
        tokio::time::timeout(WAIT, self.requests.recv())
            .await
            .expect("a request in time")
            .expect("the session is open")
    }

    /// The next request that is not a heartbeat ping.
    async fn next_request(&mut self) -> (u64, Request) {
        loop {
            let frame = self.next().await;
            match frame.request {
                Some(Request::Ping(_)) | None => continue,
                Some(r) => return (frame.request_id, r),
            }
        }
    }

    /// Sends `result` as the reply to request `request_id`.
    fn reply(&self, request_id: u64, result: reply::Result) {
        self.send(Frame::Reply(Reply {
            request_id,
            result: Some(result),
        }));
    }

    /// Refuses request `request_id` with `code`.
    fn refuse(&self, request_id: u64, code: ErrorCode) {
        self.reply(
            request_id,
            reply::Result::Error(ErrorReply {
                code: code as i32,
                message: format!("scripted {code:?}"),
                retry_after_ms: 0,
            }),
        );
    }

    /// Sends `frame`; a session the client already left is ignored.
    fn send(&self, frame: Frame) {
        let _ = self.frames.send(ServerFrame { frame: Some(frame) });
    }
}

/// The scripted service: each new session goes to the test.
struct Scripted {
    sessions: mpsc::UnboundedSender<Session>,
}

#[tonic::async_trait]
impl ChatService for Scripted {
    type SessionStream = futures::stream::BoxStream<'static, Result<EncodedFrame, tonic::Status>>;

    async fn session(
        &self,
        request: tonic::Request<tonic::Streaming<ClientFrame>>,
    ) -> Result<tonic::Response<Self::SessionStream>, tonic::Status> {
        let mut inbound = request.into_inner();
        let (requests_tx, requests) = mpsc::unbounded_channel();
        let (frames, frames_rx) = mpsc::unbounded_channel::<ServerFrame>();
        // Heartbeats are answered here; everything else goes to the test.
        // A weak sender: dropping the test's `Session` ends the stream.
        let pongs = frames.downgrade();
        tokio::spawn(async move {
            while let Some(Ok(frame)) = inbound.next().await {
                if let Some(Request::Ping(_)) = frame.request {
                    if let Some(pongs) = pongs.upgrade() {
                        let pong = reply::Result::Pong(Default::default());
                        let _ = pongs.send(ServerFrame {
                            frame: Some(Frame::Reply(Reply {
                                request_id: frame.request_id,
                                result: Some(pong),
                            })),
                        });
                    }
                    continue;
                }
                if requests_tx.send(frame).is_err() {
                    break;
                }
            }
        });
        let welcome = Frame::Welcome(Welcome {
            connection_id: "scripted".into(),
            ..Default::default()
        });
        let _ = frames.send(ServerFrame {
            frame: Some(welcome),
        });
        let _ = self.sessions.send(Session { requests, frames });
        let stream = UnboundedReceiverStream::new(frames_rx)
            .map(|f| Ok(EncodedFrame::encode(&f)))
            .boxed();
        Ok(tonic::Response::new(stream))
    }

    async fn history(
        &self,
        _: tonic::Request<HistoryRequest>,
    ) -> Result<tonic::Response<HistoryResponse>, tonic::Status> {
        Err(tonic::Status::unimplemented("scripted"))
    }
}

/// A scripted server on a free loopback port: its URL and its sessions as
/// they open.
async fn scripted_server() -> (String, mpsc::UnboundedReceiver<Session>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("address"));
    let (sessions, rx) = mpsc::unbounded_channel();
    let service = ChatServiceServer::new(Scripted { sessions });
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(service)
            .serve_with_incoming(TcpListenerStream::new(listener)),
    );
    (url, rx)
}

/// The next session `client` opens, once the client uses it.
async fn next_session(client: &Client, sessions: &mut mpsc::UnboundedReceiver<Session>) -> Session {
    let session = tokio::time::timeout(WAIT, sessions.recv())
        .await
        .expect("a session in time")
        .expect("the server runs");
    client.wait_connected(WAIT).await.expect("connected");
    session
}

/// A client of `url` with quick reconnects.
fn config(url: &str) -> ClientConfig {
    let mut config = ClientConfig::new(url, "alice");
    config.backoff.initial = Duration::from_millis(10);
    config.backoff.max = Duration::from_millis(50);
    config
}

/// A join's reply at `latest`.
fn joined(room: &str, latest: u64) -> reply::Result {
    reply::Result::JoinRoom(JoinRoomResult {
        room: room.into(),
        latest_sequence: latest,
        backlog_after_sequence: latest,
        ..Default::default()
    })
}

/// Message `sequence` of `room`.
fn message(room: &str, sequence: u64) -> Frame {
    Frame::Message(MessageEvent {
        room: room.into(),
        sequence,
        client_message_id: format!("m{sequence}"),
        text: format!("text {sequence}"),
        ..Default::default()
    })
}

/// Waits for the message event of `sequence`.
async fn message_arrives(events: &mut Events, sequence: u64) {
    tokio::time::timeout(WAIT, async {
        while let Some(event) = events.next().await {
            if let Event::Message(m) = event
                && m.sequence == sequence
            {
                return;
            }
        }
        panic!("events ended");
    })
    .await
    .expect("the message in time");
}

/// The `since_sequence` of the next join request, answered at `latest`.
async fn rejoin_since(session: &mut Session, room: &str, latest: u64) -> Option<u64> {
    let (id, request) = session.next_request().await;
    let Request::JoinRoom(join) = request else {
        panic!("expected a rejoin, got {request:?}");
    };
    assert_eq!(join.room, room);
    session.reply(id, joined(room, latest));
    join.since_sequence
}

/// Answers the next request of `session` with `result`.
async fn answer(session: &mut Session, result: reply::Result) {
    let (id, _) = session.next_request().await;
    session.reply(id, result);
}

/// Ends `session`; asserts that the next one rejoins `room` (alone) from
/// `since`.
async fn assert_next_session_resumes(
    client: &Client,
    sessions: &mut mpsc::UnboundedReceiver<Session>,
    session: Session,
    room: &str,
    since: u64,
) {
    drop(session);
    let mut session = next_session(client, sessions).await;
    assert_eq!(rejoin_since(&mut session, room, since).await, Some(since));
}

/// Issue 15, report 6: a message that arrives right behind the join's
/// reply (handled by the connection task before the caller's task wakes)
/// must count for the resume point, or the next rejoin asks for it again.
#[tokio::test]
async fn a_message_right_behind_the_join_reply_moves_the_resume_point() {
    let (url, mut sessions) = scripted_server().await;
    let (client, mut events) = Client::connect(config(&url));
    let mut session = next_session(&client, &mut sessions).await;
    let joining = tokio::spawn({
        let client = client.clone();
        async move { client.join("r").await }
    });
    let (id, request) = session.next_request().await;
    assert!(matches!(request, Request::JoinRoom(_)), "{request:?}");
    // Both in one go: the reply, then the next message.
    session.reply(id, joined("r", 5));
    session.send(message("r", 6));
    message_arrives(&mut events, 6).await;
    joining.await.expect("join task").expect("joined");
    assert_eq!(client.last_seen("r"), Some(6));

    assert_next_session_resumes(&client, &mut sessions, session, "r", 6).await;
    client.close();
}

/// Issue 15, report 6: a room from `ClientConfig::rooms` whose first
/// rejoin reply comes after the request timeout still gets its resume
/// point, so the next session resumes it instead of joining afresh.
#[tokio::test]
async fn a_late_first_rejoin_reply_still_sets_the_resume_point() {
    let (url, mut sessions) = scripted_server().await;
    let mut config = config(&url);
    config.rooms = vec!["r".into()];
    config.request_timeout = Duration::from_millis(200);
    let (client, mut events) = Client::connect(config);
    let mut session = next_session(&client, &mut sessions).await;
    let (first, request) = session.next_request().await;
    assert!(matches!(request, Request::JoinRoom(_)), "{request:?}");
    // The reply comes after the client gave up waiting for it.
    tokio::time::sleep(Duration::from_millis(400)).await;
    session.reply(first, joined("r", 5));
    session.send(message("r", 6));
    message_arrives(&mut events, 6).await;
    // The client may have asked again meanwhile; it is a member already.
    while let Ok(Some(frame)) =
        tokio::time::timeout(Duration::from_millis(300), session.requests.recv()).await
    {
        if let Some(Request::JoinRoom(_)) = frame.request {
            session.refuse(frame.request_id, ErrorCode::AlreadyAMember);
        }
    }
    assert_eq!(client.last_seen("r"), Some(6));

    assert_next_session_resumes(&client, &mut sessions, session, "r", 6).await;
    client.close();
}

/// Issue 15, report 12: sends are idempotent, so one refused as
/// UNAVAILABLE (the store failed, perhaps after storing it) is tried again
/// with the same client message id within the send window.
#[tokio::test]
async fn an_unavailable_send_is_retried_with_the_same_id() {
    let (url, mut sessions) = scripted_server().await;
    let (client, _events) = Client::connect(config(&url));
    let mut session = next_session(&client, &mut sessions).await;
    let sending = tokio::spawn({
        let client = client.clone();
        async move { client.send_with_id("r", "id-1", "hello").await }
    });
    let mut ids = Vec::new();
    for attempt in 0..3 {
        let (id, request) = session.next_request().await;
        let Request::SendMessage(send) = request else {
            panic!("expected a send, got {request:?}");
        };
        ids.push(send.client_message_id);
        if attempt < 2 {
            session.refuse(id, ErrorCode::Unavailable);
        } else {
            session.reply(
                id,
                reply::Result::SendMessage(SendMessageResult {
                    sequence: 1,
                    ..Default::default()
                }),
            );
        }
    }
    let sent = tokio::time::timeout(WAIT, sending)
        .await
        .expect("the send ends")
        .expect("send task");
    assert_eq!(sent.expect("sent").sequence, 1);
    assert_eq!(ids, ["id-1", "id-1", "id-1"]);
    client.close();
}

/// An UNAVAILABLE send is not retried past the send window: the error is
/// the server's.
#[tokio::test]
async fn an_unavailable_send_fails_once_the_window_is_over() {
    let (url, mut sessions) = scripted_server().await;
    let mut config = config(&url);
    config.send_retry_window = Duration::from_millis(300);
    let (client, _events) = Client::connect(config);
    let mut session = next_session(&client, &mut sessions).await;
    let sending = tokio::spawn({
        let client = client.clone();
        async move { client.send_with_id("r", "id-1", "hello").await }
    });
    let answering = tokio::spawn(async move {
        let mut attempts = 0;
        while let Ok(Some(frame)) =
            tokio::time::timeout(Duration::from_secs(2), session.requests.recv()).await
        {
            if let Some(Request::SendMessage(_)) = frame.request {
                attempts += 1;
                session.refuse(frame.request_id, ErrorCode::Unavailable);
            }
        }
        attempts
    });
    let sent = tokio::time::timeout(WAIT, sending)
        .await
        .expect("the send ends")
        .expect("send task");
    assert!(
        matches!(
            sent,
            Err(ClientError::Server {
                code: ErrorCode::Unavailable,
                ..
            })
        ),
        "{sent:?}"
    );
    let attempts = answering.await.expect("answering task");
    assert!((2..=8).contains(&attempts), "{attempts} attempts");
    client.close();
}

/// Issue 15, report 2 (the client's half): a send retried after a
/// reconnect that finds its room not yet rejoined waits for the rejoin
/// instead of asking again every few milliseconds (each ask costs the
/// user a send token on servers that charge before checking).
#[tokio::test]
async fn a_retried_send_waits_for_its_room_to_be_rejoined() {
    let (url, mut sessions) = scripted_server().await;
    let (client, _events) = Client::connect(config(&url));
    let mut session = next_session(&client, &mut sessions).await;
    let joining = tokio::spawn({
        let client = client.clone();
        async move { client.join("r").await }
    });
    let (id, _) = session.next_request().await;
    session.reply(id, joined("r", 0));
    joining.await.expect("join task").expect("joined");
    let sending = tokio::spawn({
        let client = client.clone();
        async move { client.send_with_id("r", "id-1", "hello").await }
    });
    let (_, request) = session.next_request().await;
    assert!(matches!(request, Request::SendMessage(_)), "{request:?}");
    // The connection drops before the acknowledgement.
    drop(session);

    let mut session = next_session(&client, &mut sessions).await;
    let mut rejoin = None;
    let mut sends = 0;
    let held_until = tokio::time::Instant::now() + Duration::from_millis(500);
    // Hold the rejoin's reply for half a second, refusing sends meanwhile.
    while let Ok(Some(frame)) = tokio::time::timeout_at(held_until, session.requests.recv()).await {
        match frame.request {
            Some(Request::JoinRoom(_)) => rejoin = Some(frame.request_id),
            Some(Request::SendMessage(_)) => {
                sends += 1;
                session.refuse(frame.request_id, ErrorCode::NotAMember);
            }
            _ => {}
        }
    }
    let rejoin = rejoin.expect("the room is rejoined");
    session.reply(rejoin, joined("r", 0));
    loop {
        let (id, request) = session.next_request().await;
        if let Request::SendMessage(_) = request {
            session.reply(
                id,
                reply::Result::SendMessage(SendMessageResult {
                    sequence: 1,
                    ..Default::default()
                }),
            );
            break;
        }
    }
    let sent = tokio::time::timeout(WAIT, sending)
        .await
        .expect("the send ends")
        .expect("send task");
    assert_eq!(sent.expect("sent").sequence, 1);
    assert!(
        sends <= 2,
        "{sends} sends refused while the rejoin was pending"
    );
    client.close();
}

/// Review of report 6's fix: a fresh join sets the room's resume point to
/// where the room stands now (not the larger of that and an older point:
/// the room's numbering may have gone back since), and a leave forgets it.
#[tokio::test]
async fn a_fresh_join_sets_the_resume_point_and_a_leave_forgets_it() {
    let (url, mut sessions) = scripted_server().await;
    let (client, mut events) = Client::connect(config(&url));
    let mut session = next_session(&client, &mut sessions).await;
    let joining = tokio::spawn({
        let client = client.clone();
        async move { client.join("r").await }
    });
    answer(&mut session, joined("r", 10)).await;
    joining.await.expect("join task").expect("joined");
    session.send(message("r", 11));
    message_arrives(&mut events, 11).await;
    assert_eq!(client.last_seen("r"), Some(11));
    let leaving = tokio::spawn({
        let client = client.clone();
        async move { client.leave("r").await }
    });
    answer(
        &mut session,
        reply::Result::LeaveRoom(chat_proto::v1::LeaveRoomResult { room: "r".into() }),
    )
    .await;
    leaving.await.expect("leave task").expect("left");
    assert_eq!(client.last_seen("r"), None);
    // Joined again where the room now stands (its store was restored from
    // an older backup): 3, not 11.
    let joining = tokio::spawn({
        let client = client.clone();
        async move { client.join("r").await }
    });
    answer(&mut session, joined("r", 3)).await;
    joining.await.expect("join task").expect("joined");
    assert_eq!(client.last_seen("r"), Some(3));
    assert_next_session_resumes(&client, &mut sessions, session, "r", 3).await;
    client.close();
}

/// Review of report 6's fix: a fresh join whose reply comes after the
/// caller stopped waiting did happen; the room is rejoined (resuming) on
/// the next session like any other.
#[tokio::test]
async fn a_late_fresh_join_reply_keeps_the_room() {
    let (url, mut sessions) = scripted_server().await;
    let mut config = config(&url);
    config.request_timeout = Duration::from_millis(200);
    let (client, _events) = Client::connect(config);
    let mut session = next_session(&client, &mut sessions).await;
    let joining = tokio::spawn({
        let client = client.clone();
        async move { client.join("r").await }
    });
    let (id, _) = session.next_request().await;
    let timed_out = joining.await.expect("join task");
    assert!(
        matches!(timed_out, Err(ClientError::Timeout(_))),
        "{timed_out:?}"
    );
    session.reply(id, joined("r", 4));
    let deadline = tokio::time::Instant::now() + WAIT;
    while client.last_seen("r").is_none() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the late reply was ignored"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(client.rooms(), ["r"]);
    assert_next_session_resumes(&client, &mut sessions, session, "r", 4).await;
    client.close();
}

/// Review of report 6's fix: a rejoin answered after its timeout, then
/// asked again and refused as ALREADY_A_MEMBER, is reported as rejoined,
/// not as rejoined and then failed.
#[tokio::test]
async fn a_late_rejoin_is_not_reported_as_failed_afterwards() {
    let (url, mut sessions) = scripted_server().await;
    let mut config = config(&url);
    config.rooms = vec!["r".into()];
    config.request_timeout = Duration::from_millis(200);
    let (client, mut events) = Client::connect(config);
    let mut session = next_session(&client, &mut sessions).await;
    let (first, _) = session.next_request().await;
    // The client times out and asks again; the first reply comes now,
    // and the second ask is refused: the client is a member already.
    let (second, request) = session.next_request().await;
    assert!(matches!(request, Request::JoinRoom(_)), "{request:?}");
    session.reply(first, joined("r", 5));
    session.refuse(second, ErrorCode::AlreadyAMember);
    let mut outcomes = Vec::new();
    while let Ok(Some(event)) =
        tokio::time::timeout(Duration::from_millis(500), events.next()).await
    {
        if let Event::Rejoined { result, .. } = event {
            outcomes.push(match result {
                Ok(_) => "ok".to_string(),
                Err(ClientError::Timeout(_)) => "timeout".to_string(),
                Err(e) => format!("{e}"),
            });
        }
    }
    assert_eq!(
        outcomes.last().map(String::as_str),
        Some("ok"),
        "{outcomes:?}"
    );
    assert!(
        outcomes.iter().all(|o| o == "ok" || o == "timeout"),
        "{outcomes:?}"
    );
    client.close();
}

/// A client made with the resume points of an earlier one rejoins those
/// rooms from them on its first session.
#[tokio::test]
async fn resume_points_from_an_earlier_client_are_used_on_the_first_session() {
    let (url, mut sessions) = scripted_server().await;
    let mut config = config(&url);
    config.resume_from = vec![("r".into(), 42)];
    let (client, _events) = Client::connect(config);
    let mut session = next_session(&client, &mut sessions).await;
    assert_eq!(rejoin_since(&mut session, "r", 50).await, Some(42));
    assert_eq!(client.rooms(), ["r"]);
    client.close();
}

/// Review of report 6's fix: an application that joins, on a new
/// session, a room the client is in already (racing the library's rejoin)
/// joins from the room's point, so the messages missed meanwhile are not
/// skipped.
#[tokio::test]
async fn joining_a_room_the_client_is_in_resumes_from_its_point() {
    let (url, mut sessions) = scripted_server().await;
    let mut config = config(&url);
    config.rooms = vec!["r".into()];
    let (client, mut events) = Client::connect(config);
    let mut session = next_session(&client, &mut sessions).await;
    assert_eq!(rejoin_since(&mut session, "r", 5).await, None);
    drop(session);
    let mut session = next_session(&client, &mut sessions).await;
    let (rejoin, request) = session.next_request().await;
    assert!(matches!(request, Request::JoinRoom(_)), "{request:?}");
    let joining = tokio::spawn({
        let client = client.clone();
        async move { client.join("r").await }
    });
    let (id, request) = session.next_request().await;
    let Request::JoinRoom(join) = request else {
        panic!("expected the application's join, got {request:?}");
    };
    assert_eq!(join.since_sequence, Some(5));
    session.reply(
        id,
        reply::Result::JoinRoom(JoinRoomResult {
            room: "r".into(),
            latest_sequence: 7,
            backlog_after_sequence: 5,
            ..Default::default()
        }),
    );
    session.send(message("r", 6));
    session.send(message("r", 7));
    session.refuse(rejoin, ErrorCode::AlreadyAMember);
    message_arrives(&mut events, 7).await;
    joining.await.expect("join task").expect("joined");
    assert_eq!(client.last_seen("r"), Some(7));
    client.close();
}
