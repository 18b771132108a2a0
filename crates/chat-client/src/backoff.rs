//! Reconnect delays: exponential growth with jitter, capped.

use rand::Rng;
use std::time::Duration;

/// How long to wait before reconnect attempt `n`.
#[derive(Clone, Debug, PartialEq)]
pub struct Backoff {
    /// Delay before the first retry.
    pub initial: Duration,
    /// Largest delay.
    pub max: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            initial: Duration::from_millis(250),
            max: Duration::from_secs(10),
        }
    }
}

impl Backoff {
    /// The delay before retry `attempt` (0-based): `initial * 2^attempt`,
    /// capped at `max`, then scaled by a random factor in [0.5, 1.0) so that
    /// clients of a restarted server do not all return at once.
    pub fn delay(&self, attempt: u32) -> Duration {
        let base = self
            .initial
            .saturating_mul(1u32.checked_shl(attempt.min(20)).unwrap_or(u32::MAX))
            .min(self.max);
        base.mul_f64(rand::rng().random_range(0.5..1.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_then_caps_with_jitter() {
        let b = Backoff {
            initial: Duration::from_millis(100),
            max: Duration::from_secs(2),
        };
        for attempt in 0..40 {
            let expected = (Duration::from_millis(100) * 2u32.pow(attempt.min(20))).min(b.max);
            let d = b.delay(attempt);
            assert!(
                d >= expected / 2 && d < expected,
                "attempt {attempt}: {d:?} vs {expected:?}"
            );
        }
    }
}
