//! The in-memory store against governor 0.10, side by side in one run.
//!
//! Rows (each measured for us — [`MemoryStore`] with [`Gcra`], `u64` keys, [`SystemClock`] — and for
//! governor — `RateLimiter::direct` and `RateLimiter::keyed` with its default DashMap store and default
//! quanta clock): one hot key; 100,000 keys; 1,000,000 keys in a precomputed random order; 2 threads on one
//! hot key; 2 threads over 1,000 keys; inserting new keys; and bytes per key from RSS (`/proc/self/statm`),
//! each side in a fresh process of this same binary. The other algorithms (and a 2-policy [`PolicySet`])
//! are measured on the hot-key and 100k-key rows.
//!
//! Each check's answer is reduced to "allowed?" on both sides (`Decision::is_allowed`, governor's
//! `is_ok`) before it reaches criterion's `black_box`, so neither side pays for the harness consuming a
//! large value.
//!
//! Both sides enforce the same quota, 1 per second with a burst of 10⁹: every check in a run is allowed
//! (the check path is measured, not the denial path), and a key stays limiting for at least a second after
//! its last hit, so a prefilled table keeps every key and the rows measure lookups, not inserts.
//!
//! `cargo bench --bench memory -- --warm-up-time 1 --measurement-time 3`
//!
//! Without `--bench` (as under `cargo test --all-targets`), criterion runs each row once and the large
//! rows shrink to 10,000 keys, so the test path stays fast.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::hint::black_box;
use std::num::NonZeroU32;
use std::process::Command;
use std::sync::Barrier;
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, Throughput};
use governor::{Quota as GovQuota, RateLimiter};
use ratelimit_core::{
    FixedWindow, Gcra, LeakyBucket, MemoryStore, Policy, PolicySet, Quota, Rule, Shaper,
    SlidingLog, SlidingWindow, SystemClock, TokenBucket,
};

/// Set in the environment of a child process that measures bytes per key for one side.
const CHILD_ENV: &str = "RATELIMIT_BENCH_BYTES_CHILD";
/// The burst of the shared quota: large enough that no row ever runs out.
const BURST: u32 = 1_000_000_000;

fn bench_mode() -> bool {
    std::env::args().any(|a| a == "--bench")
}

/// The key counts of the 100k and 1M rows, shrunk when criterion only tests the benches once.
fn sizes() -> (u64, u64) {
    if bench_mode() {
        (100_000, 1_000_000)
    } else {
        (10_000, 10_000)
    }
}

fn our_quota() -> Quota {
    Quota::per_second(1)
        .burst(u64::from(BURST))
        .build()
        .unwrap()
}

fn gov_quota() -> GovQuota {
    GovQuota::per_second(NonZeroU32::new(1).unwrap()).allow_burst(NonZeroU32::new(BURST).unwrap())
}

/// Our store sized for `keys` keys (the cap is never what limits a row).
fn our_store<R: Rule>(keys: u64) -> MemoryStore<u64, R> {
    let max = usize::try_from(keys).unwrap().max(1_000) * 2;
    MemoryStore::<u64, R>::builder().max_keys(max).build()
}

type GovKeyed = governor::DefaultKeyedRateLimiter<u64>;

/// A deterministic permutation of `0..n` (xorshift-driven Fisher–Yates), computed before timing.
fn shuffled(n: u64) -> Vec<u64> {
    let mut v: Vec<u64> = (0..n).collect();
    let mut x = 0x9E37_79B9_7F4A_7C15u64;
    for i in (1..v.len()).rev() {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let j = (x % (i as u64 + 1)) as usize;
        v.swap(i, j);
    }
    v
}

fn prefill_ours<R: Rule>(rule: &R, keys: u64) -> MemoryStore<u64, R> {
    let store = our_store::<R>(keys);
    for k in 0..keys {
        store.check(rule, &k, 1).unwrap();
    }
    assert_eq!(store.len() as u64, keys, "prefill must hold every key");
    store
}

fn prefill_gov(keys: u64) -> GovKeyed {
    let lim = RateLimiter::keyed(gov_quota());
    for k in 0..keys {
        lim.check_key(&k).unwrap();
    }
    assert_eq!(lim.len() as u64, keys, "prefill must hold every key");
    lim
}

/// Cycles through `order` one key per iteration.
#[inline]
fn next_key(order: &[u64], i: &mut usize) -> u64 {
    let k = order[*i];
    *i += 1;
    if *i == order.len() {
        *i = 0;
    }
    k
}

fn single_thread(c: &mut Criterion) {
    let (n100k, n1m) = sizes();
    let gcra = Gcra::new(our_quota());

    let mut g = c.benchmark_group("hot_key");
    g.throughput(Throughput::Elements(1));
    {
        let store = our_store::<Gcra>(1);
        g.bench_function("ours_gcra", |b| {
            b.iter(|| {
                store
                    .check(&gcra, black_box(&7u64), 1)
                    .unwrap()
                    .is_allowed()
            })
        });
        let lim = RateLimiter::keyed(gov_quota());
        g.bench_function("governor_keyed", |b| {
            b.iter(|| lim.check_key(black_box(&7u64)).is_ok())
        });
        let direct = RateLimiter::direct(gov_quota());
        g.bench_function("governor_direct", |b| b.iter(|| direct.check().is_ok()));
    }
    g.finish();

    // Where the time goes: each side's clock read alone, and our store at a fixed time (no clock read).
    let mut g = c.benchmark_group("parts");
    g.throughput(Throughput::Elements(1));
    {
        use governor::clock::Clock as _;
        use ratelimit_core::Clock as _;
        let ours = SystemClock::new();
        g.bench_function("ours_clock_now", |b| b.iter(|| black_box(&ours).now()));
        g.bench_function("std_instant_now", |b| b.iter(Instant::now));
        let theirs = governor::clock::DefaultClock::default();
        g.bench_function("governor_clock_now", |b| {
            b.iter(|| black_box(&theirs).now())
        });
        let store = our_store::<Gcra>(1);
        let now = store.clock().now();
        g.bench_function("ours_gcra_fixed_now", |b| {
            b.iter(|| {
                store
                    .check_at(&gcra, black_box(&7u64), 1, black_box(now))
                    .unwrap()
                    .is_allowed()
            })
        });
    }
    g.finish();

    for (name, n, random) in [("keys_100k", n100k, false), ("keys_1m_random", n1m, true)] {
        let order = if random {
            shuffled(n)
        } else {
            (0..n).collect()
        };
        let mut g = c.benchmark_group(name);
        g.throughput(Throughput::Elements(1));
        {
            let store = prefill_ours(&gcra, n);
            let mut i = 0;
            g.bench_function("ours_gcra", |b| {
                b.iter(|| {
                    let k = next_key(&order, &mut i);
                    store.check(&gcra, &k, 1).unwrap().is_allowed()
                })
            });
            assert_eq!(
                store.len() as u64,
                n,
                "the row must not have inserted or dropped keys"
            );
        }
        {
            let lim = prefill_gov(n);
            let mut i = 0;
            g.bench_function("governor_keyed", |b| {
                b.iter(|| {
                    let k = next_key(&order, &mut i);
                    lim.check_key(&k).is_ok()
                })
            });
        }
        g.finish();
    }

    // Each sample inserts `iters` never-seen keys into a fresh limiter (built and dropped untimed), in
    // chunks of at most a million keys per limiter.
    let mut g = c.benchmark_group("insert_new_keys");
    g.throughput(Throughput::Elements(1));
    const CHUNK: u64 = 1_000_000;
    g.bench_function("ours_gcra", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            let mut left = iters;
            while left > 0 {
                let n = left.min(CHUNK);
                let store = our_store::<Gcra>(CHUNK);
                let start = Instant::now();
                for k in 0..n {
                    store.check(&gcra, &k, 1).unwrap();
                }
                total += start.elapsed();
                debug_assert_eq!(store.len() as u64, n);
                drop(store);
                left -= n;
            }
            total
        })
    });
    g.bench_function("governor_keyed", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            let mut left = iters;
            while left > 0 {
                let n = left.min(CHUNK);
                let lim: GovKeyed = RateLimiter::keyed(gov_quota());
                let start = Instant::now();
                for k in 0..n {
                    let _ = black_box(lim.check_key(&k));
                }
                total += start.elapsed();
                drop(lim);
                left -= n;
            }
            total
        })
    });
    g.finish();
}

/// Runs `op(thread, i)` for `i in 0..iters` on two threads at once; returns the wall time divided by two,
/// so the figure is wall-clock time per check of the pair's combined throughput.
fn two_threads(iters: u64, op: impl Fn(usize, u64) + Sync) -> Duration {
    let barrier = Barrier::new(3);
    std::thread::scope(|s| {
        for t in 0..2 {
            let (barrier, op) = (&barrier, &op);
            s.spawn(move || {
                barrier.wait();
                for i in 0..iters {
                    op(t, i);
                }
                barrier.wait();
            });
        }
        barrier.wait();
        let start = Instant::now();
        barrier.wait();
        start.elapsed() / 2
    })
}

fn multi_thread(c: &mut Criterion) {
    let gcra = Gcra::new(our_quota());
    let mut g = c.benchmark_group("threads2_hot_key");
    g.throughput(Throughput::Elements(1));
    {
        let store = our_store::<Gcra>(1);
        g.bench_function("ours_gcra", |b| {
            b.iter_custom(|iters| {
                two_threads(iters, |_, _| {
                    black_box(
                        store
                            .check(&gcra, black_box(&7u64), 1)
                            .unwrap()
                            .is_allowed(),
                    );
                })
            })
        });
        let lim = RateLimiter::keyed(gov_quota());
        g.bench_function("governor_keyed", |b| {
            b.iter_custom(|iters| {
                two_threads(iters, |_, _| {
                    black_box(lim.check_key(black_box(&7u64)).is_ok());
                })
            })
        });
        let direct = RateLimiter::direct(gov_quota());
        g.bench_function("governor_direct", |b| {
            b.iter_custom(|iters| {
                two_threads(iters, |_, _| {
                    black_box(direct.check().is_ok());
                })
            })
        });
    }
    g.finish();

    // Two threads walk the same 1,000 keys in different random orders.
    let orders = [shuffled(1_000), {
        let mut o = shuffled(1_000);
        o.reverse();
        o
    }];
    let mut g = c.benchmark_group("threads2_1k_keys");
    g.throughput(Throughput::Elements(1));
    {
        let store = prefill_ours(&gcra, 1_000);
        g.bench_function("ours_gcra", |b| {
            b.iter_custom(|iters| {
                two_threads(iters, |t, i| {
                    let k = orders[t][(i % 1_000) as usize];
                    black_box(store.check(&gcra, &k, 1).unwrap().is_allowed());
                })
            })
        });
        let lim = prefill_gov(1_000);
        g.bench_function("governor_keyed", |b| {
            b.iter_custom(|iters| {
                two_threads(iters, |t, i| {
                    let k = orders[t][(i % 1_000) as usize];
                    black_box(lim.check_key(&k).is_ok());
                })
            })
        });
    }
    g.finish();
}

/// The hot-key and 100k-key rows for one rule.
fn rule_rows<R: Rule>(c: &mut Criterion, name: &str, rule: &R, n100k: u64) {
    let mut g = c.benchmark_group("algorithms");
    g.throughput(Throughput::Elements(1));
    let store = our_store::<R>(1);
    g.bench_function(BenchmarkId::new(name, "hot_key"), |b| {
        b.iter(|| store.check(rule, black_box(&7u64), 1).unwrap().is_allowed())
    });
    drop(store);
    let store = prefill_ours(rule, n100k);
    let mut i = 0;
    g.bench_function(BenchmarkId::new(name, "keys_100k"), |b| {
        b.iter(|| {
            let k = i;
            i = if i + 1 == n100k { 0 } else { i + 1 };
            store.check(rule, &k, 1).unwrap().is_allowed()
        })
    });
    g.finish();
}

fn algorithms(c: &mut Criterion) {
    let (n100k, _) = sizes();
    // The bucket algorithms take the shared quota. The window algorithms cannot have a burst and admit
    // at most one unit per µs, so they run at their fastest rate, 10⁶ per second: the 100k-key row is
    // allowed, the hot key (tens of millions of checks a second) mostly limited.
    let window = Quota::per_second(1_000_000).build().unwrap();
    rule_rows(c, "gcra", &Gcra::new(our_quota()), n100k);
    rule_rows(c, "token_bucket", &TokenBucket::new(our_quota()), n100k);
    rule_rows(
        c,
        "leaky_bucket",
        &LeakyBucket::new(our_quota()).unwrap(),
        n100k,
    );
    rule_rows(
        c,
        "shaper",
        &Shaper::new(our_quota(), Duration::from_secs(1)),
        n100k,
    );
    rule_rows(c, "fixed_window", &FixedWindow::new(window).unwrap(), n100k);
    rule_rows(
        c,
        "sliding_window",
        &SlidingWindow::new(window).unwrap(),
        n100k,
    );
    rule_rows(c, "sliding_log", &SlidingLog::new(window).unwrap(), n100k);
    let set = PolicySet::new([
        Policy::gcra("burst", our_quota()).unwrap(),
        Policy::token_bucket("sustained", our_quota()).unwrap(),
    ])
    .unwrap();
    rule_rows(c, "policy_set_2", &set, n100k);
}

/// Resident set size in bytes, from `/proc/self/statm` (second field, in pages).
fn rss_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap();
    let pages: u64 = statm.split_whitespace().nth(1).unwrap().parse().unwrap();
    pages * 4096
}

/// In a child process: fill one side with `n` keys and print the RSS growth per key.
fn bytes_child(spec: &str) {
    let (side, n) = spec.split_once(':').unwrap();
    let n: u64 = n.parse().unwrap();
    // Keys stay limiting for an hour, so nothing can be swept while filling.
    let before = rss_bytes();
    let held = match side {
        "ours" => {
            let gcra = Gcra::new(Quota::per_hour(1).burst(1_000).build().unwrap());
            let store = MemoryStore::<u64, Gcra>::builder()
                .max_keys(usize::try_from(n).unwrap().max(1_000_000) * 11 / 10)
                .build();
            for k in 0..n {
                store.check(&gcra, &k, 1).unwrap();
            }
            let len = store.len() as u64;
            let after = rss_bytes();
            std::mem::forget(store);
            (len, after)
        }
        "governor" => {
            let q = GovQuota::per_hour(NonZeroU32::new(1).unwrap())
                .allow_burst(NonZeroU32::new(1_000).unwrap());
            let lim: GovKeyed = RateLimiter::keyed(q);
            for k in 0..n {
                lim.check_key(&k).unwrap();
            }
            let len = lim.len() as u64;
            let after = rss_bytes();
            std::mem::forget(lim);
            (len, after)
        }
        other => panic!("unknown side {other}"),
    };
    let (len, after) = held;
    assert_eq!(len, n, "{side} must hold every key");
    println!("{:.1}", (after - before) as f64 / n as f64);
}

/// Bytes per key for each side and key count, each in a fresh process of this binary.
fn bytes_per_key() {
    let counts: &[u64] = if bench_mode() {
        &[500_000, 750_000, 1_000_000]
    } else {
        &[10_000]
    };
    let exe = std::env::current_exe().unwrap();
    println!("bytes per key from RSS (fresh process per figure; ours bounded at max_keys = 1.1 × max(n, 1M)):");
    for &n in counts {
        let mut line = format!("  {n:>9} keys:");
        for side in ["ours", "governor"] {
            let out = Command::new(&exe)
                .env(CHILD_ENV, format!("{side}:{n}"))
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "child failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            let figure = String::from_utf8_lossy(&out.stdout).trim().to_owned();
            line.push_str(&format!("  {side} {figure} B/key"));
        }
        println!("{line}");
    }
}

/// Criterion's positional arguments (benchmark filters), skipping the values of its options.
fn filters() -> Vec<String> {
    const WITH_VALUE: &[&str] = &[
        "--warm-up-time",
        "--measurement-time",
        "--sample-size",
        "--nresamples",
        "--noise-threshold",
        "--confidence-level",
        "--significance-level",
        "--save-baseline",
        "--baseline",
        "--baseline-lenient",
        "--load-baseline",
        "--profile-time",
        "--output-format",
        "--color",
        "--plotting-backend",
        "--format",
        "-s",
        "-b",
        "-c",
    ];
    let mut out = Vec::new();
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        if WITH_VALUE.contains(&a.as_str()) {
            args.next();
        } else if !a.starts_with('-') {
            out.push(a);
        }
    }
    out
}

fn main() {
    if let Ok(spec) = std::env::var(CHILD_ENV) {
        bytes_child(&spec);
        return;
    }
    let filters = filters();
    if filters.is_empty() || filters.iter().any(|f| "bytes_per_key".contains(f.as_str())) {
        bytes_per_key();
    }
    let mut c = Criterion::default().configure_from_args();
    single_thread(&mut c);
    multi_thread(&mut c);
    algorithms(&mut c);
    c.final_summary();
}
