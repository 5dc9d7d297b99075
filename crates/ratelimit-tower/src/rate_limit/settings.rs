//! What a built layer is configured to do: the settings [`RateLimitBuilder`](crate::RateLimitBuilder)
//! validates and the request pipeline reads.

use bytes::Bytes;
use http::{Method, Response};

use crate::headers::{IetfRevision, LegacyReset};
use crate::key::{KeyExtractor, RequestInfo, Scope};
use crate::response::Rejection;
use crate::tier::TierSource;

/// What to do when the store cannot answer (Redis down, timeout, in-memory store full with
/// `Overflow::Reject`). Never a 429: the client did nothing wrong.
///
/// An outage is logged when it starts and when the store answers again, not per request; every failed
/// request is counted in `ratelimit_store_errors_total`.
///
/// To keep limiting through an outage instead, give the store a fallback: a Redis store built with
/// `on_failure(OnFailure::Local { instances })` decides in memory (each quota divided among the
/// instances) while Redis is away, and the layer sees decisions, not errors.
///
/// ```
/// use ratelimit_tower::{OnStoreError, Policy, Quota, RateLimitLayer};
///
/// let layer = RateLimitLayer::builder()
///     .policy(Policy::gcra("burst", Quota::per_second(10).build()?)?)
///     .on_store_error(OnStoreError::FailOpen)
///     .build()?;
/// # let _ = layer;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OnStoreError {
    /// Let the request through without rate-limit headers (availability first). Counted in
    /// `ratelimit_fail_open_total`.
    FailOpen,
    /// Answer 503 with a `temporary-reduced-capacity` problem (protection first). The default. A request
    /// whose own key holds foreign data (`StoreError::KeyState`) gets 500 instead: waiting will not help.
    #[default]
    FailClosed,
}

/// What to do when no key can be built for a request (see [`KeyError`](crate::key::KeyError)).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OnKeyError {
    /// Answer with a problem+json saying what is missing: 400 when the client is at fault (missing API key
    /// header), 500 when the server is (no peer address: `ConnectInfo` missing). The default.
    #[default]
    Reject,
    /// Limit the request under one shared key (everyone without a key shares a bucket).
    UseGlobalKey,
    /// Let the request through unlimited.
    Allow,
}

/// Which rate-limit headers to send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct HeaderConfig {
    pub(crate) ietf: bool,
    pub(crate) revision: IetfRevision,
    pub(crate) legacy: Option<LegacyReset>,
    pub(crate) only_binding: bool,
    pub(crate) partition_key: bool,
}

impl Default for HeaderConfig {
    fn default() -> Self {
        HeaderConfig {
            ietf: true,
            revision: IetfRevision::Draft11,
            legacy: None,
            only_binding: false,
            partition_key: false,
        }
    }
}

pub(crate) type SkipFn = Box<dyn Fn(&RequestInfo<'_>) -> bool + Send + Sync>;
pub(crate) type RejectFn = Box<dyn Fn(&Rejection<'_>) -> Response<Bytes> + Send + Sync>;

/// How much a request costs.
pub(crate) enum Cost {
    Fixed(u64),
    Fn(Box<dyn Fn(&RequestInfo<'_>) -> u64 + Send + Sync>),
}

/// Every setting of a built layer.
pub(crate) struct Config {
    pub(crate) scope: Scope,
    pub(crate) key: Box<dyn KeyExtractor>,
    pub(crate) tier_source: TierSource,
    pub(crate) cost: Cost,
    pub(crate) methods: Option<Box<[Method]>>,
    pub(crate) skip: Option<SkipFn>,
    pub(crate) on_store_error: OnStoreError,
    pub(crate) on_key_error: OnKeyError,
    pub(crate) shadow: bool,
    pub(crate) headers: HeaderConfig,
    pub(crate) soft_limit_percent: Option<u8>,
    /// Whether admitted requests carry a [`RateLimitInfo`](crate::RateLimitInfo).
    pub(crate) info: bool,
    pub(crate) rejection: Option<RejectFn>,
    pub(crate) latency: bool,
}
