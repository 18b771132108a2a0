//! A tiny scenario A against a real server started in this process (port
//! 0, memory store, no notifications): every delivery arrives and the
//! report has load.js's fields.

mod common;

use chat_bench::Cli;
use clap::Parser;
use common::TestServer;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tiny_fan_out_delivers_everything() {
    let server = TestServer::start().await;
    let url = server.url.clone();
    let pid = std::process::id().to_string();
    let cli = Cli::try_parse_from([
        "chat-bench",
        "--scenario",
        "A",
        "--label",
        "tiny",
        "--urls",
        &url,
        "--rooms",
        "1",
        "--clients-per-room",
        "5",
        "--senders-per-room",
        "1",
        "--rate",
        "20",
        "--duration",
        "1",
        "--settle",
        "0.2",
        "--drain",
        "3",
        "--server-pids",
        &pid,
    ])
    .expect("flags parse");
    let report = chat_bench::run(cli.resolve().expect("valid")).await;

    assert_eq!(report.error, None);
    assert_eq!(report.connections, 5);
    assert_eq!(report.joined, 5);
    assert_eq!(report.messages_sent, 20);
    assert_eq!(report.acks_ok, 20);
    assert_eq!(report.deliveries_expected, 100);
    assert_eq!(report.deliveries_received, 100);
    assert_eq!(report.delivery_ratio, Some(1.0));
    assert_eq!(report.messages_incomplete, 0);
    assert_eq!(report.duplicate_deliveries, 0);
    assert_eq!(report.bad_messages, 0);
    assert!(report.failures().is_empty(), "{:?}", report.failures());

    let json: serde_json::Value =
        serde_json::from_str(&serde_json::to_string(&report).expect("encodes")).expect("parses");
    for key in [
        "label",
        "driver",
        "time_utc",
        "params",
        "connections",
        "connect_failed",
        "connect_s",
        "messages_planned",
        "messages_sent",
        "deliveries_received",
        "deliveries_expected",
        "delivery_ratio",
        "offered_deliveries_per_s",
        "deliveries_per_s",
        "window_s",
        "latency_ms",
        "ack_rtt_ms",
        "send_lag_ms",
        "servers",
        "server_cpu_s_run_total",
        "server_rss_kb_per_connection",
        "loadgen",
        "run_wall_s",
        "machine",
        "total_wall_s",
    ] {
        assert!(json.get(key).is_some(), "missing {key}");
    }
    assert_eq!(json["latency_ms"]["n"], 100);
    for key in ["p50", "p90", "p99", "max"] {
        assert!(
            json["latency_ms"][key].as_f64().is_some(),
            "latency_ms.{key}"
        );
    }
    assert_eq!(json["params"]["clients_per_room"], 5);
    assert_eq!(json["offered_deliveries_per_s"], 100.0);
    assert!(json["server_cpu_s_run_total"].as_f64().is_some());
    assert_eq!(json["servers"][0]["pid"], std::process::id());

    server.stop().await;
}

/// The same tiny fan-out through the lean driver (`--driver raw`): every
/// delivery arrives, every send is acknowledged, no disconnect.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tiny_fan_out_through_the_raw_driver_delivers_everything() {
    let server = TestServer::start().await;
    let url = server.url.clone();
    let cli = Cli::try_parse_from([
        "chat-bench",
        "--scenario",
        "A",
        "--driver",
        "raw",
        "--urls",
        &url,
        "--rooms",
        "2",
        "--clients-per-room",
        "4",
        "--senders-per-room",
        "2",
        "--rate",
        "10",
        "--duration",
        "1",
        "--settle",
        "0.2",
        "--drain",
        "3",
    ])
    .expect("flags parse");
    let report = chat_bench::run(cli.resolve().expect("valid")).await;

    assert_eq!(report.error, None);
    assert_eq!(report.driver, "raw");
    assert_eq!(report.disconnects_during_run, 0);
    assert_eq!(report.connections, 8);
    assert_eq!(report.joined, 8);
    assert_eq!(report.messages_sent, 40);
    assert_eq!(report.acks_ok, 40);
    assert_eq!(report.deliveries_expected, 160);
    assert_eq!(report.deliveries_received, 160);
    assert_eq!(report.messages_incomplete, 0);
    assert_eq!(report.duplicate_deliveries, 0);
    assert!(report.failures().is_empty(), "{:?}", report.failures());

    server.stop().await;
}

/// The same tiny fan-out over the WebSocket transport (`--driver ws`,
/// `/v1/ws` on the server's one listener): every delivery arrives, every
/// send is acknowledged, no disconnect, and the report says which driver
/// ran and splits the server's CPU into user and system time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tiny_fan_out_through_the_websocket_driver_delivers_everything() {
    let server = TestServer::start().await;
    let url = server.url.clone();
    let pid = std::process::id().to_string();
    let cli = Cli::try_parse_from([
        "chat-bench",
        "--scenario",
        "A",
        "--driver",
        "ws",
        "--label",
        "A-ws",
        "--urls",
        &url,
        "--rooms",
        "2",
        "--clients-per-room",
        "4",
        "--senders-per-room",
        "2",
        "--rate",
        "10",
        "--duration",
        "1",
        "--settle",
        "0.2",
        "--drain",
        "3",
        "--server-pids",
        &pid,
    ])
    .expect("flags parse");
    let report = chat_bench::run(cli.resolve().expect("valid")).await;

    assert_eq!(report.error, None);
    assert_eq!(report.driver, "ws");
    assert_eq!(report.label, "A-ws");
    assert_eq!(report.connect_failed, 0, "{:?}", report.connect_errors);
    assert_eq!(report.disconnects_during_run, 0);
    assert_eq!(report.connections, 8);
    assert_eq!(report.joined, 8);
    assert_eq!(report.messages_sent, 40);
    assert_eq!(report.acks_ok, 40);
    assert_eq!(report.deliveries_expected, 160);
    assert_eq!(report.deliveries_received, 160);
    assert_eq!(report.delivery_ratio, Some(1.0));
    assert_eq!(report.messages_incomplete, 0);
    assert_eq!(report.duplicate_deliveries, 0);
    assert_eq!(report.bad_messages, 0);
    assert_eq!(report.latency_ms.n, 160);
    assert!(report.failures().is_empty(), "{:?}", report.failures());

    let (user, sys) = (
        report.server_cpu_user_s_run_total.expect("user time read"),
        report.server_cpu_sys_s_run_total.expect("system time read"),
    );
    let total = report.server_cpu_s_run_total.expect("CPU read");
    assert!(user >= 0.0 && sys >= 0.0);
    assert!(
        (user + sys - total).abs() < 0.02,
        "{user} + {sys} vs {total}"
    );
    assert!(report.server_cpu_user_us_per_delivery.is_some());
    assert!(report.server_cpu_sys_us_per_delivery.is_some());

    server.stop().await;
}

/// A URL the WebSocket driver cannot speak (`https://`) fails each client's
/// connection with a reason, not the run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_websocket_driver_says_why_it_cannot_connect() {
    let cli = Cli::try_parse_from([
        "chat-bench",
        "--driver",
        "ws",
        "--urls",
        "https://127.0.0.1:1",
        "--clients-per-room",
        "2",
        "--duration",
        "0",
        "--settle",
        "0",
    ])
    .expect("flags parse");
    let report = chat_bench::run(cli.resolve().expect("valid")).await;
    assert_eq!(report.connections, 0);
    assert_eq!(report.connect_failed, 2);
    assert!(
        report
            .connect_errors
            .keys()
            .any(|e| e.contains("ws:// or http://")),
        "{:?}",
        report.connect_errors
    );
    assert!(!report.failures().is_empty());
}
