//! Loading the configuration from its sources, in order of precedence:
//! defaults < TOML file < `CHAT_*` environment < command-line flags.

use super::{Config, LogFormat};
use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use serde::Serialize;
use std::net::SocketAddr;
use std::path::Path;

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
    "websocket",
    "notifications",
    "webhooks",
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
}
