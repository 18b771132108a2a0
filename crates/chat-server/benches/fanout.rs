//! Fan-out: one message to the 1,000 local members of one room, through the
//! real hub (memory store, local backplane, ordered delivery — what a
//! single `chat-server` with `store.url = "memory"` runs).
//!
//! - `hub_send`: the validation a session does, then `Hub::send`: store
//!   append, encode once, publish on the local backplane, `try_send` of the
//!   shared bytes into every member's outbox.
//! - `session_send`: the same through a real `Session` task: a `SendMessage`
//!   frame goes into the sender's inbound stream, the timer stops when its
//!   reply comes out of the sender's outbox (adds the session's request
//!   handling, the reply's encoding and one task wake-up each way).
//!
//! Throughput is in deliveries (1,000 per message). Every member's outbox
//! is drained after each message, outside the timed part, so nobody is ever
//! kicked as a slow consumer; the drain also checks that each member got
//! exactly one frame.
//!
//! `cargo bench -p chat-server --bench fanout`

use chat_proto::EncodedFrame;
use chat_proto::v1::{
    ClientFrame, JoinRoomRequest, SendMessageRequest, ServerFrame, client_frame::Request,
    server_frame::Frame,
};
use chat_server::backplane::LocalBackplane;
use chat_server::config::Limits;
use chat_server::domain::User;
use chat_server::domain::validate::{self, RoomName};
use chat_server::hub::{Hub, Outbox, OutboxStream, Rooms, outbox};
use chat_server::session::Session;
use chat_server::store::{Kind, MemoryStore, MessageStore, NewMessage};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use futures::{FutureExt, StreamExt};
use prost::Message;
use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;

/// Local members of the room, the sender included.
const MEMBERS: usize = 1000;
/// 64 bytes of text.
const TEXT: &str = "The quick brown fox jumps over the lazy dog, 64 bytes of text...";
const ROOM: &str = "lobby";

fn user(i: usize) -> User {
    User {
        user_id: Arc::from(format!("user-{i}")),
        display_name: Arc::from(format!("User {i}")),
    }
}

/// A hub wired as `server::start` wires it for one instance with the
/// memory store (repair task left out: nothing here leaves a gap).
fn hub() -> Arc<Hub> {
    let store: Arc<dyn MessageStore> = Arc::new(MemoryStore::new());
    let rooms = Arc::new(Rooms::new(true, None));
    let backplane = Arc::new(LocalBackplane::new(rooms.clone()));
    Arc::new(Hub::new(
        "bench".into(),
        Limits::default(),
        rooms,
        store,
        backplane,
    ))
}

/// Pops every frame queued on `stream` without waiting; returns how many.
/// (Outside tokio's cooperative budget, which would otherwise report an
/// empty queue after 128 receives in one task poll.)
fn drain(stream: &mut OutboxStream) -> usize {
    let mut n = 0;
    while let Some(Some(_frame)) = tokio::task::unconstrained(stream.next()).now_or_never() {
        n += 1;
    }
    n
}

/// Drains every member and checks each got exactly `expected` frames.
fn drain_all(streams: &mut [OutboxStream], expected: usize) {
    for (i, stream) in streams.iter_mut().enumerate() {
        let got = drain(stream);
        assert_eq!(got, expected, "member {i} received {got} frames");
    }
}

/// Members joined through the hub: their outboxes and streams.
struct Members {
    outboxes: Vec<Outbox>,
    streams: Vec<OutboxStream>,
}

impl Members {
    /// Checks that nobody was kicked as a slow consumer.
    fn assert_none_kicked(&self) {
        let kicked = self.outboxes.iter().filter(|o| o.is_ended()).count();
        assert_eq!(kicked, 0, "{kicked} members were kicked");
    }
}

/// Joins `count` members to the room directly through the hub (as
/// `Session::join` does), returning their outbox streams, drained.
async fn join_members(hub: &Hub, room: &RoomName, first: usize, count: usize) -> Members {
    let mut streams = Vec::with_capacity(count);
    let mut outboxes = Vec::with_capacity(count);
    for i in first..first + count {
        let (outbox, stream) = outbox(hub.limits().outbound_queue);
        outboxes.push(outbox.clone());
        let conn = hub.register(Arc::from("bench"), outbox.clone());
        hub.join(room, conn, &user(i), outbox, None, |_, _| {
            EncodedFrame::from(Frame::Reply(Default::default()))
        })
        .await
        .expect("join");
        streams.push(stream);
        // Everyone receives everyone's "joined": drain before a queue fills.
        if streams.len() % 256 == 0 {
            streams.iter_mut().for_each(|s| {
                drain(s);
            });
        }
    }
    streams.iter_mut().for_each(|s| {
        drain(s);
    });
    Members { outboxes, streams }
}

fn hub_send(c: &mut Criterion, rt: &tokio::runtime::Runtime) {
    let hub = hub();
    let room = RoomName::parse(ROOM).unwrap();
    let mut members = rt.block_on(join_members(&hub, &room, 0, MEMBERS));
    let streams = &mut members.streams;
    let sender = user(0);
    let max_text = hub.limits().max_text_bytes;
    let mut next_id = 0u64;

    let mut group = c.benchmark_group("fanout");
    group.throughput(Throughput::Elements(MEMBERS as u64));
    group.bench_function("hub_send_1000_members", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let mut elapsed = Duration::ZERO;
                for _ in 0..iters {
                    next_id += 1;
                    let client_message_id = format!("m-{next_id}");
                    let text = TEXT.to_string();
                    let start = Instant::now();
                    // What `Session::send` does before calling the hub.
                    let room_name = RoomName::parse(room.as_str()).unwrap();
                    validate::client_message_id(&client_message_id).unwrap();
                    validate::message_text(&text, max_text).unwrap();
                    let stored = hub
                        .send(NewMessage {
                            room: room_name,
                            sender: sender.clone(),
                            client_message_id,
                            text,
                            kind: Kind::Message,
                        })
                        .await
                        .expect("send");
                    black_box(stored);
                    elapsed += start.elapsed();
                    drain_all(streams, 1);
                }
                elapsed
            })
        })
    });
    group.finish();
    members.assert_none_kicked();
}

fn session_send(c: &mut Criterion, rt: &tokio::runtime::Runtime) {
    let hub = hub();
    let room = RoomName::parse(ROOM).unwrap();
    // 999 members joined through the hub, the sender through its session.
    let mut members = rt.block_on(join_members(&hub, &room, 1, MEMBERS - 1));
    let streams = &mut members.streams;
    let (inbound, inbound_rx) =
        mpsc::channel::<Result<ClientFrame, chat_server::session::InboundError>>(16);
    let (sender_outbox, mut sender_stream) = outbox(hub.limits().outbound_queue);
    let session = Session::open(
        hub.clone(),
        chat_server::auth::Identity::open(user(0)),
        // No rate limits: the bench sends as fast as it can.
        chat_server::limiter::Admission::new(Limits {
            send_rate: 0.0,
            user_send_rate: 0.0,
            ..Limits::default()
        })
        .admit(&user(0).user_id, None)
        .expect("admitted"),
        sender_outbox.clone(),
        &chat_server::config::SessionConfig {
            idle_timeout: Duration::from_secs(3600),
            ..Default::default()
        },
        None,
    );
    let task = rt.spawn(session.run(ReceiverStream::new(inbound_rx), CancellationToken::new()));
    rt.block_on(async {
        inbound
            .send(Ok(ClientFrame {
                request_id: 1,
                traceparent: String::new(),
                request: Some(Request::JoinRoom(JoinRoomRequest {
                    room: ROOM.into(),
                    since_sequence: None,
                })),
            }))
            .await
            .unwrap();
        // Welcome, the join reply, and the sender's own "joined".
        for _ in 0..3 {
            sender_stream.next().await.unwrap();
        }
        tokio::task::yield_now().await;
    });
    drain(&mut sender_stream);
    drain_all(streams, 1);

    let send_frame = |request_id: u64| ClientFrame {
        request_id,
        traceparent: String::new(),
        request: Some(Request::SendMessage(SendMessageRequest {
            room: ROOM.into(),
            client_message_id: format!("m-{request_id}"),
            text: TEXT.into(),
        })),
    };
    // Once, untimed: the sender gets its own message, then the reply.
    let mut request_id = 2;
    rt.block_on(async {
        inbound.send(Ok(send_frame(request_id))).await.unwrap();
        let kinds: Vec<_> = [sender_stream.next().await, sender_stream.next().await]
            .into_iter()
            .map(|f| ServerFrame::decode(f.unwrap().0).unwrap().frame)
            .collect();
        assert!(
            matches!(kinds[..], [Some(Frame::Message(_)), Some(Frame::Reply(_))]),
            "unexpected frames for the sender: {kinds:?}"
        );
    });
    drain_all(streams, 1);

    let mut group = c.benchmark_group("fanout");
    group.throughput(Throughput::Elements(MEMBERS as u64));
    group.bench_function("session_send_1000_members", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let mut elapsed = Duration::ZERO;
                for _ in 0..iters {
                    request_id += 1;
                    let frame = send_frame(request_id);
                    let start = Instant::now();
                    inbound.send(Ok(frame)).await.unwrap();
                    // Its own message, then the reply.
                    black_box(sender_stream.next().await);
                    black_box(sender_stream.next().await);
                    elapsed += start.elapsed();
                    drain_all(streams, 1);
                }
                elapsed
            })
        })
    });
    group.finish();
    members.assert_none_kicked();
    assert!(!sender_outbox.is_ended(), "the sender was kicked");

    drop(inbound);
    rt.block_on(task).unwrap();
}

fn benches(c: &mut Criterion) {
    // One thread, as criterion measures one task; the sessions' tasks run
    // on it when the bench awaits.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    hub_send(c, &rt);
    session_send(c, &rt);
}

criterion_group! {
    name = fanout;
    config = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    targets = benches
}
criterion_main!(fanout);
