//! Frame encoding: what one message costs to encode once, and what each
//! recipient then costs.
//!
//! - `encode_once`: a `ServerFrame` carrying a `MessageEvent` with 64 bytes
//!   of text, prost-encoded into the shared `EncodedFrame` (what `Hub::send`
//!   does once per message).
//! - `encode_once_with_grpc_prefix`: the same with the gRPC 5-byte message
//!   prefix written in front, into one buffer (for comparison: the server
//!   does not do this; tonic writes the prefix per recipient).
//! - `per_recipient_clone`: cloning (and dropping) the shared `Bytes`, what
//!   the fan-out does per member.
//! - `per_recipient_grpc_write`: what a recipient's response stream does
//!   with it: tonic's `EncodeBody` with the Session stream's
//!   `SessionCodec` encoder writes the 5-byte prefix and copies the frame
//!   into the outgoing buffer; 1,000 frames through one body, so
//!   throughput is per frame.
//!
//! `cargo bench -p chat-server --bench frame`

use bytes::{BufMut, BytesMut};
use chat_proto::EncodedFrame;
use chat_proto::codec::SessionCodec;
use chat_proto::v1::{Member, MessageEvent, ServerFrame, server_frame::Frame};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use http_body_util::BodyExt;
use prost::Message;
use std::hint::black_box;
use std::time::Duration;
use tonic::codec::{Codec, EncodeBody, SingleMessageCompressionOverride};

/// 64 bytes of text.
const TEXT: &str = "The quick brown fox jumps over the lazy dog, 64 bytes of text...";
/// The gRPC length-prefixed message header: compressed flag, u32 length.
const GRPC_PREFIX: usize = 5;
/// Frames written through one response body.
const RECIPIENTS: usize = 1000;

/// A message as `Hub::send` builds it (UUIDv7 ids, a typical sender).
fn message_frame() -> ServerFrame {
    assert_eq!(TEXT.len(), 64);
    ServerFrame {
        frame: Some(Frame::Message(MessageEvent {
            message_id: "0199a3f2-6c1e-7b3a-9d41-5f0e2c8a7b10".into(),
            room: "lobby".into(),
            sequence: 123_456,
            sender: Some(Member {
                user_id: "alice".into(),
                display_name: "Alice".into(),
            }),
            text: TEXT.into(),
            server_time_unix_ms: 1_760_000_000_000,
            client_message_id: "0199a3f2-6b90-7c11-8e2a-3d4b5c6d7e8f".into(),
            ..MessageEvent::default()
        })),
    }
}

/// Writes `frames` through a server response body as tonic does for the
/// Session stream; returns the bytes written.
fn write_through_body(frames: impl Iterator<Item = EncodedFrame> + Send + 'static) -> usize {
    let body = EncodeBody::new_server(
        SessionCodec.encoder(),
        tokio_stream::iter(frames.map(Ok)),
        None,
        SingleMessageCompressionOverride::default(),
        None,
    );
    futures::executor::block_on(async {
        let mut body = std::pin::pin!(body);
        let mut written = 0;
        while let Some(frame) = body.frame().await {
            if let Ok(data) = frame.expect("encoding succeeds").into_data() {
                written += data.len();
            }
        }
        written
    })
}

fn benches(c: &mut Criterion) {
    let frame = message_frame();
    let encoded = EncodedFrame::encode(&frame);
    eprintln!(
        "frame: ServerFrame(MessageEvent, {} bytes of text) encodes to {} bytes, {} on the wire",
        TEXT.len(),
        encoded.len(),
        encoded.len() + GRPC_PREFIX
    );
    // The body writes exactly the prefixed frames.
    let written = write_through_body(std::iter::repeat_n(encoded.clone(), RECIPIENTS));
    assert_eq!(written, RECIPIENTS * (encoded.len() + GRPC_PREFIX));

    let mut group = c.benchmark_group("frame");
    group.throughput(Throughput::Elements(1));
    group.bench_function("encode_once", |b| {
        b.iter(|| EncodedFrame::encode(black_box(&frame)))
    });
    group.bench_function("encode_once_with_grpc_prefix", |b| {
        b.iter(|| {
            let frame = black_box(&frame);
            let len = frame.encoded_len();
            let mut buf = BytesMut::with_capacity(GRPC_PREFIX + len);
            buf.put_u8(0);
            buf.put_u32(len as u32);
            frame.encode(&mut buf).expect("capacity reserved");
            buf.freeze()
        })
    });
    group.bench_function("per_recipient_clone", |b| {
        b.iter(|| black_box(&encoded).clone())
    });
    group.throughput(Throughput::Elements(RECIPIENTS as u64));
    group.bench_function("per_recipient_grpc_write", |b| {
        b.iter(|| write_through_body(std::iter::repeat_n(black_box(&encoded).clone(), RECIPIENTS)))
    });
    group.finish();
}

criterion_group! {
    name = frame;
    config = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    targets = benches
}
criterion_main!(frame);
