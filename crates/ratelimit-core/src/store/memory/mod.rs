//! The in-memory store: concurrent, exact, bounded.
//!
//! Keys are spread over shards, each a hash table behind its own mutex; a check locks one shard, reads and
//! updates the key's state, and unlocks — so checks on one key are serialised (exact under any concurrency)
//! and checks on different keys rarely meet. Lookups take a borrowed key (`&str` for a `String` key, `&u64`,
//! `&IpAddr`), and a key is copied into the table only when it first needs state: a request that is denied
//! or only peeks at an unseen key stores nothing.
//!
//! # Bounded memory
//!
//! The store holds at most `max_keys` keys (default 1,000,000; rounded up to a multiple of the shard count,
//! and each shard holds its share). Nobody has to spawn a sweeper:
//!
//! * state that no longer limits — its [`idle_at`](crate::Rule::idle_at) has passed, so it is
//!   indistinguishable from a fresh key — is swept out of a shard whenever that shard would otherwise grow
//!   its table or reach its cap, and tables shrink again when mostly empty;
//! * when a shard is at its cap **and every key in it is still limiting**, the [`Overflow`] policy decides:
//!   [`Overflow::EvictSoonest`] (the default) evicts the 1/16 of the shard's keys that would stop limiting
//!   soonest — those keys are forgiven early, the only way the store admits more than its rules say — while
//!   [`Overflow::Reject`] refuses the new key with [`StoreError::Full`] and keeps every existing key exact.
//!   Choose `Reject` when over-admission is worse than refusing newcomers; under a flood of fresh keys
//!   (random API keys, spoofed addresses) it also means the flood cannot push out real clients' state.
//!
//! [`MemoryStore::len`] counts keys; [`MemoryStore::sweep`] sweeps every shard now.
//!
//! ```
//! use ratelimit_core::{Gcra, ManualClock, MemoryStore, Quota};
//! use std::time::Duration;
//!
//! let clock = ManualClock::default();
//! let store = MemoryStore::<u64, Gcra>::builder().max_keys(1_000).clock(clock.clone()).build();
//! let rule = Gcra::new(Quota::per_second(10).build()?);
//! for user in 0..100u64 {
//!     store.check(&rule, &user, 1)?;
//! }
//! assert_eq!(store.len(), 100);
//! clock.advance(Duration::from_secs(1)); // every key is full again
//! store.sweep(&rule);
//! assert_eq!(store.len(), 0);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod shard;

use std::borrow::Borrow;
use std::hash::{BuildHasher, Hash};
use std::marker::PhantomData;

use parking_lot::{Mutex, MutexGuard};

use self::shard::Shard;
use crate::algorithm::Rule;
use crate::clock::{Clock, Micros, SystemClock};
use crate::decision::Decision;
use crate::store::{Store, StoreError};

/// What the in-memory store does when a shard is full of keys that are all still limiting.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Overflow {
    /// Evict the keys that stop limiting soonest (they are forgiven early). The default.
    #[default]
    EvictSoonest,
    /// Refuse the new key with [`StoreError::Full`]; existing keys stay exact.
    Reject,
}

/// Builds a [`MemoryStore`].
#[must_use]
pub struct MemoryStoreBuilder<K, R, C = SystemClock> {
    max_keys: usize,
    /// `None`: chosen by [`shard_layout`] from the core count and `max_keys`.
    shards: Option<usize>,
    overflow: Overflow,
    clock: C,
    _types: PhantomData<fn() -> (K, R)>,
}

impl<K, R, C: std::fmt::Debug> std::fmt::Debug for MemoryStoreBuilder<K, R, C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryStoreBuilder")
            .field("max_keys", &self.max_keys)
            .field("shards", &self.shards)
            .field("overflow", &self.overflow)
            .field("clock", &self.clock)
            .finish()
    }
}

impl<K, R> MemoryStoreBuilder<K, R, SystemClock> {
    fn new() -> Self {
        MemoryStoreBuilder {
            max_keys: 1_000_000,
            shards: None,
            overflow: Overflow::default(),
            clock: SystemClock::new(),
            _types: PhantomData,
        }
    }
}

impl<K: Hash + Eq, R: Rule, C: Clock> MemoryStoreBuilder<K, R, C> {
    /// The most keys the store holds (at least one per shard). Default 1,000,000.
    pub fn max_keys(mut self, n: usize) -> Self {
        self.max_keys = n.max(1);
        self
    }

    /// The number of shards, rounded up to a power of two in 1..=4096. Default: about 4 × cores (at least
    /// 4), adjusted so that each shard's table is densely filled when the store is full.
    pub fn shards(mut self, n: usize) -> Self {
        self.shards = Some(n.clamp(1, 4096).next_power_of_two());
        self
    }

    /// What to do when full of active keys; see [`Overflow`].
    pub fn overflow(mut self, overflow: Overflow) -> Self {
        self.overflow = overflow;
        self
    }

    /// The clock (default [`SystemClock`]); use a [`ManualClock`](crate::ManualClock) in tests.
    pub fn clock<C2: Clock>(self, clock: C2) -> MemoryStoreBuilder<K, R, C2> {
        MemoryStoreBuilder {
            max_keys: self.max_keys,
            shards: self.shards,
            overflow: self.overflow,
            clock,
            _types: PhantomData,
        }
    }

    /// Builds the store.
    pub fn build(self) -> MemoryStore<K, R, C> {
        let shards = match self.shards {
            Some(n) => n,
            None => {
                let cores = std::thread::available_parallelism().map_or(4, |n| n.get());
                shard_layout(self.max_keys, (cores * 4).next_power_of_two().clamp(4, 256))
            }
        };
        let shard_cap = self.max_keys.div_ceil(shards).max(1);
        MemoryStore {
            shards: (0..shards)
                .map(|_| Padded(Mutex::new(Shard::new())))
                .collect(),
            shard_count: shards as u64,
            shard_cap,
            overflow: self.overflow,
            hasher: foldhash::fast::RandomState::default(),
            clock: self.clock,
            _rule: PhantomData,
        }
    }
}

/// How many shards to use for `max_keys` keys, starting from `base` shards.
///
/// A shard's table has a power-of-two number of buckets and holds at most 7/8 of them, so with `base`
/// shards a full store can sit at barely more than half load (1,000,000 keys over 8 shards need 125,000
/// per shard: 262,144 buckets each, 17 bytes a bucket for a `u64` key and GCRA state, 36 bytes a key). A
/// few more shards, so that each shard's share just fits the power of two below, make the full tables
/// dense (9 shards of 111,112 keys fit 131,072 buckets each: 20 bytes a key). The count stays within
/// `base..=2 × base`; small stores keep `base`.
fn shard_layout(max_keys: usize, base: usize) -> usize {
    let per = max_keys.div_ceil(base);
    if per < 1_024 {
        return base;
    }
    // The bucket count a share of `per` keys needs, and the table capacity one power of two below it.
    let needed = (per.saturating_mul(8) / 7 + 1).next_power_of_two();
    let below = needed / 2 / 8 * 7;
    max_keys.div_ceil(below).clamp(base, base * 2)
}

/// Keeps each shard's lock on its own cache line, so two threads on two shards do not share one.
#[repr(align(128))]
struct Padded<T>(T);

type Shards<K, S> = Box<[Padded<Mutex<Shard<K, S>>>]>;

/// The in-memory store; see the [module docs](self).
///
/// `K` is the owned key type, `R` the rule whose state it holds (`Gcra`, `PolicySet`, …), `C` the clock.
/// The inherent methods are synchronous; the [`Store`] implementation wraps them in ready futures.
pub struct MemoryStore<K, R: Rule, C = SystemClock> {
    shards: Shards<K, R::State>,
    shard_count: u64,
    shard_cap: usize,
    overflow: Overflow,
    hasher: foldhash::fast::RandomState,
    clock: C,
    _rule: PhantomData<fn(&R)>,
}

impl<K, R: Rule, C> std::fmt::Debug for MemoryStore<K, R, C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryStore")
            .field("shards", &self.shards.len())
            .field("max_keys", &(self.shard_cap * self.shards.len()))
            .field("overflow", &self.overflow)
            .finish_non_exhaustive()
    }
}

impl<K: Hash + Eq, R: Rule> MemoryStore<K, R> {
    /// A store with the defaults: 1,000,000 keys, [`Overflow::EvictSoonest`], [`SystemClock`].
    pub fn new() -> Self {
        MemoryStoreBuilder::new().build()
    }

    /// A builder for a store of this key and rule type.
    pub fn builder() -> MemoryStoreBuilder<K, R> {
        MemoryStoreBuilder::new()
    }
}

impl<K: Hash + Eq, R: Rule> Default for MemoryStore<K, R> {
    fn default() -> Self {
        Self::new()
    }
}

impl<K: Hash + Eq, R: Rule, C: Clock> MemoryStore<K, R, C> {
    #[inline]
    fn shard_of(&self, hash: u64) -> &Mutex<Shard<K, R::State>> {
        // One hash serves both the shard and the table. hashbrown indexes buckets with the low bits and
        // tags them with the top 7, so the shard comes from bits 24..56, which it uses for neither (unless
        // a shard's table exceeds 2^24 buckets): a multiply-shift maps them onto any shard count, not only
        // powers of two, and the index is always in range.
        let idx = (((hash >> 24) & 0xFFFF_FFFF) * self.shard_count) >> 32;
        &self.shards[idx as usize].0
    }

    /// Checks `cost` for `key` at the clock's current time.
    #[inline(always)]
    pub fn check<Q>(&self, rule: &R, key: &Q, cost: u64) -> Result<Decision, StoreError>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ToOwned<Owned = K> + ?Sized,
    {
        self.check_at(rule, key, cost, self.clock.now())
    }

    /// Checks `cost` for `key` at time `now` (µs on this store's clock).
    #[inline(always)]
    pub fn check_at<Q>(
        &self,
        rule: &R,
        key: &Q,
        cost: u64,
        now: Micros,
    ) -> Result<Decision, StoreError>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ToOwned<Owned = K> + ?Sized,
    {
        let hash = self.hasher.hash_one(key);
        let mut shard = self.shard_of(hash).lock();
        if let Some((_, state)) = shard.table.find_mut(hash, |(k, _)| k.borrow() == key) {
            let decision = rule.check(state, now, cost);
            // Unlock before the decision (about 330 bytes) is moved into the result: the unlock is an
            // atomic that waits for the stores before it, so the copy must not sit in the critical section.
            drop(shard);
            return Ok(decision);
        }
        self.check_new(shard, hash, rule, key, cost, now)
    }

    /// [`MemoryStore::check_at`] for a key that holds no state: kept out of line so the hot path of a
    /// known key stays small enough to inline.
    #[inline(never)]
    fn check_new<Q>(
        &self,
        mut shard: MutexGuard<'_, Shard<K, R::State>>,
        hash: u64,
        rule: &R,
        key: &Q,
        cost: u64,
        now: Micros,
    ) -> Result<Decision, StoreError>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ToOwned<Owned = K> + ?Sized,
    {
        let mut state = R::State::default();
        let decision = rule.check(&mut state, now, cost);
        if rule.idle_at(&state) > now {
            self.insert(&mut shard, hash, key.to_owned(), state, rule, now)?;
        }
        Ok(decision)
    }

    #[cold]
    fn make_room(
        &self,
        shard: &mut Shard<K, R::State>,
        rule: &R,
        now: Micros,
    ) -> Result<(), StoreError> {
        let hasher = |k: &K| self.hasher.hash_one(k);
        shard.sweep(hasher, |s| rule.idle_at(s), now);
        if shard.table.len() >= self.shard_cap {
            match self.overflow {
                Overflow::Reject => {
                    return Err(StoreError::Full {
                        max_keys: self.shard_cap * self.shards.len(),
                    })
                }
                Overflow::EvictSoonest => {
                    let n = (self.shard_cap / 16).max(1);
                    shard.evict_soonest(n, |s| rule.idle_at(s));
                    tracing::debug!(evicted = n, "in-memory rate-limit store full of active keys; evicted the soonest to expire");
                }
            }
        }
        Ok(())
    }

    fn insert(
        &self,
        shard: &mut Shard<K, R::State>,
        hash: u64,
        key: K,
        state: R::State,
        rule: &R,
        now: Micros,
    ) -> Result<(), StoreError> {
        let len = shard.table.len();
        if len >= self.shard_cap || len == shard.table.capacity() {
            // Either full, or about to grow: first drop what no longer limits.
            self.make_room(shard, rule, now)?;
            let len = shard.table.len();
            if len == shard.table.capacity() && len >= self.shard_cap / 2 {
                // Still no room: either the table must grow, or removals left it full of tombstones,
                // and hashbrown would then double a table that already holds the shard's cap. Rebuild it
                // at the size the cap needs instead, so a full store never holds more than that.
                shard.rebuild(self.shard_cap, |k| self.hasher.hash_one(k));
            }
        }
        let hasher = |k: &K| self.hasher.hash_one(k);
        shard
            .table
            .insert_unique(hash, (key, state), |(k, _)| hasher(k));
        Ok(())
    }

    /// What [`MemoryStore::check`] would answer, without charging or storing anything.
    pub fn peek<Q>(&self, rule: &R, key: &Q, cost: u64) -> Decision
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let now = self.clock.now();
        let hash = self.hasher.hash_one(key);
        let shard = self.shard_of(hash).lock();
        if let Some((_, state)) = shard.table.find(hash, |(k, _)| k.borrow() == key) {
            let decision = rule.peek(state, now, cost);
            drop(shard);
            return decision;
        }
        drop(shard);
        rule.peek(&R::State::default(), now, cost)
    }

    /// Gives back `cost` units charged earlier to `key`.
    pub fn refund<Q>(&self, rule: &R, key: &Q, cost: u64)
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let now = self.clock.now();
        let hash = self.hasher.hash_one(key);
        let mut shard = self.shard_of(hash).lock();
        if let Ok(mut entry) = shard.table.find_entry(hash, |(k, _)| k.borrow() == key) {
            rule.refund(&mut entry.get_mut().1, now, cost);
            if rule.idle_at(&entry.get().1) <= now {
                entry.remove();
            }
        }
    }

    /// Forgets `key`.
    pub fn reset<Q>(&self, key: &Q)
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let hash = self.hasher.hash_one(key);
        let mut shard = self.shard_of(hash).lock();
        if let Ok(entry) = shard.table.find_entry(hash, |(k, _)| k.borrow() == key) {
            entry.remove();
        }
    }

    /// The number of keys held (including any whose state has expired but not been swept yet).
    pub fn len(&self) -> usize {
        self.shards.iter().map(|s| s.0.lock().table.len()).sum()
    }

    /// Whether no key is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The most keys this store holds.
    pub fn max_keys(&self) -> usize {
        self.shard_cap * self.shards.len()
    }

    /// Sweeps every shard now, dropping state that no longer limits; returns how many keys were dropped.
    /// Never required (the store sweeps as it grows), but useful before measuring or after a traffic spike.
    pub fn sweep(&self, rule: &R) -> usize {
        let now = self.clock.now();
        self.shards
            .iter()
            .map(|s| {
                s.0.lock()
                    .sweep(|k| self.hasher.hash_one(k), |st| rule.idle_at(st), now)
            })
            .sum()
    }

    /// The store's clock.
    pub fn clock(&self) -> &C {
        &self.clock
    }
}

impl<K, Q, R, C> Store<Q, R> for MemoryStore<K, R, C>
where
    K: Borrow<Q> + Hash + Eq + Send + Sync,
    Q: Hash + Eq + ToOwned<Owned = K> + ?Sized + Sync,
    R: Rule,
    C: Clock,
{
    fn check(
        &self,
        rule: &R,
        key: &Q,
        cost: u64,
    ) -> impl std::future::Future<Output = Result<Decision, StoreError>> + Send {
        std::future::ready(MemoryStore::check(self, rule, key, cost))
    }

    /// Always answers: the in-memory store never waits, whatever its clock.
    #[inline(always)]
    fn check_now(&self, rule: &R, key: &Q, cost: u64) -> Option<Result<Decision, StoreError>> {
        Some(MemoryStore::check(self, rule, key, cost))
    }

    fn peek(
        &self,
        rule: &R,
        key: &Q,
        cost: u64,
    ) -> impl std::future::Future<Output = Result<Decision, StoreError>> + Send {
        std::future::ready(Ok(MemoryStore::peek(self, rule, key, cost)))
    }

    fn refund(
        &self,
        rule: &R,
        key: &Q,
        cost: u64,
    ) -> impl std::future::Future<Output = Result<(), StoreError>> + Send {
        MemoryStore::refund(self, rule, key, cost);
        std::future::ready(Ok(()))
    }

    fn reset(
        &self,
        _rule: &R,
        key: &Q,
    ) -> impl std::future::Future<Output = Result<(), StoreError>> + Send {
        MemoryStore::reset(self, key);
        std::future::ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::{Gcra, ManualClock, Quota};

    #[test]
    fn shard_layout_fills_tables_densely_at_the_cap() {
        // 1,000,000 keys: 9 shards of 111,112 fit 131,072-bucket tables (capacity 114,688), where 8 shards of
        // 125,000 would need 262,144 buckets each.
        assert_eq!(shard_layout(1_000_000, 8), 9);
        for (max_keys, base) in [
            (1_000_000, 8),
            (1_100_000, 8),
            (2_000_000, 16),
            (50_000, 4),
            (123_457, 8),
        ] {
            let n = shard_layout(max_keys, base);
            assert!((base..=2 * base).contains(&n), "{max_keys}/{base}: {n}");
            let per = max_keys.div_ceil(n);
            let buckets = (per * 8 / 7 + 1).next_power_of_two();
            assert!(
                per * 2 > buckets / 8 * 7 / 2,
                "{max_keys}/{base}: {per} keys a shard leave a {buckets}-bucket table under half full"
            );
        }
        // Small stores keep the base count.
        assert_eq!(shard_layout(1_000, 8), 8);
    }

    #[test]
    fn shard_index_is_in_range_for_any_count() {
        for n in [1u64, 3, 9, 10, 4096] {
            let store = MemoryStore::<u64, Gcra>::builder().build();
            let store = MemoryStore {
                shard_count: n,
                shards: (0..n).map(|_| Padded(Mutex::new(Shard::new()))).collect(),
                ..store
            };
            for h in [0, u64::MAX, 1 << 55, 0xFFFF_FFFF << 24, 12345] {
                let _ = store.shard_of(h);
            }
        }
    }

    /// Churn at the cap (every key active, so each newcomer evicts) leaves tombstones behind; the table must
    /// be rebuilt at the cap's size rather than doubled.
    #[test]
    fn a_full_shard_under_churn_never_outgrows_its_cap() {
        let clock = ManualClock::new(0);
        let store = MemoryStore::<u64, Gcra, _>::builder()
            .max_keys(3_000)
            .shards(1)
            .clock(clock.clone())
            .build();
        let rule = Gcra::new(Quota::per_hour(1).build().unwrap());
        for k in 0..3_000u64 {
            store.check(&rule, &k, 1).unwrap();
            clock.advance_micros(1);
        }
        let full = store.shards[0].0.lock().table.allocation_size();
        for k in 3_000..200_000u64 {
            store.check(&rule, &k, 1).unwrap();
            clock.advance_micros(1);
            assert!(store.len() <= 3_000);
        }
        assert_eq!(store.shards[0].0.lock().table.allocation_size(), full);
    }
}
