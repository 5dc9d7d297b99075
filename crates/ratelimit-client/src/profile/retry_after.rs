//! The plain `Retry-After` profile, for upstreams that say nothing until they refuse.
//!
//! RFC 9110 allows `Retry-After` as delay-seconds (`120`) or as an HTTP-date
//! (`Wed, 21 Oct 2015 07:28:00 GMT`). A date is converted to a delay against the local wall clock once,
//! when the response is read; from then on the wait runs on the monotonic clock. A 429 or 503 carrying the
//! header closes the route for that long; a 429 without it closes the route for one second.
//!
//! ```
//! use http::{HeaderMap, HeaderValue, StatusCode};
//! use ratelimit_client::profile::{Profile, RetryAfter};
//!
//! let mut h = HeaderMap::new();
//! h.insert("retry-after", HeaderValue::from_static("2"));
//! let obs = RetryAfter::new().observe(StatusCode::TOO_MANY_REQUESTS, &h, None);
//! assert_eq!(obs.limited.unwrap().retry_after, 2_000_000);
//! ```

use std::time::SystemTime;

use http::{HeaderMap, StatusCode};
use ratelimit_core::Micros;

use super::reading::{Reading, UNNAMED_LIMIT_WAIT};
use super::{Observation, Profile};
use crate::parse::{header_str, parse_seconds, Caps, Problems};

/// Reads `Retry-After` as seconds or an HTTP-date, in microseconds from now.
pub fn retry_after_header(headers: &HeaderMap) -> Option<Micros> {
    header_str(headers, "retry-after").and_then(retry_after_value)
}

/// `Retry-After` read for a profile: present but unreadable is noted.
pub(crate) fn read_retry_after(headers: &HeaderMap, p: &mut Problems<'_>) -> Option<Micros> {
    let raw = p.header(headers, "retry-after", "retry-after");
    p.number("retry-after", raw, retry_after_value)
}

fn retry_after_value(v: &str) -> Option<Micros> {
    if let Some(s) = parse_seconds(v) {
        return Some(s);
    }
    let date = httpdate::parse_http_date(v).ok()?;
    let delay = date.duration_since(SystemTime::now()).unwrap_or_default();
    Some(u64::try_from(delay.as_micros()).unwrap_or(u64::MAX))
}

/// The plain `Retry-After` profile (see the [module docs](self)).
#[derive(Debug, Clone, Default)]
pub struct RetryAfter {
    reading: Reading,
}

impl RetryAfter {
    /// The profile with default caps.
    pub fn new() -> Self {
        Self::default()
    }

    /// Replaces the caps applied to header values.
    pub fn with_caps(mut self, caps: Caps) -> Self {
        self.reading.caps = caps;
        self
    }
}

impl Profile for RetryAfter {
    fn name(&self) -> &'static str {
        "retry-after"
    }

    fn wants_body(&self, _status: StatusCode, _headers: &HeaderMap) -> bool {
        false
    }

    fn observe(
        &self,
        status: StatusCode,
        headers: &HeaderMap,
        _body: Option<&[u8]>,
    ) -> Observation {
        self.reading.observe(|p| {
            let retry = match (status.as_u16(), read_retry_after(headers, p)) {
                (429, r) => Some(r.unwrap_or(UNNAMED_LIMIT_WAIT)),
                (503, Some(r)) => Some(r),
                _ => None,
            };
            self.reading.headers_only(status, Vec::new(), retry, p)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parse::ParseError;
    use http::HeaderValue;

    #[test]
    fn dates_and_seconds() {
        let mut h = HeaderMap::new();
        let future = SystemTime::now() + std::time::Duration::from_secs(30);
        h.insert(
            "retry-after",
            HeaderValue::from_str(&httpdate::fmt_http_date(future)).unwrap(),
        );
        let r = retry_after_header(&h).unwrap();
        assert!((28_000_000..=30_000_000).contains(&r), "{r}");
        h.insert(
            "retry-after",
            HeaderValue::from_static("Wed, 21 Oct 2015 07:28:00 GMT"),
        );
        assert_eq!(retry_after_header(&h), Some(0));
        h.insert("retry-after", HeaderValue::from_static("soon"));
        assert_eq!(retry_after_header(&h), None);
        let obs = RetryAfter::new().observe(StatusCode::TOO_MANY_REQUESTS, &h, None);
        assert_eq!(obs.limited.unwrap().retry_after, 1_000_000);
        assert_eq!(
            obs.malformed,
            Some(ParseError::Malformed {
                header: "retry-after"
            })
        );
        h.insert("retry-after", HeaderValue::from_static("99999999999"));
        let obs = RetryAfter::new().observe(StatusCode::SERVICE_UNAVAILABLE, &h, None);
        assert_eq!(obs.limited.unwrap().retry_after, 3_600_000_000);
    }
}
