//! What a check answers.
//!
//! A [`Decision`] says whether a request may go ahead ([`Outcome::Allowed`]), must wait
//! ([`Outcome::Limited`], with a retry time), or can never go ahead because its cost exceeds the capacity of a
//! policy ([`Outcome::Never`]) — a third outcome that no amount of waiting fixes and that is never dressed up
//! as an ordinary denial with full remaining quota (the redis-cell / `rwz/redis-gcra#6` bug class).
//!
//! Beside the outcome it carries one [`Status`] per policy checked (limit, remaining, time until reset, time
//! until retry) so an HTTP layer can render every policy in `RateLimit` headers.
//!
//! ```
//! use std::time::Duration;
//! use ratelimit_core::{Gcra, Quota, Rule, Outcome};
//!
//! let rule = Gcra::new(Quota::per_second(1).build()?);
//! let mut state = Default::default();
//! assert_eq!(rule.check(&mut state, 0, 1).outcome(), Outcome::Allowed);
//! let d = rule.check(&mut state, 0, 1);
//! assert_eq!(d.outcome(), Outcome::Limited);
//! assert_eq!(d.retry_after(), Some(Duration::from_secs(1)));
//! assert_eq!(rule.check(&mut state, 0, 2).outcome(), Outcome::Never);
//! # Ok::<(), ratelimit_core::QuotaError>(())
//! ```

use std::time::Duration;

use crate::clock::Micros;

/// The most policies one check may cover (e.g. a per-second burst, a per-minute, an hourly and a daily
/// quota). Kept small and fixed so a [`Decision`] lives on the stack.
pub const MAX_POLICIES: usize = 8;

/// The verdict of a check.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Outcome {
    /// The cost was charged; go ahead (after [`Decision::delay`], for a shaping policy).
    Allowed,
    /// Not now: nothing was charged; retry after [`Decision::retry_after`].
    Limited,
    /// The cost is larger than a policy's capacity: it will never be allowed, whatever the wait.
    Never,
}

/// One policy's view of a check.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Status {
    /// The policy's capacity: the most units it admits at once (GCRA/bucket burst, window limit).
    pub limit: u64,
    /// Units still available after this check.
    pub remaining: u64,
    /// Microseconds until the policy is back to its full capacity (0 when it is full).
    pub reset: Micros,
    /// Microseconds until the same cost would be allowed: 0 when allowed, [`Status::NEVER`] when it can
    /// never be.
    pub retry: Micros,
    /// For shaping policies, microseconds the caller must wait before proceeding (0 otherwise).
    pub delay: Micros,
}

impl Status {
    /// The `retry` value that marks a cost which can never be allowed.
    pub const NEVER: Micros = u64::MAX;

    /// Whether this policy admitted the cost.
    #[inline]
    pub fn allowed(&self) -> bool {
        self.retry == 0
    }

    /// Whether this policy can never admit the cost.
    #[inline]
    pub fn never(&self) -> bool {
        self.retry == Self::NEVER
    }

    /// A status for a cost above `limit`.
    #[inline]
    pub(crate) fn never_fits(limit: u64, remaining: u64, reset: Micros) -> Self {
        Status {
            limit,
            remaining,
            reset,
            retry: Self::NEVER,
            delay: 0,
        }
    }
}

/// The answer to a check, peek or acquire; see the [module docs](self).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    outcome: Outcome,
    binding: u8,
    len: u8,
    statuses: [Status; MAX_POLICIES],
}

impl Decision {
    /// A decision over a single policy.
    #[inline]
    pub fn single(status: Status) -> Self {
        let mut statuses = [Status::default(); MAX_POLICIES];
        statuses[0] = status;
        Decision {
            outcome: outcome_of(&status),
            binding: 0,
            len: 1,
            statuses,
        }
    }

    /// Combines per-policy statuses (at most [`MAX_POLICIES`]; extra ones are ignored) into one decision:
    /// `Never` if any policy can never fit the cost, else `Limited` if any policy limited, else `Allowed`.
    /// The binding policy is the one that decides the outcome: the one that can never fit, the one with the
    /// longest retry, or — when allowed — the one with the longest delay, then the fewest remaining units
    /// relative to its limit (closest to exhaustion).
    pub fn combine(statuses: &[Status]) -> Self {
        let len = statuses.len().min(MAX_POLICIES);
        let mut all = [Status::default(); MAX_POLICIES];
        all[..len].copy_from_slice(&statuses[..len]);
        let mut binding = 0usize;
        for i in 1..len {
            if binds_more(&all[i], &all[binding]) {
                binding = i;
            }
        }
        Decision {
            outcome: if len == 0 {
                Outcome::Allowed
            } else {
                outcome_of(&all[binding])
            },
            binding: binding as u8,
            len: len as u8,
            statuses: all,
        }
    }

    /// The verdict.
    #[inline]
    pub fn outcome(&self) -> Outcome {
        self.outcome
    }

    /// Whether the request may go ahead.
    #[inline]
    pub fn is_allowed(&self) -> bool {
        self.outcome == Outcome::Allowed
    }

    /// Whether the request was limited (including [`Outcome::Never`]).
    #[inline]
    pub fn is_limited(&self) -> bool {
        self.outcome != Outcome::Allowed
    }

    /// The index (in the order checked) of the policy that decided the outcome; see [`Decision::combine`].
    #[inline]
    pub fn binding_index(&self) -> usize {
        self.binding as usize
    }

    /// The status of the binding policy.
    #[inline]
    pub fn binding(&self) -> &Status {
        &self.statuses[self.binding as usize]
    }

    /// Every policy's status, in the order checked.
    #[inline]
    pub fn statuses(&self) -> &[Status] {
        &self.statuses[..self.len as usize]
    }

    /// The binding policy's limit.
    #[inline]
    pub fn limit(&self) -> u64 {
        self.binding().limit
    }

    /// The binding policy's remaining units.
    #[inline]
    pub fn remaining(&self) -> u64 {
        self.binding().remaining
    }

    /// Time until the binding policy is full again.
    #[inline]
    pub fn reset(&self) -> Duration {
        Duration::from_micros(self.binding().reset)
    }

    /// Time to wait before retrying, when [`Outcome::Limited`]; `None` when allowed or [`Outcome::Never`].
    #[inline]
    pub fn retry_after(&self) -> Option<Duration> {
        match self.outcome {
            Outcome::Limited => Some(Duration::from_micros(self.binding().retry)),
            _ => None,
        }
    }

    /// For an allowed request under a shaping policy, how long to wait before proceeding (zero otherwise).
    #[inline]
    pub fn delay(&self) -> Duration {
        Duration::from_micros(self.delay_micros())
    }

    /// [`Decision::delay`] in microseconds.
    #[inline]
    pub fn delay_micros(&self) -> Micros {
        if self.outcome == Outcome::Allowed {
            self.statuses().iter().map(|s| s.delay).max().unwrap_or(0)
        } else {
            0
        }
    }
}

#[inline]
fn outcome_of(s: &Status) -> Outcome {
    if s.retry == 0 {
        Outcome::Allowed
    } else if s.retry == Status::NEVER {
        Outcome::Never
    } else {
        Outcome::Limited
    }
}

/// Whether `a` should be reported as binding in preference to `b`.
fn binds_more(a: &Status, b: &Status) -> bool {
    if a.retry != b.retry {
        return a.retry > b.retry;
    }
    if a.delay != b.delay {
        return a.delay > b.delay;
    }
    // Fewer remaining relative to the limit: a.remaining / a.limit < b.remaining / b.limit.
    (a.remaining as u128) * (b.limit as u128) < (b.remaining as u128) * (a.limit as u128)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn st(limit: u64, remaining: u64, retry: Micros) -> Status {
        Status {
            limit,
            remaining,
            reset: 0,
            retry,
            delay: 0,
        }
    }

    #[test]
    fn never_beats_limited_beats_allowed() {
        let d = Decision::combine(&[st(10, 5, 0), st(5, 0, 300), st(3, 3, Status::NEVER)]);
        assert_eq!(d.outcome(), Outcome::Never);
        assert_eq!(d.binding_index(), 2);
        assert_eq!(d.retry_after(), None);
        let d = Decision::combine(&[st(10, 5, 0), st(5, 0, 300), st(5, 0, 900)]);
        assert_eq!(d.outcome(), Outcome::Limited);
        assert_eq!(d.binding_index(), 2);
        assert_eq!(d.retry_after(), Some(Duration::from_micros(900)));
    }

    #[test]
    fn allowed_reports_the_policy_closest_to_exhaustion() {
        let d = Decision::combine(&[st(10, 5, 0), st(1000, 20, 0), st(100, 60, 0)]);
        assert!(d.is_allowed());
        assert_eq!(d.binding_index(), 1);
        assert_eq!(d.statuses().len(), 3);
    }
}
