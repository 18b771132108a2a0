//! Webhooks against a local receiver that answers, fails, hangs and goes
//! away, with a checker: every stored event is delivered at least once,
//! signed, across receiver outages and an instance killed mid-flight.
//!
//! The receiver is a small HTTP/1.1 server of its own (keep-alive, one
//! task per connection, all of them dropped when it stops, so "down" is
//! down for the kept-alive connection too). It checks each request's
//! signature with its own HMAC-SHA256, as docs/WEBHOOKS.md tells receivers
//! to, and refuses (401) what does not verify or is older than 5 minutes.

use crate::common::services::{PostgresDb, services_required};
use crate::common::*;
use hmac::{Hmac, Mac};
use serde_json::Value;
use sha2::Sha256;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

const SECRET: &str = "webhook-secret-of-at-least-32-bytes!";
const APP_TOKEN: &str = "app-t0ken";

/// How the receiver answers.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Mode {
    /// 200.
    Ok,
    /// 500.
    Fail,
    /// Never (the request times out).
    Hang,
    /// 400 to a request holding an event whose text is `poison`, 200 to
    /// the others.
    RefusePoison,
    /// 401 to everything (a receiver whose secret is not the server's).
    Unauthorized,
}

/// What the receiver saw.
struct Seen {
    mode: Mode,
    /// Every event of every verified request answered 200, in arrival
    /// order (repeats included).
    events: Vec<Value>,
    /// Requests by the mode they met.
    requests: BTreeMap<String, u64>,
    /// Requests whose signature or timestamp did not verify.
    forged: u64,
    /// Requests held unanswered right now.
    hanging: u64,
    /// The number of events of each request refused with 400.
    refused: Vec<usize>,
}

/// A webhook receiver on a fixed port, stopped and started again at will.
struct Receiver {
    port: u16,
    seen: Arc<Mutex<Seen>>,
    /// The accepting task; it owns the connections' tasks.
    task: Option<JoinHandle<()>>,
}

impl Receiver {
    async fn start() -> Receiver {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let seen = Arc::new(Mutex::new(Seen {
            mode: Mode::Ok,
            events: Vec::new(),
            requests: BTreeMap::new(),
            forged: 0,
            hanging: 0,
            refused: Vec::new(),
        }));
        let task = tokio::spawn(accept(listener, seen.clone()));
        Receiver {
            port,
            seen,
            task: Some(task),
        }
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}/hooks/chat", self.port)
    }

    fn set(&self, mode: Mode) {
        self.seen.lock().unwrap().mode = mode;
    }

    /// Closes the listener and every connection.
    fn stop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }

    /// Listens again on the same port.
    async fn restart(&mut self) {
        let deadline = Instant::now() + WAIT;
        let listener = loop {
            match TcpListener::bind(("127.0.0.1", self.port)).await {
                Ok(listener) => break listener,
                Err(e) if Instant::now() < deadline => {
                    let _ = e;
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Err(e) => panic!("rebind {}: {e}", self.port),
            }
        };
        self.task = Some(tokio::spawn(accept(listener, self.seen.clone())));
    }

    fn requests(&self, mode: Mode) -> u64 {
        let seen = self.seen.lock().unwrap();
        seen.requests
            .get(&format!("{mode:?}"))
            .copied()
            .unwrap_or(0)
    }

    fn events(&self) -> Vec<Value> {
        self.seen.lock().unwrap().events.clone()
    }

    /// Waits (bounded by `limit`) until `done` holds for the events seen.
    async fn wait_for(&self, limit: Duration, what: &str, done: impl Fn(&[Value]) -> bool) {
        let deadline = Instant::now() + limit;
        while !done(&self.events()) {
            assert!(
                Instant::now() < deadline,
                "{what}: not within {limit:?}; saw {} events: {:?}; requests {:?}",
                self.events().len(),
                self.events()
                    .iter()
                    .map(|e| format!("{}:{}", e["type"], e["sequence"]))
                    .collect::<Vec<_>>(),
                self.seen.lock().unwrap().requests
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Accepts connections; aborting it aborts them all.
async fn accept(listener: TcpListener, seen: Arc<Mutex<Seen>>) {
    let mut connections = tokio::task::JoinSet::new();
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            return;
        };
        connections.spawn(serve(stream, seen.clone()));
        while connections.try_join_next().is_some() {}
    }
}

/// Answers the requests of one kept-alive connection.
async fn serve(mut stream: TcpStream, seen: Arc<Mutex<Seen>>) {
    let mut buffer = Vec::new();
    loop {
        let Some((head, body)) = read_request(&mut stream, &mut buffer).await else {
            return;
        };
        let mode = {
            let mut seen = seen.lock().unwrap();
            let mode = seen.mode;
            *seen.requests.entry(format!("{mode:?}")).or_default() += 1;
            mode
        };
        let status = match mode {
            Mode::Hang => {
                // Held until the sender gives up and closes the connection.
                seen.lock().unwrap().hanging += 1;
                let mut byte = [0u8; 1];
                let _ = tokio::time::timeout(Duration::from_secs(60), stream.read(&mut byte)).await;
                seen.lock().unwrap().hanging -= 1;
                return;
            }
            Mode::Fail => "500 Internal Server Error",
            Mode::Unauthorized => "401 Unauthorized",
            Mode::Ok | Mode::RefusePoison => match verify(&head, &body) {
                Some(events)
                    if mode == Mode::RefusePoison
                        && events.iter().any(|e| e["text"] == "poison") =>
                {
                    seen.lock().unwrap().refused.push(events.len());
                    "400 Bad Request"
                }
                Some(events) => {
                    seen.lock().unwrap().events.extend(events);
                    "200 OK"
                }
                None => {
                    seen.lock().unwrap().forged += 1;
                    "401 Unauthorized"
                }
            },
        };
        let answer = format!("HTTP/1.1 {status}\r\ncontent-length: 2\r\n\r\nok");
        if stream.write_all(answer.as_bytes()).await.is_err() {
            return;
        }
    }
}

/// One request: its headers (lower-case names) and body.
async fn read_request(
    stream: &mut TcpStream,
    buffer: &mut Vec<u8>,
) -> Option<(BTreeMap<String, String>, Vec<u8>)> {
    loop {
        if let Some(end) = buffer.windows(4).position(|w| w == b"\r\n\r\n") {
            let mut headers = [httparse::EMPTY_HEADER; 32];
            let mut request = httparse::Request::new(&mut headers);
            request.parse(&buffer[..end + 4]).ok()?;
            assert_eq!(request.method, Some("POST"));
            assert_eq!(request.path, Some("/hooks/chat"));
            let head: BTreeMap<String, String> = request
                .headers
                .iter()
                .map(|h| {
                    (
                        h.name.to_ascii_lowercase(),
                        String::from_utf8_lossy(h.value).into_owned(),
                    )
                })
                .collect();
            let length: usize = head.get("content-length")?.parse().ok()?;
            while buffer.len() < end + 4 + length {
                read_more(stream, buffer).await?;
            }
            let body = buffer[end + 4..end + 4 + length].to_vec();
            buffer.drain(..end + 4 + length);
            return Some((head, body));
        }
        read_more(stream, buffer).await?;
    }
}

async fn read_more(stream: &mut TcpStream, buffer: &mut Vec<u8>) -> Option<()> {
    let mut chunk = [0u8; 8192];
    match stream.read(&mut chunk).await {
        Ok(0) | Err(_) => None,
        Ok(n) => {
            buffer.extend_from_slice(&chunk[..n]);
            Some(())
        }
    }
}

/// The events of a request whose signature verifies and whose timestamp
/// is within 5 minutes, as a receiver checks them.
fn verify(head: &BTreeMap<String, String>, body: &[u8]) -> Option<Vec<Value>> {
    let timestamp: i64 = head.get("chat-webhook-timestamp")?.parse().ok()?;
    let now = chat_util::now_unix_ms() / 1000;
    if (now - timestamp).abs() > 300 {
        return None;
    }
    let mut mac = Hmac::<Sha256>::new_from_slice(SECRET.as_bytes()).unwrap();
    mac.update(format!("{timestamp}.").as_bytes());
    mac.update(body);
    let expected: String = mac
        .finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let given = head.get("chat-webhook-signature")?.strip_prefix("v1=")?;
    if given != expected {
        return None;
    }
    assert_eq!(
        head.get("content-type").map(String::as_str),
        Some("application/json")
    );
    let body: Value = serde_json::from_slice(body).ok()?;
    Some(body["events"].as_array()?.clone())
}

/// The webhook settings of every instance here: quick timeouts and
/// retries, so outages pass in seconds.
fn webhook_env(receiver: &Receiver) -> Vec<(&'static str, String)> {
    vec![
        ("CHAT_WEBHOOKS__URL", receiver.url()),
        ("CHAT_WEBHOOKS__SECRET", SECRET.into()),
        ("CHAT_WEBHOOKS__TIMEOUT", "1s".into()),
        ("CHAT_WEBHOOKS__POLL_INTERVAL", "50ms".into()),
        ("CHAT_WEBHOOKS__RETRY_MIN", "100ms".into()),
        ("CHAT_WEBHOOKS__RETRY_MAX", "500ms".into()),
        ("CHAT_WEBHOOKS__BATCH_MAX", "10".into()),
    ]
}

/// The same settings for an in-process server.
fn webhook_config(c: &mut chat_server::Config, receiver: &Receiver) {
    c.webhooks.url = receiver.url();
    c.webhooks.secret = SECRET.into();
    c.webhooks.timeout = Duration::from_secs(1);
    c.webhooks.poll_interval = Duration::from_millis(50);
    c.webhooks.retry_min = Duration::from_millis(100);
    c.webhooks.retry_max = Duration::from_millis(500);
    c.webhooks.batch_max = 10;
}

/// Posts `text` to `room` through the server API at `addr` (key `key`).
async fn post(addr: &str, room: &str, key: &str) -> u64 {
    let body = format!(r#"{{"text":"{key}","idempotency_key":"{key}"}}"#);
    let path = format!("/v1/api/rooms/{room}/messages");
    let response = http(
        addr.parse().unwrap(),
        HttpRequest::new("POST", &path)
            .bearer(APP_TOKEN)
            .json(&body),
    )
    .await;
    assert_eq!(response.status, 200, "{}", response.body);
    let answer: Value = serde_json::from_str(&response.body).unwrap();
    answer["sequence"].as_u64().unwrap()
}

/// The sequences of `room`'s `kind` events among `events`.
fn sequences(events: &[Value], room: &str, kind: &str) -> BTreeSet<u64> {
    events
        .iter()
        .filter(|e| e["room"] == room && e["type"] == kind)
        .filter_map(|e| e["sequence"].as_u64())
        .collect()
}

/// Issue 17's checker: two instances behind Redis sharing PostgreSQL; 110
/// messages posted through both while the receiver answers, then fails,
/// then hangs (one instance is killed then, SIGKILL, with its request in
/// flight and its lease held, and started again), then is down; once the
/// receiver is back, every
/// message has been delivered at least once, every event id names one
/// event, nothing forged was accepted, and the failures were counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_event_reaches_the_webhook_across_receiver_outages_and_an_instance_killed() {
    let redis = or_skip!(redis());
    let db: PostgresDb = or_skip!(postgres_db().await);
    let mut receiver = Receiver::start().await;
    let mut env: Vec<(&str, String)> = vec![
        ("CHAT_BACKPLANE", "redis".into()),
        ("CHAT_REDIS__URL", redis.url()),
        ("CHAT_STORE__URL", db.url()),
        ("CHAT_SERVER_ID", "a".into()),
        ("CHAT_ADMIN__TOKEN", APP_TOKEN.into()),
    ];
    env.extend(webhook_env(&receiver));
    let env_refs = |env: &[(&'static str, String)]| -> Vec<(&'static str, String)> { env.to_vec() };
    let start_a = |env: Vec<(&'static str, String)>| async move {
        let pairs: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
        ServerProcess::start(&pairs).await
    };
    let mut a = start_a(env_refs(&env)).await;
    let mut c = config();
    c.server_id = "b".into();
    c.backplane = chat_server::config::BackplaneKind::Redis;
    c.redis.url = redis.url();
    c.store.url = db.url();
    c.admin.token = APP_TOKEN.into();
    webhook_config(&mut c, &receiver);
    c.webhooks.events = {
        use chat_server::config::WebhookEvent::*;
        vec![Message, Edit, Delete, Join, Leave]
    };
    let b = TestServer::start(c).await;
    let b_addr = b.addr().to_string();

    // A member on b: its join, a message, an edit and its leave go too.
    let (cy, _events) = connect(&b.url(), "cy").await;
    cy.join("w").await.unwrap();
    let said = cy.send("w", "hello").await.unwrap();
    cy.edit("w", said.sequence, "hello!").await.unwrap();

    let mut posted = BTreeSet::from([said.sequence]);
    let mut key = 0;
    let mut post_some = async |a: &ServerProcess, n: usize| {
        let mut sequences = Vec::new();
        for i in 0..n {
            key += 1;
            let addr = if i % 2 == 0 { &a.addr } else { &b_addr };
            sequences.push(post(addr, "w", &format!("k{key}")).await);
        }
        sequences
    };

    // The receiver answers.
    posted.extend(post_some(&a, 25).await);
    receiver
        .wait_for(WAIT, "delivery while the receiver answers", |e| {
            sequences(e, "w", "message.created").len() == posted.len()
        })
        .await;

    // It fails, then hangs: the events wait.
    receiver.set(Mode::Fail);
    posted.extend(post_some(&a, 25).await);
    let deadline = Instant::now() + WAIT;
    while receiver.requests(Mode::Fail) < 3 {
        assert!(Instant::now() < deadline, "no retries while failing");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    receiver.set(Mode::Hang);
    posted.extend(post_some(&a, 25).await);
    // Two requests held at once: each instance sends one at a time, so
    // both have one in flight, a holding its lease.
    let deadline = Instant::now() + WAIT;
    while receiver.seen.lock().unwrap().hanging < 2 {
        assert!(
            Instant::now() < deadline,
            "the two instances never both waited"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    // Instance a is killed with its request in flight (its lease held)
    // and started again; the receiver goes away; more messages meanwhile.
    a.kill();
    a = start_a(env_refs(&env)).await;
    posted.extend(post_some(&a, 10).await);
    receiver.stop();
    receiver.set(Mode::Ok);
    posted.extend(post_some(&a, 25).await);
    cy.leave("w").await.unwrap();

    // It is back: everything arrives (a killed instance's lease ends after
    // the timeout and its margin, about 6 s).
    receiver.restart().await;
    receiver
        .wait_for(Duration::from_secs(40), "every message delivered", |e| {
            sequences(e, "w", "message.created").is_superset(&posted)
                && e.iter().any(|e| e["type"] == "member.left")
        })
        .await;

    let events = receiver.events();
    assert_eq!(receiver.seen.lock().unwrap().forged, 0);
    assert_eq!(
        sequences(&events, "w", "message.created"),
        posted,
        "no more than was posted"
    );
    let edited = sequences(&events, "w", "message.edited");
    assert_eq!(edited, BTreeSet::from([said.sequence + 1]));
    for kind in ["member.joined", "member.left"] {
        let distinct: BTreeSet<&str> = events
            .iter()
            .filter(|e| e["type"] == kind && e["user"]["id"] == "cy" && e["room"] == "w")
            .map(|e| e["id"].as_str().unwrap())
            .collect();
        assert_eq!(
            distinct.len(),
            1,
            "one {kind} for cy's one join: {events:?}"
        );
    }
    // Every id names one event: repeats are the same event again.
    let mut by_id: BTreeMap<String, (String, Option<u64>)> = BTreeMap::new();
    for event in &events {
        let id = event["id"].as_str().unwrap().to_string();
        let what = (
            event["type"].as_str().unwrap().to_string(),
            event["sequence"].as_u64(),
        );
        assert_eq!(by_id.entry(id).or_insert_with(|| what.clone()), &what);
    }
    let repeats = events.len() - by_id.len();
    println!(
        "checker: {} messages posted, {} events received, {} distinct, {repeats} repeats; \
         requests: {:?}",
        posted.len(),
        events.len(),
        by_id.len(),
        receiver.seen.lock().unwrap().requests
    );
    let metrics = scrape_metrics(b.addr()).await;
    assert!(metrics["chat_webhook_requests_failed_total"] > 0.0);
    assert!(metrics["chat_webhook_events_retried_total"] > 0.0);
    assert!(metrics["chat_webhook_events_sent_total"] > 0.0);
    drop(cy);
}

/// The queue's bounds: while the receiver fails, events beyond
/// `webhooks.max_pending` are dropped, oldest first, and counted; the
/// newest are delivered once it answers again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_queue_drops_its_oldest_events_and_counts_them() {
    let receiver = Receiver::start().await;
    receiver.set(Mode::Fail);
    let mut c = config();
    c.admin.token = APP_TOKEN.into();
    webhook_config(&mut c, &receiver);
    c.webhooks.max_pending = 5;
    let server = TestServer::start(c).await;
    let addr = server.addr().to_string();
    for i in 0..20 {
        post(&addr, "full", &format!("f{i}")).await;
    }
    // The sender trims every 5 s.
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let metrics = scrape_metrics(server.addr()).await;
        if metrics["chat_webhook_events_dropped_total{reason=\"overflowed\"}"] >= 15.0 {
            assert_eq!(metrics["chat_webhook_events_pending"], 5.0);
            break;
        }
        assert!(Instant::now() < deadline, "nothing dropped: {metrics:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    receiver.set(Mode::Ok);
    receiver
        .wait_for(WAIT, "the newest five", |e| {
            sequences(e, "full", "message.created") == (16..=20).collect()
        })
        .await;
}

/// One event the receiver refuses (400) does not hold the others back:
/// the refused batch is split until the event goes alone, and after it is
/// refused alone 3 times while the others go through, it is dropped and
/// counted; every other event arrives. A receiver that refuses everything
/// (401: not the events' fault) before that gets them all later: nothing
/// is dropped for it, however many attempts the events had.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_the_receiver_refuses_is_set_apart_and_dropped_alone() {
    let receiver = Receiver::start().await;
    receiver.set(Mode::Unauthorized);
    let mut c = config();
    c.admin.token = APP_TOKEN.into();
    webhook_config(&mut c, &receiver);
    c.webhooks.retry_max = Duration::from_millis(300);
    let server = TestServer::start(c).await;
    let addr = server.addr().to_string();
    let mut expected = BTreeSet::new();
    for i in 0..30 {
        let key = if i == 10 {
            "poison".to_string()
        } else {
            format!("p{i}")
        };
        let sequence = post(&addr, "refused", &key).await;
        if i != 10 {
            expected.insert(sequence);
        }
    }
    let deadline = Instant::now() + WAIT;
    while receiver.requests(Mode::Unauthorized) < 5 {
        assert!(Instant::now() < deadline, "no attempts while unauthorized");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let rejected = "chat_webhook_events_dropped_total{reason=\"rejected\"}";
    assert_eq!(
        scrape_metrics(server.addr()).await[rejected],
        0.0,
        "401 drops nothing"
    );

    receiver.set(Mode::RefusePoison);
    receiver
        .wait_for(
            Duration::from_secs(20),
            "every event but the refused one",
            |e| sequences(e, "refused", "message.created") == expected,
        )
        .await;
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if scrape_metrics(server.addr()).await[rejected] == 1.0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the refused event is not dropped"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let refused = receiver.seen.lock().unwrap().refused.clone();
    assert!(
        refused.iter().any(|&n| n > 1),
        "the event was first refused in a batch: {refused:?}"
    );
    assert!(
        refused.iter().filter(|&&n| n == 1).count() >= 3,
        "then alone, three times: {refused:?}"
    );
}

/// A server with a secret too short, a URL that is not http(s), or a URL
/// with credentials in it does not start, and says which setting is wrong
/// without printing the secret.
#[tokio::test]
async fn the_webhook_settings_are_checked_at_start() {
    for (url, secret) in [
        ("http://127.0.0.1:9/hook", "short"),
        ("ftp://127.0.0.1:9/hook", SECRET),
        ("http://user:pw@127.0.0.1:9/hook", SECRET),
        ("not a url", SECRET),
    ] {
        let mut c = config();
        c.webhooks.url = url.into();
        c.webhooks.secret = secret.into();
        let refused = chat_server::start(c, tokio_util::sync::CancellationToken::new()).await;
        let error = format!("{:#}", anyhow::Error::from(refused.err().expect(url)));
        assert!(error.contains("webhooks."), "{url}: {error}");
        assert!(
            !error.contains(SECRET),
            "the secret is never printed: {error}"
        );
    }
}

/// The fenced block of docs/WEBHOOKS.md whose first line is `marker`.
fn guide_snippet(marker: &str) -> String {
    let guide = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/WEBHOOKS.md"),
    )
    .unwrap();
    let start = guide
        .find(&format!("{marker}\n"))
        .unwrap_or_else(|| panic!("docs/WEBHOOKS.md has no block starting {marker:?}"));
    let end = start + guide[start..].find("```").expect("the block ends");
    guide[start..end].to_string()
}

/// Requests as the server signs them, and as a forger or a replayer would
/// send them: the snippet must accept the first only.
fn signed_cases() -> Value {
    use chat_server::webhook::sign::signature;
    let body = r#"{"events":[{"id":"e1","type":"message.created","room":"r","sequence":1}]}"#;
    let now = chat_util::now_unix_ms() / 1000;
    let case = |timestamp: i64, signed_body: &str, secret: &str| {
        serde_json::json!({
            "headers": {
                "chat-webhook-timestamp": timestamp.to_string(),
                "chat-webhook-signature":
                    signature(secret.as_bytes(), timestamp, signed_body.as_bytes()),
            },
            "body": body,
        })
    };
    serde_json::json!([
        case(now, body, SECRET),
        case(now, r#"{"events":[]}"#, SECRET),
        case(now - 600, body, SECRET),
        case(now, body, "another secret, also 32 bytes long"),
        {"headers": {}, "body": body},
    ])
}

/// Runs `program` on `script`, the cases on its standard input; returns
/// what it prints.
fn run_snippet(program: &str, script: &str) -> Value {
    use std::io::Write;
    let mut child = std::process::Command::new(program)
        .args(if program == "node" {
            ["-e", script]
        } else {
            ["-c", script]
        })
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(signed_cases().to_string().as_bytes())
        .unwrap();
    let output = child.wait_with_output().unwrap();
    assert!(
        output.status.success(),
        "{program}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).unwrap()
}

/// The guide's Python and Node snippets, run as they are printed: they
/// accept a request the server signed and refuse a tampered body, an old
/// timestamp, another secret and missing headers.
#[test]
fn the_guides_snippets_accept_the_servers_requests_and_refuse_forgeries() {
    let expected = serde_json::json!([
        [{"id": "e1", "type": "message.created", "room": "r", "sequence": 1}],
        null,
        null,
        null,
        null,
    ]);
    if installed("python3") {
        let script = format!(
            "{}\nimport sys\ncases = json.load(sys.stdin)\n\
             print(json.dumps([verify({SECRET:?}.encode(), c['headers'], c['body'].encode()) \
             for c in cases]))\n",
            guide_snippet("# verify.py")
        );
        assert_eq!(run_snippet("python3", &script), expected, "python");
    } else {
        assert!(
            !services_required(),
            "python3 is not installed and CHAT_TEST_REQUIRE_SERVICES=1"
        );
        eprintln!("skipping the Python snippet: python3 is not installed");
    }
    if installed("node") {
        let script = format!(
            "{}\nconst cases = JSON.parse(require('node:fs').readFileSync(0, 'utf8'));\n\
             console.log(JSON.stringify(cases.map(c => verify({SECRET:?}, c.headers, \
             Buffer.from(c.body)))));\n",
            guide_snippet("// verify.js")
        );
        assert_eq!(run_snippet("node", &script), expected, "node");
    } else {
        npm::missing("CHAT_TEST_REQUIRE_NODE", "node is not installed");
    }
}
