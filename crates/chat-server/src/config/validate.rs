//! The checks serde cannot make: ranges, and relations between values.

use super::{
    AuthConfig, AuthMode, Config, ConfigError, JwtAlgorithm, Limits, MIN_SECRET_BYTES, NatsConfig,
    RedisConfig, SessionConfig, TlsConfig, TracesConfig, WebSocketConfig, WebhookConfig,
};
use std::net::SocketAddr;

/// The longest `server_id`.
const MAX_SERVER_ID: usize = 64;

impl Config {
    /// Checks what serde cannot: ranges and relations between values,
    /// section by section.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.validate_server_id()?;
        self.limits.validate()?;
        self.validate_background()?;
        self.nats.validate()?;
        self.redis.validate()?;
        self.session.validate()?;
        self.websocket.validate()?;
        self.webhooks.validate()?;
        self.traces.validate()?;
        self.tls.validate()?;
        self.validate_admin()?;
        self.auth.validate(self.listen)
    }

    /// The instance's id is a token of backplane subjects and channels and
    /// marks its own echoes: letters, digits, `-` and `_`, at most 64
    /// (empty: a random one).
    fn validate_server_id(&self) -> Result<(), ConfigError> {
        let id = &self.server_id;
        let token = |c: char| c.is_ascii_alphanumeric() || c == '-' || c == '_';
        if id.len() > MAX_SERVER_ID || !id.chars().all(token) {
            return bad("server_id must be at most 64 letters, digits, '-' or '_' \
                 (it names NATS subjects and Redis channels), or empty for a random one");
        }
        Ok(())
    }

    /// The periodic tasks: notifications, retention, presence.
    fn validate_background(&self) -> Result<(), ConfigError> {
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
        Ok(())
    }

    /// The admin listener: its own port, and loopback only without auth.
    fn validate_admin(&self) -> Result<(), ConfigError> {
        let Some(admin) = self.admin.listen else {
            return Ok(());
        };
        if admin == self.listen && admin.port() != 0 {
            return bad("admin.listen must differ from listen");
        }
        if self.auth.mode == AuthMode::Off && !admin.ip().is_loopback() {
            return bad(&format!(
                "auth.mode is off, so /metrics is open, and admin.listen is {admin}, which is \
                 not a loopback address; turn on auth (docs/SECURITY.md) or use 127.0.0.1"
            ));
        }
        Ok(())
    }
}

/// An inconsistency, said in `what`.
fn bad(what: &str) -> Result<(), ConfigError> {
    Err(ConfigError::Inconsistent(what.to_string()))
}

impl Limits {
    fn validate(&self) -> Result<(), ConfigError> {
        if self.max_text_bytes == 0 {
            return bad("limits.max_text_bytes must be at least 1");
        }
        if self.max_frame_bytes < self.max_text_bytes + 512 {
            return bad("limits.max_frame_bytes must exceed limits.max_text_bytes by at least 512");
        }
        if self.max_streams_per_connection == 0 {
            return bad("limits.max_streams_per_connection must be at least 1");
        }
        if self.max_rooms_per_connection == 0 || self.outbound_queue == 0 {
            return bad(
                "limits.max_rooms_per_connection and limits.outbound_queue must be at least 1",
            );
        }
        for (name, rate, burst) in [
            ("send", self.send_rate, self.send_burst),
            ("user_send", self.user_send_rate, self.user_send_burst),
            ("join", self.join_rate, self.join_burst),
            ("user_join", self.user_join_rate, self.user_join_burst),
            (
                "user_history",
                self.user_history_rate,
                self.user_history_burst,
            ),
            ("session", self.session_rate, self.session_burst),
            (
                "user_session",
                self.user_session_rate,
                self.user_session_burst,
            ),
            ("typing", self.typing_rate, self.typing_burst),
            ("read", self.read_rate, self.read_burst),
            ("api", self.api_rate, self.api_burst),
        ] {
            if !rate.is_finite() || rate < 0.0 {
                return bad(&format!("limits.{name}_rate must be 0 (no limit) or above"));
            }
            if rate > 0.0 && burst == 0 {
                return bad(&format!("limits.{name}_burst must be at least 1"));
            }
        }
        Ok(())
    }
}

impl NatsConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        let prefix = &self.subject_prefix;
        if prefix.is_empty()
            || prefix.contains(['*', '>', ' '])
            || prefix.starts_with('.')
            || prefix.ends_with('.')
        {
            return bad("nats.subject_prefix must be a valid subject without wildcards");
        }
        if self.connect_timeout.is_zero() {
            return bad("nats.connect_timeout must be above zero");
        }
        Ok(())
    }
}

impl RedisConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        if self.command_timeout.is_zero() {
            return bad("redis.command_timeout must be above zero");
        }
        Ok(())
    }
}

impl SessionConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        if self.idle_timeout.is_zero() || self.keepalive_interval.is_zero() {
            return bad("session.idle_timeout and session.keepalive_interval must be above zero");
        }
        // The clients wait at most a minute whatever they are told.
        if self.reconnect_spread > std::time::Duration::from_secs(60) {
            return bad("session.reconnect_spread must be at most 60s");
        }
        Ok(())
    }
}

impl WebSocketConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        for origin in &self.allowed_origins {
            let authority = origin
                .strip_prefix("https://")
                .or_else(|| origin.strip_prefix("http://"))
                .map(|rest| rest.trim_end_matches('/'));
            if !authority.is_some_and(|a| !a.is_empty() && !a.contains(['/', '?', '#', ' '])) {
                return bad(&format!(
                    "websocket.allowed_origins: {origin:?} is not an origin like https://chat.example.com"
                ));
            }
        }
        Ok(())
    }
}

/// Events per webhook request at most, whatever `webhooks.batch_max` says.
pub const MAX_WEBHOOK_BATCH: usize = 1000;

impl WebhookConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        if self.url.is_empty() {
            return Ok(());
        }
        let uri: Option<http::Uri> = self.url.parse().ok();
        let usable = uri.as_ref().is_some_and(|uri| {
            matches!(uri.scheme_str(), Some("http" | "https"))
                && uri
                    .authority()
                    .is_some_and(|a| !a.host().is_empty() && !a.as_str().contains('@'))
        });
        if !usable {
            return bad(
                "webhooks.url must be an http:// or https:// URL with a host and no \
                 credentials (requests are signed with webhooks.secret)",
            );
        }
        if self.secret.expose().len() < MIN_SECRET_BYTES {
            return bad(&format!(
                "webhooks.secret must be at least {MIN_SECRET_BYTES} bytes: it signs every request"
            ));
        }
        if self.events.is_empty() {
            return bad("webhooks.events must name at least one event \
                 (message, edit, delete, reaction, join, leave)");
        }
        if !(1..=MAX_WEBHOOK_BATCH).contains(&self.batch_max) {
            return bad(&format!(
                "webhooks.batch_max must be between 1 and {MAX_WEBHOOK_BATCH}"
            ));
        }
        const HOUR: std::time::Duration = std::time::Duration::from_secs(3600);
        const DAY: std::time::Duration = std::time::Duration::from_secs(24 * 3600);
        for (name, value, most) in [
            ("timeout", self.timeout, HOUR),
            ("poll_interval", self.poll_interval, HOUR),
            ("retry_max", self.retry_max, DAY),
            ("max_age", self.max_age, 365 * DAY),
        ] {
            if value.is_zero() || value > most {
                return bad(&format!(
                    "webhooks.{name} must be above zero and at most {}",
                    humantime::format_duration(most)
                ));
            }
        }
        if self.retry_min.is_zero() || self.retry_max < self.retry_min {
            return bad("webhooks.retry_min must be above zero and at most webhooks.retry_max");
        }
        if self.max_pending == 0 {
            return bad("webhooks.max_pending must be above zero");
        }
        Ok(())
    }
}

impl TracesConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        if !(0.0..=1.0).contains(&self.sample_ratio) {
            return bad("traces.sample_ratio must be between 0 and 1");
        }
        if let Some(endpoint) = self.endpoint()
            && !(endpoint.starts_with("http://") || endpoint.starts_with("https://"))
        {
            return bad(&format!(
                "traces.otlp_endpoint {endpoint:?} must be an http:// or https:// URL"
            ));
        }
        if !self.ca_file.is_empty() && !self.endpoint().is_some_and(|e| e.starts_with("https://")) {
            return bad("traces.ca_file needs an https:// traces.otlp_endpoint");
        }
        if self.export_timeout.is_zero() || self.service_name.is_empty() {
            return bad("traces.export_timeout must be above zero and traces.service_name set");
        }
        Ok(())
    }
}

impl TlsConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        if self.cert_file.is_empty() != self.key_file.is_empty() {
            return bad("tls.cert_file and tls.key_file go together");
        }
        if !self.enabled() && !self.client_ca_file.is_empty() {
            return bad("tls.client_ca_file needs tls.cert_file and tls.key_file");
        }
        if self.reload_interval.is_zero() || self.handshake_timeout.is_zero() {
            return bad("tls.reload_interval and tls.handshake_timeout must be above zero");
        }
        Ok(())
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
