//! The `chat-bench` binary as `bench/run.sh` uses it, against a real server
//! started in this process (port 0, memory store, no notifications): one
//! tiny scenario C step (exit 0, every delivery in its JSON), then the
//! helpers on its result: `pass`, `step` and `report`. Whether the step
//! meets the latency SLO depends on the machine, so the checks only ask
//! that the helpers agree with each other, never that it passed.

mod common;

use common::TestServer;
use std::path::PathBuf;
use std::process::Output;
use std::time::Duration;
use tokio::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_chat-bench");

/// Runs the binary with these arguments, killed if it takes over a minute.
async fn bench(args: &[&str]) -> Output {
    let child = Command::new(BIN).args(args).kill_on_drop(true).output();
    tokio::time::timeout(Duration::from_secs(60), child)
        .await
        .unwrap_or_else(|_| panic!("chat-bench {args:?} took over 60 s"))
        .expect("chat-bench runs")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// A private scratch folder, removed when dropped.
struct Scratch(PathBuf);

impl Scratch {
    fn new() -> Scratch {
        let dir = std::env::temp_dir().join(format!(
            "chat-bench-binary-{}-{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos())
        ));
        std::fs::create_dir_all(&dir).expect("scratch folder");
        Scratch(dir)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binary_runs_a_step_and_its_helpers_read_it() {
    let server = TestServer::start().await;
    let url = server.url.clone();
    let pid = std::process::id().to_string();

    let out = bench(&[
        "--scenario",
        "C",
        "--rate",
        "20",
        "--clients-per-room",
        "4",
        "--duration",
        "1",
        "--settle",
        "0.2",
        "--drain",
        "5",
        "--urls",
        &url,
        "--server-pids",
        &pid,
    ])
    .await;
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "stderr:\n{stderr}");
    let stdout = text(&out.stdout);
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 1, "one JSON object on stdout: {stdout}");
    let json: serde_json::Value = serde_json::from_str(lines[0]).expect("JSON");
    assert_eq!(json["label"], "C-20");
    assert_eq!(json["params"]["rooms"], 1);
    assert_eq!(json["params"]["clients_per_room"], 4);
    assert_eq!(json["params"]["duration_s"], 1.0);
    assert_eq!(json["connections"], 4);
    assert_eq!(json["joined"], 4);
    assert_eq!(json["messages_sent"], 20);
    assert_eq!(json["deliveries_expected"], 80);
    assert_eq!(json["deliveries_received"], 80);
    assert_eq!(json["delivery_ratio"], 1.0);
    assert_eq!(json["messages_incomplete"], 0);
    assert_eq!(json["latency_ms"]["n"], 80);
    assert!(json.get("error").is_none());
    assert!(
        stderr.contains("[chat-bench] result C-20: conns 4, recv 80/80"),
        "{stderr}"
    );

    // pass: the SLO verdict on that JSON, one line, exit 0 or 1 with it.
    let pass = bench(&["pass", lines[0]]).await;
    let verdict = text(&pass.stdout);
    let passed = match pass.status.code() {
        Some(0) => true,
        Some(1) => false,
        other => panic!("pass exited {other:?}: {}", text(&pass.stderr)),
    };
    assert!(
        verdict.starts_with("C-20: conns 4, recv 80/80"),
        "{verdict}"
    );
    assert_eq!(verdict.trim_end().ends_with("-> pass"), passed, "{verdict}");

    // step: the next rate after that step, as the rule says for its verdict.
    let scratch = Scratch::new();
    let results = scratch.0.join("results.jsonl");
    std::fs::write(&results, format!("{}\n", lines[0])).expect("write results");
    let results_arg = results.to_str().expect("utf-8 path");
    let step = bench(&["step", results_arg, "--rates", "20,40"]).await;
    assert_eq!(step.status.code(), Some(0), "{}", text(&step.stderr));
    let want = if passed { "40" } else { "10" };
    assert_eq!(text(&step.stdout).trim(), want);
    let first = bench(&["step", &scratch.0.join("none.jsonl").to_string_lossy()]).await;
    assert_eq!(text(&first.stdout).trim(), "25", "no step ran yet");

    // report: the Markdown tables hold the run and the saturation line.
    let report = bench(&["report", results_arg]).await;
    assert_eq!(report.status.code(), Some(0), "{}", text(&report.stderr));
    let md = text(&report.stdout);
    assert!(
        md.contains("| chat-server ×1 | C-20 | 4 | 20 | 80 / 80 | 1.0000 |"),
        "{md}"
    );
    assert!(md.contains("### Saturation"), "{md}");
    let best = if passed { "20" } else { "0" };
    assert!(
        md.contains(&format!(
            "- chat-server ×1, C: highest passing rate {best} msg/s"
        )),
        "{md}"
    );

    server.stop().await;
}
