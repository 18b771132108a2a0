//! Hostile input, below the transport: random request sequences from
//! several clients, driven straight into their Session tasks (property
//! tests), checked against a simple model of the server: no panic, every
//! request gets exactly one reply, and every reply — result or error code,
//! membership, sequence numbers — is what the model says.

use chat_proto::v1::{
    ClientFrame, ErrorCode, JoinRoomRequest, LeaveRoomRequest, ListMembersRequest,
    ListRoomsRequest, PingRequest, SendMessageRequest, ServerFrame, client_frame::Request, reply,
    server_frame::Frame,
};
use chat_server::auth::Identity;
use chat_server::backplane::LocalBackplane;
use chat_server::config::Limits;
use chat_server::domain::User;
use chat_server::hub::{Hub, OutboxStream, Rooms, outbox};
use chat_server::limiter::Admission;
use chat_server::session::Session;
use chat_server::store::{MemoryStore, MessageStore};
use futures::StreamExt;
use proptest::prelude::*;
use prost::Message;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;

const CLIENTS: usize = 3;
const MAX_ROOMS: usize = 2;
const MAX_TEXT: usize = 16;
/// Valid rooms, then invalid names.
const ROOMS: [&str; 5] = ["a", "b", "c", "bad name", ""];
const TEXTS: [&str; 4] = ["hello", "", "this text is longer than sixteen bytes", "zoë"];
const IDS: [&str; 3] = ["m1", "m2", ""];

#[derive(Clone, Debug)]
enum Op {
    Join(usize, usize),
    Leave(usize, usize),
    Send(usize, usize, usize, usize),
    ListMembers(usize, usize),
    ListRooms(usize),
    Ping(usize),
    Nothing(usize),
}

fn op() -> impl Strategy<Value = Op> {
    let c = 0..CLIENTS;
    let r = 0..ROOMS.len();
    prop_oneof![
        3 => (c.clone(), r.clone()).prop_map(|(c, r)| Op::Join(c, r)),
        1 => (c.clone(), r.clone()).prop_map(|(c, r)| Op::Leave(c, r)),
        4 => (c.clone(), r.clone(), 0..TEXTS.len(), 0..IDS.len())
            .prop_map(|(c, r, t, i)| Op::Send(c, r, t, i)),
        1 => (c.clone(), r).prop_map(|(c, r)| Op::ListMembers(c, r)),
        1 => c.clone().prop_map(Op::ListRooms),
        1 => c.clone().prop_map(Op::Ping),
        1 => c.prop_map(Op::Nothing),
    ]
}

/// What the model expects of a reply.
#[derive(Debug, PartialEq)]
enum Expect {
    Ok,
    Sent(u64),
    Members(BTreeSet<String>),
    Rooms(Vec<String>),
    Error(ErrorCode),
}

/// The server as the contract describes it.
#[derive(Default)]
struct Model {
    rooms: Vec<BTreeSet<&'static str>>,
    sequences: HashMap<&'static str, u64>,
    stored: HashMap<(&'static str, usize, &'static str), u64>,
}

fn valid(room: &str) -> bool {
    !room.is_empty() && !room.contains(' ')
}

impl Model {
    fn apply(&mut self, op: &Op) -> Expect {
        use Expect::*;
        match *op {
            Op::Join(c, r) => {
                let room = ROOMS[r];
                if !valid(room) {
                    Error(ErrorCode::InvalidArgument)
                } else if self.rooms[c].contains(room) {
                    Error(ErrorCode::AlreadyAMember)
                } else if self.rooms[c].len() >= MAX_ROOMS {
                    Error(ErrorCode::TooManyRooms)
                } else {
                    self.rooms[c].insert(room);
                    Ok
                }
            }
            Op::Leave(c, r) => match self.member(c, r) {
                Err(code) => Error(code),
                Result::Ok(room) => {
                    self.rooms[c].remove(room);
                    Ok
                }
            },
            Op::Send(c, r, t, i) => {
                let room = match self.member(c, r) {
                    Err(code) => return Error(code),
                    Result::Ok(room) => room,
                };
                let (text, id) = (TEXTS[t], IDS[i]);
                if id.is_empty() || text.is_empty() {
                    return Error(ErrorCode::InvalidArgument);
                }
                if text.len() > MAX_TEXT {
                    return Error(ErrorCode::MessageTooLarge);
                }
                if let Some(&seq) = self.stored.get(&(room, c, id)) {
                    return Sent(seq);
                }
                let seq = self.sequences.entry(room).or_default();
                *seq += 1;
                self.stored.insert((room, c, id), *seq);
                Sent(*seq)
            }
            Op::ListMembers(c, r) => match self.member(c, r) {
                Err(code) => Error(code),
                Result::Ok(room) => Members(
                    (0..CLIENTS)
                        .filter(|&o| self.rooms[o].contains(room))
                        .map(name)
                        .collect(),
                ),
            },
            Op::ListRooms(c) => Rooms(self.rooms[c].iter().map(|r| r.to_string()).collect()),
            Op::Ping(_) => Ok,
            Op::Nothing(_) => Error(ErrorCode::InvalidArgument),
        }
    }

    fn member(&self, c: usize, r: usize) -> Result<&'static str, ErrorCode> {
        let room = ROOMS[r];
        if !valid(room) {
            Err(ErrorCode::InvalidArgument)
        } else if !self.rooms[c].contains(room) {
            Err(ErrorCode::NotAMember)
        } else {
            Ok(room)
        }
    }
}

fn name(c: usize) -> String {
    format!("client-{c}")
}

fn request(op: &Op) -> (usize, Option<Request>) {
    match *op {
        Op::Join(c, r) => (
            c,
            Some(Request::JoinRoom(JoinRoomRequest {
                room: ROOMS[r].into(),
                since_sequence: None,
            })),
        ),
        Op::Leave(c, r) => (
            c,
            Some(Request::LeaveRoom(LeaveRoomRequest {
                room: ROOMS[r].into(),
            })),
        ),
        Op::Send(c, r, t, i) => (
            c,
            Some(Request::SendMessage(SendMessageRequest {
                room: ROOMS[r].into(),
                client_message_id: IDS[i].into(),
                text: TEXTS[t].into(),
            })),
        ),
        Op::ListMembers(c, r) => (
            c,
            Some(Request::ListMembers(ListMembersRequest {
                room: ROOMS[r].into(),
                ..Default::default()
            })),
        ),
        Op::ListRooms(c) => (c, Some(Request::ListRooms(ListRoomsRequest {}))),
        Op::Ping(c) => (
            c,
            Some(Request::Ping(PingRequest {
                client_time_unix_ms: 1,
            })),
        ),
        Op::Nothing(c) => (c, None),
    }
}

fn seen(result: reply::Result) -> Expect {
    match result {
        reply::Result::Error(e) => {
            Expect::Error(ErrorCode::try_from(e.code).unwrap_or(ErrorCode::Unspecified))
        }
        reply::Result::SendMessage(s) => Expect::Sent(s.sequence),
        reply::Result::ListMembers(m) => {
            Expect::Members(m.members.into_iter().map(|m| m.display_name).collect())
        }
        reply::Result::ListRooms(r) => Expect::Rooms(r.rooms),
        _ => Expect::Ok,
    }
}

/// One client's session, driven by hand.
struct Client {
    requests: mpsc::Sender<Result<ClientFrame, chat_server::session::InboundError>>,
    frames: OutboxStream,
    /// Replies seen, by request id.
    replies: BTreeMap<u64, usize>,
}

impl Client {
    /// The next reply, counting every reply seen on the way.
    async fn reply(&mut self) -> (u64, reply::Result) {
        loop {
            let next = tokio::time::timeout(Duration::from_secs(5), self.frames.next())
                .await
                .expect("a frame within 5 s")
                .expect("the session is open");
            let frame = ServerFrame::decode(next.0.clone()).expect("the server's frames decode");
            if let Some(Frame::Reply(r)) = frame.frame {
                *self.replies.entry(r.request_id).or_default() += 1;
                return (r.request_id, r.result.expect("a reply carries a result"));
            }
        }
    }
}

async fn run(ops: Vec<Op>) {
    crate::common::capture_logs();
    let limits = Limits {
        max_rooms_per_connection: MAX_ROOMS,
        max_text_bytes: MAX_TEXT,
        send_rate: 0.0,
        user_send_rate: 0.0,
        join_rate: 0.0,
        user_join_rate: 0.0,
        ..Limits::default()
    };
    let store: Arc<dyn MessageStore> = Arc::new(MemoryStore::new());
    let rooms = Arc::new(Rooms::new(true, None));
    let backplane = Arc::new(LocalBackplane::new(rooms.clone()));
    let hub = Arc::new(Hub::new(
        "prop".into(),
        limits.clone(),
        rooms,
        store,
        backplane,
    ));
    let admission = Admission::new(limits.clone());
    let shutdown = CancellationToken::new();
    let mut clients = Vec::new();
    let mut tasks = Vec::new();
    for c in 0..CLIENTS {
        let user = User {
            user_id: Arc::from(name(c)),
            display_name: Arc::from(name(c)),
        };
        let permit = admission.admit(&user.user_id, None).unwrap();
        let (out, frames) = outbox(limits.outbound_queue);
        let session = Session::open(
            hub.clone(),
            Identity::open(user),
            permit,
            out,
            &chat_server::config::SessionConfig {
                idle_timeout: Duration::from_secs(60),
                ..Default::default()
            },
            None,
        );
        let (requests, inbound) = mpsc::channel(4);
        tasks.push(tokio::spawn(
            session.run(ReceiverStream::new(inbound), shutdown.clone()),
        ));
        clients.push(Client {
            requests,
            frames,
            replies: BTreeMap::new(),
        });
    }

    let mut model = Model {
        rooms: vec![BTreeSet::new(); CLIENTS],
        ..Model::default()
    };
    for (i, op) in ops.iter().enumerate() {
        let id = i as u64 + 1;
        let (c, request) = request(op);
        clients[c]
            .requests
            .send(Ok(ClientFrame {
                request_id: id,
                traceparent: String::new(),
                request,
            }))
            .await
            .expect("the session reads");
        let (got_id, result) = clients[c].reply().await;
        assert_eq!(got_id, id, "replies come in request order");
        let expected = model.apply(op);
        assert_eq!(seen(result), expected, "op {i}: {op:?}");
    }
    // Every request got exactly one reply: a last ping per client flushes
    // anything still queued, and no id was answered twice.
    for (c, client) in clients.iter_mut().enumerate() {
        client
            .requests
            .send(Ok(ClientFrame {
                request_id: u64::MAX,
                traceparent: String::new(),
                request: Some(Request::Ping(PingRequest::default())),
            }))
            .await
            .unwrap();
        while client.reply().await.0 != u64::MAX {}
        let asked = ops.iter().filter(|op| request(op).0 == c).count() + 1;
        assert_eq!(
            client.replies.len(),
            asked,
            "client {c}: one reply per request"
        );
        assert!(
            client.replies.values().all(|&n| n == 1),
            "client {c}: {:?}",
            client.replies
        );
    }
    // The hub agrees with the model about who is where.
    for room in ROOMS.iter().filter(|r| valid(r)) {
        let room_name = chat_server::domain::validate::RoomName::parse(room).unwrap();
        let members: BTreeSet<String> = hub
            .members(&room_name)
            .iter()
            .map(|m| m.display_name.to_string())
            .collect();
        let expected: BTreeSet<String> = (0..CLIENTS)
            .filter(|&c| model.rooms[c].contains(room))
            .map(name)
            .collect();
        assert_eq!(members, expected, "members of {room}");
    }
    shutdown.cancel();
    drop(clients);
    for t in tasks {
        tokio::time::timeout(Duration::from_secs(5), t)
            .await
            .expect("sessions end")
            .expect("no session panicked");
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn random_request_sequences_match_the_model(ops in proptest::collection::vec(op(), 1..60)) {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        runtime.block_on(run(ops));
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    /// The fuzz targets' entry points (`fuzz/`) on random bytes, so every
    /// `cargo test` runs them on stable Rust too.
    #[test]
    fn arbitrary_bytes_are_refused_without_panicking(data in proptest::collection::vec(any::<u8>(), 0..512)) {
        chat_server::fuzzing::client_frame(&data);
        chat_server::fuzzing::credentials(&data);
        let mut bearer = b"Bearer ".to_vec();
        bearer.extend_from_slice(&data);
        chat_server::fuzzing::credentials(&bearer);
    }

    /// Well-formed frames with arbitrary strings, then one byte changed.
    #[test]
    fn near_valid_frames_are_refused_without_panicking(
        room in ".{0,80}",
        text in ".{0,64}",
        id in ".{0,40}",
        flip in any::<(usize, u8)>(),
    ) {
        let frame = ClientFrame {
            request_id: 7,
            traceparent: String::new(),
            request: Some(Request::SendMessage(SendMessageRequest { room, client_message_id: id, text })),
        };
        let mut bytes = frame.encode_to_vec();
        chat_server::fuzzing::client_frame(&bytes);
        let at = flip.0 % bytes.len();
        bytes[at] ^= flip.1;
        chat_server::fuzzing::client_frame(&bytes);
    }
}
