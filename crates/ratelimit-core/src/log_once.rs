//! Logging a repeated condition once, not once per request.
//!
//! During an outage or with one bad key, the same failure repeats for every request; one line says it,
//! the `metrics` counters count it. A condition that lasts is said again at most once per
//! [`LASTING_PROBLEM_REMINDER_INTERVAL`], with how many times it happened meanwhile, so it stays visible
//! in the logs without flooding them.
//!
//! ```
//! use ratelimit_core::log_once::LogOnce;
//!
//! const TIMEOUT: usize = 0;
//! let logs = LogOnce::<2>::new();
//! for _ in 0..1_000 {
//!     if let Some(unlogged) = logs.occurred(TIMEOUT) {
//!         // Once now, then at most once a minute with the count since.
//!         eprintln!("Redis timed out ({unlogged} more since the last line)");
//!     }
//! }
//! ```

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// How long a repeated condition stays quiet after being logged.
pub const LASTING_PROBLEM_REMINDER_INTERVAL: Duration = Duration::from_secs(60);

/// One throttled log line per slot (a kind of failure, say); shared by reference among callers.
#[derive(Debug)]
pub struct LogOnce<const N: usize> {
    origin: Instant,
    slots: [Slot; N],
}

#[derive(Debug, Default)]
struct Slot {
    /// Micros since `origin` (plus one) at which this slot last logged; 0 = never.
    logged_at: AtomicU64,
    /// Occurrences since the last line.
    since: AtomicU64,
}

impl<const N: usize> Default for LogOnce<N> {
    fn default() -> Self {
        Self::new()
    }
}

impl<const N: usize> LogOnce<N> {
    /// `N` slots, none logged yet.
    pub fn new() -> Self {
        LogOnce {
            origin: Instant::now(),
            slots: std::array::from_fn(|_| Slot::default()),
        }
    }

    /// Records one occurrence in `slot`: `Some(n)` when it should be logged now (`n` occurrences went
    /// unlogged since the last line), `None` to stay quiet.
    pub fn occurred(&self, slot: usize) -> Option<u64> {
        let s = self.slots.get(slot)?;
        let now = u64::try_from(self.origin.elapsed().as_micros())
            .unwrap_or(u64::MAX)
            .saturating_add(1);
        let last = s.logged_at.load(Ordering::Relaxed);
        let interval =
            u64::try_from(LASTING_PROBLEM_REMINDER_INTERVAL.as_micros()).unwrap_or(u64::MAX);
        let due = last == 0 || now.saturating_sub(last) >= interval;
        if due
            && s.logged_at
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            return Some(s.since.swap(0, Ordering::Relaxed));
        }
        s.since.fetch_add(1, Ordering::Relaxed);
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_occurrence_is_logged_and_repeats_are_counted() {
        let log = LogOnce::<2>::new();
        assert_eq!(log.occurred(0), Some(0));
        for _ in 0..1000 {
            assert_eq!(log.occurred(0), None);
        }
        assert_eq!(log.occurred(1), Some(0), "each slot on its own");
        assert_eq!(log.occurred(7), None, "no such slot: quiet");
    }
}
