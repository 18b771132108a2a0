//! Distributed traces: OpenTelemetry spans over `tracing`, exported with
//! OTLP/gRPC when `traces.otlp_endpoint` is set, and nothing at all
//! otherwise (no span is even created: [`enabled`] is false).
//!
//! The spans of one message: `chat.send` (the request, a child of the
//! client's W3C `traceparent` when it sends one) → `store.append` →
//! `backplane.publish` → `fanout` (this instance's members); and on every
//! other instance with members in the room, `backplane.receive` → `fanout`,
//! continued from the [`TraceParent`] the backplane envelope carries.

use crate::config::TracesConfig;
use opentelemetry::trace::{
    SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState, TracerProvider as _,
};
use opentelemetry_sdk::trace::{Sampler, SdkTracerProvider};
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use tracing::Span;
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// The `tracing` target of every span that becomes an OpenTelemetry span
/// (the exporter takes these and no others: not the long `session` span,
/// not the libraries').
pub const TARGET: &str = "chat_server::trace";

/// The gRPC metadata key of the W3C trace context.
pub const TRACEPARENT_HEADER: &str = "traceparent";

/// Whether spans are exported (set once, by [`crate::telemetry::init`]).
static ENABLED: AtomicBool = AtomicBool::new(false);

/// The share of requests that come without a trace context that are
/// traced, as `f64` bits (set with [`ENABLED`]).
static SAMPLE_RATIO: AtomicU64 = AtomicU64::new(0);

/// Counts root sampling decisions (their pseudo-random source).
static DECISIONS: AtomicU64 = AtomicU64::new(0);

/// Whether traces are on: when not, the span helpers return
/// [`Span::none`] and frames carry no trace context.
pub fn enabled() -> bool {
    ENABLED.load(Ordering::Relaxed)
}

pub(super) fn enable(sample_ratio: f64) {
    SAMPLE_RATIO.store(sample_ratio.to_bits(), Ordering::Relaxed);
    ENABLED.store(true, Ordering::Relaxed);
}

/// Whether to trace a request: as its parent says when it has one (W3C's
/// sampled flag), else `ratio` of them. Decided before any span exists, so
/// a request not traced costs no span at all.
fn sampled(parent: Option<TraceParent>, ratio: f64) -> bool {
    match parent {
        Some(parent) => parent.flags & 1 == 1,
        None if ratio >= 1.0 => true,
        // Over a counter: spread evenly, no lock, no syscall.
        None => crate::domain::random::fraction(DECISIONS.fetch_add(1, Ordering::Relaxed)) < ratio,
    }
}

/// An exporting pipeline: the provider, and the share of requests traced.
pub struct Traces {
    /// Where spans go; [`SdkTracerProvider::shutdown`] flushes it.
    pub provider: SdkTracerProvider,
    /// `traces.sample_ratio`.
    pub sample_ratio: f64,
}

/// A W3C `traceparent`: which trace, which span in it, and whether it is
/// sampled. The `tracestate` is not carried.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TraceParent {
    /// The trace (never all zeros).
    pub trace_id: [u8; 16],
    /// The parent span (never all zeros).
    pub span_id: [u8; 8],
    /// Trace flags; bit 0: sampled.
    pub flags: u8,
}

/// Longest `traceparent` looked at (later versions may append fields).
const MAX_TRACEPARENT: usize = 256;

impl TraceParent {
    /// Parses `00-<32 hex>-<16 hex>-<2 hex>` (and the same prefix of a
    /// later version). `None` for anything else, as W3C says: the request
    /// then starts a trace of its own.
    pub fn parse(text: &str) -> Option<TraceParent> {
        if text.len() > MAX_TRACEPARENT || !text.is_ascii() {
            return None;
        }
        let version = u8::from_str_radix(text.get(0..2)?, 16).ok()?;
        let exact = match version {
            0 => text.len() == 55,
            0xff => false,
            // A later version: our fields, then optionally `-` and more.
            _ => text.len() == 55 || text.as_bytes().get(55) == Some(&b'-'),
        };
        let b = text.as_bytes();
        if !exact || b[2] != b'-' || b[35] != b'-' || b[52] != b'-' {
            return None;
        }
        let lower_hex = |s: &str| s.bytes().all(|c| matches!(c, b'0'..=b'9' | b'a'..=b'f'));
        let (trace, span, flags) = (&text[3..35], &text[36..52], &text[53..55]);
        if !(lower_hex(&text[0..2]) && lower_hex(trace) && lower_hex(span) && lower_hex(flags)) {
            return None;
        }
        let trace_id = u128::from_str_radix(trace, 16).ok()?.to_be_bytes();
        let span_id = u64::from_str_radix(span, 16).ok()?.to_be_bytes();
        let flags = u8::from_str_radix(flags, 16).ok()?;
        if trace_id == [0; 16] || span_id == [0; 8] {
            return None;
        }
        Some(TraceParent {
            trace_id,
            span_id,
            flags,
        })
    }

    /// The trace context of `span` (if traces are on and it has one).
    pub fn of(span: &Span) -> Option<TraceParent> {
        if !enabled() || span.is_none() {
            return None;
        }
        let context = span.context();
        let span_ref = context.span();
        let sc = span_ref.span_context();
        sc.is_valid().then(|| TraceParent {
            trace_id: sc.trace_id().to_bytes(),
            span_id: sc.span_id().to_bytes(),
            flags: sc.trace_flags().to_u8(),
        })
    }

    /// As the parent of a local span.
    fn context(&self) -> opentelemetry::Context {
        opentelemetry::Context::new().with_remote_span_context(SpanContext::new(
            TraceId::from_bytes(self.trace_id),
            SpanId::from_bytes(self.span_id),
            TraceFlags::new(self.flags),
            true,
            TraceState::default(),
        ))
    }
}

impl fmt::Display for TraceParent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "00-{:032x}-{:016x}-{:02x}",
            u128::from_be_bytes(self.trace_id),
            u64::from_be_bytes(self.span_id),
            self.flags
        )
    }
}

/// The `traceparent` in gRPC metadata, if traces are on and it is valid.
pub fn from_metadata(metadata: &tonic::metadata::MetadataMap) -> Option<TraceParent> {
    if !enabled() {
        return None;
    }
    TraceParent::parse(metadata.get(TRACEPARENT_HEADER)?.to_str().ok()?)
}

/// Makes `parent` (from the client or another instance) the parent of
/// `span`; without one, `span` starts a trace (or continues the current
/// span's).
pub fn set_parent(span: &Span, parent: Option<TraceParent>) {
    if let Some(parent) = parent
        && !span.is_none()
    {
        // Fails only for a span the exporter does not see; nothing to link.
        let _ = span.set_parent(parent.context());
    }
}

/// The span of one request from a client: `chat.<kind>` (`chat.send`,
/// `chat.join`, …), a child of `parent` when the client sent one; none
/// when the request is not sampled, and then none of its steps either.
pub fn request_span(
    kind: &'static str,
    request_id: u64,
    server_id: &str,
    parent: Option<TraceParent>,
) -> Span {
    let ratio = f64::from_bits(SAMPLE_RATIO.load(Ordering::Relaxed));
    if !enabled() || !sampled(parent, ratio) {
        return Span::none();
    }
    let span = tracing::info_span!(
        target: TARGET,
        "request",
        otel.name = kind,
        otel.kind = "server",
        chat.request_id = request_id,
        chat.server_id = server_id,
        otel.status_code = tracing::field::Empty,
        chat.error_code = tracing::field::Empty,
    );
    set_parent(&span, parent);
    span
}

/// Marks the current request span failed with `code` (a stable error code).
pub fn record_error(span: &Span, code: &str) {
    if enabled() && !span.is_none() {
        span.record("otel.status_code", "ERROR");
        span.record("chat.error_code", code);
    }
}

/// A span for one step inside a traced request (`store.append`,
/// `backplane.publish`); none outside one.
pub fn step_span(name: &'static str) -> Span {
    // Inside a traced request its OpenTelemetry context is the active one.
    if !enabled() || current_ids().is_none() {
        return Span::none();
    }
    tracing::info_span!(target: TARGET, "step", otel.name = name)
}

/// The span of an event received from another instance, continuing the
/// trace the publisher put in the envelope.
pub fn receive_span(parent: TraceParent, server_id: &str, sequence: Option<u64>) -> Span {
    if !enabled() {
        return Span::none();
    }
    let span = tracing::info_span!(
        target: TARGET,
        "backplane.receive",
        otel.kind = "consumer",
        chat.server_id = server_id,
        chat.sequence = sequence,
    );
    set_parent(&span, Some(parent));
    span
}

/// The span of handing an event to this instance's members of `room`.
pub fn fanout_span(room: &crate::domain::validate::RoomName) -> Span {
    if !enabled() {
        return Span::none();
    }
    tracing::info_span!(target: TARGET, "fanout", chat.room = %room)
}

/// The pipeline that exports over OTLP/gRPC to `config.otlp_endpoint`
/// (or `OTEL_EXPORTER_OTLP_ENDPOINT`; over TLS for `https://`, trusting
/// `config.ca_file` or else the web PKI roots), batched, tracing
/// `config.sample_ratio` of the requests that come without a trace (a
/// client's sampling decision is followed). `None` when no endpoint is
/// set. Must run inside the tokio runtime the exporter will use.
pub fn otlp_provider(config: &TracesConfig) -> Result<Option<Traces>, super::TelemetryError> {
    use opentelemetry_otlp::{WithExportConfig, WithTonicConfig};
    use tonic::transport::{Certificate, ClientTlsConfig};
    let endpoint = match config.endpoint() {
        Some(endpoint) => endpoint,
        None => return Ok(None),
    };
    let mut exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_tonic()
        .with_endpoint(endpoint.clone())
        .with_timeout(config.export_timeout);
    if endpoint.starts_with("https://") {
        let tls = match config.ca_file.as_str() {
            "" => ClientTlsConfig::new().with_webpki_roots(),
            file => {
                let pem = std::fs::read(file).map_err(|source| super::TelemetryError::CaFile {
                    file: file.to_string(),
                    source,
                })?;
                ClientTlsConfig::new().ca_certificate(Certificate::from_pem(pem))
            }
        };
        exporter = exporter.with_tls_config(tls);
    }
    let exporter = exporter
        .build()
        .map_err(|source| super::TelemetryError::Exporter {
            endpoint: endpoint.clone(),
            source,
        })?;
    Ok(Some(provider_with(config, |b| {
        b.with_batch_exporter(exporter)
    })))
}

/// A pipeline with `config`'s sampling and service name, its exporter
/// attached by `attach` (tests use an in-memory one).
pub fn provider_with(
    config: &TracesConfig,
    attach: impl FnOnce(
        opentelemetry_sdk::trace::TracerProviderBuilder,
    ) -> opentelemetry_sdk::trace::TracerProviderBuilder,
) -> Traces {
    let resource = opentelemetry_sdk::Resource::builder()
        .with_service_name(config.service_name.clone())
        .build();
    // Which requests are traced is decided before their spans exist
    // ([`request_span`]); every span made is kept.
    let sampler = Sampler::ParentBased(Box::new(Sampler::AlwaysOn));
    let provider = attach(
        SdkTracerProvider::builder()
            .with_resource(resource)
            .with_sampler(sampler),
    )
    .build();
    Traces {
        provider,
        sample_ratio: config.sample_ratio,
    }
}

/// The tracer `tracing` spans become OpenTelemetry spans through.
pub(super) fn tracer(provider: &SdkTracerProvider) -> opentelemetry_sdk::trace::SdkTracer {
    provider.tracer("chat-server")
}

/// The trace and span ids of the active span, for log lines.
pub(super) fn current_ids() -> Option<(TraceId, SpanId)> {
    opentelemetry::Context::map_current(|cx| {
        let span = cx.span();
        let sc = span.span_context();
        sc.is_valid().then(|| (sc.trace_id(), sc.span_id()))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn traceparent_round_trips_and_refuses_what_w3c_refuses() {
        let text = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let parsed = TraceParent::parse(text).unwrap();
        assert_eq!(parsed.flags, 1);
        assert_eq!(parsed.to_string(), text);
        // A later version with more fields: our prefix is read.
        assert_eq!(
            TraceParent::parse(&format!("cc{}-what-next", &text[2..])).map(|p| p.span_id),
            Some(parsed.span_id)
        );
        for bad in [
            "",
            "00",
            &text[..54],
            &format!("{text}-"),
            &text.replace("4bf9", "4BF9"),
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            &format!("ff{}", &text[2..]),
            &text.replacen('-', "_", 1),
            "00-4bf92f3577b34da6a3ce929d0e0e473g-00f067aa0ba902b7-01",
            "00-+bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "zz-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0é",
            &"0".repeat(10_000),
        ] {
            assert_eq!(TraceParent::parse(bad), None, "{bad:?}");
        }
    }

    proptest::proptest! {
        #[test]
        fn any_text_parses_or_not_without_panicking(text in "\\PC{0,80}|[0-9a-fé-]{53,57}") {
            let _ = TraceParent::parse(&text);
        }

        #[test]
        fn every_valid_context_round_trips(
            trace in 1u128..,
            span in 1u64..,
            flags: u8,
        ) {
            let parent = TraceParent {
                trace_id: trace.to_be_bytes(),
                span_id: span.to_be_bytes(),
                flags,
            };
            proptest::prop_assert_eq!(TraceParent::parse(&parent.to_string()), Some(parent));
        }
    }

    #[test]
    fn requests_are_sampled_as_their_parent_says_or_at_the_ratio() {
        let parent = |flags| {
            Some(TraceParent {
                trace_id: [1; 16],
                span_id: [1; 8],
                flags,
            })
        };
        assert!(sampled(parent(1), 0.0));
        assert!(!sampled(parent(0), 1.0));
        assert!(sampled(None, 1.0));
        assert!((0..1000).all(|_| !sampled(None, 0.0)));
        let kept = (0..100_000).filter(|_| sampled(None, 0.25)).count();
        assert!((24_000..26_000).contains(&kept), "{kept}");
    }

    #[test]
    fn without_an_exporter_no_span_is_made() {
        assert!(!enabled());
        assert!(request_span("chat.send", 1, "a", None).is_none());
        assert!(step_span("store.append").is_none());
        assert!(fanout_span(&crate::domain::validate::RoomName::parse("lobby").unwrap()).is_none());
        assert_eq!(TraceParent::of(&Span::current()), None);
    }
}
