//! One shard of the in-memory store: a hash table behind a mutex, with sweeping and eviction.

use hashbrown::HashTable;

use crate::clock::Micros;

/// A shard's table. Entries are `(key, state, idle_at)`-free: whether a state still limits is asked of the
/// rule, so an entry costs only its key and state (16 bytes for a `u64` key under GCRA).
pub(crate) struct Shard<K, S> {
    pub(crate) table: HashTable<(K, S)>,
}

impl<K, S> Shard<K, S> {
    pub(crate) fn new() -> Self {
        Shard {
            table: HashTable::new(),
        }
    }

    /// Drops every entry that no longer limits; shrinks the table when it became mostly empty.
    pub(crate) fn sweep(
        &mut self,
        hasher: impl Fn(&K) -> u64,
        idle_at: impl Fn(&S) -> Micros,
        now: Micros,
    ) -> usize {
        let before = self.table.len();
        self.table.retain(|(_, s)| idle_at(s) > now);
        let removed = before - self.table.len();
        if self.table.capacity() > 64 && self.table.len() < self.table.capacity() / 4 {
            self.table
                .shrink_to(self.table.len() * 2, |(k, _)| hasher(k));
        }
        removed
    }

    /// Moves every entry into a fresh table sized for `capacity` entries (no tombstones left).
    pub(crate) fn rebuild(&mut self, capacity: usize, hasher: impl Fn(&K) -> u64) {
        let mut table = HashTable::with_capacity(capacity.max(self.table.len()));
        for (k, s) in self.table.drain() {
            let h = hasher(&k);
            table.insert_unique(h, (k, s), |(k, _)| hasher(k));
        }
        self.table = table;
    }

    /// Evicts about `n` entries, those that stop limiting soonest (ties may take a few more).
    pub(crate) fn evict_soonest(&mut self, n: usize, idle_at: impl Fn(&S) -> Micros) {
        if n == 0 || self.table.is_empty() {
            return;
        }
        let mut times: Vec<Micros> = self.table.iter().map(|(_, s)| idle_at(s)).collect();
        let n = n.min(times.len());
        let (_, threshold, _) = times.select_nth_unstable(n - 1);
        let threshold = *threshold;
        let mut evicted = 0;
        self.table.retain(|(_, s)| {
            if evicted < n && idle_at(s) <= threshold {
                evicted += 1;
                false
            } else {
                true
            }
        });
    }
}
