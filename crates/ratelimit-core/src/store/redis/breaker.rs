//! A circuit breaker, so that a dead Redis costs nothing per request while it is down.
//!
//! Closed: every call goes to Redis. After `threshold` consecutive failures (errors or timeouts) it opens:
//! calls fail at once, without a network round trip or a timeout wait, for `cooldown`. Then one call is
//! let through as a probe (half-open); its success closes the breaker, its failure opens it again.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

#[derive(Debug)]
pub(crate) struct Breaker {
    origin: Instant,
    threshold: u32,
    cooldown: Duration,
    failures: AtomicU32,
    /// Micros since `origin` until which the breaker is open; 0 when closed.
    open_until: AtomicU64,
    probing: AtomicBool,
}

/// Whether a call may go to Redis.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Permit {
    /// Closed: go ahead.
    Call,
    /// Half-open: this call is the probe.
    Probe,
    /// Open: do not call.
    Refuse,
}

impl Breaker {
    pub(crate) fn new(threshold: u32, cooldown: Duration) -> Self {
        Breaker {
            origin: Instant::now(),
            threshold: threshold.max(1),
            cooldown,
            failures: AtomicU32::new(0),
            open_until: AtomicU64::new(0),
            probing: AtomicBool::new(false),
        }
    }

    fn now(&self) -> u64 {
        u64::try_from(self.origin.elapsed().as_micros())
            .unwrap_or(u64::MAX)
            .max(1)
    }

    pub(crate) fn permit(&self) -> Permit {
        let until = self.open_until.load(Ordering::Acquire);
        if until == 0 {
            return Permit::Call;
        }
        if self.now() < until {
            return Permit::Refuse;
        }
        if self
            .probing
            .compare_exchange(false, true, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
        {
            Permit::Probe
        } else {
            Permit::Refuse
        }
    }

    /// Records a success; returns true if this closed an open breaker.
    pub(crate) fn success(&self) -> bool {
        self.failures.store(0, Ordering::Relaxed);
        let was_open = self.open_until.swap(0, Ordering::AcqRel) != 0;
        self.probing.store(false, Ordering::Release);
        was_open
    }

    /// Records a failure; returns true if this opened a closed breaker.
    pub(crate) fn failure(&self, probe: bool) -> bool {
        let failures = self.failures.fetch_add(1, Ordering::AcqRel) + 1;
        if probe || failures >= self.threshold {
            let micros = u64::try_from(self.cooldown.as_micros()).unwrap_or(u64::MAX);
            let was = self
                .open_until
                .swap(self.now().saturating_add(micros), Ordering::AcqRel);
            self.probing.store(false, Ordering::Release);
            return was == 0;
        }
        false
    }

    pub(crate) fn is_open(&self) -> bool {
        self.open_until.load(Ordering::Acquire) != 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opens_after_threshold_and_probes_after_cooldown() {
        let b = Breaker::new(2, Duration::from_millis(20));
        assert_eq!(b.permit(), Permit::Call);
        assert!(!b.failure(false));
        assert!(b.failure(false));
        assert_eq!(b.permit(), Permit::Refuse);
        std::thread::sleep(Duration::from_millis(25));
        assert_eq!(b.permit(), Permit::Probe);
        assert_eq!(b.permit(), Permit::Refuse, "one probe at a time");
        assert!(b.success());
        assert_eq!(b.permit(), Permit::Call);
    }
}
