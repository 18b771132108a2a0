//! Prometheus metrics: the counters no other component keeps ([`Metrics`],
//! owned by the hub), and `GET /metrics`, which renders them with what the
//! rooms, the backplane and the admission already count, in the Prometheus
//! text format (0.0.4).
//!
//! Names follow Prometheus conventions (`chat_…_total` counters, base
//! units: `_seconds`), and every label takes values from a fixed set in
//! this file: no room, user or address is ever a label.
//!
//! With authentication on, `/metrics` asks for the same credentials as
//! the admin endpoints.

use crate::admin::AdminAccess;
use crate::backplane::BackplaneStats;
use crate::hub::Hub;
use crate::limiter::Admission;
use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use std::fmt::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Why sessions end: the `reason` label of `chat_connections_closed_total`.
pub const CLOSE_REASONS: [&str; 8] = [
    "client_hung_up",
    "connection_lost",
    "slow_consumer",
    "idle_timeout",
    "token_expired",
    "max_lifetime",
    "protocol_violation",
    "server_shutting_down",
];

/// Why tokens are refused: `chat_auth_failures_total{reason}`, the values of
/// [`crate::auth::AuthError::reason`].
pub const AUTH_REASONS: [&str; 10] = [
    "missing",
    "malformed",
    "expired",
    "algorithm",
    "signature",
    "issuer",
    "audience",
    "claims",
    "not_yet_valid",
    "key",
];

/// Which limit refused a connection: `chat_connections_refused_total`, the
/// values of [`crate::limiter::Refusal::reason`].
pub const REFUSAL_REASONS: [&str; 3] = ["total", "address", "user"];

/// What a rate limit refused: `chat_rate_limited_total{action}`.
pub const RATE_LIMITED_ACTIONS: [&str; 3] = ["send", "join", "history"];

/// Upper bounds of the latency histograms' buckets, in seconds.
const LATENCY_BUCKETS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// Upper bounds of the size histograms' buckets (messages per batch).
const SIZE_BUCKETS: [f64; 10] = [1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0];

/// A histogram with fixed buckets: of latencies ([`Histogram::latency`],
/// in seconds) or of sizes ([`Histogram::sizes`], in items).
pub struct Histogram {
    bounds: &'static [f64],
    /// The value of one unit of `sum`: 1e-9 for latencies (nanoseconds).
    unit: f64,
    buckets: Box<[AtomicU64]>,
    count: AtomicU64,
    sum: AtomicU64,
}

impl Histogram {
    fn new(bounds: &'static [f64], unit: f64) -> Self {
        Histogram {
            bounds,
            unit,
            buckets: bounds.iter().map(|_| AtomicU64::new(0)).collect(),
            count: AtomicU64::new(0),
            sum: AtomicU64::new(0),
        }
    }

    /// A histogram of durations, 0.5 ms to 10 s.
    pub fn latency() -> Self {
        Histogram::new(&LATENCY_BUCKETS, 1e-9)
    }

    /// A histogram of counts, 1 to 512 by powers of two.
    pub fn sizes() -> Self {
        Histogram::new(&SIZE_BUCKETS, 1.0)
    }

    /// Records one duration.
    pub fn observe(&self, elapsed: Duration) {
        let nanos = elapsed.as_nanos().min(u64::MAX as u128) as u64;
        self.record(elapsed.as_secs_f64(), nanos);
    }

    /// Records one size.
    pub fn observe_count(&self, n: u64) {
        self.record(n as f64, n);
    }

    fn record(&self, value: f64, units: u64) {
        if let Some(i) = self.bounds.iter().position(|&le| value <= le) {
            self.buckets[i].fetch_add(1, Ordering::Relaxed);
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        self.sum.fetch_add(units, Ordering::Relaxed);
    }

    /// How many observations so far.
    pub fn count(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }

    fn render(&self, out: &mut String, name: &str, help: &str) {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
        let mut cumulative = 0;
        for (le, bucket) in self.bounds.iter().zip(&self.buckets) {
            cumulative += bucket.load(Ordering::Relaxed);
            let _ = writeln!(out, "{name}_bucket{{le=\"{le}\"}} {cumulative}");
        }
        let count = self.count.load(Ordering::Relaxed);
        let sum = self.sum.load(Ordering::Relaxed) as f64 * self.unit;
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {count}");
        let _ = writeln!(out, "{name}_sum {sum}\n{name}_count {count}");
    }
}

impl Default for Histogram {
    fn default() -> Self {
        Histogram::latency()
    }
}

impl std::fmt::Debug for Histogram {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Histogram")
            .field("count", &self.count())
            .finish_non_exhaustive()
    }
}

/// A counter per value of a fixed label set.
pub struct Family<const N: usize> {
    values: &'static [&'static str; N],
    counts: [AtomicU64; N],
}

impl<const N: usize> Family<N> {
    const fn new(values: &'static [&'static str; N]) -> Self {
        Family {
            values,
            counts: [const { AtomicU64::new(0) }; N],
        }
    }

    /// Counts one for `value`; a value outside the set counts nowhere (and
    /// is a bug, caught in debug builds).
    pub fn inc(&self, value: &str) {
        match self.values.iter().position(|v| *v == value) {
            Some(i) => {
                self.counts[i].fetch_add(1, Ordering::Relaxed);
            }
            None => debug_assert!(false, "metric label {value:?} is not in {:?}", self.values),
        }
    }

    fn render(&self, out: &mut String, name: &str, label: &str, help: &str) {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
        for (value, count) in self.values.iter().zip(&self.counts) {
            let count = count.load(Ordering::Relaxed);
            let _ = writeln!(out, "{name}{{{label}=\"{value}\"}} {count}");
        }
    }
}

/// The counters the hub and the sessions keep.
pub struct Metrics {
    /// Sessions opened.
    pub connections_opened: AtomicU64,
    /// Sessions ended, by reason.
    pub connections_closed: Family<8>,
    /// Session calls refused by a connection limit, by limit.
    pub connections_refused: Family<3>,
    /// Messages accepted and stored (retries of stored messages excluded).
    pub messages_received: AtomicU64,
    /// Requests refused by a rate limit, by action.
    pub rate_limited: Family<3>,
    /// Refused tokens, by reason.
    pub auth_failures: Family<10>,
    /// Store appends, from the request to the store's answer.
    pub store_append: Histogram,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            connections_opened: AtomicU64::new(0),
            connections_closed: Family::new(&CLOSE_REASONS),
            connections_refused: Family::new(&REFUSAL_REASONS),
            messages_received: AtomicU64::new(0),
            rate_limited: Family::new(&RATE_LIMITED_ACTIONS),
            auth_failures: Family::new(&AUTH_REASONS),
            store_append: Histogram::default(),
        }
    }
}

fn counter(out: &mut String, name: &str, help: &str, value: u64) {
    let _ = writeln!(
        out,
        "# HELP {name} {help}\n# TYPE {name} counter\n{name} {value}"
    );
}

fn gauge(out: &mut String, name: &str, help: &str, value: u64) {
    let _ = writeln!(
        out,
        "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {value}"
    );
}

/// What `/metrics` reads.
pub struct Sources {
    /// The hub (its metrics, rooms, sessions).
    pub hub: Arc<Hub>,
    /// The backplane's counters.
    pub backplane: Arc<BackplaneStats>,
    /// Connection counts.
    pub admission: Arc<Admission>,
}

/// The whole exposition.
pub fn render(sources: &Sources) -> String {
    let m = sources.hub.metrics();
    let b = &sources.backplane;
    let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
    let mut out = String::with_capacity(8 * 1024);
    gauge(
        &mut out,
        "chat_connections",
        "Session streams open on this instance.",
        sources.admission.connections() as u64,
    );
    counter(
        &mut out,
        "chat_connections_opened_total",
        "Session streams opened.",
        load(&m.connections_opened),
    );
    m.connections_closed.render(
        &mut out,
        "chat_connections_closed_total",
        "reason",
        "Session streams ended, by reason.",
    );
    m.connections_refused.render(
        &mut out,
        "chat_connections_refused_total",
        "limit",
        "Session calls refused by a connection limit.",
    );
    gauge(
        &mut out,
        "chat_rooms",
        "Rooms with members on this instance.",
        sources.hub.rooms().len() as u64,
    );
    gauge(
        &mut out,
        "chat_room_members",
        "Room memberships of this instance's connections.",
        sources.hub.rooms().memberships() as u64,
    );
    counter(
        &mut out,
        "chat_messages_received_total",
        "Messages accepted from this instance's clients and stored.",
        load(&m.messages_received),
    );
    counter(
        &mut out,
        "chat_messages_delivered_total",
        "Message frames queued for this instance's connections.",
        sources.hub.rooms().deliveries(),
    );
    counter(
        &mut out,
        "chat_gap_repairs_total",
        "Messages fetched from the store to fill a gap in a room's sequence.",
        sources.hub.rooms().repaired(),
    );
    m.rate_limited.render(
        &mut out,
        "chat_rate_limited_total",
        "action",
        "Requests refused by a rate limit.",
    );
    m.auth_failures.render(
        &mut out,
        "chat_auth_failures_total",
        "reason",
        "Refused tokens, by reason.",
    );
    m.store_append.render(
        &mut out,
        "chat_store_append_seconds",
        "Time to store a message (the store's acknowledgement).",
    );
    if let Some(batches) = sources.hub.store().batch_sizes() {
        batches.render(
            &mut out,
            "chat_store_batch_messages",
            "Messages written per store commit or statement (group commit).",
        );
    }
    sources.hub.rooms().delivery_latency().render(
        &mut out,
        "chat_delivery_latency_seconds",
        "From the store's acknowledgement of a message to its hand-off to this instance's connections (across instances, clock differences included).",
    );
    for (name, help, value) in [
        (
            "chat_backplane_published_total",
            "Room events published to the backplane.",
            &b.published,
        ),
        (
            "chat_backplane_publish_failures_total",
            "Publishes that failed; the event reached local members only.",
            &b.publish_failed,
        ),
        (
            "chat_backplane_received_total",
            "Room events received from the backplane.",
            &b.received,
        ),
        (
            "chat_backplane_malformed_total",
            "Received backplane messages that did not decode.",
            &b.malformed,
        ),
        (
            "chat_backplane_dropped_total",
            "Times the backplane client dropped messages it could not buffer.",
            &b.dropped,
        ),
        (
            "chat_backplane_outages_total",
            "Times the backplane connection was lost.",
            &b.outages,
        ),
        (
            "chat_backplane_control_dropped_total",
            "Control messages dropped because the cluster task lagged.",
            &b.control_dropped,
        ),
        (
            "chat_backplane_reconnects_total",
            "Times the backplane connection came back after an outage.",
            &b.reconnects,
        ),
    ] {
        counter(&mut out, name, help, load(value));
    }
    b.publish_latency.render(
        &mut out,
        "chat_backplane_publish_seconds",
        "Time to publish a room event to the backplane.",
    );
    b.receive_delay.render(
        &mut out,
        "chat_backplane_receive_delay_seconds",
        "From the store's acknowledgement on the publishing instance to the receipt of the event here (clock differences included).",
    );
    out
}

struct Endpoint {
    sources: Sources,
    access: AdminAccess,
}

/// `GET /metrics`.
pub fn routes(sources: Sources, access: AdminAccess) -> Router {
    Router::new()
        .route("/metrics", get(scrape))
        .with_state(Arc::new(Endpoint { sources, access }))
}

async fn scrape(State(endpoint): State<Arc<Endpoint>>, headers: HeaderMap) -> Response {
    if endpoint.access.auth_enabled()
        && let Some(refused) = endpoint.access.refusal(&headers)
    {
        return refused.into_response();
    }
    (
        StatusCode::OK,
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        render(&endpoint.sources),
    )
        .into_response()
}
