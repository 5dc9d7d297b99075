//! From decisions to what the layer does with the request ([`Action`]): admit it with its headers and
//! extensions, answer 429 (or only log it, in shadow mode), or follow the store-error policy.

use std::sync::Arc;

use bytes::Bytes;
use http::header::{CACHE_CONTROL, RETRY_AFTER};
use http::{Response, StatusCode};
use ratelimit_core::{Decision, PolicySet, Status, Store, StoreError};

use super::decide::Checked;
use super::extensions::{self, Carry, NearLimit, RateLimitInfo};
use super::{Shared, StoreFailure};
use crate::headers::{self, Emit};
use crate::key::KeyBuf;
use crate::observe::{self, KeyHash};
use crate::response::{self, Rejection, NO_STORE};
use crate::tier::Entry;

/// What the layer does with a request. The rare parts are boxed: an action is moved out of the decision
/// into the response future, and at over 128 bytes each move was a `memcpy` call.
pub(crate) enum Action {
    /// Insert `Carry`'s extensions, call the inner service, add `Emit`'s headers.
    Proceed(Emit, Carry),
    /// Answer without calling the inner service.
    Respond(Box<Response<Bytes>>),
}

impl<S> Shared<S>
where
    S: Store<[u8], PolicySet> + 'static,
{
    pub(super) fn finish(
        &self,
        entry: &Entry,
        global: Option<&Entry>,
        key: &KeyBuf,
        cost: u64,
        checked: Result<Checked, StoreError>,
    ) -> Action {
        match &checked {
            Ok(c) => self.finish_parts(entry, global, key, cost, &c.primary, c.global.as_ref()),
            Err(e) => self.store_error(e, key),
        }
    }

    /// Turns the decisions (the client's, then the global cap's when it was checked) into an action.
    pub(super) fn finish_parts(
        &self,
        entry: &Entry,
        global: Option<&Entry>,
        key: &KeyBuf,
        cost: u64,
        primary_dec: &Decision,
        global_dec: Option<&Decision>,
    ) -> Action {
        let cfg = &self.cfg;
        let global_failed = global.is_some() && primary_dec.is_allowed() && global_dec.is_none();
        if !global_failed {
            self.health.answered();
        }
        // Which (set, decision) limited, if any.
        let (limited_by, limited) = match (global_dec, global) {
            (Some(g), Some(ge)) if !g.is_allowed() => (Some(ge), Some(g)),
            _ if !primary_dec.is_allowed() => (Some(entry), Some(primary_dec)),
            _ => (None, None),
        };
        // When the global cap rejected, the client's charge was refunded: report what it has again.
        let refunded_primary;
        let primary = if limited_by.is_some() && global_dec.is_some() {
            refunded_primary = refunded(primary_dec, cost);
            &refunded_primary
        } else {
            primary_dec
        };
        let primary_part: Part<'_> = (entry, primary);
        let global_part: Option<Part<'_>> = match (global_dec, global) {
            (Some(g), Some(ge)) => Some((ge, g)),
            _ => None,
        };

        match (limited_by, limited) {
            (Some(le), Some(ld)) => {
                let binding_name = le.set.policy(ld.binding_index()).name();
                if cfg.shadow {
                    observe::count!(self.meters, shadow_limited, "shadow_limited");
                    tracing::info!(
                        policy = binding_name,
                        tier = &*entry.name,
                        key = %KeyHash::of(key.as_bytes()),
                        "rate limit exceeded (shadow mode: letting the request through)"
                    );
                    let info = cfg
                        .info
                        .then(|| RateLimitInfo::of(le, ld, self.near_limit_percent()));
                    return Action::Proceed(Emit::default(), Carry { near: None, info });
                }
                observe::count!(self.meters, limited, "limited");
                metrics::counter!("ratelimit_rejections_total", "policy" => binding_name.to_owned())
                    .increment(1);
                let retry_after = headers::retry_after_secs(ld);
                tracing::info!(
                    policy = binding_name,
                    tier = &*entry.name,
                    key = %KeyHash::of(key.as_bytes()),
                    retry_after_secs = retry_after,
                    "rate limit exceeded"
                );
                let rej = Rejection {
                    decision: ld,
                    set: &le.set,
                    tier: if std::ptr::eq(le, entry) {
                        &entry.name
                    } else {
                        "global"
                    },
                    retry_after,
                };
                let mut res = match &cfg.rejection {
                    Some(f) => f(&rej),
                    None => rej.default_response(),
                };
                let h = res.headers_mut();
                if let Some(s) = retry_after {
                    h.insert(RETRY_AFTER, headers::int_value(s));
                }
                if !h.contains_key(CACHE_CONTROL) {
                    h.insert(CACHE_CONTROL, NO_STORE.clone());
                }
                Emit::render(
                    &cfg.headers,
                    entry,
                    primary_part,
                    global_part,
                    key,
                    Some((le, ld)),
                )
                .apply(h);
                Action::Respond(Box::new(res))
            }
            _ => {
                observe::count!(self.meters, allowed, "allowed");
                if tracing::enabled!(tracing::Level::DEBUG) {
                    let b = primary_dec.binding();
                    tracing::debug!(
                        tier = &*entry.name,
                        policy = entry.set.policy(primary_dec.binding_index()).name(),
                        remaining = b.remaining,
                        key = %KeyHash::of(key.as_bytes()),
                        "rate limit check passed"
                    );
                }
                let carry = self.carry(most_binding(primary_part, global_part));
                Action::Proceed(
                    Emit::render(&cfg.headers, entry, primary_part, global_part, key, None),
                    carry,
                )
            }
        }
    }

    /// The extensions an admitted request gets, from its binding (set, decision).
    #[inline]
    pub(super) fn carry(&self, (e, d): Part<'_>) -> Carry {
        let cfg = &self.cfg;
        let s = d.binding();
        let near = cfg
            .soft_limit_percent
            .filter(|&pct| extensions::near(s.remaining, s.limit, pct))
            .map(|_| {
                Box::new(NearLimit {
                    policy: Arc::from(e.set.policy(d.binding_index()).name()),
                    remaining: s.remaining,
                    limit: s.limit,
                })
            });
        let info = cfg
            .info
            .then(|| RateLimitInfo::of(e, d, self.near_limit_percent()));
        Carry { near, info }
    }

    pub(super) fn near_limit_percent(&self) -> u8 {
        self.cfg
            .soft_limit_percent
            .unwrap_or(extensions::NEAR_LIMIT_PERCENT_BY_DEFAULT)
    }

    pub(super) fn store_error(&self, e: &StoreError, key: &KeyBuf) -> Action {
        observe::count!(self.meters, store_error, "store_error");
        self.health.failed(e, key, self.cfg.on_store_error);
        match self.cfg.on_store_error {
            StoreFailure::Allow => {
                metrics::counter!("ratelimit_fail_open_total").increment(1);
                Action::Proceed(Emit::default(), Carry::default())
            }
            StoreFailure::Error => Action::Respond(Box::new(store_error_response(e))),
        }
    }
}

/// The fail-closed answer: 503 while the store is away; 500 when this client's own state is unreadable
/// (waiting will not help: an operator must delete the key).
fn store_error_response(e: &StoreError) -> Response<Bytes> {
    if matches!(e, StoreError::KeyState { .. }) {
        return response::simple_problem(
            StatusCode::INTERNAL_SERVER_ERROR,
            None,
            "the rate limiter could not read this client's state",
        );
    }
    response::simple_problem(
        StatusCode::SERVICE_UNAVAILABLE,
        Some(response::TEMPORARY_REDUCED_CAPACITY),
        "the rate limiter's store is unavailable; try again shortly",
    )
}

/// The decision as it stands after refunding `cost` to every policy (for reporting only).
fn refunded(d: &Decision, cost: u64) -> Decision {
    let mut statuses = [Status::default(); ratelimit_core::MAX_POLICIES];
    let n = d.statuses().len();
    for (o, s) in statuses.iter_mut().zip(d.statuses()) {
        *o = Status {
            remaining: s.remaining.saturating_add(cost).min(s.limit),
            ..*s
        };
    }
    Decision::combine(&statuses[..n])
}

/// A tier entry (its policy set and pre-rendered header parts) and its decision.
pub(crate) type Part<'a> = (&'a Entry, &'a Decision);

/// The part whose binding policy is closest to exhaustion (longest retry, then least remaining relative
/// to its limit).
pub(crate) fn most_binding<'a>(primary: Part<'a>, global: Option<Part<'a>>) -> Part<'a> {
    let Some(g) = global else { return primary };
    let (a, b) = (g.1.binding(), primary.1.binding());
    let tighter = if a.retry != b.retry {
        a.retry > b.retry
    } else {
        u128::from(a.remaining) * u128::from(b.limit)
            < u128::from(b.remaining) * u128::from(a.limit)
    };
    if tighter {
        g
    } else {
        primary
    }
}
