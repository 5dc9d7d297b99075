//! Configuring a [`RateLimitLayer`].

use std::fmt;
use std::sync::Arc;

use arc_swap::ArcSwap;
use bytes::Bytes;
use http::{Method, Response};
use ratelimit_core::{MemoryStore, OnFailure, Policy, PolicyError, PolicySet, Store};

use crate::headers::{IetfRevision, LegacyReset};
use crate::key::{Cidr, ClientIp, KeyExtractor, RequestInfo};
use crate::rate_limit::{
    Config, Cost, HeaderConfig, OnKeyError, RateLimitLayer, RejectFn, Shared, SkipFn, StoreFailure,
};
use crate::response::Rejection;
use crate::tier::{Tier, TierSource, TierTable, Tiers};

/// The default store: in memory, bounded (1,000,000 keys by default), keyed by byte strings.
pub type DefaultStore = MemoryStore<Vec<u8>, PolicySet>;

/// A configuration that cannot work; the message says what to change.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// Neither policies nor tiers were given.
    #[error("no policies: call .policies(set), .policy(p) or .tiers(tiers) on the builder")]
    NoPolicies,
    /// Both `.policy`/`.policies` and `.tiers` were given.
    #[error("both policies and tiers were given: put the policies in the default tier (Tiers::new(set)) instead")]
    PoliciesAndTiers,
    /// The policies given with `.policy()` do not form a valid set.
    #[error(transparent)]
    Policy(#[from] PolicyError),
    /// The scope is empty, too long, or has a NUL byte.
    #[error("scope {0:?} is invalid: use 1 to 32 bytes without NUL (it prefixes every store key)")]
    Scope(String),
    /// A fixed cost of zero.
    #[error("a fixed cost of 0 charges nothing: use .skip(..) or .methods(..) to exempt requests instead")]
    ZeroCost,
    /// A soft-limit percentage above 100.
    #[error(
        "soft limit {0}% is above 100%: give the share of the limit still remaining, 1 to 100"
    )]
    SoftLimit(u8),
    /// An empty method filter.
    #[error(
        "an empty method list would exempt every request: omit .methods(..) to limit every method"
    )]
    NoMethods,
    /// `on_store_error(OnFailure::Local { .. })`: a local fallback keeps per-key state, which is the
    /// store's job.
    #[error("OnFailure::Local is a store's fallback, not the layer's: build the store with it (RedisStoreBuilder::on_failure(OnFailure::Local {{ instances }})), and give the layer OnFailure::Error or OnFailure::Allow for errors the store still returns")]
    LocalFallbackOnLayer,
    /// A shaping (delaying) policy: the layer admits or rejects, it never holds requests back.
    #[error("policy {0:?} is a shaper (leaky bucket as a queue), but the layer never delays requests: use gcra, token_bucket or leaky_bucket (meter) instead")]
    Shaper(String),
}

/// Builds a [`RateLimitLayer`]; from [`RateLimitLayer::builder`] (in-memory store) or
/// [`RateLimitLayer::with_store`].
///
/// Every setting has a safe default: key by the TCP peer address (IPv6 by /64), cost 1, IETF headers on,
/// legacy headers off, fail closed (503) on store errors, reject (400/500 with a problem body) when no key
/// can be built.
///
/// ```
/// use std::time::Duration;
/// use http::Method;
/// use ratelimit_tower::key::{ClientIp, TrustedProxies};
/// use ratelimit_tower::{LegacyReset, OnFailure, Policy, Quota, RateLimitLayer};
///
/// let layer = RateLimitLayer::builder()
///     .policy(Policy::gcra("burst", Quota::per_second(10).burst(20).build()?)?)
///     .policy(Policy::fixed_window("hourly", Quota::per_hour(1_000).build()?)?)
///     .key(ClientIp::trusted_proxies(TrustedProxies::cidrs(["10.0.0.0/8"])?))
///     .methods([Method::POST, Method::PUT])
///     .legacy_headers(LegacyReset::UnixEpoch)
///     .on_store_error(OnFailure::Allow)
///     .build()?;
/// # let _ = layer;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[must_use]
pub struct RateLimitBuilder<S> {
    store: S,
    scope: String,
    key: Option<Box<dyn KeyExtractor>>,
    policies: Vec<Policy>,
    set: Option<PolicySet>,
    tiers: Option<Tiers>,
    global: Option<PolicySet>,
    tier_source: TierSource,
    cost: Cost,
    methods: Option<Vec<Method>>,
    skip: Vec<SkipFn>,
    on_store_error: OnFailure,
    on_key_error: OnKeyError,
    shadow: bool,
    headers: HeaderConfig,
    soft_limit_percent: Option<u8>,
    info: bool,
    rejection: Option<RejectFn>,
    latency: bool,
}

impl<S> fmt::Debug for RateLimitBuilder<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RateLimitBuilder")
            .field("scope", &self.scope)
            .field("policies", &self.policies)
            .field("tiers", &self.tiers)
            .finish_non_exhaustive()
    }
}

impl RateLimitBuilder<DefaultStore> {
    pub(crate) fn new() -> Self {
        Self::with_store(MemoryStore::new())
    }
}

impl<S> RateLimitBuilder<S> {
    pub(crate) fn with_store(store: S) -> Self {
        RateLimitBuilder {
            store,
            scope: "rl".to_owned(),
            key: None,
            policies: Vec::new(),
            set: None,
            tiers: None,
            global: None,
            tier_source: TierSource::Extension,
            cost: Cost::Fixed(1),
            methods: None,
            skip: Vec::new(),
            on_store_error: OnFailure::Error,
            on_key_error: OnKeyError::default(),
            shadow: false,
            headers: HeaderConfig::default(),
            soft_limit_percent: None,
            info: false,
            rejection: None,
            latency: true,
        }
    }

    /// Uses `store` (e.g. a Redis store, or a `MemoryStore` built with your own key cap).
    pub fn store<S2>(self, store: S2) -> RateLimitBuilder<S2> {
        RateLimitBuilder {
            store,
            scope: self.scope,
            key: self.key,
            policies: self.policies,
            set: self.set,
            tiers: self.tiers,
            global: self.global,
            tier_source: self.tier_source,
            cost: self.cost,
            methods: self.methods,
            skip: self.skip,
            on_store_error: self.on_store_error,
            on_key_error: self.on_key_error,
            shadow: self.shadow,
            headers: self.headers,
            soft_limit_percent: self.soft_limit_percent,
            info: self.info,
            rejection: self.rejection,
            latency: self.latency,
        }
    }

    /// Checks every request against `set` (all-or-nothing). For per-client tiers use [`Self::tiers`].
    pub fn policies(mut self, set: PolicySet) -> Self {
        self.set = Some(set);
        self
    }

    /// Adds one policy (the policies given this way form one set, checked all-or-nothing).
    pub fn policy(mut self, policy: Policy) -> Self {
        self.policies.push(policy);
        self
    }

    /// Per-tier policy sets; see [`Tiers`]. The tier comes from the [`Tier`] request extension unless
    /// [`Self::tier_fn`] says otherwise.
    pub fn tiers(mut self, tiers: Tiers) -> Self {
        self.tiers = Some(tiers);
        self
    }

    /// A global cap checked on one key shared by all clients, after the client's own policies
    /// (reserve-then-refund; see [`Tiers::global_cap`]).
    pub fn global_cap(mut self, set: PolicySet) -> Self {
        self.global = Some(set);
        self
    }

    /// Resolves each request's tier with `f` (e.g. look up a verified API key's plan). `None`, or a
    /// name that is not in the table, means the default tier; a name not in the table is also logged
    /// at `warn`, once per name (tier names are case-sensitive).
    pub fn tier_fn<F>(mut self, f: F) -> Self
    where
        F: Fn(&RequestInfo<'_>) -> Option<Tier> + Send + Sync + 'static,
    {
        self.tier_source = TierSource::Fn(Arc::new(f));
        self
    }

    /// How requests are keyed (default: [`ClientIp::peer()`]). See [`crate::key`] for which extractors
    /// are safe on unauthenticated input.
    pub fn key(mut self, key: impl KeyExtractor) -> Self {
        self.key = Some(Box::new(key));
        self
    }

    /// Prefixes every store key (default `"rl"`): give each layer sharing a store its own scope.
    pub fn scope(mut self, scope: &str) -> Self {
        self.scope = scope.to_owned();
        self
    }

    /// Every request costs `cost` units (default 1); e.g. a route layer for an expensive endpoint.
    pub fn cost(mut self, cost: u64) -> Self {
        self.cost = Cost::Fixed(cost);
        self
    }

    /// Each request's cost computed from the request (route, method, declared body size, …). A cost of 0
    /// is allowed here: it reports the current state without charging.
    pub fn cost_fn<F>(mut self, f: F) -> Self
    where
        F: Fn(&RequestInfo<'_>) -> u64 + Send + Sync + 'static,
    {
        self.cost = Cost::Fn(Box::new(f));
        self
    }

    /// Limits only these methods; other requests pass untouched.
    pub fn methods(mut self, methods: impl IntoIterator<Item = Method>) -> Self {
        self.methods = Some(methods.into_iter().collect());
        self
    }

    /// Requests for which `f` returns true pass untouched (health checks, internal callers). Several
    /// predicates combine with *or*.
    pub fn skip<F>(mut self, f: F) -> Self
    where
        F: Fn(&RequestInfo<'_>) -> bool + Send + Sync + 'static,
    {
        self.skip.push(Box::new(f));
        self
    }

    /// Requests whose client address (as `client_ip` resolves it, so proxies are handled the same way
    /// as for keys) lies in `networks` pass untouched.
    pub fn allow_list(self, client_ip: ClientIp, networks: impl IntoIterator<Item = Cidr>) -> Self {
        let networks: Vec<Cidr> = networks.into_iter().collect();
        self.skip(move |req| {
            client_ip
                .client_addr(req)
                .is_ok_and(|ip| networks.iter().any(|n| n.contains(ip)))
        })
    }

    /// What to do with a request whose store check fails (Redis down, a timeout, an in-memory store
    /// full with `Overflow::Reject`): [`OnFailure::Error`] answers 503 with a
    /// `temporary-reduced-capacity` problem (the default: protection first; a request whose own key holds
    /// foreign data, `StoreError::KeyState`, gets 500 since waiting will not help); [`OnFailure::Allow`]
    /// lets it through without rate-limit headers (availability first, counted in
    /// `ratelimit_fail_open_total`). Never a 429: the client did nothing wrong.
    ///
    /// [`OnFailure::Local`] is refused here ([`ConfigError::LocalFallbackOnLayer`]): to keep limiting
    /// through an outage, give the store the fallback — a Redis store built with
    /// `on_failure(OnFailure::Local { instances })` decides in memory (each quota divided among the
    /// instances) while Redis is away, and the layer sees decisions, not errors. The same names, one
    /// idea: what a failed store call becomes.
    ///
    /// An outage is logged when it starts and when the store answers again, not per request; every
    /// failed request is counted in `ratelimit_store_errors_total`.
    ///
    /// ```
    /// use ratelimit_tower::{OnFailure, Policy, Quota, RateLimitLayer};
    ///
    /// let layer = RateLimitLayer::builder()
    ///     .policy(Policy::gcra("burst", Quota::per_second(10).build()?)?)
    ///     .on_store_error(OnFailure::Allow)
    ///     .build()?;
    /// # let _ = layer;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn on_store_error(mut self, action: OnFailure) -> Self {
        self.on_store_error = action;
        self
    }

    /// What to do when no key can be built (default [`OnKeyError::Reject`]).
    pub fn on_key_error(mut self, action: OnKeyError) -> Self {
        self.on_key_error = action;
        self
    }

    /// Shadow (dry-run) mode: count and log would-be rejections (`info`, metric outcome
    /// `shadow_limited`) but let every request through, without rate-limit headers. For rolling out
    /// limits safely.
    pub fn shadow(mut self, yes: bool) -> Self {
        self.shadow = yes;
        self
    }

    /// Whether to send `RateLimit` and `RateLimit-Policy` (default on).
    pub fn ietf_headers(mut self, yes: bool) -> Self {
        self.headers.ietf = yes;
        self
    }

    /// Which revision of the IETF fields to send (default [`IetfRevision::Draft11`], the current one);
    /// [`IetfRevision::Draft07`] and [`IetfRevision::Draft06`] serve clients written against those.
    ///
    /// ```
    /// use ratelimit_tower::{IetfRevision, Policy, Quota, RateLimitLayer};
    ///
    /// // `RateLimit: limit=100, remaining=99, reset=60` and `RateLimit-Policy: 100;w=60`.
    /// let layer = RateLimitLayer::builder()
    ///     .policy(Policy::fixed_window("minute", Quota::per_minute(100).build()?)?)
    ///     .ietf_revision(IetfRevision::Draft07)
    ///     .build()?;
    /// # let _ = layer;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn ietf_revision(mut self, revision: IetfRevision) -> Self {
        self.headers.revision = revision;
        self
    }

    /// Also send `X-RateLimit-Limit`, `-Remaining` and `-Reset` for the binding policy, with the reset as
    /// delta seconds or a Unix time (off by default).
    pub fn legacy_headers(mut self, reset: LegacyReset) -> Self {
        self.headers.legacy = Some(reset);
        self
    }

    /// Send only the policy closest to exhaustion in `RateLimit`/`RateLimit-Policy` (smaller responses).
    pub fn only_binding_policy(mut self, yes: bool) -> Self {
        self.headers.only_binding = yes;
        self
    }

    /// Add `pk` (12 bytes of a SHA-256 of the store key, never the raw identity) to every item (of the
    /// current revision's fields: draft-06 and -07 have no `pk`).
    pub fn partition_key(mut self, yes: bool) -> Self {
        self.headers.partition_key = yes;
        self
    }

    /// When an allowed request leaves at most `percent` % of its binding policy, insert a
    /// [`NearLimit`](crate::NearLimit) request extension for the handler.
    pub fn soft_limit_percent(mut self, percent: u8) -> Self {
        self.soft_limit_percent = Some(percent);
        self
    }

    /// Whether every admitted request carries a [`RateLimitInfo`](crate::RateLimitInfo) (the binding
    /// policy, its limit, what remains, when it resets, whether it is near the limit) for its handler;
    /// with the `axum` feature it is an extractor. Off by default: the policy name is interned, so the
    /// value is a few words, but `http::Extensions` boxes every value it holds — an allocation and a
    /// map insert per request, which a layer whose handlers never read it should not pay.
    pub fn rate_limit_info(mut self, yes: bool) -> Self {
        self.info = yes;
        self
    }

    /// Builds 429 responses with `f` instead of the default problem+json. `Retry-After`, the rate-limit
    /// headers and `Cache-Control: no-store` (unless you set `Cache-Control`) are added to what it returns.
    pub fn rejection<F>(mut self, f: F) -> Self
    where
        F: Fn(&Rejection<'_>) -> Response<Bytes> + Send + Sync + 'static,
    {
        self.rejection = Some(Box::new(f));
        self
    }

    /// Whether to record the `ratelimit_decision_seconds` histogram (default on; costs two clock reads
    /// per request — of the CPU's time-stamp counter where Linux keeps time with it, about 2 × 9 ns,
    /// else `Instant::now()`, about 2 × 25 ns — while a `metrics` recorder is installed; without one,
    /// nothing is timed).
    pub fn decision_latency_histogram(mut self, yes: bool) -> Self {
        self.latency = yes;
        self
    }

    /// Validates the configuration and builds the layer.
    pub fn build(self) -> Result<RateLimitLayer<S>, ConfigError>
    where
        S: Store<[u8], PolicySet> + 'static,
    {
        let scope = self.scope.into_bytes();
        if scope.is_empty() || scope.len() > 32 || scope.contains(&0) {
            return Err(ConfigError::Scope(
                String::from_utf8_lossy(&scope).into_owned(),
            ));
        }
        if let Cost::Fixed(0) = self.cost {
            return Err(ConfigError::ZeroCost);
        }
        if let Some(p) = self.soft_limit_percent {
            if p > 100 {
                return Err(ConfigError::SoftLimit(p));
            }
        }
        if self.methods.as_ref().is_some_and(|m| m.is_empty()) {
            return Err(ConfigError::NoMethods);
        }
        let on_store_error = match self.on_store_error {
            OnFailure::Allow => StoreFailure::Allow,
            OnFailure::Local { .. } => return Err(ConfigError::LocalFallbackOnLayer),
            // Error, and whatever a later version adds: fail closed is the safe reading.
            _ => StoreFailure::Error,
        };
        let direct = match (self.set, self.policies.is_empty()) {
            (Some(set), true) => Some(set),
            (None, false) => Some(PolicySet::new(self.policies)?),
            (None, true) => None,
            (Some(_), false) => return Err(ConfigError::PoliciesAndTiers),
        };
        let mut tiers = match (direct, self.tiers) {
            (Some(set), None) => Tiers::new(set),
            (None, Some(t)) => t,
            (None, None) => return Err(ConfigError::NoPolicies),
            (Some(_), Some(_)) => return Err(ConfigError::PoliciesAndTiers),
        };
        if let Some(g) = self.global {
            tiers = tiers.global_cap(g);
        }
        let sets = std::iter::once(tiers.default_policies())
            .chain(tiers.tier_names().filter_map(|n| tiers.tier_policies(n)))
            .chain(tiers.global_cap_policies());
        for set in sets {
            if let Some(p) = set.policies().iter().find(|p| {
                matches!(
                    p.algorithm().kind(),
                    ratelimit_core::AlgorithmKind::Shaper { .. }
                )
            }) {
                return Err(ConfigError::Shaper(p.name().to_owned()));
            }
        }
        let skip: Option<SkipFn> = match self.skip.len() {
            0 => None,
            1 => self.skip.into_iter().next(),
            _ => {
                let all = self.skip;
                Some(Box::new(move |req: &RequestInfo<'_>| {
                    all.iter().any(|f| f(req))
                }))
            }
        };
        let cfg = Config {
            scope: crate::key::Scope::new(&scope),
            key: self.key.unwrap_or_else(|| Box::new(ClientIp::peer())),
            tier_source: self.tier_source,
            cost: self.cost,
            methods: self.methods.map(Vec::into_boxed_slice),
            skip,
            on_store_error,
            on_key_error: self.on_key_error,
            shadow: self.shadow,
            headers: self.headers,
            soft_limit_percent: self.soft_limit_percent,
            info: self.info,
            rejection: self.rejection,
            latency: self.latency,
        };
        Ok(RateLimitLayer::from_shared(Arc::new(Shared {
            store: self.store,
            cfg,
            meters: crate::observe::Meters::resolve(),
            tiers: Arc::new(ArcSwap::from_pointee(TierTable::build(tiers))),
            health: Default::default(),
            tier_checks: Default::default(),
        })))
    }
}
