//! Replies out of step: a reply lost (or cut short) while the connection stays up, through a
//! [`FaultProxy`] in front of a real `redis-server`.
//!
//! redis-rs multiplexes every call over one connection and hands replies to requests in the order they
//! were sent. Once one reply is lost, each later reply answers an older request — for ever, as long as
//! the connection lives — and a caller can be handed another call's reply: a decision for another
//! identity. The store must (1) never take another call's reply for its own, and (2) replace the
//! connection, so that calls sent afterwards get their own replies again; without a reconnect storm.
#![cfg(feature = "redis")]
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use ratelimit_core::{Policy, PolicySet, PolicyStates, Quota, RedisStore, Rule};
use ratelimit_test_support::fault_proxy::{Corruption, Fault, FaultProxy};
use ratelimit_test_support::poll::{wait_until, wait_until_async};
use ratelimit_test_support::redis_server::RedisServer;

/// Long enough that a call is certainly still waiting when the next one is sent on two busy cores.
const TIMEOUT: Duration = Duration::from_millis(300);
const COOLDOWN: Duration = Duration::from_millis(300);
/// Hang detector, not a speed requirement: the proxy damages the next reply within milliseconds, and a
/// store is back in step within two timeouts and two cooldowns; ten times that is only reached by a hang
/// (a store that never replaces an out-of-step connection).
const STUCK_AFTER: Duration = Duration::from_secs(12);
/// Rounds of four concurrent calls during a lasting loss, at least: enough failed calls to count, however
/// fast or slow the machine runs them.
const LOSS_ROUNDS_AT_LEAST: usize = 4;

static IDENTITIES: AtomicU64 = AtomicU64::new(0);

fn fresh(tag: &str) -> String {
    format!("{tag}-{}", IDENTITIES.fetch_add(1, Ordering::Relaxed))
}

/// One GCRA policy of `limit` per hour: no unit comes back during a test.
fn set(limit: u64) -> PolicySet {
    PolicySet::new([Policy::gcra("g", Quota::per_hour(limit).build().unwrap()).unwrap()]).unwrap()
}

async fn store(proxy: &FaultProxy, failures_to_open: u32) -> RedisStore {
    RedisStore::builder()
        .timeout(TIMEOUT)
        .breaker(failures_to_open, COOLDOWN)
        // Enough slots that every concurrent call of these tests goes out on its own, as in a store under
        // light load (coalesced calls get their replies inside one batch reply).
        .max_in_flight(8)
        .connect(&proxy.redis_url())
        .await
        .unwrap()
}

/// Waits until the proxy has damaged `n` replies in all, then lets replies through again.
async fn lift_after_damage(proxy: &FaultProxy, n: u64) {
    wait_until("the proxy damaging a reply", STUCK_AFTER, || {
        proxy.damaged() >= n
    })
    .await;
    proxy.set(Fault::PassThrough);
}

/// A fresh identity checked through `check_at`, compared with the reference at the server's time.
async fn exact_on_fresh(store: &RedisStore, set: &PolicySet) -> Result<(), String> {
    let identity = fresh("fresh");
    let (now, got) = store
        .check_at(set, identity.as_bytes(), 1)
        .await
        .map_err(|e| format!("failed: {e}"))?;
    let want = set.check(&mut PolicyStates::default(), now, 1);
    if got == want {
        Ok(())
    } else {
        Err(format!("got {got:?}, reference {want:?}"))
    }
}

/// One reply damaged by `corruption` while the connection stays up: the call it answered fails, and
/// every call after it is decided by its own reply.
async fn one_damaged_reply_then_in_step(corruption: Corruption) {
    let server = RedisServer::start();
    let proxy = FaultProxy::to_redis(&server).await.unwrap();
    let store = store(&proxy, 3).await;
    let set = set(10);
    exact_on_fresh(&store, &set).await.unwrap();

    proxy.set(Fault::Corrupt(corruption.clone()));
    let lost = {
        let (store, set) = (store.clone(), set.clone());
        tokio::spawn(async move { store.check_at(&set, b"lost", 1).await })
    };
    lift_after_damage(&proxy, 1).await;
    let lost = lost.await.unwrap();
    assert!(
        lost.is_err(),
        "{corruption:?}: the damaged call failed: {lost:?}"
    );

    let mut wrong = Vec::new();
    for i in 0..5 {
        if let Err(e) = exact_on_fresh(&store, &set).await {
            wrong.push(format!("call {i} after the damaged reply: {e}"));
        }
    }
    assert!(
        wrong.is_empty(),
        "{corruption:?}: calls after one damaged reply were not answered by their own replies:\n{}",
        wrong.join("\n")
    );
    assert!(!store.is_degraded());
    assert_eq!(store.stats().reconnects, 1, "{corruption:?}: one reconnect");
    assert!(
        !store.debug_state().reconnecting,
        "no reconnect left in flight"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_swallowed_reply_leaves_no_later_reply_out_of_step() {
    one_damaged_reply_then_in_step(Corruption::Replace(Vec::new())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_truncated_reply_leaves_no_later_reply_out_of_step() {
    one_damaged_reply_then_in_step(Corruption::Truncate).await;
}

/// The worst outcome for a limiter: an identity out of quota admitted on the strength of another
/// identity's reply. A call for the exhausted identity loses its reply; a call for a fresh identity,
/// sent while the first still waits, gets an admission back — which the connection hands to the first.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_reply_never_hands_a_call_another_calls_decision() {
    let server = RedisServer::start();
    let proxy = FaultProxy::to_redis(&server).await.unwrap();
    let store = store(&proxy, 3).await;
    let one = set(1);
    let exhausted = fresh("exhausted");
    let first = store.check_at(&one, exhausted.as_bytes(), 1).await.unwrap();
    assert!(first.1.is_allowed());
    let second = store.check_at(&one, exhausted.as_bytes(), 1).await.unwrap();
    assert!(!second.1.is_allowed(), "out of quota for an hour");

    proxy.set(Fault::Corrupt(Corruption::Replace(Vec::new())));
    let lost = {
        let (store, one, exhausted) = (store.clone(), one.clone(), exhausted.clone());
        tokio::spawn(async move { store.check_at(&one, exhausted.as_bytes(), 1).await })
    };
    lift_after_damage(&proxy, 1).await;
    let bystander = fresh("bystander");
    let other = store.check_at(&one, bystander.as_bytes(), 1).await;
    let lost = lost.await.unwrap();

    if let Ok((_, d)) = &lost {
        assert!(
            !d.is_allowed(),
            "the exhausted identity was admitted on another identity's reply: {d:?}"
        );
    }
    if let Ok((now, d)) = &other {
        let want = one.check(&mut PolicyStates::default(), *now, 1);
        assert_eq!(d, &want, "the bystander got another identity's decision");
    }
    // The store recovers: the next calls are decided by their own replies.
    for _ in 0..3 {
        exact_on_fresh(&store, &one).await.unwrap();
    }
    let third = store.check_at(&one, exhausted.as_bytes(), 1).await.unwrap();
    assert!(!third.1.is_allowed(), "still out of quota");
}

/// The store's WARN and INFO lines about its connection's replies being out of step, each with the thread
/// that logged it: installed once as the global subscriber (a thread's scoped subscriber can miss events
/// whose callsites other tests of this binary registered first), read per thread.
#[derive(Clone, Default)]
struct ReconnectLogs(Arc<Mutex<Vec<(std::thread::ThreadId, String)>>>);

impl ReconnectLogs {
    fn installed() -> &'static ReconnectLogs {
        static LOGS: OnceLock<ReconnectLogs> = OnceLock::new();
        LOGS.get_or_init(|| {
            use tracing_subscriber::layer::SubscriberExt;
            let logs = ReconnectLogs::default();
            tracing::subscriber::set_global_default(
                tracing_subscriber::registry().with(logs.clone()),
            )
            .unwrap();
            logs
        })
    }

    /// The lines logged on this thread so far.
    fn here(&self) -> Vec<String> {
        let me = std::thread::current().id();
        let lines = self.0.lock().unwrap();
        lines
            .iter()
            .filter(|(t, _)| *t == me)
            .map(|(_, m)| m.clone())
            .collect()
    }
}

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for ReconnectLogs {
    fn on_event(&self, event: &tracing::Event<'_>, _: tracing_subscriber::layer::Context<'_, S>) {
        struct Message(String);
        impl tracing::field::Visit for Message {
            fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
                if field.name() == "message" {
                    self.0 = format!("{value:?}");
                }
            }
        }
        if *event.metadata().level() > tracing::Level::INFO {
            return;
        }
        let mut m = Message(String::new());
        event.record(&mut m);
        if m.0.contains("connection") && m.0.contains("step") {
            let me = std::thread::current().id();
            self.0.lock().unwrap().push((me, m.0));
        }
    }
}

/// Every reply lost for a while, calls going out all along (a breaker that never opens): the store
/// replaces the connection at most once per spacing (the breaker's cooldown), not once per failed call,
/// logs the episode once and counts every reconnect. On one thread: the log subscriber is the thread's.
#[tokio::test(flavor = "current_thread")]
async fn a_lasting_loss_replaces_the_connection_at_most_once_per_cooldown() {
    let logs = ReconnectLogs::installed();
    let server = RedisServer::start();
    let proxy = FaultProxy::to_redis(&server).await.unwrap();
    let store = store(&proxy, u32::MAX).await;
    let set = set(10);
    exact_on_fresh(&store, &set).await.unwrap();

    proxy.set(Fault::Corrupt(Corruption::Replace(Vec::new())));
    let started = Instant::now();
    let (mut failed, mut rounds) = (0, 0);
    while rounds < LOSS_ROUNDS_AT_LEAST || started.elapsed() < 6 * COOLDOWN {
        rounds += 1;
        let mut calls = Vec::new();
        for _ in 0..4 {
            let (store, set) = (store.clone(), set.clone());
            calls.push(tokio::spawn(async move {
                store.check_at(&set, fresh("lossy").as_bytes(), 1).await
            }));
        }
        for c in calls {
            failed += usize::from(c.await.unwrap().is_err());
        }
    }
    proxy.set(Fault::PassThrough);
    let during = store.stats().reconnects;
    // Read after the count: every reconnect counted happened within `lasted`.
    let lasted = started.elapsed();
    let most = 1 + (lasted.as_nanos() / COOLDOWN.as_nanos()) as u64;
    assert!(
        failed > 10,
        "every call failed during the loss ({failed} of {})",
        4 * rounds
    );
    assert!(
        (1..=most).contains(&during),
        "{during} reconnects over {lasted:?} of lost replies; at most {most} (one per cooldown)"
    );

    // Recovery: the connection made during the loss is out of step too; the next failure replaces it.
    wait_until_async("in step again after the loss", STUCK_AFTER, || async {
        exact_on_fresh(&store, &set).await.is_ok()
    })
    .await;
    for _ in 0..3 {
        exact_on_fresh(&store, &set).await.unwrap();
    }
    let lines = logs.here();
    assert_eq!(
        lines.len(),
        2,
        "one line when the replies went out of step, one when they are in step again: {lines:#?}"
    );
}
