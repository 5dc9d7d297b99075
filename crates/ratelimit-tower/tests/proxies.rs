//! Proxy misconfigurations caught: trusted networks that would trust every client are refused when the
//! key is built (so forged `X-Forwarded-For` no longer mints buckets), and forwarding headers from peers
//! they are not believed from are all counted, the first ones logged at `warn`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
#[path = "common/in_thread.rs"]
mod in_thread;
#[path = "common/recorder.rs"]
mod recorder;

use std::net::SocketAddr;

use http::StatusCode;
use in_thread::Capture;
use ratelimit_core::{Policy, Quota};
use ratelimit_tower::key::forwarded::ProxyRangeError;
use ratelimit_tower::key::ClientIp;
use ratelimit_tower::RateLimitLayer;
use tracing::Level;

/// The tests of this binary take turns: one captures `warn` events with a thread-local subscriber, and
/// tracing's per-callsite interest is process-wide, so the other test hitting the same callsites on
/// another thread at the same moment made the capture miss its events (0 of 1, in every parallel run).
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Serves a GCRA limit of `n` an hour keyed by `key`.
async fn serve_hourly(n: u64, key: ClientIp) -> SocketAddr {
    let policy = Policy::gcra("hourly", Quota::per_hour(n).build().unwrap()).unwrap();
    let layer = RateLimitLayer::builder()
        .policies(common::set([policy]))
        .key(key)
        .build()
        .unwrap();
    common::serve(common::ok_at_root().layer(layer)).await
}

// ---------------------------------------------------------------------------------------------------------
// Trusted proxies that would trust clients.

/// A limit of 5 an hour keyed by `key`, served; 8 requests each claiming another client address.
async fn forged_requests_passing(key: ClientIp) -> usize {
    let addr = serve_hourly(5, key).await;
    let c = common::client();
    let mut passed = 0;
    for i in 0..8 {
        let forged = format!("198.51.100.{i}");
        let r = common::get(&c, addr, "/", &[("x-forwarded-for", &forged)]).await;
        passed += usize::from(r.status == StatusCode::OK);
    }
    passed
}

/// Trusting `0.0.0.0/0` used to be accepted and walked every forged `X-Forwarded-For` to its left-most,
/// client-written element: 8 of 8 forged requests passed a limit of 5. Such networks are refused now;
/// a real proxy list holds the limit.
#[tokio::test]
async fn forged_forwarding_headers_hit_the_limit_or_the_build_fails() {
    let _turn = SERIAL.lock().await;
    for networks in [
        &["0.0.0.0/0"][..],
        &["::/0", "0.0.0.0/0"],
        &["10.0.0.0/8", "0.0.0.0/0"],
        &["::ffff:0.0.0.0/96"],
        &["127.0.0.0/8", "0.0.0.0/1"],
    ] {
        match ClientIp::behind(networks) {
            Err(e) => {
                assert!(
                    matches!(
                        e,
                        ProxyRangeError::Everything(_) | ProxyRangeError::TooWide(_)
                    ),
                    "{networks:?}: {e}"
                );
                assert!(e.to_string().contains("behind_any_proxy_unsafe"), "{e}");
            }
            Ok(key) => {
                let passed = forged_requests_passing(key).await;
                assert!(
                    passed <= 5,
                    "{networks:?}: {passed} of 8 forged requests passed a limit of 5"
                );
            }
        }
    }
    // The peer itself (no proxy), or a proxy list that does not hold the peer: 5 pass.
    assert_eq!(forged_requests_passing(ClientIp::peer()).await, 5);
    assert_eq!(
        forged_requests_passing(ClientIp::behind(["10.0.0.0/8"]).unwrap()).await,
        5
    );
    // The explicit opt-in believes only what the peer (taken for a proxy) appended: the right-most
    // element. A client that reaches the server directly picks its key — which is why it says unsafe.
    assert_eq!(
        forged_requests_passing(ClientIp::behind_any_proxy_unsafe()).await,
        8
    );
}

// ---------------------------------------------------------------------------------------------------------
// Forwarding headers from peers they are not believed from: every one counted, the first ones logged.

/// Serves a limit keyed by `key`; sends `plain` requests without forwarding headers, then `forwarded`
/// with one; returns the warnings logged and the metrics recorded meanwhile (on this thread: the
/// server runs on the test's current-thread runtime).
async fn forwarded_from_unbelieved_peers(
    key: ClientIp,
    plain: usize,
    forwarded: usize,
) -> (Capture, recorder::Metrics) {
    let warnings = Capture::default();
    let metrics = recorder::Metrics::default();
    let _log = tracing::subscriber::set_default(warnings.clone());
    let recording = metrics.clone();
    let _metrics = metrics::set_default_local_recorder(&recording);
    let addr = serve_hourly(1000, key).await;
    let c = common::client();
    for _ in 0..plain {
        assert_eq!(common::get(&c, addr, "/", &[]).await.status, StatusCode::OK);
    }
    for i in 0..forwarded {
        let xff = format!("198.51.100.{i}");
        let r = common::get(&c, addr, "/", &[("x-forwarded-for", &xff)]).await;
        assert_eq!(r.status, StatusCode::OK);
    }
    (warnings, metrics)
}

/// The warning used to look at one request in 64 per thread, and log once: a forged header on an
/// unsampled request, or a proxy missing from a non-empty list, went unseen.
#[tokio::test]
async fn forwarding_headers_from_unbelieved_peers_are_counted_and_the_first_logged() {
    let _turn = SERIAL.lock().await;
    // No proxy trusted: one forwarded request after three plain ones is seen.
    let (warnings, metrics) = forwarded_from_unbelieved_peers(ClientIp::peer(), 3, 1).await;
    assert_eq!(warnings.events(Level::WARN, "trusts no proxy"), 1);
    assert_eq!(
        metrics.get("ratelimit_forwarded_ignored_total,peer=no_proxy_trusted"),
        1.0
    );

    // The first 8 are logged (within a minute, nothing more), every one is counted.
    let (warnings, metrics) = forwarded_from_unbelieved_peers(ClientIp::peer(), 0, 20).await;
    assert_eq!(warnings.events(Level::WARN, "trusts no proxy"), 8);
    assert_eq!(
        warnings.events(Level::WARN, "ignored"),
        8,
        "no summary within the minute"
    );
    assert_eq!(
        metrics.get("ratelimit_forwarded_ignored_total,peer=no_proxy_trusted"),
        20.0
    );

    // A proxy list that does not hold the peer (loopback): a missing proxy, or a client going around.
    let (warnings, metrics) =
        forwarded_from_unbelieved_peers(ClientIp::behind(["10.0.0.0/8"]).unwrap(), 2, 10).await;
    assert_eq!(warnings.events(Level::WARN, "not a trusted proxy"), 8);
    assert_eq!(warnings.events(Level::WARN, "peer=127.0.0.1"), 8);
    assert_eq!(
        metrics.get("ratelimit_forwarded_ignored_total,peer=untrusted"),
        10.0
    );

    // A trusted peer's headers are believed: nothing to say.
    let (warnings, metrics) =
        forwarded_from_unbelieved_peers(ClientIp::behind(["127.0.0.0/8"]).unwrap(), 1, 10).await;
    assert_eq!(warnings.events(Level::WARN, ""), 0);
    assert_eq!(
        metrics.get("ratelimit_forwarded_ignored_total,peer=untrusted"),
        0.0
    );
}
