//! reqwest support: (feature `reqwest-middleware`) a [`reqwest_middleware::Middleware`], and a tower
//! adapter over [`reqwest::Client`].
//!
//! ## With reqwest-middleware
//!
//! The way most reqwest code runs: [`RateLimitMiddleware`] in a `reqwest_middleware::ClientBuilder`, and the
//! usual `RequestBuilder` calls on the client it builds. A response that got past the rate limit carries
//! [`Attempts`](crate::Attempts); a refusal is a [`reqwest_middleware::Error::Middleware`] wrapping
//! [`Error`](crate::Error), which [`Error::from_middleware`](crate::Error::from_middleware) gets back.
//!
//! ```no_run
//! # #[cfg(feature = "reqwest-middleware")]
//! # async fn demo() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
//! use std::time::Duration;
//! use ratelimit_client::{profile::Ietf, reqwest::RateLimitMiddleware, Limiter, MaxWait};
//!
//! let client = reqwest_middleware::ClientBuilder::new(reqwest::Client::new())
//!     .with(RateLimitMiddleware::new(Limiter::new(Ietf::new())))
//!     .build();
//! let text = client
//!     .get("https://api.example.com/v1/items/42")
//!     .bearer_auth("my-token")
//!     .with_extension(MaxWait(Duration::from_secs(5)))
//!     .send()
//!     .await?
//!     .text()
//!     .await?;
//! # Ok(()) }
//! ```
//!
//! ## As a tower service
//!
//! `reqwest::Client` implements `tower::Service<reqwest::Request>`, not `Service<http::Request<B>>`, so
//! [`ReqwestService`] bridges the two (`http::Request` → `reqwest::Request` → `http::Response`), and the
//! layer can sit on top of it like on any other HTTP service. It sends any body the layer can replay:
//! `Full<Bytes>`, `Empty<Bytes>`, `Bytes`, `Vec<u8>`, `String`, `&'static str`, `reqwest::Body`
//! ([`IntoReqwestBody`]).
//!
//! ```no_run
//! use bytes::Bytes;
//! use http_body_util::Full;
//! use ratelimit_client::{profile::Discord, reqwest::ReqwestService, Limiter, RateLimitLayer};
//! use tower::Layer;
//!
//! # async fn demo() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
//! let client = RateLimitLayer::new(Limiter::new(Discord::new())).layer(ReqwestService::new(reqwest::Client::new()));
//! let req = http::Request::get("https://discord.com/api/v10/gateway").body(Full::new(Bytes::new()))?;
//! let res = client.oneshot(req).await?;
//! # Ok(()) }
//! ```

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::Body as HttpBody;
use http_body_util::{combinators::BoxBody, Empty, Full};
use tower_service::Service;

use crate::stamp::Stamped;
use crate::{BoxError, SentAt};

mod sealed {
    pub trait Sealed {}
}

/// A request body [`ReqwestService`] can send (and the layer can replay).
///
/// ```compile_fail
/// // A body reqwest cannot send is refused with a note naming the ones it can:
/// use std::borrow::Cow;
/// use ratelimit_client::{profile::Ietf, reqwest::ReqwestService, Limiter, RateLimitLayer, ReplayBody};
/// use tower::Layer;
///
/// struct Stream;
/// impl ReplayBody for Stream {
///     fn try_clone_body(&self) -> Option<Self> { None }
///     fn buffered_bytes(&self) -> Option<Cow<'_, [u8]>> { None }
/// }
/// # async fn demo() {
/// let client = RateLimitLayer::new(Limiter::new(Ietf::new())).layer(ReqwestService::default());
/// // error[E0277]: `ReqwestService` cannot send a `Stream` request body
/// let _ = client.oneshot(http::Request::new(Stream)).await;
/// # }
/// ```
#[diagnostic::on_unimplemented(
    message = "`ReqwestService` cannot send a `{Self}` request body",
    label = "not a body `ReqwestService` can send",
    note = "use `Full<Bytes>`, `Empty<Bytes>`, `Bytes`, `Vec<u8>`, `String`, `&'static str`, `reqwest::Body` or `BoxBody<Bytes, BoxError>`"
)]
pub trait IntoReqwestBody: sealed::Sealed + Send + 'static {
    #[doc(hidden)]
    fn into_body(self) -> SendBody;
}

pin_project_lite::pin_project! {
    /// What [`ReqwestService`] sends: a buffered body, a reqwest body, or a boxed stream (not nameable).
    #[doc(hidden)]
    #[project = SendBodyProj]
    pub enum SendBody {
        Full { #[pin] body: Full<Bytes> },
        Reqwest { #[pin] body: reqwest::Body },
        Boxed { #[pin] body: BoxBody<Bytes, BoxError> },
    }
}

impl HttpBody for SendBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, BoxError>>> {
        match self.project() {
            SendBodyProj::Full { body } => body.poll_frame(cx).map_err(|never| match never {}),
            SendBodyProj::Reqwest { body } => body.poll_frame(cx).map_err(Into::into),
            SendBodyProj::Boxed { body } => body.poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            SendBody::Full { body } => body.is_end_stream(),
            SendBody::Reqwest { body } => body.is_end_stream(),
            SendBody::Boxed { body } => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> http_body::SizeHint {
        match self {
            SendBody::Full { body } => body.size_hint(),
            SendBody::Reqwest { body } => body.size_hint(),
            SendBody::Boxed { body } => body.size_hint(),
        }
    }
}

macro_rules! buffered_reqwest_body {
    ($($t:ty => $to_bytes:expr),* $(,)?) => {$(
        impl sealed::Sealed for $t {}
        impl IntoReqwestBody for $t {
            fn into_body(self) -> SendBody {
                let to_bytes: fn($t) -> Bytes = $to_bytes;
                SendBody::Full { body: Full::new(to_bytes(self)) }
            }
        }
    )*};
}

buffered_reqwest_body! {
    Bytes => |b| b,
    Vec<u8> => Bytes::from,
    String => Bytes::from,
    &'static str => |s: &'static str| Bytes::from_static(s.as_bytes()),
    &'static [u8] => Bytes::from_static,
    Empty<Bytes> => |_| Bytes::new(),
}

impl sealed::Sealed for Full<Bytes> {}
impl IntoReqwestBody for Full<Bytes> {
    fn into_body(self) -> SendBody {
        SendBody::Full { body: self }
    }
}

impl sealed::Sealed for reqwest::Body {}
impl IntoReqwestBody for reqwest::Body {
    fn into_body(self) -> SendBody {
        SendBody::Reqwest { body: self }
    }
}

impl sealed::Sealed for BoxBody<Bytes, BoxError> {}
impl IntoReqwestBody for BoxBody<Bytes, BoxError> {
    fn into_body(self) -> SendBody {
        SendBody::Boxed { body: self }
    }
}

/// A `Service<http::Request<B>>` that sends requests with a [`reqwest::Client`].
#[derive(Debug, Clone, Default)]
pub struct ReqwestService {
    client: reqwest::Client,
}

impl ReqwestService {
    /// Wraps `client`.
    pub fn new(client: reqwest::Client) -> Self {
        ReqwestService { client }
    }
}

impl<B: IntoReqwestBody> Service<http::Request<B>> for ReqwestService {
    type Response = http::Response<reqwest::Body>;
    type Error = reqwest::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, reqwest::Error>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let (parts, body) = req.into_parts();
        let stamp = Arc::new(OnceLock::new());
        // The body notes when the connection first asks for it: the moment the request leaves.
        let body = Stamped::new(body.into_body(), stamp.clone());
        let req = http::Request::from_parts(parts, reqwest::Body::wrap(body));
        match reqwest::Request::try_from(req) {
            Ok(r) => {
                let fut = self.client.execute(r);
                Box::pin(async move {
                    let mut res = http::Response::from(fut.await?);
                    if let Some(&at) = stamp.get() {
                        res.extensions_mut().insert(SentAt(at));
                    }
                    Ok(res)
                })
            }
            Err(e) => Box::pin(std::future::ready(Err(e))),
        }
    }
}

#[cfg(feature = "reqwest-middleware")]
mod middleware;
#[cfg(feature = "reqwest-middleware")]
pub use middleware::RateLimitMiddleware;
