//! From the bot's request to the upstream's: the target checked, the body read within its bound, the
//! headers cleaned and `Host` set to the upstream.

use bytes::Bytes;
use http::request::Parts;
use http::uri::PathAndQuery;
use http::{header, HeaderValue, Method, Request, Version};
use http_body::Body;
use http_body_util::{BodyExt, Full, LengthLimitError, Limited};

use super::headers::strip_hop_by_hop;
use super::Refusal;
use crate::config::Upstream;

/// The path and query to forward, once the target is known to be an API path.
pub(crate) fn target(upstream: &Upstream, parts: &Parts) -> Result<PathAndQuery, Refusal> {
    if parts.method == Method::CONNECT {
        return Err(Refusal::BadRequest(
            "CONNECT is not supported: this is a reverse proxy for one API",
        ));
    }
    // Origin form (`/api/v10/…`) or absolute form (`http://proxy/api/v10/…`, whose authority is ignored:
    // requests only ever go to the upstream).
    let pq = parts
        .uri
        .path_and_query()
        .filter(|pq| pq.path().starts_with('/'))
        .ok_or(Refusal::BadRequest(
            "the request target must be a path such as /api/v10/users/@me",
        ))?;
    if pq.path().split('/').any(|s| s == "." || s == "..") {
        return Err(Refusal::BadRequest(
            "the path must not contain `.` or `..` segments",
        ));
    }
    if !upstream.serves(pq.path()) {
        return Err(Refusal::NotApi {
            path: pq.path().to_owned(),
            root: upstream.to_string(),
        });
    }
    if parts
        .headers
        .get_all(header::AUTHORIZATION)
        .iter()
        .nth(1)
        .is_some()
    {
        return Err(Refusal::BadRequest(
            "more than one Authorization header: send one token per request",
        ));
    }
    Ok(pq.clone())
}

/// Reads the whole body, refusing one longer than `limit` bytes: at once when its `Content-Length` says
/// so, else as soon as it grows past it. The body is held so that a 429 can be retried with it.
pub(crate) async fn read_body<B>(
    parts: &Parts,
    body: B,
    limit: usize,
) -> Result<Full<Bytes>, Refusal>
where
    B: Body<Data = Bytes>,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let declared = parts
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(Refusal::TooLarge { limit });
    }
    match Limited::new(body, limit).collect().await {
        Ok(collected) => Ok(Full::new(collected.to_bytes())),
        Err(e) if e.is::<LengthLimitError>() => Err(Refusal::TooLarge { limit }),
        Err(_) => Err(Refusal::BadRequest(
            "the request body could not be read to its end",
        )),
    }
}

/// The request sent upstream: same method, path, query and end-to-end headers (`Authorization`
/// included), `Host` set to the upstream, HTTP/1.1 or HTTP/2 as the connection to the upstream negotiates.
pub(crate) fn outbound(
    mut parts: Parts,
    upstream: &Upstream,
    target: PathAndQuery,
    body: Full<Bytes>,
) -> Result<Request<Full<Bytes>>, Refusal> {
    let uri = upstream
        .target(target)
        .map_err(|_| Refusal::BadRequest("the request target is not a valid URL path"))?;
    strip_hop_by_hop(&mut parts.headers);
    // The body was read here: the bot's `Expect: 100-continue` was answered by this hop.
    parts.headers.remove(header::EXPECT);
    let host = HeaderValue::from_str(upstream.authority().as_str())
        .map_err(|_| Refusal::BadRequest("the upstream's host is not a valid header value"))?;
    parts.headers.insert(header::HOST, host);
    let mut req = Request::new(body);
    *req.method_mut() = parts.method;
    *req.uri_mut() = uri;
    *req.version_mut() = Version::HTTP_11;
    *req.headers_mut() = parts.headers;
    Ok(req)
}
