//! The client's shared budget (`ratelimit-client`, feature `redis`) measured side by side with the in-memory
//! limiter in one run:
//!
//! 1. **Added latency** per request, over real HTTP on loopback, of a request that does not wait: no
//!    limiter, the in-memory limiter, and the limiter with a `SharedBudget` on a local `redis-server`
//!    (one reservation round trip per request; the reconcile goes in the background). Rounds alternate
//!    between the three so that machine noise falls on all of them; p50 and p99 per configuration.
//! 2. **Throughput on one token** against the Discord simulator when the global limit is what binds:
//!    200 messages to 200 channels, all at once, on the `mixed` scenario's simulator (50 per 200 ms: its
//!    time is scaled), through 1, 2 and 4 limiters sharing one Redis (as separate processes would, each
//!    with its own connection and scheduler), and through one in-memory limiter for reference. Reported as
//!    utilisation (the earliest the last request may leave at the allowed maximum, over the time taken),
//!    with 429s by scope.
//! 3. **Whole scenarios**: `mixed` (per-channel windows, leaky reaction buckets, role windows, shared
//!    storms and the global limit) and `parallel` (three webhooks' fixed windows of 40 per second, latency
//!    80-120 ms, where releasing each window early matters) and `parallel-leaky` (the same on leaky
//!    buckets, where pacing at the drain rate matters), all operations at once, through one in-memory
//!    limiter and through 1 and 3 limiters sharing one Redis, rounds alternating. Reported as time,
//!    utilisation (the scenario's lower bound over the time taken) and the ratio of each shared median to
//!    the in-memory one.
//!
//! ```sh
//! cargo bench --bench client_shared
//! ```

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use bytes::Bytes;
use discord_sim::{Operation, Scenario, SimStats, Simulator, DEFAULT_TOKEN};
use http::{Method, Request};
use http_body_util::Full;
use ratelimit_client::profile::Discord;
use ratelimit_client::reqwest::ReqwestService;
use ratelimit_client::shared::SharedBudget;
use ratelimit_client::{Limiter, RateLimit, RateLimitLayer};
use ratelimit_test_support::redis_server::RedisServer;
use tower::{Layer, Service, ServiceExt};

type Client = RateLimit<ReqwestService, Discord>;

const ROUNDS: usize = 10;
const REQUESTS_PER_ROUND: usize = 200;

/// A loopback upstream that answers at once with a Discord bucket so large that nothing waits.
async fn upstream() -> String {
    use axum::routing::post;
    async fn answer() -> impl axum::response::IntoResponse {
        (
            [
                ("x-ratelimit-limit", "1000000"),
                ("x-ratelimit-remaining", "999999"),
                ("x-ratelimit-reset-after", "60.000"),
                ("x-ratelimit-bucket", "41f9cd5d28af77da04563bcb1d67fdfd"),
                ("via", "1.1 google"),
            ],
            "{}",
        )
    }
    let app = axum::Router::new().route("/api/v10/channels/{id}/messages", post(answer));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    format!("http://{addr}/api/v10")
}

fn message(base: &str, channel: u64) -> Request<Full<Bytes>> {
    Request::post(format!("{base}/channels/{channel}/messages"))
        .header("authorization", format!("Bot {DEFAULT_TOKEN}"))
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from_static(b"{\"content\":\"hi\"}")))
        .unwrap()
}

async fn shared_limiter(
    redis: &RedisServer,
    namespace: &str,
    instances: u32,
    global: Option<(u32, Duration)>,
) -> Limiter<Discord> {
    let budget = SharedBudget::builder()
        .namespace(namespace)
        .instances(instances)
        .connect(&redis.url())
        .await
        .unwrap();
    Limiter::builder(Discord::new())
        .shared(budget)
        .global_limit(global.map(|g| g.0))
        .global_window(
            global.map_or(Duration::from_secs(1), |g| g.1),
            Duration::from_millis(10),
        )
        .build()
        .unwrap()
}

fn layer(limiter: Limiter<Discord>) -> Client {
    RateLimitLayer::new(limiter).layer(ReqwestService::new(reqwest::Client::new()))
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

async fn added_latency(redis: &RedisServer) {
    let base = upstream().await;
    let mut bare = ReqwestService::new(reqwest::Client::new());
    // No global limit here: these requests must never wait, so that only the limiter's own work is timed.
    let mut memory = layer(
        Limiter::builder(Discord::new())
            .global_limit(None)
            .build()
            .unwrap(),
    );
    let mut shared = layer(shared_limiter(redis, "latency", 1, None).await);
    let mut samples: [Vec<Duration>; 3] = Default::default();
    // Warm the connections and the upstream's bucket in each.
    for svc in 0..3 {
        for _ in 0..20 {
            send(svc, &mut bare, &mut memory, &mut shared, &base).await;
        }
    }
    for _ in 0..ROUNDS {
        for (svc, out) in samples.iter_mut().enumerate() {
            for _ in 0..REQUESTS_PER_ROUND {
                let t = Instant::now();
                send(svc, &mut bare, &mut memory, &mut shared, &base).await;
                out.push(t.elapsed());
            }
        }
    }
    println!("\nclient_shared/added_latency: {ROUNDS} rounds x {REQUESTS_PER_ROUND} sequential requests over loopback HTTP, alternating");
    let names = ["no limiter", "in-memory limiter", "shared budget (Redis)"];
    let mut p50s = Vec::new();
    for (name, s) in names.iter().zip(samples.iter_mut()) {
        s.sort();
        let (p50, p99) = (percentile(s, 0.5), percentile(s, 0.99));
        p50s.push(p50);
        println!(
            "  {name:<24} p50 {:>7.1} µs   p99 {:>7.1} µs",
            us(p50),
            us(p99)
        );
    }
    println!(
        "  shared budget over in-memory: +{:.1} µs at p50 ({:.2}x)",
        us(p50s[2]) - us(p50s[1]),
        us(p50s[2]) / us(p50s[1])
    );
}

fn us(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

async fn send(
    which: usize,
    bare: &mut ReqwestService,
    memory: &mut Client,
    shared: &mut Client,
    base: &str,
) {
    let req = message(base, 42);
    let status = match which {
        0 => status_of(bare, req).await,
        1 => status_of(memory, req).await,
        _ => status_of(shared, req).await,
    };
    assert!(status.is_success());
}

/// Sends `req` through `svc` and returns the status.
async fn status_of<S, B>(svc: &mut S, req: Request<Full<Bytes>>) -> http::StatusCode
where
    S: Service<Request<Full<Bytes>>, Response = http::Response<B>>,
    S::Error: std::fmt::Debug,
{
    let svc = ServiceExt::<Request<Full<Bytes>>>::ready(svc)
        .await
        .unwrap();
    svc.call(req).await.unwrap().status()
}

/// 200 messages to 200 channels: each channel's bucket (5 per 500 ms) has room, the global limit binds.
fn global_bound() -> Scenario {
    let mut s = Scenario::mixed();
    s.name = "global-bound";
    s.operations = (0..200u64)
        .map(|i| {
            Operation::new(
                Method::POST,
                format!("/channels/{}/messages", 1000 + i),
                Some(format!(r#"{{"content": "message {i}"}}"#)),
            )
        })
        .collect();
    s
}

async fn throughput_run(scenario: &Scenario, clients: &[Client]) -> (Duration, SimStats) {
    let sim = Simulator::start(scenario.config.clone()).await.unwrap();
    let base = sim.base_url();
    let start = Instant::now();
    let tasks: Vec<_> = scenario
        .operations
        .iter()
        .enumerate()
        .map(|(i, op)| {
            let svc = clients[i % clients.len()].clone();
            let mut b = Request::builder()
                .method(op.method.clone())
                .uri(op.url(&base));
            b = b.header("authorization", format!("Bot {DEFAULT_TOKEN}"));
            b = b.header("content-type", "application/json");
            let req = b
                .body(Full::new(Bytes::from(op.body.clone().unwrap_or_default())))
                .unwrap();
            tokio::spawn(async move { svc.oneshot(req).await.map(|r| r.status()).ok() })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    (start.elapsed(), sim.stats())
}

async fn throughput(redis: &RedisServer) {
    let scenario = global_bound();
    let limit = scenario.config.global.map_or(50, |g| g.limit);
    println!(
        "\nclient_shared/throughput: {} messages to distinct channels at once, global limit {limit} per period (the mixed scenario's, time scaled; latency 5-15 ms)",
        scenario.operations.len()
    );
    let period = scenario
        .config
        .global
        .map_or(Duration::from_secs(1), |g| g.period);
    let memory = vec![layer(
        Limiter::builder(Discord::new())
            .global_limit(Some(limit))
            .global_window(period, Duration::from_millis(10))
            .build()
            .unwrap(),
    )];
    let (elapsed, s) = throughput_run(&scenario, &memory).await;
    // At the allowed maximum, `limit` leave at once and `limit` more each period: the last group leaves
    // `ceil(n / limit) - 1` periods after the first.
    let period = scenario
        .config
        .global
        .map_or(Duration::from_secs(1), |g| g.period);
    let groups = scenario.operations.len().div_ceil(limit as usize) as u32;
    let bound = period * groups.saturating_sub(1);
    println!(
        "  allowed maximum: {limit} per {period:?}, so the last request may leave at {:.2} s at the earliest",
        bound.as_secs_f64()
    );
    line("1 in-memory limiter", elapsed, &s, bound);
    for n in [1u32, 2, 4] {
        let mut clients = Vec::new();
        for _ in 0..n {
            clients.push(layer(
                shared_limiter(redis, &format!("throughput-{n}"), n, Some((limit, period))).await,
            ));
        }
        let (elapsed, s) = throughput_run(&scenario, &clients).await;
        line(&format!("{n} shared limiter(s)"), elapsed, &s, bound);
    }
}

fn line(name: &str, elapsed: Duration, s: &SimStats, bound: Duration) {
    let peak = s
        .global
        .iter()
        .map(|g| g.peak_in_period())
        .max()
        .unwrap_or(0);
    println!(
        "  {name:<22} {:>6.2} s  utilisation {:.2}  peak {peak} in any period  2xx {}  429 user {} global {} shared {}",
        elapsed.as_secs_f64(),
        bound.as_secs_f64() / elapsed.as_secs_f64(),
        s.success,
        s.user_429,
        s.global_429,
        s.shared_429
    );
}

/// What Redis itself spent per script call (reserve and reconcile alike) over the latency rounds, from
/// its own command statistics.
fn redis_time_per_call(redis: &RedisServer) {
    let stats = redis.cli(&["INFO", "commandstats"]);
    let line = stats
        .lines()
        .find(|l| l.starts_with("cmdstat_evalsha:"))
        .unwrap_or("cmdstat_evalsha: none");
    println!("  redis-server time per script call: {line}");
}

const WHOLE_ROUNDS: usize = 5;

async fn whole(redis: &RedisServer, scenario: Scenario) {
    let global = scenario.config.global.map(|g| (g.limit, g.period));
    let bound = scenario.lower_bound();
    println!(
        "\nclient_shared/{}: {} operations at once, {WHOLE_ROUNDS} alternating rounds (lower bound {:.3} s)",
        scenario.name,
        scenario.operations.len(),
        bound.as_secs_f64()
    );
    let configurations = [
        ("1 in-memory limiter", 0u32),
        ("1 shared limiter", 1),
        ("3 shared limiters", 3),
    ];
    let mut times: Vec<Vec<Duration>> = vec![Vec::new(); configurations.len()];
    for round in 0..WHOLE_ROUNDS {
        for (k, &(name, n)) in configurations.iter().enumerate() {
            let clients = match n {
                0 => vec![layer(
                    Limiter::builder(Discord::new())
                        .global_limit(global.map(|g| g.0))
                        .global_window(
                            global.map_or(Duration::from_secs(1), |g| g.1),
                            Duration::from_millis(10),
                        )
                        .build()
                        .unwrap(),
                )],
                n => {
                    let mut clients = Vec::new();
                    for _ in 0..n {
                        // A namespace per run: counters learned in one run must not describe the next
                        // run's fresh simulator.
                        let ns = format!("{}-{n}-{round}", scenario.name);
                        clients.push(layer(shared_limiter(redis, &ns, n, global).await));
                    }
                    clients
                }
            };
            let (elapsed, s) = throughput_run(&scenario, &clients).await;
            line(name, elapsed, &s, bound);
            times[k].push(elapsed);
        }
    }
    let median = |v: &mut Vec<Duration>| {
        v.sort();
        v[v.len() / 2]
    };
    let reference = median(&mut times[0]);
    for (k, &(name, _)) in configurations.iter().enumerate() {
        let m = median(&mut times[k]);
        println!(
            "  median {name:<20} {:>6.3} s  utilisation {:.2}  time / in-memory {:.3}",
            m.as_secs_f64(),
            bound.as_secs_f64() / m.as_secs_f64(),
            m.as_secs_f64() / reference.as_secs_f64()
        );
    }
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let redis = RedisServer::start();
    rt.block_on(async {
        added_latency(&redis).await;
        redis_time_per_call(&redis);
        throughput(&redis).await;
        whole(&redis, Scenario::mixed()).await;
        let mut parallel = Scenario::parallel();
        // Grouped by webhook, so that round-robin dealing gives each webhook to every limiter.
        parallel.operations.sort_by(|a, b| a.path.cmp(&b.path));
        whole(&redis, parallel).await;
        let mut leaky = Scenario::parallel_leaky();
        // The same grouping: every limiter sends to every webhook's leaky bucket.
        leaky.operations.sort_by(|a, b| a.path.cmp(&b.path));
        whole(&redis, leaky).await;
    });
}
