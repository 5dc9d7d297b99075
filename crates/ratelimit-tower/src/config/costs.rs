//! Route costs: what a request to a route is charged, from the `costs` table.

use std::collections::BTreeMap;

use crate::key::{RequestInfo, Route};

/// The cost of each listed route; every other route costs 1.
///
/// A request's route is its matched route template (axum's `MatchedPath`, or a
/// [`RouteTemplate`](crate::key::RouteTemplate) extension), else its path: `/v1/report?x=1` costs what
/// `/v1/report` costs, and a template such as `/users/{id}` prices every user alike.
///
/// ```
/// use ratelimit_tower::config::LayerConfig;
///
/// let json = r#"{ "default": { "policies": [{ "name": "hourly", "rate": "100/h" }] },
///                 "costs": { "/v1/report": 10 } }"#;
/// let config = LayerConfig::from_deserializer(&mut serde_json::Deserializer::from_str(json))?;
/// let costs = config.route_costs();
/// assert_eq!(costs.get("/v1/report"), 10);
/// assert_eq!(costs.get("/v1/hello"), 1);
/// # Ok::<(), ratelimit_tower::config::ConfigError>(())
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RouteCosts(BTreeMap<String, u64>);

impl RouteCosts {
    pub(super) fn new(costs: BTreeMap<String, u64>) -> Self {
        RouteCosts(costs)
    }

    /// What `req` costs: its route's cost, else 1. For [`RateLimitBuilder::cost_fn`](crate::RateLimitBuilder::cost_fn).
    #[inline]
    pub fn cost(&self, req: &RequestInfo<'_>) -> u64 {
        self.get(Route::template(req).unwrap_or_else(|| req.uri().path()))
    }

    /// What a request to `route` costs (1 unless listed).
    #[inline]
    pub fn get(&self, route: &str) -> u64 {
        self.0.get(route).copied().unwrap_or(1)
    }

    /// Whether no route has a cost of its own (every request costs 1).
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The listed routes and their costs, in route order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, u64)> {
        self.0.iter().map(|(r, c)| (r.as_str(), *c))
    }
}
