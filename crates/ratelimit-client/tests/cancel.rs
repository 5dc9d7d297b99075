//! Cancel safety of a request through the layer, as a tested property: the request future is dropped after
//! its k-th poll for k = 1, 2, … (waiting in its route's queue, behind another request or at its head,
//! waiting for a global slot or a bucket reset, in flight over real HTTP, reading a 429 body, sleeping
//! before a retry), and after each drop nothing is left in the scheduler and the next request goes through.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use common::upstream::{Reply, Upstream};
use http_body_util::Full;
use parking_lot::Mutex;
use ratelimit_client::profile::Discord;
use ratelimit_client::reqwest::ReqwestService;
use ratelimit_client::{Limiter, MaxWait, RateLimit, RateLimitLayer};
use ratelimit_test_support::cancel::at_every_poll;
use tower::Layer;

type Client = RateLimit<ReqwestService, Discord>;

/// A bucket of two per 20 ms, as the upstream reports it.
fn bucket(reply: Reply, remaining: u32) -> Reply {
    reply
        .header("x-ratelimit-limit", "2")
        .header("x-ratelimit-remaining", remaining.to_string())
        .header("x-ratelimit-reset-after", "0.020")
        .header("x-ratelimit-bucket", "cancel")
}

/// Each call (`?call=N`) gets a 503 first (a backoff sleep follows), then a shared 429 with a JSON body
/// (read, then the bucket is blocked for 5 ms), then a 200 that empties the bucket. `?call=ok` gets a 200.
fn script(attempts: &Mutex<HashMap<String, usize>>, query: &str) -> Reply {
    let call = query.split("call=").nth(1).unwrap_or("ok").to_owned();
    if call == "ok" {
        return bucket(Reply::ok(), 0);
    }
    let n = {
        let mut a = attempts.lock();
        let n = a.entry(call).or_insert(0);
        *n += 1;
        *n
    };
    match n {
        1 => Reply::ok().status(503),
        2 => bucket(Reply::ok().status(429), 1)
            .header("via", "1.1 google")
            .header("x-ratelimit-scope", "shared")
            .header("content-type", "application/json")
            .body(r#"{"message":"The resource is being rate limited.","retry_after":0.005,"global":false}"#),
        _ => bucket(Reply::ok(), 0),
    }
}

fn request(up: &Upstream, channel: u32, call: &str) -> http::Request<Full<Bytes>> {
    let mut req =
        http::Request::post(up.url(&format!("/api/v10/channels/{channel}/messages?call={call}")))
            .header("authorization", "Bot cancel")
            .body(Full::new(Bytes::from_static(b"{\"content\":\"x\"}")))
            .unwrap();
    req.extensions_mut().insert(MaxWait(Duration::from_secs(2)));
    req
}

async fn send(client: &Client, req: http::Request<Full<Bytes>>) -> Result<u16, String> {
    client
        .clone()
        .oneshot(req)
        .await
        .map(|r| r.status().as_u16())
        .map_err(|e| e.to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_a_request_at_any_poll_leaves_nothing_behind() {
    let attempts = Arc::new(Mutex::new(HashMap::new()));
    let a = attempts.clone();
    let up = Arc::new(Upstream::start(move |_, path| script(&a, path)).await);
    let limiter = Limiter::builder(Discord::new())
        // Two per 50 ms: the third attempt of a call waits for a global slot.
        .global_limit(Some(2))
        .global_window(Duration::from_millis(50), Duration::ZERO)
        .backoff(Duration::from_millis(2), Duration::from_millis(4))
        .build()
        .unwrap();
    let client =
        RateLimitLayer::new(limiter.clone()).layer(ReqwestService::new(reqwest::Client::new()));
    // The routes are known (one counter each) before the property runs.
    for channel in [1, 2] {
        assert_eq!(send(&client, request(&up, channel, "ok")).await, Ok(200));
    }

    let calls = AtomicUsize::new(0);
    let points = at_every_poll(
        || {
            // Two calls on one route (one heads its queue, the other waits behind it; the head reserves
            // global slots while its bucket resets), and one on another route, held back by that reservation.
            let n = calls.fetch_add(3, Ordering::SeqCst);
            let first = request(&up, 1, &n.to_string());
            let second = request(&up, 1, &(n + 1).to_string());
            let other = request(&up, 2, &(n + 2).to_string());
            let client = client.clone();
            async move {
                tokio::join!(
                    send(&client, first),
                    send(&client, second),
                    send(&client, other)
                )
            }
        },
        |k, out| {
            let (limiter, client, up) = (limiter.clone(), client.clone(), up.clone());
            async move {
                if let Some(outcomes) = out {
                    assert_eq!(outcomes, (Ok(200), Ok(200), Ok(200)), "undisturbed run");
                }
                let held = limiter.occupancy();
                assert!(held.is_idle(), "dropped after poll {k}: {held:?}");
                for channel in [1, 2] {
                    assert_eq!(
                        send(&client, request(&up, channel, "ok")).await,
                        Ok(200),
                        "the request after a drop at poll {k}"
                    );
                }
                assert!(limiter.occupancy().is_idle());
            }
        },
    )
    .await;
    eprintln!("{points} cancellation points exercised");
    // At least: the queue wait of each call, their three round trips, the 429 body, the backoff sleep, the
    // blocked bucket and the global slot.
    assert!(points >= 10, "only {points} cancellation points");
    let snap = limiter.snapshot();
    assert!(snap.buckets.iter().all(|b| b.in_flight == 0), "{snap:?}");
    assert!(snap.routes.iter().all(|r| r.queued == 0), "{snap:?}");
}
