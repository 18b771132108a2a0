//! The web chat page (`endpoint::web`): `/` serves the page and `/app.js`,
//! `/app.css`, `/favicon.svg` its files, byte for byte the committed
//! `crates/chat-server/assets/` (embedded in the binary), with their content
//! types and security headers (strict CSP naming only this origin,
//! `nosniff`, `no-referrer`), `no-cache` with an `ETag` a revalidation
//! answers with 304; on the main listener only, also with `admin.listen`.

use crate::common::*;
use std::net::SocketAddr;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A committed asset, as the page build wrote it.
fn asset(name: &str) -> String {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("assets")
        .join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Sends `head` (a whole HTTP/1.1 request head) and returns the whole answer.
async fn raw(addr: SocketAddr, head: &str) -> String {
    let mut stream = TcpStream::connect(addr).await.expect("connects");
    stream.write_all(head.as_bytes()).await.expect("writes");
    let mut answer = Vec::new();
    tokio::time::timeout(WAIT, stream.read_to_end(&mut answer))
        .await
        .expect("answers in time")
        .expect("reads");
    String::from_utf8_lossy(&answer).into_owned()
}

#[tokio::test]
async fn the_page_and_its_files_are_served_with_their_headers() {
    let server = TestServer::start(config()).await;
    let page = http(server.addr(), HttpRequest::get("/")).await;
    assert_eq!(page.status, 200);
    assert_eq!(
        page.header("content-type"),
        Some("text/html; charset=utf-8")
    );
    assert_eq!(page.body, asset("index.html"));
    assert!(
        page.body
            .contains(r#"<script src="/app.js" defer></script>"#)
    );
    assert_eq!(page.header("x-content-type-options"), Some("nosniff"));
    assert_eq!(page.header("referrer-policy"), Some("no-referrer"));
    assert_eq!(page.header("cache-control"), Some("no-cache"));
    let csp = page.header("content-security-policy").expect("a CSP");
    for directive in [
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self'",
        "base-uri 'none'",
        "form-action 'none'",
        "frame-ancestors 'none'",
        // The client sends `Host: localhost`.
        "connect-src 'self' ws://localhost wss://localhost",
    ] {
        assert!(
            csp.split("; ").any(|d| d == directive),
            "{directive} in {csp}"
        );
    }
    assert!(!csp.contains("unsafe"), "{csp}");

    for (path, file, content_type) in [
        ("/app.js", "app.js", "text/javascript; charset=utf-8"),
        ("/app.css", "app.css", "text/css; charset=utf-8"),
        ("/favicon.svg", "favicon.svg", "image/svg+xml"),
    ] {
        let got = http(server.addr(), HttpRequest::get(path)).await;
        assert_eq!(got.status, 200, "{path}");
        assert_eq!(got.header("content-type"), Some(content_type), "{path}");
        assert_eq!(got.header("x-content-type-options"), Some("nosniff"));
        assert!(got.header("etag").is_some(), "{path} has an ETag");
        assert_eq!(got.body, asset(file), "{path} is the committed {file}");
    }
    assert_eq!(
        http(server.addr(), HttpRequest::get("/index.html"))
            .await
            .status,
        404
    );
    server.stop().await;
}

#[tokio::test]
async fn a_revalidation_with_the_etag_is_answered_304() {
    let server = TestServer::start(config()).await;
    let page = http(server.addr(), HttpRequest::get("/app.js")).await;
    let etag = page.header("etag").expect("an ETag").to_string();
    let again = raw(
        server.addr(),
        &format!(
            "GET /app.js HTTP/1.1\r\nHost: 127.0.0.1\r\nIf-None-Match: {etag}\r\nConnection: close\r\n\r\n"
        ),
    )
    .await;
    assert!(again.starts_with("HTTP/1.1 304"), "{again}");
    let (_, body) = again.split_once("\r\n\r\n").expect("a head");
    assert_eq!(body, "", "a 304 has no body");
    assert!(again.contains(&etag), "{again}");
    let changed = raw(
        server.addr(),
        "GET /app.js HTTP/1.1\r\nHost: 127.0.0.1\r\nIf-None-Match: \"older\"\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(changed.starts_with("HTTP/1.1 200"), "{changed}");
    server.stop().await;
}

#[tokio::test]
async fn the_policy_names_the_host_asked_for_and_nothing_injected() {
    let server = TestServer::start(config()).await;
    let answer = raw(
        server.addr(),
        "GET / HTTP/1.1\r\nHost: chat.example.com:5000\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(
        answer
            .contains("connect-src 'self' ws://chat.example.com:5000 wss://chat.example.com:5000"),
        "{answer}"
    );
    let hostile = raw(
        server.addr(),
        "GET / HTTP/1.1\r\nHost: x;script-src *\r\nConnection: close\r\n\r\n",
    )
    .await;
    let csp = hostile
        .lines()
        .find(|l| {
            l.to_ascii_lowercase()
                .starts_with("content-security-policy:")
        })
        .unwrap_or_default();
    assert!(csp.ends_with("connect-src 'self'"), "{hostile}");
    server.stop().await;
}

#[tokio::test]
async fn the_page_stays_on_the_main_listener_with_an_admin_listener() {
    let mut c = config();
    c.admin.listen = Some("127.0.0.1:0".parse().unwrap());
    let server = TestServer::start(c).await;
    let admin = server.server.admin_addr().expect("an admin listener");
    assert_eq!(http(server.addr(), HttpRequest::get("/")).await.status, 200);
    assert_eq!(http(admin, HttpRequest::get("/")).await.status, 404);
    server.stop().await;
}
