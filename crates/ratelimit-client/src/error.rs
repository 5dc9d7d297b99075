//! The error type of the client layer.

use std::time::Duration;

use bytes::Bytes;
use http::StatusCode;

/// A boxed error from the inner service or a body.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Why a request was not sent, or not completed.
///
/// Routes are named in the caller's terms: the method and route template the profile classified the request
/// into, e.g. `POST /channels/{channel_id}/messages` or `GET /v1/items/{id}`.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Waiting for the rate limit would exceed the request's maximum wait ([`MaxWait`](crate::MaxWait),
    /// or [`Config::max_wait`](crate::Config::max_wait), 30 s by default). Retry after `wait`, or allow a
    /// longer wait.
    #[error(
        "`{route}` would wait {wait:?} for {limit}, beyond the request's maximum wait (raise it with MaxWait or LimiterBuilder::max_wait, or retry later)"
    )]
    WouldWait {
        /// The route, e.g. `POST /channels/{channel_id}/messages`.
        route: String,
        /// What the request waits for, in words: `limit `hourly``, `the global limit`, `a sub-limit on
        /// requests of this body shape`, … (with Discord, whose documentation says bucket: `bucket `abcd`
        /// (for 123)`).
        limit: String,
        /// The predicted (or already spent) wait.
        wait: Duration,
    },
    /// The upstream still answered with a rate-limit response after every retry
    /// ([`Config::max_limit_retries`](crate::Config::max_limit_retries)). With
    /// [`Exhausted::Respond`](crate::Exhausted::Respond) the response is returned instead.
    #[error("`{route}` was still rate limited ({}) after {attempts} attempts and {waited:?} of waiting", response.status())]
    RetriesExhausted {
        /// The route, e.g. `GET /v1/items/{id}`.
        route: String,
        /// Attempts sent, the first included.
        attempts: u32,
        /// Time the request spent waiting before its attempts.
        waited: Duration,
        /// The upstream's last response, with its body (up to 64 KiB of it).
        response: Box<http::Response<Bytes>>,
    },
    /// The request's credential (token, API key) was refused with `401 Unauthorized` earlier; requests
    /// with it are no longer sent.
    #[error("the credential was refused with 401 Unauthorized; requests with it are stopped")]
    Unauthorized,
    /// The upstream banned this IP (a Cloudflare-style 429): traffic is stopped, and one probe is sent after
    /// a backoff.
    #[error("upstream ban detected; traffic stopped, next probe in {retry_in:?}")]
    Banned {
        /// Time until a probe request will be allowed.
        retry_in: Duration,
    },
    /// The invalid-request budget reached its stop threshold: nothing is sent until it drains.
    #[error("invalid-request budget exhausted ({count} invalid responses in the window); traffic stopped")]
    InvalidBudget {
        /// Invalid responses counted in the window.
        count: usize,
    },
    /// The invalid-request budget is above its shed threshold and this request was not urgent.
    #[error("request shed: {count} invalid responses in the window, above the shed threshold")]
    Shed {
        /// Invalid responses counted in the window.
        count: usize,
    },
    /// A retry was needed but the request body is a stream that cannot be replayed. Buffer the body
    /// (`Full<Bytes>`, `Bytes`, `String`, `Vec<u8>`; see [`ReplayBody`](crate::ReplayBody)) to make the
    /// request retryable.
    #[error("`{route}` needs a retry (after {status:?}) but its request body is a stream that cannot be replayed; buffer it")]
    NotReplayable {
        /// The route, e.g. `POST /repos/{owner}/{repo}/issues`.
        route: String,
        /// The status that called for a retry, if a response was received.
        status: Option<StatusCode>,
    },
    /// The inner service failed (connection error, timeout, …) and retries were exhausted or impossible.
    #[error("upstream request failed: {0}")]
    Upstream(#[source] BoxError),
}
