//! A circuit breaker, so that a dead Redis costs nothing per request while it is down.
//!
//! Closed: every call goes to Redis. After `threshold` consecutive failures (errors or timeouts) it opens:
//! calls fail at once, without a network round trip or a timeout wait, for `cooldown`. Then one call is
//! let through as a probe (half-open); its success closes the breaker, its failure opens it again.
//!
//! Whoever may call Redis holds a [`BreakerPermit`], an RAII guard: the outcome is recorded by consuming it
//! ([`BreakerPermit::succeeded`], [`BreakerPermit::failed`]). A probe's permit dropped without an outcome — its caller
//! was cancelled, Redis's health is unknown — releases the probe, so the next call probes; it is not a
//! failure (a client that disconnects says nothing about Redis, and counting it would let clients keep the
//! breaker open). A probe held but never finished nor dropped (a future parked forever) is presumed lost
//! after its lease, so nothing can keep the breaker open for good.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// The breaker itself; see the [module docs](self). Shared by reference (or in an `Arc`) among callers.
///
/// ```
/// use std::time::Duration;
/// use ratelimit_core::store::redis::{Breaker, Transition};
///
/// let breaker = Breaker::new(1, Duration::from_millis(500), Duration::from_millis(100));
/// let permit = breaker.permit().expect("closed: every call may go");
/// // … call Redis; it timed out:
/// assert_eq!(permit.failed(), Transition::Opened);
/// assert!(breaker.permit().is_none(), "open: no call until the cooldown is over");
/// ```
#[derive(Debug)]
pub struct Breaker {
    origin: Instant,
    threshold: u32,
    cooldown_span: Duration,
    cooldown: u64,
    probe_lease: u64,
    failures: AtomicU32,
    /// Micros since `origin` until which the breaker is open; 0 when closed.
    open_until: AtomicU64,
    /// Micros since `origin` at which the current probe started; 0 when no probe is out.
    probe_since: AtomicU64,
}

/// Leave to call Redis once. Record how it went with [`BreakerPermit::succeeded`] or [`BreakerPermit::failed`];
/// dropping it records nothing (a probe is released for the next caller).
#[derive(Debug)]
#[must_use]
pub struct BreakerPermit<'a> {
    breaker: &'a Breaker,
    /// The probe's start stamp (its identity) while this permit is the half-open probe; 0 otherwise.
    probe: u64,
}

/// A change of the breaker's state that one outcome caused (what the store logs, once each).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transition {
    /// Nothing changed state.
    None,
    /// Closed → open: Redis is failing.
    Opened,
    /// Open → closed: Redis answers again.
    Closed,
}

impl Breaker {
    /// `probe_lease`: the longest a probe can legitimately take (its call's timeout, with margin).
    pub fn new(threshold: u32, cooldown: Duration, probe_lease: Duration) -> Self {
        Breaker {
            origin: Instant::now(),
            threshold: threshold.max(1),
            cooldown_span: cooldown,
            cooldown: micros(cooldown),
            probe_lease: micros(probe_lease).max(1),
            failures: AtomicU32::new(0),
            open_until: AtomicU64::new(0),
            probe_since: AtomicU64::new(0),
        }
    }

    fn now(&self) -> u64 {
        u64::try_from(self.origin.elapsed().as_micros())
            .unwrap_or(u64::MAX)
            .max(1)
    }

    /// Leave to call Redis: always while closed; once per cooldown while open (the probe); else `None`.
    pub fn permit(&self) -> Option<BreakerPermit<'_>> {
        let until = self.open_until.load(Ordering::Acquire);
        if until == 0 {
            return Some(BreakerPermit {
                breaker: self,
                probe: 0,
            });
        }
        let now = self.now();
        if now < until {
            return None;
        }
        let since = self.probe_since.load(Ordering::Acquire);
        let free = since == 0 || now.saturating_sub(since) > self.probe_lease;
        let taken = free
            && self
                .probe_since
                .compare_exchange(since, now, Ordering::AcqRel, Ordering::Acquire)
                .is_ok();
        taken.then_some(BreakerPermit {
            breaker: self,
            probe: now,
        })
    }

    /// Frees the probe slot if `stamp` still holds it (a probe presumed lost may have been replaced).
    fn release_probe(&self, stamp: u64) {
        let _ = self
            .probe_since
            .compare_exchange(stamp, 0, Ordering::AcqRel, Ordering::Acquire);
    }

    fn open(&self) {
        self.open_until.store(
            self.now().saturating_add(self.cooldown).max(1),
            Ordering::Release,
        );
    }

    /// How long the breaker stays open before probing.
    pub fn cooldown(&self) -> Duration {
        self.cooldown_span
    }

    /// Whether the breaker is open (Redis is presumed down; calls are refused until a probe succeeds).
    pub fn is_open(&self) -> bool {
        self.open_until.load(Ordering::Acquire) != 0
    }

    /// Whether a half-open probe is out (for tests and inspection).
    pub fn is_probing(&self) -> bool {
        self.probe_since.load(Ordering::Acquire) != 0
    }
}

impl BreakerPermit<'_> {
    /// Whether this call is the half-open probe.
    pub fn is_probe(&self) -> bool {
        self.probe != 0
    }

    /// Redis answered: consecutive failures start again from zero, an open breaker closes.
    pub fn succeeded(mut self) -> Transition {
        let b = self.breaker;
        // Loads first: on the hot path (closed, no failures) a success writes nothing shared.
        if b.failures.load(Ordering::Relaxed) != 0 {
            b.failures.store(0, Ordering::Relaxed);
        }
        // A late success of a call let through before the breaker opened also closes it: Redis answered.
        let was_open = b.open_until.load(Ordering::Acquire) != 0
            && b.open_until.swap(0, Ordering::AcqRel) != 0;
        self.release();
        if was_open {
            Transition::Closed
        } else {
            Transition::None
        }
    }

    /// Redis failed (or did not answer in time): a failed probe reopens the breaker for another cooldown;
    /// the `threshold`-th consecutive failure opens a closed one.
    pub fn failed(mut self) -> Transition {
        let b = self.breaker;
        let failures = b.failures.fetch_add(1, Ordering::AcqRel).saturating_add(1);
        let transition = if self.is_probe() {
            b.open();
            Transition::None
        } else if failures >= b.threshold
            && b.open_until
                .compare_exchange(
                    0,
                    b.now().saturating_add(b.cooldown).max(1),
                    Ordering::AcqRel,
                    Ordering::Acquire,
                )
                .is_ok()
        {
            // Only the failure that finds the breaker closed opens it: late failures of calls let
            // through earlier do not push the next probe further away.
            Transition::Opened
        } else {
            Transition::None
        };
        self.release();
        transition
    }

    fn release(&mut self) {
        if self.probe != 0 {
            self.breaker.release_probe(self.probe);
            self.probe = 0;
        }
    }
}

impl Drop for BreakerPermit<'_> {
    fn drop(&mut self) {
        self.release();
    }
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    const LEASE: Duration = Duration::from_secs(60);

    fn trip(b: &Breaker, n: u32) -> Transition {
        let mut last = Transition::None;
        for _ in 0..n {
            last = b.permit().map_or(Transition::None, BreakerPermit::failed);
        }
        last
    }

    #[test]
    fn opens_after_threshold_and_probes_after_cooldown() {
        let b = Breaker::new(2, Duration::from_millis(20), LEASE);
        assert!(b.permit().is_some_and(|p| !p.is_probe()));
        assert_eq!(trip(&b, 1), Transition::None);
        assert_eq!(trip(&b, 1), Transition::Opened);
        assert!(b.permit().is_none());
        std::thread::sleep(Duration::from_millis(25));
        let probe = b.permit().expect("the cooldown is over");
        assert!(probe.is_probe());
        assert!(b.permit().is_none(), "one probe at a time");
        assert_eq!(probe.succeeded(), Transition::Closed);
        assert!(b.permit().is_some_and(|p| !p.is_probe()));
    }

    #[test]
    fn a_dropped_probe_lets_the_next_call_probe() {
        let b = Breaker::new(1, Duration::ZERO, LEASE);
        assert_eq!(trip(&b, 1), Transition::Opened);
        let probe = b.permit().expect("no cooldown");
        assert!(probe.is_probe() && b.is_probing());
        drop(probe);
        assert!(!b.is_probing(), "released");
        assert!(b.is_open(), "a cancelled probe says nothing about Redis");
        assert!(b.permit().is_some_and(|p| p.is_probe()));
    }

    #[test]
    fn a_failed_probe_reopens_and_a_lost_probe_expires() {
        let b = Breaker::new(1, Duration::from_millis(20), Duration::from_millis(10));
        trip(&b, 1);
        std::thread::sleep(Duration::from_millis(25));
        let probe = b.permit().expect("cooled down");
        assert_eq!(probe.failed(), Transition::None);
        assert!(b.permit().is_none(), "open for another cooldown");
        std::thread::sleep(Duration::from_millis(25));
        let parked = b.permit().expect("cooled down again");
        assert!(b.permit().is_none());
        std::thread::sleep(Duration::from_millis(15));
        let next = b
            .permit()
            .expect("a probe parked past its lease is presumed lost");
        drop(parked);
        assert!(
            b.is_probing(),
            "the stale permit does not release its successor"
        );
        assert_eq!(next.succeeded(), Transition::Closed);
    }

    #[test]
    fn late_failures_do_not_extend_an_open_breaker() {
        let b = Breaker::new(1, Duration::from_millis(20), LEASE);
        let late = b.permit().expect("closed");
        assert_eq!(trip(&b, 1), Transition::Opened);
        std::thread::sleep(Duration::from_millis(25));
        assert_eq!(late.failed(), Transition::None);
        assert!(
            b.permit().is_some_and(|p| p.is_probe()),
            "still due for a probe"
        );
    }
}
