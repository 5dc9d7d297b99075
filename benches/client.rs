//! The client layer (`ratelimit-client`) measured two ways, side by side in one run:
//!
//! 1. **Added latency** of the layer on a request that does not wait: the same in-process service with and
//!    without the layer (Discord profile; bucket headers on every response; with and without the global
//!    limiter). Futures complete on their first poll; no sockets.
//! 2. **Utilisation** against the Discord simulator over loopback (`discord-sim`, real HTTP through reqwest):
//!    our layer vs the serial one-request-in-flight-per-bucket design of twilight, discord.js and nirn
//!    (`discord_sim::reference::serial_per_bucket`), on the simulator's `parallel`, `parallel-leaky` (the
//!    same on leaky buckets), `sublimit` (a hidden per-body-shape limit) and `mixed` scenarios, reporting
//!    elapsed time against the scenario's lower bound, 429s by scope and per-bucket efficiency.
//!
//! ```sh
//! cargo bench --bench client
//! # only the simulator runs, each scenario once:
//! RATELIMIT_BENCH_ONLY_SIM=1 RATELIMIT_BENCH_RUNS=1 cargo bench --bench client
//! ```

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::convert::Infallible;
use std::future::Future;
use std::hint::black_box;
use std::pin::pin;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::Criterion;
use discord_sim::{reference, Scenario, SimStats, Simulator, DEFAULT_TOKEN};
use http::{Request, Response};
use http_body_util::Full;
use ratelimit_client::profile::Discord;
use ratelimit_client::reqwest::ReqwestService;
use ratelimit_client::{Limiter, RateLimitLayer};
use tower::{service_fn, Layer, Service};

/// Polls a future that is known to complete immediately.
fn now<F: Future>(f: F) -> F::Output {
    let mut f = pin!(f);
    match f.as_mut().poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(v) => v,
        Poll::Pending => panic!("benchmarked future did not complete on its first poll"),
    }
}

fn request() -> Request<Full<Bytes>> {
    Request::post("https://discord.com/api/v10/channels/123456789012345678/messages")
        .header("authorization", "Bot benchmark-token")
        .body(Full::new(Bytes::from_static(b"{\"content\":\"hi\"}")))
        .expect("valid request")
}

/// A Discord-like upstream with a fixed 100 ms window: `Reset-After` counts down to the next boundary, and
/// the bucket is so large that nothing ever waits.
async fn upstream(_req: Request<Full<Bytes>>) -> Result<Response<Full<Bytes>>, Infallible> {
    static START: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    let elapsed = START.get_or_init(Instant::now).elapsed().as_micros() as u64;
    let reset_after_ms = 100 - (elapsed / 1000) % 100;
    Ok(Response::builder()
        .header("x-ratelimit-limit", "1000000")
        .header("x-ratelimit-remaining", "999999")
        .header("x-ratelimit-reset-after", format!("0.{reset_after_ms:03}"))
        .header("x-ratelimit-bucket", "41f9cd5d28af77da04563bcb1d67fdfd")
        .header("via", "1.1 google")
        .body(Full::new(Bytes::new()))
        .expect("valid response"))
}

fn overhead(c: &mut Criterion) {
    let mut g = c.benchmark_group("client_layer/non_waiting_request");
    let mut bare = service_fn(upstream);
    g.bench_function("no layer", |b| {
        b.iter(|| {
            let r = now(bare.call(request())).expect("infallible");
            black_box(r.status())
        })
    });
    for (name, global) in [
        ("ratelimit-client, no global limit", None),
        ("ratelimit-client, global limit on", Some(u32::MAX / 2)),
    ] {
        let limiter = Limiter::builder(Discord::new())
            .global_limit(global)
            .build()
            .expect("valid config");
        let mut svc = RateLimitLayer::new(limiter).layer(service_fn(upstream));
        g.bench_function(name, |b| {
            b.iter(|| {
                let r = now(svc.call(request())).expect("admitted");
                black_box(r.status())
            })
        });
    }
    g.finish();
}

struct Outcome {
    elapsed: Duration,
    ok: u64,
    stats: SimStats,
}

async fn run_ours(scenario: &Scenario) -> Outcome {
    let sim = Simulator::start(scenario.config.clone())
        .await
        .expect("simulator starts");
    let mut b = Limiter::builder(Discord::new());
    b = match scenario.config.global {
        Some(g) => b
            .global_limit(Some(g.limit))
            .global_window(g.period, Duration::ZERO),
        None => b.global_limit(None),
    };
    let limiter = b.build().expect("valid config");
    let svc = RateLimitLayer::new(limiter).layer(ReqwestService::new(reqwest::Client::new()));
    let base = sim.base_url();
    let start = Instant::now();
    let tasks: Vec<_> = scenario
        .operations
        .iter()
        .map(|op| {
            let mut rb = Request::builder()
                .method(op.method.clone())
                .uri(op.url(&base));
            if op.authorized {
                rb = rb.header("authorization", format!("Bot {DEFAULT_TOKEN}"));
            }
            let req = rb
                .body(Full::new(Bytes::from(op.body.clone().unwrap_or_default())))
                .expect("valid request");
            tokio::spawn(svc.clone().oneshot(req))
        })
        .collect();
    let mut ok = 0;
    for t in tasks {
        if matches!(t.await, Ok(Ok(r)) if r.status().is_success()) {
            ok += 1;
        }
    }
    Outcome {
        elapsed: start.elapsed(),
        ok,
        stats: sim.stats(),
    }
}

async fn run_serial(scenario: &Scenario) -> Outcome {
    let sim = Simulator::start(scenario.config.clone())
        .await
        .expect("simulator starts");
    let start = Instant::now();
    let report = reference::serial_per_bucket(
        &sim.base_url(),
        DEFAULT_TOKEN,
        &scenario.operations,
        scenario.config.global,
    )
    .await;
    Outcome {
        elapsed: start.elapsed(),
        ok: report.succeeded,
        stats: sim.stats(),
    }
}

fn mean_efficiency(stats: &SimStats) -> f64 {
    let bs: Vec<f64> = stats
        .buckets
        .iter()
        .filter(|b| b.admitted.len() > 1)
        .map(|b| b.efficiency())
        .collect();
    bs.iter().sum::<f64>() / bs.len().max(1) as f64
}

fn utilisation() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    println!("\nclient_layer/utilisation against discord-sim (loopback HTTP, reqwest)");
    println!(
        "{:<14} {:<22} {:>9} {:>9} {:>7} {:>5} {:>5} {:>6} {:>6} {:>6}",
        "scenario", "client", "elapsed", "bound", "ratio", "2xx", "user", "global", "shared", "eff"
    );
    let runs: usize = std::env::var("RATELIMIT_BENCH_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1);
    let scenarios = (0..runs).flat_map(|_| {
        [
            Scenario::parallel(),
            Scenario::parallel_leaky(),
            Scenario::sublimit(),
            Scenario::mixed(),
        ]
    });
    for scenario in scenarios {
        let bound = scenario.lower_bound();
        let ours = rt.block_on(run_ours(&scenario));
        let serial = rt.block_on(run_serial(&scenario));
        for (name, o) in [("ratelimit-client", &ours), ("serial per bucket", &serial)] {
            let s = &o.stats;
            println!(
                "{:<14} {:<22} {:>8.3}s {:>8.3}s {:>7.3} {:>5} {:>5} {:>6} {:>6} {:>6.3}",
                scenario.name,
                name,
                o.elapsed.as_secs_f64(),
                bound.as_secs_f64(),
                o.elapsed.as_secs_f64() / bound.as_secs_f64(),
                o.ok,
                s.user_429 + s.sub_limit_429,
                s.global_429,
                s.shared_429,
                mean_efficiency(s)
            );
        }
        println!(
            "{:<14} serial ÷ ours elapsed: {:.2}×",
            scenario.name,
            serial.elapsed.as_secs_f64() / ours.elapsed.as_secs_f64()
        );
        let with_storms = scenario.lower_bound_with_storms();
        if with_storms != bound {
            println!(
                "{:<14} bound counting shared storms: {:.3}s; ours ÷ that {:.3}, serial ÷ that {:.3}",
                scenario.name,
                with_storms.as_secs_f64(),
                ours.elapsed.as_secs_f64() / with_storms.as_secs_f64(),
                serial.elapsed.as_secs_f64() / with_storms.as_secs_f64()
            );
        }
        // The best a probing client could have done with this run's first windows and latency draws (fixed
        // windows only, and only where nothing else binds: the parallel run).
        let min_way_in = scenario.config.latency.min() / 2;
        let only_fixed =
            scenario.config.routes.iter().all(|r| {
                r.shared.is_none() && (r.exempt_global || scenario.config.global.is_none())
            });
        if let Some(ideal) = ours
            .stats
            .buckets
            .iter()
            .filter_map(|b| b.probing_finish(min_way_in))
            .max()
            .filter(|_| only_fixed)
        {
            println!(
                "{:<14} best finish for a probing client with this run's draws: {:.3}s ({:.3} × bound); ours ÷ that {:.3}",
                scenario.name,
                ideal.as_secs_f64(),
                ideal.as_secs_f64() / bound.as_secs_f64(),
                ours.elapsed.as_secs_f64() / ideal.as_secs_f64()
            );
        }
        // Where the time goes on fixed windows: when each window opened (simulator clock) and how long after
        // the previous one ended.
        for b in ours.stats.buckets.iter().filter(|b| b.windows.len() > 1) {
            let late: Vec<String> = b
                .windows
                .windows(2)
                .map(|w| {
                    let gap = w[1].saturating_sub(w[0]).saturating_sub(b.limit.period);
                    format!("{:.1}", gap.as_secs_f64() * 1e3)
                })
                .collect();
            println!(
                "{:<14}   {} {}: first window at {:.1} ms, later windows late by [{}] ms, last admission {:.1} ms",
                scenario.name,
                b.name,
                b.major,
                b.windows[0].as_secs_f64() * 1e3,
                late.join(", "),
                b.admitted.last().map_or(0.0, |t| t.as_secs_f64() * 1e3),
            );
        }
    }
}

fn main() {
    // Set RATELIMIT_BENCH_ONLY_SIM=1 to skip the added-latency measurement.
    if std::env::var_os("RATELIMIT_BENCH_ONLY_SIM").is_none() {
        let mut c = Criterion::default().configure_from_args();
        overhead(&mut c);
        c.final_summary();
    }
    // Set RATELIMIT_BENCH_NO_SIM=1 to measure only the added latency.
    if std::env::var_os("RATELIMIT_BENCH_NO_SIM").is_none() {
        utilisation();
    }
}
