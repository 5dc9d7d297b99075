//! A scripted HTTP upstream on loopback: an axum server whose every answer comes from a closure, so a test
//! can send what no real API sends on demand (hostile headers, changing bucket hashes, scripted failures).
#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::Request;
use axum::response::Response;
use axum::Router;
use bytes::Bytes;
use http::{HeaderName, HeaderValue, StatusCode};
use http_body_util::Full;

/// One scripted answer.
#[derive(Debug, Clone, Default)]
pub struct Reply {
    pub status: u16,
    /// Raw header values: anything `HeaderValue::from_bytes` takes (obs-text included).
    pub headers: Vec<(String, Vec<u8>)>,
    pub body: Vec<u8>,
    /// Held this long before answering (to observe how many requests the client has in flight).
    pub delay: Duration,
}

impl Reply {
    pub fn ok() -> Reply {
        Reply {
            status: 200,
            ..Reply::default()
        }
    }

    pub fn status(mut self, s: u16) -> Reply {
        self.status = s;
        self
    }

    pub fn header(mut self, name: &str, value: impl Into<Vec<u8>>) -> Reply {
        self.headers.push((name.to_owned(), value.into()));
        self
    }

    pub fn body(mut self, b: impl Into<Vec<u8>>) -> Reply {
        self.body = b.into();
        self
    }

    pub fn delay(mut self, d: Duration) -> Reply {
        self.delay = d;
        self
    }
}

/// What the upstream saw: requests answered, and the most it held at once.
#[derive(Debug, Default)]
pub struct Seen {
    pub requests: AtomicUsize,
    in_flight: AtomicUsize,
    pub max_in_flight: AtomicUsize,
}

/// A running upstream; dropping it stops the server.
pub struct Upstream {
    pub addr: SocketAddr,
    pub seen: Arc<Seen>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Upstream {
    /// Serves `script(method, path and query)` on a free loopback port.
    pub async fn start<F>(script: F) -> Upstream
    where
        F: Fn(&http::Method, &str) -> Reply + Send + Sync + 'static,
    {
        let script = Arc::new(script);
        let seen = Arc::new(Seen::default());
        let s = seen.clone();
        let app = Router::new().fallback(move |req: Request| {
            let (script, seen) = (script.clone(), s.clone());
            async move {
                let path = req
                    .uri()
                    .path_and_query()
                    .map_or("/", |p| p.as_str())
                    .to_owned();
                let reply = script(req.method(), &path);
                let now = seen.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
                seen.max_in_flight.fetch_max(now, Ordering::SeqCst);
                if !reply.delay.is_zero() {
                    tokio::time::sleep(reply.delay).await;
                }
                seen.in_flight.fetch_sub(1, Ordering::SeqCst);
                seen.requests.fetch_add(1, Ordering::SeqCst);
                render(reply)
            }
        });
        let (addr, task) = super::serve(app).await;
        Upstream { addr, seen, task }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }
}

fn render(reply: Reply) -> Response {
    let mut res = Response::new(Body::new(Full::new(Bytes::from(reply.body))));
    *res.status_mut() = StatusCode::from_u16(reply.status).unwrap_or(StatusCode::OK);
    for (name, value) in reply.headers {
        if let (Ok(n), Ok(v)) = (
            HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_bytes(&value),
        ) {
            res.headers_mut().append(n, v);
        }
    }
    res
}
