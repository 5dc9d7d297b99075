//! A [`Quota`] in configuration: `"100/h"`, `"10/30s"`, or `{ limit = 100, per = "1h", burst = 200 }`.

use std::fmt;

use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde::ser::SerializeMap;
use serde::{Deserialize, Serialize, Serializer};

use super::period::{format_period, parse_period, Period};
use crate::quota::Quota;

/// A quota's table form.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct QuotaTable {
    limit: u64,
    per: Period,
    burst: Option<u64>,
}

impl QuotaTable {
    fn build<E: de::Error>(self) -> Result<Quota, E> {
        let mut quota = Quota::new(self.limit, self.per.0);
        if let Some(burst) = self.burst {
            quota = quota.burst(burst);
        }
        quota.build().map_err(E::custom)
    }
}

/// Reads `"limit/period"`: `"100/h"`, `"100/1h"`, `"10/30s"`.
fn parse_rate<E: de::Error>(text: &str) -> Result<Quota, E> {
    let Some((limit, per)) = text.split_once('/') else {
        return Err(E::custom(format!(
            "{text:?} is not a rate: write limit/period, e.g. \"100/h\" or \"10/30s\", or a table {{ limit = 100, per = \"1h\", burst = 200 }}"
        )));
    };
    let limit: u64 = limit.trim().parse().map_err(|_| {
        E::custom(format!(
            "{text:?}: {:?} is not a whole number of units: write e.g. \"100/h\"",
            limit.trim()
        ))
    })?;
    let period = parse_period(per).map_err(|e| E::custom(format!("{text:?}: {e}")))?;
    Quota::new(limit, period).build().map_err(E::custom)
}

impl<'de> Deserialize<'de> for Quota {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct QuotaVisitor;
        impl<'de> Visitor<'de> for QuotaVisitor {
            type Value = Quota;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a rate such as \"100/h\", or a table { limit, per, burst }")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Quota, E> {
                parse_rate(v)
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Quota, A::Error> {
                QuotaTable::deserialize(de::value::MapAccessDeserializer::new(map))?.build()
            }
        }
        deserializer.deserialize_any(QuotaVisitor)
    }
}

/// A quota whose burst is its limit is written as a rate (`"100/1h"`), one with its own burst as a table.
impl Serialize for Quota {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let per = format_period(self.period());
        if !self.has_custom_burst() {
            return serializer.serialize_str(&format!("{}/{per}", self.limit()));
        }
        let mut map = serializer.serialize_map(Some(3))?;
        map.serialize_entry("limit", &self.limit())?;
        map.serialize_entry("per", &per)?;
        map.serialize_entry("burst", &self.burst())?;
        map.end()
    }
}
