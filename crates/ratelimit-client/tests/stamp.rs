//! `StampSentLayer` tells the limiter when a request really left: the connection's first look at its
//! body, not the moment the limiter admitted it. Through a transport that takes its time before it sends
//! (as one opening a connection does) and through hyper's client over real HTTP on loopback.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::convert::Infallible;
use std::time::{Duration, Instant};

use axum::routing::post;
use bytes::Bytes;
use http::{Request, Response};
use http_body::Body;
use http_body_util::{BodyExt, Empty, Full};
use hyper_util::{client::legacy::Client, rt::TokioExecutor};
use ratelimit_client::profile::RetryAfter;
use ratelimit_client::stamp::{StampSentLayer, Stamped};
use ratelimit_client::{Limiter, RateLimitLayer, SentAt};
use tower::{service_fn, Layer, ServiceBuilder, ServiceExt};

/// How long the slow transport takes before it looks at a request's body.
const CONNECTING: Duration = Duration::from_millis(200);

/// A transport that waits `CONNECTING` before it reads the body, as one opening a connection does.
async fn slow_transport<B>(req: Request<Stamped<B>>) -> Result<Response<Full<Bytes>>, Infallible>
where
    B: Body + Send,
    B::Error: std::fmt::Debug,
{
    tokio::time::sleep(CONNECTING).await;
    let body = req.into_body();
    if !body.is_end_stream() {
        let _ = body.collect().await.unwrap();
    }
    Ok(Response::new(Full::new(Bytes::new())))
}

#[tokio::test]
async fn the_stamp_is_the_first_look_at_the_body_not_the_call() {
    let svc = StampSentLayer::new().layer(service_fn(slow_transport::<Full<Bytes>>));
    let called = Instant::now();
    let res = svc
        .oneshot(Request::new(Full::new(Bytes::from_static(b"{}"))))
        .await
        .unwrap();
    let SentAt(at) = *res.extensions().get::<SentAt>().expect("a SentAt");
    assert!(
        at.duration_since(called) >= CONNECTING,
        "stamped at the call, not the send"
    );

    // An empty body is never polled for frames: the first `is_end_stream` is the look.
    let svc = StampSentLayer::new().layer(service_fn(slow_transport::<Empty<Bytes>>));
    let called = Instant::now();
    let res = svc.oneshot(Request::new(Empty::new())).await.unwrap();
    let SentAt(at) = *res.extensions().get::<SentAt>().expect("a SentAt");
    assert!(at.duration_since(called) >= CONNECTING);
}

#[tokio::test]
async fn hyper_through_the_limiter_reports_when_each_request_left() {
    let (addr, _server) =
        common::serve(axum::Router::new().route("/v1/items", post(|| async { "ok" }))).await;
    let hyper = Client::builder(TokioExecutor::new()).build_http::<Stamped<Full<Bytes>>>();
    let client = ServiceBuilder::new()
        .layer(RateLimitLayer::new(Limiter::new(RetryAfter::new())))
        .layer(StampSentLayer::new())
        .service(hyper);
    let admitted = Instant::now();
    let req = Request::post(format!("http://{addr}/v1/items"))
        .body(Full::new(Bytes::from_static(b"{}")))
        .unwrap();
    let res = client.oneshot(req).await.unwrap();
    assert_eq!(res.status(), 200);
    let SentAt(at) = *res
        .extensions()
        .get::<SentAt>()
        .expect("the response says when it left");
    assert!(at >= admitted);
}
