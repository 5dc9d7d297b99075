//! The forwarding service: one bot request in, the upstream's response (or the proxy's own
//! [`Refusal`]) out.
//!
//! request → target checked (400, 404) → body read within `max_body` (413) → hop-by-hop headers removed,
//! `Host` set → the limiter holds it until admitted (503 past `max_wait`) → upstream (502, 504) → response
//! head cleaned, body streamed back.

mod headers;
mod refusal;
mod request;
mod response;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body::Body;
use http_body_util::{Either, Full};
use hyper::body::Incoming;
use ratelimit_client::{Error, ResponseBody};
use tower_service::Service;

pub use headers::strip_hop_by_hop;
pub use refusal::{Refusal, PROXY_ERROR_HEADER};

use crate::client::UpstreamService;
use crate::config::Upstream;

/// The body of every response the proxy sends: the upstream's, streamed, or one the proxy wrote.
pub type ProxyBody = Either<ResponseBody<Incoming>, Full<Bytes>>;

/// Forwards requests (cheap to clone: one shared state).
#[derive(Clone)]
pub(crate) struct Forwarder {
    shared: Arc<Shared>,
}

struct Shared {
    client: UpstreamService,
    upstream: Upstream,
    max_body: usize,
    upstream_timeout: Duration,
    /// Whether the last attempt to reach the upstream failed: its changes are logged, once each.
    down: AtomicBool,
}

impl Forwarder {
    pub(crate) fn new(
        client: UpstreamService,
        upstream: Upstream,
        max_body: usize,
        upstream_timeout: Duration,
    ) -> Forwarder {
        Forwarder {
            shared: Arc::new(Shared {
                client,
                upstream,
                max_body,
                upstream_timeout,
                down: AtomicBool::new(false),
            }),
        }
    }

    /// Answers one request.
    pub(crate) async fn handle<B>(&self, req: Request<B>) -> Response<ProxyBody>
    where
        B: Body<Data = Bytes>,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let _in_flight = InFlight::enter();
        match self.forward(req).await {
            Ok(res) => {
                response::record(&res);
                res
            }
            Err(refusal) => {
                metrics::counter!("ratelimit_proxy_refused_total", "reason" => refusal.kind())
                    .increment(1);
                tracing::debug!(status = %refusal.status(), reason = refusal.kind(), "answered by the proxy");
                refusal.into_response().map(|b| Either::Right(Full::new(b)))
            }
        }
    }

    async fn forward<B>(&self, req: Request<B>) -> Result<Response<ProxyBody>, Refusal>
    where
        B: Body<Data = Bytes>,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let s = &*self.shared;
        let (parts, body) = req.into_parts();
        let target = request::target(&s.upstream, &parts)?;
        let body = request::read_body(&parts, body, s.max_body).await?;
        let req = request::outbound(parts, &s.upstream, target, body)?;
        // The layer is always ready (it awaits its inner service's readiness before each attempt).
        let mut client = s.client.clone();
        match Service::call(&mut client, req).await {
            Ok(res) => {
                self.reached();
                let buffered = matches!(res.body(), ResponseBody::Buffered { .. });
                Ok(response::inbound(res.map(Either::Left), buffered))
            }
            Err(e) => self.failed(e),
        }
    }

    /// A client error: the upstream's last response when there is one, else the refusal it means.
    fn failed(&self, e: Error) -> Result<Response<ProxyBody>, Refusal> {
        if let Error::RetriesExhausted { response, .. } = e {
            // Only with a limiter that errs on exhausted retries; the proxy's responds instead. Either way
            // the bot gets the upstream's last 429.
            let res = *response;
            return Ok(response::inbound(
                res.map(|b| Either::Right(Full::new(b))),
                true,
            ));
        }
        let refusal = Refusal::from_client(e, self.shared.upstream_timeout);
        if matches!(
            refusal,
            Refusal::Unreachable(_) | Refusal::UpstreamTimeout(_)
        ) && !self.shared.down.swap(true, Ordering::Relaxed)
        {
            tracing::warn!(upstream = %self.shared.upstream, error = %refusal, "upstream unreachable; answering 502/504 until it responds again");
        }
        Err(refusal)
    }

    fn reached(&self) {
        if self.shared.down.swap(false, Ordering::Relaxed) {
            tracing::info!(upstream = %self.shared.upstream, "upstream responding again");
        }
    }
}

/// Counts a request in the `ratelimit_proxy_in_flight` gauge while it lives (a bot that hangs up drops
/// it, and the count with it).
struct InFlight;

impl InFlight {
    fn enter() -> InFlight {
        metrics::gauge!("ratelimit_proxy_in_flight").increment(1.0);
        InFlight
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        metrics::gauge!("ratelimit_proxy_in_flight").decrement(1.0);
    }
}
