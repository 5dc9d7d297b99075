//! A tiered API server: free, pro and enterprise API keys, anonymous clients per IP, a global cap, an
//! expensive route, `/health`, and Prometheus `/metrics` — over the in-memory store, or Redis.
//!
//! ```sh
//! cargo run --example tiered_api                        # 127.0.0.1:3000, in memory
//! cargo run --example tiered_api -- --addr 127.0.0.1:8080 --tiers my-tiers.toml
//! REDIS_URL=redis://127.0.0.1:6379/ cargo run --example tiered_api
//! REDIS_URL=redis+cluster://127.0.0.1:7000,127.0.0.1:7001 cargo run --example tiered_api
//! ```
//!
//! Settings: `--addr` (or `ADDR`, default `127.0.0.1:3000`), `--tiers` (or `TIERS`, default
//! `examples/tiered_api/tiers.toml`), `REDIS_URL` (unset: in memory), `RUST_LOG` (default `info`; e.g.
//! `RUST_LOG=ratelimit_tower=debug` logs every decision).
//!
//! The tier file is read by the library (`ratelimit_tower::config::LayerConfig`, feature `serde`), which
//! validates it and names the path of a bad value; the router and the demo API keys live in `app.rs`,
//! which `tests/tiered_api.rs` also uses.

mod app;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use app::{describe, Config, StoreTarget};
use ratelimit_core::store::redis::RedisStore;
use ratelimit_core::MemoryStore;

const USAGE: &str = "usage: cargo run --example tiered_api -- [--addr HOST:PORT] [--tiers PATH]

  --addr HOST:PORT  where to listen (env ADDR; default 127.0.0.1:3000)
  --tiers PATH      the tier file (env TIERS; default examples/tiered_api/tiers.toml)
  -h, --help        this text

  REDIS_URL         keep the limits in Redis instead of in memory:
                      redis://host:port/db, redis+unix:///path               one server
                      redis+cluster://host1:port,host2:port                    a Redis Cluster
                      redis://host1:port,redis://host2:port                    a Redis Cluster too
  RUST_LOG          log filter (default info), e.g. ratelimit_tower=debug";

/// The command line and environment, resolved.
#[derive(Debug)]
struct Args {
    addr: SocketAddr,
    tiers: PathBuf,
}

/// Flags win over environment variables, which win over the defaults.
fn parse_args(
    mut argv: impl Iterator<Item = String>,
    env: impl Fn(&str) -> Option<String>,
) -> Result<Option<Args>, String> {
    let mut addr = env("ADDR").filter(|s| !s.is_empty());
    let mut tiers = env("TIERS").filter(|s| !s.is_empty());
    while let Some(arg) = argv.next() {
        let (flag, inline) = match arg.split_once('=') {
            Some((f, v)) if f.starts_with("--") => (f.to_owned(), Some(v.to_owned())),
            _ => (arg.clone(), None),
        };
        let slot = match flag.as_str() {
            "-h" | "--help" => return Ok(None),
            "--addr" => &mut addr,
            "--tiers" => &mut tiers,
            _ => return Err(format!("unknown argument {arg:?}\n\n{USAGE}")),
        };
        let value = match inline {
            Some(v) => v,
            None => argv
                .next()
                .ok_or_else(|| format!("{flag} needs a value\n\n{USAGE}"))?,
        };
        *slot = Some(value);
    }
    let addr = addr.unwrap_or_else(|| "127.0.0.1:3000".to_owned());
    // An IP and a port, or a host name and a port (`localhost:3000`: its first address).
    let addr: SocketAddr = match addr.parse() {
        Ok(a) => a,
        Err(_) => std::net::ToSocketAddrs::to_socket_addrs(addr.as_str())
            .ok()
            .and_then(|mut all| all.next())
            .ok_or_else(|| {
                format!("invalid address {addr:?} (from --addr or ADDR): write a host and a port, e.g. 127.0.0.1:3000, [::1]:3000 or localhost:3000")
            })?,
    };
    let tiers = tiers.map_or_else(
        || {
            PathBuf::from(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/examples/tiered_api/tiers.toml"
            ))
        },
        PathBuf::from,
    );
    Ok(Some(Args { addr, tiers }))
}

#[tokio::main]
async fn main() -> ExitCode {
    let filter = std::env::var("RUST_LOG").unwrap_or_else(|_| "info".to_owned());
    let filter: tracing_subscriber::filter::Targets = match filter.parse() {
        Ok(f) => f,
        Err(e) => {
            eprintln!("error: RUST_LOG={filter:?} is not a log filter ({e}): write e.g. info or ratelimit_tower=debug");
            return ExitCode::FAILURE;
        }
    };
    use tracing_subscriber::layer::SubscriberExt as _;
    use tracing_subscriber::util::SubscriberInitExt as _;
    tracing_subscriber::registry()
        .with(
            tracing_subscriber::fmt::layer()
                .with_writer(std::io::stderr)
                .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr())),
        )
        .with(filter)
        .init();

    match run().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run() -> Result<(), Box<dyn std::error::Error>> {
    let Some(args) = parse_args(std::env::args().skip(1), |k| std::env::var(k).ok())? else {
        println!("{USAGE}");
        return Ok(());
    };
    let config = Config::load(&args.tiers)?;
    let metrics = app::prometheus()?;
    // Without the exporter's own HTTP listener, histograms are compacted by calling upkeep ourselves.
    let upkeep = metrics.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(5));
        loop {
            tick.tick().await;
            upkeep.run_upkeep();
        }
    });

    let target = app::store_target(std::env::var("REDIS_URL").ok().as_deref())?;
    let ((router, reloader), store_name) = match &target {
        StoreTarget::Memory => (
            app::router(&config, MemoryStore::new(), metrics)?,
            "in memory (this process only; set REDIS_URL to share limits between processes)"
                .to_owned(),
        ),
        StoreTarget::Redis(url) => {
            let store = connect(app::redis_store().connect(url), url).await?;
            (
                app::router(&config, store, metrics)?,
                format!("Redis at {}", redact(url)),
            )
        }
        StoreTarget::Cluster(nodes) => {
            let seeds: Vec<&str> = nodes.iter().map(String::as_str).collect();
            let shown = nodes
                .iter()
                .map(|n| redact(n))
                .collect::<Vec<_>>()
                .join(", ");
            let store = connect(app::redis_store().connect_cluster(&seeds), &shown).await?;
            (
                app::router(&config, store, metrics)?,
                format!("Redis Cluster via {shown}"),
            )
        }
    };

    let listener = tokio::net::TcpListener::bind(args.addr)
        .await
        .map_err(|e| {
            format!(
                "cannot listen on {}: {e} (pick another with --addr 127.0.0.1:3001 or ADDR)",
                args.addr
            )
        })?;
    let addr = listener.local_addr()?;
    print_banner(&config, &args, addr, &store_name);
    tracing::info!(%addr, "listening");
    #[cfg(unix)]
    tokio::spawn(reload_on_sighup(args.tiers.clone(), reloader));
    #[cfg(not(unix))]
    drop(reloader);
    axum::serve(
        listener,
        // The limiter keys anonymous clients by the TCP peer address: serve with connect info.
        router.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(async {
        let _ = tokio::signal::ctrl_c().await;
        tracing::info!("shutting down");
    })
    .await?;
    Ok(())
}

/// Reloads the tier file on SIGHUP (`kill -HUP <pid>`): new limits, costs and keys apply to the next
/// request and no counter is reset. A file with an error is refused whole; the running tiers stay.
#[cfg(unix)]
async fn reload_on_sighup(path: PathBuf, reloader: app::Reloader) {
    use tokio::signal::unix::{signal, SignalKind};
    let mut hup = match signal(SignalKind::hangup()) {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(error = %e, "cannot listen for SIGHUP; the tier file will not be reloaded");
            return;
        }
    };
    while hup.recv().await.is_some() {
        match Config::load(&path).and_then(|c| reloader.apply(&c)) {
            Ok(()) => tracing::info!(path = %path.display(), "tier file reloaded"),
            Err(e) => tracing::error!("tier file NOT reloaded, the running tiers stay: {e}"),
        }
    }
}

/// Connects within 5 s, with an error that says what to do.
async fn connect<F>(fut: F, shown: &str) -> Result<RedisStore, String>
where
    F: std::future::Future<Output = Result<RedisStore, ratelimit_core::StoreError>>,
{
    match tokio::time::timeout(Duration::from_secs(5), fut).await {
        Ok(Ok(store)) => Ok(store),
        Ok(Err(e)) => Err(format!(
            "cannot use Redis at {shown}: {e} (is redis-server running there? unset REDIS_URL to use the in-memory store)"
        )),
        Err(_) => Err(format!(
            "Redis at {shown} did not answer within 5 s (unset REDIS_URL to use the in-memory store)"
        )),
    }
}

/// Hides a password in a Redis URL before printing it.
fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => format!("{}://***@{}", &url[..s], &url[at + 1..]),
        _ => url.to_owned(),
    }
}

fn print_banner(config: &Config, args: &Args, addr: SocketAddr, store: &str) {
    let base = format!("http://{addr}");
    let mut out = String::new();
    out.push_str(&format!(
        "\nratelimit tiered_api example listening on {base}\n"
    ));
    out.push_str(&format!("  store: {store}\n"));
    out.push_str(&format!("  tiers: {}\n\n", args.tiers.display()));
    let show = |name: &str, who: &str, set: &ratelimit_core::PolicySet| {
        let policies: Vec<String> = set
            .policies()
            .iter()
            .map(|p| format!("{}: {}", p.name(), describe(p)))
            .collect();
        format!("  {name:<11} {who:<24} {}\n", policies.join("; "))
    };
    let limits = &config.limits;
    out.push_str(&show(
        "anonymous",
        "per client IP",
        limits.default_policies(),
    ));
    // Slowest tier first (the file's tables come back in name order).
    let mut tiers: Vec<(&str, &ratelimit_core::PolicySet)> = limits.named_tiers().collect();
    tiers.sort_by_key(|(_, set)| {
        std::cmp::Reverse(set.policies()[0].quota().emission_interval_micros())
    });
    for (name, set) in tiers {
        let who = config
            .key_for_tier(name)
            .map_or_else(|| "(no key in the file)".to_owned(), |k| format!("key {k}"));
        out.push_str(&show(name, &who, set));
    }
    if let Some(g) = limits.global_cap() {
        out.push_str(&show("all clients", "together", g));
    }
    let costs = limits.route_costs();
    for (route, cost) in costs.iter() {
        out.push_str(&format!(
            "  cost        {route:<24} {cost} units per request\n"
        ));
    }
    out.push_str("  never limited: /health, /metrics\n");
    if cfg!(unix) {
        out.push_str(&format!(
            "  reload the tier file without losing counters: kill -HUP {}\n",
            std::process::id()
        ));
    }
    out.push('\n');
    let anon_burst = limits
        .default_policies()
        .policies()
        .iter()
        .map(|p| p.quota().burst())
        .min()
        .unwrap_or(1);
    let free = config.key_for_tier("free").unwrap_or("free-demo");
    let pro = config.key_for_tier("pro").unwrap_or("pro-demo");
    let ent = config
        .key_for_tier("enterprise")
        .unwrap_or("enterprise-demo");
    let report_cost = costs.get("/v1/report");
    let try_lines = [
        format!("curl -i {base}/v1/hello -H 'x-api-key: {free}'"),
        format!("curl -i {base}/v1/hello -H 'Authorization: Bearer {pro}'"),
        format!("curl -i {base}/v1/report -H 'x-api-key: {ent}'      # costs {report_cost}"),
        format!("curl -i {base}/v1/hello -H 'x-api-key: not-a-key'             # 401"),
        format!(
            "for i in $(seq {}); do curl -s -o /dev/null -w '%{{http_code}}\\n' {base}/v1/hello; done | sort | uniq -c",
            anon_burst + 1
        ),
        format!("    # anonymous: {anon_burst} at once per client IP, then 429 (the rejected key above counted too)"),
        format!("curl -i {base}/v1/hello                                        # the 429 itself"),
        format!("curl -s {base}/metrics | grep '^ratelimit_'"),
    ];
    out.push_str("try:\n");
    for line in try_lines {
        out.push_str("  ");
        out.push_str(&line);
        out.push('\n');
    }
    println!("{out}");
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn env(pairs: &'static [(&'static str, &'static str)]) -> impl Fn(&str) -> Option<String> {
        move |k| {
            pairs
                .iter()
                .find(|(n, _)| *n == k)
                .map(|(_, v)| (*v).to_owned())
        }
    }

    fn args(a: &[&str]) -> impl Iterator<Item = String> {
        a.iter()
            .map(|s| (*s).to_owned())
            .collect::<Vec<_>>()
            .into_iter()
    }

    #[test]
    fn flags_beat_env_which_beats_defaults() {
        let a = parse_args(args(&[]), env(&[])).unwrap().unwrap();
        assert_eq!(a.addr, "127.0.0.1:3000".parse().unwrap());
        assert!(a.tiers.ends_with("examples/tiered_api/tiers.toml"));
        let a = parse_args(
            args(&[]),
            env(&[("ADDR", "127.0.0.1:4000"), ("TIERS", "t.toml")]),
        )
        .unwrap()
        .unwrap();
        assert_eq!(a.addr.port(), 4000);
        assert_eq!(a.tiers, PathBuf::from("t.toml"));
        let a = parse_args(
            args(&["--addr", "[::1]:5000", "--tiers=x.toml"]),
            env(&[("ADDR", "127.0.0.1:4000")]),
        )
        .unwrap()
        .unwrap();
        assert_eq!(a.addr, "[::1]:5000".parse().unwrap());
        assert_eq!(a.tiers, PathBuf::from("x.toml"));
        assert!(parse_args(args(&["--help"]), env(&[])).unwrap().is_none());
    }

    #[test]
    fn bad_arguments_say_what_to_write() {
        let e = parse_args(args(&["--adr", "x"]), env(&[])).unwrap_err();
        assert!(e.contains("unknown argument \"--adr\""), "{e}");
        let e = parse_args(args(&["--addr"]), env(&[])).unwrap_err();
        assert!(e.contains("--addr needs a value"), "{e}");
        let e = parse_args(args(&["--addr", "localhost"]), env(&[])).unwrap_err();
        assert!(e.contains("e.g. 127.0.0.1:3000"), "{e}");
        let a = parse_args(args(&["--addr", "localhost:3001"]), env(&[]))
            .unwrap()
            .unwrap();
        assert!(a.addr.ip().is_loopback() && a.addr.port() == 3001, "{a:?}");
    }

    #[test]
    fn passwords_are_not_printed() {
        assert_eq!(
            redact("redis://:secret@host:6379/0"),
            "redis://***@host:6379/0"
        );
        assert_eq!(redact("redis://host:6379"), "redis://host:6379");
    }
}
