//! Logging and metrics helpers.
//!
//! Metrics (through the [`metrics`] facade; install any recorder, e.g. a Prometheus exporter). Install it
//! **before building the layer**: the layer then registers its handles once and each update is one
//! atomic add; a layer built before any recorder exists asks the current recorder on every update
//! (correct, but a registry look-up each time: 175 ns per request with the Prometheus exporter, in
//! `benches/tower.rs`).
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

/// The per-request metrics' handles, registered once with the recorder installed when the layer is
/// built.
///
/// `metrics::counter!` asks the recorder for the handle on every call: for a Prometheus exporter that
/// is a registry look-up (hashing the key, a read lock), which measured 175 ns per request for our two
/// updates (`benches/tower.rs`, row `ours_prometheus`) — more than the rest of the layer. A handle kept
/// from the start costs one atomic add. The catch is that handles stay with the recorder they came from,
/// so they are only taken when a recorder is installed at build time (metrics' own advice is to install
/// it first thing in `main`); a layer built before that asks per call, as before, and loses nothing.
pub(crate) struct Meters {
    pub(crate) allowed: metrics::Counter,
    pub(crate) limited: metrics::Counter,
    pub(crate) shadow_limited: metrics::Counter,
    pub(crate) skipped: metrics::Counter,
    pub(crate) store_error: metrics::Counter,
    pub(crate) key_error: metrics::Counter,
    pub(crate) latency: metrics::Histogram,
}

impl Meters {
    /// The handles of the current recorder; `None` when none is installed (metrics' no-op recorder, the
    /// only recorder without state: a zero-sized one cannot count anything by itself).
    pub(crate) fn resolve() -> Option<Self> {
        let installed = metrics::with_recorder(|r| std::mem::size_of_val(r) > 0);
        installed.then(|| Meters {
            allowed: metrics::counter!("ratelimit_requests_total", "outcome" => "allowed"),
            limited: metrics::counter!("ratelimit_requests_total", "outcome" => "limited"),
            shadow_limited: metrics::counter!("ratelimit_requests_total", "outcome" => "shadow_limited"),
            skipped: metrics::counter!("ratelimit_requests_total", "outcome" => "skipped"),
            store_error: metrics::counter!("ratelimit_requests_total", "outcome" => "store_error"),
            key_error: metrics::counter!("ratelimit_requests_total", "outcome" => "key_error"),
            latency: metrics::histogram!("ratelimit_decision_seconds"),
        })
    }
}

/// Counts one request outcome: through the handle kept in `$meters` (an `Option<Meters>`), else by
/// asking the current recorder. The label is passed as a literal beside the field: metrics' macros make
/// a `static` key only from literal tokens (`stringify!` is not one, and cost an allocation per call).
macro_rules! count {
    ($meters:expr, $outcome:ident, $label:literal) => {
        match &$meters {
            Some(m) => m.$outcome.increment(1),
            None => metrics::counter!("ratelimit_requests_total", "outcome" => $label).increment(1),
        }
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
