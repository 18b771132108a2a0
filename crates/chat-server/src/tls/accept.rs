//! The accept loop: every connection the listener accepts is admitted by
//! the TCP connection limits, then opened in a task of its own (the TLS
//! handshake, and a look at its first bytes), bounded in number and in
//! time, and handed to whoever serves it: a [`Divert`] that asked for
//! connections starting that way, or the HTTP server.

use super::Reloading;
use super::conn::Conn;
use crate::limiter::TcpAdmission;
use bytes::{Bytes, BytesMut};
use futures::Stream;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::AsyncReadExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, mpsc};
use tokio_util::sync::CancellationToken;

/// Connections being opened (TLS handshake, first bytes) at once at most;
/// connections beyond are closed at once.
const MAX_OPENING: usize = 1024;

/// The connections the HTTP server serves.
pub type Incoming = Pin<Box<dyn Stream<Item = io::Result<Conn>> + Send>>;

/// Takes connections off the listener by their first bytes, before the
/// HTTP server sees them (the WebSocket endpoint takes `GET /v1/ws`).
pub trait Divert: Send + Sync + 'static {
    /// The first bytes of the connections it takes; a connection is taken
    /// when they are followed by a space or `?` (the end of a path).
    fn prefix(&self) -> &'static [u8];

    /// Serves a taken connection; its first bytes are put back.
    fn take(&self, conn: Conn);
}

/// How a connection is opened: TLS, a divert, and the time both may take.
struct Opening {
    /// TLS, when on.
    tls: Option<Arc<Reloading>>,
    /// Who takes connections by their first bytes, if anyone.
    divert: Option<Arc<dyn Divert>>,
    /// How long the handshake and the first bytes may take together.
    timeout: Duration,
}

/// The connections from `listener` for the HTTP server (TLS ones when
/// `tls` is given), each counted by `tcp`, until `shutdown`. Those whose
/// first bytes `divert` asks for go to it instead. Opening a connection
/// (handshake, first bytes) is bounded by `timeout`.
pub fn incoming(
    listener: TcpListener,
    tls: Option<Arc<Reloading>>,
    timeout: Duration,
    tcp: Arc<TcpAdmission>,
    divert: Option<Arc<dyn Divert>>,
    shutdown: CancellationToken,
) -> Incoming {
    let (tx, rx) = mpsc::channel(64);
    let opening = Arc::new(Opening {
        tls,
        divert,
        timeout,
    });
    tokio::spawn(accept_loop(listener, opening, tcp, shutdown, tx));
    Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx))
}

async fn accept_loop(
    listener: TcpListener,
    opening: Arc<Opening>,
    tcp: Arc<TcpAdmission>,
    shutdown: CancellationToken,
    ready: mpsc::Sender<io::Result<Conn>>,
) {
    let slots = Arc::new(Semaphore::new(MAX_OPENING));
    loop {
        let accepted = tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = ready.closed() => return,
            a = listener.accept() => a,
        };
        let (stream, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                // Out of descriptors and the like: back off, do not spin.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Some(permit) = tcp.admit(peer.ip()) else {
            tracing::debug!(%peer, "connection limit reached (total or per address); connection closed");
            continue;
        };
        let _ = stream.set_nodelay(true);
        if opening.tls.is_none() && opening.divert.is_none() {
            // Nothing to wait for: straight to the HTTP server.
            if ready.send(Ok(Conn::plain(stream, permit))).await.is_err() {
                return;
            }
            continue;
        }
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            tracing::warn!(%peer, "too many connections opening (TLS handshakes, first bytes); connection closed");
            continue;
        };
        let (opening, ready) = (opening.clone(), ready.clone());
        tokio::spawn(async move {
            let opened =
                tokio::time::timeout(opening.timeout, open(&opening, stream, permit)).await;
            drop(slot);
            match opened {
                Ok(Ok((conn, true))) => {
                    if let Some(divert) = &opening.divert {
                        divert.take(conn);
                    }
                }
                Ok(Ok((conn, false))) => {
                    let _ = ready.send(Ok(conn)).await;
                }
                Ok(Err(e)) => tracing::debug!(%peer, error = %e, "connection failed while opening"),
                Err(_) => {
                    tracing::debug!(%peer, "connection timed out while opening (TLS handshake or first bytes)")
                }
            }
        });
    }
}

/// Opens a connection: its TLS handshake, then, with a divert, its first
/// bytes; says whether the divert takes it.
async fn open(
    opening: &Opening,
    stream: TcpStream,
    permit: crate::limiter::TcpPermit,
) -> io::Result<(Conn, bool)> {
    let mut conn = match &opening.tls {
        Some(tls) => Conn::tls(tls.acceptor().accept(stream).await?, permit),
        None => Conn::plain(stream, permit),
    };
    let Some(divert) = &opening.divert else {
        return Ok((conn, false));
    };
    let (first, taken) = first_bytes(&mut conn, divert.prefix()).await?;
    Ok((conn.rewound(first), taken))
}

/// Reads until the first bytes show whether they are `prefix` followed by
/// a space or `?`; returns what was read and the answer.
async fn first_bytes(conn: &mut Conn, prefix: &[u8]) -> io::Result<(Bytes, bool)> {
    let mut buf = BytesMut::with_capacity(512);
    loop {
        let n = buf.len().min(prefix.len());
        if buf[..n] != prefix[..n] {
            return Ok((buf.freeze(), false));
        }
        if buf.len() > prefix.len() {
            let taken = matches!(buf[prefix.len()], b' ' | b'?');
            return Ok((buf.freeze(), taken));
        }
        if conn.read_buf(&mut buf).await? == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
    }
}
