//! The connection to Redis, and replacing it when its replies fall out of step with its requests.
//!
//! Public so that other code of the workspace calling Redis (the client's shared state) keeps its
//! connection in step the same way; each user names the counter its reconnects go to.
//!
//! redis-rs multiplexes every call over one connection and hands each reply to the oldest request still
//! waiting for one. When a reply is lost or cut short while the connection stays up (a proxy or a network
//! fault dropping bytes), each later reply answers an older request for as long as the connection lives:
//! calls time out one after the other, and a caller can be handed another call's reply. So:
//!
//! * every script call carries a token the script echoes in its reply: a reply without its call's token
//!   is never a decision (the caller checks it);
//! * a call that timed out, a reply without its call's token, a batch reply of the wrong length are
//!   [`Evidence`] that the connection is out of step: it is replaced by a fresh one built from the same
//!   client and settings, so that calls sent afterwards get their own replies. Calls already sent on the
//!   old connection finish on it (or time out); it closes when the last of them lets go.
//!
//! Storm-free: only evidence about the connection in use counts (each connection has a generation, and a
//! late failure on an older one says nothing about the current one); one replacement at a time (a guard
//! that frees itself however the replacement ends); and at most one per `spacing` — the breaker's
//! cooldown (at least one timeout): while Redis keeps failing, the breaker lets one probe through per
//! cooldown, so a failing server sees at most one new connection per cooldown from each store, as it sees
//! its probes. An episode is logged twice: when replies go out of step (WARN), and when a call on a
//! replacement is answered by its own reply (INFO); the reconnects in between are counted (the store's
//! are `ratelimit_redis_reconnects_total{reason}` and [`RedisStats::reconnects`](super::RedisStats)).
//!
//! **Redis Cluster.** `ClusterConnection` keeps one multiplexed connection per node and has the same
//! failure (redis-rs reconnects a node on I/O and parse errors, not on a timeout); it cannot be told to
//! drop one node's connection. So the whole cluster connection is rebuilt from the same `ClusterClient` —
//! new connections and a fresh slot map, more work than a single node's reconnect — on a task of its own,
//! while calls keep using the old one (the tokens reject its stray replies) until the new one is ready.
//!
//! **A connection manager given by the application** ([`from_manager`](super::RedisStoreBuilder::from_manager))
//! cannot be rebuilt: redis-rs does not expose the client behind it. Replies out of step are still never
//! taken for decisions, but the store cannot put them back in step; it says so once.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::RwLock;
use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster::ClusterClient;
use redis::cluster_async::ClusterConnection;
use redis::{Cmd, Pipeline, RedisFuture};
use redis::{RedisError, Value};

/// One connection: a single node's manager, or a cluster's. A cheap handle (clone it per call); it is a
/// [`ConnectionLike`], so `redis::Script::invoke_async` and commands run on it directly.
#[derive(Clone)]
pub enum Conn {
    /// One node, through redis-rs's reconnecting manager.
    Single(ConnectionManager),
    /// A Cluster, through redis-rs's cluster connection.
    Cluster(ClusterConnection),
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Conn::Single(c) => c.req_packed_command(cmd),
            Conn::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        cmd: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Conn::Single(c) => c.req_packed_commands(cmd, offset, count),
            Conn::Cluster(c) => c.req_packed_commands(cmd, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Conn::Single(c) => c.get_db(),
            Conn::Cluster(c) => c.get_db(),
        }
    }
}

/// `&mut self`: redis-rs sends through a mutable handle. A call sends on the [`Handle`] it owns, so the
/// connection is cloned once per call (in [`Connection::current`]), not again per command.
impl Conn {
    pub(super) async fn query(&mut self, cmd: &redis::Cmd) -> Result<Value, RedisError> {
        // Server errors (NOSCRIPT among them) arrive as a value; make them errors.
        self.send(cmd).await.and_then(Value::extract_error)
    }

    /// A script call: only a top-level error reply is an error. A batch's reply keeps an entry's own
    /// error reply in place (`Value::ServerError`), so that it fails that entry's caller alone.
    pub(super) async fn call(&mut self, cmd: &redis::Cmd) -> Result<Value, RedisError> {
        self.send(cmd).await.and_then(|v| match v {
            Value::ServerError(e) => Err(e.into()),
            v => Ok(v),
        })
    }

    async fn send(&mut self, cmd: &redis::Cmd) -> Result<Value, RedisError> {
        self.req_packed_command(cmd).await
    }
}

/// How to build the connection again.
#[derive(Clone)]
pub enum Connector {
    /// A single node: a new manager from the same client and settings.
    Single {
        /// The client the first manager was built from.
        client: redis::Client,
        /// Its timeouts and retries.
        config: ConnectionManagerConfig,
    },
    /// A cluster: a new cluster connection from the same client, within `budget`.
    Cluster {
        /// The client the first connection was built from.
        client: ClusterClient,
        /// How long one rebuild may take (it connects to every node and reads the slot map).
        budget: Duration,
    },
    /// A manager the application gave: it cannot be rebuilt.
    Given,
}

impl Connector {
    /// A new connection: a manager from the client and settings (connected before it returns), or a
    /// cluster connection within the budget. A given manager cannot be built again: an error.
    pub async fn connect(&self) -> Result<Conn, RedisError> {
        match self {
            Connector::Single { client, config } => Ok(Conn::Single(
                ConnectionManager::new_with_config(client.clone(), config.clone()).await?,
            )),
            Connector::Cluster { client, budget } => {
                match tokio::time::timeout(*budget, client.get_async_connection()).await {
                    Ok(c) => Ok(Conn::Cluster(c?)),
                    Err(_) => Err(std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        "the Redis Cluster did not answer in time",
                    )
                    .into()),
                }
            }
            Connector::Given => Err(std::io::Error::new(
                std::io::ErrorKind::Unsupported,
                "a connection manager given by the application cannot be built again",
            )
            .into()),
        }
    }
}

/// Why a caller believes a connection's replies are out of step with its requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Evidence {
    /// A call got no reply in time: its reply may be lost, and then the next reply would answer it.
    Timeout,
    /// A reply did not carry its call's token: it answers another request.
    ForeignReply,
    /// A batch reply of the wrong length.
    BatchLength,
}

impl Evidence {
    fn label(self) -> &'static str {
        match self {
            Evidence::Timeout => "timeout",
            Evidence::ForeignReply => "foreign_reply",
            Evidence::BatchLength => "batch_length",
        }
    }

    /// Counts one reconnect for this reason in `metric{reason}` (static name and labels: no allocation).
    fn count(self, metric: &'static str) {
        metrics::counter!(metric, "reason" => self.label()).increment(1);
    }
}

/// The connection a call goes out on, and its generation (what evidence about it is filed under).
pub struct Handle {
    /// Which connection this is: evidence about an older one says nothing about the current one.
    pub generation: u64,
    /// The connection to send on.
    pub conn: Conn,
}

/// A connection replaced when its replies are out of step (see the [module docs](self)).
pub struct Connection {
    current: RwLock<Handle>,
    connector: Connector,
    /// The counter reconnects go to, labelled by their reason.
    metric: &'static str,
    origin: Instant,
    /// The least time between two replacements, in µs.
    spacing: u64,
    /// µs since `origin` (at least 1) of the last replacement; 0 = never.
    last_replaced: AtomicU64,
    /// A replacement is being made (held by [`Replacing`]).
    replacing: AtomicBool,
    /// The generation whose first in-step reply ends the current out-of-step episode; 0 = in step.
    unsettled: AtomicU64,
    reconnects: AtomicU64,
    /// Whether "cannot replace a given manager" was said.
    given_logged: AtomicBool,
}

impl Connection {
    /// Starts with `conn`; `connector` builds its replacements, at most one per `spacing`, each counted in
    /// `metric{reason}`.
    pub fn new(
        conn: Conn,
        connector: Connector,
        spacing: Duration,
        metric: &'static str,
    ) -> Arc<Self> {
        Arc::new(Connection {
            current: RwLock::new(Handle {
                generation: 1,
                conn,
            }),
            connector,
            metric,
            origin: Instant::now(),
            spacing: u64::try_from(spacing.as_micros()).unwrap_or(u64::MAX),
            last_replaced: AtomicU64::new(0),
            replacing: AtomicBool::new(false),
            unsettled: AtomicU64::new(0),
            reconnects: AtomicU64::new(0),
            given_logged: AtomicBool::new(false),
        })
    }

    /// The connection to send on now. A read lock held for one clone (an `Arc`'s).
    pub fn current(&self) -> Handle {
        let c = self.current.read();
        Handle {
            generation: c.generation,
            conn: c.conn.clone(),
        }
    }

    /// Connections replaced so far.
    pub fn reconnects(&self) -> u64 {
        self.reconnects.load(Ordering::Relaxed)
    }

    /// Whether a replacement is being made.
    pub fn is_replacing(&self) -> bool {
        self.replacing.load(Ordering::Acquire)
    }

    /// A call sent on `generation` got its own reply. Ends an out-of-step episode once that is a call on
    /// a replacement; otherwise one load.
    pub fn in_step(&self, generation: u64) {
        let unsettled = self.unsettled.load(Ordering::Relaxed);
        if unsettled != 0
            && generation >= unsettled
            && self
                .unsettled
                .compare_exchange(unsettled, 0, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            tracing::info!(
                reconnects = self.reconnects(),
                "Redis connection replaced: replies in step with their requests again"
            );
        }
    }

    /// A call sent on `generation` suggests its replies are out of step: replaces that connection, unless
    /// it was replaced already, a replacement is under way, or the last one was less than `spacing` ago.
    pub fn out_of_step(self: &Arc<Self>, generation: u64, evidence: Evidence) {
        if self.current.read().generation != generation {
            return;
        }
        if let Connector::Given = self.connector {
            if !self.given_logged.swap(true, Ordering::Relaxed) {
                tracing::warn!(
                    evidence = evidence.label(),
                    "Redis replies may be out of step with their requests, and the store cannot replace a connection manager it was given: replies out of step are never taken for decisions, but calls fail until redis-rs drops the connection. Build the store with connect or from_client to have it replace the connection"
                );
            }
            return;
        }
        let now = self.now();
        let last = self.last_replaced.load(Ordering::Acquire);
        if last != 0 && now.saturating_sub(last) < self.spacing {
            return;
        }
        let Some(guard) = Replacing::claim(self) else {
            return;
        };
        // The claim and the spacing together: of the calls that saw the same evidence, one replaces.
        if self
            .last_replaced
            .compare_exchange(last, now, Ordering::AcqRel, Ordering::Acquire)
            .is_err()
            || self.current.read().generation != generation
        {
            return;
        }
        let next = generation + 1;
        if self.unsettled.swap(next, Ordering::Relaxed) == 0 {
            tracing::warn!(
                evidence = evidence.label(),
                counter = self.metric,
                "Redis replies out of step with their requests (a reply lost or cut short on a connection that stayed up): replacing the connection; further reconnects are counted"
            );
        } else {
            tracing::debug!(
                evidence = evidence.label(),
                "Redis replies still out of step: replacing the connection again"
            );
        }
        self.reconnects.fetch_add(1, Ordering::Relaxed);
        evidence.count(self.metric);
        match &self.connector {
            Connector::Single { client, config } => {
                // Lazy: the new manager connects on its first call (a shared future, one attempt for
                // every caller), so nothing is awaited here and the old connection is left at once.
                match ConnectionManager::new_lazy_with_config(client.clone(), config.clone()) {
                    Ok(m) => self.install(generation, Conn::Single(m)),
                    Err(e) => {
                        tracing::warn!(error = %e, "could not replace the Redis connection")
                    }
                }
            }
            Connector::Cluster { client, budget } => {
                let Ok(runtime) = tokio::runtime::Handle::try_current() else {
                    return;
                };
                let (client, budget) = (client.clone(), *budget);
                runtime.spawn(async move {
                    // Moved in: freed however the task ends (done, timed out, dropped with the runtime).
                    let guard = guard;
                    let conn = tokio::time::timeout(budget, client.get_async_connection()).await;
                    match conn {
                        Ok(Ok(c)) => guard.connection.install(generation, Conn::Cluster(c)),
                        Ok(Err(e)) => {
                            tracing::warn!(error = %e, "could not replace the Redis Cluster connection")
                        }
                        Err(_) => tracing::warn!(
                            ?budget,
                            "could not replace the Redis Cluster connection in time"
                        ),
                    }
                });
            }
            Connector::Given => {}
        }
    }

    /// Puts `conn` in place of generation `replaced`, unless that was replaced meanwhile.
    fn install(&self, replaced: u64, conn: Conn) {
        let mut c = self.current.write();
        if c.generation == replaced {
            c.generation = replaced + 1;
            c.conn = conn;
        }
    }

    fn now(&self) -> u64 {
        u64::try_from(self.origin.elapsed().as_micros())
            .unwrap_or(u64::MAX)
            .max(1)
    }
}

/// The one replacement under way; dropping it (done, failed, or its task dropped) lets the next one start.
struct Replacing {
    connection: Arc<Connection>,
}

impl Replacing {
    fn claim(connection: &Arc<Connection>) -> Option<Self> {
        connection
            .replacing
            .compare_exchange(false, true, Ordering::AcqRel, Ordering::Acquire)
            .ok()
            .map(|_| Replacing {
                connection: connection.clone(),
            })
    }
}

impl Drop for Replacing {
    fn drop(&mut self) {
        self.connection.replacing.store(false, Ordering::Release);
    }
}
