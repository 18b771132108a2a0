//! The server API over HTTP JSON (`/v1/api/…`): who may call it, what it
//! refuses, its rate, and each call on one instance. Two instances behind
//! a backplane are in `cluster.rs`
//! (`an_application_posts_lists_and_reads_without_a_connection`).

use crate::common::*;
use chat_client::Event;
use chat_server::auth::{self, TokenRequest};
use chat_server::config::{AuthConfig, AuthMode, JwtAlgorithm};
use serde_json::Value;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const TOKEN: &str = "api-t0ken";

fn with_token() -> chat_server::Config {
    let mut c = config();
    c.admin.token = TOKEN.into();
    c
}

/// `method path` with `token` and `body` (JSON), as status and parsed body.
async fn call(
    server: &TestServer,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<&str>,
) -> (u16, Value) {
    let mut request = HttpRequest::new(method, path).bearer(token);
    if let Some(body) = body {
        request = request.json(body);
    }
    let response = http(server.addr(), request).await;
    let parsed = serde_json::from_str(response.body.trim()).unwrap_or(Value::Null);
    (response.status, parsed)
}

/// Everything a refused client's events said until they ended (bounded).
async fn refusal_seen(mut events: chat_client::Events) -> String {
    let mut seen = String::new();
    let _ = tokio::time::timeout(WAIT, async {
        while let Some(e) = events.next().await {
            seen.push_str(&format!("{e:?}\n"));
            if seen.contains("reserved") {
                return;
            }
        }
    })
    .await;
    seen
}

#[tokio::test]
async fn the_api_is_closed_by_default_and_takes_the_admin_token_or_a_jwt_granting_it() {
    let closed = TestServer::start(config()).await;
    assert_eq!(
        call(&closed, "GET", "/v1/api/rooms", None, None).await.0,
        404
    );
    closed.stop().await;

    let server = TestServer::start(with_token()).await;
    assert_eq!(
        call(&server, "GET", "/v1/api/rooms", None, None).await.0,
        401
    );
    let wrong = call(&server, "GET", "/v1/api/rooms", Some("nope"), None).await;
    assert_eq!(wrong.0, 401);
    // A refused caller learns nothing of what its request lacks: nothing
    // of it is read (a body over the limit would be 413 otherwise).
    let (status, refused) =
        call(&server, "POST", "/v1/api/rooms/x/messages", None, Some("{")).await;
    assert_eq!(
        (status, refused["code"].as_str()),
        (401, Some("UNAUTHENTICATED"))
    );
    let huge = "x".repeat(200 * 1024);
    let (status, _) = call(
        &server,
        "POST",
        "/v1/api/rooms/x/messages",
        None,
        Some(&huge),
    )
    .await;
    assert_eq!(status, 401);
    // A body announced and never sent: answered at once, not waited for.
    let head = "POST /v1/api/rooms/x/messages HTTP/1.1\r\nhost: chat\r\n\
                content-type: application/json\r\ncontent-length: 100000\r\n\r\n";
    let mut tcp = tokio::net::TcpStream::connect(server.addr()).await.unwrap();
    tcp.write_all(head.as_bytes()).await.unwrap();
    let mut answer = vec![0u8; 12];
    tokio::time::timeout(Duration::from_secs(3), tcp.read_exact(&mut answer))
        .await
        .expect("refused without waiting for the body")
        .unwrap();
    assert_eq!(&answer, b"HTTP/1.1 401");
    let (status, _) = call(
        &server,
        "POST",
        "/v1/api/rooms/x/messages",
        Some(TOKEN),
        Some(&huge),
    )
    .await;
    assert_eq!(status, 413, "over the body limit, for a caller let in");
    let (status, body) = call(&server, "GET", "/v1/api/rooms", Some(TOKEN), None).await;
    assert_eq!((status, body["rooms"].clone()), (200, Value::Array(vec![])));
    let m = scrape_metrics(server.addr()).await;
    assert_eq!(m[r#"chat_api_calls_total{call="rooms"}"#], 3.0, "{m:?}");
    assert_eq!(m[r#"chat_api_errors_total{call="rooms"}"#], 2.0);
    assert_eq!(m[r#"chat_api_errors_total{call="post"}"#], 4.0);
    server.stop().await;

    let auth = AuthConfig {
        mode: AuthMode::Jwt,
        algorithm: JwtAlgorithm::HS256,
        secret: "an-api-test-secret-of-at-least-32-bytes".into(),
        issuer: "chat-test".into(),
        audience: "chat-test-aud".into(),
        ..AuthConfig::default()
    };
    let mut c = config();
    c.auth = auth.clone();
    let server = TestServer::start(c).await;
    let mint = |api: bool, admin: bool| {
        auth::mint(
            &auth,
            &TokenRequest {
                sub: "backend".into(),
                ttl: Duration::from_secs(600),
                api,
                admin,
                ..TokenRequest::default()
            },
        )
        .unwrap()
    };
    let get = |token: String| {
        let server = &server;
        async move {
            call(server, "GET", "/v1/api/rooms", Some(&token), None)
                .await
                .0
        }
    };
    assert_eq!(get(mint(false, false)).await, 403, "a user's token");
    let (_, refused) = call(
        &server,
        "GET",
        "/v1/api/rooms",
        Some(&mint(false, false)),
        None,
    )
    .await;
    assert_eq!(refused["code"], "PERMISSION_DENIED");
    assert_eq!(get(mint(true, false)).await, 200, "api: true");
    assert_eq!(
        get(mint(false, true)).await,
        200,
        "admin: true grants it too"
    );
    // The API's senders are nobody's user id: `chat-server token` will not
    // mint one, and a token signed otherwise is refused.
    let reserved = TokenRequest {
        sub: "bot:news".into(),
        ttl: Duration::from_secs(600),
        ..TokenRequest::default()
    };
    assert!(auth::mint(&auth, &reserved).is_err());
    let exp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 600;
    let claims = serde_json::json!({ "sub": "bot:news", "iss": "chat-test", "aud": "chat-test-aud", "exp": exp });
    let bot = jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(auth.secret.expose().as_bytes()),
    )
    .unwrap();
    let mut as_bot = client_config(&server.url(), "x");
    as_bot.token = Some(chat_client::TokenProvider::fixed(bot));
    as_bot.reconnect = false;
    let (client, events) = chat_client::Client::connect(as_bot);
    let seen = refusal_seen(events).await;
    assert!(seen.contains("reserved"), "{seen}");
    client.close();
    server.stop().await;
}

#[tokio::test]
async fn an_application_posts_as_a_bot_or_the_system_once_per_key() {
    let server = TestServer::start(with_token()).await;
    let (alice, mut alice_ev) = connect(&server.url(), "alice").await;
    alice.join("news").await.unwrap();
    let post = |body: &'static str| {
        call(
            &server,
            "POST",
            "/v1/api/rooms/news/messages",
            Some(TOKEN),
            Some(body),
        )
    };

    let (status, ack) =
        post(r#"{"text":"hello","idempotency_key":"k1","bot":{"id":"feed","name":"Feed"}}"#).await;
    assert_eq!(status, 200, "{ack}");
    assert_eq!(ack["sequence"], 1);
    assert_eq!(ack["sender"]["user_id"], "bot:feed");
    match expect_event(&mut alice_ev, "the bot's message", |e| {
        matches!(e, Event::Message(_))
    })
    .await
    {
        Event::Message(m) => {
            let sender = m.sender.unwrap();
            assert_eq!(
                (
                    sender.user_id.as_str(),
                    sender.display_name.as_str(),
                    m.text.as_str()
                ),
                ("bot:feed", "Feed", "hello")
            );
            assert_eq!(m.client_message_id, "k1");
        }
        _ => unreachable!(),
    }
    // A retry with the same key is the same message, not another.
    let (status, again) =
        post(r#"{"text":"hello","idempotency_key":"k1","bot":{"id":"feed","name":"Feed"}}"#).await;
    assert_eq!(
        (
            status,
            again["sequence"].clone(),
            again["message_id"].clone()
        ),
        (200, ack["sequence"].clone(), ack["message_id"].clone())
    );
    // The same key for another text is refused, and posts nothing.
    let (status, refused) =
        post(r#"{"text":"hullo","idempotency_key":"k1","bot":{"id":"feed","name":"Feed"}}"#).await;
    assert_eq!(
        (status, refused["code"].as_str()),
        (400, Some("INVALID_ARGUMENT")),
        "{refused}"
    );
    expect_no_event(&mut alice_ev, Duration::from_millis(300), |e| {
        matches!(e, Event::Message(_))
    })
    .await;
    // The system, in a room nobody is in.
    let (status, ack) = call(
        &server,
        "POST",
        "/v1/api/rooms/announcements/messages",
        Some(TOKEN),
        Some(r#"{"text":"maintenance at noon","idempotency_key":"m-1"}"#),
    )
    .await;
    assert_eq!(
        (
            status,
            ack["sequence"].clone(),
            ack["sender"]["user_id"].clone()
        ),
        (200, 1.into(), "system".into())
    );
    // A disconnect or removal needs no body (nor a reason).
    let (status, ended) = call(
        &server,
        "POST",
        "/v1/api/users/nobody/disconnect",
        Some(TOKEN),
        None,
    )
    .await;
    assert_eq!(
        (status, &ended["sessions_here"]),
        (200, &serde_json::json!(0)),
        "{ended}"
    );
    let (status, _) = call(
        &server,
        "POST",
        "/v1/api/rooms/news/members/nobody/remove",
        Some(TOKEN),
        Some(""),
    )
    .await;
    assert_eq!(status, 200);
    let (status, page) = call(
        &server,
        "GET",
        "/v1/api/rooms/announcements/messages",
        Some(TOKEN),
        None,
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(page["latest_sequence"], 1);
    assert_eq!(page["messages"][0]["text"], "maintenance at noon");
    assert_eq!(page["messages"][0]["sender"]["display_name"], "System");
    assert_eq!(page["messages"][0]["kind"], "message");

    // What it refuses, with the contract's codes, storing nothing.
    for (body, code) in [
        (r#"{"text":"x","idempotency_key":""}"#, "INVALID_ARGUMENT"),
        (r#"{"text":"","idempotency_key":"e1"}"#, "INVALID_ARGUMENT"),
        (
            r#"{"text":"x","idempotency_key":"e2","bot":{"id":"Not Valid","name":"N"}}"#,
            "INVALID_ARGUMENT",
        ),
        (
            r#"{"text":"x","idempotency_key":"e3","bot":{"id":"ok","name":""}}"#,
            "INVALID_ARGUMENT",
        ),
        (
            r#"{"text":"x","idempotency_key":"e4","as":"root"}"#,
            "INVALID_ARGUMENT",
        ),
        (r#"{"text":"x""#, "INVALID_ARGUMENT"),
    ] {
        let (status, refused) = post(body).await;
        assert_eq!(
            (status, refused["code"].as_str()),
            (400, Some(code)),
            "{body}: {refused}"
        );
    }
    let long = format!(
        r#"{{"text":"{}","idempotency_key":"e5"}}"#,
        "x".repeat(5000)
    );
    let (status, refused) = call(
        &server,
        "POST",
        "/v1/api/rooms/news/messages",
        Some(TOKEN),
        Some(&long),
    )
    .await;
    assert_eq!(
        (status, refused["code"].as_str()),
        (413, Some("MESSAGE_TOO_LARGE")),
        "{refused}"
    );
    let (status, refused) = call(
        &server,
        "POST",
        "/v1/api/rooms/no%20spaces/messages",
        Some(TOKEN),
        Some(r#"{"text":"x","idempotency_key":"e6"}"#),
    )
    .await;
    assert_eq!(
        (status, refused["code"].as_str()),
        (400, Some("INVALID_ARGUMENT")),
        "{refused}"
    );
    let (_, page) = call(
        &server,
        "GET",
        "/v1/api/rooms/news/messages",
        Some(TOKEN),
        None,
    )
    .await;
    assert_eq!(page["latest_sequence"], 1, "nothing refused was stored");
    server.stop().await;
}

#[tokio::test]
async fn rooms_come_in_pages_with_their_members_and_history_pages_both_ways() {
    let server = TestServer::start(with_token()).await;
    let mut clients = Vec::new();
    for (name, rooms) in [
        ("ann", &["r1", "r2"][..]),
        ("bob", &["r2"]),
        ("cat", &["r3"]),
    ] {
        let (c, ev) = connect(&server.url(), name).await;
        for room in rooms {
            c.join(room).await.unwrap();
        }
        clients.push((c, ev));
    }
    let get = |path: String| {
        let server = &server;
        async move { call(server, "GET", &path, Some(TOKEN), None).await }
    };
    let (status, page) = get("/v1/api/rooms?limit=2".into()).await;
    assert_eq!(status, 200);
    assert_eq!(
        page["rooms"],
        serde_json::json!([{"room":"r1","members":1},{"room":"r2","members":2}])
    );
    assert_eq!(page["next"], "r2");
    let (_, page) = get("/v1/api/rooms?limit=2&after=r2".into()).await;
    assert_eq!(
        page["rooms"],
        serde_json::json!([{"room":"r3","members":1}])
    );
    assert_eq!(page["next"], Value::Null);
    let (status, refused) = get("/v1/api/rooms?limit=lots".into()).await;
    assert_eq!(
        (status, refused["code"].as_str()),
        (400, Some("INVALID_ARGUMENT"))
    );
    let (_, members) = get("/v1/api/rooms/r2/members".into()).await;
    let names: Vec<&str> = members["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["display_name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["ann", "bob"]);

    let ann = &clients[0].0;
    for text in ["one", "two", "three"] {
        ann.send("r1", text).await.unwrap();
    }
    let texts = |page: &Value| -> Vec<String> {
        page["messages"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["text"].as_str().unwrap().to_string())
            .collect()
    };
    let (_, newest) = get("/v1/api/rooms/r1/messages?limit=2".into()).await;
    assert_eq!(texts(&newest), ["two", "three"]);
    let (_, oldest) =
        get("/v1/api/rooms/r1/messages?direction=forward&from=0&limit=2".into()).await;
    assert_eq!(texts(&oldest), ["one", "two"]);
    let (status, refused) = get("/v1/api/rooms/r1/messages?direction=sideways".into()).await;
    assert_eq!(
        (status, refused["code"].as_str()),
        (400, Some("INVALID_ARGUMENT"))
    );
    server.stop().await;
}

#[tokio::test]
async fn the_instance_answers_the_api_at_its_configured_rate() {
    let mut c = with_token();
    c.limits.api_rate = 1.0;
    c.limits.api_burst = 2;
    let server = TestServer::start(c).await;
    for _ in 0..2 {
        assert_eq!(
            call(&server, "GET", "/v1/api/rooms", Some(TOKEN), None)
                .await
                .0,
            200
        );
    }
    let response = http(
        server.addr(),
        HttpRequest::get("/v1/api/rooms").bearer(TOKEN),
    )
    .await;
    assert_eq!(response.status, 429);
    assert_eq!(response.header("retry-after"), Some("1"));
    let refused: Value = serde_json::from_str(response.body.trim()).unwrap();
    assert_eq!(refused["code"], "RATE_LIMITED");
    let m = scrape_metrics(server.addr()).await;
    assert_eq!(m[r#"chat_rate_limited_total{action="api"}"#], 1.0);
    server.stop().await;
}

#[tokio::test]
async fn no_client_may_call_itself_the_system_or_a_bot() {
    let server = TestServer::start(config()).await;
    for name in ["system", "bot:news"] {
        // Retrying, the client reports why each attempt failed.
        let (client, events) = chat_client::Client::connect(client_config(&server.url(), name));
        let seen = refusal_seen(events).await;
        assert!(seen.contains("reserved"), "{name}: {seen}");
        client.close();
    }
    server.stop().await;
}

/// A `chat.v1.ChatApi` client of `server`.
async fn grpc_api(
    server: &TestServer,
) -> chat_client::proto::chat_api_client::ChatApiClient<tonic::transport::Channel> {
    let channel = tonic::transport::Endpoint::from_shared(server.url())
        .unwrap()
        .connect()
        .await
        .unwrap();
    chat_client::proto::chat_api_client::ChatApiClient::new(channel)
}

/// `message` with the bearer `token`.
fn bearer<T>(message: T, token: &str) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request
        .metadata_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    request
}

/// The stable code a refusal carries.
fn chat_code(status: &tonic::Status) -> &str {
    status
        .metadata()
        .get("chat-error-code")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
}

#[tokio::test]
async fn the_same_calls_over_grpc_with_the_same_answers_and_codes() {
    use chat_client::proto::{
        ApiBot, ApiPostRequest, ApiRoomsRequest, HistoryRequest, ListMembersRequest,
    };
    let closed = TestServer::start(config()).await;
    let refused = grpc_api(&closed)
        .await
        .list_rooms(ApiRoomsRequest::default())
        .await
        .unwrap_err();
    assert_eq!(
        refused.code(),
        tonic::Code::Unimplemented,
        "closed by default"
    );
    closed.stop().await;

    let mut c = with_token();
    c.limits.api_rate = 1.0;
    c.limits.api_burst = 10;
    let server = TestServer::start(c).await;
    let (alice, mut alice_ev) = connect(&server.url(), "alice").await;
    alice.join("news").await.unwrap();
    let mut api = grpc_api(&server).await;
    let refused = api
        .list_rooms(ApiRoomsRequest::default())
        .await
        .unwrap_err();
    assert_eq!(
        (refused.code(), chat_code(&refused)),
        (tonic::Code::Unauthenticated, "UNAUTHENTICATED")
    );

    let post = ApiPostRequest {
        room: "news".into(),
        text: "deploy done".into(),
        idempotency_key: "g-1".into(),
        bot: Some(ApiBot {
            id: "ci".into(),
            name: "CI".into(),
        }),
    };
    let ack = api
        .post(bearer(post.clone(), TOKEN))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (
            ack.room.as_str(),
            ack.sequence,
            ack.client_message_id.as_str()
        ),
        ("news", 1, "g-1")
    );
    match expect_event(&mut alice_ev, "the bot's message", |e| {
        matches!(e, Event::Message(_))
    })
    .await
    {
        Event::Message(m) => assert_eq!(m.sender.unwrap().user_id, "bot:ci"),
        _ => unreachable!(),
    }
    let again = api
        .post(bearer(post.clone(), TOKEN))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        again.message_id, ack.message_id,
        "the same key: the same message"
    );
    let other = ApiPostRequest {
        text: "another".into(),
        ..post.clone()
    };
    let refused = api.post(bearer(other, TOKEN)).await.unwrap_err();
    assert_eq!(
        (refused.code(), chat_code(&refused)),
        (tonic::Code::InvalidArgument, "INVALID_ARGUMENT")
    );

    let rooms = api
        .list_rooms(bearer(ApiRoomsRequest::default(), TOKEN))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(rooms.rooms.len(), 1);
    assert_eq!(
        (
            rooms.rooms[0].room.as_str(),
            rooms.rooms[0].members,
            rooms.next.as_str()
        ),
        ("news", 1, "")
    );
    let members = api
        .list_members(bearer(
            ListMembersRequest {
                room: "news".into(),
                ..Default::default()
            },
            TOKEN,
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(members.members[0].user_id, "alice");
    let page = api
        .history(bearer(
            HistoryRequest {
                room: "news".into(),
                ..HistoryRequest::default()
            },
            TOKEN,
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (page.latest_sequence, page.messages[0].text.as_str()),
        (1, "deploy done")
    );
    let found = api
        .get_user(bearer(
            chat_client::proto::ApiUserRequest {
                user_id: "alice".into(),
            },
            TOKEN,
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (found.rooms, found.sessions_here),
        (vec!["news".to_string()], 1)
    );
    let ended = api
        .disconnect_user(bearer(
            chat_client::proto::ApiDisconnectRequest {
                user_id: "alice".into(),
                reason: "bye".into(),
                reconnect: false,
            },
            TOKEN,
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(ended.sessions_here, 1);
    match expect_event(&mut alice_ev, "the notice", |e| {
        matches!(e, Event::Disconnected { .. })
    })
    .await
    {
        Event::Disconnected {
            notice: Some(n), ..
        } => assert_eq!((n.message.as_str(), n.stay_disconnected), ("bye", true)),
        other => panic!("{other:?}"),
    }
    // Told to stay disconnected, the client stops instead of reconnecting.
    match expect_event(&mut alice_ev, "the stop", |e| {
        matches!(e, Event::Stopped { .. } | Event::Reconnecting { .. })
    })
    .await
    {
        Event::Stopped { reason } => assert_eq!(reason, "bye"),
        other => panic!("it reconnects: {other:?}"),
    }
    // HTTP and gRPC share the instance's API rate.
    let mut limited = None;
    for _ in 0..10 {
        if let Err(status) = api
            .list_rooms(bearer(ApiRoomsRequest::default(), TOKEN))
            .await
        {
            limited = Some(status);
            break;
        }
    }
    let limited = limited.expect("over the rate within ten calls");
    assert_eq!(
        (limited.code(), chat_code(&limited)),
        (tonic::Code::ResourceExhausted, "RATE_LIMITED")
    );
    assert!(limited.metadata().get("chat-retry-after-ms").is_some());
    let (status, _) = call(&server, "GET", "/v1/api/rooms", Some(TOKEN), None).await;
    assert_eq!(status, 429);
    server.stop().await;
}
