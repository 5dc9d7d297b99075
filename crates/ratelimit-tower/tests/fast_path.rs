//! The synchronous fast path is part of the `Store` contract (`Store::check_now`), not a guess at the
//! store's concrete type: the in-memory store with any clock, and a wrapper that delegates `check_now`,
//! decide inside `call` — no boxed check, so the inner service is never cloned into one — and only a
//! store that cannot answer on the spot takes the awaited path.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use ratelimit_core::{Clock, Decision, ManualClock, Micros, StoreError};
use ratelimit_test_support::poll::ready_at_once;
use ratelimit_tower::key::PeerAddr;
use ratelimit_tower::{MemoryStore, PolicySet, RateLimitLayer, Store};
use tower::{Layer, Service};

use common::{per_hour, set, sf_list};

const CLIENT_QUOTA: u64 = 10;
const CAP_QUOTA: u64 = 1_000;
const REQUESTS: usize = 5;

/// The inner service: counts its clones (the awaited path moves a clone of it into the boxed check).
struct Inner {
    clones: Arc<AtomicUsize>,
}

impl Clone for Inner {
    fn clone(&self) -> Self {
        self.clones.fetch_add(1, Ordering::SeqCst);
        Inner {
            clones: self.clones.clone(),
        }
    }
}

impl Service<Request<()>> for Inner {
    type Response = Response<Full<Bytes>>;
    type Error = Infallible;
    type Future = std::future::Ready<Result<Self::Response, Infallible>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _req: Request<()>) -> Self::Future {
        std::future::ready(Ok(Response::new(Full::new(Bytes::from_static(b"hi")))))
    }
}

/// A clock of its own: the layer cannot know this type.
struct Frozen;

impl Clock for Frozen {
    fn now(&self) -> Micros {
        1_000_000
    }
}

/// The in-memory store behind a wrapper that counts the checks it was awaited for; it delegates
/// `check_now` only when told to, and then, when `cap_awaited`, only for the client's policies.
struct Wrapper {
    inner: MemoryStore<Vec<u8>, PolicySet>,
    awaited: Arc<AtomicUsize>,
    delegate_now: bool,
    cap_awaited: bool,
}

impl Wrapper {
    fn new(delegate_now: bool, cap_awaited: bool) -> (Self, Arc<AtomicUsize>) {
        let awaited = Arc::new(AtomicUsize::new(0));
        let store = Wrapper {
            inner: MemoryStore::new(),
            awaited: awaited.clone(),
            delegate_now,
            cap_awaited,
        };
        (store, awaited)
    }
}

fn is_cap(set: &PolicySet) -> bool {
    set.policy(0).name() == "cap"
}

impl Store<[u8], PolicySet> for Wrapper {
    async fn check(&self, r: &PolicySet, k: &[u8], c: u64) -> Result<Decision, StoreError> {
        self.awaited.fetch_add(1, Ordering::SeqCst);
        self.inner.check(r, k, c)
    }
    fn check_now(&self, r: &PolicySet, k: &[u8], c: u64) -> Option<Result<Decision, StoreError>> {
        if !self.delegate_now || (self.cap_awaited && is_cap(r)) {
            return None;
        }
        Store::check_now(&self.inner, r, k, c)
    }
    async fn peek(&self, r: &PolicySet, k: &[u8], c: u64) -> Result<Decision, StoreError> {
        Ok(self.inner.peek(r, k, c))
    }
    async fn refund(&self, r: &PolicySet, k: &[u8], c: u64) -> Result<(), StoreError> {
        self.inner.refund(r, k, c);
        Ok(())
    }
    async fn reset(&self, _: &PolicySet, k: &[u8]) -> Result<(), StoreError> {
        self.inner.reset(k);
        Ok(())
    }
}

fn request() -> Request<()> {
    let mut r = Request::new(());
    r.extensions_mut()
        .insert(PeerAddr("192.0.2.9:1000".parse::<SocketAddr>().unwrap()));
    r
}

/// `r=` of the item `name` in the response's `RateLimit` field.
fn remaining<B>(res: &Response<B>, name: &str) -> i64 {
    sf_list(res.headers(), "ratelimit")
        .into_iter()
        .find(|i| i.name == name)
        .and_then(|i| i.int("r"))
        .unwrap_or_else(|| panic!("no {name} item in {:?}", res.headers()))
}

/// Sends [`REQUESTS`] requests through a layer over `store` (with a global cap, so both checks run)
/// and returns how many times the inner service was cloned into a boxed check.
fn clones_over<S: Store<[u8], PolicySet> + 'static>(store: S) -> usize {
    let layer = RateLimitLayer::with_store(store)
        .policies(set([per_hour("client", CLIENT_QUOTA)]))
        .global_cap(set([per_hour("cap", CAP_QUOTA)]))
        .build()
        .unwrap();
    let clones = Arc::new(AtomicUsize::new(0));
    let mut svc = layer.layer(Inner {
        clones: clones.clone(),
    });
    for i in 1..=REQUESTS {
        let res = ready_at_once(svc.call(request())).unwrap();
        assert_eq!(res.status(), StatusCode::OK);
        assert_eq!(
            remaining(&res, "client"),
            (CLIENT_QUOTA as usize - i) as i64
        );
        assert_eq!(remaining(&res, "cap"), (CAP_QUOTA as usize - i) as i64);
    }
    clones.load(Ordering::SeqCst)
}

#[test]
fn the_memory_store_decides_on_the_spot_whatever_its_clock() {
    let frozen = MemoryStore::<Vec<u8>, PolicySet>::builder()
        .clock(Frozen)
        .build();
    assert_eq!(clones_over(frozen), 0, "a custom clock lost the fast path");
    let manual = MemoryStore::<Vec<u8>, PolicySet>::builder()
        .clock(ManualClock::default())
        .build();
    assert_eq!(clones_over(manual), 0);
    assert_eq!(clones_over(MemoryStore::<Vec<u8>, PolicySet>::new()), 0);
}

#[test]
fn a_wrapper_that_delegates_check_now_keeps_the_fast_path() {
    let (store, awaited) = Wrapper::new(true, false);
    assert_eq!(clones_over(store), 0, "the wrapper lost the fast path");
    assert_eq!(awaited.load(Ordering::SeqCst), 0);

    // The same wrapper without `check_now`: every request awaits both checks in a boxed future.
    let (store, awaited) = Wrapper::new(false, false);
    assert_eq!(clones_over(store), REQUESTS);
    assert_eq!(awaited.load(Ordering::SeqCst), 2 * REQUESTS);
}

/// A store that answers the client's check on the spot but not the cap's: the client is charged once
/// (never checked again on the awaited path), and a response future dropped before its first poll
/// gives that charge back.
#[test]
fn a_charge_made_on_the_spot_is_kept_once_or_given_back() {
    let (store, awaited) = Wrapper::new(true, true);
    assert_eq!(clones_over(store), REQUESTS);
    assert_eq!(
        awaited.load(Ordering::SeqCst),
        REQUESTS,
        "only the cap is awaited"
    );

    let (store, _) = Wrapper::new(true, true);
    let layer = RateLimitLayer::with_store(store)
        .policies(set([per_hour("client", CLIENT_QUOTA)]))
        .global_cap(set([per_hour("cap", CAP_QUOTA)]))
        .build()
        .unwrap();
    let mut svc = layer.layer(Inner {
        clones: Arc::default(),
    });
    for _ in 0..3 {
        drop(svc.call(request()));
    }
    let res = ready_at_once(svc.call(request())).unwrap();
    assert_eq!(
        remaining(&res, "client"),
        CLIENT_QUOTA as i64 - 1,
        "dropped requests kept their charge"
    );
    assert_eq!(remaining(&res, "cap"), CAP_QUOTA as i64 - 1);
}
