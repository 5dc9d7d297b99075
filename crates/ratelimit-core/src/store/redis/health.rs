//! How one call's outcome reaches the breaker, the counters and the logs.
//!
//! State transitions are logged once each (breaker opened: WARN; first half-open probe of an outage and
//! breaker closed: INFO); repeats inside a state — refused calls, failed probes, each request of a bad key —
//! are counted in `metrics` and [`RedisStats`](super::RedisStats), and each kind of failure is logged once
//! (then at most once a minute, with the count since; see [`log_once`](crate::log_once)).

use std::sync::atomic::Ordering;

use super::breaker::{BreakerPermit, Transition};
use super::failure::{Failure, Kind};
use super::keys::{self, IdentityHash};
use super::Inner;
use crate::store::StoreError;

/// The log slot of "Redis lost the rate-limit code; reloading" (after the failure kinds' slots).
pub(super) const RELOAD_LOG_SLOT: usize = super::failure::KINDS;

/// One slot per failure kind, and the reload's.
pub(super) const LOG_SLOTS: usize = RELOAD_LOG_SLOT + 1;

/// Whose call an outcome is: one identity's, or a whole batch's.
#[derive(Debug, Clone, Copy)]
pub(super) enum Caller<'a> {
    Identity(&'a IdentityHash),
    Batch(usize),
}

impl Inner {
    /// Records a call's outcome: tells the breaker (through `permit`; `None` for a caller whose batch
    /// already told it how Redis answered), counts and logs a failure, and turns it into the caller's
    /// error.
    pub(super) fn settle<T>(
        &self,
        permit: Option<BreakerPermit<'_>>,
        result: Result<T, Failure>,
        caller: Caller<'_>,
    ) -> Result<T, StoreError> {
        let failure = match result {
            Ok(v) => {
                if let Some(p) = permit {
                    self.transition(p.succeeded(), None);
                }
                return Ok(v);
            }
            Err(f) => f,
        };
        let kind = failure.kind();
        self.count_failure(kind);
        let identity = match caller {
            Caller::Identity(hash) => Some(hash),
            Caller::Batch(_) => None,
        };
        let feeds_breaker = match kind {
            Kind::Protocol => self.streak.counts(identity),
            k => k.is_server_wide(),
        };
        let transition = if kind == Kind::KeyState {
            // Redis answered: for the breaker, a success.
            permit.map(BreakerPermit::succeeded)
        } else if feeds_breaker {
            permit
                // A caller answered in a batch holds no permit: a closed breaker counts it anyway.
                .or_else(|| self.breaker.permit().filter(|p| !p.is_probe()))
                .map(BreakerPermit::failed)
        } else {
            // A probe whose outcome says nothing about Redis as a whole is released (by dropping it).
            None
        };
        let logged = transition.is_some_and(|t| self.transition(t, Some(&failure)));
        if !logged {
            self.log_failure(kind, &failure, caller);
        }
        Err(failure.into_error(|| match caller {
            Caller::Identity(hash) => {
                let mut base = String::new();
                keys::key_base(&mut base, &self.prefix, hash);
                base.push('*');
                format!("Redis keys {base}")
            }
            Caller::Batch(n) => {
                format!("a Redis key of one of the {n} calls coalesced with this one")
            }
        }))
    }

    /// A call the open breaker kept from Redis.
    pub(super) fn refused(&self) -> StoreError {
        self.counters.refused.fetch_add(1, Ordering::Relaxed);
        metrics::counter!("ratelimit_redis_refused_total").increment(1);
        StoreError::Unavailable(
            "Redis circuit breaker is open after repeated failures; a probe will try it again after the cooldown"
                .to_owned(),
        )
    }

    /// A half-open probe goes out: counted, and logged for the first one of an outage.
    pub(super) fn probing(&self) {
        metrics::counter!("ratelimit_redis_probes_total").increment(1);
        if !self.probe_logged.swap(true, Ordering::Relaxed) {
            tracing::info!(
                "Redis circuit breaker half-open: probing Redis with one call (further probes are counted in ratelimit_redis_probes_total)"
            );
        }
    }

    /// Logs and publishes a change of the breaker's state; true when it logged something.
    fn transition(&self, t: Transition, cause: Option<&Failure>) -> bool {
        match t {
            Transition::None => false,
            Transition::Opened => {
                self.probe_logged.store(false, Ordering::Relaxed);
                metrics::gauge!("ratelimit_redis_degraded").set(1.0);
                let error = cause.map(ToString::to_string).unwrap_or_default();
                tracing::warn!(
                    %error,
                    on_failure = ?self.on_failure,
                    cooldown = ?self.breaker.cooldown(),
                    "Redis failing: circuit breaker open; calls are answered by the failure policy without asking Redis until a probe succeeds"
                );
                true
            }
            Transition::Closed => {
                metrics::gauge!("ratelimit_redis_degraded").set(0.0);
                tracing::info!(
                    "Redis answers again: circuit breaker closed; decisions come from Redis again"
                );
                true
            }
        }
    }

    fn count_failure(&self, kind: Kind) {
        self.counters.errors.fetch_add(1, Ordering::Relaxed);
        let c = &self.counters;
        match kind {
            Kind::KeyState => c.key_state_errors.fetch_add(1, Ordering::Relaxed),
            Kind::Protocol => c.protocol_errors.fetch_add(1, Ordering::Relaxed),
            _ => 0,
        };
        kind.count();
    }

    fn log_failure(&self, kind: Kind, failure: &Failure, caller: Caller<'_>) {
        let Some(unlogged) = self.logs.occurred(kind.index()) else {
            return;
        };
        let batch = match caller {
            Caller::Batch(n) => n,
            Caller::Identity(_) => 1,
        };
        match kind {
            Kind::KeyState => tracing::warn!(
                error = %failure,
                on_failure = ?self.on_failure,
                unlogged,
                "a Redis key holds data this limiter did not write: that identity's requests are answered by the failure policy (others are unaffected); delete the key, or give the limiter a dedicated key prefix or database. Repeats are counted in ratelimit_redis_errors_total{{kind=\"key_state\"}}"
            ),
            Kind::Protocol => tracing::warn!(
                error = %failure,
                on_failure = ?self.on_failure,
                unlogged,
                batch,
                "a Redis reply failed validation: that call is answered by the failure policy. Is another version of the script loaded under the same name? Repeats are counted in ratelimit_redis_errors_total{{kind=\"protocol\"}}"
            ),
            _ => tracing::warn!(
                error = %failure,
                unlogged,
                batch,
                "Redis call failed (the circuit breaker opens after repeated failures); repeats are counted in ratelimit_redis_errors_total"
            ),
        }
    }
}
