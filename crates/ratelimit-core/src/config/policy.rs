//! A [`Policy`] in configuration, and a [`PolicySet`] as a list of them.

use serde::de::{self, Deserializer};
use serde::ser::SerializeMap;
use serde::{Deserialize, Serialize, Serializer};

use super::period::{format_period, Period};
use crate::policy::{AlgorithmKind, Policy, PolicySet};
use crate::quota::Quota;

/// A policy's table form: `{ name, algorithm, rate | limit + per, burst, max_delay, penalise }`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PolicyTable {
    name: String,
    #[serde(default = "default_algorithm")]
    algorithm: String,
    rate: Option<Quota>,
    limit: Option<u64>,
    per: Option<Period>,
    burst: Option<u64>,
    max_delay: Option<Period>,
    #[serde(default)]
    penalise: bool,
}

fn default_algorithm() -> String {
    "gcra".to_owned()
}

impl PolicyTable {
    fn build<E: de::Error>(self) -> Result<Policy, E> {
        let kind = self.kind()?;
        let quota = self.quota()?;
        Policy::new(&self.name, kind, quota)
            .map(|p| p.penalise(self.penalise))
            .map_err(E::custom)
    }

    fn kind<E: de::Error>(&self) -> Result<AlgorithmKind, E> {
        let kind: AlgorithmKind = self.algorithm.parse().map_err(E::custom)?;
        match (kind, self.max_delay) {
            (AlgorithmKind::Shaper { .. }, Some(delay)) => Ok(AlgorithmKind::Shaper {
                max_delay: delay.0,
            }),
            (AlgorithmKind::Shaper { .. }, None) => Err(E::custom(
                "algorithm \"shaper\" needs max_delay, the longest it may delay a request, e.g. max_delay = \"1s\"",
            )),
            (_, Some(_)) => Err(E::custom(format!(
                "max_delay applies to algorithm \"shaper\" only: remove it from this {} policy",
                self.algorithm
            ))),
            (kind, None) => Ok(kind),
        }
    }

    /// Exactly one of `rate` and `limit` + `per`; `burst` on top of either.
    fn quota<E: de::Error>(&self) -> Result<Quota, E> {
        let base = match (self.rate, self.limit, self.per) {
            (Some(rate), None, None) => Quota::new(rate.limit(), rate.period()),
            (None, Some(limit), Some(per)) => Quota::new(limit, per.0),
            (None, None, None) => {
                return Err(E::custom(
                    "no quota: give rate = \"100/h\", or limit = 100 and per = \"1h\"",
                ))
            }
            (None, Some(_), None) => {
                return Err(E::custom(
                    "limit without per: add per = \"1h\" (or whatever the period is)",
                ))
            }
            (None, None, Some(_)) => {
                return Err(E::custom(
                    "per without limit: add limit = <units per period>",
                ))
            }
            (Some(_), _, _) => return Err(E::custom("both rate and limit/per: keep one of them")),
        };
        let burst = self
            .burst
            .or(self.rate.filter(Quota::has_custom_burst).map(|r| r.burst()));
        match burst {
            Some(b) => base.burst(b),
            None => base,
        }
        .build()
        .map_err(E::custom)
    }
}

impl<'de> Deserialize<'de> for Policy {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        PolicyTable::deserialize(deserializer)?.build()
    }
}

/// Written as a table with `limit` and `per` (and `burst` when it differs from the limit), so it reads
/// back the same.
impl Serialize for Policy {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let quota = self.quota();
        let mut map = serializer.serialize_map(None)?;
        map.serialize_entry("name", self.name())?;
        map.serialize_entry("algorithm", self.algorithm().kind().name())?;
        map.serialize_entry("limit", &quota.limit())?;
        map.serialize_entry("per", &format_period(quota.period()))?;
        if quota.has_custom_burst() {
            map.serialize_entry("burst", &quota.burst())?;
        }
        if let AlgorithmKind::Shaper { max_delay } = self.algorithm().kind() {
            map.serialize_entry("max_delay", &format_period(max_delay))?;
        }
        if self.penalises() {
            map.serialize_entry("penalise", &true)?;
        }
        map.end()
    }
}

/// A list of policies, checked all-or-nothing; names must be unique, and an empty list limits nothing, so
/// it is refused.
impl<'de> Deserialize<'de> for PolicySet {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let policies = Vec::<Policy>::deserialize(deserializer)?;
        if policies.is_empty() {
            return Err(de::Error::custom(
                "an empty list limits nothing: give at least one policy, e.g. [{ name = \"hourly\", rate = \"100/h\" }]",
            ));
        }
        PolicySet::new(policies).map_err(de::Error::custom)
    }
}

impl Serialize for PolicySet {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_seq(self.policies())
    }
}
