//! Tier misconfigurations are reported once, at `warn`, within the first requests: a tier name that is
//! not in the table (once per distinct name, a bounded number of names), and tiers configured (or a
//! `User` key) while no request carries the `Tier` (or user) extension: the limiter runs before the auth
//! middleware. Captured with a
//! thread-local tracing subscriber while the service is driven on this thread.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "common/in_thread.rs"]
mod in_thread;

use std::net::SocketAddr;

use http::{Request, StatusCode};
use in_thread::{hourly, serial, service, Capture};
use ratelimit_test_support::poll::ready_at_once;
use ratelimit_tower::key::{ClientIp, KeyExtractorExt, PeerAddr, User, UserId};
use ratelimit_tower::{RateLimitLayer, Tier, Tiers};
use tower::Service;

fn tiered() -> RateLimitLayer {
    RateLimitLayer::builder()
        .tiers(Tiers::new(hourly(1_000_000)).tier("pro", hourly(2_000_000)))
        .build()
        .unwrap()
}

/// Sends `n` requests (with `tier` as the `Tier` extension, if any) under `capture`; all admitted.
fn send(layer: &RateLimitLayer, capture: &Capture, tier: Option<&str>, n: usize) {
    send_as(layer, capture, tier, None, n)
}

/// [`send`], with `user` as the `UserId` extension, if any.
fn send_as(
    layer: &RateLimitLayer,
    capture: &Capture,
    tier: Option<&str>,
    user: Option<&str>,
    n: usize,
) {
    let mut svc = service(layer);
    tracing::subscriber::with_default(capture.clone(), || {
        for _ in 0..n {
            let mut r = Request::new(());
            r.extensions_mut()
                .insert(PeerAddr("192.0.2.7:1234".parse::<SocketAddr>().unwrap()));
            if let Some(t) = tier {
                r.extensions_mut().insert(Tier::new(t));
            }
            if let Some(u) = user {
                r.extensions_mut().insert(UserId::new(u));
            }
            assert_eq!(ready_at_once(svc.call(r)).unwrap().status(), StatusCode::OK);
        }
    });
}

#[test]
fn an_unknown_tier_name_is_warned_about_once_per_name() {
    let _serial = serial();
    let capture = Capture::default();
    let layer = tiered();
    send(&layer, &capture, Some("pro"), 3);
    send(&layer, &capture, Some("Pro"), 5);
    send(&layer, &capture, Some("gold"), 5);
    let unknown = capture.warnings("unknown tier");
    assert_eq!(unknown.len(), 2, "{unknown:#?}");
    assert!(
        unknown[0].contains(r#"did you mean "pro"?"#),
        "{unknown:#?}"
    );
    assert!(unknown[1].contains("\"gold\"") && unknown[1].contains("Add it to the Tiers table"));
}

#[test]
fn unknown_tier_names_reported_are_bounded() {
    let _serial = serial();
    let capture = Capture::default();
    let layer = tiered();
    for i in 0..100 {
        send(&layer, &capture, Some(&format!("tier-{i}")), 2);
    }
    assert_eq!(capture.warnings("unknown tier").len(), 32);
}

#[test]
fn tiers_without_any_tier_extension_warn_once_naming_the_layer_order() {
    let _serial = serial();
    let capture = Capture::default();
    let layer = tiered();
    send(&layer, &capture, None, 999);
    assert!(capture.warnings("Tier extension").is_empty());
    send(&layer, &capture, None, 1_500);
    let w = capture.warnings("Tier extension");
    assert_eq!(w.len(), 1, "{w:#?}");
    assert!(
        w[0].contains(".layer(auth) after .layer(rate_limit)"),
        "{w:#?}"
    );
}

#[test]
fn one_request_with_a_tier_settles_the_layer_order() {
    let _serial = serial();
    let capture = Capture::default();
    let layer = tiered();
    send(&layer, &capture, Some("pro"), 1);
    send(&layer, &capture, None, 2_000);
    assert!(capture.warnings("Tier extension").is_empty());
    // Without named tiers there is nothing to pick: never warned.
    let plain = RateLimitLayer::builder()
        .policies(hourly(1_000_000))
        .build()
        .unwrap();
    send(&plain, &capture, None, 1_500);
    assert!(capture.warnings("Tier extension").is_empty());
}

#[test]
fn a_user_key_whose_extension_never_shows_warns_once_naming_the_layer_order() {
    let _serial = serial();
    let capture = Capture::default();
    let by_user = || {
        RateLimitLayer::builder()
            .policies(hourly(1_000_000))
            .key(User::<UserId>::new().or(ClientIp::peer()))
            .build()
            .unwrap()
    };
    let layer = by_user();
    send(&layer, &capture, None, 2_500);
    let w = capture.warnings("authenticated-user extension");
    assert_eq!(w.len(), 1, "{w:#?}");
    assert!(
        w[0].contains(".layer(auth) after .layer(rate_limit)"),
        "{w:#?}"
    );

    // One authenticated request settles it.
    let capture = Capture::default();
    let layer = by_user();
    send_as(&layer, &capture, None, Some("alice"), 1);
    send(&layer, &capture, None, 1_500);
    assert!(capture.warnings("authenticated-user extension").is_empty());
}
