//! What the draft says a policy and a decision advertise: the numbers (`q`, `w`, `r`, `t`, the binding
//! policy's trio, `Retry-After`) and the revisions on offer, independent of how bytes are written.

use ratelimit_core::{Decision, Micros, Status};

/// How `X-RateLimit-Reset` is written in legacy mode (implementations in the wild disagree).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LegacyReset {
    /// Delta seconds until reset, rounded up (`X-RateLimit-Reset: 30`).
    DeltaSeconds,
    /// Unix time of the reset in seconds, rounded up (GitHub style).
    UnixEpoch,
}

/// Which revision of the IETF draft's fields to send (see the [module docs](super) for the default).
///
/// The draft changed shape twice before its current form, and clients written against older revisions
/// are in use (express-rate-limit's `standardHeaders: 'draft-6'` and `'draft-7'` modes emit these), so
/// the two earlier shapes are offered as opt-ins. Both describe one policy with numbers only — the
/// binding one, closest to exhaustion — plus every policy as an integer quota with its window:
///
/// ```text
/// Draft06:  RateLimit-Limit: 100        RateLimit-Remaining: 42      RateLimit-Reset: 35
///           RateLimit-Policy: 100;w=60, 5000;w=86400
/// Draft07:  RateLimit: limit=100, remaining=42, reset=35
///           RateLimit-Policy: 100;w=60, 5000;w=86400
/// ```
///
/// `limit` is the policy's capacity (the `q` of the current revision), `reset` delta seconds rounded up
/// (for a limited request, until it would be admitted, so never earlier than `Retry-After`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum IetfRevision {
    /// draft-ietf-httpapi-ratelimit-headers-11: named policies, `RateLimit: "burst";r=42;t=35` (the
    /// default).
    #[default]
    Draft11,
    /// draft-07 (2023): one Dictionary field, `RateLimit: limit=…, remaining=…, reset=…`.
    Draft07,
    /// draft-04 to -06 (2022): three Integer fields, `RateLimit-Limit`, `RateLimit-Remaining` and
    /// `RateLimit-Reset`.
    Draft06,
}

pub(super) const MICROS_PER_SEC: u64 = 1_000_000;

/// Microseconds to whole seconds, rounded up.
#[inline]
pub fn ceil_secs(us: Micros) -> u64 {
    us.div_ceil(MICROS_PER_SEC)
}

/// The `Retry-After` seconds for a limited decision: the binding policy's retry, rounded up, at least 1.
/// `None` when allowed, or when the request can never fit (no wait helps).
#[inline]
pub fn retry_after_secs(decision: &Decision) -> Option<u64> {
    decision
        .retry_after()
        .map(|_| ceil_secs(decision.binding().retry).max(1))
}

/// `t` for one policy; see the [module docs](super).
#[inline]
pub(super) fn t_of(s: &Status) -> Option<u64> {
    if s.never() {
        None
    } else if !s.allowed() {
        Some(ceil_secs(s.retry).max(1))
    } else {
        Some(ceil_secs(s.reset))
    }
}

/// RFC 9651 Integers are at most 15 digits; larger values (a limit of 10^15) are clamped.
pub(super) const SF_INT_MAX: u64 = 999_999_999_999_999;

/// A policy's `q` and `w`: its capacity (the burst: what `r` counts down from, and what `X-RateLimit-Limit`
/// reports) and the seconds the limit's sustained rate takes to grant that much (rounded up, at least 1).
/// For windows and for buckets whose burst is the limit this is the quota as written (`q = limit`,
/// `w = period`); a GCRA of 100 an hour with bursts of 200 reads `q=200;w=7200`, so `r` never exceeds `q`
/// and `q / w` is still the sustained rate.
pub(super) fn quota_window(quota: &ratelimit_core::Quota) -> (u64, u64) {
    let burst = quota.burst();
    let micros =
        u128::from(quota.period_micros()) * u128::from(burst) / u128::from(quota.limit().max(1));
    let w = ceil_secs(u64::try_from(micros).unwrap_or(u64::MAX)).max(1);
    (burst, w)
}

/// The binding policy's limit, remaining units and reset (delta seconds, rounded up; for a limited
/// request, until it would be admitted), as draft-06/-07 and the `X-RateLimit-*` fields report them.
pub(crate) fn binding_numbers(decision: &Decision) -> (u64, u64, u64) {
    let s = decision.binding();
    let reset = ceil_secs(if s.allowed() || s.never() {
        s.reset
    } else {
        s.retry.max(s.reset)
    });
    (
        s.limit.min(SF_INT_MAX),
        s.remaining.min(SF_INT_MAX),
        reset.min(SF_INT_MAX),
    )
}
