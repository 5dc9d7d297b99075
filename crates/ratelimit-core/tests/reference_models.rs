//! Every algorithm against a small, obviously-correct reference model, decision for decision.
//!
//! The models are written differently from the implementations on purpose: buckets are simulated one
//! microsecond at a time (or kept as a credit balance instead of a theoretical arrival time), window
//! algorithms keep a plain log of admitted `(time, cost)` events and count it by brute force, and every
//! time in a status — `reset` (back to full) and `retry` (allowed again) — is found by *searching forward*
//! one microsecond at a time for the first instant the model says so. Quotas are tiny (periods of
//! 50–1000 µs) so the searches stay cheap.
//!
//! Random operation sequences (advance the clock, check a random cost including 0 and costs above the
//! capacity, peek, refund) are applied to both sides with the same clock, and every field of every status
//! must agree: outcome, limit, remaining, reset, retry and (for the shaper) delay.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use proptest::prelude::*;
use ratelimit_core::{
    Algorithm, FixedWindow, Gcra, LeakyBucket, Micros, Quota, Rule, Shaper, SlidingLog,
    SlidingWindow, Status, TokenBucket,
};

/// How far forward a search may look before the model is declared broken.
const HORIZON: Micros = 200_000;

/// One step of a random sequence.
#[derive(Debug, Clone, Copy)]
enum Op {
    Advance(Micros),
    Check(u64),
    Peek(u64),
    Refund(u64),
}

fn ops() -> impl Strategy<Value = Vec<Op>> {
    let advance = prop_oneof![0u64..=5, 0u64..=300, 0u64..=2_500].prop_map(Op::Advance);
    let cost = prop_oneof![4 => 0u64..=3, 1 => 0u64..=8];
    let op = prop_oneof![
        4 => advance,
        5 => cost.clone().prop_map(Op::Check),
        1 => cost.prop_map(Op::Peek),
        1 => (0u64..=4).prop_map(Op::Refund),
    ];
    proptest::collection::vec(op, 1..60)
}

/// (limit, period µs, burst) for the continuous algorithms.
fn bucket_quota() -> impl Strategy<Value = (u64, Micros, u64)> {
    (1u64..=4, 50u64..=1_000, 1u64..=5)
}

/// (limit, period µs) for the window algorithms (burst = limit).
fn window_quota() -> impl Strategy<Value = (u64, Micros)> {
    (1u64..=5, 50u64..=1_000)
}

/// `cases` cases, failures reported (shrunk) but not persisted into the source tree.
fn config(cases: u32) -> ProptestConfig {
    ProptestConfig {
        cases,
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

/// A reference model: the state at `self.now()`, moved forward with [`Model::advance_to`].
trait Model: Clone + std::fmt::Debug {
    /// Moves the model's clock forward to `t`, simulating everything that happens on the way.
    fn advance_to(&mut self, t: Micros);
    /// The capacity reported as `limit`.
    fn capacity(&self) -> u64;
    /// Whether `cost` can never be admitted, however long one waits.
    fn never(&self, cost: u64) -> bool;
    /// Whether `cost` is admitted now with no delay.
    fn fits_now(&self, cost: u64) -> bool;
    /// Whether `cost` is admitted now, possibly with a delay (only the shaper delays).
    fn admits(&self, cost: u64) -> bool {
        self.fits_now(cost)
    }
    /// The delay granted to an admitted `cost`.
    fn delay(&self, _cost: u64) -> Micros {
        0
    }
    /// Charges an admitted `cost` now.
    fn charge(&mut self, cost: u64);
    /// Gives back `cost` now.
    fn refund(&mut self, cost: u64);
    /// Whether the model is back to its full capacity (nothing left that limits).
    fn full(&self) -> bool;
    /// The largest cost admitted now without delay, found by trying every cost.
    fn remaining(&self) -> u64 {
        (0..=self.capacity())
            .rev()
            .find(|&k| self.fits_now(k))
            .unwrap_or(0)
    }
}

/// The first `d ≥ 0` such that `pred` holds for the model advanced to `now + d`.
fn search<M: Model>(m: &M, now: Micros, pred: impl Fn(&M) -> bool) -> Micros {
    let mut m = m.clone();
    for d in 0..=HORIZON {
        m.advance_to(now + d);
        if pred(&m) {
            return d;
        }
    }
    panic!("model {m:?} never satisfied the predicate within {HORIZON} µs");
}

/// What the model answers for `cost` at `now`, and the model after the check.
fn expect<M: Model>(m: &M, now: Micros, cost: u64) -> (Status, M) {
    let mut m = m.clone();
    m.advance_to(now);
    let limit = m.capacity();
    if m.never(cost) {
        let status = Status {
            limit,
            remaining: m.remaining(),
            reset: search(&m, now, M::full),
            retry: Status::NEVER,
            delay: 0,
        };
        return (status, m);
    }
    if m.admits(cost) {
        let delay = m.delay(cost);
        m.charge(cost);
        let status = Status {
            limit,
            remaining: m.remaining(),
            reset: search(&m, now, M::full),
            retry: 0,
            delay,
        };
        return (status, m);
    }
    let status = Status {
        limit,
        remaining: m.remaining(),
        reset: search(&m, now, M::full),
        retry: search(&m, now, |m| m.admits(cost)),
        delay: 0,
    };
    (status, m)
}

/// Runs `ops` against `rule` and `model` side by side, comparing every status.
fn run<A, M>(rule: &A, mut model: M, start: Micros, ops: &[Op]) -> Result<(), TestCaseError>
where
    A: Algorithm,
    M: Model,
{
    let mut state = A::State::default();
    let mut now = start;
    model.advance_to(now);
    for (i, op) in ops.iter().enumerate() {
        match *op {
            Op::Advance(d) => {
                now += d;
                model.advance_to(now);
            }
            Op::Check(cost) => {
                let got = Rule::check(rule, &mut state, now, cost);
                let (want, after) = expect(&model, now, cost);
                prop_assert_eq!(
                    got.binding(),
                    &want,
                    "op #{} check({}) at {} µs; model before: {:?}",
                    i,
                    cost,
                    now,
                    model
                );
                prop_assert_eq!(got.statuses().len(), 1);
                if want.allowed() {
                    model = after;
                }
            }
            Op::Peek(cost) => {
                let got = Rule::peek(rule, &state, now, cost);
                let (want, _) = expect(&model, now, cost);
                prop_assert_eq!(
                    got.binding(),
                    &want,
                    "op #{} peek({}) at {} µs; model: {:?}",
                    i,
                    cost,
                    now,
                    model
                );
            }
            Op::Refund(cost) => {
                Rule::refund(rule, &mut state, now, cost);
                model.refund(cost);
            }
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------------------
// Continuous algorithms.

/// GCRA as a balance of microsecond credits: `burst × T` at most, one credit earned per microsecond, `T`
/// credits spent per unit (T = period / limit, rounded up).
#[derive(Debug, Clone)]
struct CreditBucket {
    now: Micros,
    credits: u64,
    max: u64,
    t: u64,
    burst: u64,
}

impl CreditBucket {
    fn new(limit: u64, period: Micros, burst: u64) -> Self {
        let t = period.div_ceil(limit);
        CreditBucket {
            now: 0,
            credits: burst * t,
            max: burst * t,
            t,
            burst,
        }
    }
}

impl Model for CreditBucket {
    fn advance_to(&mut self, t: Micros) {
        self.credits = (self.credits + (t - self.now)).min(self.max);
        self.now = t;
    }
    fn capacity(&self) -> u64 {
        self.burst
    }
    fn never(&self, cost: u64) -> bool {
        cost > self.burst
    }
    fn fits_now(&self, cost: u64) -> bool {
        self.credits >= cost * self.t
    }
    fn charge(&mut self, cost: u64) {
        self.credits -= cost * self.t;
    }
    fn refund(&mut self, cost: u64) {
        self.credits = (self.credits + cost * self.t).min(self.max);
    }
    fn full(&self) -> bool {
        self.credits == self.max
    }
}

/// A token bucket simulated one microsecond at a time: whole tokens, and a counter of microseconds spent
/// towards the next token, which only runs while the bucket is not full.
#[derive(Debug, Clone)]
struct TickingBucket {
    now: Micros,
    tokens: u64,
    progress: u64,
    t: u64,
    cap: u64,
}

impl TickingBucket {
    fn new(limit: u64, period: Micros, burst: u64) -> Self {
        TickingBucket {
            now: 0,
            tokens: burst,
            progress: 0,
            t: period.div_ceil(limit),
            cap: burst,
        }
    }
}

impl Model for TickingBucket {
    fn advance_to(&mut self, t: Micros) {
        while self.now < t {
            self.now += 1;
            if self.tokens < self.cap {
                self.progress += 1;
                if self.progress == self.t {
                    self.tokens += 1;
                    self.progress = 0;
                }
            }
        }
    }
    fn capacity(&self) -> u64 {
        self.cap
    }
    fn never(&self, cost: u64) -> bool {
        cost > self.cap
    }
    fn fits_now(&self, cost: u64) -> bool {
        cost <= self.tokens
    }
    fn charge(&mut self, cost: u64) {
        self.tokens -= cost;
    }
    fn refund(&mut self, cost: u64) {
        self.tokens = (self.tokens + cost).min(self.cap);
        if self.tokens == self.cap {
            self.progress = 0;
        }
    }
    fn full(&self) -> bool {
        self.tokens == self.cap
    }
}

/// A leaky bucket simulated one microsecond at a time. The level is counted in `1 / period` of a unit, so
/// leaking `limit / period` units per microsecond is a whole number of steps.
#[derive(Debug, Clone)]
struct DrippingBucket {
    now: Micros,
    level: u64,
    limit: u64,
    period: u64,
    burst: u64,
}

impl DrippingBucket {
    fn new(limit: u64, period: Micros, burst: u64) -> Self {
        DrippingBucket {
            now: 0,
            level: 0,
            limit,
            period,
            burst,
        }
    }
}

impl Model for DrippingBucket {
    fn advance_to(&mut self, t: Micros) {
        while self.now < t && self.level > 0 {
            self.now += 1;
            self.level = self.level.saturating_sub(self.limit);
        }
        self.now = t;
    }
    fn capacity(&self) -> u64 {
        self.burst
    }
    fn never(&self, cost: u64) -> bool {
        cost > self.burst
    }
    fn fits_now(&self, cost: u64) -> bool {
        self.level + cost * self.period <= self.burst * self.period
    }
    fn charge(&mut self, cost: u64) {
        self.level += cost * self.period;
    }
    fn refund(&mut self, cost: u64) {
        self.level = self.level.saturating_sub(cost * self.period);
    }
    fn full(&self) -> bool {
        self.level == 0
    }
}

/// The shaper as a credit balance that may go into debt: a request whose cost exceeds the credits is
/// admitted after a delay equal to the debt, as long as that delay is at most `max_delay`.
#[derive(Debug, Clone)]
struct DebtBucket {
    now: Micros,
    credits: i64,
    max: i64,
    t: i64,
    burst: u64,
    max_delay: i64,
}

impl DebtBucket {
    fn new(limit: u64, period: Micros, burst: u64, max_delay: Micros) -> Self {
        let t = period.div_ceil(limit) as i64;
        DebtBucket {
            now: 0,
            credits: burst as i64 * t,
            max: burst as i64 * t,
            t,
            burst,
            max_delay: max_delay as i64,
        }
    }
}

impl Model for DebtBucket {
    fn advance_to(&mut self, t: Micros) {
        self.credits = (self.credits + (t - self.now) as i64).min(self.max);
        self.now = t;
    }
    fn capacity(&self) -> u64 {
        self.burst
    }
    fn never(&self, cost: u64) -> bool {
        // Even from a full balance the debt would exceed the longest delay.
        cost as i64 * self.t - self.max > self.max_delay
    }
    fn fits_now(&self, cost: u64) -> bool {
        self.credits >= cost as i64 * self.t
    }
    fn admits(&self, cost: u64) -> bool {
        cost as i64 * self.t - self.credits <= self.max_delay
    }
    fn delay(&self, cost: u64) -> Micros {
        (cost as i64 * self.t - self.credits).max(0) as Micros
    }
    fn charge(&mut self, cost: u64) {
        self.credits -= cost as i64 * self.t;
    }
    fn refund(&mut self, cost: u64) {
        self.credits = (self.credits + cost as i64 * self.t).min(self.max);
    }
    fn full(&self) -> bool {
        self.credits == self.max
    }
}

// ---------------------------------------------------------------------------------------------------------
// Window algorithms: a log of admitted events, counted by brute force.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Window {
    Fixed,
    Log,
    Counter,
}

#[derive(Debug, Clone)]
struct EventLog {
    kind: Window,
    now: Micros,
    /// Admitted `(time, cost)`, oldest first; events older than two periods are dropped (no window
    /// algorithm looks back further).
    events: Vec<(Micros, u64)>,
    limit: u64,
    period: Micros,
}

impl EventLog {
    fn new(kind: Window, limit: u64, period: Micros) -> Self {
        EventLog {
            kind,
            now: 0,
            events: Vec::new(),
            limit,
            period,
        }
    }

    fn sum(&self, pred: impl Fn(Micros) -> bool) -> u64 {
        self.events.iter().filter(|e| pred(e.0)).map(|e| e.1).sum()
    }

    fn window_of(&self, t: Micros) -> u64 {
        t / self.period
    }

    /// The count that limits, scaled by the period (the counter's estimate is a fraction).
    fn load(&self) -> u64 {
        let now = self.now;
        let w = self.window_of(now);
        match self.kind {
            Window::Fixed => self.sum(|t| self.window_of(t) == w) * self.period,
            Window::Log => self.sum(|t| t + self.period > now) * self.period,
            Window::Counter => {
                let cur = self.sum(|t| self.window_of(t) == w);
                let prev = if w == 0 {
                    0
                } else {
                    self.sum(|t| self.window_of(t) == w - 1)
                };
                let into = now - w * self.period;
                prev * (self.period - into) + cur * self.period
            }
        }
    }

    /// Takes `cost` units back from the newest events that still count, in the order the algorithm
    /// gives them back: the current window (or live log) first, then (counter only) the previous window.
    fn take_back(&mut self, mut cost: u64) {
        let now = self.now;
        let w = self.window_of(now);
        let period = self.period;
        let tiers: Vec<Box<dyn Fn(Micros) -> bool>> = match self.kind {
            Window::Fixed => vec![Box::new(move |t| t / period == w)],
            Window::Log => vec![Box::new(move |t| t + period > now)],
            Window::Counter => vec![
                Box::new(move |t| t / period == w),
                Box::new(move |t| w > 0 && t / period == w - 1),
            ],
        };
        for counts in tiers {
            for e in self.events.iter_mut().rev() {
                if cost == 0 {
                    break;
                }
                if counts(e.0) {
                    let take = e.1.min(cost);
                    e.1 -= take;
                    cost -= take;
                }
            }
        }
        self.events.retain(|e| e.1 > 0);
    }
}

impl Model for EventLog {
    fn advance_to(&mut self, t: Micros) {
        self.now = t;
        let horizon = t.saturating_sub(2 * self.period + 1);
        self.events.retain(|e| e.0 >= horizon);
    }
    fn capacity(&self) -> u64 {
        self.limit
    }
    fn never(&self, cost: u64) -> bool {
        cost > self.limit
    }
    fn fits_now(&self, cost: u64) -> bool {
        self.load() + cost * self.period <= self.limit * self.period
    }
    fn charge(&mut self, cost: u64) {
        if cost > 0 {
            self.events.push((self.now, cost));
        }
    }
    fn refund(&mut self, cost: u64) {
        self.take_back(cost);
    }
    fn full(&self) -> bool {
        self.load() == 0
    }
}

// ---------------------------------------------------------------------------------------------------------
// The properties.

proptest! {
    #![proptest_config(config(192))]

    #[test]
    fn gcra_matches_a_credit_bucket((limit, period, burst) in bucket_quota(), start in 0u64..5_000, ops in ops()) {
        let rule = Gcra::new(quota(limit, period, burst));
        run(&rule, CreditBucket::new(limit, period, burst), start, &ops)?;
    }

    #[test]
    fn token_bucket_matches_a_ticking_simulation((limit, period, burst) in bucket_quota(), start in 0u64..5_000, ops in ops()) {
        let rule = TokenBucket::new(quota(limit, period, burst));
        run(&rule, TickingBucket::new(limit, period, burst), start, &ops)?;
    }

    #[test]
    fn leaky_bucket_matches_a_dripping_simulation((limit, period, burst) in bucket_quota(), start in 0u64..5_000, ops in ops()) {
        let rule = LeakyBucket::new(quota(limit, period, burst)).unwrap();
        run(&rule, DrippingBucket::new(limit, period, burst), start, &ops)?;
    }

    #[test]
    fn shaper_matches_a_debt_bucket((limit, period, burst) in bucket_quota(), max_delay in prop_oneof![Just(0u64), 0u64..=3_000], start in 0u64..5_000, ops in ops()) {
        let rule = Shaper::new(quota(limit, period, burst), Duration::from_micros(max_delay));
        run(&rule, DebtBucket::new(limit, period, burst, max_delay), start, &ops)?;
    }

    #[test]
    fn fixed_window_matches_an_event_log((limit, period) in window_quota(), start in 0u64..5_000, ops in ops()) {
        let rule = FixedWindow::new(quota(limit, period, limit)).unwrap();
        run(&rule, EventLog::new(Window::Fixed, limit, period), start, &ops)?;
    }

    #[test]
    fn sliding_log_matches_an_event_log((limit, period) in window_quota(), start in 0u64..5_000, ops in ops()) {
        let rule = SlidingLog::new(quota(limit, period, limit)).unwrap();
        run(&rule, EventLog::new(Window::Log, limit, period), start, &ops)?;
    }

    #[test]
    fn sliding_window_matches_an_event_log((limit, period) in window_quota(), start in 0u64..5_000, ops in ops()) {
        let rule = SlidingWindow::new(quota(limit, period, limit)).unwrap();
        run(&rule, EventLog::new(Window::Counter, limit, period), start, &ops)?;
    }
}

/// Applies `ops` to two rules with the same clock and requires identical decisions.
fn same_decisions<A: Rule, B: Rule>(
    a: &A,
    b: &B,
    start: Micros,
    ops: &[Op],
) -> Result<(), TestCaseError> {
    let (mut sa, mut sb) = (A::State::default(), B::State::default());
    let mut now = start;
    for (i, op) in ops.iter().enumerate() {
        match *op {
            Op::Advance(d) => now += d,
            Op::Check(cost) => {
                let (da, db) = (a.check(&mut sa, now, cost), b.check(&mut sb, now, cost));
                prop_assert_eq!(da, db, "op #{} check({}) at {} µs", i, cost, now);
            }
            Op::Peek(cost) => {
                let (da, db) = (a.peek(&sa, now, cost), b.peek(&sb, now, cost));
                prop_assert_eq!(da, db, "op #{} peek({}) at {} µs", i, cost, now);
            }
            Op::Refund(cost) => {
                a.refund(&mut sa, now, cost);
                b.refund(&mut sb, now, cost);
            }
        }
        // A state idle at or before `now` is fresh either way.
        prop_assert_eq!(
            a.idle_at(&sa).max(now),
            b.idle_at(&sb).max(now),
            "idle_at after op #{}",
            i
        );
    }
    Ok(())
}

proptest! {
    #![proptest_config(config(256))]

    #[test]
    fn token_bucket_and_gcra_decide_alike((limit, period, burst) in bucket_quota(), start in 0u64..5_000, ops in ops()) {
        let q = quota(limit, period, burst);
        same_decisions(&TokenBucket::new(q), &Gcra::new(q), start, &ops)?;
    }

    #[test]
    fn shaper_without_delay_is_gcra((limit, period, burst) in bucket_quota(), start in 0u64..5_000, ops in ops()) {
        let q = quota(limit, period, burst);
        same_decisions(&Shaper::new(q, Duration::ZERO), &Gcra::new(q), start, &ops)?;
    }

    /// With a period that is a whole multiple of the limit, GCRA's rounded emission interval is exact, and
    /// the leaky bucket (exact ratio) must agree with it.
    #[test]
    fn leaky_bucket_is_gcra_when_the_interval_is_exact((limit, t, burst) in (1u64..=4, 20u64..=300, 1u64..=5), start in 0u64..5_000, ops in ops()) {
        let q = quota(limit, limit * t, burst);
        same_decisions(&LeakyBucket::new(q).unwrap(), &Gcra::new(q), start, &ops)?;
    }
}
