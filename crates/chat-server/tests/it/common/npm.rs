//! Running an npm package's own tests (`npm test`) from `cargo test`: what
//! is missing is a skip, or a failure where CI sets the package's
//! `CHAT_TEST_REQUIRE_*` variable; the runner's totals go to the log.

use super::installed;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// The repository's `web/` folder.
pub fn web() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../web")
}

/// Whether `variable` is `1`: CI demands the tests (a missing piece fails).
pub fn required(variable: &str) -> bool {
    std::env::var(variable).is_ok_and(|v| v == "1")
}

/// Reports what is missing: a failure where `variable` requires the
/// tests, a skip elsewhere.
pub fn missing(variable: &str, what: &str) {
    assert!(!required(variable), "{what} and {variable}=1");
    eprintln!("skipping: {what}");
}

/// What is missing to run the tests of `packages` (folders of `web/`):
/// Node, npm, or a package's installed dependencies.
pub fn prerequisites(packages: &[&str]) -> Option<String> {
    for program in ["node", "npm"] {
        if !installed(program) {
            return Some(format!("{program} is not installed"));
        }
    }
    packages
        .iter()
        .find(|package| !web().join(package).join("node_modules").is_dir())
        .map(|package| {
            format!("web/{package}/node_modules is missing (run `npm ci` in web/{package})")
        })
}

/// Runs `npm test` in `web/<package>` with `env`; panics with its output
/// when it fails; returns its standard output.
pub fn npm_test(package: &str, env: &[(&str, &std::ffi::OsStr)]) -> String {
    let output = Command::new("npm")
        .arg("test")
        .current_dir(web().join(package))
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .output()
        .expect("npm runs");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "`npm test` in web/{package} failed ({}):\n{stdout}\n{stderr}",
        output.status
    );
    // The runner's totals (`# tests 24`, `# pass 24`, …), for the log.
    for line in stdout.lines().filter(|l| {
        ["# tests", "# pass", "# fail", "# skipped"]
            .iter()
            .any(|p| l.starts_with(p))
    }) {
        eprintln!("web/{package} {}", line.trim_start_matches("# "));
    }
    stdout
}
