//! The WebSocket transport (`/v1/ws`, docs/PROTOCOL.md): the same session
//! core as gRPC, for browsers and anything else that speaks WebSocket.
//! The listener diverts connections that start with `GET /v1/ws` here
//! ([`Divert`]); each is then one task that does the handshake
//! (`handshake`), identifies and admits the client, and runs its session
//! with the socket's reader as the session's inbound stream and a writer
//! draining the outbox, joined in that one task (`connection`). Framing is
//! `frame`.

mod connection;
mod frame;
mod handshake;

use crate::auth::Authenticator;
use crate::config::{SessionConfig, WebSocketConfig};
use crate::hub::Hub;
use crate::limiter::Admission;
use crate::tls::{Conn, Divert};
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use handshake::{PATH, SUBPROTOCOL};

/// The endpoint: what every WebSocket connection needs. Cheap to clone.
#[derive(Clone)]
pub struct WebSocket(Arc<Endpoint>);

/// What the connections share.
struct Endpoint {
    /// The instance's state every session works on.
    hub: Arc<Hub>,
    /// Checks bearer tokens (auth on) or takes the given name (auth off).
    auth: Arc<Authenticator>,
    /// Connection limits (total, per address, per user), as on gRPC.
    admission: Arc<Admission>,
    /// Idle timeout, keepalive and lifetime of each session.
    timing: SessionConfig,
    /// Which browser origins may open sessions.
    origins: handshake::Origins,
    /// How long the request head may take to arrive.
    handshake_timeout: Duration,
    /// Largest message a client may send (`limits.max_frame_bytes`).
    max_message: usize,
    /// Refuses new sessions and ends running ones when cancelled.
    shutdown: CancellationToken,
    /// Where connection tasks run, so the drain waits for their goodbyes.
    tasks: TaskTracker,
}

/// What [`WebSocket::new`] is built from.
pub struct Parts {
    /// The hub.
    pub hub: Arc<Hub>,
    /// The authenticator.
    pub auth: Arc<Authenticator>,
    /// The connection limits.
    pub admission: Arc<Admission>,
    /// Session timing.
    pub timing: SessionConfig,
    /// `websocket.*`.
    pub config: WebSocketConfig,
    /// How long a request head may take (`tls.handshake_timeout`).
    pub handshake_timeout: Duration,
    /// `limits.max_frame_bytes`.
    pub max_message: usize,
    /// The server's shutdown.
    pub shutdown: CancellationToken,
    /// The server's task tracker.
    pub tasks: TaskTracker,
}

impl WebSocket {
    /// The endpoint over `parts`.
    pub fn new(parts: Parts) -> WebSocket {
        let origins =
            handshake::Origins::new(&parts.config.allowed_origins, parts.auth.is_enabled());
        WebSocket(Arc::new(Endpoint {
            hub: parts.hub,
            auth: parts.auth,
            admission: parts.admission,
            timing: parts.timing,
            origins,
            handshake_timeout: parts.handshake_timeout,
            max_message: parts.max_message,
            shutdown: parts.shutdown,
            tasks: parts.tasks,
        }))
    }
}

impl Divert for WebSocket {
    fn prefix(&self) -> &'static [u8] {
        b"GET /v1/ws"
    }

    fn take(&self, conn: Conn) {
        let endpoint = self.0.clone();
        self.0.tasks.spawn(connection::serve(endpoint, conn));
    }
}
