//! When a request really left: [`StampSentLayer`] goes between [`RateLimitLayer`](crate::RateLimitLayer)
//! and a transport such as hyper's client, and tells the limiter the moment the connection first looked at
//! the request's body ([`SentAt`](crate::SentAt)).
//!
//! Why it matters: the limiter releases the next window's requests so that they *arrive* at the
//! upstream's reset, judging the way there from past requests' send and receive times. Without a stamp
//! the send time is the admission time, so a request that first had to open a connection (or wait for a
//! pooled one, or finish a TLS handshake) looks as if its way to the upstream were longer than it is, and
//! later requests are released early enough to arrive before the reset: avoidable 429s. hyper asks for a
//! request's body once a connection is ready and the head is being written, so its first look is the
//! send time. (The reqwest adapters stamp their requests themselves.)
//!
//! ```
//! use bytes::Bytes;
//! use http_body_util::Full;
//! use hyper_util::{client::legacy::Client, rt::TokioExecutor};
//! use ratelimit_client::profile::RetryAfter;
//! use ratelimit_client::stamp::{StampSentLayer, Stamped};
//! use ratelimit_client::{Limiter, RateLimitLayer};
//! use tower::ServiceBuilder;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let hyper = Client::builder(TokioExecutor::new()).build_http::<Stamped<Full<Bytes>>>();
//! let client = ServiceBuilder::new()
//!     .layer(RateLimitLayer::new(Limiter::new(RetryAfter::new())))
//!     .layer(StampSentLayer::new())
//!     .service(hyper);
//! # let _ = client;
//! # }
//! ```

mod body;
mod future;
mod service;

pub use body::Stamped;
pub use future::StampFuture;
pub use service::{StampSent, StampSentLayer};
