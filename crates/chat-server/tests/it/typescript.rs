//! The TypeScript client library (`web/client`): its own tests, `npm test`
//! there (unit tests on a fake WebSocket, and integration tests against
//! this crate's `chat-server` binary over `/v1/ws`), run as part of `cargo
//! test`. Skipped when Node or npm is not installed or the package's
//! dependencies are not (`npm ci` in `web/client`), except where
//! `CHAT_TEST_REQUIRE_NODE=1` (CI) makes that a failure.

use crate::common::npm;

/// The variable with which CI demands these tests.
const REQUIRED: &str = "CHAT_TEST_REQUIRE_NODE";

#[test]
fn the_typescript_client_passes_its_unit_and_integration_tests() {
    if let Some(what) = npm::prerequisites(&["client"]) {
        return npm::missing(REQUIRED, &what);
    }
    let server = std::ffi::OsStr::new(env!("CARGO_BIN_EXE_chat-server"));
    npm::npm_test("client", &[("CHAT_SERVER_BIN", server)]);
}
