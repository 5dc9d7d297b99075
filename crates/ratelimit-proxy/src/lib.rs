//! # ratelimit-proxy
//!
//! A Discord REST proxy any bot can use, whatever its language: point the bot's API base URL at the proxy
//! and send requests unchanged. The proxy holds each request until Discord's rate limits allow it (per
//! token: route buckets, the global limit, sub-limits, the invalid-request budget and bans, all learned
//! from Discord's headers by [`ratelimit_client`]), sends it, and answers with Discord's response: status,
//! headers and body as Discord sent them, the body streamed.
//!
//! * A 429 reaches the bot only when Discord sent one and the proxy's retries are spent, with Discord's
//!   headers and body intact so the bot's own handling still works.
//! * What the proxy answers itself carries an `X-RateLimit-Proxy-Error` header and a JSON body saying
//!   why ([`Refusal`]): 400 malformed request, 404 path outside the API, 413 body over `--max-body`, 503
//!   (with `Retry-After`) when the rate limit would hold a request longer than `--max-wait` or traffic is
//!   stopped by a ban, 502 upstream unreachable (not retried: one connection attempt per request), 504
//!   upstream slower than `--upstream-timeout`.
//! * An admin listener serves `/metrics` (Prometheus) and `/status` (the limiter's [`Status`] as JSON).
//! * Replicas behind one token share one budget through Redis (`--redis-url`, [`SharedConfig`]): the
//!   global limit, bucket counts, the route → bucket map, global locks, bans and the invalid-request
//!   budget are counted once for all of them ([`ratelimit_client::shared`]).
//! * SIGTERM or Ctrl-C stops accepting connections and lets requests in flight finish, within
//!   `--drain-timeout`.
//!
//! ## In process
//!
//! ```no_run
//! use ratelimit_proxy::{Proxy, ProxyConfig, Upstream};
//!
//! # #[tokio::main]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let config = ProxyConfig::new("127.0.0.1:0".parse()?, Upstream::parse("https://discord.com/api")?);
//! let running = Proxy::connect(config).await?.start().await?;
//! println!("bots use http://{}/api/v10", running.addr());
//! let drained = running.run_until(async { let _ = tokio::signal::ctrl_c().await; }).await;
//! assert!(drained.complete);
//! # Ok(()) }
//! ```
//!
//! The proxy takes a ready-built limiter ([`Proxy::with_limiter`]) and uses it only through the client's
//! tower layer, [`Limiter::snapshot`] and [`Limiter::occupancy`]: nothing in the proxy depends on where
//! the limiter keeps its state.
#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used))]

mod admin;
mod cli;
mod client;
mod config;
mod forward;
mod serve;
mod shared;
mod status;

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use metrics_exporter_prometheus::PrometheusHandle;
use ratelimit_client::profile::Discord;
use ratelimit_client::shared::SharedBudget;
use ratelimit_client::{Config, Exhausted, Limiter, LimiterBuilder};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub use cli::Args;
pub use client::TlsError;
pub use config::{
    ConfigError, ProxyConfig, Upstream, DEFAULT_DRAIN_TIMEOUT, DEFAULT_GLOBAL_LIMIT,
    DEFAULT_GLOBAL_WINDOW, DEFAULT_MAX_BODY_HELD_IN_MEMORY, DEFAULT_MAX_WAIT,
    DEFAULT_UPSTREAM_TIMEOUT,
};
pub use forward::{strip_hop_by_hop, ProxyBody, Refusal, PROXY_ERROR_HEADER};
pub use serve::Drained;
pub use shared::{Redis, SharedConfig, SharedStartError, DEFAULT_NAMESPACE};
pub use status::{Shared, Status};

/// Retries after a transport error or a 5xx: none. The bot gets the 502 or the 5xx and decides; a proxy
/// that retried them too would multiply the bot's own retries into a storm against a struggling
/// upstream.
const UPSTREAM_ERRORS_LEFT_TO_THE_BOT: u32 = 0;

/// The proxy could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StartError {
    /// A listening address could not be bound.
    #[error("cannot listen on {addr}: {source} (is another process using it?)")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: io::Error,
    },
    /// TLS to the upstream could not be set up.
    #[error(transparent)]
    Tls(#[from] TlsError),
    /// A setting is unusable.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The shared budget could not be set up (Redis unreachable at start, most often).
    #[error(transparent)]
    Shared(#[from] SharedStartError),
}

/// A proxy ready to start.
#[derive(Debug)]
pub struct Proxy {
    config: ProxyConfig,
    limiter: Limiter<Discord>,
    shared: Option<SharedBudget>,
    prometheus: Option<PrometheusHandle>,
}

impl Proxy {
    /// The limiter settings the proxy uses: Discord's profile, the configured global limit and maximum
    /// wait, the upstream's last 429 handed on when retries are spent, and no retry of transport errors
    /// or 5xx. Adjust it and pass the limiter to [`Proxy::with_limiter`].
    ///
    /// ```
    /// use ratelimit_proxy::{Proxy, ProxyConfig, Upstream};
    /// let config = ProxyConfig::new("127.0.0.1:0".parse()?, Upstream::parse("https://discord.com/api")?);
    /// let limiter = Proxy::limiter_builder(&config).build()?;
    /// let proxy = Proxy::with_limiter(config, limiter)?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn limiter_builder(config: &ProxyConfig) -> LimiterBuilder<Discord> {
        Limiter::builder(Discord::new())
            .global_limit(Some(config.global_limit))
            .global_window(config.global_window, Duration::ZERO)
            .max_wait(config.max_wait)
            .on_exhausted(Exhausted::Respond)
            .retries(
                Config::default().max_limit_retries,
                UPSTREAM_ERRORS_LEFT_TO_THE_BOT,
            )
    }

    /// A proxy with the limiter of [`Proxy::limiter_builder`], sharing its budget with other replicas
    /// when `config.shared` says so: then Redis must answer now, or this fails with a
    /// [`SharedStartError`] naming the flag to fix (the proxy does not start limiting alone when it was
    /// told to share: its replicas would together exceed the limits), unless
    /// [`SharedConfig::wait_for_redis`] is false (then it starts degraded and joins when Redis answers).
    ///
    /// ```no_run
    /// use ratelimit_proxy::{Proxy, ProxyConfig, Redis, SharedConfig, Upstream};
    /// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
    /// let mut config = ProxyConfig::new("0.0.0.0:8080".parse()?, Upstream::parse("https://discord.com/api")?);
    /// let mut shared = SharedConfig::new(Redis::Url("redis://10.0.0.5:6379/".into()));
    /// shared.instances = 2;
    /// config.shared = Some(shared);
    /// let running = Proxy::connect(config).await?.start().await?;
    /// # Ok(()) }
    /// ```
    pub async fn connect(config: ProxyConfig) -> Result<Proxy, StartError> {
        config.validate()?;
        let Some(shared) = &config.shared else {
            return Ok(Self::new(config)?);
        };
        let budget = shared.connect().await?;
        tracing::info!(
            redis = %shared.redis,
            namespace = %shared.namespace,
            instances = shared.instances,
            "sharing the budget with the other replicas through Redis"
        );
        let limiter = Self::limiter_builder(&config)
            .shared(budget.clone())
            .build()
            .map_err(ConfigError::from)?;
        let proxy = Self::checked(config, limiter)?;
        Ok(proxy.shared_budget(budget))
    }

    /// A proxy with the limiter of [`Proxy::limiter_builder`], limiting alone; a configuration naming a
    /// shared budget needs [`Proxy::connect`].
    pub fn new(config: ProxyConfig) -> Result<Proxy, ConfigError> {
        let limiter = Self::limiter_builder(&config).build()?;
        Self::with_limiter(config, limiter)
    }

    /// A proxy with this limiter, which must hand on the upstream's last 429
    /// ([`Exhausted::Respond`]). A limiter built with a [`SharedBudget`] already shares it; give the
    /// budget to [`Proxy::shared_budget`] too so that `/status` shows it. `config.shared` must be unset
    /// (it is what [`Proxy::connect`] connects to).
    pub fn with_limiter(
        config: ProxyConfig,
        limiter: Limiter<Discord>,
    ) -> Result<Proxy, ConfigError> {
        if config.shared.is_some() {
            return Err(ConfigError::SharedNeedsConnect);
        }
        Self::checked(config, limiter)
    }

    fn checked(config: ProxyConfig, limiter: Limiter<Discord>) -> Result<Proxy, ConfigError> {
        config.validate()?;
        if limiter.config().on_exhausted != Exhausted::Respond {
            return Err(ConfigError::LimiterExhausted);
        }
        Ok(Proxy {
            config,
            limiter,
            shared: None,
            prometheus: None,
        })
    }

    /// The budget the limiter shares with other replicas, shown in `/status` (the limiter must have been
    /// built with it: this only reports on it).
    ///
    /// ```no_run
    /// use ratelimit_client::shared::SharedBudget;
    /// use ratelimit_proxy::{Proxy, ProxyConfig, Upstream};
    /// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
    /// let config = ProxyConfig::new("127.0.0.1:0".parse()?, Upstream::parse("https://discord.com/api")?);
    /// let budget = SharedBudget::builder().namespace("my-bot").instances(2).connect("redis://127.0.0.1/").await?;
    /// let limiter = Proxy::limiter_builder(&config).shared(budget.clone()).build()?;
    /// let proxy = Proxy::with_limiter(config, limiter)?.shared_budget(budget);
    /// # Ok(()) }
    /// ```
    pub fn shared_budget(mut self, budget: SharedBudget) -> Proxy {
        self.shared = Some(budget);
        self
    }

    /// Serves this recorder's metrics on `/metrics` (the process must have installed it, e.g. with
    /// `PrometheusBuilder::install_recorder`).
    pub fn prometheus(mut self, handle: PrometheusHandle) -> Proxy {
        self.prometheus = Some(handle);
        self
    }

    /// The limiter.
    pub fn limiter(&self) -> &Limiter<Discord> {
        &self.limiter
    }

    /// Binds the listeners and starts serving.
    pub async fn start(self) -> Result<RunningProxy, StartError> {
        let c = &self.config;
        let listener = bind(c.listen).await?;
        let addr = local_addr(&listener, c.listen)?;
        let admin = match c.admin_listen {
            Some(a) => Some(bind(a).await?),
            None => None,
        };
        let client = client::upstream_service(
            client::https_client(c.upstream_timeout)?,
            c.upstream_timeout,
            self.limiter.clone(),
        );
        let forwarder =
            forward::Forwarder::new(client, c.upstream.clone(), c.max_body, c.upstream_timeout);
        let (stop, stopped) = oneshot::channel::<()>();
        let drain = c.drain_timeout;
        let task = tokio::spawn(serve::serve(
            listener,
            forwarder,
            async {
                let _ = stopped.await;
            },
            drain,
        ));
        let (admin_addr, admin_stop, admin_task) = match admin {
            Some(l) => {
                let a = local_addr(&l, c.listen)?;
                let (tx, rx) = oneshot::channel::<()>();
                let app = admin::router(
                    self.limiter.clone(),
                    self.shared.clone(),
                    self.prometheus.clone(),
                );
                let t = tokio::spawn(async move {
                    let serve = axum::serve(l, app).with_graceful_shutdown(async {
                        let _ = rx.await;
                    });
                    if let Err(e) = serve.await {
                        tracing::warn!(error = %e, "admin listener stopped with an error");
                    }
                });
                (Some(a), Some(tx), Some(t))
            }
            None => (None, None, None),
        };
        tracing::info!(%addr, upstream = %c.upstream, shared = self.shared.is_some(), "ratelimit-proxy ready");
        Ok(RunningProxy {
            addr,
            admin_addr,
            limiter: self.limiter,
            stop: Some(stop),
            task: Some(task),
            admin_stop,
            admin_task,
        })
    }
}

async fn bind(addr: SocketAddr) -> Result<TcpListener, StartError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| StartError::Bind { addr, source })
}

fn local_addr(l: &TcpListener, addr: SocketAddr) -> Result<SocketAddr, StartError> {
    l.local_addr()
        .map_err(|source| StartError::Bind { addr, source })
}

/// A proxy serving. Dropping it starts a graceful shutdown without waiting for it;
/// [`RunningProxy::shutdown`] waits.
#[derive(Debug)]
pub struct RunningProxy {
    addr: SocketAddr,
    admin_addr: Option<SocketAddr>,
    limiter: Limiter<Discord>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<Drained>>,
    admin_stop: Option<oneshot::Sender<()>>,
    admin_task: Option<JoinHandle<()>>,
}

impl RunningProxy {
    /// The address bots connect to.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The admin listener's address, if one was configured.
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin_addr
    }

    /// The limiter (its snapshot is what `/status` shows).
    pub fn limiter(&self) -> &Limiter<Discord> {
        &self.limiter
    }

    /// Serves until `signal` completes, then shuts down gracefully.
    pub async fn run_until(self, signal: impl Future<Output = ()>) -> Drained {
        signal.await;
        self.shutdown().await
    }

    /// Stops accepting connections, waits for requests in flight (at most the drain timeout), then stops
    /// the admin listener.
    pub async fn shutdown(mut self) -> Drained {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let drained = match self.task.take() {
            Some(task) => task.await.unwrap_or(Drained { complete: false }),
            None => Drained { complete: true },
        };
        if let Some(stop) = self.admin_stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.admin_task.take() {
            let _ = task.await;
        }
        drained
    }
}

impl Drop for RunningProxy {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(stop) = self.admin_stop.take() {
            let _ = stop.send(());
        }
    }
}

/// The crate's README (its crates.io page), compiled as a doc test so its code stays true.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
