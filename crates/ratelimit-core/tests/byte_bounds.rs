//! Memory bounded in bytes, not just in entries, under a flood of distinct hostile identities (long and
//! never repeated): the hybrid store's lease table and the in-memory store's per-key cost. Live heap
//! bytes are measured with a counting global allocator (this binary's own), and compared with a budget
//! computed from the structures' sizes.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use ratelimit_test_support::alloc::{self, Counting};
use std::mem::size_of;
use std::sync::Mutex;
use std::time::Duration;

use ratelimit_core::policy::AnyState;
use ratelimit_core::store::redis::HybridStore;
use ratelimit_core::{Decision, ManualClock, MemoryStore, Policy, PolicySet, Quota, Store};
use ratelimit_test_support::redis_server::RedisServer;

mod common;
use common::redis::{on_manual_clock, EPOCH};

#[global_allocator]
static ALLOC: Counting = Counting;

/// The tests of this binary measure one global counter: they take turns.
static MEASURING: Mutex<()> = Mutex::new(());

fn live() -> isize {
    alloc::live_bytes()
}

/// The buckets a hashbrown table needs for `n` entries (it keeps at most 7/8 of them full).
fn buckets(n: usize) -> usize {
    (n * 8 / 7 + 1).next_power_of_two()
}

/// Long enough that a copy per identity would dwarf any budget below; short enough to hash quickly.
const HOSTILE_KEY_BYTES: usize = 4_096;

fn hostile_key(i: usize) -> Vec<u8> {
    let mut key = format!("{i:>12}").into_bytes();
    key.resize(HOSTILE_KEY_BYTES, b'x');
    key
}

/// A lease table entry: a 16-byte identity hash and an 8-byte set id, then the lease (a decision, two
/// counters and a tag).
const LEASE_ENTRY_BYTES: usize = 24 + size_of::<Decision>() + 24;

/// What the Redis client may keep between calls (its buffers), beyond the table under test.
const REDIS_CLIENT_SLACK: usize = 256 * 1024;

/// What the test harness's own threads (collecting other tests' output, tearing down a finished test's
/// runtime) may allocate while a test measures.
const HARNESS_SLACK: usize = 64 * 1024;

#[test]
fn hybrid_lease_table_stays_within_its_byte_budget_under_a_flood_of_identities() {
    let _turn = MEASURING.lock().unwrap_or_else(|p| p.into_inner());
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(hybrid_flood());
}

async fn hybrid_flood() {
    const MAX_LEASES: usize = 300;
    const IDENTITIES: usize = 8 * MAX_LEASES;
    let server = RedisServer::start();
    let clock = ManualClock::new(EPOCH);
    let redis = on_manual_clock(&clock)
        .connect(&server.url())
        .await
        .unwrap();
    // Leases live for an hour of the manual clock: none expires during the flood.
    let hybrid = HybridStore::with_clock(redis, 10, Duration::from_secs(3_600), clock)
        .max_leases(MAX_LEASES);
    let set = PolicySet::new([Policy::gcra("g", Quota::per_second(100).build().unwrap()).unwrap()])
        .unwrap();
    // Warm the connection (its buffers are not the table's).
    Store::<[u8], PolicySet>::check(&hybrid, &set, b"warm-up", 1)
        .await
        .unwrap();
    let before = live();
    for i in 0..IDENTITIES {
        let key = hostile_key(i);
        let d = Store::<[u8], PolicySet>::check(&hybrid, &set, &key, 1).await;
        assert!(d.unwrap().is_allowed());
    }
    let grown = live() - before;
    let stats = hybrid.lease_stats();
    let table_budget = buckets(MAX_LEASES) * (LEASE_ENTRY_BYTES + 1) + 64;
    println!(
        "{IDENTITIES} identities of {HOSTILE_KEY_BYTES} bytes, max_leases {MAX_LEASES}: {} entries, table {} bytes \
         (budget {table_budget}), live heap grew {grown} bytes",
        stats.entries, stats.table_bytes
    );
    assert!(stats.entries <= MAX_LEASES, "{} entries", stats.entries);
    assert!(
        stats.table_bytes <= table_budget,
        "table {} > {table_budget} bytes",
        stats.table_bytes
    );
    let budget = (table_budget + REDIS_CLIENT_SLACK + HARNESS_SLACK) as isize;
    assert!(
        grown <= budget,
        "live heap grew {grown} bytes, budget {budget}"
    );
}

/// The in-memory store's cost per key for the keys the tower layer gives it (at most
/// `ratelimit_tower::key::KEY_CAPACITY` = 128 bytes, long identities hashed): a table bucket, the key's
/// bytes and the policies' states.
#[test]
fn memory_store_per_key_bytes_stay_within_budget_at_its_cap() {
    const MAX_KEYS: usize = 4_096;
    const LAYER_KEY_BYTES: usize = 128;
    const FLOOD: usize = 8 * MAX_KEYS;
    let _turn = MEASURING.lock().unwrap_or_else(|p| p.into_inner());
    let clock = ManualClock::new(0);
    let set = PolicySet::new([
        Policy::gcra("burst", Quota::per_hour(10).build().unwrap()).unwrap(),
        Policy::fixed_window("daily", Quota::per_day(100).build().unwrap()).unwrap(),
    ])
    .unwrap();
    let before = live();
    let store = MemoryStore::<Vec<u8>, PolicySet, _>::builder()
        .max_keys(MAX_KEYS)
        .shards(4)
        .clock(clock.clone())
        .build();
    for i in 0..FLOOD {
        let mut key = hostile_key(i);
        key.truncate(LAYER_KEY_BYTES);
        store.check(&set, key.as_slice(), 1).unwrap();
        clock.advance_micros(1);
    }
    let grown = (live() - before) as usize;
    let bucket = size_of::<(Vec<u8>, ratelimit_core::PolicyStates)>() + 1;
    let per_key = LAYER_KEY_BYTES + set.len() * size_of::<AnyState>();
    // Each shard's table may be up to twice its share over 7/8 (a power of two), plus the shard array.
    let budget = 4 * buckets(MAX_KEYS / 4) * bucket + MAX_KEYS * per_key + HARNESS_SLACK;
    println!(
        "{} keys held of {} sent: live heap {grown} bytes, budget {budget} ({} a key)",
        store.len(),
        FLOOD,
        budget / MAX_KEYS
    );
    assert!(store.len() <= MAX_KEYS);
    assert!(grown <= budget, "{grown} > {budget} bytes");
}
