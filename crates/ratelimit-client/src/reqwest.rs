//! reqwest support: a tower adapter over [`reqwest::Client`], and (feature `reqwest-middleware`) a
//! [`reqwest_middleware::Middleware`].
//!
//! `reqwest::Client` implements `tower::Service<reqwest::Request>`, not `Service<http::Request<B>>`, so
//! [`ReqwestService`] bridges the two (`http::Request` → `reqwest::Request` → `http::Response`), and the
//! layer can sit on top of it like on any other HTTP service.
//!
//! ```no_run
//! use bytes::Bytes;
//! use http_body_util::Full;
//! use ratelimit_client::{profile::Discord, reqwest::ReqwestService, Limiter, RateLimitLayer};
//! use tower::{Layer, ServiceExt};
//!
//! # async fn demo() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
//! let client = RateLimitLayer::new(Limiter::new(Discord::new())).layer(ReqwestService::new(reqwest::Client::new()));
//! let req = http::Request::get("https://discord.com/api/v10/gateway").body(Full::new(Bytes::new()))?;
//! let res = client.oneshot(req).await?;
//! # Ok(()) }
//! ```

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::Bytes;
use http_body::Body as HttpBody;
use tower_service::Service;

use crate::{BoxError, SentAt};

/// A `Service<http::Request<B>>` that sends requests with a [`reqwest::Client`].
#[derive(Debug, Clone, Default)]
pub struct ReqwestService {
    client: reqwest::Client,
}

impl ReqwestService {
    /// Wraps `client`.
    pub fn new(client: reqwest::Client) -> Self {
        ReqwestService { client }
    }
}

impl<B> Service<http::Request<B>> for ReqwestService
where
    B: HttpBody + Send + Sync + 'static,
    B::Data: Into<Bytes>,
    B::Error: Into<BoxError>,
{
    type Response = http::Response<reqwest::Body>;
    type Error = reqwest::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, reqwest::Error>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let (parts, body) = req.into_parts();
        let stamp = Arc::new(OnceLock::new());
        let body = Stamped {
            body,
            stamp: stamp.clone(),
        };
        let req = http::Request::from_parts(parts, reqwest::Body::wrap(body));
        match reqwest::Request::try_from(req) {
            Ok(r) => {
                let fut = self.client.execute(r);
                Box::pin(async move {
                    let mut res = http::Response::from(fut.await?);
                    if let Some(&at) = stamp.get() {
                        res.extensions_mut().insert(SentAt(at));
                    }
                    Ok(res)
                })
            }
            Err(e) => Box::pin(std::future::ready(Err(e))),
        }
    }
}

pin_project_lite::pin_project! {
    /// A request body that notes when the connection first asks for it: hyper does so once a connection is
    /// ready and the request head is being written, so that is when the request leaves (after any handshake).
    struct Stamped<B> {
        #[pin]
        body: B,
        stamp: Arc<OnceLock<Instant>>,
    }
}

impl<B: HttpBody> HttpBody for Stamped<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<B::Data>, B::Error>>> {
        let this = self.project();
        this.stamp.get_or_init(Instant::now);
        this.body.poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        // An empty body is never polled: asking whether it is finished is the connection's first look at it.
        self.stamp.get_or_init(Instant::now);
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}

#[cfg(feature = "reqwest-middleware")]
pub use middleware::RateLimitMiddleware;

#[cfg(feature = "reqwest-middleware")]
mod middleware {
    use http::Extensions;
    use reqwest::{Request, Response};
    use reqwest_middleware::{Middleware, Next};

    use crate::layer::MAX_OBSERVED_BODY;
    use crate::profile::Profile;
    use crate::scheduler::Next as Verdict;
    use crate::{Error, Limiter};

    /// The client rate limiter as a [`reqwest_middleware::Middleware`].
    ///
    /// ```no_run
    /// use ratelimit_client::{profile::Discord, reqwest::RateLimitMiddleware, Limiter};
    ///
    /// let client = reqwest_middleware::ClientBuilder::new(reqwest::Client::new())
    ///     .with(RateLimitMiddleware::new(Limiter::new(Discord::new())))
    ///     .build();
    /// ```
    #[derive(Debug)]
    pub struct RateLimitMiddleware<P> {
        limiter: Limiter<P>,
    }

    impl<P> RateLimitMiddleware<P> {
        /// A middleware driving `limiter`.
        pub fn new(limiter: Limiter<P>) -> Self {
            RateLimitMiddleware { limiter }
        }
    }

    fn mw(e: Error) -> reqwest_middleware::Error {
        reqwest_middleware::Error::middleware(e)
    }

    async fn read_limited(resp: Response) -> (http::response::Parts, Option<bytes::Bytes>) {
        let http_resp: http::Response<reqwest::Body> = resp.into();
        let (parts, body) = http_resp.into_parts();
        let bytes =
            http_body_util::BodyExt::collect(http_body_util::Limited::new(body, MAX_OBSERVED_BODY))
                .await
                .ok()
                .map(http_body_util::Collected::to_bytes);
        (parts, bytes)
    }

    #[async_trait::async_trait]
    impl<P: Profile> Middleware for RateLimitMiddleware<P> {
        async fn handle(
            &self,
            req: Request,
            extensions: &mut Extensions,
            next: Next<'_>,
        ) -> reqwest_middleware::Result<Response> {
            let limiter = &self.limiter;
            let uri: http::Uri = req.url().as_str().parse().unwrap_or_default();
            let mut ticket = limiter.ticket(req.method(), &uri, req.headers(), extensions);
            let deadline = limiter.deadline(extensions, limiter.now());
            let req_body = req
                .body()
                .and_then(reqwest::Body::as_bytes)
                .map(<[u8]>::to_vec);
            let mut original = Some(req);
            let (mut limit_tries, mut error_tries) = (0u32, 0u32);
            let mut last_status = None;
            loop {
                let Some(template) = original.as_ref() else {
                    return Err(mw(Error::NotReplayable {
                        status: last_status,
                    }));
                };
                let permit = limiter
                    .acquire(&mut ticket, req_body.as_deref(), deadline)
                    .await
                    .map_err(mw)?;
                let attempt = match template.try_clone() {
                    Some(r) => r,
                    None => match original.take() {
                        Some(r) => r,
                        None => {
                            return Err(mw(Error::NotReplayable {
                                status: last_status,
                            }))
                        }
                    },
                };
                let resp = match next.clone().run(attempt, extensions).await {
                    Ok(r) => r,
                    Err(e) => {
                        drop(permit);
                        if error_tries < limiter.config().max_error_retries && original.is_some() {
                            let wait = limiter.backoff(error_tries);
                            error_tries += 1;
                            tokio::time::sleep(std::time::Duration::from_micros(wait)).await;
                            continue;
                        }
                        return Err(e);
                    }
                };
                let status = resp.status();
                last_status = Some(status);
                let (resp, body) = if permit.wants_body(status, resp.headers()) {
                    let (parts, bytes) = read_limited(resp).await;
                    let rebuilt =
                        http::Response::from_parts(parts, bytes.clone().unwrap_or_default());
                    (Response::from(rebuilt), bytes)
                } else {
                    (resp, None)
                };
                let headers = resp.headers().clone();
                match permit.complete(
                    status,
                    &headers,
                    body.as_deref(),
                    req_body.as_deref(),
                    (limit_tries, error_tries),
                    None,
                ) {
                    Verdict::Done => return Ok(resp),
                    Verdict::Fail(e) => return Err(mw(e)),
                    Verdict::Retry { backoff } => match backoff {
                        Some(wait) => {
                            error_tries += 1;
                            tokio::time::sleep(std::time::Duration::from_micros(wait)).await;
                        }
                        None => limit_tries += 1,
                    },
                }
            }
        }
    }
}
