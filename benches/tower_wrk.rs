//! The tower layer end to end over loopback HTTP, measured with `wrk`, side by side in one run with no
//! layer, `tower_governor` 0.8 (in memory) and the naive Redis middleware most services write (a
//! per-request `redis::Script` GCRA over a multiplexed connection, 429 on denial).
//!
//! Rows: `none`; `headers_only` (not a limiter: a layer that only appends the two IETF fields, rendered
//! per request — what sending them costs any layer, on the wire and in hyper as much as in the layer);
//! `governor` (tower_governor, peer-IP key, its default: no headers); `governor_headers` (the same with
//! its `x-ratelimit-*` headers, the like-for-like peer); `ours` (in-memory store, peer-IP key, IETF
//! headers); `ours_no_headers` (the same without headers, like tower_governor's default);
//! `naive_redis`; `ours_redis` (the Redis store, the same layer). Each
//! row serves an axum hello-world on a free loopback port from this process (tokio, 2 worker threads,
//! `into_make_service_with_connect_info`), warms up with `wrk` for 1 s, then measures `wrk -t2 -c64` for
//! `RL_BENCH_SECS` (default 5) seconds and reports requests/s, the ratio to no layer, and CPU µs per
//! request of this process (the server) and of `redis-server`. `RL_BENCH_ROWS=ours,governor` runs only
//! those rows.
//!
//! A shared 2-core machine drifts by tens of percent over minutes (the no-layer row alone moved between
//! 117k and 154k requests/s in one session), so one long run per row settles nothing. Rows run in short
//! slices, in turn, for `RL_BENCH_ROUNDS` rounds (default 8), each round starting one row later than the
//! last (no row always follows the same one); every ratio is taken within a round, and the summary gives
//! each ratio's median and range over the rounds.
//! Every limiter keys on the peer address (all of wrk's connections come from 127.0.0.1: one hot key)
//! with the same GCRA quota — one unit per 3.6 µs (4 µs in the naive script's integer microseconds) with
//! a burst of 10⁹ — so every request is admitted (a non-2xx answer fails the row): the path a healthy
//! server runs.
//!
//! ```sh
//! cargo bench --bench tower_wrk --features redis    # needs wrk and redis-server on the PATH
//! # server and load generator on separate CPUs (the server's rows then measure the server alone):
//! RL_BENCH_WRK_CPUS=1 taskset -c 0 target/release/deps/tower_wrk-* --bench
//! ```
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "support/cpu.rs"]
mod cpu;
#[path = "support/peers.rs"]
mod peers;
use ratelimit_test_support::redis_server;

use std::net::SocketAddr;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{ConnectInfo, Request, State};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use cpu::cpu_micros;
use http::StatusCode;
use ratelimit_core::store::redis::RedisStore;
use ratelimit_tower::RateLimitLayer;
use redis::aio::MultiplexedConnection;
use redis_server::RedisServer;

const NAIVE_GCRA: &str = include_str!("support/naive_gcra.lua");

/// The naive script's emission interval in µs (ours: 3.6 µs, `Quota::per_hour(10⁹)`); burst 10⁹ for both.
const INTERVAL_MICROS: u64 = 4;

#[derive(Clone)]
struct Naive {
    conn: MultiplexedConnection,
    script: Arc<redis::Script>,
}

/// The naive middleware: one `redis::Script` call per request, keyed by the peer address.
async fn naive(
    State(naive): State<Naive>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    req: Request,
    next: Next,
) -> Response {
    let mut conn = naive.conn.clone();
    let reply: Result<Vec<i64>, _> = naive
        .script
        .key(format!("naive:{}", peer.ip()))
        .arg(INTERVAL_MICROS)
        .arg(INTERVAL_MICROS * 1_000_000_000)
        .arg(1u64)
        .invoke_async(&mut conn)
        .await;
    match reply {
        Ok(r) if r.first() == Some(&1) => next.run(req).await,
        Ok(_) => StatusCode::TOO_MANY_REQUESTS.into_response(),
        Err(_) => StatusCode::SERVICE_UNAVAILABLE.into_response(),
    }
}

async fn app(row: &str, redis_url: &str) -> Router {
    let hello = Router::new().route("/", get(|| async { "hello" }));
    match row {
        "none" => hello,
        "governor" => hello.layer(peers::governor()),
        "governor_headers" => hello.layer(peers::governor_headers()),
        "headers_only" => hello.layer(peers::headers_only(true)),
        "ours" => hello.layer(RateLimitLayer::new(peers::policies()).unwrap()),
        "ours_no_headers" => hello.layer(
            RateLimitLayer::builder()
                .policies(peers::policies())
                .ietf_headers(false)
                .build()
                .unwrap(),
        ),
        "naive_redis" => {
            let client = redis::Client::open(redis_url).unwrap();
            let conn = client.get_multiplexed_async_connection().await.unwrap();
            let state = Naive {
                conn,
                script: Arc::new(redis::Script::new(NAIVE_GCRA)),
            };
            hello.layer(middleware::from_fn_with_state(state, naive))
        }
        "ours_redis" => {
            let store = RedisStore::builder().connect(redis_url).await.unwrap();
            let layer = RateLimitLayer::with_store(store)
                .policies(peers::policies())
                .build()
                .unwrap();
            hello.layer(layer)
        }
        other => panic!("unknown row {other}"),
    }
}

/// Requests/s from wrk's output.
fn wrk(addr: SocketAddr, secs: u64) -> f64 {
    let args = [
        "-t2".to_owned(),
        "-c64".to_owned(),
        format!("-d{secs}s"),
        format!("http://{addr}/"),
    ];
    // `RL_BENCH_WRK_CPUS=1`: wrk runs on those CPUs only (`taskset -c`), e.g. with the bench itself started
    // under `taskset -c 0`, so the load generator no longer takes its CPU from the server.
    let out = match std::env::var("RL_BENCH_WRK_CPUS") {
        Ok(cpus) => Command::new("taskset")
            .args(["-c", &cpus, "wrk"])
            .args(&args)
            .output(),
        Err(_) => Command::new("wrk").args(&args).output(),
    }
    .expect("wrk");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        !text.contains("Non-2xx"),
        "a row answered something other than 200:\n{text}"
    );
    text.lines()
        .find_map(|l| l.strip_prefix("Requests/sec:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no Requests/sec in wrk's output:\n{text}"))
}

fn main() {
    // Under `cargo test --all-targets` (no `--bench`), only check that every row builds and answers.
    let bench = std::env::args().any(|a| a == "--bench");
    if bench && Command::new("wrk").arg("--version").output().is_err() {
        eprintln!("tower_wrk: wrk is not installed (apt-get install wrk); nothing measured");
        return;
    }
    let secs: u64 = std::env::var("RL_BENCH_SECS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5);
    let rounds: usize = std::env::var("RL_BENCH_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(8);
    let server = RedisServer::start();
    let redis_pid = server.pid().to_string();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    // `RL_BENCH_ROWS=ours` (comma-separated) runs only those rows, e.g. under a profiler.
    let only = std::env::var("RL_BENCH_ROWS").unwrap_or_default();
    let rows: Vec<&str> = [
        "none",
        "headers_only",
        "governor",
        "governor_headers",
        "ours",
        "ours_no_headers",
        "naive_redis",
        "ours_redis",
    ]
    .into_iter()
    .filter(|r| only.is_empty() || only.split(',').any(|o| o == *r))
    .collect();
    println!("wrk -t2 -c64 -d{secs}s, {rounds} round(s); requests/s, CPU µs/request [server + redis-server]");
    // Per row and round: requests/s and CPU µs per request (server, redis-server).
    let mut results: Vec<Vec<(f64, f64, f64)>> = vec![Vec::new(); rows.len()];
    for round in 1..=rounds {
        for k in 0..rows.len() {
            let i = (k + round - 1) % rows.len();
            let row = rows[i];
            let listener = rt
                .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
                .unwrap();
            let addr = listener.local_addr().unwrap();
            let router = rt.block_on(app(row, &server.url()));
            let task = rt.spawn(async move {
                axum::serve(
                    listener,
                    router.into_make_service_with_connect_info::<SocketAddr>(),
                )
                .await
                .unwrap();
            });
            if !bench {
                let status = rt.block_on(async {
                    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
                    use tokio::io::{AsyncReadExt, AsyncWriteExt};
                    s.write_all(b"GET / HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
                        .await
                        .unwrap();
                    let mut buf = Vec::new();
                    s.read_to_end(&mut buf).await.unwrap();
                    String::from_utf8_lossy(&buf)
                        .lines()
                        .next()
                        .unwrap_or("")
                        .to_owned()
                });
                assert!(status.contains("200"), "{row}: {status}");
                task.abort();
                continue;
            }
            wrk(addr, 1);
            let (c0, r0) = (cpu_micros("self"), cpu_micros(&redis_pid));
            let rate = wrk(addr, secs);
            let (c1, r1) = (cpu_micros("self"), cpu_micros(&redis_pid));
            task.abort();
            let n = rate * secs as f64;
            let (cpu, redis_cpu) = ((c1 - c0) / n, (r1 - r0) / n);
            println!("round {round} | {row:11} | {rate:>9.0} req/s | [{cpu:.1} + {redis_cpu:.1}]");
            results[i].push((rate, cpu, redis_cpu));
            std::thread::sleep(Duration::from_millis(300));
        }
        if !bench {
            return;
        }
    }
    summary(&rows, &results);
}

/// The median and range over the rounds of each row's requests/s, CPU per request, and its ratios to
/// each reference row (no layer, headers only, both tower_governor rows, the naive Redis middleware)
/// taken within each round.
fn summary(rows: &[&str], results: &[Vec<(f64, f64, f64)>]) {
    let stats = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        let median = match v.len() {
            0 => f64::NAN,
            n if n % 2 == 1 => v[n / 2],
            n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
        };
        let lo = v.first().copied().unwrap_or(f64::NAN);
        let hi = v.last().copied().unwrap_or(f64::NAN);
        format!("{median:.3} [{lo:.3}–{hi:.3}]")
    };
    let refs: Vec<usize> = [
        "none",
        "headers_only",
        "governor",
        "governor_headers",
        "naive_redis",
    ]
    .iter()
    .filter_map(|name| rows.iter().position(|r| r == name))
    .collect();
    let rounds = results.first().map_or(0, Vec::len);
    println!("\nsummary over {rounds} rounds: median [min–max]");
    for (row, r) in rows.iter().zip(results) {
        println!("{row}:");
        println!(
            "  req/s (k)              {}",
            stats(r.iter().map(|x| x.0 / 1000.0).collect())
        );
        println!(
            "  server CPU µs/req      {}",
            stats(r.iter().map(|x| x.1).collect())
        );
        println!(
            "  redis-server CPU µs/req {}",
            stats(r.iter().map(|x| x.2).collect())
        );
        for &i in refs.iter().filter(|&&i| rows[i] != *row) {
            let ratios = r.iter().zip(&results[i]).map(|(a, b)| a.0 / b.0).collect();
            println!("  ÷ {:<20} {}", rows[i], stats(ratios));
        }
    }
}
