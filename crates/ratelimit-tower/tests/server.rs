//! End-to-end tests: real axum servers on 127.0.0.1, a real HTTP client, headers parsed with `sfv`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::net::SocketAddr;
use std::sync::Arc;

use axum::routing;
use axum::{Extension, Router};
use http::{Method, StatusCode};
use ratelimit_core::{MemoryStore, Policy, Quota};
use ratelimit_tower::key::{
    ApiKey, ClientIp, ForwardedHeader, Global, KeyExtractorExt, TrustedProxies, User, UserId,
};
use ratelimit_tower::{
    IetfRevision, LegacyReset, NearLimit, OnFailure, OnKeyError, RateLimitLayer, Tier, Tiers,
};

use common::*;

fn app(
    layer: RateLimitLayer<impl ratelimit_core::Store<[u8], ratelimit_core::PolicySet> + 'static>,
) -> Router {
    Router::new()
        .route("/", routing::get(|| async { "ok" }))
        .route("/health", routing::get(|| async { "up" }))
        .route(
            "/items/{id}",
            routing::get(|| async { "item" }).post(|| async { "created" }),
        )
        .layer(layer)
}

#[tokio::test]
async fn headers_are_canonical_sf_lists_consistent_with_the_decision_and_429_is_problem_json() {
    let layer = RateLimitLayer::builder()
        .policy(gcra_per_sec("burst", 3))
        .policy(per_hour("hourly", 100))
        .build()
        .unwrap();
    let addr = serve(app(layer)).await;
    let c = client();
    for i in 0..3i64 {
        let r = get(&c, addr, "/", &[]).await;
        assert_eq!(r.status, StatusCode::OK);
        let policy = sf_list(&r.headers, "ratelimit-policy");
        assert_eq!(policy.len(), 2);
        assert_eq!(
            (
                policy[0].name.as_str(),
                policy[0].int("q"),
                policy[0].int("w")
            ),
            ("burst", Some(3), Some(1))
        );
        assert_eq!(
            (
                policy[1].name.as_str(),
                policy[1].int("q"),
                policy[1].int("w")
            ),
            ("hourly", Some(100), Some(3600))
        );
        let rl = sf_list(&r.headers, "ratelimit");
        assert_eq!(rl[0].name, "burst");
        assert_eq!(rl[0].int("r"), Some(2 - i));
        assert_eq!(rl[0].int("t"), Some(1)); // GCRA refills within a second: rounded up to 1
        assert_eq!(rl[1].name, "hourly");
        assert_eq!(rl[1].int("r"), Some(99 - i));
        let t = rl[1].int("t").unwrap();
        assert!((1..=3600).contains(&t), "t={t}");
        assert!(r.headers.get("retry-after").is_none());
    }
    let r = get(&c, addr, "/", &[]).await;
    assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(r.header("content-type"), Some("application/problem+json"));
    assert_eq!(r.header("cache-control"), Some("no-store"));
    let retry: u64 = r.header("retry-after").unwrap().parse().unwrap();
    assert!(
        retry >= 1,
        "Retry-After must never be 0 when a wait is needed"
    );
    let rl = sf_list(&r.headers, "ratelimit");
    assert_eq!(rl[0].int("r"), Some(0));
    assert_eq!(
        rl[0].int("t"),
        Some(retry as i64),
        "Retry-After is never earlier than t"
    );
    assert_eq!(
        rl[1].int("r"),
        Some(97),
        "a rejected request charges nothing"
    );
    let body = r.json();
    assert_eq!(
        body["type"],
        "https://iana.org/assignments/http-problem-types#quota-exceeded"
    );
    assert_eq!(body["status"], 429);
    assert_eq!(body["violated-policies"], serde_json::json!(["burst"]));
}

#[tokio::test]
async fn spoofed_forwarding_headers_from_an_untrusted_peer_do_not_change_the_key() {
    for header in [ForwardedHeader::XForwardedFor, ForwardedHeader::Forwarded] {
        // The client (127.0.0.1) is not in the trusted set, so whatever it writes is ignored.
        let key = ClientIp::trusted_proxies(TrustedProxies::cidrs(["10.0.0.0/8"]).unwrap())
            .header(header);
        let layer = RateLimitLayer::builder()
            .policy(per_hour("h", 2))
            .key(key)
            .build()
            .unwrap();
        let addr = serve(app(layer)).await;
        let c = client();
        let mut statuses = Vec::new();
        for i in 0..5 {
            let xff = format!("203.0.113.{i}");
            let fwd = format!("for={xff}");
            statuses.push(
                get(
                    &c,
                    addr,
                    "/",
                    &[("x-forwarded-for", &xff), ("forwarded", &fwd)],
                )
                .await
                .status,
            );
        }
        assert_eq!(
            statuses.iter().filter(|s| **s == StatusCode::OK).count(),
            2,
            "{header:?}: {statuses:?}"
        );
    }
    // And with no trusted proxy at all (the default key).
    let layer = RateLimitLayer::builder()
        .policy(per_hour("h", 1))
        .build()
        .unwrap();
    let addr = serve(app(layer)).await;
    let c = client();
    assert_eq!(
        get(&c, addr, "/", &[("x-forwarded-for", "1.1.1.1")])
            .await
            .status,
        StatusCode::OK
    );
    assert_eq!(
        get(&c, addr, "/", &[("x-forwarded-for", "2.2.2.2")])
            .await
            .status,
        StatusCode::TOO_MANY_REQUESTS
    );
}

#[tokio::test]
async fn a_trusted_chain_is_walked_right_to_left() {
    let key = ClientIp::behind(["127.0.0.0/8", "10.0.0.0/8"]).unwrap();
    let layer = RateLimitLayer::builder()
        .policy(per_hour("h", 2))
        .key(key)
        .build()
        .unwrap();
    let addr = serve(app(layer)).await;
    let c = client();
    // Client 198.51.100.1 behind an internal hop 10.1.1.1; the left-most element is attacker-written.
    assert!(via_xff(&c, addr, "6.6.6.6, 198.51.100.1, 10.1.1.1").await == StatusCode::OK);
    assert!(via_xff(&c, addr, "7.7.7.7, 198.51.100.1, 10.1.1.1").await == StatusCode::OK);
    assert!(via_xff(&c, addr, "8.8.8.8, 198.51.100.1, 10.1.1.1").await != StatusCode::OK);
    // Several field lines form one list.
    let r = send_multi(&c, addr, &["9.9.9.9, 198.51.100.1", "10.1.1.1"]).await;
    assert_eq!(r, StatusCode::TOO_MANY_REQUESTS);
    // Another client is another key.
    assert!(via_xff(&c, addr, "198.51.100.2, 10.1.1.1").await == StatusCode::OK);
    // IPv4-mapped IPv6 is the same client as plain IPv4.
    assert!(via_xff(&c, addr, "198.51.100.3").await == StatusCode::OK);
    assert!(via_xff(&c, addr, "::ffff:198.51.100.3").await == StatusCode::OK);
    assert!(via_xff(&c, addr, "198.51.100.3").await != StatusCode::OK);
}

/// The status of `GET /` carrying one `X-Forwarded-For` field line.
async fn via_xff(c: &HttpClient, addr: SocketAddr, xff: &str) -> StatusCode {
    get(c, addr, "/", &[("x-forwarded-for", xff)]).await.status
}

async fn send_multi(c: &HttpClient, addr: SocketAddr, lines: &[&str]) -> StatusCode {
    let mut req = http::Request::get(format!("http://{addr}/"));
    for l in lines {
        req = req.header("x-forwarded-for", *l);
    }
    c.request(
        req.body(http_body_util::Full::new(bytes::Bytes::new()))
            .unwrap(),
    )
    .await
    .unwrap()
    .status()
}

#[tokio::test]
async fn rotating_ipv6_addresses_within_a_64_stays_limited() {
    let key = ClientIp::behind(["127.0.0.0/8"]).unwrap();
    let layer = RateLimitLayer::builder()
        .policy(per_hour("h", 3))
        .key(key)
        .build()
        .unwrap();
    let addr = serve(app(layer)).await;
    let c = client();
    let mut ok = 0;
    for i in 1..=20 {
        let ip = format!("2001:db8:1:2:{i:x}:{:x}::{i:x}", i * 7);
        if via_xff(&c, addr, &ip).await == StatusCode::OK {
            ok += 1;
        }
    }
    assert_eq!(ok, 3);
    // A different /64 is a different subscriber.
    assert_eq!(
        via_xff(&c, addr, "[2001:db8:1:3::1]:4711").await,
        StatusCode::OK
    );
}

#[tokio::test]
async fn huge_and_malformed_headers_are_handled_without_panic() {
    let key = ClientIp::behind(["127.0.0.0/8"]).unwrap();
    let layer = RateLimitLayer::builder()
        .policy(per_hour("h", 1000))
        .key(key)
        .build()
        .unwrap();
    let addr = serve(app(layer)).await;
    let c = client();
    let commas = ",".repeat(30_000);
    let many = (0..2000)
        .map(|i| format!("10.0.{}.{}", i / 256, i % 256))
        .collect::<Vec<_>>()
        .join(",");
    let junk = "\"[::1]:x\";;=;for=\"unterminated, for=[::1, for=_hidden;by=\\\"".repeat(200);
    let cases: Vec<Vec<(&str, &str)>> = vec![
        vec![("x-forwarded-for", &commas)],
        vec![("x-forwarded-for", &many)],
        vec![(
            "x-forwarded-for",
            "unknown, garbage, [zz::1], 1.2.3.4:99999999999, ::ffff:",
        )],
        vec![("forwarded", &junk)],
        vec![("x-forwarded-for", "1.1.1.1"), ("authorization", "Bearer")],
    ];
    for headers in cases {
        let r = get(&c, addr, "/", &headers).await;
        assert_eq!(r.status, StatusCode::OK, "{headers:?}");
    }
    // Garbage right of a trusted hop stops the walk at the proxy that wrote it: the peer's bucket, not a
    // fresh one per garbage value.
    let layer = RateLimitLayer::builder()
        .policy(per_hour("h", 2))
        .key(ClientIp::behind(["127.0.0.0/8"]).unwrap())
        .build()
        .unwrap();
    let addr = serve(app(layer)).await;
    let mut ok = 0;
    for i in 0..5 {
        let v = format!("1.2.3.{i}, junk{i}");
        if get(&c, addr, "/", &[("x-forwarded-for", &v)]).await.status == StatusCode::OK {
            ok += 1;
        }
    }
    assert_eq!(ok, 2);
}

#[tokio::test]
async fn concurrent_requests_on_one_key_admit_exactly_the_limit() {
    for yielding in [false, true] {
        let builder = RateLimitLayer::builder()
            .policy(per_hour("h", 50))
            .key(Global);
        let addr = if yielding {
            serve(app(builder
                .store(YieldingStore(MemoryStore::new()))
                .build()
                .unwrap()))
            .await
        } else {
            serve(app(builder.build().unwrap())).await
        };
        let c = client();
        let mut tasks = Vec::new();
        for _ in 0..200 {
            let c = c.clone();
            tasks.push(tokio::spawn(
                async move { get(&c, addr, "/", &[]).await.status },
            ));
        }
        let mut ok = 0;
        let mut limited = 0;
        for t in tasks {
            match t.await.unwrap() {
                StatusCode::OK => ok += 1,
                StatusCode::TOO_MANY_REQUESTS => limited += 1,
                s => panic!("unexpected {s}"),
            }
        }
        assert_eq!((ok, limited), (50, 150), "yielding store: {yielding}");
    }
}

/// Simulates auth middleware: a verified `x-user` header becomes a `UserId`, `x-plan` a `Tier`.
async fn fake_auth(
    mut req: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    if let Some(u) = req
        .headers()
        .get("x-user")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
    {
        req.extensions_mut().insert(UserId::new(u));
    }
    if let Some(p) = req
        .headers()
        .get("x-plan")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
    {
        req.extensions_mut().insert(Tier::new(p));
    }
    next.run(req).await
}

#[tokio::test]
async fn tiers_resolve_per_request_and_change_at_run_time_without_resetting_counters() {
    let tiers = Tiers::new(set([per_hour("quota", 1)])).tier("pro", set([per_hour("quota", 3)]));
    let layer = RateLimitLayer::builder()
        .tiers(tiers)
        .key(User::<UserId>::new().or(ClientIp::peer()))
        .build()
        .unwrap();
    let handle = layer.tiers();
    let app = app(layer).layer(axum::middleware::from_fn(fake_auth));
    let addr = serve(app).await;
    let c = client();
    let st = |r: Reply| r.status;
    // Anonymous → default tier, keyed by IP.
    assert_eq!(st(get(&c, addr, "/", &[]).await), StatusCode::OK);
    assert_eq!(
        st(get(&c, addr, "/", &[]).await),
        StatusCode::TOO_MANY_REQUESTS
    );
    // Pro user: 3.
    let pro = [("x-user", "alice"), ("x-plan", "pro")];
    for _ in 0..3 {
        assert_eq!(st(get(&c, addr, "/", &pro).await), StatusCode::OK);
    }
    let r = get(&c, addr, "/", &pro).await;
    assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(sf_list(&r.headers, "ratelimit-policy")[0].int("q"), Some(3));
    // An unknown tier name is the default tier.
    let bob = [("x-user", "bob"), ("x-plan", "platinum-made-up")];
    assert_eq!(st(get(&c, addr, "/", &bob).await), StatusCode::OK);
    assert_eq!(
        st(get(&c, addr, "/", &bob).await),
        StatusCode::TOO_MANY_REQUESTS
    );
    // Raise pro to 5 at run time: alice has used 3, so exactly 2 more pass.
    handle.set_tier("pro", set([per_hour("quota", 5)]));
    assert_eq!(st(get(&c, addr, "/", &pro).await), StatusCode::OK);
    let r = get(&c, addr, "/", &pro).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(sf_list(&r.headers, "ratelimit")[0].int("r"), Some(0));
    assert_eq!(
        st(get(&c, addr, "/", &pro).await),
        StatusCode::TOO_MANY_REQUESTS
    );
}

#[tokio::test]
async fn several_policies_are_all_or_nothing_and_cost_is_charged() {
    let layer = RateLimitLayer::builder()
        .policy(gcra_per_sec("burst", 100))
        .policy(per_hour("hourly", 5))
        .cost_fn(|req| if req.method() == Method::POST { 3 } else { 1 })
        .build()
        .unwrap();
    let addr = serve(app(layer)).await;
    let c = client();
    let r = send(&c, addr, "POST", "/items/1", &[]).await;
    assert_eq!(r.status, StatusCode::OK);
    let rl = sf_list(&r.headers, "ratelimit");
    assert_eq!((rl[0].int("r"), rl[1].int("r")), (Some(97), Some(2)));
    // Another POST (3) exceeds hourly (2 left): rejected, nothing charged anywhere.
    let r = send(&c, addr, "POST", "/items/1", &[]).await;
    assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(r.json()["violated-policies"], serde_json::json!(["hourly"]));
    let rl = sf_list(&r.headers, "ratelimit");
    assert_eq!(rl[1].int("r"), Some(2));
    assert!(
        rl[0].int("r").unwrap() >= 97,
        "burst was not charged for the rejected request"
    );
    // Two GETs still fit.
    assert_eq!(get(&c, addr, "/", &[]).await.status, StatusCode::OK);
    assert_eq!(get(&c, addr, "/", &[]).await.status, StatusCode::OK);
    assert_eq!(
        get(&c, addr, "/", &[]).await.status,
        StatusCode::TOO_MANY_REQUESTS
    );
}

#[tokio::test]
async fn a_cost_above_capacity_is_rejected_without_retry_after() {
    let layer = RateLimitLayer::builder()
        .policy(per_hour("h", 2))
        .cost(5)
        .build()
        .unwrap();
    let addr = serve(app(layer)).await;
    let r = get(&client(), addr, "/", &[]).await;
    assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS);
    assert!(r.headers.get("retry-after").is_none(), "no wait helps");
    assert_eq!(sf_list(&r.headers, "ratelimit")[0].int("t"), None);
    assert!(r.json()["detail"].as_str().unwrap().contains("never"));
}

#[tokio::test]
async fn global_cap_rejects_and_refunds_the_clients_reservation() {
    for yielding in [false, true] {
        let b = RateLimitLayer::builder()
            .policy(per_hour("user", 10))
            .global_cap(set([per_hour("global", 2)]))
            .key(User::<UserId>::new());
        let router = if yielding {
            app(b.store(YieldingStore(MemoryStore::new())).build().unwrap())
        } else {
            app(b.build().unwrap())
        };
        let addr = serve(router.layer(axum::middleware::from_fn(fake_auth))).await;
        let c = client();
        let r = get(&c, addr, "/", &[("x-user", "a")]).await;
        assert_eq!(r.status, StatusCode::OK);
        let rl = sf_list(&r.headers, "ratelimit");
        assert_eq!(
            rl.iter()
                .map(|i| (i.name.as_str(), i.int("r")))
                .collect::<Vec<_>>(),
            vec![("user", Some(9)), ("global", Some(1))]
        );
        assert_eq!(sf_list(&r.headers, "ratelimit-policy").len(), 2);
        assert_eq!(
            get(&c, addr, "/", &[("x-user", "b")]).await.status,
            StatusCode::OK
        );
        let r = get(&c, addr, "/", &[("x-user", "a")]).await;
        assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(r.json()["violated-policies"], serde_json::json!(["global"]));
        // a's own quota was refunded: still 9 left, as reported in the 429.
        let rl = sf_list(&r.headers, "ratelimit");
        assert_eq!(rl[0].int("r"), Some(9), "yielding={yielding}");
    }
}

#[tokio::test]
async fn shadow_mode_counts_but_lets_everything_through() {
    let layer = RateLimitLayer::builder()
        .policy(per_hour("h", 1))
        .shadow(true)
        .build()
        .unwrap();
    let addr = serve(app(layer)).await;
    let c = client();
    for _ in 0..5 {
        let r = get(&c, addr, "/", &[]).await;
        assert_eq!(r.status, StatusCode::OK);
    }
}

#[tokio::test]
async fn skip_predicates_allow_lists_and_method_filters() {
    let layer = RateLimitLayer::builder()
        .policy(per_hour("h", 1))
        .skip(|req| req.uri().path() == "/health")
        .build()
        .unwrap();
    let addr = serve(app(layer)).await;
    let c = client();
    for _ in 0..3 {
        let r = get(&c, addr, "/health", &[]).await;
        assert_eq!(r.status, StatusCode::OK);
        assert!(r.headers.get("ratelimit").is_none());
    }
    assert_eq!(get(&c, addr, "/", &[]).await.status, StatusCode::OK);
    assert_eq!(
        get(&c, addr, "/", &[]).await.status,
        StatusCode::TOO_MANY_REQUESTS
    );

    let layer = RateLimitLayer::builder()
        .policy(per_hour("h", 1))
        .methods([Method::POST])
        .build()
        .unwrap();
    let addr = serve(app(layer)).await;
    for _ in 0..3 {
        assert_eq!(get(&c, addr, "/items/1", &[]).await.status, StatusCode::OK);
    }
    assert_eq!(
        send(&c, addr, "POST", "/items/1", &[]).await.status,
        StatusCode::OK
    );
    assert_eq!(
        send(&c, addr, "POST", "/items/1", &[]).await.status,
        StatusCode::TOO_MANY_REQUESTS
    );

    let layer = RateLimitLayer::builder()
        .policy(per_hour("h", 1))
        .allow_list(ClientIp::peer(), ["127.0.0.1".parse().unwrap()])
        .build()
        .unwrap();
    let addr = serve(app(layer)).await;
    for _ in 0..3 {
        assert_eq!(get(&c, addr, "/", &[]).await.status, StatusCode::OK);
    }
}

#[tokio::test]
async fn missing_connect_info_is_an_explained_error_or_the_configured_fallback() {
    let layer = RateLimitLayer::builder()
        .policy(per_hour("h", 1))
        .build()
        .unwrap();
    let addr = serve_plain(app(layer)).await;
    let c = client();
    let r = get(&c, addr, "/", &[]).await;
    assert_eq!(r.status, StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(r.header("content-type"), Some("application/problem+json"));
    assert!(r.json()["detail"]
        .as_str()
        .unwrap()
        .contains("into_make_service_with_connect_info"));

    let layer = RateLimitLayer::builder()
        .policy(per_hour("h", 1))
        .on_key_error(OnKeyError::UseGlobalKey)
        .build()
        .unwrap();
    let addr = serve_plain(app(layer)).await;
    assert_eq!(get(&c, addr, "/", &[]).await.status, StatusCode::OK);
    assert_eq!(
        get(&c, addr, "/", &[]).await.status,
        StatusCode::TOO_MANY_REQUESTS
    );

    let layer = RateLimitLayer::builder()
        .policy(per_hour("h", 1))
        .on_key_error(OnKeyError::Allow)
        .build()
        .unwrap();
    let addr = serve_plain(app(layer)).await;
    for _ in 0..3 {
        assert_eq!(get(&c, addr, "/", &[]).await.status, StatusCode::OK);
    }
}

#[tokio::test]
async fn a_missing_api_key_is_a_400_and_keys_are_hashed() {
    let layer = RateLimitLayer::builder()
        .policy(per_hour("h", 1))
        .key(ApiKey::header_or_bearer("x-api-key"))
        .partition_key(true)
        .build()
        .unwrap();
    let addr = serve(app(layer)).await;
    let c = client();
    let r = get(&c, addr, "/", &[]).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    let r = get(&c, addr, "/", &[("authorization", "Bearer sk_live_secret")]).await;
    assert_eq!(r.status, StatusCode::OK);
    let pk = sf_list(&r.headers, "ratelimit")[0]
        .bytes("pk")
        .unwrap()
        .to_vec();
    assert_eq!(pk.len(), 12);
    assert!(!pk.windows(6).any(|w| w == b"secret"));
    assert_eq!(
        sf_list(&r.headers, "ratelimit-policy")[0]
            .bytes("pk")
            .unwrap(),
        &pk[..]
    );
    // The header and the bearer token are the same key.
    assert_eq!(
        get(&c, addr, "/", &[("x-api-key", "sk_live_secret")])
            .await
            .status,
        StatusCode::TOO_MANY_REQUESTS
    );
    assert_eq!(
        get(&c, addr, "/", &[("x-api-key", "other")]).await.status,
        StatusCode::OK
    );
}

#[tokio::test]
async fn store_errors_fail_closed_with_503_or_open_never_429() {
    let layer = RateLimitLayer::with_store(FailingStore)
        .policy(per_hour("h", 1))
        .build()
        .unwrap();
    let addr = serve(app(layer)).await;
    let c = client();
    let r = get(&c, addr, "/", &[]).await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(
        r.json()["type"],
        "https://iana.org/assignments/http-problem-types#temporary-reduced-capacity"
    );
    assert!(r.headers.get("ratelimit").is_none());

    let layer = RateLimitLayer::with_store(FailingStore)
        .policy(per_hour("h", 1))
        .on_store_error(OnFailure::Allow)
        .build()
        .unwrap();
    let addr = serve(app(layer)).await;
    for _ in 0..3 {
        let r = get(&c, addr, "/", &[]).await;
        assert_eq!(r.status, StatusCode::OK);
        assert!(r.headers.get("ratelimit").is_none());
    }
    // The in-memory store at its cap with Overflow::Reject is a store error too.
    let store = MemoryStore::builder()
        .max_keys(1)
        .shards(1)
        .overflow(ratelimit_core::Overflow::Reject)
        .build();
    let layer = RateLimitLayer::with_store(store)
        .policy(per_hour("h", 5))
        .key(ClientIp::behind(["127.0.0.0/8"]).unwrap())
        .build()
        .unwrap();
    let addr = serve(app(layer)).await;
    assert_eq!(
        get(&c, addr, "/", &[("x-forwarded-for", "1.1.1.1")])
            .await
            .status,
        StatusCode::OK
    );
    assert_eq!(
        get(&c, addr, "/", &[("x-forwarded-for", "2.2.2.2")])
            .await
            .status,
        StatusCode::SERVICE_UNAVAILABLE
    );
}

#[tokio::test]
async fn soft_limit_tells_the_handler_and_legacy_headers_are_opt_in() {
    let layer = RateLimitLayer::builder()
        .policy(per_hour("h", 4))
        .soft_limit_percent(50)
        .legacy_headers(LegacyReset::DeltaSeconds)
        .build()
        .unwrap();
    let app = Router::new()
        .route(
            "/",
            routing::get(|near: Option<Extension<NearLimit>>| async move {
                match near {
                    Some(Extension(n)) => format!("near {} {}/{}", n.policy, n.remaining, n.limit),
                    None => "fine".to_owned(),
                }
            }),
        )
        .layer(layer);
    let addr = serve(app).await;
    let c = client();
    let bodies: Vec<String> = {
        let mut v = Vec::new();
        for _ in 0..3 {
            let r = get(&c, addr, "/", &[]).await;
            assert_eq!(r.header("x-ratelimit-limit"), Some("4"));
            let reset: u64 = r.header("x-ratelimit-reset").unwrap().parse().unwrap();
            assert!((1..=3600).contains(&reset));
            v.push(String::from_utf8(r.body.to_vec()).unwrap());
        }
        v
    };
    assert_eq!(bodies, ["fine", "near h 2/4", "near h 1/4"]);
}

/// A header field parsed with `sfv` as `T`, which must also be its canonical serialisation.
fn sf<T>(r: &Reply, name: &str) -> T
where
    T: sfv::FieldType,
    T::SerializeResult: Into<Option<String>>,
{
    let text = r.header(name).unwrap_or_else(|| panic!("no {name}"));
    let value: T = sfv::Parser::new(text)
        .parse()
        .unwrap_or_else(|e| panic!("{name}: {text:?}: {e}"));
    let canonical: Option<String> = value.serialize().into();
    assert_eq!(canonical.as_deref(), Some(text), "{name} not canonical");
    value
}

fn sf_int(item: &sfv::Item) -> i64 {
    match item.bare_item {
        sfv::BareItem::Integer(i) => i64::from(i),
        ref other => panic!("not an Integer: {other:?}"),
    }
}

/// Draft-06/-07 `RateLimit-Policy`: unnamed Integer quotas with a `w` parameter.
fn unnamed_policies(r: &Reply) -> Vec<(i64, i64)> {
    sf::<sfv::List>(r, "ratelimit-policy")
        .iter()
        .map(|e| {
            let sfv::ListEntry::Item(item) = e else {
                panic!("inner list")
            };
            let w = item.params.get("w").map(|w| match w {
                sfv::BareItem::Integer(w) => i64::from(*w),
                other => panic!("w: {other:?}"),
            });
            (sf_int(item), w.expect("w"))
        })
        .collect()
}

#[tokio::test]
async fn draft_07_and_06_fields_are_opt_in_and_consistent_with_the_decision() {
    for revision in [IetfRevision::Draft07, IetfRevision::Draft06] {
        let layer = RateLimitLayer::builder()
            .policy(per_hour("hourly", 3))
            .policy(gcra_per_sec("burst", 100))
            .ietf_revision(revision)
            .build()
            .unwrap();
        let addr = serve(app(layer)).await;
        let c = client();
        for expected_remaining in [2, 1, 0, 0] {
            let r = get(&c, addr, "/", &[]).await;
            assert_eq!(unnamed_policies(&r), [(3, 3600), (100, 1)], "{revision:?}");
            let (limit, remaining, reset) = if revision == IetfRevision::Draft07 {
                let dict: sfv::Dictionary = sf(&r, "ratelimit");
                let member = |k: &str| match dict.get(k) {
                    Some(sfv::ListEntry::Item(item)) => sf_int(item),
                    other => panic!("{k}: {other:?}"),
                };
                assert_eq!(dict.len(), 3);
                assert!(r.header("ratelimit-limit").is_none());
                (member("limit"), member("remaining"), member("reset"))
            } else {
                let int = |name: &str| sf_int(&sf::<sfv::Item>(&r, name));
                assert!(r.header("ratelimit").is_none(), "{revision:?}");
                (
                    int("ratelimit-limit"),
                    int("ratelimit-remaining"),
                    int("ratelimit-reset"),
                )
            };
            // The binding policy is the hourly one (the per-second burst is far from empty).
            assert_eq!((limit, remaining), (3, expected_remaining), "{revision:?}");
            assert!((1..=3600).contains(&reset), "{revision:?}: {reset}");
            if r.status == StatusCode::TOO_MANY_REQUESTS {
                let retry: i64 = r.header("retry-after").unwrap().parse().unwrap();
                assert!(
                    reset >= retry,
                    "{revision:?}: reset {reset} < Retry-After {retry}"
                );
            } else {
                assert_eq!(r.status, StatusCode::OK);
            }
        }
    }
}

#[tokio::test]
async fn only_the_binding_policy_can_be_sent() {
    let layer = RateLimitLayer::builder()
        .policy(gcra_per_sec("burst", 100))
        .policy(per_hour("hourly", 3))
        .only_binding_policy(true)
        .build()
        .unwrap();
    let addr = serve(app(layer)).await;
    let r = get(&client(), addr, "/", &[]).await;
    let rl = sf_list(&r.headers, "ratelimit");
    let pol = sf_list(&r.headers, "ratelimit-policy");
    assert_eq!(
        (rl.len(), rl[0].name.as_str(), rl[0].int("r")),
        (1, "hourly", Some(2))
    );
    assert_eq!((pol.len(), pol[0].name.as_str()), (1, "hourly"));
}

#[tokio::test]
async fn route_layer_and_route_keys_count_per_template_not_per_path() {
    use ratelimit_tower::key::Route;
    let layer = RateLimitLayer::builder()
        .policy(per_hour("h", 2))
        .key(ClientIp::peer().and(Route::new()))
        .build()
        .unwrap();
    let app = Router::new()
        .route("/items/{id}", routing::get(|| async { "item" }))
        .route("/other", routing::post(|| async { "other" }))
        .route_layer(layer);
    let addr = serve(app).await;
    let c = client();
    assert_eq!(get(&c, addr, "/items/1", &[]).await.status, StatusCode::OK);
    assert_eq!(get(&c, addr, "/items/2", &[]).await.status, StatusCode::OK);
    assert_eq!(
        get(&c, addr, "/items/3", &[]).await.status,
        StatusCode::TOO_MANY_REQUESTS
    );
    assert_eq!(
        send(&c, addr, "POST", "/other", &[]).await.status,
        StatusCode::OK
    );
    // Unmatched routes are not limited by a route_layer (404 from the router).
    assert_eq!(
        get(&c, addr, "/nope", &[]).await.status,
        StatusCode::NOT_FOUND
    );
}

#[tokio::test]
async fn a_plain_tower_stack_shares_state_across_clones() {
    use ratelimit_tower::key::PeerAddr;
    use tower::{Service, ServiceBuilder, ServiceExt};
    let svc = ServiceBuilder::new()
        .layer(RateLimitLayer::new(set([per_hour("h", 2)])).unwrap())
        .service_fn(|_req: http::Request<String>| async {
            Ok::<_, std::convert::Infallible>(http::Response::new(http_body_util::Full::new(
                bytes::Bytes::from("hi"),
            )))
        });
    let peer: SocketAddr = "192.0.2.1:5555".parse().unwrap();
    let mut statuses = Vec::new();
    for _ in 0..3 {
        let mut s = svc.clone();
        let mut req = http::Request::new(String::new());
        req.extensions_mut().insert(PeerAddr(peer));
        let res = s.ready().await.unwrap().call(req).await.unwrap();
        statuses.push(res.status());
    }
    assert_eq!(
        statuses,
        [
            StatusCode::OK,
            StatusCode::OK,
            StatusCode::TOO_MANY_REQUESTS
        ]
    );
    let _ = Arc::new(());
}

#[test]
fn invalid_configurations_are_rejected_with_a_message_that_says_what_to_change() {
    use ratelimit_tower::ConfigError;
    let shaper = Policy::shaper(
        "queue",
        Quota::per_second(5).build().unwrap(),
        std::time::Duration::from_secs(1),
    )
    .unwrap();
    let cases: Vec<(Result<RateLimitLayer, ConfigError>, &str)> = vec![
        (RateLimitLayer::builder().build(), ".policies(set)"),
        (
            RateLimitLayer::builder()
                .policy(per_hour("h", 1))
                .cost(0)
                .build(),
            ".skip",
        ),
        (
            RateLimitLayer::builder()
                .policy(per_hour("h", 1))
                .scope("")
                .build(),
            "1 to 32 bytes",
        ),
        (
            RateLimitLayer::builder()
                .policy(per_hour("h", 1))
                .soft_limit_percent(150)
                .build(),
            "1 to 100",
        ),
        (
            RateLimitLayer::builder()
                .policy(per_hour("h", 1))
                .methods([])
                .build(),
            "omit .methods",
        ),
        (
            RateLimitLayer::builder()
                .policy(per_hour("h", 1))
                .policy(per_hour("h", 2))
                .build(),
            "twice",
        ),
        (
            RateLimitLayer::builder().policy(shaper.clone()).build(),
            "never delays",
        ),
        // The short constructor reports the same error instead of panicking.
        (RateLimitLayer::new(set([shaper])), "never delays"),
        (
            RateLimitLayer::builder()
                .policy(per_hour("h", 1))
                .tiers(Tiers::new(set([per_hour("h", 1)])))
                .build(),
            "default tier",
        ),
        // The layer has no per-key state to fall back on: the store does.
        (
            RateLimitLayer::builder()
                .policy(per_hour("h", 1))
                .on_store_error(OnFailure::Local { instances: 2 })
                .build(),
            "build the store with it",
        ),
    ];
    for (result, hint) in cases {
        let err = result.unwrap_err().to_string();
        assert!(err.contains(hint), "{err:?} should mention {hint:?}");
    }
}

#[tokio::test]
async fn plain_hyper_server_with_a_peer_addr_extension() {
    use hyper_util::rt::TokioIo;
    use hyper_util::service::TowerToHyperService;
    use ratelimit_tower::key::PeerAddr;
    use tower::ServiceBuilder;

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let layer = RateLimitLayer::new(set([per_hour("h", 2)])).unwrap();
    tokio::spawn(async move {
        loop {
            let (stream, peer) = listener.accept().await.unwrap();
            // A hyper accept loop records the peer address itself.
            let svc = ServiceBuilder::new()
                .map_request(move |mut req: http::Request<hyper::body::Incoming>| {
                    req.extensions_mut().insert(PeerAddr(peer));
                    req
                })
                .layer(layer.clone())
                .service_fn(|_req| async {
                    Ok::<_, std::convert::Infallible>(http::Response::new(
                        http_body_util::Full::new(bytes::Bytes::from("hi")),
                    ))
                });
            tokio::spawn(async move {
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), TowerToHyperService::new(svc))
                    .await;
            });
        }
    });
    let c = client();
    let statuses = [
        get(&c, addr, "/", &[]).await.status,
        get(&c, addr, "/", &[]).await.status,
        get(&c, addr, "/", &[]).await.status,
    ];
    assert_eq!(
        statuses,
        [
            StatusCode::OK,
            StatusCode::OK,
            StatusCode::TOO_MANY_REQUESTS
        ]
    );
}
