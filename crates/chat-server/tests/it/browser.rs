//! The web chat page in a real browser: `npm test` in `web/tests`
//! (playwright-core driving the system's headless Chromium, never a
//! downloaded one) against this crate's `chat-server` binary and the `chat`
//! console client — two pages and a console client in one room, a reload,
//! a server restart with two pages open, a foreign Origin, a server with
//! authentication, keyboard only, screenshots under
//! `target/web-screenshots/`, and the check that the committed page is
//! what `web/page` builds. Skipped, saying why, without Node, npm, the
//! packages (`npm ci` in `web/client`, `web/page`, `web/tests`) or
//! Chromium, except where `CHAT_TEST_REQUIRE_BROWSER=1` (CI) makes that a
//! failure.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// Whether CI demands the browser tests (a missing piece fails instead of skips).
fn browser_required() -> bool {
    std::env::var("CHAT_TEST_REQUIRE_BROWSER").is_ok_and(|v| v == "1")
}

/// Reports what is missing: a failure in CI, a skip elsewhere.
fn missing(what: &str) {
    assert!(
        !browser_required(),
        "{what} and CHAT_TEST_REQUIRE_BROWSER=1"
    );
    eprintln!("skipping the browser tests: {what}");
}

fn installed(program: &str) -> bool {
    Command::new(program)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// The repository's `web/` folder.
fn web() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../web")
}

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
    for program in ["node", "npm"] {
        if !installed(program) {
            return Some(format!("{program} is not installed"));
        }
    }
    for package in ["client", "page", "tests"] {
        if !web().join(package).join("node_modules").is_dir() {
            return Some(format!(
                "web/{package}/node_modules is missing (run `npm ci` in web/{package})"
            ));
        }
    }
    if chromium().is_none() {
        return Some("no Chromium (apt-get install chromium, or set CHROMIUM_PATH)".into());
    }
    None
}

#[test]
fn the_web_page_passes_its_browser_tests() {
    if let Some(what) = prerequisites() {
        return missing(&what);
    }
    let client = match chat_client() {
        Ok(path) => path,
        Err(why) => return missing(&why),
    };
    let output = Command::new("npm")
        .arg("test")
        .current_dir(web().join("tests"))
        .env("CHAT_SERVER_BIN", env!("CARGO_BIN_EXE_chat-server"))
        .env("CHAT_CLIENT_BIN", &client)
        .stdin(Stdio::null())
        .output()
        .expect("npm runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "`npm test` in web/tests failed ({}):\n{stdout}\n{stderr}",
        output.status
    );
    // The runner's totals (`# tests 11`, `# pass 11`, …), for the log.
    for line in stdout.lines().filter(|l| {
        ["# tests", "# pass", "# fail", "# skipped"]
            .iter()
            .any(|p| l.starts_with(p))
    }) {
        eprintln!("web/tests {}", line.trim_start_matches("# "));
    }
    let skipped = stdout
        .lines()
        .find_map(|l| l.strip_prefix("# skipped "))
        .and_then(|n| n.trim().parse::<u32>().ok())
        .unwrap_or(0);
    assert!(
        !browser_required() || skipped == 0,
        "browser tests were skipped although CHAT_TEST_REQUIRE_BROWSER=1:\n{stdout}"
    );
}
