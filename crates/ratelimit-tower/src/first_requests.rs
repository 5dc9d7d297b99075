//! Misconfigurations only traffic shows: an extension that the layers outside the limiter should set
//! (the [`Tier`](crate::Tier), the authenticated user) and that none of the first requests carried.

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};

/// Requests without an expected extension (while none had it) before the layer order is called into
/// question: enough that a quiet start with only anonymous clients is not flagged.
pub(crate) const REQUESTS_WITHOUT_EXTENSION_BEFORE_WARNING: u32 = 1_000;

/// Watches whether an extension ever shows up in the first requests.
#[derive(Debug, Default)]
pub(crate) struct ExtensionWatch {
    /// Set once a request carried the extension, or once the warning was due: nothing left to watch.
    settled: AtomicBool,
    without: AtomicU32,
}

impl ExtensionWatch {
    /// A request carried the extension (`found`) or not. `true` exactly once: when the first
    /// [`REQUESTS_WITHOUT_EXTENSION_BEFORE_WARNING`] requests all lacked it. One relaxed load once settled.
    #[inline]
    pub(crate) fn warn_now(&self, found: bool) -> bool {
        if self.settled.load(Ordering::Relaxed) {
            return false;
        }
        if found {
            self.settled.store(true, Ordering::Relaxed);
            return false;
        }
        let n = self.without.fetch_add(1, Ordering::Relaxed) + 1;
        if n == REQUESTS_WITHOUT_EXTENSION_BEFORE_WARNING {
            self.settled.store(true, Ordering::Relaxed);
            return true;
        }
        false
    }
}

/// The fix both warnings name.
pub(crate) const LAYER_ORDER_FIX: &str = "the rate-limit layer probably runs before the middleware that authenticates and sets it: put that middleware outside the limiter (with axum, call .layer(auth) after .layer(rate_limit); in a ServiceBuilder, list auth first)";
