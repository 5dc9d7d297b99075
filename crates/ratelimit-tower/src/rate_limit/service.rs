//! [`RateLimit`], the service.

use std::fmt;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{Request, Response};
use http_body::Body;
use ratelimit_core::{PolicySet, Store};
use tower_service::Service;

use super::future::Check;
use super::{Action, HeldCharge, KeyOutcome, Now, ResponseFuture, Shared};
use crate::key::{KeyBuf, RequestInfo};
use crate::observe;
use crate::response::ResponseBody;
use crate::tier::{Tier, TierSource};

/// The rate-limiting service made by [`RateLimitLayer`](super::RateLimitLayer). `Clone` whenever the
/// inner service is; clones share all state.
///
/// One `Arc` and the inner service, nothing else: axum's `Router` clones a route's whole service stack
/// for every request, and each reference count a clone touches is a cache line that every worker thread
/// writes. (A per-clone cache of the tier table cost four such updates per request, which measured
/// worse under two threads than loading the table from its `ArcSwap`.)
pub struct RateLimit<I, S> {
    inner: I,
    shared: Arc<Shared<S>>,
}

impl<I: Clone, S> Clone for RateLimit<I, S> {
    fn clone(&self) -> Self {
        RateLimit {
            inner: self.inner.clone(),
            shared: self.shared.clone(),
        }
    }
}

impl<I: fmt::Debug, S> fmt::Debug for RateLimit<I, S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RateLimit")
            .field("inner", &self.inner)
            .finish_non_exhaustive()
    }
}

impl<I, S> RateLimit<I, S> {
    pub(crate) fn from_parts(inner: I, shared: Arc<Shared<S>>) -> Self {
        RateLimit { inner, shared }
    }

    /// The inner service.
    pub fn get_ref(&self) -> &I {
        &self.inner
    }
}

impl<I, S, ReqB, ResB> Service<Request<ReqB>> for RateLimit<I, S>
where
    I: Service<Request<ReqB>, Response = Response<ResB>> + Clone + Send + 'static,
    ReqB: Send + 'static,
    ResB: Body<Data = Bytes>,
    S: Store<[u8], PolicySet> + 'static,
{
    type Response = Response<ResponseBody<ResB>>;
    type Error = I::Error;
    type Future = ResponseFuture<I::Future, I, Request<ReqB>>;

    #[inline]
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<ReqB>) -> Self::Future {
        let shared = &*self.shared;
        let info = RequestInfo::new(&req);
        if !shared.applies(&info) {
            observe::count!(shared.meters, skipped, "skipped");
            return ResponseFuture::inner(self.inner.call(req), None);
        }
        let mut key = KeyBuf::scoped(&shared.cfg.scope);
        match shared.key(&info, &mut key) {
            KeyOutcome::Key => {}
            KeyOutcome::Pass => return ResponseFuture::inner(self.inner.call(req), None),
            KeyOutcome::Respond(res) => return ResponseFuture::respond(Box::new(res)),
        };
        let cost = shared.cost(&info);
        let table = shared.tiers.load();
        let owned_tier: Option<Tier>;
        let tier = match &shared.cfg.tier_source {
            // With no named tier every request gets the default one: skip the extension look-up.
            TierSource::Extension if table.named.is_empty() => None,
            TierSource::Extension => {
                let tier = info.extensions().get::<Tier>().map(Tier::as_str);
                shared.tier_checks.extension(tier.is_some());
                tier
            }
            TierSource::Fn(f) => {
                owned_tier = f(&info);
                owned_tier.as_ref().map(Tier::as_str)
            }
        };
        let entry = match table.entry(tier) {
            Ok(entry) => entry,
            Err(default) => {
                if let Some(name) = tier {
                    shared.tier_checks.unknown(name, &table);
                }
                default
            }
        };

        let charged = match shared.run_now(entry, table.global.as_ref(), &key, cost) {
            Now::Done(action) => return self.act(action, req),
            Now::Wait => None,
            Now::Charged(primary, cap) => Some((primary, cap)),
        };

        let owner = self.shared.clone();
        let entry = entry.clone();
        let clone = self.inner.clone();
        let svc = std::mem::replace(&mut self.inner, clone);
        let check: Check<I, Request<ReqB>> = match charged {
            Some((primary, cap)) => {
                let held = HeldCharge::new(owner, entry, key, cost);
                Box::pin(async move { (held.check_cap(primary, cap).await, svc, req) })
            }
            None => {
                let global = table.global.clone();
                Box::pin(async move {
                    let action = owner.run(&entry, global.as_deref(), &key, cost).await;
                    (action, svc, req)
                })
            }
        };
        ResponseFuture::checking(check)
    }
}

impl<I, S> RateLimit<I, S> {
    /// Carries out a decision made on the spot.
    #[inline]
    fn act<ReqB, ResB>(
        &mut self,
        action: Action,
        mut req: Request<ReqB>,
    ) -> ResponseFuture<I::Future, I, Request<ReqB>>
    where
        I: Service<Request<ReqB>, Response = Response<ResB>>,
    {
        match action {
            Action::Proceed(emit, carry) => {
                carry.insert_into(req.extensions_mut());
                ResponseFuture::inner(self.inner.call(req), Some(emit))
            }
            Action::Respond(res) => ResponseFuture::respond(res),
        }
    }
}
