//! Private service instances for tests: a `redis-server`, `nats-server`
//! or three-node Redis Cluster per test on free ports, spawned and reaped
//! by the test, and a fresh PostgreSQL database, never the shared default
//! ones. Each starts in one line, skipping the test when the program is
//! missing (a failure in CI, see [`services_required`]):
//! `let redis = or_skip!(redis());`.

use super::installed;
use std::io::{Read, Write};
use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The service `$start` gives, or ends the calling test early (a skip)
/// when it is missing outside CI: `let db = or_skip!(postgres_db().await);`.
macro_rules! or_skip {
    ($start:expr) => {
        match $start {
            Some(service) => service,
            None => return,
        }
    };
}
pub(crate) use or_skip;

/// Whether CI demands every service (a missing one fails instead of skips).
pub fn services_required() -> bool {
    std::env::var("CHAT_TEST_REQUIRE_SERVICES").is_ok_and(|v| v == "1")
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

/// Kills and reaps a spawned service, if it runs.
fn reap(child: &mut Option<Child>) {
    if let Some(mut child) = child.take() {
        let _ = child.kill();
        let _ = child.wait();
    }
}

/// Waits (bounded) until a connection to `port` passes `greeting`.
fn wait_until_answers(
    program: &str,
    port: u16,
    greeting: impl Fn(&mut std::net::TcpStream) -> bool,
) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Ok(mut stream) = std::net::TcpStream::connect(("127.0.0.1", port))
            && greeting(&mut stream)
        {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{program} on {port} did not start"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A port nobody listens on right now.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// A private `nats-server` on a free port, or `None` (skip) when
/// `nats-server` is missing outside CI.
pub fn nats() -> Option<NatsServer> {
    nats_with_config("")
}

/// [`nats`] with `config` (nats-server configuration lines, e.g.
/// `max_payload: 8192`).
pub fn nats_with_config(config: &str) -> Option<NatsServer> {
    if !installed("nats-server") {
        missing("nats-server")?;
    }
    let port = free_port();
    let config = (!config.is_empty()).then(|| {
        let path =
            std::env::temp_dir().join(format!("chat-test-nats-{port}-{}.conf", std::process::id()));
        std::fs::write(&path, config).expect("write the nats-server configuration");
        path
    });
    let mut nats = NatsServer {
        port,
        child: None,
        config,
    };
    nats.spawn();
    Some(nats)
}

/// A private `nats-server`, killed when dropped.
pub struct NatsServer {
    /// Kept across restarts, so clients find it again.
    port: u16,
    /// The process, while it runs.
    child: Option<Child>,
    /// Its configuration file, if any (removed when dropped).
    config: Option<std::path::PathBuf>,
}

impl NatsServer {
    /// `nats://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    fn spawn(&mut self) {
        let mut command = Command::new("nats-server");
        if let Some(config) = &self.config {
            command.arg("-c").arg(config);
        }
        let child = command
            .args(["-a", "127.0.0.1", "-p", &self.port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn nats-server");
        self.child = Some(child);
        // Ready when it greets a connection with INFO.
        wait_until_answers("nats-server", self.port, |s| {
            let mut buf = [0u8; 4];
            s.read_exact(&mut buf).is_ok() && &buf == b"INFO"
        });
    }

    /// Kills it abruptly (SIGKILL) and reaps it.
    pub fn kill(&mut self) {
        reap(&mut self.child);
    }

    /// Starts it again on the same port.
    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        self.kill();
        if let Some(config) = &self.config {
            let _ = std::fs::remove_file(config);
        }
    }
}

/// A private `redis-server` on a free port, or `None` (skip) when
/// `redis-server` is missing outside CI.
pub fn redis() -> Option<RedisServer> {
    if !installed("redis-server") {
        missing("redis-server")?;
    }
    Some(RedisServer::spawn_on(free_port(), Vec::new()))
}

/// A private `redis-server`, killed when dropped.
pub struct RedisServer {
    /// Kept across restarts, so clients find it again.
    port: u16,
    /// Its working directory (a cluster node writes `nodes.conf` there),
    /// removed when dropped.
    dir: std::path::PathBuf,
    /// The process, while it runs.
    child: Option<Child>,
    /// More `redis-server` arguments (a cluster node's).
    extra: Vec<String>,
}

impl RedisServer {
    fn spawn_on(port: u16, extra: Vec<String>) -> RedisServer {
        let dir =
            std::env::temp_dir().join(format!("chat-test-redis-{port}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("redis work dir");
        let mut redis = RedisServer {
            port,
            dir,
            child: None,
            extra,
        };
        redis.spawn();
        redis
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
            .args(&self.extra)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn redis-server");
        self.child = Some(child);
        self.wait_ready();
    }

    /// Waits (bounded) until it answers PING.
    fn wait_ready(&self) {
        wait_until_answers("redis-server", self.port, |s| {
            let mut buf = [0u8; 7];
            s.write_all(b"PING\r\n").is_ok()
                && s.read_exact(&mut buf).is_ok()
                && &buf == b"+PONG\r\n"
        });
    }

    /// Kills it abruptly (SIGKILL) and reaps it.
    pub fn kill(&mut self) {
        reap(&mut self.child);
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

/// A private Redis Cluster: three nodes on free ports joined into one,
/// or `None` (skip) when `redis-server`/`redis-cli` are missing outside CI.
pub fn redis_cluster() -> Option<RedisCluster> {
    for program in ["redis-server", "redis-cli"] {
        if !installed(program) {
            missing(program)?;
        }
    }
    let nodes: Vec<RedisServer> = (0..3)
        .map(|_| {
            let extra = [
                "--cluster-enabled",
                "yes",
                "--cluster-config-file",
                "nodes.conf",
                "--cluster-node-timeout",
                "2000",
            ];
            RedisServer::spawn_on(
                free_cluster_port(),
                extra.iter().map(|s| s.to_string()).collect(),
            )
        })
        .collect();
    let addresses: Vec<String> = nodes
        .iter()
        .map(|n| format!("127.0.0.1:{}", n.port))
        .collect();
    let created = Command::new("redis-cli")
        .args(["--cluster", "create"])
        .args(&addresses)
        .args(["--cluster-replicas", "0", "--cluster-yes"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("run redis-cli --cluster create");
    assert!(created.success(), "redis-cli --cluster create failed");
    let cluster = RedisCluster { nodes };
    cluster.wait_ok();
    Some(cluster)
}

/// A private three-node Redis Cluster (no replicas), killed when dropped.
pub struct RedisCluster {
    /// The three nodes, each a master.
    nodes: Vec<RedisServer>,
}

/// A free port whose cluster bus port (+10000) is free too.
fn free_cluster_port() -> u16 {
    loop {
        let port = free_port();
        if port < 55_000 && TcpListener::bind(("127.0.0.1", port + 10_000)).is_ok() {
            return port;
        }
    }
}

impl RedisCluster {
    /// Waits (bounded) until every node reports `cluster_state:ok`.
    fn wait_ok(&self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        for node in &self.nodes {
            loop {
                let out = Command::new("redis-cli")
                    .args(["-p", &node.port.to_string(), "cluster", "info"])
                    .output()
                    .expect("redis-cli cluster info");
                if String::from_utf8_lossy(&out.stdout).contains("cluster_state:ok") {
                    break;
                }
                assert!(Instant::now() < deadline, "the cluster never became ok");
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }

    /// Each node's active shard channels (`PUBSUB SHARDCHANNELS`).
    pub fn shard_channels(&self) -> Vec<Vec<String>> {
        self.nodes
            .iter()
            .map(|node| {
                let out = Command::new("redis-cli")
                    .args(["-p", &node.port.to_string(), "pubsub", "shardchannels"])
                    .output()
                    .expect("redis-cli pubsub shardchannels");
                String::from_utf8_lossy(&out.stdout)
                    .lines()
                    .filter(|l| !l.is_empty())
                    .map(str::to_string)
                    .collect()
            })
            .collect()
    }

    /// The seed URLs, comma-separated.
    pub fn urls(&self) -> String {
        self.nodes
            .iter()
            .map(|n| n.url())
            .collect::<Vec<_>>()
            .join(",")
    }
}

/// A fresh PostgreSQL database (see [`PostgresDb`]), or `None` (skip)
/// when PostgreSQL cannot be reached outside CI.
pub async fn postgres_db() -> Option<PostgresDb> {
    use sqlx::Connection;
    let admin_url = std::env::var("CHAT_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into());
    let connect = sqlx::PgConnection::connect(&admin_url);
    let mut admin = match tokio::time::timeout(Duration::from_secs(5), connect).await {
        Ok(Ok(c)) => c,
        _ => {
            missing("PostgreSQL (CHAT_TEST_POSTGRES_URL)")?;
            unreachable!()
        }
    };
    let name = format!("chat_test_{}", uuid::Uuid::new_v4().simple());
    sqlx::query(&format!("CREATE DATABASE {name}"))
        .execute(&mut admin)
        .await
        .expect("create a test database");
    let _ = admin.close().await;
    Some(PostgresDb { admin_url, name })
}

/// A fresh PostgreSQL database on the machine's server, dropped afterwards.
/// The server is `CHAT_TEST_POSTGRES_URL` (default
/// `postgres://postgres@127.0.0.1:5432/postgres`); only the new database is
/// touched.
pub struct PostgresDb {
    /// The server's URL, to create and drop the database through.
    admin_url: String,
    /// The database's name (`chat_test_<uuid>`).
    name: String,
}

impl PostgresDb {
    /// The database's URL.
    pub fn url(&self) -> String {
        match self.admin_url.rsplit_once('/') {
            Some((server, _)) => format!("{server}/{}", self.name),
            None => panic!("CHAT_TEST_POSTGRES_URL must end in /DATABASE"),
        }
    }
}

impl Drop for PostgresDb {
    fn drop(&mut self) {
        // Drop runs outside async; a short-lived runtime on its own thread
        // removes the database.
        let (admin_url, name) = (self.admin_url.clone(), self.name.clone());
        let _ = std::thread::spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            rt.block_on(async {
                use sqlx::Connection;
                if let Ok(mut admin) = sqlx::PgConnection::connect(&admin_url).await {
                    let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                        .execute(&mut admin)
                        .await;
                }
            });
        })
        .join();
    }
}
