//! Request bodies that can be replayed, and the response body the layer returns.
//!
//! Retrying a request means sending its body again, so the layer asks the body for a copy before each
//! attempt ([`ReplayBody::try_clone_body`]). Buffered bodies (`Full<Bytes>`, `Bytes`, `String`, `Vec<u8>`,
//! `Empty`) can; a streaming body returns `None`, is sent once, and a retry it would need becomes
//! [`Error::NotReplayable`](crate::Error::NotReplayable) instead of a silent resend of nothing.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use http_body_util::{Empty, Full};
use pin_project_lite::pin_project;

/// A request body that may be copied for a retry.
pub trait ReplayBody: Sized {
    /// A copy of the body for another attempt, or `None` for a stream that can only be sent once.
    fn try_clone_body(&self) -> Option<Self>;

    /// The body's bytes, when buffered (used to fingerprint requests that hit a sub-limit).
    fn bytes(&self) -> Option<&[u8]> {
        None
    }
}

impl ReplayBody for Full<Bytes> {
    fn try_clone_body(&self) -> Option<Self> {
        Some(self.clone())
    }
}

impl ReplayBody for Empty<Bytes> {
    fn try_clone_body(&self) -> Option<Self> {
        Some(*self)
    }
}

impl ReplayBody for Bytes {
    fn try_clone_body(&self) -> Option<Self> {
        Some(self.clone())
    }
    fn bytes(&self) -> Option<&[u8]> {
        Some(self)
    }
}

impl ReplayBody for String {
    fn try_clone_body(&self) -> Option<Self> {
        Some(self.clone())
    }
    fn bytes(&self) -> Option<&[u8]> {
        Some(self.as_bytes())
    }
}

impl ReplayBody for Vec<u8> {
    fn try_clone_body(&self) -> Option<Self> {
        Some(self.clone())
    }
    fn bytes(&self) -> Option<&[u8]> {
        Some(self)
    }
}

impl ReplayBody for http_body_util::combinators::UnsyncBoxBody<Bytes, crate::BoxError> {
    fn try_clone_body(&self) -> Option<Self> {
        None
    }
}

impl ReplayBody for http_body_util::combinators::BoxBody<Bytes, crate::BoxError> {
    fn try_clone_body(&self) -> Option<Self> {
        None
    }
}

#[cfg(feature = "reqwest")]
impl ReplayBody for reqwest::Body {
    fn try_clone_body(&self) -> Option<Self> {
        self.as_bytes()
            .map(|b| reqwest::Body::from(Bytes::copy_from_slice(b)))
    }
    fn bytes(&self) -> Option<&[u8]> {
        self.as_bytes()
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
