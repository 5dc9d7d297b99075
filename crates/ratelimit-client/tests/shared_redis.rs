//! Several limiters sharing one budget through a real Redis, against the Discord simulator over loopback:
//! each limiter has its own connection and scheduler, as separate processes would.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::{Duration, Instant};

use bytes::Bytes;
use discord_sim::{Operation, Scenario, SimConfig, SimStats, Simulator, DEFAULT_TOKEN};
use http::StatusCode;
use http_body_util::Full;
use ratelimit_client::profile::Discord;
use ratelimit_client::reqwest::ReqwestService;
use ratelimit_client::shared::SharedBudget;
use ratelimit_client::{Limiter, RateLimit, RateLimitLayer};
use ratelimit_test_support::redis_server::{RedisCluster, RedisServer};
use tower::Layer;

type Client = RateLimit<ReqwestService, Discord>;

async fn limiter(config: &SimConfig, budget: Option<SharedBudget>) -> Limiter<Discord> {
    let mut b = Limiter::builder(Discord::new());
    if let Some(budget) = budget {
        b = b.shared(budget);
    }
    b = match config.global {
        Some(g) => b
            .global_limit(Some(g.limit))
            .global_window(g.period, Duration::from_millis(10)),
        None => b.global_limit(None),
    };
    b.build().unwrap()
}

/// The request for `op` with the simulator's token.
fn request(base: &str, op: &Operation) -> http::Request<Full<Bytes>> {
    common::sim_request(base, op, DEFAULT_TOKEN)
}

/// Where the limiters of one run keep their shared state.
enum Sharing<'a> {
    /// One Redis server.
    Server(&'a RedisServer),
    /// A Redis Cluster, reached through all its nodes.
    Cluster(&'a RedisCluster),
    /// Nowhere: independent limiters, as processes without a shared budget.
    Nothing,
}

impl Sharing<'_> {
    async fn budget(&self, namespace: &str, instances: usize) -> Option<SharedBudget> {
        let b = SharedBudget::builder()
            .namespace(namespace)
            .instances(instances as u32);
        match self {
            Sharing::Server(redis) => Some(b.connect(&redis.url()).await.unwrap()),
            Sharing::Cluster(cluster) => {
                let urls = cluster.urls();
                let urls: Vec<&str> = urls.iter().map(String::as_str).collect();
                Some(b.connect_cluster(&urls).await.unwrap())
            }
            Sharing::Nothing => None,
        }
    }
}

/// Runs `scenario` with its operations dealt round-robin to `instances` limiters sharing `namespace`.
async fn run_shared(
    sharing: &Sharing<'_>,
    namespace: &str,
    scenario: &Scenario,
    instances: usize,
) -> (SimStats, Vec<Result<StatusCode, String>>, Duration) {
    let sim = Simulator::start(scenario.config.clone()).await.unwrap();
    let base = sim.base_url();
    let mut clients: Vec<Client> = Vec::new();
    for _ in 0..instances {
        let budget = sharing.budget(namespace, instances).await;
        let l = limiter(&scenario.config, budget).await;
        clients.push(RateLimitLayer::new(l).layer(ReqwestService::new(reqwest::Client::new())));
    }
    let start = Instant::now();
    let results = common::send_all_at_once(
        scenario
            .operations
            .iter()
            .enumerate()
            .map(|(i, op)| (clients[i % instances].clone(), request(&base, op))),
    )
    .await;
    (sim.stats(), results, start.elapsed())
}

/// The run shared through `sharing` took no avoidable 429, every request succeeded, and the global
/// limit held at the simulator.
async fn assert_shared_run_is_clean(sharing: &Sharing<'_>, what: &str) {
    for (name, scenario) in [
        ("mixed", Scenario::mixed()),
        ("parallel", Scenario::parallel()),
    ] {
        let (s, results, elapsed) = run_shared(sharing, name, &scenario, 3).await;
        report(&format!("{what} {name}"), &s, elapsed, &scenario);
        assert_eq!(s.non_shared_429(), 0, "{what} {name}: {s:#?}");
        let failed: Vec<_> = results
            .iter()
            .filter(|r| !matches!(r, Ok(s) if s.is_success()))
            .collect();
        assert!(failed.is_empty(), "{what} {name}: {failed:?}");
        for g in &s.global {
            assert!(g.peak_in_period() as u32 <= g.limit.limit, "{g:?}");
        }
    }
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
    assert_shared_run_is_clean(&Sharing::Server(&redis), "one server").await;
}

/// The same run on a local Redis Cluster: every key of a namespace hashes to one slot (its hash tag), so
/// each step is one script on one node, whichever node the client first reached.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_limiters_share_one_budget_on_a_cluster_with_no_avoidable_429s() {
    let cluster = RedisCluster::start();
    assert_shared_run_is_clean(&Sharing::Cluster(&cluster), "cluster").await;
}

/// The control that shows the two tests above can fail: the same three limiters on `mixed` without a
/// shared budget. Each believes it has the token's whole global limit (50 per 200 ms) and every bucket to
/// itself, so the three send up to 150 per global window and the simulator answers global 429s (and user
/// 429s on the channels all three write to). `parallel` cannot show it: its operations go round-robin to
/// the three limiters and to the three webhooks alike, so each limiter alone uses one webhook's bucket
/// (and webhooks are exempt from the global limit).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_limiters_without_a_shared_budget_take_avoidable_429s() {
    let scenario = Scenario::mixed();
    let (s, _, elapsed) = run_shared(&Sharing::Nothing, "none", &scenario, 3).await;
    report("independent mixed", &s, elapsed, &scenario);
    assert!(s.global_429 > 0, "{s:#?}");
    assert!(s.non_shared_429() > 0, "{s:#?}");
}

/// Windows released early through the shared state (from the responses' bounds on the reset, on the
/// Redis server's clock) still let no request arrive before the reset, however a round trip splits: 20 %
/// or 80 % of the simulator's latency (80-120 ms) on the way in. Each webhook's requests are dealt to all
/// three limiters, so every window is shared.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn windows_released_early_through_redis_hold_on_asymmetric_paths() {
    let redis = RedisServer::start();
    for inbound in [20, 80] {
        let mut scenario = Scenario::parallel();
        scenario.config = scenario.config.inbound_percent(inbound);
        // Grouped by webhook, so that round-robin dealing gives each webhook to all three limiters.
        scenario.operations.sort_by(|a, b| a.path.cmp(&b.path));
        let ns = format!("asymmetric-{inbound}");
        let (s, results, elapsed) = run_shared(&Sharing::Server(&redis), &ns, &scenario, 3).await;
        report(
            &format!("parallel, {inbound} % inbound"),
            &s,
            elapsed,
            &scenario,
        );
        assert_eq!(s.non_shared_429(), 0, "inbound {inbound} %: {s:#?}");
        assert!(
            results.iter().all(|r| matches!(r, Ok(s) if s.is_success())),
            "inbound {inbound} %: {results:?}"
        );
    }
}

/// A route with a hidden sub-limit on one body shape, used from three limiters: the sub-limit is spent by
/// the others as much as by each one. Every request still finishes (a refusal seen before this limiter
/// opened a sub-window once made it wait for decades), with the shape's holds shared or not. The
/// sub-limit's first refusals are not avoidable: no header announces it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_limiters_on_a_sub_limited_route_all_finish() {
    let redis = RedisServer::start();
    let scenario = Scenario::sublimit();
    for (how, sharing) in [
        ("shared", Sharing::Server(&redis)),
        ("alone", Sharing::Nothing),
    ] {
        let (s, results, elapsed) = run_shared(&sharing, "sub-limit", &scenario, 3).await;
        report(&format!("sublimit, {how}"), &s, elapsed, &scenario);
        let failed: Vec<_> = results
            .iter()
            .filter(|r| !matches!(r, Ok(s) if s.is_success()))
            .collect();
        assert!(failed.is_empty(), "{how}: {failed:?}");
        assert_eq!(
            s.user_429 + s.global_429 + s.cloudflare_429,
            0,
            "{how}: {s:#?}"
        );
    }
}
