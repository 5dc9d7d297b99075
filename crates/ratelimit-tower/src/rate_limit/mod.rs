//! The rate-limiting middleware: [`RateLimitLayer`], the [`RateLimit`] service and its
//! [`ResponseFuture`].
//!
//! Per request: method filter and skip predicate → key extraction → tier → policy set and cost → store
//! check (then the global cap, if any) → allowed: call the inner service and add `RateLimit` headers to its
//! response; limited: 429; store error: the configured [`OnFailure`](ratelimit_core::OnFailure).
//!
//! # The store call
//!
//! [`Store`] futures borrow the store, the policy set and the key, so a response future cannot own one
//! without boxing (or `unsafe`). So the layer first asks [`Store::check_now`], inside `call`: a store
//! that answers without I/O (the in-memory store, whatever its clock, and any wrapper that delegates
//! `check_now`) decides there — no future at all, nothing boxed, the key on the stack. A store that
//! cannot (Redis) gets one boxed future per request, which is noise next to a network round trip.

mod extensions;
mod future;
mod layer;
mod reservation;
mod service;
mod settings;
mod store_health;
mod tier_checks;

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use arc_swap::ArcSwap;
use bytes::Bytes;
use http::header::{HeaderName, CACHE_CONTROL, RETRY_AFTER};
use http::{HeaderMap, HeaderValue, Response, StatusCode};
use ratelimit_core::{Decision, PolicySet, Status, Store, StoreError};

pub(crate) use extensions::{Carry, PolicyName};
pub use extensions::{MissingRateLimitInfo, NearLimit, RateLimitInfo};
pub use future::ResponseFuture;
pub use layer::RateLimitLayer;
pub use service::RateLimit;
pub use settings::OnKeyError;
pub(crate) use settings::{Config, Cost, HeaderConfig, RejectFn, SkipFn, StoreFailure};

pub(crate) use reservation::HeldCharge;
use reservation::Reservation;

use crate::headers::{self, Buf, IetfRevision, LegacyReset};
use crate::key::{tag, KeyBuf, KeyError, RequestInfo};
use crate::observe::{self, KeyHash, Stopwatch};
use crate::response::{self, Rejection, NO_STORE};
use crate::tier::{Entry, TierTable};

pub(crate) struct Shared<S> {
    pub(crate) store: S,
    pub(crate) cfg: Config,
    /// Metric handles, when a recorder was installed at build time (see [`observe::Meters`]).
    pub(crate) meters: Option<observe::Meters>,
    pub(crate) tiers: Arc<ArcSwap<TierTable>>,
    /// Whether the store is failing: outages are logged when they start and end.
    pub(crate) health: store_health::StoreHealth,
    /// Unknown tier names and a missing `Tier` extension, reported once.
    pub(crate) tier_checks: tier_checks::TierChecks,
}

/// Headers to add to the inner service's response.
#[derive(Debug, Default)]
pub(crate) struct Emit {
    ratelimit: Option<HeaderValue>,
    policy: Option<HeaderValue>,
    /// Boxed: these are opt-in, and keeping `Emit` small keeps the response future small.
    trios: Option<Box<Trios>>,
}

/// The opt-in limit/remaining/reset fields: `X-RateLimit-*`, and draft-06's `RateLimit-*`.
#[derive(Debug, Default)]
struct Trios {
    legacy: Option<[HeaderValue; 3]>,
    draft6: Option<[HeaderValue; 3]>,
}

static RATELIMIT: HeaderName = HeaderName::from_static("ratelimit");
static RATELIMIT_POLICY: HeaderName = HeaderName::from_static("ratelimit-policy");
static X_TRIO: [HeaderName; 3] = [
    HeaderName::from_static("x-ratelimit-limit"),
    HeaderName::from_static("x-ratelimit-remaining"),
    HeaderName::from_static("x-ratelimit-reset"),
];
static DRAFT6_TRIO: [HeaderName; 3] = [
    HeaderName::from_static("ratelimit-limit"),
    HeaderName::from_static("ratelimit-remaining"),
    HeaderName::from_static("ratelimit-reset"),
];

impl Emit {
    #[inline]
    pub(crate) fn apply(self, headers: &mut HeaderMap) {
        // Append: an inner layer's RateLimit list stays, and SF lists may span several field lines.
        if let Some(v) = self.ratelimit {
            headers.append(RATELIMIT.clone(), v);
        }
        if let Some(v) = self.policy {
            headers.append(RATELIMIT_POLICY.clone(), v);
        }
        if let Some(trios) = self.trios {
            let Trios { legacy, draft6 } = *trios;
            for (names, values) in [(&X_TRIO, legacy), (&DRAFT6_TRIO, draft6)] {
                for (name, value) in names.iter().zip(values.into_iter().flatten()) {
                    headers.insert(name.clone(), value);
                }
            }
        }
    }
}

/// What the layer does with a request. The rare parts are boxed: an action is moved out of the decision
/// into the response future, and at over 128 bytes each move was a `memcpy` call.
pub(crate) enum Action {
    /// Insert `Carry`'s extensions, call the inner service, add `Emit`'s headers.
    Proceed(Emit, Carry),
    /// Answer without calling the inner service.
    Respond(Box<Response<Bytes>>),
}

/// What [`Shared::run_now`] could do without waiting.
pub(crate) enum Now {
    /// Decided.
    Done(Action),
    /// Nothing: the store cannot answer without waiting.
    Wait,
    /// The client's check answered and charged it; the global cap's must be awaited.
    Charged(Decision, Arc<Entry>),
}

/// What key extraction led to.
pub(crate) enum KeyOutcome {
    /// Limit under the key written into the caller's buffer.
    Key,
    /// Let the request through unlimited.
    Pass,
    /// Answer with this.
    Respond(Response<Bytes>),
}

/// The result of the store checks.
pub(crate) struct Checked {
    primary: Decision,
    /// The global cap's decision, when one is configured and the primary check allowed.
    global: Option<Decision>,
}

impl<S> Shared<S>
where
    S: Store<[u8], PolicySet> + 'static,
{
    /// Whether the layer applies to this request (method filter, skip predicate).
    #[inline]
    pub(crate) fn applies(&self, info: &RequestInfo<'_>) -> bool {
        if let Some(m) = &self.cfg.methods {
            if !m.contains(info.method()) {
                return false;
            }
        }
        if let Some(skip) = &self.cfg.skip {
            if skip(info) {
                return false;
            }
        }
        true
    }

    /// Builds the key into `key` (a fresh buffer under the scope), or says what to do instead. The
    /// caller owns the buffer: returning a 130-byte key by value cost two copies per request.
    #[inline]
    pub(crate) fn key(&self, info: &RequestInfo<'_>, key: &mut KeyBuf) -> KeyOutcome {
        match self.cfg.key.extract(info, key) {
            Ok(()) => KeyOutcome::Key,
            Err(e) => {
                observe::count!(self.meters, key_error, "key_error");
                match self.cfg.on_key_error {
                    OnKeyError::UseGlobalKey => {
                        tracing::debug!(error = %e, "no rate-limit key; using the global key");
                        key.clear();
                        key.push(tag::GLOBAL, b"");
                        KeyOutcome::Key
                    }
                    OnKeyError::Allow => {
                        tracing::debug!(error = %e, "no rate-limit key; letting the request through");
                        KeyOutcome::Pass
                    }
                    OnKeyError::Reject => {
                        let status = if e.is_server_error() {
                            StatusCode::INTERNAL_SERVER_ERROR
                        } else {
                            StatusCode::BAD_REQUEST
                        };
                        tracing::debug!(error = %e, %status, "no rate-limit key; rejecting");
                        KeyOutcome::Respond(key_error_response(status, e))
                    }
                }
            }
        }
    }

    #[inline]
    pub(crate) fn cost(&self, info: &RequestInfo<'_>) -> u64 {
        match &self.cfg.cost {
            Cost::Fixed(c) => *c,
            Cost::Fn(f) => f(info),
        }
    }

    /// The store checks: the tier's set on the client's key, then the global cap on the global key. If
    /// the cap rejects (or fails while failing closed), the client's charge is refunded — the
    /// reserve-then-refund protocol for checks that span two keys.
    ///
    /// Cancel-safe: dropped after the client's charge and before the cap's answer (or during the
    /// refund), the charge is given back by a [`Reservation`] guard. A check dropped while it is on the
    /// wire to a networked store cannot be undone: the store may have applied it.
    pub(crate) async fn decide(
        &self,
        entry: &Entry,
        global: Option<&Entry>,
        key: &KeyBuf,
        cost: u64,
    ) -> Result<Checked, StoreError> {
        let primary = self.store.check(&entry.set, key.as_bytes(), cost).await?;
        let Some(global) = global.filter(|_| primary.is_allowed()) else {
            return Ok(Checked {
                primary,
                global: None,
            });
        };
        self.check_cap(primary, entry, global, key, cost).await
    }

    /// The global cap's check after the client's `primary` decision charged it; see [`Shared::decide`].
    pub(crate) async fn check_cap(
        &self,
        primary: Decision,
        entry: &Entry,
        cap: &Entry,
        key: &KeyBuf,
        cost: u64,
    ) -> Result<Checked, StoreError> {
        let reservation = Reservation::new(&self.store, &entry.set, key, cost);
        let gkey = self.global_key();
        let g = self.store.check(&cap.set, gkey.as_bytes(), cost).await;
        let (result, refund) = self.after_global(primary, g);
        if refund {
            reservation.give_back().await;
        } else {
            reservation.keep();
        }
        result
    }

    /// [`Shared::run`] without waiting, when the store can answer on the spot ([`Store::check_now`]; the
    /// in-memory store always can): no future, nothing boxed. The common case (no global cap, or the
    /// client already limited) hands the store's decision to [`Shared::finish_parts`] by reference: a
    /// `Decision` is a few hundred bytes, and moving it through `Result`s and a `Checked` cost more than
    /// the rest of the bookkeeping.
    #[inline]
    pub(crate) fn run_now(
        &self,
        entry: &Entry,
        cap: Option<&Arc<Entry>>,
        key: &KeyBuf,
        cost: u64,
    ) -> Now {
        let global = cap.map(|c| &**c);
        let start = self.timing().then(Stopwatch::start);
        // Matched by reference: moving the decision out of the `Result` is a 328-byte copy.
        let Some(checked) = self.store.check_now(&entry.set, key.as_bytes(), cost) else {
            return Now::Wait;
        };
        let primary = match &checked {
            Ok(d) => d,
            Err(e) => {
                self.record_latency(start);
                return Now::Done(self.store_error(e, key));
            }
        };
        let Some(cap) = cap.filter(|_| primary.is_allowed()) else {
            self.record_latency(start);
            return Now::Done(self.finish_parts(entry, global, key, cost, primary, None));
        };
        let gkey = self.global_key();
        let Some(g) = self.store.check_now(&cap.set, gkey.as_bytes(), cost) else {
            // The client is charged; the cap must be awaited.
            return Now::Charged(*primary, cap.clone());
        };
        let (result, refund) = self.after_global(*primary, g);
        if refund && cost > 0 {
            // Completes on the spot for a store that just answered on the spot.
            self.store.refund_detached(&entry.set, key.as_bytes(), cost);
        }
        self.record_latency(start);
        Now::Done(self.finish(entry, global, key, cost, result))
    }

    fn global_key(&self) -> KeyBuf {
        let mut gkey = KeyBuf::scoped(&self.cfg.scope);
        gkey.push(tag::GLOBAL_CAP, b"");
        gkey
    }

    /// What the global cap's answer means: the result, and whether the client's charge must be refunded.
    fn after_global(
        &self,
        primary: Decision,
        g: Result<Decision, StoreError>,
    ) -> (Result<Checked, StoreError>, bool) {
        match g {
            Ok(g) => (
                Ok(Checked {
                    primary,
                    global: Some(g),
                }),
                !g.is_allowed(),
            ),
            Err(e) if self.cfg.on_store_error == StoreFailure::Allow => {
                // The client's own check passed; the cap is unknown and we fail open: keep the charge.
                self.health
                    .failed(&e, &self.global_key(), StoreFailure::Allow);
                (
                    Ok(Checked {
                        primary,
                        global: None,
                    }),
                    false,
                )
            }
            Err(e) => (Err(e), true),
        }
    }

    /// [`Shared::check_cap`] after [`Shared::run_now`] charged the client, as an action.
    pub(crate) async fn run_cap(
        &self,
        primary: Decision,
        entry: &Entry,
        cap: &Entry,
        key: &KeyBuf,
        cost: u64,
    ) -> Action {
        let start = self.timing().then(Stopwatch::start);
        let checked = self.check_cap(primary, entry, cap, key, cost).await;
        self.record_latency(start);
        self.finish(entry, Some(cap), key, cost, checked)
    }

    /// Runs [`Shared::decide`] and turns its result into an action, timing the store checks.
    pub(crate) async fn run(
        &self,
        entry: &Entry,
        global: Option<&Entry>,
        key: &KeyBuf,
        cost: u64,
    ) -> Action {
        let start = self.timing().then(Stopwatch::start);
        let checked = self.decide(entry, global, key, cost).await;
        self.record_latency(start);
        self.finish(entry, global, key, cost, checked)
    }

    /// Whether to time this decision: the histogram is on and something will record it — the handles
    /// kept at build time, or a recorder installed since. Without a recorder the two clock reads would be
    /// thrown away.
    #[inline]
    fn timing(&self) -> bool {
        self.cfg.latency && (self.meters.is_some() || observe::recorder_installed())
    }

    #[inline]
    fn record_latency(&self, start: Option<Stopwatch>) {
        if let Some(start) = start {
            let seconds = start.seconds();
            match &self.meters {
                Some(m) => m.latency.record(seconds),
                None => metrics::histogram!("ratelimit_decision_seconds").record(seconds),
            }
        }
    }

    fn finish(
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
    fn finish_parts(
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
                self.emit(entry, primary_part, global_part, key, Some((le, ld)))
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
                    self.emit(entry, primary_part, global_part, key, None),
                    carry,
                )
            }
        }
    }

    /// The extensions an admitted request gets, from its binding (set, decision).
    #[inline]
    fn carry(&self, (e, d): Part<'_>) -> Carry {
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

    fn near_limit_percent(&self) -> u8 {
        self.cfg
            .soft_limit_percent
            .unwrap_or(extensions::NEAR_LIMIT_PERCENT_BY_DEFAULT)
    }

    /// Renders the headers for a decision over one or two (set, decision) parts.
    fn emit(
        &self,
        entry: &Entry,
        primary: Part<'_>,
        global: Option<Part<'_>>,
        key: &KeyBuf,
        limited: Option<(&Entry, &Decision)>,
    ) -> Emit {
        let hc = &self.cfg.headers;
        let mut emit = Emit::default();
        let pk = hc
            .partition_key
            .then(|| observe::partition_key(key.as_bytes()));
        let pk = pk.as_ref();
        let (bent, bdec) = match limited {
            Some(part) => part,
            None => most_binding(primary, global),
        };
        let bset = &bent.set;
        if hc.ietf && hc.revision != IetfRevision::Draft11 {
            emit.policy = if hc.only_binding {
                headers::unnamed_policy_value(bset, Some(bdec.binding_index()))
            } else if global.is_some() {
                entry.unnamed_header.clone()
            } else {
                entry.unnamed_own.clone()
            };
            if hc.revision == IetfRevision::Draft07 {
                emit.ratelimit = headers::draft07_value(bdec);
            } else {
                let (l, r, t) = headers::binding_numbers(bdec);
                let trio = [l, r, t].map(headers::int_value);
                emit.trios.get_or_insert_default().draft6 = Some(trio);
            }
        } else if hc.ietf {
            let mut buf = Buf::new();
            if hc.only_binding {
                headers::write_ratelimit(&mut buf, bset, bdec, Some(bdec.binding_index()), pk);
                emit.ratelimit = buf.value();
                emit.policy = if pk.is_none() && std::ptr::eq(bent, entry) {
                    entry.each.get(bdec.binding_index()).cloned().flatten()
                } else {
                    headers::policy_value(bset, Some(bdec.binding_index()), pk)
                };
            } else {
                headers::write_ratelimit_items(&mut buf, &primary.0.items, primary.1, pk);
                if let Some((ge, d)) = global {
                    buf.push(b", ");
                    headers::write_ratelimit_items(&mut buf, &ge.items, d, pk);
                }
                emit.ratelimit = buf.value();
                emit.policy = if pk.is_none() {
                    if global.is_some() {
                        entry.policy_header.clone()
                    } else {
                        entry.policy_own.clone()
                    }
                } else {
                    let mut buf = Buf::new();
                    headers::write_policy(&mut buf, &primary.0.set, None, pk);
                    if let Some((ge, _)) = global {
                        buf.push(b", ");
                        headers::write_policy(&mut buf, &ge.set, None, pk);
                    }
                    buf.value()
                };
            }
        }
        if let Some(mode) = hc.legacy {
            let (limit, remaining, reset) = headers::binding_numbers(bdec);
            let reset = match mode {
                LegacyReset::DeltaSeconds => reset,
                LegacyReset::UnixEpoch => {
                    let now = SystemTime::now()
                        .duration_since(UNIX_EPOCH)
                        .map_or(0, |d| d.as_micros() as u64);
                    headers::ceil_secs(now) + reset
                }
            };
            emit.trios.get_or_insert_default().legacy =
                Some([limit, remaining, reset].map(headers::int_value));
        }
        emit
    }

    fn store_error(&self, e: &StoreError, key: &KeyBuf) -> Action {
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
type Part<'a> = (&'a Entry, &'a Decision);

/// The part whose binding policy is closest to exhaustion (longest retry, then least remaining relative
/// to its limit).
fn most_binding<'a>(primary: Part<'a>, global: Option<Part<'a>>) -> Part<'a> {
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

fn key_error_response(status: StatusCode, e: KeyError) -> Response<Bytes> {
    response::simple_problem(status, None, &e.to_string())
}
