//! The response future of [`StampSent`](super::StampSent).

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{ready, Context, Poll};
use std::time::Instant;

use http::Response;
use pin_project_lite::pin_project;

use crate::SentAt;

pin_project! {
    /// The response future of [`StampSent`](super::StampSent): the inner future's response, with
    /// [`SentAt`] in its extensions.
    #[derive(Debug)]
    pub struct StampFuture<F> {
        #[pin]
        inner: F,
        stamp: Arc<OnceLock<Instant>>,
    }
}

impl<F> StampFuture<F> {
    pub(super) fn new(inner: F, stamp: Arc<OnceLock<Instant>>) -> Self {
        StampFuture { inner, stamp }
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
