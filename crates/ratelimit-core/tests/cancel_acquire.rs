//! Cancel safety as a tested property: [`HybridStore`]'s lease fetch and [`acquire`]'s waits are dropped
//! after each of their polls in turn (`at_every_poll`); after every drop no lease mark, reservation or
//! charge is left behind, and the next call behaves as if the dropped one had never started.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::cell::Cell;
use std::time::Duration;

use ratelimit_core::store::redis::HybridStore;
use ratelimit_core::{
    acquire, Clock, Gcra, ManualClock, MemoryStore, Micros, Policy, PolicySet, Quota, RedisClock,
    RedisStore, Rule, Shaper, Store,
};
use ratelimit_test_support::cancel::at_every_poll;
use ratelimit_test_support::poll::wait_until;
use ratelimit_test_support::redis_server::RedisServer;

mod common;
use common::redis::{on_manual_clock, EPOCH, HANG_ONLY_TIMEOUT};

/// The quota of the hybrid tests' policy, per identity.
const QUOTA: u64 = 20;
/// The hybrid tests' lease.
const LEASE: u64 = 5;

fn per_hour(n: u64) -> PolicySet {
    PolicySet::new([Policy::fixed_window("hourly", Quota::per_hour(n).build().unwrap()).unwrap()])
        .unwrap()
}

async fn hybrid(server: &RedisServer) -> HybridStore {
    let clock = ManualClock::new(EPOCH);
    let redis = on_manual_clock(&clock)
        .connect(&server.url())
        .await
        .unwrap();
    HybridStore::with_clock(redis, LEASE, Duration::from_secs(60), clock)
}

async fn check(store: &HybridStore, set: &PolicySet, key: &str) -> bool {
    Store::<str, PolicySet>::check(store, set, key, 1)
        .await
        .unwrap()
        .is_allowed()
}

/// After a drop: no lease being fetched, and a fresh identity still gets exactly its quota.
async fn nothing_leaked(store: &HybridStore, set: &PolicySet, fresh: &str) {
    assert_eq!(
        store.lease_stats().fetching,
        0,
        "a lease mark outlived its check"
    );
    let mut admitted = 0;
    for _ in 0..2 * QUOTA {
        admitted += u64::from(check(store, set, fresh).await);
    }
    assert_eq!(admitted, QUOTA, "a fresh identity admits exactly its quota");
}

/// Leasing still works for `key`: one check takes a lease, the next is admitted from it without Redis.
async fn leases_again(store: &HybridStore, set: &PolicySet, key: &str) {
    assert!(check(store, set, key).await);
    let calls = store.redis().stats().redis_calls;
    assert!(check(store, set, key).await);
    assert_eq!(
        store.redis().stats().redis_calls,
        calls,
        "the identity admits from its lease again"
    );
}

#[tokio::test]
async fn a_hybrid_lease_fetch_dropped_at_any_poll_leaves_no_mark() {
    let server = RedisServer::start();
    let store = hybrid(&server).await;
    let set = per_hour(QUOTA);
    let round = Cell::new(0);
    let entries = Cell::new(store.lease_stats().entries);
    let points = at_every_poll(
        || {
            round.set(round.get() + 1);
            let (store, set, key) = (&store, &set, format!("fresh-{}", round.get()));
            async move { check(store, set, &key).await }
        },
        |k, out| {
            let (store, set) = (&store, &set);
            let entries = &entries;
            async move {
                let key = format!("fresh-{k}");
                match out {
                    None => assert_eq!(
                        store.lease_stats().entries,
                        entries.get(),
                        "the lease table is back to what it was"
                    ),
                    Some(allowed) => assert!(allowed),
                }
                leases_again(store, set, &key).await;
                nothing_leaked(store, set, &format!("quota-{k}")).await;
                entries.set(store.lease_stats().entries);
            }
        },
    )
    .await;
    println!("lease fetch of a fresh identity: {points} cancellation points");
    assert!(points >= 1, "the lease fetch was cancelled mid-flight");
}

/// An identity whose quota cannot cover a lease: the lease is refused, then the request is checked
/// exactly — two awaits, both cancelled.
#[tokio::test]
async fn a_refused_lease_then_exact_check_dropped_at_any_poll_leaves_no_mark() {
    let server = RedisServer::start();
    let store = hybrid(&server).await;
    let set = per_hour(QUOTA);
    let spend = |k: usize| {
        let (store, set) = (&store, &set);
        async move {
            let key = format!("spent-{k}");
            let d = Store::<str, PolicySet>::check(store.redis(), set, &key, QUOTA - 2).await;
            assert!(d.unwrap().is_allowed());
        }
    };
    let round = Cell::new(0);
    spend(1).await;
    let points = at_every_poll(
        || {
            round.set(round.get() + 1);
            let (store, set, key) = (&store, &set, format!("spent-{}", round.get()));
            async move { check(store, set, &key).await }
        },
        |k, out| {
            let (store, set) = (&store, &set);
            async move {
                if let Some(allowed) = out {
                    assert!(allowed, "two units were left");
                }
                // The next check of the identity is exact and still allowed: at most one of its two
                // units went to the dropped check.
                assert!(check(store, set, &format!("spent-{k}")).await);
                nothing_leaked(store, set, &format!("quota-{k}")).await;
                spend(k + 1).await;
            }
        },
    )
    .await;
    println!("refused lease, then exact check: {points} cancellation points");
    assert!(
        points >= 2,
        "both the lease fetch and the exact check were cancelled"
    );
}

/// A clock that reads tokio's (pausable) time, so the store sees the time `acquire` sleeps through.
#[derive(Debug, Clone)]
struct TokioClock(tokio::time::Instant);

impl Clock for TokioClock {
    fn now(&self) -> Micros {
        1_000_000_000 + self.0.elapsed().as_micros() as Micros
    }
}

fn memory<R: ratelimit_core::Rule>() -> MemoryStore<String, R, TokioClock> {
    MemoryStore::builder()
        .clock(TokioClock(tokio::time::Instant::now()))
        .build()
}

/// Drops an `acquire` of "job" after each of its polls in turn: after each drop the key reads as
/// `before` (`unchanged` says why it must), at least one wait (`cancelled`) was cut short, and the next
/// acquire then waits one emission interval (100 ms of paused time) after the one that finished, as if
/// none had been dropped.
async fn drops_leave_the_key_as_it_was<R>(
    store: &MemoryStore<String, R, TokioClock>,
    rule: &R,
    unchanged: &str,
    cancelled: &str,
) where
    R: Rule,
    MemoryStore<String, R, TokioClock>: Store<str, R>,
{
    let before = store.peek(rule, "job", 1);
    let points = at_every_poll(
        || acquire(store, rule, "job", 1, Duration::from_secs(1)),
        |_k, out| {
            let before = &before;
            async move {
                match out {
                    None => assert_eq!(&store.peek(rule, "job", 1), before, "{unchanged}"),
                    Some(r) => assert!(r.unwrap().is_allowed()),
                }
            }
        },
    )
    .await;
    assert!(points >= 1, "{cancelled} was never cancelled");
    let start = tokio::time::Instant::now();
    acquire(store, rule, "job", 1, Duration::from_secs(1))
        .await
        .unwrap();
    assert_eq!(
        start.elapsed(),
        Duration::from_millis(100),
        "one slot after the last admitted"
    );
}

/// Waiting out a limit charges nothing until the wait is over: a drop mid-sleep leaves the key as it was.
#[tokio::test(start_paused = true)]
async fn acquire_dropped_while_waiting_out_a_limit_charges_nothing() {
    let rule = Gcra::new(Quota::per_second(10).burst(1).build().unwrap());
    let store = memory::<Gcra>();
    acquire(&store, &rule, "job", 1, Duration::ZERO)
        .await
        .unwrap();
    assert!(!store.peek(&rule, "job", 1).is_allowed());
    drops_leave_the_key_as_it_was(&store, &rule, "nothing charged", "the retry sleep").await;
}

/// A shaper's delayed admission is a reservation made before the wait: a drop mid-wait gives it back.
#[tokio::test(start_paused = true)]
async fn acquire_dropped_during_a_shaping_delay_refunds_the_reservation_in_memory() {
    let rule = Shaper::new(
        Quota::per_second(10).burst(1).build().unwrap(),
        Duration::from_secs(10),
    );
    let store = memory::<Shaper>();
    acquire(&store, &rule, "job", 1, Duration::ZERO)
        .await
        .unwrap();
    assert_eq!(
        store.peek(&rule, "job", 1).delay(),
        Duration::from_millis(100)
    );
    drops_leave_the_key_as_it_was(
        &store,
        &rule,
        "the reservation was given back",
        "the shaping delay",
    )
    .await;
}

/// The same on Redis, whose refund needs a round trip: a drop mid-wait must still give the slot back.
#[tokio::test]
async fn acquire_dropped_during_a_shaping_delay_refunds_the_reservation_on_redis() {
    let server = RedisServer::start();
    let store = RedisStore::builder()
        .timeout(HANG_ONLY_TIMEOUT)
        .clock(RedisClock::Server)
        .connect(&server.url())
        .await
        .unwrap();
    // One slot a second, so a leaked reservation (2 s of delay instead of 1 s) cannot be mistaken for
    // scheduling noise.
    let set = PolicySet::new([Policy::shaper(
        "shaped",
        Quota::per_second(1).burst(1).build().unwrap(),
        Duration::from_secs(30),
    )
    .unwrap()])
    .unwrap();
    let peek_delay = || async {
        Store::<str, PolicySet>::peek(&store, &set, "job", 1)
            .await
            .unwrap()
            .delay()
    };
    acquire(&store, &set, "job", 1, Duration::ZERO)
        .await
        .unwrap();
    // The store's own tasks (its connection's driver); a drop mid-delay adds one, the refund's.
    let tasks_at_rest = || {
        tokio::runtime::Handle::current()
            .metrics()
            .num_alive_tasks()
    };
    let at_rest = tasks_at_rest();
    let points = at_every_poll(
        || acquire(&store, &set, "job", 1, Duration::from_secs(5)),
        |k, out| async move {
            if out.is_none() {
                // A refund is sent from a task of its own: look once that task has finished.
                wait_until("the background refund finishing", HANG_ONLY_TIMEOUT, || {
                    tasks_at_rest() <= at_rest
                })
                .await;
                let delay = peek_delay().await;
                assert!(
                    delay <= Duration::from_millis(1_000),
                    "after a drop at poll {k} the next slot is {delay:?} away: the reservation was kept"
                );
            }
        },
    )
    .await;
    assert!(
        points >= 2,
        "both the check on the wire and the shaping delay were cancelled"
    );
}
