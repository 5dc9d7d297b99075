//! The three-line setup: a policy, a layer, a router — 5 requests per minute per client IP.
//!
//! `cargo run --example hello`, then `curl -i http://127.0.0.1:3000/` six times: the sixth gets a 429.
use std::net::SocketAddr;

use axum::{routing::get, Router};
use ratelimit_core::{Policy, PolicySet, Quota};
use ratelimit_tower::RateLimitLayer;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let policy = Policy::gcra("per-minute", Quota::per_minute(5).build()?)?;
    let limit = RateLimitLayer::new(PolicySet::new([policy])?)?;
    let app = Router::new()
        .route("/", get(|| async { "hello\n" }))
        .layer(limit);

    let listener = tokio::net::TcpListener::bind("127.0.0.1:3000").await?;
    println!("listening on http://127.0.0.1:3000 — try: curl -i http://127.0.0.1:3000/");
    // The limiter keys clients by their address: serve with connect info.
    axum::serve(
        listener,
        app.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .await?;
    Ok(())
}
