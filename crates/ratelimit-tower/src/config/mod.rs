//! The layer's configuration from a file (feature `serde`; `toml` for [`LayerConfig::from_toml`]): tiers,
//! the default tier, the global cap, route costs and trusted proxies, validated, with errors that name
//! the path of the bad value and what to write instead.
//!
//! ```
//! # #[cfg(feature = "toml")]
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use ratelimit_tower::config::LayerConfig;
//! use ratelimit_tower::RateLimitLayer;
//!
//! let config = LayerConfig::from_toml(r#"
//!     trusted_proxies = ["10.0.0.0/8"]
//!     on_store_error = "error"
//!
//!     [default]
//!     policies = [{ name = "hourly", rate = "30/h", burst = 60 }]
//!
//!     [tiers.pro]
//!     policies = [
//!         { name = "hourly", rate = "1000/h", burst = 2000 },
//!         { name = "daily", algorithm = "fixed_window", rate = "10000/d" },
//!     ]
//!
//!     [global_cap]
//!     policies = [{ name = "global", rate = "50000/s" }]
//!
//!     [costs]
//!     "/v1/report" = 10
//! "#)?;
//! // Tiers (with the global cap), the client-IP key, store-failure handling and the route costs.
//! let layer = config.configure(RateLimitLayer::builder()).build()?;
//! # let _ = layer;
//!
//! let err = LayerConfig::from_toml(r#"
//!     trusted_proxies = ["0.0.0.0/0"]
//!     [default]
//!     policies = [{ name = "hourly", rate = "30/h" }]
//! "#).unwrap_err();
//! assert_eq!(err.path(), "trusted_proxies[0]");
//! assert!(err.message().contains("contains every address"));
//! # Ok(()) }
//! # #[cfg(not(feature = "toml"))]
//! # fn main() {}
//! ```
//!
//! The request's tier comes from the [`Tier`](crate::Tier) request extension that your authentication
//! sets (or [`RateLimitBuilder::tier_fn`]); a file cannot know who a client is.
//!
//! # Schema
//!
//! | key | value | default |
//! |---|---|---|
//! | `default` | `{ policies }`: the tier of clients without one (anonymous) and of tiers not listed | required |
//! | `tiers.<name>` | `{ policies }`: a named tier; the name is 1 to 64 characters from `A-Z a-z 0-9 - _ . : /`, not `default` | none |
//! | `global_cap` | `{ policies }`: checked on one key shared by every client, after the client's own tier (reserve-then-refund); its policy names differ from every tier's, since both appear in one `RateLimit` header | none |
//! | `costs.<route>` | units charged per request to the route (at least 1); the route is the matched template or the path, starting with `/`, without a query ([`RouteCosts`]) | 1 |
//! | `trusted_proxies` | networks (CIDRs) of your reverse proxies: the client is then the right-most `X-Forwarded-For` hop that is not one of them; not `0.0.0.0/0`, `::/0` nor a public range wider than /8 (IPv4) or /16 (IPv6) ([`Cidr::check_proxy_range`]) | `[]`: the TCP peer is the client |
//! | `on_store_error` | `"error"`: answer 503 when the store cannot decide; `"allow"`: let the request through without rate-limit headers (ratelimit-core's `OnFailure` names; `"local"` is a Redis store setting) | `"error"` |
//! | `trust_any_proxy` | `true`: every peer is taken for a proxy and the client is the address it appended ([`ClientIp::behind_any_proxy_unsafe`]; a client that reaches the server directly picks its own key) | `false` |
//!
//! `policies` is a non-empty list of policies, `{ name, algorithm, rate | limit + per, burst, penalise }`,
//! as [`ratelimit_core::config`] reads them; a shaper (`algorithm = "shaper"`) is refused, since the
//! layer admits or rejects and never delays. Unknown fields are refused everywhere: a misspelt `brust`
//! is an error, not a silently ignored line.
//!
//! # Errors
//!
//! A [`ConfigError`] names the path of the bad value and what to change:
//!
//! ```text
//! tiers.free.policies[0]: unknown algorithm "gcrah": use one of gcra, token_bucket, …
//! global_cap.policies[0].name: "hourly" is also the name of a policy of tiers.free: both appear in one RateLimit header, so rename one of them (e.g. "global")
//! costs./v1/report: a cost of 0 would make /v1/report free and unlimited: give a cost of at least 1, …
//! trusted_proxies[0]: trusted proxy network 0.0.0.0/0 contains every address: any client could write its own X-Forwarded-For …
//! ```
//!
//! [`LayerConfig::from_toml`] and [`LayerConfig::from_deserializer`] give these paths from the document's
//! root. A `LayerConfig` inside your own configuration struct deserializes too; its errors then carry
//! your field's path, followed by the path inside the layer's table. To keep the layer's keys at the
//! top of a file that also holds your own tables, take yours out of the parsed document and pass the
//! rest (a `toml::Value`) to [`LayerConfig::from_deserializer`]: paths stay the document's
//! (`examples/tiered_api` does this for its `[[keys]]`).

mod costs;
mod schema;

use std::collections::BTreeMap;

use ratelimit_core::PolicySet;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

pub use costs::RouteCosts;
pub use ratelimit_core::config::ConfigError;

use crate::builder::RateLimitBuilder;
use crate::key::forwarded::ProxyNetworks;
use crate::key::{Cidr, ClientIp, TrustedProxies};
use crate::tier::Tiers;
use crate::OnFailure;
use schema::{RawLayerConfig, RawOnStoreError, RawTier};

/// A validated configuration for a [`RateLimitLayer`](crate::RateLimitLayer); see the
/// [module docs](self) for the schema.
#[derive(Debug, Clone, PartialEq)]
pub struct LayerConfig {
    default: PolicySet,
    tiers: BTreeMap<String, PolicySet>,
    global_cap: Option<PolicySet>,
    costs: BTreeMap<String, u64>,
    trusted_proxies: ProxyNetworks,
    trust_any_proxy: bool,
    on_store_error: Option<OnFailure>,
}

impl LayerConfig {
    /// Reads and validates a configuration from any serde deserializer (`serde_json::Deserializer`,
    /// `serde_yaml::Deserializer`, a `toml::Value` holding a table taken out of a larger document, …); an
    /// error names the path of the bad value from the document's root.
    ///
    /// ```
    /// use ratelimit_tower::config::LayerConfig;
    ///
    /// let json = r#"{ "default": { "policies": [{ "name": "hourly", "rate": "30/h" }] },
    ///                 "costs": { "/v1/report": 0 } }"#;
    /// let err = LayerConfig::from_deserializer(&mut serde_json::Deserializer::from_str(json))
    ///     .unwrap_err();
    /// assert_eq!(err.path(), "costs./v1/report");
    /// assert!(err.message().contains("at least 1"), "{err}");
    /// ```
    pub fn from_deserializer<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Self, ConfigError> {
        ratelimit_core::config::from_deserializer::<RawLayerConfig, _>(deserializer)
            .map_err(without_toml_context)?
            .validate()
    }

    /// Reads and validates a configuration written in TOML (see the [module docs](self)). A document
    /// that is not TOML at all is reported at the line and column where it stops being TOML.
    #[cfg(feature = "toml")]
    #[cfg_attr(docsrs, doc(cfg(feature = "toml")))]
    pub fn from_toml(text: &str) -> Result<Self, ConfigError> {
        let document = toml::de::DeTable::parse(text).map_err(|e| toml_syntax(text, &e))?;
        // Without the source text, toml's errors are the message alone rather than a multi-line
        // excerpt; the path already says where the value is.
        Self::from_deserializer(toml::Deserializer::from(document))
    }

    /// The default tier's policies: clients without a tier, and tiers not listed.
    pub fn default_policies(&self) -> &PolicySet {
        &self.default
    }

    /// The named tiers, in name order.
    pub fn named_tiers(&self) -> impl Iterator<Item = (&str, &PolicySet)> {
        self.tiers.iter().map(|(n, s)| (n.as_str(), s))
    }

    /// The policies of tier `name`, if the file lists it.
    pub fn tier_policies(&self, name: &str) -> Option<&PolicySet> {
        self.tiers.get(name)
    }

    /// The global cap, if any.
    pub fn global_cap(&self) -> Option<&PolicySet> {
        self.global_cap.as_ref()
    }

    /// The trusted proxies' networks (empty: none, or [`Self::trusts_any_proxy`]).
    pub fn trusted_proxies(&self) -> &[Cidr] {
        self.trusted_proxies.as_slice()
    }

    /// Whether `trust_any_proxy = true`.
    pub fn trusts_any_proxy(&self) -> bool {
        self.trust_any_proxy
    }

    /// What the layer does when the store fails, if the file says (`on_store_error`; the builder's
    /// default, answering 503, otherwise).
    pub fn on_store_error(&self) -> Option<OnFailure> {
        self.on_store_error
    }

    /// The tier table for [`RateLimitBuilder::tiers`] or, at run time,
    /// [`TiersHandle::replace`](crate::TiersHandle::replace): the default tier, the named tiers and the
    /// global cap.
    pub fn tiers(&self) -> Tiers {
        let mut tiers = Tiers::new(self.default.clone());
        for (name, set) in &self.tiers {
            tiers = tiers.tier(name, set.clone());
        }
        match &self.global_cap {
            Some(cap) => tiers.global_cap(cap.clone()),
            None => tiers,
        }
    }

    /// The client-IP key: the TCP peer, or the client behind `trusted_proxies`, or behind any proxy.
    pub fn client_ip(&self) -> ClientIp {
        if self.trust_any_proxy {
            ClientIp::behind_any_proxy_unsafe()
        } else if self.trusted_proxies.as_slice().is_empty() {
            ClientIp::peer()
        } else {
            ClientIp::trusted_proxies(TrustedProxies::Cidrs(self.trusted_proxies.clone()))
        }
    }

    /// The route costs, for [`RateLimitBuilder::cost_fn`].
    pub fn route_costs(&self) -> RouteCosts {
        RouteCosts::new(self.costs.clone())
    }

    /// Sets `builder`'s tiers ([`Self::tiers`]), key ([`Self::client_ip`]), store-failure handling when
    /// the file sets it ([`Self::on_store_error`]) and, when routes have costs, its cost function
    /// ([`Self::route_costs`]). Settings made afterwards win: e.g.
    /// `.key(User::<UserId>::new().or(config.client_ip()))` to key signed-in users by account.
    pub fn configure<S>(&self, builder: RateLimitBuilder<S>) -> RateLimitBuilder<S> {
        let mut builder = builder.tiers(self.tiers()).key(self.client_ip());
        if let Some(action) = self.on_store_error {
            builder = builder.on_store_error(action);
        }
        if self.costs.is_empty() {
            return builder;
        }
        let costs = self.route_costs();
        builder.cost_fn(move |req| costs.cost(req))
    }

    /// Checks that every route in `costs` is one of `routes` (the application's): a misspelt route would
    /// silently cost 1.
    ///
    /// ```
    /// use ratelimit_tower::config::LayerConfig;
    ///
    /// let json = r#"{ "default": { "policies": [{ "name": "hourly", "rate": "30/h" }] },
    ///                 "costs": { "/v1/reports": 10 } }"#;
    /// let config = LayerConfig::from_deserializer(&mut serde_json::Deserializer::from_str(json))?;
    /// let err = config.check_cost_routes(&["/v1/hello", "/v1/report"]).unwrap_err();
    /// assert_eq!(err.path(), "costs./v1/reports");
    /// assert!(err.message().ends_with("the routes are /v1/hello, /v1/report"), "{err}");
    /// # Ok::<(), ratelimit_tower::config::ConfigError>(())
    /// ```
    pub fn check_cost_routes(&self, routes: &[&str]) -> Result<(), ConfigError> {
        match self.costs.keys().find(|r| !routes.contains(&r.as_str())) {
            None => Ok(()),
            Some(route) => Err(ConfigError::new(
                format!("costs.{route}"),
                format!(
                    "unknown route {route:?}: the routes are {}",
                    routes.join(", ")
                ),
            )),
        }
    }
}

/// Drops the line toml's deserializers (the document's, and `toml::Value`'s) append to a message,
/// `in `tiers.free.policies``: the error's path says where, with list indexes.
fn without_toml_context(e: ConfigError) -> ConfigError {
    let message = e.message().trim_end();
    let message = match message.rsplit_once('\n') {
        Some((message, context)) if context.starts_with("in `") => message.trim_end(),
        _ => message,
    };
    ConfigError::new(e.path(), message)
}

/// A TOML syntax error: where (line and column) and what the parser expected.
#[cfg(feature = "toml")]
fn toml_syntax(text: &str, e: &toml::de::Error) -> ConfigError {
    let at = e.span().map_or(text.len(), |s| s.start).min(text.len());
    let before = text.get(..at).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    ConfigError::new(
        format!("line {line}, column {column}"),
        format!("not TOML: {}", e.message()),
    )
}

/// Deserializes and validates; an error carries the path inside this table in its message (prefixed by
/// your field's path when read through [`ratelimit_core::config::from_deserializer`]).
impl<'de> Deserialize<'de> for LayerConfig {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        RawLayerConfig::deserialize(deserializer)?
            .validate()
            .map_err(serde::de::Error::custom)
    }
}

/// Writes the schema it reads (policies in the table form, networks with their prefix length).
impl Serialize for LayerConfig {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let tier = |set: &PolicySet| RawTier {
            policies: set.clone(),
        };
        RawLayerConfig {
            trust_any_proxy: self.trust_any_proxy,
            trusted_proxies: self.trusted_proxies().iter().map(Cidr::to_string).collect(),
            default: Some(tier(&self.default)),
            tiers: self
                .tiers
                .iter()
                .map(|(n, s)| (n.clone(), tier(s)))
                .collect(),
            global_cap: self.global_cap.as_ref().map(tier),
            costs: self.costs.clone(),
            on_store_error: self.on_store_error.map(RawOnStoreError::from_action),
        }
        .serialize(serializer)
    }
}
