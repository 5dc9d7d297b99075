//! Cancel safety of the layer's response future, as a tested property: a real layer over a real store
//! (in memory, and Redis with the `redis` feature), driven through `ServiceExt::oneshot` and dropped after
//! each of its polls in turn. After every drop the same client's next request gets the decision and
//! headers it should: as if the dropped request had never been sent, or — once it reached the service —
//! as if it had completed.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use ratelimit_core::{PolicySet, Store};
use ratelimit_test_support::cancel::at_every_poll;
use ratelimit_tower::key::{KeyError, KeyFn};
use ratelimit_tower::{RateLimit, RateLimitLayer};
use tower::{Layer, Service, ServiceExt};

use common::{per_hour, set, sf_list};

/// The client's own quota.
const CLIENT_QUOTA: u64 = 10;
/// Awaits inside the inner service: each is a cancellation point of the response future.
const INNER_AWAITS: usize = 3;

/// The inner service: counts its calls, then awaits [`INNER_AWAITS`] times before answering.
#[derive(Clone)]
struct Inner {
    calls: Arc<AtomicU64>,
}

impl Service<Request<()>> for Inner {
    type Response = Response<Full<Bytes>>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _req: Request<()>) -> Self::Future {
        self.calls.fetch_add(1, Ordering::SeqCst);
        Box::pin(async {
            for _ in 0..INNER_AWAITS {
                tokio::task::yield_now().await;
            }
            Ok(Response::new(Full::new(Bytes::from_static(b"hi"))))
        })
    }
}

/// The layer over `store`, keyed by the `x-client` header, with a global cap of `global` per hour, over
/// a service that awaits [`INNER_AWAITS`] times and counts its calls in `calls`.
fn service<S: Store<[u8], PolicySet> + 'static>(
    store: S,
    global: u64,
    calls: Arc<AtomicU64>,
) -> RateLimit<Inner, S> {
    let layer = RateLimitLayer::with_store(store)
        .key(KeyFn::new(|req, key| {
            let c = req
                .headers()
                .get("x-client")
                .ok_or(KeyError::Missing("x-client header"))?;
            key.push(ratelimit_tower::key::tag::custom(0), c.as_bytes());
            Ok(())
        }))
        .policies(set([per_hour("client", CLIENT_QUOTA)]))
        .global_cap(set([per_hour("all", global)]))
        .build()
        .unwrap();
    let inner = Inner { calls };
    layer.layer(inner)
}

fn request(client: &str) -> Request<()> {
    Request::builder()
        .header("x-client", client)
        .body(())
        .unwrap()
}

/// Lets a refund sent in the background by a dropped request's guard (a Redis round trip) go out
/// before the client's next request.
async fn settle() {
    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
}

/// `r=` of the item `name` in the response's `RateLimit` field.
fn remaining<B>(res: &Response<B>, name: &str) -> u64 {
    sf_list(res.headers(), "ratelimit")
        .into_iter()
        .find(|i| i.name == name)
        .and_then(|i| i.int("r"))
        .unwrap_or_else(|| panic!("no {name} item in {:?}", res.headers())) as u64
}

/// The global cap admits: a request dropped before it reached the service leaves its client and the cap
/// as they were; one dropped after counts once, as a completed one would. Returns the cancellation
/// points exercised.
async fn admitted_requests_dropped_at_every_poll<S: Store<[u8], PolicySet> + 'static>(
    store: S,
) -> usize {
    const GLOBAL: u64 = 1_000;
    let calls = Arc::new(AtomicU64::new(0));
    let svc = service(store, GLOBAL, calls.clone());
    let (round, calls_before) = (AtomicU64::new(0), AtomicU64::new(0));
    at_every_poll(
        || {
            let k = round.fetch_add(1, Ordering::SeqCst) + 1;
            calls_before.store(calls.load(Ordering::SeqCst), Ordering::SeqCst);
            svc.clone().oneshot(request(&format!("client-{k}")))
        },
        |k, out| {
            let (svc, calls) = (svc.clone(), calls.clone());
            let before = calls_before.load(Ordering::SeqCst);
            async move {
                if let Some(res) = out {
                    assert_eq!(res.unwrap().status(), StatusCode::OK);
                }
                let reached = calls.load(Ordering::SeqCst) - before;
                settle().await;
                let res = svc.oneshot(request(&format!("client-{k}"))).await.unwrap();
                assert_eq!(res.status(), StatusCode::OK, "after a drop at poll {k}");
                assert_eq!(
                    remaining(&res, "client"),
                    CLIENT_QUOTA - reached - 1,
                    "after a drop at poll {k}: the client is charged for what reached the service"
                );
                assert_eq!(
                    remaining(&res, "all"),
                    GLOBAL - calls.load(Ordering::SeqCst),
                    "after a drop at poll {k}: the cap counts exactly what reached the service"
                );
            }
        },
    )
    .await
}

/// The global cap is spent: each request is charged to its client, refused by the cap, and refunded.
/// Dropped at any poll of that, it leaves the client with its whole quota: the next request is a 429
/// from the cap that reports the client's quota untouched.
async fn refused_requests_dropped_at_every_poll<S: Store<[u8], PolicySet> + 'static>(
    store: S,
) -> usize {
    const GLOBAL: u64 = 1;
    let calls = Arc::new(AtomicU64::new(0));
    let svc = service(store, GLOBAL, calls.clone());
    let first = svc
        .clone()
        .oneshot(request("spends-the-cap"))
        .await
        .unwrap();
    assert_eq!(first.status(), StatusCode::OK);
    let round = AtomicU64::new(0);
    let points = at_every_poll(
        || {
            let k = round.fetch_add(1, Ordering::SeqCst) + 1;
            svc.clone().oneshot(request(&format!("client-{k}")))
        },
        |k, out| {
            let svc = svc.clone();
            async move {
                if let Some(res) = out {
                    assert_eq!(res.unwrap().status(), StatusCode::TOO_MANY_REQUESTS);
                }
                settle().await;
                let res = svc.oneshot(request(&format!("client-{k}"))).await.unwrap();
                assert_eq!(res.status(), StatusCode::TOO_MANY_REQUESTS);
                assert_eq!(
                    remaining(&res, "client"),
                    CLIENT_QUOTA,
                    "after a drop at poll {k}: the client's reservation was given back"
                );
            }
        },
    )
    .await;
    assert_eq!(
        calls.load(Ordering::SeqCst),
        1,
        "only the first request reached the service"
    );
    points
}

#[tokio::test]
async fn in_memory_every_drop_leaves_the_next_request_decided_as_if_none_was_dropped() {
    let store = ratelimit_tower::DefaultStore::new();
    let points = admitted_requests_dropped_at_every_poll(store).await;
    println!("in memory, admitted: {points} cancellation points");
    // The in-memory store decides inside `call`: every await is the inner service's.
    assert!(points >= INNER_AWAITS, "{points} cancellation points");

    let points = refused_requests_dropped_at_every_poll(ratelimit_tower::DefaultStore::new()).await;
    println!("in memory, refused by the cap: {points} cancellation points");
}

#[cfg(feature = "redis")]
mod redis {
    use std::time::Duration;

    use ratelimit_core::RedisStore;
    use ratelimit_test_support::redis_server::RedisServer;

    use super::*;

    async fn store(server: &RedisServer) -> RedisStore {
        RedisStore::builder()
            .timeout(Duration::from_secs(5))
            .connect(&server.url())
            .await
            .unwrap()
    }

    #[tokio::test]
    async fn over_redis_every_drop_leaves_the_next_request_decided_as_if_none_was_dropped() {
        let server = RedisServer::start();
        let points = admitted_requests_dropped_at_every_poll(store(&server).await).await;
        println!("over Redis, admitted: {points} cancellation points");
        // The client's check, the cap's check, then the service's awaits.
        assert!(points >= 2 + INNER_AWAITS, "{points} cancellation points");
    }

    #[tokio::test]
    async fn over_redis_a_dropped_reservation_is_given_back() {
        let server = RedisServer::start();
        let points = refused_requests_dropped_at_every_poll(store(&server).await).await;
        println!("over Redis, refused by the cap: {points} cancellation points");
        // The client's check, the cap's check, the refund.
        assert!(points >= 3, "{points} cancellation points");
    }
}
