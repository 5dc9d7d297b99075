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
    /// Being fetched by one task; others check exactly.
    Pending,
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

/// A [`RedisStore`] that admits most requests locally from leases; see the [module docs](self).
pub struct HybridStore {
    redis: RedisStore,
    lease: u64,
    ttl: Micros,
    clock: Arc<dyn Clock>,
    leases: Mutex<HashMap<(IdentityHash, u64), Lease, foldhash::fast::RandomState>>,
    max_leases: usize,
}

impl std::fmt::Debug for HybridStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HybridStore")
            .field("lease", &self.lease)
            .field("lease_ttl_micros", &self.ttl)
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
            max_leases: 100_000,
        }
    }

    /// The underlying Redis store.
    pub fn redis(&self) -> &RedisStore {
        &self.redis
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
        let now = self.clock.now();
        // Decide under the lock, act (await) after it is released.
        let local = {
            let mut leases = self.leases.lock();
            match leases.get_mut(&id) {
                Some(Lease::Held {
                    left,
                    until,
                    decision,
                }) if *until > now && *left >= cost => {
                    *left -= cost;
                    Some(Some(local_decision(decision, *left)))
                }
                Some(Lease::Pending) => Some(None),
                Some(Lease::Exhausted { until }) if *until > now => Some(None),
                _ => {
                    if leases.len() >= self.max_leases {
                        leases
                            .retain(|_, l| matches!(l, Lease::Held { until, .. } if *until > now));
                    }
                    leases.insert(id, Lease::Pending);
                    None
                }
            }
        };
        match local {
            Some(Some(decision)) => return Ok(decision),
            Some(None) => {
                return Store::<[u8], PolicySet>::check(&self.redis, set, key, cost).await
            }
            None => {}
        }
        let leased = Store::<[u8], PolicySet>::check(&self.redis, set, key, self.lease).await;
        let result = match leased {
            Ok(d) if d.is_allowed() => {
                let left = self.lease - cost;
                let until = self.clock.now().saturating_add(self.ttl);
                self.leases.lock().insert(
                    id,
                    Lease::Held {
                        left,
                        until,
                        decision: d,
                    },
                );
                return Ok(local_decision(&d, left));
            }
            // No whole lease left: this request is checked exactly on its own cost, and so are the next
            // ones for a lease lifetime.
            Ok(_) => {
                let until = self.clock.now().saturating_add(self.ttl);
                self.leases.lock().insert(id, Lease::Exhausted { until });
                return Store::<[u8], PolicySet>::check(&self.redis, set, key, cost).await;
            }
            Err(e) => Err(e),
        };
        self.leases.lock().remove(&id);
        result
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

    fn reset(
        &self,
        rule: &PolicySet,
        key: &str,
    ) -> impl std::future::Future<Output = Result<(), StoreError>> + Send {
        Store::<[u8], PolicySet>::reset(self, rule, key.as_bytes())
    }
}
