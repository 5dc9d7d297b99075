//! Hybrid mode: local admission from leases of quota taken from Redis, so most checks cost no round trip.
//!
//! An instance that sees a request for an identity asks Redis — with the ordinary atomic check — for a
//! *lease* of `lease` units instead of the request's cost. If Redis grants it, the request is admitted and
//! the rest of the lease is kept in process for at most `lease_ttl`: the next requests of that identity are
//! admitted locally until the lease runs out or expires, then a new lease is taken. When Redis cannot grant
//! a whole lease (the quota is nearly spent) the request is checked on its own cost, exactly, as without
//! hybrid mode, and so are that identity's requests for the next `lease_ttl` (no second round trip per
//! request while the quota is spent). One lease per identity and instance is held at a time; requests that arrive while it is
//! being fetched are checked exactly.
//!
//! # Error bound
//!
//! Redis charges a lease when it grants it, so Redis's own accounting is never exceeded; what moves is
//! *when* units are used: up to `lease_ttl` after they were charged. In any span of time, the units used are
//! those Redis charged in that span, plus what instances still held from leases taken earlier — at most
//! `lease − 1` per instance (a lease is taken for a request of cost ≥ 1). With `N` instances:
//!
//! > admitted in any span ≤ what the policy set admits in that span + `N × (lease − 1)`
//!
//! For a sliding log of `limit` per `period`, any rolling period admits at most `limit + N × (lease − 1)`.
//! The test `hybrid_over_admission_stays_within_the_bound` measures it. The other side: units leased but not
//! used before the lease expires are not given back, so a quiet instance can leave up to `N × (lease − 1)`
//! units unused per `lease_ttl` (under-admission), and the remaining quota reported for a local admission is
//! Redis's remaining at the lease plus the units left in the lease (approximate).
//!
//! Policy sets with a penalising policy, and costs of at least `lease`, always go to Redis.
//!
//! # Cancellation and memory
//!
//! A check dropped while its lease is being fetched leaves nothing behind: the identity's "being
//! fetched" mark is removed with it (the lease Redis may still grant is lost — under-admission, as for
//! an unused lease), so the next check fetches a lease again. The lease table holds at most
//! [`max_leases`](HybridStore::max_leases) identities, each as a 16-byte hash of the key, so its memory
//! is bounded whatever the keys' length.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use hashbrown::HashMap;
use parking_lot::Mutex;

use crate::clock::{duration_to_micros, Clock, Micros, SystemClock};
use crate::decision::{Decision, Status, MAX_POLICIES};
use crate::policy::{Policy, PolicySet};
use crate::store::{Store, StoreError};

use super::keys::{hash_identity, IdentityHash};
use super::RedisStore;

// Held is large (it carries a Decision) but leases are few and short-lived; boxing would cost an
// allocation per lease on the path hybrid mode exists to make cheap.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, Copy)]
enum Lease {
    /// Being fetched by the task holding `ticket` (see [`Fetching`]); others check exactly.
    Pending { ticket: u64 },
    /// Redis could not grant a whole lease: check exactly until `until` (µs), without asking for leases
    /// (which would cost a second round trip per request while the quota is spent).
    Exhausted { until: Micros },
    /// Units left, valid until `until` (µs on the store's clock), and the decision Redis gave.
    Held {
        left: u64,
        until: Micros,
        decision: Decision,
    },
}

impl Lease {
    /// Whether this entry still says something at `now` (an expired one is the same as none).
    fn live(&self, now: Micros) -> bool {
        match self {
            Lease::Pending { .. } => true,
            Lease::Exhausted { until } | Lease::Held { until, .. } => *until > now,
        }
    }
}

/// An identity (hashed: a fixed 16 bytes whatever the key's length) under one policy set.
type LeaseId = (IdentityHash, u64);
type LeaseMap = HashMap<LeaseId, Lease, foldhash::fast::RandomState>;

/// When the table is full of live entries, this share of it is dropped at once, so a flood of new
/// identities costs one scan per `max_leases / EVICTED_SHARE_WHEN_FULL` of them, not one per request.
const EVICTED_SHARE_WHEN_FULL: usize = 16;

/// The default for [`HybridStore::max_leases`].
const DEFAULT_MAX_LEASES: usize = 100_000;

/// A [`RedisStore`] that admits most requests locally from leases; see the [module docs](self).
pub struct HybridStore {
    redis: RedisStore,
    lease: u64,
    ttl: Micros,
    clock: Arc<dyn Clock>,
    leases: Mutex<LeaseMap>,
    max_leases: usize,
    /// Tells one fetch's `Pending` mark from another's for the same identity (after a reset or an
    /// eviction let a second fetch start).
    tickets: AtomicU64,
}

impl std::fmt::Debug for HybridStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HybridStore")
            .field("lease", &self.lease)
            .field("lease_ttl_micros", &self.ttl)
            .field("max_leases", &self.max_leases)
            .finish_non_exhaustive()
    }
}

impl HybridStore {
    /// Leases of `lease` units (at least 2 to be useful), kept at most `lease_ttl`, on the system clock.
    pub fn new(redis: RedisStore, lease: u64, lease_ttl: Duration) -> Self {
        Self::with_clock(redis, lease, lease_ttl, SystemClock::new())
    }

    /// The same, with lease expiry on `clock` (tests use a [`ManualClock`](crate::ManualClock)).
    pub fn with_clock(
        redis: RedisStore,
        lease: u64,
        lease_ttl: Duration,
        clock: impl Clock,
    ) -> Self {
        HybridStore {
            redis,
            lease: lease.max(1),
            ttl: duration_to_micros(lease_ttl),
            clock: Arc::new(clock),
            leases: Mutex::new(HashMap::default()),
            max_leases: DEFAULT_MAX_LEASES,
            tickets: AtomicU64::new(0),
        }
    }

    /// The most identities that hold lease state at once (default 100,000; at least 1). The table's
    /// memory is bounded by this count whatever the identities' length: an identity is kept as a 16-byte
    /// hash. When it is full of live entries, 1/16 of them are dropped — their unused leased units are
    /// lost (under-admission, never over) — and if every entry is a fetch in flight, the request is
    /// checked exactly.
    ///
    /// ```
    /// # async fn f(redis: ratelimit_core::RedisStore) {
    /// use std::time::Duration;
    /// use ratelimit_core::store::redis::HybridStore;
    /// let hybrid = HybridStore::new(redis, 10, Duration::from_millis(100)).max_leases(10_000);
    /// # let _ = hybrid; }
    /// ```
    #[must_use]
    pub fn max_leases(mut self, n: usize) -> Self {
        self.max_leases = n.max(1);
        self
    }

    /// The underlying Redis store.
    pub fn redis(&self) -> &RedisStore {
        &self.redis
    }

    /// What the lease table holds now (one pass over it: a diagnostic, not for the request path).
    ///
    /// ```
    /// # async fn f(redis: ratelimit_core::RedisStore) {
    /// use std::time::Duration;
    /// use ratelimit_core::store::redis::HybridStore;
    /// let hybrid = HybridStore::new(redis, 10, Duration::from_millis(100));
    /// let stats = hybrid.lease_stats();
    /// assert_eq!(stats.fetching, 0, "no check in flight");
    /// # }
    /// ```
    pub fn lease_stats(&self) -> LeaseStats {
        let leases = self.leases.lock();
        let mut stats = LeaseStats {
            entries: leases.len(),
            fetching: 0,
            table_bytes: leases.allocation_size(),
        };
        stats.fetching = leases
            .values()
            .filter(|l| matches!(l, Lease::Pending { .. }))
            .count();
        stats
    }

    async fn check_bytes(
        &self,
        set: &PolicySet,
        key: &[u8],
        cost: u64,
    ) -> Result<Decision, StoreError> {
        if cost == 0 || cost >= self.lease || set.policies().iter().any(Policy::penalises) {
            return Store::<[u8], PolicySet>::check(&self.redis, set, key, cost).await;
        }
        let id = (hash_identity(key), super::script::set_id(set));
        let fetching = match self.local(id, cost) {
            Local::Admit(decision) => return Ok(decision),
            Local::Exact => {
                return Store::<[u8], PolicySet>::check(&self.redis, set, key, cost).await
            }
            Local::Fetch(fetching) => fetching,
        };
        let leased = Store::<[u8], PolicySet>::check(&self.redis, set, key, self.lease).await;
        match leased {
            Ok(d) if d.is_allowed() => {
                let left = self.lease - cost;
                let until = self.clock.now().saturating_add(self.ttl);
                fetching.settle(Some(Lease::Held {
                    left,
                    until,
                    decision: d,
                }));
                Ok(local_decision(&d, left))
            }
            // No whole lease left: this request is checked exactly on its own cost, and so are the next
            // ones for a lease lifetime.
            Ok(_) => {
                let until = self.clock.now().saturating_add(self.ttl);
                fetching.settle(Some(Lease::Exhausted { until }));
                Store::<[u8], PolicySet>::check(&self.redis, set, key, cost).await
            }
            Err(e) => {
                fetching.settle(None);
                Err(e)
            }
        }
    }

    /// What the lease table says about a check of `cost` on `id` (deciding under the lock; the caller
    /// awaits after it is released).
    fn local(&self, id: LeaseId, cost: u64) -> Local<'_> {
        let now = self.clock.now();
        let mut leases = self.leases.lock();
        let known = match leases.get_mut(&id) {
            Some(Lease::Held {
                left,
                until,
                decision,
            }) if *until > now && *left >= cost => {
                *left -= cost;
                return Local::Admit(local_decision(decision, *left));
            }
            Some(Lease::Pending { .. }) => return Local::Exact,
            Some(Lease::Exhausted { until }) if *until > now => return Local::Exact,
            // Spent or expired: replaced in place.
            Some(_) => true,
            None => false,
        };
        if known || self.has_room(&mut leases, now) {
            return Local::Fetch(self.mark_fetching(&mut leases, id));
        }
        metrics::counter!("ratelimit_hybrid_lease_table_full_total").increment(1);
        Local::Exact
    }

    /// Marks `id` as being fetched by the caller; the mark goes when the returned guard does.
    fn mark_fetching<'a>(&'a self, leases: &mut LeaseMap, id: LeaseId) -> Fetching<'a> {
        let ticket = self.tickets.fetch_add(1, Ordering::Relaxed);
        set_or_insert(leases, id, Lease::Pending { ticket });
        Fetching {
            leases: &self.leases,
            id,
            ticket,
        }
    }

    /// Whether a new identity may be added: below the cap, after dropping expired entries, or after
    /// evicting a share of the live ones. Keeps the table's allocation at what the cap needs.
    fn has_room(&self, leases: &mut LeaseMap, now: Micros) -> bool {
        if leases.len() >= self.max_leases {
            leases.retain(|_, l| l.live(now));
        }
        if leases.len() >= self.max_leases {
            let mut evict =
                leases.len() + 1 - self.max_leases + self.max_leases / EVICTED_SHARE_WHEN_FULL;
            leases.retain(|_, l| {
                let drop = evict > 0 && !matches!(l, Lease::Pending { .. });
                evict -= usize::from(drop);
                !drop
            });
            tracing::debug!(
                max_leases = self.max_leases,
                "hybrid lease table full of live leases; evicted a share of them"
            );
        }
        if leases.len() == leases.capacity() && leases.len() >= self.max_leases / 2 {
            // No growth left, from entries or from removals' tombstones: hashbrown would double a table
            // that already holds about the cap. Rebuild it at the cap's size instead.
            let mut fresh = LeaseMap::with_capacity_and_hasher(self.max_leases, *leases.hasher());
            fresh.extend(leases.drain());
            *leases = fresh;
        }
        leases.len() < self.max_leases
    }
}

/// Sets `id`'s entry in place when it exists: `HashMap::insert` reserves room for one more entry even
/// when it replaces one, and would double a table with no growth room left (see
/// [`HybridStore::has_room`]).
fn set_or_insert(leases: &mut LeaseMap, id: LeaseId, lease: Lease) {
    match leases.get_mut(&id) {
        Some(slot) => *slot = lease,
        None => {
            leases.insert(id, lease);
        }
    }
}

/// A snapshot of a [`HybridStore`]'s lease table, from [`HybridStore::lease_stats`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct LeaseStats {
    /// Identities with lease state (held, exhausted or being fetched; expired ones until swept).
    pub entries: usize,
    /// Leases being fetched right now (one per check waiting for its lease).
    pub fetching: usize,
    /// The bytes the table has allocated (its buckets; identities are kept as fixed-size hashes).
    pub table_bytes: usize,
}

/// What a check can do without Redis. Returned once per check and matched at once: boxing the decision
/// would cost an allocation per locally admitted request, the path hybrid mode exists to make cheap.
#[allow(clippy::large_enum_variant)]
enum Local<'a> {
    /// Admitted from the held lease.
    Admit(Decision),
    /// Check exactly on Redis (a lease is being fetched, or none can be had for now).
    Exact,
    /// Fetch a lease; the guard marks it as being fetched.
    Fetch(Fetching<'a>),
}

/// The mark that one check is fetching an identity's lease. Dropped unsettled — the check was cancelled
/// while waiting for Redis — it removes the mark, so the identity's next check fetches a lease again
/// instead of every later check going to Redis. Only its own mark: a reset or an eviction may have let
/// another fetch mark the identity since.
struct Fetching<'a> {
    leases: &'a Mutex<LeaseMap>,
    id: LeaseId,
    ticket: u64,
}

impl Fetching<'_> {
    /// Replaces the mark with what the fetch learned (`None`: nothing, e.g. Redis failed).
    fn settle(self, lease: Option<Lease>) {
        let mut leases = self.leases.lock();
        if self.is_mine(&leases) {
            match lease {
                Some(lease) => set_or_insert(&mut leases, self.id, lease),
                None => {
                    leases.remove(&self.id);
                }
            }
        }
        drop(leases);
        std::mem::forget(self);
    }

    fn is_mine(&self, leases: &LeaseMap) -> bool {
        matches!(leases.get(&self.id), Some(Lease::Pending { ticket }) if *ticket == self.ticket)
    }
}

impl Drop for Fetching<'_> {
    fn drop(&mut self) {
        let mut leases = self.leases.lock();
        if self.is_mine(&leases) {
            leases.remove(&self.id);
        }
    }
}

/// Redis's decision at the lease, with the leased units still held counted as remaining.
fn local_decision(lease: &Decision, left: u64) -> Decision {
    let mut statuses = [Status::default(); MAX_POLICIES];
    let n = lease.statuses().len();
    for (s, l) in statuses.iter_mut().zip(lease.statuses()) {
        *s = Status {
            remaining: l.remaining.saturating_add(left).min(l.limit),
            ..*l
        };
    }
    Decision::combine(&statuses[..n])
}

impl Store<[u8], PolicySet> for HybridStore {
    fn check(
        &self,
        rule: &PolicySet,
        key: &[u8],
        cost: u64,
    ) -> impl std::future::Future<Output = Result<Decision, StoreError>> + Send {
        self.check_bytes(rule, key, cost)
    }

    fn peek(
        &self,
        rule: &PolicySet,
        key: &[u8],
        cost: u64,
    ) -> impl std::future::Future<Output = Result<Decision, StoreError>> + Send {
        Store::<[u8], PolicySet>::peek(&self.redis, rule, key, cost)
    }

    fn refund(
        &self,
        rule: &PolicySet,
        key: &[u8],
        cost: u64,
    ) -> impl std::future::Future<Output = Result<(), StoreError>> + Send {
        Store::<[u8], PolicySet>::refund(&self.redis, rule, key, cost)
    }

    fn refund_detached(&self, rule: &PolicySet, key: &[u8], cost: u64) {
        Store::<[u8], PolicySet>::refund_detached(&self.redis, rule, key, cost);
    }

    fn reset(
        &self,
        rule: &PolicySet,
        key: &[u8],
    ) -> impl std::future::Future<Output = Result<(), StoreError>> + Send {
        self.leases
            .lock()
            .remove(&(hash_identity(key), super::script::set_id(rule)));
        Store::<[u8], PolicySet>::reset(&self.redis, rule, key)
    }
}

impl Store<str, PolicySet> for HybridStore {
    fn check(
        &self,
        rule: &PolicySet,
        key: &str,
        cost: u64,
    ) -> impl std::future::Future<Output = Result<Decision, StoreError>> + Send {
        self.check_bytes(rule, key.as_bytes(), cost)
    }

    fn peek(
        &self,
        rule: &PolicySet,
        key: &str,
        cost: u64,
    ) -> impl std::future::Future<Output = Result<Decision, StoreError>> + Send {
        Store::<[u8], PolicySet>::peek(&self.redis, rule, key.as_bytes(), cost)
    }

    fn refund(
        &self,
        rule: &PolicySet,
        key: &str,
        cost: u64,
    ) -> impl std::future::Future<Output = Result<(), StoreError>> + Send {
        Store::<[u8], PolicySet>::refund(&self.redis, rule, key.as_bytes(), cost)
    }

    fn refund_detached(&self, rule: &PolicySet, key: &str, cost: u64) {
        Store::<[u8], PolicySet>::refund_detached(&self.redis, rule, key.as_bytes(), cost);
    }

    fn reset(
        &self,
        rule: &PolicySet,
        key: &str,
    ) -> impl std::future::Future<Output = Result<(), StoreError>> + Send {
        Store::<[u8], PolicySet>::reset(self, rule, key.as_bytes())
    }
}
