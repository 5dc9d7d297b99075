//! Observability: tracing events (one-time misconfiguration warnings, rejections at info with a hashed key
//! and never the raw API key) and metrics (outcome counters, decision-latency histogram). Both are
//! captured with thread-local collectors while the service is driven on this thread.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "common/in_thread.rs"]
mod in_thread;
#[path = "common/recorder.rs"]
mod recorder;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use in_thread::{hourly, serial, service, Capture};
use ratelimit_core::PolicySet;
use ratelimit_test_support::poll::ready_at_once;
use ratelimit_tower::key::{ApiKey, ClientIp, PeerAddr};
use ratelimit_tower::RateLimitLayer;
use recorder::Metrics;
use tower::{Layer, Service};
use tracing::Level;

fn request(headers: &[(&'static str, &str)], peer: bool) -> Request<()> {
    let mut r = Request::new(());
    for (k, v) in headers {
        r.headers_mut().insert(*k, v.parse().unwrap());
    }
    if peer {
        r.extensions_mut()
            .insert(PeerAddr("192.0.2.7:1234".parse::<SocketAddr>().unwrap()));
    }
    r
}

#[test]
fn rejections_log_the_policy_and_a_hashed_key_never_the_raw_api_key() {
    let _serial = serial();
    let capture = Capture::default();
    let layer = RateLimitLayer::builder()
        .policies(hourly(1))
        .key(ApiKey::header("x-api-key"))
        .partition_key(true)
        .build()
        .unwrap();
    let mut svc = service(&layer);
    tracing::subscriber::with_default(capture.clone(), || {
        let h = [("x-api-key", "sk_live_SECRETVALUE")];
        assert_eq!(
            ready_at_once(svc.call(request(&h, true))).unwrap().status(),
            StatusCode::OK
        );
        assert_eq!(
            ready_at_once(svc.call(request(&h, true))).unwrap().status(),
            StatusCode::TOO_MANY_REQUESTS
        );
    });
    capture.assert_events(Level::INFO, "rate limit exceeded", 1);
    assert_eq!(capture.events(Level::INFO, "policy=\"hourly\""), 1);
    assert_eq!(capture.events(Level::DEBUG, "rate limit check passed"), 1);
    assert!(capture.events(Level::INFO, " key=") == 1);
    assert!(
        !capture.all().contains("SECRET"),
        "raw API key leaked into logs: {}",
        capture.all()
    );
}

#[test]
fn misconfiguration_warnings_are_logged_once() {
    let _serial = serial();
    let capture = Capture::default();
    let layer = RateLimitLayer::builder()
        .policies(hourly(1000))
        .key(ClientIp::peer())
        .build()
        .unwrap();
    let mut svc = service(&layer);
    tracing::subscriber::with_default(capture.clone(), || {
        // Direct traffic first, then a proxy's: every forwarded request is counted, the first 8 are
        // logged (tests/config.rs checks the budget).
        for _ in 0..10 {
            let r = ready_at_once(svc.call(request(&[], true))).unwrap();
            assert_eq!(r.status(), StatusCode::OK);
        }
        assert_eq!(capture.events(Level::WARN, "trusted_proxies"), 0);
        for _ in 0..80 {
            let r = ready_at_once(svc.call(request(&[("x-forwarded-for", "198.51.100.1")], true)))
                .unwrap();
            assert_eq!(r.status(), StatusCode::OK);
        }
        for _ in 0..3 {
            let r = ready_at_once(svc.call(request(&[], false))).unwrap();
            assert_eq!(r.status(), StatusCode::INTERNAL_SERVER_ERROR);
        }
    });
    capture.assert_events(Level::WARN, "trusted_proxies", 8);
    capture.assert_events(Level::ERROR, "into_make_service_with_connect_info", 1);
}

#[test]
fn outcomes_are_counted_and_decisions_timed() {
    let _serial = serial();
    let recorder = Metrics::default();
    let layer = RateLimitLayer::builder()
        .policies(hourly(2))
        .skip(|req| req.uri().path() == "/health")
        .build()
        .unwrap();
    let mut svc = service(&layer);
    metrics::with_local_recorder(&recorder, || {
        for _ in 0..3 {
            ready_at_once(svc.call(request(&[], true))).unwrap();
        }
        let mut health = request(&[], true);
        *health.uri_mut() = "/health".parse().unwrap();
        ready_at_once(svc.call(health)).unwrap();
    });
    assert_counts(&recorder, 2.0, 1.0, 1.0, 3.0);
    assert_eq!(
        recorder.get("ratelimit_requests_total,outcome=skipped"),
        1.0
    );
}

/// Checks the allowed and limited outcomes, the rejections of the `hourly` policy and the decisions
/// timed.
fn assert_counts(recorder: &Metrics, allowed: f64, limited: f64, rejections: f64, timed: f64) {
    let outcome = |o: &str| recorder.get(&format!("ratelimit_requests_total,outcome={o}"));
    assert_eq!(outcome("allowed"), allowed);
    assert_eq!(outcome("limited"), limited);
    assert_eq!(
        recorder.get("ratelimit_rejections_total,policy=hourly"),
        rejections
    );
    assert_eq!(recorder.get("ratelimit_decision_seconds"), timed);
}

#[test]
fn a_layer_built_under_a_recorder_keeps_its_handles() {
    let _serial = serial();
    let recorder = Metrics::default();
    // Built while the recorder is installed: the layer registers its handles once, there.
    let layer = metrics::with_local_recorder(&recorder, || {
        RateLimitLayer::builder()
            .policies(hourly(2))
            .build()
            .unwrap()
    });
    let mut svc = service(&layer);
    metrics::with_local_recorder(&recorder, || {
        ready_at_once(svc.call(request(&[], true))).unwrap();
    });
    // Outside any recorder, the kept handles still count into it (asking per call would find none).
    for _ in 0..2 {
        ready_at_once(svc.call(request(&[], true))).unwrap();
    }
    // The rejection's policy label varies, so it is asked for per call: no recorder there, not counted.
    assert_counts(&recorder, 2.0, 1.0, 0.0, 3.0);
}

/// The in-memory store behind a switch: answering, down (every call fails as a Redis outage would), or
/// answering with a corrupt key for every identity (one identity's state is not the limiter's).
#[derive(Clone)]
struct SwitchStore {
    inner: Arc<ratelimit_core::MemoryStore<Vec<u8>, PolicySet>>,
    mode: Arc<std::sync::atomic::AtomicU8>,
}

const ANSWERING: u8 = 0;
const DOWN: u8 = 1;
const CORRUPT_KEY: u8 = 2;

impl SwitchStore {
    fn new() -> Self {
        SwitchStore {
            inner: Arc::new(ratelimit_core::MemoryStore::new()),
            mode: Arc::new(std::sync::atomic::AtomicU8::new(ANSWERING)),
        }
    }

    fn set(&self, mode: u8) {
        self.mode.store(mode, std::sync::atomic::Ordering::Relaxed);
    }

    fn fault(&self) -> Result<(), ratelimit_core::StoreError> {
        match self.mode.load(std::sync::atomic::Ordering::Relaxed) {
            DOWN => Err(ratelimit_core::StoreError::Unavailable(
                "test store is down".into(),
            )),
            CORRUPT_KEY => Err(ratelimit_core::StoreError::KeyState {
                keys: "rl:{test}:*".into(),
                reason: "WRONGTYPE".into(),
            }),
            _ => Ok(()),
        }
    }
}

impl ratelimit_core::Store<[u8], PolicySet> for SwitchStore {
    async fn check(
        &self,
        r: &PolicySet,
        k: &[u8],
        c: u64,
    ) -> Result<ratelimit_core::Decision, ratelimit_core::StoreError> {
        self.fault()?;
        self.inner.check(r, k, c)
    }
    async fn peek(
        &self,
        r: &PolicySet,
        k: &[u8],
        c: u64,
    ) -> Result<ratelimit_core::Decision, ratelimit_core::StoreError> {
        self.fault()?;
        Ok(self.inner.peek(r, k, c))
    }
    async fn refund(
        &self,
        r: &PolicySet,
        k: &[u8],
        c: u64,
    ) -> Result<(), ratelimit_core::StoreError> {
        self.fault()?;
        self.inner.refund(r, k, c);
        Ok(())
    }
    async fn reset(&self, _: &PolicySet, k: &[u8]) -> Result<(), ratelimit_core::StoreError> {
        self.fault()?;
        self.inner.reset(k);
        Ok(())
    }
}

/// An outage is two log lines (failing, answering again), not one per request; the requests it failed
/// are counted. A corrupt key is that request's error: never worded as the store being down.
#[test]
fn a_store_outage_is_logged_once_each_way_and_counted() {
    const OUTAGE_REQUESTS: usize = 50;
    let _serial = serial();
    let capture = Capture::default();
    let recorder = Metrics::default();
    let store = SwitchStore::new();
    let layer = RateLimitLayer::with_store(store.clone())
        .policies(hourly(1000))
        .build()
        .unwrap();
    let mut svc = layer.layer(tower::service_fn(|_req: Request<()>| async {
        Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(b"ok"))))
    }));
    let mut status = || {
        ready_at_once(svc.call(request(&[], true)))
            .unwrap()
            .status()
    };
    tracing::subscriber::with_default(capture.clone(), || {
        metrics::with_local_recorder(&recorder, || {
            for round in 0..2 {
                assert_eq!(status(), StatusCode::OK);
                store.set(DOWN);
                for _ in 0..OUTAGE_REQUESTS {
                    assert_eq!(status(), StatusCode::SERVICE_UNAVAILABLE);
                }
                store.set(ANSWERING);
                for _ in 0..3 {
                    assert_eq!(status(), StatusCode::OK);
                }
                capture.assert_events(Level::WARN, "store failing", round + 1);
                assert_eq!(
                    capture.events(Level::INFO, "store answering again"),
                    round + 1
                );
            }
            store.set(CORRUPT_KEY);
            // Waiting will not help this client: 500, not the outage's 503.
            for _ in 0..OUTAGE_REQUESTS {
                assert_eq!(status(), StatusCode::INTERNAL_SERVER_ERROR);
            }
        });
    });
    assert_eq!(
        recorder.get("ratelimit_store_errors_total,action=fail_closed"),
        (3 * OUTAGE_REQUESTS) as f64
    );
    // A corrupt key is not an outage: still the two warnings of the outage.
    capture.assert_events(Level::WARN, "store failing", 2);
    capture.assert_events(Level::WARN, "holds data this limiter did not write", 1);
    capture.assert_events(Level::WARN, "", 3);
}
