//! The tower layer's own cost per request, in process: no sockets, the same request every time, the
//! service driven directly (every future here completes on its first poll).
//!
//! Compared side by side in one run: no layer, `tower_governor` 0.8 (peer-IP key; with and without its
//! `x-ratelimit-*` headers) and ours (in-memory store, peer-IP key, IETF `RateLimit`/`RateLimit-Policy`
//! headers; with and without the decision-latency histogram). Both enforce the same GCRA quota, one unit per
//! 3.6 µs with a burst of 10⁹, so every request is admitted: this measures the admitted path, which is
//! what a healthy server runs.
//!
//! ```sh
//! cargo bench --bench tower
//! TOWER_BENCH_LOOP=1 target/release/deps/tower-* --bench      # plain timing loop, no criterion
//! TOWER_BENCH_SERVE=ours target/release/deps/tower-* --bench  # axum hello-world on 127.0.0.1:3999 for wrk
//! ```

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
use ratelimit::core::{Policy, PolicySet, Quota};
use ratelimit::tower::RateLimitLayer;
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
    // Both layers read a bare SocketAddr extension (axum's ConnectInfo works too).
    req.extensions_mut().insert(peer);
    req
}

fn inner(
) -> impl Service<Request<Body>, Response = Response<Body>, Error = Infallible, Future = impl Send> + Clone
{
    tower::service_fn(|_req: Request<Body>| async {
        Ok::<_, Infallible>(Response::new(Body::from("hello")))
    })
}

fn bench<S>(c: &mut Criterion, name: &str, mut svc: S)
where
    S: Service<Request<Body>>,
    S::Error: std::fmt::Debug,
{
    // Check once that the service is ready and admits the request.
    now(std::future::poll_fn(|cx| svc.poll_ready(cx))).unwrap_or_else(|e| panic!("{e:?}"));
    c.bench_function(name, |b| {
        b.iter_batched(
            request,
            |req| {
                // Dropped here, so dropping the response (and its headers) is part of the cost.
                black_box(now(svc.call(req)).is_ok())
            },
            BatchSize::SmallInput,
        )
    });
}

fn ours(latency: bool, ietf: bool) -> RateLimitLayer {
    let quota = Quota::per_second(1_000_000)
        .burst(1_000_000_000)
        .build()
        .unwrap_or_else(|e| panic!("{e}"));
    let policy = Policy::gcra("burst", quota).unwrap_or_else(|e| panic!("{e}"));
    RateLimitLayer::builder()
        .policies(PolicySet::new([policy]).unwrap_or_else(|e| panic!("{e}")))
        .decision_latency_histogram(latency)
        .ietf_headers(ietf)
        .build()
        .unwrap_or_else(|e| panic!("{e}"))
}

fn layers(c: &mut Criterion) {
    bench(c, "tower/no_layer", inner());

    let gov = tower_governor::governor::GovernorConfigBuilder::default()
        .period(Duration::from_nanos(3_600))
        .burst_size(1_000_000_000)
        .finish()
        .unwrap_or_else(|| panic!("governor config"));
    bench(
        c,
        "tower/tower_governor",
        tower_governor::GovernorLayer::new(Arc::new(gov)).layer(inner()),
    );

    let gov_headers = tower_governor::governor::GovernorConfigBuilder::default()
        .period(Duration::from_nanos(3_600))
        .burst_size(1_000_000_000)
        .use_headers()
        .finish()
        .unwrap_or_else(|| panic!("governor config"));
    bench(
        c,
        "tower/tower_governor_headers",
        tower_governor::GovernorLayer::new(Arc::new(gov_headers)).layer(inner()),
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
fn plain_loop<S>(name: &str, mut svc: S)
where
    S: Service<Request<Body>>,
    S::Error: std::fmt::Debug,
{
    now(std::future::poll_fn(|cx| svc.poll_ready(cx))).unwrap_or_else(|e| panic!("{e:?}"));
    let n = std::env::var("TOWER_BENCH_LOOP_N")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200_000);
    let mut best = f64::MAX;
    for _ in 0..5 {
        let reqs: Vec<_> = (0..n).map(|_| request()).collect();
        let start = std::time::Instant::now();
        for r in reqs {
            black_box(now(svc.call(r)).is_ok());
        }
        best = best.min(start.elapsed().as_nanos() as f64 / n as f64);
    }
    println!("{name:<45} {best:>8.1} ns/request (best of 5 x {n})");
}

/// Serves an axum hello-world on `addr` with the layer `which` (`none`, `governor`, `ours`), for an
/// end-to-end load test with wrk; runs until killed.
fn serve(which: &str, addr: &str) {
    use axum::routing::get;
    let app = axum::Router::new().route("/", get(|| async { "hello" }));
    let app = match which {
        "none" => app,
        "governor" => {
            let gov = tower_governor::governor::GovernorConfigBuilder::default()
                .period(Duration::from_nanos(3_600))
                .burst_size(1_000_000_000)
                .finish()
                .unwrap_or_else(|| panic!("governor config"));
            app.layer(tower_governor::GovernorLayer::new(Arc::new(gov)))
        }
        "ours" => app.layer(ours(true, true)),
        other => panic!("unknown layer {other:?}: use none, governor or ours"),
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
        // One row alone (for callgrind: `TOWER_BENCH_LOOP=<row> valgrind --tool=callgrind ...`).
        match only.to_str() {
            Some("ours") => {
                plain_loop("loop/ours_ietf_headers", ours(true, true).layer(inner()));
                return;
            }
            Some("ours_no_histogram") => {
                plain_loop(
                    "loop/ours_ietf_headers_no_histogram",
                    ours(false, true).layer(inner()),
                );
                return;
            }
            Some("none") => {
                plain_loop("loop/no_layer", inner());
                return;
            }
            Some("governor") => {
                let gov = tower_governor::governor::GovernorConfigBuilder::default()
                    .period(Duration::from_nanos(3_600))
                    .burst_size(1_000_000_000)
                    .finish()
                    .unwrap_or_else(|| panic!("governor config"));
                plain_loop(
                    "loop/tower_governor",
                    tower_governor::GovernorLayer::new(Arc::new(gov)).layer(inner()),
                );
                return;
            }
            _ => {}
        }
        plain_loop("loop/no_layer", inner());
        let gov = tower_governor::governor::GovernorConfigBuilder::default()
            .period(Duration::from_nanos(3_600))
            .burst_size(1_000_000_000)
            .finish()
            .unwrap_or_else(|| panic!("governor config"));
        plain_loop(
            "loop/tower_governor",
            tower_governor::GovernorLayer::new(Arc::new(gov)).layer(inner()),
        );
        plain_loop("loop/ours_ietf_headers", ours(true, true).layer(inner()));
        plain_loop(
            "loop/ours_ietf_headers_no_histogram",
            ours(false, true).layer(inner()),
        );
        plain_loop(
            "loop/ours_no_headers_no_histogram",
            ours(false, false).layer(inner()),
        );
        return;
    }
    let mut c = Criterion::default()
        .measurement_time(Duration::from_secs(4))
        .warm_up_time(Duration::from_secs(1))
        .configure_from_args();
    layers(&mut c);
    c.final_summary();
}
