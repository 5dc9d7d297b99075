//! The GitHub REST profile (`x-ratelimit-*`).
//!
//! Every GitHub response carries `x-ratelimit-limit`, `-remaining`, `-reset` (Unix epoch **seconds**) and
//! `-resource` (`core`, `search`, `graphql`, … which is the bucket: all routes of one resource share its
//! counter). Over a limit GitHub answers **403 or 429**. Its documented rules: honour `retry-after` when
//! present; otherwise, when `remaining` is 0, wait until `reset`; otherwise (a secondary limit) wait at least
//! one minute. The epoch reset is turned into a delay against the wall clock once, plus one second for skew
//! (the `Date` header has one-second resolution), and then runs on the monotonic clock.
//!
//! ```
//! use http::{HeaderMap, HeaderValue, StatusCode};
//! use ratelimit_client::profile::{GitHub, Profile};
//!
//! let mut h = HeaderMap::new();
//! h.insert("x-ratelimit-limit", HeaderValue::from_static("5000"));
//! h.insert("x-ratelimit-remaining", HeaderValue::from_static("4999"));
//! h.insert("x-ratelimit-reset", HeaderValue::from_static("1"));
//! h.insert("x-ratelimit-resource", HeaderValue::from_static("core"));
//! let obs = GitHub::new().observe(StatusCode::OK, &h, None);
//! assert_eq!(obs.buckets[0].id.as_deref(), Some("core"));
//! ```

use std::time::{SystemTime, UNIX_EPOCH};

use http::{HeaderMap, StatusCode};

use super::reading::Reading;
use super::retry_after::read_retry_after;
use super::{BucketInfo, Observation, Profile};
use crate::parse::{parse_u64, Caps, Problems};

/// Wait applied to a secondary-limit 403/429 that names no time (GitHub: "at least one minute").
pub const SECONDARY_WAIT: u64 = 60_000_000;

const LIMIT: &str = "x-ratelimit-limit";
const REMAINING: &str = "x-ratelimit-remaining";
const RESET: &str = "x-ratelimit-reset";
const RESOURCE: &str = "x-ratelimit-resource";
/// The resource of a response that names none (or names one the client cannot use).
const DEFAULT_RESOURCE: &str = "core";

/// The GitHub profile (see the [module docs](self)).
#[derive(Debug, Clone, Default)]
pub struct GitHub {
    reading: Reading,
}

impl GitHub {
    /// The profile with default caps.
    pub fn new() -> Self {
        Self::default()
    }

    /// Replaces the caps applied to header values.
    pub fn with_caps(mut self, caps: Caps) -> Self {
        self.reading.caps = caps;
        self
    }

    fn bucket(&self, headers: &HeaderMap, p: &mut Problems<'_>) -> Option<BucketInfo> {
        let raw = [LIMIT, REMAINING, RESET].map(|h| p.header(headers, h, h));
        let (limit, remaining, reset_epoch) = p.limit_counts(
            (LIMIT, raw[0], parse_u64),
            (REMAINING, raw[1], parse_u64),
            (RESET, raw[2], parse_u64),
            self.reading.caps.max_limit,
        )?;
        let now_us = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX));
        let reset_after = reset_epoch
            .saturating_mul(1_000_000)
            .saturating_sub(now_us)
            .saturating_add(1_000_000);
        // A resource the client cannot use shares `core`'s counter: the stricter reading.
        let resource = p
            .header(headers, RESOURCE, RESOURCE)
            .and_then(|r| p.name(RESOURCE, r, |b| b.is_ascii_graphic()))
            .unwrap_or_else(|| DEFAULT_RESOURCE.to_owned());
        Some(BucketInfo {
            id: Some(resource),
            limit,
            remaining,
            reset_after: p.cap(RESET, reset_after, self.reading.caps.max_reset),
        })
    }

    fn read(&self, status: StatusCode, headers: &HeaderMap, p: &mut Problems<'_>) -> Observation {
        let bucket = self.bucket(headers, p);
        let limit_status = matches!(status.as_u16(), 403 | 429);
        let retry_header = read_retry_after(headers, p);
        let exhausted = bucket.as_ref().is_some_and(|b| b.remaining == 0);
        let limited = if limit_status && retry_header.is_some() {
            retry_header
        } else if limit_status && exhausted {
            bucket.as_ref().map(|b| b.reset_after)
        } else if status == StatusCode::TOO_MANY_REQUESTS {
            Some(SECONDARY_WAIT)
        } else {
            // A 403 with quota left and no retry-after is an ordinary refusal, not a limit.
            None
        };
        self.reading
            .headers_only(status, bucket.into_iter().collect(), limited, p)
    }
}

impl Profile for GitHub {
    fn name(&self) -> &'static str {
        "github"
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
        self.reading.observe(|p| self.read(status, headers, p))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn h(pairs: &[(&'static str, String)]) -> HeaderMap {
        let mut m = HeaderMap::new();
        for (k, v) in pairs {
            m.append(*k, HeaderValue::from_str(v).unwrap());
        }
        m
    }

    #[test]
    fn a_403_with_nothing_left_is_a_limit_until_reset() {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let hs = h(&[
            ("x-ratelimit-limit", "60".into()),
            ("x-ratelimit-remaining", "0".into()),
            ("x-ratelimit-reset", (now + 30).to_string()),
            ("x-ratelimit-resource", "search".into()),
        ]);
        let obs = GitHub::new().observe(StatusCode::FORBIDDEN, &hs, None);
        let r = obs.limited.unwrap().retry_after;
        assert!((29_000_000..=31_000_000).contains(&r), "{r}");
        assert_eq!(obs.buckets[0].id.as_deref(), Some("search"));
    }

    #[test]
    fn secondary_limits_and_plain_403() {
        let hs = h(&[("retry-after", "5".into())]);
        assert_eq!(
            GitHub::new()
                .observe(StatusCode::FORBIDDEN, &hs, None)
                .limited
                .unwrap()
                .retry_after,
            5_000_000
        );
        assert!(GitHub::new()
            .observe(StatusCode::FORBIDDEN, &HeaderMap::new(), None)
            .limited
            .is_none());
        assert_eq!(
            GitHub::new()
                .observe(StatusCode::TOO_MANY_REQUESTS, &HeaderMap::new(), None)
                .limited
                .unwrap()
                .retry_after,
            SECONDARY_WAIT
        );
    }

    #[test]
    fn hostile_values_are_capped() {
        let hs = h(&[
            ("x-ratelimit-limit", "5000".into()),
            ("x-ratelimit-remaining", "10".into()),
            ("x-ratelimit-reset", "99999999999".into()),
            ("x-ratelimit-resource", "a b".into()),
        ]);
        let obs = GitHub::new().observe(StatusCode::OK, &hs, None);
        let b = &obs.buckets[0];
        assert_eq!(
            (b.reset_after, b.id.as_deref()),
            (3_600_000_000, Some("core"))
        );
        assert!(obs.malformed.is_some());
        // More remaining than the limit: no evidence, and said so.
        let hs = h(&[
            ("x-ratelimit-limit", "60".into()),
            ("x-ratelimit-remaining", "61".into()),
            ("x-ratelimit-reset", "1".into()),
        ]);
        let obs = GitHub::new().observe(StatusCode::OK, &hs, None);
        assert!(obs.buckets.is_empty());
        assert!(matches!(
            obs.malformed,
            Some(crate::parse::ParseError::RemainingAboveLimit {
                remaining: 61,
                limit: 60,
                ..
            })
        ));
    }
}
