//! The algorithms, each a pure state machine `(state, now, cost) → (status, new state)` in integer
//! microseconds.
//!
//! | algorithm | state | burst | exact? | memory per key |
//! |---|---|---|---|---|
//! | [`Gcra`] | theoretical arrival time (1 word) | capacity | yes | 8 B |
//! | [`TokenBucket`] | missing tokens + last refill (2 words) | capacity | yes (same decisions as GCRA) | 16 B |
//! | [`LeakyBucket`] (meter) | level × period + last leak (2 words) | capacity | yes, exact ratio | 16 B |
//! | [`Shaper`] (leaky bucket as a queue) | theoretical arrival time | passes undelayed | yes | 8 B |
//! | [`FixedWindow`] | window start + count | = limit | yes (2× at a boundary, by design) | 16 B |
//! | [`SlidingLog`] | (time, cost) entries | = limit | yes | ≤ 16 B × limit |
//! | [`SlidingWindow`] (counter) | window start + two counts | = limit | approximate (documented bound) | 24 B |
//!
//! Every algorithm follows the same contract (the [`Algorithm`] trait):
//!
//! * a denied request changes nothing (unless the caller asks to penalise),
//! * a cost above the capacity is [`Outcome::Never`](crate::Outcome::Never), not an ordinary denial,
//! * `Default` state is the fresh state, and [`Algorithm::fresh_at`] tells when a state has become
//!   indistinguishable from fresh, so stores can drop it,
//! * cost 0 is a pure query: always allowed, nothing charged, the status shows what is left.
//!
//! The Redis store runs a Lua twin of each function over the same integer state; the Rust function is the
//! reference the Lua is tested against.

pub mod fixed_window;
pub mod gcra;
pub mod leaky_bucket;
pub mod shaper;
pub mod sliding_log;
pub mod sliding_window;
pub mod token_bucket;

pub use fixed_window::{FixedWindow, WindowState};
pub use gcra::Gcra;
pub use leaky_bucket::{LeakState, LeakyBucket};
pub use shaper::Shaper;
pub use sliding_log::{LogState, SlidingLog};
pub use sliding_window::{CounterState, SlidingWindow};
pub use token_bucket::{BucketState, TokenBucket};

use crate::clock::Micros;
use crate::decision::{Decision, Status};
use crate::quota::Quota;

/// One rate-limiting algorithm over one quota: a pure state machine.
///
/// `evaluate` never mutates; `commit` applies a charge that `evaluate` allowed. Keeping the two apart is what
/// makes multi-policy checks all-or-nothing: evaluate every policy, commit only if all allowed.
pub trait Algorithm: std::fmt::Debug + Send + Sync + 'static {
    /// Per-key state; `Default` is the fresh state.
    type State: Default + Clone + std::fmt::Debug + PartialEq + Send + Sync + 'static;

    /// A short name, for errors, logs and metrics.
    const NAME: &'static str;

    /// The quota this instance enforces.
    fn quota(&self) -> &Quota;

    /// The decision for `cost` units at `now`, without changing anything.
    fn evaluate(&self, state: &Self::State, now: Micros, cost: u64) -> Status;

    /// Charges `cost` at `now`. Call only after [`Algorithm::evaluate`] allowed the same cost at the same
    /// time.
    fn commit(&self, state: &mut Self::State, now: Micros, cost: u64);

    /// Evaluates and, when allowed, commits.
    #[inline]
    fn step(&self, state: &mut Self::State, now: Micros, cost: u64) -> Status {
        let status = self.evaluate(state, now, cost);
        if status.allowed() {
            self.commit(state, now, cost);
        }
        status
    }

    /// Charges a *denied* request anyway, for policies that penalise. The default does nothing; the
    /// continuous algorithms advance their state by the cost, capped so recovery never takes longer than
    /// refilling the whole capacity once more.
    fn penalise(&self, _state: &mut Self::State, _now: Micros, _cost: u64) {}

    /// Gives back `cost` units charged earlier (a cancelled reservation, a response that should not count).
    /// Never leaves more than the full capacity.
    fn release(&self, state: &mut Self::State, now: Micros, cost: u64);

    /// The time from which `state` is indistinguishable from the fresh state (0 if it already is).
    fn fresh_at(&self, state: &Self::State) -> Micros;
}

/// Something a store can check a key against: a single algorithm, or a [`PolicySet`](crate::PolicySet) of
/// several checked all-or-nothing.
pub trait Rule: Send + Sync + 'static {
    /// Per-key state held by the store; `Default` is fresh.
    type State: Default + Send + Sync + 'static;

    /// Checks `cost` at `now`, charging it only if every policy allows it.
    fn check(&self, state: &mut Self::State, now: Micros, cost: u64) -> Decision;

    /// What [`Rule::check`] would answer, without charging anything.
    fn peek(&self, state: &Self::State, now: Micros, cost: u64) -> Decision;

    /// Gives back `cost` units to every policy.
    fn refund(&self, state: &mut Self::State, now: Micros, cost: u64);

    /// The time from which `state` is indistinguishable from fresh.
    fn idle_at(&self, state: &Self::State) -> Micros;
}

impl<A: Algorithm> Rule for A {
    type State = A::State;

    #[inline]
    fn check(&self, state: &mut Self::State, now: Micros, cost: u64) -> Decision {
        Decision::single(self.step(state, now, cost))
    }

    #[inline]
    fn peek(&self, state: &Self::State, now: Micros, cost: u64) -> Decision {
        Decision::single(self.evaluate(state, now, cost))
    }

    #[inline]
    fn refund(&self, state: &mut Self::State, now: Micros, cost: u64) {
        self.release(state, now, cost)
    }

    #[inline]
    fn idle_at(&self, state: &Self::State) -> Micros {
        self.fresh_at(state)
    }
}

/// Ceiling division for the retry and reset times, which must never be reported early.
#[inline]
pub(crate) fn div_ceil(a: u64, b: u64) -> u64 {
    a.div_ceil(b)
}
