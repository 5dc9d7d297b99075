//! The layer's metrics under a process-wide recorder (installed once, before the layer is built, as a
//! server's `main` does), on a multi-threaded runtime over real HTTP: the handles the layer keeps count
//! every outcome from every worker thread. Its own test binary: a process has one global recorder.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
#[path = "common/recorder.rs"]
mod recorder;

use axum::routing;
use axum::Router;
use http::StatusCode;
use ratelimit_tower::key::Global;
use ratelimit_tower::RateLimitLayer;

use common::*;
use recorder::Metrics;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_global_recorder_counts_every_outcome_across_worker_threads() {
    let recorder = Metrics::default();
    metrics::set_global_recorder(recorder.clone()).unwrap();
    let layer = RateLimitLayer::builder()
        .policy(per_hour("hourly", 20))
        .key(Global)
        .build()
        .unwrap();
    let app = Router::new()
        .route("/", routing::get(|| async { "ok" }))
        .layer(layer);
    let addr = serve(app).await;
    let c = client();
    let tasks: Vec<_> = (0..50)
        .map(|_| {
            let c = c.clone();
            tokio::spawn(async move { get(&c, addr, "/", &[]).await.status })
        })
        .collect();
    let mut limited = 0;
    for t in tasks {
        match t.await.unwrap() {
            StatusCode::OK => {}
            StatusCode::TOO_MANY_REQUESTS => limited += 1,
            s => panic!("unexpected status {s}"),
        }
    }
    assert_eq!(limited, 30);
    assert_eq!(
        recorder.get("ratelimit_requests_total,outcome=allowed"),
        20.0
    );
    assert_eq!(
        recorder.get("ratelimit_requests_total,outcome=limited"),
        30.0
    );
    assert_eq!(
        recorder.get("ratelimit_rejections_total,policy=hourly"),
        30.0
    );
    assert_eq!(recorder.get("ratelimit_decision_seconds"), 50.0);
}
