//! Property tests for the header parsers: arbitrary header values never panic, accepted values respect the
//! caps, and exact decimal seconds round-trip.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use http::{HeaderMap, HeaderValue, StatusCode};
use proptest::prelude::*;
use ratelimit_client::parse::parse_seconds;
use ratelimit_client::profile::{Discord, GitHub, Ietf, Profile, RetryAfter};

const NAMES: [&str; 12] = [
    "x-ratelimit-limit",
    "x-ratelimit-remaining",
    "x-ratelimit-reset-after",
    "x-ratelimit-reset",
    "x-ratelimit-bucket",
    "x-ratelimit-scope",
    "x-ratelimit-global",
    "x-ratelimit-resource",
    "retry-after",
    "ratelimit",
    "ratelimit-policy",
    "via",
];

fn value() -> impl Strategy<Value = String> {
    prop_oneof![
        "[0-9]{0,25}(\\.[0-9]{0,8})?",
        "-?[0-9]{1,5}(e[0-9]{1,3})?",
        Just("NaN".to_owned()),
        Just("inf".to_owned()),
        "\"[a-z]{1,4}\";r=[0-9]{1,12};t=-?[0-9]{1,12}(, [a-z];q=[0-9]{1,3};w=[0-9]{1,3}){0,12}",
        "[ -~]{0,40}",
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn profiles_never_panic_and_respect_caps(
        values in proptest::collection::vec(proptest::option::of(value()), NAMES.len()),
        status in prop_oneof![Just(200u16), Just(401), Just(403), Just(429), Just(503)],
        body in proptest::option::of("[ -~]{0,80}"),
    ) {
        let mut headers = HeaderMap::new();
        for (name, v) in NAMES.iter().zip(values) {
            if let Some(v) = v.and_then(|v| HeaderValue::from_str(&v).ok()) {
                headers.append(*name, v);
            }
        }
        let status = StatusCode::from_u16(status).unwrap();
        let body = body.as_deref().map(str::as_bytes);
        let profiles: [&dyn Profile; 4] = [&Discord::new(), &Ietf::new(), &GitHub::new(), &RetryAfter::new()];
        for p in profiles {
            let obs = p.observe(status, &headers, body);
            prop_assert!(obs.buckets.len() <= 8);
            for b in &obs.buckets {
                prop_assert!(b.limit >= 1 && b.limit <= 1_000_000);
                prop_assert!(b.remaining <= b.limit);
                prop_assert!(b.reset_after <= 3_600_000_000);
            }
            if let Some(l) = obs.limited {
                prop_assert!(l.retry_after <= 3_600_000_000);
            }
        }
    }

    #[test]
    fn decimal_seconds_are_exact(whole in 0u64..1_000_000_000, millis in 0u64..1000) {
        prop_assert_eq!(parse_seconds(&format!("{whole}.{millis:03}")), Some(whole * 1_000_000 + millis * 1000));
        prop_assert_eq!(parse_seconds(&whole.to_string()), Some(whole * 1_000_000));
    }
}
