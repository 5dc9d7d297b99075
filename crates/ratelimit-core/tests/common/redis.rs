//! Redis stores for the integration tests: one on a manual clock, and a breaker brought to its probe.

use std::sync::Arc;
use std::time::Duration;

use ratelimit_core::{
    ManualClock, Micros, PolicySet, RedisClock, RedisStore, RedisStoreBuilder, Store,
};
use ratelimit_test_support::redis_server::RedisServer;

/// A manual clock's start: late 2026 in Unix microseconds, so that scripts see times at full size (Lua's
/// doubles) and Redis state carries realistic ones.
pub const EPOCH: Micros = 1_795_000_000_000_000;
/// A loopback redis-server answers in microseconds: a call reaches this only when it hangs, so a loaded
/// machine never turns into a timeout (and a fallback) in a test that is not about timeouts.
pub const HANG_ONLY_TIMEOUT: Duration = Duration::from_secs(5);
/// Keys outlive their state by this much: the manual clock may run far from the server's, which sets
/// the TTLs, and no key may expire under a test.
pub const TTL_SLACK_FOR_MANUAL_TIME: Duration = Duration::from_secs(600);
/// Failed calls after which a breaker that has not opened never will.
const CALLS_TO_OPEN_AT_MOST: usize = 100;
/// Tokio's timers have a millisecond's resolution: past the cooldown by this much, it has passed.
const TIMER_RESOLUTION: Duration = Duration::from_millis(10);

/// A store builder whose time is `clock` (client-time mode), with a timeout only a hang reaches.
pub fn on_manual_clock(clock: &ManualClock) -> RedisStoreBuilder {
    RedisStore::builder()
        .timeout(HANG_ONLY_TIMEOUT)
        .clock(RedisClock::Client {
            clock: Arc::new(clock.clone()),
            ttl_slack: TTL_SLACK_FOR_MANUAL_TIME,
        })
}

/// A store builder with one coalescing slot: the first call goes out, every later one queues behind it
/// for a batch. Its timeout only a hang reaches, so queueing tests never see one.
pub fn one_slot() -> RedisStoreBuilder {
    RedisStore::builder()
        .timeout(HANG_ONLY_TIMEOUT)
        .max_in_flight(1)
}

/// Pauses `server`, fails checks of `set` on `store` until its breaker opens, then waits out `cooldown`
/// (the store's own): the next call is the half-open probe. The server is left paused.
pub async fn due_for_a_probe(
    store: &RedisStore,
    server: &RedisServer,
    set: &PolicySet,
    cooldown: Duration,
) {
    server.pause();
    for i in 0..CALLS_TO_OPEN_AT_MOST {
        if store.is_degraded() {
            break;
        }
        let _ = Store::<str, PolicySet>::check(store, set, &format!("trip{i}"), 1).await;
    }
    assert!(store.is_degraded(), "the breaker opened on a paused Redis");
    // Time has to pass here, not a condition to come: only the cooldown's end makes a call the probe.
    tokio::time::sleep(cooldown + TIMER_RESOLUTION).await;
}
