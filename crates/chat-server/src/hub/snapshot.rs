//! Presence snapshots in parts: this instance's snapshot split into parts
//! that each fit one backplane message ([`split`]), and other instances'
//! parts put back together ([`Assembler`]). A snapshot replaces what others
//! knew of its origin only once every part arrived; one whose part was lost
//! never completes, and the digest check asks for a new one.

use crate::backplane::control::{PresenceEntry, PresenceSnapshot};
use prost::Message;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Most parts a snapshot may claim: at the default part size about a
/// gigabyte of presence, far beyond any instance; a claim above it is
/// dropped rather than believed.
pub const MAX_PARTS: u32 = 4096;

/// Room left in each part for the control message around it (origin,
/// incarnation, the part's numbers).
const OVERHEAD: usize = 512;

/// Most bytes of parts kept for one unfinished snapshot (about 800,000
/// memberships), and most unfinished snapshots at once: a peer that
/// claims more, or sends parts from ever new origins, costs a bounded
/// amount of memory.
const MAX_PARTIAL_BYTES: usize = 64 * 1024 * 1024;
const MAX_PARTIALS: usize = 64;

/// Splits `entries` into the parts of snapshot `snapshot_id`, each encoding
/// to at most `max_bytes` (with the control message around it). Always at
/// least one part: an empty snapshot says "nothing here".
pub fn split(
    entries: Vec<PresenceEntry>,
    snapshot_id: u64,
    max_bytes: usize,
) -> Vec<PresenceSnapshot> {
    let budget = max_bytes.saturating_sub(OVERHEAD).max(OVERHEAD);
    let mut parts: Vec<Vec<PresenceEntry>> = vec![Vec::new()];
    let mut size = 0;
    for entry in entries {
        let encoded = entry_bytes(&entry);
        let current = parts.last_mut().expect("at least one part");
        if size + encoded > budget && !current.is_empty() {
            parts.push(Vec::new());
            size = 0;
        }
        parts.last_mut().expect("at least one part").push(entry);
        size += encoded;
    }
    let count = parts.len() as u32;
    parts
        .into_iter()
        .enumerate()
        .map(|(part, entries)| PresenceSnapshot {
            entries,
            snapshot_id,
            part: part as u32,
            parts: count,
        })
        .collect()
}

/// What `entry` adds to a part: tag, length, body.
fn entry_bytes(entry: &PresenceEntry) -> usize {
    let len = entry.encoded_len();
    1 + prost::length_delimiter_len(len) + len
}

/// The snapshots of other instances being put together, one per origin.
#[derive(Default)]
pub struct Assembler {
    /// By origin: the newest snapshot whose parts are arriving.
    partial: HashMap<Arc<str>, Partial>,
}

/// A snapshot some of whose parts arrived.
struct Partial {
    /// Which snapshot.
    snapshot_id: u64,
    /// How many parts it has.
    parts: u32,
    /// The parts received so far, by index.
    received: HashMap<u32, Vec<PresenceEntry>>,
    /// Their encoded size, bounded by `MAX_PARTIAL_BYTES`.
    bytes: usize,
    /// When its first part came, to forget it if the rest never does.
    started: Instant,
}

impl Assembler {
    /// Takes one part from `origin`; returns the whole snapshot's entries
    /// when this part completes it. Parts of an older snapshot than the one
    /// being assembled, and parts that contradict it, are dropped.
    pub fn add(
        &mut self,
        origin: &Arc<str>,
        part: PresenceSnapshot,
        now: Instant,
    ) -> Option<Vec<PresenceEntry>> {
        let parts = part.parts.max(1);
        let size = part.encoded_len();
        if parts > MAX_PARTS || part.part >= parts || size > crate::backplane::MAX_CONTROL_BYTES {
            return None;
        }
        if let Some(partial) = self.partial.get(origin) {
            if part.snapshot_id < partial.snapshot_id {
                return None;
            }
            if part.snapshot_id == partial.snapshot_id && parts != partial.parts {
                self.partial.remove(origin);
                return None;
            }
        }
        if parts == 1 {
            self.partial.remove(origin);
            return Some(part.entries);
        }
        if !self.partial.contains_key(origin) && self.partial.len() >= MAX_PARTIALS {
            return None;
        }
        let partial = self
            .partial
            .entry(origin.clone())
            .and_modify(|p| {
                if p.snapshot_id != part.snapshot_id {
                    *p = Partial::new(part.snapshot_id, parts, now);
                }
            })
            .or_insert_with(|| Partial::new(part.snapshot_id, parts, now));
        if let Some(replaced) = partial.received.insert(part.part, part.entries) {
            // The same part again: counted once.
            partial.bytes = partial
                .bytes
                .saturating_sub(replaced.iter().map(entry_bytes).sum::<usize>());
        }
        partial.bytes += size;
        if partial.bytes > MAX_PARTIAL_BYTES {
            self.partial.remove(origin);
            return None;
        }
        if partial.received.len() < partial.parts as usize {
            return None;
        }
        let partial = self.partial.remove(origin)?;
        let mut received: Vec<(u32, Vec<PresenceEntry>)> = partial.received.into_iter().collect();
        received.sort_unstable_by_key(|(index, _)| *index);
        Some(
            received
                .into_iter()
                .flat_map(|(_, entries)| entries)
                .collect(),
        )
    }

    /// Forgets snapshots whose first part came more than `after` ago.
    pub fn expire(&mut self, now: Instant, after: Duration) {
        self.partial
            .retain(|_, p| now.saturating_duration_since(p.started) <= after);
    }
}

impl Partial {
    fn new(snapshot_id: u64, parts: u32, now: Instant) -> Partial {
        Partial {
            snapshot_id,
            parts,
            received: HashMap::new(),
            bytes: 0,
            started: now,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entries(n: usize) -> Vec<PresenceEntry> {
        (0..n)
            .map(|i| PresenceEntry {
                room: format!("room-{i}"),
                user_id: format!("user-{i}"),
                display_name: "someone with a long display name".into(),
            })
            .collect()
    }

    /// Issue 15, report 3: a snapshot of tens of thousands of memberships
    /// goes out in parts that each fit the bound, and comes back whole
    /// whatever order the parts arrive in.
    #[test]
    fn a_big_snapshot_is_split_within_the_bound_and_put_back_together() {
        let all = entries(20_000);
        let max = 64 * 1024;
        let parts = split(all.clone(), 7, max);
        assert!(parts.len() > 1);
        for part in &parts {
            assert!(
                part.encoded_len() + OVERHEAD <= max,
                "{}",
                part.encoded_len()
            );
            assert_eq!(part.parts as usize, parts.len());
        }
        let origin: Arc<str> = Arc::from("a");
        let now = Instant::now();
        let mut assembler = Assembler::default();
        let mut whole = None;
        let mut shuffled = parts.clone();
        shuffled.reverse();
        for part in shuffled {
            assert!(whole.is_none(), "complete before its last part");
            whole = assembler.add(&origin, part, now);
        }
        let mut whole = whole.expect("complete");
        whole.sort_by(|a, b| a.room.cmp(&b.room));
        let mut expected = all;
        expected.sort_by(|a, b| a.room.cmp(&b.room));
        assert_eq!(whole, expected);
    }

    #[test]
    fn an_empty_snapshot_is_one_part() {
        let parts = split(Vec::new(), 1, 1024);
        assert_eq!(parts.len(), 1);
        let mut assembler = Assembler::default();
        let whole = assembler.add(&Arc::from("a"), parts[0].clone(), Instant::now());
        assert_eq!(whole, Some(Vec::new()));
    }

    #[test]
    fn a_newer_snapshot_replaces_an_unfinished_one_and_older_parts_are_dropped() {
        let origin: Arc<str> = Arc::from("a");
        let now = Instant::now();
        let mut assembler = Assembler::default();
        let old = split(entries(50), 1, 1024);
        let new = split(entries(10), 2, 1024);
        assert!(old.len() > 2 && new.len() > 1);
        assert_eq!(assembler.add(&origin, old[0].clone(), now), None);
        // The newer one starts; the old one's parts no longer count.
        assert_eq!(assembler.add(&origin, new[0].clone(), now), None);
        for part in &old[1..] {
            assert_eq!(assembler.add(&origin, part.clone(), now), None);
        }
        let mut whole = None;
        for part in &new[1..] {
            whole = assembler.add(&origin, part.clone(), now);
        }
        assert_eq!(whole.map(|w| w.len()), Some(10));
        // A snapshot from before parts existed is whole by itself.
        let legacy = PresenceSnapshot {
            entries: entries(3),
            ..Default::default()
        };
        assert_eq!(
            assembler.add(&origin, legacy, now).map(|w| w.len()),
            Some(3)
        );
    }

    #[test]
    fn hostile_part_numbers_are_dropped_and_unfinished_snapshots_expire() {
        let origin: Arc<str> = Arc::from("a");
        let now = Instant::now();
        let mut assembler = Assembler::default();
        let claim = |part, parts| PresenceSnapshot {
            entries: entries(1),
            snapshot_id: 9,
            part,
            parts,
        };
        assert_eq!(assembler.add(&origin, claim(0, u32::MAX), now), None);
        assert_eq!(assembler.add(&origin, claim(5, 3), now), None);
        assert!(assembler.partial.is_empty());
        assert_eq!(assembler.add(&origin, claim(0, 3), now), None);
        // The same snapshot claiming another size: dropped altogether.
        assert_eq!(assembler.add(&origin, claim(1, 4), now), None);
        assert!(assembler.partial.is_empty());
        assert_eq!(assembler.add(&origin, claim(0, 3), now), None);
        assembler.expire(now + Duration::from_secs(10), Duration::from_secs(5));
        assert!(assembler.partial.is_empty());
    }

    /// Review: parts bigger than any sender makes, and unfinished
    /// snapshots from ever new origins, are not kept.
    #[test]
    fn oversized_parts_and_too_many_unfinished_snapshots_are_dropped() {
        let now = Instant::now();
        let mut assembler = Assembler::default();
        let huge = PresenceSnapshot {
            entries: entries(5_000),
            snapshot_id: 1,
            part: 0,
            parts: 2,
        };
        assert!(huge.encoded_len() > crate::backplane::MAX_CONTROL_BYTES);
        assert_eq!(assembler.add(&Arc::from("a"), huge, now), None);
        assert!(assembler.partial.is_empty());
        let first = |id| PresenceSnapshot {
            entries: entries(1),
            snapshot_id: id,
            part: 0,
            parts: 2,
        };
        for n in 0..MAX_PARTIALS * 2 {
            let origin: Arc<str> = Arc::from(format!("origin-{n}"));
            assert_eq!(assembler.add(&origin, first(1), now), None);
        }
        assert_eq!(assembler.partial.len(), MAX_PARTIALS);
    }
}
