//! The accept loop: every connection the listener accepts is admitted by
//! the TCP connection limits; a TLS connection's handshake runs in a task
//! of its own, bounded in number and in time; then the connection goes to
//! the HTTP server, offered to the [`Divert`] if there is one: its first
//! read decides whether the divert takes it (see [`Conn`]).

use super::Reloading;
use super::conn::Conn;
use crate::limiter::TcpAdmission;
use futures::Stream;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, mpsc};
use tokio_util::sync::CancellationToken;

/// TLS handshakes in progress at once at most; connections beyond are
/// closed at once.
const MAX_HANDSHAKES: usize = 1024;

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

/// The connections from `listener` for the HTTP server (TLS ones when
/// `tls` is given, each handshake bounded by `timeout`), each counted by
/// `tcp`, until `shutdown`; each offered to `divert` on its first read.
pub fn incoming(
    listener: TcpListener,
    tls: Option<Arc<Reloading>>,
    timeout: Duration,
    tcp: Arc<TcpAdmission>,
    divert: Option<Arc<dyn Divert>>,
    shutdown: CancellationToken,
) -> Incoming {
    let (tx, rx) = mpsc::channel(64);
    tokio::spawn(accept_loop(
        listener, tls, timeout, tcp, divert, shutdown, tx,
    ));
    Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx))
}

async fn accept_loop(
    listener: TcpListener,
    tls: Option<Arc<Reloading>>,
    timeout: Duration,
    tcp: Arc<TcpAdmission>,
    divert: Option<Arc<dyn Divert>>,
    shutdown: CancellationToken,
    ready: mpsc::Sender<io::Result<Conn>>,
) {
    let handshakes = Arc::new(Semaphore::new(MAX_HANDSHAKES));
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
        let Some(tls) = &tls else {
            let conn = Conn::plain(stream, permit)
                .first_bytes_within(timeout)
                .offered_to(divert.clone());
            if ready.send(Ok(conn)).await.is_err() {
                return;
            }
            continue;
        };
        let Ok(slot) = handshakes.clone().try_acquire_owned() else {
            tracing::warn!(%peer, "too many TLS handshakes in progress; connection closed");
            continue;
        };
        let (acceptor, divert, ready) = (tls.acceptor(), divert.clone(), ready.clone());
        tokio::spawn(async move {
            match tokio::time::timeout(timeout, acceptor.accept(stream)).await {
                Ok(Ok(stream)) => {
                    drop(slot);
                    let conn = Conn::tls(stream, permit)
                        .first_bytes_within(timeout)
                        .offered_to(divert);
                    let _ = ready.send(Ok(conn)).await;
                }
                Ok(Err(e)) => tracing::debug!(%peer, error = %e, "tls handshake failed"),
                Err(_) => tracing::debug!(%peer, "tls handshake timed out"),
            }
        });
    }
}
