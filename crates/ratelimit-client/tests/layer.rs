//! The tower layer over an in-process service: hostile headers, non-replayable bodies, retry bounds,
//! lanes, and the reqwest-free path. The simulator tests cover real HTTP; these cover what a well-behaved
//! simulator never sends.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::convert::Infallible;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{combinators::BoxBody, BodyExt, Full};
use ratelimit_client::profile::{Discord, GitHub};
use ratelimit_client::{Attempts, BoxError, Error, Exhausted, Lane, Limiter, RateLimitLayer};
use tower::{service_fn, Layer};

fn discord_req(path: &str) -> Request<Full<Bytes>> {
    Request::post(format!("https://discord.test/api/v10{path}"))
        .header("authorization", "Bot t")
        .body(Full::new(Bytes::from_static(b"{\"content\":\"x\"}")))
        .unwrap()
}

#[tokio::test]
async fn hostile_headers_never_panic_and_are_not_trusted() {
    let hostile: Vec<Vec<(&'static str, &'static str)>> = vec![
        vec![
            ("x-ratelimit-limit", "NaN"),
            ("x-ratelimit-remaining", "inf"),
            ("x-ratelimit-reset-after", "-1"),
        ],
        vec![
            ("x-ratelimit-limit", "5"),
            ("x-ratelimit-remaining", "4"),
            ("x-ratelimit-reset-after", "1e999"),
        ],
        vec![
            ("x-ratelimit-limit", "18446744073709551615"),
            ("x-ratelimit-remaining", "18446744073709551615"),
            ("x-ratelimit-reset-after", "99999999999.999"),
            ("x-ratelimit-bucket", "../../etc/passwd"),
        ],
        vec![
            ("x-ratelimit-limit", "5"),
            ("x-ratelimit-limit", "6"),
            ("x-ratelimit-remaining", "1"),
        ],
    ];
    for (i, headers) in hostile.into_iter().enumerate() {
        let svc = service_fn(move |_req: Request<Full<Bytes>>| {
            let headers = headers.clone();
            async move {
                let mut b = Response::builder();
                for (k, v) in headers {
                    b = b.header(k, v);
                }
                Ok::<_, Infallible>(b.body(Full::new(Bytes::new())).unwrap())
            }
        });
        let limiter = Limiter::new(Discord::new());
        let client = RateLimitLayer::new(limiter.clone()).layer(svc);
        for _ in 0..3 {
            let r = client
                .clone()
                .oneshot(discord_req("/channels/1/messages"))
                .await
                .unwrap();
            assert_eq!(r.status(), StatusCode::OK, "case {i}");
        }
        for b in limiter.snapshot().buckets {
            // Caps: at most a one-hour window and a million requests, never a path-like hash.
            assert!(
                b.limit <= 1_000_000 && b.reset_in.unwrap_or_default() <= Duration::from_secs(3600),
                "case {i}: {b:?}"
            );
            assert!(!b.key.contains(".."), "case {i}: {b:?}");
        }
    }
}

#[tokio::test]
async fn a_hostile_429_body_is_capped_and_retries_are_bounded() {
    let calls = Arc::new(AtomicUsize::new(0));
    let c = calls.clone();
    let svc = service_fn(move |_req: Request<Full<Bytes>>| {
        c.fetch_add(1, Ordering::SeqCst);
        async move {
            Ok::<_, Infallible>(
                Response::builder()
                    .status(429)
                    .header("via", "1.1 google")
                    .header("x-ratelimit-scope", "shared")
                    .header("x-ratelimit-limit", "5")
                    .header("x-ratelimit-remaining", "3")
                    .header("x-ratelimit-reset-after", "0.001")
                    .header("content-type", "application/json")
                    .body(Full::new(Bytes::from_static(
                        br#"{"retry_after": 0.001, "global": "yes", "message": 7}"#,
                    )))
                    .unwrap(),
            )
        }
    });
    // By default an application gets an error carrying the last 429, body intact, after one try and two
    // retries, naming the route as the caller knows it.
    let limiter = Limiter::builder(Discord::new())
        .retries(2, 0)
        .build()
        .unwrap();
    let client = RateLimitLayer::new(limiter).layer(svc.clone());
    match client.oneshot(discord_req("/channels/1/messages")).await {
        Err(e @ Error::RetriesExhausted { .. }) => {
            assert!(
                e.to_string()
                    .contains("`POST /channels/{channel_id}/messages`"),
                "{e}"
            );
            let Error::RetriesExhausted {
                route,
                attempts,
                response,
                ..
            } = e
            else {
                unreachable!()
            };
            assert_eq!(route, "POST /channels/{channel_id}/messages");
            assert_eq!(attempts, 3);
            assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
            assert!(response.body().starts_with(b"{\"retry_after\""));
            assert!(Attempts::of(response.extensions()).exhausted);
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(calls.load(Ordering::SeqCst), 3);
    // A proxy asks for the 429 itself, and learns from the extension that retries ran out.
    let limiter = Limiter::builder(Discord::new())
        .retries(2, 0)
        .on_exhausted(Exhausted::Respond)
        .build()
        .unwrap();
    let client = RateLimitLayer::new(limiter).layer(svc);
    let r = client
        .oneshot(discord_req("/channels/1/messages"))
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(calls.load(Ordering::SeqCst), 6);
    let a = Attempts::of(r.extensions());
    assert_eq!((a.attempts, a.exhausted), (3, true));
    let body = r.into_body().collect().await.unwrap().to_bytes();
    assert!(body.starts_with(b"{\"retry_after\""));
}

#[tokio::test]
async fn streaming_bodies_fail_clearly_when_a_retry_is_needed() {
    let svc = service_fn(|_req: Request<BoxBody<Bytes, BoxError>>| async {
        Ok::<_, Infallible>(
            Response::builder()
                .status(503)
                .body(Full::new(Bytes::new()))
                .unwrap(),
        )
    });
    let limiter = Limiter::builder(GitHub::new())
        .backoff(Duration::from_millis(1), Duration::from_millis(2))
        .build()
        .unwrap();
    let client = RateLimitLayer::new(limiter).layer(svc);
    let body = Full::new(Bytes::from_static(b"stream"))
        .map_err(|e| -> BoxError { match e {} })
        .boxed();
    let req = Request::post("https://api.github.test/repos/a/b/issues")
        .body(body)
        .unwrap();
    match client.oneshot(req).await {
        Err(e @ Error::NotReplayable { .. }) => {
            assert!(e.to_string().starts_with("`POST /repos/"), "{e}");
            let Error::NotReplayable { status, .. } = e else {
                unreachable!()
            };
            assert_eq!(status, Some(StatusCode::SERVICE_UNAVAILABLE))
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn connection_errors_are_retried_with_backoff_then_reported() {
    let calls = Arc::new(AtomicUsize::new(0));
    let c = calls.clone();
    let svc = service_fn(move |_req: Request<Full<Bytes>>| {
        c.fetch_add(1, Ordering::SeqCst);
        async { Err::<Response<Full<Bytes>>, BoxError>("connection reset".into()) }
    });
    let limiter = Limiter::builder(Discord::new())
        .retries(3, 2)
        .backoff(Duration::from_millis(1), Duration::from_millis(4))
        .build()
        .unwrap();
    let client = RateLimitLayer::new(limiter.clone()).layer(svc);
    match client.oneshot(discord_req("/channels/1/messages")).await {
        Err(Error::Upstream(e)) => assert_eq!(e.to_string(), "connection reset"),
        other => panic!("{other:?}"),
    }
    assert_eq!(calls.load(Ordering::SeqCst), 3);
    // The probe slot was released: the next call is sent.
    let _ = RateLimitLayer::new(limiter)
        .layer(service_fn(|_r: Request<Full<Bytes>>| async {
            Ok::<_, Infallible>(Response::new(Full::new(Bytes::new())))
        }))
        .oneshot(discord_req("/channels/1/messages"))
        .await
        .unwrap();
}

#[tokio::test]
async fn urgent_requests_overtake_bulk_ones_in_a_queue() {
    let order = Arc::new(parking_lot::Mutex::new(Vec::new()));
    let o = order.clone();
    let svc = service_fn(move |req: Request<Full<Bytes>>| {
        let lane = req
            .headers()
            .get("x-lane")
            .map(|v| v.to_str().unwrap().to_owned());
        o.lock().push(lane);
        async move {
            Ok::<_, Infallible>(
                Response::builder()
                    .header("x-ratelimit-limit", "1")
                    .header("x-ratelimit-remaining", "0")
                    .header("x-ratelimit-reset-after", "0.100")
                    .header("x-ratelimit-bucket", "abc")
                    .body(Full::new(Bytes::new()))
                    .unwrap(),
            )
        }
    });
    let limiter = Limiter::builder(Discord::new())
        .latency_compensation(0)
        .build()
        .unwrap();
    let client = RateLimitLayer::new(limiter).layer(svc);
    client
        .clone()
        .oneshot(discord_req("/channels/1/messages"))
        .await
        .unwrap();
    let mut tasks = Vec::new();
    for (i, lane) in [Lane::Bulk, Lane::Bulk, Lane::Urgent]
        .into_iter()
        .enumerate()
    {
        let mut req = discord_req("/channels/1/messages");
        req.headers_mut()
            .insert("x-lane", format!("{lane:?}{i}").parse().unwrap());
        req.extensions_mut().insert(lane);
        tasks.push(tokio::spawn(client.clone().oneshot(req)));
        tokio::task::yield_now().await;
    }
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    let seen: Vec<_> = order.lock().iter().skip(1).cloned().collect();
    assert_eq!(
        seen,
        vec![
            Some("Urgent2".into()),
            Some("Bulk0".into()),
            Some("Bulk1".into())
        ]
    );
}

fn generic_upstream(
    headers: Vec<(&'static str, String)>,
) -> impl tower::Service<
    Request<Full<Bytes>>,
    Response = Response<Full<Bytes>>,
    Error = Infallible,
    Future = impl Send,
> + Clone {
    service_fn(move |_req: Request<Full<Bytes>>| {
        let headers = headers.clone();
        async move {
            let mut b = Response::builder();
            for (k, v) in headers {
                b = b.header(k, v);
            }
            Ok::<_, Infallible>(b.body(Full::new(Bytes::new())).unwrap())
        }
    })
}

#[tokio::test]
async fn github_buckets_are_shared_by_resource_and_waited_for() {
    let reset = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 60;
    let svc = generic_upstream(vec![
        ("x-ratelimit-limit", "5000".into()),
        ("x-ratelimit-remaining", "0".into()),
        ("x-ratelimit-reset", reset.to_string()),
        ("x-ratelimit-resource", "core".into()),
    ]);
    let limiter = Limiter::new(GitHub::new());
    let client = RateLimitLayer::new(limiter.clone()).layer(svc);
    let req = |path: &str| {
        let mut r = Request::get(format!("https://api.github.test{path}"))
            .header("authorization", "token x")
            .body(Full::new(Bytes::new()))
            .unwrap();
        r.extensions_mut()
            .insert(ratelimit_client::MaxWait(Duration::from_millis(50)));
        r
    };
    assert!(client
        .clone()
        .oneshot(req("/repos/a/b"))
        .await
        .unwrap()
        .status()
        .is_success());
    // The bucket is empty until the epoch reset, about a minute away: the next call fails fast.
    match client.clone().oneshot(req("/repos/a/b")).await {
        Err(Error::WouldWait { route, limit, wait }) => {
            assert_eq!(route, "GET /repos/a/b");
            assert!(limit.contains("core"), "{limit}");
            assert!(wait > Duration::from_secs(50), "{wait:?}");
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn every_ietf_policy_binds_the_request() {
    let svc = generic_upstream(vec![
        (
            "ratelimit-policy",
            r#""burst";q=10;w=1, "day";q=1000;w=86400"#.into(),
        ),
        ("ratelimit", r#""burst";r=5;t=1, "day";r=0;t=3000"#.into()),
    ]);
    let limiter = Limiter::new(ratelimit_client::profile::Ietf::new());
    let client = RateLimitLayer::new(limiter.clone()).layer(svc);
    let req = || {
        let mut r = Request::get("https://api.test/items/42")
            .body(Full::new(Bytes::new()))
            .unwrap();
        r.extensions_mut()
            .insert(ratelimit_client::MaxWait(Duration::from_millis(50)));
        r
    };
    assert!(client
        .clone()
        .oneshot(req())
        .await
        .unwrap()
        .status()
        .is_success());
    match client.clone().oneshot(req()).await {
        Err(Error::WouldWait { route, limit, .. }) => {
            assert_eq!(route, "GET /items/{id}");
            assert!(limit.contains("day"), "{limit}");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(limiter.snapshot().buckets.len(), 2);
}
