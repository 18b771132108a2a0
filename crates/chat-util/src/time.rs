//! The wall clock in the units of the contract's `_unix_ms` fields.

use std::time::{SystemTime, UNIX_EPOCH};

/// Milliseconds since the Unix epoch; 0 if the clock is before it.
pub fn now_unix_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis().min(i64::MAX as u128) as i64)
        .unwrap_or(0)
}

/// Microseconds since the Unix epoch; 0 if the clock is before it.
pub fn now_unix_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros().min(u64::MAX as u128) as u64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn milliseconds_and_microseconds_agree() {
        let ms = now_unix_ms();
        let us = now_unix_us();
        // After 2020 and within a second of each other.
        assert!(ms > 1_577_836_800_000);
        assert!((us / 1000) as i64 - ms < 1000);
    }
}
