//! The tower middleware: [`RateLimitLayer`] wraps any `Service<http::Request<B>>` (hyper's client, a
//! `tower::ServiceBuilder` stack, [`ReqwestService`](crate::reqwest::ReqwestService)).
//!
//! Each call is classified by the profile, admitted by the [`Limiter`](crate::Limiter) (waiting, or
//! failing fast past its deadline), sent, and its response read back into the limiter; 429s are retried
//! after the precise wait and transient errors with backoff, both bounded. The request body must be one
//! the layer can replay and read ([`ReplayBody`](crate::ReplayBody)).
//!
//! ```no_run
//! use bytes::Bytes;
//! use http_body_util::Full;
//! use ratelimit_client::{profile::Discord, Limiter, RateLimitLayer};
//! use tower::{service_fn, Layer};
//!
//! # async fn demo() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
//! let upstream = service_fn(|_req: http::Request<Full<Bytes>>| async {
//!     Ok::<_, std::convert::Infallible>(http::Response::new(Full::new(Bytes::new())))
//! });
//! let svc = RateLimitLayer::new(Limiter::new(Discord::new())).layer(upstream);
//! let req = http::Request::post("https://discord.com/api/v10/channels/1/messages")
//!     .header("authorization", "Bot token")
//!     .body(Full::new(Bytes::from_static(b"{\"content\":\"hi\"}")))?;
//! let response = svc.oneshot(req).await?;
//! # Ok(()) }
//! ```

mod future;
#[allow(clippy::module_inception)]
mod layer;
mod service;

pub use future::ResponseFuture;
pub use layer::RateLimitLayer;
pub use service::RateLimit;
