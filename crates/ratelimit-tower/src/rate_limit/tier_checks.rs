//! Tier misconfigurations caught in the first requests, each logged once at `warn`:
//!
//! * a tier name that is not in the table (`"Pro"` for `"pro"`): the request gets the default tier, and
//!   the name is reported once (a bounded number of distinct names, remembered by hash and logged cut
//!   short, so names from request data cannot grow memory or the log);
//! * tiers configured, but no request carries the [`Tier`](crate::Tier) extension: the layer runs before
//!   the middleware that sets it (the layer order), so every client gets the default tier.

use std::collections::HashSet;
use std::hash::{BuildHasher, RandomState};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use crate::first_requests::{
    ExtensionWatch, LAYER_ORDER_FIX, REQUESTS_WITHOUT_EXTENSION_BEFORE_WARNING,
};
use crate::tier::TierTable;

/// Distinct unknown tier names reported; later ones are logged at `debug` only (the names come from
/// your auth middleware or tier function, but a bug there could make them unbounded).
const UNKNOWN_TIER_NAMES_REPORTED_AT_MOST: usize = 32;

/// The most bytes of an unknown tier name a warning quotes.
const UNKNOWN_TIER_NAME_LOGGED_BYTES: usize = 64;

/// What has been reported; lives as long as the layer (across tier-table changes).
#[derive(Debug, Default)]
pub(crate) struct TierChecks {
    /// Hashes of the unknown names reported (a name may be as long as a header).
    unknown_reported: Mutex<HashSet<u64>>,
    /// The hash of the last unknown name seen, checked without the lock: a tier function that maps
    /// every anonymous client to one name outside the table would otherwise take the lock per request.
    last_unknown: AtomicU64,
    hasher: RandomState,
    /// Whether any of the first requests carried a `Tier`.
    extension: ExtensionWatch,
}

impl TierChecks {
    /// A request resolved its tier from the extension: `found` says whether it carried one.
    #[inline]
    pub(crate) fn extension(&self, found: bool) {
        if self.extension.warn_now(found) {
            tracing::warn!(
                requests = REQUESTS_WITHOUT_EXTENSION_BEFORE_WARNING,
                "tiers are configured but no request carried a Tier extension, so every client gets the default tier: {LAYER_ORDER_FIX}; or resolve tiers with RateLimitBuilder::tier_fn"
            );
        }
    }

    /// A request named tier `name`, which `table` does not have: it gets the default tier.
    #[cold]
    pub(crate) fn unknown(&self, name: &str, table: &TierTable) {
        let name = cut(name, UNKNOWN_TIER_NAME_LOGGED_BYTES);
        let hash = self.hasher.hash_one(name);
        if self.last_unknown.swap(hash, Ordering::Relaxed) == hash {
            tracing::debug!(tier = name, "unknown tier; using the default tier");
            return;
        }
        let mut reported = self
            .unknown_reported
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if reported.contains(&hash) || reported.len() >= UNKNOWN_TIER_NAMES_REPORTED_AT_MOST {
            tracing::debug!(tier = name, "unknown tier; using the default tier");
            return;
        }
        reported.insert(hash);
        drop(reported);
        let known: Vec<&str> = table.named.keys().map(|n| &**n).collect();
        match known.iter().find(|k| k.eq_ignore_ascii_case(name)) {
            Some(close) => tracing::warn!(
                tier = name,
                "unknown tier {name:?}; using the default tier. Tier names are case-sensitive: did you mean {close:?}?"
            ),
            None => tracing::warn!(
                tier = name,
                ?known,
                "unknown tier {name:?}; using the default tier. Add it to the Tiers table or fix the name your auth middleware or tier function gives"
            ),
        }
    }
}

/// `s` cut to at most `max` bytes, at a character boundary.
fn cut(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}
