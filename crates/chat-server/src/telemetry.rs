//! Logging setup: human-readable on a terminal, JSON lines on request; the
//! filter comes from `RUST_LOG` when set, else from the configuration, and
//! can be replaced while the server runs ([`set_filter`], behind
//! `PUT /admin/log-level`).

use crate::config::{LogConfig, LogFormat};
use std::io::IsTerminal;
use std::sync::OnceLock;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Registry, reload};

/// Longest filter accepted at run time.
pub const MAX_FILTER_BYTES: usize = 1024;

/// The installed filter, replaceable.
static FILTER: OnceLock<reload::Handle<EnvFilter, Registry>> = OnceLock::new();

/// Installs the global subscriber. Call once, at the start of a binary.
pub fn init(config: &LogConfig) -> Result<(), String> {
    let filter = match std::env::var("RUST_LOG") {
        Ok(v) if !v.is_empty() => EnvFilter::try_new(&v),
        _ => EnvFilter::try_new(&config.level),
    }
    .map_err(|e| format!("invalid log filter: {e}"))?;
    let (filter, handle) = reload::Layer::new(filter);
    // Colours only when a person is looking: not in files, pipes or JSON.
    let ansi = config.format == LogFormat::Text && std::io::stderr().is_terminal();
    let lines = tracing_subscriber::fmt::layer()
        .with_ansi(ansi)
        .with_writer(std::io::stderr);
    let result = match config.format {
        LogFormat::Text => tracing_subscriber::registry()
            .with(filter)
            .with(lines)
            .try_init(),
        LogFormat::Json => tracing_subscriber::registry()
            .with(filter)
            .with(
                lines
                    .json()
                    .flatten_event(true)
                    .with_current_span(true)
                    .with_span_list(false),
            )
            .try_init(),
    };
    result.map_err(|e| format!("cannot install logger: {e}"))?;
    let _ = FILTER.set(handle);
    Ok(())
}

/// The filter in force, if [`init`] installed the logger.
pub fn filter() -> Option<String> {
    FILTER.get()?.with_current(|f| f.to_string()).ok()
}

/// Why a filter was not changed.
#[derive(Debug, thiserror::Error)]
pub enum FilterError {
    /// Not a `tracing` filter (or too long).
    #[error("invalid log filter: {0}")]
    Invalid(String),
    /// This process did not install the logger through [`init`].
    #[error("the logger is not reloadable in this process")]
    NotInstalled,
}

/// Replaces the filter (`info`, `chat_server=debug,info`, …) without a
/// restart; returns it as now in force.
pub fn set_filter(filter: &str) -> Result<String, FilterError> {
    if filter.len() > MAX_FILTER_BYTES {
        return Err(FilterError::Invalid(format!(
            "longer than {MAX_FILTER_BYTES} bytes"
        )));
    }
    let parsed = EnvFilter::try_new(filter).map_err(|e| FilterError::Invalid(e.to_string()))?;
    let handle = FILTER.get().ok_or(FilterError::NotInstalled)?;
    handle
        .reload(parsed)
        .map_err(|_| FilterError::NotInstalled)?;
    tracing::info!(filter, "log filter changed");
    Ok(self::filter().unwrap_or_else(|| filter.to_string()))
}
