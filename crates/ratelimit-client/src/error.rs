//! The error type of the client layer.

use std::time::Duration;

use http::StatusCode;

/// A boxed error from the inner service or a body.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Why a request was not sent, or not completed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Waiting for the rate limit would exceed the request's maximum wait.
    #[error(
        "rate limit on `{bucket}` would need a wait of {wait:?}, beyond the request's maximum wait"
    )]
    WouldWait {
        /// The bucket (or `global`, `sub-limit`) the request waits for.
        bucket: String,
        /// The predicted (or already spent) wait.
        wait: Duration,
    },
    /// The token was refused with `401 Unauthorized` earlier; requests with it are no longer sent.
    #[error("the token was refused with 401 Unauthorized; requests with it are stopped")]
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
    /// (`Full<Bytes>`, `String`, `Vec<u8>`, `Bytes`) to make the request retryable.
    #[error("the request needs a retry (after {status:?}) but its body is a stream that cannot be replayed; buffer it")]
    NotReplayable {
        /// The status that called for a retry, if a response was received.
        status: Option<StatusCode>,
    },
    /// The inner service failed (connection error, timeout, …) and retries were exhausted or impossible.
    #[error("upstream request failed: {0}")]
    Upstream(#[source] BoxError),
}
