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

use parking_lot::Mutex;

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
    shards: usize,
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
        let cores = std::thread::available_parallelism().map_or(4, |n| n.get());
        MemoryStoreBuilder {
            max_keys: 1_000_000,
            shards: (cores * 4).next_power_of_two().clamp(4, 256),
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

    /// The number of shards, rounded up to a power of two in 1..=4096. Default: 4 × cores, at least 4.
    pub fn shards(mut self, n: usize) -> Self {
        self.shards = n.clamp(1, 4096).next_power_of_two();
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
        let shard_cap = self.max_keys.div_ceil(self.shards).max(1);
        MemoryStore {
            shards: (0..self.shards)
                .map(|_| Padded(Mutex::new(Shard::new())))
                .collect(),
            shard_shift: 64 - self.shards.trailing_zeros(),
            shard_cap,
            overflow: self.overflow,
            hasher: foldhash::fast::RandomState::default(),
            clock: self.clock,
            _rule: PhantomData,
        }
    }
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
    shard_shift: u32,
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
        // The shard comes from the hash's top bits … but hashbrown also reads the top 7 bits (its control
        // byte), so rotate first: the shard index uses bits that the table uses for neither purpose.
        let idx = if self.shard_shift >= 64 {
            0
        } else {
            (hash.rotate_left(24) >> self.shard_shift) as usize
        };
        &self.shards[idx].0
    }

    /// Checks `cost` for `key` at the clock's current time.
    #[inline]
    pub fn check<Q>(&self, rule: &R, key: &Q, cost: u64) -> Result<Decision, StoreError>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ToOwned<Owned = K> + ?Sized,
    {
        self.check_at(rule, key, cost, self.clock.now())
    }

    /// Checks `cost` for `key` at time `now` (µs on this store's clock).
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
            return Ok(rule.check(state, now, cost));
        }
        let mut state = R::State::default();
        let decision = rule.check(&mut state, now, cost);
        if rule.idle_at(&state) > now {
            self.insert(&mut shard, hash, key.to_owned(), state, rule, now)?;
        }
        Ok(decision)
    }

    #[cold]
    fn make_room(&self, shard: &mut Shard<K, R::State>, rule: &R, now: Micros) -> Result<(), StoreError> {
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
        match shard.table.find(hash, |(k, _)| k.borrow() == key) {
            Some((_, state)) => rule.peek(state, now, cost),
            None => rule.peek(&R::State::default(), now, cost),
        }
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
