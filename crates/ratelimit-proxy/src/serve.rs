//! The accept loop: HTTP/1.1 and HTTP/2 (prior knowledge) connections served until shutdown, then
//! drained within a bound.

use std::convert::Infallible;
use std::future::Future;
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::task::JoinSet;

use crate::forward::Forwarder;

/// After a failed `accept` (out of file descriptors, most often) the loop pauses this long so that it
/// does not spin while connections close.
const PAUSE_WHILE_DESCRIPTORS_FREE_UP: Duration = Duration::from_millis(50);

/// How a shutdown went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Drained {
    /// Whether every connection finished its requests within the drain timeout (if not, the rest were
    /// cut).
    pub complete: bool,
}

/// Serves `listener` until `shutdown` completes, then stops accepting and lets requests in flight finish
/// for at most `drain`.
pub(crate) async fn serve(
    listener: TcpListener,
    forwarder: Forwarder,
    shutdown: impl Future<Output = ()>,
    drain: Duration,
) -> Drained {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    // A timer enables hyper's limit on the time a client takes to send a request head.
    builder.http1().timer(TokioTimer::new());
    let graceful = GracefulShutdown::new();
    // The connections, so that those still open after the drain timeout can be cut.
    let mut connections = JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _peer)) => stream,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(PAUSE_WHILE_DESCRIPTORS_FREE_UP).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        while connections.try_join_next().is_some() {}
        let _ = stream.set_nodelay(true);
        let forwarder = forwarder.clone();
        let service = service_fn(move |req| {
            let forwarder = forwarder.clone();
            async move { Ok::<_, Infallible>(forwarder.handle(req).await) }
        });
        let conn = builder
            .serve_connection(TokioIo::new(stream), service)
            .into_owned();
        let conn = graceful.watch(conn);
        connections.spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "connection ended with an error");
            }
        });
    }
    drop(listener);
    tracing::info!("shutting down: no new connections; draining requests in flight");
    let complete = tokio::time::timeout(drain, graceful.shutdown())
        .await
        .is_ok();
    if complete {
        tracing::info!("drained");
    } else {
        connections.abort_all();
        tracing::warn!(
            drain_ms = drain.as_millis() as u64,
            "requests still in flight after the drain timeout were cut"
        );
    }
    Drained { complete }
}
