//! `ratelimit-proxy`: see the crate's README, or `ratelimit-proxy --help`.

use std::io::Write;
use std::process::ExitCode;

use clap::Parser;
use metrics_exporter_prometheus::PrometheusBuilder;
use ratelimit_proxy::{Args, Proxy, SharedStartError, StartError};
use tracing_subscriber::EnvFilter;

fn main() -> ExitCode {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .init();
    let config = match args.into_config() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("ratelimit-proxy: {e}");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("ratelimit-proxy: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(run(config))
}

async fn run(config: ratelimit_proxy::ProxyConfig) -> ExitCode {
    let mut proxy = match Proxy::connect(config).await {
        Ok(p) => p,
        Err(e) => {
            eprintln!("ratelimit-proxy: {e}");
            return ExitCode::from(exit_code(&e));
        }
    };
    match PrometheusBuilder::new().install_recorder() {
        Ok(handle) => proxy = proxy.prometheus(handle),
        Err(e) => tracing::warn!(error = %e, "metrics recorder not installed; /metrics disabled"),
    }
    let running = match proxy.start().await {
        Ok(r) => r,
        Err(e) => {
            eprintln!("ratelimit-proxy: {e}");
            return ExitCode::FAILURE;
        }
    };
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "listening on {}", running.addr());
    if let Some(admin) = running.admin_addr() {
        let _ = writeln!(out, "admin listening on {admin}");
    }
    let _ = out.flush();
    drop(out);
    if running.run_until(shutdown_signal()).await.complete {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// 2 for a setting to correct (as for a bad flag), 1 for a failure to retry (Redis down).
fn exit_code(e: &StartError) -> u8 {
    match e {
        StartError::Config(_) | StartError::Shared(SharedStartError::Settings(_)) => 2,
        _ => 1,
    }
}

/// Ctrl-C, or SIGTERM (what `docker stop` and systemd send).
async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
