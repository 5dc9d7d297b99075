//! Token bucket.
//!
//! A bucket holds up to `burst` whole tokens; one token drips in every emission interval `T = period /
//! limit`; a request takes `cost` tokens or is denied. The state is the number of *missing* tokens and the
//! time of the last whole-token refill. Refill time advances by whole intervals only, so partial progress
//! towards the next token is never lost (the `aspnetcore-redis-rate-limiting#46` class of bug, where storing
//! `now` on every call stopped the bucket from refilling).
//!
//! Decisions are identical to [`Gcra`](super::Gcra) with the same quota — the test suite proves it on random
//! sequences — so pick by vocabulary; GCRA keeps half the state.
//!
//! Worked example, `Quota::per_minute(60).burst(5)`: five requests at once empty the bucket; the sixth waits
//! one second for the next token; after five idle seconds the bucket is full again.
//!
//! ```
//! use ratelimit_core::{Algorithm, Quota, TokenBucket};
//!
//! let tb = TokenBucket::new(Quota::per_minute(60).burst(5).build()?);
//! let mut state = Default::default();
//! assert!(tb.step(&mut state, 0, 5).allowed());
//! assert_eq!(tb.step(&mut state, 0, 1).retry, 1_000_000);
//! assert_eq!(tb.evaluate(&state, 5_000_000, 0).remaining, 5);
//! # Ok::<(), ratelimit_core::QuotaError>(())
//! ```

use crate::algorithm::Algorithm;
use crate::clock::Micros;
use crate::decision::Status;
use crate::quota::Quota;

/// A token bucket over a [`Quota`]: capacity `burst`, one token per emission interval.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TokenBucket {
    quota: Quota,
    interval: Micros,
}

/// [`TokenBucket`] state. `Default` is a full bucket.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Hash)]
pub struct BucketState {
    /// Tokens missing from a full bucket.
    pub missing: u64,
    /// When the last whole token was added (meaningful only while `missing > 0`).
    pub last: Micros,
}

impl TokenBucket {
    /// A token bucket enforcing `quota`.
    pub fn new(quota: Quota) -> Self {
        TokenBucket {
            quota,
            interval: quota.emission_interval_micros(),
        }
    }

    /// The state refilled up to `now`: (missing tokens, time of last whole refill, progress into the next).
    #[inline]
    fn refill(&self, s: &BucketState, now: Micros) -> (u64, Micros) {
        if s.missing == 0 {
            return (0, now);
        }
        let elapsed = now.saturating_sub(s.last);
        let dripped = elapsed / self.interval;
        if dripped >= s.missing {
            (0, now)
        } else {
            (s.missing - dripped, s.last + dripped * self.interval)
        }
    }

    #[inline]
    fn reset_after(&self, missing: u64, last: Micros, now: Micros) -> Micros {
        if missing == 0 {
            0
        } else {
            (last + missing * self.interval).saturating_sub(now)
        }
    }
}

impl Algorithm for TokenBucket {
    type State = BucketState;
    const NAME: &'static str = "token_bucket";

    fn quota(&self) -> &Quota {
        &self.quota
    }

    fn evaluate(&self, s: &BucketState, now: Micros, cost: u64) -> Status {
        let (missing, last) = self.refill(s, now);
        let capacity = self.quota.burst();
        let tokens = capacity.saturating_sub(missing);
        if cost > capacity {
            return Status::never_fits(capacity, tokens, self.reset_after(missing, last, now));
        }
        if cost <= tokens {
            let after = missing + cost;
            // A full bucket starts dripping from now.
            let last = if missing == 0 { now } else { last };
            Status {
                limit: capacity,
                remaining: tokens - cost,
                reset: self.reset_after(after, last, now),
                retry: 0,
                delay: 0,
            }
        } else {
            // Whole tokens still to drip; more than `cost - tokens` while a penalty left the bucket in debt.
            let short = (missing + cost).saturating_sub(capacity);
            Status {
                limit: capacity,
                remaining: tokens,
                reset: self.reset_after(missing, last, now),
                retry: (last + short * self.interval) - now,
                delay: 0,
            }
        }
    }

    fn commit(&self, s: &mut BucketState, now: Micros, cost: u64) {
        let (missing, last) = self.refill(s, now);
        if cost == 0 {
            *s = if missing == 0 {
                BucketState::default()
            } else {
                BucketState { missing, last }
            };
            return;
        }
        *s = BucketState {
            missing: missing + cost,
            last: if missing == 0 { now } else { last },
        };
    }

    fn penalise(&self, s: &mut BucketState, now: Micros, cost: u64) {
        let (missing, last) = self.refill(s, now);
        let capacity = self.quota.burst();
        // "Missing" beyond capacity is debt: recovery takes at most one more full refill.
        *s = BucketState {
            missing: missing.saturating_add(cost).min(2 * capacity),
            last: if missing == 0 { now } else { last },
        };
    }

    fn release(&self, s: &mut BucketState, now: Micros, cost: u64) {
        let (missing, last) = self.refill(s, now);
        let missing = missing.saturating_sub(cost);
        *s = if missing == 0 {
            BucketState::default()
        } else {
            BucketState { missing, last }
        };
    }

    #[inline]
    fn fresh_at(&self, s: &BucketState) -> Micros {
        if s.missing == 0 {
            0
        } else {
            s.last
                .saturating_add(s.missing.saturating_mul(self.interval))
        }
    }
}
