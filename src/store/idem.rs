//! The in-memory index of idempotency claims, owned by the writer thread.
//!
//! Claims are stored in `idem_keys`, keyed by `(expires_at, sha256)`: the window is one config
//! value, so new claims land at the right edge of that B-tree and pruning reads it from the
//! front. Looking a key up needs its `expires_at`, which this index gives: the first 8 bytes of
//! the hash -> the expiry times of the claims with that prefix (nearly always one). A prefix
//! match is only a candidate; the row `(expires_at, full hash)` decides.
//!
//! It costs 17 to 34 bytes per stored claim (16 per entry plus the hash map's control byte and
//! spare capacity; about 34 MB at a million) and is rebuilt from the table's keys at start-up.
//! Keyed by the hash itself, the table would put every claim in a random leaf, and each commit
//! would rewrite one leaf per keyed webhook.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

/// The prefixes are already uniformly distributed (sha256), so the map uses them as they are.
#[derive(Default)]
pub struct PrefixHasher(u64);

impl Hasher for PrefixHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        // Only `write_u64` is used by a `u64` key; fold anything else in, for completeness.
        for &b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(b);
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

type PrefixMap<V> = HashMap<u64, V, BuildHasherDefault<PrefixHasher>>;

#[derive(Default)]
pub struct IdemIndex {
    /// prefix -> the expiry of one claim with it.
    first: PrefixMap<u64>,
    /// prefix -> the expiries of further claims sharing it (2^-64 per pair: practically empty).
    more: PrefixMap<Vec<u64>>,
}

/// One change to the index, so a batch whose commit fails can be undone.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Change {
    Added([u8; 32], u64),
    Removed([u8; 32], u64),
}

fn prefix(hash: &[u8; 32]) -> u64 {
    let mut p = [0u8; 8];
    p.copy_from_slice(&hash[..8]);
    u64::from_le_bytes(p)
}

impl IdemIndex {
    #[cfg(test)]
    fn len(&self) -> usize {
        self.first.len() + self.more.values().map(Vec::len).sum::<usize>()
    }

    /// The expiry times of the claims whose hash starts like `hash`.
    pub fn candidates(&self, hash: &[u8; 32]) -> impl Iterator<Item = u64> + '_ {
        let p = prefix(hash);
        let more = self.more.get(&p).map(Vec::as_slice).unwrap_or_default();
        self.first
            .get(&p)
            .copied()
            .into_iter()
            .chain(more.iter().copied())
    }

    pub fn insert(&mut self, hash: &[u8; 32], expires_at: u64) {
        let p = prefix(hash);
        match self.first.entry(p) {
            std::collections::hash_map::Entry::Vacant(v) => {
                v.insert(expires_at);
            }
            std::collections::hash_map::Entry::Occupied(_) => {
                self.more.entry(p).or_default().push(expires_at)
            }
        }
    }

    /// Forgets one claim (`hash`'s prefix at `expires_at`); false if it was not there.
    pub fn remove(&mut self, hash: &[u8; 32], expires_at: u64) -> bool {
        let p = prefix(hash);
        if let Some(more) = self.more.get_mut(&p)
            && let Some(i) = more.iter().position(|&at| at == expires_at)
        {
            more.swap_remove(i);
            if more.is_empty() {
                self.more.remove(&p);
            }
            return true;
        }
        if self.first.get(&p) == Some(&expires_at) {
            // Promote a further claim, if any, so `first` always holds one when `more` does.
            match self.more.get_mut(&p).and_then(Vec::pop) {
                Some(next) => {
                    self.first.insert(p, next);
                    if self.more.get(&p).is_some_and(Vec::is_empty) {
                        self.more.remove(&p);
                    }
                }
                None => {
                    self.first.remove(&p);
                }
            }
            return true;
        }
        false
    }

    /// Applies `change`, recording it in `undo`.
    pub fn apply(&mut self, change: Change, undo: &mut Vec<Change>) {
        match change {
            Change::Added(hash, at) => self.insert(&hash, at),
            Change::Removed(hash, at) => {
                if !self.remove(&hash, at) {
                    return;
                }
            }
        }
        undo.push(change);
    }

    /// Reverts the changes in `undo` (newest first), after a commit that failed.
    pub fn revert(&mut self, undo: &mut Vec<Change>) {
        while let Some(change) = undo.pop() {
            match change {
                Change::Added(hash, at) => {
                    self.remove(&hash, at);
                }
                Change::Removed(hash, at) => self.insert(&hash, at),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hash(first: u8, rest: u8) -> [u8; 32] {
        let mut h = [rest; 32];
        h[..8].copy_from_slice(&[first; 8]);
        h
    }

    #[test]
    fn claims_sharing_a_prefix_are_all_candidates_and_removed_one_by_one() {
        let mut index = IdemIndex::default();
        let (a, b, c) = (hash(1, 1), hash(1, 2), hash(1, 3));
        index.insert(&a, 10);
        index.insert(&b, 20);
        index.insert(&c, 30);
        index.insert(&hash(2, 1), 40);
        assert_eq!(index.len(), 4);
        let mut found: Vec<u64> = index.candidates(&a).collect();
        found.sort();
        assert_eq!(found, vec![10, 20, 30]);
        assert_eq!(index.candidates(&hash(2, 9)).collect::<Vec<_>>(), vec![40]);
        assert_eq!(index.candidates(&hash(3, 1)).count(), 0);

        assert!(
            index.remove(&a, 10),
            "the one in `first` goes; a further one moves up"
        );
        let mut found: Vec<u64> = index.candidates(&b).collect();
        found.sort();
        assert_eq!(found, vec![20, 30]);
        assert!(!index.remove(&a, 10), "already gone");
        assert!(index.remove(&c, 30));
        assert!(index.remove(&b, 20));
        assert_eq!(index.candidates(&a).count(), 0);
        assert!(index.more.is_empty() && index.first.len() == 1);
    }

    #[test]
    fn a_failed_batch_is_reverted_exactly() {
        let mut index = IdemIndex::default();
        let (a, b) = (hash(1, 1), hash(1, 2));
        index.insert(&a, 10);
        let mut undo = Vec::new();
        index.apply(Change::Removed(a, 10), &mut undo);
        index.apply(Change::Added(a, 50), &mut undo);
        index.apply(Change::Added(b, 60), &mut undo);
        index.apply(Change::Removed(b, 999), &mut undo); // not there: nothing to undo
        assert_eq!(undo.len(), 3);
        index.revert(&mut undo);
        assert!(undo.is_empty());
        assert_eq!(index.candidates(&a).collect::<Vec<_>>(), vec![10]);
        assert_eq!(index.len(), 1);
    }
}
