//! Exactness under concurrency: many threads checking the same keys of one [`MemoryStore`] admit exactly
//! what one thread would, for every algorithm and for a two-policy set.
//!
//! The store's clock is a [`ManualClock`] that does not move during a test, so the expected count does not
//! depend on timing: with every attempt at the same instant, a rule admits exactly its capacity.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[macro_use]
mod common;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Barrier;
use std::thread;
use std::time::Duration;

use common::quota;
use ratelimit_core::{ManualClock, MemoryStore, Micros, Rule};

const THREADS: usize = 4;
const T0: Micros = 987_654_321;

/// Units passed at once by the rules of `for_every_algorithm!` over a quota with this limit.
fn capacity_of(name: &str, limit: u64) -> u64 {
    if name == "shaper_delaying" {
        2 * limit
    } else {
        limit
    }
}

fn store_for<R: Rule>() -> MemoryStore<u64, R, ManualClock> {
    MemoryStore::builder().clock(ManualClock::new(T0)).build()
}

/// Cost-1 checks on `key` until one is denied; how many passed.
fn drain<R: Rule>(store: &MemoryStore<u64, R, ManualClock>, rule: &R, key: u64) -> u64 {
    let mut n = 0;
    while store.check(rule, &key, 1).unwrap().is_allowed() {
        n += 1;
        assert!(n < 100_000);
    }
    n
}

fn one_hot_key<R: Rule + Sync>(name: &str, rule: R) {
    const ATTEMPTS: usize = 500;
    let limit = 100;
    let expected = capacity_of(name, limit);

    // The serial answer first.
    let mut s = R::State::default();
    let serial = (0..THREADS * ATTEMPTS)
        .filter(|_| rule.check(&mut s, T0, 1).is_allowed())
        .count() as u64;
    assert_eq!(serial, expected, "{name}: serial");

    let store = store_for::<R>();
    let admitted = AtomicU64::new(0);
    let barrier = Barrier::new(THREADS);
    thread::scope(|scope| {
        for _ in 0..THREADS {
            scope.spawn(|| {
                barrier.wait();
                for _ in 0..ATTEMPTS {
                    if store.check(&rule, &7, 1).unwrap().is_allowed() {
                        admitted.fetch_add(1, Ordering::Relaxed);
                    }
                }
            });
        }
    });
    assert_eq!(
        admitted.load(Ordering::Relaxed),
        expected,
        "{name}: {THREADS} threads × {ATTEMPTS} attempts on one key"
    );
    assert_eq!(drain(&store, &rule, 7), 0, "{name}: capacity left over");
    assert_eq!(store.len(), 1);
}

#[test]
fn threads_on_one_key_admit_exactly_the_capacity_for_every_algorithm() {
    for_every_algorithm!(quota(100, Duration::from_secs(1)), one_hot_key);
}

/// Mixed costs: which requests pass depends on the interleaving, but the units charged plus the units still
/// free must add up to the capacity exactly.
fn mixed_costs<R: Rule + Sync>(name: &str, rule: R) {
    const ATTEMPTS: u64 = 300;
    let limit = 100;
    let store = store_for::<R>();
    let units = AtomicU64::new(0);
    let barrier = Barrier::new(THREADS);
    thread::scope(|scope| {
        for t in 0..THREADS as u64 {
            let (store, rule, units, barrier) = (&store, &rule, &units, &barrier);
            scope.spawn(move || {
                barrier.wait();
                for i in 0..ATTEMPTS {
                    let cost = 1 + (i + t) % 3;
                    if store.check(rule, &1, cost).unwrap().is_allowed() {
                        units.fetch_add(cost, Ordering::Relaxed);
                    }
                }
            });
        }
    });
    let charged = units.load(Ordering::Relaxed);
    let left = drain(&store, &rule, 1);
    assert_eq!(
        charged + left,
        capacity_of(name, limit),
        "{name}: {charged} units charged concurrently, {left} left"
    );
    assert!(
        left <= 2,
        "{name}: {left} units left although requests of cost ≤ 3 kept coming"
    );
}

#[test]
fn threads_with_mixed_costs_charge_exactly_the_capacity_for_every_algorithm() {
    for_every_algorithm!(quota(100, Duration::from_secs(1)), mixed_costs);
}

fn many_keys<R: Rule + Sync>(name: &str, rule: R) {
    const KEYS: u64 = 64;
    const ROUNDS: u64 = 40;
    let limit = 20;
    let store = store_for::<R>();
    let admitted: Vec<AtomicU64> = (0..KEYS).map(|_| AtomicU64::new(0)).collect();
    let barrier = Barrier::new(THREADS);
    thread::scope(|scope| {
        for t in 0..THREADS as u64 {
            let (store, rule, admitted, barrier) = (&store, &rule, &admitted, &barrier);
            scope.spawn(move || {
                barrier.wait();
                for round in 0..ROUNDS {
                    for i in 0..KEYS {
                        // Each thread walks the keys in its own order.
                        let key = (i * (2 * t + 1) + round) % KEYS;
                        if store.check(rule, &key, 1).unwrap().is_allowed() {
                            admitted[key as usize].fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
            });
        }
    });
    for (key, n) in admitted.iter().enumerate() {
        assert_eq!(
            n.load(Ordering::Relaxed),
            capacity_of(name, limit),
            "{name}: key {key}"
        );
    }
    assert_eq!(store.len(), KEYS as usize, "{name}");
}

#[test]
fn threads_over_many_keys_admit_exactly_the_capacity_of_each_for_every_algorithm() {
    for_every_algorithm!(quota(20, Duration::from_secs(1)), many_keys);
}
