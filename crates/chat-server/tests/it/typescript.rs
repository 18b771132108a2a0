//! The TypeScript client library (`web/client`): its own tests, `npm test`
//! there (unit tests on a fake WebSocket, and integration tests against
//! this crate's `chat-server` binary over `/v1/ws`), run as part of `cargo
//! test`. Skipped when Node or npm is not installed or the package's
//! dependencies are not (`npm ci` in `web/client`), except where
//! `CHAT_TEST_REQUIRE_NODE=1` (CI) makes that a failure.

use std::path::PathBuf;
use std::process::{Command, Stdio};

/// Whether CI demands Node (a missing one fails instead of skips).
fn node_required() -> bool {
    std::env::var("CHAT_TEST_REQUIRE_NODE").is_ok_and(|v| v == "1")
}

fn installed(program: &str) -> bool {
    Command::new(program)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Reports what is missing: a failure in CI, a skip elsewhere.
fn missing(what: &str) {
    assert!(!node_required(), "{what} and CHAT_TEST_REQUIRE_NODE=1");
    eprintln!("skipping: {what}");
}

/// `web/client`, the package's folder.
fn package_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../web/client")
}

#[test]
fn the_typescript_client_passes_its_unit_and_integration_tests() {
    let dir = package_dir();
    for program in ["node", "npm"] {
        if !installed(program) {
            return missing(&format!("{program} is not installed"));
        }
    }
    if !dir.join("node_modules").is_dir() {
        return missing("web/client/node_modules is missing (run `npm ci` in web/client)");
    }
    let output = Command::new("npm")
        .arg("test")
        .current_dir(&dir)
        .env("CHAT_SERVER_BIN", env!("CARGO_BIN_EXE_chat-server"))
        .stdin(Stdio::null())
        .output()
        .expect("npm runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "`npm test` in web/client failed ({}):\n{stdout}\n{stderr}",
        output.status
    );
    // The runner's totals (`# tests 24`, `# pass 24`, …), for the log.
    for line in stdout.lines().filter(|l| {
        ["# tests", "# pass", "# fail", "# skipped"]
            .iter()
            .any(|p| l.starts_with(p))
    }) {
        eprintln!("web/client {}", line.trim_start_matches("# "));
    }
}
