//! The quota every tower bench row enforces, for ours and for tower_governor alike: one unit per 3.6 µs
//! (10⁹ an hour) with a burst of 10⁹, so every request of a benchmark is admitted (the path a healthy
//! server runs).

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use governor::clock::QuantaInstant;
use governor::middleware::{NoOpMiddleware, StateInformationMiddleware};
use ratelimit_core::{Policy, PolicySet, Quota};
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

/// tower_governor with the same quota and its `x-ratelimit-*` headers (`use_headers()`): the
/// like-for-like peer of ours, which always answers with headers.
pub fn governor_headers(
) -> tower_governor::GovernorLayer<PeerIpKeyExtractor, StateInformationMiddleware, Body> {
    let gov = tower_governor::governor::GovernorConfigBuilder::default()
        .period(Duration::from_nanos(3_600))
        .burst_size(1_000_000_000)
        .use_headers()
        .finish()
        .unwrap_or_else(|| panic!("governor config"));
    tower_governor::GovernorLayer::new(Arc::new(gov))
}

static RATELIMIT: http::HeaderName = http::HeaderName::from_static("ratelimit");
static RATELIMIT_POLICY: http::HeaderName = http::HeaderName::from_static("ratelimit-policy");

/// Not a rate limiter: a layer that only appends the two IETF fields to every response, the cheapest way
/// `http` allows (static names; with `dynamic`, the `RateLimit` value is rendered per request from a
/// counter into a stack buffer, as any limiter must, since `r` changes per request; without it both
/// values are `&'static` and nothing is allocated). It shows what emitting the headers costs by
/// itself, the part of the in-process floor no rate limiter can avoid.
pub fn headers_only(
    dynamic: bool,
) -> tower::util::MapResponseLayer<impl FnMut(http::Response<Body>) -> http::Response<Body> + Clone>
{
    let remaining = Arc::new(std::sync::atomic::AtomicU64::new(999_999_999));
    tower::util::MapResponseLayer::new(move |mut res: http::Response<Body>| {
        let value = if dynamic {
            let r = remaining.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
            let mut buf = [0u8; 48];
            let prefix = b"\"burst\";r=";
            buf[..prefix.len()].copy_from_slice(prefix);
            let mut n = prefix.len();
            let digits = r.checked_ilog10().unwrap_or(0) as usize + 1;
            let mut v = r;
            for i in (0..digits).rev() {
                buf[n + i] = b'0' + (v % 10) as u8;
                v /= 10;
            }
            n += digits;
            buf[n..n + 4].copy_from_slice(b";t=1");
            n += 4;
            http::HeaderValue::from_bytes(&buf[..n]).unwrap_or_else(|_| unreachable!())
        } else {
            http::HeaderValue::from_static("\"burst\";r=999999999;t=1")
        };
        let h = res.headers_mut();
        h.append(RATELIMIT.clone(), value);
        h.append(
            RATELIMIT_POLICY.clone(),
            http::HeaderValue::from_static("\"burst\";q=1000000000;w=3600"),
        );
        res
    })
}
