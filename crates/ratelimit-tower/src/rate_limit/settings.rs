//! What a built layer is configured to do: the settings [`RateLimitBuilder`](crate::RateLimitBuilder)
//! validates and the request pipeline reads.

use bytes::Bytes;
use http::{Method, Response};

use crate::headers::{IetfRevision, LegacyReset};
use crate::key::{KeyExtractor, RequestInfo, Scope};
use crate::response::Rejection;
use crate::tier::TierSource;

/// What the layer does with a request whose store check failed, from the builder's
/// [`OnFailure`](ratelimit_core::OnFailure) (`Local` is refused at build time: it belongs on the store).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum StoreFailure {
    /// `OnFailure::Allow`: let the request through without rate-limit headers.
    Allow,
    /// `OnFailure::Error`: answer 503 (500 for a corrupt key).
    Error,
}

impl StoreFailure {
    /// The metric label and log field for this choice.
    pub(crate) fn label(self) -> &'static str {
        match self {
            StoreFailure::Allow => "fail_open",
            StoreFailure::Error => "fail_closed",
        }
    }
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
    pub(crate) on_store_error: StoreFailure,
    pub(crate) on_key_error: OnKeyError,
    pub(crate) shadow: bool,
    pub(crate) headers: HeaderConfig,
    pub(crate) soft_limit_percent: Option<u8>,
    /// Whether admitted requests carry a [`RateLimitInfo`](crate::RateLimitInfo).
    pub(crate) info: bool,
    pub(crate) rejection: Option<RejectFn>,
    pub(crate) latency: bool,
}
