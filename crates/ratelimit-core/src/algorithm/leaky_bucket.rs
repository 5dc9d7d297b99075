//! Leaky bucket as a meter.
//!
//! Each request pours `cost` units into a bucket of capacity `burst`; the bucket leaks `limit` units per
//! `period`, continuously. A request that would overflow the bucket is denied and pours nothing. The level is
//! kept *scaled by the period* (`level × period`, leaking `limit` per microsecond), so the arithmetic is an
//! exact ratio with no rounding of the rate at all — the one difference from GCRA, whose emission interval is
//! rounded up to a whole microsecond. The price: `burst × period` must stay below 2^53.
//!
//! Worked example, `Quota::per_second(3).burst(3)`: three requests fill the bucket; the fourth must wait for
//! one unit to leak, 333,334 µs (one third of a second, rounded up so the wait is never reported early).
//!
//! ```
//! use ratelimit_core::{Algorithm, LeakyBucket, Quota};
//!
//! let lb = LeakyBucket::new(Quota::per_second(3).build()?)?;
//! let mut state = Default::default();
//! assert!(lb.step(&mut state, 0, 3).allowed());
//! assert_eq!(lb.step(&mut state, 0, 1).retry, 333_334);
//! # Ok::<(), ratelimit_core::QuotaError>(())
//! ```

use crate::algorithm::{div_ceil, Algorithm};
use crate::clock::Micros;
use crate::decision::Status;
use crate::quota::{Quota, QuotaError, MAX_EXACT};

/// A leaky bucket (meter) over a [`Quota`]: capacity `burst`, leaking `limit` per `period`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LeakyBucket {
    quota: Quota,
    /// `burst × period`: the capacity in scaled units.
    capacity: u64,
}

/// [`LeakyBucket`] state. `Default` is an empty bucket.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Hash)]
pub struct LeakState {
    /// The level, in units × period µs.
    pub level: u64,
    /// When the level was last computed.
    pub last: Micros,
}

impl LeakyBucket {
    /// A leaky bucket enforcing `quota`; fails if `burst × period` exceeds 2^53.
    pub fn new(quota: Quota) -> Result<Self, QuotaError> {
        let capacity = match quota.burst().checked_mul(quota.period_micros()) {
            Some(c) if c <= MAX_EXACT => c,
            _ => {
                return Err(QuotaError::ProductTooLarge {
                    algorithm: Self::NAME,
                    limit: quota.burst(),
                    period_micros: quota.period_micros(),
                })
            }
        };
        Ok(LeakyBucket { quota, capacity })
    }

    #[inline]
    fn level_at(&self, s: &LeakState, now: Micros) -> u64 {
        let leaked = now
            .saturating_sub(s.last)
            .saturating_mul(self.quota.limit());
        s.level.saturating_sub(leaked)
    }

    #[inline]
    fn drain_time(&self, level: u64) -> Micros {
        div_ceil(level, self.quota.limit())
    }
}

impl Algorithm for LeakyBucket {
    type State = LeakState;
    const NAME: &'static str = "leaky_bucket";

    fn quota(&self) -> &Quota {
        &self.quota
    }

    fn evaluate(&self, s: &LeakState, now: Micros, cost: u64) -> Status {
        let level = self.level_at(s, now);
        let period = self.quota.period_micros();
        let burst = self.quota.burst();
        let remaining = (self.capacity - level.min(self.capacity)) / period;
        if cost > burst {
            return Status::never_fits(burst, remaining, self.drain_time(level));
        }
        let after = level + cost * period;
        // Cost 0 is a query and always allowed, even while a penalty holds the level above the capacity.
        if cost == 0 || after <= self.capacity {
            Status {
                limit: burst,
                remaining: self.capacity.saturating_sub(after) / period,
                reset: self.drain_time(after),
                retry: 0,
                delay: 0,
            }
        } else {
            Status {
                limit: burst,
                remaining,
                reset: self.drain_time(level),
                retry: self.drain_time(after - self.capacity),
                delay: 0,
            }
        }
    }

    fn commit(&self, s: &mut LeakState, now: Micros, cost: u64) {
        let level = self.level_at(s, now) + cost * self.quota.period_micros();
        *s = if level == 0 {
            LeakState::default()
        } else {
            LeakState { level, last: now }
        };
    }

    fn penalise(&self, s: &mut LeakState, now: Micros, cost: u64) {
        let level = self
            .level_at(s, now)
            .saturating_add(cost.saturating_mul(self.quota.period_micros()))
            .min(2 * self.capacity);
        *s = LeakState { level, last: now };
    }

    fn release(&self, s: &mut LeakState, now: Micros, cost: u64) {
        let level = self
            .level_at(s, now)
            .saturating_sub(cost.saturating_mul(self.quota.period_micros()));
        *s = if level == 0 {
            LeakState::default()
        } else {
            LeakState { level, last: now }
        };
    }

    #[inline]
    fn fresh_at(&self, s: &LeakState) -> Micros {
        if s.level == 0 {
            0
        } else {
            s.last.saturating_add(self.drain_time(s.level))
        }
    }
}
