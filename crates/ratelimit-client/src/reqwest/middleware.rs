//! The limiter as a [`reqwest_middleware::Middleware`], on the shared attempt loop.

use std::borrow::Cow;
use std::future::Future;

use bytes::Bytes;
use http::{Extensions, HeaderMap, StatusCode};
use reqwest::{Request, Response};
use reqwest_middleware::{Middleware, Next};

use crate::attempt::{self, Exchange, Failure, MAX_OBSERVED_BODY};
use crate::profile::Profile;
use crate::{Error, Limiter};

/// The client rate limiter as a [`reqwest_middleware::Middleware`]: the primary way to use it with reqwest.
///
/// Requests keep every `RequestBuilder` convenience (`bearer_auth`, `json`, `query`, `with_extension`);
/// bodies built from bytes (all of those) are replayed for retries and read for sub-limits, a streaming
/// body is sent once.
///
/// What a call returns:
/// * `Ok(response)` once the upstream answered something other than a rate limit, with
///   [`Attempts`](crate::Attempts) in `response.extensions()` when it was retried or waited;
/// * `Err(reqwest_middleware::Error::Middleware(_))` wrapping an [`Error`] when the limiter refused
///   ([`Error::WouldWait`] past the maximum wait, [`Error::RetriesExhausted`] with the last 429, a ban, a
///   stopped credential); [`Error::from_middleware`] gets it back;
/// * `Err(reqwest_middleware::Error::Reqwest(_))` when the upstream could not be reached after the retries.
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

    /// The limiter (for snapshots).
    pub fn limiter(&self) -> &Limiter<P> {
        &self.limiter
    }
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
        let ticket = limiter.ticket(req.method(), &uri, req.headers(), extensions);
        let deadline = limiter.deadline(extensions, limiter.now());
        let mut x = Chain {
            next,
            extensions,
            original: Some(req),
        };
        attempt::run(limiter, ticket, deadline, &mut x)
            .await
            .map_err(|f| match f {
                Failure::Limiter(e) => reqwest_middleware::Error::middleware(e),
                Failure::Transport(e) => e,
            })
    }
}

/// One request through the rest of the middleware chain.
struct Chain<'a> {
    next: Next<'a>,
    extensions: &'a mut Extensions,
    /// The original request, until it is sent itself (when its body is a stream).
    original: Option<Request>,
}

impl Exchange for Chain<'_> {
    type Response = Response;
    type Error = reqwest_middleware::Error;

    fn replayable(&self) -> bool {
        self.original.is_some()
    }

    fn body(&self) -> Option<Cow<'_, [u8]>> {
        self.original
            .as_ref()?
            .body()?
            .as_bytes()
            .map(Cow::Borrowed)
    }

    fn send(
        &mut self,
    ) -> Option<impl Future<Output = reqwest_middleware::Result<Response>> + Send + '_> {
        let request = match self.original.as_ref().and_then(Request::try_clone) {
            Some(copy) => copy,
            None => self.original.take()?,
        };
        Some(self.next.clone().run(request, self.extensions))
    }

    fn status(res: &Response) -> StatusCode {
        res.status()
    }

    fn headers(res: &Response) -> &HeaderMap {
        res.headers()
    }

    fn extensions(res: &Response) -> &Extensions {
        res.extensions()
    }

    fn extensions_mut(res: &mut Response) -> &mut Extensions {
        res.extensions_mut()
    }

    fn buffer(res: Response) -> impl Future<Output = (Response, Option<Bytes>)> + Send {
        let (parts, body) = http::Response::<reqwest::Body>::from(res).into_parts();
        async move {
            let limited = http_body_util::Limited::new(body, MAX_OBSERVED_BODY);
            let bytes = http_body_util::BodyExt::collect(limited)
                .await
                .ok()
                .map(http_body_util::Collected::to_bytes);
            let rebuilt = http::Response::from_parts(parts, bytes.clone().unwrap_or_default());
            (Response::from(rebuilt), bytes)
        }
    }

    fn into_head(res: Response) -> http::response::Parts {
        http::Response::<reqwest::Body>::from(res).into_parts().0
    }
}

impl Error {
    /// The limiter's error inside a `reqwest_middleware::Error`, if that is what it is.
    ///
    /// ```
    /// use ratelimit_client::Error;
    /// let e = reqwest_middleware::Error::middleware(Error::Unauthorized);
    /// assert!(matches!(Error::from_middleware(&e), Some(Error::Unauthorized)));
    /// ```
    pub fn from_middleware(e: &reqwest_middleware::Error) -> Option<&Error> {
        match e {
            reqwest_middleware::Error::Middleware(e) => e.downcast_ref::<Error>(),
            reqwest_middleware::Error::Reqwest(_) => None,
        }
    }
}
