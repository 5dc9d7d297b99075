//! Helpers shared by the integration tests: one instance of every algorithm over the same quota, and
//! (in [`redis`]) Redis stores on a manual clock and a breaker brought to its half-open probe.
#![allow(dead_code, unused_macros, clippy::unwrap_used, clippy::expect_used)]

#[cfg(feature = "redis")]
pub mod redis;

use std::time::Duration;

use ratelimit_core::{Policy, PolicySet, Quota};

/// `limit` per `period`, burst = limit.
pub fn quota(limit: u64, period: Duration) -> Quota {
    Quota::new(limit, period).build().unwrap()
}

/// A two-policy set over `q`: a GCRA policy with the quota's limit and a sliding log with twice the limit, so
/// the GCRA policy binds.
pub fn pair(q: Quota) -> PolicySet {
    let wide = Quota::new(2 * q.limit(), q.period()).build().unwrap();
    PolicySet::new([
        Policy::gcra("narrow", q).unwrap(),
        Policy::sliding_log("wide", wide).unwrap(),
    ])
    .unwrap()
}

/// Calls the generic function `$f(name, rule, extra)` once per algorithm (and for a two-policy set), each over
/// the quota `$q`. The shaper appears twice: with no delay, and with a `max_delay` of one period (it then
/// admits `limit` more units, delayed).
macro_rules! for_every_algorithm {
    ($q:expr, $f:ident $(, $arg:expr)*) => {{
        use ratelimit_core::{FixedWindow, Gcra, LeakyBucket, Shaper, SlidingLog, SlidingWindow, TokenBucket};
        let q: ratelimit_core::Quota = $q;
        $f("gcra", Gcra::new(q) $(, $arg)*);
        $f("token_bucket", TokenBucket::new(q) $(, $arg)*);
        $f("leaky_bucket", LeakyBucket::new(q).unwrap() $(, $arg)*);
        $f("shaper", Shaper::new(q, std::time::Duration::ZERO) $(, $arg)*);
        $f("shaper_delaying", Shaper::new(q, q.period()) $(, $arg)*);
        $f("fixed_window", FixedWindow::new(q).unwrap() $(, $arg)*);
        $f("sliding_log", SlidingLog::new(q).unwrap() $(, $arg)*);
        $f("sliding_window", SlidingWindow::new(q).unwrap() $(, $arg)*);
        $f("policy_set", $crate::common::pair(q) $(, $arg)*);
    }};
}
