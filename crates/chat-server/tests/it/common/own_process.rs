//! Tests that need the test process to themselves.
//!
//! A few tests install process-wide state the server keeps in statics: the
//! global `tracing` subscriber (`chat_server::telemetry::init`, which can
//! be installed once per process, writes to the real stderr, owns the
//! filter that `PUT /admin/log-level` changes, and switches traces on for
//! every server in the process). In a process shared with the other tests
//! they would change what those tests' servers do (trace every request,
//! log at another level) and clash with [`super::capture_logs`]. Such a
//! test starts with `if !in_own_process() { return; }`: run normally, it
//! runs this test binary again for itself alone and passes or fails with
//! that run; in that run it goes ahead.

use std::process::Command;

/// Set (to the test's name) in the child process that runs one test alone.
const CHILD: &str = "CHAT_TEST_OWN_PROCESS";

/// Whether this process is such a child.
pub(super) fn is_child() -> bool {
    std::env::var_os(CHILD).is_some()
}

/// `true` in a process of the calling test's own; otherwise runs the
/// calling test in one (this binary, `--exact` its name), panics with its
/// output if it fails, and returns `false`.
pub fn in_own_process() -> bool {
    // The test harness names each test's thread after the test.
    let thread = std::thread::current();
    let name = thread.name().expect("called from a test's thread");
    if std::env::var(CHILD).is_ok_and(|v| v == name) {
        return true;
    }
    let out = Command::new(std::env::current_exe().expect("the test binary"))
        .args([name, "--exact", "--test-threads=1"])
        .env(CHILD, name)
        .output()
        .expect("run the test binary");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    // Shown with the parent's output (on failure, or with --nocapture).
    println!("{name}, in a process of its own:\n{stdout}{stderr}");
    assert!(out.status.success(), "{name} failed in its own process");
    // A name that matched nothing would pass without running anything.
    assert!(
        stdout.contains("test result: ok. 1 passed"),
        "{name} did not run in its own process"
    );
    false
}
