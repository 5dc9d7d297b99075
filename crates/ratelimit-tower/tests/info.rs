//! The `RateLimitInfo` extractor over real HTTP: an admitted request's handler gets the binding policy,
//! its limit, what remains, when it resets and whether it is near the limit; a handler with no layer in
//! front gets a typed 500 that says so; `Option<RateLimitInfo>` serves requests that passed undecided.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use axum::routing;
use axum::Router;
use http::StatusCode;
use ratelimit_tower::{MissingRateLimitInfo, RateLimitInfo, RateLimitLayer};

use common::*;

const HOURLY: u64 = 10;

async fn describe(info: RateLimitInfo) -> String {
    format!(
        "{} limit={} remaining={} reset={}s near={}",
        info.policy(),
        info.limit(),
        info.remaining(),
        info.reset().as_secs(),
        info.is_near_limit()
    )
}

async fn maybe(info: Option<RateLimitInfo>) -> String {
    info.map_or_else(|| "undecided".to_owned(), |i| i.remaining().to_string())
}

#[tokio::test]
async fn handlers_get_the_decision_through_the_extractor() {
    let layer = RateLimitLayer::builder()
        .policy(gcra_per_sec("burst", 1_000))
        .policy(per_hour("hourly", HOURLY))
        .skip(|req| req.uri().path() == "/skipped")
        .soft_limit_percent(20)
        .rate_limit_info(true)
        .build()
        .unwrap();
    let limited = Router::new()
        .route("/", routing::get(describe))
        .route("/skipped", routing::get(maybe))
        .layer(layer);
    // The default: off.
    let off = RateLimitLayer::builder()
        .policy(per_hour("hourly", HOURLY))
        .build()
        .unwrap();
    let app = limited
        .merge(Router::new().route("/unlimited", routing::get(describe)))
        .merge(Router::new().route("/off", routing::get(maybe)).layer(off));
    let addr = serve(app).await;
    let c = client();

    for i in 1..=HOURLY {
        let r = get(&c, addr, "/", &[]).await;
        assert_eq!(r.status, StatusCode::OK);
        let body = std::str::from_utf8(&r.body).unwrap().to_owned();
        let remaining = HOURLY - i;
        // The hourly window binds (fewest left relative to its limit); near at 20 % of it: 2 left.
        assert!(
            body.starts_with(&format!(
                "hourly limit={HOURLY} remaining={remaining} reset="
            )),
            "{body}"
        );
        assert!(
            body.ends_with(&format!("near={}", remaining <= 2)),
            "{body}"
        );
        // The same numbers as the response's RateLimit field.
        let item = sf_list(&r.headers, "ratelimit")
            .into_iter()
            .find(|i| i.name == "hourly")
            .unwrap();
        assert_eq!(item.int("r"), Some(remaining as i64));
    }

    let r = get(&c, addr, "/skipped", &[]).await;
    assert_eq!((r.status, &r.body[..]), (StatusCode::OK, &b"undecided"[..]));

    // Off: admitted, limited (the headers say so), no decision for the handler.
    let r = get(&c, addr, "/off", &[]).await;
    assert_eq!((r.status, &r.body[..]), (StatusCode::OK, &b"undecided"[..]));
    assert!(r.headers.contains_key("ratelimit"));

    let r = get(&c, addr, "/unlimited", &[]).await;
    assert_eq!(r.status, StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(r.status, MissingRateLimitInfo.status());
    let body = std::str::from_utf8(&r.body).unwrap();
    assert!(
        body.contains("the RateLimitLayer is not in front of this handler"),
        "{body}"
    );
}
