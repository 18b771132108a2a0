//! The test harness: real servers in-process on port 0, real clients over
//! real sockets, private Redis/NATS/PostgreSQL services, and bounded waits
//! (never a sleep that hopes). Each starts in one line:
//!
//! ```ignore
//! let server = TestServer::start(config()).await; // in-process; stops when dropped
//! let (alice, mut events) = connect(&server.url(), "alice").await;
//! let ready = http(server.addr(), HttpRequest::get("/health/ready")).await;
//! let process = ServerProcess::start(&[("CHAT_SERVER_ID", "c")]).await; // killed when dropped
//! let redis = or_skip!(redis()); // likewise nats(), redis_cluster(); killed when dropped
//! let db = or_skip!(postgres_db().await); // a fresh database, dropped afterwards
//! ```
//!
//! `CHAT_TEST_LOG=1 cargo test -p chat-server --test it …` shows the
//! servers' logs (filter: `RUST_LOG`, else `info`) in the output of each
//! failing test; see [`log`].

pub mod collector;
mod events;
mod log;
pub mod npm;
mod own_process;
mod process;
mod prometheus;
mod raw;
mod server;
pub mod services;

pub use chat_server::http_client::{HttpRequest, HttpResponse};
pub use events::{
    client_config, connect, connect_with, expect_event, expect_message, expect_no_event,
    expect_typists, member_joined, member_left, presence_event, refusal, typists,
};
pub use log::capture_logs;
pub use own_process::in_own_process;
pub use process::{BIN, ServerProcess, server_command};
pub use prometheus::{parse_metrics, scrape_metrics};
pub use raw::RawSession;
pub use server::{TestServer, http, wait_ready};
pub(crate) use services::or_skip;
pub use services::{nats, postgres_db, redis, redis_cluster};

use chat_server::Config;
use std::time::Duration;

/// Upper bound on any single wait in a test.
pub const WAIT: Duration = Duration::from_secs(10);

/// A configuration for tests: port 0, notifications off, in-memory store,
/// no rate limits, a short drain.
pub fn config() -> Config {
    let mut c = Config {
        listen: "127.0.0.1:0".parse().unwrap(),
        ..Config::default()
    };
    c.notifications.enabled = false;
    c.store.url = "memory".into();
    // Tests send as fast as they can; limits.rs sets its own limits.
    c.limits.send_rate = 0.0;
    c.limits.user_send_rate = 0.0;
    c.limits.join_rate = 0.0;
    c.limits.user_join_rate = 0.0;
    c.limits.user_history_rate = 0.0;
    c.shutdown.drain_timeout = Duration::from_secs(3);
    // Restarts in tests bring clients back quickly; lifecycle.rs tests the
    // spread itself.
    c.session.reconnect_spread = Duration::from_millis(200);
    c
}

/// Whether `program --version` runs (a service or a tool is installed).
pub fn installed(program: &str) -> bool {
    std::process::Command::new(program)
        .arg("--version")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}
