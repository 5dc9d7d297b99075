//! Building a [`SharedBudget`].

use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::{Mutex, RwLock};
use ratelimit_core::log_once::LogOnce;
use ratelimit_core::store::redis::conn::{Connection, Connector};
use ratelimit_core::store::redis::Breaker;
use redis::aio::ConnectionManagerConfig;

use super::budget::{Inner, SharedBudget};
use super::fallback::Fallback;
use super::join;
use super::script::SOURCE;

/// Namespaces are part of every key and its Cluster hash tag: short, and without the tag's braces.
const LONGEST_NAMESPACE: usize = 64;

/// Why a [`SharedBudget`] could not be built.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SharedError {
    /// Redis could not be reached or refused the script.
    #[error("could not connect to Redis for the shared rate-limit state ({0}); check the URL and that the server is up")]
    Connect(#[source] redis::RedisError),
    /// A setting is out of range.
    #[error("shared rate-limit state: {0}")]
    Config(&'static str),
}

/// Builds a [`SharedBudget`]; see [`SharedBudget::builder`].
#[derive(Debug, Clone)]
#[must_use]
pub struct SharedBudgetBuilder {
    namespace: String,
    instances: u32,
    timeout: Duration,
    lease: Duration,
    poll: Duration,
    breaker: (u32, Duration),
    wait_for_redis: bool,
}

impl Default for SharedBudgetBuilder {
    fn default() -> Self {
        SharedBudgetBuilder {
            namespace: "ratelimit-client".to_owned(),
            instances: 1,
            timeout: Duration::from_millis(100),
            lease: Duration::from_secs(2),
            poll: Duration::from_millis(20),
            breaker: (3, Duration::from_millis(500)),
            wait_for_redis: true,
        }
    }
}

impl SharedBudgetBuilder {
    /// What every key starts with, and the Redis Cluster hash tag that keeps them in one slot (default
    /// `ratelimit-client`). Processes share state exactly when they share a namespace: use one per
    /// egress identity (one IP and its tokens), not one per process. At most 64 bytes, no `{` or `}`.
    pub fn namespace(mut self, namespace: impl Into<String>) -> Self {
        self.namespace = namespace.into();
        self
    }

    /// How many processes share the budget (default 1). While Redis is unreachable each process keeps
    /// the global limit divided by this.
    pub fn instances(mut self, n: u32) -> Self {
        self.instances = n;
        self
    }

    /// The longest a Redis call may take before the process decides alone (default 100 ms).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// How long a reservation holds its slots without an answer (default 2 s): a process killed with
    /// requests in flight gives their slots back this long after it reserved them. Longer than the
    /// upstream's slowest answer: a request still out past it no longer counts against the others.
    pub fn lease(mut self, lease: Duration) -> Self {
        self.lease = lease;
        self
    }

    /// How often a request waiting on another process (the one learning a new route, or requests in
    /// flight that hold a window) asks again (default 20 ms).
    pub fn poll(mut self, poll: Duration) -> Self {
        self.poll = poll;
        self
    }

    /// Consecutive failures that open the breaker, and how long it stays open before one call probes
    /// Redis again (defaults 3 and 500 ms).
    pub fn breaker(mut self, failures: u32, cooldown: Duration) -> Self {
        self.breaker = (failures, cooldown);
        self
    }

    /// Whether connecting waits for Redis (default `true`: [`connect`](Self::connect) and its siblings
    /// fail when Redis does not answer). With `false`, a Redis that does not answer yet (connection
    /// refused, host unreachable, timed out) is no error: the budget starts degraded, each process
    /// limiting itself as while Redis is down ([`SharedBudget::is_degraded`]), and joins the shared
    /// budget once Redis answers, tried once per breaker cooldown. A Redis that answers and refuses (a
    /// wrong password, scripts not allowed) still fails.
    ///
    /// ```no_run
    /// # async fn run() -> Result<(), ratelimit_client::shared::SharedError> {
    /// use ratelimit_client::shared::SharedBudget;
    /// let budget = SharedBudget::builder()
    ///     .wait_for_redis(false)
    ///     .connect("redis://10.0.0.5:6379/")
    ///     .await?;
    /// # Ok(()) }
    /// ```
    pub fn wait_for_redis(mut self, wait: bool) -> Self {
        self.wait_for_redis = wait;
        self
    }

    fn validate(&self) -> Result<(), SharedError> {
        let ns = &self.namespace;
        if ns.is_empty() || ns.len() > LONGEST_NAMESPACE || ns.contains(['{', '}']) {
            return Err(SharedError::Config(
                "the namespace must be 1 to 64 bytes without `{` or `}`",
            ));
        }
        if self.instances == 0 {
            return Err(SharedError::Config("instances must be at least 1"));
        }
        if self.timeout.is_zero() || self.lease.is_zero() || self.poll.is_zero() {
            return Err(SharedError::Config(
                "timeout, lease and poll must be longer than zero",
            ));
        }
        if self.lease <= self.timeout {
            return Err(SharedError::Config(
                "the lease must be longer than the call timeout",
            ));
        }
        Ok(())
    }

    /// Connects to one Redis server (`redis://host:port/db`, `unix:///path`).
    pub async fn connect(self, url: &str) -> Result<SharedBudget, SharedError> {
        self.validate()?;
        let client = redis::Client::open(url).map_err(SharedError::Connect)?;
        self.from_client(client).await
    }

    /// Connects through a client the application built: `rediss://` with a private CA
    /// (`redis::Client::build_with_tls`), or any other setting redis-rs takes. For TLS, enable one of
    /// redis-rs's TLS features in the application (`redis = { version = "1.8", features =
    /// ["tokio-rustls-comp"] }`, and install a rustls crypto provider): this crate does not choose a TLS
    /// stack for everyone.
    ///
    /// ```no_run
    /// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
    /// use ratelimit_client::shared::SharedBudget;
    /// let client = redis::Client::open("redis://10.0.0.5:6379/")?;
    /// let budget = SharedBudget::builder().namespace("my-bot").from_client(client).await?;
    /// # Ok(()) }
    /// ```
    pub async fn from_client(self, client: redis::Client) -> Result<SharedBudget, SharedError> {
        self.validate()?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(self.connect_timeout()))
            .set_number_of_retries(2)
            .set_max_delay(Duration::from_millis(200));
        self.start(Connector::Single { client, config }).await
    }

    /// Connects to a Redis Cluster through any of its nodes.
    pub async fn connect_cluster(self, nodes: &[&str]) -> Result<SharedBudget, SharedError> {
        self.validate()?;
        let client = redis::cluster::ClusterClient::builder(nodes.iter().copied())
            .connection_timeout(self.connect_timeout())
            .build()
            .map_err(SharedError::Connect)?;
        let budget = self
            .connect_timeout()
            .saturating_mul(CLUSTER_RECONNECT_BUDGET_IN_CONNECT_TIMEOUTS);
        self.start(Connector::Cluster { client, budget }).await
    }

    fn connect_timeout(&self) -> Duration {
        self.timeout.max(Duration::from_millis(250))
    }

    /// Connects (or, not waiting for Redis, starts degraded and connects later) and builds the budget.
    async fn start(self, connector: Connector) -> Result<SharedBudget, SharedError> {
        let script = redis::Script::new(SOURCE);
        // Reconnects spaced like the breaker's probes, never closer than one timeout.
        let spacing = self.breaker.1.max(self.timeout);
        match join::open(&connector, &script, spacing).await {
            Ok(connection) => {
                // Present from the start, so that a dashboard sees 0 before the first outage.
                metrics::gauge!("ratelimit_client_shared_degraded").set(0.0);
                Ok(self.build(script, Some(connection)))
            }
            Err(e) if !self.wait_for_redis && join::unreachable(&e) => {
                let cooldown = self.breaker.1;
                let budget = self.build(script, None);
                metrics::gauge!("ratelimit_client_shared_degraded").set(1.0);
                tracing::warn!(
                    namespace = %budget.namespace(),
                    error = %e,
                    instances = budget.instances(),
                    "shared rate-limit state: Redis does not answer yet; this process limits itself, with the global limit divided by {} instances, and joins the shared budget once Redis answers",
                    budget.instances()
                );
                join::later(&budget, connector, cooldown, spacing);
                Ok(budget)
            }
            Err(e) => Err(SharedError::Connect(e)),
        }
    }

    fn build(self, script: redis::Script, connection: Option<Arc<Connection>>) -> SharedBudget {
        SharedBudget {
            inner: Arc::new(Inner {
                connection: RwLock::new(connection),
                script,
                prefix: format!("{{{}}}:", self.namespace),
                namespace: self.namespace,
                instances: self.instances,
                timeout: self.timeout,
                lease: micros(self.lease),
                poll: micros(self.poll),
                breaker: Breaker::new(
                    self.breaker.0,
                    self.breaker.1,
                    self.timeout.saturating_mul(2),
                ),
                fallback: Mutex::new(Fallback::default()),
                nonce: nonce(),
                next_id: AtomicU64::new(0),
                calls: Default::default(),
                errors: Default::default(),
                fallbacks: Default::default(),
                logs: LogOnce::new(),
            }),
        }
    }
}

/// A Cluster connection is rebuilt from scratch (every node, the slot map): it may take a few connects.
const CLUSTER_RECONNECT_BUDGET_IN_CONNECT_TIMEOUTS: u32 = 4;

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

/// A random number for this budget's request ids (unique across processes sharing the namespace).
fn nonce() -> u64 {
    use std::hash::BuildHasher;
    let seed = foldhash::fast::RandomState::default();
    seed.hash_one((std::process::id(), std::time::SystemTime::now()))
}
