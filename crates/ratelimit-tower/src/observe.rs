//! Logging and metrics helpers.
//!
//! Metrics (through the [`metrics`] facade; install any recorder, e.g. a Prometheus exporter):
//!
//! | name | kind | labels |
//! |---|---|---|
//! | `ratelimit_requests_total` | counter | `outcome` = `allowed`, `limited`, `shadow_limited`, `skipped`, `store_error`, `key_error` |
//! | `ratelimit_rejections_total` | counter | `policy` (the binding policy's name) |
//! | `ratelimit_store_errors_total` | counter | `action` = `fail_open`, `fail_closed` |
//! | `ratelimit_fail_open_total` | counter | — (requests let through without a decision: the fallback is active) |
//! | `ratelimit_decision_seconds` | histogram | — (time spent in the store check, per request; timed with the CPU's time-stamp counter where Linux keeps time with it) |
//!
//! Tracing: one `debug` event per decision (outcome, tier, binding policy, remaining, hashed key), `info`
//! for every rejection (policy name and hashed key — never the raw key), `warn` for store errors, and
//! one-time `warn`/`error` lines for misconfiguration (forwarding headers with no trusted proxy; missing
//! peer address).

use std::fmt;

use sha2::{Digest, Sha256};

/// Times a decision for the `ratelimit_decision_seconds` histogram: an in-memory decision takes a fraction
/// of a microsecond, so two `Instant::now()` reads would cost a third of it; core's stopwatch reads the
/// time-stamp counter where Linux keeps time with it.
pub(crate) use ratelimit_core::clock::Stopwatch;

/// A short, non-reversible fingerprint of a store key for logs: 8 bytes of SHA-256, in hex.
#[derive(Clone, Copy)]
pub struct KeyHash([u8; 8]);

impl KeyHash {
    /// The fingerprint of `key`.
    pub fn of(key: &[u8]) -> Self {
        let d = Sha256::digest(key);
        let mut h = [0u8; 8];
        h.copy_from_slice(&d[..8]);
        KeyHash(h)
    }
}

impl fmt::Display for KeyHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for KeyHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// The partition key sent in `pk`: 12 bytes of SHA-256 over a domain-separated store key, so it is
/// neither the raw identity nor the fingerprint used in logs.
pub(crate) fn partition_key(key: &[u8]) -> [u8; 12] {
    let mut h = Sha256::new();
    h.update(b"ratelimit-pk\0");
    h.update(key);
    let d = h.finalize();
    let mut out = [0u8; 12];
    out.copy_from_slice(&d[..12]);
    out
}

/// Counts one request outcome. A macro so name and label are literals: the metric key is then a
/// `static`, and counting allocates nothing.
macro_rules! count {
    ($outcome:literal) => {
        metrics::counter!("ratelimit_requests_total", "outcome" => $outcome).increment(1)
    };
}
pub(crate) use count;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_stopwatch_measures_elapsed_time() {
        let w = Stopwatch::start();
        std::thread::sleep(std::time::Duration::from_millis(20));
        let s = w.seconds();
        assert!((0.015..5.0).contains(&s), "{s}");
    }
}
