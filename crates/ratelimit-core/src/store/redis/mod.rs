//! The Redis store: one atomic script call per decision, the same decisions as the in-memory store, on
//! Redis, Valkey and Redis Cluster, and a defined behaviour when Redis fails.
//!
//! ```no_run
//! use ratelimit_core::{Policy, PolicySet, Quota, Store};
//! use ratelimit_core::store::redis::RedisStore;
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let store = RedisStore::builder().prefix("rl").connect("redis://127.0.0.1:6379/").await?;
//! let policies = PolicySet::new([
//!     Policy::gcra("burst", Quota::per_second(10).build()?)?,
//!     Policy::sliding_window("hourly", Quota::per_hour(1_000).build()?)?,
//! ])?;
//! let decision = store.check(&policies, "api-key-123", 1).await?;
//! if decision.is_allowed() {
//!     // serve the request
//! }
//! # Ok(()) }
//! ```
//!
//! # How a decision is made
//!
//! Every algorithm of this crate has a Lua twin (`src/store/redis/scripts/<algorithm>.lua`) that keeps the
//! same integer state (µs timestamps, counts) and makes the same decision, status for status — the
//! equivalence tests (`tests/redis_equivalence.rs`) drive both with random operations on a manual clock and
//! compare limit, remaining, reset and retry exactly. One script call checks every policy of a
//! [`PolicySet`] for one identity, all-or-nothing: either every policy is charged or none (unless a policy
//! penalises), and a cost above a policy's capacity is [`Outcome::Never`](crate::Outcome::Never).
//!
//! * **One round trip**: the code is installed once — as a `FUNCTION` library called with `FCALL` where
//!   the server allows it (Redis ≥ 7, Valkey: the code is defined once, so a call runs only its own body),
//!   else with `SCRIPT LOAD` and called with `EVALSHA` ([`Scripting`]). When the server has lost it
//!   (`NOSCRIPT` or `Function not found`: restart, failover, `SCRIPT FLUSH`, `FUNCTION FLUSH`) the store
//!   loads it again and retries, so no caller sees the error — per command, so it also holds when many
//!   calls are pipelined over one multiplexed connection (where redis-rs's own `Script` retry does not
//!   apply). The code sent for a policy set holds only the algorithms it uses.
//! * **Time**: by default the server's `TIME`, read once per call ([`RedisClock::Server`]), so every
//!   process shares one clock. Deployments that forbid `TIME` in scripts use [`RedisClock::Client`]: the
//!   caller's clock in µs, kept monotonic per identity by a small `…:@now` key.
//! * **Exact numbers**: replies are integers only (Redis truncates Lua floats), divisions go through
//!   `math.fmod` (exact on doubles), numbers are formatted with `%d` (a 64-bit C long in Lua 5.1: exact,
//!   and cheaper than `%.0f`; never `tostring`, which keeps 14 digits), and every value stays below 2^53
//!   by construction of [`Quota`].
//! * **Expiry**: every key is written with a millisecond TTL (`PX`/`PEXPIRE`, rounded up) reaching the
//!   moment its state becomes indistinguishable from fresh ([`Algorithm::fresh_at`]); state that is fresh
//!   is deleted. No key is ever written without a TTL, and a denied request writes nothing.
//! * **Coalescing under load** ([`RedisStoreBuilder::max_in_flight`], default 2): on a single-node
//!   connection, a call that finds that many calls already in flight waits, and everything that queued
//!   meanwhile goes out as **one** batch call when a slot frees. The batch runs each queued call exactly
//!   as it would have run alone (atomically, in order, on one reading of the server's `TIME`), so decisions
//!   are unchanged (tested against the reference in call order); Redis saves the fixed price of a script
//!   call per decision, which is most of its work under load. A lone caller never waits for a batch, and
//!   a queued caller still resolves by its own deadline. `ratelimit_redis_calls_total` counts calls
//!   (batches included), `ratelimit_redis_batched_calls_total` the decisions that went in batches.
//! * **Sliding log**: one sorted-set member per admitted request (`ts:cost`, merged within a microsecond),
//!   so memory is O(limit) per key whatever the costs, and members never collide.
//!
//! [`Algorithm::fresh_at`]: crate::Algorithm::fresh_at
//! [`Quota`]: crate::Quota
//! [`MemoryStore`]: crate::MemoryStore
//! [`ConnectionManager`]: redis::aio::ConnectionManager
//!
//! # Keys
//!
//! `prefix:{hash}:policy:algorithm`, where `hash` is the first 128 bits of SHA-256 of the identity in hex: fixed
//! length whatever the identity, never the raw key, and a Redis Cluster hash tag, so every policy of one
//! identity lives in one slot and a multi-policy check is one script with every key declared (no
//! `CROSSSLOT`). Rename a policy, change its algorithm or remove it, and its old keys simply expire;
//! change only its quota and the state carries over.
//!
//! # Deployments
//!
//! * Single node: `redis://host:port/db`, unix sockets (`redis+unix:///path` or `unix:///path`), through a
//!   [`ConnectionManager`] that multiplexes every call over one connection and
//!   reconnects on its own. `rediss://` works when the application enables one of redis-rs's TLS features
//!   (e.g. `redis = { version = "1.8", features = ["tokio-rustls-comp"] }`, plus a rustls crypto provider);
//!   this crate does not force a TLS stack on everyone. A private CA goes through
//!   `redis::Client::build_with_tls` and [`RedisStoreBuilder::from_client`] (tested against a TLS
//!   `redis-server`, which also refuses a client that does not trust its CA).
//! * Redis Cluster: [`RedisStoreBuilder::connect_cluster`] (redis-rs `cluster-async`), tested against a
//!   local 3-master cluster.
//! * Valkey speaks the same protocol and Lua 5.1 `EVALSHA`; it is expected to work but is not tested here
//!   (Debian has no `valkey-server` package on this machine).
//!
//! Redis must keep limiter keys: use `maxmemory-policy noeviction` (or a dedicated instance) — an evicted key
//! is a forgotten limit.
//!
//! # When Redis fails
//!
//! Each call has a timeout ([`RedisStoreBuilder::timeout`], default 50 ms). What went wrong decides who is
//! affected:
//!
//! * **Redis as a whole** — a timeout, a broken connection, or a server-wide condition (`OOM`, `LOADING`,
//!   `READONLY`, `MASTERDOWN`, `CLUSTERDOWN`, `BUSY`, `NOPERM`, a generic `ERR`, and any error not known to
//!   be per key). These feed a circuit breaker ([`RedisStoreBuilder::breaker`], default: open after 3
//!   consecutive failures, probe again after 500 ms); while it is open Redis is not called at all, so a
//!   dead Redis costs nothing per request. After the cooldown one call goes out as the probe; its success
//!   closes the breaker, its failure reopens it. A probe whose caller gives up (its future dropped, e.g.
//!   a client that disconnected) records nothing — Redis's health is unknown — and the next call probes;
//!   it is not counted as a failure, so clients that disconnect cannot keep the breaker open.
//! * **One identity's key** — Redis answers `WRONGTYPE` (the key holds a value this limiter did not
//!   write) or the scripts answer `RLCORRUPT` (state that fails their checks). That identity's requests
//!   follow the failure policy (with [`OnFailure::Error`], a [`StoreError::KeyState`] naming its keys);
//!   Redis did answer, so the breaker counts a success and every other identity is decided by Redis as
//!   usual. Delete the key, or give the limiter a dedicated prefix or database.
//! * **One reply** — a reply that fails validation (wrong shape, a value out of range) is a
//!   [`StoreError::Protocol`] for that call: never a decision, never cached, answered by the failure
//!   policy. It counts towards the breaker once per identity in a row: a server answering garbage to
//!   everyone (say, another version of the script loaded under the same name) opens it after `threshold`
//!   identities; one bad key asked a million times never does. A batch reply of the wrong length is the
//!   whole batch's and counts. (A batch that fails as a whole answers each of its callers with that
//!   error, so a per-key error inside it fails the calls coalesced with it.)
//! * **The connection's stream** — a reply lost or cut short while the connection stays up (a proxy or
//!   network fault dropping bytes) puts every later reply of the multiplexed connection one request
//!   behind. Every call carries a token the script echoes at the end of its reply, so a reply answering
//!   another request is never taken for a decision (a protocol error for that call); and a timeout, a
//!   reply without its call's token or a batch reply of the wrong length makes the store replace the
//!   connection with a fresh one from the same client, so that calls sent afterwards get their own
//!   replies. One replacement at a time, at most one per breaker cooldown; logged when replies go out of
//!   step (WARN) and when they are in step again (INFO), counted in between. Redis Cluster connections are
//!   rebuilt whole; a manager given through [`RedisStoreBuilder::from_manager`] cannot be rebuilt.
//!
//! **Recovery needs nothing from the application.** When a fault ends, the breaker's next probe (one
//! call per cooldown) finds Redis answering and closes it; a broken connection is reconnected by the
//! connection manager on the next call (2 retries, at most 200 ms apart); a connection whose replies are
//! out of step is replaced as above, lazily (it connects on the next call); code the server lost
//! (restart, failover, `SCRIPT FLUSH`, `FUNCTION FLUSH`) is loaded again inside the call that found it
//! missing. What cannot come back is data the server lost (`FLUSHALL`, a restart without persistence):
//! those identities start afresh. A key holding a foreign value stays an error for its identity alone
//! until it is deleted. A call that timed out may still have been applied by Redis (its request was
//! sent): its caller saw an error, Redis charged it. Each of these faults is injected and measured in the
//! repository's fault tour (`tests/redis_fault_tour.rs`; results and the promises above, in
//! `RELIABILITY.md` at the repository root): every one recovered by itself, within one breaker cooldown of its end.
//!
//! What a failed or refused call answers is the [`OnFailure`] policy, for that request:
//!
//! * [`OnFailure::Error`] (default, fail closed): a typed [`StoreError`] — never a denial in disguise; the
//!   caller (e.g. the tower layer) decides what to answer.
//! * [`OnFailure::Allow`] (fail open): an allowed decision with the full quota (a cost above capacity is
//!   still [`Outcome::Never`](crate::Outcome::Never)).
//! * [`OnFailure::Local`]: decide with an in-process [`MemoryStore`] whose quotas are
//!   divided by the number of instances you declare. Approximate: with `N` instances evenly loaded the
//!   fleet admits about the global quota; unevenly loaded, less; and the local state is not copied to Redis
//!   when it recovers (for at most one period the two limits add up).
//!
//! Every future of this store is cancel-safe: dropped at any await, it leaves no probe, coalescing slot,
//! queued call or connection replacement behind (tested at every await, `tests/redis_cancel.rs`).
//!
//! **Observability.** State transitions are logged once each: the breaker opening (WARN, with the error
//! and the failure policy now answering), the first half-open probe of an outage (INFO), the breaker
//! closing (INFO). Repeats inside a state are counted, not logged per request: each kind of failure is
//! logged once, then at most once a minute with how many went unlogged. [`RedisStore::is_degraded`] is
//! true while the breaker is open; the `metrics` gauge `ratelimit_redis_degraded` mirrors it, and the
//! counters `ratelimit_redis_calls_total`, `ratelimit_redis_errors_total` (label `kind`: `timeout`,
//! `connection`, `server`, `key_state`, `protocol`), `ratelimit_redis_refused_total` (calls the open
//! breaker kept from Redis), `ratelimit_redis_probes_total`, `ratelimit_redis_reconnects_total` (label
//! `reason`: `timeout`, `foreign_reply`, `batch_length`), `ratelimit_redis_script_loads_total`,
//! `ratelimit_redis_deny_cache_hits_total` and `ratelimit_redis_fallbacks_total` count what happened
//! ([`RedisStore::stats`] gives the same counts for this store).
//!
//! # Hybrid mode
//!
//! [`HybridStore`] admits most requests locally from leases of quota taken from Redis (one round trip per
//! `lease` units instead of per request), with over-admission bounded by `instances × (lease − 1)` units in
//! any span; see [`hybrid`].
//!
//! # Deny cache
//!
//! With [`RedisStoreBuilder::deny_cache`], a limited decision is remembered until its exact retry time, and
//! later checks of the same identity and policy set (for at least the same cost) are answered locally, with
//! the retry and reset counted down — a flood on a limited key stops reaching Redis. It is skipped for policy
//! sets with a penalising policy (the penalty must reach Redis). Refunds and resets clear the entry.
//! Entries are keyed by identity and by the policy set's content (names, algorithms, quotas), so a set
//! rebuilt for every request hits the cache as well as one built once.

mod batch;
pub mod breaker;
pub mod conn;
mod deny_cache;
mod failure;
mod health;
pub mod hybrid;
mod keys;
mod reply;
mod script;

pub use hybrid::HybridStore;
// The breaker in front of Redis, for other code of the workspace that calls Redis (the client's shared
// state) to behave as the store does when Redis fails.
pub use breaker::{Breaker, BreakerPermit, Transition};
// What a call answers when Redis fails (see the module docs); defined with the stores, whose callers
// (the tower layer) use the same names.
pub use super::failure::OnFailure;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{ErrorKind, RedisError, ServerErrorKind, Value};

use crate::clock::{duration_to_micros, Clock, Micros};
use crate::decision::Decision;
use crate::policy::{Policy, PolicySet, PolicyStates};
use crate::quota::Quota;
use crate::store::{MemoryStore, Store, StoreError};
use crate::Rule;

use self::batch::{Batcher, Entry, Waiter};
use self::conn::{Conn, Connection, Connector, Evidence, Handle};
use self::deny_cache::DenyCache;
use self::failure::{Failure, ProtocolStreak};
use self::health::{Caller, LOG_SLOTS, RELOAD_LOG_SLOT};
use self::script::{Op, Token};
use crate::log_once::LogOnce;

/// The Lua source of the script the store runs for `set` (the algorithms `set` uses and the entry
/// point), for inspection and for loading by hand (e.g. with `redis-benchmark`).
pub fn script_source(set: &PolicySet) -> &'static str {
    &script::script(script::mask(set)).source
}

/// The SHA-1 of [`script_source`], as `EVALSHA` takes it.
pub fn script_sha(set: &PolicySet) -> &'static str {
    &script::script(script::mask(set)).sha
}

/// The name of the function the store's `FUNCTION` library for `set` registers, as `FCALL` takes it.
pub fn function_name(set: &PolicySet) -> &'static str {
    &script::script(script::mask(set)).function
}

/// How the store's Lua code is installed on the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Scripting {
    /// A `FUNCTION` library where the server allows it (Redis ≥ 7, Valkey), else `EVALSHA` (default).
    #[default]
    Auto,
    /// `FUNCTION LOAD` + `FCALL`: the code is defined once per server, so a call runs only its own body
    /// (faster), and libraries survive restarts when persisted and are replicated to replicas.
    Functions,
    /// `SCRIPT LOAD` + `EVALSHA`, for servers that refuse `FUNCTION` (Redis 6, some managed services).
    Eval,
}

/// Where the Redis store takes the time from.
#[derive(Clone, Default)]
pub enum RedisClock {
    /// The server's `TIME`, once per call (default): one clock for every process.
    #[default]
    Server,
    /// The caller's clock, for deployments that forbid `TIME` in scripts (or tests with a
    /// [`ManualClock`](crate::ManualClock)). The script never lets an identity's time go backwards. Key TTLs
    /// run on the server's clock, so they are lengthened by `ttl_slack` to cover skew between clients.
    Client {
        /// The clock (µs; Unix-epoch aligned, like [`SystemClock`](crate::SystemClock), in production).
        clock: Arc<dyn Clock>,
        /// Extra key lifetime beyond the computed expiry.
        ttl_slack: Duration,
    },
}

impl std::fmt::Debug for RedisClock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RedisClock::Server => f.write_str("Server"),
            RedisClock::Client { ttl_slack, .. } => f
                .debug_struct("Client")
                .field("ttl_slack", ttl_slack)
                .finish_non_exhaustive(),
        }
    }
}

/// Counts kept by one [`RedisStore`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct RedisStats {
    /// Script calls sent to Redis (not counting `SCRIPT LOAD`).
    pub redis_calls: u64,
    /// Calls that failed or timed out, whatever the reason (the next counts break some of them down).
    pub errors: u64,
    /// `SCRIPT LOAD`s after a `NOSCRIPT`.
    pub script_loads: u64,
    /// Checks answered by the deny cache.
    pub deny_cache_hits: u64,
    /// Calls answered by the failure policy (including while the breaker was open).
    pub fallbacks: u64,
    /// Calls that found one identity's key holding data this limiter did not write (`WRONGTYPE`) or
    /// state the script found corrupt (`RLCORRUPT`).
    pub key_state_errors: u64,
    /// Replies that failed validation.
    pub protocol_errors: u64,
    /// Calls the open circuit breaker kept from Redis.
    pub refused: u64,
    /// Connections replaced because their replies were out of step with their requests.
    pub reconnects: u64,
}

#[derive(Debug, Default)]
struct Counters {
    redis_calls: AtomicU64,
    errors: AtomicU64,
    script_loads: AtomicU64,
    deny_cache_hits: AtomicU64,
    fallbacks: AtomicU64,
    key_state_errors: AtomicU64,
    protocol_errors: AtomicU64,
    refused: AtomicU64,
}

/// Builds a [`RedisStore`]; see [`RedisStore::builder`].
#[derive(Debug, Clone)]
#[must_use]
pub struct RedisStoreBuilder {
    prefix: String,
    timeout: Duration,
    clock: RedisClock,
    on_failure: OnFailure,
    breaker_threshold: u32,
    breaker_cooldown: Duration,
    deny_cache: Option<usize>,
    local_max_keys: usize,
    scripting: Scripting,
    max_in_flight: usize,
}

impl Default for RedisStoreBuilder {
    fn default() -> Self {
        RedisStoreBuilder {
            prefix: "rl".to_owned(),
            timeout: Duration::from_millis(50),
            clock: RedisClock::Server,
            on_failure: OnFailure::Error,
            breaker_threshold: 3,
            breaker_cooldown: Duration::from_millis(500),
            deny_cache: None,
            local_max_keys: 100_000,
            scripting: Scripting::Auto,
            max_in_flight: DEFAULT_MAX_IN_FLIGHT,
        }
    }
}

impl RedisStoreBuilder {
    /// The key prefix (default `rl`); keys are `prefix:{hash}:policy`.
    pub fn prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// The longest one call may take, including a script reload (default 50 ms).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Where time comes from (default: the server's `TIME`).
    pub fn clock(mut self, clock: RedisClock) -> Self {
        self.clock = clock;
        self
    }

    /// What a failed call answers (default: the error).
    pub fn on_failure(mut self, on_failure: OnFailure) -> Self {
        self.on_failure = on_failure;
        self
    }

    /// Opens the circuit breaker after `failures` consecutive failures, for `cooldown` before a probe.
    pub fn breaker(mut self, failures: u32, cooldown: Duration) -> Self {
        self.breaker_threshold = failures;
        self.breaker_cooldown = cooldown;
        self
    }

    /// Enables the local deny cache, holding at most `capacity` identities.
    pub fn deny_cache(mut self, capacity: usize) -> Self {
        self.deny_cache = Some(capacity);
        self
    }

    /// How the Lua code is installed (default: a `FUNCTION` library where allowed, else `EVALSHA`).
    pub fn scripting(mut self, scripting: Scripting) -> Self {
        self.scripting = scripting;
        self
    }

    /// How many calls may be in flight on a single-node connection before further calls are coalesced
    /// into one batch call (default 2; 0 turns coalescing off, every call then goes out on its own).
    /// Two lets one batch be answered while the next is prepared; measured against 1, 4, 8 and 16 on
    /// 16 to 256 concurrent callers (BENCHMARKS.md).
    ///
    /// A batch runs each queued call exactly as if it had been sent alone — atomically, one after the
    /// other, on one reading of the server's clock — so decisions do not change; it saves Redis the fixed
    /// price of one script call per decision, which is most of its work under load. A caller that finds
    /// fewer calls in flight goes out at once and never waits for a batch. Redis Cluster connections never
    /// coalesce (the identities of a batch live in different slots).
    pub fn max_in_flight(mut self, calls: usize) -> Self {
        self.max_in_flight = calls;
        self
    }

    /// The key cap of the local fallback store used by [`OnFailure::Local`] (default 100,000).
    pub fn local_max_keys(mut self, max_keys: usize) -> Self {
        self.local_max_keys = max_keys;
        self
    }

    fn validate(&self) -> Result<(), StoreError> {
        if self.prefix.is_empty() || self.prefix.contains(['{', '}']) {
            return Err(StoreError::Unsupported(format!(
                "Redis key prefix {:?} is invalid: use a non-empty prefix without braces (braces are the cluster hash tag)",
                self.prefix
            )));
        }
        if self.timeout.is_zero() {
            return Err(StoreError::Unsupported(
                "Redis call timeout is zero: give at least a few milliseconds".to_owned(),
            ));
        }
        if let OnFailure::Local { instances: 0 } = self.on_failure {
            return Err(StoreError::Unsupported(
                "OnFailure::Local needs instances >= 1".to_owned(),
            ));
        }
        Ok(())
    }

    /// Connects to one Redis (or Valkey) server: `redis://host:port/db`, `unix:///path`, or `rediss://…`
    /// when redis-rs's TLS is enabled. Loads the script.
    pub async fn connect(self, url: &str) -> Result<RedisStore, StoreError> {
        let client = redis::Client::open(url).map_err(backend)?;
        self.from_client(client).await
    }

    /// Connects through a client the application built (e.g. `redis::Client::build_with_tls` for a
    /// private CA). Loads the script. The store can replace this connection when its replies fall out of
    /// step with its requests (see the [module docs](self#when-redis-fails)).
    ///
    /// ```no_run
    /// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
    /// use ratelimit_core::RedisStore;
    ///
    /// let client = redis::Client::open("redis://127.0.0.1:6379/")?;
    /// let store = RedisStore::builder().from_client(client).await?;
    /// # Ok(()) }
    /// ```
    pub async fn from_client(self, client: redis::Client) -> Result<RedisStore, StoreError> {
        self.validate()?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(self.connect_timeout()))
            .set_number_of_retries(2)
            .set_max_delay(Duration::from_millis(200));
        let connector = Connector::Single { client, config };
        let conn = connector.connect().await.map_err(backend)?;
        self.build(conn, connector).await
    }

    /// Uses an existing connection manager (for sharing one with the application). Loads the script.
    ///
    /// The store cannot rebuild a manager it was given (redis-rs does not expose the client behind it):
    /// when the connection's replies fall out of step with its requests (a reply lost while the
    /// connection stays up), they are still never taken for decisions, but calls fail until redis-rs
    /// drops the connection. Prefer [`from_client`](Self::from_client).
    pub async fn from_manager(self, manager: ConnectionManager) -> Result<RedisStore, StoreError> {
        self.validate()?;
        self.build(Conn::Single(manager), Connector::Given).await
    }

    /// Connects to a Redis Cluster through any of its nodes. Loads the script on every primary.
    pub async fn connect_cluster(self, nodes: &[&str]) -> Result<RedisStore, StoreError> {
        self.validate()?;
        let client = redis::cluster::ClusterClient::builder(nodes.iter().copied())
            .connection_timeout(self.connect_timeout())
            .build()
            .map_err(backend)?;
        let budget = self
            .connect_timeout()
            .saturating_mul(CLUSTER_RECONNECT_BUDGET_IN_CONNECT_TIMEOUTS);
        let connector = Connector::Cluster { client, budget };
        let conn = connector.connect().await.map_err(backend)?;
        self.build(conn, connector).await
    }

    /// How long one connection attempt may take: the call timeout, but enough for a TLS handshake.
    fn connect_timeout(&self) -> Duration {
        self.timeout.max(Duration::from_millis(250))
    }

    async fn build(self, conn: Conn, connector: Connector) -> Result<RedisStore, StoreError> {
        let batcher = match conn {
            Conn::Single(_) if self.max_in_flight > 0 => Some(Batcher::new(self.max_in_flight)),
            _ => None,
        };
        // See `conn`: reconnects spaced like the breaker's probes, and never closer than one timeout.
        let reconnect_spacing = self.breaker_cooldown.max(self.timeout);
        let store = RedisStore {
            inner: Arc::new(Inner {
                conn: Connection::new(conn, connector, reconnect_spacing, RECONNECTS_METRIC),
                tokens: AtomicU64::new(0),
                prefix: self.prefix,
                timeout: self.timeout,
                clock: self.clock,
                on_failure: self.on_failure,
                breaker: Breaker::new(
                    self.breaker_threshold,
                    self.breaker_cooldown,
                    self.timeout.saturating_mul(PROBE_LEASE_IN_TIMEOUTS),
                ),
                deny: self.deny_cache.map(DenyCache::new),
                local: MemoryStore::builder().max_keys(self.local_max_keys).build(),
                scaled: Mutex::new(Vec::new()),
                counters: Counters::default(),
                functions: AtomicBool::new(self.scripting != Scripting::Eval),
                batcher,
                streak: ProtocolStreak::default(),
                logs: LogOnce::new(),
                probe_logged: AtomicBool::new(false),
            }),
        };
        // Load the variants for single-algorithm sets now; others load on first use.
        let mut conn = store.inner.conn.current().conn;
        if self.scripting == Scripting::Auto {
            if let Err(e) = store.inner.load_script(&mut conn, 1).await {
                tracing::info!(error = %e, "FUNCTION LOAD refused; using SCRIPT LOAD + EVALSHA");
                store.inner.functions.store(false, Ordering::Relaxed);
            }
        }
        for part in 0..6 {
            store.inner.load_script(&mut conn, 1 << part).await?;
        }
        Ok(store)
    }
}

struct Inner {
    conn: Arc<Connection>,
    /// The next call's token (see [`Token`]).
    tokens: AtomicU64,
    prefix: String,
    timeout: Duration,
    clock: RedisClock,
    on_failure: OnFailure,
    breaker: Breaker,
    deny: Option<DenyCache>,
    local: MemoryStore<Vec<u8>, PolicySet>,
    /// Policy sets scaled down for `OnFailure::Local`, by the original set.
    scaled: Mutex<Vec<(PolicySet, PolicySet)>>,
    counters: Counters,
    /// Whether the code is a FUNCTION library (FCALL) rather than a script (EVALSHA).
    functions: AtomicBool,
    /// Coalescing of concurrent calls (single node only).
    batcher: Option<Batcher>,
    /// Which identity's reply failed validation last (protocol errors count once per identity in a row).
    streak: ProtocolStreak,
    /// One throttled log line per kind of failure, and one for script reloads.
    logs: LogOnce<LOG_SLOTS>,
    /// Whether this outage's first half-open probe was logged.
    probe_logged: AtomicBool,
}

/// See [`RedisStoreBuilder::max_in_flight`].
const DEFAULT_MAX_IN_FLIGHT: usize = 2;

/// A cluster connection is rebuilt by connecting to the seed nodes and reading the slot map: a few
/// connection attempts' worth, after which the replacement is given up (and tried again on the next
/// evidence).
const CLUSTER_RECONNECT_BUDGET_IN_CONNECT_TIMEOUTS: u32 = 4;

/// Where the store counts its connection replacements, by reason.
const RECONNECTS_METRIC: &str = "ratelimit_redis_reconnects_total";

/// A probe finishes within its timeout or is dropped; one that did neither after this many timeouts
/// (a future parked and never polled again) is presumed lost, so it cannot keep the breaker open.
const PROBE_LEASE_IN_TIMEOUTS: u32 = 2;

/// What one call answers: a decision with the script's time, or nothing (a refund).
type Answer = Option<(Micros, Decision)>;

/// The Redis store; see the [module docs](self). Cheap to clone (clones share the connection).
#[derive(Clone)]
pub struct RedisStore {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisStore")
            .field("prefix", &self.inner.prefix)
            .field("timeout", &self.inner.timeout)
            .field("clock", &self.inner.clock)
            .field("on_failure", &self.inner.on_failure)
            .field("degraded", &self.is_degraded())
            .finish_non_exhaustive()
    }
}

fn backend(e: RedisError) -> StoreError {
    StoreError::Backend(Box::new(e))
}

/// NOSCRIPT (a script cache emptied) or "Function not found" (a library gone).
fn is_noscript(e: &RedisError) -> bool {
    e.kind() == ErrorKind::Server(ServerErrorKind::NoScript)
        || e.detail()
            .is_some_and(|d| d.starts_with("Function not found"))
}

impl Inner {
    fn uses_functions(&self) -> bool {
        self.functions.load(Ordering::Relaxed)
    }

    async fn load_script(&self, conn: &mut Conn, mask: u8) -> Result<(), StoreError> {
        let script = script::script(mask);
        let functions = self.uses_functions();
        let cmd = if functions {
            let mut c = redis::cmd("FUNCTION");
            c.arg("LOAD").arg("REPLACE").arg(&script.library);
            c
        } else {
            let mut c = redis::cmd("SCRIPT");
            c.arg("LOAD").arg(&script.source);
            c
        };
        let fut = conn.query(&cmd);
        let sha =
            match tokio::time::timeout(self.timeout.max(Duration::from_millis(250)), fut).await {
                Err(_) => return Err(StoreError::Timeout(self.timeout)),
                Ok(r) => r.map_err(backend)?,
            };
        self.counters.script_loads.fetch_add(1, Ordering::Relaxed);
        metrics::counter!("ratelimit_redis_script_loads_total").increment(1);
        // A cluster answers with one SHA per primary; any textual SHA must be ours.
        let expected = if functions {
            &script.function
        } else {
            &script.sha
        };
        let ok = match &sha {
            Value::BulkString(b) => b == expected.as_bytes(),
            Value::SimpleString(s) => s == expected,
            _ => true,
        };
        if !ok {
            return Err(StoreError::Protocol(format!(
                "loading the script answered {sha:?}, expected {expected}"
            )));
        }
        tracing::debug!(sha = %script.sha, "loaded the rate-limit script");
        Ok(())
    }

    /// EVALSHA/FCALL, reloading the code and retrying when the server has lost it. A few attempts, not
    /// one: another flush can land between the reload and the retry. The caller's timeout bounds the loop.
    async fn eval(&self, conn: &mut Conn, cmd: &redis::Cmd, mask: u8) -> Result<Value, Failure> {
        let mut attempts = 0;
        loop {
            match conn.call(cmd).await {
                Err(e) if is_noscript(&e) && attempts < 4 => {
                    attempts += 1;
                    if let Some(unlogged) = self.logs.occurred(RELOAD_LOG_SLOT) {
                        tracing::info!(
                            unlogged,
                            "Redis lost the rate-limit code (restart, failover, SCRIPT/FUNCTION FLUSH); reloading (counted in ratelimit_redis_script_loads_total)"
                        );
                    }
                    self.load_script(conn, mask).await.map_err(Failure::Store)?;
                }
                r => return r.map_err(Failure::Redis),
            }
        }
    }

    fn server_time(&self) -> bool {
        matches!(self.clock, RedisClock::Server)
    }

    fn client_now(&self) -> Option<(Micros, Micros)> {
        match &self.clock {
            RedisClock::Server => None,
            RedisClock::Client { clock, ttl_slack } => {
                Some((clock.now(), duration_to_micros(*ttl_slack)))
            }
        }
    }

    /// One script call, guarded by the breaker and the timeout, its reply validated; coalesced with
    /// others under load. Cancel-safe: the breaker's permit and the lane's slot are guards that give
    /// themselves back when this future is dropped at any await.
    async fn call(
        self: &Arc<Self>,
        op: Op,
        set: &PolicySet,
        hash: &keys::IdentityHash,
        cost: u64,
    ) -> Result<Answer, StoreError> {
        let Some(permit) = self.breaker.permit() else {
            return Err(self.refused());
        };
        let client_now = self.client_now();
        let mask = script::mask(set);
        let token = self.next_token();
        // Held until this call's reply is in: then it sends whatever queued meanwhile.
        let _slot = match &self.batcher {
            // A probe of a half-open breaker goes alone: its outcome is what closes the breaker again.
            Some(b) if !permit.is_probe() => {
                match b.enter(
                    self,
                    mask,
                    op,
                    set,
                    hash,
                    cost,
                    client_now,
                    token,
                    self.timeout,
                ) {
                    Entry::Direct(slot) => Some(slot),
                    Entry::Queued(rx) => {
                        // The batch holding this call takes its own permit.
                        drop(permit);
                        return self.queued(rx, op, set, hash, cost).await;
                    }
                }
            }
            _ => None,
        };
        if permit.is_probe() {
            self.probing();
        }
        let mut base = String::new();
        keys::key_base(&mut base, &self.prefix, hash);
        let cmd = script::command(
            self.uses_functions(),
            op,
            set,
            &mut base,
            client_now,
            cost,
            token,
        );
        let (generation, reply) = self.send(&cmd, mask, self.timeout).await;
        let answer = reply
            .and_then(|v| self.own_reply(v, token, generation))
            .and_then(|v| self.validate(&v, op, set, cost).map_err(Failure::Store));
        self.settle(Some(permit), answer, Caller::Identity(hash))
    }

    fn next_token(&self) -> Token {
        Token::nth(self.tokens.fetch_add(1, Ordering::Relaxed))
    }

    /// `reply` without its token when it is this call's own; else the evidence that the connection it
    /// came on is out of step (see [`conn`]).
    fn own_reply(&self, reply: Value, token: Token, generation: u64) -> Result<Value, Failure> {
        match script::untag(reply, token) {
            Ok(v) => {
                self.conn.in_step(generation);
                Ok(v)
            }
            Err(script::ForeignReply(e)) => {
                self.conn.out_of_step(generation, Evidence::ForeignReply);
                Err(Failure::Store(e))
            }
        }
    }

    /// A call that went in a batch: its entry of the batch's reply (the batch told the breaker how Redis
    /// answered), validated on its own.
    async fn queued(
        &self,
        rx: tokio::sync::oneshot::Receiver<batch::Reply>,
        op: Op,
        set: &PolicySet,
        hash: &keys::IdentityHash,
        cost: u64,
    ) -> Result<Answer, StoreError> {
        let entry = rx.await.unwrap_or_else(|_| {
            Err(StoreError::Unavailable(
                "the batch holding this Redis call was dropped".to_owned(),
            ))
        })?;
        // A call that failed inside the batch (its key's state) comes back as that call's own error.
        let answer = match entry {
            Value::ServerError(e) => Err(Failure::Redis(e.into())),
            v => match script::batch_item(v) {
                Err(e) => Err(Failure::Redis(e)),
                Ok(v) => self.validate(&v, op, set, cost).map_err(Failure::Store),
            },
        };
        self.settle(None, answer, Caller::Identity(hash))
    }

    /// Checks a reply against what the script can legitimately answer for `op`.
    fn validate(
        &self,
        reply: &Value,
        op: Op,
        set: &PolicySet,
        cost: u64,
    ) -> Result<Answer, StoreError> {
        match op {
            Op::Refund => match reply {
                Value::Array(v) if v.len() == 1 => Ok(None),
                other => Err(StoreError::Protocol(format!(
                    "unexpected refund reply {other:?}"
                ))),
            },
            _ => script::parse(reply, op, set, self.server_time(), cost).map(Some),
        }
    }

    /// Sends one command (a call or a batch) within `budget`, counting it; with the generation of the
    /// connection it went out on. A timeout is evidence that the connection is out of step.
    async fn send(
        &self,
        cmd: &redis::Cmd,
        mask: u8,
        budget: Duration,
    ) -> (u64, Result<Value, Failure>) {
        self.counters.redis_calls.fetch_add(1, Ordering::Relaxed);
        metrics::counter!("ratelimit_redis_calls_total").increment(1);
        let Handle {
            generation,
            mut conn,
        } = self.conn.current();
        let result = match tokio::time::timeout(budget, self.eval(&mut conn, cmd, mask)).await {
            Ok(r) => r,
            Err(_) => {
                self.conn.out_of_step(generation, Evidence::Timeout);
                Err(Failure::Timeout(self.timeout))
            }
        };
        (generation, result)
    }

    /// The next batch of `mask`'s lane as an in-flight call ends (see [`Batcher::next`]).
    fn batcher_next(&self, mask: u8) -> Option<Vec<Waiter>> {
        self.batcher.as_ref().and_then(|b| b.next(mask))
    }

    /// Sends one batch and answers each of its callers.
    async fn send_batch(&self, mask: u8, batch: Vec<Waiter>) {
        let now = tokio::time::Instant::now();
        // A caller that gave up while queued is not sent: nothing is charged for it (as for a direct
        // call cancelled before it went out).
        let (live, late): (Vec<Waiter>, Vec<Waiter>) = batch
            .into_iter()
            .filter(|w| !w.abandoned())
            .partition(|w| w.deadline() > now);
        let expired = !late.is_empty();
        for w in late {
            w.answer(Err(StoreError::Timeout(self.timeout)));
        }
        let Some(deadline) = live.iter().map(Waiter::deadline).min() else {
            if expired {
                // The whole batch ran out of time waiting for Redis to answer the calls ahead of it: a
                // failed call for the breaker, as the direct calls that timed out were.
                let _ =
                    self.settle::<()>(None, Err(Failure::Timeout(self.timeout)), Caller::Batch(0));
            }
            return;
        };
        let Some(permit) = self.breaker.permit() else {
            for w in live {
                w.answer(Err(self.refused()));
            }
            return;
        };
        if permit.is_probe() {
            self.probing();
        }
        let cmd = batch::command(self.uses_functions(), &self.prefix, mask, &live);
        metrics::counter!("ratelimit_redis_batched_calls_total").increment(live.len() as u64);
        let n = live.len();
        let (generation, reply) = self.send(&cmd, mask, deadline - now).await;
        let reply = match reply {
            Ok(Value::Array(items)) if items.len() == n => {
                self.own_entries(items, &live, generation)
            }
            // Not one identity's reply: a protocol error of the whole batch (it feeds the breaker).
            Ok(other) => {
                self.conn.out_of_step(generation, Evidence::BatchLength);
                Err(Failure::Store(StoreError::Protocol(format!(
                    "expected {n} replies from the batch call, got {}",
                    reply::describe(&other)
                ))))
            }
            Err(e) => Err(e),
        };
        match self.settle(Some(permit), reply, Caller::Batch(n)) {
            Ok(items) => {
                for (w, item) in live.into_iter().zip(items) {
                    w.answer(Ok(item));
                }
            }
            Err(error) => {
                for w in live {
                    w.answer(Err(batch::duplicate(&error)));
                }
            }
        }
    }

    /// A batch reply's entries without their tokens when every entry is its own call's; else the whole
    /// batch's evidence that the connection is out of step (a reply of another batch of the same size).
    /// Untagged in place: no second vector per batch.
    fn own_entries(
        &self,
        mut entries: Vec<Value>,
        batch: &[Waiter],
        generation: u64,
    ) -> Result<Vec<Value>, Failure> {
        for (entry, w) in entries.iter_mut().zip(batch) {
            match script::untag_entry(std::mem::replace(entry, Value::Nil), w.token()) {
                Ok(v) => *entry = v,
                Err(script::ForeignReply(e)) => {
                    self.conn.out_of_step(generation, Evidence::ForeignReply);
                    return Err(Failure::Store(e));
                }
            }
        }
        self.conn.in_step(generation);
        Ok(entries)
    }

    fn scaled(&self, set: &PolicySet, instances: u32) -> PolicySet {
        let mut cache = self.scaled.lock();
        if let Some((_, s)) = cache.iter().find(|(k, _)| k == set) {
            return s.clone();
        }
        let scaled = scale(set, instances).unwrap_or_else(|| set.clone());
        if cache.len() >= 64 {
            cache.clear();
        }
        cache.push((set.clone(), scaled.clone()));
        scaled
    }

    fn fallback(
        &self,
        op: Op,
        set: &PolicySet,
        key: &[u8],
        cost: u64,
        err: StoreError,
    ) -> Result<Option<Decision>, StoreError> {
        let result = match self.on_failure {
            OnFailure::Error => return Err(err),
            OnFailure::Allow => match op {
                Op::Refund => None,
                _ => Some(set.peek(&PolicyStates::default(), 0, cost)),
            },
            OnFailure::Local { instances } => {
                let local = self.scaled(set, instances);
                match op {
                    Op::Check => Some(self.local.check(&local, key, cost)?),
                    Op::Peek => Some(self.local.peek(&local, key, cost)),
                    Op::Refund => {
                        self.local.refund(&local, key, cost);
                        None
                    }
                }
            }
        };
        self.counters.fallbacks.fetch_add(1, Ordering::Relaxed);
        metrics::counter!("ratelimit_redis_fallbacks_total").increment(1);
        Ok(result)
    }

    async fn decide(
        self: &Arc<Self>,
        op: Op,
        set: &PolicySet,
        key: &[u8],
        cost: u64,
    ) -> Result<Decision, StoreError> {
        let hash = keys::hash_identity(key);
        // The deny cache, its key and the send time only when it applies (no hashing or clock read per
        // call without it).
        let deny = match &self.deny {
            Some(d) if op == Op::Check && !set.policies().iter().any(Policy::penalises) => {
                Some((d, (hash, script::set_id(set)), Instant::now()))
            }
            _ => None,
        };
        if let Some((d, cache_key, now)) = &deny {
            if let Some(decision) = d.get(cache_key, cost, *now) {
                self.counters
                    .deny_cache_hits
                    .fetch_add(1, Ordering::Relaxed);
                metrics::counter!("ratelimit_redis_deny_cache_hits_total").increment(1);
                return Ok(decision);
            }
        }
        // Every failure — Redis down, this key's state, a reply that failed validation — goes through
        // the failure policy; only a validated reply is a decision (and only it reaches the deny cache).
        match self.call(op, set, &hash, cost).await {
            Ok(Some((_, decision))) => {
                if let Some((d, cache_key, sent)) = deny {
                    if decision.outcome() == crate::Outcome::Limited {
                        // Counted from when the call was sent: the retry is never shortened by the RTT
                        // being attributed to the wait.
                        d.insert(cache_key, cost, decision, sent, script::max_wait(set));
                    }
                }
                Ok(decision)
            }
            Ok(None) => Err(StoreError::Protocol("no decision for a check".to_owned())),
            Err(e) => match self.fallback(op, set, key, cost, e)? {
                Some(d) => Ok(d),
                None => Err(StoreError::Protocol("no decision for a check".to_owned())),
            },
        }
    }

    async fn refund(
        self: &Arc<Self>,
        set: &PolicySet,
        key: &[u8],
        cost: u64,
    ) -> Result<(), StoreError> {
        let hash = keys::hash_identity(key);
        if let Some(d) = &self.deny {
            d.remove(&(hash, script::set_id(set)));
        }
        match self.call(Op::Refund, set, &hash, cost).await {
            Ok(_) => Ok(()),
            Err(e) => self.fallback(Op::Refund, set, key, cost, e).map(|_| ()),
        }
    }

    /// Deletes the identity's keys. Takes a breaker permit like any call and records its outcome (in
    /// half-open it is the probe).
    async fn reset(&self, set: &PolicySet, key: &[u8]) -> Result<(), StoreError> {
        let hash = keys::hash_identity(key);
        if let Some(d) = &self.deny {
            d.remove(&(hash, script::set_id(set)));
        }
        if let OnFailure::Local { .. } = self.on_failure {
            self.local.reset(key);
        }
        let Some(permit) = self.breaker.permit() else {
            return Err(self.refused());
        };
        if permit.is_probe() {
            self.probing();
        }
        let mut base = String::new();
        keys::key_base(&mut base, &self.prefix, &hash);
        let mut cmd = redis::cmd("DEL");
        let base_len = base.len();
        for p in set.policies() {
            base.truncate(base_len);
            script::push_policy_key(&mut base, p);
            cmd.arg(base.as_bytes());
        }
        let Handle {
            generation,
            mut conn,
        } = self.conn.current();
        let result = match tokio::time::timeout(self.timeout, conn.query(&cmd)).await {
            Err(_) => {
                self.conn.out_of_step(generation, Evidence::Timeout);
                Err(Failure::Timeout(self.timeout))
            }
            // DEL answers how many of the keys it deleted; anything else answers another request.
            Ok(Ok(Value::Int(n))) if usize::try_from(n).is_ok_and(|n| n <= set.len()) => Ok(()),
            Ok(Ok(other)) => {
                self.conn.out_of_step(generation, Evidence::ForeignReply);
                Err(Failure::Store(StoreError::Protocol(format!(
                    "DEL of {} keys answered {}: a reply to another request, so the connection's replies are out of step with its requests; the store replaces the connection",
                    set.len(),
                    reply::describe(&other)
                ))))
            }
            Ok(Err(e)) => Err(Failure::Redis(e)),
        };
        self.settle(Some(permit), result, Caller::Identity(&hash))
    }
}

/// `set` with every quota divided by `instances` (at least one unit each).
fn scale(set: &PolicySet, instances: u32) -> Option<PolicySet> {
    let n = u64::from(instances.max(1));
    let policies = set
        .policies()
        .iter()
        .map(|p| {
            let q = p.quota();
            let mut b = Quota::new((q.limit() / n).max(1), q.period());
            if q.has_custom_burst() {
                b = b.burst((q.burst() / n).max(1));
            }
            let quota = b.build().ok()?;
            Some(
                Policy::new(p.name(), p.algorithm().kind(), quota)
                    .ok()?
                    .penalise(p.penalises()),
            )
        })
        .collect::<Option<Vec<_>>>()?;
    PolicySet::new(policies).ok()
}

impl RedisStore {
    /// A builder with the defaults: prefix `rl`, 50 ms timeout, server time, fail closed (errors), breaker
    /// after 3 failures for 500 ms, no deny cache.
    pub fn builder() -> RedisStoreBuilder {
        RedisStoreBuilder::default()
    }

    /// Whether the circuit breaker is open (Redis is considered down and is not being called).
    pub fn is_degraded(&self) -> bool {
        self.inner.breaker.is_open()
    }

    /// What this store has done so far.
    pub fn stats(&self) -> RedisStats {
        let c = &self.inner.counters;
        RedisStats {
            redis_calls: c.redis_calls.load(Ordering::Relaxed),
            errors: c.errors.load(Ordering::Relaxed),
            script_loads: c.script_loads.load(Ordering::Relaxed),
            deny_cache_hits: c.deny_cache_hits.load(Ordering::Relaxed),
            fallbacks: c.fallbacks.load(Ordering::Relaxed),
            key_state_errors: c.key_state_errors.load(Ordering::Relaxed),
            protocol_errors: c.protocol_errors.load(Ordering::Relaxed),
            refused: c.refused.load(Ordering::Relaxed),
            reconnects: self.inner.conn.reconnects(),
        }
    }

    /// The Redis key holding `policy`'s state for `identity` (for inspection and tests):
    /// `prefix:{hash}:name:algorithm`.
    pub fn key_for(&self, identity: &[u8], policy: &Policy) -> String {
        let mut base = String::new();
        keys::key_base(
            &mut base,
            &self.inner.prefix,
            &keys::hash_identity(identity),
        );
        script::push_policy_key(&mut base, policy);
        base
    }

    /// Checks `cost` for `identity` and also returns the time (µs) the script used: the server's `TIME`,
    /// or the (monotonic) client time. Goes to Redis whatever the deny cache holds; errors are returned as
    /// they are, whatever the failure policy.
    pub async fn check_at(
        &self,
        set: &PolicySet,
        identity: &[u8],
        cost: u64,
    ) -> Result<(Micros, Decision), StoreError> {
        let hash = keys::hash_identity(identity);
        self.inner
            .call(Op::Check, set, &hash, cost)
            .await?
            .ok_or_else(|| StoreError::Protocol("no decision for a check".to_owned()))
    }

    /// The breaker's and the coalescing lanes' state, for tests that drop calls mid-flight and check
    /// that nothing was left behind. Not part of the API.
    #[doc(hidden)]
    pub fn debug_state(&self) -> DebugState {
        let (in_flight, queued) = self
            .inner
            .batcher
            .as_ref()
            .map_or((0, 0), Batcher::occupancy);
        DebugState {
            open: self.inner.breaker.is_open(),
            probing: self.inner.breaker.is_probing(),
            in_flight,
            queued,
            reconnecting: self.inner.conn.is_replacing(),
        }
    }
}

/// See [`RedisStore::debug_state`]. Not part of the API.
#[doc(hidden)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct DebugState {
    /// The circuit breaker is open.
    pub open: bool,
    /// A half-open probe is out.
    pub probing: bool,
    /// Calls holding a coalescing slot (direct calls and batches in flight), over every lane.
    pub in_flight: usize,
    /// Calls waiting for a batch, over every lane.
    pub queued: usize,
    /// A replacement connection is being made.
    pub reconnecting: bool,
}

impl RedisStore {
    /// Sends a refund from a task of its own (for [`Store::refund_detached`]): the caller is a `Drop` that
    /// cannot wait for the round trip.
    fn refund_in_background(&self, set: &PolicySet, key: &[u8], cost: u64) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            tracing::warn!(
                cost,
                "cancelled reservation not refunded: no tokio runtime to send it from"
            );
            return;
        };
        let (inner, set, key) = (self.inner.clone(), set.clone(), key.to_vec());
        runtime.spawn(async move {
            if let Err(e) = inner.refund(&set, &key, cost).await {
                tracing::warn!(error = %e, cost, "could not refund a cancelled reservation");
            }
        });
    }
}

impl Store<[u8], PolicySet> for RedisStore {
    fn check(
        &self,
        rule: &PolicySet,
        key: &[u8],
        cost: u64,
    ) -> impl std::future::Future<Output = Result<Decision, StoreError>> + Send {
        self.inner.decide(Op::Check, rule, key, cost)
    }

    fn peek(
        &self,
        rule: &PolicySet,
        key: &[u8],
        cost: u64,
    ) -> impl std::future::Future<Output = Result<Decision, StoreError>> + Send {
        self.inner.decide(Op::Peek, rule, key, cost)
    }

    fn refund(
        &self,
        rule: &PolicySet,
        key: &[u8],
        cost: u64,
    ) -> impl std::future::Future<Output = Result<(), StoreError>> + Send {
        self.inner.refund(rule, key, cost)
    }

    fn refund_detached(&self, rule: &PolicySet, key: &[u8], cost: u64) {
        self.refund_in_background(rule, key, cost);
    }

    fn reset(
        &self,
        rule: &PolicySet,
        key: &[u8],
    ) -> impl std::future::Future<Output = Result<(), StoreError>> + Send {
        self.inner.reset(rule, key)
    }
}

impl Store<str, PolicySet> for RedisStore {
    fn check(
        &self,
        rule: &PolicySet,
        key: &str,
        cost: u64,
    ) -> impl std::future::Future<Output = Result<Decision, StoreError>> + Send {
        self.inner.decide(Op::Check, rule, key.as_bytes(), cost)
    }

    fn peek(
        &self,
        rule: &PolicySet,
        key: &str,
        cost: u64,
    ) -> impl std::future::Future<Output = Result<Decision, StoreError>> + Send {
        self.inner.decide(Op::Peek, rule, key.as_bytes(), cost)
    }

    fn refund(
        &self,
        rule: &PolicySet,
        key: &str,
        cost: u64,
    ) -> impl std::future::Future<Output = Result<(), StoreError>> + Send {
        self.inner.refund(rule, key.as_bytes(), cost)
    }

    fn refund_detached(&self, rule: &PolicySet, key: &str, cost: u64) {
        self.refund_in_background(rule, key.as_bytes(), cost);
    }

    fn reset(
        &self,
        rule: &PolicySet,
        key: &str,
    ) -> impl std::future::Future<Output = Result<(), StoreError>> + Send {
        self.inner.reset(rule, key.as_bytes())
    }
}
