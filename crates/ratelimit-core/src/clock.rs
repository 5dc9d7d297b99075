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

/// The production clock: monotonic and aligned with the Unix epoch.
///
/// The wall clock is read once, when the clock is created, to place the origin; after that only a
/// monotonic clock advances it, so a wall-clock step (NTP, a VM resume) never moves a decision. Aligning with
/// the epoch means aligned windows (a fixed window "per minute") start on whole minutes, as they do on the
/// Redis store, which uses the server's `TIME`.
///
/// The monotonic clock is the CPU's time-stamp counter (through [`quanta`], calibrated against the
/// operating system's monotonic clock once per process) where Linux itself keeps time with it, and
/// [`Instant`] everywhere else. Linux selects the `tsc` clocksource only when the counters are invariant and
/// synchronised across CPUs, so readings taken on different cores agree; that check is what quanta alone
/// does not make (governor issue #299: rejections from a TSC that was not synchronised). Reading the TSC
/// costs about 9 ns where `Instant::now` (the vDSO's `clock_gettime`, which also fences the pipeline) costs
/// about 25 ns, on the 2-core EPYC of `BENCHMARKS.md`, and a rate-limit check reads the clock every time.
#[derive(Debug, Clone, Copy)]
pub struct SystemClock {
    start: Instant,
    origin: Micros,
    /// The TSC clock and its reading at `start`, where it may be used (see [`tsc`]).
    tsc: Option<(&'static quanta::Clock, u64)>,
}

/// The TSC clock, if the kernel's current clocksource is the TSC; calibrated on first use.
fn tsc() -> Option<&'static quanta::Clock> {
    static TSC: std::sync::OnceLock<Option<quanta::Clock>> = std::sync::OnceLock::new();
    TSC.get_or_init(|| {
        let source = std::fs::read_to_string(
            "/sys/devices/system/clocksource/clocksource0/current_clocksource",
        )
        .unwrap_or_default();
        (source.trim() == "tsc").then(quanta::Clock::new)
    })
    .as_ref()
}

/// Times short spans (a store check, a request) as cheaply as the platform allows: with the CPU's
/// time-stamp counter (through `quanta`, about 9 ns a read) where Linux itself keeps time with it (then
/// the counters are invariant and synchronised across CPUs), else with [`Instant`] (the vDSO's
/// `clock_gettime`, about 25 ns a read on the machine of `BENCHMARKS.md`). For measuring, not for
/// deciding: rate-limit decisions take their time from a [`Clock`].
///
/// ```
/// use ratelimit_core::clock::Stopwatch;
///
/// let watch = Stopwatch::start();
/// let seconds = watch.seconds();
/// assert!(seconds >= 0.0);
/// ```
#[derive(Debug, Clone, Copy)]
pub struct Stopwatch(Watch);

#[derive(Debug, Clone, Copy)]
enum Watch {
    Tsc(&'static quanta::Clock, u64),
    Os(Instant),
}

impl Stopwatch {
    /// Starts timing.
    #[inline]
    pub fn start() -> Self {
        Stopwatch(match tsc() {
            Some(clock) => Watch::Tsc(clock, clock.raw()),
            None => Watch::Os(Instant::now()),
        })
    }

    /// Seconds since [`Stopwatch::start`].
    #[inline]
    pub fn seconds(self) -> f64 {
        match self.0 {
            Watch::Tsc(clock, start) => clock.delta_as_nanos(start, clock.raw()) as f64 * 1e-9,
            Watch::Os(start) => start.elapsed().as_secs_f64(),
        }
    }
}

impl SystemClock {
    /// A clock starting now.
    pub fn new() -> Self {
        // Calibrate (once per process) before taking the origin, so the two readings below are together.
        let tsc = tsc();
        let origin = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(duration_to_micros)
            .unwrap_or(0);
        SystemClock {
            start: Instant::now(),
            origin,
            tsc: tsc.map(|clock| (clock, clock.raw())),
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
        match self.tsc {
            Some((clock, start)) => self
                .origin
                .saturating_add(clock.delta_as_nanos(start, clock.raw()) / 1_000),
            None => self
                .origin
                .saturating_add(duration_to_micros(self.start.elapsed())),
        }
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
    fn system_clock_keeps_time_with_instant() {
        // Whichever source it reads, SystemClock measures the same spans as Instant (a generous bound:
        // this box is shared, and the point is to catch a wrong scale, not to time anything).
        let c = SystemClock::new();
        let (a, i) = (c.now(), Instant::now());
        std::thread::sleep(Duration::from_millis(50));
        let (b, j) = (c.now(), Instant::now());
        let ours = b - a;
        let std = duration_to_micros(j - i);
        assert!(ours >= 50_000, "{ours} µs for a 50 ms sleep");
        assert!(
            ours.abs_diff(std) < 2_000 + std / 100,
            "SystemClock {ours} µs, Instant {std} µs"
        );
        // And it stays close to the wall clock it was aligned with.
        let wall = duration_to_micros(SystemTime::now().duration_since(UNIX_EPOCH).unwrap());
        assert!(
            wall.abs_diff(c.now()) < 50_000,
            "wall {wall}, SystemClock {}",
            c.now()
        );
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
