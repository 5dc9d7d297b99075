//! Proxy replicas as separate processes sharing one budget through a real Redis, in front of
//! `discord-sim` behind a recording tap, driven by a plain HTTP client with no limiter of its own.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::{Duration, Instant};

use common::replica::{command, global_flags, shared_flags, Replica};
use common::{assert_handed_on_intact, body, bot, get_untokened, send, Answer, Tap, TEST_ID};
use discord_sim::{Scenario, SimStats, Simulator};
use http::StatusCode;
use ratelimit_test_support::redis_server::{free_port, RedisCluster, RedisServer};
use ratelimit_test_support::tls::TlsRedis;

const REPLICAS: usize = 2;

/// `REPLICAS` replicas in front of `upstream`, sharing `redis` under `namespace` when given one.
async fn replicas(
    upstream: &str,
    scenario: &Scenario,
    redis: Option<(&str, &str)>,
) -> Vec<Replica> {
    let mut args = match scenario.config.global {
        Some(g) => global_flags(g.limit, g.period),
        None => Vec::new(),
    };
    if let Some((url, namespace)) = redis {
        args.extend(shared_flags(url, namespace, REPLICAS));
    }
    let mut started = Vec::new();
    for _ in 0..REPLICAS {
        started.push(Replica::start(upstream, &args).await);
    }
    started
}

/// Fires every operation of `scenario` at once, operation `i` through replica `i % REPLICAS`, each
/// tagged with its index for the tap. Returns the answers in operation order and what the simulator saw.
async fn every_operation_at_once(
    scenario: &Scenario,
    replicas: &[Replica],
    sim: &discord_sim::RunningSim,
) -> (Vec<Answer>, SimStats, Duration) {
    let bot = bot();
    let start = Instant::now();
    let tasks: Vec<_> = scenario
        .operations
        .iter()
        .enumerate()
        .map(|(i, op)| {
            let mut req = http::Request::builder()
                .method(op.method.clone())
                .uri(op.url(&replicas[i % replicas.len()].base()))
                .header(TEST_ID, i.to_string());
            if op.authorized {
                req = req.header(
                    "authorization",
                    format!("Bot {}", discord_sim::DEFAULT_TOKEN),
                );
            }
            if op.body.is_some() {
                req = req.header("content-type", "application/json");
            }
            let req = req.body(body(op.body.as_deref())).unwrap();
            let bot = bot.clone();
            tokio::spawn(async move { send(&bot, req).await })
        })
        .collect();
    let mut answers = Vec::new();
    for t in tasks {
        answers.push(t.await.unwrap().unwrap());
    }
    (answers, sim.stats(), start.elapsed())
}

fn report(what: &str, scenario: &Scenario, s: &SimStats, elapsed: Duration) {
    eprintln!(
        "{what}, {}: {elapsed:?} (lower bound {:?}), 2xx {}, user {} sub {} global {} shared {} cf {}",
        scenario.name,
        scenario.lower_bound(),
        s.success,
        s.user_429,
        s.sub_limit_429,
        s.global_429,
        s.shared_429,
        s.cloudflare_429
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_sharing_redis_take_no_avoidable_429_and_hand_on_the_upstreams_answers_intact()
{
    let redis = RedisServer::start();
    for scenario in [Scenario::mixed(), Scenario::parallel()] {
        let sim = Simulator::start(scenario.config.clone()).await.unwrap();
        let tap = Tap::start(sim.addr()).await;
        let upstream = format!("http://{}/api", tap.addr);
        let namespace = format!("replicas-{}", scenario.name);
        let replicas = replicas(&upstream, &scenario, Some((&redis.url(), &namespace))).await;
        let (answers, stats, elapsed) = every_operation_at_once(&scenario, &replicas, &sim).await;
        report("two replicas sharing Redis", &scenario, &stats, elapsed);
        assert_eq!(stats.non_shared_429(), 0, "{}: {stats:#?}", scenario.name);
        for g in &stats.global {
            assert!(g.peak_in_period() as u32 <= g.limit.limit, "{g:?}");
        }
        for (i, a) in answers.iter().enumerate() {
            let id = i.to_string();
            let shared_429 = a.status == StatusCode::TOO_MANY_REQUESTS
                && a.header("x-ratelimit-scope") == Some("shared");
            assert!(
                a.status.is_success() || shared_429,
                "{id}: {} {:?}",
                a.status,
                a.body
            );
            let upstream = tap.seen(&id).response.expect("the upstream answered it");
            assert_handed_on_intact(a, &upstream, &id);
        }
        for r in &replicas {
            let status = get_untokened(&bot(), &format!("http://{}/status", r.admin))
                .await
                .unwrap();
            let json: serde_json::Value = serde_json::from_slice(&status.body).unwrap();
            let shared = &json["shared"];
            assert_eq!(shared["namespace"], namespace.as_str());
            assert_eq!(shared["degraded"], false, "{shared}");
            assert_eq!(shared["fallbacks"], 0, "{shared}");
            assert!(shared["calls"].as_u64().unwrap() > 0, "{shared}");
            let metrics = get_untokened(&bot(), &format!("http://{}/metrics", r.admin))
                .await
                .unwrap();
            let text = String::from_utf8_lossy(&metrics.body);
            assert!(
                text.contains("ratelimit_client_shared_calls_total"),
                "{text}"
            );
        }
    }
}

/// The control: the same replicas and scenario without Redis, each limiting alone, take avoidable 429s.
/// The test above would fail if the replicas did not share.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_limiting_alone_take_avoidable_429s_on_the_same_scenario() {
    let scenario = Scenario::mixed();
    let sim = Simulator::start(scenario.config.clone()).await.unwrap();
    let upstream = format!("http://{}/api", sim.addr());
    let replicas = replicas(&upstream, &scenario, None).await;
    let (_, stats, elapsed) = every_operation_at_once(&scenario, &replicas, &sim).await;
    report("two replicas limiting alone", &scenario, &stats, elapsed);
    assert!(stats.non_shared_429() > 0, "{stats:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_whose_redis_does_not_answer_at_start_exits_naming_the_flag() {
    let nobody = format!("redis://:secret@127.0.0.1:{}/", free_port());
    let stderr = refused_at_start("http://127.0.0.1:9/api", &shared_flags(&nobody, "x", 2)).await;
    assert!(
        stderr.contains("--redis-url redis://***@127.0.0.1:"),
        "{stderr}"
    );
    assert!(stderr.contains("does not start"), "{stderr}");
    assert!(!stderr.contains("secret"), "{stderr}");
}

/// `--start-without-redis`: a replica whose Redis does not answer yet starts, says so in `/status`, serves
/// alone, and joins the shared budget by itself once Redis answers on that address.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_started_without_redis_serves_alone_and_joins_when_redis_answers() {
    let port = free_port();
    let url = format!("redis://127.0.0.1:{port}/");
    let sim = Simulator::start(Scenario::mixed().config).await.unwrap();
    let upstream = format!("http://{}/api", sim.addr());
    let mut flags = shared_flags(&url, "late", 2);
    flags.push("--start-without-redis".to_owned());
    let replica = Replica::start(&upstream, &flags).await;
    let status = async || {
        let a = get_untokened(&bot(), &format!("http://{}/status", replica.admin))
            .await
            .unwrap();
        serde_json::from_slice::<serde_json::Value>(&a.body).unwrap()["shared"].clone()
    };
    let url = format!("{}/channels/100/messages", replica.base());
    assert_eq!(
        common::post(&bot(), &url, "{}").await.unwrap().status,
        StatusCode::OK
    );
    let alone = status().await;
    assert_eq!(alone["degraded"], true, "{alone}");
    assert_eq!(alone["calls"], 0, "{alone}");

    let _redis = RedisServer::try_start_on(port, &[]).expect("the port was taken meanwhile");
    let start = Instant::now();
    while status().await["degraded"] == true {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "never joined the shared budget"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    eprintln!("joined {:?} after Redis started", start.elapsed());
    assert_one_message_went_through_redis(&replica).await;
    assert!(replica.stop().await.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_says_degraded_while_redis_is_down_and_the_replica_keeps_serving() {
    let mut redis = RedisServer::start();
    let sim = Simulator::start(Scenario::mixed().config).await.unwrap();
    let upstream = format!("http://{}/api", sim.addr());
    let replica = Replica::start(&upstream, &shared_flags(&redis.url(), "down", 2)).await;
    let status = async || {
        let a = get_untokened(&bot(), &format!("http://{}/status", replica.admin))
            .await
            .unwrap();
        serde_json::from_slice::<serde_json::Value>(&a.body).unwrap()["shared"].clone()
    };
    let message = async |n: usize| {
        let url = format!("{}/channels/{}/messages", replica.base(), 100 + n % 10);
        common::post(&bot(), &url, "{}").await.unwrap().status
    };
    assert_eq!(message(0).await, StatusCode::OK);
    assert_eq!(status().await["degraded"], false);
    redis.kill();
    // Each request fails its Redis call quickly (connection refused) until the breaker opens.
    for n in 1..6 {
        assert_eq!(message(n).await, StatusCode::OK, "served alone meanwhile");
    }
    let shared = status().await;
    assert_eq!(shared["degraded"], true, "{shared}");
    assert!(shared["fallbacks"].as_u64().unwrap() > 0, "{shared}");
    assert!(shared["errors"].as_u64().unwrap() > 0, "{shared}");
    assert!(replica.stop().await.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_shares_through_a_redis_cluster_named_by_its_nodes() {
    let cluster = tokio::task::spawn_blocking(RedisCluster::start)
        .await
        .unwrap();
    let sim = Simulator::start(Scenario::mixed().config).await.unwrap();
    let upstream = format!("http://{}/api", sim.addr());
    let nodes = cluster.urls().join(",");
    let args = ["--redis-cluster", &nodes, "--namespace", "cluster"].map(str::to_owned);
    let replica = Replica::start(&upstream, &args).await;
    assert_one_message_went_through_redis(&replica).await;
    let keys: u64 = cluster
        .nodes
        .iter()
        .map(|n| n.cli(&["DBSIZE"]).trim().parse::<u64>().unwrap())
        .sum();
    assert!(keys > 0, "the state is in the cluster");
}

/// `rediss://`: a replica given the CA that signed the server's certificate shares through TLS; one
/// that trusts only the public roots built in refuses the server and does not start (so nothing went
/// in the clear).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_shares_over_tls_with_the_ca_it_is_given_and_refuses_an_unknown_one() {
    let tls = TlsRedis::start("proxy");
    let sim = Simulator::start(Scenario::mixed().config).await.unwrap();
    let upstream = format!("http://{}/api", sim.addr());
    let mut flags = shared_flags(&tls.url, "tls", 1);
    flags.extend(["--redis-ca".to_owned(), tls.ca_file().display().to_string()]);
    let replica = Replica::start(&upstream, &flags).await;
    assert_one_message_went_through_redis(&replica).await;
    let keys = tls.server.cli(&["KEYS", "{tls}:*"]);
    assert!(keys.contains("{tls}:g:"), "the state is in Redis: {keys}");
    assert!(replica.stop().await.success());

    let stderr = refused_at_start(&upstream, &shared_flags(&tls.url, "tls", 1)).await;
    assert!(
        stderr.contains("--redis-url rediss://127.0.0.1:"),
        "{stderr}"
    );
}

/// One message through `replica` is answered 200, and its `/status` says the shared budget was asked and
/// is not degraded.
async fn assert_one_message_went_through_redis(replica: &Replica) {
    let url = format!("{}/channels/100/messages", replica.base());
    assert_eq!(
        common::post(&bot(), &url, "{}").await.unwrap().status,
        StatusCode::OK
    );
    let a = get_untokened(&bot(), &format!("http://{}/status", replica.admin))
        .await
        .unwrap();
    let shared = serde_json::from_slice::<serde_json::Value>(&a.body).unwrap()["shared"].clone();
    assert_eq!(shared["degraded"], false, "{shared}");
    assert!(shared["calls"].as_u64().unwrap() > 0, "{shared}");
}

/// Runs a replica with `flags` that must refuse to start: it exits 1 without ever listening. Its stderr.
async fn refused_at_start(upstream: &str, flags: &[String]) -> String {
    let out = command(upstream, flags).output().await.unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(out.stdout.is_empty(), "it never listened: {stderr}");
    stderr
}
