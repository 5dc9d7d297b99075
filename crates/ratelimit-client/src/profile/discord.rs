//! The Discord REST profile.
//!
//! Discord limits each credential in three ways (see `docs` in the repository notes, and Discord's
//! "Rate Limits" page):
//!
//! * **Per-route buckets.** A route's limit is reported in `X-RateLimit-Limit`, `-Remaining`,
//!   `-Reset-After` (seconds, 3 decimals) and named by `X-RateLimit-Bucket`, a hash that does *not* include
//!   the top-level resource ("major parameter": channel, guild, webhook id + token). A counter is therefore
//!   keyed by `(bucket hash, major)`; routes that report the same hash may share one counter (reactions) or
//!   keep their own (message create and edit), which the scheduler finds out from the counts.
//! * **A global limit**, 50 requests per second per token by default, of which interaction callbacks and
//!   follow-ups are exempt. A global 429 carries `X-RateLimit-Global: true` and no bucket headers.
//! * **An invalid-request limit per IP**: 10,000 responses with status 401, 403 or a non-`shared` 429 in
//!   10 minutes earn a temporary ban, served by Cloudflare as a 429 without any `X-RateLimit-*` header.
//!
//! On a 429 the JSON body's `retry_after` (float seconds) is the precise wait; the `Retry-After` header is
//! the same value rounded up to whole seconds and is only used when the body is missing.
//!
//! ```
//! use http::{Method, Uri, HeaderMap};
//! use ratelimit_client::profile::{Discord, Profile};
//!
//! let route = Discord::new().classify(
//!     &Method::POST,
//!     &Uri::from_static("https://discord.com/api/v10/channels/1234/messages"),
//!     &HeaderMap::new(),
//! );
//! assert_eq!(route.key, "POST /channels/{channel_id}/messages");
//! assert_eq!(route.major, "1234");
//! ```

use std::hash::{BuildHasher, Hasher};
use std::time::{SystemTime, UNIX_EPOCH};

use http::{HeaderMap, HeaderName, Method, StatusCode, Uri};

use super::reading::{Reading, UNNAMED_LIMIT_WAIT};
use super::{is_transient, BucketInfo, Lane, Observation, Profile, Route, Scope};
use crate::parse::{
    float_seconds, header_str, parse_seconds, parse_u64, Caps, ParseError, Problems,
};

/// Discord's epoch (2015-01-01) in Unix milliseconds, for snowflake ages.
const DISCORD_EPOCH_MS: u64 = 1_420_070_400_000;
/// Interaction tokens are base64 of `interaction:…`.
const INTERACTION_TOKEN_PREFIX: &str = "aW50ZXJhY3Rpb24";
// Header names, built once: looking a header up by `&str` parses the name on every call.
const SCOPE: HeaderName = HeaderName::from_static("x-ratelimit-scope");
const GLOBAL: HeaderName = HeaderName::from_static("x-ratelimit-global");

/// The Discord REST profile (see the [module docs](self)).
#[derive(Debug, Clone, Default)]
pub struct Discord {
    reading: Reading,
}

impl Discord {
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

/// A short, stable digest of a secret (a webhook token) so that it never lands in keys, logs or metrics.
fn digest(s: &str) -> u64 {
    let mut h = foldhash::fast::FixedState::with_seed(0x5eed).build_hasher();
    h.write(s.as_bytes());
    h.finish()
}

fn is_snowflake(s: &str) -> bool {
    !s.is_empty() && s.len() <= 20 && s.bytes().all(|b| b.is_ascii_digit())
}

/// The age class of a message id, for `DELETE /channels/{c}/messages/{m}`: Discord uses different buckets
/// for messages younger than 10 s and older than 14 days (dapi#8330).
fn delete_age_class(message_id: &str) -> &'static str {
    let Some(id) = parse_u64(message_id) else {
        return "";
    };
    let created_ms = (id >> 22).saturating_add(DISCORD_EPOCH_MS);
    let now_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
    let age = now_ms.saturating_sub(created_ms);
    if age < 10_000 {
        " [age<10s]"
    } else if age > 14 * 24 * 3_600_000 {
        " [age>14d]"
    } else {
        ""
    }
}

/// Splits a Discord URL path into route template and major parameter.
pub(crate) fn discord_route(method: &Method, path: &str) -> Route {
    // The segments, on the stack for any real Discord path (no allocation on the hot path); a longer path
    // spills to the heap.
    const INLINE: usize = 16;
    let mut inline = [""; INLINE];
    let mut n = 0;
    for seg in path.split('/').filter(|s| !s.is_empty()) {
        if n == INLINE {
            n = INLINE + 1;
            break;
        }
        inline[n] = seg;
        n += 1;
    }
    let spilled: Vec<&str>;
    let mut segs: &[&str] = if n > INLINE {
        spilled = path.split('/').filter(|s| !s.is_empty()).collect();
        &spilled
    } else {
        &inline[..n]
    };
    // Strip `/api` and `/api/v10`.
    if segs.first() == Some(&"api") {
        segs = &segs[1..];
        if segs.first().is_some_and(|s| {
            s.len() > 1 && s.starts_with('v') && s[1..].bytes().all(|b| b.is_ascii_digit())
        }) {
            segs = &segs[1..];
        }
    }
    let mut key = String::with_capacity(path.len() + 16);
    let mut major = String::new();
    let mut global_exempt = false;
    let mut lane = Lane::Normal;
    let top = segs.first().copied().unwrap_or("");

    // Reactions: every PUT/DELETE variant draws on one counter (dapi#981), so they share one route key.
    let reactions = segs.iter().position(|s| *s == "reactions");
    let shared_reactions = top == "channels"
        && reactions.is_some()
        && (method == Method::PUT || method == Method::DELETE);
    if shared_reactions {
        key.push_str("PUT|DELETE");
    } else {
        key.push_str(method.as_str());
    }
    key.push(' ');

    let mut i = 0;
    while i < segs.len() {
        let seg = segs[i];
        key.push('/');
        if i == 1 && matches!(top, "channels" | "guilds") && is_snowflake(seg) {
            key.push_str(if top == "channels" {
                "{channel_id}"
            } else {
                "{guild_id}"
            });
            major.push_str(seg);
        } else if i == 1 && top == "webhooks" && is_snowflake(seg) {
            key.push_str("{webhook_id}");
            major.push_str(seg);
            if let Some(token) = segs.get(2) {
                // Interaction follow-ups are exempt from the global limit; plain webhook executions (same
                // shape, no way to tell them apart without the token's prefix) are exempt too, as twilight
                // treats them and as the notes' model does (A.11.3).
                global_exempt = true;
                if token.starts_with(INTERACTION_TOKEN_PREFIX) {
                    lane = Lane::Urgent;
                }
                key.push_str("/{webhook_token}");
                major.push('/');
                crate::hex::push_hex(&mut major, digest(token));
                i += 1;
            }
        } else if i == 1 && top == "interactions" {
            key.push_str("{interaction_id}");
            major.push_str(seg);
            if segs.get(2).is_some() {
                key.push_str("/{interaction_token}");
                i += 1;
            }
            if segs.last() == Some(&"callback") {
                global_exempt = true;
                lane = Lane::Urgent;
            }
        } else if Some(i) > reactions && reactions.is_some() {
            if shared_reactions {
                break;
            }
            if Some(i) == reactions.map(|r| r + 1) {
                key.push_str("{emoji}");
            } else if seg == "@me" {
                key.push_str("@me");
            } else {
                key.push_str("{user_id}");
            }
        } else if is_snowflake(seg) {
            key.push_str("{id}");
        } else if seg.len() > 64 {
            // Tokens and other long opaque segments never go into keys.
            key.push_str("{token}");
        } else {
            key.push_str(seg);
        }
        i += 1;
    }
    if method == Method::DELETE && top == "channels" && segs.len() == 4 && segs[2] == "messages" {
        key.push_str(delete_age_class(segs[3]));
    }
    Route {
        key,
        major,
        global_exempt,
        lane,
    }
}

fn has_ratelimit_headers(headers: &HeaderMap) -> bool {
    headers
        .keys()
        .any(|k| k.as_str().starts_with("x-ratelimit-"))
}

fn looks_like_html(headers: &HeaderMap, body: Option<&[u8]>) -> bool {
    let ct_html = header_str(headers, "content-type").is_some_and(|ct| {
        ct.as_bytes()
            .windows(4)
            .any(|w| w.eq_ignore_ascii_case(b"html"))
    });
    let body_html = body.is_some_and(|b| {
        b.iter()
            .find(|c| !c.is_ascii_whitespace())
            .is_some_and(|&c| c == b'<')
    });
    ct_html || body_html
}

/// The parts of a Discord 429 body the scheduler uses.
#[derive(Debug, Default, Clone, Copy, PartialEq)]
pub(crate) struct LimitBody {
    /// `retry_after` when present: `Some(None)` when it is not a number.
    pub retry_after: Option<Option<f64>>,
    pub global: bool,
    pub code: Option<i64>,
    pub json: bool,
}

pub(crate) fn parse_limit_body(body: &[u8]) -> LimitBody {
    match serde_json::from_slice::<serde_json::Value>(body) {
        Ok(serde_json::Value::Object(map)) => LimitBody {
            retry_after: map.get("retry_after").map(serde_json::Value::as_f64),
            global: map
                .get("global")
                .and_then(serde_json::Value::as_bool)
                .unwrap_or(false),
            code: map.get("code").and_then(serde_json::Value::as_i64),
            json: true,
        },
        _ => LimitBody::default(),
    }
}

const LIMIT: &str = "x-ratelimit-limit";
const REMAINING: &str = "x-ratelimit-remaining";
const RESET_AFTER: &str = "x-ratelimit-reset-after";
const BUCKET: &str = "x-ratelimit-bucket";
const BODY_RETRY_AFTER: &str = "retry_after (429 body)";

/// The bucket headers (`limit`, `remaining`, `reset-after`, `bucket`), read in one pass over the response's
/// headers instead of one hashed lookup each, with [`header_str`]'s rules: trimmed text, and a header
/// repeated with different values reads as absent (noted, as is a value that is not text).
fn bucket_headers<'h>(headers: &'h HeaderMap, p: &mut Problems<'_>) -> [Option<&'h str>; 4] {
    const NAMES: [&str; 4] = [LIMIT, REMAINING, RESET_AFTER, BUCKET];
    let mut first: [Option<&http::HeaderValue>; 4] = [None; 4];
    let mut conflict = [false; 4];
    for (name, value) in headers {
        let Some(i) = NAMES.iter().position(|n| *n == name.as_str()) else {
            continue;
        };
        match first[i] {
            None => first[i] = Some(value),
            Some(f) if f != value => conflict[i] = true,
            Some(_) => {}
        }
    }
    let mut out = [None; 4];
    for (i, slot) in out.iter_mut().enumerate() {
        if conflict[i] {
            p.note(ParseError::Conflicting { header: NAMES[i] });
        } else if let Some(v) = first[i] {
            *slot = p.text(v, NAMES[i]);
        }
    }
    out
}

/// Reads the bucket headers of a Discord response (on any status). Counts the protocol cannot produce
/// (a zero limit, more remaining than the limit) are no evidence; a hash that is not one is dropped (the
/// counter is then keyed by route), and one longer than [`MAX_NAME_BYTES`](crate::parse::MAX_NAME_BYTES) is kept as its digest.
pub(crate) fn parse_bucket(
    headers: &HeaderMap,
    caps: &Caps,
    p: &mut Problems<'_>,
) -> Option<BucketInfo> {
    let [limit, remaining, reset_after, bucket] = bucket_headers(headers, p);
    let (limit, remaining, reset_after) = p.limit_counts(
        (LIMIT, limit, parse_u64),
        (REMAINING, remaining, parse_u64),
        (RESET_AFTER, reset_after, parse_seconds),
        caps.max_limit,
    )?;
    let id = bucket.and_then(|h| {
        p.name(BUCKET, h, |b| {
            b.is_ascii_alphanumeric() || b == b'-' || b == b'_'
        })
    });
    Some(BucketInfo {
        id,
        limit,
        remaining,
        reset_after: p.cap(RESET_AFTER, reset_after, caps.max_reset),
    })
}

impl Discord {
    /// The scope a 429 names; an unknown value is read as `user` (counted, and the bucket blocked).
    fn scope(headers: &HeaderMap, body: &LimitBody, p: &mut Problems<'_>) -> Scope {
        let global_header = p
            .header(headers, &GLOBAL, "x-ratelimit-global")
            .is_some_and(|g| g.eq_ignore_ascii_case("true"));
        let global = global_header || body.global;
        match p.header(headers, &SCOPE, "x-ratelimit-scope") {
            Some(s) if s.eq_ignore_ascii_case("global") => Scope::Global,
            Some(s) if s.eq_ignore_ascii_case("shared") => Scope::Shared,
            Some(s) if !s.eq_ignore_ascii_case("user") => {
                p.note(ParseError::Malformed {
                    header: "x-ratelimit-scope",
                });
                if global {
                    Scope::Global
                } else {
                    Scope::User
                }
            }
            _ if global => Scope::Global,
            _ => Scope::User,
        }
    }

    /// The wait a 429 names: the body's precise value first, then the header (whole seconds), then the
    /// bucket's reset, then one second.
    fn retry_after(
        headers: &HeaderMap,
        body: &LimitBody,
        bucket: Option<&BucketInfo>,
        p: &mut Problems<'_>,
    ) -> u64 {
        let precise = body.retry_after.and_then(|v| {
            let us = v.and_then(float_seconds);
            if us.is_none() {
                p.note(ParseError::Malformed {
                    header: BODY_RETRY_AFTER,
                });
            }
            us
        });
        precise
            .or_else(|| {
                let raw = p.header(headers, "retry-after", "retry-after");
                p.number("retry-after", raw, parse_seconds)
            })
            .or(bucket.map(|b| b.reset_after))
            .unwrap_or(UNNAMED_LIMIT_WAIT)
    }

    fn read(
        &self,
        status: StatusCode,
        headers: &HeaderMap,
        body: Option<&[u8]>,
        p: &mut Problems<'_>,
    ) -> Observation {
        let mut obs = Observation {
            server_error: is_transient(status),
            ..Observation::default()
        };
        let bucket = parse_bucket(headers, &self.reading.caps, p);
        if status == StatusCode::UNAUTHORIZED {
            obs.unauthorized = true;
            obs.invalid = true;
        } else if status == StatusCode::FORBIDDEN {
            obs.invalid = true;
        }
        if status == StatusCode::TOO_MANY_REQUESTS {
            let parsed = body.map(parse_limit_body).unwrap_or_default();
            let has_rl = has_ratelimit_headers(headers);
            let via = headers.contains_key("via");
            if looks_like_html(headers, body)
                || (!has_rl && (!via || !parsed.json || parsed.code == Some(0)))
            {
                obs.banned = true;
                obs.invalid = true;
                return obs;
            }
            let scope = Self::scope(headers, &parsed, p);
            let retry = Self::retry_after(headers, &parsed, bucket.as_ref(), p);
            obs.limited = Some(self.reading.limited(scope, retry, BODY_RETRY_AFTER, p));
            obs.invalid = scope != Scope::Shared;
            if scope == Scope::Global {
                return obs;
            }
        }
        obs.buckets.extend(bucket);
        obs
    }
}

impl Profile for Discord {
    fn name(&self) -> &'static str {
        "discord"
    }

    fn classify(&self, method: &Method, uri: &Uri, _headers: &HeaderMap) -> Route {
        discord_route(method, uri.path())
    }

    fn wants_body(&self, status: StatusCode, _headers: &HeaderMap) -> bool {
        status == StatusCode::TOO_MANY_REQUESTS
    }

    fn observe(&self, status: StatusCode, headers: &HeaderMap, body: Option<&[u8]>) -> Observation {
        self.reading
            .observe(|p| self.read(status, headers, body, p))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parse::Reported;
    use crate::profile::Limited;
    use http::HeaderValue;

    fn route(m: Method, p: &str) -> Route {
        discord_route(&m, p)
    }

    #[test]
    fn repeated_bucket_headers_count_only_when_they_agree() {
        let mut h = HeaderMap::new();
        for (k, v) in [
            ("x-ratelimit-limit", "5"),
            ("x-ratelimit-limit", "5"),
            ("x-ratelimit-remaining", " 4 "),
            ("x-ratelimit-reset-after", "1.5"),
            ("x-ratelimit-bucket", "abc"),
            ("x-ratelimit-bucket", "def"),
        ] {
            h.append(HeaderName::from_static(k), HeaderValue::from_static(v));
        }
        let reported = Reported::default();
        let mut p = Problems::new(&reported);
        let b = parse_bucket(&h, &Caps::default(), &mut p).expect("agreeing repeats are read");
        assert_eq!((b.limit, b.remaining, b.reset_after), (5, 4, 1_500_000));
        assert_eq!(b.id, None, "a conflicting bucket hash is ignored");
        assert_eq!(p.first, Some(ParseError::Conflicting { header: BUCKET }));
        h.append(
            HeaderName::from_static("x-ratelimit-remaining"),
            HeaderValue::from_static("3"),
        );
        assert_eq!(parse_bucket(&h, &Caps::default(), &mut p), None);
    }

    #[test]
    fn long_paths_spill_past_the_inline_segments_and_classify_the_same() {
        let tail = "/x".repeat(20);
        let r = route(Method::GET, &format!("/api/v10/channels/123{tail}"));
        assert_eq!(r.key, format!("GET /channels/{{channel_id}}{tail}"));
        assert_eq!(r.major, "123");
        // Exactly at the inline capacity (16 segments, `api` and `v10` included).
        let tail = "/x".repeat(12);
        let r = route(Method::GET, &format!("/api/v10/channels/123{tail}"));
        assert_eq!(r.key, format!("GET /channels/{{channel_id}}{tail}"));
    }

    #[test]
    fn webhook_majors_carry_a_token_digest_in_hex() {
        let r = route(Method::POST, "/api/webhooks/42/secret-token");
        assert_eq!(r.major, format!("42/{:016x}", digest("secret-token")));
    }

    #[test]
    fn routes_have_templates_and_majors() {
        let r = route(Method::POST, "/api/v10/channels/123/messages");
        assert_eq!(
            (r.key.as_str(), r.major.as_str()),
            ("POST /channels/{channel_id}/messages", "123")
        );
        let r = route(Method::PATCH, "/api/channels/123/messages/456");
        assert_eq!(r.key, "PATCH /channels/{channel_id}/messages/{id}");
        let r = route(Method::PUT, "/api/v10/guilds/9/members/8/roles/7");
        assert_eq!(
            (r.key.as_str(), r.major.as_str()),
            ("PUT /guilds/{guild_id}/members/{id}/roles/{id}", "9")
        );
        let r = route(Method::GET, "/api/v10/users/@me");
        assert_eq!((r.key.as_str(), r.major.as_str()), ("GET /users/@me", ""));
        assert!(!r.global_exempt);
    }

    #[test]
    fn reactions_share_one_key_per_channel() {
        let a = route(
            Method::PUT,
            "/api/v10/channels/1/messages/2/reactions/%F0%9F%91%8D/@me",
        );
        let b = route(
            Method::DELETE,
            "/api/v10/channels/1/messages/3/reactions/x:1/55",
        );
        assert_eq!(a.key, b.key);
        assert_eq!(a.major, "1");
        let g = route(Method::GET, "/api/v10/channels/1/messages/2/reactions/x:1");
        assert_eq!(
            g.key,
            "GET /channels/{channel_id}/messages/{id}/reactions/{emoji}"
        );
    }

    #[test]
    fn webhook_tokens_are_majors_but_never_stored() {
        let r = route(Method::POST, "/api/v10/webhooks/77/secret-token");
        assert_eq!(r.key, "POST /webhooks/{webhook_id}/{webhook_token}");
        assert!(r.major.starts_with("77/"));
        assert!(!r.major.contains("secret"));
        assert!(r.global_exempt);
        assert_eq!(r.lane, Lane::Normal);
        assert!(!route(Method::GET, "/api/v10/webhooks/77").global_exempt);
        let other = route(Method::POST, "/api/v10/webhooks/77/other-token");
        assert_ne!(r.major, other.major);
    }

    #[test]
    fn interactions_are_exempt_and_urgent() {
        let cb = route(Method::POST, "/api/v10/interactions/5/tok/callback");
        assert!(cb.global_exempt);
        assert_eq!(cb.lane, Lane::Urgent);
        let fu = route(
            Method::POST,
            "/api/v10/webhooks/1/aW50ZXJhY3Rpb246MTIzOmFiYw",
        );
        assert!(fu.global_exempt);
        let msg = route(
            Method::PATCH,
            "/api/v10/webhooks/1/aW50ZXJhY3Rpb246MTIzOmFiYw/messages/@original",
        );
        assert!(msg.global_exempt);
        assert_eq!(
            msg.key,
            "PATCH /webhooks/{webhook_id}/{webhook_token}/messages/@original"
        );
    }

    #[test]
    fn message_delete_is_split_by_age() {
        // id 0 → created at Discord's epoch: older than 14 days.
        let old = route(Method::DELETE, "/api/v10/channels/1/messages/1");
        assert!(old.key.ends_with("[age>14d]"), "{}", old.key);
        let now_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_millis() as u64;
        let young_id = (now_ms - DISCORD_EPOCH_MS) << 22;
        let young = route(
            Method::DELETE,
            &format!("/api/v10/channels/1/messages/{young_id}"),
        );
        assert!(young.key.ends_with("[age<10s]"), "{}", young.key);
    }

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    fn bucket_headers(remaining: &str) -> Vec<(&'static str, String)> {
        vec![
            ("x-ratelimit-limit", "5".into()),
            ("x-ratelimit-remaining", remaining.into()),
            ("x-ratelimit-reset-after", "2.148".into()),
            (
                "x-ratelimit-bucket",
                "41f9cd5d28af77da04563bcb1d67fdfd".into(),
            ),
            ("via", "1.1 google".into()),
        ]
    }

    fn h(v: &[(&'static str, String)]) -> HeaderMap {
        headers(&v.iter().map(|(k, v)| (*k, v.as_str())).collect::<Vec<_>>())
    }

    #[test]
    fn bucket_headers_are_read_on_any_response() {
        let obs = Discord::new().observe(StatusCode::OK, &h(&bucket_headers("4")), None);
        assert_eq!(
            obs.buckets,
            vec![BucketInfo {
                id: Some("41f9cd5d28af77da04563bcb1d67fdfd".into()),
                limit: 5,
                remaining: 4,
                reset_after: 2_148_000
            }]
        );
        assert!(obs.limited.is_none() && !obs.invalid);
    }

    #[test]
    fn user_429_uses_the_precise_body_value() {
        let mut hs = bucket_headers("0");
        hs.push(("retry-after", "3".into()));
        hs.push(("x-ratelimit-scope", "user".into()));
        let body =
            br#"{"message":"You are being rate limited.","retry_after":2.148,"global":false}"#;
        let obs = Discord::new().observe(StatusCode::TOO_MANY_REQUESTS, &h(&hs), Some(body));
        assert_eq!(
            obs.limited,
            Some(Limited {
                scope: Scope::User,
                retry_after: 2_148_000
            })
        );
        assert!(obs.invalid && !obs.banned);
        assert_eq!(obs.buckets[0].remaining, 0);
    }

    #[test]
    fn shared_429_is_not_invalid() {
        let mut hs = bucket_headers("9");
        hs.push(("retry-after", "1337".into()));
        hs.push(("x-ratelimit-scope", "shared".into()));
        let body = br#"{"message":"The resource is being rate limited.","retry_after":1336.57,"global":false}"#;
        let obs = Discord::new().observe(StatusCode::TOO_MANY_REQUESTS, &h(&hs), Some(body));
        assert_eq!(obs.limited.unwrap().scope, Scope::Shared);
        assert_eq!(obs.limited.unwrap().retry_after, 1_336_570_000);
        assert!(!obs.invalid);
    }

    #[test]
    fn global_429_has_no_bucket() {
        let hs = headers(&[
            ("retry-after", "1"),
            ("x-ratelimit-global", "true"),
            ("x-ratelimit-scope", "global"),
            ("via", "1.1 google"),
        ]);
        let body =
            br#"{"global":true,"message":"You are being rate limited.","retry_after":0.661}"#;
        let obs = Discord::new().observe(StatusCode::TOO_MANY_REQUESTS, &hs, Some(body));
        assert_eq!(
            obs.limited,
            Some(Limited {
                scope: Scope::Global,
                retry_after: 661_000
            })
        );
        assert!(obs.buckets.is_empty() && obs.invalid && !obs.banned);
    }

    #[test]
    fn cloudflare_bans_are_recognised() {
        let html = headers(&[("content-type", "text/html")]);
        let obs = Discord::new().observe(
            StatusCode::TOO_MANY_REQUESTS,
            &html,
            Some(b"<html>error 1015</html>"),
        );
        assert!(obs.banned && obs.limited.is_none());
        let json = headers(&[("content-type", "application/json")]);
        let body =
            br#"{"message":"You are being blocked from accessing our API temporarily","code":0}"#;
        assert!(
            Discord::new()
                .observe(StatusCode::TOO_MANY_REQUESTS, &json, Some(body))
                .banned
        );
    }

    #[test]
    fn hostile_headers_are_ignored_or_capped() {
        let d = Discord::new();
        for (limit, remaining, reset) in [
            ("NaN", "1", "1"),
            ("5", "-1", "1"),
            ("5", "1", "inf"),
            ("5", "1", "1e9"),
            ("0", "0", "1"),
            ("99999999999999999999999", "1", "1"),
        ] {
            let hs = headers(&[
                ("x-ratelimit-limit", limit),
                ("x-ratelimit-remaining", remaining),
                ("x-ratelimit-reset-after", reset),
            ]);
            assert!(
                d.observe(StatusCode::OK, &hs, None).buckets.is_empty(),
                "{limit} {remaining} {reset}"
            );
        }
        let hs = headers(&[
            ("x-ratelimit-limit", "5000000000"),
            ("x-ratelimit-remaining", "4999999999"),
            ("x-ratelimit-reset-after", "102737.719"),
            ("x-ratelimit-bucket", "not a hash!"),
        ]);
        let b = &d.observe(StatusCode::OK, &hs, None).buckets[0];
        assert_eq!(
            (b.limit, b.remaining, b.reset_after, b.id.as_deref()),
            (1_000_000, 1_000_000, 3_600_000_000, None)
        );
        // Counts that contradict each other are no evidence, and the observation says why.
        let hs = headers(&[
            ("x-ratelimit-limit", "5"),
            ("x-ratelimit-remaining", "9"),
            ("x-ratelimit-reset-after", "1"),
        ]);
        let obs = d.observe(StatusCode::OK, &hs, None);
        assert!(obs.buckets.is_empty());
        assert_eq!(
            obs.malformed,
            Some(ParseError::RemainingAboveLimit {
                header: REMAINING,
                remaining: 9,
                limit: 5
            })
        );
        // A long hash is kept as a fixed-size digest; distinct ones stay distinct.
        let long = |c: &str| {
            let h = headers(&[
                ("x-ratelimit-limit", "5"),
                ("x-ratelimit-remaining", "4"),
                ("x-ratelimit-reset-after", "1"),
                ("x-ratelimit-bucket", &c.repeat(16 * 1024)),
            ]);
            d.observe(StatusCode::OK, &h, None).buckets[0]
                .id
                .clone()
                .unwrap()
        };
        assert_eq!(long("a").len(), 17);
        assert_ne!(long("a"), long("b"));
        // Not text at all (obs-text bytes): read as absent, and said so.
        let mut hs = HeaderMap::new();
        hs.insert(
            "x-ratelimit-limit",
            HeaderValue::from_bytes(b"5\xff").unwrap(),
        );
        hs.insert("x-ratelimit-remaining", HeaderValue::from_static("4"));
        hs.insert("x-ratelimit-reset-after", HeaderValue::from_static("1"));
        let obs = d.observe(StatusCode::OK, &hs, None);
        assert!(obs.buckets.is_empty());
        assert!(obs.malformed.is_some());
        // A hostile 429 body.
        let mut hs = bucket_headers("0");
        hs.push(("retry-after", "nope".into()));
        let obs = d.observe(
            StatusCode::TOO_MANY_REQUESTS,
            &h(&hs),
            Some(br#"{"retry_after":1e308}"#),
        );
        assert_eq!(obs.limited.unwrap().retry_after, 3_600_000_000);
        let obs = d.observe(
            StatusCode::TOO_MANY_REQUESTS,
            &h(&hs),
            Some(br#"{"retry_after":"x"}"#),
        );
        assert_eq!(obs.limited.unwrap().retry_after, 2_148_000);
    }

    #[test]
    fn unauthorized_and_forbidden_are_invalid() {
        let obs = Discord::new().observe(StatusCode::UNAUTHORIZED, &HeaderMap::new(), None);
        assert!(obs.unauthorized && obs.invalid);
        let obs = Discord::new().observe(StatusCode::FORBIDDEN, &HeaderMap::new(), None);
        assert!(!obs.unauthorized && obs.invalid);
        assert!(
            Discord::new()
                .observe(StatusCode::BAD_GATEWAY, &HeaderMap::new(), None)
                .server_error
        );
    }
}
