//! Traces: spans go to an in-memory exporter (installed once for the test
//! process, as `chat-server` installs the OTLP one), and the tests check
//! which spans a request makes, their parents, and that a message's trace
//! continues across the backplane into the instance that delivers it. Each
//! test runs in a process of its own ([`in_own_process`]): installing the
//! exporter turns traces on for every server in the process.

use crate::common::*;
use chat_client::proto::{
    HistoryRequest, JoinRoomRequest, SendMessageRequest, chat_service_client::ChatServiceClient,
    client_frame::Request, reply, server_frame::Frame,
};
use chat_server::config::{BackplaneKind, LogConfig, TracesConfig};
use chat_server::telemetry::trace::{TraceParent, provider_with};
use opentelemetry::trace::{SpanId, TraceId};
use opentelemetry_sdk::trace::{InMemorySpanExporter, SpanData};
use std::sync::OnceLock;
use std::time::Duration;

/// The exporter the test of this process reads.
fn exporter() -> &'static InMemorySpanExporter {
    static EXPORTER: OnceLock<InMemorySpanExporter> = OnceLock::new();
    EXPORTER.get_or_init(|| {
        let exporter = InMemorySpanExporter::default();
        let traces = provider_with(&TracesConfig::default(), |b| {
            b.with_simple_exporter(exporter.clone())
        });
        // Log lines are not what these tests read, but the session span
        // must exist, as in production, for the test of untraced requests
        // to mean anything.
        let quiet = LogConfig {
            level: "warn,chat_server::session=info".into(),
            ..LogConfig::default()
        };
        chat_server::telemetry::init(&quiet, Some(&traces)).expect("subscriber installed");
        // Keeps exporting for the life of the process.
        std::mem::forget(traces);
        exporter
    })
}

/// A fresh W3C trace context, as a client would send it.
fn client_traceparent() -> TraceParent {
    let id = uuid::Uuid::new_v4().as_u128();
    TraceParent {
        trace_id: id.to_be_bytes(),
        span_id: (id as u64 | 1).to_be_bytes(),
        flags: 1,
    }
}

/// The finished spans of `trace`, once `done` says all are there (bounded).
async fn spans_of(trace: [u8; 16], done: impl Fn(&[SpanData]) -> bool) -> Vec<SpanData> {
    let trace = TraceId::from_bytes(trace);
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let spans: Vec<SpanData> = exporter()
            .get_finished_spans()
            .unwrap()
            .into_iter()
            .filter(|s| s.span_context.trace_id() == trace)
            .collect();
        if done(&spans) {
            return spans;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "spans of the trace so far: {:#?}",
            spans.iter().map(|s| &s.name).collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn attribute(span: &SpanData, key: &str) -> Option<String> {
    span.attributes
        .iter()
        .find(|kv| kv.key.as_str() == key)
        .map(|kv| kv.value.to_string())
}

/// The one span named `name` on instance `server` (its own attribute, or
/// its request's / receive span's).
fn one<'a>(spans: &'a [SpanData], name: &str, parent: SpanId) -> &'a SpanData {
    let found: Vec<&SpanData> = spans
        .iter()
        .filter(|s| s.name == name && s.parent_span_id == parent)
        .collect();
    assert_eq!(
        found.len(),
        1,
        "one {name} under {parent}: {:#?}",
        spans
            .iter()
            .map(|s| (&s.name, s.span_context.span_id(), s.parent_span_id))
            .collect::<Vec<_>>()
    );
    found[0]
}

fn join(room: &str) -> Request {
    Request::JoinRoom(JoinRoomRequest {
        room: room.into(),
        since_sequence: None,
    })
}

fn send(room: &str, id: &str, text: &str) -> Request {
    Request::SendMessage(SendMessageRequest {
        room: room.into(),
        client_message_id: id.into(),
        text: text.into(),
    })
}

/// Reads frames until the reply to `request_id`.
async fn reply_to(session: &mut RawSession, request_id: u64) -> reply::Result {
    loop {
        match session.next().await.expect("the stream stays open") {
            Frame::Reply(r) if r.request_id == request_id => return r.result.unwrap(),
            _ => continue,
        }
    }
}

#[tokio::test]
async fn over_redis_a_message_is_one_trace_from_send_to_fanout_on_another_instance() {
    if !in_own_process() {
        return;
    }
    exporter();
    let redis = or_skip!(redis());
    one_trace_across_instances(BackplaneKind::Redis, &redis.url()).await;
}

#[tokio::test]
async fn over_nats_a_message_is_one_trace_from_send_to_fanout_on_another_instance() {
    if !in_own_process() {
        return;
    }
    exporter();
    let nats = or_skip!(nats());
    one_trace_across_instances(BackplaneKind::Nats, &nats.url()).await;
}

async fn one_trace_across_instances(backplane: BackplaneKind, url: &str) {
    let instance = |id: &str| {
        let mut c = config();
        c.server_id = id.into();
        c.backplane = backplane;
        c.redis.url = url.into();
        c.nats.url = url.into();
        TestServer::start(c)
    };
    let (a, b) = (instance("a").await, instance("b").await);
    // Both connected to the backplane before anyone joins.
    wait_ready(&a, true).await;
    wait_ready(&b, true).await;
    let mut alice = RawSession::open(&a.url(), "alice").await.unwrap();
    let mut bob = RawSession::open(&b.url(), "bob").await.unwrap();
    alice.send(1, join("lobby")).await;
    bob.send(1, join("lobby")).await;
    reply_to(&mut alice, 1).await;
    reply_to(&mut bob, 1).await;

    let client = client_traceparent();
    alice
        .send_traced(2, &client.to_string(), send("lobby", "m1", "hello"))
        .await;
    assert!(matches!(
        reply_to(&mut alice, 2).await,
        reply::Result::SendMessage(_)
    ));
    loop {
        if let Some(Frame::Message(m)) = bob.next().await {
            assert_eq!(m.text, "hello");
            break;
        }
    }

    // send → store → publish → (fan-out on a) and → receive on b → fan-out.
    let spans = spans_of(client.trace_id, |s| s.len() >= 6).await;
    let request = one(&spans, "chat.send", SpanId::from_bytes(client.span_id));
    assert!(
        request.parent_span_is_remote,
        "a child of the client's span"
    );
    assert_eq!(attribute(request, "chat.server_id").as_deref(), Some("a"));
    assert_eq!(attribute(request, "chat.request_id").as_deref(), Some("2"));
    let request_id = request.span_context.span_id();
    one(&spans, "store.append", request_id);
    let publish = one(&spans, "backplane.publish", request_id);
    let publish_id = publish.span_context.span_id();
    one(&spans, "fanout", publish_id);
    let receive = one(&spans, "backplane.receive", publish_id);
    assert!(receive.parent_span_is_remote, "continued from the envelope");
    assert_eq!(attribute(receive, "chat.server_id").as_deref(), Some("b"));
    assert_eq!(attribute(receive, "chat.sequence").as_deref(), Some("1"));
    let fanout_b = one(&spans, "fanout", receive.span_context.span_id());
    assert_eq!(attribute(fanout_b, "chat.room").as_deref(), Some("lobby"));
    assert_eq!(spans.len(), 6, "nothing else joined the trace");
    a.stop().await;
    b.stop().await;
}

#[tokio::test]
async fn the_session_traceparent_is_the_parent_of_each_request_and_errors_are_marked() {
    if !in_own_process() {
        return;
    }
    exporter();
    let server = TestServer::start(config()).await;
    let call = client_traceparent();
    let mut alice = RawSession::open_with(
        &server.url(),
        "alice",
        &[("traceparent", &call.to_string())],
    )
    .await
    .unwrap();
    alice.send(1, join("lobby")).await;
    reply_to(&mut alice, 1).await;
    // Not a member: refused, and the span says so.
    alice.send(2, send("elsewhere", "m1", "hi")).await;
    reply_to(&mut alice, 2).await;
    // A frame's own traceparent wins over the call's; an invalid one
    // starts a trace of its own.
    let own = client_traceparent();
    alice
        .send_traced(3, &own.to_string(), send("lobby", "m2", "hi"))
        .await;
    reply_to(&mut alice, 3).await;
    alice
        .send_traced(4, "00-not-a-trace", send("lobby", "m3", "hi"))
        .await;
    reply_to(&mut alice, 4).await;
    // A client that does not sample this request: no span at all.
    let unsampled = TraceParent {
        flags: 0,
        ..client_traceparent()
    };
    alice
        .send_traced(5, &unsampled.to_string(), send("lobby", "m4", "hi"))
        .await;
    reply_to(&mut alice, 5).await;
    // Requests are handled in order: once request 6's span is exported,
    // request 5 has made every span it was going to.
    let last = client_traceparent();
    alice
        .send_traced(
            6,
            &last.to_string(),
            Request::Ping(chat_client::proto::PingRequest {
                client_time_unix_ms: 0,
            }),
        )
        .await;
    reply_to(&mut alice, 6).await;
    spans_of(last.trace_id, |s| s.len() == 1).await;

    let spans = spans_of(call.trace_id, |s| s.len() >= 2).await;
    let parent = SpanId::from_bytes(call.span_id);
    one(&spans, "chat.join", parent);
    let refused = one(&spans, "chat.send", parent);
    assert_eq!(
        attribute(refused, "chat.error_code").as_deref(),
        Some("NOT_A_MEMBER")
    );
    assert!(matches!(
        refused.status,
        opentelemetry::trace::Status::Error { .. }
    ));
    let own_spans = spans_of(own.trace_id, |s| s.len() >= 4).await;
    let sent = one(&own_spans, "chat.send", SpanId::from_bytes(own.span_id));
    assert_eq!(attribute(sent, "chat.request_id").as_deref(), Some("3"));
    // One instance (the in-process backplane): the same path, fan-out
    // inside the publish.
    let sent_id = sent.span_context.span_id();
    one(&own_spans, "store.append", sent_id);
    let publish = one(&own_spans, "backplane.publish", sent_id);
    one(&own_spans, "fanout", publish.span_context.span_id());
    assert_eq!(own_spans.len(), 4);
    // Request 4 is in neither trace: it began its own.
    let all = exporter().get_finished_spans().unwrap();
    let fourth = all
        .iter()
        .find(|s| s.name == "chat.send" && attribute(s, "chat.request_id").as_deref() == Some("4"))
        .expect("request 4 has a span");
    assert_ne!(
        fourth.span_context.trace_id(),
        TraceId::from_bytes(call.trace_id)
    );
    assert_eq!(fourth.parent_span_id, SpanId::INVALID);
    let unsampled_id = TraceId::from_bytes(unsampled.trace_id);
    assert!(
        all.iter()
            .all(|s| s.span_context.trace_id() != unsampled_id)
    );
    let fifth = |s: &&SpanData| attribute(s, "chat.request_id").as_deref() == Some("5");
    assert!(!all.iter().any(|s| s.name == "chat.send" && fifth(&s)));
    // Steps are never roots: an unsampled request makes none.
    for step in all.iter().filter(|s| !s.name.starts_with("chat.")) {
        assert_ne!(step.parent_span_id, SpanId::INVALID, "{step:?}");
    }
    server.stop().await;
}

#[tokio::test]
async fn the_history_call_is_a_span_under_the_callers_trace() {
    if !in_own_process() {
        return;
    }
    exporter();
    let server = TestServer::start(config()).await;
    let call = client_traceparent();
    let mut client = ChatServiceClient::connect(server.url()).await.unwrap();
    let mut request = tonic::Request::new(HistoryRequest {
        room: "lobby".into(),
        ..Default::default()
    });
    request
        .metadata_mut()
        .insert("chat-name", "alice".parse().unwrap());
    request
        .metadata_mut()
        .insert("traceparent", call.to_string().parse().unwrap());
    client.history(request).await.unwrap();
    let spans = spans_of(call.trace_id, |s| !s.is_empty()).await;
    let history = one(&spans, "chat.history", SpanId::from_bytes(call.span_id));
    assert_eq!(history.status, opentelemetry::trace::Status::Unset);
    server.stop().await;
}
