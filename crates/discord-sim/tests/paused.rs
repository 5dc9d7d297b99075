//! Under tokio's paused clock the simulator's windows follow virtual time: a test can wait a 10-second
//! window in no real time.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::bot;
use discord_sim::{Limit, RouteConfig, SimConfig, Simulator};
use http::{Method, StatusCode};

#[tokio::test(start_paused = true)]
async fn windows_follow_a_paused_clock() {
    let route = RouteConfig::new(
        Method::POST,
        "/channels/{channel_id}/messages",
        "h",
        Limit::fixed(1, Duration::from_secs(10)),
    );
    let sim = Simulator::start(SimConfig::empty().route(route))
        .await
        .unwrap();
    let c = reqwest::Client::new();
    let base = sim.base_url();
    let real = std::time::Instant::now();
    assert_eq!(
        bot(&c, &base, Method::POST, "/channels/1/messages")
            .await
            .status,
        StatusCode::OK
    );
    let limited = bot(&c, &base, Method::POST, "/channels/1/messages").await;
    assert_eq!(limited.status, StatusCode::TOO_MANY_REQUESTS);
    tokio::time::sleep(Duration::from_secs(10)).await;
    assert_eq!(
        bot(&c, &base, Method::POST, "/channels/1/messages")
            .await
            .status,
        StatusCode::OK
    );
    assert!(real.elapsed() < Duration::from_secs(5));
}
