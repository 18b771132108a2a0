//! The command line: the flags every command shares (configuration file,
//! listen address, logs) and the subcommands.

use chat_server::config::{FlagOverrides, LogFormat, LogOverrides};
use chat_server::domain::Secret;
use std::net::SocketAddr;
use std::path::PathBuf;

/// Real-time chat server (gRPC and HTTP health on one port).
#[derive(Debug, clap::Parser)]
#[command(version, about)]
pub struct Args {
    /// TOML configuration file.
    #[arg(long, env = "CHAT_CONFIG")]
    pub config: Option<PathBuf>,
    /// Address to listen on (gRPC and HTTP), e.g. 0.0.0.0:5000.
    #[arg(long)]
    pub listen: Option<SocketAddr>,
    /// Log format.
    #[arg(long, value_enum)]
    pub log_format: Option<LogFormat>,
    /// Log filter, e.g. `info` or `chat_server=debug`.
    #[arg(long)]
    pub log_level: Option<String>,
    /// Print the effective configuration as TOML and exit.
    #[arg(long)]
    pub print_config: bool,
    /// What to do instead of serving, if anything.
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// The subcommands; without one, the binary serves.
#[derive(Debug, clap::Subcommand)]
pub enum Command {
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
        token: Option<Secret>,
        /// Print the JSON answer as it is.
        #[arg(long)]
        json: bool,
    },
}

/// `chat-server token`'s flags.
#[derive(Debug, clap::Args)]
pub struct TokenArgs {
    /// The user id (`sub`).
    #[arg(long)]
    pub sub: String,
    /// The display name (`name`); without it, clients show the user id.
    #[arg(long)]
    pub name: Option<String>,
    /// How long the token is valid, e.g. `1h`, `30m`, `7d`.
    #[arg(long, default_value = "1h", value_parser = humantime::parse_duration)]
    pub ttl: std::time::Duration,
    /// Rooms the user may join and send to: exact names and `prefix-*`
    /// patterns, comma-separated (`rooms` claim).
    #[arg(long, value_delimiter = ',')]
    pub rooms: Vec<String>,
    /// Rooms the user may join and read but not send to
    /// (`read_only_rooms` claim).
    #[arg(long, value_delimiter = ',')]
    pub read_only_rooms: Vec<String>,
    /// Grants the operator endpoints (`admin: true`).
    #[arg(long)]
    pub admin: bool,
    /// Grants the server API, `/v1/api/…` (`api: true`).
    #[arg(long)]
    pub api: bool,
    /// Key id for the header, to pick a key of a JWKS.
    #[arg(long)]
    pub kid: Option<String>,
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
            api: a.api,
            kid: a.kid,
        }
    }
}

impl Args {
    /// The overrides the flags make to the configuration.
    pub fn overrides(&self) -> FlagOverrides {
        FlagOverrides {
            listen: self.listen,
            log: LogOverrides {
                level: self.log_level.clone(),
                format: self.log_format,
            },
        }
    }
}
