//! Allocation budget of the hot path: an admitted request through the layer with the in-memory store
//! allocates nothing beyond the `RateLimit` header value (one allocation; `RateLimit-Policy` is rendered
//! once per tier and shared) and with `rate_limit_info(true)` the box `http::Extensions` puts the
//! `RateLimitInfo` in (one more; its policy name is interned, never copied).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use ratelimit_test_support::alloc::{self, Counting};
use ratelimit_test_support::poll::ready_at_once;
use std::convert::Infallible;
use std::net::SocketAddr;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::Full;
use ratelimit_core::{Policy, PolicySet, Quota};
use ratelimit_tower::RateLimitLayer;
use tower::{Layer, Service};

#[global_allocator]
static ALLOC: Counting = Counting;

fn allocations<T>(f: impl FnOnce() -> T) -> (T, usize) {
    alloc::allocations_of(f)
}

#[test]
fn an_admitted_request_allocates_only_its_ratelimit_header_and_info() {
    assert_eq!(
        layer_allocations(true),
        2,
        "the layer should add exactly two allocations (the RateLimit value, the RateLimitInfo box)"
    );
}

#[test]
fn without_info_an_admitted_request_allocates_only_its_ratelimit_header() {
    assert_eq!(
        layer_allocations(false),
        1,
        "the layer should add exactly one allocation (the RateLimit value)"
    );
}

/// What one admitted request allocates in the layer (beyond what the inner service does).
fn layer_allocations(info: bool) -> usize {
    let set = PolicySet::new([
        Policy::gcra("burst", Quota::per_hour(1_000_000).build().unwrap()).unwrap(),
        Policy::fixed_window("daily", Quota::per_day(1_000_000).build().unwrap()).unwrap(),
    ])
    .unwrap();
    let layer = RateLimitLayer::builder()
        .policies(set)
        .decision_latency_histogram(false)
        .rate_limit_info(info)
        .build()
        .unwrap();
    let mut svc = layer.layer(tower::service_fn(|_req: Request<()>| async {
        // A typical response already has a header (so its map is allocated).
        let mut res = Response::new(Full::new(Bytes::from_static(b"hi")));
        res.headers_mut().insert(
            http::header::CONTENT_TYPE,
            http::HeaderValue::from_static("text/plain"),
        );
        Ok::<_, Infallible>(res)
    }));
    let peer: SocketAddr = "192.0.2.1:1000".parse().unwrap();
    let req = || {
        let mut r = Request::new(());
        r.extensions_mut().insert(peer);
        r
    };
    // Warm up: the key's first check inserts it into the store.
    for _ in 0..3 {
        assert!(ready_at_once(svc.call(req()))
            .unwrap()
            .headers()
            .contains_key("ratelimit"));
    }
    let r = req();
    let (res, n) = allocations(|| ready_at_once(svc.call(r)).unwrap());
    assert!(res.headers().contains_key("ratelimit-policy"));
    // The inner service's own response map (it inserts a header) accounts for the rest; measure it.
    let (_, inner) = allocations(|| {
        let mut res = Response::new(Full::new(Bytes::from_static(b"hi")));
        res.headers_mut().insert(
            http::header::CONTENT_TYPE,
            http::HeaderValue::from_static("text/plain"),
        );
        res
    });
    n - inner
}
