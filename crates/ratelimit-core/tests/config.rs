//! Configuration files: what is written reads back the same (TOML and JSON, random policies), and every
//! kind of bad value is refused with the path of the value and what to write instead.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::time::Duration;

use proptest::prelude::*;
use ratelimit_core::config::{self, ConfigError};
use ratelimit_core::{AlgorithmKind, Policy, PolicySet, Quota};
use serde::{Deserialize, Serialize};

#[derive(Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Tier {
    policies: PolicySet,
}

#[derive(Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    tiers: BTreeMap<String, Tier>,
}

fn toml(text: &str) -> Result<File, ConfigError> {
    config::from_deserializer(toml::Deserializer::parse(text).unwrap())
}

fn json(text: &str) -> Result<File, ConfigError> {
    config::from_deserializer(&mut serde_json::Deserializer::from_str(text))
}

#[test]
fn the_documented_forms_read_as_the_builders_build() {
    let file = toml(
        r#"
        [tiers.free]
        policies = [
            { name = "hourly", algorithm = "gcra", limit = 100, per = "1h", burst = 200 },
            { name = "burst", rate = "10/s" },
            { name = "daily", algorithm = "fixed_window", rate = "10000/day" },
            { name = "smooth", algorithm = "shaper", rate = { limit = 5, per = "1s", burst = 2 }, max_delay = "500ms" },
        ]
        "#,
    )
    .unwrap();
    let expected = PolicySet::new([
        Policy::gcra("hourly", Quota::per_hour(100).burst(200).build().unwrap()).unwrap(),
        Policy::gcra("burst", Quota::per_second(10).build().unwrap()).unwrap(),
        Policy::fixed_window("daily", Quota::per_day(10_000).build().unwrap()).unwrap(),
        Policy::shaper(
            "smooth",
            Quota::per_second(5).burst(2).build().unwrap(),
            Duration::from_millis(500),
        )
        .unwrap(),
    ])
    .unwrap();
    assert_eq!(file.tiers["free"].policies, expected);
}

/// Each bad value, the path the error must name, and a piece of the fix it must suggest.
const BAD_FILES: &[(&str, &str, &str)] = &[
    (
        r#"{ name = "h", limit = 100, per = "10x" }"#,
        "tiers.free.policies[0].per",
        "e.g. \"1h\"",
    ),
    (
        r#"{ name = "h", limit = 100, per = 60 }"#,
        "tiers.free.policies[0].per",
        "\"60s\"",
    ),
    (
        r#"{ name = "h", rate = "100 per hour" }"#,
        "tiers.free.policies[0].rate",
        "limit/period",
    ),
    (
        r#"{ name = "h", rate = "lots/h" }"#,
        "tiers.free.policies[0].rate",
        "whole number",
    ),
    (
        r#"{ name = "h", rate = "0/h" }"#,
        "tiers.free.policies[0].rate",
        "at least 1 unit",
    ),
    (
        r#"{ name = "h", algorithm = "gcrah", rate = "1/s" }"#,
        "tiers.free.policies[0]",
        "use one of gcra",
    ),
    (
        r#"{ name = "h", rate = "1/s", limt = 5 }"#,
        "tiers.free.policies[0].limt",
        "unknown field",
    ),
    (
        r#"{ name = "h", limit = 5 }"#,
        "tiers.free.policies[0]",
        "add per",
    ),
    (r#"{ name = "h" }"#, "tiers.free.policies[0]", "give rate"),
    (
        r#"{ name = "h", rate = "1/s", limit = 1, per = "1s" }"#,
        "tiers.free.policies[0]",
        "keep one",
    ),
    (
        r#"{ name = "h", algorithm = "sliding_log", rate = "5/s", burst = 9 }"#,
        "tiers.free.policies[0]",
        "no separate burst",
    ),
    (
        r#"{ name = "h", algorithm = "shaper", rate = "5/s" }"#,
        "tiers.free.policies[0]",
        "needs max_delay",
    ),
    (
        r#"{ name = "h", rate = "5/s", max_delay = "1s" }"#,
        "tiers.free.policies[0]",
        "\"shaper\" only",
    ),
    (
        r#"{ name = "bad name!", rate = "5/s" }"#,
        "tiers.free.policies[0]",
        "1 to 64 characters",
    ),
    (
        r#"{ name = "h", rate = "5/s" }, { name = "h", rate = "9/s" }"#,
        "tiers.free.policies",
        "appears twice",
    ),
    (
        r#"{ name = "h", rate = "2000000/s" }"#,
        "tiers.free.policies[0].rate",
        "at most 1,000,000 per second",
    ),
];

#[test]
fn bad_values_name_their_path_and_the_fix() {
    for (policies, path, fix) in BAD_FILES {
        let text = format!("[tiers.free]\npolicies = [{policies}]\n");
        let err = toml(&text).expect_err(&text);
        assert_eq!(err.path(), *path, "{text}\n→ {err}");
        assert!(
            err.message().contains(fix),
            "{text}\n→ {err}\n(wanted {fix:?})"
        );
        assert!(err.to_string().starts_with(&format!("{path}: ")), "{err}");
    }
    let empty = toml("[tiers.free]\npolicies = []\n").unwrap_err();
    assert_eq!(empty.path(), "tiers.free.policies");
    assert!(empty.message().contains("limits nothing"), "{empty}");
}

#[test]
fn json_names_the_same_paths() {
    let err = json(r#"{ "tiers": { "pro": { "policies": [{ "name": "h", "rate": "1/s" }, { "name": "d", "per": "1d", "limit": 0 }] } } }"#)
        .unwrap_err();
    assert_eq!(err.path(), "tiers.pro.policies[1]");
    assert!(err.message().contains("limit is 0"), "{err}");
}

fn period() -> impl Strategy<Value = Duration> {
    prop_oneof![
        (1u64..1_000).prop_map(Duration::from_millis),
        (1u64..100_000).prop_map(Duration::from_secs),
        (1u64..48).prop_map(|h| Duration::from_secs(h * 3600)),
        (1u64..1_000_000).prop_map(Duration::from_micros),
    ]
}

fn policy(name: String) -> impl Strategy<Value = Option<Policy>> {
    (
        0usize..7,
        1u64..10_000,
        period(),
        proptest::option::of(1u64..20_000),
        any::<bool>(),
    )
        .prop_map(move |(algorithm, limit, per, burst, penalise)| {
            let mut quota = Quota::new(limit, per);
            if let Some(b) = burst {
                quota = quota.burst(b);
            }
            let quota = quota.build().ok()?;
            let kind = match algorithm {
                0 => AlgorithmKind::Gcra,
                1 => AlgorithmKind::TokenBucket,
                2 => AlgorithmKind::LeakyBucket,
                3 => AlgorithmKind::Shaper { max_delay: per },
                4 => AlgorithmKind::FixedWindow,
                5 => AlgorithmKind::SlidingLog,
                _ => AlgorithmKind::SlidingWindow,
            };
            Some(Policy::new(&name, kind, quota).ok()?.penalise(penalise))
        })
}

fn policy_set() -> impl Strategy<Value = Option<PolicySet>> {
    (1usize..5).prop_flat_map(|n| {
        (0..n)
            .map(|i| policy(format!("p{i}")))
            .collect::<Vec<_>>()
            .prop_map(|ps| PolicySet::new(ps.into_iter().collect::<Option<Vec<_>>>()?).ok())
    })
}

proptest! {
    #[test]
    fn what_is_written_reads_back_the_same(set in policy_set()) {
        let Some(set) = set else { return Ok(()) };
        let file = File { tiers: BTreeMap::from([("t".to_owned(), Tier { policies: set })]) };
        let as_toml = toml::to_string(&file).unwrap();
        prop_assert_eq!(&toml(&as_toml).unwrap(), &file, "{}", as_toml);
        let as_json = serde_json::to_string(&file).unwrap();
        prop_assert_eq!(&json(&as_json).unwrap(), &file, "{}", as_json);
    }

    #[test]
    fn quotas_read_back_from_either_form(limit in 1u64..1_000_000, per in period(), burst in proptest::option::of(1u64..1_000_000)) {
        let mut q = Quota::new(limit, per);
        if let Some(b) = burst { q = q.burst(b); }
        let Ok(q) = q.build() else { return Ok(()) };
        let text = serde_json::to_string(&q).unwrap();
        let back: Quota = serde_json::from_str(&text).unwrap();
        prop_assert_eq!(back, q, "{}", text);
    }

    #[test]
    fn arbitrary_text_never_panics(text in "\\PC{0,40}") {
        let _ = serde_json::from_value::<Quota>(serde_json::Value::String(text.clone()));
        let _ = config::parse_period(&text);
    }
}
