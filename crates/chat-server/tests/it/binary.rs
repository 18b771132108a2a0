//! The `chat-server` binary as an operator runs it: configuration sources,
//! `--print-config`, and SIGTERM ending in exit code 0 within the drain
//! timeout even when a client never hangs up.

use crate::common::*;
use std::process::Command;
use std::time::Duration;

#[test]
fn print_config_shows_file_env_and_flag_values_in_precedence() {
    let dir = std::env::temp_dir().join(format!("chat-print-config-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("chat.toml");
    std::fs::write(&file, "listen = \"127.0.0.1:7001\"\n[limits]\nmax_text_bytes = 100\nmax_rooms_per_connection = 5\n").unwrap();
    let out = Command::new(BIN)
        .args([
            "--config",
            file.to_str().unwrap(),
            "--print-config",
            "--listen",
            "127.0.0.1:7003",
        ])
        .env("CHAT_LIMITS__MAX_ROOMS_PER_CONNECTION", "9")
        .env_remove("RUST_LOG")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let printed = String::from_utf8(out.stdout).unwrap();
    assert!(
        printed.contains("listen = \"127.0.0.1:7003\""),
        "flag wins:\n{printed}"
    );
    assert!(
        printed.contains("max_rooms_per_connection = 9"),
        "env beats file:\n{printed}"
    );
    assert!(
        printed.contains("max_text_bytes = 100"),
        "file beats default:\n{printed}"
    );
    assert!(
        printed.contains("drain_timeout = \"10s\""),
        "defaults shown:\n{printed}"
    );

    let bad = Command::new(BIN)
        .args(["--print-config"])
        .env("CHAT_LIMITS__MAX_TEXT_BYTES", "lots")
        .output()
        .unwrap();
    assert!(!bad.status.success());
    let stderr = String::from_utf8_lossy(&bad.stderr).to_lowercase();
    assert!(
        stderr.contains("max_text_bytes") && stderr.contains("lots"),
        "{stderr}"
    );
    std::fs::remove_dir_all(&dir).ok();
}

#[tokio::test]
async fn sigterm_drains_and_exits_zero_within_the_drain_timeout() {
    // Debug: a join's line (at debug since joins come in storms) shows
    // what a line inside a session carries.
    let running = ServerProcess::start(&[
        ("CHAT_SHUTDOWN__DRAIN_TIMEOUT", "2s"),
        ("RUST_LOG", "info,chat_server::session=debug"),
    ])
    .await;
    let (addr, url) = (running.addr.clone(), running.url());

    // A client that never hangs up, in a room.
    let mut stubborn = RawSession::open(&url, "stubborn").await.unwrap();
    stubborn
        .send(
            1,
            chat_client::proto::client_frame::Request::JoinRoom(
                chat_client::proto::JoinRoomRequest {
                    room: "lobby".into(),
                    since_sequence: None,
                },
            ),
        )
        .await;
    assert!(matches!(
        stubborn.next().await,
        Some(chat_client::proto::server_frame::Frame::Welcome(_))
    ));
    assert!(matches!(
        stubborn.next().await,
        Some(chat_client::proto::server_frame::Frame::Reply(_))
    ));

    // The container health check answers from the same configuration.
    let probe = Command::new(BIN)
        .args(["--listen", &addr, "healthcheck"])
        .output()
        .unwrap();
    assert!(
        probe.status.success(),
        "{}",
        String::from_utf8_lossy(&probe.stderr)
    );
    assert!(String::from_utf8_lossy(&probe.stdout).contains("\"ready\""));

    let (status, took, logs) = running.terminate().await;
    assert!(status.success(), "exit status {status:?}");
    assert!(
        took < Duration::from_millis(3500),
        "took {took:?} with a 2 s drain timeout"
    );

    let frames = stubborn.drain().await;
    assert!(
        frames.iter().any(|f| matches!(
            f,
            chat_client::proto::server_frame::Frame::Disconnect(n)
                if n.reason == chat_client::proto::DisconnectReason::ShuttingDown as i32
        )),
        "{frames:?}"
    );

    let all = logs.join("\n");
    assert!(all.contains("SIGTERM"), "{all}");
    // Lines about a session carry its connection id and user.
    let session_line = logs
        .iter()
        .find(|l| l.contains("\"joined\""))
        .unwrap_or_else(|| panic!("a joined line in {all}"));
    let v: serde_json::Value = serde_json::from_str(session_line).unwrap();
    assert_eq!(v["room"], "lobby", "{session_line}");
    assert_eq!(v["span"]["user"], "stubborn", "{session_line}");
    assert!(v["span"]["conn"].is_number(), "{session_line}");
}

#[tokio::test]
async fn traces_go_to_the_otlp_collector_and_log_lines_carry_their_ids() {
    use chat_client::proto::{JoinRoomRequest, SendMessageRequest, client_frame::Request};
    let (collector_addr, mut exports) = collector::start(None).await;
    let endpoint = format!("http://{collector_addr}");
    // Only requests whose client asks for a trace are traced.
    let running = ServerProcess::start(&[
        ("RUST_LOG", "info,chat_server::session=debug"),
        ("CHAT_TRACES__OTLP_ENDPOINT", &endpoint),
        ("CHAT_TRACES__SAMPLE_RATIO", "0"),
    ])
    .await;
    let url = running.url();

    // The client's trace, passed on the Session call.
    let trace_id = "4bf92f3577b34da6a3ce929d0e0e4736";
    let traceparent = format!("00-{trace_id}-00f067aa0ba902b7-01");
    let mut alice = RawSession::open_with(&url, "alice", &[("traceparent", &traceparent)])
        .await
        .unwrap();
    alice
        .send(
            1,
            Request::JoinRoom(JoinRoomRequest {
                room: "lobby".into(),
                since_sequence: None,
            }),
        )
        .await;
    alice
        .send(
            2,
            Request::SendMessage(SendMessageRequest {
                room: "lobby".into(),
                client_message_id: "m1".into(),
                text: "traced".into(),
            }),
        )
        .await;
    let mut replies = 0;
    while replies < 2 {
        if let Some(chat_client::proto::server_frame::Frame::Reply(_)) = alice.next().await {
            replies += 1;
        }
    }

    // Stopping flushes the spans still batched.
    // Bob sends no trace context: at sample ratio 0 he makes no span.
    let mut bob = RawSession::open(&url, "bob").await.unwrap();
    bob.send(
        1,
        Request::JoinRoom(JoinRoomRequest {
            room: "lobby".into(),
            since_sequence: None,
        }),
    )
    .await;
    loop {
        if let Some(chat_client::proto::server_frame::Frame::Reply(_)) = bob.next().await {
            break;
        }
    }

    let (status, _, logs) = running.terminate().await;
    assert!(status.success(), "exit status {status:?}");
    let (names, all) = collector::span_names(&mut exports, trace_id, "chat-server");
    assert_eq!(
        names,
        [
            "backplane.publish",
            "chat.join",
            "chat.send",
            "fanout",
            "store.append"
        ],
        "the client's trace, exported"
    );
    assert_eq!(
        all,
        names.len(),
        "no other span: bob's requests were not sampled"
    );

    // The log line of the join, inside its request, names the trace; its
    // span is still the session.
    let all = logs.join("\n");
    let joined = logs
        .iter()
        .find(|l| l.contains("\"joined\""))
        .unwrap_or_else(|| panic!("a joined line in {all}"));
    let v: serde_json::Value = serde_json::from_str(joined).unwrap();
    assert_eq!(v["trace_id"], trace_id, "{joined}");
    assert_eq!(v["span_id"].as_str().map(str::len), Some(16), "{joined}");
    assert_eq!(v["span"]["user"], "alice", "{joined}");
    assert!(all.contains("exporting traces over OTLP"), "{all}");
}
