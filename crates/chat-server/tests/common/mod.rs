//! Test harness: real servers in-process on port 0, real clients over real
//! sockets, and bounded waits (never a sleep that hopes).

#![allow(dead_code)]

pub mod collector;
pub mod services;

use chat_client::proto::chat_service_client::ChatServiceClient;
use chat_client::proto::{ClientFrame, ServerFrame, client_frame::Request, server_frame::Frame};
use chat_client::{Backoff, Client, ClientConfig, Event, Events};
use chat_server::{Config, RunningServer};
use std::net::SocketAddr;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::Streaming;

/// Upper bound on any single wait in a test.
pub const WAIT: Duration = Duration::from_secs(10);

/// A configuration for tests: port 0, notifications off.
pub fn config() -> Config {
    let mut c = Config {
        listen: "127.0.0.1:0".parse().unwrap(),
        ..Config::default()
    };
    c.notifications.enabled = false;
    c.store.url = "memory".into();
    // Tests send as fast as they can; tests/limits.rs sets its own limits.
    c.limits.send_rate = 0.0;
    c.limits.user_send_rate = 0.0;
    c.limits.join_rate = 0.0;
    c.limits.user_join_rate = 0.0;
    c.limits.user_history_rate = 0.0;
    c.shutdown.drain_timeout = Duration::from_secs(3);
    c
}

/// A server running in this process.
pub struct TestServer {
    pub server: RunningServer,
    pub shutdown: CancellationToken,
}

impl TestServer {
    pub async fn start(config: Config) -> TestServer {
        let shutdown = CancellationToken::new();
        let server = chat_server::start(config, shutdown.clone())
            .await
            .expect("server starts");
        TestServer { server, shutdown }
    }

    pub fn addr(&self) -> SocketAddr {
        self.server.addr()
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.server.addr())
    }

    /// Shuts down and waits for the drain; returns how long it took.
    pub async fn stop(self) -> Duration {
        let started = tokio::time::Instant::now();
        self.shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(30), self.server.wait())
            .await
            .expect("server stops within 30 s")
            .expect("server stops cleanly");
        started.elapsed()
    }
}

/// POSTs `body` (JSON) to `path` over HTTP/1.1 with an optional bearer
/// token; returns the status code.
pub async fn http_post(addr: SocketAddr, path: &str, token: Option<&str>, body: &str) -> u16 {
    http_request(addr, "POST", path, token, body).await.0
}

/// One HTTP/1.1 request with a JSON `body` (may be empty) and an optional
/// bearer token; the status code and the response body.
pub async fn http_request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: &str,
) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Type: application/json\r\n{auth}Content-Length: {}\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    let status = response[9..12].parse().unwrap();
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}

/// Client settings for tests: quick reconnects.
pub fn client_config(url: &str, name: &str) -> ClientConfig {
    let mut c = ClientConfig::new(url, name);
    c.backoff = Backoff {
        initial: Duration::from_millis(50),
        max: Duration::from_millis(500),
    };
    c.request_timeout = Duration::from_secs(5);
    c
}

/// A connected client.
pub async fn connect(url: &str, name: &str) -> (Client, Events) {
    connect_with(client_config(url, name)).await
}

pub async fn connect_with(config: ClientConfig) -> (Client, Events) {
    let (client, mut events) = Client::connect(config);
    client.wait_connected(WAIT).await.expect("client connects");
    // Consume the Connected event so tests see only what follows.
    expect_event(&mut events, "connected", |e| {
        matches!(e, Event::Connected(_))
    })
    .await;
    (client, events)
}

/// Waits (bounded) for the first event matching `pred`, skipping others.
pub async fn expect_event(
    events: &mut Events,
    what: &str,
    mut pred: impl FnMut(&Event) -> bool,
) -> Event {
    let mut seen = Vec::new();
    let found = tokio::time::timeout(WAIT, async {
        while let Some(e) = events.next().await {
            if pred(&e) {
                return Some(e);
            }
            seen.push(format!("{e:?}"));
        }
        None
    })
    .await;
    match found {
        Ok(Some(e)) => e,
        Ok(None) => panic!("events ended before {what}; saw {seen:#?}"),
        Err(_) => panic!("no {what} within {WAIT:?}; saw {seen:#?}"),
    }
}

/// Waits for the next message event in `room` and returns (sender, text, sequence).
pub async fn expect_message(events: &mut Events, room: &str) -> (String, String, u64) {
    let what = format!("message in {room}");
    match expect_event(
        events,
        &what,
        |e| matches!(e, Event::Message(m) if m.room == room),
    )
    .await
    {
        Event::Message(m) => (
            m.sender.unwrap_or_default().display_name,
            m.text,
            m.sequence,
        ),
        _ => unreachable!(),
    }
}

/// Asserts that no event matching `pred` arrives within `quiet`.
pub async fn expect_no_event(
    events: &mut Events,
    quiet: Duration,
    mut pred: impl FnMut(&Event) -> bool,
) {
    let _ = tokio::time::timeout(quiet, async {
        while let Some(e) = events.next().await {
            assert!(!pred(&e), "unexpected event {e:?}");
        }
    })
    .await;
}

/// A session driven by hand, below the client library: for clients that
/// misbehave (never read, never hang up).
pub struct RawSession {
    pub tx: mpsc::Sender<ClientFrame>,
    pub stream: Streaming<ServerFrame>,
}

impl RawSession {
    pub async fn open(url: &str, name: &str) -> Result<RawSession, tonic::Status> {
        RawSession::open_with(url, name, &[]).await
    }

    /// Opens a session whose call carries `metadata` too.
    pub async fn open_with(
        url: &str,
        name: &str,
        metadata: &[(&'static str, &str)],
    ) -> Result<RawSession, tonic::Status> {
        let mut client = ChatServiceClient::connect(url.to_string())
            .await
            .expect("transport connects");
        let (tx, rx) = mpsc::channel(64);
        let mut request = tonic::Request::new(ReceiverStream::new(rx));
        request
            .metadata_mut()
            .insert("chat-name", name.parse().expect("ascii name"));
        for (key, value) in metadata {
            request
                .metadata_mut()
                .insert(*key, value.parse().expect("ascii metadata"));
        }
        let stream = client.session(request).await?.into_inner();
        Ok(RawSession { tx, stream })
    }

    pub async fn send(&self, request_id: u64, request: Request) {
        self.send_traced(request_id, "", request).await;
    }

    /// Sends a request carrying `traceparent`.
    pub async fn send_traced(&self, request_id: u64, traceparent: &str, request: Request) {
        self.tx
            .send(ClientFrame {
                request_id,
                traceparent: traceparent.to_string(),
                request: Some(request),
            })
            .await
            .expect("request stream open");
    }

    /// The next frame, bounded.
    pub async fn next(&mut self) -> Option<Frame> {
        tokio::time::timeout(WAIT, self.stream.message())
            .await
            .expect("a frame within the wait")
            .ok()
            .flatten()
            .and_then(|f| f.frame)
    }

    /// Reads until the stream ends; returns every frame.
    pub async fn drain(&mut self) -> Vec<Frame> {
        let mut frames = Vec::new();
        tokio::time::timeout(WAIT, async {
            while let Ok(Some(f)) = self.stream.message().await {
                frames.extend(f.frame);
            }
        })
        .await
        .expect("the stream ends within the wait");
        frames
    }
}

/// Every sample, `name{labels}` → value, checking the format on the way:
/// each sample's family has a `# TYPE`, names are `chat_…`, counters end
/// in `_total`, and values parse.
pub fn parse_metrics(text: &str) -> std::collections::BTreeMap<String, f64> {
    let mut types = std::collections::BTreeMap::new();
    let mut samples = std::collections::BTreeMap::new();
    for line in text.lines().filter(|l| !l.is_empty()) {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').expect("# TYPE name kind");
            assert!(name.starts_with("chat_"), "{name}");
            if kind == "counter" {
                assert!(name.ends_with("_total"), "counter {name} ends in _total");
            }
            types.insert(name.to_string(), kind.to_string());
            continue;
        }
        if line.starts_with('#') {
            continue;
        }
        let (series, value) = line.rsplit_once(' ').expect("series value");
        let name = series.split('{').next().unwrap();
        let family = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|s| {
                name.strip_suffix(s)
                    .filter(|f| types.get(*f).is_some_and(|k| k == "histogram"))
            })
            .unwrap_or(name);
        assert!(types.contains_key(family), "{name} has a # TYPE");
        samples.insert(series.to_string(), value.parse::<f64>().expect("a number"));
    }
    samples
}

/// Scrapes `GET /metrics` at `addr` (no credentials) and parses it.
pub async fn scrape_metrics(addr: SocketAddr) -> std::collections::BTreeMap<String, f64> {
    let (status, body) = http_request(addr, "GET", "/metrics", None, "").await;
    assert_eq!(status, 200, "{body}");
    parse_metrics(&body)
}

/// Polls `/health/ready` (bounded) until it says `ready` (or not).
pub async fn wait_ready(server: &TestServer, ready: bool) {
    let want = if ready { 200 } else { 503 };
    let deadline = tokio::time::Instant::now() + WAIT;
    while http_request(server.addr(), "GET", "/health/ready", None, "")
        .await
        .0
        != want
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "readiness never became {want}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
