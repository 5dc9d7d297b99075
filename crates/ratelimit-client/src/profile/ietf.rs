//! The IETF `RateLimit` / `RateLimit-Policy` profile (draft-ietf-httpapi-ratelimit-headers).
//!
//! A server names its policies in `RateLimit-Policy: "burst";q=100;w=60, "day";q=1000;w=86400` and reports
//! the state of each in `RateLimit: "burst";r=50;t=30, "day";r=900;t=3600`, where `r` is what remains and `t`
//! the seconds until it resets. Several policies can bind one request at once, so each becomes its own
//! bucket and a request waits for all of them. Both fields are RFC 9651 structured-field lists, parsed with
//! the `sfv` crate; anything malformed is logged and ignored. The older draft's `RateLimit-Limit`,
//! `RateLimit-Remaining` and `RateLimit-Reset` (delta seconds) are read when the new fields are absent.
//!
//! ```
//! use http::{HeaderMap, HeaderValue, StatusCode};
//! use ratelimit_client::profile::{Ietf, Profile};
//!
//! let mut h = HeaderMap::new();
//! h.insert("ratelimit-policy", HeaderValue::from_static(r#""burst";q=100;w=60"#));
//! h.insert("ratelimit", HeaderValue::from_static(r#""burst";r=42;t=7"#));
//! let obs = Ietf::new().observe(StatusCode::OK, &h, None);
//! assert_eq!((obs.buckets[0].limit, obs.buckets[0].remaining), (100, 42));
//! ```

use http::{HeaderMap, StatusCode};
use sfv::{BareItem, ListEntry, Parser};

use super::retry_after::retry_after_header;
use super::{is_transient, BucketInfo, Limited, Observation, Profile, Scope};
use crate::parse::{cap, header_str, parse_seconds, parse_u64, Caps};

/// At most this many policies are read from one response; the rest are ignored (a hostile server must not
/// make the client track thousands of buckets per route).
pub const MAX_POLICIES: usize = 8;

/// The IETF `RateLimit` profile (see the [module docs](self)).
#[derive(Debug, Clone, Default)]
pub struct Ietf {
    caps: Caps,
}

impl Ietf {
    /// The profile with default caps.
    pub fn new() -> Self {
        Self::default()
    }

    /// Replaces the caps applied to header values.
    pub fn with_caps(mut self, caps: Caps) -> Self {
        self.caps = caps;
        self
    }
}

fn non_negative(item: &BareItem) -> Option<u64> {
    if let Some(i) = item.as_integer() {
        return u64::try_from(i64::from(i)).ok();
    }
    // A decimal: round down to whole units (seconds or requests).
    item.as_decimal()
        .and_then(|d| u64::try_from(i64::from(d.as_integer_scaled_1000())).ok())
        .map(|m| m / 1000)
}

/// One parsed list member: its name and the integer parameters the caller asked for.
fn parse_members(value: &str, keys: [&str; 3]) -> Option<Vec<(String, [Option<u64>; 3])>> {
    let list: sfv::List = match Parser::new(value).parse_list() {
        Ok(l) => l,
        Err(e) => {
            tracing::warn!(error = %e, "malformed RateLimit field ignored");
            return None;
        }
    };
    let mut out = Vec::new();
    for entry in list.into_iter().take(MAX_POLICIES) {
        let ListEntry::Item(item) = entry else {
            continue;
        };
        let name = match (&item.bare_item.as_string(), &item.bare_item.as_token()) {
            (Some(s), _) => s.as_str().to_owned(),
            (_, Some(t)) => t.as_str().to_owned(),
            _ => continue,
        };
        let mut vals = [None; 3];
        let mut pk = None;
        for (k, v) in &item.params {
            if k.as_str() == "pk" {
                pk = v.as_byte_sequence().map(|b| b.len());
            }
            for (slot, key) in vals.iter_mut().zip(keys) {
                if k.as_str() == key {
                    *slot = non_negative(v);
                }
            }
        }
        let _ = pk;
        out.push((name, vals));
    }
    Some(out)
}

impl Ietf {
    fn buckets(&self, headers: &HeaderMap) -> Vec<BucketInfo> {
        let caps = &self.caps;
        if let Some(state) = header_str(headers, "ratelimit") {
            let policies = header_str(headers, "ratelimit-policy")
                .and_then(|p| parse_members(p, ["q", "w", "qu"]))
                .unwrap_or_default();
            let Some(members) = parse_members(state, ["r", "t", "pk"]) else {
                return Vec::new();
            };
            return members
                .into_iter()
                .filter_map(|(name, [r, t, _])| {
                    let remaining = r?;
                    let reset = t?;
                    let quota = policies.iter().find(|p| p.0 == name).and_then(|p| p.1[0]);
                    let limit = cap(
                        "ratelimit q",
                        quota.unwrap_or(remaining).max(remaining).max(1),
                        caps.max_limit,
                    );
                    Some(BucketInfo {
                        id: Some(name),
                        limit,
                        remaining: remaining.min(limit),
                        reset_after: cap(
                            "ratelimit t",
                            reset.saturating_mul(1_000_000),
                            caps.max_reset,
                        ),
                    })
                })
                .collect();
        }
        // The older draft: single-policy plain numbers.
        let limit = header_str(headers, "ratelimit-limit")
            .and_then(|v| v.split([',', ';']).next())
            .and_then(|v| parse_u64(v.trim()));
        let remaining = header_str(headers, "ratelimit-remaining").and_then(parse_u64);
        let reset = header_str(headers, "ratelimit-reset").and_then(parse_seconds);
        match (limit, remaining, reset) {
            (Some(l), Some(r), Some(t)) if l > 0 => {
                let l = cap("ratelimit-limit", l, caps.max_limit);
                vec![BucketInfo {
                    id: Some("ratelimit".to_owned()),
                    limit: l,
                    remaining: r.min(l),
                    reset_after: cap("ratelimit-reset", t, caps.max_reset),
                }]
            }
            _ => Vec::new(),
        }
    }
}

impl Profile for Ietf {
    fn name(&self) -> &'static str {
        "ietf"
    }

    fn observe(
        &self,
        status: StatusCode,
        headers: &HeaderMap,
        _body: Option<&[u8]>,
    ) -> Observation {
        let buckets = self.buckets(headers);
        let limited = (status == StatusCode::TOO_MANY_REQUESTS).then(|| {
            let retry = retry_after_header(headers)
                .or_else(|| {
                    buckets
                        .iter()
                        .filter(|b| b.remaining == 0)
                        .map(|b| b.reset_after)
                        .max()
                })
                .unwrap_or(1_000_000);
            Limited {
                scope: Scope::User,
                retry_after: cap("retry-after", retry, self.caps.max_retry),
            }
        });
        Observation {
            buckets,
            limited,
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

    fn h(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut m = HeaderMap::new();
        for (k, v) in pairs {
            m.append(*k, HeaderValue::from_static(v));
        }
        m
    }

    #[test]
    fn several_policies_become_several_buckets() {
        let hs = h(&[
            (
                "ratelimit-policy",
                r#""burst";q=100;w=60, "day";q=1000;w=86400;qu="requests""#,
            ),
            ("ratelimit", r#""burst";r=50;t=30, "day";r=0;t=3600"#),
            ("retry-after", "12"),
        ]);
        let obs = Ietf::new().observe(StatusCode::TOO_MANY_REQUESTS, &hs, None);
        assert_eq!(obs.buckets.len(), 2);
        assert_eq!(obs.buckets[1].id.as_deref(), Some("day"));
        assert_eq!(
            (
                obs.buckets[1].limit,
                obs.buckets[1].remaining,
                obs.buckets[1].reset_after
            ),
            (1000, 0, 3_600_000_000)
        );
        assert_eq!(obs.limited.unwrap().retry_after, 12_000_000);
    }

    #[test]
    fn older_draft_fields_are_read() {
        let hs = h(&[
            ("ratelimit-limit", "10"),
            ("ratelimit-remaining", "3"),
            ("ratelimit-reset", "5"),
        ]);
        let b = &Ietf::new().observe(StatusCode::OK, &hs, None).buckets[0];
        assert_eq!((b.limit, b.remaining, b.reset_after), (10, 3, 5_000_000));
    }

    #[test]
    fn malformed_fields_are_ignored() {
        for bad in [r#""a";r=-1;t=5"#, r#""a";r=1"#, "((", r#""a";r=1;t=?1"#, ""] {
            let hs = h(&[("ratelimit", bad)]);
            assert!(
                Ietf::new()
                    .observe(StatusCode::OK, &hs, None)
                    .buckets
                    .is_empty(),
                "{bad}"
            );
        }
        let many = "a;r=1;t=1, b;r=1;t=1, c;r=1;t=1, d;r=1;t=1, e;r=1;t=1, f;r=1;t=1, g;r=1;t=1, h;r=1;t=1, i;r=1;t=1, j;r=1;t=1";
        assert_eq!(
            Ietf::new()
                .observe(StatusCode::OK, &h(&[("ratelimit", many)]), None)
                .buckets
                .len(),
            MAX_POLICIES
        );
        let huge = h(&[("ratelimit", "a;r=999999999999;t=999999999999")]);
        let b = &Ietf::new().observe(StatusCode::OK, &huge, None).buckets[0];
        assert_eq!((b.limit, b.reset_after), (1_000_000, 3_600_000_000));
    }
}
