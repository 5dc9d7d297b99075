//! The Redis store makes the same decisions as the Rust reference, status for status: random operation
//! sequences (check, peek, refund, time steps) run against a real `redis-server` in client-time mode with a
//! `ManualClock`, and against `PolicySet` on local state, comparing outcome, limit, remaining, reset, retry
//! and delay exactly.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use ratelimit_core::store::redis::Scripting;
use ratelimit_core::{
    AlgorithmKind, ManualClock, Policy, PolicySet, PolicyStates, Quota, RedisStore, Rule, Store,
};
use ratelimit_test_support::poll::join_in_order;
use ratelimit_test_support::redis_server::RedisServer;

mod common;
use common::redis::{on_manual_clock, EPOCH};

#[derive(Debug, Clone, Copy)]
enum Step {
    Check(u64),
    Peek(u64),
    Refund(u64),
}

#[derive(Debug, Clone)]
struct PolicySpec {
    algo: u8,
    limit: u64,
    period: u64,
    burst: Option<u64>,
    max_delay: u64,
    penalise: bool,
}

impl PolicySpec {
    fn build(&self, name: &str) -> Policy {
        let kind = match self.algo {
            0 => AlgorithmKind::Gcra,
            1 => AlgorithmKind::TokenBucket,
            2 => AlgorithmKind::LeakyBucket,
            3 => AlgorithmKind::Shaper {
                max_delay: Duration::from_micros(self.max_delay),
            },
            4 => AlgorithmKind::FixedWindow,
            5 => AlgorithmKind::SlidingLog,
            _ => AlgorithmKind::SlidingWindow,
        };
        let mut q = Quota::new(self.limit, Duration::from_micros(self.period));
        if self.algo <= 3 {
            if let Some(b) = self.burst {
                q = q.burst(b);
            }
        }
        Policy::new(name, kind, q.build().unwrap())
            .unwrap()
            .penalise(self.penalise)
    }
}

fn policy_spec(algos: std::ops::RangeInclusive<u8>) -> impl Strategy<Value = PolicySpec> {
    (
        algos,
        1u64..=12,
        prop_oneof![
            Just(1_000_000u64),
            Just(333_333),
            Just(10_000_000),
            Just(60_000_000),
            1_000u64..5_000_000
        ],
        proptest::option::of(1u64..=15),
        0u64..2_000_000,
        proptest::bool::weighted(0.2),
    )
        .prop_map(
            |(algo, limit, period, burst, max_delay, penalise)| PolicySpec {
                algo,
                limit,
                period: period.max(limit),
                burst,
                max_delay,
                penalise,
            },
        )
}

fn steps(max_cost: u64) -> impl Strategy<Value = Vec<(u64, Step)>> {
    let step = prop_oneof![
        6 => (0..=max_cost).prop_map(Step::Check),
        1 => (0..=max_cost).prop_map(Step::Peek),
        1 => (0..=max_cost).prop_map(Step::Refund),
    ];
    // Time steps: often none (same microsecond), often small, sometimes beyond a whole period.
    let advance = prop_oneof![
        3 => Just(0u64),
        4 => 1u64..200_000,
        2 => 200_000u64..3_000_000,
        1 => 3_000_000u64..120_000_000,
    ];
    proptest::collection::vec((advance, step), 1..40)
}

struct Harness {
    _server: RedisServer,
    rt: tokio::runtime::Runtime,
    store: RedisStore,
    clock: ManualClock,
    case: AtomicU64,
}

/// A redis-server, a current-thread runtime, a manual clock at `EPOCH` and a store on it in client-time
/// mode (`max_in_flight` as given, the store's default otherwise).
fn client_time_store(
    scripting: Scripting,
    max_in_flight: Option<usize>,
) -> (
    RedisServer,
    tokio::runtime::Runtime,
    ManualClock,
    RedisStore,
) {
    let server = RedisServer::start();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let clock = ManualClock::new(EPOCH);
    let mut builder = on_manual_clock(&clock).scripting(scripting);
    if let Some(n) = max_in_flight {
        builder = builder.max_in_flight(n);
    }
    let store = rt.block_on(builder.connect(&server.url())).unwrap();
    (server, rt, clock, store)
}

impl Harness {
    fn new(scripting: Scripting) -> Self {
        let (server, rt, clock, store) = client_time_store(scripting, None);
        Harness {
            _server: server,
            rt,
            store,
            clock,
            case: AtomicU64::new(0),
        }
    }

    fn run(&self, set: &PolicySet, ops: &[(u64, Step)]) -> Result<(), TestCaseError> {
        let key = format!("case-{}", self.case.fetch_add(1, Ordering::Relaxed));
        let mut state = PolicyStates::default();
        self.rt.block_on(async {
            for (i, &(advance, step)) in ops.iter().enumerate() {
                self.clock.advance_micros(advance);
                let now = ratelimit_core::Clock::now(&self.clock);
                match step {
                    Step::Check(cost) => {
                        let want = set.check(&mut state, now, cost);
                        let got = Store::<str, PolicySet>::check(&self.store, set, &key, cost)
                            .await
                            .unwrap();
                        prop_assert_eq!(
                            got.outcome(),
                            want.outcome(),
                            "op {} {:?} at +{}",
                            i,
                            step,
                            now - EPOCH
                        );
                        prop_assert_eq!(
                            got.statuses(),
                            want.statuses(),
                            "op {} {:?} at +{}",
                            i,
                            step,
                            now - EPOCH
                        );
                        prop_assert_eq!(got.binding_index(), want.binding_index());
                    }
                    Step::Peek(cost) => {
                        let want = set.peek(&state, now, cost);
                        let got = Store::<str, PolicySet>::peek(&self.store, set, &key, cost)
                            .await
                            .unwrap();
                        prop_assert_eq!(
                            got.statuses(),
                            want.statuses(),
                            "op {} {:?} at +{}",
                            i,
                            step,
                            now - EPOCH
                        );
                    }
                    Step::Refund(cost) => {
                        set.refund(&mut state, now, cost);
                        Store::<str, PolicySet>::refund(&self.store, set, &key, cost)
                            .await
                            .unwrap();
                    }
                }
            }
            Ok(())
        })
    }
}

fn check_algos(algos: std::ops::RangeInclusive<u8>, cases: u32) {
    let h = Harness::new(Scripting::Functions);
    let mut runner = TestRunner::new(Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    });
    runner
        .run(&(policy_spec(algos), steps(16)), |(spec, ops)| {
            let set = PolicySet::new([spec.build("p")]).unwrap();
            h.run(&set, &ops)
        })
        .unwrap();
}

#[test]
fn gcra_matches_the_reference() {
    check_algos(0..=0, 128);
}

#[test]
fn token_bucket_matches_the_reference() {
    check_algos(1..=1, 128);
}

#[test]
fn leaky_bucket_matches_the_reference() {
    check_algos(2..=2, 128);
}

#[test]
fn shaper_matches_the_reference() {
    check_algos(3..=3, 128);
}

#[test]
fn fixed_window_matches_the_reference() {
    check_algos(4..=4, 128);
}

#[test]
fn sliding_log_matches_the_reference() {
    check_algos(5..=5, 128);
}

#[test]
fn sliding_window_matches_the_reference() {
    check_algos(6..=6, 128);
}

fn check_sets(scripting: Scripting) {
    let h = Harness::new(scripting);
    let mut runner = TestRunner::new(Config {
        cases: 128,
        failure_persistence: None,
        ..Config::default()
    });
    runner
        .run(
            &(
                proptest::collection::vec(policy_spec(0..=6), 2..=4),
                steps(16),
            ),
            |(specs, ops)| {
                let set = PolicySet::new(
                    specs
                        .iter()
                        .enumerate()
                        .map(|(i, s)| s.build(&format!("p{i}"))),
                )
                .unwrap();
                h.run(&set, &ops)
            },
        )
        .unwrap();
}

#[test]
fn policy_sets_match_the_reference_all_or_nothing() {
    check_sets(Scripting::Functions);
}

/// The same Lua through `SCRIPT LOAD` + `EVALSHA` (servers that refuse `FUNCTION`).
#[test]
fn policy_sets_match_the_reference_through_evalsha() {
    check_sets(Scripting::Eval);
}

/// The server-time path (the lean `'g'` call for one GCRA policy that does not penalise, the generic one
/// for a penalising GCRA): each check against the reference at the time the script used (`check_at`).
fn check_server_time(scripting: Scripting) {
    let server = RedisServer::start();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let store = rt
        .block_on(
            RedisStore::builder()
                .timeout(Duration::from_secs(5))
                .scripting(scripting)
                .connect(&server.url()),
        )
        .unwrap();
    let case = AtomicU64::new(0);
    let mut runner = TestRunner::new(Config {
        cases: 96,
        failure_persistence: None,
        ..Config::default()
    });
    runner
        .run(
            &(
                policy_spec(0..=0),
                proptest::collection::vec(0u64..=16, 1..40),
            ),
            |(spec, costs)| {
                let set = PolicySet::new([spec.build("p")]).unwrap();
                let key = format!("server-{}", case.fetch_add(1, Ordering::Relaxed));
                let mut state = PolicyStates::default();
                rt.block_on(async {
                    for (i, &cost) in costs.iter().enumerate() {
                        let (now, got) = store.check_at(&set, key.as_bytes(), cost).await.unwrap();
                        let want = set.check(&mut state, now, cost);
                        prop_assert_eq!(got.outcome(), want.outcome(), "op {} cost {}", i, cost);
                        prop_assert_eq!(got.statuses(), want.statuses(), "op {} cost {}", i, cost);
                        prop_assert_eq!(got.binding_index(), want.binding_index());
                        // Through the Store API too (the path the deny cache and callers take).
                        let d = Store::<str, PolicySet>::check(&store, &set, &key, 0)
                            .await
                            .unwrap();
                        prop_assert_eq!(d.outcome(), ratelimit_core::Outcome::Allowed);
                        prop_assert_eq!(d.statuses().len(), 1);
                        prop_assert_eq!(d.statuses()[0].limit, want.statuses()[0].limit);
                    }
                    Ok(())
                })
            },
        )
        .unwrap();
}

#[test]
fn server_time_gcra_matches_the_reference() {
    check_server_time(Scripting::Functions);
}

#[test]
fn server_time_gcra_matches_the_reference_through_evalsha() {
    check_server_time(Scripting::Eval);
}

/// Coalesced calls decide exactly as calls sent one by one: rounds of concurrent operations (checks, peeks,
/// refunds over several identities and several policy sets of every algorithm, all at one instant of a
/// `ManualClock`) go out as one call plus one batch per script variant, and every reply matches the
/// reference applied in the order the calls were made.
fn check_batched(scripting: Scripting) {
    let (_server, rt, clock, store) = client_time_store(scripting, Some(1));
    let case = AtomicU64::new(0);
    let op = (0usize..3, 0usize..3, 0u64..=6, 0u8..8);
    let round = (
        prop_oneof![Just(0u64), 1u64..500_000, 500_000u64..30_000_000],
        proptest::collection::vec(op, 1..24),
    );
    let mut runner = TestRunner::new(Config {
        cases: 64,
        failure_persistence: None,
        ..Config::default()
    });
    let batched_ops = AtomicU64::new(0);
    runner
        .run(
            &(
                proptest::collection::vec(proptest::collection::vec(policy_spec(0..=6), 1..=3), 3),
                proptest::collection::vec(round, 1..6),
            ),
            |(specs, rounds)| {
                let c = case.fetch_add(1, Ordering::Relaxed);
                let sets: Vec<PolicySet> = specs
                    .iter()
                    .enumerate()
                    .map(|(j, s)| {
                        PolicySet::new(
                            s.iter()
                                .enumerate()
                                .map(|(i, p)| p.build(&format!("s{j}p{i}"))),
                        )
                        .unwrap()
                    })
                    .collect();
                let mut states: Vec<Vec<PolicyStates>> = (0..3)
                    .map(|_| (0..3).map(|_| PolicyStates::default()).collect())
                    .collect();
                rt.block_on(async {
                    for (advance, ops) in &rounds {
                        clock.advance_micros(*advance);
                        let now = ratelimit_core::Clock::now(&clock);
                        let calls = store.stats().redis_calls;
                        let keys: Vec<String> = ops
                            .iter()
                            .map(|&(_, id, _, _)| format!("batch-{c}-{id}"))
                            .collect();
                        let futs = ops
                            .iter()
                            .zip(&keys)
                            .map(|(&(s, _, cost, kind), key)| {
                                let set = &sets[s];
                                let store = &store;
                                let f: std::pin::Pin<Box<dyn std::future::Future<Output = _>>> =
                                    Box::pin(async move {
                                        match kind {
                                            0..=4 => Some(
                                                Store::<str, PolicySet>::check(
                                                    store, set, key, cost,
                                                )
                                                .await
                                                .unwrap(),
                                            ),
                                            5 | 6 => Some(
                                                Store::<str, PolicySet>::peek(
                                                    store, set, key, cost,
                                                )
                                                .await
                                                .unwrap(),
                                            ),
                                            _ => {
                                                Store::<str, PolicySet>::refund(
                                                    store, set, key, cost,
                                                )
                                                .await
                                                .unwrap();
                                                None
                                            }
                                        }
                                    });
                                f
                            })
                            .collect();
                        let got = join_in_order(futs).await;
                        for (i, (&(s, id, cost, kind), got)) in ops.iter().zip(got).enumerate() {
                            let state = &mut states[s][id];
                            let want = match kind {
                                0..=4 => Some(sets[s].check(state, now, cost)),
                                5 | 6 => Some(sets[s].peek(state, now, cost)),
                                _ => {
                                    sets[s].refund(state, now, cost);
                                    None
                                }
                            };
                            match (got, want) {
                                (Some(g), Some(w)) => {
                                    prop_assert_eq!(
                                        g.outcome(),
                                        w.outcome(),
                                        "op {} of {:?}",
                                        i,
                                        ops
                                    );
                                    prop_assert_eq!(
                                        g.statuses(),
                                        w.statuses(),
                                        "op {} of {:?}",
                                        i,
                                        ops
                                    );
                                }
                                (None, None) => {}
                                _ => prop_assert!(false, "op {i}: reply kind differs"),
                            }
                        }
                        let used: std::collections::BTreeSet<usize> =
                            ops.iter().map(|o| o.0).collect();
                        let made = store.stats().redis_calls - calls;
                        prop_assert!(
                            made <= 2 * used.len() as u64,
                            "{} operations over {} sets took {} calls: not coalesced",
                            ops.len(),
                            used.len(),
                            made
                        );
                        batched_ops.fetch_add(ops.len() as u64, Ordering::Relaxed);
                    }
                    Ok(())
                })
            },
        )
        .unwrap();
    assert!(
        batched_ops.into_inner() > 64,
        "the rounds were too small to coalesce anything"
    );
}

#[test]
fn coalesced_calls_match_the_reference() {
    check_batched(Scripting::Functions);
}

#[test]
fn coalesced_calls_match_the_reference_through_evalsha() {
    check_batched(Scripting::Eval);
}
