//! Time, injected.
//!
//! Every decision in this crate is a pure function of a state, a cost and a point in time. The point in time
//! comes from a [`Clock`], so tests can drive time by hand ([`ManualClock`]) and production code reads a
//! monotonic clock ([`SystemClock`]). Time is an integer count of **microseconds** ([`Micros`]): fine enough
//! for sub-millisecond rates, and small enough that a Unix-epoch timestamp stays exact in a Lua double
//! (2^53 µs is 285 years), which is what lets the Redis scripts reproduce these decisions bit for bit.
//!
//! ```
//! use std::time::Duration;
//! use ratelimit_core::{Clock, ManualClock};
//!
//! let clock = ManualClock::new(1_000);
//! clock.advance(Duration::from_millis(5));
//! assert_eq!(clock.now(), 6_000);
//! ```

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// A point in time or a span of time, in microseconds.
pub type Micros = u64;

/// Microseconds in one second.
pub const MICROS_PER_SEC: Micros = 1_000_000;

/// Converts a [`Duration`] to whole microseconds, saturating at `u64::MAX`.
#[inline]
pub fn duration_to_micros(d: Duration) -> Micros {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

/// A monotonic source of time in microseconds.
///
/// Implementations must never go backwards: a decision taken at `t` and a later one at `t' < t` would see
/// time reversed and could refill a bucket twice. Resolution should be one microsecond or better.
pub trait Clock: Send + Sync + 'static {
    /// The current time in microseconds since this clock's origin.
    fn now(&self) -> Micros;
}

impl<C: Clock + ?Sized> Clock for Arc<C> {
    #[inline]
    fn now(&self) -> Micros {
        (**self).now()
    }
}

impl<C: Clock + ?Sized> Clock for &'static C {
    #[inline]
    fn now(&self) -> Micros {
        (**self).now()
    }
}

/// The production clock: monotonic ([`Instant`]) and aligned with the Unix epoch.
///
/// The wall clock is read once, when the clock is created, to place the origin; after that only the
/// monotonic clock advances it, so a wall-clock step (NTP, a VM resume) never moves a decision. Aligning with
/// the epoch means aligned windows (a fixed window "per minute") start on whole minutes, as they do on the
/// Redis store, which uses the server's `TIME`.
#[derive(Debug, Clone, Copy)]
pub struct SystemClock {
    start: Instant,
    origin: Micros,
}

impl SystemClock {
    /// A clock starting now.
    pub fn new() -> Self {
        let origin = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(duration_to_micros)
            .unwrap_or(0);
        SystemClock {
            start: Instant::now(),
            origin,
        }
    }
}

impl Default for SystemClock {
    fn default() -> Self {
        Self::new()
    }
}

impl Clock for SystemClock {
    #[inline]
    fn now(&self) -> Micros {
        self.origin
            .saturating_add(duration_to_micros(self.start.elapsed()))
    }
}

/// A clock that moves only when told to; for deterministic tests.
///
/// Clones share the same time, so a test can hand one clone to a store and advance another.
///
/// ```
/// use std::time::Duration;
/// use ratelimit_core::{Clock, ManualClock};
///
/// let clock = ManualClock::default();
/// let shared = clock.clone();
/// clock.advance(Duration::from_secs(1));
/// assert_eq!(shared.now(), 1_000_000);
/// ```
#[derive(Debug, Clone, Default)]
pub struct ManualClock {
    now: Arc<AtomicU64>,
}

impl ManualClock {
    /// A clock reading `start` microseconds.
    pub fn new(start: Micros) -> Self {
        ManualClock {
            now: Arc::new(AtomicU64::new(start)),
        }
    }

    /// Moves the clock forward by `by`.
    pub fn advance(&self, by: Duration) {
        self.advance_micros(duration_to_micros(by));
    }

    /// Moves the clock forward by `by` microseconds.
    pub fn advance_micros(&self, by: Micros) {
        self.now.fetch_add(by, Ordering::SeqCst);
    }

    /// Sets the clock to `to`, which must not be earlier than the current reading (a monotonic clock never
    /// goes back); an earlier value is ignored.
    pub fn set(&self, to: Micros) {
        self.now.fetch_max(to, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    #[inline]
    fn now(&self) -> Micros {
        self.now.load(Ordering::SeqCst)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn system_clock_is_monotonic_and_epoch_aligned() {
        let c = SystemClock::new();
        let a = c.now();
        let b = c.now();
        assert!(b >= a);
        // After 2020-01-01 in µs.
        assert!(a > 1_577_836_800 * MICROS_PER_SEC);
    }

    #[test]
    fn manual_clock_never_goes_back() {
        let c = ManualClock::new(10);
        c.set(5);
        assert_eq!(c.now(), 10);
        c.set(20);
        assert_eq!(c.now(), 20);
    }
}
