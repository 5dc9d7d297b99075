//! Request bodies the layer can replay and read, and the response body it returns.
//!
//! Retrying a request means sending its body again, so the layer asks the body for a copy before each
//! attempt ([`ReplayBody::try_clone_body`]); and a route with a hidden sub-limit sorts its requests by the
//! shape of their JSON body, so the layer may read the body's bytes ([`ReplayBody::buffered_bytes`]). Every buffered
//! body type does both:
//!
//! | body                                   | replayed | read for sub-limits |
//! |----------------------------------------|----------|---------------------|
//! | `Full<Bytes>`, `Empty<Bytes>`          | yes      | yes                 |
//! | `Bytes`, `Vec<u8>`, `String`, `&'static str` | yes | yes                 |
//! | `reqwest::Body` (feature `reqwest`) built from bytes | yes | yes         |
//! | `reqwest::Body` wrapping a stream      | no: sent once, a retry it would need is [`Error::NotReplayable`](crate::Error::NotReplayable) | no |
//! | `BoxBody`, `UnsyncBoxBody`             | no: as above | no               |
//!
//! Any other type is refused at compile time, and the compiler says the body "cannot be replayed for a retry
//! nor read by the rate limiter" and lists the types that can (with the layer's own `oneshot`, `ready` and
//! `call`; a stack with more layers on top may only report that its `Service` bounds are not met: then the
//! request body is not a [`ReplayBody`]). A streaming body of your own can implement [`ReplayBody`] and
//! return `None` from both methods (it is sent once; a retry it would need fails with
//! [`Error::NotReplayable`](crate::Error::NotReplayable)); an incoming body a proxy forwards
//! (`hyper::body::Incoming`, `axum::body::Body`) is buffered first (`BodyExt::collect`, then `Full<Bytes>`)
//! so that it can be retried.
//!
//! ```compile_fail
//! // A body type the layer can neither replay nor read does not compile:
//! use ratelimit_client::{profile::Ietf, Limiter, RateLimitLayer};
//! use tower::{service_fn, Layer, ServiceExt};
//!
//! struct Stream;
//! # async fn demo() {
//! let upstream = service_fn(|_req: http::Request<Stream>| async {
//!     Ok::<_, std::convert::Infallible>(http::Response::new(String::new()))
//! });
//! let mut client = RateLimitLayer::new(Limiter::new(Ietf::new())).layer(upstream);
//! // error[E0277]: `Stream` cannot be replayed for a retry nor read by the rate limiter
//! let _ = client.ready().await.unwrap().call(http::Request::new(Stream)).await;
//! # }
//! ```

use std::borrow::Cow;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use http_body_util::{Empty, Full};
use pin_project_lite::pin_project;

/// A request body the layer can copy for a retry and read to tell sub-limited requests apart.
///
/// Implemented for every buffered body type (see the [module docs](self)); a stream returns `None` from
/// both methods, is sent once, and a retry it would need fails with
/// [`Error::NotReplayable`](crate::Error::NotReplayable).
///
/// ```
/// use bytes::Bytes;
/// use http_body_util::Full;
/// use ratelimit_client::ReplayBody;
///
/// let body = Full::new(Bytes::from_static(b"{\"name\":\"general\"}"));
/// assert!(body.try_clone_body().is_some());
/// assert_eq!(body.buffered_bytes().as_deref(), Some(&b"{\"name\":\"general\"}"[..]));
/// ```
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot be replayed for a retry nor read by the rate limiter",
    label = "this request body type does not implement `ReplayBody`",
    note = "use a buffered body: `Full<Bytes>`, `Empty<Bytes>`, `Bytes`, `Vec<u8>`, `String`, `&'static str` or `reqwest::Body`",
    note = "for a stream sent once, implement `ReplayBody` for it and return `None` from both methods"
)]
pub trait ReplayBody: Sized {
    /// A copy of the body for another attempt, or `None` for a stream that can only be sent once.
    fn try_clone_body(&self) -> Option<Self>;

    /// The body's bytes, when buffered: read only on routes with an active sub-limit and on rate-limited
    /// responses, to fingerprint the request's JSON shape. `None` for a stream.
    fn buffered_bytes(&self) -> Option<Cow<'_, [u8]>>;
}

impl ReplayBody for Full<Bytes> {
    fn try_clone_body(&self) -> Option<Self> {
        Some(self.clone())
    }
    fn buffered_bytes(&self) -> Option<Cow<'_, [u8]>> {
        // `Full` does not lend its bytes: a copy of it yields them as its one frame, at once.
        let mut copy = self.clone();
        let mut cx = Context::from_waker(Waker::noop());
        match Pin::new(&mut copy).poll_frame(&mut cx) {
            Poll::Ready(Some(Ok(frame))) => frame.into_data().ok().map(|b| Cow::Owned(b.into())),
            Poll::Ready(None) => Some(Cow::Borrowed(&[])),
            Poll::Ready(Some(Err(never))) => match never {},
            Poll::Pending => None,
        }
    }
}

impl ReplayBody for Empty<Bytes> {
    fn try_clone_body(&self) -> Option<Self> {
        Some(*self)
    }
    fn buffered_bytes(&self) -> Option<Cow<'_, [u8]>> {
        Some(Cow::Borrowed(&[]))
    }
}

impl ReplayBody for Bytes {
    fn try_clone_body(&self) -> Option<Self> {
        Some(self.clone())
    }
    fn buffered_bytes(&self) -> Option<Cow<'_, [u8]>> {
        Some(Cow::Borrowed(self))
    }
}

impl ReplayBody for String {
    fn try_clone_body(&self) -> Option<Self> {
        Some(self.clone())
    }
    fn buffered_bytes(&self) -> Option<Cow<'_, [u8]>> {
        Some(Cow::Borrowed(self.as_bytes()))
    }
}

impl ReplayBody for Vec<u8> {
    fn try_clone_body(&self) -> Option<Self> {
        Some(self.clone())
    }
    fn buffered_bytes(&self) -> Option<Cow<'_, [u8]>> {
        Some(Cow::Borrowed(self))
    }
}

impl ReplayBody for &'static str {
    fn try_clone_body(&self) -> Option<Self> {
        Some(self)
    }
    fn buffered_bytes(&self) -> Option<Cow<'_, [u8]>> {
        Some(Cow::Borrowed(self.as_bytes()))
    }
}

impl ReplayBody for &'static [u8] {
    fn try_clone_body(&self) -> Option<Self> {
        Some(self)
    }
    fn buffered_bytes(&self) -> Option<Cow<'_, [u8]>> {
        Some(Cow::Borrowed(self))
    }
}

impl ReplayBody for http_body_util::combinators::UnsyncBoxBody<Bytes, crate::BoxError> {
    fn try_clone_body(&self) -> Option<Self> {
        None
    }
    fn buffered_bytes(&self) -> Option<Cow<'_, [u8]>> {
        None
    }
}

impl ReplayBody for http_body_util::combinators::BoxBody<Bytes, crate::BoxError> {
    fn try_clone_body(&self) -> Option<Self> {
        None
    }
    fn buffered_bytes(&self) -> Option<Cow<'_, [u8]>> {
        None
    }
}

#[cfg(feature = "reqwest")]
impl ReplayBody for reqwest::Body {
    fn try_clone_body(&self) -> Option<Self> {
        self.as_bytes()
            .map(|b| reqwest::Body::from(Bytes::copy_from_slice(b)))
    }
    fn buffered_bytes(&self) -> Option<Cow<'_, [u8]>> {
        self.as_bytes().map(Cow::Borrowed)
    }
}

pin_project! {
    #[allow(missing_docs)]
    /// The response body returned by the layer: the inner service's body, or the buffered copy of a body
    /// the layer had to read (a 429's JSON).
    #[project = ResponseBodyProj]
    #[derive(Debug)]
    pub enum ResponseBody<B> {
        /// The inner body, untouched.
        Inner { #[pin] body: B },
        /// A body the layer read and buffered.
        Buffered { body: Full<Bytes> },
    }
}

impl<B> ResponseBody<B> {
    pub(crate) fn inner(body: B) -> Self {
        ResponseBody::Inner { body }
    }

    pub(crate) fn buffered(bytes: Bytes) -> Self {
        ResponseBody::Buffered {
            body: Full::new(bytes),
        }
    }
}

impl<B: Body<Data = Bytes>> Body for ResponseBody<B> {
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        match self.project() {
            ResponseBodyProj::Inner { body } => body.poll_frame(cx),
            ResponseBodyProj::Buffered { body } => match Pin::new(body).poll_frame(cx) {
                Poll::Ready(Some(Ok(f))) => Poll::Ready(Some(Ok(f))),
                Poll::Ready(Some(Err(never))) => match never {},
                Poll::Ready(None) => Poll::Ready(None),
                Poll::Pending => Poll::Pending,
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ResponseBody::Inner { body } => body.is_end_stream(),
            ResponseBody::Buffered { body } => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ResponseBody::Inner { body } => body.size_hint(),
            ResponseBody::Buffered { body } => body.size_hint(),
        }
    }
}
