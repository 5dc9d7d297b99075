//! The decision pipeline: does the layer apply, under which key, at what cost; the store checks (the
//! client's, then the global cap's with reserve-then-refund), on the spot when the store can answer
//! without waiting; and the decision latency.

use std::sync::Arc;

use bytes::Bytes;
use http::{Response, StatusCode};
use ratelimit_core::{Decision, PolicySet, Store, StoreError};

use super::reservation::Reservation;
use super::respond::Action;
use super::{Cost, OnKeyError, Shared, StoreFailure};
use crate::key::{tag, KeyBuf, KeyError, RequestInfo};
use crate::observe::{self, Stopwatch};
use crate::response;
use crate::tier::Entry;

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
    pub(super) primary: Decision,
    /// The global cap's decision, when one is configured and the primary check allowed.
    pub(super) global: Option<Decision>,
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
}

fn key_error_response(status: StatusCode, e: KeyError) -> Response<Bytes> {
    response::simple_problem(status, None, &e.to_string())
}
