//! `deploy/grafana/chat.json` is built on metrics the server exposes: every
//! metric a panel queries is a family in a live `/metrics` scrape, every
//! label it groups by is one the server sets (or Prometheus's `instance`),
//! and every family the server exposes is on some panel.

use crate::common::*;
use std::collections::BTreeSet;

/// Metrics only a PostgreSQL store exposes (this test's store is SQLite):
/// joins per join-state statement, and appends' waits for a connection.
const POSTGRES_ONLY: [&str; 2] = [
    "chat_store_join_batch_joins",
    "chat_store_pool_wait_seconds",
];

fn dashboard() -> serde_json::Value {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../deploy/grafana/chat.json"
    );
    serde_json::from_str(&std::fs::read_to_string(path).expect("the dashboard")).expect("JSON")
}

/// Every `chat_…` name in `expr`, histogram series folded into their family.
fn metric_names(expr: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut rest = expr;
    while let Some(at) = rest.find("chat_") {
        let name: String = rest[at..]
            .chars()
            .take_while(|c| c.is_ascii_lowercase() || *c == '_')
            .collect();
        rest = &rest[at + name.len()..];
        let family = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|s| name.strip_suffix(s))
            .unwrap_or(&name)
            .to_string();
        names.push(family);
    }
    names
}

/// The labels of every `by (…)` in `expr`.
fn grouped_by(expr: &str) -> Vec<String> {
    expr.split("by (")
        .skip(1)
        .flat_map(|s| s.split(')').next().unwrap_or_default().split(','))
        .map(|l| l.trim().to_string())
        .collect()
}

#[tokio::test]
async fn every_panel_queries_metrics_the_server_exposes() {
    let d = dashboard();
    assert_eq!(d["uid"], "chat-overview");
    let exprs: Vec<String> = d["panels"]
        .as_array()
        .expect("panels")
        .iter()
        .flat_map(|p| p["targets"].as_array().expect("targets").clone())
        .map(|t| t["expr"].as_str().expect("expr").to_string())
        .collect();
    assert!(exprs.len() >= 10, "{} queries", exprs.len());

    // A batching store (SQLite), so its batch sizes are exposed too.
    let folder = std::env::temp_dir().join(format!("chat-dashboard-{}", uuid::Uuid::new_v4()));
    let mut c = config();
    c.store.url = format!("sqlite://{}/chat.db", folder.display());
    let server = TestServer::start(c).await;
    let HttpResponse { status, body, .. } = http(server.addr(), HttpRequest::get("/metrics")).await;
    assert_eq!(status, 200);
    let exposed: BTreeSet<String> = body
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .map(|l| l.split(' ').next().unwrap().to_string())
        .collect();
    let mut used = BTreeSet::new();
    for expr in &exprs {
        for name in metric_names(expr) {
            if POSTGRES_ONLY.contains(&name.as_str()) {
                continue;
            }
            assert!(exposed.contains(&name), "{expr}: {name} is not exposed");
            used.insert(name);
        }
        for label in grouped_by(expr) {
            assert!(
                [
                    "instance", "reason", "limit", "action", "call", "query", "le"
                ]
                .contains(&label.as_str()),
                "{expr}: groups by {label}, which no metric carries"
            );
        }
    }
    let unused: Vec<_> = exposed.difference(&used).collect();
    assert!(unused.is_empty(), "exposed but on no panel: {unused:?}");
    server.stop().await;
    let _ = std::fs::remove_dir_all(folder);
}
