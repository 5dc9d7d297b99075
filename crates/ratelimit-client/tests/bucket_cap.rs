//! The client at its bucket cap, over real HTTP on loopback: when every tracked counter is within its
//! window and a route's upstream bucket changes (or a new route appears), the new bucket is tracked at the
//! cost of the least recently used counter, so the route's requests flow at the upstream's rate instead of
//! spending a stale counter until its reset; the eviction of a counter still in its window is logged once.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use common::upstream::{Reply, Upstream};
use http_body_util::Full;
use parking_lot::Mutex;
use ratelimit_client::profile::Discord;
use ratelimit_client::reqwest::ReqwestService;
use ratelimit_client::{Limiter, MaxWait, RateLimit, RateLimitLayer};
use tower::Layer;

/// A fixed-window bucket as the upstream keeps it (windows long enough never to reset during the test).
struct Bucket {
    hash: &'static str,
    limit: u64,
    used: u64,
}

impl Bucket {
    fn new(hash: &'static str, limit: u64) -> Bucket {
        Bucket {
            hash,
            limit,
            used: 0,
        }
    }

    fn answer(&mut self, delay: Duration) -> Reply {
        if self.used >= self.limit {
            return Reply::ok()
                .status(429)
                .header("via", "1.1 google")
                .header("x-ratelimit-scope", "user")
                .header("x-ratelimit-limit", self.limit.to_string())
                .header("x-ratelimit-remaining", "0")
                .header("x-ratelimit-reset-after", "600.000")
                .header("x-ratelimit-bucket", self.hash)
                .body(r#"{"message":"You are being rate limited.","retry_after":600.0,"global":false}"#);
        }
        self.used += 1;
        Reply::ok()
            .header("x-ratelimit-limit", self.limit.to_string())
            .header(
                "x-ratelimit-remaining",
                (self.limit - self.used).to_string(),
            )
            .header("x-ratelimit-reset-after", "600.000")
            .header("x-ratelimit-bucket", self.hash)
            .delay(delay)
    }
}

/// The upstream: channels 1–3 fill the cap, channel 9 changes its bucket when `switched`, channel 5 is new.
struct Api {
    fill: Vec<Bucket>,
    before: Bucket,
    after: Bucket,
    new: Bucket,
}

fn channel(path: &str) -> u64 {
    path.split('/')
        .nth(4)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

type Client = RateLimit<ReqwestService, Discord>;

fn post(
    client: &Client,
    up: &Upstream,
    channel: u64,
) -> impl std::future::Future<Output = Result<u16, String>> {
    let mut req = http::Request::post(up.url(&format!("/api/v10/channels/{channel}/messages")))
        .body(Full::new(Bytes::from_static(b"{}")))
        .unwrap();
    // Far shorter than the upstream's windows: a request that waits for a stale counter fails fast.
    req.extensions_mut().insert(MaxWait(Duration::from_secs(5)));
    let client = client.clone();
    async move {
        client
            .oneshot(req)
            .await
            .map(|r| r.status().as_u16())
            .map_err(|e| e.to_string())
    }
}

/// Counts `warn` events about the bucket cap.
#[derive(Clone, Default)]
struct CapWarnings(Arc<AtomicUsize>);

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for CapWarnings {
    fn on_event(&self, event: &tracing::Event<'_>, _: tracing_subscriber::layer::Context<'_, S>) {
        struct Message(bool);
        impl tracing::field::Visit for Message {
            fn record_debug(&mut self, f: &tracing::field::Field, v: &dyn std::fmt::Debug) {
                if f.name() == "message" {
                    self.0 |= format!("{v:?}").contains("bucket cap");
                }
            }
        }
        let mut m = Message(false);
        event.record(&mut m);
        if m.0 && *event.metadata().level() == tracing::Level::WARN {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }
}

#[tokio::test(flavor = "current_thread")]
async fn at_the_bucket_cap_new_buckets_flow_at_the_upstream_rate() {
    use tracing_subscriber::layer::SubscriberExt;
    let warnings = CapWarnings::default();
    let _log =
        tracing::subscriber::set_default(tracing_subscriber::registry().with(warnings.clone()));

    let api = Arc::new(Mutex::new(Api {
        fill: (0..3).map(|_| Bucket::new("fill", 5)).collect(),
        before: Bucket::new("before", 10),
        after: Bucket::new("after", 100),
        new: Bucket::new("new", 10),
    }));
    let switched = Arc::new(AtomicBool::new(false));
    let (a, s) = (api.clone(), switched.clone());
    let up = Upstream::start(move |_, path| {
        let mut api = a.lock();
        match channel(path) {
            c @ 1..=3 => api.fill[c as usize - 1].answer(Duration::ZERO),
            9 if s.load(Ordering::SeqCst) => api.after.answer(Duration::ZERO),
            9 => api.before.answer(Duration::ZERO),
            // Held a while, so that the upstream sees how many the client sends at once.
            5 => api.new.answer(Duration::from_millis(100)),
            _ => Reply::ok().status(404),
        }
    })
    .await;
    let limiter = Limiter::builder(Discord::new())
        .global_limit(None)
        .max_buckets(4, 100)
        .build()
        .unwrap();
    let client =
        RateLimitLayer::new(limiter.clone()).layer(ReqwestService::new(reqwest::Client::new()));

    // Four counters, each spent within a ten-minute window: the cap is reached and none is idle.
    for c in [1, 2, 3, 9] {
        assert_eq!(post(&client, &up, c).await, Ok(200));
    }
    assert_eq!(limiter.snapshot().buckets.len(), 4);

    // Channel 9's upstream bucket changes to a fresh one with room for all of these; the next response
    // says so.
    switched.store(true, Ordering::SeqCst);
    assert_eq!(post(&client, &up, 9).await, Ok(200));
    let burst: Vec<_> = (0..20)
        .map(|_| tokio::spawn(post(&client, &up, 9)))
        .collect();
    let mut outcomes = Vec::new();
    for t in burst {
        outcomes.push(t.await.unwrap());
    }
    let failed: Vec<_> = outcomes.iter().filter(|o| *o != &Ok(200)).collect();
    assert!(
        failed.is_empty(),
        "{} of 20 requests failed after the bucket changed at the cap: {:?}",
        failed.len(),
        failed.first()
    );

    // A new route at the cap: after its probe, the other nine of its bucket's ten go out together.
    let burst: Vec<_> = (0..10)
        .map(|_| tokio::spawn(post(&client, &up, 5)))
        .collect();
    for t in burst {
        assert_eq!(t.await.unwrap(), Ok(200));
    }
    let together = up.seen.max_in_flight.load(Ordering::SeqCst);
    eprintln!("new route at the cap: at most {together} requests in flight at once");
    assert!(together >= 5, "the new route ran {together} at a time");
    assert!(limiter.snapshot().buckets.len() <= 4);

    // The eviction of counters still within their window was logged once, not per response.
    let logged = warnings.0.load(Ordering::SeqCst);
    assert_eq!(logged, 1, "{logged} warnings about the bucket cap");
}
