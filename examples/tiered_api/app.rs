//! The tiered API itself: its configuration file (parsed and validated), the router, the API-key check,
//! the store selection from `REDIS_URL`, and the Prometheus recorder.
//!
//! `main.rs` serves this router; `tests/tiered_api.rs` includes this file (`#[path]`) and drives the
//! same router over loopback with small test-only tiers.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::sync::{Arc, OnceLock, RwLock};
use std::time::Duration;

use axum::extract::{MatchedPath, Request};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Extension, Json, Router};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use ratelimit_core::{
    AlgorithmKind, Policy, PolicySet, Quota, RedisStore, RedisStoreBuilder, Store,
};
use ratelimit_tower::key::{
    ApiKey, ClientIp, KeyError, KeyExtractorExt, RequestInfo, User, UserId,
};
use ratelimit_tower::{RateLimitLayer, Tier, Tiers, TiersHandle};
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
// The file, as written. `deny_unknown_fields` everywhere: a misspelt `brust = 200` is an error, not a
// silently ignored line.

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(default)]
    trusted_proxies: Vec<String>,
    anonymous: RawSet,
    #[serde(default)]
    tiers: BTreeMap<String, RawSet>,
    global: Option<RawSet>,
    #[serde(default)]
    costs: BTreeMap<String, u64>,
    #[serde(default)]
    keys: Vec<RawKey>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSet {
    policies: Vec<RawPolicy>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPolicy {
    name: String,
    algorithm: String,
    limit: u64,
    per: String,
    burst: Option<u64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawKey {
    key: String,
    tier: String,
    account: String,
}

// ---------------------------------------------------------------------------------------------------------
// The file, validated.

/// Who an API key belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Account {
    /// The account the limits are counted against (two keys of one account share its limits).
    pub name: Arc<str>,
    /// The account's tier.
    pub tier: Arc<str>,
}

/// A validated tier file: every policy is a core [`Policy`], every set a [`PolicySet`].
#[derive(Debug, Clone)]
pub struct Config {
    /// Clients without an API key, limited per client IP.
    pub anonymous: PolicySet,
    /// Named tiers, in name order.
    pub tiers: Vec<(String, PolicySet)>,
    /// The cap shared by every client, if any.
    pub global: Option<PolicySet>,
    /// Routes that cost more than 1.
    pub costs: BTreeMap<String, u64>,
    /// API key → account.
    pub keys: HashMap<Vec<u8>, Account>,
    /// The reverse proxies whose `X-Forwarded-For` is believed (CIDRs); empty: key by the TCP peer.
    pub trusted_proxies: Vec<String>,
}

impl Config {
    /// Parses and validates a tier file; `origin` (the file name) prefixes every error.
    pub fn parse(text: &str, origin: &str) -> Result<Config, ConfigError> {
        let raw: RawConfig =
            toml::from_str(text).map_err(|e| ConfigError(format!("{origin}: {e}")))?;
        Self::validate(raw).map_err(|e| ConfigError(format!("{origin}: {e}")))
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

    fn validate(raw: RawConfig) -> Result<Config, ConfigError> {
        let anonymous = build_set("[anonymous]", &raw.anonymous)?;
        let mut tiers = Vec::new();
        for (name, set) in &raw.tiers {
            if !valid_tier_name(name) {
                return err(format!(
                    "tier name {name:?} is invalid: use 1 to 32 characters from a-z 0-9 - _ (it appears in logs and metrics)"
                ));
            }
            if name == "anonymous" || name == "default" {
                return err(format!(
                    "[tiers.{name}]: {name:?} is reserved for clients without an API key: configure them under [anonymous] and give this tier another name"
                ));
            }
            tiers.push((name.clone(), build_set(&format!("[tiers.{name}]"), set)?));
        }
        let global = match &raw.global {
            Some(g) => {
                let set = build_set("[global]", g)?;
                // Both lists appear in one RateLimit header: a shared name would be ambiguous.
                for (where_, s) in std::iter::once(("[anonymous]".to_owned(), &anonymous))
                    .chain(tiers.iter().map(|(n, s)| (format!("[tiers.{n}]"), s)))
                {
                    for p in set.policies() {
                        if s.policies().iter().any(|q| q.name() == p.name()) {
                            return err(format!(
                                "[global] policy {:?} has the same name as a policy of {where_}: both appear in one RateLimit header, so rename one of them",
                                p.name()
                            ));
                        }
                    }
                }
                Some(set)
            }
            None => None,
        };
        let mut costs = BTreeMap::new();
        for (route, &cost) in &raw.costs {
            if !ROUTES.contains(&route.as_str()) {
                return err(format!(
                    "[costs]: unknown route {route:?}: the API's routes are {}",
                    ROUTES.join(", ")
                ));
            }
            if cost == 0 {
                return err(format!(
                    "[costs]: {route:?} = 0 would make the route free and unlimited: give a cost of at least 1, or remove the line (the default cost is 1)"
                ));
            }
            costs.insert(route.clone(), cost);
        }
        let mut keys: HashMap<Vec<u8>, Account> = HashMap::new();
        for (i, k) in raw.keys.iter().enumerate() {
            let at = format!("[[keys]] entry {} (account {:?})", i + 1, k.account);
            if k.key.is_empty() || k.key.len() > 256 || !k.key.bytes().all(|b| b.is_ascii_graphic())
            {
                return err(format!(
                    "{at}: the key must be 1 to 256 visible ASCII characters without spaces (it is sent in a header)"
                ));
            }
            if k.account.is_empty() || k.account.len() > 64 {
                return err(format!("{at}: account must be 1 to 64 characters"));
            }
            if !tiers.iter().any(|(n, _)| *n == k.tier) {
                let known: Vec<&str> = tiers.iter().map(|(n, _)| n.as_str()).collect();
                return err(format!(
                    "{at}: unknown tier {:?}: add a [tiers.{}] table or use one of: {}",
                    k.tier,
                    k.tier,
                    if known.is_empty() {
                        "(none defined)".to_owned()
                    } else {
                        known.join(", ")
                    }
                ));
            }
            let account = Account {
                name: Arc::from(k.account.as_str()),
                tier: Arc::from(k.tier.as_str()),
            };
            if keys.insert(k.key.as_bytes().to_vec(), account).is_some() {
                return err(format!(
                    "{at}: this API key is already listed: each key must appear once (give the account a second, different key instead)"
                ));
            }
        }
        // Parse now so a bad CIDR is reported at start-up, with the file's name.
        client_ip(&raw.trusted_proxies)?;
        Ok(Config {
            anonymous,
            tiers,
            global,
            costs,
            keys,
            trusted_proxies: raw.trusted_proxies,
        })
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

fn valid_tier_name(name: &str) -> bool {
    (1..=32).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
}

fn build_set(at: &str, raw: &RawSet) -> Result<PolicySet, ConfigError> {
    if raw.policies.is_empty() {
        return err(format!(
            "{at}: policies = [] limits nothing: give at least one policy, e.g. {{ name = \"hourly\", algorithm = \"gcra\", limit = 100, per = \"1h\" }}"
        ));
    }
    let mut policies = Vec::with_capacity(raw.policies.len());
    for p in &raw.policies {
        policies.push(build_policy(at, p)?);
    }
    PolicySet::new(policies).map_err(|e| ConfigError(format!("{at}: {e}")))
}

fn build_policy(at: &str, p: &RawPolicy) -> Result<Policy, ConfigError> {
    let at = format!("{at} policy {:?}", p.name);
    let kind: AlgorithmKind = p
        .algorithm
        .parse()
        .map_err(|e| ConfigError(format!("{at}: {e}")))?;
    if matches!(kind, AlgorithmKind::Shaper { .. }) {
        return err(format!(
            "{at}: algorithm \"shaper\" delays requests instead of rejecting them, and this server answers 429: use \"gcra\" or \"token_bucket\" for a limit with bursts"
        ));
    }
    let period = parse_period(&p.per).map_err(|e| ConfigError(format!("{at}: {e}")))?;
    let mut quota = Quota::new(p.limit, period);
    if let Some(b) = p.burst {
        quota = quota.burst(b);
    }
    let quota = quota
        .build()
        .map_err(|e| ConfigError(format!("{at}: {e}")))?;
    Policy::new(&p.name, kind, quota).map_err(|e| ConfigError(format!("{at}: {e}")))
}

/// Parses a period: `"1s"`, `"500ms"`, `"10m"`, `"1h"`, `"1d"`, or `"second"`, `"minute"`, `"hour"`, `"day"`.
pub fn parse_period(s: &str) -> Result<Duration, String> {
    let t = s.trim();
    let digits = t.bytes().take_while(u8::is_ascii_digit).count();
    let (num, unit) = t.split_at(digits);
    let n: u64 = if num.is_empty() {
        1
    } else {
        num.parse()
            .map_err(|_| format!("per = {s:?}: the number is too large"))?
    };
    let unit_secs = |secs: u64| Duration::from_secs(n.saturating_mul(secs));
    let d = match unit.trim() {
        "ms" => Duration::from_millis(n),
        "s" | "sec" | "second" | "seconds" => unit_secs(1),
        "m" | "min" | "minute" | "minutes" => unit_secs(60),
        "h" | "hour" | "hours" => unit_secs(3600),
        "d" | "day" | "days" => unit_secs(86_400),
        _ => {
            return Err(format!(
                "per = {s:?} is not a period: write a number and a unit (ms, s, m, h, d), e.g. \"1h\" or \"10s\""
            ))
        }
    };
    if d.is_zero() {
        return Err(format!(
            "per = {s:?} is zero: give a period of at least 1ms"
        ));
    }
    Ok(d)
}

fn client_ip(trusted_proxies: &[String]) -> Result<ClientIp, ConfigError> {
    if trusted_proxies.is_empty() {
        return Ok(ClientIp::peer());
    }
    ClientIp::behind(trusted_proxies).map_err(|e| {
        ConfigError(format!(
            "trusted_proxies: {e}: list your reverse proxies' addresses as CIDRs, e.g. [\"10.0.0.0/8\"]"
        ))
    })
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
    trusted_proxies: Vec<String>,
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
    costs: BTreeMap<String, u64>,
}

impl Live {
    fn of(config: &Config) -> Arc<Live> {
        Arc::new(Live {
            keys: config.keys.clone(),
            costs: config.costs.clone(),
        })
    }
}

fn current(live: &RwLock<Arc<Live>>) -> Arc<Live> {
    // A poisoned lock still holds a complete `Arc` (writers only swap it): keep serving.
    live.read().unwrap_or_else(|e| e.into_inner()).clone()
}

impl Reloader {
    /// Applies a new, already validated configuration. Changing `trusted_proxies` needs a restart; such a
    /// configuration is refused whole and nothing changes.
    pub fn apply(&self, config: &Config) -> Result<(), ConfigError> {
        if config.trusted_proxies != self.trusted_proxies {
            return err(
                "trusted_proxies changed: restart the server to apply it (nothing was reloaded)",
            );
        }
        self.tiers.replace(tiers_of(config));
        *self.live.write().unwrap_or_else(|e| e.into_inner()) = Live::of(config);
        Ok(())
    }
}

fn tiers_of(config: &Config) -> Tiers {
    let mut tiers = Tiers::new(config.anonymous.clone());
    for (name, set) in &config.tiers {
        tiers = tiers.tier(name, set.clone());
    }
    match &config.global {
        Some(g) => tiers.global(g.clone()),
        None => tiers,
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
    let limiter = RateLimitLayer::with_store(store)
        .tiers(tiers_of(config))
        // Accounts by name; everyone else (anonymous, or a rejected key) by client IP: the TCP peer, or
        // behind `trusted_proxies` the right-most untrusted X-Forwarded-For hop.
        .key(User::<UserId>::new().or(client_ip(&config.trusted_proxies)?))
        .cost_fn(move |req: &RequestInfo<'_>| {
            // The matched route template (axum sets it before `Router::layer` middleware runs), so
            // `/v1/report?x=1` pays like `/v1/report`.
            let route = req
                .extensions()
                .get::<MatchedPath>()
                .map_or(req.uri().path(), |m| m.as_str());
            current(&costs).costs.get(route).copied().unwrap_or(1)
        })
        .build()
        .map_err(|e| ConfigError(format!("rate limiter: {e}")))?;
    let reloader = Reloader {
        tiers: limiter.tiers(),
        live: live.clone(),
        trusted_proxies: config.trusted_proxies.clone(),
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
