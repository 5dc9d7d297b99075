//! The request body that notes the connection's first look at it.

use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::Instant;

use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;

pin_project! {
    /// A request body that records when the connection first looks at it (see the [module](super)).
    #[derive(Debug)]
    pub struct Stamped<B> {
        #[pin]
        body: B,
        stamp: Arc<OnceLock<Instant>>,
    }
}

impl<B> Stamped<B> {
    pub(crate) fn new(body: B, stamp: Arc<OnceLock<Instant>>) -> Self {
        Stamped { body, stamp }
    }
}

impl<B: Body> Body for Stamped<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<B::Data>, B::Error>>> {
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
