//! The Redis store, side by side in one run with the naive baseline and the server's ceiling.
//!
//! Rows, each at 1, 16, 64 and 256 concurrent tasks over **one** multiplexed connection, against a
//! `redis-server` this bench starts on a free loopback port (no persistence):
//!
//! * `RedisStore` with a one-policy [`PolicySet`] of each algorithm (decisions/s, p50, p99 latency),
//!   through `FCALL` (the default on Redis 7), and GCRA again through `EVALSHA`;
//! * the baseline most crates ship: a plain `redis::Script` GCRA (`invoke_async`, EVALSHA with redis-rs's
//!   NOSCRIPT fallback) over a `MultiplexedConnection`;
//! * the deny cache on a single-key flood (one limited key, every check denied), with and without the
//!   cache, with the number of Redis calls made;
//! * the ceiling: `redis-benchmark -c 50 -P 16 -r 10000` running our GCRA (`EVALSHA` and `FCALL`) and the
//!   baseline's `EVALSHA` straight at the server, parsed from its `--csv` output.
//!
//! Keys: 10,000 identities, quota 1,000 per second (burst 1,000) so nearly every check is admitted and the
//! admit path (which writes) is what is measured.
//!
//! `cargo bench --bench redis --features redis` (each cell runs `RL_BENCH_SECS`, default 2 s). Without
//! `--bench` (as under `cargo test --all-targets`) every cell runs 50 ms at 1 and 16 tasks only.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "support/cpu.rs"]
mod cpu;
use ratelimit_test_support::redis_server;

use std::future::Future;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use cpu::cpu_micros;
use ratelimit_core::store::redis::{
    function_name, script_sha, script_source, RedisStore, Scripting,
};
use ratelimit_core::{Policy, PolicySet, Quota, Store};
use redis_server::RedisServer;

const KEYS: usize = 10_000;

const BASELINE_GCRA: &str = include_str!("support/naive_gcra.lua");

struct Cell {
    rate: f64,
    p50: f64,
    p99: f64,
    /// CPU µs per decision: this process (client), then redis-server.
    cpu: (f64, f64),
}

/// redis-server's pid, for its CPU time.
static SERVER_PID: std::sync::OnceLock<u32> = std::sync::OnceLock::new();

fn cpu_pair() -> (f64, f64) {
    let server = SERVER_PID.get().map_or(0.0, |p| cpu_micros(&p.to_string()));
    (cpu_micros("self"), server)
}

/// Runs `tasks` tasks calling `op(task, i)` in a loop for `dur`; decisions/s and latency percentiles.
async fn measure<F, Fut>(tasks: usize, dur: Duration, op: F) -> Cell
where
    F: Fn(usize, usize) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = ()> + Send,
{
    let cpu0 = cpu_pair();
    let start = Instant::now();
    let deadline = start + dur;
    let mut handles = Vec::new();
    for t in 0..tasks {
        let op = op.clone();
        handles.push(tokio::spawn(async move {
            let mut lat = Vec::with_capacity(4096);
            let mut i = 0;
            loop {
                let s = Instant::now();
                if s >= deadline {
                    break;
                }
                op(t, i).await;
                lat.push(s.elapsed().as_nanos() as u64);
                i += 1;
            }
            lat
        }));
    }
    let mut all = Vec::new();
    for h in handles {
        all.extend(h.await.unwrap());
    }
    let elapsed = start.elapsed().as_secs_f64();
    let cpu1 = cpu_pair();
    let n = all.len().max(1) as f64;
    let cpu = ((cpu1.0 - cpu0.0) / n, (cpu1.1 - cpu0.1) / n);
    all.sort_unstable();
    let pct = |p: f64| all[((all.len() as f64 * p) as usize).min(all.len() - 1)] as f64 / 1000.0;
    Cell {
        rate: all.len() as f64 / elapsed,
        p50: pct(0.50),
        p99: pct(0.99),
        cpu,
    }
}

/// The baseline's row: the naive `redis::Script` GCRA over `conn` at each concurrency level.
async fn baseline_row<C>(
    conn: &C,
    script: &Arc<redis::Script>,
    levels: &[usize],
    dur: Duration,
    keys: &Arc<Vec<String>>,
) -> Vec<(usize, Cell)>
where
    C: redis::aio::ConnectionLike + Clone + Send + Sync + 'static,
{
    let (conn, script, keys) = (conn.clone(), script.clone(), keys.clone());
    measure_levels(levels, dur, move |t, i| {
        let mut conn = conn.clone();
        let script = script.clone();
        let key = format!("base:{}", keys[key_index(t, i)]);
        async move {
            let r: Vec<i64> = script
                .key(key)
                .arg(1_000u64)
                .arg(1_000_000u64)
                .arg(1u64)
                .invoke_async(&mut conn)
                .await
                .unwrap();
            std::hint::black_box(r);
        }
    })
    .await
}

/// One row: `store` checking `set` for the bench's identities at each concurrency level.
async fn store_row(
    store: &RedisStore,
    set: &PolicySet,
    levels: &[usize],
    dur: Duration,
    keys: &Arc<Vec<String>>,
) -> Vec<(usize, Cell)> {
    let (store, set, keys) = (store.clone(), set.clone(), keys.clone());
    measure_levels(levels, dur, move |t, i| {
        let (store, set, keys) = (store.clone(), set.clone(), keys.clone());
        async move {
            let d = Store::<str, PolicySet>::check(&store, &set, &keys[key_index(t, i)], 1)
                .await
                .unwrap();
            std::hint::black_box(d);
        }
    })
    .await
}

/// [`measure`] at each concurrency level in turn.
async fn measure_levels<F, Fut>(levels: &[usize], dur: Duration, op: F) -> Vec<(usize, Cell)>
where
    F: Fn(usize, usize) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = ()> + Send,
{
    let mut cells = Vec::new();
    for &n in levels {
        cells.push((n, measure(n, dur, op.clone()).await));
    }
    cells
}

fn key_index(t: usize, i: usize) -> usize {
    (t * 7919 + i * 104_729) % KEYS
}

fn print_row(name: &str, cells: &[(usize, Cell)]) {
    let mut line = format!("| {name} |");
    for (_, c) in cells {
        line.push_str(&format!(
            " {:.0} ({:.0} / {:.0}) [{:.1}+{:.1}] |",
            c.rate, c.p50, c.p99, c.cpu.0, c.cpu.1
        ));
    }
    println!("{line}");
}

fn redis_benchmark(port: u16, args: &[&str], requests: u64) -> Option<f64> {
    let out = Command::new("redis-benchmark")
        .args(["-h", "127.0.0.1", "-p", &port.to_string()])
        .args([
            "-c",
            "50",
            "-P",
            "16",
            "-r",
            "10000",
            "-n",
            &requests.to_string(),
            "--csv",
        ])
        .args(args)
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text.lines().nth(1)?;
    let field = line.split(',').nth(1)?;
    field.trim_matches('"').parse().ok()
}

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let secs: f64 = std::env::var("RL_BENCH_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(2.0);
    let dur = if full {
        Duration::from_secs_f64(secs)
    } else {
        Duration::from_millis(50)
    };
    let levels: &[usize] = if full { &[1, 16, 64, 256] } else { &[1, 16] };
    // `RL_BENCH_QUICK=1`: only the baseline and the GCRA rows (twice, interleaved, so that a noisy
    // machine shows its noise), no other algorithm, deny cache or ceiling: for iterating on the hot path.
    let quick = std::env::var("RL_BENCH_QUICK").is_ok_and(|v| v == "1");

    let server = RedisServer::start();
    let _ = SERVER_PID.set(server.pid());
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let keys: Arc<Vec<String>> = Arc::new((0..KEYS).map(|i| format!("user-{i}")).collect());
    let q = || Quota::per_second(1_000).burst(1_000).build().unwrap();
    let wq = || Quota::per_second(1_000).build().unwrap();
    let mut algorithms = vec![
        ("gcra", Policy::gcra("p", q()).unwrap()),
        ("token_bucket", Policy::token_bucket("p", q()).unwrap()),
        ("leaky_bucket", Policy::leaky_bucket("p", q()).unwrap()),
        ("shaper", Policy::shaper("p", q(), Duration::ZERO).unwrap()),
        ("fixed_window", Policy::fixed_window("p", wq()).unwrap()),
        ("sliding_log", Policy::sliding_log("p", wq()).unwrap()),
        ("sliding_window", Policy::sliding_window("p", wq()).unwrap()),
    ];
    if quick {
        algorithms.truncate(1);
    }

    println!("decisions/s (p50 / p99 µs) [CPU µs per decision: client + redis-server] at {levels:?} tasks, one multiplexed connection, {dur:?} per cell");
    let header: String = levels.iter().map(|l| format!(" {l} task(s) |")).collect();
    println!("| row |{header}");
    println!("|---|{}", "---|".repeat(levels.len()));

    // `RL_BENCH_IN_FLIGHT=n`: the store's max_in_flight (default: the store's own default).
    let in_flight: Option<usize> = std::env::var("RL_BENCH_IN_FLIGHT")
        .ok()
        .and_then(|v| v.parse().ok());
    rt.block_on(async {
        let mut builder = RedisStore::builder().timeout(Duration::from_secs(5));
        if let Some(n) = in_flight {
            builder = builder.max_in_flight(n);
        }
        let store = builder.connect(&server.url()).await.unwrap();
        // The same store with coalescing off: every decision its own call, as before coalescing.
        let single = RedisStore::builder()
            .timeout(Duration::from_secs(5))
            .max_in_flight(0)
            .connect(&server.url())
            .await
            .unwrap();

        // Baseline: redis::Script GCRA over one MultiplexedConnection.
        let client = redis::Client::open(server.url()).unwrap();
        let conn = client.get_multiplexed_async_connection().await.unwrap();
        let script = Arc::new(redis::Script::new(BASELINE_GCRA));
        for _round in 0..if quick { 2 } else { 1 } {
        let cells = baseline_row(&conn, &script, levels, dur, &keys).await;
        print_row("baseline: redis::Script GCRA", &cells);
        let baseline: Vec<f64> = cells.iter().map(|(_, c)| c.rate).collect();

        if quick {
            // Diagnostic: the same baseline over a ConnectionManager (what RedisStore holds), to separate
            // the connection's cost from the store's.
            let manager = redis::aio::ConnectionManager::new(client.clone()).await.unwrap();
            let cells = baseline_row(&manager, &script, levels, dur, &keys).await;
            print_row("baseline over a ConnectionManager", &cells);
        }

        for (name, policy) in algorithms.clone() {
            let set = PolicySet::new([policy]).unwrap();
            let cells = store_row(&store, &set, levels, dur, &keys).await;
            print_row(&format!("RedisStore {name}"), &cells);
            let ratios: Vec<String> = cells
                .iter()
                .zip(&baseline)
                .map(|((n, c), b)| format!("{n}: {:.2}x", c.rate / b))
                .collect();
            println!("ratio RedisStore {name} / baseline: {}", ratios.join(", "));
        }

        // GCRA with coalescing off (each decision its own call).
        let gcra = PolicySet::new([Policy::gcra("p", q()).unwrap()]).unwrap();
        let cells = store_row(&single, &gcra, levels, dur, &keys).await;
        print_row("RedisStore gcra, max_in_flight(0): no coalescing", &cells);

        }
        if quick {
            return;
        }

        // The same GCRA through EVALSHA (servers that refuse FUNCTION).
        let eval_store = RedisStore::builder()
            .timeout(Duration::from_secs(5))
            .scripting(Scripting::Eval)
            .connect(&server.url())
            .await
            .unwrap();
        let gcra_set = PolicySet::new([Policy::gcra("p", q()).unwrap()]).unwrap();
        let cells = store_row(&eval_store, &gcra_set, levels, dur, &keys).await;
        print_row("RedisStore gcra via EVALSHA", &cells);

        // Deny cache: one limited key flooded.
        let flood = PolicySet::new([Policy::gcra("p", Quota::per_hour(1).build().unwrap()).unwrap()]).unwrap();
        let cached = RedisStore::builder()
            .timeout(Duration::from_secs(5))
            .deny_cache(10_000)
            .connect(&server.url())
            .await
            .unwrap();
        let n = *levels.last().unwrap();
        for (label, s) in [("without deny cache", store.clone()), ("with deny cache", cached.clone())] {
            let before = s.stats().redis_calls;
            let (s2, f2) = (s.clone(), flood.clone());
            let cell = measure(n, dur, move |_, _| {
                let (s, f) = (s2.clone(), f2.clone());
                async move {
                    let d = Store::<str, PolicySet>::check(&s, &f, "flooded", 1).await.unwrap();
                    std::hint::black_box(d);
                    // A cache hit completes without awaiting anything: without a yield the spinning
                    // tasks would starve the connection's driver and the calls still in flight (a server
                    // yields between requests anyway).
                    tokio::task::yield_now().await;
                }
            })
            .await;
            println!(
                "| single-key flood, {label}, {n} tasks | {:.0} ({:.1} / {:.1}) | Redis calls: {} |",
                cell.rate,
                cell.p50,
                cell.p99,
                s.stats().redis_calls - before
            );
        }
    });

    // The ceiling: redis-benchmark straight at the server.
    if full {
        let gcra = PolicySet::new([Policy::gcra("p", q()).unwrap()]).unwrap();
        let sha = script_sha(&gcra);
        let ours = [
            "EVALSHA",
            sha,
            "1",
            "rl:{__rand_int__}:p:gcra",
            // The lean call RedisStore sends for one GCRA policy on server time: 'g', cost, T, tau, and
            // the call's token, which the script echoes.
            "g",
            "1",
            "1000",
            "1000000",
            "7",
        ];
        let requests = 400_000;
        server.cli(&["SCRIPT", "LOAD", script_source(&gcra)]);
        match redis_benchmark(server.port, &ours, requests) {
            Some(rps) => {
                println!("ceiling: redis-benchmark -c 50 -P 16 EVALSHA (our GCRA script): {rps:.0} req/s")
            }
            None => println!("ceiling: redis-benchmark not available or failed"),
        }
        // Through FCALL the lean path is its own function (`<function>_gcra`) and takes no 'g'.
        let lean = format!("{}_gcra", function_name(&gcra));
        let fcall = [
            "FCALL",
            lean.as_str(),
            "1",
            "rl:{__rand_int__}:p:gcra",
            "1",
            "1000",
            "1000000",
            "7",
        ];
        if let Some(rps) = redis_benchmark(server.port, &fcall, requests) {
            println!(
                "ceiling: redis-benchmark -c 50 -P 16 FCALL (our GCRA function): {rps:.0} req/s"
            );
        }
        let base_sha = redis::Script::new(BASELINE_GCRA).get_hash().to_owned();
        let base = [
            "EVALSHA",
            base_sha.as_str(),
            "1",
            "base:{__rand_int__}",
            "1000",
            "1000000",
            "1",
        ];
        if let Some(rps) = redis_benchmark(server.port, &base, requests) {
            println!(
                "ceiling: redis-benchmark -c 50 -P 16 EVALSHA (baseline GCRA): {rps:.0} req/s"
            );
        }
    }
}
