//! The Redis store against a real `redis-server`: exactness under concurrency over several connections,
//! TTLs (every key has one, and state vanishes when it no longer limits), no write on denial, hashed
//! fixed-length keys, "never" for oversized costs, refunds and resets, and the deny cache.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::Duration;

use ratelimit_core::{
    ManualClock, Outcome, Policy, PolicySet, Quota, RedisClock, RedisStore, Store,
};
use ratelimit_test_support::poll::{poll_once, wait_until};
use ratelimit_test_support::redis_server::RedisServer;

mod common;

fn every_algorithm(limit: u64, period: Duration) -> Vec<Policy> {
    let q = || Quota::new(limit, period).build().unwrap();
    vec![
        Policy::gcra("gcra", q()).unwrap(),
        Policy::token_bucket("tb", q()).unwrap(),
        Policy::leaky_bucket("lb", q()).unwrap(),
        Policy::shaper("shaper", q(), Duration::ZERO).unwrap(),
        Policy::fixed_window("fw", q()).unwrap(),
        Policy::sliding_log("log", q()).unwrap(),
        Policy::sliding_window("sw", q()).unwrap(),
    ]
}

async fn store(server: &RedisServer) -> RedisStore {
    RedisStore::builder()
        .timeout(Duration::from_secs(2))
        .connect(&server.url())
        .await
        .unwrap()
}

/// Spawns `n` concurrent checks of `hot-key` spread over `stores`; how many were admitted.
async fn admitted(stores: &[RedisStore], set: &PolicySet, n: usize) -> usize {
    let mut tasks = Vec::new();
    for i in 0..n {
        let (store, set) = (stores[i % stores.len()].clone(), set.clone());
        tasks.push(tokio::spawn(async move {
            Store::<str, PolicySet>::check(&store, &set, "hot-key", 1)
                .await
                .unwrap()
                .is_allowed()
        }));
    }
    let mut allowed = 0;
    for t in tasks {
        allowed += usize::from(t.await.unwrap());
    }
    allowed
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_tasks_over_several_connections_admit_exactly_the_limit() {
    let server = RedisServer::start();
    // Four stores = four connections, as four processes would have.
    let mut stores = Vec::new();
    for _ in 0..4 {
        stores.push(store(&server).await);
    }
    for policy in every_algorithm(100, Duration::from_secs(24 * 3600)) {
        let name = policy.name().to_owned();
        let set = PolicySet::new([policy]).unwrap();
        let allowed = admitted(&stores, &set, 200).await;
        // A per-day window could roll over mid-test only at midnight UTC; the refill of one unit takes
        // 14 minutes for the continuous algorithms.
        assert_eq!(allowed, 100, "{name}: exactly the limit under concurrency");
    }
}

/// Many callers on one connection: the calls that queue behind the in-flight ones are coalesced into
/// batch calls (fewer Redis calls than decisions), and the count admitted is still exactly the limit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn coalesced_calls_on_one_connection_admit_exactly_the_limit() {
    let server = RedisServer::start();
    let store = store(&server).await;
    for policy in every_algorithm(100, Duration::from_secs(24 * 3600)) {
        let name = policy.name().to_owned();
        let set = PolicySet::new([policy]).unwrap();
        let calls = store.stats().redis_calls;
        let allowed = admitted(std::slice::from_ref(&store), &set, 300).await;
        assert_eq!(allowed, 100, "{name}: exactly the limit when coalesced");
        let made = store.stats().redis_calls - calls;
        assert!(
            made < 300,
            "{name}: 300 decisions took {made} calls, none coalesced"
        );
    }
}

/// Giving a slot back takes a task switch; ten seconds without one is a hang, not a slow machine.
const LANE_IDLE_STUCK_AFTER: Duration = Duration::from_secs(10);

/// A caller that gives up while queued behind an in-flight call is never sent, so nothing is charged for
/// it — as for a call cancelled before it went out.
#[tokio::test]
async fn a_queued_call_dropped_before_its_batch_goes_out_charges_nothing() {
    let server = RedisServer::start();
    let store = common::redis::one_slot()
        .connect(&server.url())
        .await
        .unwrap();
    let set =
        PolicySet::new([Policy::gcra("g", Quota::per_hour(1).build().unwrap()).unwrap()]).unwrap();
    let calls = store.stats().redis_calls;
    let mut a = Box::pin(Store::<str, PolicySet>::check(&store, &set, "a", 1));
    let mut b = Box::pin(Store::<str, PolicySet>::check(&store, &set, "b", 1));
    // One poll each: `a` goes out and holds the only slot, `b` queues behind it.
    assert!(
        poll_once(&mut a).await,
        "`a` answered within its first poll"
    );
    assert!(
        poll_once(&mut b).await,
        "`b` answered within its first poll"
    );
    drop(b);
    assert!(a.await.unwrap().is_allowed());
    // An ending call hands its slot straight to the next batch, so an idle lane means any batch that
    // was going out has gone out and answered.
    wait_until("the lane going idle", LANE_IDLE_STUCK_AFTER, || {
        let lane = store.debug_state();
        (lane.in_flight, lane.queued) == (0, 0)
    })
    .await;
    assert_eq!(
        store.stats().redis_calls - calls,
        1,
        "the abandoned call was sent"
    );
    let d = Store::<str, PolicySet>::check(&store, &set, "b", 1)
        .await
        .unwrap();
    assert!(d.is_allowed(), "the abandoned call was charged: {d:?}");
}

#[tokio::test]
async fn multi_policy_checks_are_all_or_nothing_in_one_call() {
    let server = RedisServer::start();
    let store = store(&server).await;
    let set = PolicySet::new([
        Policy::gcra("burst", Quota::per_hour(10).build().unwrap()).unwrap(),
        Policy::sliding_log("hourly", Quota::per_hour(5).build().unwrap()).unwrap(),
    ])
    .unwrap();
    for _ in 0..5 {
        assert!(Store::<[u8], PolicySet>::check(&store, &set, b"k", 1)
            .await
            .unwrap()
            .is_allowed());
    }
    let d = Store::<[u8], PolicySet>::check(&store, &set, b"k", 1)
        .await
        .unwrap();
    assert_eq!(d.outcome(), Outcome::Limited);
    assert_eq!(d.binding_index(), 1);
    let calls = store.stats().redis_calls;
    assert_eq!(calls, 6, "one round trip per decision");
    // The limited check charged nothing to the GCRA policy.
    let d = Store::<[u8], PolicySet>::peek(&store, &set, b"k", 0)
        .await
        .unwrap();
    assert_eq!(d.statuses()[0].remaining, 5);
}

#[tokio::test]
async fn every_key_has_a_ttl_and_state_vanishes_when_fresh() {
    let server = RedisServer::start();
    let store = store(&server).await;
    let set = PolicySet::new(every_algorithm(5, Duration::from_millis(300))).unwrap();
    for i in 0..20u64 {
        let _ = Store::<str, PolicySet>::check(&store, &set, &format!("u{}", i % 3), 1 + i % 3)
            .await
            .unwrap();
        let _ = Store::<str, PolicySet>::refund(&store, &set, "u1", 1).await;
    }
    let keys = server.cli(&["--scan"]);
    let keys: Vec<&str> = keys.lines().collect();
    assert!(!keys.is_empty());
    for k in &keys {
        let ttl: i64 = server.cli(&["PTTL", k]).trim().parse().unwrap();
        // -1 would be a key without TTL; -2 is a key that expired since the scan (a slow machine).
        assert!(ttl != -1, "{k} has no TTL");
        // The longest-lived state, the sliding counter, is fresh two windows after its window started.
        assert!(ttl <= 600, "{k} lives {ttl} ms, longer than it can limit");
    }
    tokio::time::sleep(Duration::from_millis(700)).await;
    // SCAN skips logically expired keys (DBSIZE may still count some the expiry cycle has not reclaimed).
    assert_eq!(
        server.cli(&["--scan"]).lines().count(),
        0,
        "all state expired once fresh"
    );
}

#[tokio::test]
async fn gcra_key_expires_exactly_when_the_bucket_is_full_again() {
    let server = RedisServer::start();
    let store = store(&server).await;
    let set = PolicySet::new([
        Policy::gcra("g", Quota::per_second(10).burst(3).build().unwrap()).unwrap(),
    ])
    .unwrap();
    let (now, d) = store.check_at(&set, b"alice", 2).await.unwrap();
    // Redis 7 accepts FUNCTION: the default installs a library and calls it with FCALL.
    assert!(server.cli(&["FUNCTION", "LIST"]).contains("ratelimit_"));
    assert!(server
        .cli(&["INFO", "commandstats"])
        .contains("cmdstat_fcall:"));
    assert!(d.is_allowed());
    assert_eq!(d.binding().reset, 200_000);
    let key = store.key_for(b"alice", &set.policies()[0]);
    let tat: u64 = server.cli(&["GET", &key]).trim().parse().unwrap();
    assert_eq!(
        tat,
        now + 200_000,
        "the TAT is stored in integer µs, exactly"
    );
    // The absolute expiry (ms) is the call's time plus 200 ms, rounded up: independent of how long this
    // test takes to look.
    let expires: u64 = server.cli(&["PEXPIRETIME", &key]).trim().parse().unwrap();
    let expected = (now + 200_000).div_ceil(1000);
    assert!(
        (expected - 1..=expected + 1).contains(&expires),
        "expires at {expires} ms, expected {expected}"
    );
}

#[tokio::test]
async fn denied_checks_write_nothing() {
    let server = RedisServer::start();
    let store = store(&server).await;
    for policy in every_algorithm(3, Duration::from_secs(3600)) {
        let key = store.key_for(b"bob", &policy);
        let set = PolicySet::new([policy]).unwrap();
        assert!(Store::<[u8], PolicySet>::check(&store, &set, b"bob", 3)
            .await
            .unwrap()
            .is_allowed());
        let dump = |s: &RedisServer| {
            (
                s.cli(&["DUMP", &key]),
                s.cli(&["PTTL", &key]).trim().parse::<i64>().unwrap(),
            )
        };
        let (before, ttl_before) = dump(&server);
        tokio::time::sleep(Duration::from_millis(20)).await;
        let d = Store::<[u8], PolicySet>::check(&store, &set, b"bob", 1)
            .await
            .unwrap();
        assert_eq!(d.outcome(), Outcome::Limited);
        let (after, ttl_after) = dump(&server);
        assert_eq!(before, after, "{key}: state unchanged by a denial");
        assert!(
            ttl_after < ttl_before,
            "{key}: TTL not refreshed by a denial"
        );
    }
}

#[tokio::test]
async fn oversized_costs_are_never_and_charge_nothing() {
    let server = RedisServer::start();
    let store = store(&server).await;
    for policy in every_algorithm(5, Duration::from_secs(60)) {
        let set = PolicySet::new([policy]).unwrap();
        let d = Store::<str, PolicySet>::check(&store, &set, "c", 6)
            .await
            .unwrap();
        assert_eq!(d.outcome(), Outcome::Never);
        assert_eq!(d.remaining(), 5);
        let d = Store::<str, PolicySet>::check(&store, &set, "c", u64::MAX)
            .await
            .unwrap();
        assert_eq!(d.outcome(), Outcome::Never);
    }
    assert_eq!(server.cli(&["DBSIZE"]).trim(), "0");
}

#[tokio::test]
async fn identities_are_hashed_to_fixed_length_keys() {
    let server = RedisServer::start();
    let store = store(&server).await;
    let set = PolicySet::new([Policy::gcra("g", Quota::per_minute(5).build().unwrap()).unwrap()])
        .unwrap();
    let huge = vec![b'A'; 1 << 20];
    Store::<[u8], PolicySet>::check(&store, &set, &huge, 1)
        .await
        .unwrap();
    Store::<str, PolicySet>::check(&store, &set, "sk_live_secret", 1)
        .await
        .unwrap();
    let keys = server.cli(&["--scan"]);
    for k in keys.lines() {
        assert_eq!(k.len(), "rl:{}:g:gcra".len() + 32, "{k}");
        assert!(!k.contains("secret") && !k.contains("AAAA"));
    }
}

#[tokio::test]
async fn refund_and_reset() {
    let server = RedisServer::start();
    let store = store(&server).await;
    let set = PolicySet::new(every_algorithm(4, Duration::from_secs(3600))).unwrap();
    assert!(Store::<str, PolicySet>::check(&store, &set, "r", 4)
        .await
        .unwrap()
        .is_allowed());
    assert!(Store::<str, PolicySet>::check(&store, &set, "r", 1)
        .await
        .unwrap()
        .is_limited());
    Store::<str, PolicySet>::refund(&store, &set, "r", 1)
        .await
        .unwrap();
    assert!(Store::<str, PolicySet>::check(&store, &set, "r", 1)
        .await
        .unwrap()
        .is_allowed());
    Store::<str, PolicySet>::reset(&store, &set, "r")
        .await
        .unwrap();
    let d = Store::<str, PolicySet>::peek(&store, &set, "r", 0)
        .await
        .unwrap();
    assert!(d.statuses().iter().all(|s| s.remaining == 4));
}

#[tokio::test]
async fn client_time_never_goes_backwards_per_identity() {
    let server = RedisServer::start();
    let clock = ManualClock::new(1_000_000_000);
    let store = RedisStore::builder()
        .clock(RedisClock::Client {
            clock: Arc::new(clock.clone()),
            ttl_slack: Duration::from_secs(1),
        })
        .connect(&server.url())
        .await
        .unwrap();
    let set = PolicySet::new([Policy::gcra("g", Quota::per_second(1).build().unwrap()).unwrap()])
        .unwrap();
    let (t1, _) = store.check_at(&set, b"x", 1).await.unwrap();
    // Another client whose clock is 10 s behind talks to the same identity.
    let behind = ManualClock::new(1_000_000_000 - 10_000_000);
    let other = RedisStore::builder()
        .clock(RedisClock::Client {
            clock: Arc::new(behind),
            ttl_slack: Duration::from_secs(1),
        })
        .connect(&server.url())
        .await
        .unwrap();
    let (t2, d) = other.check_at(&set, b"x", 1).await.unwrap();
    assert_eq!(t2, t1, "time is clamped to the latest seen");
    assert_eq!(d.retry_after(), Some(Duration::from_secs(1)));
}

#[tokio::test]
async fn deny_cache_answers_a_flood_locally_until_the_exact_retry_time() {
    let server = RedisServer::start();
    let store = RedisStore::builder()
        .deny_cache(1000)
        .connect(&server.url())
        .await
        .unwrap();
    let set = PolicySet::new([
        Policy::gcra("g", Quota::per_second(5).burst(1).build().unwrap()).unwrap(),
    ])
    .unwrap();
    assert!(Store::<str, PolicySet>::check(&store, &set, "f", 1)
        .await
        .unwrap()
        .is_allowed());
    let first = Store::<str, PolicySet>::check(&store, &set, "f", 1)
        .await
        .unwrap();
    assert_eq!(first.outcome(), Outcome::Limited);
    let calls = store.stats().redis_calls;
    let mut last_retry = first.binding().retry;
    for _ in 0..1000 {
        let d = Store::<str, PolicySet>::check(&store, &set, "f", 1)
            .await
            .unwrap();
        if d.is_allowed() {
            break;
        }
        assert!(d.binding().retry <= last_retry, "retry counts down");
        last_retry = d.binding().retry;
    }
    assert!(
        store.stats().redis_calls <= calls + 1,
        "the flood stayed local"
    );
    assert!(store.stats().deny_cache_hits >= 900);
    // A set rebuilt with the same policies (a set built per request) hits the same entries; a set that
    // differs in its quota does not.
    let rebuilt =
        PolicySet::new([
            Policy::gcra("g", Quota::per_second(5).burst(1).build().unwrap()).unwrap(),
        ])
        .unwrap();
    let hits = store.stats().deny_cache_hits;
    let d = Store::<str, PolicySet>::check(&store, &rebuilt, "f", 1)
        .await
        .unwrap();
    assert_eq!(d.outcome(), Outcome::Limited);
    assert_eq!(
        store.stats().deny_cache_hits,
        hits + 1,
        "a rebuilt set missed the cache"
    );
    let other = PolicySet::new([
        Policy::gcra("g", Quota::per_second(6).burst(1).build().unwrap()).unwrap(),
    ])
    .unwrap();
    let _ = Store::<str, PolicySet>::check(&store, &other, "f", 1)
        .await
        .unwrap();
    assert_eq!(
        store.stats().deny_cache_hits,
        hits + 1,
        "another quota hit the cache"
    );
    // After the retry time, the key is admitted again (by Redis).
    tokio::time::sleep(Duration::from_millis(210)).await;
    assert!(Store::<str, PolicySet>::check(&store, &set, "f", 1)
        .await
        .unwrap()
        .is_allowed());
}

#[tokio::test]
async fn connects_over_a_unix_socket() {
    let sock = std::env::temp_dir().join(format!("ratelimit-redis-{}.sock", std::process::id()));
    let sock_str = sock.to_str().unwrap().to_owned();
    let server = RedisServer::start_with(&["--unixsocket", &sock_str, "--unixsocketperm", "700"]);
    let store = RedisStore::builder()
        .connect(&format!("unix://{sock_str}"))
        .await
        .unwrap();
    let set = PolicySet::new([Policy::gcra("g", Quota::per_minute(1).build().unwrap()).unwrap()])
        .unwrap();
    assert!(Store::<str, PolicySet>::check(&store, &set, "u", 1)
        .await
        .unwrap()
        .is_allowed());
    assert!(Store::<str, PolicySet>::check(&store, &set, "u", 1)
        .await
        .unwrap()
        .is_limited());
    drop(server);
    let _ = std::fs::remove_file(&sock);
}

#[tokio::test]
async fn invalid_configuration_is_rejected_with_a_message() {
    let err = RedisStore::builder()
        .prefix("a{b}")
        .connect("redis://127.0.0.1:1/")
        .await
        .unwrap_err();
    assert!(err.to_string().contains("prefix"), "{err}");
    let err = RedisStore::builder()
        .on_failure(ratelimit_core::OnFailure::Local { instances: 0 })
        .connect("redis://127.0.0.1:1/")
        .await
        .unwrap_err();
    assert!(err.to_string().contains("instances"), "{err}");
}
