//! Hop-by-hop headers (RFC 9110 §7.6.1): they describe one connection, so a proxy removes them, and every
//! header the `Connection` header names, before forwarding a message in either direction.

use http::header::{self, HeaderName};
use http::HeaderMap;

/// The hop-by-hop fields RFC 9110 names (§7.6.1; `Proxy-*` from §11.7), plus the non-standard
/// `Proxy-Connection` that old clients still send.
const HOP_BY_HOP: [HeaderName; 8] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
];

/// Removes the hop-by-hop headers and those listed in `Connection`.
///
/// ```
/// use http::{HeaderMap, HeaderValue};
/// let mut h = HeaderMap::new();
/// h.insert("connection", HeaderValue::from_static("close, x-trace"));
/// h.insert("x-trace", HeaderValue::from_static("1"));
/// h.insert("authorization", HeaderValue::from_static("Bot t"));
/// ratelimit_proxy::strip_hop_by_hop(&mut h);
/// assert_eq!(h.len(), 1);
/// assert!(h.contains_key("authorization"));
/// ```
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    remove_connection_options(headers);
    for name in &HOP_BY_HOP {
        headers.remove(name);
    }
}

/// Removes the headers named by the `Connection` header's options (comma-separated, any number of
/// `Connection` lines). Names that are not valid header names name nothing and are skipped.
fn remove_connection_options(headers: &mut HeaderMap) {
    // Collected first: the names borrow from the map that is changed. A request carries few of them.
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .collect();
    for name in named {
        headers.remove(name);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    #[test]
    fn connection_options_and_the_fixed_list_go_end_to_end_headers_stay() {
        let mut h = HeaderMap::new();
        for (k, v) in [
            ("connection", "keep-alive, X-Hop"),
            ("connection", "upgrade"),
            ("keep-alive", "timeout=5"),
            ("x-hop", "1"),
            ("te", "trailers"),
            ("transfer-encoding", "chunked"),
            ("upgrade", "websocket"),
            ("proxy-authorization", "Basic x"),
            ("proxy-connection", "keep-alive"),
            ("authorization", "Bot secret"),
            ("content-type", "application/json"),
            ("x-ratelimit-precision", "millisecond"),
        ] {
            h.append(HeaderName::from_static(k), HeaderValue::from_static(v));
        }
        strip_hop_by_hop(&mut h);
        let mut left: Vec<_> = h.keys().map(|k| k.as_str()).collect();
        left.sort_unstable();
        assert_eq!(
            left,
            ["authorization", "content-type", "x-ratelimit-precision"]
        );
    }
}
