//! Private service instances for tests: a `redis-server` per test on a free
//! port, spawned and reaped by the test, never the shared default one.

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Whether CI demands every service (a missing one fails instead of skips).
pub fn services_required() -> bool {
    std::env::var("CHAT_TEST_REQUIRE_SERVICES").is_ok_and(|v| v == "1")
}

fn installed(program: &str) -> bool {
    Command::new(program)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Reports a missing service: a failure in CI, a skip elsewhere.
fn missing(program: &str) -> Option<std::convert::Infallible> {
    assert!(
        !services_required(),
        "{program} is not installed and CHAT_TEST_REQUIRE_SERVICES=1"
    );
    eprintln!("skipping: {program} is not installed");
    None
}

/// A port nobody listens on right now.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// A private `redis-server`, killed when dropped.
pub struct RedisServer {
    port: u16,
    dir: std::path::PathBuf,
    child: Option<Child>,
}

impl RedisServer {
    /// Starts one, or returns `None` (skip) when `redis-server` is missing
    /// outside CI.
    pub fn start() -> Option<RedisServer> {
        if !installed("redis-server") {
            missing("redis-server")?;
        }
        let port = free_port();
        let dir =
            std::env::temp_dir().join(format!("chat-test-redis-{port}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("redis work dir");
        let mut redis = RedisServer {
            port,
            dir,
            child: None,
        };
        redis.spawn();
        Some(redis)
    }

    /// `redis://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    fn spawn(&mut self) {
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no", "--loglevel", "warning"])
            .arg("--dir")
            .arg(&self.dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn redis-server");
        self.child = Some(child);
        self.wait_ready();
    }

    /// Waits (bounded) until it answers PING.
    fn wait_ready(&self) {
        use std::io::{Read, Write};
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", self.port)) {
                let mut buf = [0u8; 7];
                if s.write_all(b"PING\r\n").is_ok()
                    && s.read_exact(&mut buf).is_ok()
                    && &buf == b"+PONG\r\n"
                {
                    return;
                }
            }
            assert!(
                Instant::now() < deadline,
                "redis-server on {} did not start",
                self.port
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Kills it abruptly (SIGKILL) and reaps it.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts it again on the same port (empty: it keeps nothing).
    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
