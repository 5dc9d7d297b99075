//! Leaky bucket as a queue: a shaper that delays instead of rejecting.
//!
//! Requests leave the shaper one emission interval `T = period / limit` apart. A request that arrives when
//! the schedule is free goes at once (up to `burst` of them back to back); later ones are given a *delay* —
//! the caller sleeps that long, then proceeds — until the delay would exceed `max_delay`, when the request is
//! limited instead. The state is the theoretical arrival time of the end of the queue, as in GCRA; with
//! `max_delay = 0` the shaper makes exactly GCRA's decisions.
//!
//! A reservation is charged when granted. A caller that gives up before its delay has passed should give the
//! slot back with a refund of the same cost ([`Algorithm::release`], or the store's `refund`), which pulls the
//! end of the queue forward by `cost × T`.
//!
//! Worked example, `Quota::per_second(10).burst(1)` with `max_delay` 1 s: requests at t = 0 get delays of
//! 0, 100, 200, … ms; the twelfth (delay 1.1 s) is limited with a retry of 100 ms.
//!
//! ```
//! use std::time::Duration;
//! use ratelimit_core::{Algorithm, Quota, Shaper};
//!
//! let shaper = Shaper::new(Quota::per_second(10).burst(1).build()?, Duration::from_secs(1));
//! let mut tat = 0;
//! let delays: Vec<u64> = (0..11).map(|_| shaper.step(&mut tat, 0, 1).delay).collect();
//! assert_eq!(delays[..3], [0, 100_000, 200_000]);
//! assert_eq!(delays[10], 1_000_000);
//! assert_eq!(shaper.step(&mut tat, 0, 1).retry, 100_000);
//! # Ok::<(), ratelimit_core::QuotaError>(())
//! ```

use std::time::Duration;

use crate::algorithm::Algorithm;
use crate::clock::{duration_to_micros, Micros};
use crate::decision::Status;
use crate::quota::{Quota, MAX_SPAN_MICROS};

/// A shaper (leaky bucket as a queue) over a [`Quota`]; see the [module docs](self).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shaper {
    quota: Quota,
    interval: Micros,
    tau: Micros,
    max_delay: Micros,
}

impl Shaper {
    /// A shaper enforcing `quota`, delaying requests by at most `max_delay` (capped at 2^50 µs).
    pub fn new(quota: Quota, max_delay: Duration) -> Self {
        let interval = quota.emission_interval_micros();
        Shaper {
            quota,
            interval,
            tau: quota.burst() * interval,
            max_delay: duration_to_micros(max_delay).min(MAX_SPAN_MICROS),
        }
    }

    /// The longest delay this shaper grants.
    pub fn max_delay(&self) -> Duration {
        Duration::from_micros(self.max_delay)
    }

    #[inline]
    fn remaining(&self, ahead: Micros) -> u64 {
        self.tau.saturating_sub(ahead) / self.interval
    }
}

impl Algorithm for Shaper {
    type State = u64;
    const NAME: &'static str = "shaper";

    fn quota(&self) -> &Quota {
        &self.quota
    }

    fn evaluate(&self, tat: &u64, now: Micros, cost: u64) -> Status {
        let ahead = (*tat).max(now) - now;
        let burst = self.quota.burst();
        // Even from an empty queue, `cost` units need cost × T − τ of delay.
        if cost.saturating_mul(self.interval) > self.tau + self.max_delay {
            return Status::never_fits(burst, self.remaining(ahead), ahead);
        }
        let new_ahead = ahead + cost * self.interval;
        let delay = new_ahead.saturating_sub(self.tau);
        if delay > self.max_delay {
            Status {
                limit: burst,
                remaining: self.remaining(ahead),
                reset: ahead,
                retry: delay - self.max_delay,
                delay: 0,
            }
        } else {
            Status {
                limit: burst,
                remaining: self.remaining(new_ahead),
                reset: new_ahead,
                retry: 0,
                delay,
            }
        }
    }

    fn commit(&self, tat: &mut u64, now: Micros, cost: u64) {
        *tat = (*tat).max(now) + cost * self.interval;
    }

    fn release(&self, tat: &mut u64, _now: Micros, cost: u64) {
        *tat = tat.saturating_sub(cost.saturating_mul(self.interval));
    }

    #[inline]
    fn fresh_at(&self, tat: &u64) -> Micros {
        *tat
    }
}
