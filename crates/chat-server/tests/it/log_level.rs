//! The log filter changes at run time through `PUT /admin/log-level`,
//! behind the admin credentials. In a process of its own
//! ([`in_own_process`]): it installs the process's logger and changes its
//! filter.

use crate::common::*;
use chat_server::config::{LogConfig, LogFormat};

#[tokio::test]
async fn the_log_filter_changes_without_a_restart() {
    if !in_own_process() {
        return;
    }
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
        let put = HttpRequest::new("PUT", "/admin/log-level").bearer(token);
        let HttpResponse { status, body, .. } = http(addr, put.json(body)).await;
        (status, body)
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
    let get = HttpRequest::get("/admin/log-level").bearer("ops");
    let HttpResponse { status, body, .. } = http(addr, get).await;
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
