use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use crate::Error;

/// The response future of [`RateLimit`](super::RateLimit).
///
/// It is boxed: one request may wait, retry and read a body across several inner calls, and the boxed
/// async state machine (one allocation per request) is far below the latency budget.
pub struct ResponseFuture<T> {
    pub(crate) inner: Pin<Box<dyn Future<Output = Result<T, Error>> + Send>>,
}

impl<T> fmt::Debug for ResponseFuture<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseFuture").finish_non_exhaustive()
    }
}

impl<T> Future for ResponseFuture<T> {
    type Output = Result<T, Error>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        self.inner.as_mut().poll(cx)
    }
}
