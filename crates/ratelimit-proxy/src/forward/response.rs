//! From the upstream's response to the bot's: status, end-to-end headers and body unchanged, the body
//! streamed as it arrives.

use http::{header, HeaderValue, Response, Version};
use http_body::Body;
use ratelimit_client::Attempts;

use super::headers::strip_hop_by_hop;

/// The response the bot gets. `buffered`: the body was read by the limiter (a 429's JSON) and is handed
/// on from memory.
pub(super) fn inbound<B: Body>(mut res: Response<B>, buffered: bool) -> Response<B> {
    strip_hop_by_hop(res.headers_mut());
    // The bot's connection has its own version (an HTTP/2 answer from the upstream goes back on HTTP/1.1).
    *res.version_mut() = Version::default();
    // A 429's body is read by the limiter and handed on buffered; if it could not be read whole, what is
    // handed on is shorter than the upstream declared, and the declared length would break the framing.
    // Only then: a streamed body's length is the upstream's own (a HEAD's or a 304's is empty while its
    // `Content-Length` tells the entity's).
    if let Some(exact) = res.body().size_hint().exact().filter(|_| buffered) {
        let declared = res.headers().get(header::CONTENT_LENGTH);
        if declared.is_some_and(|v| v.as_bytes() != exact.to_string().as_bytes()) {
            res.headers_mut()
                .insert(header::CONTENT_LENGTH, HeaderValue::from(exact));
        }
    }
    res
}

/// Counts an upstream response and the time its request was held.
pub(super) fn record<B>(res: &Response<B>) {
    let class = match res.status().as_u16() {
        429 => "429",
        200..=299 => "2xx",
        300..=399 => "3xx",
        400..=499 => "4xx",
        _ => "5xx",
    };
    metrics::counter!("ratelimit_proxy_upstream_responses_total", "class" => class).increment(1);
    let attempts = Attempts::of(res.extensions());
    metrics::histogram!("ratelimit_proxy_held_seconds").record(attempts.waited.as_secs_f64());
    // The path is not logged: webhook and interaction paths carry tokens.
    tracing::debug!(
        status = res.status().as_u16(),
        attempts = attempts.attempts,
        waited_ms = attempts.waited.as_millis() as u64,
        "forwarded"
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use http_body_util::Full;

    #[test]
    fn a_body_shorter_than_declared_gets_its_true_length() {
        let res = Response::builder()
            .version(Version::HTTP_2)
            .header("content-length", "100")
            .header("connection", "close")
            .body(Full::new(Bytes::from_static(b"{}")))
            .unwrap();
        let head = inbound(res.clone(), false);
        assert_eq!(
            head.headers()["content-length"],
            "100",
            "a streamed body's length is the upstream's"
        );
        let res = inbound(res, true);
        assert_eq!(res.headers()["content-length"], "2");
        assert!(res.headers().get("connection").is_none());
        assert_eq!(res.version(), Version::HTTP_11);
    }
}
