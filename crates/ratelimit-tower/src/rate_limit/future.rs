//! [`ResponseFuture`].

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use bytes::Bytes;
use http::{Request, Response};
use pin_project_lite::pin_project;
use tower_service::Service;

use super::{Action, Emit};
use crate::response::ResponseBody;

type Check = Pin<Box<dyn Future<Output = Action> + Send>>;

pin_project! {
    /// The response future of [`RateLimit`](super::RateLimit): the inner service's future plus the headers
    /// to add, or the layer's own answer. Boxes nothing for the in-memory store; holds one boxed store
    /// check for other stores.
    pub struct ResponseFuture<F, I, Req> {
        #[pin]
        state: State<F, I, Req>,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<F, I, Req> {
        Inner { #[pin] fut: F, emit: Option<Emit> },
        Respond { res: Option<Response<Bytes>> },
        Checking { check: Check, svc: Option<I>, req: Option<Req> },
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

    pub(crate) fn respond(res: Response<Bytes>) -> Self {
        ResponseFuture {
            state: State::Respond { res: Some(res) },
        }
    }

    pub(crate) fn checking(check: Check, svc: I, req: Req) -> Self {
        ResponseFuture {
            state: State::Checking {
                check,
                svc: Some(svc),
                req: Some(req),
            },
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
                    return Poll::Ready(Ok(res.map(ResponseBody::full)));
                }
                StateProj::Checking { check, svc, req } => {
                    let action = ready!(check.as_mut().poll(cx));
                    let (Some(mut svc), Some(mut req)) = (svc.take(), req.take()) else {
                        panic!("ResponseFuture polled after completion");
                    };
                    match action {
                        Action::Proceed(emit, near) => {
                            if let Some(near) = near {
                                req.extensions_mut().insert(near);
                            }
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
