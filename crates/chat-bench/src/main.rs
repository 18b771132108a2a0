//! `chat-bench`: runs one workload and prints its JSON object on stdout
//! (progress on stderr). Exit 0 when it passes, 1 when a delivery is
//! missing or a client could not connect or join, 2 on an error.

use chat_bench::{Cli, run};
use clap::Parser;
use std::process::ExitCode;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let params = match cli.resolve() {
        Ok(p) => p,
        Err(e) => {
            eprintln!("chat-bench: {e:#}");
            return ExitCode::from(64);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("chat-bench: cannot start the runtime: {e}");
            return ExitCode::from(2);
        }
    };
    let report = runtime.block_on(run(params));
    match serde_json::to_string(&report) {
        Ok(json) => println!("{json}"),
        Err(e) => {
            eprintln!("chat-bench: cannot encode the report: {e}");
            return ExitCode::from(2);
        }
    }
    let failures = report.failures();
    if report.error.is_some() {
        ExitCode::from(2)
    } else if failures.is_empty() {
        ExitCode::SUCCESS
    } else {
        eprintln!("chat-bench: FAIL: {}", failures.join("; "));
        ExitCode::from(1)
    }
}
