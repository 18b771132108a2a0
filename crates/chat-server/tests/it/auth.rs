//! Authentication and room permissions end to end: JWT bearer tokens on the
//! Session stream, History and the admin endpoint; forged, expired,
//! wrong-audience, wrong-issuer, `alg: none` and oversized tokens; room
//! rules from claims; expiry ending a stream; keys from PEM files and a
//! JWKS file that is reloaded; and the refusal to run without auth beyond
//! loopback.

use crate::common::*;
use chat_client::proto::chat_service_client::ChatServiceClient;
use chat_client::proto::{
    DisconnectReason, ErrorCode, HistoryDirection, HistoryRequest, ServerFrame, server_frame::Frame,
};
use chat_client::{ClientError, Event, TokenProvider};
use chat_server::auth::{self, TokenRequest};
use chat_server::config::{AuthConfig, AuthMode, DefaultRoomAccess, JwtAlgorithm};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio_stream::wrappers::ReceiverStream;

const SECRET: &str = "test-secret-test-secret-test-secret!";

fn hs256() -> AuthConfig {
    AuthConfig {
        mode: AuthMode::Jwt,
        algorithm: JwtAlgorithm::HS256,
        secret: SECRET.into(),
        issuer: "chat-test".into(),
        audience: "chat-test-aud".into(),
        leeway: Duration::ZERO,
        ..AuthConfig::default()
    }
}

fn with_auth(auth: AuthConfig) -> chat_server::Config {
    let mut c = config();
    c.auth = auth;
    c
}

fn token(auth: &AuthConfig, sub: &str, name: &str) -> String {
    auth::mint(
        auth,
        &TokenRequest {
            sub: sub.into(),
            name: Some(name.into()),
            ttl: Duration::from_secs(3600),
            ..TokenRequest::default()
        },
    )
    .expect("mint")
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// A token with exactly these claims, signed with `key` as `alg`.
fn signed(alg: Algorithm, key: &EncodingKey, claims: serde_json::Value) -> String {
    jsonwebtoken::encode(&Header::new(alg), &claims, key).expect("sign")
}

fn claims(iss: &str, aud: &str, exp: u64) -> serde_json::Value {
    serde_json::json!({ "sub": "u1", "name": "User One", "iss": iss, "aud": aud, "exp": exp })
}

fn b64(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// Opens a Session stream with raw metadata; the first frame, or the status.
async fn open_raw(
    url: &str,
    token: Option<&str>,
    name: Option<&str>,
) -> Result<ServerFrame, tonic::Status> {
    let mut client = ChatServiceClient::connect(url.to_string()).await.unwrap();
    let (_tx, rx) = tokio::sync::mpsc::channel(1);
    let mut request = tonic::Request::new(ReceiverStream::new(rx));
    if let Some(t) = token {
        request
            .metadata_mut()
            .insert("authorization", format!("Bearer {t}").parse().unwrap());
    }
    if let Some(n) = name {
        request
            .metadata_mut()
            .insert("chat-name", n.parse().unwrap());
    }
    let mut stream = client.session(request).await?.into_inner();
    Ok(tokio::time::timeout(WAIT, stream.message())
        .await
        .expect("a frame")?
        .expect("a frame"))
}

fn assert_unauthenticated(result: Result<ServerFrame, tonic::Status>, what: &str) -> String {
    let status = result.expect_err(what);
    assert_eq!(
        status.code(),
        tonic::Code::Unauthenticated,
        "{what}: {status:?}"
    );
    assert_eq!(
        status.metadata().get("chat-error-code").unwrap(),
        "UNAUTHENTICATED",
        "{what}"
    );
    // Why, from a fixed set: clients tell lasting refusals from passing ones.
    let reason = status.metadata().get("chat-auth-reason").expect("a reason");
    let reason = reason.to_str().unwrap();
    assert!(
        chat_server::metrics::labels::values::<chat_server::metrics::AuthFailure>()
            .any(|known| known == reason),
        "{what}: {reason}"
    );
    format!("{reason}: {}", status.message())
}

#[tokio::test]
async fn the_token_decides_who_you_are_and_bad_tokens_are_refused() {
    let auth = hs256();
    let server = TestServer::start(with_auth(auth.clone())).await;
    let url = server.url();

    // The identity comes from the token; the name the client claims is ignored.
    let good = token(&auth, "user-1", "Alice");
    match open_raw(&url, Some(&good), Some("mallory"))
        .await
        .unwrap()
        .frame
    {
        Some(Frame::Welcome(w)) => {
            let you = w.you.unwrap();
            assert_eq!(
                (you.user_id.as_str(), you.display_name.as_str()),
                ("user-1", "Alice")
            );
        }
        other => panic!("expected a welcome, got {other:?}"),
    }

    let key = EncodingKey::from_secret(SECRET.as_bytes());
    let (iss, aud) = (auth.issuer.as_str(), auth.audience.as_str());
    let later = now() + 3600;
    let forged = signed(
        Algorithm::HS256,
        &EncodingKey::from_secret(b"another-secret-another-secret-another"),
        claims(iss, aud, later),
    );
    let header_none = b64(br#"{"alg":"none","typ":"JWT"}"#);
    let payload = b64(claims(iss, aud, later).to_string().as_bytes());
    let alg_none = format!("{header_none}.{payload}.");
    let no_sub = signed(
        Algorithm::HS256,
        &key,
        serde_json::json!({ "iss": iss, "aud": aud, "exp": later }),
    );
    let cases: Vec<(&str, Option<String>, &str)> = vec![
        ("no token", None, "missing bearer token"),
        ("garbage", Some("not-a-jwt".into()), "malformed"),
        ("oversized", Some("a".repeat(9000)), "malformed"),
        ("forged signature", Some(forged), "signature"),
        (
            "expired",
            Some(signed(Algorithm::HS256, &key, claims(iss, aud, now() - 60))),
            "expired",
        ),
        (
            "wrong audience",
            Some(signed(
                Algorithm::HS256,
                &key,
                claims(iss, "someone-else", later),
            )),
            "audience",
        ),
        (
            "wrong issuer",
            Some(signed(Algorithm::HS256, &key, claims("evil", aud, later))),
            "issuer",
        ),
        ("alg none", Some(alg_none), "algorithm"),
        (
            "another algorithm, same secret",
            Some(signed(Algorithm::HS512, &key, claims(iss, aud, later))),
            "algorithm",
        ),
        ("no sub", Some(no_sub), "sub"),
        (
            "not valid yet",
            Some(signed(
                Algorithm::HS256,
                &key,
                serde_json::json!({ "sub": "u1", "iss": iss, "aud": aud, "exp": later, "nbf": later - 60 }),
            )),
            "not_yet_valid: ",
        ),
    ];
    for (what, token, says) in cases {
        let message =
            assert_unauthenticated(open_raw(&url, token.as_deref(), Some("x")).await, what);
        assert!(
            message.contains(says),
            "{what}: {message:?} should say {says:?}"
        );
    }

    // History asks for the same token.
    let mut grpc = ChatServiceClient::connect(url.clone()).await.unwrap();
    let history = |token: Option<&str>| {
        let mut request = tonic::Request::new(HistoryRequest {
            room: "lobby".into(),
            direction: HistoryDirection::Backward as i32,
            from_sequence: 0,
            limit: 10,
        });
        if let Some(t) = token {
            request
                .metadata_mut()
                .insert("authorization", format!("Bearer {t}").parse().unwrap());
        }
        request
    };
    let status = grpc.history(history(None)).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unauthenticated);
    grpc.history(history(Some(&good)))
        .await
        .expect("history with a token");
    server.stop().await;
}

#[tokio::test]
async fn room_rules_from_the_token_allow_deny_and_make_read_only() {
    let auth = AuthConfig {
        default_room_access: DefaultRoomAccess::Closed,
        ..hs256()
    };
    let server = TestServer::start(with_auth(auth.clone())).await;
    let url = server.url();
    let mint = |sub: &str, rooms: &[&str], read_only: &[&str]| {
        auth::mint(
            &auth,
            &TokenRequest {
                sub: sub.into(),
                name: Some(sub.to_uppercase()),
                ttl: Duration::from_secs(600),
                rooms: rooms.iter().map(|s| s.to_string()).collect(),
                read_only_rooms: read_only.iter().map(|s| s.to_string()).collect(),
                ..TokenRequest::default()
            },
        )
        .unwrap()
    };
    let mut reader = client_config(&url, "");
    reader.token = Some(TokenProvider::fixed(mint("reader", &["team-*"], &["news"])));
    let (reader, mut reader_ev) = connect_with(reader).await;
    let mut editor = client_config(&url, "");
    editor.token = Some(TokenProvider::fixed(mint("editor", &["news"], &[])));
    let (editor, _editor_ev) = connect_with(editor).await;

    let denied = |r: Result<_, ClientError>, what: &str| match r {
        Err(ClientError::Server { code, .. }) => {
            assert_eq!(code, ErrorCode::PermissionDenied, "{what}")
        }
        other => panic!("{what}: expected PERMISSION_DENIED, got {other:?}"),
    };
    reader.join("team-a").await.expect("team-* covers team-a");
    reader
        .send("team-a", "hi team")
        .await
        .expect("write access");
    denied(reader.join("elsewhere").await.map(|_| ()), "closed default");
    denied(reader.join("team").await.map(|_| ()), "team is not team-*");
    assert_eq!(
        reader.rooms(),
        vec!["team-a".to_string()],
        "no state change"
    );

    reader
        .join("news")
        .await
        .expect("read-only rooms may be joined");
    editor.join("news").await.unwrap();
    denied(
        reader.send("news", "let me write").await.map(|_| ()),
        "read-only room",
    );
    denied(
        reader.typing("news", true).await,
        "typing in a read-only room",
    );
    editor.send("news", "headline").await.unwrap();
    assert_eq!(
        expect_message(&mut reader_ev, "news").await,
        ("EDITOR".into(), "headline".into(), 1),
        "the reader reads; its refused send took no number"
    );

    // History follows the same rules.
    let history = reader
        .history("news", HistoryDirection::Backward, 0, 10)
        .await
        .unwrap();
    assert_eq!(history.messages.len(), 1);
    denied(
        reader
            .history("elsewhere", HistoryDirection::Backward, 0, 10)
            .await
            .map(|_| ()),
        "history of a closed room",
    );
    server.stop().await;
}

#[tokio::test]
async fn an_expired_token_ends_the_stream_and_the_client_reconnects_with_a_fresh_one() {
    let auth = hs256();
    let server = TestServer::start(with_auth(auth.clone())).await;
    let minted = Arc::new(AtomicUsize::new(0));
    let provider = {
        let (auth, minted) = (auth.clone(), minted.clone());
        TokenProvider::new(move || {
            let (auth, minted) = (auth.clone(), minted.clone());
            async move {
                minted.fetch_add(1, Ordering::SeqCst);
                auth::mint(
                    &auth,
                    &TokenRequest {
                        sub: "short".into(),
                        ttl: Duration::from_secs(2),
                        ..TokenRequest::default()
                    },
                )
            }
        })
    };
    let mut config = client_config(&server.url(), "");
    config.token = Some(provider);
    config.rooms = vec!["lobby".into()];
    let (client, mut events) = connect_with(config).await;
    match expect_event(&mut events, "disconnect", |e| {
        matches!(e, Event::Disconnected { .. })
    })
    .await
    {
        Event::Disconnected { notice, .. } => {
            let notice = notice.expect("a disconnect notice");
            assert_eq!(
                notice.reason,
                DisconnectReason::AuthExpired as i32,
                "{notice:?}"
            );
        }
        _ => unreachable!(),
    }
    expect_event(&mut events, "reconnected", |e| {
        matches!(e, Event::Connected(_))
    })
    .await;
    assert!(
        minted.load(Ordering::SeqCst) >= 2,
        "a fresh token per connection"
    );
    client
        .send("lobby", "still here")
        .await
        .expect("the rejoined room works");
    client.close();
    server.stop().await;
}

/// Waits for `n` connection attempts to fail and be retried, numbered from
/// 1 (a `Stopped` fails the test); their errors.
async fn expect_retries(events: &mut chat_client::Events, n: u32) -> Vec<String> {
    let mut errors = Vec::new();
    for attempt in 1..=n {
        match expect_event(events, "a retry", |e| {
            matches!(e, Event::Reconnecting { .. } | Event::Stopped { .. })
        })
        .await
        {
            Event::Reconnecting {
                attempt: got,
                error,
                ..
            } => {
                assert_eq!(got, attempt);
                errors.push(error);
            }
            other => panic!("expected a retry, got {other:?}"),
        }
    }
    errors
}

#[tokio::test]
async fn a_refused_fixed_token_stops_the_client_but_a_provider_is_asked_again() {
    let auth = hs256();
    let server = TestServer::start(with_auth(auth.clone())).await;
    let forged = token(
        &AuthConfig {
            secret: "another-secret-another-secret-another!".into(),
            ..auth.clone()
        },
        "mallory",
        "Mallory",
    );

    // The same token would be refused again: the client stops at once.
    let mut config = client_config(&server.url(), "");
    config.token = Some(TokenProvider::fixed(forged.clone()));
    let (client, mut events) = chat_client::Client::connect(config);
    let first = tokio::time::timeout(WAIT, events.next())
        .await
        .expect("an event");
    match first {
        Some(Event::Stopped { reason }) => assert!(reason.contains("session refused"), "{reason}"),
        other => panic!("expected Stopped, got {other:?}"),
    }
    let last = tokio::time::timeout(WAIT, events.next())
        .await
        .expect("the end");
    assert!(last.is_none(), "Stopped is the last event: {last:?}");
    assert!(matches!(
        client.state(),
        chat_client::ConnectionState::Closed
    ));

    // A token not valid yet (or a key not loaded yet) may pass later: a
    // fixed one is tried again.
    let later = now() + 3600;
    let early = signed(
        Algorithm::HS256,
        &EncodingKey::from_secret(auth.secret.expose().as_bytes()),
        serde_json::json!({ "sub": "u1", "iss": auth.issuer, "aud": auth.audience, "exp": later, "nbf": later - 60 }),
    );
    let mut config = client_config(&server.url(), "");
    config.token = Some(TokenProvider::fixed(early));
    config.backoff = chat_client::Backoff {
        initial: Duration::from_millis(10),
        max: Duration::from_millis(20),
    };
    let (client, mut events) = chat_client::Client::connect(config);
    for error in expect_retries(&mut events, 2).await {
        assert!(error.contains("not valid yet"), "{error}");
    }
    client.close();

    // A provider may have a better token next time: the client retries.
    let asked = Arc::new(AtomicUsize::new(0));
    let mut config = client_config(&server.url(), "");
    config.token = Some({
        let (asked, forged) = (asked.clone(), forged.clone());
        TokenProvider::new(move || {
            asked.fetch_add(1, Ordering::SeqCst);
            let forged = forged.clone();
            async move { Ok(forged) }
        })
    });
    config.backoff = chat_client::Backoff {
        initial: Duration::from_millis(10),
        max: Duration::from_millis(20),
    };
    let (client, mut events) = chat_client::Client::connect(config);
    expect_retries(&mut events, 2).await;
    assert!(asked.load(Ordering::SeqCst) >= 2);
    client.close();
    server.stop().await;
}

/// Ed25519, P-256 and RSA keys as PEM files, and Ed25519 keys in a JWKS
/// file that is replaced while the server runs.
#[tokio::test]
async fn public_keys_from_pem_and_a_reloaded_jwks() {
    use ed25519_dalek::pkcs8::{EncodePrivateKey, EncodePublicKey};
    let dir = std::env::temp_dir().join(format!("chat-auth-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = |name: &str, contents: &str| {
        let path = dir.join(name);
        std::fs::write(&path, contents).unwrap();
        path.display().to_string()
    };
    let ed = ed25519_dalek::SigningKey::generate(&mut rand_core::OsRng);
    let line = ed25519_dalek::pkcs8::spki::der::pem::LineEnding::LF;
    let ed_private = ed.to_pkcs8_pem(line).unwrap();
    let ed_public = ed.verifying_key().to_public_key_pem(line).unwrap();
    let ec = p256::SecretKey::random(&mut rand_core::OsRng);
    let ec_private = ec.to_pkcs8_pem(line).unwrap();
    let ec_public = ec.public_key().to_public_key_pem(line).unwrap();
    let rsa = rsa::RsaPrivateKey::new(&mut rand_core::OsRng, 2048).unwrap();
    let rsa_private = EncodePrivateKey::to_pkcs8_pem(&rsa, line).unwrap();
    let rsa_public = EncodePublicKey::to_public_key_pem(&rsa.to_public_key(), line).unwrap();

    // PEM public keys, one algorithm each; tokens minted from the private keys.
    for (algorithm, private, public) in [
        (JwtAlgorithm::EdDSA, ed_private.as_str(), ed_public.as_str()),
        (JwtAlgorithm::ES256, ec_private.as_str(), ec_public.as_str()),
        (
            JwtAlgorithm::RS256,
            rsa_private.as_str(),
            rsa_public.as_str(),
        ),
    ] {
        let auth = AuthConfig {
            algorithm,
            secret: Default::default(),
            public_key_file: file(&format!("{algorithm:?}.pub.pem"), public),
            private_key_file: file(&format!("{algorithm:?}.pem"), private),
            ..hs256()
        };
        let server = TestServer::start(with_auth(auth.clone())).await;
        let good = token(&auth, "pk-user", "PK");
        assert!(
            matches!(
                open_raw(&server.url(), Some(&good), None)
                    .await
                    .unwrap()
                    .frame,
                Some(Frame::Welcome(_))
            ),
            "{algorithm:?}"
        );
        let hs = token(&hs256(), "pk-user", "PK");
        let message = assert_unauthenticated(
            open_raw(&server.url(), Some(&hs), None).await,
            "HS256 token",
        );
        assert!(message.contains("algorithm"), "{message}");
        // The classic confusion: HS256 "signed" with the public key as the
        // shared secret.
        let confused = signed(
            Algorithm::HS256,
            &EncodingKey::from_secret(public.as_bytes()),
            claims(&auth.issuer, &auth.audience, now() + 600),
        );
        let message = assert_unauthenticated(
            open_raw(&server.url(), Some(&confused), None).await,
            "HS256 with the public key as secret",
        );
        assert!(message.contains("algorithm"), "{message}");
        server.stop().await;
    }

    // A JWKS with one Ed25519 key ("k1"), then rotated to another ("k2").
    let jwk = |kid: &str, key: &ed25519_dalek::SigningKey| {
        serde_json::json!({ "kty": "OKP", "crv": "Ed25519", "alg": "EdDSA", "kid": kid,
                            "x": b64(key.verifying_key().as_bytes()) })
    };
    let ed2 = ed25519_dalek::SigningKey::generate(&mut rand_core::OsRng);
    let jwks = file(
        "jwks.json",
        &serde_json::json!({ "keys": [jwk("k1", &ed)] }).to_string(),
    );
    let auth = AuthConfig {
        algorithm: JwtAlgorithm::EdDSA,
        secret: Default::default(),
        jwks_file: jwks.clone(),
        ..hs256()
    };
    let server = TestServer::start(with_auth(auth.clone())).await;
    let mint_with = |private: &str, kid: &str| {
        let auth = AuthConfig {
            private_key_file: file(&format!("{kid}.pem"), private),
            ..auth.clone()
        };
        auth::mint(
            &auth,
            &TokenRequest {
                sub: "jwks-user".into(),
                ttl: Duration::from_secs(600),
                kid: Some(kid.into()),
                ..TokenRequest::default()
            },
        )
        .unwrap()
    };
    let k1 = mint_with(&ed_private, "k1");
    let k2 = mint_with(&ed2.to_pkcs8_pem(line).unwrap(), "k2");
    assert!(
        open_raw(&server.url(), Some(&k1), None).await.is_ok(),
        "k1 is served"
    );
    assert_unauthenticated(open_raw(&server.url(), Some(&k2), None).await, "k2 not yet");

    // Rotated: k1 out, k2 in, beside a key this server cannot use, which
    // is skipped rather than failing the reload.
    let unusable = serde_json::json!({ "kty": "RSA", "kid": "junk", "n": "!!", "e": "AQAB" });
    std::fs::write(
        &jwks,
        serde_json::json!({ "keys": [unusable, jwk("k2", &ed2)] }).to_string(),
    )
    .unwrap();
    // The file is looked at again at most once per KEY_RECHECK.
    let deadline = tokio::time::Instant::now() + WAIT;
    while open_raw(&server.url(), Some(&k2), None).await.is_err() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the JWKS was not reloaded"
        );
        tokio::time::sleep(auth::KEY_RECHECK / 4).await;
    }
    assert_unauthenticated(
        open_raw(&server.url(), Some(&k1), None).await,
        "k1 rotated out",
    );

    // A broken file keeps the keys that worked.
    std::fs::write(&jwks, "{ not json").unwrap();
    tokio::time::sleep(auth::KEY_RECHECK * 2).await;
    assert!(
        open_raw(&server.url(), Some(&k2), None).await.is_ok(),
        "k2 still served"
    );
    server.stop().await;
    let _ = std::fs::remove_dir_all(&dir);
}

/// Issue 16, point 4, on the embedded SQLite store: only the author edits
/// a message; the author or an operator (a token with `admin`) deletes it,
/// an operator even in a room that is read-only for it; a read-only member
/// changes nothing. Refusals take no number.
#[tokio::test]
async fn authors_edit_and_delete_their_messages_and_operators_delete_any() {
    let auth = AuthConfig {
        default_room_access: DefaultRoomAccess::Closed,
        ..hs256()
    };
    let dir = std::env::temp_dir().join(format!("chat-changes-{}", uuid::Uuid::new_v4().simple()));
    let mut c = with_auth(auth.clone());
    c.store.url = format!("sqlite://{}/chat.db", dir.display());
    let server = TestServer::start(c).await;
    let mint = |sub: &str, read_only: bool, admin: bool| {
        auth::mint(
            &auth,
            &TokenRequest {
                sub: sub.into(),
                name: Some(sub.to_uppercase()),
                ttl: Duration::from_secs(600),
                rooms: if read_only {
                    vec![]
                } else {
                    vec!["news".into()]
                },
                read_only_rooms: if read_only {
                    vec!["news".into()]
                } else {
                    vec![]
                },
                admin,
                ..TokenRequest::default()
            },
        )
        .unwrap()
    };
    let client = |token: String| {
        let mut config = client_config(&server.url(), "");
        config.token = Some(TokenProvider::fixed(token));
        connect_with(config)
    };
    let (writer, _writer_ev) = client(mint("writer", false, false)).await;
    let (other, _other_ev) = client(mint("other", false, false)).await;
    let (reader, mut reader_ev) = client(mint("reader", true, false)).await;
    let (operator, _operator_ev) = client(mint("op", true, true)).await;
    for c in [&writer, &other, &reader, &operator] {
        c.join("news").await.unwrap();
    }
    writer.send("news", "one").await.unwrap();
    writer.send("news", "two").await.unwrap();
    assert_eq!(
        refusal(other.edit("news", 1, "mine").await),
        ErrorCode::NotTheAuthor
    );
    assert_eq!(
        refusal(other.delete("news", 1).await),
        ErrorCode::NotTheAuthor
    );
    assert_eq!(
        refusal(operator.edit("news", 1, "censored").await),
        ErrorCode::PermissionDenied,
        "the room is read-only for the operator"
    );
    assert_eq!(
        refusal(reader.delete("news", 1).await),
        ErrorCode::PermissionDenied
    );
    assert_eq!(
        refusal(reader.edit("news", 1, "x").await),
        ErrorCode::PermissionDenied
    );

    assert_eq!(writer.edit("news", 1, "one!").await.unwrap().sequence, 3);
    assert_eq!(operator.delete("news", 2).await.unwrap().sequence, 4);
    assert_eq!(writer.delete("news", 1).await.unwrap().sequence, 5);
    let mut kinds = Vec::new();
    while kinds.len() < 5 {
        match expect_event(&mut reader_ev, "news", |e| matches!(e, Event::Message(_))).await {
            Event::Message(m) => kinds.push((m.sequence, m.kind, m.target_sequence)),
            _ => unreachable!(),
        }
    }
    assert_eq!(
        kinds,
        [(1, 0, 0), (2, 0, 0), (3, 1, 1), (4, 2, 2), (5, 2, 1)]
    );
    let page = reader
        .history("news", HistoryDirection::Forward, 0, 10)
        .await
        .unwrap();
    assert!(
        page.messages[..2]
            .iter()
            .all(|m| m.deleted && m.text.is_empty())
    );
    assert_eq!(page.messages[3].sender.as_ref().unwrap().user_id, "op");
    server.stop().await;
    let _ = std::fs::remove_dir_all(&dir);
}

/// Issue 16, point 1: a direct conversation is open to its pair whatever
/// their tokens' room rules say (here: no room at all), and closed to
/// everyone else, whatever theirs say (here: every room).
#[tokio::test]
async fn a_direct_conversation_follows_its_pair_not_the_tokens_room_rules() {
    let auth = AuthConfig {
        default_room_access: DefaultRoomAccess::Closed,
        ..hs256()
    };
    let server = TestServer::start(with_auth(auth.clone())).await;
    let mint = |sub: &str, rooms: &[&str]| {
        auth::mint(
            &auth,
            &TokenRequest {
                sub: sub.into(),
                ttl: Duration::from_secs(600),
                rooms: rooms.iter().map(|s| s.to_string()).collect(),
                ..TokenRequest::default()
            },
        )
        .unwrap()
    };
    let client = |token: String| {
        let mut config = client_config(&server.url(), "");
        config.token = Some(TokenProvider::fixed(token));
        connect_with(config)
    };
    let (ann, _ann_ev) = client(mint("ann", &[])).await;
    let (bob, mut bob_ev) = client(mint("bob", &[])).await;
    let (eve, _eve_ev) = client(mint("eve", &["*"])).await;
    let conversation = ann.open_direct("bob").await.unwrap();
    ann.send(&conversation.room, "just us").await.unwrap();
    match expect_event(&mut bob_ev, "the message", |e| {
        matches!(e, Event::Message(_))
    })
    .await
    {
        Event::Message(m) => assert_eq!(m.text, "just us"),
        _ => unreachable!(),
    }
    bob.send(&conversation.room, "indeed")
        .await
        .expect("bob writes where his token names no room");
    match eve.join(&conversation.room).await {
        Err(ClientError::Server { code, .. }) => assert_eq!(code, ErrorCode::PermissionDenied),
        other => panic!("eve joined: {other:?}"),
    }
    match eve
        .history(&conversation.room, HistoryDirection::Backward, 0, 10)
        .await
    {
        Err(ClientError::Server { code, .. }) => assert_eq!(code, ErrorCode::PermissionDenied),
        other => panic!("eve read: {other:?}"),
    }
    server.stop().await;
}

#[tokio::test]
async fn admin_endpoint_takes_a_token_with_the_admin_claim() {
    let auth = hs256();
    let server = TestServer::start(with_auth(auth.clone())).await;
    let user = token(&auth, "user", "User");
    let admin = auth::mint(
        &auth,
        &TokenRequest {
            sub: "op".into(),
            ttl: Duration::from_secs(600),
            admin: true,
            ..TokenRequest::default()
        },
    )
    .unwrap();
    let body = r#"{"text":"maintenance at noon"}"#;
    let post = |token: Option<String>| {
        let addr = server.addr();
        async move {
            let post = HttpRequest::new("POST", "/admin/broadcast").bearer(token.as_deref());
            http(addr, post.json(body)).await.status
        }
    };
    assert_eq!(post(None).await, 401);
    assert_eq!(post(Some("garbage".into())).await, 401);
    assert_eq!(post(Some(user)).await, 403, "a valid token without admin");
    assert_eq!(post(Some(admin)).await, 202);
    server.stop().await;
}

#[test]
fn without_auth_the_server_listens_on_loopback_only() {
    let mut c = config();
    c.listen = "0.0.0.0:5000".parse().unwrap();
    let err = c.validate().expect_err("auth off beyond loopback");
    let message = err.to_string();
    assert!(
        message.contains("auth.mode") && message.contains("SECURITY.md"),
        "{message}"
    );
    c.listen = "[::]:5000".parse().unwrap();
    assert!(c.validate().is_err());

    c.auth = hs256();
    c.validate().expect("with auth, any address");
    c.auth.secret = "short".into();
    assert!(c.validate().unwrap_err().to_string().contains("32 bytes"));
    c.auth = AuthConfig {
        algorithm: JwtAlgorithm::RS256,
        ..hs256()
    };
    assert!(
        c.validate().is_err(),
        "RS256 with a secret and no public key"
    );
}
