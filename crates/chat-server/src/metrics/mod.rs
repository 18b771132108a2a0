//! Metric building blocks: counters by a fixed set of label values
//! ([`Family`] over the enums of [`labels`]), fixed-bucket histograms
//! ([`Histogram`]), and the counters no other component keeps
//! ([`Metrics`], owned by the hub). `GET /metrics` (in the endpoint layer)
//! renders them with what the rooms, the backplane and the admission count,
//! in the Prometheus text format (0.0.4).
//!
//! Names follow Prometheus conventions (`chat_…_total` counters, base
//! units: `_seconds`), and every label takes its values from an enum in
//! [`labels`]: no room, user or address is ever a label, and a label value
//! outside its set does not compile.

pub mod labels;

pub use labels::{
    ApiCall, AuthFailure, CloseReason, ConnectionLimit, JoinQuery, Label, RateLimitedAction,
    WebhookDrop,
};

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Upper bounds of the latency histograms' buckets, in seconds.
const LATENCY_BUCKETS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// Upper bounds of the delay histograms' buckets, in seconds: 0.1 s to a
/// day (an event waits through a receiver's outage).
const DELAY_BUCKETS: [f64; 13] = [
    0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0, 86400.0,
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

    /// A histogram of delays that may last through an outage, 0.1 s to a
    /// day.
    pub fn delays() -> Self {
        Histogram::new(&DELAY_BUCKETS, 1e-9)
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

    /// Appends the histogram in the text format.
    pub fn render(&self, out: &mut String, name: &str, help: &str) {
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

/// A counter per value of a label set `L`.
pub struct Family<L: Label> {
    /// One count per value of `L`, in the order of `L::ALL`.
    counts: Box<[AtomicU64]>,
    /// The label set this family counts by.
    label: std::marker::PhantomData<L>,
}

impl<L: Label> Default for Family<L> {
    fn default() -> Self {
        Family::new()
    }
}

impl<L: Label> Family<L> {
    /// Every value at zero.
    pub fn new() -> Self {
        Family {
            counts: L::ALL.iter().map(|_| AtomicU64::new(0)).collect(),
            label: std::marker::PhantomData,
        }
    }

    /// Counts one for `value`.
    pub fn inc(&self, value: L) {
        self.counts[value.index()].fetch_add(1, Ordering::Relaxed);
    }

    /// Counts `n` for `value`.
    pub fn add(&self, value: L, n: u64) {
        self.counts[value.index()].fetch_add(n, Ordering::Relaxed);
    }

    /// The count for `value`.
    pub fn get(&self, value: L) -> u64 {
        self.counts[value.index()].load(Ordering::Relaxed)
    }

    /// Appends the family in the text format, one line per label value.
    pub fn render(&self, out: &mut String, name: &str, label: &str, help: &str) {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
        for value in L::ALL {
            let count = self.get(*value);
            let _ = writeln!(out, "{name}{{{label}=\"{}\"}} {count}", value.as_str());
        }
    }
}

/// The counters the hub and the sessions keep.
pub struct Metrics {
    /// Sessions opened.
    pub connections_opened: AtomicU64,
    /// Sessions ended, by reason.
    pub connections_closed: Family<CloseReason>,
    /// Session calls refused by a connection limit, by limit.
    pub connections_refused: Family<ConnectionLimit>,
    /// Messages accepted and stored (retries of stored messages excluded).
    pub messages_received: AtomicU64,
    /// Typing announcements accepted from this instance's clients.
    pub typing_received: AtomicU64,
    /// Edits accepted and stored (retries excluded).
    pub messages_edited: AtomicU64,
    /// Deletes accepted and stored (retries excluded).
    pub messages_deleted: AtomicU64,
    /// Read marks stored.
    pub read_marks: AtomicU64,
    /// Reactions added or removed, stored (retries excluded).
    pub reactions: AtomicU64,
    /// Direct conversations opened (or found again) by this instance's
    /// clients.
    pub directs_opened: AtomicU64,
    /// Requests refused by a rate limit, by action.
    pub rate_limited: Family<RateLimitedAction>,
    /// Refused tokens, by reason.
    pub auth_failures: Family<AuthFailure>,
    /// Server API calls answered, by call (refusals included).
    pub api_calls: Family<ApiCall>,
    /// Server API calls refused or failed, by call.
    pub api_errors: Family<ApiCall>,
    /// Store appends, from the request to the store's answer.
    pub store_append: Histogram,
    /// Control messages from another process using this instance's
    /// `server_id` (the others cannot keep the two's presence apart).
    pub duplicate_server_id: AtomicU64,
    /// Control messages (heartbeats, presence, snapshots) the backplane
    /// did not take.
    pub control_publish_failed: AtomicU64,
    /// Snapshots asked of an instance because what was known of its
    /// presence kept differing from its digest.
    pub presence_repairs: AtomicU64,
    /// Joins answered with success.
    pub joins: AtomicU64,
    /// Store statements issued for joins, by what they asked.
    pub join_store_queries: Family<JoinQuery>,
    /// Presence frames (`MembersChanged`) queued for this instance's
    /// connections.
    pub presence_frames: AtomicU64,
    /// The webhook sender's counters.
    pub webhook: WebhookMetrics,
}

/// What the webhook sender counts (all zero with no webhook).
pub struct WebhookMetrics {
    /// Events the receiver acknowledged (a 2xx answer).
    pub sent: AtomicU64,
    /// Requests that failed: no connection, a timeout, or an answer other
    /// than 2xx.
    pub failed: AtomicU64,
    /// Events made due again after a failed request.
    pub retried: AtomicU64,
    /// Events that left the queue undelivered, by why.
    pub dropped: Family<WebhookDrop>,
    /// Events in the queue at the last trim (a gauge).
    pub pending: AtomicU64,
    /// From an event's queueing to the receiver's acknowledgement.
    pub delivery: Histogram,
    /// One request, from sending to the answer.
    pub request: Histogram,
}

impl Default for WebhookMetrics {
    fn default() -> Self {
        WebhookMetrics {
            sent: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            retried: AtomicU64::new(0),
            dropped: Family::new(),
            pending: AtomicU64::new(0),
            delivery: Histogram::delays(),
            request: Histogram::latency(),
        }
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            connections_opened: AtomicU64::new(0),
            connections_closed: Family::new(),
            connections_refused: Family::new(),
            messages_received: AtomicU64::new(0),
            typing_received: AtomicU64::new(0),
            messages_edited: AtomicU64::new(0),
            messages_deleted: AtomicU64::new(0),
            read_marks: AtomicU64::new(0),
            reactions: AtomicU64::new(0),
            directs_opened: AtomicU64::new(0),
            rate_limited: Family::new(),
            auth_failures: Family::new(),
            api_calls: Family::new(),
            api_errors: Family::new(),
            store_append: Histogram::default(),
            duplicate_server_id: AtomicU64::new(0),
            control_publish_failed: AtomicU64::new(0),
            presence_repairs: AtomicU64::new(0),
            joins: AtomicU64::new(0),
            join_store_queries: Family::new(),
            presence_frames: AtomicU64::new(0),
            webhook: WebhookMetrics::default(),
        }
    }
}
