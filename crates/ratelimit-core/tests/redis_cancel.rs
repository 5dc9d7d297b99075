//! Cancellation of the Redis store's futures at every await, against a real `redis-server`: a check
//! going out on its own, the half-open probe (a check or a reset), a check queued for a batch, a check
//! holding the coalescing slot that others queued behind, and a check around a connection replacement
//! (the call whose timeout replaces the connection, then the first call on the replacement, which
//! connects it). Each is dropped after its k-th poll for
//! every k; then nothing may be left behind (no probe held, no slot, nobody queued) and the next call
//! must behave normally: decided by Redis, a fresh identity with quota N admitted exactly N times.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::future::Future;
use std::pin::pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ratelimit_core::{OnFailure, Policy, PolicySet, Quota, RedisStore, Store, StoreError};
use ratelimit_test_support::cancel::at_every_poll;
use ratelimit_test_support::poll::{poll_once, wait_until};
use ratelimit_test_support::redis_server::RedisServer;

mod common;

/// The quota of every identity here: a fresh one is admitted exactly this many times.
const QUOTA: u64 = 3;

fn set() -> PolicySet {
    PolicySet::new([Policy::gcra("g", Quota::per_hour(QUOTA).build().unwrap()).unwrap()]).unwrap()
}

async fn check(store: &RedisStore, key: &str) -> Result<ratelimit_core::Decision, StoreError> {
    Store::<str, PolicySet>::check(store, &set(), key, 1).await
}

/// A new identity per call, so that what a dropped call may have charged never shows.
fn fresh() -> String {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    format!("id{}", NEXT.fetch_add(1, Ordering::Relaxed))
}

/// Nothing held: no probe, no coalescing slot, nobody queued, no connection replacement under way.
fn assert_nothing_held(store: &RedisStore, k: usize) {
    let s = store.debug_state();
    assert!(!s.probing, "k={k}: the probe was not released: {s:?}");
    assert!(
        !s.reconnecting,
        "k={k}: a reconnect was left in flight: {s:?}"
    );
    assert_eq!(
        (s.in_flight, s.queued),
        (0, 0),
        "k={k}: a lane kept state: {s:?}"
    );
}

/// How long a test waits for a condition that must come (a spawned call taking its slot, a batch task
/// giving it back) before it calls it a hang.
const CONDITION_WAIT: Duration = Duration::from_secs(10);

/// Waits until the store's lanes hold `n` calls in flight: a spawned call takes its slot when its task
/// first runs, a batch task gives its slot back just after answering its callers.
async fn in_flight_becomes(store: &RedisStore, n: usize) {
    let what = format!("{n} calls in flight");
    wait_until(&what, CONDITION_WAIT, || store.debug_state().in_flight == n).await;
}

/// The store answers from Redis as the reference does: a fresh identity is admitted exactly QUOTA times.
async fn behaves_normally(store: &RedisStore, k: usize) {
    let id = fresh();
    let calls = store.stats().redis_calls;
    let mut admitted = 0;
    for _ in 0..=QUOTA {
        admitted += u64::from(check(store, &id).await.unwrap().is_allowed());
    }
    assert_eq!(
        admitted, QUOTA,
        "k={k}: a fresh identity is admitted exactly its quota"
    );
    assert!(store.stats().redis_calls > calls, "k={k}: decided by Redis");
    assert!(!store.is_degraded(), "k={k}");
}

// One thread: the connection's driver cannot answer between two polls of the call, so every await
// really is pending at least once (on more threads a loopback reply can beat the first poll).
#[tokio::test]
async fn a_direct_check_dropped_at_every_await_leaves_nothing_behind() {
    let server = RedisServer::start();
    let store = RedisStore::builder().connect(&server.url()).await.unwrap();
    let points = at_every_poll(
        || {
            let store = store.clone();
            async move { check(&store, &fresh()).await }
        },
        |k, out| {
            let store = store.clone();
            async move {
                if let Some(r) = out {
                    assert!(r.unwrap().is_allowed());
                }
                assert_nothing_held(&store, k);
                behaves_normally(&store, k).await;
            }
        },
    )
    .await;
    eprintln!("direct check: {points} cancellation points");
    assert!(
        points >= 1,
        "the call never waited on Redis: {points} cancellation points"
    );
}

/// Opens the breaker on the paused `server` (threshold 1) and waits out the cooldown: the next call
/// is the probe.
async fn due_for_a_probe(store: &RedisStore, server: &RedisServer, cooldown: Duration) {
    common::redis::due_for_a_probe(store, server, &set(), cooldown).await;
}

/// The half-open probe (a check, then a reset) dropped at each await on a paused server, then on a live
/// one: the probe is released every time — the next call probes instead of being refused — and the
/// store recovers as soon as Redis answers.
// One thread, so that the live probe is pending at least once (see the direct check's test).
#[tokio::test]
async fn a_half_open_probe_dropped_at_every_await_is_released() {
    let server = RedisServer::start();
    let cooldown = Duration::from_millis(40);
    let store = RedisStore::builder()
        .timeout(Duration::from_millis(80))
        .breaker(1, cooldown)
        .on_failure(OnFailure::Error)
        .connect(&server.url())
        .await
        .unwrap();
    let reset = || {
        let store = store.clone();
        async move {
            Store::<str, PolicySet>::reset(&store, &set(), "r")
                .await
                .map(|_| ())
        }
    };
    let probe = || {
        let store = store.clone();
        async move { check(&store, "probe").await.map(|_| ()) }
    };

    // Paused: the probe waits on the server until its timeout.
    let points = paused_probe_dropped_at_every_await(&store, &server, cooldown, "check", probe)
        .await
        + paused_probe_dropped_at_every_await(&store, &server, cooldown, "reset", reset).await;
    eprintln!("paused probes (check, reset): {points} cancellation points");
    assert!(
        points >= 2,
        "the probes never waited: {points} cancellation points"
    );

    // Live: the probe's reply is on its way when it is dropped; the outcome is unknown, the breaker stays
    // open, and the next call's probe closes it.
    server.resume();
    let live = at_every_poll(
        || {
            let store = store.clone();
            async move { check(&store, "probe").await }
        },
        |k, out| {
            let store = store.clone();
            let server = &server;
            async move {
                assert!(
                    !store.debug_state().probing,
                    "live k={k}: the probe was not released"
                );
                if out.is_none() {
                    assert!(
                        store.is_degraded(),
                        "live k={k}: a dropped probe closed nothing"
                    );
                    assert!(
                        check(&store, "next").await.is_ok(),
                        "live k={k}: the next call probes"
                    );
                }
                assert_nothing_held(&store, k);
                behaves_normally(&store, k).await;
                // Open again, for the next k.
                due_for_a_probe(&store, server, cooldown).await;
                server.resume();
            }
        },
    )
    .await;
    eprintln!("live probe: {live} cancellation points");
    assert!(
        live >= 1,
        "the live probe never waited: {live} cancellation points"
    );
    server.resume();
    tokio::time::sleep(cooldown).await;
    behaves_normally(&store, 0).await;
}

/// One probe (`make`) on the paused `server`, dropped at each await: released every time, and the next
/// call probes (timing out on the paused server) rather than being refused.
async fn paused_probe_dropped_at_every_await<M, F>(
    store: &RedisStore,
    server: &RedisServer,
    cooldown: Duration,
    what: &str,
    make: M,
) -> usize
where
    M: FnMut() -> F,
    F: Future<Output = Result<(), StoreError>>,
{
    due_for_a_probe(store, server, cooldown).await;
    at_every_poll(make, |k, out| async move {
        assert!(
            !store.debug_state().probing,
            "{what} k={k}: the probe was not released"
        );
        if let Some(r) = out {
            // The probe timed out: the breaker reopened for another cooldown.
            assert!(matches!(r, Err(StoreError::Timeout(_))), "{what}: {r:?}");
            due_for_a_probe(store, server, cooldown).await;
        }
        let next = check(store, "next").await;
        assert!(
            matches!(next, Err(StoreError::Timeout(_))),
            "{what} k={k}: {next:?}"
        );
        due_for_a_probe(store, server, cooldown).await;
    })
    .await
}

/// A check queued for a batch (the only slot held by a call waiting on a paused server), dropped at
/// each await: the lane ends empty once the call ahead of it is done, and nothing was sent for it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_queued_check_dropped_at_every_await_leaves_the_lane_empty() {
    let server = &RedisServer::start();
    let store = RedisStore::builder()
        .timeout(Duration::from_millis(150))
        .breaker(1_000, Duration::from_millis(100))
        .max_in_flight(1)
        .connect(&server.url())
        .await
        .unwrap();
    let occupant = Arc::new(Mutex::new(None));
    // The one slot, held by a call waiting on the paused server; the call under test queues behind it.
    let occupy = || {
        server.pause();
        let store = store.clone();
        let handle = tokio::spawn(async move { check(&store, &fresh()).await });
        *occupant.lock().unwrap() = Some(handle);
    };
    occupy();
    in_flight_becomes(&store, 1).await;
    let points = at_every_poll(
        || {
            let store = store.clone();
            async move { check(&store, &fresh()).await }
        },
        |k, out| {
            let store = store.clone();
            let ahead = occupant.lock().unwrap().take();
            let occupy = &occupy;
            async move {
                if let Some(r) = out {
                    assert!(matches!(r, Err(StoreError::Timeout(_))), "{r:?}");
                }
                let ahead = ahead.unwrap().await.unwrap();
                assert!(matches!(ahead, Err(StoreError::Timeout(_))), "{ahead:?}");
                server.resume();
                // The batch task that took over the slot finishes on its own.
                in_flight_becomes(&store, 0).await;
                assert_nothing_held(&store, k);
                behaves_normally(&store, k).await;
                occupy();
                in_flight_becomes(&store, 1).await;
            }
        },
    )
    .await;
    eprintln!("queued check: {points} cancellation points");
    assert!(
        points >= 1,
        "the queued call never waited: {points} cancellation points"
    );
    let last = occupant.lock().unwrap().take().unwrap();
    let _ = last.await;
    server.resume();
    behaves_normally(&store, 0).await;
}

/// A check holding the lane's only slot, with callers queued behind it, dropped at each await: its slot
/// goes to their batch, which Redis answers; the lane ends empty.
// One thread: the connection's driver cannot answer between two polls of the call, so every await
// really is pending at least once (on more threads a loopback reply can beat the first poll).
#[tokio::test]
async fn an_in_flight_check_dropped_at_every_await_hands_its_slot_on() {
    const BEHIND: usize = 4;
    let server = RedisServer::start();
    let store = common::redis::one_slot()
        .connect(&server.url())
        .await
        .unwrap();
    let behind = Arc::new(Mutex::new(Vec::new()));
    let points = at_every_poll(
        || {
            let store = store.clone();
            let behind = behind.clone();
            async move {
                let id = fresh();
                let mut target = pin!(check(&store, &id));
                assert!(
                    poll_once(&mut target).await,
                    "the call went out and waits for its reply"
                );
                for _ in 0..BEHIND {
                    let store = store.clone();
                    let handle = tokio::spawn(async move { check(&store, &fresh()).await });
                    behind.lock().unwrap().push(handle);
                }
                while store.debug_state().queued < BEHIND {
                    tokio::task::yield_now().await;
                }
                target.await
            }
        },
        |k, out| {
            let store = store.clone();
            let handles: Vec<_> = behind.lock().unwrap().drain(..).collect();
            async move {
                if let Some(r) = out {
                    assert!(r.unwrap().is_allowed());
                }
                for h in handles {
                    let r = h.await.unwrap();
                    assert!(
                        r.is_ok_and(|d| d.is_allowed()),
                        "k={k}: a queued caller was stranded"
                    );
                }
                assert_nothing_held(&store, k);
                behaves_normally(&store, k).await;
            }
        },
    )
    .await;
    eprintln!("in-flight check with {BEHIND} queued behind: {points} cancellation points");
    assert!(points >= 2, "{points} cancellation points");
}

/// Under many concurrent callers (one slot, so most calls queue), one more check dropped at each await:
/// nobody else fails, and once the crowd is gone nothing is held and decisions are exact.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_check_dropped_among_many_concurrent_callers_leaves_nothing_behind() {
    let server = RedisServer::start();
    let store = common::redis::one_slot()
        .connect(&server.url())
        .await
        .unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let crowd: Vec<_> = (0..16)
        .map(|i| {
            let (store, stop) = (store.clone(), stop.clone());
            tokio::spawn(async move {
                let set = PolicySet::new([Policy::gcra(
                    "g",
                    Quota::per_hour(1_000_000_000).build().unwrap(),
                )
                .unwrap()])
                .unwrap();
                let mut n = 0;
                while !stop.load(Ordering::Relaxed) {
                    let r = Store::<str, PolicySet>::check(&store, &set, &format!("c{i}"), 1).await;
                    assert!(r.unwrap().is_allowed());
                    n += 1;
                }
                n
            })
        })
        .collect();
    let mut points = 0;
    // Several calls: on two threads one may, rarely, be answered within its first poll.
    for _ in 0..5 {
        points += at_every_poll(
            || {
                let store = store.clone();
                async move { check(&store, &fresh()).await }
            },
            |_, out| async move {
                if let Some(r) = out {
                    assert!(r.unwrap().is_allowed());
                }
            },
        )
        .await;
    }
    stop.store(true, Ordering::Relaxed);
    let mut calls = 0;
    for c in crowd {
        calls += c.await.unwrap();
    }
    eprintln!("5 checks among 16 callers ({calls} calls): {points} cancellation points");
    assert!(calls > 0);
    assert!(points >= 1, "{points} cancellation points");
    assert_nothing_held(&store, 0);
    behaves_normally(&store, 0).await;
}

/// A call that times out on a paused server (evidence that the connection may be out of step, so the
/// store replaces it), then the first call on the replacement (which connects it: the replacement is
/// lazy), dropped at each of their awaits. Choosing and installing the replacement awaits nothing, so
/// no drop can interrupt it; a drop while the replacement connects leaves the connection attempt to the
/// next call. Each time: no replacement left in flight, nothing held, and the next calls are decided
/// by Redis exactly.
// One thread, so that the replacement's connection is pending at least once (see the direct check's
// test).
#[tokio::test]
async fn a_call_dropped_at_every_await_around_a_connection_replacement_leaves_nothing_behind() {
    let server = RedisServer::start();
    let timeout = Duration::from_millis(80);
    let store = RedisStore::builder()
        .timeout(timeout)
        // Never opens: every timeout is a call that went out, so each round replaces the connection
        // (one replacement per timeout at most, and each round waits one timeout).
        .breaker(u32::MAX, Duration::from_millis(1))
        .connect(&server.url())
        .await
        .unwrap();
    // Reconnects before the round's call, and rounds dropped after their replacement was made.
    let reconnects_before = AtomicU64::new(0);
    let dropped_after_replacing = AtomicUsize::new(0);
    let points = at_every_poll(
        || {
            let (store, server) = (store.clone(), &server);
            reconnects_before.store(store.stats().reconnects, Ordering::Relaxed);
            async move {
                server.pause();
                let lost = check(&store, &fresh()).await;
                server.resume();
                let on_replacement = check(&store, &fresh()).await;
                (lost, on_replacement)
            }
        },
        |k, out| {
            let store = store.clone();
            let (server, reconnects_before, dropped_after_replacing) =
                (&server, &reconnects_before, &dropped_after_replacing);
            async move {
                server.resume();
                let replaced = store.stats().reconnects > reconnects_before.load(Ordering::Relaxed);
                match out {
                    Some((lost, on_replacement)) => {
                        assert!(matches!(lost, Err(StoreError::Timeout(_))), "{lost:?}");
                        assert!(on_replacement.unwrap().is_allowed(), "k={k}");
                        assert!(replaced, "k={k}: the timeout replaced the connection");
                    }
                    None if replaced => {
                        dropped_after_replacing.fetch_add(1, Ordering::Relaxed);
                    }
                    None => {}
                }
                assert_nothing_held(&store, k);
                behaves_normally(&store, k).await;
            }
        },
    )
    .await;
    let after_replacing = dropped_after_replacing.load(Ordering::Relaxed);
    eprintln!("around a replacement: {points} cancellation points, {after_replacing} after it");
    assert!(
        after_replacing >= 1,
        "no call was dropped on a replacement connection ({points} cancellation points)"
    );
}
