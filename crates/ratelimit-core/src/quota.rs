//! Quotas: how much, over what period, with what burst.
//!
//! A quota is named as a *rate* — `Quota::per_second(100)` means one hundred per second — so nobody mistakes
//! "per second" for "an interval in seconds" (the `tower_governor` `per_second(n)` footgun, which means one
//! every `n` seconds). Every quota is validated when built; the error says what to change.
//!
//! ```
//! use std::time::Duration;
//! use ratelimit_core::{Quota, QuotaError};
//!
//! let q = Quota::per_minute(600).burst(20).build()?;
//! assert_eq!(q.limit(), 600);
//! assert_eq!(q.period(), Duration::from_secs(60));
//! assert_eq!(q.burst(), 20);
//! assert_eq!(q.emission_interval_micros(), 100_000); // one every 100 ms
//!
//! assert_eq!(Quota::per_second(0).build(), Err(QuotaError::ZeroLimit));
//! # Ok::<(), QuotaError>(())
//! ```
//!
//! # What "burst" means
//!
//! `limit` and `period` give the sustained rate. `burst` (default: equal to `limit`) is how many units the
//! algorithm lets through *at once* after a quiet spell. Its meaning differs per algorithm, which is where
//! most rate-limiting confusion comes from (the GCRA "burst is not a window cap" complaints of redis-cell and
//! redis_rate):
//!
//! * **GCRA, token bucket, leaky bucket (meter)**: `burst` is the capacity. With `per_second(10).burst(20)`,
//!   an idle client can send 20 at once; after that one more every 100 ms. Over any span `t` at most
//!   `burst + rate × t` pass — so *per_second(10)* with the default burst lets 10 through at once and then
//!   10 more during the following second: **20 in the first second, not 10**. If you want "never more than
//!   N in any window", use a window algorithm.
//! * **Leaky bucket (shaper)**: `burst` requests start without delay; later ones are *delayed* so they leave
//!   one per emission interval, up to `max_delay`.
//! * **Fixed window, sliding log, sliding window counter**: the window holds `limit` units and there is no
//!   separate burst: building one of these with a `burst` other than `limit` is an error.

use std::time::Duration;

use crate::clock::{duration_to_micros, Micros};

/// The largest span, in microseconds, that any quota may cover: `period`, and `burst × emission interval`.
///
/// 2^50 µs is about 35 years. The bound keeps every intermediate value (a timestamp since the Unix epoch plus
/// such a span) below 2^53, where the Redis store's Lua doubles are still exact integers.
pub const MAX_SPAN_MICROS: Micros = 1 << 50;

/// Why a quota (or a policy built on one) was rejected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum QuotaError {
    /// The limit was zero.
    #[error("quota limit is 0: a quota must allow at least 1 unit per period (to block everything, reject the request before the limiter)")]
    ZeroLimit,
    /// The period was zero.
    #[error(
        "quota period is 0: give a period of at least 1 microsecond, e.g. Quota::per_second(n)"
    )]
    ZeroPeriod,
    /// The burst was zero.
    #[error("quota burst is 0: burst is how many units pass at once and must be at least 1 (leave it unset to use the limit)")]
    ZeroBurst,
    /// More than one unit per microsecond.
    #[error("quota of {limit} per {period_micros} µs is finer than 1 µs per unit: lower the limit or lengthen the period (at most 1,000,000 per second)")]
    TooFast {
        /// The requested limit.
        limit: u64,
        /// The requested period in µs.
        period_micros: u64,
    },
    /// The period, or the span the burst covers, is too long for exact integer arithmetic.
    #[error("quota spans {span_micros} µs (period, or burst × interval), more than the maximum of 2^50 µs (about 35 years): shorten the period or lower the burst")]
    TooLong {
        /// The offending span.
        span_micros: u64,
    },
    /// A window algorithm was given a burst different from its limit.
    #[error("{algorithm} has no separate burst (the window holds `limit` units): remove .burst({burst}) or use GCRA / token bucket")]
    BurstNotSupported {
        /// The algorithm's name.
        algorithm: &'static str,
        /// The burst that was given.
        burst: u64,
    },
    /// An exact-ratio algorithm multiplies `limit × period`; the product would lose precision.
    #[error("{algorithm} computes limit × period exactly, and {limit} × {period_micros} µs exceeds 2^53: use a shorter period with a proportionally smaller limit, or GCRA")]
    ProductTooLarge {
        /// The algorithm's name.
        algorithm: &'static str,
        /// The limit.
        limit: u64,
        /// The period in µs.
        period_micros: u64,
    },
}

/// A validated quota: `limit` units per `period`, with a `burst`.
///
/// Build one with [`Quota::per_second`], [`Quota::per_minute`], [`Quota::per_hour`], [`Quota::per_day`] or
/// [`Quota::new`], optionally [`QuotaBuilder::burst`], then [`QuotaBuilder::build`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Quota {
    limit: u64,
    period: Micros,
    burst: u64,
    interval: Micros,
}

/// A quota not yet validated; see [`Quota`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use = "a QuotaBuilder does nothing until .build() is called"]
pub struct QuotaBuilder {
    limit: u64,
    period: Micros,
    burst: Option<u64>,
}

impl Quota {
    /// `limit` units per `period`.
    // Returns a builder, not a `Quota`: validation happens once, in `build`, where the error can be typed.
    #[allow(clippy::new_ret_no_self)]
    pub fn new(limit: u64, period: Duration) -> QuotaBuilder {
        QuotaBuilder {
            limit,
            period: duration_to_micros(period),
            burst: None,
        }
    }

    /// `limit` units per second.
    pub fn per_second(limit: u64) -> QuotaBuilder {
        Self::new(limit, Duration::from_secs(1))
    }

    /// `limit` units per minute.
    pub fn per_minute(limit: u64) -> QuotaBuilder {
        Self::new(limit, Duration::from_secs(60))
    }

    /// `limit` units per hour.
    pub fn per_hour(limit: u64) -> QuotaBuilder {
        Self::new(limit, Duration::from_secs(3600))
    }

    /// `limit` units per day (86,400 s).
    pub fn per_day(limit: u64) -> QuotaBuilder {
        Self::new(limit, Duration::from_secs(86_400))
    }

    /// Units per period.
    #[inline]
    pub fn limit(&self) -> u64 {
        self.limit
    }

    /// The period.
    #[inline]
    pub fn period(&self) -> Duration {
        Duration::from_micros(self.period)
    }

    /// The period in microseconds.
    #[inline]
    pub fn period_micros(&self) -> Micros {
        self.period
    }

    /// Units that may pass at once after a quiet spell (see the module docs for each algorithm's reading).
    #[inline]
    pub fn burst(&self) -> u64 {
        self.burst
    }

    /// Whether a burst other than the limit was given.
    #[inline]
    pub fn has_custom_burst(&self) -> bool {
        self.burst != self.limit
    }

    /// The emission interval `T = ⌈period / limit⌉` in microseconds: the sustained spacing between units.
    ///
    /// Rounded *up*, so a limiter never exceeds the stated rate; when `period` is not a multiple of `limit`
    /// µs, the sustained rate is lower by less than one microsecond per unit (e.g. `per_second(3)` spaces
    /// units 333,334 µs apart).
    #[inline]
    pub fn emission_interval_micros(&self) -> Micros {
        self.interval
    }
}

impl QuotaBuilder {
    /// Sets the burst (see [`Quota`]'s module docs for what it means per algorithm). Defaults to the limit.
    ///
    /// The burst is what a client can spend at once, so it is what rate-limit headers advertise as the
    /// capacity, with the time the limit's rate takes to refill it as the window: `per_minute(100)` with
    /// `burst(5)` is advertised by the tower layer as `q=5;w=3` (5 at once, refilled at 100 a minute, that
    /// is 5 every 3 seconds), and `burst(200)` as `q=200;w=120`. The sustained rate `q / w` is the one you
    /// configured; only its presentation changes, so that the remaining count never exceeds `q`.
    pub fn burst(mut self, burst: u64) -> Self {
        self.burst = Some(burst);
        self
    }

    /// Validates the quota.
    pub fn build(self) -> Result<Quota, QuotaError> {
        if self.limit == 0 {
            return Err(QuotaError::ZeroLimit);
        }
        if self.period == 0 {
            return Err(QuotaError::ZeroPeriod);
        }
        let burst = self.burst.unwrap_or(self.limit);
        if burst == 0 {
            return Err(QuotaError::ZeroBurst);
        }
        if self.limit > self.period {
            return Err(QuotaError::TooFast {
                limit: self.limit,
                period_micros: self.period,
            });
        }
        if self.period > MAX_SPAN_MICROS {
            return Err(QuotaError::TooLong {
                span_micros: self.period,
            });
        }
        let interval = self.period.div_ceil(self.limit);
        let span = burst.saturating_mul(interval);
        if span > MAX_SPAN_MICROS {
            return Err(QuotaError::TooLong { span_micros: span });
        }
        Ok(Quota {
            limit: self.limit,
            period: self.period,
            burst,
            interval,
        })
    }
}

impl TryFrom<QuotaBuilder> for Quota {
    type Error = QuotaError;
    fn try_from(b: QuotaBuilder) -> Result<Quota, QuotaError> {
        b.build()
    }
}

/// The largest integer a Lua double (and so the Redis store) represents exactly.
pub(crate) const MAX_EXACT: u64 = (1 << 53) - 1;

pub(crate) fn check_product(algorithm: &'static str, q: &Quota) -> Result<(), QuotaError> {
    match q.limit.checked_mul(q.period) {
        Some(p) if p <= MAX_EXACT => Ok(()),
        _ => Err(QuotaError::ProductTooLarge {
            algorithm,
            limit: q.limit,
            period_micros: q.period,
        }),
    }
}

pub(crate) fn check_no_burst(algorithm: &'static str, q: &Quota) -> Result<(), QuotaError> {
    if q.has_custom_burst() {
        Err(QuotaError::BurstNotSupported {
            algorithm,
            burst: q.burst,
        })
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_are_rates() {
        let q = Quota::per_second(100).build().unwrap();
        assert_eq!(q.emission_interval_micros(), 10_000);
        assert_eq!(q.burst(), 100);
        let q = Quota::per_hour(100).build().unwrap();
        assert_eq!(q.emission_interval_micros(), 36_000_000);
        let q = Quota::per_day(1_000_000).build().unwrap();
        assert_eq!(q.emission_interval_micros(), 86_400);
    }

    #[test]
    fn interval_rounds_up() {
        let q = Quota::per_second(3).build().unwrap();
        assert_eq!(q.emission_interval_micros(), 333_334);
    }

    #[test]
    fn invalid_quotas_say_what_to_change() {
        assert_eq!(Quota::per_second(0).build(), Err(QuotaError::ZeroLimit));
        assert_eq!(
            Quota::new(1, Duration::ZERO).build(),
            Err(QuotaError::ZeroPeriod)
        );
        assert_eq!(
            Quota::per_second(1).burst(0).build(),
            Err(QuotaError::ZeroBurst)
        );
        let e = Quota::per_second(2_000_000).build().unwrap_err();
        assert!(matches!(e, QuotaError::TooFast { .. }));
        assert!(e.to_string().contains("lower the limit"));
        let e = Quota::new(1, Duration::from_secs(40 * 365 * 86_400))
            .build()
            .unwrap_err();
        assert!(matches!(e, QuotaError::TooLong { .. }));
        let e = Quota::per_day(1).burst(u64::MAX).build().unwrap_err();
        assert!(matches!(e, QuotaError::TooLong { .. }));
    }
}
