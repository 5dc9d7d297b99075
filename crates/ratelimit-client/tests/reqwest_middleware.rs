//! reqwest as people use it: `reqwest_middleware::ClientBuilder` with `RateLimitMiddleware`, and the usual
//! `RequestBuilder` calls (`bearer_auth`, `json`, `header`, `with_extension`, `.json::<T>()`), against a real
//! HTTP upstream on loopback that limits per API key and speaks IETF `RateLimit` headers (429s carry
//! `Retry-After`).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::HashMap;
use std::io::Write;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::Request as AxumRequest;
use axum::response::Response;
use axum::Router;
use http::{HeaderName, HeaderValue, StatusCode};
use parking_lot::Mutex;
use ratelimit_client::profile::Ietf;
use ratelimit_client::reqwest::RateLimitMiddleware;
use ratelimit_client::{Attempts, Credential, Error, Limiter, MaxWait};
use reqwest_middleware::{ClientBuilder, ClientWithMiddleware};

/// One fixed window per credential.
struct Window {
    start: Instant,
    used: u64,
}

/// An upstream with a per-key fixed-window quota: `RateLimit-Policy`/`RateLimit` on every answer, and a
/// 429 with `Retry-After` past the quota. `quota(key)` gives (requests, window in whole seconds).
struct Upstream {
    addr: SocketAddr,
    limited: Arc<AtomicUsize>,
}

async fn upstream(key_header: &'static str, quota: fn(&str) -> (u64, u64)) -> Upstream {
    let windows: Arc<Mutex<HashMap<String, Window>>> = Arc::default();
    let limited = Arc::new(AtomicUsize::new(0));
    let l = limited.clone();
    let app = Router::new().fallback(move |req: AxumRequest| {
        let (windows, limited) = (windows.clone(), l.clone());
        async move {
            let key = req
                .headers()
                .get(key_header)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_owned();
            let (q, w) = quota(&key);
            let (remaining, reset) = {
                let mut windows = windows.lock();
                let win = windows.entry(key.clone()).or_insert(Window {
                    start: Instant::now(),
                    used: 0,
                });
                if win.start.elapsed() >= Duration::from_secs(w) {
                    *win = Window {
                        start: Instant::now(),
                        used: 0,
                    };
                }
                win.used += 1;
                let left = Duration::from_secs(w).saturating_sub(win.start.elapsed());
                // Whole seconds, rounded up: a client that waits this long is never early.
                let reset = left.as_millis().div_ceil(1000) as u64;
                (q.checked_sub(win.used), reset.max(1))
            };
            let body = format!(r#"{{"key":"{key}","path":"{}"}}"#, req.uri().path());
            let mut res = Response::new(axum::body::Body::from(body));
            let h = res.headers_mut();
            h.insert(
                "ratelimit-policy",
                HeaderValue::from_str(&format!(r#""quota";q={q};w={w}"#)).unwrap(),
            );
            h.insert(
                "ratelimit",
                HeaderValue::from_str(&format!(
                    r#""quota";r={};t={reset}"#,
                    remaining.unwrap_or(0)
                ))
                .unwrap(),
            );
            h.insert("content-type", HeaderValue::from_static("application/json"));
            if remaining.is_none() {
                limited.fetch_add(1, Ordering::SeqCst);
                h.insert("retry-after", HeaderValue::from(reset));
                *res.status_mut() = StatusCode::TOO_MANY_REQUESTS;
            }
            res
        }
    });
    let (addr, _) = common::serve(app).await;
    Upstream { addr, limited }
}

fn client(limiter: Limiter<Ietf>) -> ClientWithMiddleware {
    ClientBuilder::new(reqwest::Client::new())
        .with(RateLimitMiddleware::new(limiter))
        .build()
}

#[derive(Debug, serde::Deserialize)]
struct Echo {
    key: String,
    path: String,
}

#[tokio::test]
async fn an_ietf_api_through_reqwest_middleware_takes_no_avoidable_429() {
    let up = upstream("authorization", |_| (2, 1)).await;
    let client = client(Limiter::new(Ietf::new()));
    let mut waited = Duration::ZERO;
    for i in 0..5 {
        let res = client
            .post(format!("http://{}/v1/items/{i}", up.addr))
            .bearer_auth("token-a")
            .json(&serde_json::json!({ "n": i }))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), StatusCode::OK);
        waited += Attempts::of(res.extensions()).waited;
        let echo: Echo = res.json().await.unwrap();
        assert_eq!(echo.key, "Bearer token-a");
        assert_eq!(echo.path, format!("/v1/items/{i}"));
    }
    assert_eq!(up.limited.load(Ordering::SeqCst), 0, "no avoidable 429");
    // Two per second: the third and the fifth waited for a reset.
    assert!(waited > Duration::ZERO);
}

#[tokio::test]
async fn a_refusal_is_a_typed_error_inside_reqwest_middlewares() {
    let up = upstream("authorization", |_| (1, 30)).await;
    let client = client(Limiter::new(Ietf::new()));
    let url = format!("http://{}/v1/items/1", up.addr);
    client.get(&url).send().await.unwrap();
    let err = client
        .get(&url)
        .with_extension(MaxWait(Duration::from_millis(50)))
        .send()
        .await
        .unwrap_err();
    match Error::from_middleware(&err) {
        Some(Error::WouldWait { route, limit, wait }) => {
            assert_eq!(route, "GET /v1/items/{id}");
            assert!(limit.contains("quota"), "{limit}");
            assert!(*wait > Duration::from_secs(20), "{wait:?}");
        }
        other => panic!("{other:?} from {err}"),
    }
    assert_eq!(up.limited.load(Ordering::SeqCst), 0);
}

/// Log lines, captured.
#[derive(Clone, Default)]
struct Logs(Arc<Mutex<Vec<u8>>>);

impl Write for Logs {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// A free key (one request per 6 s) and a pro key (100) in `x-api-key`: each has its own state, so the pro
/// key never waits behind the free key's empty bucket. Keyed by `Authorization` (absent here), both shared
/// one state, and the pro request waited out the free key's 6 s (here: failed past its 1 s maximum).
#[tokio::test]
async fn two_api_keys_in_x_api_key_do_not_wait_on_each_other() {
    let logs = Logs::default();
    let sink = logs.clone();
    let _log = tracing::subscriber::set_default(
        tracing_subscriber::fmt()
            .with_max_level(tracing::Level::TRACE)
            .with_writer(move || sink.clone())
            .finish(),
    );
    let up = upstream("x-api-key", |key| {
        if key == "pro-key-secret" {
            (100, 6)
        } else {
            (1, 6)
        }
    })
    .await;
    let api_key = HeaderName::from_static("x-api-key");
    let limiter = Limiter::builder(Ietf::new())
        .credential(Credential::header(api_key.clone()))
        .build()
        .unwrap();
    let client = client(limiter);
    let url = format!("http://{}/v1/search", up.addr);
    let send = |key: &'static str| {
        client
            .get(&url)
            .header(api_key.clone(), key)
            .with_extension(MaxWait(Duration::from_secs(1)))
            .send()
    };
    assert!(send("free-key-secret").await.unwrap().status().is_success());
    let pro = send("pro-key-secret").await.unwrap();
    assert!(pro.status().is_success());
    let a = Attempts::of(pro.extensions());
    assert_eq!((a.attempts, a.waited), (1, Duration::ZERO));
    for _ in 0..5 {
        assert!(send("pro-key-secret").await.unwrap().status().is_success());
    }
    // The free key's own limit still holds.
    let err = send("free-key-secret").await.unwrap_err();
    assert!(
        matches!(Error::from_middleware(&err), Some(Error::WouldWait { .. })),
        "{err}"
    );
    assert_eq!(up.limited.load(Ordering::SeqCst), 0);
    let logs = String::from_utf8(logs.0.lock().clone()).unwrap();
    assert!(!logs.is_empty());
    assert!(!logs.contains("key-secret"), "a credential was logged");
}

#[tokio::test]
async fn a_closure_can_pick_the_credential() {
    let up = upstream(
        "x-tenant",
        |key| if key == "big" { (100, 6) } else { (1, 6) },
    )
    .await;
    let limiter = Limiter::builder(Ietf::new())
        .credential(Credential::from_fn(|req| {
            req.headers.get("x-tenant").map(HeaderValue::as_bytes)
        }))
        .build()
        .unwrap();
    let client = client(limiter);
    let url = format!("http://{}/v1/search", up.addr);
    let send = |tenant: &'static str| {
        client
            .get(&url)
            .header("x-tenant", tenant)
            .with_extension(MaxWait(Duration::from_secs(1)))
            .send()
    };
    assert!(send("small").await.unwrap().status().is_success());
    assert!(send("big").await.unwrap().status().is_success());
    assert!(send("small").await.is_err());
}

/// An IETF API with a hidden sub-limit on renames: the first request whose JSON body changes `name` is
/// refused (429, `Retry-After: 1`) although its policy still has requests left; everything else passes.
async fn renames_sub_limited() -> SocketAddr {
    let renamed = Arc::new(AtomicUsize::new(0));
    let app = Router::new().fallback(move |req: AxumRequest| {
        let renamed = renamed.clone();
        async move {
            let body = axum::body::to_bytes(req.into_body(), 1 << 16)
                .await
                .unwrap();
            let rename = body.starts_with(br#"{"name""#);
            let refused = rename && renamed.fetch_add(1, Ordering::SeqCst) == 0;
            let mut res = Response::new(axum::body::Body::empty());
            let h = res.headers_mut();
            h.insert(
                "ratelimit-policy",
                HeaderValue::from_static(r#""edits";q=50;w=60"#),
            );
            h.insert(
                "ratelimit",
                HeaderValue::from_static(r#""edits";r=40;t=60"#),
            );
            if refused {
                h.insert("retry-after", HeaderValue::from_static("1"));
                *res.status_mut() = StatusCode::TOO_MANY_REQUESTS;
            }
            res
        }
    });
    common::serve(app).await.0
}

/// `RequestBuilder::json` bodies are read for sub-limit fingerprints: while a rename waits out its
/// sub-limit, an edit of another field (another JSON shape) on the same route goes at once. Unread, every
/// body had the same (empty) fingerprint and the topic edit waited the second out behind the rename.
#[tokio::test]
async fn json_bodies_of_another_shape_pass_a_sub_limit() {
    let addr = renames_sub_limited().await;
    let limiter = Limiter::new(Ietf::new());
    let client = client(limiter.clone());
    let url = format!("http://{addr}/v1/channels/7");
    let edit = |field: &str| {
        client
            .patch(&url)
            .json(&serde_json::json!({ field: "x" }))
            .send()
    };
    // The route's first answer: its policy is known, requests may run in parallel.
    assert!(edit("topic").await.unwrap().status().is_success());
    let rename = tokio::spawn(edit("name"));
    // Until the rename's 429 is read: the route then holds a sub-limit for a second.
    let sub_limited = || limiter.snapshot().routes.iter().any(|r| r.sublimits > 0);
    while !sub_limited() && !rename.is_finished() {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert!(sub_limited(), "the rename met its sub-limit");
    let topic = edit("topic").await.unwrap();
    assert!(topic.status().is_success());
    let a = Attempts::of(topic.extensions());
    assert_eq!((a.attempts, a.waited), (1, Duration::ZERO), "{a:?}");
    let rename = rename.await.unwrap().unwrap();
    assert!(rename.status().is_success());
    let r = Attempts::of(rename.extensions());
    assert_eq!(r.attempts, 2, "refused once, then retried: {r:?}");
}
