//! The tiered API itself: its configuration file (the rate limits read by `ratelimit_tower::config`, the
//! demo API keys by this file), the router, the API-key check, the store selection from `REDIS_URL`, and
//! the Prometheus recorder.
//!
//! `main.rs` serves this router; `tests/tiered_api.rs` includes this file (`#[path]`) and drives the
//! same router over loopback with small test-only tiers.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, OnceLock, RwLock};
use std::time::Duration;

use axum::extract::Request;
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Extension, Json, Router};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use ratelimit_core::{Policy, PolicySet, RedisStore, RedisStoreBuilder, Store};
use ratelimit_tower::config::{LayerConfig, RouteCosts};
use ratelimit_tower::key::{ApiKey, Cidr, KeyError, KeyExtractorExt, RequestInfo, User, UserId};
use ratelimit_tower::{OnFailure, RateLimitLayer, Tier, TiersHandle};
use serde::{Deserialize, Serialize};

/// The API's routes. `[costs]` in the tier file may only name these (a typo would silently cost 1).
pub const ROUTES: &[&str] = &["/v1/hello", "/v1/report"];

/// The header that carries an API key (`Authorization: Bearer <key>` works too).
pub const API_KEY_HEADER: &str = "x-api-key";

/// A tier file that cannot work; the message says where and what to change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError(pub String);

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ConfigError {}

fn err<T>(msg: impl Into<String>) -> Result<T, ConfigError> {
    Err(ConfigError(msg.into()))
}

// ---------------------------------------------------------------------------------------------------------
// The file: the rate limiter's schema (`ratelimit_tower::config::LayerConfig`), which the library reads and
// validates, plus this API's own `[[keys]]` table.

/// This API's own part of the file: the demo API keys. `deny_unknown_fields`: a misspelt `acount` is an
/// error, not a silently ignored line.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawKeys {
    #[serde(default)]
    keys: Vec<RawKey>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawKey {
    key: String,
    tier: String,
    account: String,
}

/// The only top-level key that is this API's rather than the rate limiter's.
const KEYS_TABLE: &str = "keys";

/// Who an API key belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Account {
    /// The account the limits are counted against (two keys of one account share its limits).
    pub name: Arc<str>,
    /// The account's tier.
    pub tier: Arc<str>,
}

/// A validated tier file.
#[derive(Debug, Clone)]
pub struct Config {
    /// The rate limits: the default tier (clients without an API key, per client IP), the named tiers, the
    /// global cap, the route costs and the trusted proxies.
    pub limits: LayerConfig,
    /// API key → account.
    pub keys: HashMap<Vec<u8>, Account>,
}

impl Config {
    /// Parses and validates a tier file; `origin` (the file name) prefixes every error, which then names
    /// the path of the bad value (`tiers.free.policies[0].per`) and what to write instead.
    pub fn parse(text: &str, origin: &str) -> Result<Config, ConfigError> {
        let at = |e: &dyn fmt::Display| ConfigError(format!("{origin}: {e}"));
        let mut limits: toml::Table = text.parse().map_err(|e| at(&e))?;
        let keys: toml::Table = limits
            .remove(KEYS_TABLE)
            .map(|k| (KEYS_TABLE.to_owned(), k))
            .into_iter()
            .collect();
        let limits =
            LayerConfig::from_deserializer(toml::Value::Table(limits)).map_err(|e| at(&e))?;
        // A misspelt route in [costs] would silently cost 1.
        limits.check_cost_routes(ROUTES).map_err(|e| at(&e))?;
        let keys: RawKeys = ratelimit_core::config::from_deserializer(toml::Value::Table(keys))
            // toml's `Value` appends a line, `in `keys``, that the path already says.
            .map_err(|e| {
                at(&format!(
                    "{}: {}",
                    e.path(),
                    e.message().lines().next().unwrap_or("")
                ))
            })?;
        let keys = accounts(&keys.keys, &limits).map_err(|e| at(&e))?;
        Ok(Config { limits, keys })
    }

    /// Reads and validates the tier file at `path`.
    pub fn load(path: &std::path::Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            ConfigError(format!(
                "cannot read the tier file {}: {e} (pass another one with --tiers <path> or TIERS)",
                path.display()
            ))
        })?;
        Self::parse(&text, &path.display().to_string())
    }

    /// The alphabetically first API key of `tier`, for the start-up banner.
    pub fn key_for_tier(&self, tier: &str) -> Option<&str> {
        let mut found: Vec<&str> = self
            .keys
            .iter()
            .filter(|(_, a)| &*a.tier == tier)
            .filter_map(|(k, _)| std::str::from_utf8(k).ok())
            .collect();
        found.sort_unstable();
        found.first().copied()
    }
}

/// The `[[keys]]` entries, each checked against the tiers; an error names the entry (`keys[1].tier`).
fn accounts(
    raw: &[RawKey],
    limits: &LayerConfig,
) -> Result<HashMap<Vec<u8>, Account>, ratelimit_core::config::ConfigError> {
    use ratelimit_core::config::ConfigError;
    let mut keys: HashMap<Vec<u8>, Account> = HashMap::new();
    for (i, k) in raw.iter().enumerate() {
        let at = |field: &str| format!("{KEYS_TABLE}[{i}].{field}");
        if k.key.is_empty() || k.key.len() > 256 || !k.key.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(ConfigError::new(
                at("key"),
                "the key must be 1 to 256 visible ASCII characters without spaces (it is sent in a header)",
            ));
        }
        if k.account.is_empty() || k.account.len() > 64 {
            return Err(ConfigError::new(
                at("account"),
                "account must be 1 to 64 characters",
            ));
        }
        if limits.tier_policies(&k.tier).is_none() {
            let known: Vec<&str> = limits.named_tiers().map(|(n, _)| n).collect();
            let known = if known.is_empty() {
                "(none defined)".to_owned()
            } else {
                known.join(", ")
            };
            return Err(ConfigError::new(
                at("tier"),
                format!(
                    "unknown tier {:?}: add a [tiers.{}] table or use one of: {known}",
                    k.tier, k.tier
                ),
            ));
        }
        let account = Account {
            name: Arc::from(k.account.as_str()),
            tier: Arc::from(k.tier.as_str()),
        };
        if keys.insert(k.key.as_bytes().to_vec(), account).is_some() {
            return Err(ConfigError::new(
                at("key"),
                "this API key is already listed: each key must appear once (give the account a second, different key instead)",
            ));
        }
    }
    Ok(keys)
}

/// Describes one policy for people: `100/h, bursts of 200 (gcra)`.
pub fn describe(p: &Policy) -> String {
    let q = p.quota();
    let per = human_period(q.period());
    let burst = if q.has_custom_burst() {
        format!(", bursts of {}", q.burst())
    } else {
        String::new()
    };
    format!(
        "{}/{per}{burst} ({})",
        q.limit(),
        p.algorithm().kind().name()
    )
}

fn human_period(d: Duration) -> String {
    let s = d.as_secs();
    if d.subsec_nanos() != 0 || s == 0 {
        return format!("{}ms", d.as_millis());
    }
    for (unit, secs) in [("d", 86_400), ("h", 3600), ("min", 60)] {
        if s.is_multiple_of(secs) {
            let n = s / secs;
            return if n == 1 {
                unit.to_owned()
            } else {
                format!("{n}{unit}")
            };
        }
    }
    if s == 1 {
        "s".to_owned()
    } else {
        format!("{s}s")
    }
}

// ---------------------------------------------------------------------------------------------------------
// Where the limiter's state lives.

/// Which store `REDIS_URL` asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreTarget {
    /// No `REDIS_URL`: the in-memory store (one process).
    Memory,
    /// One Redis (or Valkey) server: `redis://`, `rediss://`, `redis+unix://`, `unix://`.
    Redis(String),
    /// A Redis Cluster, by its seed nodes.
    Cluster(Vec<String>),
}

/// Reads `REDIS_URL`:
///
/// * unset or empty: in memory;
/// * `redis://host:port/db` (also `redis+unix:///path`, `unix:///path`): one server;
/// * `redis+cluster://host1:port,host2:port`, or several comma-separated `redis://` URLs: a Redis Cluster,
///   reached through any of those seed nodes.
///
/// `rediss://` (TLS) is accepted but needs one of redis-rs's TLS features in the build, which this example
/// does not enable.
pub fn store_target(redis_url: Option<&str>) -> Result<StoreTarget, ConfigError> {
    let Some(url) = redis_url.map(str::trim).filter(|u| !u.is_empty()) else {
        return Ok(StoreTarget::Memory);
    };
    for (cluster_scheme, scheme) in [
        ("redis+cluster://", "redis://"),
        ("rediss+cluster://", "rediss://"),
    ] {
        if let Some(rest) = url.strip_prefix(cluster_scheme) {
            let nodes: Vec<String> = rest
                .split(',')
                .map(str::trim)
                .filter(|n| !n.is_empty())
                .map(|n| format!("{scheme}{n}"))
                .collect();
            if nodes.is_empty() {
                return err(format!(
                    "REDIS_URL {url:?} names no node: write {cluster_scheme}host1:port,host2:port"
                ));
            }
            return Ok(StoreTarget::Cluster(nodes));
        }
    }
    let single = |u: &str| {
        ["redis://", "rediss://", "redis+unix://", "unix://"]
            .iter()
            .any(|s| u.starts_with(s))
    };
    if url.contains(',') {
        let nodes: Vec<String> = url.split(',').map(str::trim).map(str::to_owned).collect();
        if let Some(bad) = nodes
            .iter()
            .find(|n| !(n.starts_with("redis://") || n.starts_with("rediss://")))
        {
            return err(format!(
                "REDIS_URL: cluster node {bad:?} is not a redis:// URL: write redis://host1:port,redis://host2:port or redis+cluster://host1:port,host2:port"
            ));
        }
        return Ok(StoreTarget::Cluster(nodes));
    }
    if !single(url) {
        return err(format!(
            "REDIS_URL {url:?} is not a Redis URL: use redis://host:port/db, rediss://…, redis+unix:///path, or redis+cluster://host1:port,host2:port for a cluster (unset it for the in-memory store)"
        ));
    }
    Ok(StoreTarget::Redis(url.to_owned()))
}

/// The Redis store's settings: its own key prefix, and a deny cache so that a client hammering a limited
/// key is answered here, until the exact retry time Redis gave, instead of costing a Redis call per
/// request. The other settings keep their defaults: 50 ms per call, a circuit breaker after 3 failures,
/// and a typed error when Redis is down, which the layer turns into a 503 (fail closed).
pub fn redis_store() -> RedisStoreBuilder {
    RedisStore::builder()
        .prefix("tiered_api")
        .deny_cache(100_000)
}

// ---------------------------------------------------------------------------------------------------------
// Metrics.

static PROMETHEUS: OnceLock<Result<PrometheusHandle, String>> = OnceLock::new();

/// Installs the Prometheus recorder as the process's `metrics` recorder (once; later calls, from any
/// thread, get the same handle). Every `metrics` counter — the limiter's `ratelimit_*` among them — then
/// shows up in [`PrometheusHandle::render`], which `/metrics` serves.
pub fn prometheus() -> Result<PrometheusHandle, String> {
    // `get_or_init` runs the installation once and makes concurrent callers wait for it: a process has
    // one global recorder, and a second `install_recorder` would fail.
    PROMETHEUS
        .get_or_init(|| {
            PrometheusBuilder::new()
                .install_recorder()
                .map_err(|e| format!("cannot install the Prometheus recorder: {e}"))
        })
        .clone()
}

// ---------------------------------------------------------------------------------------------------------
// The router.

/// Marks a request whose credential was present but not accepted. The limiter still charges it to the
/// client IP's anonymous bucket (so guessing keys is rate limited too); the 401 is answered after it.
#[derive(Debug, Clone, Copy)]
struct BadCredential(&'static str);

/// What a reload may change while the server runs: every tier's and the global cap's policies, the route
/// costs and the API keys. Counters are kept: the store holds them under the client's key, not under the
/// tier, so raising a tier's burst leaves what each client already used in place.
#[derive(Clone)]
pub struct Reloader {
    tiers: TiersHandle,
    live: Arc<RwLock<Arc<Live>>>,
    restart_only: RestartOnly,
}

/// What the built layer holds and a reload cannot change: how clients are keyed and what a store failure
/// does.
#[derive(Debug, Clone, PartialEq, Eq)]
struct RestartOnly {
    trusted_proxies: Vec<Cidr>,
    trust_any_proxy: bool,
    on_store_error: Option<OnFailure>,
}

impl RestartOnly {
    fn of(limits: &LayerConfig) -> Self {
        RestartOnly {
            trusted_proxies: limits.trusted_proxies().to_vec(),
            trust_any_proxy: limits.trusts_any_proxy(),
            on_store_error: limits.on_store_error(),
        }
    }
}

impl fmt::Debug for Reloader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Reloader")
            .field("tiers", &self.tiers)
            .finish_non_exhaustive()
    }
}

/// The parts of the configuration read on every request.
#[derive(Debug)]
struct Live {
    keys: HashMap<Vec<u8>, Account>,
    costs: RouteCosts,
}

impl Live {
    fn of(config: &Config) -> Arc<Live> {
        Arc::new(Live {
            keys: config.keys.clone(),
            costs: config.limits.route_costs(),
        })
    }
}

fn current(live: &RwLock<Arc<Live>>) -> Arc<Live> {
    // A poisoned lock still holds a complete `Arc` (writers only swap it): keep serving.
    live.read().unwrap_or_else(|e| e.into_inner()).clone()
}

impl Reloader {
    /// Applies a new, already validated configuration. Changing `trusted_proxies`, `trust_any_proxy` or
    /// `on_store_error` needs a restart; such a configuration is refused whole and nothing changes.
    pub fn apply(&self, config: &Config) -> Result<(), ConfigError> {
        if RestartOnly::of(&config.limits) != self.restart_only {
            return err(
                "trusted_proxies, trust_any_proxy or on_store_error changed: restart the server to apply it (nothing was reloaded)",
            );
        }
        self.tiers.replace(config.limits.tiers());
        *self.live.write().unwrap_or_else(|e| e.into_inner()) = Live::of(config);
        Ok(())
    }
}

/// Builds the API: the limited routes (`/v1/hello`, `/v1/report`) behind the API-key check and the rate
/// limiter, plus `/health` and `/metrics`, which are never limited; and the [`Reloader`] that changes its
/// configuration while it runs.
///
/// The order of a request through the layers:
///
/// 1. `identify` reads `x-api-key` or `Authorization: Bearer`. A known key sets the account's [`UserId`]
///    and [`Tier`]; an unknown or malformed one is marked; no key at all is anonymous.
/// 2. The rate limiter keys the request by the account, else by the client IP (anonymous and rejected
///    credentials alike), picks the tier's policies, charges the route's cost, then the global cap.
/// 3. `reject_bad_credential` answers 401 to a marked request, before any handler runs: an unknown key
///    never gets a bucket of its own.
pub fn router<S>(
    config: &Config,
    store: S,
    metrics: PrometheusHandle,
) -> Result<(Router, Reloader), ConfigError>
where
    S: Store<[u8], PolicySet> + 'static,
{
    let live = Arc::new(RwLock::new(Live::of(config)));
    let costs = live.clone();
    // The file's tiers, global cap, client-IP key, costs and store-failure handling; then this API's own
    // choices, which win over the file's.
    let limiter = config
        .limits
        .configure(RateLimitLayer::with_store(store))
        // Accounts by name; everyone else (anonymous, or a rejected key) by client IP: the TCP peer, or
        // behind `trusted_proxies` the right-most untrusted X-Forwarded-For hop.
        .key(User::<UserId>::new().or(config.limits.client_ip()))
        // The costs in force since the last reload, by matched route template (axum sets it before
        // `Router::layer` middleware runs), so `/v1/report?x=1` pays like `/v1/report`.
        .cost_fn(move |req: &RequestInfo<'_>| current(&costs).costs.cost(req))
        .build()
        .map_err(|e| ConfigError(format!("rate limiter: {e}")))?;
    let reloader = Reloader {
        tiers: limiter.tiers(),
        live: live.clone(),
        restart_only: RestartOnly::of(&config.limits),
    };

    let credential = Arc::new(ApiKey::header_or_bearer(API_KEY_HEADER));
    let api = Router::new()
        .route("/v1/hello", get(hello))
        .route("/v1/report", get(report))
        // Layers run outermost-last: identify → limiter → reject_bad_credential → handler.
        .layer(middleware::from_fn(reject_bad_credential))
        .layer(limiter)
        .layer(middleware::from_fn(move |req: Request, next: Next| {
            identify(current(&live), credential.clone(), req, next)
        }));

    // Added after `.layer`, so outside the limiter: probes and scrapers are never limited or counted. In
    // production, serve /metrics on an internal address instead: it tells anyone how busy you are.
    let router = api.route("/health", get(|| async { "ok\n" })).route(
        "/metrics",
        get(move || {
            let body = metrics.render();
            async move {
                (
                    [(
                        header::CONTENT_TYPE,
                        HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
                    )],
                    body,
                )
            }
        }),
    );
    Ok((router, reloader))
}

async fn identify(
    live: Arc<Live>,
    credential: Arc<ApiKey>,
    mut req: Request,
    next: Next,
) -> Response {
    let found = {
        let info = RequestInfo::new(&req);
        match credential.raw(&info) {
            // Not a constant-time comparison: a demo key table. A real service verifies keys against a
            // database of hashes and puts that lookup here.
            Ok(raw) => Some(live.keys.get(raw).cloned().ok_or("unknown API key")),
            Err(KeyError::Missing(_)) => None,
            Err(_) => Some(Err(
                "malformed credential: send `x-api-key: <key>` or `Authorization: Bearer <key>`",
            )),
        }
    };
    match found {
        Some(Ok(account)) => {
            let ext = req.extensions_mut();
            ext.insert(UserId(account.name.clone()));
            ext.insert(Tier::new(account.tier.clone()));
            ext.insert(account);
        }
        Some(Err(why)) => {
            req.extensions_mut().insert(BadCredential(why));
        }
        None => {}
    }
    next.run(req).await
}

async fn reject_bad_credential(req: Request, next: Next) -> Response {
    if let Some(BadCredential(why)) = req.extensions().get::<BadCredential>().copied() {
        let body = format!(
            "{{\"type\":\"about:blank\",\"title\":\"Unauthorized\",\"status\":401,\"detail\":\"{why}\"}}"
        );
        return (
            StatusCode::UNAUTHORIZED,
            [
                (
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static("Bearer realm=\"tiered_api\""),
                ),
                (
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("application/problem+json"),
                ),
            ],
            body,
        )
            .into_response();
    }
    next.run(req).await
}

/// What the API routes answer: who the caller is.
#[derive(Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Hello {
    /// The account, or `null` for anonymous callers.
    pub account: Option<String>,
    /// The tier (`anonymous` without an API key).
    pub tier: String,
    /// A greeting or a report.
    pub message: String,
}

fn caller(account: Option<Extension<Account>>) -> (Option<String>, String) {
    match account {
        Some(Extension(a)) => (Some(a.name.to_string()), a.tier.to_string()),
        None => (None, "anonymous".to_owned()),
    }
}

async fn hello(account: Option<Extension<Account>>) -> Json<Hello> {
    let (account, tier) = caller(account);
    Json(Hello {
        message: format!(
            "hello, {}",
            account.as_deref().unwrap_or("anonymous client")
        ),
        account,
        tier,
    })
}

async fn report(account: Option<Extension<Account>>) -> Json<Hello> {
    let (account, tier) = caller(account);
    Json(Hello {
        account,
        tier,
        message: "an expensive report (see [costs] in the tier file)".to_owned(),
    })
}
