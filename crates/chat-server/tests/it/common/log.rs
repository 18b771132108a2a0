//! The switch that shows server logs in a failing test's output.
//!
//! Off by default: the servers log nowhere and the output stays quiet.
//! With `CHAT_TEST_LOG=1`, the first server started installs a `tracing`
//! subscriber for the whole test process that writes through the test
//! harness's capture (`with_test_writer`): each test's servers log into
//! that test's captured output, which `cargo test` prints when the test
//! fails (or always, with `-- --nocapture`). The filter is `RUST_LOG` when
//! set, else `info`:
//!
//! ```sh
//! CHAT_TEST_LOG=1 cargo test -p chat-server --test it cluster::redis
//! CHAT_TEST_LOG=1 RUST_LOG=chat_server=debug cargo test -p chat-server --test it chat::
//! ```
//!
//! Tests that install the server's own logger ([`super::in_own_process`])
//! keep theirs: there the switch does nothing.

use std::sync::Once;
use tracing_subscriber::EnvFilter;

/// The environment variable that turns the switch on (`1`).
const SWITCH: &str = "CHAT_TEST_LOG";

/// Installs the test subscriber, once per process, if the switch is on.
pub fn capture_logs() {
    static INSTALL: Once = Once::new();
    if std::env::var(SWITCH).is_ok_and(|v| v == "1") && !super::own_process::is_child() {
        INSTALL.call_once(|| {
            let filter =
                EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
            // Fails only if a subscriber is already installed: keep that one.
            let _ = tracing_subscriber::fmt()
                .with_env_filter(filter)
                .with_test_writer()
                .with_ansi(false)
                .try_init();
        });
    }
}
