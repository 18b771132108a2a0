//! The web chat page in a real browser: `npm test` in `web/tests`
//! (playwright-core driving the system's headless Chromium, never a
//! downloaded one) against this crate's `chat-server` binary and the `chat`
//! console client — two pages and a console client in one room, a reload,
//! a server restart with two pages open, a foreign Origin, a server with
//! authentication, keyboard only, the operator's view (`/admin/`: its
//! instances, rooms, members, rate, recent errors and broadcast form),
//! screenshots under `target/web-screenshots/`, and the check that the committed page is
//! what `web/page` builds. Skipped, saying why, without Node, npm, the
//! packages (`npm ci` in `web/client`, `web/page`, `web/tests`) or
//! Chromium, except where `CHAT_TEST_REQUIRE_BROWSER=1` (CI) makes that a
//! failure.

use crate::common::npm;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// The variable with which CI demands these tests.
const REQUIRED: &str = "CHAT_TEST_REQUIRE_BROWSER";

/// The system's Chromium, as web/tests looks for it.
fn chromium() -> Option<PathBuf> {
    let configured = std::env::var_os("CHROMIUM_PATH").map(PathBuf::from);
    configured
        .into_iter()
        .chain(["/usr/bin/chromium", "/usr/bin/chromium-browser"].map(PathBuf::from))
        .find(|p| p.is_file())
}

/// The `chat` console client: `CHAT_CLIENT_BIN`, or `chat` beside this
/// crate's `chat-server` (a workspace `cargo test` builds both, as
/// `chat-client`'s tests need it). When it is not there (`cargo test -p
/// chat-server` alone), it is built with the same profile into the same
/// target folder.
fn chat_client() -> Result<PathBuf, String> {
    if let Some(path) = std::env::var_os("CHAT_CLIENT_BIN") {
        return Ok(PathBuf::from(path));
    }
    let server = Path::new(env!("CARGO_BIN_EXE_chat-server"));
    let profile_dir = server.parent().ok_or("chat-server has no folder")?;
    let chat = profile_dir.join(format!("chat{}", std::env::consts::EXE_SUFFIX));
    if !chat.is_file() {
        build_chat_client(profile_dir)?;
    }
    Ok(chat)
}

/// `cargo build -p chat-client --bin chat` into the target folder holding `profile_dir`.
fn build_chat_client(profile_dir: &Path) -> Result<(), String> {
    let target = profile_dir.parent().ok_or("the profile has no folder")?;
    let mut build = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    build.args(["build", "--quiet", "-p", "chat-client", "--bin", "chat"]);
    match profile_dir.file_name().and_then(|n| n.to_str()) {
        Some("debug") => {}
        Some("release") => {
            build.arg("--release");
        }
        Some(other) => {
            build.args(["--profile", other]);
        }
        None => return Err("chat-server's profile folder has no name".into()),
    }
    eprintln!("building the chat console client for the browser tests");
    let status = build
        .env("CARGO_TARGET_DIR", target)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .stdin(Stdio::null())
        .status()
        .map_err(|e| format!("cargo build of the chat client: {e}"))?;
    if !status.success() {
        return Err(format!("cargo build of the chat client failed ({status})"));
    }
    Ok(())
}

/// What is missing to run the browser tests, if anything.
fn prerequisites() -> Option<String> {
    if let Some(what) = npm::prerequisites(&["client", "page", "tests"]) {
        return Some(what);
    }
    if chromium().is_none() {
        return Some("no Chromium (apt-get install chromium, or set CHROMIUM_PATH)".into());
    }
    None
}

#[test]
fn the_web_page_passes_its_browser_tests() {
    if let Some(what) = prerequisites() {
        return npm::missing(REQUIRED, &what);
    }
    let client = match chat_client() {
        Ok(path) => path,
        Err(why) => return npm::missing(REQUIRED, &why),
    };
    let server = std::ffi::OsStr::new(env!("CARGO_BIN_EXE_chat-server"));
    let stdout = npm::npm_test(
        "tests",
        &[
            ("CHAT_SERVER_BIN", server),
            ("CHAT_CLIENT_BIN", client.as_os_str()),
        ],
    );
    let skipped = stdout
        .lines()
        .find_map(|l| l.strip_prefix("# skipped "))
        .and_then(|n| n.trim().parse::<u32>().ok())
        .unwrap_or(0);
    assert!(
        !npm::required(REQUIRED) || skipped == 0,
        "browser tests were skipped although CHAT_TEST_REQUIRE_BROWSER=1:\n{stdout}"
    );
}
