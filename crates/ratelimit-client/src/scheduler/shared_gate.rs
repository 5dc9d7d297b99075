//! The second gate of a limiter with a [`SharedBudget`](crate::shared::SharedBudget): after this
//! process's scheduler admits a request, the shared state in Redis must admit it too; and what the
//! response says goes back to it.

use ratelimit_core::Micros;
use sha2::{Digest, Sha256};

use super::state::{counter_key_of, Grant};
use super::{Limiter, Permit, SHARED};
use crate::error::Error;
use crate::parse::micros;
use crate::profile::{Observation, Profile, Scope};
use crate::shared::{Ask, Gate, Named, Report, Timing};

/// A credential's digest that every process sharing `namespace` computes alike (the per-limiter random
/// seed would not), and that says nothing about the credential without it.
pub(super) fn stable_digest(namespace: &str, credential: Option<&[u8]>) -> u64 {
    let Some(v) = credential else { return 0 };
    let mut h = Sha256::new();
    h.update(namespace.as_bytes());
    h.update([0]);
    h.update(v);
    let d = h.finalize();
    let mut first = [0u8; 8];
    first.copy_from_slice(&d[..8]);
    u64::from_be_bytes(first) | 1
}

/// Where a request stands with the shared state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SharedStep {
    /// Admitted: send it.
    Admitted,
    /// Name the request body's shape and ask again.
    NeedShape,
}

impl<P: Profile> Limiter<P> {
    /// Waits until the shared state admits `permit`'s request too (within the request's deadline), and
    /// attaches the reservation to the permit. A no-op without a shared budget.
    ///
    /// On a route whose sub-limits hold some body shapes, the shared state needs the request's `shape`
    /// (its body's fingerprint): without one, this returns [`SharedStep::NeedShape`], and the caller
    /// reads the body (outside this future, which so holds no borrow of it) and asks again.
    pub(crate) async fn admit_shared(
        &self,
        permit: &mut Permit<P>,
        t: &super::Ticket,
        shape: Option<u64>,
        deadline: Option<Micros>,
    ) -> Result<SharedStep, Error> {
        let Some(budget) = &self.inner.shared else {
            return Ok(SharedStep::Admitted);
        };
        let cfg = &self.inner.micros;
        let mut ask = Ask {
            token: t.token,
            route_key: &t.route_key,
            global_limit: match cfg.global_limit {
                Some(n) if !t.global_exempt => n,
                _ => 0,
            },
            global_window: cfg.global_span(),
            invalid_stop: cfg.invalid.stop,
            invalid_window: cfg.invalid_window(),
            shape: shape.or((t.fingerprint != 0).then_some(t.fingerprint)),
            // The call's arrival order, which its retries keep (never 0: `| 1` on a shifted count).
            waiter: (t.seq << 1) | 1,
            waited: 0,
        };
        let start = self.now();
        loop {
            ask.waited = self.now().saturating_sub(start);
            match budget.reserve(ask).await {
                Gate::Admit(lease) => {
                    permit.shared_admitted(lease, start, self.now());
                    return Ok(SharedStep::Admitted);
                }
                Gate::Wait(wait) => {
                    let until = self.now().saturating_add(wait);
                    if deadline.is_some_and(|d| until > d) {
                        return Err(self.would_wait(t, SHARED, until.saturating_sub(start)));
                    }
                    metrics::counter!("ratelimit_client_shared_waits_total").increment(1);
                    tokio::time::sleep(micros(wait)).await;
                }
                Gate::Banned(wait) => {
                    return Err(Error::Banned {
                        retry_in: micros(wait),
                    })
                }
                Gate::Stopped(count) => {
                    return Err(Error::InvalidBudget {
                        count: usize::try_from(count).unwrap_or(usize::MAX),
                    })
                }
                Gate::NeedShape if ask.shape.is_none() => return Ok(SharedStep::NeedShape),
                // The script asks only when no shape was named: asked again, the reply is not believed.
                Gate::NeedShape => return Err(self.would_wait(t, SHARED, 0)),
            }
        }
    }
}

/// What a response tells the shared state, in its terms: the counter named as this process's scheduler
/// names it when shared by hash ([`counter_key_of`]), the most restrictive of the limits the response
/// describes, and the locks it calls for.
pub(super) fn report(
    grant: &Grant,
    obs: &Observation,
    (ok, shape): (bool, u64),
    cfg: &super::config::Config,
    now: Micros,
) -> Report {
    let mut r = Report {
        invalid: obs.invalid,
        invalid_window: cfg.invalid_window(),
        invalid_keep: cfg.invalid.stop,
        timing: Timing {
            rtt: now.saturating_sub(grant.sent_at),
            answered: Some(std::time::Instant::now()),
            percent: cfg.latency_compensation,
            margin: cfg.reset_margin,
        },
        ..Report::default()
    };
    let tightest = obs.buckets.iter().min_by_key(|b| b.remaining);
    if let Some(b) = tightest {
        let name = match &b.id {
            Some(id) => counter_key_of(grant.token, '#', id, grant.major()),
            None => {
                let unnamed = format!("{}{}", super::names::UNNAMED_LIMIT, grant.template());
                counter_key_of(grant.token, '#', &unnamed, grant.major())
            }
        };
        r.named = Named::Counter(name);
        r.limit = b.limit;
        r.remaining = b.remaining;
        r.reset_after = b.reset_after;
    } else if ok && obs.limited.is_none() && obs.malformed.is_none() {
        r.named = Named::Nothing;
    }
    if let Some(l) = obs.limited {
        match l.scope {
            Scope::Global => r.global_lock = l.retry_after,
            // Others contend the resource: not counted against this caller, but every process waits.
            Scope::Shared => r.hold = l.retry_after,
            // A sub-limit (a 429 with room left in every bucket) holds one shape of request, not the
            // bucket: every process holds that shape; how many a sub-window takes each learns alone.
            Scope::User if super::state::is_sublimit(obs, l) => {
                r.shape = shape;
                r.shape_wait = l.retry_after;
            }
            Scope::User if tightest.is_none_or(|b| b.remaining == 0) => r.block = l.retry_after,
            Scope::User => {}
        }
    }
    if obs.banned {
        r.ban = cfg.ban_backoff;
    }
    r
}
