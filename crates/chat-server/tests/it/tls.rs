//! TLS end to end, with certificate authorities and certificates generated
//! in the test: `https://` clients that trust the CA chat and read health;
//! plain-text and wrong-CA clients are refused; mTLS refuses clients
//! without a certificate from the client CA; a replaced certificate is
//! served to new connections without a restart; WebSocket sessions over
//! TLS (`wss://`).

use crate::common::*;
use chat_client::ClientConfig;
use chat_server::config::TlsConfig;
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair, KeyUsagePurpose,
};
use std::path::PathBuf;
use std::time::Duration;

/// A certificate authority.
struct Ca {
    issuer: CertifiedIssuer<'static, KeyPair>,
}

impl Ca {
    fn new(name: &str) -> Ca {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        Ca {
            issuer: CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap(),
        }
    }

    fn pem(&self) -> String {
        self.issuer.pem()
    }

    /// A certificate for `names` and its key, both PEM.
    fn issue(&self, names: &[&str]) -> (String, String) {
        let params =
            CertificateParams::new(names.iter().map(|s| s.to_string()).collect::<Vec<_>>())
                .unwrap();
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        (cert.pem(), key.serialize_pem())
    }
}

/// A folder of PEM files, removed when dropped.
struct Files(PathBuf);

impl Files {
    fn new() -> Files {
        let dir = std::env::temp_dir().join(format!("chat-tls-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).unwrap();
        Files(dir)
    }

    fn write(&self, name: &str, contents: &str) -> String {
        let path = self.0.join(name);
        // Write then rename, as an operator's deploy would: the server never
        // reads a half-written file.
        let tmp = self.0.join(format!(".{name}.tmp"));
        std::fs::write(&tmp, contents).unwrap();
        std::fs::rename(&tmp, &path).unwrap();
        path.display().to_string()
    }
}

impl Drop for Files {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn tls_server_config(files: &Files, ca: &Ca) -> chat_server::Config {
    let (cert, key) = ca.issue(&["127.0.0.1", "localhost"]);
    let mut c = config();
    c.tls = TlsConfig {
        cert_file: files.write("server.pem", &cert),
        key_file: files.write("server.key", &key),
        reload_interval: Duration::from_millis(100),
        ..TlsConfig::default()
    };
    c
}

fn https_client(server: &TestServer, name: &str, ca: Option<&Ca>) -> ClientConfig {
    let mut c = client_config(&format!("https://{}", server.addr()), name);
    c.tls.ca_pem = ca.map(|ca| ca.pem().into_bytes());
    c.connect_timeout = Duration::from_secs(2);
    c
}

/// Whether a client with `config` gets a session within a short wait.
async fn connects(config: ClientConfig) -> bool {
    let (client, _events) = chat_client::Client::connect(config);
    let ok = client.wait_connected(Duration::from_secs(3)).await.is_ok();
    client.close();
    ok
}

#[tokio::test]
async fn clients_that_trust_the_ca_chat_over_tls_and_others_are_refused() {
    let files = Files::new();
    let ca = Ca::new("chat test CA");
    let server = TestServer::start(tls_server_config(&files, &ca)).await;

    let (alice, _alice_ev) = connect_with(https_client(&server, "alice", Some(&ca))).await;
    let (bob, mut bob_ev) = connect_with(https_client(&server, "bob", Some(&ca))).await;
    alice.join("lobby").await.unwrap();
    bob.join("lobby").await.unwrap();
    alice.send("lobby", "over tls").await.unwrap();
    assert_eq!(expect_message(&mut bob_ev, "lobby").await.1, "over tls");

    // The HTTP endpoints are on the same TLS listener.
    let (status, body) = chat_server::endpoint::health::probe(server.addr(), true, WAIT)
        .await
        .expect("health over tls");
    assert_eq!(status, 200, "{body}");
    assert!(
        chat_server::endpoint::health::probe(server.addr(), false, Duration::from_secs(2))
            .await
            .is_err(),
        "plain HTTP to a TLS listener gets no answer"
    );

    let plain = client_config(&format!("http://{}", server.addr()), "carol");
    assert!(!connects(plain).await, "a plain-text client");
    let other = Ca::new("someone else's CA");
    assert!(
        !connects(https_client(&server, "dave", Some(&other))).await,
        "a client that does not trust the server's CA"
    );
    server.stop().await;
}

#[tokio::test]
async fn mtls_refuses_clients_without_a_certificate_from_the_client_ca() {
    let files = Files::new();
    let ca = Ca::new("server CA");
    let client_ca = Ca::new("client CA");
    let mut config = tls_server_config(&files, &ca);
    config.tls.client_ca_file = files.write("clients.pem", &client_ca.pem());
    let server = TestServer::start(config).await;

    assert!(
        !connects(https_client(&server, "anon", Some(&ca))).await,
        "no client certificate"
    );
    let mut wrong = https_client(&server, "eve", Some(&ca));
    let (cert, key) = Ca::new("not the client CA").issue(&["eve"]);
    wrong.tls.identity_pem = Some((cert.into_bytes(), key.into_bytes()));
    assert!(!connects(wrong).await, "a certificate from another CA");

    let mut good = https_client(&server, "alice", Some(&ca));
    let (cert, key) = client_ca.issue(&["alice"]);
    good.tls.identity_pem = Some((cert.into_bytes(), key.into_bytes()));
    let (alice, _events) = connect_with(good).await;
    alice.join("lobby").await.expect("a session over mTLS");
    server.stop().await;
}

#[tokio::test]
async fn a_replaced_certificate_is_served_without_a_restart() {
    let files = Files::new();
    let old_ca = Ca::new("old CA");
    let config = tls_server_config(&files, &old_ca);
    let (cert_file, key_file) = (config.tls.cert_file.clone(), config.tls.key_file.clone());
    let server = TestServer::start(config).await;
    let new_ca = Ca::new("new CA");
    assert!(connects(https_client(&server, "a", Some(&old_ca))).await);
    assert!(!connects(https_client(&server, "b", Some(&new_ca))).await);

    // A broken pair is not loaded: the old certificate stays.
    std::fs::write(&key_file, "not a key").unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        connects(https_client(&server, "c", Some(&old_ca))).await,
        "old pair kept"
    );

    let (cert, key) = new_ca.issue(&["127.0.0.1"]);
    files.write("server.key", &key);
    files.write("server.pem", &cert);
    assert!(cert_file.ends_with("server.pem"));
    let deadline = tokio::time::Instant::now() + WAIT;
    while !connects(https_client(&server, "d", Some(&new_ca))).await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the new certificate was not served"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        !connects(https_client(&server, "e", Some(&old_ca))).await,
        "the old certificate is gone"
    );
    server.stop().await;
}

#[test]
fn tls_settings_are_checked() {
    let mut c = config();
    c.tls.cert_file = "cert.pem".into();
    assert!(
        c.validate()
            .unwrap_err()
            .to_string()
            .contains("go together")
    );
    c.tls.cert_file.clear();
    c.tls.client_ca_file = "ca.pem".into();
    assert!(c.validate().is_err(), "a client CA without a certificate");
}

#[tokio::test]
async fn traces_go_to_an_https_collector_trusted_through_traces_ca_file() {
    use opentelemetry::trace::{Tracer, TracerProvider};
    let ca = Ca::new("collector CA");
    let (addr, mut exports) = collector::start(Some(ca.issue(&["127.0.0.1"]))).await;
    let files = Files::new();
    let config = chat_server::config::TracesConfig {
        otlp_endpoint: format!("https://127.0.0.1:{}", addr.port()),
        ca_file: files.write("collector-ca.pem", &ca.pem()),
        ..Default::default()
    };
    let provider = chat_server::telemetry::trace::otlp_provider(&config)
        .unwrap()
        .expect("an endpoint is set")
        .provider;
    let trace_id = provider
        .tracer("test")
        .in_span("over-tls", |cx| {
            use opentelemetry::trace::TraceContextExt;
            cx.span().span_context().trace_id()
        })
        .to_string();
    // Flushing blocks until the export is answered; the runtime serves
    // the connection meanwhile.
    let flushing = provider.clone();
    tokio::task::spawn_blocking(move || flushing.force_flush())
        .await
        .unwrap()
        .expect("exported over TLS");
    assert_eq!(
        collector::span_names(&mut exports, &trace_id, "chat-server").0,
        ["over-tls"]
    );
    let _ = tokio::task::spawn_blocking(move || provider.shutdown()).await;
}

#[tokio::test]
async fn websocket_sessions_run_over_tls() {
    use chat_client::proto::{ServerFrame, server_frame::Frame};
    use futures::StreamExt;
    use prost::Message as _;
    use rustls_pki_types::pem::PemObject;
    use tokio_tungstenite::tungstenite::Message;
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let ca = Ca::new("ws test CA");
    let files = Files::new();
    let server = TestServer::start(tls_server_config(&files, &ca)).await;

    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_pki_types::CertificateDer::pem_slice_iter(ca.pem().as_bytes()) {
        roots.add(cert.unwrap()).unwrap();
    }
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let tcp = tokio::net::TcpStream::connect(server.addr()).await.unwrap();
    let name = rustls_pki_types::ServerName::try_from("localhost").unwrap();
    let stream = tokio_rustls::TlsConnector::from(std::sync::Arc::new(tls))
        .connect(name, tcp)
        .await
        .expect("TLS handshake with a client that trusts the CA");

    let mut request = format!("wss://localhost:{}/v1/ws", server.addr().port())
        .into_client_request()
        .unwrap();
    request.headers_mut().insert(
        "sec-websocket-protocol",
        "chat.v1, name.YW5u".parse().unwrap(),
    );
    let (mut socket, _) = tokio_tungstenite::client_async(request, stream)
        .await
        .expect("upgrade over TLS");
    let first = tokio::time::timeout(WAIT, socket.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let Message::Binary(bytes) = first else {
        panic!("{first:?}")
    };
    match ServerFrame::decode(bytes).unwrap().frame {
        Some(Frame::Welcome(w)) => assert_eq!(w.you.unwrap().display_name, "ann"),
        other => panic!("{other:?}"),
    }
    server.stop().await;
}

/// Issue 15, report 10: `chat-server status` sends the admin token over TLS
/// only to a server presenting the configured certificate. With the old
/// check (any certificate, `SelfCheck::Any`, still the health probe's) the
/// token reaches whoever holds a certificate for the name; now the
/// handshake fails before anything is sent.
#[tokio::test]
async fn the_admin_token_goes_only_to_the_configured_certificate() {
    use chat_server::endpoint::health::get_own;
    use chat_server::tls::SelfCheck;
    let files = Files::new();
    let ca = Ca::new("chat test CA");
    let mut config = tls_server_config(&files, &ca);
    config.admin.token = "adm1n".into();
    let server = TestServer::start(config.clone()).await;
    let wait = Duration::from_secs(5);
    let status = |check: SelfCheck| {
        get_own(
            server.addr(),
            Some(check),
            "/admin/status",
            Some("adm1n"),
            wait,
        )
    };

    let own = SelfCheck::own(&config.tls).expect("the configured certificate");
    let (code, body) = status(own)
        .await
        .expect("the server with its own certificate");
    assert_eq!(code, 200, "{body}");

    // The configuration names another certificate than the one presented
    // (someone else answers on the port).
    let mut elsewhere = config.tls.clone();
    elsewhere.cert_file = files.write("other.pem", &ca.issue(&["127.0.0.1", "localhost"]).0);
    let other = SelfCheck::own(&elsewhere).expect("a certificate");
    let refused = status(other)
        .await
        .expect_err("not the configured certificate");
    assert!(refused.to_string().contains("certificate"), "{refused}");
    // What the old check let through: the token, to any certificate.
    let old = chat_server::http_client::HttpClient::new(server.addr())
        .tls(Some(SelfCheck::Any))
        .send(&HttpRequest::get("/admin/status").bearer(Some("adm1n")))
        .await
        .expect("the unchecked way");
    assert_eq!(old.status, 200);
    // `get_own` no longer sends a credential that way.
    let refused = status(SelfCheck::Any)
        .await
        .expect_err("a token with any certificate");
    assert_eq!(refused.kind(), std::io::ErrorKind::InvalidInput);

    // A configured file that holds no certificate is an error, not `Any`.
    let mut empty = config.tls.clone();
    empty.cert_file = files.write("empty.pem", "");
    assert!(SelfCheck::own(&empty).is_err());
    server.stop().await;
}
