//! `chat-server` as a child process, for what only a process shows: its
//! command line and environment, signals and exit codes, JSON log lines,
//! and a kill without a goodbye.

use super::WAIT;
use std::ffi::OsStr;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// The `chat-server` binary built with these tests.
pub const BIN: &str = env!("CARGO_BIN_EXE_chat-server");

/// A `chat-server` command with `env` and nothing inherited that could be
/// read as server configuration (`CHAT_*`, `RUST_LOG`).
pub fn server_command<K, V>(env: impl IntoIterator<Item = (K, V)>) -> Command
where
    K: AsRef<OsStr>,
    V: AsRef<OsStr>,
{
    let mut cmd = Command::new(BIN);
    for (key, _) in std::env::vars() {
        if key.starts_with("CHAT_") || key == "RUST_LOG" {
            cmd.env_remove(key);
        }
    }
    cmd.envs(env);
    cmd
}

/// A running `chat-server` process, killed (SIGKILL) when dropped.
pub struct ServerProcess {
    /// The process, until it is killed or has exited.
    child: Option<Child>,
    /// The address it listens on, from its `listening` log line.
    pub addr: String,
    /// Reads its log (stderr) until it exits; returns every line.
    logs: Option<JoinHandle<Vec<String>>>,
}

impl ServerProcess {
    /// Starts `chat-server` on a free port with JSON logs at `info`, the
    /// in-memory store, and `env` on top (see [`server_command`]); waits
    /// (bounded) until it logs the address it listens on.
    pub async fn start(env: &[(&str, &str)]) -> ServerProcess {
        let mut child = server_command([("CHAT_STORE__URL", "memory"), ("RUST_LOG", "info")])
            .envs(env.iter().copied())
            .args(["--listen", "127.0.0.1:0", "--log-format", "json"])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start chat-server");
        let stderr = child.stderr.take().expect("piped stderr");
        let (addr_tx, mut addr_rx) = tokio::sync::mpsc::unbounded_channel();
        let logs = std::thread::spawn(move || {
            let mut lines = Vec::new();
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Ok(v) = serde_json::from_str::<serde_json::Value>(&line)
                    && let Some(addr) = v["addr"].as_str()
                {
                    let _ = addr_tx.send(addr.to_string());
                }
                lines.push(line);
            }
            lines
        });
        let addr = tokio::time::timeout(WAIT, addr_rx.recv())
            .await
            .ok()
            .flatten()
            .expect("the server logs its address");
        ServerProcess {
            child: Some(child),
            addr,
            logs: Some(logs),
        }
    }

    /// `http://` and the address, for clients.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Kills it abruptly (SIGKILL) and reaps it.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Sends SIGTERM; waits (bounded) for the exit; returns the status,
    /// how long it took, and every log line.
    pub async fn terminate(mut self) -> (ExitStatus, Duration, Vec<String>) {
        let mut child = self.child.take().expect("running");
        let started = Instant::now();
        let killed = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .unwrap();
        assert!(killed.success());
        let status = loop {
            if let Some(status) = child.try_wait().unwrap() {
                break status;
            }
            assert!(started.elapsed() < Duration::from_secs(10), "did not exit");
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        let took = started.elapsed();
        let logs = self.logs.take().expect("read once").join().unwrap();
        (status, took, logs)
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        self.kill();
    }
}
