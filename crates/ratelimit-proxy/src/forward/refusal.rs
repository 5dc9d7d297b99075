//! The proxy's own answers, when it does not forward a request or gets no response to pass on: one
//! [`Refusal`] per reason, each with its status, a JSON body saying what happened and what to change, and an
//! `X-RateLimit-Proxy-Error` header naming the reason, so that a bot (or its operator) can tell the proxy's
//! answers from the upstream's.

use std::time::Duration;

use bytes::Bytes;
use http::{header, HeaderName, HeaderValue, Response, StatusCode};
use ratelimit_client::Error;

/// The header naming why the proxy answered itself.
pub const PROXY_ERROR_HEADER: HeaderName = HeaderName::from_static("x-ratelimit-proxy-error");

/// Why the proxy answered a request itself.
///
/// ```
/// use ratelimit_proxy::Refusal;
/// let r = Refusal::TooLarge { limit: 1024 };
/// assert_eq!((r.status().as_u16(), r.kind()), (413, "too_large"));
/// assert!(r.to_string().contains("--max-body"));
/// ```
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Refusal {
    /// The request cannot be forwarded as it is (400).
    #[error("bad request: {0}")]
    BadRequest(&'static str),
    /// The path is outside the API root the proxy forwards (404).
    #[error("`{path}` is not under the upstream's API root `{root}`")]
    NotApi {
        /// The request's path.
        path: String,
        /// The API root.
        root: String,
    },
    /// The body is larger than the proxy accepts (413).
    #[error("the request body is larger than {limit} bytes (raise --max-body)")]
    TooLarge {
        /// The limit in bytes.
        limit: usize,
    },
    /// The rate limit would hold the request longer than the maximum wait (503, `Retry-After`): the
    /// request was not sent. A 503 rather than a 504 because the upstream was not asked and nothing timed
    /// out upstream: the proxy declines for now and says when to come back.
    #[error("{0}")]
    WouldWait(String, Duration),
    /// Traffic is stopped: an upstream ban, or the invalid-request budget spent or nearly spent (503).
    #[error("{0}")]
    Stopped(String, Option<Duration>),
    /// The token was refused with 401 earlier; requests with it are not sent again (401).
    #[error("this token was refused with 401 Unauthorized by the upstream; requests with it are not sent")]
    TokenRefused,
    /// The upstream could not be reached or broke the connection (502). Not retried by the proxy: the bot
    /// decides, so an outage costs one connection attempt per request, never a storm.
    #[error("the upstream could not be reached: {0}")]
    Unreachable(String),
    /// The upstream did not answer within the upstream timeout (504).
    #[error("the upstream did not answer within {0:?} (raise --upstream-timeout)")]
    UpstreamTimeout(Duration),
}

impl Refusal {
    /// The client error or outcome as the bot sees it.
    pub(crate) fn from_client(e: Error, upstream_timeout: Duration) -> Refusal {
        let message = e.to_string();
        match e {
            Error::WouldWait { wait, .. } => Refusal::WouldWait(message, wait),
            Error::Banned { retry_in } => Refusal::Stopped(message, Some(retry_in)),
            Error::InvalidBudget { .. } | Error::Shed { .. } => Refusal::Stopped(message, None),
            Error::Unauthorized => Refusal::TokenRefused,
            Error::Upstream(source) if source.is::<tower::timeout::error::Elapsed>() => {
                Refusal::UpstreamTimeout(upstream_timeout)
            }
            _ => Refusal::Unreachable(message),
        }
    }

    /// The status the bot gets.
    pub fn status(&self) -> StatusCode {
        match self {
            Refusal::BadRequest(_) => StatusCode::BAD_REQUEST,
            Refusal::NotApi { .. } => StatusCode::NOT_FOUND,
            Refusal::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            Refusal::WouldWait(..) | Refusal::Stopped(..) => StatusCode::SERVICE_UNAVAILABLE,
            Refusal::TokenRefused => StatusCode::UNAUTHORIZED,
            Refusal::Unreachable(_) => StatusCode::BAD_GATEWAY,
            Refusal::UpstreamTimeout(_) => StatusCode::GATEWAY_TIMEOUT,
        }
    }

    /// The reason, as the `X-RateLimit-Proxy-Error` header and the metrics label name it.
    pub fn kind(&self) -> &'static str {
        match self {
            Refusal::BadRequest(_) => "bad_request",
            Refusal::NotApi { .. } => "not_api",
            Refusal::TooLarge { .. } => "too_large",
            Refusal::WouldWait(..) => "would_wait",
            Refusal::Stopped(..) => "stopped",
            Refusal::TokenRefused => "token_refused",
            Refusal::Unreachable(_) => "upstream_unreachable",
            Refusal::UpstreamTimeout(_) => "upstream_timeout",
        }
    }

    fn retry_after(&self) -> Option<Duration> {
        match self {
            Refusal::WouldWait(_, wait) => Some(*wait),
            Refusal::Stopped(_, wait) => *wait,
            _ => None,
        }
    }

    /// The response: status, `X-RateLimit-Proxy-Error`, `Retry-After` in whole seconds (rounded up) when
    /// known, and `{"message", "proxy_error", "retry_after"}` as JSON.
    pub(crate) fn into_response(self) -> Response<Bytes> {
        let retry_after = self.retry_after();
        let body = serde_json::json!({
            "message": self.to_string(),
            "proxy_error": self.kind(),
            "retry_after": retry_after.map(|d| d.as_secs_f64()),
        });
        let mut res = Response::new(Bytes::from(body.to_string()));
        *res.status_mut() = self.status();
        let h = res.headers_mut();
        h.insert(PROXY_ERROR_HEADER, HeaderValue::from_static(self.kind()));
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        if let Some(wait) = retry_after {
            let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
            h.insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        res
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_wait_beyond_the_maximum_is_a_503_that_says_when_to_come_back() {
        let e = Error::WouldWait {
            route: "POST /channels/{channel_id}/messages".into(),
            limit: "bucket `abcd`".into(),
            wait: Duration::from_millis(1500),
        };
        let res = Refusal::from_client(e, Duration::from_secs(1)).into_response();
        assert_eq!(res.status(), 503);
        assert_eq!(res.headers()[header::RETRY_AFTER], "2");
        assert_eq!(res.headers()[PROXY_ERROR_HEADER], "would_wait");
        let body: serde_json::Value = serde_json::from_slice(res.body()).unwrap();
        assert_eq!(body["retry_after"], 1.5);
        assert!(body["message"].as_str().unwrap().contains("POST /channels"));
    }

    #[test]
    fn timeouts_and_unreachable_upstreams_are_told_apart() {
        let elapsed = Error::Upstream(Box::new(tower::timeout::error::Elapsed::new()));
        let r = Refusal::from_client(elapsed, Duration::from_secs(3));
        assert_eq!(r.status(), 504);
        let refused = Error::Upstream("connection refused".into());
        assert_eq!(Refusal::from_client(refused, Duration::ZERO).status(), 502);
    }
}
