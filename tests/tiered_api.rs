//! The `tiered_api` example's router, served in-process on 127.0.0.1 and driven by a real HTTP client
//! (reqwest): each tier's burst and its 429, the expensive route's cost, `/health`, the 401 for unknown
//! keys, per-IP limits for anonymous clients, the global cap, `/metrics`, and the same server on a real
//! `redis-server` shared by two instances. Headers are parsed with `sfv` (RFC 9651). Tier limits are small
//! and hourly, so nothing refills while a test runs.
//!
//! Also: reloading the tier file while serving (counters kept), the tier file's validation (every rejected
//! file names the path of the bad value and what to change), `REDIS_URL` parsing, and that the shipped
//! `tiers.toml` holds the documented figures.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[allow(dead_code)]
#[path = "../examples/tiered_api/app.rs"]
mod app;
use ratelimit_test_support::redis_server;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use app::{Config, Hello, StoreTarget};
use ratelimit_core::{MemoryStore, PolicySet, Store};
use redis_server::RedisServer;
use reqwest::header::HeaderMap;
use reqwest::StatusCode;

/// Small limits: anonymous 4 at once, free 6, pro 20, enterprise 60 (each 2× its hourly rate); the
/// report route costs 3.
const TEST_TIERS: &str = r#"
[default]
policies = [{ name = "hourly", algorithm = "gcra", limit = 2, per = "1h", burst = 4 }]

[tiers.free]
policies = [{ name = "hourly", algorithm = "gcra", limit = 3, per = "1h", burst = 6 }]

[tiers.pro]
policies = [{ name = "hourly", algorithm = "gcra", limit = 10, per = "1h", burst = 20 }]

[tiers.enterprise]
policies = [{ name = "hourly", algorithm = "gcra", limit = 30, per = "1h", burst = 60 }]

[global_cap]
policies = [{ name = "global", algorithm = "gcra", limit = 100000, per = "1h" }]

[costs]
"/v1/report" = 3

[[keys]]
key = "free-demo"
tier = "free"
account = "demo-free"

[[keys]]
key = "free-second-key"
tier = "free"
account = "demo-free"

[[keys]]
key = "pro-demo"
tier = "pro"
account = "demo-pro"

[[keys]]
key = "enterprise-demo"
tier = "enterprise"
account = "demo-enterprise"
"#;

fn config(text: &str) -> Config {
    Config::parse(text, "test.toml").unwrap()
}

/// A server on a free loopback port; aborted on drop.
struct Server {
    base: String,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn serve_with<S: Store<[u8], PolicySet> + 'static>(cfg: &Config, store: S) -> Server {
    let (router, _reloader) = app::router(cfg, store, app::prometheus().unwrap()).unwrap();
    serve_router(router).await
}

async fn serve_router(router: axum::Router) -> Server {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        axum::serve(
            listener,
            router.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .await
        .unwrap();
    });
    Server {
        base: format!("http://{addr}"),
        task,
    }
}

async fn serve(text: &str) -> Server {
    serve_with(&config(text), MemoryStore::new()).await
}

/// A client whose connections come from `ip` (any 127.x address works on loopback).
fn client_from(ip: Ipv4Addr) -> reqwest::Client {
    reqwest::Client::builder()
        .local_address(IpAddr::V4(ip))
        .no_proxy()
        .build()
        .unwrap()
}

fn client() -> reqwest::Client {
    client_from(Ipv4Addr::LOCALHOST)
}

enum Auth<'a> {
    None,
    Header(&'a str),
    Bearer(&'a str),
    Raw(&'a str),
}

struct Reply {
    status: StatusCode,
    headers: HeaderMap,
    body: String,
}

async fn get(c: &reqwest::Client, url: &str, auth: Auth<'_>) -> Reply {
    let req = c.get(url);
    let req = match auth {
        Auth::None => req,
        Auth::Header(k) => req.header("x-api-key", k),
        Auth::Bearer(k) => req.header("authorization", format!("Bearer {k}")),
        Auth::Raw(v) => req.header("authorization", v),
    };
    let res = req.send().await.unwrap();
    Reply {
        status: res.status(),
        headers: res.headers().clone(),
        body: res.text().await.unwrap(),
    }
}

/// One structured-field list item: (name, [(param, integer)]).
type SfItem = (String, Vec<(String, i64)>);

/// Parses a `RateLimit` / `RateLimit-Policy` field with `sfv` and checks it is canonical RFC 9651.
fn sf_list(headers: &HeaderMap, name: &str) -> Vec<SfItem> {
    let joined = headers
        .get_all(name)
        .iter()
        .map(|v| v.to_str().unwrap())
        .collect::<Vec<_>>()
        .join(", ");
    assert!(!joined.is_empty(), "no {name} header");
    let list: sfv::List = sfv::Parser::new(&joined)
        .parse()
        .unwrap_or_else(|e| panic!("{name}: {joined:?}: {e}"));
    let again: Option<String> = sfv::FieldType::serialize(&list);
    assert_eq!(
        again.as_deref(),
        Some(joined.as_str()),
        "{name} is not canonical"
    );
    list.into_iter()
        .map(|e| match e {
            sfv::ListEntry::Item(item) => (
                item.bare_item.as_string().unwrap().as_str().to_owned(),
                item.params
                    .iter()
                    .map(|(k, v)| (k.as_str().to_owned(), i64::from(v.as_integer().unwrap())))
                    .collect(),
            ),
            sfv::ListEntry::InnerList(_) => panic!("{name}: unexpected inner list"),
        })
        .collect()
}

fn param(items: &[SfItem], policy: &str, p: &str) -> i64 {
    let (_, params) = items
        .iter()
        .find(|(n, _)| n == policy)
        .unwrap_or_else(|| panic!("policy {policy:?} not in {items:?}"));
    params
        .iter()
        .find(|(k, _)| k == p)
        .unwrap_or_else(|| panic!("no {p} on {policy:?}: {items:?}"))
        .1
}

fn retry_after(r: &Reply) -> u64 {
    r.headers
        .get("retry-after")
        .expect("429 without Retry-After")
        .to_str()
        .unwrap()
        .parse()
        .unwrap()
}

/// Sends `burst` requests that must all pass, counting `remaining` down; then one that must be limited.
async fn drain(
    c: &reqwest::Client,
    url: &str,
    auth: impl Fn() -> Auth<'static>,
    burst: i64,
    rate: i64,
) {
    for i in 0..burst {
        let r = get(c, url, auth()).await;
        assert_eq!(
            r.status,
            StatusCode::OK,
            "request {} of {burst}: {}",
            i + 1,
            r.body
        );
        let rl = sf_list(&r.headers, "ratelimit");
        assert_eq!(
            param(&rl, "hourly", "r"),
            burst - i - 1,
            "remaining after request {}",
            i + 1
        );
        // The capacity is advertised (so r never exceeds q), over the time the hourly rate takes to
        // grant it: twice the rate over two hours.
        let policy = sf_list(&r.headers, "ratelimit-policy");
        assert_eq!(param(&policy, "hourly", "q"), burst);
        assert_eq!(param(&policy, "hourly", "w"), 3600 * burst / rate);
        assert_eq!(param(&policy, "global", "q"), 100_000);
    }
    let r = get(c, url, auth()).await;
    assert_eq!(
        r.status,
        StatusCode::TOO_MANY_REQUESTS,
        "request {} of {burst}",
        burst + 1
    );
    // One unit comes back every hour / rate.
    assert_eq!(retry_after(&r), (3600 / rate) as u64);
}

#[tokio::test]
async fn each_tier_gets_twice_its_hourly_rate_at_once_then_429() {
    let s = serve(TEST_TIERS).await;
    let c = client();
    let url = format!("{}/v1/hello", s.base);
    drain(&c, &url, || Auth::Header("free-demo"), 6, 3).await;
    drain(&c, &url, || Auth::Bearer("pro-demo"), 20, 10).await;
    drain(&c, &url, || Auth::Header("enterprise-demo"), 60, 30).await;
    // Anonymous: per client IP.
    drain(&c, &url, || Auth::None, 4, 2).await;

    // Each tier's exhaustion touched no other: the pro account is limited, the anonymous IP too, yet a
    // second IP starts fresh.
    let other = client_from(Ipv4Addr::new(127, 0, 0, 2));
    let r = get(&other, &url, Auth::None).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(param(&sf_list(&r.headers, "ratelimit"), "hourly", "r"), 3);
    let hello: Hello = serde_json::from_str(&r.body).unwrap();
    assert_eq!(hello.tier, "anonymous");
    assert_eq!(hello.account, None);
}

#[tokio::test]
async fn the_429_says_when_to_come_back() {
    let s = serve(TEST_TIERS).await;
    let c = client();
    let url = format!("{}/v1/hello", s.base);
    for _ in 0..6 {
        assert_eq!(
            get(&c, &url, Auth::Header("free-demo")).await.status,
            StatusCode::OK
        );
    }
    let r = get(&c, &url, Auth::Header("free-demo")).await;
    assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS);
    // 3 per hour: the next unit is 1,200 s away, and RateLimit's t agrees with Retry-After.
    assert_eq!(retry_after(&r), 1200);
    let rl = sf_list(&r.headers, "ratelimit");
    assert_eq!(param(&rl, "hourly", "r"), 0);
    assert_eq!(param(&rl, "hourly", "t"), 1200);
    // 3 an hour with bursts of 6: the policy advertises its capacity, 6 over two hours.
    let policy = sf_list(&r.headers, "ratelimit-policy");
    assert_eq!(param(&policy, "hourly", "q"), 6);
    assert_eq!(param(&policy, "hourly", "w"), 7200);
    assert_eq!(r.headers["cache-control"], "no-store");
    assert_eq!(r.headers["content-type"], "application/problem+json");
    let body: serde_json::Value = serde_json::from_str(&r.body).unwrap();
    assert_eq!(body["status"], 429);
    assert_eq!(body["violated-policies"], serde_json::json!(["hourly"]));
    // A limited request charges nothing: still limited, same wait.
    let again = get(&c, &url, Auth::Header("free-demo")).await;
    assert_eq!(again.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(retry_after(&again), 1200);
}

#[tokio::test]
async fn the_report_route_costs_three() {
    let s = serve(TEST_TIERS).await;
    let c = client();
    let report = format!("{}/v1/report", s.base);
    let hello = format!("{}/v1/hello", s.base);
    let key = || Auth::Header("free-demo");
    let r = get(&c, &report, key()).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(param(&sf_list(&r.headers, "ratelimit"), "hourly", "r"), 3);
    // The global cap is charged the same cost.
    assert_eq!(
        param(&sf_list(&r.headers, "ratelimit"), "global", "r"),
        100_000 - 3
    );
    // A query string does not change the price (the cost follows the matched route).
    let r = get(&c, &format!("{report}?cheap=1"), key()).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(param(&sf_list(&r.headers, "ratelimit"), "hourly", "r"), 0);
    // 3 more units are 3 × 1,200 s away.
    let r = get(&c, &report, key()).await;
    assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(retry_after(&r), 3600);
    let r = get(&c, &hello, key()).await;
    assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(retry_after(&r), 1200);
}

#[tokio::test]
async fn health_and_metrics_are_never_limited() {
    let s = serve(TEST_TIERS).await;
    let c = client();
    for _ in 0..30 {
        let r = get(&c, &format!("{}/health", s.base), Auth::None).await;
        assert_eq!(r.status, StatusCode::OK);
        assert_eq!(r.body, "ok\n");
        assert!(r.headers.get("ratelimit").is_none());
        // Not even a bad key is looked at there.
        let r = get(&c, &format!("{}/health", s.base), Auth::Header("nope")).await;
        assert_eq!(r.status, StatusCode::OK);
    }
    // Nothing was charged to this IP: its first API request still has the full burst.
    let r = get(&c, &format!("{}/v1/hello", s.base), Auth::None).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(param(&sf_list(&r.headers, "ratelimit"), "hourly", "r"), 3);
    for _ in 0..3 {
        get(&c, &format!("{}/v1/hello", s.base), Auth::None).await;
    }
    assert_eq!(
        get(&c, &format!("{}/v1/hello", s.base), Auth::None)
            .await
            .status,
        StatusCode::TOO_MANY_REQUESTS
    );

    // /metrics: Prometheus text, with the limiter's counters (the recorder is process-wide, so other
    // tests' requests may be counted too: check presence, not exact numbers).
    let r = get(&c, &format!("{}/metrics", s.base), Auth::None).await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(r.headers["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/plain; version=0.0.4"));
    let count = |line_start: &str| -> f64 {
        r.body
            .lines()
            .find(|l| l.starts_with(line_start))
            .unwrap_or_else(|| panic!("no {line_start} in /metrics:\n{}", r.body))
            .rsplit(' ')
            .next()
            .unwrap()
            .parse()
            .unwrap()
    };
    assert!(count("ratelimit_requests_total{outcome=\"allowed\"}") >= 4.0);
    assert!(count("ratelimit_requests_total{outcome=\"limited\"}") >= 1.0);
    assert!(count("ratelimit_rejections_total{policy=\"hourly\"}") >= 1.0);
    assert!(r.body.contains("# TYPE ratelimit_requests_total counter"));
}

#[tokio::test]
async fn unknown_keys_get_401_and_no_bucket_of_their_own() {
    let s = serve(TEST_TIERS).await;
    let c = client();
    let url = format!("{}/v1/hello", s.base);
    let r = get(&c, &url, Auth::Header("not-a-key")).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert_eq!(r.headers["www-authenticate"], "Bearer realm=\"tiered_api\"");
    assert!(r.body.contains("unknown API key"), "{}", r.body);
    // The attempt was charged to this IP's anonymous bucket (4 at once).
    assert_eq!(param(&sf_list(&r.headers, "ratelimit"), "hourly", "r"), 3);
    let r = get(&c, &url, Auth::Bearer("also-not-a-key")).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    let r = get(&c, &url, Auth::Raw("Basic dXNlcjpwYXNz")).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert!(r.body.contains("malformed credential"), "{}", r.body);
    let r = get(&c, &url, Auth::Header("yet-another-key")).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    // Guessing more keys from this IP is rate limited like any anonymous traffic: a fresh key is not a
    // fresh bucket.
    let r = get(&c, &url, Auth::Header("a-fifth-key")).await;
    assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS);
    let r = get(&c, &url, Auth::None).await;
    assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS);
    // A valid key from the same IP is its own account, unaffected.
    let r = get(&c, &url, Auth::Header("free-demo")).await;
    assert_eq!(r.status, StatusCode::OK);
    let hello: Hello = serde_json::from_str(&r.body).unwrap();
    assert_eq!(
        (hello.account.as_deref(), hello.tier.as_str()),
        (Some("demo-free"), "free")
    );
}

#[tokio::test]
async fn keys_of_one_account_share_its_limits() {
    let s = serve(TEST_TIERS).await;
    let c = client();
    let url = format!("{}/v1/hello", s.base);
    for i in 0..6 {
        let key = if i % 2 == 0 {
            "free-demo"
        } else {
            "free-second-key"
        };
        assert_eq!(
            get(&c, &url, Auth::Header(key)).await.status,
            StatusCode::OK
        );
    }
    assert_eq!(
        get(&c, &url, Auth::Bearer("free-second-key")).await.status,
        StatusCode::TOO_MANY_REQUESTS
    );
}

#[tokio::test]
async fn the_global_cap_limits_everyone_together() {
    let text = TEST_TIERS.replace(
        r#"{ name = "global", algorithm = "gcra", limit = 100000, per = "1h" }"#,
        r#"{ name = "global", algorithm = "gcra", limit = 5, per = "1h" }"#,
    );
    let s = serve(&text).await;
    let c = client();
    let url = format!("{}/v1/hello", s.base);
    for key in [
        "enterprise-demo",
        "pro-demo",
        "free-demo",
        "enterprise-demo",
        "pro-demo",
    ] {
        assert_eq!(
            get(&c, &url, Auth::Header(key)).await.status,
            StatusCode::OK
        );
    }
    let r = get(&c, &url, Auth::Header("enterprise-demo")).await;
    assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS);
    let body: serde_json::Value = serde_json::from_str(&r.body).unwrap();
    assert_eq!(body["violated-policies"], serde_json::json!(["global"]));
    assert_eq!(retry_after(&r), 720);
    let r = get(&other_ip_client(), &url, Auth::None).await;
    assert_eq!(
        r.status,
        StatusCode::TOO_MANY_REQUESTS,
        "the cap applies to anonymous clients too"
    );
}

fn other_ip_client() -> reqwest::Client {
    client_from(Ipv4Addr::new(127, 0, 0, 3))
}

#[tokio::test]
async fn a_reload_changes_limits_costs_and_keys_but_keeps_counters() {
    let (router, reloader) = app::router(
        &config(TEST_TIERS),
        MemoryStore::new(),
        app::prometheus().unwrap(),
    )
    .unwrap();
    let s = serve_router(router).await;
    let c = client();
    let hello = format!("{}/v1/hello", s.base);
    for expect in [5, 4] {
        let r = get(&c, &hello, Auth::Header("free-demo")).await;
        assert_eq!(
            param(&sf_list(&r.headers, "ratelimit"), "hourly", "r"),
            expect
        );
    }
    assert_eq!(
        get(&c, &hello, Auth::Header("pro-demo")).await.status,
        StatusCode::OK
    );

    // Free: same rate, twice the burst; the pro key replaced by another; the report costs 4.
    let text = TEST_TIERS
        .replace(
            r#"{ name = "hourly", algorithm = "gcra", limit = 3, per = "1h", burst = 6 }"#,
            r#"{ name = "hourly", algorithm = "gcra", limit = 3, per = "1h", burst = 12 }"#,
        )
        .replace(r#"key = "pro-demo""#, r#"key = "pro-demo-2""#)
        .replace(r#""/v1/report" = 3"#, r#""/v1/report" = 4"#);
    reloader.apply(&config(&text)).unwrap();

    // The 2 already used still count: 12 - 2 - 1 left (a reset would leave 11).
    let r = get(&c, &hello, Auth::Header("free-demo")).await;
    assert_eq!(param(&sf_list(&r.headers, "ratelimit"), "hourly", "r"), 9);
    // 3 an hour with bursts of 12 now: a capacity of 12, over four hours.
    let policy = sf_list(&r.headers, "ratelimit-policy");
    assert_eq!(param(&policy, "hourly", "q"), 12);
    assert_eq!(param(&policy, "hourly", "w"), 14400);
    assert_eq!(
        get(&c, &hello, Auth::Header("pro-demo")).await.status,
        StatusCode::UNAUTHORIZED
    );
    // The same account under its new key: 20 - 1 used - 4 for the report.
    let r = get(
        &c,
        &format!("{}/v1/report", s.base),
        Auth::Header("pro-demo-2"),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(param(&sf_list(&r.headers, "ratelimit"), "hourly", "r"), 15);

    // trusted_proxies need a restart: refused whole, nothing changes.
    let text2 = format!("trusted_proxies = [\"10.0.0.0/8\"]\n{TEST_TIERS}");
    let e = reloader.apply(&config(&text2)).unwrap_err().to_string();
    assert!(e.contains("restart the server"), "{e}");
    let r = get(&c, &hello, Auth::Header("free-demo")).await;
    assert_eq!(param(&sf_list(&r.headers, "ratelimit"), "hourly", "r"), 8);
    assert_eq!(
        get(&c, &hello, Auth::Header("pro-demo")).await.status,
        StatusCode::UNAUTHORIZED
    );
}

// ---------------------------------------------------------------------------------------------------------
// The same router on Redis, as `REDIS_URL` selects it: two servers sharing one redis-server share limits.

#[tokio::test]
async fn on_redis_two_servers_share_the_limits() {
    let redis = RedisServer::start();
    let url = format!("redis://127.0.0.1:{}/", redis.port);
    assert_eq!(
        app::store_target(Some(&url)).unwrap(),
        StoreTarget::Redis(url.clone())
    );
    let cfg = config(TEST_TIERS);
    let a = serve_with(&cfg, app::redis_store().connect(&url).await.unwrap()).await;
    let b = serve_with(&cfg, app::redis_store().connect(&url).await.unwrap()).await;
    let c = client();
    // 6 at once for free, spread over both servers.
    for i in 0..6 {
        let base = if i % 2 == 0 { &a.base } else { &b.base };
        let r = get(&c, &format!("{base}/v1/hello"), Auth::Header("free-demo")).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.body);
        assert_eq!(
            param(&sf_list(&r.headers, "ratelimit"), "hourly", "r"),
            5 - i
        );
    }
    for base in [&a.base, &b.base] {
        let r = get(&c, &format!("{base}/v1/hello"), Auth::Header("free-demo")).await;
        assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(retry_after(&r), 1200);
    }
    // The cost and the 401 behave the same on Redis.
    let r = get(
        &c,
        &format!("{}/v1/report", b.base),
        Auth::Header("pro-demo"),
    )
    .await;
    assert_eq!(param(&sf_list(&r.headers, "ratelimit"), "hourly", "r"), 17);
    let r = get(&c, &format!("{}/v1/hello", a.base), Auth::Header("nope")).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
}

// ---------------------------------------------------------------------------------------------------------
// The tier file.

#[test]
fn the_shipped_tier_file_holds_the_documented_figures() {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/examples/tiered_api/tiers.toml"
    );
    let cfg = Config::load(std::path::Path::new(path)).unwrap();
    let figures = |set: &PolicySet| {
        let q = set.policies()[0].quota();
        (q.limit(), q.period().as_secs(), q.burst())
    };
    let tier = |name: &str| cfg.limits.tier_policies(name).unwrap();
    assert_eq!(figures(cfg.limits.default_policies()), (30, 3600, 60));
    assert_eq!(figures(tier("free")), (100, 3600, 200));
    assert_eq!(figures(tier("pro")), (1_000, 3600, 2_000));
    assert_eq!(figures(tier("enterprise")), (10_000, 3600, 20_000));
    assert_eq!(
        figures(cfg.limits.global_cap().unwrap()),
        (50_000, 1, 50_000)
    );
    assert_eq!(cfg.limits.route_costs().get("/v1/report"), 10);
    for (key, tier) in [
        ("free-demo", "free"),
        ("pro-demo", "pro"),
        ("enterprise-demo", "enterprise"),
    ] {
        assert_eq!(&*cfg.keys[key.as_bytes()].tier, tier);
    }
    assert!(cfg.limits.trusted_proxies().is_empty());
    assert_eq!(
        cfg.limits.on_store_error(),
        Some(ratelimit_tower::OnFailure::Error)
    );
}

/// Replaces `from` with `to` in the test file and returns the error.
fn rejected(from: &str, to: &str) -> String {
    assert!(
        TEST_TIERS.contains(from),
        "test setup: {from:?} not in the file"
    );
    Config::parse(&TEST_TIERS.replacen(from, to, 1), "test.toml")
        .unwrap_err()
        .to_string()
}

#[test]
fn invalid_tier_files_say_what_to_change() {
    let free = r#"{ name = "hourly", algorithm = "gcra", limit = 3, per = "1h", burst = 6 }"#;
    let policy = |p: &str| format!("{{ name = \"hourly\", algorithm = {p} }}");
    // Each edit, the path of the bad value and a piece of the fix the error must give.
    let cases: Vec<(String, &str, &str)> = vec![
        // Policies, read by ratelimit-core.
        (
            rejected(free, &policy(r#""gcrah", limit = 3, per = "1h""#)),
            "tiers.free.policies[0]",
            "unknown algorithm \"gcrah\": use one of gcra, token_bucket",
        ),
        (
            rejected(free, &policy(r#""gcra", limit = 0, per = "1h""#)),
            "tiers.free.policies[0]",
            "quota limit is 0",
        ),
        (
            rejected(free, &policy(r#""fixed_window", limit = 3, per = "1h", burst = 6"#)),
            "tiers.free.policies[0]",
            "burst",
        ),
        (
            rejected(free, &policy(r#""gcra", limit = 3, per = "1 fortnight""#)),
            "tiers.free.policies[0].per",
            "write a number and a unit",
        ),
        (
            rejected(free, &policy(r#""gcra", limit = 3, per = "0s""#)),
            "tiers.free.policies[0].per",
            "\"0s\" is zero: give a period of at least 1us",
        ),
        (
            rejected(free, &policy(r#""gcra", limit = 3, per = "1h", brust = 6"#)),
            "tiers.free.policies[0].brust",
            "unknown field `brust`",
        ),
        (
            rejected(
                free,
                r#"{ name = "a", algorithm = "gcra", limit = 3, per = "1h" }, { name = "a", algorithm = "gcra", limit = 9, per = "1d" }"#,
            ),
            "tiers.free.policies",
            "policy name \"a\" appears twice in one set",
        ),
        (rejected(free, ""), "tiers.free.policies", "an empty list limits nothing: give at least one policy"),
        // The layer's checks.
        (
            rejected(free, &policy(r#""shaper", limit = 3, per = "1h", max_delay = "1s""#)),
            "tiers.free.policies[0].algorithm",
            "use algorithm = \"gcra\" or \"token_bucket\"",
        ),
        (
            rejected(r#"{ name = "global","#, r#"{ name = "hourly","#),
            "global_cap.policies[0].name",
            "\"hourly\" is also the name of a policy of default: both appear in one RateLimit header, so rename one",
        ),
        (
            rejected("[tiers.pro]", "[tiers.\"pro plan\"]"),
            "tiers.pro plan",
            "tier name \"pro plan\" is invalid",
        ),
        (
            rejected("[tiers.pro]", "[tiers.default]"),
            "tiers.default",
            "give this tier another name",
        ),
        (
            rejected(r#""/v1/report" = 3"#, r#""/v1/report" = 0"#),
            "costs./v1/report",
            "give a cost of at least 1",
        ),
        (
            rejected("[default]", "trusted_proxies = [\"10.0.0.0/33\"]\n[default]"),
            "trusted_proxies[0]",
            "invalid CIDR \"10.0.0.0/33\"",
        ),
        (
            rejected("[default]", "trusted_proxies = [\"0.0.0.0/0\"]\n[default]"),
            "trusted_proxies[0]",
            "contains every address",
        ),
        (
            rejected("[default]", "on_store_error = \"local\"\n[default]"),
            "on_store_error",
            "write \"allow\"",
        ),
        (
            rejected("[default]", "anonymous = 3\n[default]"),
            "anonymous",
            "unknown field `anonymous`",
        ),
        // This API's own checks.
        (
            rejected(r#""/v1/report" = 3"#, r#""/v1/reports" = 3"#),
            "costs./v1/reports",
            "unknown route \"/v1/reports\": the routes are /v1/hello, /v1/report",
        ),
        (
            rejected(r#"key = "pro-demo""#, r#"key = "free-demo""#),
            "keys[2].key",
            "this API key is already listed",
        ),
        (
            rejected(r#"tier = "pro""#, r#"tier = "gold""#),
            "keys[2].tier",
            "unknown tier \"gold\": add a [tiers.gold] table or use one of: enterprise, free, pro",
        ),
        (
            rejected(r#"key = "pro-demo""#, r#"key = "pro demo""#),
            "keys[2].key",
            "visible ASCII characters without spaces",
        ),
        (
            rejected(r#"account = "demo-pro""#, r#"acount = "demo-pro""#),
            "keys[2].acount",
            "unknown field `acount`",
        ),
    ];
    for (error, path, fix) in cases {
        let prefix = format!("test.toml: {path}: ");
        assert!(
            error.starts_with(&prefix),
            "expected {prefix:?} in:\n{error}"
        );
        assert!(error.contains(fix), "expected {fix:?} in:\n{error}");
        assert!(!error.contains('\n'), "one line: {error:?}");
    }
    // A file without the default tier names what is missing.
    let e = Config::parse(
        "[tiers.free]\npolicies = [{ name = \"h\", rate = \"1/s\" }]\n",
        "t.toml",
    )
    .unwrap_err()
    .to_string();
    assert!(e.starts_with("t.toml: default: no default tier"), "{e}");
    // Not TOML: where it stops being TOML.
    let e = Config::parse("[default\n", "t.toml")
        .unwrap_err()
        .to_string();
    assert!(e.starts_with("t.toml: TOML parse error at line 1"), "{e}");
    // A file that is not there says how to pick another.
    let e = Config::load(std::path::Path::new("/nonexistent/tiers.toml"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("--tiers <path>"), "{e}");
}

#[test]
fn redis_url_forms() {
    use StoreTarget::*;
    assert_eq!(app::store_target(None).unwrap(), Memory);
    assert_eq!(app::store_target(Some("  ")).unwrap(), Memory);
    assert_eq!(
        app::store_target(Some("redis://127.0.0.1:6379/0")).unwrap(),
        Redis("redis://127.0.0.1:6379/0".into())
    );
    assert_eq!(
        app::store_target(Some("redis+unix:///run/redis.sock")).unwrap(),
        Redis("redis+unix:///run/redis.sock".into())
    );
    assert_eq!(
        app::store_target(Some("redis+cluster://10.0.0.1:7000,10.0.0.2:7001")).unwrap(),
        Cluster(vec![
            "redis://10.0.0.1:7000".into(),
            "redis://10.0.0.2:7001".into()
        ])
    );
    assert_eq!(
        app::store_target(Some("rediss+cluster://h1:7000")).unwrap(),
        Cluster(vec!["rediss://h1:7000".into()])
    );
    assert_eq!(
        app::store_target(Some("redis://h1:7000, redis://h2:7001")).unwrap(),
        Cluster(vec!["redis://h1:7000".into(), "redis://h2:7001".into()])
    );
    let e = app::store_target(Some("localhost:6379"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("use redis://host:port/db"), "{e}");
    let e = app::store_target(Some("redis://h1:1,h2:2"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("redis+cluster://host1:port,host2:port"), "{e}");
    let e = app::store_target(Some("redis+cluster://"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("names no node"), "{e}");
}

mod hostile_tier_files {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        /// Any edit of a valid file — bytes overwritten, the file cut short — parses or is refused with a
        /// message naming the file; it never panics.
        #[test]
        fn edits_never_panic(at in 0usize..TEST_TIERS.len(), bytes in proptest::collection::vec(any::<u8>(), 0..8), cut in any::<bool>()) {
            let mut text = TEST_TIERS.as_bytes().to_vec();
            if cut {
                text.truncate(at);
            } else {
                for (i, b) in bytes.iter().enumerate() {
                    if let Some(slot) = text.get_mut(at + i) {
                        *slot = *b;
                    }
                }
            }
            let text = String::from_utf8_lossy(&text);
            if let Err(e) = Config::parse(&text, "test.toml") {
                prop_assert!(e.to_string().starts_with("test.toml: "), "{}", e);
            }
        }

        /// Extreme numbers and periods are rejected with an explanation, never a panic or an overflow.
        #[test]
        fn extreme_quotas_never_panic(
            limit in prop_oneof![0u64..10_000, 0..=i64::MAX as u64],
            burst in prop_oneof![0u64..20_000, 0..=i64::MAX as u64],
            n in prop_oneof![0u64..100, any::<u64>()],
            unit in prop::sample::select(vec!["ms", "s", "m", "h", "d", "x", ""]),
        ) {
            let policy = format!(
                r#"{{ name = "hourly", algorithm = "gcra", limit = {limit}, per = "{n}{unit}", burst = {burst} }}"#,
            );
            let text = TEST_TIERS.replacen(
                r#"{ name = "hourly", algorithm = "gcra", limit = 3, per = "1h", burst = 6 }"#,
                &policy,
                1,
            );
            match Config::parse(&text, "test.toml") {
                Ok(cfg) => {
                    let free = cfg.limits.tier_policies("free").unwrap();
                    prop_assert_eq!(free.policies()[0].quota().limit(), limit);
                }
                Err(e) => prop_assert!(e.to_string().starts_with("test.toml: "), "{}", e),
            }
        }
    }
}
