//! A server running in the test's process, and HTTP requests to it.

use super::WAIT;
use chat_server::http_client::{HttpClient, HttpRequest, HttpResponse};
use chat_server::{Config, RunningServer};
use std::net::SocketAddr;
use std::time::Duration;
use tokio_util::sync::{CancellationToken, DropGuard};

/// A server running in this process, on the test's runtime; told to stop
/// when dropped (a test that ends early leaves nothing serving), or
/// stopped and awaited with [`TestServer::stop`].
pub struct TestServer {
    /// The running server: its addresses, id and hub.
    pub server: RunningServer,
    /// Cancels the server's shutdown token when dropped.
    shutdown: DropGuard,
}

impl TestServer {
    /// Starts a server on `config` (see [`super::config`]).
    pub async fn start(config: Config) -> TestServer {
        super::capture_logs();
        let shutdown = CancellationToken::new();
        let server = chat_server::start(config, shutdown.clone())
            .await
            .expect("server starts");
        TestServer {
            server,
            shutdown: shutdown.drop_guard(),
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.server.addr()
    }

    /// `http://` and the address, for clients.
    pub fn url(&self) -> String {
        format!("http://{}", self.server.addr())
    }

    /// Shuts down and waits for the drain; returns how long it took.
    pub async fn stop(self) -> Duration {
        let started = tokio::time::Instant::now();
        drop(self.shutdown);
        tokio::time::timeout(Duration::from_secs(30), self.server.wait())
            .await
            .expect("server stops within 30 s")
            .expect("server stops cleanly");
        started.elapsed()
    }
}

/// Largest answer the tests read (a whole `/metrics` page fits).
const MAX_RESPONSE_BYTES: usize = 4 << 20;

/// Sends `request` to the server at `addr` over plain HTTP and returns its
/// answer; panics when there is none within [`WAIT`].
pub async fn http(addr: SocketAddr, request: HttpRequest<'_>) -> HttpResponse {
    HttpClient::new(addr)
        .timeout(WAIT)
        .max_response_bytes(MAX_RESPONSE_BYTES)
        .send(&request)
        .await
        .unwrap_or_else(|e| panic!("{} {} on {addr}: {e}", request.method, request.path))
}

/// Polls `/health/ready` (bounded) until it says `ready` (or not).
pub async fn wait_ready(server: &TestServer, ready: bool) {
    let want = if ready { 200 } else { 503 };
    let deadline = tokio::time::Instant::now() + WAIT;
    while http(server.addr(), HttpRequest::get("/health/ready"))
        .await
        .status
        != want
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "readiness never became {want}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
