//! The `chat-server` binary: configuration from file, environment and
//! flags; logs; runs until SIGINT or SIGTERM, then drains and exits 0.

use anyhow::Context;
use chat_server::config::{Config, FlagOverrides, LogFormat, LogOverrides};
use clap::Parser;
use std::net::SocketAddr;
use std::path::PathBuf;
use tokio_util::sync::CancellationToken;

/// Real-time chat server (gRPC and HTTP health on one port).
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    /// TOML configuration file.
    #[arg(long, env = "CHAT_CONFIG")]
    config: Option<PathBuf>,
    /// Address to listen on (gRPC and HTTP), e.g. 0.0.0.0:5000.
    #[arg(long)]
    listen: Option<SocketAddr>,
    /// Log format.
    #[arg(long, value_enum)]
    log_format: Option<LogFormat>,
    /// Log filter, e.g. `info` or `chat_server=debug`.
    #[arg(long)]
    log_level: Option<String>,
    /// Print the effective configuration as TOML and exit.
    #[arg(long)]
    print_config: bool,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, clap::Subcommand)]
enum Command {
    /// Asks the server at the configured listen address whether it is ready
    /// (`GET /health/ready`); exits 0 if it is, 1 if not. For container
    /// health checks, which have no curl.
    Healthcheck,
    /// Mints a JWT with the configured key and prints it, for development
    /// and scripts: HS256 signs with `auth.secret` or `auth.secret_file`,
    /// the others with `auth.private_key_file`; `iss` and `aud` are
    /// `auth.issuer` and `auth.audience`.
    Token(TokenArgs),
    /// Prints this instance's state and the cluster it sees: the other
    /// instances, their connections and rooms, and the backplane's state
    /// (`GET /admin/status` on the configured listen address, with
    /// `admin.token` or `--token`).
    Status {
        /// Bearer token for the admin endpoints (default: `admin.token`);
        /// with auth on, a JWT with `admin: true` also works.
        #[arg(long, env = "CHAT_ADMIN_BEARER", hide_env_values = true)]
        token: Option<String>,
        /// Print the JSON answer as it is.
        #[arg(long)]
        json: bool,
    },
}

/// `chat-server token`'s flags.
#[derive(Debug, clap::Args)]
struct TokenArgs {
    /// The user id (`sub`).
    #[arg(long)]
    sub: String,
    /// The display name (`name`); without it, clients show the user id.
    #[arg(long)]
    name: Option<String>,
    /// How long the token is valid, e.g. `1h`, `30m`, `7d`.
    #[arg(long, default_value = "1h", value_parser = humantime::parse_duration)]
    ttl: std::time::Duration,
    /// Rooms the user may join and send to: exact names and `prefix-*`
    /// patterns, comma-separated (`rooms` claim).
    #[arg(long, value_delimiter = ',')]
    rooms: Vec<String>,
    /// Rooms the user may join and read but not send to
    /// (`read_only_rooms` claim).
    #[arg(long, value_delimiter = ',')]
    read_only_rooms: Vec<String>,
    /// Grants the operator endpoints (`admin: true`).
    #[arg(long)]
    admin: bool,
    /// Key id for the header, to pick a key of a JWKS.
    #[arg(long)]
    kid: Option<String>,
}

impl From<TokenArgs> for chat_server::auth::TokenRequest {
    fn from(a: TokenArgs) -> Self {
        chat_server::auth::TokenRequest {
            sub: a.sub,
            name: a.name,
            ttl: a.ttl,
            rooms: a.rooms,
            read_only_rooms: a.read_only_rooms,
            admin: a.admin,
            kid: a.kid,
        }
    }
}

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

async fn run(args: Args) -> anyhow::Result<()> {
    let flags = FlagOverrides {
        listen: args.listen,
        log: LogOverrides {
            level: args.log_level,
            format: args.log_format,
        },
    };
    let config = Config::load(args.config.as_deref(), &flags)?;
    if args.print_config {
        print!("{}", config.to_toml());
        return Ok(());
    }
    if let Some(Command::Token(token)) = args.command {
        let token =
            chat_server::auth::mint(&config.auth, &token.into()).map_err(anyhow::Error::msg)?;
        println!("{token}");
        return Ok(());
    }
    if let Some(Command::Status { token, json }) = args.command {
        let bearer = token.or_else(|| {
            (!config.admin.token.is_empty()).then(|| config.admin.token.expose().to_string())
        });
        // The admin listener, when there is one, speaks plain HTTP.
        let (at, tls) = match config.admin.listen {
            Some(admin) => (admin, false),
            None => (config.listen, config.tls.enabled()),
        };
        let (status, body) = chat_server::endpoint::health::get_own(
            at,
            tls,
            "/admin/status",
            bearer.as_deref(),
            std::time::Duration::from_secs(5),
        )
        .await
        .with_context(|| format!("no answer from {at}"))?;
        match status {
            200 if json => println!("{}", body.trim()),
            200 => print!("{}", render_status(&body)?),
            404 => anyhow::bail!(
                "the admin endpoints are off on {at}: set admin.token (or turn on auth and pass --token)"
            ),
            _ => anyhow::bail!("HTTP {status}: {}", body.trim()),
        }
        return Ok(());
    }
    if let Some(Command::Healthcheck) = args.command {
        let (status, body) = chat_server::endpoint::health::probe(
            config.listen,
            config.tls.enabled(),
            std::time::Duration::from_secs(3),
        )
        .await
        .with_context(|| format!("no answer from {}", config.listen))?;
        println!("{}", body.trim());
        anyhow::ensure!(status == 200, "not ready (HTTP {status})");
        return Ok(());
    }
    // Built inside the runtime: the OTLP exporter's connection lives on it.
    let traces =
        chat_server::telemetry::trace::otlp_provider(&config.traces).map_err(anyhow::Error::msg)?;
    chat_server::telemetry::init(&config.log, traces.as_ref()).map_err(anyhow::Error::msg)?;
    if let Some(endpoint) = config.traces.endpoint() {
        tracing::info!(%endpoint, sample_ratio = config.traces.sample_ratio, "exporting traces over OTLP");
    }

    let shutdown = CancellationToken::new();
    let server = chat_server::start(config, shutdown.clone())
        .await
        .context("cannot start chat-server")?;
    tokio::spawn(async move {
        match stop_signal().await {
            Ok(name) => tracing::info!(signal = name, "stop signal received"),
            Err(e) => tracing::error!(error = %e, "cannot listen for stop signals; stopping"),
        }
        shutdown.cancel();
    });
    let result = server.wait().await;
    if let Some(traces) = traces {
        // Sends the spans still batched; blocking, so off the runtime.
        let flushed = tokio::task::spawn_blocking(move || traces.provider.shutdown()).await;
        if let Ok(Err(e)) = flushed {
            eprintln!("chat-server: traces not all exported: {e}");
        }
    }
    result?;
    Ok(())
}

/// `GET /admin/status`'s answer, for a person.
fn render_status(body: &str) -> anyhow::Result<String> {
    use std::fmt::Write;
    let s: serde_json::Value = serde_json::from_str(body).context("not a status answer")?;
    let text = |v: &serde_json::Value| v.as_str().unwrap_or("?").to_string();
    let mut out = String::new();
    writeln!(
        out,
        "{} (this instance): {}, {} connections, {} rooms; store {}, backplane {}",
        text(&s["server_id"]),
        text(&s["status"]),
        s["connections"],
        s["rooms"],
        text(&s["store"]),
        text(&s["backplane"]),
    )?;
    if let Some(checks) = s["checks"].as_object() {
        let list: Vec<String> = checks
            .iter()
            .map(|(k, v)| format!("{k} {}", text(v)))
            .collect();
        writeln!(out, "  checks: {}", list.join(", "))?;
    }
    if let Some(counters) = s["backplane_counters"].as_object() {
        let list: Vec<String> = counters.iter().map(|(k, v)| format!("{k} {v}")).collect();
        writeln!(out, "  backplane: {}", list.join(", "))?;
    }
    match s["instances"].as_array() {
        Some(others) if !others.is_empty() => {
            writeln!(out, "other instances it hears from:")?;
            for o in others {
                let ago = o["last_heard_ms"].as_u64().unwrap_or(0) as f64 / 1000.0;
                writeln!(
                    out,
                    "  {}: {} connections, {} rooms, last heard {ago:.1} s ago",
                    text(&o["server_id"]),
                    o["connections"],
                    o["rooms"],
                )?;
            }
        }
        _ => writeln!(out, "other instances it hears from: none")?,
    }
    Ok(out)
}

/// Waits for SIGINT (Ctrl-C) or SIGTERM.
async fn stop_signal() -> std::io::Result<&'static str> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = signal(SignalKind::terminate())?;
        let mut int = signal(SignalKind::interrupt())?;
        tokio::select! {
            _ = term.recv() => Ok("SIGTERM"),
            _ = int.recv() => Ok("SIGINT"),
        }
    }
    #[cfg(not(unix))]
    {
        tokio::signal::ctrl_c().await?;
        Ok("Ctrl-C")
    }
}
