//! The configuration as written (serde structs, unknown fields refused) and its validation, which names
//! the path of every bad value: the checks that span several tables (a global-cap policy named like a
//! tier's, a shaper anywhere, a proxy list next to `trust_any_proxy`) run once the whole document is read.

use std::collections::BTreeMap;

use ratelimit_core::config::ConfigError;
use ratelimit_core::{AlgorithmKind, PolicySet};
use serde::{Deserialize, Serialize};

use super::LayerConfig;
use crate::key::forwarded::ProxyNetworks;
use crate::key::Cidr;
use crate::OnFailure;

/// The document.
#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawLayerConfig {
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub(super) trust_any_proxy: bool,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub(super) trusted_proxies: Vec<String>,
    pub(super) default: Option<RawTier>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub(super) tiers: BTreeMap<String, RawTier>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) global_cap: Option<RawTier>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub(super) costs: BTreeMap<String, u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) on_store_error: Option<RawOnStoreError>,
}

/// `on_store_error`, in the names of ratelimit-core's `OnFailure`; `local` is read only to say where it
/// belongs.
#[derive(Debug, Clone, Copy, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub(super) enum RawOnStoreError {
    Allow,
    Error,
    Local,
}

impl RawOnStoreError {
    pub(super) fn from_action(action: OnFailure) -> Self {
        match action {
            OnFailure::Allow => RawOnStoreError::Allow,
            OnFailure::Local { .. } => RawOnStoreError::Local,
            // `OnFailure` may grow; what the layer does not know it treats as failing closed.
            _ => RawOnStoreError::Error,
        }
    }

    fn action(self) -> Result<OnFailure, ConfigError> {
        match self {
            RawOnStoreError::Allow => Ok(OnFailure::Allow),
            RawOnStoreError::Error => Ok(OnFailure::Error),
            RawOnStoreError::Local => Err(ConfigError::new(
                "on_store_error",
                "\"local\" (deciding in memory while Redis is away) is the Redis store's own setting, RedisStore's on_failure(OnFailure::Local { instances }): a layer over such a store sees decisions, not errors; here write \"allow\" (let requests through) or \"error\" (answer 503)",
            )),
        }
    }
}

/// A tier's table (and the default tier's, and the global cap's): `{ policies = [...] }`.
#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawTier {
    pub(super) policies: PolicySet,
}

/// The name the default tier goes by; no named tier may take it.
const DEFAULT_TIER: &str = "default";

/// Longest tier name: as long as a policy name may be (both show in logs).
const MAX_TIER_NAME_BYTES: usize = 64;

/// Longest route in `costs`: far beyond any route template, short enough to show in an error.
const MAX_ROUTE_BYTES: usize = 1024;

impl RawLayerConfig {
    /// Checks everything a single value's reader could not, naming the path of the first bad value.
    pub(super) fn validate(self) -> Result<LayerConfig, ConfigError> {
        let default = self.default.map(|t| t.policies).ok_or_else(|| {
            ConfigError::new(
                "default",
                "no default tier: add one for clients without a tier (and tiers not listed), e.g. [default] policies = [{ name = \"hourly\", rate = \"100/h\" }]",
            )
        })?;
        let tiers: BTreeMap<String, PolicySet> = self
            .tiers
            .into_iter()
            .map(|(name, t)| (name, t.policies))
            .collect();
        let global_cap = self.global_cap.map(|t| t.policies);
        for name in tiers.keys() {
            check_tier_name(name)?;
        }
        let sets = std::iter::once(("default".to_owned(), &default))
            .chain(tiers.iter().map(|(n, s)| (format!("tiers.{n}"), s)))
            .chain(global_cap.iter().map(|s| ("global_cap".to_owned(), s)));
        for (path, set) in sets {
            check_no_shaper(&path, set)?;
        }
        if let Some(cap) = &global_cap {
            check_cap_names(cap, &default, &tiers)?;
        }
        for (route, &cost) in &self.costs {
            check_cost(route, cost)?;
        }
        let trusted_proxies = proxies(&self.trusted_proxies)?;
        if self.trust_any_proxy && !trusted_proxies.as_slice().is_empty() {
            return Err(ConfigError::new(
                "trust_any_proxy",
                "trust_any_proxy = true takes every peer for a proxy, so trusted_proxies has nothing to add: keep one of them (the list, if you know your proxies' networks)",
            ));
        }
        let on_store_error = self
            .on_store_error
            .map(RawOnStoreError::action)
            .transpose()?;
        Ok(LayerConfig {
            default,
            tiers,
            global_cap,
            costs: self.costs,
            trusted_proxies,
            trust_any_proxy: self.trust_any_proxy,
            on_store_error,
        })
    }
}

fn check_tier_name(name: &str) -> Result<(), ConfigError> {
    let path = format!("tiers.{name}");
    let valid = (1..=MAX_TIER_NAME_BYTES).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.:/".contains(&b));
    if !valid {
        return Err(ConfigError::new(
            path,
            format!("tier name {name:?} is invalid: use 1 to {MAX_TIER_NAME_BYTES} characters from A-Z a-z 0-9 and - _ . : / (it appears in logs)"),
        ));
    }
    if name == DEFAULT_TIER {
        return Err(ConfigError::new(
            path,
            "\"default\" is the tier of clients without one: configure it in the top-level default table, and give this tier another name",
        ));
    }
    Ok(())
}

/// The layer admits or rejects; a shaper's delay would silently not happen.
fn check_no_shaper(path: &str, set: &PolicySet) -> Result<(), ConfigError> {
    let shaper = set
        .policies()
        .iter()
        .position(|p| matches!(p.algorithm().kind(), AlgorithmKind::Shaper { .. }));
    match shaper {
        None => Ok(()),
        Some(i) => Err(ConfigError::new(
            format!("{path}.policies[{i}].algorithm"),
            format!(
                "policy {:?} is a shaper, which delays requests, but this layer admits or rejects them: use algorithm = \"gcra\" or \"token_bucket\" for a limit with bursts",
                set.policies()[i].name()
            ),
        )),
    }
}

/// The global cap's policies and a tier's appear in one `RateLimit` header: a shared name would be
/// ambiguous there.
fn check_cap_names(
    cap: &PolicySet,
    default: &PolicySet,
    tiers: &BTreeMap<String, PolicySet>,
) -> Result<(), ConfigError> {
    let sets = std::iter::once(("default".to_owned(), default))
        .chain(tiers.iter().map(|(n, s)| (format!("tiers.{n}"), s)));
    for (where_, set) in sets {
        for (i, p) in cap.policies().iter().enumerate() {
            if set.policies().iter().any(|q| q.name() == p.name()) {
                return Err(ConfigError::new(
                    format!("global_cap.policies[{i}].name"),
                    format!(
                        "{:?} is also the name of a policy of {where_}: both appear in one RateLimit header, so rename one of them (e.g. \"global\")",
                        p.name()
                    ),
                ));
            }
        }
    }
    Ok(())
}

fn check_cost(route: &str, cost: u64) -> Result<(), ConfigError> {
    let path = format!("costs.{route}");
    let route_error = if route.len() > MAX_ROUTE_BYTES {
        Some(format!(
            "a route of {} bytes: routes are at most {MAX_ROUTE_BYTES}",
            route.len()
        ))
    } else if !route.starts_with('/') {
        Some(format!(
            "route {route:?} does not start with '/': write it as the router matches it, e.g. \"/{}\"",
            route.trim_start_matches('/')
        ))
    } else if let Some((path_part, _)) = route.split_once('?') {
        Some(format!(
            "route {route:?} has a query: a request is priced by its route alone, so write {path_part:?}"
        ))
    } else if route
        .bytes()
        .any(|b| b.is_ascii_whitespace() || b.is_ascii_control())
    {
        Some(format!(
            "route {route:?} holds a space or a control character, which no request path does: write the route as the router matches it"
        ))
    } else {
        None
    };
    if let Some(message) = route_error {
        return Err(ConfigError::new(path, message));
    }
    if cost == 0 {
        return Err(ConfigError::new(
            path,
            format!("a cost of 0 would make {route} free and unlimited: give a cost of at least 1, or remove the line (routes cost 1 unless listed)"),
        ));
    }
    Ok(())
}

/// Each network checked on its own, so that the error names its index.
fn proxies(list: &[String]) -> Result<ProxyNetworks, ConfigError> {
    let mut networks = Vec::with_capacity(list.len());
    for (i, text) in list.iter().enumerate() {
        let at = || format!("trusted_proxies[{i}]");
        let cidr: Cidr = text
            .parse()
            .map_err(|e: crate::key::CidrError| ConfigError::new(at(), e.to_string()))?;
        cidr.check_proxy_range()
            .map_err(|e| ConfigError::new(at(), e.to_string()))?;
        networks.push(cidr);
    }
    ProxyNetworks::new(networks).map_err(|e| ConfigError::new("trusted_proxies", e.to_string()))
}
