//! A real chat server in the test's process for the load tool to drive:
//! port 0, memory store, no periodic notifications.

use chat_server::{Config, RunningServer};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// A running server and its URL; [`TestServer::stop`] shuts it down.
pub struct TestServer {
    pub url: String,
    server: RunningServer,
    shutdown: CancellationToken,
}

impl TestServer {
    pub async fn start() -> TestServer {
        let mut config = Config {
            listen: "127.0.0.1:0".parse().expect("address"),
            ..Config::default()
        };
        config.notifications.enabled = false;
        config.store.url = "memory".into();
        // A load generator: as bench/run.sh, no rate or connection limits.
        config.limits.send_rate = 0.0;
        config.limits.user_send_rate = 0.0;
        config.limits.join_rate = 0.0;
        config.limits.user_join_rate = 0.0;
        config.limits.max_connections_per_address = 0;
        config.limits.max_connections_per_user = 0;
        config.shutdown.drain_timeout = Duration::from_secs(3);
        let shutdown = CancellationToken::new();
        let server = chat_server::start(config, shutdown.clone())
            .await
            .expect("server starts");
        TestServer {
            url: format!("http://{}", server.addr()),
            server,
            shutdown,
        }
    }

    /// Shuts the server down, waiting at most 10 s.
    pub async fn stop(self) {
        self.shutdown.cancel();
        let _ = tokio::time::timeout(Duration::from_secs(10), self.server.wait()).await;
    }
}
