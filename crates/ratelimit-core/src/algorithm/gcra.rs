//! GCRA, the generic cell rate algorithm.
//!
//! GCRA tracks one number per key, the *theoretical arrival time* (TAT): when the key would be fully rested
//! if every unit admitted so far had been spaced exactly one emission interval `T = period / limit` apart.
//! A request of `cost` units at `now` moves it to `max(TAT, now) + cost × T`; it is admitted if that lands
//! no more than the burst tolerance `τ = burst × T` ahead of `now`. Denied requests leave the TAT alone.
//!
//! Worked example, `Quota::per_second(10).burst(20)` (T = 100 ms, τ = 2 s): an idle key admits 20 requests
//! at t = 0 (TAT reaches 2 s), the 21st at t = 0 is told to retry after 100 ms, and from then on one request
//! per 100 ms passes. Over the first second 30 requests get through (20 + 10) — burst is a capacity, not a
//! per-window cap.
//!
//! ```
//! use ratelimit_core::{Algorithm, Gcra, Quota};
//!
//! let gcra = Gcra::new(Quota::per_second(10).burst(20).build()?);
//! let mut tat = 0;
//! for _ in 0..20 {
//!     assert!(gcra.step(&mut tat, 0, 1).allowed());
//! }
//! let denied = gcra.step(&mut tat, 0, 1);
//! assert_eq!(denied.retry, 100_000);
//! assert!(gcra.step(&mut tat, 100_000, 1).allowed());
//! # Ok::<(), ratelimit_core::QuotaError>(())
//! ```

use crate::algorithm::Algorithm;
use crate::clock::Micros;
use crate::decision::Status;
use crate::quota::Quota;

/// GCRA over a [`Quota`]; see the [module docs](self). State: the TAT in µs (`0` = fresh).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Gcra {
    quota: Quota,
    interval: Micros,
    tau: Micros,
}

impl Gcra {
    /// GCRA enforcing `quota`. Every validated quota is valid for GCRA.
    pub fn new(quota: Quota) -> Self {
        let interval = quota.emission_interval_micros();
        Gcra {
            quota,
            interval,
            tau: quota.burst() * interval,
        }
    }

    #[inline]
    fn remaining(&self, tat_ahead: Micros) -> u64 {
        self.tau.saturating_sub(tat_ahead) / self.interval
    }
}

impl Algorithm for Gcra {
    type State = u64;
    const NAME: &'static str = "gcra";

    fn quota(&self) -> &Quota {
        &self.quota
    }

    #[inline]
    fn evaluate(&self, tat: &u64, now: Micros, cost: u64) -> Status {
        let base = (*tat).max(now);
        let ahead = base - now;
        let burst = self.quota.burst();
        if cost > burst {
            return Status::never_fits(burst, self.remaining(ahead), ahead);
        }
        let new_ahead = ahead + cost * self.interval;
        // Cost 0 is a query and always allowed, even while a penalty holds the key beyond its capacity.
        if cost > 0 && new_ahead > self.tau {
            Status {
                limit: burst,
                remaining: self.remaining(ahead),
                reset: ahead,
                retry: new_ahead - self.tau,
                delay: 0,
            }
        } else {
            Status {
                limit: burst,
                remaining: self.remaining(new_ahead),
                reset: new_ahead,
                retry: 0,
                delay: 0,
            }
        }
    }

    #[inline]
    fn commit(&self, tat: &mut u64, now: Micros, cost: u64) {
        *tat = (*tat).max(now) + cost * self.interval;
    }

    #[inline]
    fn step(&self, tat: &mut u64, now: Micros, cost: u64) -> Status {
        // Fused evaluate + commit: this is the hot path of the in-memory store.
        let status = self.evaluate(tat, now, cost);
        if status.retry == 0 {
            *tat = now + status.reset;
        }
        status
    }

    fn penalise(&self, tat: &mut u64, now: Micros, cost: u64) {
        let charged = (*tat)
            .max(now)
            .saturating_add(cost.saturating_mul(self.interval));
        *tat = charged.min(now + 2 * self.tau);
    }

    fn release(&self, tat: &mut u64, _now: Micros, cost: u64) {
        *tat = tat.saturating_sub(cost.saturating_mul(self.interval));
    }

    #[inline]
    fn fresh_at(&self, tat: &u64) -> Micros {
        *tat
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gcra(limit: u64, burst: u64) -> Gcra {
        Gcra::new(Quota::per_second(limit).burst(burst).build().unwrap())
    }

    #[test]
    fn burst_then_rate() {
        let g = gcra(10, 3);
        let mut s = 0;
        for i in 0..3 {
            let st = Algorithm::step(&g, &mut s, 1_000, 1);
            assert!(st.allowed());
            assert_eq!(st.remaining, 2 - i);
        }
        let st = Algorithm::step(&g, &mut s, 1_000, 1);
        assert_eq!(st.retry, 100_000);
        assert_eq!(st.reset, 300_000);
        assert_eq!(s, 301_000, "denied requests do not move the TAT");
    }

    #[test]
    fn never_when_cost_exceeds_burst() {
        let g = gcra(10, 3);
        let mut s = 0;
        let st = Algorithm::step(&g, &mut s, 0, 4);
        assert!(st.never());
        assert_eq!(st.remaining, 3, "remaining is honest: nothing was used");
        assert_eq!(s, 0);
    }

    #[test]
    fn refund_restores_capacity() {
        let g = gcra(10, 3);
        let mut s = 0;
        Algorithm::step(&g, &mut s, 0, 3);
        Algorithm::release(&g, &mut s, 0, 2);
        assert_eq!(g.evaluate(&s, 0, 0).remaining, 2);
    }
}
