//! Memory bounded in bytes under a flood of hostile requests: every request carries a long, never
//! repeated API key, user id and tier name. The layer's keys are hashed past a few dozen bytes (at most
//! `KEY_CAPACITY` bytes each), unknown tiers are not remembered, so the live heap after the flood is the
//! store's per-key budget times its key cap, however long the inputs. Measured with a counting global
//! allocator (this binary's own; the layer runs synchronously on the test thread over the in-memory store).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use ratelimit_test_support::alloc::{self, Counting};
use ratelimit_test_support::poll::ready_at_once;
use std::convert::Infallible;
use std::mem::size_of;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use ratelimit_core::{AnyState, MemoryStore, Policy, PolicySet, PolicyStates, Quota};
use ratelimit_tower::key::{ApiKey, KeyExtractorExt, User, UserId, KEY_CAPACITY};
use ratelimit_tower::{RateLimitLayer, Tier, Tiers};
use tower::{Layer, Service};

#[global_allocator]
static ALLOC: Counting = Counting;

fn live() -> isize {
    alloc::thread_live_bytes()
}

/// The buckets a hashbrown table needs for `n` entries (it keeps at most 7/8 of them full).
fn buckets(n: usize) -> usize {
    (n * 8 / 7 + 1).next_power_of_two()
}

const MAX_KEYS: usize = 512;
const SHARDS: usize = 4;
const REQUESTS: usize = 4 * MAX_KEYS;
/// As long as an API key may be (longer ones are refused as invalid).
const API_KEY_BYTES: usize = 4_096;
/// Long user ids and tier names: a copy of either per request would dwarf the budget.
const USER_ID_BYTES: usize = 8_192;
const TIER_BYTES: usize = 8_192;

/// `i` padded to `len` bytes: long, and distinct per request.
fn hostile(i: usize, len: usize) -> String {
    let mut s = format!("{i:>12}");
    s.extend(std::iter::repeat_n('x', len - s.len()));
    s
}

fn request(i: usize) -> Request<()> {
    let mut r = Request::builder()
        .header("x-api-key", hostile(i, API_KEY_BYTES))
        .header("x-tier", hostile(i, TIER_BYTES))
        .body(())
        .unwrap();
    r.extensions_mut()
        .insert(UserId::new(hostile(i, USER_ID_BYTES)));
    r
}

#[test]
fn a_flood_of_long_distinct_keys_and_tiers_stays_within_the_stores_byte_budget() {
    let set = PolicySet::new([
        Policy::gcra("burst", Quota::per_hour(10).build().unwrap()).unwrap(),
        Policy::fixed_window("daily", Quota::per_day(100).build().unwrap()).unwrap(),
    ])
    .unwrap();
    let store = MemoryStore::<Vec<u8>, PolicySet>::builder()
        .max_keys(MAX_KEYS)
        .shards(SHARDS)
        .build();
    let layer = RateLimitLayer::with_store(store)
        .key(User::<UserId>::new().and(ApiKey::header("x-api-key")))
        .tiers(Tiers::new(set.clone()).tier("pro", set.clone()))
        .tier_fn(|req| {
            let t = req.headers().get("x-tier")?.to_str().ok()?;
            Some(Tier::new(t))
        })
        .decision_latency_histogram(false)
        .build()
        .unwrap();
    let mut svc = layer.layer(tower::service_fn(|_req: Request<()>| async {
        Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(b"hi"))))
    }));
    // One request first: what is allocated once (the tier table's values, lazily built parts) is not
    // what the flood grows.
    assert_eq!(
        ready_at_once(svc.call(request(usize::MAX / 2)))
            .unwrap()
            .status(),
        StatusCode::OK
    );
    let before = live();
    for i in 0..REQUESTS {
        let res = ready_at_once(svc.call(request(i))).unwrap();
        assert_eq!(res.status(), StatusCode::OK);
    }
    let grown = live() - before;
    let bucket = size_of::<(Vec<u8>, PolicyStates)>() + 1;
    let per_key = KEY_CAPACITY + set.len() * size_of::<AnyState>();
    let budget = SHARDS * buckets(MAX_KEYS / SHARDS) * bucket + MAX_KEYS * per_key;
    println!(
        "{REQUESTS} requests with {API_KEY_BYTES}-byte API keys, {USER_ID_BYTES}-byte user ids and \
         {TIER_BYTES}-byte tiers: {} keys held, live heap grew {grown} bytes (budget {budget})",
        layer.store().len()
    );
    assert!(layer.store().len() <= MAX_KEYS);
    assert!(
        grown <= budget as isize,
        "live heap grew {grown} bytes, budget {budget}"
    );
}
