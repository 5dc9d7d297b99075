//! Throughput of 1, 2 and 4 `ratelimit-proxy` replicas (real processes, the built binary) on one token,
//! against `discord-sim` where the token's global limit is the only limit that binds: how close the
//! replicas together come to the most the upstream allows, sharing their budget through a local
//! `redis-server`, and (for comparison) what replicas limiting alone do to the upstream.
//!
//! The simulator: one route, `POST /channels/{channel_id}/messages`, over 50 channels with per-channel
//! limits far above the load; a global limit of 50 per 200 ms (Discord's 50 per second, time scaled by
//! 1/5: 250 requests/s); latency 5–15 ms. A bot with no limiter of its own fires 1000 requests at once,
//! dealt round-robin to the replicas.
//!
//! A request holds its global slot from its reservation until one window after its response (the
//! upstream counts it at an unknown moment in between), so a limiter that never takes a global 429 sends
//! `limit` requests per `window + latency`: 1000 requests take at least 19 such cycles and one latency,
//! about 4.0 s, printed as the shortest run.
//!
//! `cargo bench -p ratelimit-proxy --bench proxy_replicas` (needs `redis-server` on the `PATH`).
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../tests/common/replica.rs"]
mod replica;

use std::time::{Duration, Instant};

use bytes::Bytes;
use discord_sim::{
    Latency, Limit, RouteConfig, SimConfig, Simulator, DEFAULT_TOKEN, HASH_MESSAGES,
};
use http::{Method, Request};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use ratelimit_test_support::redis_server::RedisServer;
use replica::{global_flags, shared_flags, Replica};

const GLOBAL_LIMIT: u32 = 50;
const GLOBAL_WINDOW: Duration = Duration::from_millis(200);
const MEAN_LATENCY: Duration = Duration::from_millis(10);
const REQUESTS: usize = 1000;
const CHANNELS: usize = 50;

fn simulator() -> SimConfig {
    SimConfig::empty()
        .route(RouteConfig::new(
            Method::POST,
            "/channels/{channel_id}/messages",
            HASH_MESSAGES,
            Limit::fixed(1_000_000, Duration::from_secs(1)),
        ))
        .global(GLOBAL_LIMIT, GLOBAL_WINDOW)
        .latency(Latency::Range(
            Duration::from_millis(5),
            Duration::from_millis(15),
        ))
        .seed(5)
}

fn per_second(n: f64, d: Duration) -> f64 {
    n / d.as_secs_f64()
}

/// Fires every request at once through `replicas`; returns the time until the last answer and the
/// statuses that were not 2xx.
async fn fire(replicas: &[Replica]) -> (Duration, usize) {
    let bot: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let start = Instant::now();
    let tasks: Vec<_> = (0..REQUESTS)
        .map(|i| {
            let url = format!(
                "{}/channels/{}/messages",
                replicas[i % replicas.len()].base(),
                100 + i % CHANNELS
            );
            let req = Request::post(url)
                .header("authorization", format!("Bot {DEFAULT_TOKEN}"))
                .header("content-type", "application/json")
                .body(Full::new(Bytes::from_static(b"{\"content\":\"hi\"}")))
                .unwrap();
            let bot = bot.clone();
            tokio::spawn(async move {
                let res = bot.request(req).await.unwrap();
                let ok = res.status().is_success();
                res.into_body().collect().await.unwrap();
                ok
            })
        })
        .collect();
    let mut failed = 0;
    for t in tasks {
        failed += usize::from(!t.await.unwrap());
    }
    (start.elapsed(), failed)
}

async fn row(n: usize, redis: Option<&RedisServer>) {
    let sim = Simulator::start(simulator()).await.unwrap();
    let upstream = format!("http://{}/api", sim.addr());
    let mut args = global_flags(GLOBAL_LIMIT, GLOBAL_WINDOW);
    if let Some(r) = redis {
        args.extend(shared_flags(&r.url(), &format!("bench-{n}"), n));
    }
    let mut replicas = Vec::new();
    for _ in 0..n {
        replicas.push(Replica::start(&upstream, &args).await);
    }
    let (elapsed, failed) = fire(&replicas).await;
    let s = sim.stats();
    let nominal = per_second(f64::from(GLOBAL_LIMIT), GLOBAL_WINDOW);
    let achieved = per_second(REQUESTS as f64, elapsed);
    println!(
        "{n} replica{} {:<13} {achieved:>6.0} req/s = {:>5.1} % of the global limit ({nominal:.0}/s), {elapsed:>8.2?} for {REQUESTS}; upstream saw 2xx {}, global 429 {}, other 429 {}; bot got {failed} non-2xx",
        if n == 1 { " " } else { "s" },
        if redis.is_some() { "sharing Redis" } else { "alone" },
        achieved * 100.0 / nominal,
        s.success,
        s.global_429,
        s.non_shared_429() - s.global_429,
    );
    for r in replicas {
        r.stop().await;
    }
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let redis = RedisServer::start();
        let cycles = (REQUESTS as u32).div_ceil(GLOBAL_LIMIT) - 1;
        let shortest = (GLOBAL_WINDOW + MEAN_LATENCY) * cycles + MEAN_LATENCY;
        println!(
            "shortest run without a global 429: about {shortest:.2?} ({:.0} req/s): {cycles} cycles of {GLOBAL_LIMIT} requests per window of {GLOBAL_WINDOW:?} plus {MEAN_LATENCY:?} mean latency, then one latency",
            per_second(REQUESTS as f64, shortest)
        );
        for n in [1, 2, 4] {
            row(n, Some(&redis)).await;
        }
        for n in [1, 2, 4] {
            row(n, None).await;
        }
    });
}
