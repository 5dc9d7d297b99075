//! The store's health as the layer sees it, so an outage is logged as two transitions — the store
//! started failing, the store answers again — and not once per request: during a Redis outage a busy
//! server would otherwise write a line for every request it failed. Each failed request is counted in
//! `ratelimit_store_errors_total` instead.
//!
//! A corrupt key ([`StoreError::KeyState`]: one identity's key holds data this limiter did not write) is
//! not an outage: the store answered, about that identity only. It is that request's error, logged at
//! `warn` the first time and at `debug` after, and counted in `ratelimit_key_state_errors_total`.

use std::sync::atomic::{AtomicBool, Ordering};

use ratelimit_core::StoreError;

use super::settings::StoreFailure;
use crate::key::KeyBuf;
use crate::observe::KeyHash;

/// Whether the store is failing, and whether a corrupt key was reported yet.
#[derive(Debug, Default)]
pub(crate) struct StoreHealth {
    failing: AtomicBool,
    corrupt_key_reported: AtomicBool,
}

impl StoreHealth {
    /// Every check of a request answered. One relaxed load while the store is healthy.
    #[inline]
    pub(crate) fn answered(&self) {
        if self.failing.load(Ordering::Relaxed) && self.failing.swap(false, Ordering::Relaxed) {
            tracing::info!("rate-limit store answering again; limiting resumed");
        }
    }

    /// A check failed with `e`; the layer goes on as `action` says.
    pub(crate) fn failed(&self, e: &StoreError, key: &KeyBuf, action: StoreFailure) {
        let label = action.label();
        metrics::counter!("ratelimit_store_errors_total", "action" => label).increment(1);
        if matches!(e, StoreError::KeyState { .. }) {
            self.corrupt_key(e, key, label);
        } else {
            self.outage(e, label);
        }
    }

    fn outage(&self, e: &StoreError, action: &'static str) {
        if self.failing.swap(true, Ordering::Relaxed) {
            tracing::debug!(error = %e, action, "rate-limit store still failing");
        } else {
            tracing::warn!(
                error = %e,
                action,
                "rate-limit store failing: requests {} until it answers again (each counted in ratelimit_store_errors_total)",
                if action == "fail_open" { "go through unlimited" } else { "get 503" },
            );
        }
    }

    fn corrupt_key(&self, e: &StoreError, key: &KeyBuf, action: &'static str) {
        metrics::counter!("ratelimit_key_state_errors_total").increment(1);
        let key = KeyHash::of(key.as_bytes());
        if self.corrupt_key_reported.swap(true, Ordering::Relaxed) {
            tracing::debug!(error = %e, %key, action, "this client's rate-limit state is unreadable");
        } else {
            tracing::warn!(
                error = %e,
                %key,
                action,
                "this client's rate-limit state is unreadable (later ones are logged at debug, counted in ratelimit_key_state_errors_total)"
            );
        }
    }
}
