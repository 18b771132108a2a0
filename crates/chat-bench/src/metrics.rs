//! Latency histograms and their JSON summary.
//!
//! Values are recorded in microseconds into an HDR histogram with 2
//! significant digits (≤ 1 % relative error, like load.js's 1 % buckets);
//! the maximum and the mean are kept exactly beside it. Negative values
//! (clock jitter) count as 0, as in load.js.

use hdrhistogram::Histogram;
use serde::Serialize;

/// One distribution of milliseconds.
#[derive(Clone, Debug)]
pub struct Hist {
    h: Histogram<u64>,
    max_ms: f64,
    sum_ms: f64,
}

impl Default for Hist {
    fn default() -> Self {
        Hist::new()
    }
}

impl Hist {
    /// An empty histogram (it grows as values arrive).
    pub fn new() -> Hist {
        Hist {
            // 1 µs to 60 s at 2 significant digits is a valid range; it
            // grows beyond 60 s if needed.
            h: Histogram::new_with_bounds(1, 60_000_000, 2)
                .map(|mut h| {
                    h.auto(true);
                    h
                })
                .unwrap_or_else(|_| unreachable!("valid bounds")),
            max_ms: 0.0,
            sum_ms: 0.0,
        }
    }

    /// Records one value in milliseconds.
    pub fn record(&mut self, ms: f64) {
        let ms = if ms > 0.0 { ms } else { 0.0 };
        let us = (ms * 1000.0).round() as u64;
        if self.h.record(us).is_err() {
            self.h.saturating_record(us);
        }
        self.sum_ms += ms;
        if ms > self.max_ms {
            self.max_ms = ms;
        }
    }

    /// Adds another histogram's values.
    pub fn merge(&mut self, other: &Hist) {
        // Both auto-resize, so adding cannot fail for lack of range.
        let _ = self.h.add(&other.h);
        self.sum_ms += other.sum_ms;
        if other.max_ms > self.max_ms {
            self.max_ms = other.max_ms;
        }
    }

    /// How many values.
    pub fn len(&self) -> u64 {
        self.h.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.h.is_empty()
    }

    /// The `p`-th percentile in ms (never above the exact max).
    pub fn percentile(&self, p: f64) -> Option<f64> {
        if self.is_empty() {
            return None;
        }
        let us = self.h.value_at_quantile(p / 100.0) as f64;
        Some((us / 1000.0).min(self.max_ms))
    }

    /// The JSON summary (load.js's `Hist.summary()`).
    pub fn summary(&self) -> Summary {
        let n = self.len();
        let some = n > 0;
        Summary {
            n,
            p50: self.percentile(50.0).map(r3),
            p90: self.percentile(90.0).map(r3),
            p99: self.percentile(99.0).map(r3),
            p999: self.percentile(99.9).map(r3),
            max: some.then(|| r3(self.max_ms)),
            mean: some.then(|| r3(self.sum_ms / n as f64)),
        }
    }
}

/// `latency_ms`, `ack_rtt_ms`, `send_lag_ms`: milliseconds, 3 decimals,
/// `null` when nothing was recorded.
#[derive(Clone, Debug, Default, Serialize, PartialEq)]
pub struct Summary {
    /// Values recorded.
    pub n: u64,
    /// Median.
    pub p50: Option<f64>,
    /// 90th percentile.
    pub p90: Option<f64>,
    /// 99th percentile.
    pub p99: Option<f64>,
    /// 99.9th percentile.
    pub p999: Option<f64>,
    /// Exact maximum.
    pub max: Option<f64>,
    /// Exact mean.
    pub mean: Option<f64>,
}

/// Rounds to 3 decimals (load.js's `r3`).
pub fn r3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_within_one_percent() {
        let mut h = Hist::new();
        for i in 1..=1000 {
            h.record(i as f64 / 10.0); // 0.1 .. 100.0 ms
        }
        let s = h.summary();
        assert_eq!(s.n, 1000);
        let close = |got: Option<f64>, want: f64| {
            let got = got.expect("value");
            assert!((got - want).abs() <= want * 0.01, "{got} vs {want}");
        };
        close(s.p50, 50.0);
        close(s.p90, 90.0);
        close(s.p99, 99.0);
        close(s.p999, 99.9);
        assert_eq!(s.max, Some(100.0));
        assert_eq!(s.mean, Some(50.05));
    }

    #[test]
    fn empty_is_null_and_negative_is_zero() {
        let h = Hist::new();
        let v = serde_json::to_value(h.summary()).expect("serializes");
        assert_eq!(
            v,
            serde_json::json!({"n":0,"p50":null,"p90":null,"p99":null,"p999":null,"max":null,"mean":null})
        );
        let mut h = Hist::new();
        h.record(-3.0);
        assert_eq!(h.summary().max, Some(0.0));
        assert_eq!(h.summary().p50, Some(0.0));
    }

    #[test]
    fn merge_adds_counts_and_keeps_max() {
        let mut a = Hist::new();
        let mut b = Hist::new();
        a.record(1.0);
        b.record(7.5);
        b.record(2.0);
        a.merge(&b);
        assert_eq!(a.len(), 3);
        assert_eq!(a.summary().max, Some(7.5));
        assert_eq!(a.summary().mean, Some(3.5));
    }
}
