//! How logs and errors name routes and limits: in the caller's terms, a route by its method and template
//! (its major as a field of its own, when it has one) and a limit by the upstream's name for it; never by
//! the scheduler's internal keys, which begin with a credential digest.

use tracing::field::{display, DisplayValue};

/// The start of the name a counter is given when the responses that reveal it name no limit (the route's
/// template follows): it is the route's own.
pub(crate) const UNNAMED_LIMIT: &str = "route:";

/// A route's major as a log field: absent when the route has none.
pub(crate) fn major(major: &str) -> Option<DisplayValue<&str>> {
    (!major.is_empty()).then(|| display(major))
}

/// The upstream's name for a limit, from its counter's hash (`unnamed` when its responses give none).
pub(crate) fn limit(hash: &str) -> &str {
    if hash.starts_with(UNNAMED_LIMIT) {
        "unnamed"
    } else {
        hash
    }
}

/// A counter's hash as a log field.
pub(crate) fn limit_of(hash: Option<&str>) -> DisplayValue<&str> {
    display(hash.map_or("unnamed", limit))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_limit_without_an_upstream_name_is_called_unnamed_not_by_its_route() {
        assert_eq!(limit("route:GET /v1/items/{id}"), "unnamed");
        assert_eq!(limit("quota"), "quota");
        assert!(major("").is_none());
        assert_eq!(major("42").map(|m| m.to_string()), Some("42".to_owned()));
    }
}
