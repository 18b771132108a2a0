//! Whether a client got every message of a room exactly once across a
//! restart: the sequences it received there, against the range it was
//! owed — after the room's latest when it joined, up to the last sequence
//! the sender had acknowledged by the end of the drain.

use serde::Serialize;

/// One client's room, checked.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Check {
    /// Sequences owed: those in `(after, last]`.
    pub expected: u64,
    /// Owed sequences never received.
    pub lost: u64,
    /// Receptions beyond the first of a sequence.
    pub duplicated: u64,
}

impl Check {
    /// Adds another room's (or client's) check.
    pub fn add(&mut self, other: Check) {
        self.expected += other.expected;
        self.lost += other.lost;
        self.duplicated += other.duplicated;
    }

    /// Owed sequences received.
    pub fn received(&self) -> u64 {
        self.expected - self.lost
    }
}

/// Checks the sequences a client received in one room (`seen`, in any
/// order) against `(after, last]`: `after` is the room's latest when the
/// client joined (or, not knowing it, the first received minus one),
/// `last` the sender's last acknowledged sequence. Sequences above `last`
/// (stored, but their acknowledgement not back) are neither owed nor
/// lost; seen twice they are duplicates all the same.
pub fn check(after: Option<u64>, last: u64, seen: &[u64]) -> Check {
    let mut sorted = seen.to_vec();
    sorted.sort_unstable();
    let duplicated = sorted.windows(2).filter(|w| w[0] == w[1]).count() as u64;
    sorted.dedup();
    let after = after.unwrap_or_else(|| sorted.first().map_or(last, |s| s.saturating_sub(1)));
    let expected = last.saturating_sub(after);
    let received = sorted.iter().filter(|&&s| s > after && s <= last).count() as u64;
    Check {
        expected,
        lost: expected - received,
        duplicated,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn contiguous_is_clean() {
        assert_eq!(
            check(Some(0), 5, &[1, 2, 3, 4, 5]),
            Check {
                expected: 5,
                lost: 0,
                duplicated: 0
            }
        );
        // Out of order (a backlog after live ones) is fine.
        assert_eq!(check(Some(2), 5, &[5, 3, 4]).lost, 0);
        // Nothing owed, nothing seen.
        assert_eq!(check(Some(7), 7, &[]), Check::default());
    }

    #[test]
    fn gaps_and_repeats() {
        let c = check(Some(0), 6, &[1, 2, 2, 5, 6, 6, 6]);
        assert_eq!((c.expected, c.lost, c.duplicated), (6, 2, 3));
        assert_eq!(c.received(), 4);
        // Everything lost.
        assert_eq!(check(Some(10), 13, &[]).lost, 3);
        // Beyond the last acknowledged: neither owed nor lost.
        assert_eq!(check(Some(0), 2, &[1, 2, 3]), check(Some(0), 2, &[1, 2]));
        assert_eq!(check(Some(0), 2, &[1, 2, 3, 3]).duplicated, 1);
    }

    #[test]
    fn without_the_join_point_from_the_first_seen() {
        assert_eq!(check(None, 9, &[4, 5, 7, 8, 9]).lost, 1);
        assert_eq!(check(None, 9, &[4, 5, 7, 8, 9]).expected, 6);
        assert_eq!(check(None, 9, &[]), Check::default());
        let mut total = check(Some(0), 3, &[1, 3]);
        total.add(check(Some(0), 2, &[1, 1, 2]));
        assert_eq!(
            total,
            Check {
                expected: 5,
                lost: 1,
                duplicated: 1
            }
        );
    }
}
