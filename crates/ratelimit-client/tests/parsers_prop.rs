//! Property tests for the header parsers: arbitrary and hostile header values and bodies never panic,
//! accepted values respect the caps and what the protocol can produce, upstream-chosen names are bounded
//! in bytes, a limit response is never read as permission, and exact decimal seconds round-trip.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use http::{HeaderMap, HeaderValue, StatusCode};
use proptest::prelude::*;
use ratelimit_client::parse::{parse_seconds, parse_u64};
use ratelimit_client::profile::{Discord, GitHub, Ietf, Observation, Profile, RetryAfter};

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

/// The caps every profile applies by default, and the longest upstream-chosen name kept.
const MAX_LIMIT: u64 = 1_000_000;
const MAX_WAIT: u64 = 3_600_000_000;
const MAX_NAME: usize = 64;

/// Numbers as an upstream might mangle them: huge, negative, fractional, exponents, non-finite.
fn number() -> impl Strategy<Value = String> {
    prop_oneof![
        "[0-9]{0,25}(\\.[0-9]{0,8})?",
        "-?[0-9]{1,5}(e[0-9]{1,3})?",
        Just("NaN".to_owned()),
        Just("inf".to_owned()),
        Just("18446744073709551615".to_owned()),
        Just("-0".to_owned()),
        (0u64..20).prop_map(|n| n.to_string()),
    ]
}

/// Names as an upstream might choose them: short, long, path-like, quoted.
fn name() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-z0-9]{1,16}",
        "[a-z][a-z0-9]{60,300}",
        "[ -~]{0,80}",
        Just("../../etc/passwd".to_owned()),
    ]
}

fn value() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        number().prop_map(String::into_bytes),
        name().prop_map(String::into_bytes),
        "\"[a-z]{1,4}\";r=[0-9]{1,12};t=-?[0-9]{1,12}(, [a-z];q=[0-9]{1,3};w=[0-9]{1,3}){0,12}"
            .prop_map(String::into_bytes),
        ("[a-z][a-z0-9]{60,300}", 0u64..50, 0u64..50, number())
            .prop_map(
                |(n, r, q, t)| format!("{n};r={r};t={t}, other;r={r};t=1 ; {n};q={q}").into_bytes()
            ),
        // Not UTF-8: obs-text bytes, which `HeaderValue` accepts.
        proptest::collection::vec(prop_oneof![0x20u8..0x7f, 0x80u8..=0xff], 0..40),
    ]
}

/// Discord 429 bodies: valid, hostile `retry_after` values, not JSON at all.
fn body() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        "[ -~]{0,80}".prop_map(String::into_bytes),
        prop_oneof![
            number(),
            Just("1e308".to_owned()),
            Just("-1e308".to_owned()),
            Just("\"2.5\"".to_owned()),
            Just("null".to_owned()),
            Just("[1]".to_owned()),
            Just("{}".to_owned()),
        ]
        .prop_map(
            |r| format!(r#"{{"message":"x","retry_after":{r},"global":false}}"#).into_bytes()
        ),
        proptest::collection::vec(any::<u8>(), 0..64),
    ]
}

fn profiles() -> [Box<dyn Profile>; 4] {
    [
        Box::new(Discord::new()),
        Box::new(Ietf::new()),
        Box::new(GitHub::new()),
        Box::new(RetryAfter::new()),
    ]
}

/// What every observation must satisfy, whatever came in.
fn within_bounds(status: StatusCode, obs: &Observation) -> Result<(), TestCaseError> {
    prop_assert!(obs.buckets.len() <= 8);
    for b in &obs.buckets {
        prop_assert!(b.limit >= 1 && b.limit <= MAX_LIMIT, "{b:?}");
        prop_assert!(b.remaining <= b.limit, "{b:?}");
        prop_assert!(b.reset_after <= MAX_WAIT, "{b:?}");
        let id = b.id.as_deref().unwrap_or("");
        prop_assert!(
            id.len() <= MAX_NAME,
            "a name of {} bytes was kept",
            id.len()
        );
    }
    if let Some(l) = obs.limited {
        prop_assert!(l.retry_after <= MAX_WAIT);
    }
    // A limit response is never read as permission to send.
    if status == StatusCode::TOO_MANY_REQUESTS {
        prop_assert!(obs.limited.is_some() || obs.banned, "{obs:?}");
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn profiles_never_panic_and_respect_bounds(
        values in proptest::collection::vec(proptest::option::of(value()), NAMES.len()),
        status in prop_oneof![Just(200u16), Just(401), Just(403), Just(429), Just(503)],
        body in proptest::option::of(body()),
    ) {
        let mut headers = HeaderMap::new();
        for (name, v) in NAMES.iter().zip(values) {
            if let Some(v) = v.and_then(|v| HeaderValue::from_bytes(&v).ok()) {
                headers.append(*name, v);
            }
        }
        let status = StatusCode::from_u16(status).unwrap();
        for p in profiles() {
            let obs = p.observe(status, &headers, body.as_deref());
            within_bounds(status, &obs)?;
        }
    }

    /// Discord bucket headers: a count the protocol cannot produce (more remaining than the limit, a zero
    /// limit, a number that is not a count) is no evidence at all; an accepted bucket is what was sent.
    #[test]
    fn discord_buckets_are_only_what_the_protocol_can_produce(
        limit in number(),
        remaining in number(),
        reset in number(),
        hash in name(),
        status in prop_oneof![Just(200u16), Just(429)],
        body in proptest::option::of(body()),
    ) {
        let mut headers = HeaderMap::new();
        for (k, v) in [
            ("x-ratelimit-limit", &limit),
            ("x-ratelimit-remaining", &remaining),
            ("x-ratelimit-reset-after", &reset),
            ("x-ratelimit-bucket", &hash),
        ] {
            if let Ok(v) = HeaderValue::from_str(v) {
                headers.append(k, v);
            }
        }
        headers.append("via", HeaderValue::from_static("1.1 google"));
        let status = StatusCode::from_u16(status).unwrap();
        let obs = Discord::new().observe(status, &headers, body.as_deref());
        within_bounds(status, &obs)?;
        if let Some(b) = obs.buckets.first() {
            let (l, r) = (parse_u64(&limit).unwrap(), parse_u64(&remaining).unwrap());
            prop_assert!(r <= l, "remaining {r} > limit {l} was accepted as {b:?}");
            prop_assert_eq!(b.limit, l.min(MAX_LIMIT));
            prop_assert_eq!(b.remaining, r.min(MAX_LIMIT));
        }
    }

    /// IETF policies: names of any length are kept bounded and stay distinct; counts and windows within caps.
    #[test]
    fn ietf_policy_names_are_bounded_and_distinct(
        names in proptest::collection::vec("[a-z][a-z0-9]{0,300}", 1..10),
        r in 0u64..100,
        t in 0u64..10_000_000,
    ) {
        let state: Vec<String> = names.iter().map(|n| format!("{n};r={r};t={t}")).collect();
        let mut headers = HeaderMap::new();
        headers.insert("ratelimit", HeaderValue::from_str(&state.join(", ")).unwrap());
        let obs = Ietf::new().observe(StatusCode::OK, &headers, None);
        within_bounds(StatusCode::OK, &obs)?;
        let mut distinct: Vec<&str> = names.iter().take(8).map(String::as_str).collect();
        distinct.sort_unstable();
        distinct.dedup();
        let mut kept: Vec<&str> = obs.buckets.iter().filter_map(|b| b.id.as_deref()).collect();
        kept.sort_unstable();
        kept.dedup();
        prop_assert_eq!(kept.len(), distinct.len(), "distinct names must stay distinct");
    }

    #[test]
    fn decimal_seconds_are_exact(whole in 0u64..1_000_000_000, millis in 0u64..1000) {
        prop_assert_eq!(parse_seconds(&format!("{whole}.{millis:03}")), Some(whole * 1_000_000 + millis * 1000));
        prop_assert_eq!(parse_seconds(&whole.to_string()), Some(whole * 1_000_000));
    }
}
