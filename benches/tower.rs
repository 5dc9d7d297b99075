//! The tower layer's own cost per request, in process: no sockets, the same request every time, the
//! service driven directly (every future here completes on its first poll).
//!
//! Compared side by side in one run: no layer, `tower_governor` 0.8 (peer-IP key; with and without its
//! `x-ratelimit-*` headers) and ours (in-memory store, peer-IP key, IETF `RateLimit`/`RateLimit-Policy`
//! headers; with and without the decision-latency histogram). Both enforce the same GCRA quota, one unit per
//! 3.6 µs with a burst of 10⁹, so every request is admitted (checked: a row whose first answer is not
//! 200 panics): this measures the admitted path, which is what a healthy server runs.
//!
//! ```sh
//! cargo bench --bench tower
//! TOWER_BENCH_LOOP=all target/release/deps/tower-* --bench    # plain timing loop, every row, no criterion
//! TOWER_BENCH_LOOP=ours TOWER_BENCH_LOOP_N=20000 valgrind --tool=callgrind target/release/deps/tower-* --bench
//!     # one row alone: none, headers_static, headers_formatted, governor, governor_headers, ours,
//!     # ours_no_histogram, ours_no_headers, ours_info, ours_prometheus
//! TOWER_BENCH_LOOP=all TOWER_BENCH_THREADS=2 target/release/deps/tower-* --bench
//!     # and the rows again on 2 threads, each cloning the service per request as axum does
//! TOWER_BENCH_SERVE=ours target/release/deps/tower-* --bench  # axum hello-world on 127.0.0.1:3999 for wrk
//! ```

#[path = "support/peers.rs"]
mod peers;

use std::convert::Infallible;
use std::future::Future;
use std::hint::black_box;
use std::net::SocketAddr;
use std::pin::pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use axum::body::Body;
use criterion::{BatchSize, Criterion};
use http::{Request, Response};
use ratelimit_tower::RateLimitLayer;
use tower::{Layer, Service};

/// Polls a future that is known to complete immediately.
fn now<F: Future>(f: F) -> F::Output {
    let mut f = pin!(f);
    match f.as_mut().poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(v) => v,
        Poll::Pending => panic!("benchmarked future did not complete on its first poll"),
    }
}

fn request() -> Request<Body> {
    let peer: SocketAddr = "203.0.113.7:41000"
        .parse()
        .unwrap_or_else(|_| unreachable!());
    let mut req = Request::new(Body::empty());
    *req.uri_mut() = "/hello".parse().unwrap_or_else(|_| unreachable!());
    // What curl sends (a request with no header at all would make every header look-up free).
    for (name, value) in [
        (http::header::HOST, "127.0.0.1:3999"),
        (http::header::USER_AGENT, "curl/8.5.0"),
        (http::header::ACCEPT, "*/*"),
    ] {
        req.headers_mut()
            .insert(name, http::HeaderValue::from_static(value));
    }
    // What `into_make_service_with_connect_info::<SocketAddr>()` inserts. tower_governor's
    // `PeerIpKeyExtractor` reads only this (with a bare `SocketAddr` it answers 500 without checking
    // anything, which is what the rows before 2026-11-23 measured); ours reads it first.
    req.extensions_mut()
        .insert(axum::extract::ConnectInfo(peer));
    req
}

fn inner(
) -> impl Service<Request<Body>, Response = Response<Body>, Error = Infallible, Future = impl Send> + Clone
{
    // What an axum hello-world handler (`get(|| async { "hello" })`) answers: a body and a
    // `content-type`, so the response's header map is allocated by the handler (before 2026-11-23 the
    // rows used a response with no header, and the first layer to add one paid for the map).
    tower::service_fn(|_req: Request<Body>| async {
        Ok::<_, Infallible>(axum::response::IntoResponse::into_response("hello"))
    })
}

fn bench<S, B>(c: &mut Criterion, name: &str, mut svc: S)
where
    S: Service<Request<Body>, Response = Response<B>>,
    S::Error: std::fmt::Debug,
{
    // Check once that the service is ready and admits the request.
    now(std::future::poll_fn(|cx| svc.poll_ready(cx))).unwrap_or_else(|e| panic!("{e:?}"));
    let res = now(svc.call(request())).unwrap_or_else(|e| panic!("{e:?}"));
    assert_eq!(res.status(), 200, "{name}: every request must be admitted");
    c.bench_function(name, |b| {
        b.iter_batched(
            request,
            |req| {
                // Dropped here, so dropping the response (and its headers) is part of the cost.
                black_box(now(svc.call(req)).is_ok_and(|r| r.status() == 200))
            },
            BatchSize::SmallInput,
        )
    });
}

fn ours(latency: bool, ietf: bool) -> RateLimitLayer {
    ours_info(latency, ietf, false)
}

/// `info`: whether admitted requests carry a `RateLimitInfo` extension (off by default).
fn ours_info(latency: bool, ietf: bool, info: bool) -> RateLimitLayer {
    RateLimitLayer::builder()
        .policies(peers::policies())
        .decision_latency_histogram(latency)
        .ietf_headers(ietf)
        .rate_limit_info(info)
        .build()
        .unwrap_or_else(|e| panic!("{e}"))
}

/// The rows `TOWER_BENCH_LOOP` runs alone.
const LOOP_ROWS: [&str; 10] = [
    "none",
    "headers_static",
    "headers_formatted",
    "governor",
    "governor_headers",
    "ours",
    "ours_no_histogram",
    "ours_no_headers",
    "ours_info",
    "ours_prometheus",
];

fn layers(c: &mut Criterion) {
    bench(c, "tower/no_layer", inner());

    bench(c, "tower/tower_governor", peers::governor().layer(inner()));
    bench(
        c,
        "tower/tower_governor_headers",
        peers::governor_headers().layer(inner()),
    );

    bench(
        c,
        "tower/ours_ietf_headers",
        ours(true, true).layer(inner()),
    );
    bench(
        c,
        "tower/ours_ietf_headers_no_histogram",
        ours(false, true).layer(inner()),
    );
    bench(c, "tower/ours_no_headers", ours(true, false).layer(inner()));

    // For the breakdown: the store check alone (what the layer adds on top of it is key extraction,
    // tier lookup, header rendering and the response future).
    let layer = ours(false, false);
    let set = layer.tiers().get().default_policies().clone();
    let store = layer.store();
    let key = b"rl\x00\x34\x04\xcb\x00\x71\x07";
    c.bench_function("tower/store_check_only", |b| {
        b.iter(|| black_box(store.check(&set, &key[..], 1).map(|d| d.is_allowed())))
    });
}

/// A plain timing loop over pre-built requests (no criterion batching), for a second opinion.
fn plain_loop<S, B>(name: &str, mut svc: S)
where
    S: Service<Request<Body>, Response = Response<B>>,
    S::Error: std::fmt::Debug,
{
    now(std::future::poll_fn(|cx| svc.poll_ready(cx))).unwrap_or_else(|e| panic!("{e:?}"));
    // Say what the row's responses carry, so rows are compared knowingly.
    let fut = svc.call(request());
    let size = std::mem::size_of_val(&fut);
    let res = now(fut).unwrap_or_else(|e| panic!("{e:?}"));
    let fields: Vec<_> = res
        .headers()
        .iter()
        .map(|(k, v)| format!("{k}: {}", v.to_str().unwrap_or("?")))
        .collect();
    println!(
        "{name}: {} {} (response future: {size} bytes)",
        res.status(),
        fields.join(" | ")
    );
    assert_eq!(res.status(), 200, "{name}: every request must be admitted");
    let n = loop_n();
    let mut best = f64::MAX;
    for _ in 0..5 {
        let elapsed = timed(n, |r| {
            black_box(now(svc.call(r)).is_ok());
        });
        best = best.min(elapsed.as_nanos() as f64 / n as f64);
    }
    println!("{name:<45} {best:>8.1} ns/request (best of 5 x {n})");
}

/// Requests per pass of the timing loops (`TOWER_BENCH_LOOP_N`, default 200 000).
fn loop_n() -> usize {
    std::env::var("TOWER_BENCH_LOOP_N")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200_000)
}

/// The time `call` takes over `n` fresh requests. Requests are built (untimed) in batches small enough to
/// stay in cache: building all of them first made the timed loop free tens of megabytes, and the
/// allocator's churn swamped the layers' cost.
fn timed(n: usize, mut call: impl FnMut(Request<Body>)) -> Duration {
    const BATCH: usize = 256;
    let mut elapsed = Duration::ZERO;
    let mut done = 0;
    while done < n {
        let batch = BATCH.min(n - done);
        let reqs: Vec<_> = (0..batch).map(|_| request()).collect();
        let start = std::time::Instant::now();
        for r in reqs {
            call(r);
        }
        elapsed += start.elapsed();
        done += batch;
    }
    elapsed
}

/// The plain loop on `threads` threads at once, each calling a fresh clone of the service per request,
/// as axum's `Router` does (it clones a route's service stack for every request): what a layer's shared
/// state costs when worker threads contend for it (reference counts, locks, one hot key), without the
/// sockets and the load generator that make the wrk bench noisy. Reports wall time per request per
/// thread (equal to the plain loop's figure when nothing is contended).
fn threaded_loop<S, B>(name: &str, svc: S, threads: usize)
where
    S: Service<Request<Body>, Response = Response<B>> + Clone + Send + 'static,
    S::Error: std::fmt::Debug,
{
    let n = loop_n();
    let mut best = f64::MAX;
    for _ in 0..5 {
        let barrier = Arc::new(std::sync::Barrier::new(threads));
        let handles: Vec<_> = (0..threads)
            .map(|_| {
                let svc = svc.clone();
                let barrier = barrier.clone();
                std::thread::spawn(move || {
                    barrier.wait();
                    timed(n, |r| {
                        let mut svc = svc.clone();
                        let ok = now(svc.call(r)).is_ok_and(|r| r.status() == 200);
                        assert!(ok, "every request must be admitted");
                    })
                })
            })
            .collect();
        let slowest = handles
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|_| panic!("bench thread panicked")))
            .max()
            .unwrap_or_default();
        best = best.min(slowest.as_nanos() as f64 / n as f64);
    }
    println!("{name:<45} {best:>8.1} ns/request ({threads} threads, clone per request, best of 5 x {n} each)");
}

/// Serves an axum hello-world on `addr` with the layer `which` (`none`, `governor`, `governor_headers`, `ours`), for an
/// end-to-end load test with wrk; runs until killed.
fn serve(which: &str, addr: &str) {
    use axum::routing::get;
    let app = axum::Router::new().route("/", get(|| async { "hello" }));
    let app = match which {
        "none" => app,
        "governor" => app.layer(peers::governor()),
        "governor_headers" => app.layer(peers::governor_headers()),
        "ours" => app.layer(ours(true, true)),
        other => panic!("unknown layer {other:?}: use none, governor, governor_headers or ours"),
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap_or_else(|e| panic!("{e}"));
    rt.block_on(async {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        axum::serve(
            listener,
            app.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    });
}

/// Runs every row (criterion's command-line arguments apply, e.g. a filter).
fn main() {
    if let Some(which) = std::env::var_os("TOWER_BENCH_SERVE") {
        let addr =
            std::env::var("TOWER_BENCH_ADDR").unwrap_or_else(|_| "127.0.0.1:3999".to_owned());
        serve(&which.to_string_lossy(), &addr);
        return;
    }
    if let Some(only) = std::env::var_os("TOWER_BENCH_LOOP") {
        // One row alone (for callgrind: `TOWER_BENCH_LOOP=<row> valgrind --tool=callgrind ...`), or every
        // row in turn for any other value.
        let only = only.to_str().unwrap_or("");
        let all = !LOOP_ROWS.contains(&only);
        let run = |row: &str| all || only == row;
        if run("none") {
            plain_loop("loop/no_layer", inner());
        }
        if run("headers_static") {
            plain_loop(
                "loop/headers_only_static",
                peers::headers_only(false).layer(inner()),
            );
        }
        if run("headers_formatted") {
            plain_loop(
                "loop/headers_only_formatted",
                peers::headers_only(true).layer(inner()),
            );
        }
        if run("governor") {
            plain_loop("loop/tower_governor", peers::governor().layer(inner()));
        }
        if run("governor_headers") {
            plain_loop(
                "loop/tower_governor_headers",
                peers::governor_headers().layer(inner()),
            );
        }
        if run("ours") {
            plain_loop("loop/ours_ietf_headers", ours(true, true).layer(inner()));
        }
        if run("ours_no_histogram") {
            plain_loop(
                "loop/ours_ietf_headers_no_histogram",
                ours(false, true).layer(inner()),
            );
        }
        if run("ours_no_headers") {
            plain_loop(
                "loop/ours_no_headers_no_histogram",
                ours(false, false).layer(inner()),
            );
        }
        if run("ours_info") {
            // The default layer with the `RateLimitInfo` extension: what handing the decision to every
            // handler costs.
            plain_loop(
                "loop/ours_ietf_headers_info",
                ours_info(true, true, true).layer(inner()),
            );
        }
        if run("ours_prometheus") {
            // The default layer again, with a Prometheus recorder installed (this thread's), as a server that
            // exports its metrics runs it: every counter and histogram update then reaches a registry.
            let recorder = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();
            metrics::with_local_recorder(&recorder, || {
                plain_loop(
                    "loop/ours_ietf_headers_prometheus_recorder",
                    ours(true, true).layer(inner()),
                )
            });
        }
        // `TOWER_BENCH_THREADS=2`: the same rows again on that many threads, cloning per request.
        let threads: usize = std::env::var("TOWER_BENCH_THREADS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        if threads > 0 {
            if run("none") {
                threaded_loop("threads/no_layer", inner(), threads);
            }
            if run("governor") {
                threaded_loop(
                    "threads/tower_governor",
                    peers::governor().layer(inner()),
                    threads,
                );
            }
            if run("governor_headers") {
                threaded_loop(
                    "threads/tower_governor_headers",
                    peers::governor_headers().layer(inner()),
                    threads,
                );
            }
            if run("ours") {
                threaded_loop(
                    "threads/ours_ietf_headers",
                    ours(true, true).layer(inner()),
                    threads,
                );
            }
        }
        return;
    }
    let mut c = Criterion::default()
        .measurement_time(Duration::from_secs(4))
        .warm_up_time(Duration::from_secs(1))
        .configure_from_args();
    layers(&mut c);
    c.final_summary();
}
