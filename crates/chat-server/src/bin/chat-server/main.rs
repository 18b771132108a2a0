//! The `chat-server` binary: configuration from file, environment and
//! flags; then either one command (`token`, `status`, `healthcheck`,
//! `--print-config`) or serving until SIGINT or SIGTERM, draining, and
//! exiting 0.

#![forbid(unsafe_code)]

mod args;
mod serve;
mod status;

use args::{Args, Command};
use chat_server::config::Config;
use clap::Parser;

fn main() -> std::process::ExitCode {
    let args = Args::parse();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("chat-server: cannot start the async runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(args)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            // `{:#}` prints the whole cause chain on one line, no backtrace.
            eprintln!("chat-server: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// Loads the configuration and does what the command line asks.
async fn run(args: Args) -> anyhow::Result<()> {
    let config = Config::load(args.config.as_deref(), &args.overrides())?;
    if args.print_config {
        print!("{}", config.to_toml());
        return Ok(());
    }
    match args.command {
        Some(Command::Token(token)) => {
            let token =
                chat_server::auth::mint(&config.auth, &token.into()).map_err(anyhow::Error::msg)?;
            println!("{token}");
            Ok(())
        }
        Some(Command::Status { token, json }) => status::status(&config, token, json).await,
        Some(Command::Healthcheck) => status::healthcheck(&config).await,
        None => serve::serve(config).await,
    }
}
