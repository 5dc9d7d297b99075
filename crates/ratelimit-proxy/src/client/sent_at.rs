//! Tells the limiter when each request actually left ([`SentAt`]): hyper asks for the body once a
//! connection is ready and the head is being written, so the first look at the body is the send time,
//! after any connection or TLS handshake. Without it the limiter takes the admission time, and a request
//! that had to open a connection looks as if its way to the upstream were longer: the next window's
//! requests would then be released early enough to arrive before the reset.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{ready, Context, Poll};
use std::time::Instant;

use bytes::Bytes;
use http::{Request, Response};
use http_body::{Body, Frame, SizeHint};
use http_body_util::Full;
use pin_project_lite::pin_project;
use ratelimit_client::SentAt;
use tower_service::Service;

pin_project! {
    /// A request body that notes when the connection first looks at it.
    #[derive(Debug)]
    pub(crate) struct Stamped {
        #[pin]
        body: Full<Bytes>,
        stamp: Arc<OnceLock<Instant>>,
    }
}

impl Body for Stamped {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = self.project();
        this.stamp.get_or_init(Instant::now);
        this.body.poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        // An empty body is never polled: asking whether it is finished is the connection's first look.
        self.stamp.get_or_init(Instant::now);
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

/// Sends through `S` with a [`Stamped`] body and puts [`SentAt`] in the response's extensions.
#[derive(Debug, Clone)]
pub(crate) struct StampSent<S> {
    inner: S,
}

impl<S> StampSent<S> {
    pub(crate) fn new(inner: S) -> Self {
        StampSent { inner }
    }
}

impl<S, RB> Service<Request<Full<Bytes>>> for StampSent<S>
where
    S: Service<Request<Stamped>, Response = Response<RB>>,
{
    type Response = Response<RB>;
    type Error = S::Error;
    type Future = StampFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<Full<Bytes>>) -> Self::Future {
        let stamp = Arc::new(OnceLock::new());
        let req = req.map(|body| Stamped {
            body,
            stamp: Arc::clone(&stamp),
        });
        StampFuture {
            inner: self.inner.call(req),
            stamp,
        }
    }
}

pin_project! {
    /// The response future of [`StampSent`].
    #[derive(Debug)]
    pub(crate) struct StampFuture<F> {
        #[pin]
        inner: F,
        stamp: Arc<OnceLock<Instant>>,
    }
}

impl<F, RB, E> Future for StampFuture<F>
where
    F: Future<Output = Result<Response<RB>, E>>,
{
    type Output = Result<Response<RB>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let mut res = ready!(this.inner.poll(cx))?;
        if let Some(&at) = this.stamp.get() {
            res.extensions_mut().insert(SentAt(at));
        }
        Poll::Ready(Ok(res))
    }
}
