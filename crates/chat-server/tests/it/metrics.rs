//! `GET /metrics`: the counters move as the test's actions dictate, the
//! text is valid Prometheus exposition, no label carries a room, user or
//! address, and with authentication on the endpoint asks for admin
//! credentials.

use crate::common::*;
use chat_server::auth::{self, TokenRequest};
use chat_server::config::{AuthConfig, AuthMode};
use std::net::SocketAddr;
use std::time::Duration;

/// GETs `/metrics`; the status and the body.
async fn scrape_raw(addr: SocketAddr, token: Option<&str>) -> (u16, String) {
    let HttpResponse { status, body, .. } =
        http(addr, HttpRequest::get("/metrics").bearer(token)).await;
    (status, body)
}

/// Waits until `series` reads `value`.
async fn eventually(server: &TestServer, series: &str, value: f64) {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let now = scrape_metrics(server.addr()).await.get(series).copied();
        if now == Some(value) {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{series} is {now:?}, expected {value}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn counters_follow_what_clients_do_and_labels_stay_bounded() {
    let mut c = config();
    c.limits.send_rate = 0.1;
    c.limits.send_burst = 4;
    let server = TestServer::start(c).await;
    let m = scrape_metrics(server.addr()).await;
    assert_eq!(m["chat_connections"], 0.0);
    assert_eq!(m["chat_messages_received_total"], 0.0);

    let (alice, _alice_ev) = connect(&server.url(), "alice").await;
    let (bob, mut bob_ev) = connect(&server.url(), "bob").await;
    alice.join("lobby").await.unwrap();
    bob.join("lobby").await.unwrap();
    for i in 0..3 {
        alice.send("lobby", &format!("m{i}")).await.unwrap();
    }
    for _ in 0..3 {
        expect_message(&mut bob_ev, "lobby").await;
    }
    // The fourth is within the burst, the fifth is not.
    alice.send("lobby", "m3").await.unwrap();
    assert!(alice.send("lobby", "m4").await.is_err());

    let m = scrape_metrics(server.addr()).await;
    assert_eq!(m["chat_connections"], 2.0);
    assert_eq!(m["chat_connections_opened_total"], 2.0);
    assert_eq!(m["chat_rooms"], 1.0);
    assert_eq!(m["chat_room_members"], 2.0);
    assert_eq!(m["chat_messages_received_total"], 4.0);
    assert_eq!(
        m["chat_messages_delivered_total"], 8.0,
        "4 messages × 2 members"
    );
    assert_eq!(m["chat_store_append_seconds_count"], 4.0);
    assert_eq!(
        m["chat_delivery_latency_seconds_count"], 4.0,
        "each message handed to this instance's members once"
    );
    assert_eq!(m["chat_store_append_seconds_bucket{le=\"+Inf\"}"], 4.0);
    assert_eq!(m["chat_rate_limited_total{action=\"send\"}"], 1.0);
    assert_eq!(m["chat_rate_limited_total{action=\"join\"}"], 0.0);

    bob.close();
    eventually(
        &server,
        "chat_connections_closed_total{reason=\"client_hung_up\"}",
        1.0,
    )
    .await;
    eventually(&server, "chat_connections", 1.0).await;
    eventually(&server, "chat_room_members", 1.0).await;

    // No label carries a room, a user or an address: every label value is
    // from the fixed sets.
    use chat_server::metrics::labels::{self, AuthFailure, CloseReason};
    use chat_server::metrics::labels::{
        ApiCall, ConnectionLimit, JoinQuery, RateLimitedAction, WebhookDrop,
    };
    let allowed: Vec<&str> = labels::values::<CloseReason>()
        .chain(labels::values::<AuthFailure>())
        .chain(labels::values::<ConnectionLimit>())
        .chain(labels::values::<RateLimitedAction>())
        .chain(labels::values::<ApiCall>())
        .chain(labels::values::<WebhookDrop>())
        .chain(labels::values::<JoinQuery>())
        .collect();
    for series in scrape_metrics(server.addr()).await.keys() {
        let Some((_, labels)) = series.split_once('{') else {
            continue;
        };
        for pair in labels.trim_end_matches('}').split(',') {
            let (key, value) = pair.split_once('=').unwrap();
            let value = value.trim_matches('"');
            match key {
                "le" => assert!(value == "+Inf" || value.parse::<f64>().is_ok(), "{series}"),
                _ => assert!(
                    allowed.contains(&value),
                    "{series}: {value} is not a bounded label"
                ),
            }
        }
    }
    server.stop().await;
}

#[tokio::test]
async fn a_batching_store_reports_its_batch_sizes() {
    let folder = std::env::temp_dir().join(format!("chat-metrics-{}", uuid::Uuid::new_v4()));
    let mut c = config();
    c.store.url = format!("sqlite://{}/chat.db", folder.display());
    let server = TestServer::start(c).await;
    let (alice, _alice_ev) = connect(&server.url(), "alice").await;
    alice.join("lobby").await.unwrap();
    let texts: Vec<String> = (0..5).map(|i| format!("m{i}")).collect();
    let sends: Vec<_> = texts.iter().map(|t| alice.send("lobby", t)).collect();
    for sent in futures::future::join_all(sends).await {
        sent.unwrap();
    }
    let m = scrape_metrics(server.addr()).await;
    // Each message was in exactly one commit.
    assert_eq!(m["chat_store_batch_messages_sum"], 5.0, "{m:?}");
    let commits = m["chat_store_batch_messages_count"];
    assert!((1.0..=5.0).contains(&commits), "{commits}");
    assert_eq!(m["chat_store_batch_messages_bucket{le=\"512\"}"], commits);
    server.stop().await;
    let _ = std::fs::remove_dir_all(folder);
}

#[tokio::test]
async fn with_auth_on_metrics_need_admin_credentials_and_count_refused_tokens() {
    let auth = AuthConfig {
        mode: AuthMode::Jwt,
        secret: "metrics-secret-metrics-secret-metrics".into(),
        ..AuthConfig::default()
    };
    let mut c = config();
    c.auth = auth.clone();
    c.admin.token = "scraper-token".into();
    let server = TestServer::start(c).await;
    assert_eq!(scrape_raw(server.addr(), None).await.0, 401);
    let user = auth::mint(
        &auth,
        &TokenRequest {
            sub: "u".into(),
            ttl: Duration::from_secs(60),
            ..TokenRequest::default()
        },
    )
    .unwrap();
    assert_eq!(scrape_raw(server.addr(), Some(&user)).await.0, 403);

    // A session with a broken token is refused and counted.
    let mut bad = client_config(&server.url(), "x");
    bad.token = Some(chat_client::TokenProvider::fixed("not-a-jwt"));
    let (client, _events) = chat_client::Client::connect(bad);
    let (status, body) = {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let (status, body) = scrape_raw(server.addr(), Some("scraper-token")).await;
            assert_eq!(status, 200);
            if parse_metrics(&body)["chat_auth_failures_total{reason=\"malformed\"}"] >= 1.0 {
                break (status, body);
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "no auth failure counted"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    client.close();
    assert_eq!(status, 200);
    assert_eq!(parse_metrics(&body)["chat_connections"], 0.0);
    server.stop().await;
}

/// With `admin.listen`, `/metrics` and `/admin/*` move to their own
/// listener; health answers on both.
#[tokio::test]
async fn admin_listen_moves_the_operator_endpoints_to_their_own_port() {
    let mut c = config();
    c.admin.token = "ops".into();
    c.admin.listen = Some("127.0.0.1:0".parse().unwrap());
    let server = TestServer::start(c).await;
    let admin = server.server.admin_addr().expect("an admin listener");
    assert_ne!(admin, server.addr());
    let main = server.addr();
    for (addr, path, token, want) in [
        (main, "/metrics", None, 404),
        (main, "/admin/status", Some("ops"), 404),
        (main, "/health/live", None, 200),
        (admin, "/metrics", None, 200),
        (admin, "/admin/status", Some("ops"), 200),
        (admin, "/admin/status", None, 401),
        (admin, "/health/live", None, 200),
    ] {
        let response = http(addr, HttpRequest::get(path).bearer(token)).await;
        assert_eq!(response.status, want, "{addr}{path}: {}", response.body);
    }
    // The session counters are the same on the admin port.
    let (_alice, _events) = connect(&server.url(), "alice").await;
    assert_eq!(scrape_metrics(admin).await["chat_connections"], 1.0);
    server.stop().await;

    let mut open = config();
    open.admin.listen = Some("0.0.0.0:9100".parse().unwrap());
    assert!(
        open.validate()
            .unwrap_err()
            .to_string()
            .contains("admin.listen"),
        "open metrics beyond loopback"
    );
}
