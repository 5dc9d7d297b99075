//! Added latency per request of `ratelimit-proxy`: a bot calling the simulator directly, through the
//! in-memory client layer in process, and through the proxy, all on loopback against `discord-sim` with no
//! simulated latency and limits far above the load (nothing waits for the rate limit: what is measured is
//! the cost of the hops and the bookkeeping).
//!
//! Each of the client layer and the proxy is measured twice: limiting alone (in memory), and sharing its
//! budget through a local `redis-server` (`SharedBudget`: one reservation round trip before each request,
//! the response reconciled in the background).
//!
//! `cargo bench -p ratelimit-proxy --bench proxy_latency` prints p50/p99/mean per row, sequential (one
//! request at a time) and with 16 in flight. It needs `redis-server` on the `PATH`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use bytes::Bytes;
use discord_sim::{
    Limit, RouteConfig, RunningSim, SimConfig, Simulator, DEFAULT_TOKEN, HASH_MESSAGES,
};
use http::{Method, Request};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use ratelimit_client::profile::Discord;
use ratelimit_client::shared::SharedBudget;
use ratelimit_client::{Limiter, RateLimitLayer};
use ratelimit_proxy::{Proxy, ProxyConfig, RunningProxy, Upstream};
use ratelimit_test_support::redis_server::RedisServer;
use tower::Layer;
use tower_service::Service;

const WARM_UP: usize = 300;
const SAMPLES: usize = 5_000;
const IN_FLIGHT: usize = 16;

type Plain = Client<HttpConnector, Full<Bytes>>;

fn request(base: &str, i: usize) -> Request<Full<Bytes>> {
    Request::builder()
        .method(Method::POST)
        .uri(format!("{base}/channels/{}/messages", 100 + i % 8))
        .header("authorization", format!("Bot {DEFAULT_TOKEN}"))
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from_static(b"{\"content\":\"hi\"}")))
        .unwrap()
}

/// One way of sending a request and reading its whole response.
#[derive(Clone)]
enum Way {
    Plain(Plain, String),
    Layer(ratelimit_client::RateLimit<Plain, Discord>, String),
}

impl Way {
    async fn call(&self, i: usize) {
        match self {
            Way::Plain(c, base) => {
                let res = c.request(request(base, i)).await.unwrap();
                assert!(res.status().is_success(), "{}", res.status());
                res.into_body().collect().await.unwrap();
            }
            Way::Layer(svc, base) => {
                // The layer is always ready: call it directly.
                let res = Service::call(&mut svc.clone(), request(base, i))
                    .await
                    .unwrap();
                assert!(res.status().is_success(), "{}", res.status());
                res.into_body().collect().await.unwrap();
            }
        }
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

async fn measure(name: &str, way: &Way, in_flight: usize) -> (Duration, Duration) {
    for i in 0..WARM_UP {
        way.call(i).await;
    }
    let per_task = SAMPLES / in_flight;
    let tasks: Vec<_> = (0..in_flight)
        .map(|t| {
            let way = way.clone();
            tokio::spawn(async move {
                let mut lat = Vec::with_capacity(per_task);
                for i in 0..per_task {
                    let start = Instant::now();
                    way.call(t * per_task + i).await;
                    lat.push(start.elapsed());
                }
                lat
            })
        })
        .collect();
    let wall = Instant::now();
    let mut all = Vec::with_capacity(SAMPLES);
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    let wall = wall.elapsed();
    all.sort_unstable();
    let mean = all.iter().sum::<Duration>() / all.len() as u32;
    let (p50, p99) = (percentile(&all, 0.50), percentile(&all, 0.99));
    // On a loaded machine a thread woken late waits out a scheduler slice (milliseconds): the share of
    // such samples tells a busy machine from a slow path.
    let over_1ms = all.partition_point(|d| *d <= Duration::from_millis(1));
    println!(
        "{name:<28} in_flight {in_flight:>2}: p50 {:>7.1} µs  p99 {:>7.1} µs  mean {:>7.1} µs  {:>7.0} req/s  >1 ms: {:.2} %",
        p50.as_secs_f64() * 1e6,
        p99.as_secs_f64() * 1e6,
        mean.as_secs_f64() * 1e6,
        all.len() as f64 / wall.as_secs_f64(),
        (all.len() - over_1ms) as f64 * 100.0 / all.len() as f64
    );
    (p50, p99)
}

/// A budget on `redis`, under its own namespace.
async fn budget(redis: &RedisServer, namespace: &str) -> SharedBudget {
    SharedBudget::builder()
        .namespace(namespace)
        .connect(&redis.url())
        .await
        .unwrap()
}

/// A proxy in front of the simulator, with no global limit, sharing `shared` if given.
async fn proxy(sim: &RunningSim, shared: Option<SharedBudget>) -> RunningProxy {
    let config = ProxyConfig::new(
        "127.0.0.1:0".parse().unwrap(),
        Upstream::parse(&format!("http://{}/api", sim.addr())).unwrap(),
    );
    let mut limiter = Proxy::limiter_builder(&config).global_limit(None);
    if let Some(b) = &shared {
        limiter = limiter.shared(b.clone());
    }
    let mut proxy = Proxy::with_limiter(config, limiter.build().unwrap()).unwrap();
    if let Some(b) = shared {
        proxy = proxy.shared_budget(b);
    }
    proxy.start().await.unwrap()
}

fn layer(plain: &Plain, sim: &RunningSim, shared: Option<SharedBudget>) -> Way {
    let mut limiter = Limiter::builder(Discord::new()).global_limit(None);
    if let Some(b) = shared {
        limiter = limiter.shared(b);
    }
    Way::Layer(
        RateLimitLayer::new(limiter.build().unwrap()).layer(plain.clone()),
        sim.base_url(),
    )
}

fn us(a: Duration, b: Duration) -> f64 {
    (a.as_secs_f64() - b.as_secs_f64()) * 1e6
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let sim = Simulator::start(SimConfig::empty().no_global().route(RouteConfig::new(
            Method::POST,
            "/channels/{channel_id}/messages",
            HASH_MESSAGES,
            Limit::fixed(1_000_000, Duration::from_secs(1)),
        )))
        .await
        .unwrap();
        let redis = RedisServer::start();
        let plain: Plain = Client::builder(TokioExecutor::new()).build_http();
        let direct = Way::Plain(plain.clone(), sim.base_url());
        let layered = layer(&plain, &sim, None);
        let layered_shared = layer(&plain, &sim, Some(budget(&redis, "layer").await));
        let alone = proxy(&sim, None).await;
        let shared = proxy(&sim, Some(budget(&redis, "proxy").await)).await;
        let proxied = Way::Plain(plain.clone(), format!("http://{}/api/v10", alone.addr()));
        let proxied_shared = Way::Plain(plain, format!("http://{}/api/v10", shared.addr()));
        for in_flight in [1, IN_FLIGHT] {
            let (d50, d99) = measure("direct to the simulator", &direct, in_flight).await;
            let (l50, l99) = measure("in-memory client layer", &layered, in_flight).await;
            let (s50, s99) = measure("Redis-shared client layer", &layered_shared, in_flight).await;
            let (p50, p99) = measure("through ratelimit-proxy", &proxied, in_flight).await;
            let (q50, q99) = measure("  the same, Redis-shared", &proxied_shared, in_flight).await;
            println!(
                "  added by the proxy: p50 {:+.1} µs / p99 {:+.1} µs vs direct; {:+.1} µs / {:+.1} µs vs the in-process layer",
                us(p50, d50),
                us(p99, d99),
                us(p50, l50),
                us(p99, l99)
            );
            println!(
                "  added by sharing through Redis: p50 {:+.1} µs / p99 {:+.1} µs to the proxy; {:+.1} µs / {:+.1} µs to the layer",
                us(q50, p50),
                us(q99, p99),
                us(s50, l50),
                us(s99, l99)
            );
        }
        // What the shared rows' script calls cost Redis itself (the rest of what sharing adds is the round
        // trip and the client's side): `usec_per_call` of EVALSHA.
        for line in redis.cli(&["INFO", "commandstats"]).lines() {
            if line.starts_with("cmdstat_eval") {
                println!("redis-server {line}");
            }
        }
        alone.shutdown().await;
        shared.shutdown().await;
    });
}
