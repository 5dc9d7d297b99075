use std::borrow::Cow;
use std::future::Future;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{HeaderMap, Request, Response, StatusCode};
use http_body::Body;
use http_body_util::BodyExt;
use tower_service::Service;

use super::ResponseFuture;
use crate::attempt::{self, Exchange, Failure, MAX_OBSERVED_BODY};
use crate::body::{ReplayBody, ResponseBody};
use crate::profile::Profile;
use crate::{BoxError, Error, Limiter};

/// The service built by [`RateLimitLayer`](super::RateLimitLayer).
#[derive(Debug)]
pub struct RateLimit<S, P> {
    inner: S,
    limiter: Limiter<P>,
}

impl<S: Clone, P> Clone for RateLimit<S, P> {
    fn clone(&self) -> Self {
        RateLimit {
            inner: self.inner.clone(),
            limiter: self.limiter.clone(),
        }
    }
}

impl<S, P> RateLimit<S, P> {
    /// Wraps `inner` with `limiter`.
    pub fn new(inner: S, limiter: Limiter<P>) -> Self {
        RateLimit { inner, limiter }
    }

    /// The limiter (for snapshots).
    pub fn limiter(&self) -> &Limiter<P> {
        &self.limiter
    }

    // `ServiceExt::oneshot`, `ServiceExt::ready` and `Service::call` again, as inherent methods (which method
    // calls find first): called through the traits with a request body the layer cannot replay, rustc only
    // says the layer's `Service<_>` bounds are not met; called here, it names the body and `ReplayBody`.

    /// Sends one request: the same as `tower::ServiceExt::oneshot` (the layer is always ready).
    ///
    /// ```compile_fail
    /// use ratelimit_client::{profile::Ietf, Limiter, RateLimitLayer};
    /// use tower::{service_fn, Layer};
    ///
    /// struct Stream;
    /// # async fn demo() {
    /// let upstream = service_fn(|_req: http::Request<Stream>| async {
    ///     Ok::<_, std::convert::Infallible>(http::Response::new(String::new()))
    /// });
    /// let client = RateLimitLayer::new(Limiter::new(Ietf::new())).layer(upstream);
    /// // error[E0277]: `Stream` cannot be replayed for a retry nor read by the rate limiter
    /// let _ = client.oneshot(http::Request::new(Stream)).await;
    /// # }
    /// ```
    pub fn oneshot<B, RB>(mut self, req: Request<B>) -> ResponseFuture<Response<ResponseBody<RB>>>
    where
        S: Service<Request<B>, Response = Response<RB>> + Clone + Send + 'static,
        S::Future: Send,
        S::Error: Into<BoxError> + Send,
        P: Profile,
        B: ReplayBody + Send + 'static,
        RB: Body<Data = Bytes> + Send + 'static,
        RB::Error: Into<BoxError>,
    {
        Service::call(&mut self, req)
    }

    /// The same as `tower::ServiceExt::ready`: the layer is always ready (it waits for the inner service's
    /// readiness before each attempt).
    pub fn ready(&mut self) -> std::future::Ready<Result<&mut Self, Error>> {
        std::future::ready(Ok(self))
    }

    /// Sends one request: the same as `tower::Service::call`.
    pub fn call<B, RB>(&mut self, req: Request<B>) -> ResponseFuture<Response<ResponseBody<RB>>>
    where
        S: Service<Request<B>, Response = Response<RB>> + Clone + Send + 'static,
        S::Future: Send,
        S::Error: Into<BoxError> + Send,
        P: Profile,
        B: ReplayBody + Send + 'static,
        RB: Body<Data = Bytes> + Send + 'static,
        RB::Error: Into<BoxError>,
    {
        Service::call(self, req)
    }
}

impl<S, P, B, RB> Service<Request<B>> for RateLimit<S, P>
where
    S: Service<Request<B>, Response = Response<RB>> + Clone + Send + 'static,
    S::Future: Send,
    S::Error: Into<BoxError> + Send,
    P: Profile,
    B: ReplayBody + Send + 'static,
    RB: Body<Data = Bytes> + Send + 'static,
    RB::Error: Into<BoxError>,
{
    type Response = Response<ResponseBody<RB>>;
    type Error = Error;
    type Future = ResponseFuture<Self::Response>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        // Readiness of the inner service is awaited on its clone before each attempt.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let clone = self.inner.clone();
        let svc = std::mem::replace(&mut self.inner, clone);
        let limiter = self.limiter.clone();
        ResponseFuture {
            inner: Box::pin(async move {
                let (parts, body) = req.into_parts();
                let ticket =
                    limiter.ticket(&parts.method, &parts.uri, &parts.headers, &parts.extensions);
                let deadline = limiter.deadline(&parts.extensions, limiter.now());
                let mut x = Tower {
                    svc,
                    parts,
                    body: Some(body),
                };
                attempt::run(&limiter, ticket, deadline, &mut x)
                    .await
                    .map_err(|f| match f {
                        Failure::Limiter(e) => e,
                        Failure::Transport(e) => Error::Upstream(e),
                    })
            }),
        }
    }
}

/// One request through an inner tower service.
struct Tower<S, B> {
    svc: S,
    parts: http::request::Parts,
    /// The original body, until it is sent itself (when it cannot be copied).
    body: Option<B>,
}

impl<S, B, RB> Exchange for Tower<S, B>
where
    S: Service<Request<B>, Response = Response<RB>> + Send,
    S::Future: Send,
    S::Error: Into<BoxError> + Send,
    B: ReplayBody + Send,
    RB: Body<Data = Bytes> + Send,
    RB::Error: Into<BoxError>,
{
    type Response = Response<ResponseBody<RB>>;
    type Error = BoxError;

    fn replayable(&self) -> bool {
        self.body.is_some()
    }

    fn body(&self) -> Option<Cow<'_, [u8]>> {
        self.body.as_ref().and_then(ReplayBody::buffered_bytes)
    }

    fn send(
        &mut self,
    ) -> Option<impl Future<Output = Result<Self::Response, BoxError>> + Send + '_> {
        let body = match self.body.as_ref().and_then(ReplayBody::try_clone_body) {
            Some(copy) => copy,
            None => self.body.take()?,
        };
        let request = Request::from_parts(self.parts.clone(), body);
        let svc = &mut self.svc;
        Some(async move {
            std::future::poll_fn(|cx| svc.poll_ready(cx))
                .await
                .map_err(Into::into)?;
            let response = svc.call(request).await.map_err(Into::into)?;
            Ok(response.map(ResponseBody::inner))
        })
    }

    fn status(res: &Self::Response) -> StatusCode {
        res.status()
    }

    fn headers(res: &Self::Response) -> &HeaderMap {
        res.headers()
    }

    fn extensions(res: &Self::Response) -> &http::Extensions {
        res.extensions()
    }

    fn extensions_mut(res: &mut Self::Response) -> &mut http::Extensions {
        res.extensions_mut()
    }

    fn buffer(res: Self::Response) -> impl Future<Output = (Self::Response, Option<Bytes>)> + Send {
        let (parts, body) = res.into_parts();
        async move {
            match http_body_util::Limited::new(body, MAX_OBSERVED_BODY)
                .collect()
                .await
            {
                Ok(c) => {
                    let bytes = c.to_bytes();
                    let rebuilt = ResponseBody::buffered(bytes.clone());
                    (Response::from_parts(parts, rebuilt), Some(bytes))
                }
                Err(e) => {
                    tracing::debug!(error = %e, "could not read a limit response body");
                    let empty = ResponseBody::buffered(Bytes::new());
                    (Response::from_parts(parts, empty), None)
                }
            }
        }
    }

    fn into_head(res: Self::Response) -> http::response::Parts {
        res.into_parts().0
    }
}
