//! The latency clock: one monotonic clock for the whole process, in
//! nanoseconds since its first use. Senders and receivers live in this one
//! process, so a send time taken here and a receive time taken there are
//! on the same clock (load.js uses CLOCK_MONOTONIC across its processes
//! the same way).

use std::sync::OnceLock;
use std::time::{Duration, Instant};

static EPOCH: OnceLock<Instant> = OnceLock::new();

fn epoch() -> Instant {
    *EPOCH.get_or_init(Instant::now)
}

/// Nanoseconds since the process's clock epoch.
pub fn now_ns() -> u64 {
    u64::try_from(epoch().elapsed().as_nanos()).unwrap_or(u64::MAX)
}

/// The [`Instant`] of a clock reading, for sleeping until it.
pub fn instant_at(ns: u64) -> Instant {
    epoch() + Duration::from_nanos(ns)
}

/// Milliseconds between two readings (negative if `to` is earlier).
pub fn ms_between(from_ns: u64, to_ns: u64) -> f64 {
    (to_ns as f64 - from_ns as f64) / 1e6
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn monotonic_and_convertible() {
        let a = now_ns();
        let b = now_ns();
        assert!(b >= a);
        assert!(instant_at(b) >= instant_at(a));
        assert_eq!(ms_between(1_000_000, 3_500_000), 2.5);
        assert_eq!(ms_between(3_000_000, 1_000_000), -2.0);
    }
}
