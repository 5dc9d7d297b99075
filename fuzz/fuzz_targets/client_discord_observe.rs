//! Discord response parsing: arbitrary status, rate-limit headers and 429 body must never panic, and what
//! is accepted must respect the caps.
#![no_main]

use http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use libfuzzer_sys::fuzz_target;
use ratelimit_client::profile::{Discord, Profile};

const NAMES: [&str; 10] = [
    "x-ratelimit-limit",
    "x-ratelimit-remaining",
    "x-ratelimit-reset",
    "x-ratelimit-reset-after",
    "x-ratelimit-bucket",
    "x-ratelimit-scope",
    "x-ratelimit-global",
    "retry-after",
    "via",
    "content-type",
];

fuzz_target!(|data: &[u8]| {
    let Some((&first, rest)) = data.split_first() else {
        return;
    };
    let status =
        StatusCode::from_u16(200 + u16::from(first) % 400).unwrap_or(StatusCode::TOO_MANY_REQUESTS);
    // Header values are separated by 0xff; the body is what follows the last separator.
    let mut parts = rest.split(|&b| b == 0xff);
    let mut headers = HeaderMap::new();
    for name in NAMES {
        let Some(v) = parts.next() else { break };
        if let Ok(v) = HeaderValue::from_bytes(v) {
            headers.append(HeaderName::from_static(name), v);
        }
    }
    let body = parts.next();
    let obs = Discord::new().observe(status, &headers, body);
    for b in &obs.buckets {
        assert!(b.limit <= 1_000_000 && b.remaining <= b.limit && b.reset_after <= 3_600_000_000);
    }
    if let Some(l) = obs.limited {
        assert!(l.retry_after <= 3_600_000_000);
    }
});
