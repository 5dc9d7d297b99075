//! Shared by the integration tests (each test binary uses only part of it).
#![allow(dead_code)]

pub mod upstream;

use std::net::SocketAddr;

/// Serves `app` on a free loopback port; the server runs until the task is aborted or the runtime ends.
pub async fn serve(app: axum::Router) -> (SocketAddr, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0)))
        .await
        .unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (addr, task)
}

/// A clock that follows tokio's (pausable) time, so a test with `start_paused` waits in virtual time.
// Not every test binary that includes this module uses it.
#[allow(dead_code)]
#[derive(Debug, Clone, Copy)]
pub struct TokioClock(pub tokio::time::Instant);

#[allow(dead_code)]
impl TokioClock {
    pub fn new() -> TokioClock {
        TokioClock(tokio::time::Instant::now())
    }
}

impl ratelimit_client::Clock for TokioClock {
    fn now(&self) -> ratelimit_client::Micros {
        u64::try_from(self.0.elapsed().as_micros()).unwrap_or(u64::MAX)
    }
}

/// The HTTP request a bot would send for a simulator operation, with `token` in `Authorization` when the
/// operation is authorized.
pub fn sim_request(
    base: &str,
    op: &discord_sim::Operation,
    token: &str,
) -> http::Request<http_body_util::Full<bytes::Bytes>> {
    let mut b = http::Request::builder()
        .method(op.method.clone())
        .uri(op.url(base));
    if op.authorized {
        b = b.header("authorization", format!("Bot {token}"));
    }
    if op.body.is_some() {
        b = b.header("content-type", "application/json");
    }
    b.body(http_body_util::Full::new(bytes::Bytes::from(
        op.body.clone().unwrap_or_default(),
    )))
    .unwrap()
}

/// Sends every request at once, each through the service paired with it, and returns each one's status
/// (or error, as text) in the order given.
pub async fn send_all_at_once<S, B, RB>(
    sends: impl IntoIterator<Item = (S, http::Request<B>)>,
) -> Vec<Result<http::StatusCode, String>>
where
    S: tower::Service<http::Request<B>, Response = http::Response<RB>> + Send + 'static,
    S::Future: Send,
    S::Error: std::fmt::Display,
    B: Send + 'static,
    RB: Send + 'static,
{
    use tower::ServiceExt;
    let tasks: Vec<_> = sends
        .into_iter()
        .map(|(svc, req)| {
            tokio::spawn(async move {
                svc.oneshot(req)
                    .await
                    .map(|r| r.status())
                    .map_err(|e| e.to_string())
            })
        })
        .collect();
    let mut results = Vec::with_capacity(tasks.len());
    for t in tasks {
        results.push(t.await.unwrap());
    }
    results
}
