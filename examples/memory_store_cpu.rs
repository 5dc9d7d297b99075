//! A fixed number of checks on one side of `benches/memory.rs`, for measuring CPU time per check on a
//! loaded machine, where criterion's wall-clock figures also count time spent preempted.
//!
//! ```text
//! cargo build --release --example memory_store_cpu
//! perf stat -e task-clock target/release/examples/memory_store_cpu ours 20000000 100000
//! ```
//!
//! Arguments: the side (`ours` = `MemoryStore<u64, Gcra>` on `SystemClock`; `governor` = governor 0.10
//! keyed, default DashMap store and clock; `ours-fixed-now` = our store at a fixed time, no clock read;
//! `clock` = `SystemClock::now` alone), the number of checks, and the number of keys (default 1, visited
//! in a precomputed random order). The program prints wall ns per check; run it once more with 0 checks
//! for the setup's task-clock, so `(task-clock − setup task-clock) / checks` is the CPU time per check.
//! The side asked for is filled with every key before timing, with the quota of the bench (1/s, burst 10⁹:
//! every check is allowed).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::hint::black_box;
use std::num::NonZeroU32;
use std::time::Instant;

use ratelimit_core::{Clock, Gcra, MemoryStore, Quota, SystemClock};

fn main() {
    let mut args = std::env::args().skip(1);
    let side = args.next().unwrap_or_else(|| "ours".to_owned());
    let checks: u64 = args
        .next()
        .map_or(10_000_000, |s| s.parse().expect("checks"));
    let keys: u64 = args.next().map_or(1, |s| s.parse().expect("keys")).max(1);

    let mut order: Vec<u64> = (0..keys).collect();
    let mut x = 0x9E37_79B9_7F4A_7C15u64;
    for i in (1..order.len()).rev() {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        order.swap(i, (x % (i as u64 + 1)) as usize);
    }

    let gcra = Gcra::new(Quota::per_second(1).burst(1_000_000_000).build().unwrap());
    let store = MemoryStore::<u64, Gcra>::builder()
        .max_keys((keys as usize * 2).max(1_000))
        .build();
    let quota = governor::Quota::per_second(NonZeroU32::new(1).unwrap())
        .allow_burst(NonZeroU32::new(1_000_000_000).unwrap());
    let governor = governor::DefaultKeyedRateLimiter::<u64>::keyed(quota);
    let setup = Instant::now();
    for &k in &order {
        match side.as_str() {
            "governor" => assert!(governor.check_key(&k).is_ok()),
            _ => assert!(store.check(&gcra, &k, 1).unwrap().is_allowed()),
        }
    }
    let setup = setup.elapsed();
    let clock = SystemClock::new();
    let now = store.clock().now();

    let start = Instant::now();
    let mut allowed = 0u64;
    let mut i = 0;
    for _ in 0..checks {
        let k = order[i];
        i = if i + 1 == order.len() { 0 } else { i + 1 };
        let ok = match side.as_str() {
            "ours" => store.check(&gcra, black_box(&k), 1).unwrap().is_allowed(),
            "ours-fixed-now" => store
                .check_at(&gcra, black_box(&k), 1, black_box(now))
                .unwrap()
                .is_allowed(),
            "governor" => governor.check_key(black_box(&k)).is_ok(),
            "clock" => black_box(clock.now()) > 0,
            other => panic!("unknown side {other:?}: use ours, ours-fixed-now, governor or clock"),
        };
        allowed += u64::from(ok);
    }
    let elapsed = start.elapsed();
    println!(
        "{side}: {keys} keys, {checks} checks ({allowed} allowed): {:.1} ns/check wall; setup {:.0} ms wall",
        elapsed.as_nanos() as f64 / checks.max(1) as f64,
        setup.as_secs_f64() * 1e3,
    );
}
