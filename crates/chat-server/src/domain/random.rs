//! Cheap, evenly spread pseudo-random fractions (splitmix64) for decisions
//! that only need to be spread out: which requests are traced, when each
//! session's lifetime ends. Not for anything an attacker must not guess.

/// A fraction in [0, 1) from `seed`: the same for the same seed, and spread
/// evenly over consecutive seeds.
pub fn fraction(seed: u64) -> f64 {
    let mut x = seed.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^= x >> 31;
    (x >> 11) as f64 / (1u64 << 53) as f64
}
