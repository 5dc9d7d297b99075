//! A long-lived service (one instance, never cloned, as in a plain tower stack) sees run-time tier changes on
//! its very next request: the service loads the table per request (it once cached it per service, and the
//! cache had to revalidate on every load).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::convert::Infallible;
use std::net::SocketAddr;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use ratelimit_core::{Policy, PolicySet, Quota};
use ratelimit_test_support::poll::ready_at_once;
use ratelimit_tower::{RateLimitLayer, Tier, Tiers};
use tower::{Layer, Service};

fn per_hour(name: &str, n: u64) -> PolicySet {
    PolicySet::new([Policy::fixed_window(name, Quota::per_hour(n).build().unwrap()).unwrap()])
        .unwrap()
}

fn request(tier: Option<&'static str>) -> Request<()> {
    let peer: SocketAddr = "192.0.2.9:1000".parse().unwrap();
    let mut r = Request::new(());
    r.extensions_mut().insert(peer);
    if let Some(t) = tier {
        r.extensions_mut().insert(Tier::new_static(t));
    }
    r
}

fn policy_header<B>(res: &Response<B>) -> String {
    res.headers()["ratelimit-policy"]
        .to_str()
        .unwrap()
        .to_owned()
}

#[test]
fn one_service_instance_sees_every_tier_change_on_the_next_request() {
    let layer = RateLimitLayer::builder()
        .tiers(Tiers::new(per_hour("free", 2)).tier("pro", per_hour("pro", 3)))
        .build()
        .unwrap();
    let handle = layer.tiers();
    let mut svc = layer.layer(tower::service_fn(|_req: Request<()>| async {
        Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(b"hi"))))
    }));

    let res = ready_at_once(svc.call(request(Some("pro")))).unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(policy_header(&res), r#""pro";q=3;w=3600"#);

    // Raised quota: the same instance renders and enforces it at once (1 of 10 used).
    handle.set_tier("pro", per_hour("pro", 10));
    let res = ready_at_once(svc.call(request(Some("pro")))).unwrap();
    assert_eq!(policy_header(&res), r#""pro";q=10;w=3600"#);
    let rl = res.headers()["ratelimit"].to_str().unwrap();
    assert!(rl.starts_with(r#""pro";r=8;t="#), "{rl}");

    // Removed tier: the same instance falls back to the default tier.
    handle.remove_tier("pro");
    let res = ready_at_once(svc.call(request(Some("pro")))).unwrap();
    assert_eq!(policy_header(&res), r#""free";q=2;w=3600"#);

    // New default: seen too.
    handle.set_default(per_hour("free", 1));
    let res = ready_at_once(svc.call(request(None))).unwrap();
    assert_eq!(policy_header(&res), r#""free";q=1;w=3600"#);
}
