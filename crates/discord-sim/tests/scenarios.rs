//! The bundled scenarios driven by the reference clients: a careful serial-per-bucket client takes no
//! avoidable 429 (so the scenarios are fair to a client that honours the headers), a fire-everything
//! client is punished the way serenity is (global 429s, then a ban), and nobody beats the lower bound.
#![cfg(feature = "clients")]
#![allow(clippy::unwrap_used, clippy::expect_used)]

use discord_sim::{reference, Scenario, Simulator, DEFAULT_TOKEN};

/// One scenario at a time: a flood in one test must not add scheduling jitter to another's timings.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serial_per_bucket_takes_no_avoidable_429_on_mixed() {
    let _one = ONE_AT_A_TIME.lock().await;
    let scenario = Scenario::mixed();
    let sim = Simulator::start(scenario.config.clone()).await.unwrap();
    let report = reference::serial_per_bucket(
        &sim.base_url(),
        DEFAULT_TOKEN,
        &scenario.operations,
        scenario.config.global,
    )
    .await;
    let s = sim.stats();
    assert_eq!(report.succeeded, 312, "{report:?}");
    assert_eq!(s.success, 312);
    // Bucket waits come from responses, so jitter only delays them: never a user 429.
    assert_eq!(s.user_429 + s.sub_limit_429, 0, "{s:#?}");
    assert_eq!(s.non_shared_429(), 0, "{s:#?}");
    // The storm on channel 100 is felt, and it is not held against the client.
    assert!(s.shared_429 >= 1);
    assert_eq!(s.invalid_requests, 0);
    assert_eq!(s.requests, report.requests);
    // No client can finish before the limits allow.
    assert!(
        report.elapsed >= scenario.lower_bound(),
        "{:?}",
        report.elapsed
    );
    // The simulator kept every limit: no fixed window ever admitted more than its limit.
    for b in &s.buckets {
        assert!(b.utilisation() <= 1.0, "{b:?}");
    }
    let g = &s.global[0];
    assert!(g.peak_in_period() <= 50, "{}", g.peak_in_period());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fire_all_is_rate_limited_then_banned_on_mixed() {
    let _one = ONE_AT_A_TIME.lock().await;
    let scenario = Scenario::mixed();
    let sim = Simulator::start(scenario.config.clone()).await.unwrap();
    let report = reference::fire_all(&sim.base_url(), DEFAULT_TOKEN, &scenario.operations).await;
    let s = sim.stats();
    assert!(s.global_429 > 0, "{s:#?}");
    assert_eq!(s.bans, 1);
    assert!(s.banned);
    assert!(s.cloudflare_429 > 0);
    assert!(report.failed > 0 && report.succeeded < 312, "{report:?}");
    // Little more than one global window got through before the ban.
    assert!(s.success <= 2 * 50, "{}", s.success);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_does_not_learn_hits_the_sub_limit_once_per_window() {
    let _one = ONE_AT_A_TIME.lock().await;
    let scenario = Scenario::sublimit();
    let sim = Simulator::start(scenario.config.clone()).await.unwrap();
    let report =
        reference::serial_per_bucket(&sim.base_url(), DEFAULT_TOKEN, &scenario.operations, None)
            .await;
    let s = sim.stats();
    assert_eq!(report.succeeded, 10);
    // Renames 0, 1 pass; 2 is held (429, Remaining > 0), passes after the wait and opens the next
    // sub-window with 5; 6 is held again; 7 passes with it.
    assert_eq!(s.sub_limit_429, 2, "{s:#?}");
    assert_eq!(s.user_429, 0);
    assert!(report.elapsed >= scenario.lower_bound());
}
