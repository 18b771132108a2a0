//! `chat-bench`: runs one workload and prints its JSON object on stdout
//! (progress on stderr). Exit 0 when it passes, 1 when a delivery is
//! missing or a client could not connect or join, 2 on an error.
//!
//! Its subcommands are `bench/run.sh`'s helpers: `pass` (scenario C's SLO,
//! exit 0 or 1), `step` (the next rate of C's stepping) and `report` (the
//! Markdown tables); they exit 2 when they cannot read their input. And the
//! storm workloads, `storm-join` and `storm-restart`: one JSON object on
//! stdout like a run, with the same exit codes.

#![forbid(unsafe_code)]

use anyhow::Context;
use chat_bench::args::Command;
use chat_bench::saturation::{self, Next};
use chat_bench::summary::{self, Source};
use chat_bench::{Cli, run, slo, storm};
use clap::Parser;
use std::io::Read;
use std::process::ExitCode;

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Some(command) = &cli.command {
        if let Some(code) = storm(command) {
            return code;
        }
        return match helper(command) {
            Ok(code) => code,
            Err(e) => {
                eprintln!("chat-bench: {e:#}");
                ExitCode::from(2)
            }
        };
    }
    let params = match cli.resolve() {
        Ok(p) => p,
        Err(e) => {
            eprintln!("chat-bench: {e:#}");
            return ExitCode::from(64);
        }
    };
    let Some(runtime) = runtime() else {
        return ExitCode::from(2);
    };
    let report = runtime.block_on(run(params));
    let failures = report.failures();
    finish(&report, report.error.is_some(), &failures)
}

/// The multi-threaded tokio runtime a run needs (`None`, said on stderr,
/// if it cannot start).
fn runtime() -> Option<tokio::runtime::Runtime> {
    match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => Some(rt),
        Err(e) => {
            eprintln!("chat-bench: cannot start the runtime: {e}");
            None
        }
    }
}

/// Prints a run's report (its JSON line on stdout, its one-line summary on
/// stderr) and gives the exit code: 2 on an error, 1 when it fails.
fn finish(report: &impl serde::Serialize, error: bool, failures: &[String]) -> ExitCode {
    let json = match serde_json::to_value(report) {
        Ok(json) => json,
        Err(e) => {
            eprintln!("chat-bench: cannot encode the report: {e}");
            return ExitCode::from(2);
        }
    };
    println!("{json}");
    eprintln!("[chat-bench] result {}", summary::one_line(&json));
    if error {
        ExitCode::from(2)
    } else if failures.is_empty() {
        ExitCode::SUCCESS
    } else {
        eprintln!("chat-bench: FAIL: {}", failures.join("; "));
        ExitCode::from(1)
    }
}

/// Runs a storm workload, if `command` is one.
fn storm(command: &Command) -> Option<ExitCode> {
    match command {
        Command::StormJoin(args) => {
            let Some(rt) = runtime() else {
                return Some(ExitCode::from(2));
            };
            let report = rt.block_on(storm::join::run(args.clone()));
            Some(finish(&report, report.error.is_some(), &report.failures()))
        }
        Command::StormRestart(args) => {
            let Some(rt) = runtime() else {
                return Some(ExitCode::from(2));
            };
            let report = rt.block_on(storm::restart::run(args.clone()));
            Some(finish(&report, report.error.is_some(), &report.failures()))
        }
        _ => None,
    }
}

fn helper(command: &Command) -> anyhow::Result<ExitCode> {
    match command {
        Command::Pass { json } => {
            let text = match json.as_deref() {
                None | Some("-") => {
                    let mut s = String::new();
                    std::io::stdin()
                        .read_to_string(&mut s)
                        .context("reading stdin")?;
                    s
                }
                Some(s) => s.to_string(),
            };
            let r: serde_json::Value =
                serde_json::from_str(text.trim()).context("the run's JSON does not parse")?;
            let why = slo::failures(&r);
            println!("{} -> {}", summary::one_line(&r), slo::verdict(&r));
            Ok(if why.is_empty() {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            })
        }
        Command::Step {
            results,
            prefix,
            rates,
        } => {
            // A results file that does not exist yet: no step ran.
            let rows = if results.exists() {
                summary::read_rows(results)?
            } else {
                Vec::new()
            };
            match saturation::next(rates, &saturation::steps(&rows, prefix)) {
                Next::Run(rate) => println!("{rate}"),
                Next::Done { best, first_fail } => eprintln!(
                    "[chat-bench] {prefix}: highest passing rate {best} msg/s per sender; {}",
                    first_fail.map_or("no step failed".to_string(), |f| format!(
                        "first failing rate {f}"
                    ))
                ),
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Report {
            results,
            peer,
            name,
            peer_name,
            floor,
        } => {
            let ours = Source {
                name: name.clone(),
                rows: summary::read_rows(results)?,
            };
            let peer = match peer {
                Some(p) => Some(Source {
                    name: peer_name.clone(),
                    rows: summary::read_rows(p)?,
                }),
                None => None,
            };
            let floors = match floor {
                Some(f) => summary::read_rows(f)?,
                None => Vec::new(),
            };
            print!("{}", summary::render(&ours, peer.as_ref(), &floors));
            Ok(ExitCode::SUCCESS)
        }
        // Runs, not helpers: `storm` took them.
        Command::StormJoin(_) | Command::StormRestart(_) => Ok(ExitCode::from(2)),
    }
}
