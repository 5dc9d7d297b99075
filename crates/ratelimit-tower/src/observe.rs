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
//! | `ratelimit_key_state_errors_total` | counter | — (requests whose own store key holds data the limiter did not write) |
//! | `ratelimit_decision_seconds` | histogram | — (time spent in the store check, per request, while a recorder is installed; timed with the CPU's time-stamp counter where Linux keeps time with it) |
//!
//! The Redis store adds its own (`ratelimit-core`): `ratelimit_redis_degraded` (a gauge, 1 while the
//! circuit breaker is open), `ratelimit_redis_fallbacks_total` (decisions made by its failure policy,
//! e.g. the local fallback), `ratelimit_redis_errors_total`, `ratelimit_redis_calls_total`,
//! `ratelimit_redis_batched_calls_total`, `ratelimit_redis_deny_cache_hits_total` and
//! `ratelimit_redis_script_loads_total`.
//!
//! Tracing: one `debug` event per decision (outcome, tier, binding policy, remaining, the key's salted
//! fingerprint, [`KeyHash`]), `info` for every rejection (policy name and the key's fingerprint — never
//! the raw key), a store outage as two lines (`warn` when the store starts failing, `info` when it answers
//! again; the requests in between are counted, not logged), and
//! one-time `warn`/`error` lines for misconfiguration (forwarding headers with no trusted proxy; missing
//! peer address).

use std::fmt;

use sha2::{Digest, Sha256};

/// Times a decision for the `ratelimit_decision_seconds` histogram: an in-memory decision takes a fraction
/// of a microsecond, so two `Instant::now()` reads would cost a third of it; core's stopwatch reads the
/// time-stamp counter where Linux keeps time with it.
pub(crate) use ratelimit_core::clock::Stopwatch;

/// A short fingerprint of a store key for logs: 8 bytes of a salted SHA-256, in hex.
///
/// Salted, because a key is often guessable: an IPv4 client key has 2³² values, and an unsalted hash of
/// it could be reversed by trying them all, which would put client addresses back into the logs. The
/// salt is 16 random bytes drawn once per process, so one process's lines about a client share one
/// fingerprint while another instance (or a restart) shows another; to correlate several instances'
/// logs, give them one secret with [`set_fingerprint_salt`].
///
/// ```
/// use ratelimit_tower::observe::KeyHash;
///
/// let a = KeyHash::of(b"203.0.113.7").to_string();
/// assert_eq!(a.len(), 16);
/// assert_eq!(a, KeyHash::of(b"203.0.113.7").to_string()); // stable within the process
/// ```
#[derive(Clone, Copy)]
pub struct KeyHash([u8; 8]);

impl KeyHash {
    /// The fingerprint of `key`.
    pub fn of(key: &[u8]) -> Self {
        let mut h = Sha256::new();
        h.update(salt());
        h.update(key);
        let d = h.finalize();
        let mut out = [0u8; 8];
        out.copy_from_slice(&d[..8]);
        KeyHash(out)
    }
}

static SALT: std::sync::OnceLock<[u8; 32]> = std::sync::OnceLock::new();

/// The fingerprint salt: the one set with [`set_fingerprint_salt`], else 16 random bytes (from the
/// standard library's per-process hash seeds) followed by zeros.
fn salt() -> &'static [u8; 32] {
    SALT.get_or_init(|| {
        use std::hash::{BuildHasher, RandomState};
        let mut salt = [0u8; 32];
        salt[..8].copy_from_slice(&RandomState::new().hash_one(1u8).to_le_bytes());
        salt[8..16].copy_from_slice(&RandomState::new().hash_one(2u8).to_le_bytes());
        salt
    })
}

/// The salt was drawn or set before [`set_fingerprint_salt`] was called.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the fingerprint salt is already fixed: call set_fingerprint_salt before the first request is logged")]
pub struct SaltAlreadySet;

/// Uses `secret` (hashed to 32 bytes) as the salt of every [`KeyHash`] in this process, so that several
/// instances given the same secret print the same fingerprint for the same client. Call it once, at
/// start-up, before anything is logged; keep the secret out of the logs.
///
/// # Errors
/// [`SaltAlreadySet`] if a fingerprint was already computed (with the random salt) or a salt was set.
///
/// ```
/// use ratelimit_tower::observe::{set_fingerprint_salt, KeyHash};
///
/// set_fingerprint_salt(b"shared secret from the deployment")?;
/// assert!(set_fingerprint_salt(b"another").is_err());
/// let _ = KeyHash::of(b"203.0.113.7");
/// # Ok::<(), ratelimit_tower::observe::SaltAlreadySet>(())
/// ```
pub fn set_fingerprint_salt(secret: &[u8]) -> Result<(), SaltAlreadySet> {
    let mut salt = [0u8; 32];
    salt.copy_from_slice(&Sha256::digest(secret));
    SALT.set(salt).map_err(|_| SaltAlreadySet)
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

/// Whether a `metrics` recorder is installed (globally, or on this thread): anything but metrics' no-op
/// recorder, the only recorder without state — a zero-sized one cannot count anything by itself.
#[inline]
pub(crate) fn recorder_installed() -> bool {
    metrics::with_recorder(|r| std::mem::size_of_val(r) > 0)
}

impl Meters {
    /// The handles of the current recorder; `None` when none is installed ([`recorder_installed`]).
    pub(crate) fn resolve() -> Option<Self> {
        recorder_installed().then(|| Meters {
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
    fn fingerprints_are_salted() {
        let key = b"203.0.113.7";
        let unsalted = Sha256::digest(key);
        let fp = KeyHash::of(key);
        assert_ne!(fp.0[..], unsalted[..8]);
        assert_eq!(fp.0, KeyHash::of(key).0);
        assert_ne!(fp.0, KeyHash::of(b"203.0.113.8").0);
        // The salt is fixed by now: a later secret cannot change fingerprints already logged.
        assert_eq!(set_fingerprint_salt(b"late"), Err(SaltAlreadySet));
        assert_eq!(fp.0, KeyHash::of(key).0);
    }

    #[test]
    fn the_stopwatch_measures_elapsed_time() {
        let w = Stopwatch::start();
        std::thread::sleep(std::time::Duration::from_millis(20));
        let s = w.seconds();
        assert!((0.015..5.0).contains(&s), "{s}");
    }
}
