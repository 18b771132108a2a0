//! Server configuration: the sections of [`Config`] and their defaults.
//! Loading (defaults, then a TOML file, then `CHAT_*` environment variables
//! with `__` separating nested keys, then command-line flags) is in `load`,
//! the checks serde cannot make in `validate`, `--print-config` in `print`.

mod load;
mod print;
mod validate;

pub use load::{ConfigError, FlagOverrides, LogOverrides};
pub use print::redact_url;

use crate::domain::Secret;
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
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
    /// The WebSocket endpoint (`/v1/ws`).
    pub websocket: WebSocketConfig,
    /// The periodic notification to every client.
    pub notifications: NotificationConfig,
    /// Events POSTed to an application's URL; see docs/WEBHOOKS.md.
    pub webhooks: WebhookConfig,
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
            websocket: WebSocketConfig::default(),
            notifications: NotificationConfig::default(),
            webhooks: WebhookConfig::default(),
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
    /// disconnected; so is one (TLS or not) whose first bytes have not come
    /// by then.
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
    /// New sessions this instance admits per second (token bucket), so a
    /// reconnect storm is let in at a pace instead of stalling everyone;
    /// those over it are refused with the time to retry. 0: no limit.
    pub session_rate: f64,
    /// New sessions admitted at once after a quiet spell.
    pub session_burst: u32,
    /// New sessions one user may open per second on this instance (token
    /// bucket, checked before the instance's pace, so one user cannot
    /// take everyone's); 0: no limit.
    pub user_session_rate: f64,
    /// New sessions one user may open at once (all of a user's
    /// connections reconnecting after a restart).
    pub user_session_burst: u32,
    /// Typing announcements per second one connection may make (token
    /// bucket); 0: no limit.
    pub typing_rate: f64,
    /// Typing announcements one connection may make at once.
    pub typing_burst: u32,
    /// Read marks per second one connection may make (token bucket); 0: no
    /// limit. Each is a store write; the announcements are coalesced anyway.
    pub read_rate: f64,
    /// Read marks one connection may make at once.
    pub read_burst: u32,
    /// Server API calls per second this instance answers, all callers
    /// together (token bucket); 0: no limit. Each may write to or read
    /// from the store.
    pub api_rate: f64,
    /// Server API calls this instance answers at once.
    pub api_burst: u32,
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
            session_rate: 1000.0,
            session_burst: 2000,
            user_session_rate: 2.0,
            user_session_burst: 16,
            typing_rate: 1.0,
            typing_burst: 5,
            read_rate: 2.0,
            read_burst: 10,
            api_rate: 100.0,
            api_burst: 200,
        }
    }
}

/// The WebSocket endpoint (`/v1/ws` on the listener; docs/PROTOCOL.md).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WebSocketConfig {
    /// Browser origins allowed to open sessions besides the server's own
    /// (the `Host` the request was sent to) and loopback ones, e.g.
    /// `https://chat.example.com`. A request from any other `Origin` is
    /// refused with 403 before the upgrade.
    pub allowed_origins: Vec<String>,
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
    /// Sessions ended by a shutdown are each asked to wait a different
    /// time in [0, this] before reconnecting
    /// (`DisconnectNotice.reconnect_after_ms`), evenly spread, so an
    /// instance's clients do not all come back in the same instant; 0: no
    /// wait asked.
    #[serde(with = "humantime_serde")]
    pub reconnect_spread: Duration,
}

impl Default for SessionConfig {
    fn default() -> Self {
        SessionConfig {
            idle_timeout: Duration::from_secs(90),
            keepalive_interval: Duration::from_secs(30),
            keepalive_timeout: Duration::from_secs(10),
            max_lifetime: Duration::ZERO,
            reconnect_spread: Duration::from_secs(2),
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

/// The webhook: events POSTed, signed, to an application's URL, from a
/// durable queue in the store (docs/WEBHOOKS.md).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WebhookConfig {
    /// Where events are POSTed (`http://…` or `https://…`); empty: no
    /// webhook, nothing queued.
    pub url: String,
    /// The key of the HMAC-SHA256 signature on every request (at least 32
    /// bytes); required with a URL.
    pub secret: Secret,
    /// Which events are sent: `message`, `edit`, `delete`, `reaction`,
    /// `join`, `leave`.
    pub events: Vec<WebhookEvent>,
    /// A request without an answer by then has failed.
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    /// Events per request at most.
    pub batch_max: usize,
    /// How often an idle sender looks for new events.
    #[serde(with = "humantime_serde")]
    pub poll_interval: Duration,
    /// The first wait after a failed request; it doubles after each
    /// failure in a row, up to `retry_max` (with jitter).
    #[serde(with = "humantime_serde")]
    pub retry_min: Duration,
    /// The longest wait between attempts.
    #[serde(with = "humantime_serde")]
    pub retry_max: Duration,
    /// Events not delivered within this are dropped (counted and logged).
    #[serde(with = "humantime_serde")]
    pub max_age: Duration,
    /// Events queued at most; beyond it the oldest are dropped (counted
    /// and logged).
    pub max_pending: u64,
    /// A PEM file of certificate authorities the receiver's certificate
    /// may chain to, besides the public ones (for a private CA).
    pub ca_file: String,
}

/// An event the webhook can send.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WebhookEvent {
    /// A new message.
    Message,
    /// An edit.
    Edit,
    /// A delete.
    Delete,
    /// A reaction added or removed.
    Reaction,
    /// A user became a member of a room.
    Join,
    /// A user stopped being a member of a room.
    Leave,
}

impl Default for WebhookConfig {
    fn default() -> Self {
        WebhookConfig {
            url: String::new(),
            secret: Secret::default(),
            events: vec![
                WebhookEvent::Message,
                WebhookEvent::Edit,
                WebhookEvent::Delete,
            ],
            timeout: Duration::from_secs(10),
            batch_max: 100,
            poll_interval: Duration::from_millis(250),
            retry_min: Duration::from_secs(1),
            retry_max: Duration::from_secs(300),
            max_age: Duration::from_secs(24 * 3600),
            max_pending: 100_000,
            ca_file: String::new(),
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

#[cfg(test)]
mod tests;
