//! What a reply from Redis may say: every value read back is checked against what the policy that asked
//! can produce, and anything else is a [`StoreError::Protocol`] for that call, never a decision.
//!
//! The script can only answer within these bounds: it keeps every value below 2^53, and it reads any state
//! beyond what a policy can hold (written under a larger quota, or on a server clock that stepped back) as
//! the policy's fullest state. So a reply out of bounds comes from something else answering — another
//! version of the script under the same name, a proxy, a foreign server — and believing it would let one
//! bad reply deny an identity for as long as it says (a retry of 2^63 µs is 292,000 years).
//!
//! The checks are a few integer comparisons per policy, with no allocation unless a check fails.

use std::fmt::Display;

use redis::Value;

use crate::clock::Micros;
use crate::decision::Status;
use crate::policy::{AnyAlgorithm, Policy};
use crate::quota::{MAX_EXACT, MAX_SPAN_MICROS};
use crate::store::StoreError;

/// The longest wait any valid policy can produce (see [`Bounds::of`]): no quota spans more than
/// [`MAX_SPAN_MICROS`], and no wait is longer than two such spans.
#[cfg(test)]
pub(crate) const LONGEST_WAIT_OF_ANY_POLICY: Micros = 2 * MAX_SPAN_MICROS;

/// What one policy's status can hold, whatever its state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Bounds {
    /// The policy's capacity: a status's `limit` is exactly this, its `remaining` at most this.
    pub(crate) capacity: u64,
    /// The longest `reset` or `retry` (µs) the policy can produce, penalties included (a policy that does
    /// not penalise now may have penalised when its state was written).
    pub(crate) max_wait: Micros,
    /// The longest `delay` (µs): the shaper's max delay, 0 for every other algorithm.
    pub(crate) max_delay: Micros,
    /// The largest cost the policy can ever admit; a larger one is always `NEVER`.
    pub(crate) max_cost: u64,
}

impl Bounds {
    /// The bounds of `algorithm`, from its quota. With `T` the emission interval and `tau = burst × T`
    /// (both at most 2^50 µs, so every sum below fits):
    ///
    /// * GCRA: a penalty holds the arrival time up to `2 tau` ahead (reset); a denied cost `c ≤ burst`
    ///   then waits `ahead + c T − tau ≤ 2 tau`.
    /// * Shaper: no penalty; it books at most `tau + max_delay` ahead, and the wait is at most that.
    /// * Token bucket: a penalty leaves at most `2 × burst` tokens missing, refilled in `2 tau`.
    /// * Leaky bucket: a penalty fills at most `2 × burst × period`, drained at `limit` per µs-period:
    ///   `⌈2 burst period / limit⌉`.
    /// * Fixed window, sliding log: the end of the current window, at most one period.
    /// * Sliding window counter: the current window's units leave the estimate at most two periods on.
    pub(crate) fn of(algorithm: &AnyAlgorithm) -> Self {
        let q = algorithm.quota();
        let (burst, period) = (q.burst(), q.period_micros());
        let tau = burst * q.emission_interval_micros();
        let (max_wait, max_delay) = match algorithm {
            AnyAlgorithm::Gcra(_) | AnyAlgorithm::TokenBucket(_) => (2 * tau, 0),
            AnyAlgorithm::Shaper(s) => {
                let max_delay =
                    crate::clock::duration_to_micros(s.max_delay()).min(MAX_SPAN_MICROS);
                (tau + max_delay, max_delay)
            }
            // burst × period < 2^53 (checked when the policy is built), so twice it fits.
            AnyAlgorithm::LeakyBucket(_) => ((2 * burst * period).div_ceil(q.limit()), 0),
            AnyAlgorithm::FixedWindow(_) | AnyAlgorithm::SlidingLog(_) => (period, 0),
            AnyAlgorithm::SlidingWindow(_) => (2 * period, 0),
        };
        let max_cost = match algorithm {
            // The shaper admits a cost while cost × T ≤ tau + max_delay.
            AnyAlgorithm::Shaper(_) => (tau + max_delay) / q.emission_interval_micros(),
            _ => burst,
        };
        Bounds {
            capacity: burst,
            max_wait,
            max_delay,
            max_cost,
        }
    }
}

/// The longest wait any policy of `policies` can produce: how long a denial of the set can last.
pub(crate) fn max_wait<'a>(policies: impl IntoIterator<Item = &'a Policy>) -> Micros {
    policies
        .into_iter()
        .map(|p| Bounds::of(p.algorithm()).max_wait)
        .max()
        .unwrap_or(0)
}

/// Checks the time a reply carries: an integer of µs below 2^53, and positive on the server's clock (a
/// client clock may legitimately start at 0, e.g. a manual clock in tests).
pub(crate) fn check_now(now: Micros, server_time: bool) -> Result<Micros, StoreError> {
    if now > MAX_EXACT || (server_time && now == 0) {
        return Err(StoreError::Protocol(format!(
            "Redis answered the time {now} µs, which no clock gives (expected 1 ..= 2^53 − 1 µs since the Unix epoch){FOREIGN}"
        )));
    }
    Ok(now)
}

/// Checks one policy's status for `cost` against what the policy can produce.
pub(crate) fn check_status(policy: &Policy, s: &Status, cost: u64) -> Result<(), StoreError> {
    let b = Bounds::of(policy.algorithm());
    if s.limit != b.capacity {
        return Err(out_of_range(
            policy,
            format_args!("limit {}, not its capacity {}", s.limit, b.capacity),
        ));
    }
    if s.remaining > b.capacity {
        return Err(out_of_range(
            policy,
            format_args!(
                "remaining {} above its capacity {}",
                s.remaining, b.capacity
            ),
        ));
    }
    if s.reset > b.max_wait {
        return Err(out_of_range(
            policy,
            format_args!(
                "reset {} µs beyond the longest wait it can produce, {} µs",
                s.reset, b.max_wait
            ),
        ));
    }
    let never = cost > b.max_cost;
    if s.never() != never {
        return Err(out_of_range(
            policy,
            format_args!(
                "{} for cost {cost} (it admits at most {} at once)",
                if never { "no never" } else { "never" },
                b.max_cost
            ),
        ));
    }
    if !s.never() && s.retry > b.max_wait {
        return Err(out_of_range(
            policy,
            format_args!(
                "retry {} µs beyond the longest wait it can produce, {} µs",
                s.retry, b.max_wait
            ),
        ));
    }
    if cost == 0 && s.retry != 0 {
        return Err(out_of_range(
            policy,
            format_args!("a denial of cost 0 (a query is always allowed)"),
        ));
    }
    if s.delay > b.max_delay || (s.delay > 0 && s.retry != 0) {
        return Err(out_of_range(
            policy,
            format_args!(
                "delay {} µs with retry {} (it delays only what it admits, by at most {} µs)",
                s.delay, s.retry, b.max_delay
            ),
        ));
    }
    Ok(())
}

/// The error for a value `policy` cannot produce.
pub(crate) fn out_of_range(policy: &Policy, what: impl Display) -> StoreError {
    let q = policy.quota();
    StoreError::Protocol(format!(
        "Redis answered {what} for policy `{}` ({}, {} per {} µs, burst {}), which it cannot produce{FOREIGN}",
        policy.name(),
        policy.algorithm().kind().name(),
        q.limit(),
        q.period_micros(),
        q.burst(),
    ))
}

/// The usual suspects, for every error here.
const FOREIGN: &str = "; is another version of the script loaded under the same name, or something other than this crate answering on this connection?";

/// A short description of a value read from Redis, for an error message: never longer than a line,
/// whatever the value's size.
pub(crate) fn describe(v: &Value) -> String {
    /// Enough of a string to recognise it.
    const SHOWN_BYTES: usize = 64;
    match v {
        Value::Int(i) => format!("the integer {i}"),
        Value::Array(items) => format!("an array of {} values", items.len()),
        Value::BulkString(b) => format!(
            "a string of {} bytes ({:?}{})",
            b.len(),
            String::from_utf8_lossy(&b[..b.len().min(SHOWN_BYTES)]),
            if b.len() > SHOWN_BYTES { "…" } else { "" }
        ),
        Value::SimpleString(s) => format!(
            "a status of {} bytes ({:?})",
            s.len(),
            s.chars().take(SHOWN_BYTES).collect::<String>()
        ),
        Value::Nil => "nil".to_owned(),
        Value::Okay => "OK".to_owned(),
        Value::Double(d) => format!("the double {d}"),
        Value::Boolean(b) => format!("the boolean {b}"),
        Value::Map(m) => format!("a map of {} entries", m.len()),
        Value::Set(s) => format!("a set of {} values", s.len()),
        Value::ServerError(e) => format!("the error {:?}", e.code()),
        _ => "a value of a type the script never answers".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::Quota;

    fn policies() -> Vec<Policy> {
        let q = Quota::per_second(10).burst(20).build().unwrap();
        let w = Quota::per_second(10).build().unwrap();
        vec![
            Policy::gcra("g", q).unwrap(),
            Policy::shaper("s", q, Duration::from_secs(3)).unwrap(),
            Policy::token_bucket("t", q).unwrap(),
            Policy::leaky_bucket("l", q).unwrap(),
            Policy::fixed_window("f", w).unwrap(),
            Policy::sliding_log("o", w).unwrap(),
            Policy::sliding_window("w", w).unwrap(),
        ]
    }

    #[test]
    fn bounds_follow_the_quota() {
        // T = 100 ms, burst 20: tau = 2 s.
        let waits: Vec<_> = policies()
            .iter()
            .map(|p| Bounds::of(p.algorithm()).max_wait)
            .collect();
        assert_eq!(
            waits,
            [4_000_000, 5_000_000, 4_000_000, 4_000_000, 1_000_000, 1_000_000, 2_000_000]
        );
        let s = Bounds::of(policies()[1].algorithm());
        assert_eq!((s.max_delay, s.max_cost, s.capacity), (3_000_000, 50, 20));
        assert_eq!(max_wait(&policies()), 5_000_000);
    }

    #[test]
    fn the_incident_reply_is_out_of_range() {
        let p = &policies()[0];
        let s = Status {
            limit: 20,
            remaining: 0,
            reset: i64::MAX as u64,
            retry: i64::MAX as u64,
            delay: 0,
        };
        let e = check_status(p, &s, 1).unwrap_err().to_string();
        assert!(
            e.contains("reset 9223372036854775807 µs") && e.contains("`g`"),
            "{e}"
        );
    }

    #[test]
    fn a_long_value_is_described_in_a_line() {
        let d = describe(&Value::BulkString(vec![b'x'; 1 << 20]));
        assert!(d.len() < 200, "{d}");
    }
}
