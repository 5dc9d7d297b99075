//! What a caller gets back: the attempts and waits of every request, a finite default maximum wait (a
//! long `Retry-After` is an error naming the route, not a hang), and the "wait forever" opt-in. In-process
//! tower services on tokio's paused clock: waits are virtual, so a minute-long `Retry-After` costs nothing.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::convert::Infallible;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use common::TokioClock;
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use ratelimit_client::profile::RetryAfter;
use ratelimit_client::{
    Attempts, Error, Limiter, LimiterBuilder, MaxWait, RateLimit, RateLimitLayer,
    DEFAULT_MAX_WAIT_WITHIN_COMMON_REQUEST_TIMEOUTS,
};
use tower::util::BoxCloneService;
use tower::{service_fn, Layer};

/// An in-process upstream.
type Upstream = BoxCloneService<Request<Full<Bytes>>, Response<Full<Bytes>>, Infallible>;

/// An upstream whose first answer is a 429 with `Retry-After: 58`, then 200s.
fn limited_once() -> (Arc<AtomicUsize>, Upstream) {
    let calls = Arc::new(AtomicUsize::new(0));
    let c = calls.clone();
    let svc = service_fn(move |_req: Request<Full<Bytes>>| {
        let n = c.fetch_add(1, Ordering::SeqCst);
        async move {
            let mut b = Response::builder();
            if n == 0 {
                b = b.status(429).header("retry-after", "58");
            }
            Ok::<_, Infallible>(b.body(Full::new(Bytes::new())).unwrap())
        }
    });
    (calls, BoxCloneService::new(svc))
}

/// The layer over `svc` with a `RetryAfter` limiter on tokio's clock, built as `configure` says.
fn retry_after_client(
    svc: Upstream,
    configure: impl FnOnce(LimiterBuilder<RetryAfter>) -> LimiterBuilder<RetryAfter>,
) -> RateLimit<Upstream, RetryAfter> {
    let limiter = configure(Limiter::builder(RetryAfter::new()).clock(TokioClock::new()))
        .build()
        .unwrap();
    RateLimitLayer::new(limiter).layer(svc)
}

fn get(path: &str) -> Request<Full<Bytes>> {
    Request::get(format!("https://api.test{path}"))
        .body(Full::new(Bytes::new()))
        .unwrap()
}

#[tokio::test(start_paused = true)]
async fn a_long_retry_after_fails_fast_naming_the_route_by_default() {
    let (calls, svc) = limited_once();
    let client = retry_after_client(svc, |b| b);
    // Before the finite default, the call slept the 58 s out: the guard below (virtual time) caught it.
    let outcome = tokio::time::timeout(
        DEFAULT_MAX_WAIT_WITHIN_COMMON_REQUEST_TIMEOUTS,
        client.oneshot(get("/v1/items/42")),
    )
    .await
    .expect("the request gave up at once instead of waiting out the Retry-After");
    match outcome {
        Err(e @ Error::WouldWait { .. }) => {
            let text = e.to_string();
            let Error::WouldWait { route, wait, .. } = e else {
                unreachable!()
            };
            assert_eq!(route, "GET /v1/items/{id}");
            assert!(wait >= Duration::from_secs(57), "{wait:?}");
            assert!(!text.contains('|'), "no internal keys in errors: {text}");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(calls.load(Ordering::SeqCst), 1);
}

#[tokio::test(start_paused = true)]
async fn waiting_forever_is_an_explicit_choice_and_is_reported() {
    // Per request:
    let (calls, svc) = limited_once();
    let client = retry_after_client(svc, |b| b);
    let mut req = get("/v1/items/42");
    req.extensions_mut().insert(MaxWait::FOREVER);
    let res = client.oneshot(req).await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let a = Attempts::of(res.extensions());
    assert_eq!((a.attempts, a.exhausted), (2, false));
    assert!(a.waited >= Duration::from_secs(57), "{a:?}");
    assert_eq!(calls.load(Ordering::SeqCst), 2);

    // For the whole limiter:
    let (calls, svc) = limited_once();
    let client = retry_after_client(svc, LimiterBuilder::wait_forever);
    let res = client.oneshot(get("/v1/items/42")).await.unwrap();
    assert_eq!(Attempts::of(res.extensions()).attempts, 2);
    assert_eq!(calls.load(Ordering::SeqCst), 2);
}

#[tokio::test(start_paused = true)]
async fn a_shorter_max_wait_per_request_overrides_the_default() {
    let (_calls, svc) = limited_once();
    let client = retry_after_client(svc, LimiterBuilder::wait_forever);
    let mut req = get("/v1/items/42");
    req.extensions_mut().insert(MaxWait(Duration::from_secs(1)));
    assert!(matches!(
        client.oneshot(req).await,
        Err(Error::WouldWait { .. })
    ));
}

#[tokio::test(start_paused = true)]
async fn a_first_try_without_waiting_carries_no_extension_and_reads_as_one_attempt() {
    let svc = service_fn(|_req: Request<Full<Bytes>>| async {
        Ok::<_, Infallible>(Response::new(Full::new(Bytes::new())))
    });
    let res = retry_after_client(BoxCloneService::new(svc), |b| b)
        .oneshot(get("/v1/items/1"))
        .await
        .unwrap();
    assert!(res.extensions().get::<Attempts>().is_none());
    let a = Attempts::of(res.extensions());
    assert_eq!(
        (a.attempts, a.waited, a.exhausted),
        (1, Duration::ZERO, false)
    );
}

/// Log lines, captured.
#[derive(Clone, Default)]
struct Logs(Arc<parking_lot::Mutex<Vec<u8>>>);

impl std::io::Write for Logs {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// A plain IETF API where every route has its own `"hourly"` policy (10 an hour), and `/v1/busy` is always
/// refused with a 429 and `Retry-After: 1`.
fn ietf_per_route() -> Upstream {
    let used: Arc<parking_lot::Mutex<std::collections::HashMap<String, u64>>> = Arc::default();
    let svc = service_fn(move |req: Request<Full<Bytes>>| {
        let path = req.uri().path().to_owned();
        let n = {
            let mut used = used.lock();
            let n = used.entry(path.clone()).or_default();
            *n += 1;
            *n
        };
        async move {
            let mut b = Response::builder().header("ratelimit-policy", r#""hourly";q=10;w=3600"#);
            if path == "/v1/busy" {
                b = b
                    .status(429)
                    .header("retry-after", "1")
                    .header("ratelimit", r#""hourly";r=0;t=1"#);
            } else {
                let left = 10u64.saturating_sub(n);
                b = b.header("ratelimit", format!(r#""hourly";r={left};t=3000"#));
            }
            Ok::<_, Infallible>(b.body(Full::new(Bytes::new())).unwrap())
        }
    });
    BoxCloneService::new(svc)
}

/// Logs about a plain IETF API name routes as the caller wrote them (`GET /v1/items/{id}`), never by the
/// scheduler's internal keys (`<credential digest>|GET /v1/items/{id}|`, `…|#hourly|`), and carry no
/// Discord vocabulary: two routes that each have their own `"hourly"` policy are the normal case there, not
/// a "route that keeps its own counter under a shared bucket hash" worth an `info` line on every run.
#[tokio::test(start_paused = true)]
async fn logs_about_an_ietf_api_name_routes_in_the_callers_terms() {
    let logs = Logs::default();
    let sink = logs.clone();
    let _log = tracing::subscriber::set_default(
        tracing_subscriber::fmt()
            .with_max_level(tracing::Level::DEBUG)
            .with_ansi(false)
            .with_writer(move || sink.clone())
            .finish(),
    );
    let limiter = Limiter::builder(ratelimit_client::profile::Ietf::new())
        .clock(TokioClock::new())
        .max_wait(Duration::from_secs(3))
        .build()
        .unwrap();
    let client = RateLimitLayer::new(limiter).layer(ietf_per_route());
    for path in ["/v1/items/1", "/v1/items/2", "/v1/users/1", "/v1/users/2"] {
        let res = client.clone().oneshot(get(path)).await.unwrap();
        assert_eq!(res.status(), StatusCode::OK, "{path}");
    }
    let busy = client.clone().oneshot(get("/v1/busy")).await;
    assert!(busy.is_err(), "{busy:?}");

    let logs = String::from_utf8(logs.0.lock().clone()).unwrap();
    assert!(
        logs.contains("route=GET /v1/busy"),
        "the 429 is logged with its route: {logs}"
    );
    for line in logs.lines() {
        assert!(
            !line.contains("|GET") && !line.contains("|#"),
            "an internal key in a log line: {line}"
        );
        assert!(
            !line.contains("bucket hash"),
            "Discord wording about an IETF API: {line}"
        );
    }
}
