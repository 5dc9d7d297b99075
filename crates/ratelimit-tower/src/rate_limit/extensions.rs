//! What an admitted request carries to its handler: [`RateLimitInfo`] (the decision, when
//! [`RateLimitBuilder::rate_limit_info`](crate::RateLimitBuilder::rate_limit_info) is on; an axum
//! extractor with the `axum` feature) and [`NearLimit`] (when close to the limit, with
//! [`RateLimitBuilder::soft_limit_percent`](crate::RateLimitBuilder::soft_limit_percent)).

use std::sync::Arc;
use std::time::Duration;

use http::Extensions;
use ratelimit_core::Decision;

use crate::tier::Entry;

/// Request extension inserted when a request is allowed but close to its limit (see
/// [`RateLimitBuilder::soft_limit_percent`](crate::RateLimitBuilder::soft_limit_percent)), so handlers
/// can degrade gracefully (skip expensive extras, shrink pages).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NearLimit {
    /// The policy closest to exhaustion.
    pub policy: Arc<str>,
    /// Its remaining units.
    pub remaining: u64,
    /// Its capacity.
    pub limit: u64,
}

/// A policy's name as an admitted request carries it: interned when the tier table is built, so handing
/// it to a request copies a pointer (an `Arc` only past the intern table's caps).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum PolicyName {
    Static(&'static str),
    Shared(Arc<str>),
}

impl PolicyName {
    pub(crate) fn new(name: &str) -> Self {
        match crate::headers::interned_str(name) {
            Some(s) => PolicyName::Static(s),
            None => PolicyName::Shared(Arc::from(name)),
        }
    }

    fn as_str(&self) -> &str {
        match self {
            PolicyName::Static(s) => s,
            PolicyName::Shared(s) => s,
        }
    }
}

/// The share of its limit a request may have left and still be [near the
/// limit](RateLimitInfo::is_near_limit) when no soft limit is configured.
pub(crate) const NEAR_LIMIT_PERCENT_BY_DEFAULT: u8 = 10;

/// The rate-limit decision of an admitted request, for its handler: the binding policy (the one closest
/// to exhaustion, the global cap's included), its limit, what remains and when it is full again.
///
/// Inserted into every admitted request's extensions when the layer is built with
/// [`rate_limit_info(true)`](crate::RateLimitBuilder::rate_limit_info) (off by default: `http::Extensions`
/// boxes the value, one allocation per request). With the `axum` feature it is an extractor; take
/// `Option<RateLimitInfo>` on routes where a request can pass without a decision — skipped
/// ([`skip`](crate::RateLimitBuilder::skip), [`methods`](crate::RateLimitBuilder::methods)), or let
/// through while the store fails open — since `RateLimitInfo` alone rejects those with a 500
/// ([`MissingRateLimitInfo`]).
///
/// ```no_run
/// use std::net::SocketAddr;
/// use axum::{routing::get, Router};
/// use ratelimit_tower::{Policy, Quota, RateLimitInfo, RateLimitLayer};
///
/// async fn search(info: RateLimitInfo) -> String {
///     if info.is_near_limit() {
///         return format!("results (short page: {} left of {})", info.remaining(), info.limit());
///     }
///     format!("results ({} left under {:?})", info.remaining(), info.policy())
/// }
///
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// let limit = RateLimitLayer::builder()
///     .policy(Policy::gcra("burst", Quota::per_second(10).build()?)?)
///     .rate_limit_info(true)
///     .build()?;
/// let app = Router::new().route("/search", get(search)).layer(limit);
/// let listener = tokio::net::TcpListener::bind("127.0.0.1:3000").await?;
/// axum::serve(listener, app.into_make_service_with_connect_info::<SocketAddr>()).await?;
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RateLimitInfo {
    policy: PolicyName,
    limit: u64,
    remaining: u64,
    reset: Duration,
    near_limit: bool,
}

impl RateLimitInfo {
    /// The binding policy of `decision` over `entry`'s set; near the limit when at most `percent` % of
    /// it remains.
    pub(crate) fn of(entry: &Entry, decision: &Decision, percent: u8) -> Self {
        let s = decision.binding();
        RateLimitInfo {
            policy: entry.names[decision.binding_index()].clone(),
            limit: s.limit,
            remaining: s.remaining,
            reset: Duration::from_micros(s.reset),
            near_limit: near(s.remaining, s.limit, percent),
        }
    }

    /// The binding policy's name.
    pub fn policy(&self) -> &str {
        self.policy.as_str()
    }

    /// Its capacity (the `q` of `RateLimit-Policy`).
    pub fn limit(&self) -> u64 {
        self.limit
    }

    /// Its units left after this request (the `r` of `RateLimit`).
    pub fn remaining(&self) -> u64 {
        self.remaining
    }

    /// How long until it is back to full capacity.
    pub fn reset(&self) -> Duration {
        self.reset
    }

    /// Whether at most the soft limit's share of the policy remains
    /// ([`soft_limit_percent`](crate::RateLimitBuilder::soft_limit_percent), 10 % unless set).
    pub fn is_near_limit(&self) -> bool {
        self.near_limit
    }
}

/// Whether `remaining` is at most `percent` % of `limit`.
#[inline]
pub(crate) fn near(remaining: u64, limit: u64, percent: u8) -> bool {
    u128::from(remaining) * 100 <= u128::from(limit) * u128::from(percent)
}

/// The extensions an admitted request gets.
#[derive(Debug, Default)]
pub(crate) struct Carry {
    pub(crate) near: Option<Box<NearLimit>>,
    pub(crate) info: Option<RateLimitInfo>,
}

impl Carry {
    #[inline]
    pub(crate) fn insert_into(self, extensions: &mut Extensions) {
        if let Some(near) = self.near {
            extensions.insert(*near);
        }
        if let Some(info) = self.info {
            extensions.insert(info);
        }
    }
}

/// The rejection of the [`RateLimitInfo`] extractor: the request carries no decision. Answers 500 with
/// this message (the handler's route is misconfigured, not the client's request).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("no rate-limit decision for this request: the RateLimitLayer is not in front of this handler, was built without .rate_limit_info(true), or let the request through without deciding (skip, methods, a failing store with on_store_error(OnFailure::Allow): take Option<RateLimitInfo> there)")]
pub struct MissingRateLimitInfo;

impl MissingRateLimitInfo {
    /// The status it answers with: 500.
    pub fn status(&self) -> http::StatusCode {
        http::StatusCode::INTERNAL_SERVER_ERROR
    }
}

#[cfg(feature = "axum")]
mod extract {
    use std::convert::Infallible;

    use axum::extract::{FromRequestParts, OptionalFromRequestParts};
    use axum::response::{IntoResponse, Response};
    use http::request::Parts;

    use super::{MissingRateLimitInfo, RateLimitInfo};

    impl IntoResponse for MissingRateLimitInfo {
        fn into_response(self) -> Response {
            (self.status(), self.to_string()).into_response()
        }
    }

    impl<S: Send + Sync> FromRequestParts<S> for RateLimitInfo {
        type Rejection = MissingRateLimitInfo;

        async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
            parts
                .extensions
                .get::<RateLimitInfo>()
                .cloned()
                .ok_or(MissingRateLimitInfo)
        }
    }

    impl<S: Send + Sync> OptionalFromRequestParts<S> for RateLimitInfo {
        type Rejection = Infallible;

        async fn from_request_parts(
            parts: &mut Parts,
            _: &S,
        ) -> Result<Option<Self>, Self::Rejection> {
            Ok(parts.extensions.get::<RateLimitInfo>().cloned())
        }
    }
}
