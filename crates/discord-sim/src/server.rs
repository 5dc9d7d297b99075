//! The HTTP side: an axum server on loopback that hands every request to the engine.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, HeaderValue, Method, Uri};
use axum::response::{IntoResponse, Response};
use axum::Router;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::config::SimConfig;
use crate::engine::{Engine, ReplyBody, SimRequest};
use crate::stats::SimStats;

/// The path prefix of the API, as in `https://discord.com/api/v10`.
pub const API_PREFIX: &str = "/api/v10";

/// Starts simulators.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> std::io::Result<()> {
/// use discord_sim::{SimConfig, Simulator};
/// let sim = Simulator::start(SimConfig::scenario_mixed()).await?;
/// assert!(sim.base_url().starts_with("http://127.0.0.1:"));
/// assert_eq!(sim.stats().requests, 0);
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, Copy)]
pub struct Simulator;

impl Simulator {
    /// Binds `127.0.0.1:0` (a free port) and serves `config`.
    pub async fn start(config: SimConfig) -> io::Result<RunningSim> {
        Self::bind(config, SocketAddr::from(([127, 0, 0, 1], 0))).await
    }

    /// Binds `addr` and serves `config`. Bind only loopback addresses: the simulator is a test tool.
    ///
    /// Fails with [`io::ErrorKind::InvalidInput`] when [`SimConfig::validate`] refuses the configuration.
    pub async fn bind(config: SimConfig, addr: SocketAddr) -> io::Result<RunningSim> {
        config
            .validate()
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        let listener = tokio::net::TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let engine = Arc::new(Engine::new(config));
        let app = Router::new()
            .fallback(handle)
            .with_state(Arc::clone(&engine));
        let (tx, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let serve = axum::serve(
                listener,
                app.into_make_service_with_connect_info::<SocketAddr>(),
            )
            .with_graceful_shutdown(async {
                let _ = rx.await;
            });
            if let Err(e) = serve.await {
                tracing::warn!(error = %e, "discord-sim: server stopped with an error");
            }
        });
        Ok(RunningSim {
            addr,
            engine,
            shutdown: Some(tx),
            task,
        })
    }
}

/// A simulator serving on loopback. Dropping it stops the server (open connections are cut);
/// [`RunningSim::shutdown`] stops it gracefully.
#[derive(Debug)]
pub struct RunningSim {
    addr: SocketAddr,
    engine: Arc<Engine>,
    shutdown: Option<oneshot::Sender<()>>,
    task: JoinHandle<()>,
}

impl RunningSim {
    /// The socket address served.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The API base URL, `http://127.0.0.1:PORT/api/v10` (no trailing slash): what a client uses in place
    /// of `https://discord.com/api/v10`.
    pub fn base_url(&self) -> String {
        format!("http://{}{API_PREFIX}", self.addr)
    }

    /// The configuration served.
    pub fn config(&self) -> &SimConfig {
        self.engine.config()
    }

    /// A snapshot of what the simulator counted.
    pub fn stats(&self) -> SimStats {
        self.engine.stats()
    }

    /// Forgets counts and admission records (windows, bans and revoked tokens stay).
    pub fn reset_stats(&self) {
        self.engine.reset_stats();
    }

    /// Makes a valid token answer 401 from now on (A.11.8).
    pub fn revoke_token(&self, token: &str) {
        self.engine.revoke_token(token);
    }

    /// Lifts every ban and forgets invalid-request counts.
    pub fn unban_all(&self) {
        self.engine.unban_all();
    }

    /// Stops accepting connections, lets requests in flight finish (at most 1 s), then stops.
    pub async fn shutdown(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        let _ = tokio::time::timeout(std::time::Duration::from_secs(1), &mut self.task).await;
        self.task.abort();
    }
}

impl Drop for RunningSim {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        self.task.abort();
    }
}

async fn handle(
    State(engine): State<Arc<Engine>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    // Part of the latency on the way in (half by default), the rest on the way out: admission happens "at
    // Discord".
    let latency = engine.draw_latency();
    let inbound = latency * u32::from(engine.config().inbound_percent.min(100)) / 100;
    if !inbound.is_zero() {
        tokio::time::sleep(inbound).await;
    }
    let path = uri.path();
    let reply = match path
        .strip_prefix(API_PREFIX)
        .filter(|p| p.is_empty() || p.starts_with('/'))
    {
        Some(sub) => {
            let authorization = headers
                .get(http::header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok());
            let req = SimRequest {
                method: &method,
                path: sub,
                authorization,
                ip: peer.ip(),
                body: &body,
                latency,
            };
            Some(engine.handle(&req, engine.now()))
        }
        None => None,
    };
    let outbound = latency - inbound;
    if !outbound.is_zero() {
        tokio::time::sleep(outbound).await;
    }
    let Some(reply) = reply else {
        return (http::StatusCode::NOT_FOUND, "not under /api/v10\n").into_response();
    };
    let body = match reply.body {
        ReplyBody::Empty => Body::empty(),
        ReplyBody::Json(s) | ReplyBody::Html(s) => Body::from(s),
    };
    let mut response = Response::new(body);
    *response.status_mut() = reply.status;
    let h = response.headers_mut();
    for (name, value) in reply.headers {
        if let Ok(v) = HeaderValue::from_str(&value) {
            h.append(name, v);
        }
    }
    response
}
