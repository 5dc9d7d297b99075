//! The Redis store when Redis misbehaves: paused with SIGSTOP (calls resolve within the timeout by the
//! failure policy, then the circuit breaker stops calling), killed and restarted (reconnection and script
//! reload), and `SCRIPT FLUSH` in the middle of a concurrent run (no caller sees an error).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use ratelimit_core::store::redis::Scripting;
use ratelimit_core::{OnFailure, Outcome, Policy, PolicySet, Quota, RedisStore, Store, StoreError};
use ratelimit_test_support::fault_proxy::{Corruption, Fault, FaultProxy};
use ratelimit_test_support::poll::wait_until_async;
use ratelimit_test_support::redis_server::RedisServer;

mod common;
use common::redis::due_for_a_probe;

fn set() -> PolicySet {
    PolicySet::new([Policy::gcra("g", Quota::per_hour(10).build().unwrap()).unwrap()]).unwrap()
}

/// The store's timeout and breaker cooldown in most tests here.
const TIMEOUT: Duration = Duration::from_millis(50);
const COOLDOWN: Duration = Duration::from_millis(300);
/// Hang detector, not a speed requirement: a call resolves within a timeout and a store recovers within a
/// cooldown and a probe or two; twenty cooldowns only a hang (a call with no deadline, a breaker that
/// never closes) reaches, never a loaded machine.
const STUCK_AFTER: Duration = Duration::from_secs(6);

async fn store(server: &RedisServer, on_failure: OnFailure) -> RedisStore {
    RedisStore::builder()
        .timeout(TIMEOUT)
        .breaker(3, COOLDOWN)
        .on_failure(on_failure)
        .connect(&server.url())
        .await
        .unwrap()
}

async fn check(store: &RedisStore, key: &str) -> Result<ratelimit_core::Decision, StoreError> {
    Store::<str, PolicySet>::check(store, &set(), key, 1).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paused_redis_resolves_calls_within_the_timeout_by_policy() {
    let server = RedisServer::start();
    let closed = store(&server, OnFailure::Error).await;
    let open = store(&server, OnFailure::Allow).await;
    let local = store(&server, OnFailure::Local { instances: 2 }).await;
    assert!(check(&closed, "a").await.unwrap().is_allowed());

    server.pause();
    // Concurrent calls in flight when Redis stops answering: each resolves by itself, as a typed error.
    let started = Instant::now();
    let mut tasks = Vec::new();
    for i in 0..8 {
        let s = closed.clone();
        tasks.push(tokio::spawn(
            async move { check(&s, &format!("k{i}")).await },
        ));
    }
    for t in tasks {
        let r = t.await.unwrap();
        assert!(
            matches!(
                r,
                Err(StoreError::Timeout(_)) | Err(StoreError::Unavailable(_))
            ),
            "{r:?}"
        );
    }
    assert!(
        started.elapsed() < STUCK_AFTER,
        "stuck: calls on a paused Redis did not resolve within {STUCK_AFTER:?} (timeout {TIMEOUT:?})"
    );
    assert!(closed.is_degraded(), "the breaker opened");
    // While open, nothing is sent: a dead Redis costs nothing per request.
    let calls = closed.stats().redis_calls;
    for _ in 0..100 {
        assert!(matches!(
            check(&closed, "a").await,
            Err(StoreError::Unavailable(_))
        ));
    }
    assert_eq!(closed.stats().redis_calls, calls);

    // Fail open: admitted, with the full quota; impossible costs are still Never.
    for _ in 0..5 {
        assert!(check(&open, "a").await.unwrap().is_allowed());
    }
    let d = Store::<str, PolicySet>::check(&open, &set(), "a", 11)
        .await
        .unwrap();
    assert_eq!(d.outcome(), Outcome::Never);
    assert!(open.stats().fallbacks >= 5);

    // Local fallback: the quota divided by 2 instances, decided in process.
    let admitted = {
        let mut n = 0;
        for _ in 0..20 {
            n += usize::from(check(&local, "z").await.unwrap().is_allowed());
        }
        n
    };
    assert_eq!(admitted, 5, "10 per hour over 2 instances = 5 locally");

    server.resume();
    // The probe after the cooldown closes the breaker (calls before it are refused at once, unsent).
    wait_until_async("recovery after SIGCONT", STUCK_AFTER, || async {
        check(&closed, "a").await.is_ok()
    })
    .await;
    assert!(!closed.is_degraded());
}

/// Callers queued behind in-flight calls (coalescing) have no timer of their own: on a paused Redis each
/// still resolves, as a timeout, on its own deadline — not after the calls ahead of it have timed out one
/// by one (62 callers over 2 slots, a timeout each: 31 timeouts in a row), nor after waiting for a slot
/// and then a whole timeout of its own.
///
/// Measured on tokio's paused clock, not the wall clock: once Redis is paused nothing but timers can
/// wake the calls, so the runtime jumps from one timer to the next and each call's elapsed time is
/// exactly where its deadline fired, however loaded the machine is. Every call must end in a timeout,
/// no later than one timeout after it started, and the queued ones go out coalesced.
#[tokio::test]
async fn queued_calls_on_a_paused_redis_time_out_on_their_own_deadline() {
    const QUEUED_TIMEOUT: Duration = Duration::from_millis(250);
    /// Timers fire on a millisecond wheel.
    const TIMER_GRANULARITY: Duration = Duration::from_millis(2);
    const SLOTS: usize = 2;
    const QUEUED: usize = 62;
    let server = RedisServer::start();
    let store = RedisStore::builder()
        .timeout(QUEUED_TIMEOUT)
        .breaker(1_000_000, Duration::from_millis(500))
        .max_in_flight(SLOTS)
        .connect(&server.url())
        .await
        .unwrap();
    assert!(check(&store, "warm").await.unwrap().is_allowed());
    server.pause();
    // From here nothing Redis sends can wake a call: only deadlines can.
    tokio::time::pause();
    let timed = |s: RedisStore, key: String| async move {
        let started = tokio::time::Instant::now();
        let r = check(&s, &key).await;
        (r, started.elapsed())
    };
    let calls_before = store.stats().redis_calls;
    // Two calls take the two in-flight slots; once they hold them, the rest queue behind them.
    let mut tasks = Vec::new();
    for i in 0..SLOTS {
        tasks.push(tokio::spawn(timed(store.clone(), format!("d{i}"))));
    }
    while store.debug_state().in_flight < SLOTS {
        tokio::task::yield_now().await;
    }
    // The queued calls start half a timeout later, so they are still live when the slots free up and
    // go out as a batch, which must run on what is left of their deadline, not a fresh timeout.
    tokio::time::advance(QUEUED_TIMEOUT / 2).await;
    for i in 0..QUEUED {
        tasks.push(tokio::spawn(timed(store.clone(), format!("q{i}"))));
    }
    let mut worst = Duration::ZERO;
    for t in tasks {
        let (r, took) = t.await.unwrap();
        assert!(matches!(r, Err(StoreError::Timeout(_))), "{r:?}");
        worst = worst.max(took);
    }
    tokio::time::resume();
    server.resume();
    assert!(
        worst <= QUEUED_TIMEOUT + TIMER_GRANULARITY,
        "a call waited {worst:?} on tokio's clock with a {QUEUED_TIMEOUT:?} timeout: queued calls must \
         time out on their own deadline"
    );
    let sent = store.stats().redis_calls - calls_before;
    assert!(
        sent < (SLOTS + QUEUED) as u64,
        "the queued calls were not coalesced: {sent} Redis calls for {} callers",
        SLOTS + QUEUED
    );
    // And the connection works again afterwards.
    wait_until_async("recovery after SIGCONT", STUCK_AFTER, || async {
        check(&store, "after").await.is_ok()
    })
    .await;
}

#[tokio::test]
async fn killed_and_restarted_redis_recovers_and_reloads_the_script() {
    let mut server = RedisServer::start();
    let store = store(&server, OnFailure::Error).await;
    assert!(check(&store, "a").await.unwrap().is_allowed());
    let loads = store.stats().script_loads;
    server.kill();
    for _ in 0..5 {
        assert!(check(&store, "a").await.is_err());
    }
    server.restart();
    wait_until_async("the store reconnecting on its own", STUCK_AFTER, || async {
        check(&store, "a").await.is_ok_and(|d| {
            assert!(d.is_allowed());
            true
        })
    })
    .await;
    assert!(
        store.stats().script_loads > loads,
        "the fresh server answered NOSCRIPT and the script was reloaded"
    );
}

async fn flush_mid_run(scripting: Scripting, flush: &'static str) {
    let server = RedisServer::start();
    let store = RedisStore::builder()
        .timeout(Duration::from_secs(2))
        .scripting(scripting)
        .connect(&server.url())
        .await
        .unwrap();
    let flusher = tokio::spawn({
        let url = server.url();
        async move {
            let client = redis::Client::open(url).unwrap();
            let mut conn = client.get_multiplexed_async_connection().await.unwrap();
            for _ in 0..20 {
                tokio::time::sleep(Duration::from_millis(10)).await;
                let _: () = redis::cmd(flush)
                    .arg("FLUSH")
                    .query_async(&mut conn)
                    .await
                    .unwrap();
            }
        }
    });
    let mut tasks = Vec::new();
    for t in 0..8 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            let set = PolicySet::new([Policy::sliding_window(
                "w",
                Quota::per_hour(1_000_000).build().unwrap(),
            )
            .unwrap()])
            .unwrap();
            let mut n = 0;
            let until = Instant::now() + Duration::from_millis(300);
            while Instant::now() < until {
                Store::<str, PolicySet>::check(&store, &set, &format!("t{t}"), 1)
                    .await
                    .expect("no caller sees NOSCRIPT / Function not found");
                n += 1;
            }
            n
        }));
    }
    let mut total = 0;
    for t in tasks {
        total += t.await.unwrap();
    }
    flusher.await.unwrap();
    assert!(total > 100, "the run made {total} checks");
    assert!(store.stats().script_loads > 7, "flushes forced reloads");
    assert_eq!(store.stats().errors, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn script_flush_mid_run_is_invisible_to_callers() {
    flush_mid_run(Scripting::Eval, "SCRIPT").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn function_flush_mid_run_is_invisible_to_callers() {
    flush_mid_run(Scripting::Functions, "FUNCTION").await;
}

/// Waits until `store` answers from Redis again (the breaker closed); fails as stuck after `STUCK_AFTER`,
/// naming `what` did not happen.
async fn recovers(store: &RedisStore, what: &str) {
    // With a fallback a call is answered either way: recovered means answered with the breaker closed.
    wait_until_async(what, STUCK_AFTER, || async {
        check(store, "recovery").await.is_ok() && !store.is_degraded()
    })
    .await;
}

/// The half-open probe's caller gives up (an HTTP client disconnecting: its future is dropped) before
/// the probe records an outcome. Redis health is then unknown; the next call must be able to probe, and the
/// store recovers as soon as Redis answers — not refuse every call for the life of the process.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_half_open_probe_does_not_keep_the_breaker_open() {
    let server = RedisServer::start();
    let store = store(&server, OnFailure::Error).await;
    assert!(check(&store, "a").await.is_ok());
    due_for_a_probe(&store, &server, &set(), COOLDOWN).await;
    // The probe goes out to the paused server; its caller disconnects after 10 ms.
    let probe = tokio::time::timeout(Duration::from_millis(10), check(&store, "probe")).await;
    assert!(
        probe.is_err(),
        "the probe was still waiting on the paused server"
    );
    server.resume();
    recovers(
        &store,
        "the breaker closing after the probe's caller went away",
    )
    .await;
}

/// `reset` during half-open takes the probe's place; whatever it finds, it must not leave the breaker
/// waiting for an outcome that never comes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reset_during_half_open_does_not_keep_the_breaker_open() {
    let server = RedisServer::start();
    let store = store(&server, OnFailure::Error).await;
    assert!(check(&store, "a").await.is_ok());
    due_for_a_probe(&store, &server, &set(), COOLDOWN).await;
    server.resume();
    let _ = Store::<str, PolicySet>::reset(&store, &set(), "a").await;
    recovers(&store, "the breaker closing after a reset in half-open").await;
}

/// A value this limiter did not write at one identity's key (Redis answers WRONGTYPE) is that key's
/// error: its requests follow the failure policy, and no other identity is affected — the breaker stays
/// closed however often the bad identity is asked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_foreign_value_at_one_key_affects_only_that_identity() {
    let server = RedisServer::start();
    let gcra = set();
    let log =
        PolicySet::new([Policy::sliding_log("l", Quota::per_hour(10).build().unwrap()).unwrap()])
            .unwrap();
    for (on_failure, set) in [
        (OnFailure::Error, &gcra),
        (OnFailure::Allow, &gcra),
        (OnFailure::Local { instances: 1 }, &gcra),
        (OnFailure::Error, &log),
    ] {
        let store = store(&server, on_failure).await;
        let key = store.key_for(b"bad", &set.policies()[0]);
        // GCRA keeps a string (a hash answers WRONGTYPE); the sliding log a sorted set (a string does).
        if set == &gcra {
            server.cli(&["HSET", &key, "field", "foreign"]);
        } else {
            server.cli(&["SET", &key, "foreign"]);
        }
        for _ in 0..6 {
            let r = Store::<str, PolicySet>::check(&store, set, "bad", 1).await;
            match on_failure {
                OnFailure::Error => assert!(
                    matches!(r, Err(StoreError::KeyState { .. })),
                    "{on_failure:?}: {r:?}"
                ),
                _ => assert!(
                    r.unwrap().is_allowed(),
                    "{on_failure:?}: the fallback answers"
                ),
            }
        }
        let calls = store.stats().redis_calls;
        let d = Store::<str, PolicySet>::check(&store, set, "good", 1).await;
        assert!(
            d.as_ref().is_ok_and(|d| d.is_allowed()),
            "{on_failure:?}: another identity was refused: {d:?}"
        );
        assert_eq!(store.stats().redis_calls, calls + 1, "decided by Redis");
        assert!(
            !store.is_degraded(),
            "{on_failure:?}: one bad key opened the breaker"
        );
        assert!(store.stats().key_state_errors >= 6);
        server.cli(&["DEL", &key]);
    }
}

/// A reply put in place of Redis's by something between the store and Redis (here the fault proxy: well-formed
/// RESP with an impossible value) does not carry its call's token: it is never a decision (a protocol
/// error, or a timeout while the replacement connection gets the same treatment), it follows the failure
/// policy, never reaches the deny cache, and the store replaces the connection. Once the replies are
/// Redis's again, decisions are exact. (A bad reply that does carry its token — a wrong server, not a
/// wrong stream — is `redis_corrupt`'s.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_injected_reply_is_never_a_decision_and_follows_the_failure_policy() {
    /// The lean GCRA path's reply shape: admitted, with a reset of 31 years on an hourly quota.
    const IMPOSSIBLE_GCRA_REPLY: &[u8] = b"*3\r\n:1\r\n:999999999999999\r\n:1\r\n";
    let server = RedisServer::start();
    let proxy = FaultProxy::start(format!("127.0.0.1:{}", server.port).parse().unwrap())
        .await
        .unwrap();
    for on_failure in [OnFailure::Allow, OnFailure::Error] {
        let store = RedisStore::builder()
            .timeout(Duration::from_millis(100))
            .breaker(3, COOLDOWN)
            .on_failure(on_failure)
            .deny_cache(100)
            .max_in_flight(0)
            .connect(&proxy.redis_url())
            .await
            .unwrap();
        proxy.set(Fault::Corrupt(Corruption::Replace(
            IMPOSSIBLE_GCRA_REPLY.to_vec(),
        )));
        for _ in 0..6 {
            let r = check(&store, "bad").await;
            match on_failure {
                OnFailure::Error => assert!(r.is_err(), "believed an injected reply: {r:?}"),
                _ => assert!(
                    r.unwrap().is_allowed(),
                    "the fallback answers: {on_failure:?}"
                ),
            }
        }
        proxy.set(Fault::PassThrough);
        let stats = store.stats();
        assert_eq!(stats.deny_cache_hits, 0, "nothing was cached");
        assert!(stats.protocol_errors >= 1, "{stats:?}");
        assert!(
            stats.reconnects >= 1,
            "the connection was replaced: {stats:?}"
        );
        if on_failure != OnFailure::Error {
            assert_eq!(stats.fallbacks, 6);
        }
        // Back in step after a cooldown or two (the breaker may have opened on the timeouts).
        let fresh = format!("good-{on_failure:?}");
        let deadline = Instant::now() + STUCK_AFTER;
        let d = loop {
            let fallbacks = store.stats().fallbacks;
            let d = check(&store, &fresh).await;
            if store.stats().fallbacks == fallbacks && d.is_ok() {
                break d;
            }
            assert!(
                Instant::now() < deadline,
                "stuck: not back in step within {STUCK_AFTER:?}: {d:?}"
            );
            tokio::time::sleep(Duration::from_millis(1)).await;
        };
        assert!(
            d.as_ref()
                .is_ok_and(|d| d.is_allowed() && d.remaining() == 9),
            "{d:?}"
        );
        assert!(!store.is_degraded());
    }
}

/// Counts the store's log events by level (WARN and above, INFO), for the log-storm tests.
#[derive(Clone, Default)]
struct LogCount(std::sync::Arc<[std::sync::atomic::AtomicUsize; 2]>);

impl LogCount {
    fn warn(&self) -> usize {
        self.0[0].load(std::sync::atomic::Ordering::Relaxed)
    }
    fn info(&self) -> usize {
        self.0[1].load(std::sync::atomic::Ordering::Relaxed)
    }
    /// Counts every event of this thread until the guard drops (the tests run on one thread).
    fn install(&self) -> tracing::subscriber::DefaultGuard {
        use tracing_subscriber::layer::SubscriberExt;
        tracing::subscriber::set_default(tracing_subscriber::registry().with(self.clone()))
    }
}

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for LogCount {
    fn on_event(&self, event: &tracing::Event<'_>, _: tracing_subscriber::layer::Context<'_, S>) {
        let meta = event.metadata();
        if !meta.target().starts_with("ratelimit_core") {
            return;
        }
        let slot = match *meta.level() {
            tracing::Level::ERROR | tracing::Level::WARN => 0,
            tracing::Level::INFO => 1,
            _ => return,
        };
        self.0[slot].fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }
}

/// A Redis outage with the breaker opening, probing and reopening several times, and then recovering:
/// hundreds of failed requests, a handful of log lines (the transitions), not one per request.
#[tokio::test]
async fn an_outage_logs_its_transitions_not_every_failed_request() {
    let server = RedisServer::start();
    let store = RedisStore::builder()
        .timeout(Duration::from_millis(30))
        .breaker(3, Duration::from_millis(60))
        .on_failure(OnFailure::Local { instances: 1 })
        .connect(&server.url())
        .await
        .unwrap();
    let logs = LogCount::default();
    let _guard = logs.install();
    assert!(check(&store, "warm").await.is_ok());
    server.pause();
    // Hundreds of requests spanning several cooldowns: the breaker opens, probes and reopens.
    let (mut requests, calls) = (0, store.stats().redis_calls);
    while requests < 200 || store.stats().redis_calls < calls + 6 {
        assert!(
            check(&store, &format!("k{}", requests % 50)).await.is_ok(),
            "the local fallback answers"
        );
        requests += 1;
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let probes = store.stats().redis_calls - calls - 3;
    server.resume();
    recovers(&store, "recovery after the outage").await;
    eprintln!(
        "{requests} requests, {probes} probes, {} warn, {} info",
        logs.warn(),
        logs.info()
    );
    assert!(
        logs.warn() <= 3,
        "{} WARN lines for {requests} failed requests",
        logs.warn()
    );
    assert!(
        logs.info() <= 3,
        "{} INFO lines for {requests} failed requests",
        logs.info()
    );
}

/// One identity whose key holds foreign data, asked again and again among healthy traffic: its errors are
/// logged once and counted, and they never flip the breaker (which would log a pair of lines per cycle).
#[tokio::test]
async fn a_bad_key_asked_again_and_again_is_logged_once() {
    let server = RedisServer::start();
    let store = RedisStore::builder()
        .breaker(3, Duration::from_millis(10))
        .on_failure(OnFailure::Allow)
        .connect(&server.url())
        .await
        .unwrap();
    let key = store.key_for(b"bad", &set().policies()[0]);
    server.cli(&["HSET", &key, "field", "foreign"]);
    let logs = LogCount::default();
    let _guard = logs.install();
    for i in 0..30 {
        assert!(check(&store, &format!("good{i}")).await.is_ok());
        for _ in 0..3 {
            assert!(check(&store, "bad").await.unwrap().is_allowed());
        }
        tokio::time::sleep(Duration::from_millis(12)).await;
    }
    eprintln!("{} warn, {} info", logs.warn(), logs.info());
    assert!(
        logs.warn() <= 1,
        "{} WARN lines for 90 requests on one bad key",
        logs.warn()
    );
    assert!(
        logs.info() <= 1,
        "{} INFO lines for 90 requests on one bad key",
        logs.info()
    );
}

/// The bad identity among many concurrent callers, so that its calls are coalesced with others: a batch
/// fails as a whole on its key (the batch script runs every entry in one call), but that never opens the
/// breaker, and every identity is decided by Redis again as soon as it asks on its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_foreign_value_in_a_batch_does_not_open_the_breaker() {
    let server = RedisServer::start();
    let store = common::redis::one_slot()
        .breaker(3, Duration::from_secs(60))
        .connect(&server.url())
        .await
        .unwrap();
    let key = store.key_for(b"bad", &set().policies()[0]);
    server.cli(&["HSET", &key, "field", "foreign"]);
    let tasks: Vec<_> = (0..64)
        .map(|i| {
            let store = store.clone();
            tokio::spawn(async move {
                let id = if i % 4 == 0 {
                    "bad".to_owned()
                } else {
                    format!("g{i}")
                };
                (id.clone(), check(&store, &id).await)
            })
        })
        .collect();
    let mut key_state = 0;
    for t in tasks {
        let (id, r) = t.await.unwrap();
        match r {
            Ok(d) => assert!(d.is_allowed() && id != "bad"),
            Err(StoreError::KeyState { .. }) => key_state += 1,
            Err(e) => panic!("{id}: {e}"),
        }
    }
    assert!(
        key_state >= 16,
        "every request of the bad identity failed on its key"
    );
    assert!(!store.is_degraded(), "a per-key error opened the breaker");
    assert!(store.stats().redis_calls < 64, "the calls were coalesced");
    let d = check(&store, "g-after").await;
    assert!(d.is_ok_and(|d| d.is_allowed()));
}
