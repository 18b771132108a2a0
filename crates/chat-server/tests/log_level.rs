//! The log filter changes at run time through `PUT /admin/log-level`,
//! behind the admin credentials. One test in its own process: it installs
//! the global logger.

mod common;

use chat_server::config::{LogConfig, LogFormat};
use common::*;

#[tokio::test]
async fn the_log_filter_changes_without_a_restart() {
    chat_server::telemetry::init(
        &LogConfig {
            level: "warn".into(),
            format: LogFormat::Json,
        },
        None,
    )
    .expect("logger installed");
    let mut c = config();
    c.admin.token = "ops".into();
    let server = TestServer::start(c).await;
    let addr = server.addr();
    let put = |token: Option<&'static str>, body: &'static str| async move {
        http_request(addr, "PUT", "/admin/log-level", token, body).await
    };

    assert_eq!(put(None, r#"{"level":"debug"}"#).await.0, 401);
    let (status, body) = put(Some("ops"), r#"{"level":"warn"}"#).await;
    assert_eq!(status, 200, "{body}");
    assert!(!tracing::enabled!(target: "chat_server", tracing::Level::DEBUG));

    let (status, body) = put(Some("ops"), r#"{"level":"chat_server=debug,warn"}"#).await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("chat_server=debug"), "{body}");
    assert!(
        tracing::enabled!(target: "chat_server", tracing::Level::DEBUG),
        "the new filter is in force"
    );
    let (status, body) = http_request(addr, "GET", "/admin/log-level", Some("ops"), "").await;
    assert_eq!(status, 200);
    assert!(body.contains("chat_server=debug"), "{body}");

    let (status, body) = put(Some("ops"), r#"{"level":"chat_server=loud"}"#).await;
    assert_eq!(status, 400, "{body}");
    assert!(
        tracing::enabled!(target: "chat_server", tracing::Level::DEBUG),
        "a bad filter changes nothing"
    );
    assert_eq!(put(Some("ops"), r#"{"lvl":"info"}"#).await.0, 400);
    server.stop().await;
}
