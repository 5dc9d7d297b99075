//! What the layer answers when it does not let a request through, and the response body type.
//!
//! * **429** (limited): RFC 9457 `application/problem+json` with the problem type
//!   `https://iana.org/assignments/http-problem-types#quota-exceeded` and the extension member
//!   `violated-policies` (draft-ietf-httpapi-ratelimit-headers-11 §Problem Types), `Retry-After`,
//!   `RateLimit`/`RateLimit-Policy`, and `Cache-Control: no-store` (RFC 6585: a 429 must not be cached).
//!   Replace the body with [`RateLimitBuilder::rejection`](crate::RateLimitBuilder::rejection); the headers
//!   are added to whatever you return.
//! * **503** (store unavailable and [`OnFailure::Error`](crate::OnFailure), the default): problem type
//!   `#temporary-reduced-capacity`. Never a 429: a store outage is not the client's fault.
//! * **400 / 500** (no key and [`OnKeyError::Reject`](crate::OnKeyError)): `about:blank` problem with a
//!   `detail` saying what is missing.
//!
//! ```
//! use ratelimit_tower::response::problem_json;
//! let body = problem_json(429, "Too Many Requests", Some("https://iana.org/assignments/http-problem-types#quota-exceeded"), None, &["burst"]);
//! let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
//! assert_eq!(v["violated-policies"][0], "burst");
//! ```

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode};
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;
use ratelimit_core::{Decision, PolicySet};

/// The `quota-exceeded` problem type.
pub const QUOTA_EXCEEDED: &str = "https://iana.org/assignments/http-problem-types#quota-exceeded";
/// The `temporary-reduced-capacity` problem type.
pub const TEMPORARY_REDUCED_CAPACITY: &str =
    "https://iana.org/assignments/http-problem-types#temporary-reduced-capacity";

pub(crate) static PROBLEM_JSON: HeaderValue = HeaderValue::from_static("application/problem+json");
pub(crate) static NO_STORE: HeaderValue = HeaderValue::from_static("no-store");

/// A problem+json body (RFC 9457). `violated` becomes `violated-policies` when not empty.
pub fn problem_json(
    status: u16,
    title: &str,
    problem_type: Option<&str>,
    detail: Option<&str>,
    violated: &[&str],
) -> Bytes {
    let mut s = String::with_capacity(160);
    s.push_str("{\"type\":");
    json_str(&mut s, problem_type.unwrap_or("about:blank"));
    s.push_str(",\"title\":");
    json_str(&mut s, title);
    s.push_str(",\"status\":");
    s.push_str(&status.to_string());
    if let Some(d) = detail {
        s.push_str(",\"detail\":");
        json_str(&mut s, d);
    }
    if !violated.is_empty() {
        s.push_str(",\"violated-policies\":[");
        for (i, v) in violated.iter().enumerate() {
            if i > 0 {
                s.push(',');
            }
            json_str(&mut s, v);
        }
        s.push(']');
    }
    s.push('}');
    Bytes::from(s)
}

fn json_str(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
}

/// What a rejection handler gets to build its own 429.
#[derive(Debug)]
pub struct Rejection<'a> {
    pub(crate) decision: &'a Decision,
    pub(crate) set: &'a PolicySet,
    pub(crate) tier: &'a str,
    pub(crate) retry_after: Option<u64>,
}

impl<'a> Rejection<'a> {
    /// The decision.
    pub fn decision(&self) -> &'a Decision {
        self.decision
    }

    /// The policies that were checked (the decision's statuses are in this order).
    pub fn policies(&self) -> &'a PolicySet {
        self.set
    }

    /// The names of the policies that did not admit the request.
    pub fn violated(&self) -> impl Iterator<Item = &'a str> + 'a {
        let set = self.set;
        self.decision
            .statuses()
            .iter()
            .enumerate()
            .filter(|(_, s)| !s.allowed())
            .map(move |(i, _)| set.policy(i).name())
    }

    /// The tier whose policies were checked (`"global"` for the global cap).
    pub fn tier(&self) -> &'a str {
        self.tier
    }

    /// `Retry-After` in seconds (rounded up, at least 1); `None` when the request can never fit.
    pub fn retry_after(&self) -> Option<u64> {
        self.retry_after
    }

    /// Whether the request's cost exceeds a policy's capacity (waiting will not help).
    pub fn never(&self) -> bool {
        self.decision.outcome() == ratelimit_core::Outcome::Never
    }

    /// The default 429 response.
    pub fn default_response(&self) -> Response<Bytes> {
        let violated: Vec<&str> = self.violated().collect();
        let detail = if self.never() {
            Some("the request's cost exceeds the capacity of a policy; it can never be admitted")
        } else {
            None
        };
        let body = problem_json(
            429,
            "Too Many Requests",
            Some(QUOTA_EXCEEDED),
            detail,
            &violated,
        );
        let mut res = Response::new(body);
        *res.status_mut() = StatusCode::TOO_MANY_REQUESTS;
        res.headers_mut()
            .insert(http::header::CONTENT_TYPE, PROBLEM_JSON.clone());
        res
    }
}

pub(crate) fn simple_problem(
    status: StatusCode,
    problem_type: Option<&str>,
    detail: &str,
) -> Response<Bytes> {
    let body = problem_json(
        status.as_u16(),
        status.canonical_reason().unwrap_or("Error"),
        problem_type,
        Some(detail),
        &[],
    );
    let mut res = Response::new(body);
    *res.status_mut() = status;
    res.headers_mut()
        .insert(http::header::CONTENT_TYPE, PROBLEM_JSON.clone());
    res.headers_mut()
        .insert(http::header::CACHE_CONTROL, NO_STORE.clone());
    res
}

pin_project! {
    /// The layer's response body: the inner service's body, or the layer's own (429, 503, …).
    ///
    /// `Inner { body }` holds the inner body; `Full { data }` the bytes the layer still has to send.
    #[project = BodyProj]
    #[allow(missing_docs)]
    pub enum ResponseBody<B> {
        /// The inner service's body.
        Inner {
            #[pin]
            body: B,
        },
        /// A body the layer produced.
        Full {
            data: Option<Bytes>,
        },
    }
}

impl<B> ResponseBody<B> {
    pub(crate) fn full(data: Bytes) -> Self {
        ResponseBody::Full {
            data: if data.is_empty() { None } else { Some(data) },
        }
    }
}

impl<B> Body for ResponseBody<B>
where
    B: Body<Data = Bytes>,
{
    type Data = Bytes;
    type Error = B::Error;

    #[inline]
    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        match self.project() {
            BodyProj::Inner { body } => body.poll_frame(cx),
            BodyProj::Full { data } => Poll::Ready(data.take().map(|d| Ok(Frame::data(d)))),
        }
    }

    #[inline]
    fn is_end_stream(&self) -> bool {
        match self {
            ResponseBody::Inner { body } => body.is_end_stream(),
            ResponseBody::Full { data } => data.is_none(),
        }
    }

    #[inline]
    fn size_hint(&self) -> SizeHint {
        match self {
            ResponseBody::Inner { body } => body.size_hint(),
            ResponseBody::Full { data } => {
                SizeHint::with_exact(data.as_ref().map_or(0, |d| d.len() as u64))
            }
        }
    }
}
