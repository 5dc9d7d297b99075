//! [`ResponseFuture`].

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use bytes::Bytes;
use http::{Request, Response};
use pin_project_lite::pin_project;
use tower_service::Service;

use super::Action;
use crate::headers::Emit;
use crate::response::ResponseBody;

/// A store check that owns the inner service and the request until it has decided (boxed: store futures
/// borrow what they check; see the [parent module](super)).
pub(crate) type Check<I, Req> = Pin<Box<dyn Future<Output = (Action, I, Req)> + Send>>;

pin_project! {
    /// The response future of [`RateLimit`](super::RateLimit): the inner service's future plus the headers
    /// to add, or the layer's own answer. Boxes nothing for the in-memory store; holds one boxed store
    /// check for other stores.
    ///
    /// Kept small (the inner future, the headers to add and a tag): futures are moved when they are
    /// pinned and boxed, so the rarer states keep their large parts behind a pointer — the layer's own
    /// answer (429 and the like) and the store check, which owns the service and the request.
    pub struct ResponseFuture<F, I, Req> {
        #[pin]
        state: State<F, I, Req>,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<F, I, Req> {
        Inner { #[pin] fut: F, emit: Option<Emit> },
        Respond { res: Option<Box<Response<Bytes>>> },
        Checking { check: Check<I, Req> },
    }
}

impl<F, I, Req> fmt::Debug for ResponseFuture<F, I, Req> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ResponseFuture")
    }
}

impl<F, I, Req> ResponseFuture<F, I, Req> {
    pub(crate) fn inner(fut: F, emit: Option<Emit>) -> Self {
        ResponseFuture {
            state: State::Inner { fut, emit },
        }
    }

    pub(crate) fn respond(res: Box<Response<Bytes>>) -> Self {
        ResponseFuture {
            state: State::Respond { res: Some(res) },
        }
    }

    pub(crate) fn checking(check: Check<I, Req>) -> Self {
        ResponseFuture {
            state: State::Checking { check },
        }
    }
}

impl<F, I, ReqB, ResB, E> Future for ResponseFuture<F, I, Request<ReqB>>
where
    F: Future<Output = Result<Response<ResB>, E>>,
    I: Service<Request<ReqB>, Future = F, Response = Response<ResB>, Error = E>,
{
    type Output = Result<Response<ResponseBody<ResB>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut state = self.project().state;
        loop {
            match state.as_mut().project() {
                StateProj::Inner { fut, emit } => {
                    let res = ready!(fut.poll(cx))?;
                    let mut res = res.map(|body| ResponseBody::Inner { body });
                    if let Some(emit) = emit.take() {
                        emit.apply(res.headers_mut());
                    }
                    return Poll::Ready(Ok(res));
                }
                StateProj::Respond { res } => {
                    let Some(res) = res.take() else {
                        panic!("ResponseFuture polled after completion");
                    };
                    return Poll::Ready(Ok((*res).map(ResponseBody::full)));
                }
                StateProj::Checking { check } => {
                    let (action, mut svc, mut req) = ready!(check.as_mut().poll(cx));
                    match action {
                        Action::Proceed(emit, carry) => {
                            carry.insert_into(req.extensions_mut());
                            let fut = svc.call(req);
                            state.set(State::Inner {
                                fut,
                                emit: Some(emit),
                            });
                        }
                        Action::Respond(res) => state.set(State::Respond { res: Some(res) }),
                    }
                }
            }
        }
    }
}
