//! Upstream profiles: how one API names its rate limits, and how to read them back from responses.
//!
//! A [`Profile`] is data plus parsing. It classifies an outgoing request into a [`Route`] (a route key such
//! as `POST /channels/{channel_id}/messages`, the major parameter that splits its counters, whether the
//! global limit applies, a default [`Lane`]) and turns a response into an [`Observation`]: the buckets the
//! response describes, whether it was a limit (and of which [`Scope`]), whether it counts as an invalid
//! request, whether the credential was refused or the client is banned. The scheduler that acts on these
//! observations is the same for every profile.
//!
//! Profiles shipped: [`Discord`], [`Ietf`] (`RateLimit`/`RateLimit-Policy`), [`GitHub`] (`x-ratelimit-*`)
//! and [`RetryAfter`] (plain `Retry-After` only).

use http::{HeaderMap, Method, StatusCode, Uri};
use ratelimit_core::Micros;

pub mod credential;
pub mod discord;
pub mod github;
pub mod ietf;
mod reading;
pub mod retry_after;

pub use credential::{Credential, RequestView};
pub use discord::Discord;
pub use github::GitHub;
pub use ietf::Ietf;
pub use retry_after::RetryAfter;

/// A priority lane. Waiting requests are served from the most urgent non-empty lane first and in FIFO
/// order within a lane.
///
/// Put a `Lane` in a request's extensions to choose it; otherwise the profile picks one (Discord puts
/// interaction responses in [`Lane::Urgent`]).
///
/// ```
/// use ratelimit_client::Lane;
/// let mut req = http::Request::new(());
/// req.extensions_mut().insert(Lane::Bulk);
/// assert!(Lane::Urgent < Lane::Normal && Lane::Normal < Lane::Bulk);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub enum Lane {
    /// Served first; never shed by the invalid-request budget before it stops everything.
    Urgent = 0,
    /// The default lane.
    #[default]
    Normal = 1,
    /// Bulk jobs: served last, shed first.
    Bulk = 2,
}

impl Lane {
    pub(crate) const COUNT: usize = 3;

    pub(crate) fn index(self) -> usize {
        self as usize
    }
}

/// How a profile classifies one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    /// Method and route template, e.g. `POST /channels/{channel_id}/messages`. Requests with the same key and
    /// major are assumed to draw on the same counters until responses say otherwise.
    pub key: String,
    /// The major (top-level resource) value that splits counters, e.g. a channel id; empty when none.
    pub major: String,
    /// True when the upstream's global limit does not apply (Discord interaction callbacks and follow-ups).
    pub global_exempt: bool,
    /// The lane used when the request does not name one.
    pub lane: Lane,
}

/// Which limit a 429 (or a GitHub 403) reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Scope {
    /// The caller's own per-route bucket (also used for unknown scope values).
    User,
    /// The per-credential global limit.
    Global,
    /// A resource-wide limit the caller did not cause; not counted against it.
    Shared,
}

impl Scope {
    /// A short label for logs and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::User => "user",
            Scope::Global => "global",
            Scope::Shared => "shared",
        }
    }
}

/// One bucket as a response describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BucketInfo {
    /// The upstream's name for the bucket (Discord's `X-RateLimit-Bucket` hash, GitHub's resource, an IETF
    /// policy name), if it gives one.
    pub id: Option<String>,
    /// Requests allowed per window.
    pub limit: u64,
    /// Requests left in the window, this request included.
    pub remaining: u64,
    /// Time until the window resets, in microseconds, measured from when the response was read.
    pub reset_after: Micros,
}

/// A limit response: which scope and how long to wait before trying again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limited {
    /// The scope the upstream named.
    pub scope: Scope,
    /// The precise wait, in microseconds.
    pub retry_after: Micros,
}

/// What a response tells the scheduler.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Observation {
    /// Buckets described by the response's headers.
    pub buckets: Vec<BucketInfo>,
    /// Set when the response is a rate-limit response.
    pub limited: Option<Limited>,
    /// The response counts toward the upstream's invalid-request budget (Discord: 401, 403, non-shared 429).
    pub invalid: bool,
    /// The credential was refused (401): stop using it.
    pub unauthorized: bool,
    /// The response looks like an IP-wide ban (a Cloudflare block page, not a bucket limit).
    pub banned: bool,
    /// A transient server error that may be retried with backoff.
    pub server_error: bool,
    /// The first problem found in the response's rate-limit headers or body (each is logged once per kind
    /// by the profile). Rejected evidence is not absence of evidence: a route whose responses carry only
    /// malformed limits is not taken to have none, and keeps sending one request at a time.
    pub malformed: Option<crate::parse::ParseError>,
}

/// An upstream's rate-limit dialect: classification of requests and parsing of responses.
///
/// Implementations must never panic on any input: headers and bodies come from the network. Names they
/// report ([`BucketInfo::id`]) must be bounded in bytes (see [`crate::parse::bounded_name`]); values they
/// cannot trust are left out and named in [`Observation::malformed`].
pub trait Profile: Send + Sync + 'static {
    /// A short name for logs.
    fn name(&self) -> &'static str;

    /// Classifies an outgoing request. The default keys the route by method and path with numeric
    /// segments replaced by `{id}`, with no major parameter, exempt from any global limit, in the normal
    /// lane — what an upstream without Discord's routing rules needs.
    fn classify(&self, method: &Method, uri: &Uri, headers: &HeaderMap) -> Route {
        let _ = headers;
        Route {
            key: generic_route(method, uri),
            major: String::new(),
            global_exempt: true,
            lane: Lane::Normal,
        }
    }

    /// Whether the response body is needed to observe this response (at most 64 KiB of it is read).
    fn wants_body(&self, status: StatusCode, headers: &HeaderMap) -> bool {
        let _ = headers;
        status == StatusCode::TOO_MANY_REQUESTS
    }

    /// Reads a response. `body` is given when [`Profile::wants_body`] asked for it and it could be read.
    fn observe(&self, status: StatusCode, headers: &HeaderMap, body: Option<&[u8]>) -> Observation;
}

/// A 5xx status worth retrying (Cloudflare's 524 included).
pub(crate) fn is_transient(status: StatusCode) -> bool {
    matches!(status.as_u16(), 500 | 502 | 503 | 504 | 524)
}

/// A route key built from a method and a path with every numeric segment replaced by `{id}`; the generic
/// classification used by the non-Discord profiles.
pub(crate) fn generic_route(method: &Method, uri: &Uri) -> String {
    let path = uri.path();
    let mut key = String::with_capacity(method.as_str().len() + 1 + path.len());
    key.push_str(method.as_str());
    key.push(' ');
    for (i, seg) in path.split('/').enumerate() {
        if i > 0 {
            key.push('/');
        }
        if !seg.is_empty() && seg.bytes().all(|b| b.is_ascii_digit()) {
            key.push_str("{id}");
        } else {
            key.push_str(seg);
        }
    }
    key
}
