//! The connection to Redis (one node or a Cluster), and replacing it when its replies may be out of step.
//!
//! redis-rs multiplexes calls over one connection and hands each reply to the oldest call still waiting.
//! A reply lost while the connection stays up would leave every later reply one call behind; each reply
//! echoes its call's request id, so such a reply is never believed, and a timeout or a foreign reply
//! replaces the connection (at most once per `spacing`) so that later calls get their own replies.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::{Mutex, RwLock};
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::cluster::ClusterClient;
use redis::cluster_async::ClusterConnection;
use redis::{RedisError, Value};

/// One connection: a single node's manager, or a cluster's.
#[derive(Clone)]
pub(super) enum Conn {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
}

impl Conn {
    /// Runs `script` (EVALSHA, loading it on `NOSCRIPT`: after a restart, a failover or `SCRIPT FLUSH`).
    pub(super) async fn run(
        &mut self,
        script: &redis::ScriptInvocation<'_>,
    ) -> Result<Value, RedisError> {
        match self {
            Conn::Single(c) => script.invoke_async(c).await,
            Conn::Cluster(c) => script.invoke_async(c).await,
        }
    }

    /// Loads `script` (on every primary of a Cluster).
    pub(super) async fn load(&mut self, script: &redis::Script) -> Result<String, RedisError> {
        match self {
            Conn::Single(c) => script.prepare_invoke().load_async(c).await,
            Conn::Cluster(c) => script.prepare_invoke().load_async(c).await,
        }
    }
}

/// How to build the connection again.
pub(super) enum Connector {
    Single {
        client: redis::Client,
        config: ConnectionManagerConfig,
    },
    Cluster(ClusterClient),
}

impl Connector {
    pub(super) async fn connect(&self) -> Result<Conn, RedisError> {
        match self {
            Connector::Single { client, config } => Ok(Conn::Single(
                ConnectionManager::new_with_config(client.clone(), config.clone()).await?,
            )),
            Connector::Cluster(client) => Ok(Conn::Cluster(client.get_async_connection().await?)),
        }
    }
}

/// The connection in use, replaced on evidence that its replies are out of step.
pub(super) struct Link {
    current: RwLock<Conn>,
    connector: Connector,
    spacing: Duration,
    last_replaced: Mutex<Option<Instant>>,
    replacing: AtomicBool,
    replaced: AtomicU64,
}

impl Link {
    pub(super) fn new(conn: Conn, connector: Connector, spacing: Duration) -> Arc<Self> {
        Arc::new(Link {
            current: RwLock::new(conn),
            connector,
            spacing,
            last_replaced: Mutex::new(None),
            replacing: AtomicBool::new(false),
            replaced: AtomicU64::new(0),
        })
    }

    /// Connections replaced so far.
    pub(super) fn replaced(&self) -> u64 {
        self.replaced.load(Ordering::Relaxed)
    }

    /// A handle on the connection in use (cheap: redis-rs connections are shared handles).
    pub(super) fn conn(&self) -> Conn {
        self.current.read().clone()
    }

    /// A call timed out or got another call's reply: builds a new connection in the background, unless
    /// one is being built or one was built less than `spacing` ago.
    pub(super) fn out_of_step(self: &Arc<Self>) {
        {
            let mut last = self.last_replaced.lock();
            if last.is_some_and(|t| t.elapsed() < self.spacing) {
                return;
            }
            if self.replacing.swap(true, Ordering::AcqRel) {
                return;
            }
            *last = Some(Instant::now());
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            self.replacing.store(false, Ordering::Release);
            return;
        };
        let link = Arc::clone(self);
        runtime.spawn(async move {
            // Frees the flag however the task ends (an error, a runtime shutting down).
            struct Done<'a>(&'a AtomicBool);
            impl Drop for Done<'_> {
                fn drop(&mut self) {
                    self.0.store(false, Ordering::Release);
                }
            }
            let _done = Done(&link.replacing);
            match link.connector.connect().await {
                Ok(conn) => {
                    *link.current.write() = conn;
                    link.replaced.fetch_add(1, Ordering::Relaxed);
                    metrics::counter!("ratelimit_client_shared_reconnects_total").increment(1);
                    tracing::debug!("shared state: replaced the Redis connection");
                }
                Err(e) => tracing::debug!(error = %e, "shared state: could not replace the Redis connection yet"),
            }
        });
    }
}
