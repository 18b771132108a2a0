//! Logging and tracing setup. Logs: human-readable on a terminal, JSON
//! lines on request (carrying `trace_id` and `span_id` while a traced span
//! is active); the filter comes from `RUST_LOG` when set, else from the
//! configuration, and can be replaced while the server runs
//! ([`set_filter`], behind `PUT /admin/log-level`). Traces: see [`trace`].
//! The last warnings and errors are also kept in memory for the operator's
//! view ([`recent`]).

pub mod recent;
pub mod trace;

use crate::config::{LogConfig, LogFormat};
use opentelemetry_sdk::trace::SdkTracerProvider;
use std::io::IsTerminal;
use std::sync::OnceLock;
use tracing::Subscriber;
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::fmt::format::{Format, Json, JsonFields, Writer};
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer, Registry, reload};

/// Longest filter accepted at run time.
pub const MAX_FILTER_BYTES: usize = 1024;

/// The installed log filter, replaceable.
static FILTER: OnceLock<reload::Handle<EnvFilter, Registry>> = OnceLock::new();

/// Logging or tracing cannot be set up.
#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    /// `log.level` (or `RUST_LOG`) is not a valid filter.
    #[error("invalid log filter")]
    Filter(#[from] tracing_subscriber::filter::ParseError),
    /// A global subscriber is installed already.
    #[error("cannot install logger")]
    Install(#[from] tracing_subscriber::util::TryInitError),
    /// `traces.ca_file` cannot be read.
    #[error("traces.ca_file {file}")]
    CaFile {
        /// The file.
        file: String,
        /// What the OS said.
        #[source]
        source: std::io::Error,
    },
    /// The OTLP exporter cannot be built.
    #[error("traces: cannot export to {endpoint}")]
    Exporter {
        /// The endpoint.
        endpoint: String,
        /// What the exporter said.
        #[source]
        source: opentelemetry_otlp::ExporterBuildError,
    },
}

/// Installs the global subscriber: log lines per `config`, and, with
/// `traces`, the spans of [`trace`] exported through it. Call once, at
/// the start of a binary (or of a test process).
pub fn init(config: &LogConfig, traces: Option<&trace::Traces>) -> Result<(), TelemetryError> {
    let filter = match std::env::var("RUST_LOG") {
        Ok(v) if !v.is_empty() => EnvFilter::try_new(&v),
        _ => EnvFilter::try_new(&config.level),
    }?;
    let (filter, handle) = reload::Layer::new(filter);
    // Colours only when a person is looking: not in files, pipes or JSON.
    let ansi = config.format == LogFormat::Text && std::io::stderr().is_terminal();
    let lines: Box<dyn Layer<Registry> + Send + Sync> = match config.format {
        LogFormat::Text => tracing_subscriber::fmt::layer()
            .with_ansi(ansi)
            .with_writer(std::io::stderr)
            .with_filter(untraced())
            .boxed(),
        LogFormat::Json => json_lines(std::io::stderr).with_filter(untraced()).boxed(),
    };
    // The log filter applies to log lines only: traces are exported
    // whatever the log level.
    let spans = traces.map(|t| spans(&t.provider));
    tracing_subscriber::registry()
        .with(lines.with_filter(filter))
        .with(spans)
        // Its own level: the callsites below WARN stay off unless the log
        // filter wants them.
        .with(recent::layer().with_filter(tracing_subscriber::filter::LevelFilter::WARN))
        .try_init()?;
    let _ = FILTER.set(handle);
    if let Some(traces) = traces {
        trace::enable(traces.sample_ratio);
    }
    Ok(())
}

/// Log lines do not show the spans made for traces (they carry the trace's
/// ids instead, in JSON), so a line's `span` stays its session.
fn untraced<S>() -> impl tracing_subscriber::layer::Filter<S> {
    tracing_subscriber::filter::filter_fn(|meta| meta.target() != trace::TARGET)
}

/// JSON log lines to `writer`, one object per event.
fn json_lines<S, W>(writer: W) -> tracing_subscriber::fmt::Layer<S, JsonFields, WithTraceIds, W>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    W: for<'w> MakeWriter<'w> + 'static,
{
    tracing_subscriber::fmt::layer()
        .with_ansi(false)
        .with_writer(writer)
        .json()
        .flatten_event(true)
        .with_current_span(true)
        .with_span_list(false)
        .map_event_format(WithTraceIds)
}

/// The layer that turns the spans of [`trace`] into OpenTelemetry spans
/// for `provider`, with this server's `info` events as their events.
fn spans<S>(provider: &SdkTracerProvider) -> impl Layer<S> + use<S>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    tracing_opentelemetry::layer()
        .with_tracer(trace::tracer(provider))
        // Every span is made in `trace`, on whichever worker: where and on
        // which thread says nothing, and busy/idle time is the span's.
        .with_location(false)
        .with_threads(false)
        .with_target(false)
        .with_tracked_inactivity(false)
        .with_filter(tracing_subscriber::filter::filter_fn(|meta| {
            meta.target() == trace::TARGET
                || (meta.is_event()
                    && *meta.level() <= tracing::Level::INFO
                    && meta.target().starts_with("chat_server"))
        }))
}

/// JSON log lines with the active trace's `trace_id` and `span_id` first.
struct WithTraceIds(Format<Json>);

impl<S, N> FormatEvent<S, N> for WithTraceIds
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &tracing::Event<'_>,
    ) -> std::fmt::Result {
        let Some((trace_id, span_id)) = trace::current_ids() else {
            return self.0.format_event(ctx, writer, event);
        };
        let mut line = String::new();
        self.0.format_event(ctx, Writer::new(&mut line), event)?;
        match line.strip_prefix('{') {
            Some(rest) => write!(
                writer,
                "{{\"trace_id\":\"{trace_id}\",\"span_id\":\"{span_id}\",{rest}"
            ),
            None => writer.write_str(&line),
        }
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry_sdk::trace::InMemorySpanExporter;
    use std::sync::{Arc, Mutex};

    #[test]
    fn json_lines_carry_the_active_trace() {
        let exporter = InMemorySpanExporter::default();
        let provider = SdkTracerProvider::builder()
            .with_simple_exporter(exporter.clone())
            .build();
        let out = Arc::new(Mutex::new(Vec::new()));
        let sink = out.clone();
        let writer = move || Captured(sink.clone());
        let subscriber = tracing_subscriber::registry()
            .with(json_lines(writer).with_filter(untraced()))
            .with(spans(&provider));
        tracing::subscriber::with_default(subscriber, || {
            let session = tracing::info_span!("session", user = "alice");
            let _session = session.enter();
            tracing::info!("before");
            let span =
                tracing::info_span!(target: trace::TARGET, "request", otel.name = "chat.send");
            span.in_scope(|| tracing::info!("during"));
            drop(span);
            tracing::info!("after");
        });
        let exported = exporter.get_finished_spans().unwrap();
        assert_eq!(exported.len(), 1);
        let context = &exported[0].span_context;
        let text = String::from_utf8(out.lock().unwrap().clone()).unwrap();
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).expect("a JSON line"))
            .collect();
        assert_eq!(lines.len(), 3, "{text}");
        assert_eq!(lines[0]["message"], "before");
        assert_eq!(lines[0].get("trace_id"), None);
        assert_eq!(lines[1]["message"], "during");
        assert_eq!(lines[1]["trace_id"], context.trace_id().to_string());
        assert_eq!(lines[1]["span_id"], context.span_id().to_string());
        assert_eq!(
            lines[1]["span"]["user"], "alice",
            "the session span: {text}"
        );
        assert_eq!(lines[2].get("trace_id"), None, "{text}");
    }

    /// Log output kept in memory.
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Captured {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
}
