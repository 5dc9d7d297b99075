//! Several limiters sharing one budget through a real Redis, against the Discord simulator over loopback:
//! each limiter has its own connection and scheduler, as separate processes would.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use bytes::Bytes;
use discord_sim::{Operation, Scenario, SimConfig, SimStats, Simulator, DEFAULT_TOKEN};
use http::StatusCode;
use http_body_util::Full;
use ratelimit_client::profile::Discord;
use ratelimit_client::reqwest::ReqwestService;
use ratelimit_client::shared::SharedBudget;
use ratelimit_client::{Limiter, RateLimit, RateLimitLayer};
use ratelimit_test_support::redis_server::RedisServer;
use tower::Layer;

type Client = RateLimit<ReqwestService, Discord>;

async fn limiter(config: &SimConfig, budget: SharedBudget) -> Limiter<Discord> {
    let mut b = Limiter::builder(Discord::new()).shared(budget);
    b = match config.global {
        Some(g) => b
            .global_limit(Some(g.limit))
            .global_window(g.period, Duration::from_millis(10)),
        None => b.global_limit(None),
    };
    b.build().unwrap()
}

fn request(base: &str, op: &Operation) -> http::Request<Full<Bytes>> {
    let mut b = http::Request::builder()
        .method(op.method.clone())
        .uri(op.url(base));
    if op.authorized {
        b = b.header("authorization", format!("Bot {DEFAULT_TOKEN}"));
    }
    if op.body.is_some() {
        b = b.header("content-type", "application/json");
    }
    b.body(Full::new(Bytes::from(op.body.clone().unwrap_or_default())))
        .unwrap()
}

/// Runs `scenario` with its operations dealt round-robin to `instances` limiters sharing `namespace`.
async fn run_shared(
    redis: &RedisServer,
    namespace: &str,
    scenario: &Scenario,
    instances: usize,
) -> (SimStats, Vec<Result<StatusCode, String>>, Duration) {
    let sim = Simulator::start(scenario.config.clone()).await.unwrap();
    let base = sim.base_url();
    let mut clients: Vec<Client> = Vec::new();
    for _ in 0..instances {
        let budget = SharedBudget::builder()
            .namespace(namespace)
            .instances(instances as u32)
            .connect(&redis.url())
            .await
            .unwrap();
        let l = limiter(&scenario.config, budget).await;
        clients.push(RateLimitLayer::new(l).layer(ReqwestService::new(reqwest::Client::new())));
    }
    let start = Instant::now();
    let tasks: Vec<_> = scenario
        .operations
        .iter()
        .enumerate()
        .map(|(i, op)| {
            let svc = clients[i % instances].clone();
            let req = request(&base, op);
            tokio::spawn(async move {
                svc.oneshot(req)
                    .await
                    .map(|r| r.status())
                    .map_err(|e| e.to_string())
            })
        })
        .collect();
    let mut results = Vec::new();
    for t in tasks {
        results.push(t.await.unwrap());
    }
    (sim.stats(), results, start.elapsed())
}

fn report(what: &str, s: &SimStats, elapsed: Duration, scenario: &Scenario) {
    let bound = scenario.lower_bound();
    eprintln!(
        "{what}: {elapsed:?} (lower bound {bound:?}, utilisation {:.2}), 2xx {}, user {} sub {} global {} shared {} cf {}",
        bound.as_secs_f64() / elapsed.as_secs_f64(),
        s.success,
        s.user_429,
        s.sub_limit_429,
        s.global_429,
        s.shared_429,
        s.cloudflare_429
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_limiters_share_one_budget_with_no_avoidable_429s() {
    let redis = RedisServer::start();
    for (name, scenario) in [
        ("mixed", Scenario::mixed()),
        ("parallel", Scenario::parallel()),
    ] {
        let (s, results, elapsed) = run_shared(&redis, name, &scenario, 3).await;
        report(name, &s, elapsed, &scenario);
        assert_eq!(s.non_shared_429(), 0, "{name}: {s:#?}");
        let failed: Vec<_> = results
            .iter()
            .filter(|r| !matches!(r, Ok(s) if s.is_success()))
            .collect();
        assert!(failed.is_empty(), "{name}: {failed:?}");
        for g in &s.global {
            assert!(g.peak_in_period() as u32 <= g.limit.limit, "{g:?}");
        }
    }
}
