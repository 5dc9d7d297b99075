//! Named policies, and sets of them checked all-or-nothing.
//!
//! A [`Policy`] is an algorithm over a quota with a name (the name appears in `RateLimit` headers, logs
//! and metrics). A [`PolicySet`] checks several policies as one: either every policy admits the cost and
//! every one is charged, or none is charged and the decision names the policy that limited
//! ([`Decision::binding_index`]).
//!
//! ```
//! use ratelimit_core::{Policy, PolicySet, Quota, Rule, Outcome};
//!
//! let set = PolicySet::new([
//!     Policy::gcra("burst", Quota::per_second(10).build()?)?,
//!     Policy::fixed_window("daily", Quota::per_day(1_000).build()?)?,
//! ])?;
//! let mut state = Default::default();
//! let d = set.check(&mut state, 0, 1);
//! assert!(d.is_allowed());
//! assert_eq!(d.statuses()[1].remaining, 999);
//! // 10 more at once: the burst policy limits, and the daily quota is not charged.
//! let d = set.check(&mut state, 0, 10);
//! assert_eq!(d.outcome(), Outcome::Limited);
//! assert_eq!(set.policy(d.binding_index()).name(), "burst");
//! assert_eq!(set.peek(&state, 0, 0).statuses()[1].remaining, 999);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use crate::algorithm::{
    Algorithm, BucketState, CounterState, FixedWindow, Gcra, LeakState, LeakyBucket, LogState,
    Rule, Shaper, SlidingLog, SlidingWindow, TokenBucket, WindowState,
};
use crate::clock::Micros;
use crate::decision::{Decision, Status, MAX_POLICIES};
use crate::quota::{Quota, QuotaError};

/// Why a policy or policy set was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PolicyError {
    /// The quota does not suit the algorithm.
    #[error("policy {name:?}: {source}")]
    Quota {
        /// The policy's name.
        name: String,
        /// What is wrong with the quota.
        #[source]
        source: QuotaError,
    },
    /// A name that cannot appear in a header.
    #[error("policy name {0:?} is invalid: use 1 to 64 characters from A-Z a-z 0-9 and - _ . : /")]
    InvalidName(String),
    /// Two policies in one set share a name.
    #[error("policy name {0:?} appears twice in one set: names identify policies in headers and must be unique")]
    DuplicateName(String),
    /// A set with no policies.
    #[error("a policy set needs at least one policy")]
    Empty,
    /// More policies than a decision can carry.
    #[error("a policy set holds at most {max} policies, got {got}: merge some quotas or split the set", max = MAX_POLICIES)]
    TooMany {
        /// How many were given.
        got: usize,
    },
    /// An algorithm name that is not known.
    #[error("unknown algorithm {0:?}: use one of gcra, token_bucket, leaky_bucket, shaper, fixed_window, sliding_log, sliding_window")]
    UnknownAlgorithm(String),
}

/// Which algorithm a [`Policy`] runs, for building policies from configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum AlgorithmKind {
    /// [`Gcra`].
    Gcra,
    /// [`TokenBucket`].
    TokenBucket,
    /// [`LeakyBucket`] (meter).
    LeakyBucket,
    /// [`Shaper`] (leaky bucket as a queue) with its maximum delay.
    Shaper {
        /// The longest delay granted.
        max_delay: Duration,
    },
    /// [`FixedWindow`].
    FixedWindow,
    /// [`SlidingLog`].
    SlidingLog,
    /// [`SlidingWindow`] (counter).
    SlidingWindow,
}

impl AlgorithmKind {
    /// The algorithm's name (`gcra`, `token_bucket`, …).
    pub fn name(&self) -> &'static str {
        match self {
            AlgorithmKind::Gcra => Gcra::NAME,
            AlgorithmKind::TokenBucket => TokenBucket::NAME,
            AlgorithmKind::LeakyBucket => LeakyBucket::NAME,
            AlgorithmKind::Shaper { .. } => Shaper::NAME,
            AlgorithmKind::FixedWindow => FixedWindow::NAME,
            AlgorithmKind::SlidingLog => SlidingLog::NAME,
            AlgorithmKind::SlidingWindow => SlidingWindow::NAME,
        }
    }
}

impl FromStr for AlgorithmKind {
    type Err = PolicyError;
    /// Parses an algorithm name; `shaper` gets a `max_delay` of zero (set it afterwards).
    fn from_str(s: &str) -> Result<Self, PolicyError> {
        Ok(match s {
            "gcra" => AlgorithmKind::Gcra,
            "token_bucket" => AlgorithmKind::TokenBucket,
            "leaky_bucket" => AlgorithmKind::LeakyBucket,
            "shaper" => AlgorithmKind::Shaper {
                max_delay: Duration::ZERO,
            },
            "fixed_window" => AlgorithmKind::FixedWindow,
            "sliding_log" => AlgorithmKind::SlidingLog,
            "sliding_window" => AlgorithmKind::SlidingWindow,
            other => return Err(PolicyError::UnknownAlgorithm(other.to_owned())),
        })
    }
}

/// Any algorithm, chosen at run time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AnyAlgorithm {
    /// [`Gcra`].
    Gcra(Gcra),
    /// [`TokenBucket`].
    TokenBucket(TokenBucket),
    /// [`LeakyBucket`].
    LeakyBucket(LeakyBucket),
    /// [`Shaper`].
    Shaper(Shaper),
    /// [`FixedWindow`].
    FixedWindow(FixedWindow),
    /// [`SlidingLog`].
    SlidingLog(SlidingLog),
    /// [`SlidingWindow`].
    SlidingWindow(SlidingWindow),
}

/// The state of one policy of any algorithm.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum AnyState {
    /// Fresh (nothing charged).
    #[default]
    Fresh,
    /// GCRA or shaper TAT.
    Tat(u64),
    /// Token bucket.
    Bucket(BucketState),
    /// Leaky bucket.
    Leak(LeakState),
    /// Fixed window.
    Window(WindowState),
    /// Sliding log.
    Log(Box<LogState>),
    /// Sliding window counter.
    Counter(CounterState),
}

macro_rules! dispatch {
    ($algo:expr, $state:expr, |$a:ident, $s:ident| $body:expr) => {
        match $algo {
            AnyAlgorithm::Gcra($a) => {
                let $s = match $state {
                    AnyState::Tat(t) => *t,
                    _ => 0,
                };
                $body
            }
            AnyAlgorithm::Shaper($a) => {
                let $s = match $state {
                    AnyState::Tat(t) => *t,
                    _ => 0,
                };
                $body
            }
            AnyAlgorithm::TokenBucket($a) => {
                let $s = match $state {
                    AnyState::Bucket(b) => *b,
                    _ => BucketState::default(),
                };
                $body
            }
            AnyAlgorithm::LeakyBucket($a) => {
                let $s = match $state {
                    AnyState::Leak(b) => *b,
                    _ => LeakState::default(),
                };
                $body
            }
            AnyAlgorithm::FixedWindow($a) => {
                let $s = match $state {
                    AnyState::Window(b) => *b,
                    _ => WindowState::default(),
                };
                $body
            }
            AnyAlgorithm::SlidingWindow($a) => {
                let $s = match $state {
                    AnyState::Counter(b) => *b,
                    _ => CounterState::default(),
                };
                $body
            }
            AnyAlgorithm::SlidingLog($a) => {
                let empty = LogState::default();
                let $s = match $state {
                    AnyState::Log(b) => &**b,
                    _ => &empty,
                };
                let $s = $s.clone();
                $body
            }
        }
    };
}

impl AnyAlgorithm {
    /// Builds the algorithm `kind` over `quota`.
    pub fn new(kind: AlgorithmKind, quota: Quota) -> Result<Self, QuotaError> {
        Ok(match kind {
            AlgorithmKind::Gcra => AnyAlgorithm::Gcra(Gcra::new(quota)),
            AlgorithmKind::TokenBucket => AnyAlgorithm::TokenBucket(TokenBucket::new(quota)),
            AlgorithmKind::LeakyBucket => AnyAlgorithm::LeakyBucket(LeakyBucket::new(quota)?),
            AlgorithmKind::Shaper { max_delay } => {
                AnyAlgorithm::Shaper(Shaper::new(quota, max_delay))
            }
            AlgorithmKind::FixedWindow => AnyAlgorithm::FixedWindow(FixedWindow::new(quota)?),
            AlgorithmKind::SlidingLog => AnyAlgorithm::SlidingLog(SlidingLog::new(quota)?),
            AlgorithmKind::SlidingWindow => AnyAlgorithm::SlidingWindow(SlidingWindow::new(quota)?),
        })
    }

    /// Which algorithm this is.
    pub fn kind(&self) -> AlgorithmKind {
        match self {
            AnyAlgorithm::Gcra(_) => AlgorithmKind::Gcra,
            AnyAlgorithm::TokenBucket(_) => AlgorithmKind::TokenBucket,
            AnyAlgorithm::LeakyBucket(_) => AlgorithmKind::LeakyBucket,
            AnyAlgorithm::Shaper(s) => AlgorithmKind::Shaper {
                max_delay: s.max_delay(),
            },
            AnyAlgorithm::FixedWindow(_) => AlgorithmKind::FixedWindow,
            AnyAlgorithm::SlidingLog(_) => AlgorithmKind::SlidingLog,
            AnyAlgorithm::SlidingWindow(_) => AlgorithmKind::SlidingWindow,
        }
    }

    /// The quota.
    pub fn quota(&self) -> &Quota {
        match self {
            AnyAlgorithm::Gcra(a) => a.quota(),
            AnyAlgorithm::TokenBucket(a) => a.quota(),
            AnyAlgorithm::LeakyBucket(a) => a.quota(),
            AnyAlgorithm::Shaper(a) => a.quota(),
            AnyAlgorithm::FixedWindow(a) => a.quota(),
            AnyAlgorithm::SlidingLog(a) => a.quota(),
            AnyAlgorithm::SlidingWindow(a) => a.quota(),
        }
    }

    /// [`Algorithm::evaluate`] over a state of any kind; a state of another algorithm reads as fresh.
    pub fn evaluate(&self, state: &AnyState, now: Micros, cost: u64) -> Status {
        match (self, state) {
            // Borrow the log rather than cloning it.
            (AnyAlgorithm::SlidingLog(a), AnyState::Log(s)) => a.evaluate(s, now, cost),
            _ => dispatch!(self, state, |a, s| a.evaluate(&s, now, cost)),
        }
    }

    fn apply(&self, state: &mut AnyState, now: Micros, cost: u64, op: Op) {
        if let (AnyAlgorithm::SlidingLog(a), AnyState::Log(s)) = (self, &mut *state) {
            op.run(a, s, now, cost);
            return;
        }
        *state = dispatch!(self, &*state, |a, s| {
            let mut s = s;
            op.run(a, &mut s, now, cost);
            a.wrap(s)
        });
    }

    /// [`Algorithm::commit`] over a state of any kind.
    pub fn commit(&self, state: &mut AnyState, now: Micros, cost: u64) {
        self.apply(state, now, cost, Op::Commit)
    }

    /// [`Algorithm::penalise`] over a state of any kind.
    pub fn penalise(&self, state: &mut AnyState, now: Micros, cost: u64) {
        self.apply(state, now, cost, Op::Penalise)
    }

    /// [`Algorithm::release`] over a state of any kind.
    pub fn refund(&self, state: &mut AnyState, now: Micros, cost: u64) {
        self.apply(state, now, cost, Op::Refund)
    }

    /// [`Algorithm::fresh_at`] over a state of any kind.
    pub fn idle_at(&self, state: &AnyState) -> Micros {
        match (self, state) {
            (AnyAlgorithm::SlidingLog(a), AnyState::Log(s)) => a.fresh_at(s),
            _ => dispatch!(self, state, |a, s| a.fresh_at(&s)),
        }
    }
}

#[derive(Clone, Copy)]
enum Op {
    Commit,
    Penalise,
    Refund,
}

impl Op {
    #[inline]
    fn run<A: Algorithm>(self, a: &A, s: &mut A::State, now: Micros, cost: u64) {
        match self {
            Op::Commit => a.commit(s, now, cost),
            Op::Penalise => a.penalise(s, now, cost),
            Op::Refund => a.release(s, now, cost),
        }
    }
}

/// Wraps an algorithm's own state into [`AnyState`].
trait WrapState: Algorithm {
    fn wrap(&self, s: Self::State) -> AnyState;
}

macro_rules! wrap {
    ($t:ty, |$s:ident| $e:expr) => {
        impl WrapState for $t {
            #[inline]
            fn wrap(&self, $s: Self::State) -> AnyState {
                $e
            }
        }
    };
}
wrap!(Gcra, |s| AnyState::Tat(s));
wrap!(Shaper, |s| AnyState::Tat(s));
wrap!(TokenBucket, |s| AnyState::Bucket(s));
wrap!(LeakyBucket, |s| AnyState::Leak(s));
wrap!(FixedWindow, |s| AnyState::Window(s));
wrap!(SlidingWindow, |s| AnyState::Counter(s));
wrap!(SlidingLog, |s| AnyState::Log(Box::new(s)));

/// One named policy: an algorithm over a quota; see the [module docs](self).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    name: Arc<str>,
    algorithm: AnyAlgorithm,
    penalise: bool,
}

fn valid_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.:/".contains(&b))
}

impl Policy {
    /// A policy named `name` running `kind` over `quota`.
    pub fn new(name: &str, kind: AlgorithmKind, quota: Quota) -> Result<Self, PolicyError> {
        if !valid_name(name) {
            return Err(PolicyError::InvalidName(name.to_owned()));
        }
        let algorithm = AnyAlgorithm::new(kind, quota).map_err(|source| PolicyError::Quota {
            name: name.to_owned(),
            source,
        })?;
        Ok(Policy {
            name: Arc::from(name),
            algorithm,
            penalise: false,
        })
    }

    /// A GCRA policy.
    pub fn gcra(name: &str, quota: Quota) -> Result<Self, PolicyError> {
        Self::new(name, AlgorithmKind::Gcra, quota)
    }

    /// A token-bucket policy.
    pub fn token_bucket(name: &str, quota: Quota) -> Result<Self, PolicyError> {
        Self::new(name, AlgorithmKind::TokenBucket, quota)
    }

    /// A leaky-bucket (meter) policy.
    pub fn leaky_bucket(name: &str, quota: Quota) -> Result<Self, PolicyError> {
        Self::new(name, AlgorithmKind::LeakyBucket, quota)
    }

    /// A shaping policy delaying requests by at most `max_delay`.
    pub fn shaper(name: &str, quota: Quota, max_delay: Duration) -> Result<Self, PolicyError> {
        Self::new(name, AlgorithmKind::Shaper { max_delay }, quota)
    }

    /// A fixed-window policy.
    pub fn fixed_window(name: &str, quota: Quota) -> Result<Self, PolicyError> {
        Self::new(name, AlgorithmKind::FixedWindow, quota)
    }

    /// A sliding-log policy.
    pub fn sliding_log(name: &str, quota: Quota) -> Result<Self, PolicyError> {
        Self::new(name, AlgorithmKind::SlidingLog, quota)
    }

    /// A sliding-window-counter policy.
    pub fn sliding_window(name: &str, quota: Quota) -> Result<Self, PolicyError> {
        Self::new(name, AlgorithmKind::SlidingWindow, quota)
    }

    /// Makes denied requests count against this policy too (see [`Algorithm::penalise`] for what each
    /// algorithm charges). Off by default: a denied request normally costs nothing.
    pub fn penalise(mut self, yes: bool) -> Self {
        self.penalise = yes;
        self
    }

    /// Whether denied requests are charged.
    pub fn penalises(&self) -> bool {
        self.penalise
    }

    /// The name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The algorithm.
    pub fn algorithm(&self) -> &AnyAlgorithm {
        &self.algorithm
    }

    /// The quota.
    pub fn quota(&self) -> &Quota {
        self.algorithm.quota()
    }
}

/// Several policies checked all-or-nothing; cheap to clone. See the [module docs](self).
#[derive(Clone, PartialEq, Eq)]
pub struct PolicySet {
    policies: Arc<[Policy]>,
}

impl fmt::Debug for PolicySet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.policies.iter()).finish()
    }
}

impl PolicySet {
    /// A set of 1 to [`MAX_POLICIES`] policies with unique names.
    pub fn new(policies: impl IntoIterator<Item = Policy>) -> Result<Self, PolicyError> {
        let policies: Vec<Policy> = policies.into_iter().collect();
        if policies.is_empty() {
            return Err(PolicyError::Empty);
        }
        if policies.len() > MAX_POLICIES {
            return Err(PolicyError::TooMany {
                got: policies.len(),
            });
        }
        for (i, p) in policies.iter().enumerate() {
            if policies[..i].iter().any(|q| q.name == p.name) {
                return Err(PolicyError::DuplicateName(p.name.to_string()));
            }
        }
        Ok(PolicySet {
            policies: policies.into(),
        })
    }

    /// The policies, in check order.
    pub fn policies(&self) -> &[Policy] {
        &self.policies
    }

    /// The policy at `index` (e.g. [`Decision::binding_index`]); the last one if out of range.
    pub fn policy(&self, index: usize) -> &Policy {
        let last = self.policies.len() - 1;
        &self.policies[index.min(last)]
    }

    /// How many policies.
    pub fn len(&self) -> usize {
        self.policies.len()
    }

    /// Always false: a set holds at least one policy.
    pub fn is_empty(&self) -> bool {
        false
    }

    fn statuses(&self, state: &PolicyStates, now: Micros, cost: u64) -> Decision {
        if let [p] = &*self.policies {
            // One policy (the common case): its status is the decision (what `combine` makes of it, and
            // a denying policy is not re-evaluated below), without an array to combine and copy.
            return Decision::single(p.algorithm.evaluate(state.get(0), now, cost));
        }
        let mut statuses = [Status::default(); MAX_POLICIES];
        let n = self.policies.len();
        for (i, p) in self.policies.iter().enumerate() {
            statuses[i] = p.algorithm.evaluate(state.get(i), now, cost);
        }
        let decision = Decision::combine(&statuses[..n]);
        if decision.is_allowed() {
            return decision;
        }
        // Nothing is charged when the set denies: a policy that would have allowed the cost reports what it
        // really has left, not what it would have left after a charge that did not happen.
        for (i, p) in self.policies.iter().enumerate() {
            if statuses[i].allowed() {
                statuses[i] = p.algorithm.evaluate(state.get(i), now, 0);
            }
        }
        Decision::combine(&statuses[..n])
    }
}

/// Per-key state of a [`PolicySet`]: one [`AnyState`] per policy, by position.
///
/// When a set is replaced at run time by one with the same policies in the same order (say, a higher
/// quota), the counters carry over; a position whose algorithm changed starts fresh.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PolicyStates(Box<[AnyState]>);

static FRESH: AnyState = AnyState::Fresh;

impl PolicyStates {
    /// The state of the policy at `i` (fresh if none).
    pub fn get(&self, i: usize) -> &AnyState {
        self.0.get(i).unwrap_or(&FRESH)
    }

    fn slots(&mut self, n: usize) -> &mut [AnyState] {
        if self.0.len() < n {
            let mut v = std::mem::take(&mut self.0).into_vec();
            v.resize(n, AnyState::Fresh);
            self.0 = v.into_boxed_slice();
        }
        &mut self.0[..n]
    }

    /// The per-policy states.
    pub fn as_slice(&self) -> &[AnyState] {
        &self.0
    }

    /// Builds from per-policy states (for stores that persist them).
    pub fn from_states(states: Vec<AnyState>) -> Self {
        PolicyStates(states.into_boxed_slice())
    }
}

impl Rule for PolicySet {
    type State = PolicyStates;

    fn check(&self, state: &mut PolicyStates, now: Micros, cost: u64) -> Decision {
        let decision = self.statuses(state, now, cost);
        let n = self.policies.len();
        if decision.is_allowed() {
            if cost > 0 {
                for (p, s) in self.policies.iter().zip(state.slots(n)) {
                    p.algorithm.commit(s, now, cost);
                }
            }
        } else if decision.outcome() == crate::Outcome::Limited
            && self.policies.iter().any(|p| p.penalise)
        {
            for (p, s) in self.policies.iter().zip(state.slots(n)) {
                if p.penalise {
                    p.algorithm.penalise(s, now, cost);
                }
            }
            // Report the state the penalty left: a retry computed before it would send an obedient client
            // back too early, to be denied (and penalised) again, forever.
            return self.statuses(state, now, cost);
        }
        decision
    }

    fn peek(&self, state: &PolicyStates, now: Micros, cost: u64) -> Decision {
        self.statuses(state, now, cost)
    }

    fn refund(&self, state: &mut PolicyStates, now: Micros, cost: u64) {
        let n = self.policies.len();
        for (p, s) in self.policies.iter().zip(state.slots(n)) {
            p.algorithm.refund(s, now, cost);
        }
    }

    fn idle_at(&self, state: &PolicyStates) -> Micros {
        self.policies
            .iter()
            .enumerate()
            .map(|(i, p)| p.algorithm.idle_at(state.get(i)))
            .max()
            .unwrap_or(0)
    }
}
