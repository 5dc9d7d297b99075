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

use super::retry_after::retry_after_header;
use super::{is_transient, BucketInfo, Limited, Observation, Profile, Scope};
use crate::parse::{cap, header_str, parse_u64, Caps};

/// Wait applied to a secondary-limit 403/429 that names no time (GitHub: "at least one minute").
pub const SECONDARY_WAIT: u64 = 60_000_000;

/// The GitHub profile (see the [module docs](self)).
#[derive(Debug, Clone, Default)]
pub struct GitHub {
    caps: Caps,
}

impl GitHub {
    /// The profile with default caps.
    pub fn new() -> Self {
        Self::default()
    }

    /// Replaces the caps applied to header values.
    pub fn with_caps(mut self, caps: Caps) -> Self {
        self.caps = caps;
        self
    }

    fn bucket(&self, headers: &HeaderMap) -> Option<BucketInfo> {
        let limit = header_str(headers, "x-ratelimit-limit").and_then(parse_u64)?;
        let remaining = header_str(headers, "x-ratelimit-remaining").and_then(parse_u64)?;
        let reset_epoch = header_str(headers, "x-ratelimit-reset").and_then(parse_u64)?;
        if limit == 0 {
            return None;
        }
        let now_us = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX));
        let reset_after = reset_epoch
            .saturating_mul(1_000_000)
            .saturating_sub(now_us)
            .saturating_add(1_000_000);
        let resource = header_str(headers, "x-ratelimit-resource")
            .filter(|r| !r.is_empty() && r.len() <= 64 && r.bytes().all(|b| b.is_ascii_graphic()))
            .unwrap_or("core");
        let limit = cap("x-ratelimit-limit", limit, self.caps.max_limit);
        Some(BucketInfo {
            id: Some(resource.to_owned()),
            limit,
            remaining: remaining.min(limit),
            reset_after: cap("x-ratelimit-reset", reset_after, self.caps.max_reset),
        })
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
        let bucket = self.bucket(headers);
        let limit_status = matches!(status.as_u16(), 403 | 429);
        let retry_header = retry_after_header(headers);
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
        Observation {
            limited: limited.map(|r| Limited {
                scope: Scope::User,
                retry_after: cap("retry-after", r, self.caps.max_retry),
            }),
            buckets: bucket.into_iter().collect(),
            unauthorized: status == StatusCode::UNAUTHORIZED,
            server_error: is_transient(status),
            ..Observation::default()
        }
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
        let b = &GitHub::new().observe(StatusCode::OK, &hs, None).buckets[0];
        assert_eq!(
            (b.reset_after, b.id.as_deref()),
            (3_600_000_000, Some("core"))
        );
    }
}
