//! `chat`, the console client: a full-screen terminal UI when stdin is a
//! terminal, a plain line mode when it is not (or with `--plain`).

#![forbid(unsafe_code)]

mod console;

use anyhow::Context;
use chat_client::{Client, ClientConfig, TokenProvider};
use chat_util::Secret;
use clap::Parser;
use std::io::IsTerminal;

/// Console chat client.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    /// Server URL.
    #[arg(long, env = "CHAT_SERVER", default_value = "http://127.0.0.1:5000")]
    server: String,
    /// Your display name (1-32 printable characters), for a server without
    /// authentication. With a token, the name comes from the token.
    #[arg(long, env = "CHAT_NAME", required_unless_present = "token")]
    name: Option<String>,
    /// Bearer token (a JWT) for a server with authentication; e.g. from
    /// `chat-server token --sub alice --name Alice`.
    #[arg(long, env = "CHAT_TOKEN", hide_env_values = true)]
    token: Option<Secret>,
    /// Room to join at start; repeat for several. The first is current.
    #[arg(long = "room", default_value = "lobby")]
    rooms: Vec<String>,
    /// PEM CA certificate(s) to trust for an `https://` server (default:
    /// the public web PKI roots).
    #[arg(long, env = "CHAT_CA_FILE")]
    ca_file: Option<std::path::PathBuf>,
    /// PEM client certificate, for a server that requires one (mTLS).
    #[arg(long, env = "CHAT_CERT_FILE", requires = "key_file")]
    cert_file: Option<std::path::PathBuf>,
    /// PEM private key of `--cert-file`.
    #[arg(long, env = "CHAT_KEY_FILE", requires = "cert_file")]
    key_file: Option<std::path::PathBuf>,
    /// Line mode even on a terminal.
    #[arg(long)]
    plain: bool,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let mut config = ClientConfig::new(args.server.clone(), args.name.clone().unwrap_or_default());
    config.rooms = args.rooms.clone();
    config.token = args
        .token
        .as_ref()
        .map(|t| TokenProvider::fixed(t.expose()));
    let read = |path: &std::path::Path| {
        std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))
    };
    if let Some(ca) = &args.ca_file {
        config.tls.ca_pem = Some(read(ca)?);
    }
    if let (Some(cert), Some(key)) = (&args.cert_file, &args.key_file) {
        config.tls.identity_pem = Some((read(cert)?, read(key)?));
    }
    let (client, events) = Client::connect(config);
    if args.plain || !std::io::stdin().is_terminal() || !std::io::stdout().is_terminal() {
        console::line::run(client, events, args.rooms)
            .await
            .map_err(anyhow::Error::msg)
    } else {
        console::tui::run(client, events, args.server, args.rooms).await
    }
}
