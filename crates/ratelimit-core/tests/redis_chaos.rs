//! Chaos: random schedules of network faults between the Redis store and a real `redis-server`, applied
//! through a [`FaultProxy`] while concurrent callers check, and three invariants checked on every case,
//! for a store per [`OnFailure`] mode:
//!
//! * **(a) Nothing stuck, no caller waits past its timeout**: no call waits as long as `STUCK_CALL`, two
//!   of the store's timeouts (every call is timed). A call resolves within one timeout (script reloads,
//!   probes, batches and reconnects included), so what reaches two is a call that waited a second
//!   timeout — a deadline re-armed somewhere — or none at all; scheduling noise on a loaded machine (tens
//!   of milliseconds) does not. No caller panics.
//! * **(b) Exact again after recovery**: once the faults stop, each store recovers (a fresh identity's
//!   check is answered by Redis, not by the failure policy, with the breaker closed) — within
//!   `STUCK_RECOVERY`, ten times the two cooldowns and a probe's timeout recovery takes (one cooldown for
//!   the breaker the faults opened, one more when the first probe is the request that finds the
//!   connection a fault killed); after that decisions equal the reference's again.
//! * **(c) Not degraded**: [`RedisStore::is_degraded`] is still false after those decisions.
//!
//! # What (b) compares, and why
//!
//! A call cut off mid-flight (timed out, its connection reset, its caller gone) may or may not have been
//! applied by Redis, so the state of any identity touched during the faults is unknown to the test; only
//! identities first used after recovery have a known state (fresh). On those, for each policy set (a single
//! GCRA, which takes the store's lean script path, and GCRA + sliding window, which takes the general one):
//!
//! * through [`Store::check`], the real entry point (deny cache included): exactly `LIMIT` admitted, with
//!   `remaining` counting down `LIMIT - 1, …, 0`, then refused with `remaining` 0 — and none answered by the
//!   failure policy (the store's fallback count does not move). Outcome and remaining do not depend on
//!   the moment of the call here: the GCRA's quota is `LIMIT` per hour, so no unit comes back within a
//!   test, and the wider sliding window never binds;
//! * through [`RedisStore::check_at`], which also returns the server's time the script used: every
//!   status (limit, remaining, reset, retry, delay) equal to what [`PolicySet`]'s pure algorithms decide on
//!   the same calls at that time. This is the exact comparison: reset and retry are microsecond functions of
//!   the time, which only `check_at` reveals.
//!
//! The proxy's faults (delay, black hole, reset, half-close either way, flipped, truncated or replaced
//! reply bytes, refused connections) switch while connections are open and apply to them. When a case
//! lets callers cancel, every third call is dropped after one to three polls (a caller going away
//! mid-call: the breaker's probe among them).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use ratelimit_core::{
    Decision, OnFailure, Policy, PolicySet, PolicyStates, Quota, RedisStore, Rule, Store,
};
use ratelimit_test_support::cancel::drop_after_polls;
use ratelimit_test_support::fault_proxy::{Corruption, Direction, Fault, FaultProxy};
use ratelimit_test_support::redis_server::RedisServer;

/// Cases of the property: each runs a schedule of up to a second and the recovery wait, for three stores
/// at once, so the file stays within a minute on two shared cores.
const CASES: u32 = 12;
/// Shrinking reruns whole cases in real time: a failing schedule is shortened for this long at most.
const SHRINK_TIME_MS: u32 = 15_000;
const LIMIT: u64 = 10;
const TIMEOUT_MS: u64 = 100;
const TIMEOUT: Duration = Duration::from_millis(TIMEOUT_MS);
const FAILURES_TO_OPEN: u32 = 3;
const COOLDOWN_MS: u64 = 150;
const COOLDOWN: Duration = Duration::from_millis(COOLDOWN_MS);
/// (a): a call resolves within one timeout; one that reaches a second waited on a re-armed deadline.
const STUCK_CALL: Duration = Duration::from_millis(2 * TIMEOUT_MS);
/// Hang detector for (b): ten times the two cooldowns and a probe's timeout that recovery takes.
const STUCK_RECOVERY: Duration = Duration::from_millis(10 * (2 * COOLDOWN_MS + TIMEOUT_MS));
const CALLERS_PER_STORE: usize = 3;
/// Between one caller's calls: keeps callers from spinning while the breaker answers at once.
const CALLER_PAUSE: Duration = Duration::from_millis(2);
const LOCAL_INSTANCES: u32 = 2;
/// The stores run with their deny cache on, as a deployment under load would.
const DENY_CACHE_ENTRIES: usize = 1_024;
/// When a case cancels, one call in this many is dropped, after 1 to `MOST_POLLS_BEFORE_DROP` polls.
const CANCEL_EVERY: usize = 3;
const MOST_POLLS_BEFORE_DROP: usize = 3;
/// Well-formed RESP that no script call can answer, and RESP of the wrong type: replies a store must not
/// take for decisions.
const GARBAGE: [&[u8]; 4] = [
    // The GCRA path's {now, reset, outcome}: admitted with a reset of 31 years on an hourly quota.
    b"*3\r\n:1\r\n:999999999999999\r\n:1\r\n",
    // The general path's {now, (limit, remaining, reset, retry, delay) x 2}: remaining above the limit.
    b"*11\r\n:1\r\n:10\r\n:99\r\n:0\r\n:0\r\n:0\r\n:20\r\n:0\r\n:0\r\n:0\r\n:0\r\n",
    b"-ERR injected\r\n",
    b"$5\r\nhello\r\n",
];

static IDENTITIES: AtomicU64 = AtomicU64::new(0);

fn fresh_identity(tag: &str) -> String {
    format!("{tag}-{}", IDENTITIES.fetch_add(1, Ordering::Relaxed))
}

/// The two policy sets: a single GCRA (the lean script path) and GCRA + a wider sliding window.
fn sets() -> [PolicySet; 2] {
    let gcra = || Policy::gcra("g", Quota::per_hour(LIMIT).build().unwrap()).unwrap();
    let wide = Policy::sliding_window("w", Quota::per_hour(2 * LIMIT).build().unwrap()).unwrap();
    [
        PolicySet::new([gcra()]).unwrap(),
        PolicySet::new([gcra(), wide]).unwrap(),
    ]
}

const MODES: [OnFailure; 3] = [
    OnFailure::Error,
    OnFailure::Allow,
    OnFailure::Local {
        instances: LOCAL_INSTANCES,
    },
];

fn fault() -> impl Strategy<Value = Fault> {
    let corruption = prop_oneof![
        Just(Corruption::FlipBytes),
        Just(Corruption::Truncate),
        (0..GARBAGE.len()).prop_map(|i| Corruption::Replace(GARBAGE[i].to_vec())),
    ];
    prop_oneof![
        Just(Fault::PassThrough),
        (1u64..=2 * TIMEOUT_MS).prop_map(|ms| Fault::Delay(Duration::from_millis(ms))),
        Just(Fault::BlackHole),
        Just(Fault::Reset),
        prop_oneof![Just(Direction::ToClient), Just(Direction::ToServer)]
            .prop_map(Fault::HalfClose),
        corruption.prop_map(Fault::Corrupt),
        Just(Fault::Refuse),
    ]
}

/// One case: the faults in order with how long each lasts (ms), and whether callers cancel.
#[derive(Debug, Clone)]
struct Case {
    schedule: Vec<(Fault, u64)>,
    cancel: bool,
}

fn case() -> impl Strategy<Value = Case> {
    (
        proptest::collection::vec((fault(), 20u64..250), 1..=4),
        any::<bool>(),
    )
        .prop_map(|(schedule, cancel)| Case { schedule, cancel })
}

/// Checks until told to stop, every call on an identity of its own (so each reaches Redis rather than the
/// deny cache); returns the longest wait.
async fn caller(store: RedisStore, cancel: bool, stop: Arc<AtomicBool>) -> Duration {
    let sets = sets();
    let mut slowest = Duration::ZERO;
    let mut i = 0usize;
    while !stop.load(Ordering::Relaxed) {
        let identity = fresh_identity("chaos");
        let call = Store::<str, PolicySet>::check(&store, &sets[i % 2], &identity, 1);
        if cancel && i.is_multiple_of(CANCEL_EVERY) {
            drop_after_polls(call, 1 + (i / CANCEL_EVERY) % MOST_POLLS_BEFORE_DROP).await;
        } else {
            let started = Instant::now();
            // Any answer will do during the faults (an error, a fallback, a decision); only the wait counts.
            let _ = call.await;
            slowest = slowest.max(started.elapsed());
        }
        i += 1;
        tokio::time::sleep(CALLER_PAUSE).await;
    }
    slowest
}

/// Waits until `store` has recovered: a fresh identity's check answered by Redis (not by the failure
/// policy) with the breaker closed. Callers keep calling meanwhile; their calls are the breaker's probes.
async fn recovered(store: &RedisStore) -> Result<(), String> {
    let started = Instant::now();
    loop {
        let fallbacks = store.stats().fallbacks;
        let identity = fresh_identity("probe");
        let answered = Store::<str, PolicySet>::check(store, &sets()[0], &identity, 1).await;
        if answered.is_ok() && store.stats().fallbacks == fallbacks && !store.is_degraded() {
            return Ok(());
        }
        if started.elapsed() >= STUCK_RECOVERY {
            return Err(format!(
                "stuck: not recovered {STUCK_RECOVERY:?} after the faults (last answer {answered:?})"
            ));
        }
        tokio::time::sleep(CALLER_PAUSE).await;
    }
}

/// Invariant (b) for one store and one set: see the module docs.
async fn exact_again(store: &RedisStore, set: &PolicySet) -> Result<(), String> {
    let fallbacks = store.stats().fallbacks;
    let identity = fresh_identity("after");
    for i in 0..LIMIT + 2 {
        let d = Store::<str, PolicySet>::check(store, set, &identity, 1)
            .await
            .map_err(|e| format!("check {i} of a fresh identity failed: {e}"))?;
        let (allowed, remaining) = if i < LIMIT {
            (true, LIMIT - 1 - i)
        } else {
            (false, 0)
        };
        if d.is_allowed() != allowed || d.remaining() != remaining {
            return Err(format!(
                "check {i} of a fresh identity: {}, expected allowed {allowed} with {remaining} remaining",
                show(&d)
            ));
        }
    }
    if store.stats().fallbacks != fallbacks {
        return Err("checks of a fresh identity were answered by the failure policy".to_owned());
    }
    let identity = fresh_identity("exact");
    let mut state = PolicyStates::default();
    for i in 0..=LIMIT {
        let (now, got) = store
            .check_at(set, identity.as_bytes(), 1)
            .await
            .map_err(|e| format!("check_at {i} of a fresh identity failed: {e}"))?;
        let want = set.check(&mut state, now, 1);
        if got != want {
            return Err(format!(
                "check_at {i} of a fresh identity: got {}, reference {}",
                show(&got),
                show(&want)
            ));
        }
    }
    Ok(())
}

fn show(d: &Decision) -> String {
    format!("{:?} {:?}", d.outcome(), d.statuses())
}

struct Harness {
    _server: RedisServer,
    rt: tokio::runtime::Runtime,
    proxy: FaultProxy,
    case: AtomicU64,
}

impl Harness {
    fn new() -> Self {
        let server = RedisServer::start();
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let proxy = rt.block_on(FaultProxy::to_redis(&server)).unwrap();
        Harness {
            _server: server,
            rt,
            proxy,
            case: AtomicU64::new(0),
        }
    }

    fn run(&self, case: &Case) -> Result<(), TestCaseError> {
        let n = self.case.fetch_add(1, Ordering::Relaxed);
        self.rt.block_on(async {
            self.proxy.set(Fault::PassThrough);
            let mut stores = Vec::new();
            for (m, mode) in MODES.into_iter().enumerate() {
                let store = RedisStore::builder()
                    .prefix(format!("chaos{n}-{m}"))
                    .timeout(TIMEOUT)
                    .breaker(FAILURES_TO_OPEN, COOLDOWN)
                    .on_failure(mode)
                    .deny_cache(DENY_CACHE_ENTRIES)
                    .connect(&self.proxy.redis_url())
                    .await
                    .map_err(|e| TestCaseError::fail(format!("connect: {e}")))?;
                stores.push((mode, store));
            }

            let stop = Arc::new(AtomicBool::new(false));
            let mut callers = Vec::new();
            for (mode, store) in &stores {
                for _ in 0..CALLERS_PER_STORE {
                    let task = tokio::spawn(caller(store.clone(), case.cancel, stop.clone()));
                    callers.push((*mode, task));
                }
            }
            for (fault, ms) in &case.schedule {
                self.proxy.set(fault.clone());
                tokio::time::sleep(Duration::from_millis(*ms)).await;
            }
            self.proxy.set(Fault::PassThrough);
            // Callers keep calling through the recovery: their calls are the breaker's probes.
            let mut recovery: Result<(), String> = Ok(());
            for (mode, store) in &stores {
                if let Err(e) = recovered(store).await {
                    recovery = Err(format!("(b) {mode:?}: {e}"));
                    break;
                }
            }
            stop.store(true, Ordering::Relaxed);

            for (mode, task) in callers {
                let slowest = task.await.map_err(|e| {
                    TestCaseError::fail(format!("{mode:?}: a caller panicked: {e}"))
                })?;
                prop_assert!(
                    slowest < STUCK_CALL,
                    "(a) {:?}: a call waited {:?} with a {:?} timeout (a second timeout, or stuck)",
                    mode,
                    slowest,
                    TIMEOUT
                );
            }
            recovery.map_err(TestCaseError::fail)?;
            for (mode, store) in &stores {
                for set in sets() {
                    if let Err(e) = exact_again(store, &set).await {
                        return Err(TestCaseError::fail(format!(
                            "(b) {mode:?}, {} policies, after recovery: {e} [(c) degraded: {}]",
                            set.len(),
                            store.is_degraded()
                        )));
                    }
                }
                prop_assert!(
                    !store.is_degraded(),
                    "(c) {:?}: still degraded after recovery",
                    mode
                );
            }
            Ok(())
        })
    }
}

#[test]
fn random_fault_schedules_keep_waits_bounded_and_end_exact_and_healthy() {
    let h = Harness::new();
    let mut runner = TestRunner::new(Config {
        cases: CASES,
        failure_persistence: None,
        max_shrink_time: SHRINK_TIME_MS,
        ..Config::default()
    });
    runner.run(&case(), |case| h.run(&case)).unwrap();
}
