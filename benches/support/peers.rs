//! The quota every tower bench row enforces, for ours and for tower_governor alike: one unit per 3.6 µs
//! (10⁹ an hour) with a burst of 10⁹, so every request of a benchmark is admitted (the path a healthy
//! server runs).

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use governor::clock::QuantaInstant;
use governor::middleware::NoOpMiddleware;
use ratelimit::core::{Policy, PolicySet, Quota};
use tower_governor::key_extractor::PeerIpKeyExtractor;

/// Our one GCRA policy, named `burst`.
pub fn policies() -> PolicySet {
    let quota = Quota::per_hour(1_000_000_000)
        .burst(1_000_000_000)
        .build()
        .unwrap_or_else(|e| panic!("{e}"));
    let policy = Policy::gcra("burst", quota).unwrap_or_else(|e| panic!("{e}"));
    PolicySet::new([policy]).unwrap_or_else(|e| panic!("{e}"))
}

/// tower_governor with the same quota (peer-IP key, no headers: its default).
pub fn governor(
) -> tower_governor::GovernorLayer<PeerIpKeyExtractor, NoOpMiddleware<QuantaInstant>, Body> {
    let gov = tower_governor::governor::GovernorConfigBuilder::default()
        .period(Duration::from_nanos(3_600))
        .burst_size(1_000_000_000)
        .finish()
        .unwrap_or_else(|| panic!("governor config"));
    tower_governor::GovernorLayer::new(Arc::new(gov))
}
