//! Quotas, policies and policy sets from configuration files (feature `serde`): TOML, JSON, YAML or
//! anything else serde reads.
//!
//! ```
//! use ratelimit_core::{config, PolicySet};
//!
//! #[derive(serde::Deserialize)]
//! struct Limits {
//!     api: PolicySet,
//! }
//!
//! let json = r#"{ "api": [
//!     { "name": "burst", "algorithm": "gcra", "rate": "10/s", "burst": 20 },
//!     { "name": "daily", "algorithm": "fixed_window", "limit": 10000, "per": "1d" }
//! ] }"#;
//! let limits: Limits = config::from_deserializer(&mut serde_json::Deserializer::from_str(json))?;
//! assert_eq!(limits.api.len(), 2);
//!
//! let bad = r#"{ "api": [{ "name": "burst", "rate": "10/fortnight" }] }"#;
//! let Err(err) = config::from_deserializer::<Limits, _>(&mut serde_json::Deserializer::from_str(bad))
//! else {
//!     panic!("a fortnight is not a period");
//! };
//! assert_eq!(err.path(), "api[0].rate");
//! assert!(err.to_string().starts_with("api[0].rate: \"10/fortnight\""));
//! # Ok::<(), config::ConfigError>(())
//! ```
//!
//! # Schema
//!
//! | value | written as | examples |
//! |---|---|---|
//! | period | a number and a unit (`us`, `ms`, `s`, `m`, `h`, `d`, or `second`, `minutes`, …); a bare unit is one of it | `"500ms"`, `"10s"`, `"1h"`, `"day"` |
//! | [`Quota`] | `"limit/period"`, or a table `{ limit, per, burst }` (`burst` defaults to `limit`) | `"100/h"`, `"10/30s"`, `{ limit = 100, per = "1h", burst = 200 }` |
//! | [`Policy`] | a table `{ name, algorithm, rate \| limit + per, burst, max_delay, penalise }` | `{ name = "hourly", algorithm = "gcra", rate = "100/h", burst = 200 }` |
//! | [`PolicySet`] | a non-empty list of policies with unique names, checked all-or-nothing | `[{ name = "burst", rate = "10/s" }, { name = "daily", algorithm = "fixed_window", rate = "10000/d" }]` |
//!
//! A policy's `algorithm` is one of `gcra` (the default), `token_bucket`, `leaky_bucket`, `shaper` (which
//! needs `max_delay`), `fixed_window`, `sliding_log` and `sliding_window`; the window algorithms take no
//! `burst`. `penalise = true` makes refused requests count too. Unknown fields are refused (a typo is an
//! error, not a silently ignored setting), and every value is validated as the builders validate it.
//!
//! Everything serializes back to the same schema ([`Quota`] as `"limit/period"` when its burst is its limit),
//! so a configuration round-trips.
//!
//! # Errors
//!
//! Deserialize through [`from_deserializer`] and an error names the path of the bad value and what to
//! write instead: `tiers.free.policies[0].per: "10x" is not a period: write a number and a unit (us, ms, s,
//! m, h, d), e.g. "1h" or "10s"`. Deserializing with serde directly gives the same message without the
//! path.
//!
//! [`Quota`]: crate::Quota
//! [`Policy`]: crate::Policy
//! [`PolicySet`]: crate::PolicySet

mod period;
mod policy;
mod quota;

pub use period::{format_period, parse_period, Period, PeriodError};

use serde::Deserialize;

/// A configuration value that could not be used: where it is (`tiers.free.policies[0].per`) and what to
/// change.
#[derive(Debug, thiserror::Error)]
#[error("{path}: {message}")]
pub struct ConfigError {
    path: String,
    message: String,
}

impl ConfigError {
    /// A configuration error at `path` (dotted keys, `[i]` for list items; empty for the whole document).
    pub fn new(path: impl Into<String>, message: impl Into<String>) -> Self {
        ConfigError {
            path: path.into(),
            message: message.into(),
        }
    }

    /// Where the bad value is, e.g. `tiers.free.policies[0].per` (`.` for the document itself).
    pub fn path(&self) -> &str {
        &self.path
    }

    /// What is wrong and what to write instead.
    pub fn message(&self) -> &str {
        &self.message
    }
}

/// Deserializes `T` from any serde deserializer (`toml::Deserializer`, `serde_json::Deserializer`,
/// `serde_yaml::Deserializer`, …), naming the path of the bad value in an error.
pub fn from_deserializer<'de, T, D>(deserializer: D) -> Result<T, ConfigError>
where
    T: Deserialize<'de>,
    D: serde::Deserializer<'de>,
{
    serde_path_to_error::deserialize(deserializer).map_err(|e| {
        let path = e.path().to_string();
        ConfigError::new(path, e.into_inner().to_string())
    })
}
