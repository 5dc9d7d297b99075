//! The layer and the service that wrap each request's body in a [`Stamped`] one.

use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};

use http::{Request, Response};
use tower_layer::Layer;
use tower_service::Service;

use super::{StampFuture, Stamped};

/// Wraps a transport in [`StampSent`] (see the [module](super)).
#[derive(Debug, Clone, Copy, Default)]
pub struct StampSentLayer {
    _private: (),
}

impl StampSentLayer {
    /// The layer.
    pub fn new() -> Self {
        StampSentLayer::default()
    }
}

impl<S> Layer<S> for StampSentLayer {
    type Service = StampSent<S>;

    fn layer(&self, inner: S) -> StampSent<S> {
        StampSent::new(inner)
    }
}

/// Sends each request through `S` with a [`Stamped`] body, and puts [`SentAt`](crate::SentAt) into the
/// response's extensions when the body was looked at.
#[derive(Debug, Clone)]
pub struct StampSent<S> {
    inner: S,
}

impl<S> StampSent<S> {
    /// Wraps `inner`.
    pub fn new(inner: S) -> Self {
        StampSent { inner }
    }
}

impl<S, B, RB> Service<Request<B>> for StampSent<S>
where
    S: Service<Request<Stamped<B>>, Response = Response<RB>>,
{
    type Response = Response<RB>;
    type Error = S::Error;
    type Future = StampFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let stamp = Arc::new(OnceLock::new());
        let req = req.map(|body| Stamped::new(body, Arc::clone(&stamp)));
        StampFuture::new(self.inner.call(req), stamp)
    }
}
