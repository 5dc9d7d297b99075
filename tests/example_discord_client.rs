//! `examples/discord_client.rs` as a user runs it: two copies, separate processes, sending half of the load
//! each to the same channels of one simulator. Sharing one budget through Redis (`REDIS_URL`), they take
//! no avoidable 429; the same two copies without Redis do (the control, so the first test can fail).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use discord_sim::{RunningSim, Scenario, SimStats, Simulator, DEFAULT_TOKEN};
use ratelimit_test_support::redis_server::RedisServer;

/// Longer than the two copies take unless something is stuck.
const HANG_DETECTOR: Duration = Duration::from_secs(60);

/// The example's binary, built by the same `cargo test` run (examples go next to the tests' `deps`).
fn example() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let profile_dir = exe.parent().and_then(|deps| deps.parent()).unwrap();
    let path = profile_dir
        .join("examples")
        .join(format!("discord_client{}", std::env::consts::EXE_SUFFIX));
    assert!(
        path.exists(),
        "{} is missing: `cargo test --workspace` builds the examples; alone, run `cargo build --example discord_client` first",
        path.display()
    );
    path
}

/// Runs two copies of the example against `sim`, sharing `redis` when given, and returns what the
/// simulator saw.
async fn two_copies(sim: &RunningSim, redis: Option<&str>) -> SimStats {
    let mut copies = Vec::new();
    for _ in 0..2 {
        let mut cmd = tokio::process::Command::new(example());
        cmd.args(["--channels", "10", "--messages", "100", "--reactions", "50"])
            .env("DISCORD_API_BASE", sim.base_url())
            .env("DISCORD_TOKEN", DEFAULT_TOKEN)
            .env("RATELIMIT_INSTANCES", "2")
            .env_remove("REDIS_URL")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        if let Some(url) = redis {
            cmd.env("REDIS_URL", url);
        }
        copies.push(cmd.spawn().unwrap());
    }
    for copy in copies {
        let out = tokio::time::timeout(HANG_DETECTOR, copy.wait_with_output())
            .await
            .expect("hang detector: a copy never finished")
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        if redis.is_some() {
            assert!(stdout.contains("sharing the budget"), "{stdout}");
        }
    }
    sim.stats()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_copies_sharing_redis_take_no_avoidable_429() {
    let redis = RedisServer::start();
    let sim = Simulator::start(Scenario::mixed().config).await.unwrap();
    let s = two_copies(&sim, Some(&redis.url())).await;
    eprintln!(
        "shared: 2xx {}, user {}, global {}, shared {}",
        s.success, s.user_429, s.global_429, s.shared_429
    );
    assert_eq!(s.success, 300, "{s:#?}");
    assert_eq!(s.non_shared_429(), 0, "{s:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_copies_without_redis_take_avoidable_429s() {
    let sim = Simulator::start(Scenario::mixed().config).await.unwrap();
    let s = two_copies(&sim, None).await;
    eprintln!(
        "alone: 2xx {}, user {}, global {}, shared {}",
        s.success, s.user_429, s.global_429, s.shared_429
    );
    assert!(s.non_shared_429() > 0, "{s:#?}");
}
