//! # ratelimit-client
//!
//! An outbound rate limiter for HTTP clients: a tower [`RateLimitLayer`] (and reqwest adapters) that reads
//! an upstream's rate-limit headers, waits *before* sending when a bucket is empty, and so never takes a
//! 429 it could have avoided, while running requests in parallel whenever the upstream allows.
//!
//! ## How it works
//!
//! A [`Profile`] knows one upstream's dialect: it classifies a request into a route
//! (Discord: method + route template + major parameter) and reads responses into observations (bucket
//! limit, remaining, reset; 429 scope and precise wait; 401; bans). The [`Limiter`] is the scheduler shared
//! by every profile:
//!
//! * **Buckets.** A route's first request probes alone; the response names the bucket and how much is
//!   left. Then up to `remaining − in_flight` requests run in parallel. When the bucket is empty, requests
//!   wait in FIFO order (per [`Lane`]) until the reset measured on a monotonic clock, and are released one
//!   by one only while the refreshed allowance lasts. Every response bounds the upstream's reset from both
//!   sides (`send + Reset-After` and `receive + Reset-After`), so the next window's requests leave just
//!   early enough to *arrive* at the reset rather than a round trip late ([`Config::latency_compensation`],
//!   [`Config::reset_margin`]; the reasoning and its assumptions are in the scheduler's source docs).
//! * **Shared hashes.** Routes reporting the same bucket hash for the same major share one counter until a
//!   response proves a route keeps its own count (Discord message create/edit), then they are split.
//! * **Global limit.** At most N requests (50 by default) per token in any window of 1 s + a margin, kept as
//!   an exact sliding log (`ratelimit_core::SlidingLog`), and counted at send time; a global 429 locks the
//!   token for the precise `retry_after`. Interaction callbacks and follow-ups are exempt. Slots go to the
//!   oldest call, except that a route with more than a window of work queued goes first, and slots are set
//!   aside for such a route when its bucket is about to reset (nobody is held back longer than one window):
//!   the run ends when its longest queue does.
//! * **Scopes and sub-limits.** A `shared` 429 blocks the bucket but is not counted as invalid; a `user` 429
//!   while `Remaining > 0` is a hidden sub-limit: requests with the same body shape wait in their own lane
//!   while the rest of the route proceeds.
//! * **Safety.** An invalid-request budget (401, 403 and non-shared 429 per 10 minutes) warns, sheds
//!   non-urgent work, then stops; a Cloudflare ban stops all traffic and probes with exponential backoff; a
//!   401 stops the token. Deadlines ([`MaxWait`]) fail fast with [`Error::WouldWait`].
//! * **Hostile upstreams.** Headers and bodies are checked against what the protocol can produce
//!   ([`parse::ParseError`]): contradictory or malformed counts are no evidence (never permission to send
//!   more), numbers above [`parse::Caps`] are clamped, and names the upstream chooses are bounded in bytes
//!   ([`parse::bounded_name`]). What the client keeps is bounded in bytes: at most
//!   [`Config::max_buckets`] counters and [`Config::max_routes`] routes, each with bounded keys. At the
//!   bucket cap the least recently used counter makes room for a new bucket.
//! * **Cancellation.** Dropping a request future at any await gives back everything it held (queue
//!   position, global-slot wait or reservation, in-flight counts, probe); [`Limiter::occupancy`] shows it.
//!
//! ## Observability
//!
//! `tracing` events: `warn` on every upstream 429 (route, scope, wait), sub-limits, bans, invalid-budget
//! thresholds, and once per kind of malformed header; `info`/`debug` on hash learning, hash changes and counter splits.
//! `metrics` counters and gauges (through the `metrics` facade, free when no recorder is installed):
//! `ratelimit_client_429_total{scope}`, `ratelimit_client_responses_total{class}`,
//! `ratelimit_client_wait_seconds{route}` (histogram), `ratelimit_client_deadline_total`,
//! `ratelimit_client_sublimits_total`, `ratelimit_client_bans_total`, `ratelimit_client_unauthorized_total`,
//! `ratelimit_client_invalid_requests` (gauge), `ratelimit_client_global_used` (gauge, share of the global
//! limit in use), `ratelimit_client_hash_learned_total`, `ratelimit_client_hash_split_total`,
//! `ratelimit_client_malformed_total{kind}` (upstream values rejected or clamped; each kind is also logged
//! once at `warn`), `ratelimit_client_bucket_cap_total{outcome}` (counters evicted at the cap, or buckets
//! not tracked; the two situations that need a larger cap are logged once).
//! [`Limiter::snapshot`] returns known buckets (limit, available, in flight, reset), routes (queued,
//! sub-limits), global use per token, stopped tokens, the invalid-request count and any ban.
//!
//! ## Examples
//!
//! The common case, an API with IETF `RateLimit` or `Retry-After` headers called through
//! `reqwest-middleware` (feature `reqwest-middleware`), keeping every `RequestBuilder` convenience:
//!
//! ```no_run
//! # #[cfg(feature = "reqwest-middleware")]
//! # async fn demo() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
//! use ratelimit_client::{profile::Ietf, reqwest::RateLimitMiddleware, Attempts, Limiter};
//!
//! let client = reqwest_middleware::ClientBuilder::new(reqwest::Client::new())
//!     .with(RateLimitMiddleware::new(Limiter::new(Ietf::new())))
//!     .build();
//! let res = client
//!     .post("https://api.example.com/v1/items")
//!     .bearer_auth("my-token")
//!     .json(&serde_json::json!({ "name": "widget" }))
//!     .send()
//!     .await?;
//! println!("waited {:?}", Attempts::of(res.extensions()).waited);
//! let created: serde_json::Value = res.error_for_status()?.json().await?;
//! # Ok(()) }
//! ```
//!
//! Any tower `Service<http::Request<B>>` (hyper's client, a `ServiceBuilder` stack) takes the
//! [`RateLimitLayer`]; here a stand-in upstream with one IETF policy of 5 requests:
//!
//! ```
//! use bytes::Bytes;
//! use http_body_util::Full;
//! use ratelimit_client::{profile::Ietf, Limiter, RateLimitLayer};
//! use tower::{service_fn, Layer};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
//! let upstream = service_fn(|_req: http::Request<Full<Bytes>>| async {
//!     let res = http::Response::builder()
//!         .header("ratelimit-policy", r#""burst";q=5;w=10"#)
//!         .header("ratelimit", r#""burst";r=4;t=10"#)
//!         .body(Full::new(Bytes::from_static(b"{}")))?;
//!     Ok::<_, http::Error>(res)
//! });
//! let limiter = Limiter::new(Ietf::new());
//! let client = RateLimitLayer::new(limiter.clone()).layer(upstream);
//! let req = http::Request::get("https://api.example.com/v1/items/42")
//!     .header("authorization", "Bearer my-token")
//!     .body(Full::new(Bytes::new()))?;
//! let res = client.oneshot(req).await?;
//! assert_eq!(res.status(), 200);
//! assert_eq!(limiter.snapshot().buckets[0].available, 4);
//! # Ok(()) }
//! ```
//!
//! The crate's README has a Discord bot, hyper's client, outcomes and credentials in full; see also
//! [`Credential`] (which part of a request names the API key), [`MaxWait`] and [`Attempts`].
#![cfg_attr(docsrs, feature(doc_cfg))]
#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used))]

mod attempt;
pub mod body;
mod error;
mod hex;
pub mod layer;
pub mod parse;
pub mod profile;
pub mod scheduler;
pub mod stamp;

#[cfg(feature = "reqwest")]
#[cfg_attr(docsrs, doc(cfg(feature = "reqwest")))]
pub mod reqwest;

#[cfg(feature = "redis")]
#[cfg_attr(docsrs, doc(cfg(feature = "redis")))]
pub mod shared;

pub use attempt::Attempts;
pub use body::{ReplayBody, ResponseBody};
pub use error::{BoxError, Error};
pub use layer::{RateLimit, RateLimitLayer};
pub use profile::{Credential, Lane, Profile, RequestView};
pub use ratelimit_core::{Clock, ManualClock, Micros};
pub use scheduler::{
    BucketStatus, Config, ConfigError, Exhausted, InvalidBudget, Limiter, LimiterBuilder, MaxWait,
    Occupancy, RouteStatus, SentAt, Snapshot, DEFAULT_MAX_WAIT_WITHIN_COMMON_REQUEST_TIMEOUTS,
};
pub use stamp::StampSentLayer;

/// The crate's README (its crates.io page), compiled as a doc test so its code stays true. Its examples use
/// reqwest-middleware and the shared budget, so it is checked when both are on (`--all-features`).
#[cfg(all(doctest, feature = "reqwest-middleware", feature = "redis"))]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
