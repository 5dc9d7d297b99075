//! Every common request body is replayed for a retry and read for sub-limit fingerprints: over real HTTP
//! through `ReqwestService` (each body type retried after a 429, arriving intact both times), and on a
//! sub-limited route where `Full<Bytes>` bodies of another shape must not wait.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::Request as AxumRequest;
use axum::Router;
use bytes::Bytes;
use common::TokioClock;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Empty, Full};
use parking_lot::Mutex;
use ratelimit_client::profile::{Discord, RetryAfter};
use ratelimit_client::reqwest::{IntoReqwestBody, ReqwestService};
use ratelimit_client::{Attempts, Limiter, RateLimitLayer, ReplayBody};
use tower::{service_fn, Layer};

/// Answers the first request on each path with a 429 (`Retry-After: 0`), and every one with the body it
/// received; records the bodies per path.
async fn echo_after_one_429() -> (SocketAddr, Arc<Mutex<HashMap<String, Vec<Bytes>>>>) {
    let seen: Arc<Mutex<HashMap<String, Vec<Bytes>>>> = Arc::default();
    let s = seen.clone();
    let app = Router::new().fallback(move |req: AxumRequest| {
        let seen = s.clone();
        async move {
            let path = req.uri().path().to_owned();
            let body = req.into_body().collect().await.unwrap().to_bytes();
            let first = {
                let mut seen = seen.lock();
                let bodies = seen.entry(path).or_default();
                bodies.push(body.clone());
                bodies.len() == 1
            };
            let mut res = Response::new(axum::body::Body::from(body));
            if first {
                *res.status_mut() = StatusCode::TOO_MANY_REQUESTS;
                res.headers_mut()
                    .insert("retry-after", http::HeaderValue::from_static("0"));
            }
            res
        }
    });
    (common::serve(app).await.0, seen)
}

/// Sends `body` to `path` through the layer over reqwest; returns the attempts and the body echoed back.
async fn send<B>(addr: SocketAddr, path: &str, body: B) -> (Attempts, Bytes)
where
    B: ReplayBody + IntoReqwestBody + Send + 'static,
{
    let limiter = Limiter::new(RetryAfter::new());
    let client = RateLimitLayer::new(limiter).layer(ReqwestService::default());
    let req = Request::post(format!("http://{addr}{path}"))
        .body(body)
        .unwrap();
    let res = client.oneshot(req).await.unwrap();
    assert_eq!(res.status(), StatusCode::OK, "{path}");
    let attempts = Attempts::of(res.extensions());
    (
        attempts,
        res.into_body().collect().await.unwrap().to_bytes(),
    )
}

#[tokio::test]
async fn every_buffered_body_type_is_replayed_over_reqwest() {
    let (addr, seen) = echo_after_one_429().await;
    let json = br#"{"content":"hi"}"#;
    let cases = [
        (
            "/full",
            send(addr, "/full", Full::new(Bytes::from_static(json))).await,
        ),
        (
            "/bytes",
            send(addr, "/bytes", Bytes::from_static(json)).await,
        ),
        ("/vec", send(addr, "/vec", json.to_vec()).await),
        (
            "/string",
            send(addr, "/string", String::from_utf8(json.to_vec()).unwrap()).await,
        ),
        ("/str", send(addr, "/str", r#"{"content":"hi"}"#).await),
        ("/slice", send(addr, "/slice", &json[..]).await),
        (
            "/reqwest",
            send(addr, "/reqwest", reqwest::Body::from(json.to_vec())).await,
        ),
    ];
    for (path, (attempts, echoed)) in cases {
        assert_eq!(attempts.attempts, 2, "{path}: one 429, one retry");
        assert_eq!(&echoed[..], json, "{path}");
        let bodies = seen.lock()[path].clone();
        assert_eq!(
            bodies,
            [Bytes::from_static(json), Bytes::from_static(json)],
            "{path}"
        );
    }
    let (attempts, echoed) = send(addr, "/empty", Empty::<Bytes>::new()).await;
    assert_eq!((attempts.attempts, echoed.len()), (2, 0));
}

#[test]
fn every_buffered_body_type_lends_its_bytes() {
    let json = br#"{"name":"x"}"#;
    assert_eq!(
        Full::new(Bytes::from_static(json))
            .buffered_bytes()
            .as_deref(),
        Some(&json[..])
    );
    assert_eq!(
        Bytes::from_static(json).buffered_bytes().as_deref(),
        Some(&json[..])
    );
    assert_eq!(json.to_vec().buffered_bytes().as_deref(), Some(&json[..]));
    assert_eq!(
        String::from_utf8(json.to_vec())
            .unwrap()
            .buffered_bytes()
            .as_deref(),
        Some(&json[..])
    );
    assert_eq!((&json[..]).buffered_bytes().as_deref(), Some(&json[..]));
    assert_eq!(
        r#"{"name":"x"}"#.buffered_bytes().as_deref(),
        Some(&json[..])
    );
    assert_eq!(
        reqwest::Body::from(json.to_vec())
            .buffered_bytes()
            .as_deref(),
        Some(&json[..])
    );
    assert_eq!(
        Empty::<Bytes>::new().buffered_bytes().as_deref(),
        Some(&[][..])
    );
}

/// A Discord channel edit whose `name` changes hit a hidden sub-limit (a `user` 429 while the bucket still
/// has requests left): later renames wait in their own lane, and a `topic` edit — another body shape —
/// goes at once. With `Full<Bytes>` bodies unread, every edit had the same (empty) fingerprint and the topic
/// edit waited behind the renames' sub-limit.
#[tokio::test(start_paused = true)]
async fn full_bodies_of_another_shape_pass_a_sub_limit() {
    let renames = Arc::new(Mutex::new(0u32));
    let r = renames.clone();
    let svc = service_fn(move |req: Request<Full<Bytes>>| {
        let renames = r.clone();
        async move {
            let body = req.into_body().collect().await.unwrap().to_bytes();
            let rename = body.starts_with(b"{\"name\"");
            let limited = rename && {
                let mut n = renames.lock();
                *n += 1;
                *n == 2
            };
            let mut b = Response::builder()
                .header("x-ratelimit-limit", "10")
                .header("x-ratelimit-remaining", "8")
                .header("x-ratelimit-reset-after", "1.000")
                .header("x-ratelimit-bucket", "edit");
            let mut body = Bytes::new();
            if limited {
                b = b
                    .status(429)
                    .header("x-ratelimit-scope", "user")
                    .header("retry-after", "600");
                body = Bytes::from_static(br#"{"retry_after": 600.0, "global": false}"#);
            }
            Ok::<_, Infallible>(b.body(Full::new(body)).unwrap())
        }
    });
    let limiter = Limiter::builder(Discord::new())
        .clock(TokioClock::new())
        .wait_forever()
        .build()
        .unwrap();
    let client = RateLimitLayer::new(limiter.clone()).layer(svc);
    let edit = |json: &'static str| {
        Request::patch("https://discord.test/api/v10/channels/7")
            .header("authorization", "Bot t")
            .body(Full::new(Bytes::from_static(json.as_bytes())))
            .unwrap()
    };
    client
        .clone()
        .oneshot(edit(r#"{"name":"a"}"#))
        .await
        .unwrap();
    // The second rename trips the sub-limit; it waits its 600 s in the background.
    let rename = tokio::spawn(client.clone().oneshot(edit(r#"{"name":"b"}"#)));
    while limiter.snapshot().routes.iter().all(|r| r.sublimits == 0) {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let topic = client
        .clone()
        .oneshot(edit(r#"{"topic":"t"}"#))
        .await
        .unwrap();
    let a = Attempts::of(topic.extensions());
    assert_eq!((a.attempts, a.waited), (1, Duration::ZERO), "{a:?}");
    assert!(!rename.is_finished());
    let renamed = rename.await.unwrap().unwrap();
    assert!(Attempts::of(renamed.extensions()).waited >= Duration::from_secs(599));
}
