//! The layer's configuration file (`config::LayerConfig`): what is written reads back the same (TOML,
//! JSON and YAML), every kind of bad value is refused with its path and the fix, and a layer built from a file
//! enforces what the file says over real HTTP on loopback. (The proxy checks behind `trusted_proxies`
//! are tested through the API in tests/proxies.rs.)
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use axum::routing::get;
use axum::Router;
use http::StatusCode;
use ratelimit_core::config::ConfigError;
use ratelimit_core::{Policy, PolicySet, Quota};
use ratelimit_tower::config::LayerConfig;
use ratelimit_tower::key::TrustedProxies;
use ratelimit_tower::{OnFailure, RateLimitLayer, Tier};

/// Every part of the schema.
const FULL: &str = r#"
trusted_proxies = ["127.0.0.0/8", "fd00::/8"]
on_store_error = "allow"

[default]
policies = [{ name = "hourly", algorithm = "gcra", limit = 3, per = "1h", burst = 4 }]

[tiers.free]
policies = [{ name = "hourly", rate = "5/h" }]

[tiers.pro]
policies = [
    { name = "hourly", algorithm = "gcra", rate = "10/h", burst = 20 },
    { name = "daily", algorithm = "fixed_window", rate = "100/d" },
]

[global_cap]
policies = [{ name = "global", rate = "1000/h" }]

[costs]
"/v1/report" = 2
"/users/{id}" = 3
"#;

fn toml(text: &str) -> Result<LayerConfig, ConfigError> {
    LayerConfig::from_toml(text)
}

fn json(text: &str) -> Result<LayerConfig, ConfigError> {
    LayerConfig::from_deserializer(&mut serde_json::Deserializer::from_str(text))
}

fn set(policies: impl IntoIterator<Item = Policy>) -> PolicySet {
    PolicySet::new(policies).unwrap()
}

#[test]
fn the_documented_schema_reads_as_the_builders_build() {
    let config = toml(FULL).unwrap();
    let gcra = |name, quota: Quota| Policy::gcra(name, quota).unwrap();
    assert_eq!(
        config.default_policies(),
        &set([gcra("hourly", Quota::per_hour(3).burst(4).build().unwrap())])
    );
    assert_eq!(
        config.tier_policies("pro").unwrap(),
        &set([
            gcra("hourly", Quota::per_hour(10).burst(20).build().unwrap()),
            Policy::fixed_window("daily", Quota::per_day(100).build().unwrap()).unwrap(),
        ])
    );
    let names: Vec<&str> = config.named_tiers().map(|(n, _)| n).collect();
    assert_eq!(names, ["free", "pro"]);
    assert_eq!(
        config.global_cap().unwrap(),
        &set([gcra("global", Quota::per_hour(1000).build().unwrap())])
    );
    assert_eq!(
        config.trusted_proxies(),
        ["127.0.0.0/8".parse().unwrap(), "fd00::/8".parse().unwrap()]
    );
    assert!(!config.trusts_any_proxy());
    assert_eq!(config.on_store_error(), Some(OnFailure::Allow));
    let costs = config.route_costs();
    assert_eq!(costs.get("/v1/report"), 2);
    assert_eq!(costs.get("/users/{id}"), 3);
    assert_eq!(costs.get("/v1/hello"), 1);

    // What the builder gets.
    let tiers = config.tiers();
    assert_eq!(tiers.default_policies(), config.default_policies());
    assert_eq!(tiers.tier_policies("free"), config.tier_policies("free"));
    assert_eq!(tiers.global_cap_policies(), config.global_cap());
    assert_eq!(
        config.client_ip().proxies(),
        &TrustedProxies::cidrs(["127.0.0.0/8", "fd00::/8"]).unwrap()
    );
    assert!(config
        .check_cost_routes(&["/v1/report", "/users/{id}"])
        .is_ok());

    // The smallest file: a default tier; the peer is the client.
    let small = toml("[default]\npolicies = [{ name = \"h\", rate = \"1/s\" }]").unwrap();
    assert_eq!(small.named_tiers().count(), 0);
    assert!(small.global_cap().is_none() && small.route_costs().is_empty());
    assert_eq!(small.on_store_error(), None);
    assert_eq!(small.client_ip().proxies(), &TrustedProxies::None);
    let any =
        toml("trust_any_proxy = true\n[default]\npolicies = [{ name = \"h\", rate = \"1/s\" }]")
            .unwrap();
    assert_eq!(any.client_ip().proxies(), &TrustedProxies::Hops(1));
}

#[test]
fn what_is_written_reads_back_the_same() {
    let any = FULL.replace(
        r#"trusted_proxies = ["127.0.0.0/8", "fd00::/8"]"#,
        "trust_any_proxy = true",
    );
    for text in [FULL, &any] {
        let config = toml(text).unwrap();
        let written = ::toml::to_string(&config).unwrap();
        assert_eq!(toml(&written).unwrap(), config, "{written}");
        let written = serde_json::to_string(&config).unwrap();
        assert_eq!(json(&written).unwrap(), config, "{written}");
        // And as a part of an application's own configuration.
        #[derive(serde::Deserialize)]
        #[serde(deny_unknown_fields)]
        struct App {
            rate_limit: LayerConfig,
        }
        let app: App = serde_json::from_str(&format!(r#"{{ "rate_limit": {written} }}"#)).unwrap();
        assert_eq!(app.rate_limit, config);
    }
}

/// A valid default tier, to which each bad case adds its line.
const DEFAULT: &str = "[default]\npolicies = [{ name = \"hourly\", rate = \"3/h\" }]\n";

/// Each bad document, the path the error must name, and a piece of the fix it must give.
fn bad_documents() -> Vec<(String, &'static str, &'static str)> {
    let with = |s: &str| format!("{s}\n{DEFAULT}");
    let after = |s: &str| format!("{DEFAULT}{s}\n");
    vec![
        // The document.
        ("[tiers.free]\npolicies = [{ name = \"h\", rate = \"1/s\" }]".into(), "default", "add one for clients without a tier"),
        (with("trusted_proxy = []"), "trusted_proxy", "unknown field `trusted_proxy`, expected one of"),
        (after("[defaults]\npolicies = []"), "defaults", "unknown field"),
        ("[default\n".into(), "line 1, column 9", "not TOML"),
        (after("[tiers.free]\npolicies = [{ name = \"h\" rate = \"1/s\" }]"), "line 4, column 26", "not TOML: missing comma"),
        // Policies (read by ratelimit-core).
        (after("[tiers.free]\npolicies = [{ name = \"h\", algorithm = \"gcrah\", rate = \"1/s\" }]"), "tiers.free.policies[0]", "use one of gcra"),
        (after("[tiers.free]\npolicies = [{ name = \"h\", rate = \"1/s\", brust = 2 }]"), "tiers.free.policies[0].brust", "unknown field `brust`"),
        (after("[tiers.free]\npolicies = [{ name = \"h\", limit = 5, per = \"10x\" }]"), "tiers.free.policies[0].per", "e.g. \"1h\""),
        (after("[tiers.free]\npolicies = []"), "tiers.free.policies", "limits nothing"),
        (after("[tiers.free]\npolicies = [{ name = \"h\", rate = \"1/s\" }]\nburst = 3"), "tiers.free.burst", "expected `policies`"),
        ("[default]\npolicies = [{ name = \"h\", algorithm = \"shaper\", rate = \"1/s\", max_delay = \"1s\" }]".into(), "default.policies[0].algorithm", "use algorithm = \"gcra\" or \"token_bucket\""),
        (after("[tiers.free]\npolicies = [{ name = \"h\", rate = \"1/s\" }, { name = \"s\", algorithm = \"shaper\", rate = \"1/s\", max_delay = \"1s\" }]"), "tiers.free.policies[1].algorithm", "is a shaper"),
        // Tier names.
        (after("[tiers.\"Pro plan\"]\npolicies = [{ name = \"h\", rate = \"1/s\" }]"), "tiers.Pro plan", "1 to 64 characters"),
        (after("[tiers.default]\npolicies = [{ name = \"h\", rate = \"1/s\" }]"), "tiers.default", "give this tier another name"),
        // The global cap.
        (after("[global_cap]\npolicies = [{ name = \"hourly\", rate = \"1000/h\" }]"), "global_cap.policies[0].name", "\"hourly\" is also the name of a policy of default: both appear in one RateLimit header, so rename one"),
        (after("[tiers.pro]\npolicies = [{ name = \"daily\", rate = \"9/d\" }]\n[global_cap]\npolicies = [{ name = \"g\", rate = \"9/s\" }, { name = \"daily\", rate = \"1000/d\" }]"), "global_cap.policies[1].name", "a policy of tiers.pro"),
        // Costs.
        (after("[costs]\n\"/v1/report\" = 0"), "costs./v1/report", "give a cost of at least 1"),
        (after("[costs]\n\"/v1/report\" = -2"), "costs./v1/report", "expected u64"),
        (after("[costs]\n\"/v1/report\" = \"10\""), "costs./v1/report", "expected u64"),
        (after("[costs]\n\"v1/report\" = 2"), "costs.v1/report", "does not start with '/': write it as the router matches it, e.g. \"/v1/report\""),
        (after("[costs]\n\"/v1/report?full=1\" = 2"), "costs./v1/report?full=1", "write \"/v1/report\""),
        (after("[costs]\n\"/v1/a report\" = 2"), "costs./v1/a report", "space or a control character"),
        // Trusted proxies.
        (with("trusted_proxies = [\"10.0.0.0/8\", \"10.0.0.0/33\"]"), "trusted_proxies[1]", "invalid CIDR \"10.0.0.0/33\": write an address"),
        (with("trusted_proxies = [\"lb.internal\"]"), "trusted_proxies[0]", "e.g. \"10.0.0.0/8\""),
        (with("trusted_proxies = \"10.0.0.0/8\""), "trusted_proxies", "expected a sequence"),
        (with("trusted_proxies = [\"0.0.0.0/0\"]"), "trusted_proxies[0]", "0.0.0.0/0 contains every address: any client could write its own X-Forwarded-For"),
        (with("trusted_proxies = [\"fd00::/8\", \"::/0\"]"), "trusted_proxies[1]", "trust_any_proxy = true"),
        (with("trusted_proxies = [\"0.0.0.0/1\"]"), "trusted_proxies[0]", "spans the public networks of many organisations"),
        (with("trusted_proxies = [\"2000::/3\"]"), "trusted_proxies[0]", "spans the public networks"),
        (with("trust_any_proxy = true\ntrusted_proxies = [\"10.0.0.0/8\"]"), "trust_any_proxy", "keep one of them"),
        (with("trust_any_proxy = \"yes\""), "trust_any_proxy", "expected a boolean"),
        // Store failures.
        (with("on_store_error = \"fail_open\""), "on_store_error", "unknown variant `fail_open`, expected one of `allow`, `error`"),
        (with("on_store_error = \"local\""), "on_store_error", "is the Redis store's own setting"),
    ]
}

#[test]
fn bad_values_name_their_path_and_the_fix() {
    for (text, path, fix) in bad_documents() {
        let err = toml(&text).expect_err(&text);
        assert_eq!(err.path(), path, "{text}\n→ {err}");
        assert!(
            err.message().contains(fix),
            "{text}\n→ {err}\n(wanted {fix:?})"
        );
        assert!(!err.message().contains('\n'), "one line: {err:?}");
        assert_eq!(err.to_string(), format!("{path}: {}", err.message()));
    }
}

#[test]
fn json_names_the_same_paths_and_an_embedded_config_its_own_field() {
    let err = json(
        r#"{ "default": { "policies": [{ "name": "hourly", "rate": "3/h" }] },
             "global_cap": { "policies": [{ "name": "hourly", "rate": "9/h" }] } }"#,
    )
    .unwrap_err();
    assert_eq!(err.path(), "global_cap.policies[0].name");
    let err = json(r#"{ "default": { "policies": [] } }"#).unwrap_err();
    assert_eq!(err.path(), "default.policies");
    let err = json(&format!(
        r#"{{ "default": {{ "policies": [{{ "name": "h", "rate": "3/h" }}] }}, "trusted_proxies": ["{}"] }}"#,
        "::/0"
    ))
    .unwrap_err();
    assert_eq!(err.path(), "trusted_proxies[0]");

    #[derive(Debug, serde::Deserialize)]
    #[allow(dead_code)]
    struct App {
        rate_limit: LayerConfig,
    }
    let err = ratelimit_core::config::from_deserializer::<App, _>(
        &mut serde_json::Deserializer::from_str(
            r#"{ "rate_limit": { "default": { "policies": [{ "name": "h", "rate": "3/h" }] },
                                 "costs": { "/x": 0 } } }"#,
        ),
    )
    .unwrap_err();
    assert_eq!(err.path(), "rate_limit");
    assert!(err.message().starts_with("costs./x: a cost of 0"), "{err}");
}

#[test]
fn cost_routes_can_be_checked_against_the_application() {
    let config = toml(FULL).unwrap();
    let err = config
        .check_cost_routes(&["/v1/hello", "/v1/report"])
        .unwrap_err();
    assert_eq!(err.path(), "costs./users/{id}");
    assert_eq!(
        err.message(),
        "unknown route \"/users/{id}\": the routes are /v1/hello, /v1/report"
    );
}

// ---------------------------------------------------------------------------------------------------------
// A layer built from a file, over HTTP.

/// The file `FULL` as written to disk, read back, and served: tiers picked by an `x-tier` header (the
/// test's stand-in for authentication), clients behind the loopback "proxy" keyed by `X-Forwarded-For`.
async fn serve_file(text: &str) -> std::net::SocketAddr {
    let path = std::env::temp_dir().join(format!(
        "ratelimit-tower-config-{}-{:p}.toml",
        std::process::id(),
        text
    ));
    std::fs::write(&path, text).unwrap();
    let read = std::fs::read_to_string(&path).unwrap();
    std::fs::remove_file(&path).unwrap();
    let config = LayerConfig::from_toml(&read).unwrap();
    let layer = config
        .configure(RateLimitLayer::builder())
        .tier_fn(|req| {
            let tier = req.headers().get("x-tier")?.to_str().ok()?;
            Some(Tier::new(tier))
        })
        .build()
        .unwrap();
    let app = Router::new()
        .route("/v1/hello", get(|| async { "hello" }))
        .route("/v1/report", get(|| async { "report" }))
        .route("/users/{id}", get(|| async { "user" }))
        .layer(layer);
    common::serve(app).await
}

#[tokio::test]
async fn a_layer_from_a_file_enforces_what_the_file_says() {
    let addr = serve_file(FULL).await;
    let c = common::client();
    let hello = |client: &'static str, tier: &'static str| {
        let mut h = vec![("x-forwarded-for", client)];
        if !tier.is_empty() {
            h.push(("x-tier", tier));
        }
        h
    };

    // The default tier: a burst of 4, then 429 with an hour / 3 to wait.
    for remaining in (0..4).rev() {
        let r = common::get(&c, addr, "/v1/hello", &hello("203.0.113.1", "")).await;
        assert_eq!(r.status, StatusCode::OK);
        let rl = common::sf_list(&r.headers, "ratelimit");
        assert_eq!(rl[0].name, "hourly");
        assert_eq!(rl[0].int("r"), Some(remaining));
        assert_eq!(rl[1].name, "global", "the global cap is in the same header");
    }
    let r = common::get(&c, addr, "/v1/hello", &hello("203.0.113.1", "")).await;
    assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(r.header("retry-after"), Some("1200"));

    // Behind the trusted loopback proxy, another client is another bucket; a forged left-most element
    // changes nothing (the right-most untrusted hop is the client).
    let r = common::get(&c, addr, "/v1/hello", &hello("6.6.6.6, 203.0.113.1", "")).await;
    assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS);
    let r = common::get(&c, addr, "/v1/hello", &hello("203.0.113.2", "")).await;
    assert_eq!(r.status, StatusCode::OK);

    // The pro tier: both policies, and /v1/report costs 2, /users/{id} 3 (whatever the id).
    let pro = hello("203.0.113.3", "pro");
    let r = common::get(&c, addr, "/v1/report", &pro).await;
    let rl = common::sf_list(&r.headers, "ratelimit");
    let names: Vec<&str> = rl.iter().map(|i| i.name.as_str()).collect();
    assert_eq!(names, ["hourly", "daily", "global"]);
    assert_eq!((rl[0].int("r"), rl[1].int("r")), (Some(18), Some(98)));
    let r = common::get(&c, addr, "/users/42?x=1", &pro).await;
    assert_eq!(
        common::sf_list(&r.headers, "ratelimit")[0].int("r"),
        Some(15)
    );
    let policy = common::sf_list(&r.headers, "ratelimit-policy");
    assert_eq!(policy[0].int("q"), Some(20));

    // The free tier: 5 an hour.
    let free = hello("203.0.113.4", "free");
    for _ in 0..5 {
        assert_eq!(
            common::get(&c, addr, "/v1/hello", &free).await.status,
            StatusCode::OK
        );
    }
    assert_eq!(
        common::get(&c, addr, "/v1/hello", &free).await.status,
        StatusCode::TOO_MANY_REQUESTS
    );
}

/// `on_store_error` reaches the layer: a store that always fails answers 503 by default (and with
/// `"error"`), and lets requests through with `"allow"`.
#[tokio::test]
async fn on_store_error_from_the_file_reaches_the_layer() {
    let c = common::client();
    for (line, status) in [
        ("", StatusCode::SERVICE_UNAVAILABLE),
        (
            "on_store_error = \"error\"",
            StatusCode::SERVICE_UNAVAILABLE,
        ),
        ("on_store_error = \"allow\"", StatusCode::OK),
    ] {
        let config = toml(&format!("{line}\n{DEFAULT}")).unwrap();
        let layer = config
            .configure(RateLimitLayer::with_store(common::FailingStore))
            .build()
            .unwrap();
        let addr = common::serve(
            Router::new()
                .route("/", get(|| async { "ok" }))
                .layer(layer),
        )
        .await;
        assert_eq!(
            common::get(&c, addr, "/", &[]).await.status,
            status,
            "{line:?}"
        );
    }
}

// ---------------------------------------------------------------------------------------------------------
// Round trips of generated documents.

mod generated {
    use std::fmt::Write as _;

    use proptest::prelude::*;

    use super::{json, toml, LayerConfig};

    /// A policy as TOML, named `name`: each algorithm, the `rate` and table forms, bursts where allowed
    /// (limits × periods within what the exact algorithms accept: under 2^53 µs).
    fn policy(name: String) -> impl Strategy<Value = String> {
        let algorithm = prop::sample::select(vec![
            "gcra",
            "token_bucket",
            "leaky_bucket",
            "fixed_window",
            "sliding_log",
            "sliding_window",
        ]);
        let period = prop::sample::select(vec!["500ms", "1s", "10s", "1m", "1h", "1d"]);
        (
            algorithm,
            1u64..10_000,
            period,
            prop::option::of(1u64..10_000),
            any::<bool>(),
            any::<bool>(),
        )
            .prop_map(move |(algorithm, limit, per, burst, table, penalise)| {
                let mut p = format!("{{ name = \"{name}\", algorithm = \"{algorithm}\"");
                if table {
                    let _ = write!(p, ", limit = {limit}, per = \"{per}\"");
                } else {
                    let _ = write!(p, ", rate = \"{limit}/{per}\"");
                }
                match burst {
                    Some(b) if !algorithm.contains("window") && !algorithm.contains("log") => {
                        let _ = write!(p, ", burst = {b}");
                    }
                    _ => {}
                }
                if penalise {
                    p.push_str(", penalise = true");
                }
                p.push_str(" }");
                p
            })
    }

    /// A non-empty policy list whose names start with `prefix`.
    fn policies(prefix: &'static str) -> impl Strategy<Value = String> {
        (1usize..4)
            .prop_flat_map(move |n| {
                (0..n)
                    .map(|i| policy(format!("{prefix}{i}")))
                    .collect::<Vec<_>>()
            })
            .prop_map(|ps| format!("policies = [{}]", ps.join(", ")))
    }

    fn document() -> impl Strategy<Value = String> {
        let proxies = prop::sample::subsequence(
            vec![
                "10.0.0.0/8",
                "172.16.0.0/12",
                "192.168.1.7",
                "fd00::/8",
                "2001:db8::/32",
            ],
            0..4,
        );
        let tiers = prop::collection::btree_map("[a-z][a-z0-9_.:-]{0,12}", policies("t"), 0..4);
        let costs = prop::collection::btree_map("/[a-z0-9/{}_-]{0,20}", 1u64..1000, 0..4);
        let on_store_error = prop::sample::select(vec!["", "allow", "error"]);
        (
            proxies,
            policies("d"),
            tiers,
            prop::option::of(policies("g")),
            costs,
            on_store_error,
        )
            .prop_filter("\"default\" is not a tier name", |(_, _, tiers, ..)| {
                !tiers.contains_key("default")
            })
            .prop_map(|(proxies, default, tiers, cap, costs, on_store_error)| {
                let mut d = String::new();
                let quoted: Vec<String> = proxies.iter().map(|p| format!("{p:?}")).collect();
                let _ = writeln!(d, "trusted_proxies = [{}]", quoted.join(", "));
                if !on_store_error.is_empty() {
                    let _ = writeln!(d, "on_store_error = {on_store_error:?}");
                }
                let _ = writeln!(d, "[default]\n{default}");
                for (name, set) in tiers {
                    let _ = writeln!(d, "[tiers.{name:?}]\n{set}");
                }
                if let Some(cap) = cap {
                    let _ = writeln!(d, "[global_cap]\n{cap}");
                }
                let _ = writeln!(d, "[costs]");
                for (route, cost) in costs {
                    let _ = writeln!(d, "{route:?} = {cost}");
                }
                d
            })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(128))]

        /// Every valid document reads, and what it reads writes back (TOML and JSON) to the same.
        #[test]
        fn generated_documents_round_trip(text in document()) {
            let config: LayerConfig = toml(&text).map_err(|e| TestCaseError::fail(format!("{text}\n→ {e}")))?;
            let written = ::toml::to_string(&config).unwrap();
            prop_assert_eq!(&toml(&written).unwrap(), &config, "{}", written);
            let written = serde_json::to_string(&config).unwrap();
            prop_assert_eq!(&json(&written).unwrap(), &config, "{}", written);
        }
    }
}

/// `FULL` written in YAML.
const FULL_YAML: &str = r#"
trusted_proxies: ["127.0.0.0/8", "fd00::/8"]
on_store_error: allow
default:
  policies:
    - { name: hourly, algorithm: gcra, limit: 3, per: 1h, burst: 4 }
tiers:
  free:
    policies: [{ name: hourly, rate: 5/h }]
  pro:
    policies:
      - { name: hourly, algorithm: gcra, rate: 10/h, burst: 20 }
      - { name: daily, algorithm: fixed_window, rate: 100/d }
global_cap:
  policies: [{ name: global, rate: 1000/h }]
costs:
  /v1/report: 2
  "/users/{id}": 3
"#;

fn yaml(text: &str) -> Result<LayerConfig, ConfigError> {
    LayerConfig::from_deserializer(serde_norway::Deserializer::from_str(text))
}

#[test]
fn yaml_reads_as_toml_does_and_names_the_same_paths() {
    assert_eq!(yaml(FULL_YAML).unwrap(), toml(FULL).unwrap());
    let bad = FULL_YAML.replace("rate: 10/h", "rate: 10/fortnight");
    let err = yaml(&bad).unwrap_err();
    assert_eq!(err.path(), "tiers.pro.policies[0].rate", "{err}");
    let bad = FULL_YAML.replace("\"fd00::/8\"", "\"::/0\"");
    assert_eq!(yaml(&bad).unwrap_err().path(), "trusted_proxies[1]");
}
