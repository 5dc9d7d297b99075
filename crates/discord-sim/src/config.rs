//! What the simulator enforces: the route table, the global limit, the invalid-request ban, latency.
//!
//! Every duration is a [`Duration`]; the simulator keeps time in integer microseconds on tokio's monotonic
//! clock. [`SimConfig::scaled`] multiplies every window and latency by one factor, so a scenario built with
//! Discord's real numbers can run in a fraction of the time.

use std::time::Duration;

use http::{Method, StatusCode};

/// How a limit's window moves.
///
/// Discord's headers do not say which one a route uses (dapi#7680); a simulator must have both.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Window {
    /// The window opens on the first counted request after the previous one expired and lasts `period`;
    /// at its end `Remaining` returns to `Limit` at once. `Reset-After` counts down to that instant.
    Fixed,
    /// A leaky bucket: one unit drains every `period / limit` (rounded up to a microsecond), so
    /// `Remaining` grows back one at a time. `Reset-After` is the time until the bucket is empty again and
    /// moves with every response; a 429's `retry_after` is the time until one unit is free.
    Leaky,
}

/// One limit: `limit` requests per `period`, counted as [`Window`] says.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Limit {
    /// Requests allowed per period (at least 1).
    pub limit: u32,
    /// The window length (fixed) or the time to drain a full bucket (leaky).
    pub period: Duration,
    /// Fixed or leaky.
    pub window: Window,
}

impl Limit {
    /// A fixed window of `limit` requests per `period`.
    ///
    /// ```
    /// use std::time::Duration;
    /// let l = discord_sim::Limit::fixed(5, Duration::from_millis(500));
    /// assert_eq!(l.max_admissions(Duration::from_millis(1200)), 15); // windows open at 0, 500, 1000 ms
    /// ```
    pub const fn fixed(limit: u32, period: Duration) -> Self {
        Self {
            limit,
            period,
            window: Window::Fixed,
        }
    }

    /// A leaky bucket of `limit` requests draining over `period`.
    ///
    /// ```
    /// use std::time::Duration;
    /// let l = discord_sim::Limit::leaky(4, Duration::from_millis(100));
    /// assert_eq!(l.max_admissions(Duration::from_millis(100)), 8); // a full bucket, then 1 per 25 ms
    /// ```
    pub const fn leaky(limit: u32, period: Duration) -> Self {
        Self {
            limit,
            period,
            window: Window::Leaky,
        }
    }

    pub(crate) fn limit_u64(&self) -> u64 {
        u64::from(self.limit.max(1))
    }

    pub(crate) fn period_us(&self) -> u64 {
        u64::try_from(self.period.as_micros())
            .unwrap_or(u64::MAX)
            .max(1)
    }

    /// The leak interval of a leaky bucket, `period / limit` rounded up to a microsecond.
    pub(crate) fn interval_us(&self) -> u64 {
        self.period_us().div_ceil(self.limit_u64()).max(1)
    }

    /// The most requests this limit admits in a span of `elapsed` that starts with an admission (both ends
    /// included): the denominator of utilisation.
    ///
    /// Fixed: `limit × (⌊elapsed / period⌋ + 1)`. Leaky: `limit + ⌊elapsed / (period / limit)⌋`.
    pub fn max_admissions(&self, elapsed: Duration) -> u64 {
        let e = u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX);
        match self.window {
            Window::Fixed => self.limit_u64().saturating_mul(e / self.period_us() + 1),
            Window::Leaky => self.limit_u64().saturating_add(e / self.interval_us()),
        }
    }

    /// The shortest span, from the first admission to the last, in which this limit admits `n` requests:
    /// the lower bound on finishing `n` requests of one bucket (latency not included).
    ///
    /// ```
    /// use std::time::Duration;
    /// let l = discord_sim::Limit::fixed(40, Duration::from_secs(1));
    /// assert_eq!(l.min_duration(102), Duration::from_secs(2));
    /// assert_eq!(l.min_duration(40), Duration::ZERO);
    /// ```
    pub fn min_duration(&self, n: u64) -> Duration {
        if n <= self.limit_u64() {
            return Duration::ZERO;
        }
        let us = match self.window {
            Window::Fixed => (n.div_ceil(self.limit_u64()) - 1).saturating_mul(self.period_us()),
            Window::Leaky => (n - self.limit_u64()).saturating_mul(self.interval_us()),
        };
        Duration::from_micros(us)
    }

    fn scaled(self, factor: f64) -> Self {
        Self {
            period: scale(self.period, factor),
            ..self
        }
    }
}

/// Whether routes that report one bucket hash share one counter.
///
/// Discord does both (dapi#981 vs dapi#1442/#8073): reactions draw on one counter, while `POST` and `PATCH`
/// message report one hash but keep a counter each.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum CounterMode {
    /// Each route (method + template) has its own counter, even when the hash is shared.
    #[default]
    PerRoute,
    /// Every route reporting this hash draws on one counter.
    SharedByHash,
}

/// A further limit layered under a route's reported one (dapi#5646): it is counted on every admitted
/// request, is invisible in the headers until it trips, and then its 429 carries *its* hash and numbers.
///
/// Layers naming the same `hash` share one counter across routes (a resource-wide limit).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LayeredLimit {
    /// The hash reported on the 429 this layer produces; also its counter's name.
    pub hash: String,
    /// Its numbers.
    pub limit: Limit,
    /// Counted per major parameter (`true`) or once across all majors of the token (`false`).
    pub per_major: bool,
}

/// A hidden sub-limit (dapi#1900, #2190): counted per route and major on matching requests only; when
/// exhausted, the route answers 429 `user` with the main bucket's headers unchanged (`Remaining > 0`) and a
/// `retry_after` that is the sub-limit's own wait.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SubLimit {
    /// Its numbers.
    pub limit: Limit,
    /// The request counts only when its JSON body has one of these top-level keys (for example `name`,
    /// `topic`); empty means every request of the route counts.
    pub body_fields: Vec<String>,
}

/// What starts a shared-scope storm on a resource.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum StormTrigger {
    /// Every n-th request that reaches the resource check (counted per route and major) starts a storm.
    EveryNth(u32),
    /// Each request starts a storm with this probability, drawn from the seeded RNG.
    Probability(f64),
}

/// Shared-scope 429 injection: the resource is contended by others (A.5 `shared`). While a storm lasts,
/// every request to that route and major gets 429 `X-RateLimit-Scope: shared` with the caller's own bucket
/// headers and an overriding `Retry-After`. Not counted against the caller's bucket nor as invalid.
#[derive(Clone, Debug, PartialEq)]
pub struct SharedStorm {
    /// What starts a storm.
    pub trigger: StormTrigger,
    /// How long a storm lasts (the `retry_after` of its first 429).
    pub duration: Duration,
    /// Limit storms to these majors (as the simulator names them, for example `channels/100`); `None`
    /// means every major of the route.
    pub majors: Option<Vec<String>>,
}

/// One route of the table: method + template, its bucket and everything layered on it.
#[derive(Clone, Debug, PartialEq)]
pub struct RouteConfig {
    /// The HTTP method.
    pub method: Method,
    /// The path template under the API base, `{name}` matching one segment, for example
    /// `/channels/{channel_id}/messages`. The major parameter is derived from it: `/channels/{id}`,
    /// `/guilds/{id}`, `/webhooks/{id}[/{token}]`, `/interactions/{id}/{token}`.
    pub template: String,
    /// The reported `X-RateLimit-Bucket` (excludes the major, as Discord's does).
    pub hash: String,
    /// The reported limit; `None` = the route has no bucket and sends no `X-RateLimit-*` headers.
    pub limit: Option<Limit>,
    /// Whether routes with the same hash share the counter.
    pub counter: CounterMode,
    /// Counted per major parameter (`true`, Discord's default) or across all majors (dapi#6753).
    pub per_major: bool,
    /// Hidden layered limits (dapi#5646).
    pub layers: Vec<LayeredLimit>,
    /// A hidden sub-limit (dapi#1900).
    pub sub_limit: Option<SubLimit>,
    /// Shared-scope 429 injection.
    pub shared: Option<SharedStorm>,
    /// Not counted by the global limit (interaction callbacks, webhook executions with a token).
    pub exempt_global: bool,
    /// Whether an `Authorization` header is required (webhook executions with a token in the URL are not).
    pub requires_auth: bool,
    /// The status of an admitted request (200, 204, or 403/404 to model failing requests, which count too).
    pub status: StatusCode,
    /// Further hashes the route reports in rotation with `hash`, one per response (dapi#1295: a hash that
    /// cycled from one request to the next). The counter stays the same; only the reported name changes.
    pub alternate_hashes: Vec<String>,
    /// Corrupts the rate-limit numbers of every response of the route, to test a client's defences.
    pub header_fault: Option<HeaderFault>,
    /// Count every 4xx answer of this route toward the ban, not only 401 and 403: a deleted webhook
    /// answers 404, and "repeated attempts … will result in a temporary restriction" (A.7).
    pub errors_count_as_invalid: bool,
    /// The path parameter (for example `message_id`) whose snowflake age selects a tier in `age_tiers`.
    pub age_param: Option<String>,
    /// Buckets chosen by the age of a snowflake in the path (message deletion, dapi#8330); when set they
    /// replace `hash`/`limit`. Checked in order; the first tier the age is younger than wins, and a tier
    /// with `younger_than: None` takes every age.
    pub age_tiers: Vec<AgeTier>,
}

/// One bucket of a route whose bucket depends on a snowflake's age ([`RouteConfig::by_snowflake_age`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AgeTier {
    /// The tier applies to snowflakes younger than this; `None` = any age.
    pub younger_than: Option<Duration>,
    /// The reported hash (and the counter's name: tiers are separate counters).
    pub hash: String,
    /// Its numbers.
    pub limit: Limit,
}

/// Malformed or hostile rate-limit values a route can send instead of the real ones (headers
/// `X-RateLimit-Limit`, `-Remaining`, `-Reset`, `-Reset-After`, `Retry-After`, and a 429 body's
/// `retry_after`). The decision itself is unchanged: only what the client reads is corrupted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HeaderFault {
    /// `NaN` and `inf` where numbers belong.
    NonFinite,
    /// Negative numbers.
    Negative,
    /// Numbers beyond `u64` and `f64` range (`1e308`, `18446744073709551616`, `1e400` in the body).
    Huge,
    /// Not numbers at all.
    Garbage,
    /// `Remaining: 0` with a reset a year away: a client must cap the wait, not sleep for a year.
    AbsurdWindow,
}

impl RouteConfig {
    /// A route with a bucket. Defaults: per-route counter, per major, no layers, auth required and global
    /// counted except for `/interactions/…` and `/webhooks/{id}/{token}…` templates, status 200.
    ///
    /// ```
    /// use std::time::Duration;
    /// use discord_sim::{Limit, RouteConfig};
    /// let r = RouteConfig::new(http::Method::POST, "/webhooks/{webhook_id}/{webhook_token}", "h1",
    ///     Limit::fixed(5, Duration::from_secs(1)));
    /// assert!(r.exempt_global && !r.requires_auth);
    /// ```
    pub fn new(
        method: Method,
        template: impl Into<String>,
        hash: impl Into<String>,
        limit: Limit,
    ) -> Self {
        let template = template.into();
        let exempt = crate::route::is_interaction_or_webhook_token(&template);
        Self {
            method,
            template,
            hash: hash.into(),
            limit: Some(limit),
            counter: CounterMode::PerRoute,
            per_major: true,
            layers: Vec::new(),
            sub_limit: None,
            shared: None,
            exempt_global: exempt,
            requires_auth: !exempt,
            status: StatusCode::OK,
            alternate_hashes: Vec::new(),
            header_fault: None,
            errors_count_as_invalid: false,
            age_param: None,
            age_tiers: Vec::new(),
        }
    }

    /// A route with no bucket: only the global limit applies and no `X-RateLimit-*` headers are sent.
    pub fn unlimited(method: Method, template: impl Into<String>) -> Self {
        let mut r = Self::new(
            method,
            template,
            "",
            Limit::fixed(1, Duration::from_secs(1)),
        );
        r.limit = None;
        r
    }

    /// Routes reporting this hash share one counter ([`CounterMode::SharedByHash`]).
    pub fn shared_counter(mut self) -> Self {
        self.counter = CounterMode::SharedByHash;
        self
    }

    /// One counter across all majors (dapi#6753: webhooks in different channels).
    pub fn across_majors(mut self) -> Self {
        self.per_major = false;
        self
    }

    /// Adds a hidden layered limit.
    pub fn layer(mut self, hash: impl Into<String>, limit: Limit, per_major: bool) -> Self {
        self.layers.push(LayeredLimit {
            hash: hash.into(),
            limit,
            per_major,
        });
        self
    }

    /// Sets a hidden sub-limit counting requests whose JSON body has one of `body_fields` (all if empty).
    pub fn sub_limit(mut self, limit: Limit, body_fields: &[&str]) -> Self {
        self.sub_limit = Some(SubLimit {
            limit,
            body_fields: body_fields.iter().map(|s| (*s).to_owned()).collect(),
        });
        self
    }

    /// Injects shared-scope storms.
    pub fn shared_storm(
        mut self,
        trigger: StormTrigger,
        duration: Duration,
        majors: Option<&[&str]>,
    ) -> Self {
        self.shared = Some(SharedStorm {
            trigger,
            duration,
            majors: majors.map(|m| m.iter().map(|s| (*s).to_owned()).collect()),
        });
        self
    }

    /// Sets whether the global limit skips this route.
    pub fn exempt_global(mut self, exempt: bool) -> Self {
        self.exempt_global = exempt;
        self
    }

    /// Sets whether an `Authorization` header is required.
    pub fn requires_auth(mut self, required: bool) -> Self {
        self.requires_auth = required;
        self
    }

    /// Sets the status of admitted requests (403 makes every admitted request invalid).
    pub fn status(mut self, status: StatusCode) -> Self {
        self.status = status;
        self
    }

    /// Reports `hashes` in rotation with the route's own hash, one per response.
    pub fn alternate_hashes(mut self, hashes: &[&str]) -> Self {
        self.alternate_hashes = hashes.iter().map(|s| (*s).to_owned()).collect();
        self
    }

    /// Counts every 4xx answer of this route toward the ban (a deleted webhook's 404s).
    pub fn errors_count_as_invalid(mut self, yes: bool) -> Self {
        self.errors_count_as_invalid = yes;
        self
    }

    /// Corrupts this route's rate-limit values ([`HeaderFault`]).
    pub fn header_fault(mut self, fault: HeaderFault) -> Self {
        self.header_fault = Some(fault);
        self
    }

    /// Chooses the bucket by the age of the snowflake in path parameter `param` (`message_id` for
    /// `{message_id}`), as Discord does for message deletion (dapi#8330). Snowflake time is
    /// `(id >> 22) + 1420070400000` ms since the Unix epoch; ages are not scaled by [`SimConfig::scaled`],
    /// the tiers' windows are.
    ///
    /// ```
    /// use std::time::Duration;
    /// use discord_sim::{AgeTier, Limit, RouteConfig};
    /// let r = RouteConfig::new(http::Method::DELETE, "/channels/{channel_id}/messages/{message_id}", "",
    ///     Limit::fixed(5, Duration::from_secs(1)))
    ///     .by_snowflake_age("message_id", vec![
    ///         AgeTier { younger_than: Some(Duration::from_secs(10)), hash: "young".into(),
    ///                   limit: Limit::fixed(5, Duration::from_secs(1)) },
    ///         AgeTier { younger_than: None, hash: "old".into(), limit: Limit::fixed(30, Duration::from_secs(4)) },
    ///     ]);
    /// assert_eq!(r.age_tiers.len(), 2);
    /// ```
    pub fn by_snowflake_age(mut self, param: &str, tiers: Vec<AgeTier>) -> Self {
        self.age_param = Some(param.to_owned());
        self.age_tiers = tiers;
        self
    }

    fn scaled(mut self, factor: f64) -> Self {
        self.limit = self.limit.map(|l| l.scaled(factor));
        for t in &mut self.age_tiers {
            t.limit = t.limit.scaled(factor);
        }
        for l in &mut self.layers {
            l.limit = l.limit.scaled(factor);
        }
        if let Some(s) = &mut self.sub_limit {
            s.limit = s.limit.scaled(factor);
        }
        if let Some(s) = &mut self.shared {
            s.duration = scale(s.duration, factor);
        }
        self
    }
}

/// The per-token global limit: at most `limit` requests in any window of `period` (a sliding log, so no
/// boundary allows 2×; dapi#5144). Requests without a token are counted per source IP.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GlobalLimit {
    /// Requests per period (Discord: 50).
    pub limit: u32,
    /// The window (Discord: 1 s).
    pub period: Duration,
}

impl GlobalLimit {
    /// As a [`Limit`] (for [`Limit::min_duration`] and [`Limit::max_admissions`]; a sliding log admits
    /// exactly what a fixed window opened at the first request does in the worst case).
    pub fn as_limit(&self) -> Limit {
        Limit::fixed(self.limit, self.period)
    }
}

/// What a banned client receives.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum BanBody {
    /// Cloudflare's HTML "error 1015" page (`Content-Type: text/html`).
    #[default]
    Html,
    /// The JSON variant, `{"message": "You are being blocked …", "code": 0}`.
    Json,
}

/// The invalid-request ban (A.7): `threshold` responses of 401, 403 or non-shared 429 from one source IP
/// within `window` ban that IP for `duration`. While banned every request gets a 429 with no
/// `X-RateLimit-*` and no `Via` header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BanConfig {
    /// Invalid requests that trigger the ban (Discord: 10,000).
    pub threshold: u32,
    /// The sliding window they are counted in (Discord: 10 minutes).
    pub window: Duration,
    /// How long the ban lasts (observed: about 1 hour).
    pub duration: Duration,
    /// HTML or JSON body.
    pub body: BanBody,
}

/// Per-request latency, drawn from the seeded RNG; half is spent before the request is admitted and half
/// after, as if on the wire each way.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Latency {
    /// No added latency.
    #[default]
    None,
    /// The same latency for every request.
    Fixed(Duration),
    /// Uniform in `[min, max]`.
    Range(Duration, Duration),
}

impl Latency {
    /// The smallest latency this setting produces.
    pub fn min(&self) -> Duration {
        match *self {
            Latency::None => Duration::ZERO,
            Latency::Fixed(d) => d,
            Latency::Range(a, b) => a.min(b),
        }
    }

    fn scaled(self, factor: f64) -> Self {
        match self {
            Latency::None => Latency::None,
            Latency::Fixed(d) => Latency::Fixed(scale(d, factor)),
            Latency::Range(a, b) => Latency::Range(scale(a, factor), scale(b, factor)),
        }
    }
}

/// Everything the simulator enforces.
///
/// [`SimConfig::default`] is Discord's observed route table (notes A.9) at real timings with the real global
/// limit and ban; tests usually start from a scenario ([`crate::Scenario`]) or an empty table
/// ([`SimConfig::empty`]) and add routes.
///
/// ```
/// use std::time::Duration;
/// use discord_sim::{Limit, RouteConfig, SimConfig};
/// let config = SimConfig::empty()
///     .route(RouteConfig::new(http::Method::POST, "/channels/{channel_id}/messages", "abc",
///         Limit::fixed(5, Duration::from_millis(500))))
///     .global(50, Duration::from_millis(200))
///     .seed(7);
/// assert_eq!(config.routes.len(), 1);
/// ```
#[derive(Clone, Debug, PartialEq)]
pub struct SimConfig {
    /// The route table; the most specific matching template wins (most literal segments, then order).
    pub routes: Vec<RouteConfig>,
    /// Valid bot tokens (sent as `Authorization: Bot <token>` or `Bearer <token>`); others get 401.
    pub tokens: Vec<String>,
    /// The global limit per token; `None` disables it.
    pub global: Option<GlobalLimit>,
    /// The invalid-request ban; `None` disables it.
    pub ban: Option<BanConfig>,
    /// Added latency.
    pub latency: Latency,
    /// Share of each request's latency, in percent, spent before the decision (default 50: half on the way
    /// in, half on the way back). Other values model an asymmetric path, to test a client's assumptions.
    pub inbound_percent: u8,
    /// Seed of the RNG used for latency and probabilistic storms.
    pub seed: u64,
    /// Also send `X-RateLimit-Scope: user` on non-429 responses (unresolved in the docs, A.4).
    pub scope_on_success: bool,
    /// Milliseconds added to the `X-RateLimit-Reset` epoch value, to test clients that trust the wall
    /// clock (negative = the server's clock is behind).
    pub reset_skew_ms: i64,
}

/// The token [`SimConfig::default`] and the scenarios accept.
pub const DEFAULT_TOKEN: &str = "sim-token";

impl Default for SimConfig {
    fn default() -> Self {
        crate::scenario::discord_routes(Self::empty())
    }
}

impl SimConfig {
    /// No routes (every path answers 404), token [`DEFAULT_TOKEN`], global 50 per second, ban after 10,000
    /// invalid requests in 10 minutes for an hour, no latency, seed 0.
    pub fn empty() -> Self {
        Self {
            routes: Vec::new(),
            tokens: vec![DEFAULT_TOKEN.to_owned()],
            global: Some(GlobalLimit {
                limit: 50,
                period: Duration::from_secs(1),
            }),
            ban: Some(BanConfig {
                threshold: 10_000,
                window: Duration::from_secs(600),
                duration: Duration::from_secs(3600),
                body: BanBody::Html,
            }),
            latency: Latency::None,
            inbound_percent: 50,
            seed: 0,
            scope_on_success: false,
            reset_skew_ms: 0,
        }
    }

    /// Adds a route.
    pub fn route(mut self, route: RouteConfig) -> Self {
        self.routes.push(route);
        self
    }

    /// Adds a valid token.
    pub fn token(mut self, token: impl Into<String>) -> Self {
        self.tokens.push(token.into());
        self
    }

    /// Sets the global limit per token.
    pub fn global(mut self, limit: u32, period: Duration) -> Self {
        self.global = Some(GlobalLimit { limit, period });
        self
    }

    /// Disables the global limit.
    pub fn no_global(mut self) -> Self {
        self.global = None;
        self
    }

    /// Sets the invalid-request ban.
    pub fn ban(mut self, threshold: u32, window: Duration, duration: Duration) -> Self {
        let body = self.ban.map(|b| b.body).unwrap_or_default();
        self.ban = Some(BanConfig {
            threshold,
            window,
            duration,
            body,
        });
        self
    }

    /// Sets the latency.
    pub fn latency(mut self, latency: Latency) -> Self {
        self.latency = latency;
        self
    }

    /// Sets the share of the latency spent before the decision (percent, 0–100; default 50).
    pub fn inbound_percent(mut self, percent: u8) -> Self {
        self.inbound_percent = percent;
        self
    }

    /// Sets the RNG seed.
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = seed;
        self
    }

    /// Multiplies every window, storm, ban duration and latency by `factor` (for example 0.1 runs Discord's
    /// 5 s message bucket as 500 ms). Non-finite or non-positive factors leave the config unchanged.
    pub fn scaled(mut self, factor: f64) -> Self {
        if !(factor.is_finite() && factor > 0.0) {
            return self;
        }
        self.routes = self.routes.into_iter().map(|r| r.scaled(factor)).collect();
        if let Some(g) = &mut self.global {
            g.period = scale(g.period, factor);
        }
        if let Some(b) = &mut self.ban {
            b.window = scale(b.window, factor);
            b.duration = scale(b.duration, factor);
        }
        self.latency = self.latency.scaled(factor);
        self
    }
}

/// A configuration the simulator refuses, with what to change.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid simulator configuration: {0}")]
pub struct ConfigError(pub String);

impl SimConfig {
    /// Checks every limit, storm, ban and template; [`crate::Simulator::start`] calls it.
    ///
    /// ```
    /// use std::time::Duration;
    /// use discord_sim::{Limit, RouteConfig, SimConfig};
    /// let bad = SimConfig::empty().route(RouteConfig::new(http::Method::GET, "/gateway/bot", "h",
    ///     Limit::fixed(0, Duration::from_secs(1))));
    /// assert!(bad.validate().unwrap_err().to_string().contains("limit 0"));
    /// ```
    pub fn validate(&self) -> Result<(), ConfigError> {
        fn check(what: &str, l: &Limit) -> Result<(), ConfigError> {
            if l.limit == 0 {
                return Err(ConfigError(format!(
                    "{what}: limit 0 admits nothing; use at least 1"
                )));
            }
            if l.period.is_zero() {
                return Err(ConfigError(format!(
                    "{what}: the period must be longer than zero"
                )));
            }
            Ok(())
        }
        for r in &self.routes {
            let what = format!("route {} {}", r.method, r.template);
            if !r.template.starts_with('/') {
                return Err(ConfigError(format!(
                    "{what}: templates start with '/' (under /api/v10)"
                )));
            }
            if let Some(l) = &r.limit {
                check(&what, l)?;
            }
            for layer in &r.layers {
                check(&format!("{what}, layer {}", layer.hash), &layer.limit)?;
            }
            for t in &r.age_tiers {
                check(&format!("{what}, age tier {}", t.hash), &t.limit)?;
            }
            if let Some(param) = &r.age_param {
                if !r
                    .template
                    .split('/')
                    .any(|seg| seg == format!("{{{param}}}"))
                {
                    return Err(ConfigError(format!(
                        "{what}: the age parameter {{{param}}} is not in the template"
                    )));
                }
            }
            if let Some(sub) = &r.sub_limit {
                check(&format!("{what}, sub-limit"), &sub.limit)?;
            }
            if let Some(storm) = &r.shared {
                match storm.trigger {
                    StormTrigger::EveryNth(0) => {
                        return Err(ConfigError(format!(
                            "{what}: EveryNth(0) never triggers; use 1 or more"
                        )))
                    }
                    StormTrigger::Probability(p) if !(0.0..=1.0).contains(&p) => {
                        return Err(ConfigError(format!(
                            "{what}: storm probability {p} is not within 0..=1"
                        )))
                    }
                    _ => {}
                }
            }
        }
        if let Some(g) = &self.global {
            check("global limit", &g.as_limit())?;
        }
        if let Some(b) = &self.ban {
            if b.threshold == 0 || b.window.is_zero() {
                return Err(ConfigError(
                    "ban: the threshold and the window must be above zero (or set `ban` to None)"
                        .to_owned(),
                ));
            }
        }
        if self
            .tokens
            .iter()
            .any(|t| t.is_empty() || t.contains(char::is_whitespace))
        {
            return Err(ConfigError(
                "tokens must be non-empty and contain no whitespace".to_owned(),
            ));
        }
        if self.inbound_percent > 100 {
            return Err(ConfigError(format!(
                "inbound_percent is a share of the latency: 0 to 100, not {}",
                self.inbound_percent
            )));
        }
        Ok(())
    }
}

fn scale(d: Duration, factor: f64) -> Duration {
    Duration::try_from_secs_f64(d.as_secs_f64() * factor).unwrap_or(d)
}
