//! Invariants every status must keep, in every state an algorithm can reach — including states left by
//! penalties, which the reference models do not produce:
//!
//! * `retry` is exact: the same cost is allowed `retry` µs later and not one microsecond earlier;
//! * `reset` is exact: the key is full `reset` µs later and not earlier, and `now + reset` is the
//!   algorithm's `fresh_at` (which the in-memory store uses to evict);
//! * from `fresh_at` on, the state decides exactly like a fresh one, so evicting it is invisible;
//! * remaining never exceeds the limit, and an allowed cost never leaves more than before.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use proptest::prelude::*;
use ratelimit_core::{
    Algorithm, FixedWindow, Gcra, LeakyBucket, Micros, Quota, Shaper, SlidingLog, SlidingWindow,
    TokenBucket,
};

#[derive(Debug, Clone, Copy)]
enum Op {
    Advance(Micros),
    Check(u64),
    Penalise(u64),
    Refund(u64),
}

fn ops() -> impl Strategy<Value = Vec<Op>> {
    let op = prop_oneof![
        3 => prop_oneof![0u64..=5, 0u64..=400, 0u64..=3_000].prop_map(Op::Advance),
        4 => (0u64..=6).prop_map(Op::Check),
        2 => (0u64..=8).prop_map(Op::Penalise),
        1 => (0u64..=3).prop_map(Op::Refund),
    ];
    proptest::collection::vec(op, 1..40)
}

fn config() -> ProptestConfig {
    ProptestConfig {
        cases: 128,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

fn quota(limit: u64, period: Micros, burst: u64) -> Quota {
    Quota::new(limit, Duration::from_micros(period))
        .burst(burst)
        .build()
        .unwrap()
}

/// Checks every invariant of `s` at `now`.
fn invariants<A: Algorithm>(a: &A, s: &A::State, now: Micros) -> Result<(), TestCaseError> {
    let fresh = A::State::default();
    let full = a.evaluate(&fresh, now, 0);
    let limit = full.limit;
    prop_assert_eq!(full.remaining, limit);
    let here = a.evaluate(s, now, 0);
    prop_assert!(here.allowed(), "cost 0 is always allowed");
    prop_assert!(here.remaining <= limit);

    // reset: full at now + reset, not before; and that instant is fresh_at.
    let r = here.reset;
    prop_assert_eq!(
        a.evaluate(s, now + r, 0).remaining,
        limit,
        "not full at reset {}",
        r
    );
    if r > 0 {
        prop_assert!(
            a.evaluate(s, now + r - 1, 0).remaining < limit
                || a.evaluate(s, now + r - 1, 0).reset > 0,
            "already fresh before reset {}",
            r
        );
    }
    prop_assert_eq!(
        a.fresh_at(s).max(now),
        now + r,
        "fresh_at disagrees with reset"
    );

    // From fresh_at on, indistinguishable from fresh.
    let idle = a.fresh_at(s).max(now);
    for t in [idle, idle + 1, idle + 777] {
        for cost in 0..=limit + 2 {
            prop_assert_eq!(
                a.evaluate(s, t, cost),
                a.evaluate(&fresh, t, cost),
                "at {} cost {}",
                t,
                cost
            );
        }
    }

    for cost in 0..=limit + 2 {
        let st = a.evaluate(s, now, cost);
        prop_assert!(st.remaining <= limit);
        if st.allowed() {
            prop_assert!(
                st.remaining <= here.remaining,
                "charging left more than before"
            );
        } else if !st.never() {
            // retry: allowed then, not a microsecond earlier.
            let retry = st.retry;
            prop_assert!(retry > 0);
            prop_assert!(
                a.evaluate(s, now + retry, cost).allowed(),
                "cost {} not allowed at its retry {}",
                cost,
                retry
            );
            prop_assert!(
                !a.evaluate(s, now + retry - 1, cost).allowed(),
                "cost {} allowed before its retry {}",
                cost,
                retry
            );
        }
    }
    Ok(())
}

fn run<A: Algorithm>(a: &A, start: Micros, ops: &[Op]) -> Result<(), TestCaseError> {
    let mut s = A::State::default();
    let mut now = start;
    for op in ops {
        match *op {
            Op::Advance(d) => now += d,
            Op::Check(cost) => {
                a.step(&mut s, now, cost);
            }
            Op::Penalise(cost) => {
                if !a.evaluate(&s, now, cost).never() {
                    a.penalise(&mut s, now, cost);
                }
            }
            Op::Refund(cost) => a.release(&mut s, now, cost),
        }
        invariants(a, &s, now)?;
    }
    Ok(())
}

fn bucket() -> impl Strategy<Value = (u64, Micros, u64)> {
    (1u64..=4, 50u64..=1_000, 1u64..=5)
}

fn window() -> impl Strategy<Value = (u64, Micros)> {
    (1u64..=5, 50u64..=1_000)
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn gcra((l, p, b) in bucket(), start in 0u64..5_000, ops in ops()) {
        run(&Gcra::new(quota(l, p, b)), start, &ops)?;
    }

    #[test]
    fn token_bucket((l, p, b) in bucket(), start in 0u64..5_000, ops in ops()) {
        run(&TokenBucket::new(quota(l, p, b)), start, &ops)?;
    }

    #[test]
    fn leaky_bucket((l, p, b) in bucket(), start in 0u64..5_000, ops in ops()) {
        run(&LeakyBucket::new(quota(l, p, b)).unwrap(), start, &ops)?;
    }

    #[test]
    fn shaper((l, p, b) in bucket(), max_delay in 0u64..=2_000, start in 0u64..5_000, ops in ops()) {
        run(&Shaper::new(quota(l, p, b), Duration::from_micros(max_delay)), start, &ops)?;
    }

    #[test]
    fn fixed_window((l, p) in window(), start in 0u64..5_000, ops in ops()) {
        run(&FixedWindow::new(quota(l, p, l)).unwrap(), start, &ops)?;
    }

    #[test]
    fn sliding_log((l, p) in window(), start in 0u64..5_000, ops in ops()) {
        run(&SlidingLog::new(quota(l, p, l)).unwrap(), start, &ops)?;
    }

    #[test]
    fn sliding_window((l, p) in window(), start in 0u64..5_000, ops in ops()) {
        run(&SlidingWindow::new(quota(l, p, l)).unwrap(), start, &ops)?;
    }
}
