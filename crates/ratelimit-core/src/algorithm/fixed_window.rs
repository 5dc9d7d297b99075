//! Fixed window.
//!
//! Time is cut into windows of `period`, aligned on the clock's origin (with [`SystemClock`] and on Redis:
//! the Unix epoch, so a per-minute window starts on the minute). Each window admits `limit` units; the count
//! starts again at zero in the next window.
//!
//! **Boundary behaviour, by design:** a client can spend the whole limit at the end of one window and again
//! at the start of the next, so up to `2 × limit` units pass within one `period` that straddles the
//! boundary. The test `fixed_window_admits_twice_the_limit_across_a_boundary` pins this down. Use the sliding
//! log for an exact rolling limit.
//!
//! Worked example, `Quota::per_minute(100)`: 100 requests at 12:00:59 pass, the 101st is told to retry in 1 s,
//! and 100 more pass at 12:01:00.
//!
//! [`SystemClock`]: crate::SystemClock
//!
//! ```
//! use ratelimit_core::{Algorithm, FixedWindow, Quota};
//!
//! let fw = FixedWindow::new(Quota::per_minute(100).build()?)?;
//! let mut state = Default::default();
//! let t = 59_000_000; // 59 s into the first window
//! assert!(fw.step(&mut state, t, 100).allowed());
//! assert_eq!(fw.step(&mut state, t, 1).retry, 1_000_000);
//! assert!(fw.step(&mut state, 60_000_000, 100).allowed());
//! # Ok::<(), ratelimit_core::QuotaError>(())
//! ```

use crate::algorithm::Algorithm;
use crate::clock::Micros;
use crate::decision::Status;
use crate::quota::{check_no_burst, Quota, QuotaError};

/// A fixed window over a [`Quota`]: `limit` units per aligned `period`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FixedWindow {
    quota: Quota,
}

/// [`FixedWindow`] state. `Default` is an unused window.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Hash)]
pub struct WindowState {
    /// Start of the window `count` belongs to.
    pub start: Micros,
    /// Units charged in that window.
    pub count: u64,
}

impl FixedWindow {
    /// A fixed window enforcing `quota`; a `burst` other than the limit is rejected.
    pub fn new(quota: Quota) -> Result<Self, QuotaError> {
        check_no_burst(Self::NAME, &quota)?;
        Ok(FixedWindow { quota })
    }

    #[inline]
    fn window(&self, s: &WindowState, now: Micros) -> (Micros, u64) {
        let period = self.quota.period_micros();
        let start = now - now % period;
        (start, if s.start == start { s.count } else { 0 })
    }
}

impl Algorithm for FixedWindow {
    type State = WindowState;
    const NAME: &'static str = "fixed_window";

    fn quota(&self) -> &Quota {
        &self.quota
    }

    fn evaluate(&self, s: &WindowState, now: Micros, cost: u64) -> Status {
        let limit = self.quota.limit();
        let (start, count) = self.window(s, now);
        let end = start + self.quota.period_micros() - now;
        let remaining = limit.saturating_sub(count);
        let reset = |count: u64| if count == 0 { 0 } else { end };
        if cost > limit {
            return Status::never_fits(limit, remaining, reset(count));
        }
        if cost <= remaining {
            Status {
                limit,
                remaining: remaining - cost,
                reset: reset(count + cost),
                retry: 0,
                delay: 0,
            }
        } else {
            Status {
                limit,
                remaining,
                reset: reset(count),
                retry: end,
                delay: 0,
            }
        }
    }

    fn commit(&self, s: &mut WindowState, now: Micros, cost: u64) {
        let (start, count) = self.window(s, now);
        *s = if count + cost == 0 {
            WindowState::default()
        } else {
            WindowState {
                start,
                count: count + cost,
            }
        };
    }

    fn penalise(&self, s: &mut WindowState, now: Micros, cost: u64) {
        // A penalised window stays exhausted until it ends; a fixed window cannot hold debt beyond that.
        let (start, count) = self.window(s, now);
        *s = WindowState {
            start,
            count: count.saturating_add(cost).min(self.quota.limit()),
        };
    }

    fn release(&self, s: &mut WindowState, now: Micros, cost: u64) {
        let (start, count) = self.window(s, now);
        let count = count.saturating_sub(cost);
        *s = if count == 0 {
            WindowState::default()
        } else {
            WindowState { start, count }
        };
    }

    #[inline]
    fn fresh_at(&self, s: &WindowState) -> Micros {
        if s.count == 0 {
            0
        } else {
            s.start.saturating_add(self.quota.period_micros())
        }
    }
}
