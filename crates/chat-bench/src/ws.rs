//! The WebSocket driver (`--driver ws`): the server's `/v1/ws` transport
//! (docs/PROTOCOL.md) spoken directly over a tokio `TcpStream`. The
//! opening handshake offers `chat.v1` and the name (`name.<base64url>`,
//! auth off) in `Sec-WebSocket-Protocol`; then every `ClientFrame` goes out
//! as one masked binary message and every `ServerFrame` comes in as one
//! binary message. Like `raw`: one reading task per connection hands each
//! delivery straight to a [`Sink`], requests wait for their `Reply` by id,
//! no reconnects. The framing is a client's minimum (RFC 6455): masked
//! frames out, written from a buffer kept per connection; frames in,
//! fragments joined, pings answered. Plain `ws://` only: the benchmark runs
//! on loopback, and an `http://` URL means the same listener.

use crate::raw::Sink;
use crate::replies::{self, Pending};
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use bytes::{Buf, Bytes, BytesMut};
use chat_client::proto::{
    ClientFrame, JoinRoomRequest, SendMessageRequest, ServerFrame, TypingRequest, client_frame,
    reply, server_frame::Frame,
};
use chat_util::lock;
use prost::Message;
use sha1::{Digest, Sha1};
use std::io;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::task::AbortHandle;

/// The endpoint's path.
const PATH: &str = "/v1/ws";
/// The subprotocol the server requires and selects.
const SUBPROTOCOL: &str = "chat.v1";
/// RFC 6455's GUID for `Sec-WebSocket-Accept`.
const GUID: &str = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";
/// Largest answer head to the upgrade accepted.
const MAX_HEAD: usize = 8 * 1024;
/// Largest message accepted from the server (a join reply lists every
/// member: tens of kB for a thousand).
const MAX_MESSAGE: usize = 16 * 1024 * 1024;
/// Bytes made room for before each read.
const READ_CHUNK: usize = 4096;

/// Opcodes (RFC 6455 §5.2).
const CONTINUATION: u8 = 0x0;
const BINARY: u8 = 0x2;
const CLOSE: u8 = 0x8;
const PING: u8 = 0x9;
const PONG: u8 = 0xA;

/// Seeds of the connections' masking keys: each connection takes the next.
static SEED: AtomicU64 = AtomicU64::new(0x9E37_79B9_7F4A_7C15);

/// One connection and its session; cheap to clone.
#[derive(Clone)]
pub struct WsClient {
    inner: Arc<Inner>,
}

/// What the client's handles and its reading task share.
struct Inner {
    /// The socket's write half; requests and pongs take turns.
    writer: tokio::sync::Mutex<Writer>,
    /// Requests waiting for their reply.
    pending: Pending,
    /// Set by [`WsClient::close`]: the end of the stream is no disconnect.
    closed: AtomicBool,
    /// The reading task, aborted on close.
    reader: Mutex<Option<AbortHandle>>,
    /// Longest wait for a reply.
    timeout: Duration,
}

impl WsClient {
    /// Connects to `url` (`ws://` or `http://`, host and port) as `name`,
    /// upgrades to `/v1/ws` and waits for the Welcome; every later delivery
    /// goes to `sink`. All of it within `timeout`.
    pub async fn connect(
        url: &str,
        name: &str,
        timeout: Duration,
        sink: Arc<dyn Sink>,
    ) -> Result<WsClient, String> {
        let authority = authority(url)?;
        let opened = tokio::time::timeout(timeout, open(authority, name))
            .await
            .map_err(|_| "connect timed out".to_string())??;
        let (reader, writer) = opened;
        let inner = Arc::new(Inner {
            writer: tokio::sync::Mutex::new(writer),
            pending: Pending::default(),
            closed: AtomicBool::new(false),
            reader: Mutex::new(None),
            timeout,
        });
        let task = tokio::spawn(read_loop(reader, inner.clone(), sink));
        *lock(&inner.reader) = Some(task.abort_handle());
        Ok(WsClient { inner })
    }

    async fn request(&self, request: client_frame::Request) -> Result<reply::Result, String> {
        let inner = &self.inner;
        replies::request(&inner.pending, inner.timeout, request, |frame| async move {
            inner
                .writer
                .lock()
                .await
                .message(&frame)
                .await
                .map_err(|e| format!("write: {e}"))
        })
        .await
    }

    /// Joins `room`.
    pub async fn join(&self, room: &str) -> Result<(), String> {
        self.request(client_frame::Request::JoinRoom(JoinRoomRequest {
            room: room.to_string(),
            since_sequence: None,
        }))
        .await
        .map(drop)
    }

    /// Sends `text` to `room` with the client message id `id`; returns once
    /// it is acknowledged.
    pub async fn send_with_id(&self, room: &str, id: &str, text: &str) -> Result<(), String> {
        self.request(client_frame::Request::SendMessage(SendMessageRequest {
            room: room.to_string(),
            client_message_id: id.to_string(),
            text: text.to_string(),
        }))
        .await
        .map(drop)
    }

    /// Says this client is typing in `room`; returns once it is accepted.
    pub async fn typing(&self, room: &str) -> Result<(), String> {
        self.request(client_frame::Request::Typing(TypingRequest {
            room: room.to_string(),
            typing: true,
        }))
        .await
        .map(drop)
    }

    /// Stops reading and lets the connection go (the socket closes when
    /// the last handle is dropped).
    pub fn close(&self) {
        self.inner.closed.store(true, Relaxed);
        if let Some(reader) = lock(&self.inner.reader).take() {
            reader.abort();
        }
    }
}

/// `host:port` of `url`: `ws://` or `http://` (the same listener); port 80
/// when none is given.
fn authority(url: &str) -> Result<&str, String> {
    let rest = url
        .strip_prefix("ws://")
        .or_else(|| url.strip_prefix("http://"))
        .ok_or_else(|| format!("--driver ws needs ws:// or http:// URLs, not {url}"))?;
    let authority = rest.split('/').next().unwrap_or_default();
    if authority.is_empty() {
        return Err(format!("no host in {url}"));
    }
    Ok(authority)
}

/// Opens the TCP connection, upgrades it and reads the Welcome.
async fn open(authority: &str, name: &str) -> Result<(FrameReader, Writer), String> {
    let address = if authority.contains(':') {
        authority.to_string()
    } else {
        format!("{authority}:80")
    };
    let stream = TcpStream::connect(&address)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    stream
        .set_nodelay(true)
        .map_err(|e| format!("connect: {e}"))?;
    let (mut read, mut write) = stream.into_split();
    let mut rng = XorShift(SEED.fetch_add(0x9E37_79B9_7F4A_7C15, Relaxed) | 1);
    let key = STANDARD.encode([rng.next().to_le_bytes(), rng.next().to_le_bytes()].concat());
    let request = format!(
        "GET {PATH} HTTP/1.1\r\nHost: {authority}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\
         Sec-WebSocket-Protocol: {SUBPROTOCOL}, name.{}\r\n\r\n",
        URL_SAFE_NO_PAD.encode(name.as_bytes())
    );
    write
        .write_all(request.as_bytes())
        .await
        .map_err(|e| format!("upgrade: {e}"))?;
    let rest = upgraded(&mut read, &key).await?;
    let mut writer = Writer {
        io: write,
        buf: Vec::new(),
        rng,
    };
    let mut reader = FrameReader {
        io: read,
        buf: rest,
        partial: None,
    };
    loop {
        match reader.next().await.map_err(|e| format!("session: {e}"))? {
            Some(Incoming::Binary(b)) => {
                return match ServerFrame::decode(b).map(|f| f.frame) {
                    Ok(Some(Frame::Welcome(_))) => Ok((reader, writer)),
                    other => Err(format!("expected a welcome, got {other:?}")),
                };
            }
            Some(Incoming::Ping(payload)) => writer
                .control(PONG, &payload)
                .await
                .map_err(|e| format!("session: {e}"))?,
            Some(Incoming::Close(code, reason)) => {
                return Err(format!("closed before the welcome: {code:?} {reason}"));
            }
            None => return Err("closed before the welcome".into()),
        }
    }
}

/// Reads the answer to the upgrade and checks it: `101`, the accept value
/// for `key`, `chat.v1` selected. Returns the bytes after the head.
async fn upgraded(read: &mut OwnedReadHalf, key: &str) -> Result<BytesMut, String> {
    let mut buf = BytesMut::with_capacity(1024);
    let end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        if buf.len() >= MAX_HEAD {
            return Err("upgrade: answer head too large".into());
        }
        buf.reserve(1024);
        match read.read_buf(&mut buf).await {
            Ok(0) => return Err(format!("upgrade refused: {}", first_line(&buf))),
            Ok(_) => {}
            Err(e) => return Err(format!("upgrade: {e}")),
        }
    };
    let head = buf.split_to(end);
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut answer = httparse::Response::new(&mut headers);
    if !matches!(answer.parse(&head), Ok(httparse::Status::Complete(_))) {
        return Err("upgrade: malformed answer".into());
    }
    if answer.code != Some(101) {
        return Err(format!("upgrade refused: {}", first_line(&head)));
    }
    let header = |name: &str| {
        answer
            .headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case(name))
            .and_then(|h| std::str::from_utf8(h.value).ok())
            .map(str::trim)
    };
    let mut sha = Sha1::new();
    sha.update(key.as_bytes());
    sha.update(GUID.as_bytes());
    if header("sec-websocket-accept") != Some(STANDARD.encode(sha.finalize()).as_str()) {
        return Err("upgrade: wrong Sec-WebSocket-Accept".into());
    }
    if header("sec-websocket-protocol") != Some(SUBPROTOCOL) {
        return Err("upgrade: chat.v1 not selected".into());
    }
    Ok(buf)
}

fn first_line(head: &[u8]) -> String {
    let line = head.split(|&b| b == b'\r').next().unwrap_or_default();
    String::from_utf8_lossy(line).into_owned()
}

/// Reads the connection until it ends: deliveries to `sink`, replies to
/// their requests, pings answered.
async fn read_loop(mut frames: FrameReader, inner: Arc<Inner>, sink: Arc<dyn Sink>) {
    // Until the connection ends, fails or sends something unreadable.
    while let Ok(Some(incoming)) = frames.next().await {
        match incoming {
            Incoming::Binary(b) => match ServerFrame::decode(b).map(|f| f.frame) {
                Ok(Some(Frame::Message(m))) => sink.message(&m),
                Ok(Some(Frame::Typing(_))) => sink.typing(),
                Ok(Some(Frame::Reply(r))) => inner.pending.answer(r),
                Ok(_) => {}
                Err(_) => break,
            },
            Incoming::Ping(payload) => {
                if inner
                    .writer
                    .lock()
                    .await
                    .control(PONG, &payload)
                    .await
                    .is_err()
                {
                    break;
                }
            }
            Incoming::Close(..) => break,
        }
    }
    if !inner.closed.load(Relaxed) {
        sink.disconnected();
    }
    inner.pending.clear();
}

/// xorshift64: the handshake's key and the masking keys (RFC 6455 wants
/// them unpredictable to intermediaries; a load generator needs them cheap).
struct XorShift(u64);

impl XorShift {
    /// The next 64 bits (the state is never zero).
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }
}

/// The write side of a connection: each frame is built in `buf` and
/// written whole.
struct Writer {
    /// The socket's write half.
    io: OwnedWriteHalf,
    /// The frame being written; kept for the next (a few hundred bytes).
    buf: Vec<u8>,
    /// Masking keys.
    rng: XorShift,
}

impl Writer {
    /// Writes `frame` as one binary message.
    async fn message(&mut self, frame: &ClientFrame) -> io::Result<()> {
        let key = self.rng.next() as u32;
        put_frame(&mut self.buf, key, BINARY, frame.encoded_len(), |b| {
            frame.encode(b).map_err(io::Error::other)
        })?;
        self.write().await
    }

    /// Writes a control frame (a pong) carrying `payload`.
    async fn control(&mut self, opcode: u8, payload: &[u8]) -> io::Result<()> {
        let key = self.rng.next() as u32;
        put_frame(&mut self.buf, key, opcode, payload.len(), |b| {
            b.extend_from_slice(payload);
            Ok(())
        })?;
        self.write().await
    }

    /// Writes the frame in `buf` and empties it (a large one is released).
    async fn write(&mut self) -> io::Result<()> {
        self.io.write_all(&self.buf).await?;
        self.buf.clear();
        if self.buf.capacity() > 64 * 1024 {
            self.buf = Vec::new();
        }
        Ok(())
    }
}

/// Puts one final, masked frame into `buf` (emptied first): `opcode`, and
/// the `len` payload bytes that `fill` appends, masked with `key`.
fn put_frame(
    buf: &mut Vec<u8>,
    key: u32,
    opcode: u8,
    len: usize,
    fill: impl FnOnce(&mut Vec<u8>) -> io::Result<()>,
) -> io::Result<()> {
    buf.clear();
    buf.push(0x80 | opcode);
    match len {
        0..=125 => buf.push(0x80 | len as u8),
        126..=0xFFFF => {
            buf.push(0x80 | 126);
            buf.extend_from_slice(&(len as u16).to_be_bytes());
        }
        _ => {
            buf.push(0x80 | 127);
            buf.extend_from_slice(&(len as u64).to_be_bytes());
        }
    }
    let key = key.to_be_bytes();
    buf.extend_from_slice(&key);
    let start = buf.len();
    fill(buf)?;
    if buf.len() - start != len {
        return Err(io::Error::other("payload length changed while encoding"));
    }
    for (i, b) in buf[start..].iter_mut().enumerate() {
        *b ^= key[i & 3];
    }
    Ok(())
}

/// What the server sent, once a whole message or control frame is in.
#[derive(Debug, PartialEq, Eq)]
enum Incoming {
    /// A whole binary message (its fragments joined).
    Binary(Bytes),
    /// A ping, to answer with a pong carrying the same payload.
    Ping(Bytes),
    /// The server closes: its code, if any, and its reason.
    Close(Option<u16>, String),
}

/// The read side of a connection: bytes in, frames out.
struct FrameReader {
    /// The socket's read half.
    io: OwnedReadHalf,
    /// Bytes read and not yet taken as frames.
    buf: BytesMut,
    /// The fragments of a message not yet ended (`None` between messages).
    partial: Option<BytesMut>,
}

impl FrameReader {
    /// The next message or control frame; `None` at the end of the stream.
    async fn next(&mut self) -> io::Result<Option<Incoming>> {
        loop {
            if let Some(incoming) = decode(&mut self.buf, &mut self.partial)? {
                return Ok(Some(incoming));
            }
            self.buf.reserve(READ_CHUNK);
            if self.io.read_buf(&mut self.buf).await? == 0 {
                return Ok(None);
            }
        }
    }
}

/// The next whole message or control frame in `buf`, taken out of it;
/// `partial` holds a fragmented message's parts between calls.
fn decode(buf: &mut BytesMut, partial: &mut Option<BytesMut>) -> io::Result<Option<Incoming>> {
    loop {
        let Some(frame) = take_frame(buf)? else {
            return Ok(None);
        };
        match frame.opcode {
            BINARY | CONTINUATION => {
                let whole = match (partial.take(), frame.opcode) {
                    (None, BINARY) => frame.payload,
                    (Some(mut so_far), CONTINUATION) => {
                        so_far.extend_from_slice(&frame.payload);
                        so_far
                    }
                    _ => return Err(bad("a fragment out of place")),
                };
                if whole.len() > MAX_MESSAGE {
                    return Err(bad("a message above 16 MiB"));
                }
                if frame.fin {
                    return Ok(Some(Incoming::Binary(whole.freeze())));
                }
                *partial = Some(whole);
            }
            PING => return Ok(Some(Incoming::Ping(frame.payload.freeze()))),
            PONG => {}
            CLOSE => {
                let p = &frame.payload;
                let code = (p.len() >= 2).then(|| u16::from_be_bytes([p[0], p[1]]));
                let reason = String::from_utf8_lossy(p.get(2..).unwrap_or_default());
                return Ok(Some(Incoming::Close(code, reason.into_owned())));
            }
            _ => return Err(bad("a text message or an unknown opcode")),
        }
    }
}

fn bad(what: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("the server sent {what}"),
    )
}

/// One frame as it arrived, unmasked.
struct RawFrame {
    /// The last frame of its message.
    fin: bool,
    /// Its opcode.
    opcode: u8,
    /// Its payload.
    payload: BytesMut,
}

/// Takes the first frame out of `buf` if it is all there.
fn take_frame(buf: &mut BytesMut) -> io::Result<Option<RawFrame>> {
    if buf.len() < 2 {
        return Ok(None);
    }
    let (b0, b1) = (buf[0], buf[1]);
    let masked = b1 & 0x80 != 0;
    let (len, mut at) = match b1 & 0x7F {
        126 if buf.len() >= 4 => (u64::from(u16::from_be_bytes([buf[2], buf[3]])), 4),
        127 if buf.len() >= 10 => {
            let mut n = [0u8; 8];
            n.copy_from_slice(&buf[2..10]);
            (u64::from_be_bytes(n), 10)
        }
        126 | 127 => return Ok(None),
        n => (u64::from(n), 2),
    };
    let len = usize::try_from(len)
        .ok()
        .filter(|&l| l <= MAX_MESSAGE)
        .ok_or_else(|| bad("a frame above 16 MiB"))?;
    let key = if masked {
        if buf.len() < at + 4 {
            return Ok(None);
        }
        let k = [buf[at], buf[at + 1], buf[at + 2], buf[at + 3]];
        at += 4;
        Some(k)
    } else {
        None
    };
    if buf.len() < at + len {
        buf.reserve(at + len - buf.len());
        return Ok(None);
    }
    buf.advance(at);
    let mut payload = buf.split_to(len);
    if let Some(k) = key {
        for (i, b) in payload.iter_mut().enumerate() {
            *b ^= k[i & 3];
        }
    }
    Ok(Some(RawFrame {
        fin: b0 & 0x80 != 0,
        opcode: b0 & 0x0F,
        payload,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_name_the_listener() {
        assert_eq!(authority("http://127.0.0.1:5000"), Ok("127.0.0.1:5000"));
        assert_eq!(authority("ws://localhost:80/v1/ws"), Ok("localhost:80"));
        assert!(authority("https://x:1").is_err());
        assert!(authority("ws://").is_err());
    }

    #[test]
    fn frames_in_parts_fragments_and_control() {
        let mut all = Vec::new();
        // A binary message in two fragments with a ping between them, then
        // a 200-byte message (16-bit length), a pong (skipped), a masked
        // message, then a close 1000 "bye".
        all.extend_from_slice(&[0x02, 2, b'a', b'b']);
        all.extend_from_slice(&[0x89, 1, b'p']);
        all.extend_from_slice(&[0x80, 1, b'c']);
        all.extend_from_slice(&[0x82, 126, 0, 200]);
        all.extend_from_slice(&[7u8; 200]);
        all.extend_from_slice(&[0x8A, 0]);
        all.extend_from_slice(&[0x82, 0x82, 1, 2, 3, 4, b'x' ^ 1, b'y' ^ 2]);
        all.extend_from_slice(&[0x88, 5, 0x03, 0xE8, b'b', b'y', b'e']);
        let (mut buf, mut partial, mut got) = (BytesMut::new(), None, Vec::new());
        // A few bytes at a time, as reads would bring them.
        for chunk in all.chunks(3) {
            buf.extend_from_slice(chunk);
            while let Some(incoming) = decode(&mut buf, &mut partial).expect("valid") {
                got.push(incoming);
            }
        }
        assert_eq!(
            got,
            vec![
                Incoming::Ping(Bytes::from_static(b"p")),
                Incoming::Binary(Bytes::from_static(b"abc")),
                Incoming::Binary(Bytes::from(vec![7u8; 200])),
                Incoming::Binary(Bytes::from_static(b"xy")),
                Incoming::Close(Some(1000), "bye".into()),
            ]
        );
        assert!(buf.is_empty() && partial.is_none());
        let mut text = BytesMut::from(&[0x81u8, 1, b't'][..]);
        assert!(decode(&mut text, &mut None).is_err(), "text is refused");
    }

    #[test]
    fn frames_out_are_masked_and_decode_back() {
        let frame = ClientFrame {
            request_id: 7,
            traceparent: String::new(),
            request: Some(client_frame::Request::JoinRoom(JoinRoomRequest {
                room: "r".repeat(300),
                since_sequence: None,
            })),
        };
        let mut out = Vec::new();
        put_frame(&mut out, 0xA1B2_C3D4, BINARY, frame.encoded_len(), |b| {
            frame.encode(b).map_err(io::Error::other)
        })
        .expect("encodes");
        assert_eq!(out[0], 0x82, "final binary frame");
        assert_eq!(out[1], 0x80 | 126, "masked, 16-bit length");
        assert_eq!(out[4..8], [0xA1, 0xB2, 0xC3, 0xD4]);
        let mut buf = BytesMut::from(&out[..]);
        let raw = take_frame(&mut buf).expect("valid").expect("whole");
        assert!(raw.fin);
        assert_eq!(raw.opcode, BINARY);
        assert_eq!(
            ClientFrame::decode(raw.payload.freeze()).expect("decodes"),
            frame
        );
        assert!(buf.is_empty());
    }
}
