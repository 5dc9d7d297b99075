//! Hybrid mode (local admission from leases): the over-admission bound `instances × (lease − 1)` on a
//! sliding log, measured on a manual clock against a real `redis-server`, with the Redis calls it saves.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use ratelimit_core::store::redis::HybridStore;
use ratelimit_core::{Clock, ManualClock, Policy, PolicySet, Quota, RedisStore, Store};
use ratelimit_test_support::cancel::drop_after_polls;
use ratelimit_test_support::redis_server::RedisServer;

mod common;
use common::redis::{on_manual_clock, EPOCH};

const LIMIT: u64 = 20;
const PERIOD: u64 = 1_000_000;
const INSTANCES: usize = 4;
const LEASE: u64 = 5;

/// The most admissions inside any window [t, t + PERIOD).
fn max_in_window(times: &mut [u64]) -> usize {
    times.sort_unstable();
    let (mut best, mut lo) = (0, 0);
    for hi in 0..times.len() {
        while times[hi] - times[lo] >= PERIOD {
            lo += 1;
        }
        best = best.max(hi - lo + 1);
    }
    best
}

async fn redis(server: &RedisServer, clock: &ManualClock) -> RedisStore {
    on_manual_clock(clock).connect(&server.url()).await.unwrap()
}

/// Every instance sends one request per `step_micros` for 3 s of manual time; returns the admission times
/// and the Redis calls made.
async fn run<S: Store<str, PolicySet>>(
    stores: &[S],
    clock: &ManualClock,
    set: &PolicySet,
    key: &str,
) -> Vec<u64> {
    let mut admitted = Vec::new();
    for step in 0..600u64 {
        clock.advance_micros(5_000 + (step % 7) * 100);
        for s in stores {
            if s.check(set, key, 1).await.unwrap().is_allowed() {
                admitted.push(clock.now());
            }
        }
    }
    admitted
}

#[tokio::test]
async fn hybrid_over_admission_stays_within_the_bound() {
    let server = RedisServer::start();
    let clock = ManualClock::new(EPOCH);
    let set = PolicySet::new([Policy::sliding_log(
        "log",
        Quota::new(LIMIT, Duration::from_micros(PERIOD))
            .build()
            .unwrap(),
    )
    .unwrap()])
    .unwrap();

    // Exact reference: the plain Redis store never admits more than the limit in any window.
    let mut direct = Vec::new();
    for _ in 0..INSTANCES {
        direct.push(redis(&server, &clock).await);
    }
    let mut times = run(&direct, &clock, &set, "exact").await;
    let exact_max = max_in_window(&mut times);
    assert_eq!(exact_max as u64, LIMIT);
    let direct_calls: u64 = direct.iter().map(|s| s.stats().redis_calls).sum();

    let mut hybrid = Vec::new();
    for _ in 0..INSTANCES {
        let r = redis(&server, &clock).await;
        hybrid.push(HybridStore::with_clock(
            r,
            LEASE,
            Duration::from_millis(300),
            clock.clone(),
        ));
    }
    let mut times = run(&hybrid, &clock, &set, "hybrid").await;
    let hybrid_max = max_in_window(&mut times);
    let bound = LIMIT + INSTANCES as u64 * (LEASE - 1);
    let hybrid_calls: u64 = hybrid.iter().map(|s| s.redis().stats().redis_calls).sum();
    println!(
        "sliding log {LIMIT}/s, {INSTANCES} instances, lease {LEASE}: most admitted in any 1 s window: exact {exact_max}, \
         hybrid {hybrid_max} (bound {bound}); admitted in 3 s: hybrid {}; Redis calls: exact {direct_calls}, hybrid {hybrid_calls}",
        times.len()
    );
    assert!(hybrid_max as u64 <= bound, "{hybrid_max} > bound {bound}");
    assert!(
        hybrid_max as u64 >= LIMIT - INSTANCES as u64 * LEASE,
        "hybrid still admits about the limit"
    );
    // Over 3 s the lease never lets more through than the Redis accounting plus one lease per instance.
    assert!(times.len() as u64 <= 3 * LIMIT + LIMIT + INSTANCES as u64 * (LEASE - 1));
}

#[tokio::test]
async fn hybrid_saves_round_trips_on_an_unsaturated_key() {
    let server = RedisServer::start();
    let clock = ManualClock::new(EPOCH);
    let set =
        PolicySet::new([Policy::gcra("g", Quota::per_second(1_000).build().unwrap()).unwrap()])
            .unwrap();
    let r = redis(&server, &clock).await;
    let hybrid = HybridStore::with_clock(r, 10, Duration::from_millis(100), clock.clone());
    for _ in 0..100 {
        clock.advance_micros(1_000);
        assert!(Store::<str, PolicySet>::check(&hybrid, &set, "k", 1)
            .await
            .unwrap()
            .is_allowed());
    }
    assert_eq!(
        hybrid.redis().stats().redis_calls,
        10,
        "one call per lease of 10"
    );
}

/// The worst case, built on purpose: leases taken at the start of one window are spent late, then new
/// leases are taken as soon as the log lets them; the bound is reached exactly and never passed.
#[tokio::test]
async fn hybrid_worst_case_reaches_the_bound_and_no_more() {
    let server = RedisServer::start();
    let start = 1_795_000_000_000_000;
    let clock = ManualClock::new(start);
    let set = PolicySet::new([Policy::sliding_log(
        "log",
        Quota::new(LIMIT, Duration::from_micros(PERIOD))
            .build()
            .unwrap(),
    )
    .unwrap()])
    .unwrap();
    let mut hybrid = Vec::new();
    for _ in 0..INSTANCES {
        let r = redis(&server, &clock).await;
        hybrid.push(HybridStore::with_clock(
            r,
            LEASE,
            Duration::from_millis(300),
            clock.clone(),
        ));
    }
    // (time after start in µs, requests per instance)
    let plan = [(0, 1), (290_000, 10), (1_000_000, 1), (1_200_000, 10)];
    let mut times = Vec::new();
    for (at, n) in plan {
        clock.set(start + at);
        for s in &hybrid {
            for _ in 0..n {
                if Store::<str, PolicySet>::check(s, &set, "worst", 1)
                    .await
                    .unwrap()
                    .is_allowed()
                {
                    times.push(clock.now());
                }
            }
        }
    }
    let max = max_in_window(&mut times);
    let bound = LIMIT + INSTANCES as u64 * (LEASE - 1);
    println!("worst case: most admitted in any 1 s window {max}, bound {bound}");
    assert_eq!(max as u64, bound, "the bound is tight");
}

/// A check dropped while its lease is being fetched (the client went away, a timeout fired) must not
/// leave the identity marked as "lease being fetched" forever: the next checks take leases again, about
/// one Redis call per lease, not one per check.
#[tokio::test]
async fn a_cancelled_lease_fetch_does_not_disable_leasing() {
    const LEASE: u64 = 10;
    const CHECKS: u64 = 100;
    let server = RedisServer::start();
    let clock = ManualClock::new(EPOCH);
    let set =
        PolicySet::new([Policy::gcra("g", Quota::per_second(1_000).build().unwrap()).unwrap()])
            .unwrap();
    let r = redis(&server, &clock).await;
    let hybrid = HybridStore::with_clock(r, LEASE, Duration::from_millis(100), clock.clone());
    // After its first poll the check has marked the lease as being fetched and waits for Redis.
    let dropped = drop_after_polls(Store::<str, PolicySet>::check(&hybrid, &set, "k", 1), 1).await;
    assert!(dropped.is_none(), "the check was dropped mid-fetch");

    let before = hybrid.redis().stats().redis_calls;
    for _ in 0..CHECKS {
        clock.advance_micros(1_000);
        assert!(Store::<str, PolicySet>::check(&hybrid, &set, "k", 1)
            .await
            .unwrap()
            .is_allowed());
    }
    let calls = hybrid.redis().stats().redis_calls - before;
    println!("{CHECKS} checks after a cancelled lease fetch: {calls} Redis calls");
    assert!(
        calls <= CHECKS / LEASE + 1,
        "{calls} Redis calls for {CHECKS} checks: leasing stayed disabled after the cancelled fetch"
    );
}
