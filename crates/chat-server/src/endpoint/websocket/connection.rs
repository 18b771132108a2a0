//! One WebSocket connection, in one task: the handshake, the client
//! identified and admitted, then its session. The session core reads the
//! socket through [`Reader`] (a stream of `ClientFrame`s that answers pings
//! and turns bad input into a close code) while [`writer`] drains the
//! session's outbox to the socket, several queued frames per write; the two
//! run joined, in the same task, sharing only [`Shared`]. Over plain TCP the
//! socket's write half is also the outbox's [`Wire`] ([`PlainWire`]): a
//! frame pushed while the writer is idle is written by whoever pushed it (a
//! room's fan-out) and never wakes this task. Idle connections hold no read
//! or write buffer, and not the handshake's state.

use super::Endpoint;
use super::frame::{self, CloseCode, Decoder, Incoming, Violation};
use super::handshake::{self, Credentials, Refusal};
use crate::auth::Identity;
use crate::domain::validate;
use crate::hub::{Direct, OutboxStream, Taken, Wire};
use crate::metrics::AuthFailure;
use crate::session::{InboundError, Session};
use crate::tls::Conn;
use bytes::{Bytes, BytesMut};
use chat_proto::EncodedFrame;
use chat_proto::v1::ClientFrame;
use chat_util::lock;
use futures::task::AtomicWaker;
use futures::{FutureExt, Stream};
use prost::Message;
use std::io::IoSlice;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf, ReadHalf, WriteHalf};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::time::Instant;

/// Bytes read from the socket in one go (on the stack: nothing is held
/// between reads).
const READ_CHUNK: usize = 4096;
/// A write gathers queued frames up to about this many bytes.
const WRITE_BATCH: usize = 64 * 1024;
/// Write buffer capacity kept between writes (enough for a chat message
/// and its header); anything larger is released after the write.
const KEEP_WRITE_BUFFER: usize = 512;
/// A direct write of a frame up to this size (with its header) copies it
/// into one buffer on the stack instead of gathering two pieces.
const COPY_SMALL: usize = 512;
/// How long the client may take to answer our close before we drop it.
const CLOSE_GRACE: Duration = Duration::from_secs(2);

/// Serves `conn`, whose first bytes were `GET /v1/ws`.
pub(super) async fn serve(endpoint: Arc<Endpoint>, conn: Conn) {
    // Each phase in its own allocation: a task's future is as large as its
    // largest state, so the handshake's state would otherwise stay with
    // every idle connection for its life.
    let opening = Box::pin(open(&endpoint, conn));
    let Some(opened) = opening.await else {
        return;
    };
    let session = Box::pin(attach(&endpoint, opened));
    session.await;
}

/// A connection upgraded, its client admitted.
struct Opened {
    conn: Conn,
    session: Session,
    frames: OutboxStream,
    /// Frames an eager client sent right behind its request head.
    rest: BytesMut,
}

/// The handshake, the client identified and admitted; `None` when the
/// connection was refused (and answered).
async fn open(endpoint: &Endpoint, mut conn: Conn) -> Option<Opened> {
    // The first bytes move into the head's buffer: nothing of the
    // handshake stays alive beside the session.
    let first = BytesMut::from(conn.take_rewind());
    let upgrade = match handshake::read(
        &mut conn,
        first,
        &endpoint.origins,
        endpoint.handshake_timeout,
    )
    .await
    {
        Ok(_) if endpoint.shutdown.is_cancelled() => {
            let _ = handshake::refuse(&mut conn, Refusal::SHUTTING_DOWN).await;
            return None;
        }
        Ok(upgrade) => upgrade,
        Err(refusal) => {
            tracing::debug!(peer = ?conn.peer(), status = refusal.status, why = refusal.why, "websocket refused");
            let _ = handshake::refuse(&mut conn, refusal).await;
            return None;
        }
    };
    let identity = identify(endpoint, &upgrade.credentials);
    if handshake::accept(&mut conn, &upgrade).await.is_err() {
        return None;
    }
    // Refusals a browser must see come after the upgrade, as close codes.
    let identity = match identity {
        Ok(identity) => identity,
        Err(reason) => {
            close_at_once(conn, CloseCode::UNAUTHENTICATED, reason).await;
            return None;
        }
    };
    let address = conn.peer().map(|a| a.ip());
    let admitted = Session::admit(
        endpoint.hub.clone(),
        &endpoint.admission,
        identity,
        address,
        &endpoint.timing,
        None,
    );
    match admitted {
        Ok((session, frames)) => Some(Opened {
            conn,
            session,
            frames,
            rest: upgrade.rest,
        }),
        Err(refusal) => {
            let limit = crate::metrics::Label::as_str(refusal.reason());
            // A refusal by pace says when to come back: `rate:<ms>`.
            let reason = match refusal.retry_after_ms() {
                0 => limit.to_string(),
                ms => format!("{limit}:{ms}"),
            };
            close_at_once(conn, CloseCode::LIMITED, &reason).await;
            None
        }
    }
}

/// The opened session over its socket: the session core reading the
/// socket, joined with the writer. Not an `async fn`: the joined pair is
/// all the (boxed) future holds, not the parts it was made of as well.
fn attach(endpoint: &Endpoint, opened: Opened) -> impl Future<Output = ()> + '_ {
    let Opened {
        conn,
        session,
        mut frames,
        rest,
    } = opened;
    // The connection's place in the TCP limits, held until both halves are
    // done with the socket.
    let mut place = None;
    let (read, write) = match conn.into_tcp() {
        // Plain TCP: frames pushed while the writer is idle go straight to
        // the socket from their producer (a room's fan-out), through the
        // write half the writer shares with the outbox's wire.
        Ok((tcp, permit)) => {
            let (read, write) = tcp.into_split();
            let write = Arc::new(write);
            frames.attach(Box::new(PlainWire(write.clone())));
            place = permit;
            (ReadSide::Plain(read), WriteSide::Plain(write))
        }
        // TLS: the writer writes everything.
        Err(conn) => {
            let (read, write) = tokio::io::split(*conn);
            (ReadSide::Tls(read), WriteSide::Tls(write))
        }
    };
    let shared = Arc::new(Shared::default());
    let reader = Reader {
        io: read,
        buf: rest,
        decoder: Decoder::default(),
        max: endpoint.max_message,
        shared: shared.clone(),
        done: false,
    };
    // Both halves in this one task. The join polls both on every wake; a
    // waker per half (FuturesUnordered, measured 2026-11-30) added 0.9 KB
    // per idle connection. Deliveries mostly skip the task altogether:
    // their producer writes them (see `PlainWire`).
    futures::future::join(
        session.run(reader, endpoint.shutdown.clone()),
        writer(write, frames, shared, endpoint),
    )
    .map(move |_| drop(place))
}

/// A plain TCP connection's write half as the outbox's [`Wire`]: a frame is
/// written with its header in one vectored write, without copying.
struct PlainWire(Arc<OwnedWriteHalf>);

impl PlainWire {
    /// The socket itself, written with plain `send`s: a producer's write
    /// skips tokio's readiness bookkeeping (one of the larger costs per
    /// delivery). A `WouldBlock` here leaves that state saying "writable"
    /// for the writer, whose next write meets the `WouldBlock` itself and
    /// then waits: one extra system call, only when the socket is full.
    fn socket(&self) -> socket2::SockRef<'_> {
        let stream: &TcpStream = (*self.0).as_ref();
        socket2::SockRef::from(stream)
    }
}

impl Wire for PlainWire {
    fn write(&self, frame: &EncodedFrame) -> Direct {
        let (head, n) = frame::binary_head(frame.len());
        let total = n + frame.len();
        let written = if total <= COPY_SMALL {
            // A chat message: copied beside its header, one plain write
            // (cheaper in the kernel than gathering two pieces).
            let mut small = [0u8; COPY_SMALL];
            small[..n].copy_from_slice(&head[..n]);
            small[n..total].copy_from_slice(&frame.0);
            self.socket().send(&small[..total])
        } else {
            let bufs = [IoSlice::new(&head[..n]), IoSlice::new(&frame.0)];
            self.socket().send_vectored(&bufs)
        };
        match written {
            Ok(written) if written == n + frame.len() => Direct::Sent,
            // Nothing went out, or the socket failed: the writer writes
            // it (and meets the failure itself).
            Ok(0) | Err(_) => Direct::Blocked,
            Ok(written) if written >= n => Direct::Rest(frame.0.slice(written - n..)),
            Ok(written) => {
                let mut rest = BytesMut::with_capacity(n - written + frame.len());
                rest.extend_from_slice(&head[written..n]);
                rest.extend_from_slice(&frame.0);
                Direct::Rest(rest.freeze())
            }
        }
    }
}

/// The socket's read half.
enum ReadSide {
    /// Plain TCP.
    Plain(OwnedReadHalf),
    /// TLS.
    Tls(ReadHalf<Conn>),
}

/// The socket's write half, as the writer holds it.
enum WriteSide {
    /// Plain TCP: shared with the [`PlainWire`], so its write side shuts
    /// when the last of the two lets go (the writer's end, and the outbox's
    /// consumer end).
    Plain(Arc<OwnedWriteHalf>),
    /// TLS.
    Tls(WriteHalf<Conn>),
}

impl AsyncRead for ReadSide {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            ReadSide::Plain(read) => Pin::new(read).poll_read(cx, buf),
            ReadSide::Tls(read) => Pin::new(read).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for WriteSide {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            WriteSide::Plain(write) => {
                let tcp: &TcpStream = (**write).as_ref();
                loop {
                    std::task::ready!(tcp.poll_write_ready(cx))?;
                    match tcp.try_write(buf) {
                        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
                        written => return Poll::Ready(written),
                    }
                }
            }
            WriteSide::Tls(write) => Pin::new(write).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            WriteSide::Plain(_) => Poll::Ready(Ok(())),
            WriteSide::Tls(write) => Pin::new(write).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            // The write side shuts when its last holder drops it.
            WriteSide::Plain(_) => Poll::Ready(Ok(())),
            WriteSide::Tls(write) => Pin::new(write).poll_shutdown(cx),
        }
    }
}

/// Who the client is, from its credentials; the close reason otherwise.
fn identify(endpoint: &Endpoint, credentials: &Credentials) -> Result<Identity, &'static str> {
    let auth = &endpoint.auth;
    if !auth.is_enabled() {
        return match credentials {
            // With auth off the name is the user id.
            Credentials::Name(name)
                if validate::display_name(name).is_ok()
                    && crate::domain::user::client_user_id(name).is_ok() =>
            {
                Ok(auth.anonymous(name.clone()))
            }
            _ => Err("name"),
        };
    }
    let refused = |reason: AuthFailure| {
        endpoint.hub.metrics().auth_failures.inc(reason);
        crate::metrics::Label::as_str(reason)
    };
    match credentials {
        Credentials::Bearer(token) => auth.check(token.expose()).map_err(|e| {
            tracing::info!(reason = %e.reason(), error = %e, "authentication failed");
            refused(e.reason())
        }),
        _ => Err(refused(AuthFailure::Missing)),
    }
}

/// Closes a just-upgraded connection with `code` and `reason`.
async fn close_at_once(mut conn: Conn, code: CloseCode, reason: &str) {
    let mut out = Vec::new();
    frame::put_close(&mut out, code, reason);
    let _ = conn.write_all(&out).await;
    let _ = conn.shutdown().await;
}

/// What the reader and the writer of one connection tell each other.
#[derive(Default)]
struct Shared {
    /// What the writer owes the client besides the outbox.
    owed: Mutex<Owed>,
    /// Wakes the writer for `owed`.
    writer: AtomicWaker,
    /// Set when anything arrives; the keepalive checks and clears it.
    heard: AtomicBool,
    /// Set while the reader waits for the socket (the session is ready for
    /// the next request): only then does silence mean the client is gone,
    /// not that the session is busy and has not read the answer yet.
    reading: AtomicBool,
    /// Set by the writer when the connection is dead (the keepalive went
    /// unanswered, a write failed); the reader then ends the session.
    dead: AtomicBool,
    /// Wakes the reader for `dead`.
    reader: AtomicWaker,
}

/// Frames owed to the client that are not in the outbox.
#[derive(Default)]
struct Owed {
    /// The payload of a ping to answer (only the latest is answered).
    pong: Option<Bytes>,
    /// How the connection closes, when the reader decided (bad input, or
    /// the client's own close).
    close: Option<(CloseCode, &'static str)>,
    /// Something was added since the writer last looked.
    fresh: bool,
}

impl Shared {
    fn owe(&self, change: impl FnOnce(&mut Owed)) {
        let mut owed = lock(&self.owed);
        change(&mut owed);
        owed.fresh = true;
        drop(owed);
        self.writer.wake();
    }

    fn kill(&self) {
        self.dead.store(true, Ordering::Release);
        self.reader.wake();
    }
}

/// The session's inbound stream: `ClientFrame`s decoded from the socket's
/// binary messages. Pings are answered through the writer; bad input ends
/// the stream with an error and leaves the close code for the writer.
struct Reader {
    /// The socket's read half.
    io: ReadSide,
    /// Bytes of a message not yet whole; released when empty.
    buf: BytesMut,
    /// Fragments between frames.
    decoder: Decoder,
    /// `limits.max_frame_bytes`.
    max: usize,
    /// Shared with the writer.
    shared: Arc<Shared>,
    /// The stream has ended.
    done: bool,
}

impl Reader {
    /// Ends the stream because of `violation`, which the writer closes with.
    fn violated(
        &mut self,
        violation: Violation,
    ) -> Poll<Option<Result<ClientFrame, InboundError>>> {
        self.done = true;
        self.shared
            .owe(|owed| owed.close = Some((violation.code, violation.reason)));
        Poll::Ready(Some(Err(InboundError::Malformed(violation.reason.into()))))
    }

    /// The next whole message or control frame already in `buf`, applied.
    fn decoded(&mut self) -> Option<Poll<Option<Result<ClientFrame, InboundError>>>> {
        loop {
            let incoming = match self.decoder.next(&mut self.buf, self.max) {
                Ok(Some(incoming)) => incoming,
                Ok(None) => return None,
                Err(violation) => return Some(self.violated(violation)),
            };
            match incoming {
                Incoming::Binary(message) => {
                    return Some(match ClientFrame::decode(message) {
                        Ok(frame) => Poll::Ready(Some(Ok(frame))),
                        Err(_) => self.violated(Violation {
                            code: CloseCode::INVALID_PAYLOAD,
                            reason: "a message that is not a ClientFrame",
                        }),
                    });
                }
                Incoming::Ping(payload) => self.shared.owe(|owed| owed.pong = Some(payload)),
                Incoming::Pong => {}
                Incoming::Close(code) => {
                    self.done = true;
                    let code = code.map_or(CloseCode::NORMAL, CloseCode);
                    self.shared
                        .owe(|owed| owed.close = Some((code, "closed by the client")));
                    return Some(Poll::Ready(None));
                }
            }
        }
    }
}

impl Stream for Reader {
    type Item = Result<ClientFrame, InboundError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        if this.done {
            return Poll::Ready(None);
        }
        // The session peeking for frames already arrived, while it handles a
        // request (`Waker::noop()`, see `session::Session::read_ahead`): it
        // is not waiting on the socket, so a silence is not the client's.
        let peek = cx.waker().will_wake(Waker::noop());
        if !peek {
            this.shared.reader.register(cx.waker());
        }
        this.shared.reading.store(false, Ordering::Relaxed);
        if this.shared.dead.load(Ordering::Acquire) {
            this.done = true;
            let lost = InboundError::ConnectionLost("no answer to the keepalive ping".into());
            return Poll::Ready(Some(Err(lost)));
        }
        loop {
            if let Some(ready) = this.decoded() {
                return ready;
            }
            let mut chunk = [0u8; READ_CHUNK];
            let mut read = ReadBuf::new(&mut chunk);
            match Pin::new(&mut this.io).poll_read(cx, &mut read) {
                Poll::Pending => {
                    this.shared.reading.store(!peek, Ordering::Relaxed);
                    if this.buf.is_empty() {
                        // Idle connections hold no buffer.
                        this.buf = BytesMut::new();
                    }
                    return Poll::Pending;
                }
                Poll::Ready(Err(e)) => {
                    this.done = true;
                    return Poll::Ready(Some(Err(InboundError::ConnectionLost(e.to_string()))));
                }
                Poll::Ready(Ok(())) if read.filled().is_empty() => {
                    this.done = true;
                    return Poll::Ready(None);
                }
                Poll::Ready(Ok(())) => {
                    this.shared.heard.store(true, Ordering::Relaxed);
                    this.buf.extend_from_slice(read.filled());
                }
            }
        }
    }
}

/// Writes the session's frames until its outbox ends, answering pings and
/// pinging the client every `keepalive_interval`; then closes.
async fn writer(
    mut io: WriteSide,
    mut frames: OutboxStream,
    shared: Arc<Shared>,
    endpoint: &Endpoint,
) {
    let shared = &*shared;
    let mut out = Vec::new();
    let timing = &endpoint.timing;
    let mut keepalive = Keepalive::new(timing.keepalive_interval, timing.keepalive_timeout);
    // How to close, once the reader has said (bad input, the client's close).
    let mut closing = None;
    let ended = loop {
        // A control frame of ours to send after what the outbox holds.
        let mut control = None;
        tokio::select! {
            // Pongs and pings first: a busy outbox must not starve them.
            biased;
            () = owed(shared) => {
                let mut owed = lock(&shared.owed);
                control = owed.pong.take().map(Control::Pong);
                // Sent once the outbox ends (its last frames go first).
                closing = closing.or(owed.close.take());
            },
            tick = keepalive.due(shared) => match tick {
                Tick::Ping => control = Some(Control::Ping),
                Tick::Alive => {}
                Tick::Dead => break false,
            },
            () = std::future::poll_fn(|cx| frames.poll_ready(cx)) => {}
        }
        // From here until the outbox is drained, producers queue behind us:
        // the rest of a frame a direct write left unfinished goes first,
        // and nothing is written between our frames' bytes.
        let end = frames.take(WRITE_BATCH, |taken| match taken {
            Taken::Rest(bytes) => out.extend_from_slice(&bytes),
            Taken::Frame(frame) => frame::put_binary(&mut out, &frame.0),
        });
        match control {
            Some(Control::Pong(payload)) => frame::put_pong(&mut out, &payload),
            Some(Control::Ping) => frame::put_ping(&mut out, b""),
            None => {}
        }
        // A client that stops reading cannot hold the writer: a write that
        // does not finish within the keepalive timeout ends the connection.
        if !out.is_empty() && !flush(&mut io, &mut out, timing.keepalive_timeout).await {
            break false;
        }
        if end {
            break true;
        }
    };
    if !ended {
        // Dead or unwritable: the session ends through the reader.
        shared.kill();
        return;
    }
    let closing = closing.or_else(|| lock(&shared.owed).close.take());
    let (code, reason) = closing.unwrap_or(if endpoint.shutdown.is_cancelled() {
        (CloseCode::GOING_AWAY, "the server is shutting down")
    } else {
        (
            CloseCode::NORMAL,
            "the session ended; see the DisconnectNotice",
        )
    });
    frame::put_close(&mut out, code, reason);
    if flush(&mut io, &mut out, CLOSE_GRACE).await {
        let _ = tokio::time::timeout(CLOSE_GRACE, io.shutdown()).await;
    }
}

/// Writes `out` within `limit` and empties it (a buffer above
/// [`KEEP_WRITE_BUFFER`] is released); false when the write failed or took
/// longer.
async fn flush<W: AsyncWrite + Unpin>(io: &mut W, out: &mut Vec<u8>, limit: Duration) -> bool {
    if !matches!(
        tokio::time::timeout(limit, io.write_all(out)).await,
        Ok(Ok(()))
    ) {
        return false;
    }
    out.clear();
    // A buffer beyond one small message is not kept: an idle connection
    // holds none of what a burst (a join's backlog) needed.
    if out.capacity() > KEEP_WRITE_BUFFER {
        *out = Vec::new();
    }
    true
}

/// A control frame the writer sends on its own account.
enum Control {
    /// The answer to the client's ping, with its payload.
    Pong(Bytes),
    /// Our keepalive ping.
    Ping,
}

/// Resolves when the reader has left something new for the writer.
async fn owed(shared: &Shared) {
    std::future::poll_fn(|cx| {
        shared.writer.register(cx.waker());
        let mut owed = lock(&shared.owed);
        if std::mem::take(&mut owed.fresh) {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    })
    .await
}

/// The keepalive: a ping every `interval`; a connection from which nothing
/// arrives within `timeout` after a ping is dead.
struct Keepalive {
    /// Between pings.
    interval: Duration,
    /// For an answer (anything) after a ping.
    timeout: Duration,
    /// When the last ping went out, while its answer is awaited.
    pinged: Option<Instant>,
    /// The next moment to act.
    next: Instant,
}

/// What the keepalive says when its moment comes.
enum Tick {
    /// Send a ping now.
    Ping,
    /// Something arrived since the ping: nothing to do until the next one.
    Alive,
    /// Nothing arrived since the ping: the connection is dead.
    Dead,
}

impl Keepalive {
    fn new(interval: Duration, timeout: Duration) -> Keepalive {
        Keepalive {
            interval,
            timeout,
            pinged: None,
            next: Instant::now() + interval,
        }
    }

    /// Waits for the next moment to act and says what to do.
    async fn due(&mut self, shared: &Shared) -> Tick {
        tokio::time::sleep_until(self.next).await;
        let heard = shared.heard.swap(false, Ordering::Relaxed);
        match self.pinged.take() {
            // Silence while the reader waits on the socket: gone.
            Some(_) if !heard && shared.reading.load(Ordering::Relaxed) => Tick::Dead,
            // The session is busy with a request and has not read the
            // answer yet: look again a timeout later.
            Some(at) if !heard => {
                self.pinged = Some(at);
                self.next = Instant::now() + self.timeout;
                Tick::Alive
            }
            Some(at) => {
                self.next = at + self.interval;
                Tick::Alive
            }
            None => {
                let now = Instant::now();
                self.pinged = Some(now);
                self.next = now + self.timeout;
                Tick::Ping
            }
        }
    }
}
