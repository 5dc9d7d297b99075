//! The local deny cache: once Redis says an identity is limited until T, answer locally until T.
//!
//! T is the exact retry time Redis reported (not a fixed block duration), so the cache never denies a
//! request Redis would have admitted on the same clock — except for what other processes refund in the
//! meantime. A cached denial for cost `c` answers only requests of cost ≥ `c`: a smaller request may fit
//! sooner and still goes to Redis. The cache is bounded; when full it drops expired entries, then
//! everything (it only ever saves round trips, never decides alone).
//!
//! It holds only decisions [`script::parse`](super::script::parse) has checked against their policies,
//! and, as a second line of defence, no entry lives longer than the longest wait its policy set can
//! produce, nor is one kept whose values say otherwise: a reply that slipped through could deny an
//! identity for at most what its policies allow, never until the process restarts.
//!
//! # Memory
//!
//! Entries have a fixed size ([`ENTRY_BYTES`]: no heap behind them), each shard holds at most
//! `capacity / 16` (rounded up) of them, and a shard's table never grows past what that many need, so the
//! cache never takes more than [`DenyCache::max_bytes`], whatever the identities it sees.

use std::time::Instant;

use hashbrown::HashMap;
use parking_lot::Mutex;

use crate::clock::Micros;
use crate::decision::{Decision, Status, MAX_POLICIES};

use super::keys::IdentityHash;

const SHARDS: usize = 16;

/// The bytes one entry takes in a shard's table: its key and value (fixed-size, nothing on the heap)
/// and hashbrown's control byte.
pub(crate) const ENTRY_BYTES: usize = std::mem::size_of::<(CacheKey, Entry)>() + 1;

#[derive(Debug, Clone, Copy)]
struct Entry {
    until: Instant,
    at: Instant,
    cost: u64,
    decision: Decision,
}

/// Identity hash + the policy set's id (`script::set_id`).
type CacheKey = (IdentityHash, u64);

#[derive(Debug)]
pub(crate) struct DenyCache {
    shards: Box<[Mutex<HashMap<CacheKey, Entry, foldhash::fast::RandomState>>]>,
    per_shard: usize,
}

impl DenyCache {
    pub(crate) fn new(capacity: usize) -> Self {
        DenyCache {
            shards: (0..SHARDS)
                .map(|_| Mutex::new(HashMap::default()))
                .collect(),
            per_shard: capacity.div_ceil(SHARDS).max(1),
        }
    }

    fn shard(
        &self,
        key: &CacheKey,
    ) -> &Mutex<HashMap<CacheKey, Entry, foldhash::fast::RandomState>> {
        &self.shards[usize::from(key.0[0]) % SHARDS]
    }

    /// A cached denial still in force for `cost`, with its times counted down to `now`.
    pub(crate) fn get(&self, key: &CacheKey, cost: u64, now: Instant) -> Option<Decision> {
        let shard = self.shard(key).lock();
        let e = shard.get(key)?;
        if now >= e.until || cost < e.cost {
            return None;
        }
        let elapsed = u64::try_from(now.duration_since(e.at).as_micros()).unwrap_or(u64::MAX);
        let mut statuses = [Status::default(); MAX_POLICIES];
        let n = e.decision.statuses().len();
        for (s, old) in statuses.iter_mut().zip(e.decision.statuses()) {
            *s = Status {
                reset: old.reset.saturating_sub(elapsed),
                retry: if old.retry == 0 || old.retry == Status::NEVER {
                    old.retry
                } else {
                    old.retry.saturating_sub(elapsed).max(1)
                },
                ..*old
            };
        }
        Some(Decision::combine(&statuses[..n]))
    }

    /// Remembers a limited decision, taken at `at`, of a policy set whose longest wait is `max_wait` µs
    /// ([`script::max_wait`](super::script::max_wait)): for its retry, and never longer than `max_wait`.
    /// A decision whose values exceed `max_wait` is not one the set can produce, and is not kept.
    pub(crate) fn insert(
        &self,
        key: CacheKey,
        cost: u64,
        decision: Decision,
        at: Instant,
        max_wait: Micros,
    ) {
        let retry = decision.binding().retry;
        if retry == 0 || retry == Status::NEVER {
            return;
        }
        let plausible = decision.statuses().iter().all(|s| {
            s.remaining <= s.limit && s.reset <= max_wait && (s.never() || s.retry <= max_wait)
        });
        if !plausible {
            tracing::debug!(
                ?decision,
                max_wait,
                "not caching a denial its policies cannot produce"
            );
            return;
        }
        let until = at + std::time::Duration::from_micros(retry.min(max_wait));
        let mut shard = self.shard(&key).lock();
        if shard.len() >= self.per_shard && !shard.contains_key(&key) {
            shard.retain(|_, e| e.until > at);
            if shard.len() >= self.per_shard {
                shard.clear();
            }
        }
        shard.insert(
            key,
            Entry {
                until,
                at,
                cost,
                decision,
            },
        );
    }

    /// The most bytes the entries of this cache can take: each shard holds at most `capacity / 16`
    /// (rounded up) fixed-size entries, in a table of at most [`DenyCache::table_slots`] slots.
    // Not read outside the tests yet: the store reports no memory figures.
    #[allow(dead_code)]
    pub(crate) fn max_bytes(&self) -> usize {
        SHARDS * Self::table_slots(self.per_shard) * ENTRY_BYTES
    }

    /// The most slots a hashbrown table holding at most `entries` grows to: a power of two kept 1/8
    /// free (under 16/7 slots per entry), doubled at most once more when removed entries' tombstones
    /// fill it, plus its control group's bytes.
    fn table_slots(entries: usize) -> usize {
        32 * entries / 7 + 2 * 16
    }

    /// The bytes the shards' tables take now.
    #[cfg(test)]
    fn allocated_bytes(&self) -> usize {
        self.shards.iter().map(|s| s.lock().allocation_size()).sum()
    }

    /// Forgets an identity (after a refund or reset).
    pub(crate) fn remove(&self, key: &CacheKey) {
        self.shard(key).lock().remove(key);
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::super::reply::LONGEST_WAIT_OF_ANY_POLICY;
    use super::*;

    fn denial(retry: Micros, reset: Micros) -> Decision {
        Decision::single(Status {
            limit: 100,
            remaining: 0,
            reset,
            retry,
            delay: 0,
        })
    }

    fn key(i: u64) -> CacheKey {
        let mut hash = [0u8; 16];
        hash[..8].copy_from_slice(&i.to_le_bytes());
        hash[8..].copy_from_slice(&i.wrapping_mul(0x9e37_79b9_7f4a_7c15).to_le_bytes());
        (hash, 7)
    }

    /// The incident's denial (retry and reset 2^63 − 1 µs) is not kept, even through the insert that
    /// does not know the policy set: no policy produces it.
    #[test]
    fn the_incident_denial_is_never_cached() {
        let cache = DenyCache::new(100);
        let at = Instant::now();
        let bogus = denial(i64::MAX as u64, i64::MAX as u64);
        cache.insert(key(1), 1, bogus, at, LONGEST_WAIT_OF_ANY_POLICY);
        assert_eq!(cache.get(&key(1), 1, at + Duration::from_secs(1)), None);
        cache.insert(key(2), 1, bogus, at, 2_000_000);
        assert_eq!(cache.get(&key(2), 1, at), None);
    }

    /// An entry answers for its retry and never beyond its set's longest wait; one that claims longer
    /// is not kept at all.
    #[test]
    fn an_entry_never_outlives_its_bound() {
        let cache = DenyCache::new(100);
        let at = Instant::now();
        let max_wait = 2_000_000;
        cache.insert(key(1), 1, denial(1_500_000, 2_000_000), at, max_wait);
        let d = cache.get(&key(1), 1, at + Duration::from_secs(1)).unwrap();
        assert_eq!(d.binding().retry, 500_000);
        assert_eq!(
            cache.get(&key(1), 1, at + Duration::from_millis(1_500)),
            None
        );
        cache.insert(key(2), 1, denial(2_000_001, 0), at, max_wait);
        cache.insert(key(3), 1, denial(1, 2_000_001), at, max_wait);
        assert_eq!(cache.get(&key(2), 1, at), None);
        assert_eq!(cache.get(&key(3), 1, at), None);
        // Whatever a kept entry says, it is gone once the bound has passed.
        for retry in [1, 999_999, 2_000_000] {
            cache.insert(key(4), 1, denial(retry, retry), at, max_wait);
            assert!(cache.get(&key(4), 1, at).is_some());
            assert_eq!(
                cache.get(&key(4), 1, at + Duration::from_micros(max_wait)),
                None
            );
        }
    }

    /// Bounded in bytes: fixed-size entries, and however many identities go through it (with removals
    /// leaving tombstones), its tables never take more than `max_bytes`, itself linear in the capacity.
    #[test]
    fn bounded_in_bytes_whatever_it_sees() {
        const { assert!(ENTRY_BYTES <= 512, "a deny-cache entry grew past 512 bytes") };
        for capacity in [1, 16, 100, 1_000, 5_000] {
            let cache = DenyCache::new(capacity);
            let at = Instant::now();
            for i in 0..(capacity as u64 * 20).max(2_000) {
                cache.insert(key(i), 1, denial(1_000_000, 1_000_000), at, 2_000_000);
                if i % 3 == 0 {
                    cache.remove(&key(i / 2));
                }
                assert!(
                    cache.allocated_bytes() <= cache.max_bytes(),
                    "capacity {capacity}: {} > {} after {i}",
                    cache.allocated_bytes(),
                    cache.max_bytes()
                );
            }
            // Linear in the capacity: at most 5 slots per entry plus a small table per shard.
            let per_shard = capacity.div_ceil(SHARDS);
            assert!(cache.max_bytes() <= SHARDS * (5 * per_shard + 32) * ENTRY_BYTES);
        }
    }
}
