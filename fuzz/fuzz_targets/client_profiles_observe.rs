//! IETF `RateLimit`/`RateLimit-Policy` (structured fields), GitHub `x-ratelimit-*` and `Retry-After`
//! (seconds or HTTP-date) parsing: never a panic, always within the caps.
#![no_main]

use http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use libfuzzer_sys::fuzz_target;
use ratelimit_client::profile::{GitHub, Ietf, Profile, RetryAfter};

const NAMES: [&str; 10] = [
    "ratelimit",
    "ratelimit-policy",
    "ratelimit-limit",
    "ratelimit-remaining",
    "ratelimit-reset",
    "x-ratelimit-limit",
    "x-ratelimit-remaining",
    "x-ratelimit-reset",
    "x-ratelimit-resource",
    "retry-after",
];

fuzz_target!(|data: &[u8]| {
    let Some((&first, rest)) = data.split_first() else {
        return;
    };
    let status = match first % 4 {
        0 => StatusCode::OK,
        1 => StatusCode::FORBIDDEN,
        2 => StatusCode::TOO_MANY_REQUESTS,
        _ => StatusCode::SERVICE_UNAVAILABLE,
    };
    let mut headers = HeaderMap::new();
    for (name, v) in NAMES.iter().zip(rest.split(|&b| b == 0xff)) {
        if let Ok(v) = HeaderValue::from_bytes(v) {
            headers.append(HeaderName::from_static(name), v);
        }
    }
    let observations = [
        Ietf::new().observe(status, &headers, None),
        GitHub::new().observe(status, &headers, None),
        RetryAfter::new().observe(status, &headers, None),
    ];
    for obs in observations {
        assert!(obs.buckets.len() <= ratelimit_client::profile::ietf::MAX_POLICIES);
        for b in &obs.buckets {
            assert!(
                b.limit <= 1_000_000 && b.remaining <= b.limit && b.reset_after <= 3_600_000_000
            );
        }
        if let Some(l) = obs.limited {
            assert!(l.retry_after <= 3_600_000_000);
        }
    }
});
