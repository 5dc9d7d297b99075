use std::task::{Context, Poll};

use bytes::Bytes;
use http::{Request, Response};
use http_body::Body;
use http_body_util::BodyExt;
use tower_service::Service;

use super::ResponseFuture;
use crate::body::{ReplayBody, ResponseBody};
use crate::profile::Profile;
use crate::scheduler::Next;
use crate::{BoxError, Error, Limiter};

/// Largest response body read to observe a limit (a Discord 429 body is ~100 bytes).
pub(crate) const MAX_OBSERVED_BODY: usize = 64 * 1024;

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
        let inner = std::mem::replace(&mut self.inner, clone);
        ResponseFuture {
            inner: Box::pin(run(self.limiter.clone(), inner, req)),
        }
    }
}

async fn run<S, P, B, RB>(
    limiter: Limiter<P>,
    mut svc: S,
    req: Request<B>,
) -> Result<Response<ResponseBody<RB>>, Error>
where
    S: Service<Request<B>, Response = Response<RB>>,
    S::Error: Into<BoxError>,
    P: Profile,
    B: ReplayBody,
    RB: Body<Data = Bytes>,
    RB::Error: Into<BoxError>,
{
    let (parts, body) = req.into_parts();
    let mut ticket = limiter.ticket(&parts.method, &parts.uri, &parts.headers, &parts.extensions);
    let deadline = limiter.deadline(&parts.extensions, limiter.now());
    let mut body = Some(body);
    let (mut limit_tries, mut error_tries) = (0u32, 0u32);
    let mut last_status = None;
    loop {
        if body.is_none() {
            return Err(Error::NotReplayable {
                status: last_status,
            });
        }
        let permit = limiter
            .acquire(
                &mut ticket,
                body.as_ref().and_then(ReplayBody::bytes),
                deadline,
            )
            .await?;
        let attempt_body = match body.as_ref().and_then(ReplayBody::try_clone_body) {
            Some(copy) => copy,
            None => match body.take() {
                Some(b) => b,
                None => {
                    return Err(Error::NotReplayable {
                        status: last_status,
                    })
                }
            },
        };
        let request = Request::from_parts(parts.clone(), attempt_body);
        let sent = async {
            std::future::poll_fn(|cx| svc.poll_ready(cx)).await?;
            svc.call(request).await
        };
        let response = match sent.await {
            Ok(r) => r,
            Err(e) => {
                drop(permit);
                let e: BoxError = e.into();
                if error_tries < limiter.config().max_error_retries && body.is_some() {
                    let wait = limiter.backoff(error_tries);
                    tracing::debug!(error = %e, wait_ms = wait / 1000, "transient upstream error; retrying");
                    error_tries += 1;
                    tokio::time::sleep(std::time::Duration::from_micros(wait)).await;
                    continue;
                }
                return Err(Error::Upstream(e));
            }
        };
        let (rparts, rbody) = response.into_parts();
        let sent_at = rparts.extensions.get::<crate::SentAt>().copied();
        last_status = Some(rparts.status);
        let (read, out) = if permit.wants_body(rparts.status, &rparts.headers) {
            match http_body_util::Limited::new(rbody, MAX_OBSERVED_BODY)
                .collect()
                .await
            {
                Ok(c) => {
                    let bytes = c.to_bytes();
                    (Some(bytes.clone()), ResponseBody::buffered(bytes))
                }
                Err(e) => {
                    tracing::debug!(error = %e, "could not read a limit response body");
                    (None, ResponseBody::buffered(Bytes::new()))
                }
            }
        } else {
            (None, ResponseBody::inner(rbody))
        };
        let req_bytes = body.as_ref().and_then(ReplayBody::bytes);
        match permit.complete(
            rparts.status,
            &rparts.headers,
            read.as_deref(),
            req_bytes,
            (limit_tries, error_tries),
            sent_at,
        ) {
            Next::Done => return Ok(Response::from_parts(rparts, out)),
            Next::Fail(e) => return Err(e),
            Next::Retry { backoff } => {
                if body.is_none() {
                    return Err(Error::NotReplayable {
                        status: last_status,
                    });
                }
                match backoff {
                    Some(wait) => {
                        error_tries += 1;
                        tokio::time::sleep(std::time::Duration::from_micros(wait)).await;
                    }
                    None => limit_tries += 1,
                }
            }
        }
    }
}
