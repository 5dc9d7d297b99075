//! Sliding window log: an exact rolling limit.
//!
//! The log remembers when each admitted request happened and what it cost; a request is admitted if the
//! costs logged within the last `period` plus its own stay within `limit`. Only admitted requests are
//! logged (an attacker hammering a limited key adds nothing), and a request's cost is stored as one entry,
//! not one entry per unit, with same-microsecond entries merged. Since every entry holds at least one unit
//! and the live entries hold at most `limit` units, a key never holds more than `limit` entries: memory is
//! O(limit) per key (16 bytes an entry) whatever the traffic.
//!
//! Worked example, `Quota::per_minute(3)`: requests at 0 s, 10 s and 20 s pass; one at 30 s is told to
//! retry at 60 s, when the first leaves the window.
//!
//! ```
//! use ratelimit_core::{Algorithm, Quota, SlidingLog};
//!
//! let log = SlidingLog::new(Quota::per_minute(3).build()?)?;
//! let mut state = Default::default();
//! for t in [0, 10, 20] {
//!     assert!(log.step(&mut state, t * 1_000_000, 1).allowed());
//! }
//! assert_eq!(log.step(&mut state, 30_000_000, 1).retry, 30_000_000);
//! assert!(log.step(&mut state, 60_000_000, 1).allowed());
//! # Ok::<(), ratelimit_core::QuotaError>(())
//! ```

use std::collections::VecDeque;

use crate::algorithm::Algorithm;
use crate::clock::Micros;
use crate::decision::Status;
use crate::quota::{check_no_burst, Quota, QuotaError};

/// A sliding window log over a [`Quota`]: at most `limit` units in any `period`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SlidingLog {
    quota: Quota,
}

/// [`SlidingLog`] state: admitted `(time, cost)` entries, oldest first, and their total.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct LogState {
    entries: VecDeque<(Micros, u64)>,
    used: u64,
}

impl LogState {
    /// The logged `(time µs, cost)` entries, oldest first (some may have expired since the last check).
    pub fn entries(&self) -> impl ExactSizeIterator<Item = (Micros, u64)> + '_ {
        self.entries.iter().copied()
    }

    /// Builds a state from `(time, cost)` entries, oldest first (for stores that persist the log).
    pub fn from_entries(entries: impl IntoIterator<Item = (Micros, u64)>) -> Self {
        let entries: VecDeque<_> = entries.into_iter().filter(|e| e.1 > 0).collect();
        let used = entries.iter().map(|e| e.1).sum();
        LogState { entries, used }
    }
}

impl SlidingLog {
    /// A sliding log enforcing `quota`; a `burst` other than the limit is rejected.
    pub fn new(quota: Quota) -> Result<Self, QuotaError> {
        check_no_burst(Self::NAME, &quota)?;
        Ok(SlidingLog { quota })
    }

    /// Units logged before the window that ends at `now`, and how many entries hold them.
    #[inline]
    fn expired(&self, s: &LogState, now: Micros) -> (usize, u64) {
        let period = self.quota.period_micros();
        let mut n = 0;
        let mut units = 0;
        for &(ts, cost) in &s.entries {
            if ts + period > now {
                break;
            }
            n += 1;
            units += cost;
        }
        (n, units)
    }

    fn prune(&self, s: &mut LogState, now: Micros) {
        let (n, units) = self.expired(s, now);
        s.entries.drain(..n);
        s.used -= units;
    }
}

impl Algorithm for SlidingLog {
    type State = LogState;
    const NAME: &'static str = "sliding_log";

    fn quota(&self) -> &Quota {
        &self.quota
    }

    fn evaluate(&self, s: &LogState, now: Micros, cost: u64) -> Status {
        let limit = self.quota.limit();
        let period = self.quota.period_micros();
        let (skip, expired) = self.expired(s, now);
        let used = s.used - expired;
        let remaining = limit.saturating_sub(used);
        let newest = s.entries.back().map(|e| e.0);
        let reset = match newest {
            Some(ts) if used > 0 => ts + period - now,
            _ => 0,
        };
        if cost > limit {
            return Status::never_fits(limit, remaining, reset);
        }
        if cost <= remaining {
            return Status {
                limit,
                remaining: remaining - cost,
                reset: if cost > 0 { period } else { reset },
                retry: 0,
                delay: 0,
            };
        }
        // Wait until enough of the oldest entries have left the window.
        let excess = used + cost - limit;
        let mut freed = 0;
        let mut retry = period;
        for &(ts, c) in s.entries.iter().skip(skip) {
            freed += c;
            if freed >= excess {
                retry = ts + period - now;
                break;
            }
        }
        Status {
            limit,
            remaining,
            reset,
            retry,
            delay: 0,
        }
    }

    fn commit(&self, s: &mut LogState, now: Micros, cost: u64) {
        self.prune(s, now);
        if cost == 0 {
            return;
        }
        match s.entries.back_mut() {
            Some(last) if last.0 == now => last.1 += cost,
            _ => s.entries.push_back((now, cost)),
        }
        s.used += cost;
    }

    fn release(&self, s: &mut LogState, now: Micros, mut cost: u64) {
        self.prune(s, now);
        while cost > 0 {
            let Some(last) = s.entries.back_mut() else {
                break;
            };
            let take = last.1.min(cost);
            last.1 -= take;
            s.used -= take;
            cost -= take;
            if last.1 == 0 {
                s.entries.pop_back();
            }
        }
        if s.entries.is_empty() {
            s.entries = VecDeque::new();
        }
    }

    #[inline]
    fn fresh_at(&self, s: &LogState) -> Micros {
        s.entries
            .back()
            .map_or(0, |e| e.0.saturating_add(self.quota.period_micros()))
    }
}
