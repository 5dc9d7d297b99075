//! The way to the upstream: a hyper-util client (HTTP/1.1, HTTP/2 where the upstream offers it over
//! TLS) behind a response timeout, behind `ratelimit-client`'s tower layer.

use std::time::Duration;

use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use ratelimit_client::profile::Discord;
use ratelimit_client::{Limiter, RateLimit};
use tower::timeout::Timeout;

mod sent_at;

use sent_at::{StampSent, Stamped};

/// Idle connections to the upstream are kept this long: Discord closes idle ones after about two
/// minutes, so reusing them for one and a half avoids racing its close.
const IDLE_BELOW_THE_UPSTREAMS_CLOSE: Duration = Duration::from_secs(90);

/// The plain hyper client, sending the body the proxy read.
pub(crate) type HttpsClient = Client<HttpsConnector<HttpConnector>, Stamped>;

/// The whole way to the upstream.
pub(crate) type UpstreamService = RateLimit<Timeout<StampSent<HttpsClient>>, Discord>;

/// The TLS setup failed (no usable protocol version in the crypto provider).
#[derive(Debug, thiserror::Error)]
#[error("could not set up TLS to the upstream: {0}")]
pub struct TlsError(#[from] rustls::Error);

/// The hyper client: `http` or `https`, rustls on ring with the Mozilla roots.
pub(crate) fn https_client(connect_timeout: Duration) -> Result<HttpsClient, TlsError> {
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    http.set_nodelay(true);
    http.set_connect_timeout(Some(connect_timeout));
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_provider_and_webpki_roots(rustls::crypto::ring::default_provider())?
        .https_or_http()
        .enable_http1()
        .enable_http2()
        .wrap_connector(http);
    Ok(Client::builder(TokioExecutor::new())
        .pool_idle_timeout(IDLE_BELOW_THE_UPSTREAMS_CLOSE)
        .build(https))
}

/// The limiter's layer around the client, whose responses must arrive within `timeout`.
pub(crate) fn upstream_service(
    client: HttpsClient,
    timeout: Duration,
    limiter: Limiter<Discord>,
) -> UpstreamService {
    RateLimit::new(Timeout::new(StampSent::new(client), timeout), limiter)
}
