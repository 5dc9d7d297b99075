//! The decision contract every rule keeps, for every algorithm and for policy sets: all-or-nothing across
//! policies (the decision names the policy that limited), no charge on rejection, an honest
//! [`Outcome::Never`] for costs above the capacity, penalising on request, peek without charge, refund,
//! reset, and replacing a set at run time without losing its counters.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[macro_use]
mod common;

use std::fmt::Debug;
use std::time::Duration;

use common::quota;
use ratelimit_core::{
    AlgorithmKind, Gcra, ManualClock, MemoryStore, Micros, Outcome, Policy, PolicySet, Quota, Rule,
    Status, Store,
};

const LIMIT: u64 = 10;
const PERIOD: Duration = Duration::from_millis(100);
/// An instant in the middle of a window, far from the clock's origin.
const T0: Micros = 123_456_789;

/// How many units of cost 1 pass at once from fresh: the limit, or twice it for the shaper that may delay
/// by one whole period.
fn capacity_of(name: &str) -> u64 {
    if name == "shaper_delaying" {
        2 * LIMIT
    } else {
        LIMIT
    }
}

fn exhausts_without_charging_rejections<R: Rule>(name: &str, rule: R)
where
    R::State: Clone + PartialEq + Debug,
{
    let mut s = R::State::default();
    let mut admitted = 0;
    loop {
        let d = rule.check(&mut s, T0, 1);
        if !d.is_allowed() {
            assert_eq!(d.outcome(), Outcome::Limited, "{name}");
            break;
        }
        admitted += 1;
        assert!(admitted <= 1_000, "{name} never limits");
    }
    assert_eq!(admitted, capacity_of(name), "{name}: admitted at once");
    let before = s.clone();
    let retry = rule.peek(&s, T0, 1).binding().retry;
    assert!(retry > 0 && retry != Status::NEVER, "{name}: retry {retry}");
    for cost in [1, 2, 3, 1] {
        let d = rule.check(&mut s, T0, cost);
        assert_eq!(d.outcome(), Outcome::Limited, "{name} cost {cost}");
        assert_eq!(s, before, "{name}: a denied check changed the state");
    }
    // Still denied one microsecond before the retry time, still uncharged; allowed at the retry time.
    let d = rule.check(&mut s, T0 + retry - 1, 1);
    assert_eq!(
        d.outcome(),
        Outcome::Limited,
        "{name}: allowed before its retry"
    );
    assert_eq!(s, before, "{name}: a denied check changed the state");
    assert!(
        rule.check(&mut s, T0 + retry, 1).is_allowed(),
        "{name}: denied at its retry time"
    );
}

#[test]
fn a_rejected_request_charges_nothing_for_every_algorithm() {
    for_every_algorithm!(quota(LIMIT, PERIOD), exhausts_without_charging_rejections);
}

fn never_is_honest<R: Rule>(name: &str, rule: R)
where
    R::State: Clone + PartialEq + Debug,
{
    let capacity = capacity_of(name);
    let fresh = R::State::default();
    // The largest cost that fits is not "never"; one more is.
    assert!(
        rule.peek(&fresh, T0, capacity).is_allowed(),
        "{name}: full capacity"
    );
    let d = rule.peek(&fresh, T0, capacity + 1);
    assert_eq!(d.outcome(), Outcome::Never, "{name}");
    assert_eq!(
        d.remaining(),
        LIMIT,
        "{name}: a fresh key reports full remaining"
    );
    assert_eq!(d.limit(), LIMIT, "{name}");

    let mut s = fresh;
    assert!(rule.check(&mut s, T0, 3).is_allowed());
    let before = s.clone();
    let honest = rule.peek(&s, T0, 0);
    for cost in [capacity + 1, 1_000, u64::MAX / 4] {
        let d = rule.check(&mut s, T0, cost);
        assert_eq!(d.outcome(), Outcome::Never, "{name} cost {cost}");
        assert!(d.binding().never(), "{name}");
        assert_eq!(d.retry_after(), None, "{name}: Never has no retry time");
        assert!(d.is_limited() && !d.is_allowed());
        assert_eq!(
            d.remaining(),
            LIMIT - 3,
            "{name}: remaining is what is really left"
        );
        assert_eq!(d.remaining(), honest.remaining(), "{name}");
        assert_eq!(d.reset(), honest.reset(), "{name}");
        assert_eq!(s, before, "{name}: Never charged something");
    }
}

#[test]
fn a_cost_above_capacity_is_never_with_honest_remaining_for_every_algorithm() {
    for_every_algorithm!(quota(LIMIT, PERIOD), never_is_honest);
}

fn peek_is_free<R: Rule>(name: &str, rule: R)
where
    R::State: Clone + PartialEq + Debug,
{
    let mut s = R::State::default();
    let mut t = T0;
    for round in 0..3 * LIMIT {
        let before = s.clone();
        let peeked = [
            rule.peek(&s, t, 1),
            rule.peek(&s, t, 1),
            rule.peek(&s, t, 0),
        ];
        assert_eq!(s, before, "{name}: peek changed the state");
        assert_eq!(peeked[0], peeked[1], "{name}");
        assert!(peeked[2].is_allowed(), "{name}: cost 0 is always allowed");
        let checked = rule.check(&mut s, t, 1);
        assert_eq!(
            peeked[0], checked,
            "{name} round {round}: peek differs from check"
        );
        t += 3_333;
    }
}

#[test]
fn peek_answers_like_check_and_charges_nothing_for_every_algorithm() {
    for_every_algorithm!(quota(LIMIT, PERIOD), peek_is_free);
}

fn refund_restores<R: Rule>(name: &str, rule: R)
where
    R::State: Clone + PartialEq + Debug,
{
    let full = rule.peek(&R::State::default(), T0, 0);
    assert_eq!(full.remaining(), LIMIT);

    let mut s = R::State::default();
    assert!(rule.check(&mut s, T0, 4).is_allowed());
    rule.refund(&mut s, T0, 1);
    assert_eq!(
        rule.peek(&s, T0, 0).remaining(),
        LIMIT - 3,
        "{name}: partial refund"
    );
    rule.refund(&mut s, T0, 3);
    assert_eq!(
        rule.peek(&s, T0, 0),
        full,
        "{name}: a full refund leaves a fresh key"
    );
    assert!(
        rule.idle_at(&s) <= T0,
        "{name}: refunded state still limits"
    );
    // A refund never raises a key above its capacity.
    rule.refund(&mut s, T0, 100);
    assert_eq!(rule.peek(&s, T0, 0), full, "{name}: refund above capacity");
    let mut admitted = 0;
    while rule.check(&mut s, T0, 1).is_allowed() {
        admitted += 1;
    }
    assert_eq!(
        admitted,
        capacity_of(name),
        "{name}: refund created capacity"
    );
}

#[test]
fn refund_gives_back_exactly_what_was_charged_for_every_algorithm() {
    for_every_algorithm!(quota(LIMIT, PERIOD), refund_restores);
}

fn per_second_and_per_minute() -> PolicySet {
    PolicySet::new([
        Policy::gcra("per-second", Quota::per_second(5).build().unwrap()).unwrap(),
        Policy::fixed_window("per-minute", Quota::per_minute(8).build().unwrap()).unwrap(),
    ])
    .unwrap()
}

#[test]
fn policies_are_charged_all_or_nothing_and_the_limiting_one_is_named() {
    let set = per_second_and_per_minute();
    let t0 = 60_000_000; // the start of a minute
    let mut s = Default::default();

    let d = set.check(&mut s, t0, 5);
    assert!(d.is_allowed());
    assert_eq!(d.statuses()[0].remaining, 0);
    assert_eq!(d.statuses()[1].remaining, 3);
    assert_eq!(set.policy(d.binding_index()).name(), "per-second");

    // The per-second policy limits: the per-minute one is not charged.
    let before = s.clone();
    let d = set.check(&mut s, t0, 1);
    assert_eq!(d.outcome(), Outcome::Limited);
    assert_eq!(set.policy(d.binding_index()).name(), "per-second");
    assert_eq!(d.retry_after(), Some(Duration::from_millis(200)));
    assert!(d.statuses()[1].allowed(), "per-minute alone would allow it");
    assert_eq!(d.statuses()[1].remaining, 3);
    assert_eq!(s, before);

    // A second later the per-second policy has room; three more exhaust the per-minute policy.
    let t1 = t0 + 1_000_000;
    assert!(set.check(&mut s, t1, 3).is_allowed());
    let t2 = t1 + 1_000_000;
    let before = s.clone();
    let d = set.check(&mut s, t2, 1);
    assert_eq!(d.outcome(), Outcome::Limited);
    assert_eq!(set.policy(d.binding_index()).name(), "per-minute");
    assert_eq!(d.retry_after(), Some(Duration::from_secs(58)));
    assert!(d.statuses()[0].allowed(), "per-second alone would allow it");
    assert_eq!(
        s, before,
        "the per-second policy was charged for a request the set denied"
    );
    assert_eq!(set.peek(&s, t2, 0).statuses()[0].remaining, 5);

    // Never beats Limited, and names the policy that can never fit.
    let d = set.check(&mut s, t2, 6);
    assert_eq!(d.outcome(), Outcome::Never);
    assert_eq!(set.policy(d.binding_index()).name(), "per-second");
    assert_eq!(d.remaining(), 5);
    assert_eq!(s, before);
}

#[test]
fn the_shaper_delay_of_a_set_is_the_longest_delay() {
    let set = PolicySet::new([
        Policy::shaper(
            "smooth",
            Quota::per_second(10).burst(1).build().unwrap(),
            Duration::from_secs(1),
        )
        .unwrap(),
        Policy::sliding_log("cap", Quota::per_second(3).build().unwrap()).unwrap(),
    ])
    .unwrap();
    let mut s = Default::default();
    let delays: Vec<_> = (0..3)
        .map(|_| set.check(&mut s, T0, 1).delay_micros())
        .collect();
    assert_eq!(delays, [0, 100_000, 200_000]);
    let d = set.check(&mut s, T0, 1);
    assert_eq!(set.policy(d.binding_index()).name(), "cap");
    assert_eq!(d.delay_micros(), 0, "a limited decision has no delay");
}

fn retries(set: &PolicySet, s: &mut <PolicySet as Rule>::State, n: usize) -> Vec<Micros> {
    (0..n)
        .map(|_| {
            let d = set.check(s, T0, 1);
            assert_eq!(d.outcome(), Outcome::Limited);
            d.binding().retry
        })
        .collect()
}

#[test]
fn penalising_charges_denied_requests_up_to_one_extra_capacity() {
    let q = Quota::per_second(10).burst(2).build().unwrap(); // T = 100 ms, capacity 200 ms
    let plain = PolicySet::new([Policy::gcra("p", q).unwrap()]).unwrap();
    let harsh = PolicySet::new([Policy::gcra("p", q).unwrap().penalise(true)]).unwrap();
    assert!(harsh.policies()[0].penalises() && !plain.policies()[0].penalises());

    let mut s = Default::default();
    assert!(plain.check(&mut s, T0, 2).is_allowed());
    assert_eq!(
        retries(&plain, &mut s, 4),
        [100_000; 4],
        "no penalty by default"
    );

    let mut s = Default::default();
    assert!(harsh.check(&mut s, T0, 2).is_allowed());
    // Each denial pushes the retry further, until the debt is one whole capacity; the retry reported
    // already counts the denial's own penalty.
    assert_eq!(
        retries(&harsh, &mut s, 5),
        [200_000, 300_000, 300_000, 300_000, 300_000]
    );
    // Full again after at most twice the capacity.
    assert_eq!(harsh.peek(&s, T0, 0).binding().reset, 400_000);
    assert_eq!(harsh.peek(&s, T0 + 400_000, 0).remaining(), 2);

    // A cost that can never fit is not a denial to punish.
    let mut s = Default::default();
    let d = harsh.check(&mut s, T0, 3);
    assert_eq!(d.outcome(), Outcome::Never);
    assert_eq!(harsh.peek(&s, T0, 0).remaining(), 2);
}

/// Every algorithm as a penalising one-policy set: a client that waits exactly the retry it was given is
/// admitted (a retry that ignored the penalty would lock an obedient client out forever), and a flood of
/// denied requests delays recovery by at most one more period.
#[test]
fn under_a_penalty_the_reported_retry_is_honest_and_recovery_bounded() {
    let kinds = [
        AlgorithmKind::Gcra,
        AlgorithmKind::TokenBucket,
        AlgorithmKind::LeakyBucket,
        AlgorithmKind::Shaper {
            max_delay: Duration::ZERO,
        },
        AlgorithmKind::FixedWindow,
        AlgorithmKind::SlidingLog,
        AlgorithmKind::SlidingWindow,
    ];
    let period = PERIOD.as_micros() as Micros;
    for kind in kinds {
        let name = kind.name();
        let set = PolicySet::new([Policy::new("p", kind, quota(LIMIT, PERIOD))
            .unwrap()
            .penalise(true)])
        .unwrap();
        let mut s = Default::default();
        assert!(set.check(&mut s, T0, LIMIT).is_allowed(), "{name}");
        let mut t = T0;
        for round in 0..5 {
            let mut admitted = 0;
            let d = loop {
                let d = set.check(&mut s, t, 1);
                if !d.is_allowed() {
                    break d;
                }
                admitted += 1;
                assert!(admitted <= LIMIT, "{name} round {round}");
            };
            assert_eq!(d.outcome(), Outcome::Limited, "{name} round {round}");
            t += d.binding().retry;
            let d = set.check(&mut s, t, 1);
            assert!(
                d.is_allowed(),
                "{name} round {round}: denied at the retry time it was given ({d:?})"
            );
        }

        let mut s = Default::default();
        assert!(set.check(&mut s, T0, LIMIT).is_allowed(), "{name}");
        for _ in 0..1_000 {
            assert!(set.check(&mut s, T0, 1).is_limited(), "{name}");
        }
        let later = T0 + 2 * period;
        assert_eq!(
            set.peek(&s, later, 0).remaining(),
            LIMIT,
            "{name}: not recovered two periods after a flood"
        );
        assert!(set.idle_at(&s) <= later, "{name}");
    }
}

#[test]
fn a_penalising_policy_is_charged_when_another_policy_denies() {
    let set = PolicySet::new([
        Policy::gcra("burst", Quota::per_second(10).build().unwrap())
            .unwrap()
            .penalise(true),
        Policy::fixed_window("window", Quota::per_minute(3).build().unwrap()).unwrap(),
    ])
    .unwrap();
    let mut s = Default::default();
    assert!(set.check(&mut s, 0, 2).is_allowed());
    assert_eq!(set.peek(&s, 0, 0).statuses()[0].remaining, 8);
    let d = set.check(&mut s, 0, 2);
    assert_eq!(d.outcome(), Outcome::Limited);
    assert_eq!(set.policy(d.binding_index()).name(), "window");
    assert_eq!(
        set.peek(&s, 0, 0).statuses()[0].remaining,
        6,
        "denied cost charged to the penalising policy"
    );
    assert_eq!(
        set.peek(&s, 0, 0).statuses()[1].remaining,
        1,
        "but not to the others"
    );
}

#[test]
fn reset_forgets_a_key() {
    let clock = ManualClock::new(T0);
    let store = MemoryStore::<String, PolicySet, _>::builder()
        .clock(clock.clone())
        .build();
    let set = per_second_and_per_minute();
    assert!(store.check(&set, "k", 5).unwrap().is_allowed());
    assert!(store.check(&set, "other", 1).unwrap().is_allowed());
    assert!(store.check(&set, "k", 1).unwrap().is_limited());
    assert_eq!(store.len(), 2);
    store.reset("k");
    assert_eq!(store.len(), 1);
    let d = store.check(&set, "k", 5).unwrap();
    assert!(d.is_allowed());
    assert_eq!(
        d.statuses()[1].remaining,
        3,
        "the reset key starts from fresh"
    );
    assert_eq!(
        store.peek(&set, "other", 0).statuses()[1].remaining,
        7,
        "other keys are untouched"
    );

    // The same through the async Store trait.
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    rt.block_on(async {
        Store::<str, _>::reset(&store, &set, "k").await.unwrap();
        let d = Store::<str, _>::check(&store, &set, "k", 5).await.unwrap();
        assert!(d.is_allowed());
        assert_eq!(d.statuses()[1].remaining, 3);
    });
}

#[test]
fn replacing_a_set_with_a_higher_quota_keeps_the_counters() {
    let clock = ManualClock::new(3_600_000_000);
    let store = MemoryStore::<u64, PolicySet, _>::builder()
        .clock(clock.clone())
        .build();
    let old = PolicySet::new([
        Policy::token_bucket("burst", Quota::per_second(5).build().unwrap()).unwrap(),
        Policy::fixed_window("hourly", Quota::per_hour(10).build().unwrap()).unwrap(),
        Policy::gcra("smooth", Quota::per_second(5).build().unwrap()).unwrap(),
    ])
    .unwrap();
    assert!(store.check(&old, &1, 5).unwrap().is_allowed());
    assert!(store.check(&old, &1, 1).unwrap().is_limited());
    let gcra_reset = store.peek(&old, &1, 0).statuses()[2].reset;

    // Same names and algorithms, higher quotas: what was charged still counts.
    let new = PolicySet::new([
        Policy::token_bucket("burst", Quota::per_second(10).build().unwrap()).unwrap(),
        Policy::fixed_window("hourly", Quota::per_hour(20).build().unwrap()).unwrap(),
        Policy::gcra("smooth", Quota::per_second(10).build().unwrap()).unwrap(),
    ])
    .unwrap();
    let d = store.peek(&new, &1, 0);
    assert_eq!(
        d.statuses()[0].remaining,
        5,
        "token bucket: 5 of 10 tokens used"
    );
    assert_eq!(d.statuses()[1].remaining, 15, "fixed window: 5 of 20 used");
    assert_eq!(
        d.statuses()[2].reset,
        gcra_reset,
        "GCRA keeps its theoretical arrival time"
    );
    // A position whose algorithm changed starts fresh.
    let changed = PolicySet::new([
        Policy::token_bucket("burst", Quota::per_second(10).build().unwrap()).unwrap(),
        Policy::sliding_log("hourly", Quota::per_hour(20).build().unwrap()).unwrap(),
    ])
    .unwrap();
    let d = store.peek(&changed, &1, 0);
    assert_eq!(d.statuses()[0].remaining, 5);
    assert_eq!(d.statuses()[1].remaining, 20);
}

#[test]
fn a_single_algorithm_and_a_one_policy_set_decide_alike() {
    let q = quota(LIMIT, PERIOD);
    let g = Gcra::new(q);
    let set = PolicySet::new([Policy::gcra("g", q).unwrap()]).unwrap();
    let (mut a, mut b) = (0u64, Default::default());
    for i in 0..200u64 {
        let t = T0 + i * 3_000;
        let cost = i % 4;
        assert_eq!(
            g.check(&mut a, t, cost),
            set.check(&mut b, t, cost),
            "step {i}"
        );
    }
}

/// A one-policy set takes a shortcut (its one status is the decision); it must decide exactly as the same
/// policy does inside a larger set, whose other policy never binds: same outcome, same status, for checks
/// that pass, wait, can never pass (a cost above the capacity), and peeks.
#[test]
fn a_one_policy_set_decides_like_the_same_policy_in_a_larger_set() {
    let kinds = [
        AlgorithmKind::Gcra,
        AlgorithmKind::TokenBucket,
        AlgorithmKind::LeakyBucket,
        AlgorithmKind::Shaper { max_delay: PERIOD },
        AlgorithmKind::FixedWindow,
        AlgorithmKind::SlidingLog,
        AlgorithmKind::SlidingWindow,
    ];
    for kind in kinds {
        let policy = || Policy::new("p", kind, quota(LIMIT, PERIOD)).unwrap();
        let one = PolicySet::new([policy()]).unwrap();
        let roomy = Policy::gcra("roomy", quota(10_000, PERIOD)).unwrap();
        let two = PolicySet::new([policy(), roomy]).unwrap();
        let (mut a, mut b) = (Default::default(), Default::default());
        let mut outcomes = std::collections::HashSet::new();
        for i in 0..300u64 {
            let t = T0 + i * 2_000;
            let cost = [1, 0, 3, 2 * LIMIT + 1, 2][i as usize % 5];
            let (x, y) = (one.check(&mut a, t, cost), two.check(&mut b, t, cost));
            assert_eq!(x.outcome(), y.outcome(), "{} check {i}", kind.name());
            assert_eq!(
                x.statuses(),
                &y.statuses()[..1],
                "{} check {i}",
                kind.name()
            );
            outcomes.insert(format!("{:?}", x.outcome()));
            let (x, y) = (one.peek(&a, t, 1), two.peek(&b, t, 1));
            assert_eq!(x.outcome(), y.outcome(), "{} peek {i}", kind.name());
            assert_eq!(x.statuses(), &y.statuses()[..1], "{} peek {i}", kind.name());
        }
        assert_eq!(outcomes.len(), 3, "{}: {outcomes:?}", kind.name());
    }
}
