//! Server configuration: defaults, then a TOML file, then `CHAT_*` environment
//! variables (`__` separates nested keys), then command-line flags.

use crate::domain::Secret;
use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

/// The whole configuration of one server instance. Every key is documented
/// in README.md ("Configuration").
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Address of the one listener that serves gRPC and the HTTP endpoints.
    pub listen: SocketAddr,
    /// Name of this instance in logs and in `Welcome`; empty means a random id.
    pub server_id: String,
    /// Where messages are kept.
    pub store: StoreConfig,
    /// Which backplane connects instances.
    pub backplane: BackplaneKind,
    /// The Redis backplane (used when `backplane = "redis"`).
    pub redis: RedisConfig,
    /// The NATS backplane (used when `backplane = "nats"`).
    pub nats: NatsConfig,
    /// Cluster-wide presence.
    pub presence: PresenceConfig,
    /// Operator endpoints.
    pub admin: AdminConfig,
    /// Who may connect, and to which rooms.
    pub auth: AuthConfig,
    /// TLS on the listener.
    pub tls: TlsConfig,
    /// Logging.
    pub log: LogConfig,
    /// Distributed traces (OpenTelemetry).
    pub traces: TracesConfig,
    /// Bounds on what one client may use.
    pub limits: Limits,
    /// Liveness of client sessions.
    pub session: SessionConfig,
    /// The periodic notification to every client.
    pub notifications: NotificationConfig,
    /// Graceful shutdown.
    pub shutdown: ShutdownConfig,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: SocketAddr::from(([127, 0, 0, 1], 5000)),
            server_id: String::new(),
            store: StoreConfig::default(),
            backplane: BackplaneKind::Local,
            redis: RedisConfig::default(),
            nats: NatsConfig::default(),
            presence: PresenceConfig::default(),
            admin: AdminConfig::default(),
            auth: AuthConfig::default(),
            tls: TlsConfig::default(),
            log: LogConfig::default(),
            traces: TracesConfig::default(),
            limits: Limits::default(),
            session: SessionConfig::default(),
            notifications: NotificationConfig::default(),
            shutdown: ShutdownConfig::default(),
        }
    }
}

/// The message store.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StoreConfig {
    /// `sqlite://PATH` (embedded, the default), `postgres://…` (shared by
    /// several instances) or `memory` (nothing kept).
    pub url: String,
    /// Messages older than this are deleted; `0s` keeps them forever.
    #[serde(with = "humantime_serde")]
    pub retention_max_age: Duration,
    /// Each room keeps at most its latest this many messages; 0: no limit.
    pub retention_max_messages_per_room: u64,
    /// How often retention runs.
    #[serde(with = "humantime_serde")]
    pub retention_interval: Duration,
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            url: "sqlite://./data/chat.db".into(),
            retention_max_age: Duration::ZERO,
            retention_max_messages_per_room: 0,
            retention_interval: Duration::from_secs(60),
        }
    }
}

/// The backplane that carries room traffic between instances.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum BackplaneKind {
    /// In-process: one instance, nothing to install.
    Local,
    /// Redis pub/sub: many instances.
    Redis,
    /// NATS core pub/sub: many instances.
    Nats,
}

/// The NATS backplane.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NatsConfig {
    /// Server URL(s), e.g. `nats://127.0.0.1:4222` (comma-separated for several).
    pub url: String,
    /// First token of every subject (rooms are `<prefix>.room.<name>`, with
    /// `.` in room names written `~`).
    pub subject_prefix: String,
    /// Bound on connecting and on each publish.
    #[serde(with = "humantime_serde")]
    pub connect_timeout: Duration,
}

impl Default for NatsConfig {
    fn default() -> Self {
        NatsConfig {
            url: "nats://127.0.0.1:4222".into(),
            subject_prefix: "chat".into(),
            connect_timeout: Duration::from_secs(2),
        }
    }
}

/// The Redis backplane.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RedisConfig {
    /// Server URL, e.g. `redis://127.0.0.1:6379` or `rediss://…` (TLS); with
    /// `cluster`, comma-separated seed node URLs.
    pub url: String,
    /// Talk to a Redis Cluster, with sharded pub/sub (`SSUBSCRIBE`/`SPUBLISH`).
    pub cluster: bool,
    /// Prefix of every channel name (rooms are `<prefix>room:<name>`).
    pub channel_prefix: String,
    /// Bound on connecting and on each command.
    #[serde(with = "humantime_serde")]
    pub command_timeout: Duration,
    /// Longest wait between reconnect attempts.
    #[serde(with = "humantime_serde")]
    pub reconnect_max_delay: Duration,
}

impl Default for RedisConfig {
    fn default() -> Self {
        RedisConfig {
            url: "redis://127.0.0.1:6379".into(),
            cluster: false,
            channel_prefix: "chat:".into(),
            command_timeout: Duration::from_secs(2),
            reconnect_max_delay: Duration::from_secs(5),
        }
    }
}

/// Operator endpoints (`POST /admin/broadcast`).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AdminConfig {
    /// Bearer token the admin endpoints require; empty disables them.
    pub token: Secret,
    /// A separate listener for `/metrics`, `/admin/*` and health; unset,
    /// they are on the main listener.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub listen: Option<SocketAddr>,
}

/// Authentication (JWT bearer tokens) and room permissions; see
/// docs/SECURITY.md.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthConfig {
    /// `off` (development: clients name themselves; loopback listeners
    /// only) or `jwt`.
    pub mode: AuthMode,
    /// The one algorithm tokens must be signed with; the token's own `alg`
    /// header is checked against it, never trusted.
    pub algorithm: JwtAlgorithm,
    /// HS256 shared secret (at least 32 bytes). Prefer `secret_file`.
    pub secret: Secret,
    /// File holding the HS256 secret; re-read when it changes.
    pub secret_file: String,
    /// PEM public key (RS256, ES256, EdDSA); re-read when it changes.
    pub public_key_file: String,
    /// JWKS file (RS256, ES256, EdDSA; a token's `kid` picks the key);
    /// re-read when it changes.
    pub jwks_file: String,
    /// PEM private key, used only by `chat-server token` to mint tokens
    /// for RS256, ES256 and EdDSA.
    pub private_key_file: String,
    /// The `iss` every token must carry.
    pub issuer: String,
    /// The `aud` every token must carry.
    pub audience: String,
    /// Clock skew allowed on `exp` and `nbf`.
    #[serde(with = "humantime_serde")]
    pub leeway: Duration,
    /// Rooms no rule of a token covers: `open` (anyone may join and send)
    /// or `closed` (no one may).
    pub default_room_access: DefaultRoomAccess,
}

impl Default for AuthConfig {
    fn default() -> Self {
        AuthConfig {
            mode: AuthMode::Off,
            algorithm: JwtAlgorithm::HS256,
            secret: Secret::default(),
            secret_file: String::new(),
            public_key_file: String::new(),
            jwks_file: String::new(),
            private_key_file: String::new(),
            issuer: "chat".into(),
            audience: "chat".into(),
            leeway: Duration::from_secs(30),
            default_room_access: DefaultRoomAccess::Open,
        }
    }
}

impl AuthConfig {
    fn validate(&self, listen: SocketAddr) -> Result<(), ConfigError> {
        let bad = |what: String| Err(ConfigError::Inconsistent(what));
        match self.mode {
            AuthMode::Off if !listen.ip().is_loopback() => bad(format!(
                "auth.mode is off, so anyone can claim any name, and the server would listen on \
                 {listen}, which is not a loopback address. Configure authentication \
                 (auth.mode = \"jwt\" with auth.secret_file, auth.public_key_file or \
                 auth.jwks_file; see docs/SECURITY.md) or listen on 127.0.0.1"
            )),
            AuthMode::Off => Ok(()),
            AuthMode::Jwt => {
                if self.issuer.is_empty() || self.audience.is_empty() {
                    return bad("auth.issuer and auth.audience must be set".into());
                }
                let symmetric = [self.secret.expose(), &self.secret_file]
                    .iter()
                    .filter(|s| !s.is_empty())
                    .count();
                let public = [&self.public_key_file, &self.jwks_file]
                    .iter()
                    .filter(|s| !s.is_empty())
                    .count();
                match self.algorithm {
                    JwtAlgorithm::HS256 if symmetric != 1 || public != 0 => bad(
                        "auth.algorithm HS256 takes exactly one of auth.secret and auth.secret_file".into(),
                    ),
                    JwtAlgorithm::HS256 => {
                        if !self.secret.is_empty() && self.secret.expose().len() < MIN_SECRET_BYTES {
                            return bad(format!(
                                "auth.secret must be at least {MIN_SECRET_BYTES} bytes"
                            ));
                        }
                        Ok(())
                    }
                    _ if public != 1 || symmetric != 0 => bad(format!(
                        "auth.algorithm {:?} takes exactly one of auth.public_key_file and auth.jwks_file",
                        self.algorithm
                    )),
                    _ => Ok(()),
                }
            }
        }
    }
}

/// TLS on the listener (gRPC and HTTP alike); off while `cert_file` is
/// empty.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TlsConfig {
    /// PEM certificate chain, the server's own certificate first.
    pub cert_file: String,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1).
    pub key_file: String,
    /// PEM CA certificates; when set, every client must present a
    /// certificate they signed (mTLS).
    pub client_ca_file: String,
    /// How often the files are checked; a changed set is loaded for new
    /// connections.
    #[serde(with = "humantime_serde")]
    pub reload_interval: Duration,
    /// A client that has not completed its TLS handshake in this time is
    /// disconnected.
    #[serde(with = "humantime_serde")]
    pub handshake_timeout: Duration,
}

impl Default for TlsConfig {
    fn default() -> Self {
        TlsConfig {
            cert_file: String::new(),
            key_file: String::new(),
            client_ca_file: String::new(),
            reload_interval: Duration::from_secs(10),
            handshake_timeout: Duration::from_secs(10),
        }
    }
}

impl TlsConfig {
    /// Whether TLS is on.
    pub fn enabled(&self) -> bool {
        !self.cert_file.is_empty()
    }
}

/// Shortest HS256 secret accepted (RFC 7518: a key as long as the hash).
pub const MIN_SECRET_BYTES: usize = 32;

/// Whether clients must present a token.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AuthMode {
    /// No tokens; clients name themselves. Loopback listeners only.
    Off,
    /// JWT bearer tokens.
    Jwt,
}

/// The JWT signature algorithms the server verifies.
#[allow(clippy::upper_case_acronyms)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
pub enum JwtAlgorithm {
    /// HMAC with SHA-256 and a shared secret.
    HS256,
    /// RSA PKCS#1 v1.5 with SHA-256.
    RS256,
    /// ECDSA on P-256 with SHA-256.
    ES256,
    /// Ed25519.
    EdDSA,
}

/// What a room no token rule covers allows.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DefaultRoomAccess {
    /// Anyone may join and send.
    Open,
    /// No one may.
    Closed,
}

/// How instances keep each other's members in view.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PresenceConfig {
    /// How often an instance tells the others it is alive.
    #[serde(with = "humantime_serde")]
    pub heartbeat_interval: Duration,
    /// An instance not heard from for this long is considered dead: its
    /// members leave every room.
    #[serde(with = "humantime_serde")]
    pub expiry: Duration,
}

impl Default for PresenceConfig {
    fn default() -> Self {
        PresenceConfig {
            heartbeat_interval: Duration::from_secs(2),
            expiry: Duration::from_secs(10),
        }
    }
}

/// Log output.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogConfig {
    /// A `tracing` filter such as `info` or `chat_server=debug,info`;
    /// `RUST_LOG`, when set, wins.
    pub level: String,
    /// `text` (human-readable) or `json` (one object per line).
    pub format: LogFormat,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            level: "info".into(),
            format: LogFormat::Text,
        }
    }
}

/// Distributed traces: OpenTelemetry spans exported over OTLP/gRPC.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TracesConfig {
    /// The OTLP/gRPC collector, e.g. `http://127.0.0.1:4317`; empty: the
    /// `OTEL_EXPORTER_OTLP_ENDPOINT` variable if set, else traces are off.
    pub otlp_endpoint: String,
    /// The share of new traces kept, 0 to 1; a client's own sampling
    /// decision (its `traceparent`) is followed.
    pub sample_ratio: f64,
    /// `service.name` of the exported spans.
    pub service_name: String,
    /// How long one export may take.
    #[serde(with = "humantime_serde")]
    pub export_timeout: Duration,
    /// PEM file of the CA that signed an `https://` collector's
    /// certificate; empty: the public web PKI roots.
    pub ca_file: String,
}

impl Default for TracesConfig {
    fn default() -> Self {
        TracesConfig {
            otlp_endpoint: String::new(),
            sample_ratio: 1.0,
            service_name: "chat-server".into(),
            export_timeout: Duration::from_secs(10),
            ca_file: String::new(),
        }
    }
}

impl TracesConfig {
    /// Where spans go, if anywhere.
    pub fn endpoint(&self) -> Option<String> {
        if !self.otlp_endpoint.is_empty() {
            return Some(self.otlp_endpoint.clone());
        }
        std::env::var("OTEL_EXPORTER_OTLP_ENDPOINT")
            .ok()
            .filter(|e| !e.is_empty())
    }
}

/// How log lines are written.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// JSON lines.
    Json,
}

/// Per-client bounds.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    /// Largest message text, in bytes of UTF-8.
    pub max_text_bytes: usize,
    /// Rooms one connection may be a member of at once.
    pub max_rooms_per_connection: usize,
    /// Frames queued for one connection before it counts as a slow consumer.
    pub outbound_queue: usize,
    /// Largest frame a client may send, in bytes; larger ones end the session.
    pub max_frame_bytes: usize,
    /// Messages per second one connection may send (token bucket); 0: no limit.
    pub send_rate: f64,
    /// Messages one connection may send at once after a quiet spell.
    pub send_burst: u32,
    /// Messages per second one user may send over all their connections to
    /// this instance; 0: no limit.
    pub user_send_rate: f64,
    /// The user's burst.
    pub user_send_burst: u32,
    /// Joins per second per connection; 0: no limit.
    pub join_rate: f64,
    /// Joins one connection may make at once (a reconnecting client
    /// rejoins all its rooms at once).
    pub join_burst: u32,
    /// Joins per second per user over their connections; 0: no limit.
    pub user_join_rate: f64,
    /// The user's join burst.
    pub user_join_burst: u32,
    /// History calls per second per user; 0: no limit.
    pub user_history_rate: f64,
    /// The user's History burst.
    pub user_history_burst: u32,
    /// Connections this instance holds at most; 0: no limit.
    pub max_connections: usize,
    /// Concurrent HTTP/2 streams (calls) one TCP connection may have open;
    /// more wait until one ends.
    pub max_streams_per_connection: u32,
    /// Connections from one source address at most; 0: no limit.
    pub max_connections_per_address: usize,
    /// Connections of one user (token `sub`, or name without auth) at
    /// most; 0: no limit.
    pub max_connections_per_user: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_text_bytes: 4096,
            max_rooms_per_connection: 100,
            outbound_queue: 1024,
            max_frame_bytes: 64 * 1024,
            send_rate: 10.0,
            send_burst: 20,
            user_send_rate: 20.0,
            user_send_burst: 40,
            join_rate: 5.0,
            join_burst: 100,
            user_join_rate: 10.0,
            user_join_burst: 200,
            user_history_rate: 10.0,
            user_history_burst: 100,
            max_connections: 50_000,
            max_streams_per_connection: 16,
            max_connections_per_address: 1_000,
            max_connections_per_user: 16,
        }
    }
}

/// Session liveness.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SessionConfig {
    /// A session that sends nothing (not even a ping) for this long is closed.
    #[serde(with = "humantime_serde")]
    pub idle_timeout: Duration,
    /// Interval of HTTP/2 keepalive pings to each connection.
    #[serde(with = "humantime_serde")]
    pub keepalive_interval: Duration,
    /// A connection that does not answer a keepalive ping in this time is closed.
    #[serde(with = "humantime_serde")]
    pub keepalive_timeout: Duration,
    /// A session this old is ended with `MAX_LIFETIME` (the client
    /// reconnects and resumes), give or take 10 % so sessions opened
    /// together do not end together; 0: no limit. Spreads clients over
    /// instances added since, and makes them present fresh credentials.
    #[serde(with = "humantime_serde")]
    pub max_lifetime: Duration,
}

impl Default for SessionConfig {
    fn default() -> Self {
        SessionConfig {
            idle_timeout: Duration::from_secs(90),
            keepalive_interval: Duration::from_secs(30),
            keepalive_timeout: Duration::from_secs(10),
            max_lifetime: Duration::ZERO,
        }
    }
}

/// The periodic server notification.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NotificationConfig {
    /// Whether to send it.
    pub enabled: bool,
    /// How often.
    #[serde(with = "humantime_serde")]
    pub interval: Duration,
    /// Its text.
    pub text: String,
}

impl Default for NotificationConfig {
    fn default() -> Self {
        NotificationConfig {
            enabled: true,
            interval: Duration::from_secs(30),
            text: "Periodic notification from the chat server".into(),
        }
    }
}

/// Graceful shutdown.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ShutdownConfig {
    /// How long to wait for sessions to end before exiting anyway.
    #[serde(with = "humantime_serde")]
    pub drain_timeout: Duration,
}

impl Default for ShutdownConfig {
    fn default() -> Self {
        ShutdownConfig {
            drain_timeout: Duration::from_secs(10),
        }
    }
}

/// Values given as command-line flags; they override every other source.
#[derive(Clone, Debug, Default, Serialize)]
pub struct FlagOverrides {
    /// `--listen`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub listen: Option<SocketAddr>,
    /// `--log-format` and `--log-level`.
    #[serde(skip_serializing_if = "LogOverrides::is_empty")]
    pub log: LogOverrides,
}

/// Log flags.
#[derive(Clone, Debug, Default, Serialize)]
pub struct LogOverrides {
    /// `--log-level`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub level: Option<String>,
    /// `--log-format`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub format: Option<LogFormat>,
}

impl LogOverrides {
    fn is_empty(&self) -> bool {
        self.level.is_none() && self.format.is_none()
    }
}

/// Why the configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A source holds an unknown key or a value of the wrong shape.
    #[error("invalid configuration: {0}")]
    Invalid(Box<figment::Error>),
    /// The values parse but do not make sense together.
    #[error("invalid configuration: {0}")]
    Inconsistent(String),
    /// `--config` names a file that does not exist.
    #[error("configuration file {0} does not exist")]
    MissingFile(String),
}

/// The top-level keys of [`Config`]; other `CHAT_*` variables (the
/// client's `CHAT_SERVER`, CI's `CHAT_TEST_*`, …) are not the server's.
const TOP_LEVEL_KEYS: &[&str] = &[
    "listen",
    "server_id",
    "store",
    "backplane",
    "redis",
    "nats",
    "presence",
    "admin",
    "auth",
    "tls",
    "log",
    "traces",
    "limits",
    "session",
    "notifications",
    "shutdown",
];

/// `CHAT_*` environment variables naming a server key; `__` nests.
fn server_env() -> Env {
    Env::prefixed("CHAT_").split("__").filter(|key| {
        let top = key.as_str().split('.').next().unwrap_or_default();
        TOP_LEVEL_KEYS.iter().any(|k| k.eq_ignore_ascii_case(top))
    })
}

impl Config {
    /// Loads the configuration from every source, in order of precedence:
    /// defaults < `file` < `CHAT_*` environment < `flags`.
    pub fn load(file: Option<&Path>, flags: &FlagOverrides) -> Result<Config, ConfigError> {
        let mut figment = Figment::from(Serialized::defaults(Config::default()));
        if let Some(path) = file {
            if !path.exists() {
                return Err(ConfigError::MissingFile(path.display().to_string()));
            }
            figment = figment.merge(Toml::file(path));
        }
        let config: Config = figment
            .merge(server_env())
            .merge(Serialized::defaults(flags))
            .extract()
            .map_err(|e| ConfigError::Invalid(Box::new(e)))?;
        config.validate()?;
        Ok(config)
    }

    /// Checks what serde cannot: ranges and relations between values.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |what: &str| Err(ConfigError::Inconsistent(what.to_string()));
        let l = &self.limits;
        if l.max_text_bytes == 0 {
            return bad("limits.max_text_bytes must be at least 1");
        }
        if l.max_frame_bytes < l.max_text_bytes + 512 {
            return bad("limits.max_frame_bytes must exceed limits.max_text_bytes by at least 512");
        }
        if l.max_streams_per_connection == 0 {
            return bad("limits.max_streams_per_connection must be at least 1");
        }
        if l.max_rooms_per_connection == 0 || l.outbound_queue == 0 {
            return bad(
                "limits.max_rooms_per_connection and limits.outbound_queue must be at least 1",
            );
        }
        for (name, rate, burst) in [
            ("send", l.send_rate, l.send_burst),
            ("user_send", l.user_send_rate, l.user_send_burst),
            ("join", l.join_rate, l.join_burst),
            ("user_join", l.user_join_rate, l.user_join_burst),
            ("user_history", l.user_history_rate, l.user_history_burst),
        ] {
            if !rate.is_finite() || rate < 0.0 {
                return bad(&format!("limits.{name}_rate must be 0 (no limit) or above"));
            }
            if rate > 0.0 && burst == 0 {
                return bad(&format!("limits.{name}_burst must be at least 1"));
            }
        }
        if self.notifications.enabled && self.notifications.interval.is_zero() {
            return bad("notifications.interval must be above zero");
        }
        if self.store.retention_interval.is_zero() {
            return bad("store.retention_interval must be above zero");
        }
        let p = &self.presence;
        if p.heartbeat_interval.is_zero() || p.expiry < p.heartbeat_interval * 2 {
            return bad(
                "presence.expiry must be at least twice presence.heartbeat_interval (above zero)",
            );
        }
        let prefix = &self.nats.subject_prefix;
        if prefix.is_empty()
            || prefix.contains(['*', '>', ' '])
            || prefix.starts_with('.')
            || prefix.ends_with('.')
        {
            return bad("nats.subject_prefix must be a valid subject without wildcards");
        }
        if self.nats.connect_timeout.is_zero() {
            return bad("nats.connect_timeout must be above zero");
        }
        if self.redis.command_timeout.is_zero() {
            return bad("redis.command_timeout must be above zero");
        }
        if self.session.idle_timeout.is_zero() || self.session.keepalive_interval.is_zero() {
            return bad("session.idle_timeout and session.keepalive_interval must be above zero");
        }
        let traces = &self.traces;
        if !(0.0..=1.0).contains(&traces.sample_ratio) {
            return bad("traces.sample_ratio must be between 0 and 1");
        }
        if let Some(endpoint) = traces.endpoint()
            && !(endpoint.starts_with("http://") || endpoint.starts_with("https://"))
        {
            return Err(ConfigError::Inconsistent(format!(
                "traces.otlp_endpoint {endpoint:?} must be an http:// or https:// URL"
            )));
        }
        if !traces.ca_file.is_empty()
            && !traces.endpoint().is_some_and(|e| e.starts_with("https://"))
        {
            return bad("traces.ca_file needs an https:// traces.otlp_endpoint");
        }
        if traces.export_timeout.is_zero() || traces.service_name.is_empty() {
            return bad("traces.export_timeout must be above zero and traces.service_name set");
        }
        let t = &self.tls;
        if t.cert_file.is_empty() != t.key_file.is_empty() {
            return bad("tls.cert_file and tls.key_file go together");
        }
        if !t.enabled() && !t.client_ca_file.is_empty() {
            return bad("tls.client_ca_file needs tls.cert_file and tls.key_file");
        }
        if t.reload_interval.is_zero() || t.handshake_timeout.is_zero() {
            return bad("tls.reload_interval and tls.handshake_timeout must be above zero");
        }
        if let Some(admin) = self.admin.listen {
            if admin == self.listen && admin.port() != 0 {
                return bad("admin.listen must differ from listen");
            }
            if self.auth.mode == AuthMode::Off && !admin.ip().is_loopback() {
                return Err(ConfigError::Inconsistent(format!(
                    "auth.mode is off, so /metrics is open, and admin.listen is {admin}, which is \
                     not a loopback address; turn on auth (docs/SECURITY.md) or use 127.0.0.1"
                )));
            }
        }
        self.auth.validate(self.listen)
    }

    /// The configuration as TOML, as `--print-config` shows it: secrets
    /// (a [`Secret`] serializes as `<redacted>`) and credentials inside
    /// URLs are shown as `<redacted>`.
    pub fn to_toml(&self) -> String {
        let mut shown = self.clone();
        for url in [
            &mut shown.store.url,
            &mut shown.redis.url,
            &mut shown.nats.url,
        ] {
            *url = redact_url(url);
        }
        toml::to_string_pretty(&shown).unwrap_or_else(|e| format!("# cannot render: {e}\n"))
    }
}

/// `url` with the credentials it carries replaced by `<redacted>`: the
/// password of `user:password@` (or the whole user part without a colon:
/// a NATS token or a Redis password alone), and the values of query
/// parameters that name a password, secret, token or key
/// (`?password=…`, `sslpassword`, `sslkey` stay paths but are redacted too).
pub fn redact_url(url: &str) -> String {
    const REDACTED: &str = "<redacted>";
    let Some(scheme_end) = url.find("://").map(|i| i + 3) else {
        return url.to_string();
    };
    let rest = &url[scheme_end..];
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    let mut out = url[..scheme_end].to_string();
    match authority.rfind('@') {
        Some(at) => {
            let (userinfo, host) = authority.split_at(at);
            match userinfo.split_once(':') {
                Some((user, _)) => out.push_str(&format!("{user}:{REDACTED}")),
                None => out.push_str(REDACTED),
            }
            out.push_str(host);
        }
        None => out.push_str(authority),
    }
    let (path, query) = match tail.split_once('?') {
        Some((path, query)) => (path, Some(query)),
        None => (tail, None),
    };
    out.push_str(path);
    if let Some(query) = query {
        let (query, fragment) = match query.split_once('#') {
            Some((query, fragment)) => (query, Some(fragment)),
            None => (query, None),
        };
        let sensitive = |name: &str| {
            let name = name.to_ascii_lowercase();
            ["password", "secret", "token", "key"]
                .iter()
                .any(|word| name.contains(word))
        };
        let pairs: Vec<String> = query
            .split('&')
            .map(|pair| match pair.split_once('=') {
                Some((name, _)) if sensitive(name) => format!("{name}={REDACTED}"),
                _ => pair.to_string(),
            })
            .collect();
        out.push('?');
        out.push_str(&pairs.join("&"));
        if let Some(fragment) = fragment {
            out.push('#');
            out.push_str(fragment);
        }
    }
    out
}

#[cfg(test)]
// `figment::Jail` closures return figment's large error type by design.
#[allow(clippy::result_large_err)]
mod tests {
    use super::*;

    #[test]
    fn redacts_credentials_in_urls() {
        for (url, shown) in [
            ("sqlite://./data/chat.db", "sqlite://./data/chat.db"),
            ("memory", "memory"),
            (
                "postgres://chat:hunter2@db:5432/chat?sslmode=require",
                "postgres://chat:<redacted>@db:5432/chat?sslmode=require",
            ),
            (
                "redis://:pw@127.0.0.1:6379/0",
                "redis://:<redacted>@127.0.0.1:6379/0",
            ),
            (
                "nats://s3cr3t@127.0.0.1:4222",
                "nats://<redacted>@127.0.0.1:4222",
            ),
            (
                "postgres://db/chat?user=chat&password=hunter2#x",
                "postgres://db/chat?user=chat&password=<redacted>#x",
            ),
            ("redis://127.0.0.1:6379", "redis://127.0.0.1:6379"),
        ] {
            assert_eq!(redact_url(url), shown, "{url}");
        }
    }

    #[test]
    fn print_config_shows_no_secret() {
        let mut config = Config::default();
        config.admin.token = Secret::new("admin-token-value");
        config.auth.secret = Secret::new("a-secret-of-at-least-thirty-two-bytes");
        config.store.url = "postgres://chat:hunter2@db/chat".into();
        config.redis.url = "redis://:redispw@127.0.0.1:6379".into();
        config.nats.url = "nats://natstoken@127.0.0.1:4222".into();
        let shown = config.to_toml();
        for secret in [
            "admin-token-value",
            "thirty-two",
            "hunter2",
            "redispw",
            "natstoken",
        ] {
            assert!(!shown.contains(secret), "{secret} in {shown}");
        }
        assert!(!format!("{config:?}").contains("admin-token-value"));
        assert!(!format!("{config:?}").contains("thirty-two"));
    }

    #[test]
    fn defaults_when_nothing_is_given() {
        figment::Jail::expect_with(|_jail| {
            let config = Config::load(None, &FlagOverrides::default()).expect("load");
            assert_eq!(config, Config::default());
            assert_eq!(config.listen, "127.0.0.1:5000".parse().unwrap());
            assert_eq!(config.notifications.interval, Duration::from_secs(30));
            assert_eq!(config.shutdown.drain_timeout, Duration::from_secs(10));
            Ok(())
        });
    }

    #[test]
    fn file_then_env_then_flags() {
        figment::Jail::expect_with(|jail| {
            jail.create_file(
                "chat.toml",
                r#"
                listen = "127.0.0.1:6001"
                [limits]
                max_text_bytes = 100
                max_rooms_per_connection = 7
                [notifications]
                interval = "5s"
                [log]
                format = "json"
                "#,
            )?;
            let path = Path::new("chat.toml");
            // File alone.
            let c = Config::load(Some(path), &FlagOverrides::default()).expect("load");
            assert_eq!(c.listen, "127.0.0.1:6001".parse().unwrap());
            assert_eq!(c.limits.max_text_bytes, 100);
            assert_eq!(c.notifications.interval, Duration::from_secs(5));
            assert_eq!(c.log.format, LogFormat::Json);

            // Environment beats the file, nested keys with `__`.
            jail.set_env("CHAT_LISTEN", "127.0.0.1:6002");
            jail.set_env("CHAT_LIMITS__MAX_ROOMS_PER_CONNECTION", "9");
            // Variables for other programs share the prefix; they are ignored.
            jail.set_env("CHAT_TOKEN", "not-a-server-key");
            jail.set_env("CHAT_SERVER", "http://elsewhere:1");
            jail.set_env("CHAT_TEST_REQUIRE_SERVICES", "1");
            let c = Config::load(Some(path), &FlagOverrides::default()).expect("load");
            assert_eq!(c.listen, "127.0.0.1:6002".parse().unwrap());
            assert_eq!(c.limits.max_rooms_per_connection, 9);
            assert_eq!(c.limits.max_text_bytes, 100, "file value kept");

            // Flags beat the environment.
            let flags = FlagOverrides {
                listen: Some("127.0.0.1:6003".parse().unwrap()),
                log: LogOverrides {
                    level: Some("debug".into()),
                    format: Some(LogFormat::Text),
                },
            };
            let c = Config::load(Some(path), &flags).expect("load");
            assert_eq!(c.listen, "127.0.0.1:6003".parse().unwrap());
            assert_eq!(c.log.format, LogFormat::Text);
            assert_eq!(c.log.level, "debug");
            assert_eq!(c.limits.max_rooms_per_connection, 9, "env value kept");
            Ok(())
        });
    }

    #[test]
    fn unknown_keys_and_bad_values_are_errors() {
        figment::Jail::expect_with(|jail| {
            jail.create_file("typo.toml", "[limits]\nmax_txt_bytes = 5\n")?;
            let err = Config::load(Some(Path::new("typo.toml")), &FlagOverrides::default())
                .expect_err("unknown key");
            assert!(err.to_string().contains("max_txt_bytes"), "{err}");

            jail.create_file("zero.toml", "[limits]\nmax_text_bytes = 0\n")?;
            let err = Config::load(Some(Path::new("zero.toml")), &FlagOverrides::default())
                .expect_err("zero limit");
            assert!(err.to_string().contains("max_text_bytes"), "{err}");

            let err = Config::load(Some(Path::new("absent.toml")), &FlagOverrides::default())
                .expect_err("missing file");
            assert!(matches!(err, ConfigError::MissingFile(_)));

            // A typo inside a known section is still an error.
            jail.set_env("CHAT_LIMITS__MAX_TXT_BYTES", "5");
            let err = Config::load(None, &FlagOverrides::default()).expect_err("typo in env");
            assert!(
                err.to_string().to_lowercase().contains("max_txt_bytes"),
                "{err}"
            );
            jail.clear_env();

            jail.set_env("CHAT_BACKPLANE", "carrier-pigeon");
            let err = Config::load(None, &FlagOverrides::default()).expect_err("bad backplane");
            assert!(err.to_string().contains("carrier-pigeon"), "{err}");
            Ok(())
        });
    }

    #[test]
    fn printed_config_loads_back_to_the_same() {
        figment::Jail::expect_with(|jail| {
            let mut config = Config::default();
            config.limits.max_text_bytes = 1234;
            config.notifications.interval = Duration::from_millis(1500);
            jail.create_file("printed.toml", &config.to_toml())?;
            let back = Config::load(Some(Path::new("printed.toml")), &FlagOverrides::default())
                .expect("load");
            assert_eq!(back, config);
            Ok(())
        });
    }
}
