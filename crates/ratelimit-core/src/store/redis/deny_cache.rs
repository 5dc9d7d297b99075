//! The local deny cache: once Redis says an identity is limited until T, answer locally until T.
//!
//! T is the exact retry time Redis reported (not a fixed block duration), so the cache never denies a
//! request Redis would have admitted on the same clock — except for what other processes refund in the
//! meantime. A cached denial for cost `c` answers only requests of cost ≥ `c`: a smaller request may fit
//! sooner and still goes to Redis. The cache is bounded; when full it drops expired entries, then
//! everything (it only ever saves round trips, never decides alone).

use std::time::Instant;

use hashbrown::HashMap;
use parking_lot::Mutex;

use crate::decision::{Decision, Status, MAX_POLICIES};

use super::keys::IdentityHash;

const SHARDS: usize = 16;

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

    /// Remembers a limited decision, taken at `at`.
    pub(crate) fn insert(&self, key: CacheKey, cost: u64, decision: Decision, at: Instant) {
        let retry = decision.binding().retry;
        if retry == 0 || retry == Status::NEVER {
            return;
        }
        let until = at + std::time::Duration::from_micros(retry);
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

    /// Forgets an identity (after a refund or reset).
    pub(crate) fn remove(&self, key: &CacheKey) {
        self.shard(key).lock().remove(key);
    }
}
