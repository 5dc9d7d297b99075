//! # ratelimit-tower
//!
//! A tower [`Layer`](tower_layer::Layer) that rate limits axum and hyper servers.
//!
//! ```no_run
//! use std::net::SocketAddr;
//! use axum::{routing::get, Router};
//! use ratelimit_tower::{Policy, Quota, RateLimitLayer};
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let limit = RateLimitLayer::builder()
//!     .policy(Policy::gcra("burst", Quota::per_second(10).burst(20).build()?)?)
//!     .policy(Policy::fixed_window("daily", Quota::per_day(10_000).build()?)?)
//!     .build()?;
//! let app = Router::new().route("/", get(|| async { "hello" })).layer(limit);
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:3000").await?;
//! // The default key is the peer address: serve with connect info.
//! axum::serve(listener, app.into_make_service_with_connect_info::<SocketAddr>()).await?;
//! # Ok(()) }
//! ```
//!
//! A response then carries (draft-ietf-httpapi-ratelimit-headers-11, see [`headers`]):
//!
//! ```text
//! RateLimit-Policy: "burst";q=10;w=1, "daily";q=10000;w=86400
//! RateLimit: "burst";r=19;t=1, "daily";r=9999;t=86400
//! ```
//!
//! and a rejected request gets `429` with `Retry-After` (whole seconds, rounded up, never 0), those
//! headers, `Cache-Control: no-store` and an RFC 9457 problem body naming the violated policies
//! ([`response`]).
//!
//! # How a request is handled
//!
//! 1. **Filters**: [`methods`](RateLimitBuilder::methods), [`skip`](RateLimitBuilder::skip) predicates and
//!    [`allow_list`](RateLimitBuilder::allow_list) let requests through untouched.
//! 2. **Key** ([`key`]): who is limited — the peer address by default; behind proxies, the right-most
//!    untrusted `X-Forwarded-For`/`Forwarded` hop; a verified user; a hashed API key; the matched route;
//!    global; your closure; combinations. IPv6 is keyed per /64. If no key can be built, the
//!    [`OnKeyError`] setting decides (explained 400/500 by default, never a silent 500).
//! 3. **Policies** ([`tier`]): the client's tier picks a [`PolicySet`] —
//!    several named policies checked all-or-nothing — and an optional global cap is checked on a shared
//!    key after it (reserve-then-refund). Tiers can be changed at run time without resetting counters.
//! 4. **Cost**: 1 by default, fixed per layer (e.g. per route with `route_layer`) or computed.
//! 5. **Store**: one atomic check per key in the store ([`MemoryStore`] by
//!    default, or any [`Store`], e.g. Redis). A store error follows
//!    [`on_store_error`](RateLimitBuilder::on_store_error) ([`OnFailure`]): fail closed with 503
//!    (default) or fail open — never a 429.
//! 6. **Answer**: allowed → the inner service runs and its response gets the headers (the handler gets
//!    the decision as a [`RateLimitInfo`] extractor with [`rate_limit_info`](RateLimitBuilder::rate_limit_info),
//!    and a [`NearLimit`] extension when close to the limit, if configured); limited → 429
//!    (or, in [shadow mode](RateLimitBuilder::shadow), a log line and the request goes through).
//!
//! # Layer order
//!
//! The rate-limit layer reads what the layers *outside* it put into the request: the [`Tier`] and
//! [`User`](key::User) extensions your authentication middleware sets after verifying a credential. So
//! authentication goes outside, the limiter inside it, the handlers inside both. With axum, a `.layer`
//! call wraps everything added before it, so the last one runs first:
//!
//! ```text
//! Router::new().route(..)
//!     .layer(rate_limit)   // runs second: sees Tier / User
//!     .layer(auth)         // runs first: verifies, sets Tier / User
//! ```
//!
//! (In a `tower::ServiceBuilder`, the first `.layer` is the outermost: list `auth` before the limiter.)
//! The other way round every client gets the default tier (and the IP fallback of a `User` key); the
//! layer logs one warning naming this fix when tiers are configured and the first 1,000 requests carried
//! no `Tier`, and a [`User`](key::User) key does when none of them carried its extension. A tier name that is not in
//! the table is warned about once per name (the request gets the default tier).
//!
//! Observability: `tracing` events per decision and rejection, and `metrics` counters plus a
//! decision-latency histogram ([`observe`]).
//!
//! # Layout
//!
//! As in tower: the middleware lives in [`rate_limit`] (`layer.rs`, `service.rs`, `future.rs`, the
//! decision pipeline in `decide.rs` and `respond.rs`); the header rendering ([`headers`]: the draft's
//! numbers, the fields' serialisation, byte writers, what a response carries) and forwarded-header
//! parsing ([`key::forwarded`]) are pure functions with their own tests and fuzz targets.
#![cfg_attr(docsrs, feature(doc_cfg))]
#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used))]

pub mod builder;
#[cfg(feature = "serde")]
#[cfg_attr(docsrs, doc(cfg(feature = "serde")))]
pub mod config;
mod first_requests;
pub mod headers;
pub mod key;
pub mod observe;
pub mod rate_limit;
pub mod response;
pub mod tier;

pub use builder::{ConfigError, DefaultStore, RateLimitBuilder};
pub use headers::{IetfRevision, LegacyReset};
pub use rate_limit::{
    MissingRateLimitInfo, NearLimit, OnKeyError, RateLimit, RateLimitInfo, RateLimitLayer,
    ResponseFuture,
};
pub use response::{Rejection, ResponseBody};
pub use tier::{Tier, TierFn, Tiers, TiersHandle};

// The core types this crate's API takes and returns, so that `cargo add ratelimit-tower` is enough for a
// server. Types only: the core crate itself stays a dependency of its own for those who want more.
#[cfg(feature = "redis")]
#[cfg_attr(docsrs, doc(cfg(feature = "redis")))]
pub use ratelimit_core::{store::redis::HybridStore, RedisStore, RedisStoreBuilder};
pub use ratelimit_core::{
    AlgorithmKind, Decision, MemoryStore, OnFailure, Outcome, Policy, PolicyError, PolicySet,
    Quota, QuotaBuilder, QuotaError, Status, Store, StoreError,
};

/// The crate's README (its crates.io page), compiled as a doc test so its code stays true.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
