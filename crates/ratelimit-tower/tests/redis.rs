//! The layer over the Redis store: real `redis-server` processes on free loopback ports (started here,
//! killed on drop; a missing `redis-server` fails loudly), real axum servers, a real HTTP client.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
use ratelimit_test_support::redis_server;

use std::time::Duration;

use axum::routing;
use axum::Router;
use http::StatusCode;
use ratelimit_core::{OnFailure, RedisStore, Store};
use ratelimit_tower::key::Global;
use ratelimit_tower::RateLimitLayer;

use common::*;
use redis_server::RedisServer;

async fn store(url: &str) -> RedisStore {
    // Generous timeout: 200 concurrent requests on a 2-core machine queue up; a timeout would be a 503.
    RedisStore::builder()
        .timeout(Duration::from_secs(5))
        .connect(url)
        .await
        .unwrap()
}

fn app<S: Store<[u8], ratelimit_core::PolicySet> + 'static>(layer: RateLimitLayer<S>) -> Router {
    Router::new()
        .route("/", routing::get(|| async { "ok" }))
        .layer(layer)
}

async fn hammer(addrs: &[std::net::SocketAddr], n: usize) -> (usize, usize) {
    let c = client();
    let mut tasks = Vec::new();
    for i in 0..n {
        let c = c.clone();
        let addr = addrs[i % addrs.len()];
        tasks.push(tokio::spawn(
            async move { get(&c, addr, "/", &[]).await.status },
        ));
    }
    let (mut ok, mut limited) = (0, 0);
    for t in tasks {
        match t.await.unwrap() {
            StatusCode::OK => ok += 1,
            StatusCode::TOO_MANY_REQUESTS => limited += 1,
            s => panic!("unexpected status {s}"),
        }
    }
    (ok, limited)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_requests_over_redis_admit_exactly_the_limit_across_two_servers() {
    let redis = RedisServer::start();
    // Two independent servers (as two processes would be), each with its own Redis connection.
    let mut addrs = Vec::new();
    for _ in 0..2 {
        let layer = RateLimitLayer::with_store(store(&redis.url()).await)
            .policy(per_hour("hourly", 50))
            .key(Global)
            .build()
            .unwrap();
        addrs.push(serve(app(layer)).await);
    }
    assert_eq!(hammer(&addrs, 200).await, (50, 150));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_headers_match_the_memory_store_and_outages_follow_the_layer_policy() {
    let redis = RedisServer::start();
    let layer = RateLimitLayer::with_store(store(&redis.url()).await)
        .policy(per_hour("hourly", 3))
        .build()
        .unwrap();
    let addr = serve(app(layer)).await;
    let c = client();
    for i in 0..3 {
        let r = get(&c, addr, "/", &[]).await;
        assert_eq!(r.status, StatusCode::OK);
        assert_eq!(sf_list(&r.headers, "ratelimit")[0].int("r"), Some(2 - i));
    }
    let r = get(&c, addr, "/", &[]).await;
    assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS);
    assert!(r.header("retry-after").unwrap().parse::<u64>().unwrap() >= 1);

    // Redis goes away: fail closed → 503 (not 429); fail open → 200 without headers.
    let url = redis.url();
    let closed = outage_layer(&url, OnFailure::Error, OnFailure::Error).await;
    let open = outage_layer(&url, OnFailure::Error, OnFailure::Allow).await;
    // The fallback: the store decides locally while Redis is away (here one instance: the whole quota).
    let local = outage_layer(&url, OnFailure::Local { instances: 1 }, OnFailure::Error).await;
    let closed_addr = serve(app(closed)).await;
    let open_addr = serve(app(open)).await;
    let local_addr = serve(app(local)).await;
    drop(redis);
    let r = get(&c, closed_addr, "/", &[]).await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE);
    let r = get(&c, open_addr, "/", &[]).await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(r.headers.get("ratelimit").is_none());
    // Still limited, with headers: 3 admitted, then 429s.
    let mut statuses = Vec::new();
    for _ in 0..5 {
        let r = get(&c, local_addr, "/", &[]).await;
        if r.status == StatusCode::OK {
            assert_eq!(sf_list(&r.headers, "ratelimit").len(), 1);
        }
        statuses.push(r.status.as_u16());
    }
    assert_eq!(statuses, [200, 200, 200, 429, 429]);
}

/// A layer of 3 an hour over a Redis store with a short timeout and the given failure policies.
async fn outage_layer(
    url: &str,
    on_failure: OnFailure,
    on_store_error: OnFailure,
) -> RateLimitLayer<RedisStore> {
    let store = RedisStore::builder()
        .timeout(Duration::from_millis(200))
        .on_failure(on_failure)
        .connect(url)
        .await
        .unwrap();
    RateLimitLayer::with_store(store)
        .policy(per_hour("hourly", 3))
        .on_store_error(on_store_error)
        .build()
        .unwrap()
}
