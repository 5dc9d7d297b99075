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

use super::reading::{Reading, UNNAMED_LIMIT_WAIT};
use super::retry_after::read_retry_after;
use super::{BucketInfo, Observation, Profile};
use crate::parse::{parse_seconds, parse_u64, Caps, ParseError, Problems};

/// At most this many policies are read from one response; the rest are ignored (a hostile server must not
/// make the client track thousands of buckets per route).
pub const MAX_POLICIES: usize = 8;

const STATE: &str = "ratelimit";
const POLICY: &str = "ratelimit-policy";

/// The IETF `RateLimit` profile (see the [module docs](self)).
///
/// Policy names longer than [`MAX_NAME_BYTES`](crate::parse::MAX_NAME_BYTES) are kept as a fixed-size digest
/// ([`bounded_name`](crate::parse::bounded_name)); a policy whose counts contradict each other
/// (`r` above `q`) or lack `r` or `t` is left out and reported.
#[derive(Debug, Clone, Default)]
pub struct Ietf {
    reading: Reading,
}

impl Ietf {
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

fn non_negative(item: &BareItem) -> Option<u64> {
    if let Some(i) = item.as_integer() {
        return u64::try_from(i64::from(i)).ok();
    }
    // A decimal: round down to whole units (seconds or requests).
    item.as_decimal()
        .and_then(|d| u64::try_from(i64::from(d.as_integer_scaled_1000())).ok())
        .map(|m| m / 1000)
}

/// One list member: its name (bounded in bytes) and the two integer parameters the caller asked for.
struct Member {
    name: String,
    vals: [Option<u64>; 2],
}

fn parse_members(
    value: &str,
    header: &'static str,
    keys: [&str; 2],
    p: &mut Problems<'_>,
) -> Option<Vec<Member>> {
    let Ok(list) = Parser::new(value).parse_list::<sfv::List>() else {
        p.note(ParseError::BadStructure { header });
        return None;
    };
    let mut out = Vec::with_capacity(list.len().min(MAX_POLICIES));
    for entry in list.into_iter().take(MAX_POLICIES) {
        let ListEntry::Item(item) = entry else {
            p.note(ParseError::Malformed { header });
            continue;
        };
        let raw = match (item.bare_item.as_string(), item.bare_item.as_token()) {
            (Some(s), _) => s.as_str(),
            (_, Some(t)) => t.as_str(),
            _ => {
                p.note(ParseError::Malformed { header });
                continue;
            }
        };
        // A string or token is visible ASCII already; only its length needs a bound.
        let Some(name) = p.name(header, raw, |_| true) else {
            continue;
        };
        let mut vals = [None; 2];
        for (k, v) in &item.params {
            for (slot, key) in vals.iter_mut().zip(keys) {
                if k.as_str() == key {
                    *slot = non_negative(v);
                    if slot.is_none() {
                        p.note(ParseError::Malformed { header });
                    }
                }
            }
        }
        out.push(Member { name, vals });
    }
    Some(out)
}

impl Ietf {
    fn buckets(&self, headers: &HeaderMap, p: &mut Problems<'_>) -> Vec<BucketInfo> {
        let Some(state) = p.header(headers, STATE, STATE) else {
            return self.older_draft(headers, p).into_iter().collect();
        };
        let policies = p
            .header(headers, POLICY, POLICY)
            .and_then(|v| parse_members(v, POLICY, ["q", "w"], p))
            .unwrap_or_default();
        let Some(members) = parse_members(state, STATE, ["r", "t"], p) else {
            return Vec::new();
        };
        members
            .into_iter()
            .filter_map(|m| self.policy_bucket(m, &policies, p))
            .collect()
    }

    /// One policy's state as a bucket; its limit is the policy's quota, or what remains when no policy
    /// names one.
    fn policy_bucket(
        &self,
        m: Member,
        policies: &[Member],
        p: &mut Problems<'_>,
    ) -> Option<BucketInfo> {
        let [Some(remaining), Some(reset)] = m.vals else {
            p.note(ParseError::Incomplete { header: STATE });
            return None;
        };
        let quota = policies
            .iter()
            .find(|q| q.name == m.name)
            .and_then(|q| q.vals[0])
            .unwrap_or(remaining.max(1));
        let (limit, remaining) = p.counts(
            (POLICY, quota),
            (STATE, remaining),
            self.reading.caps.max_limit,
        )?;
        Some(BucketInfo {
            id: Some(m.name),
            limit,
            remaining,
            reset_after: p.cap(
                STATE,
                reset.saturating_mul(1_000_000),
                self.reading.caps.max_reset,
            ),
        })
    }

    /// The older draft: single-policy plain numbers.
    fn older_draft(&self, headers: &HeaderMap, p: &mut Problems<'_>) -> Option<BucketInfo> {
        const LIMIT: &str = "ratelimit-limit";
        const REMAINING: &str = "ratelimit-remaining";
        const RESET: &str = "ratelimit-reset";
        // `RateLimit-Limit: 10, 10;w=1` names the quota first.
        let first_item = |v: &str| parse_u64(v.split([',', ';']).next().unwrap_or("").trim());
        let raw = [LIMIT, REMAINING, RESET].map(|h| p.header(headers, h, h));
        let (limit, remaining, reset) = p.limit_counts(
            (LIMIT, raw[0], first_item),
            (REMAINING, raw[1], parse_u64),
            (RESET, raw[2], parse_seconds),
            self.reading.caps.max_limit,
        )?;
        Some(BucketInfo {
            id: Some("ratelimit".to_owned()),
            limit,
            remaining,
            reset_after: p.cap(RESET, reset, self.reading.caps.max_reset),
        })
    }

    fn read(&self, status: StatusCode, headers: &HeaderMap, p: &mut Problems<'_>) -> Observation {
        let buckets = self.buckets(headers, p);
        let retry = (status == StatusCode::TOO_MANY_REQUESTS).then(|| {
            read_retry_after(headers, p)
                .or_else(|| {
                    buckets
                        .iter()
                        .filter(|b| b.remaining == 0)
                        .map(|b| b.reset_after)
                        .max()
                })
                .unwrap_or(UNNAMED_LIMIT_WAIT)
        });
        self.reading.headers_only(status, buckets, retry, p)
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
        self.reading.observe(|p| self.read(status, headers, p))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parse::MAX_NAME_BYTES;
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
        let obs = Ietf::new().observe(StatusCode::OK, &huge, None);
        let b = &obs.buckets[0];
        assert_eq!((b.limit, b.reset_after), (1_000_000, 3_600_000_000));
        assert!(matches!(obs.malformed, Some(ParseError::AboveCap { .. })));
    }

    #[test]
    fn long_policy_names_are_kept_as_digests_and_contradictions_left_out() {
        let long = "p".repeat(16 * 1024);
        let mut hs = HeaderMap::new();
        hs.insert(
            "ratelimit-policy",
            HeaderValue::from_str(&format!("{long};q=10, small;q=5")).unwrap(),
        );
        hs.insert(
            "ratelimit",
            HeaderValue::from_str(&format!("{long};r=3;t=1, small;r=6;t=1")).unwrap(),
        );
        let obs = Ietf::new().observe(StatusCode::OK, &hs, None);
        assert_eq!(obs.buckets.len(), 1, "r=6 of q=5 is no evidence");
        let b = &obs.buckets[0];
        assert_eq!(
            (b.limit, b.remaining),
            (10, 3),
            "the digest still finds its policy"
        );
        assert!(b.id.as_deref().unwrap().len() <= MAX_NAME_BYTES);
        assert!(matches!(
            obs.malformed,
            Some(ParseError::NameTooLong { len: 16384, .. })
        ));
    }
}
