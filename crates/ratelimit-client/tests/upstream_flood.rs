//! An upstream that names fresh, huge rate-limit policies on every response cannot grow the client: what
//! the client keeps is bounded in bytes. Measured with a counting global allocator (this binary holds
//! only this test, so nothing else allocates while it measures), through a real tower stack over real
//! HTTP on loopback.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::Bytes;
use common::upstream::{Reply, Upstream};
use http_body_util::Full;
use ratelimit_client::profile::Ietf;
use ratelimit_client::reqwest::ReqwestService;
use ratelimit_client::{Limiter, RateLimitLayer};
use ratelimit_test_support::alloc::{self, Counting};
use tower::Layer;

#[global_allocator]
static ALLOC: Counting = Counting;

/// Policies per response (the IETF profile reads at most 8) and the length of each fresh name.
const POLICIES: usize = 8;
const NAME_BYTES: usize = 16 * 1024;
/// A small bucket cap, so that the flood reaches it quickly.
const MAX_BUCKETS: usize = 1_000;
/// What one tracked counter may cost, all told (key, bounded name, state, map slot): the bound asserted.
const BYTES_PER_COUNTER: usize = 1_024;

#[tokio::test(flavor = "current_thread")]
async fn fresh_huge_policy_names_cannot_grow_the_client() {
    let fresh = AtomicUsize::new(0);
    let upstream = Upstream::start(move |_, _| {
        let names: Vec<String> = (0..POLICIES)
            .map(|_| {
                let n = fresh.fetch_add(1, Ordering::Relaxed);
                format!("p{n:08}{}", "x".repeat(NAME_BYTES - 9))
            })
            .collect();
        let state: Vec<String> = names.iter().map(|n| format!("{n};r=1000;t=60")).collect();
        Reply::ok().header("ratelimit", state.join(", "))
    })
    .await;
    let limiter = Limiter::builder(Ietf::new())
        .global_limit(None)
        .max_buckets(MAX_BUCKETS, 10_000)
        .build()
        .unwrap();
    let client =
        RateLimitLayer::new(limiter.clone()).layer(ReqwestService::new(reqwest::Client::new()));
    let send = |i: usize| {
        let client = client.clone();
        let url = upstream.url(&format!("/v1/items/{i}"));
        async move {
            let req = http::Request::get(url)
                .body(Full::new(Bytes::new()))
                .unwrap();
            let res = client.oneshot(req).await.unwrap();
            assert_eq!(res.status(), 200);
        }
    };
    // Warm up: connections open and their buffers grow to the response size.
    for i in 0..20 {
        send(i).await;
    }
    let before = alloc::live_bytes().max(0) as usize;
    // Enough responses to name the cap's worth of buckets twice over.
    let responses = 2 * MAX_BUCKETS / POLICIES;
    for i in 0..responses {
        send(i).await;
    }
    let after = alloc::live_bytes().max(0) as usize;
    let grown = after.saturating_sub(before);
    let counters = limiter.snapshot().buckets.len();
    eprintln!(
        "{responses} responses of {POLICIES} fresh {NAME_BYTES}-byte names: live heap grew by {grown} bytes, {counters} counters"
    );
    assert!(counters <= MAX_BUCKETS, "{counters} counters");
    assert!(
        grown <= MAX_BUCKETS * BYTES_PER_COUNTER,
        "live heap grew by {grown} bytes, more than {} bytes for {MAX_BUCKETS} counters",
        MAX_BUCKETS * BYTES_PER_COUNTER
    );
    // Every name the client keeps is bounded.
    for b in limiter.snapshot().buckets {
        assert!(
            b.hash.as_deref().map_or(0, str::len) <= 64,
            "{}",
            b.hash.unwrap().len()
        );
        assert!(b.key.len() <= 256, "{}", b.key.len());
    }
}
