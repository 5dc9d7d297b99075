//! The public, point-in-time view of a limiter ([`Limiter::snapshot`](crate::Limiter::snapshot)): times
//! as [`Duration`]s and routes by their template, converted from the state machine's own view.

use std::time::Duration;

use super::state;
use crate::parse::micros;

/// A bucket as the status snapshot shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct BucketStatus {
    /// The counter's internal key (it starts with a credential digest), to correlate with `debug` logs.
    pub key: String,
    /// The upstream's name for it (Discord's bucket hash, GitHub's resource, an IETF policy), if known.
    pub hash: Option<String>,
    /// The major parameter it is counted for (a channel, guild or webhook id), empty when none.
    pub major: String,
    /// The upstream limit per window.
    pub limit: u64,
    /// Requests that may still be sent in this window.
    pub available: u64,
    /// Requests in flight.
    pub in_flight: u32,
    /// Time until the window resets, if known.
    pub reset_in: Option<Duration>,
    /// Route templates drawing on this counter, e.g. `POST /channels/{channel_id}/messages`.
    pub routes: Vec<String>,
}

/// A route as the status snapshot shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct RouteStatus {
    /// The method and route template, e.g. `POST /channels/{channel_id}/messages`.
    pub route: String,
    /// The major parameter.
    pub major: String,
    /// Requests waiting in its queues.
    pub queued: usize,
    /// Whether the route was found to have no per-route limit.
    pub unlimited: bool,
    /// Active sub-limits on this route.
    pub sublimits: usize,
}

/// A point-in-time view of the scheduler, for dashboards and debugging.
///
/// ```
/// use ratelimit_client::{profile::Discord, Limiter};
/// let snap = Limiter::new(Discord::new()).snapshot();
/// assert!(snap.buckets.is_empty() && snap.banned_for.is_none());
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Snapshot {
    /// Known counters.
    pub buckets: Vec<BucketStatus>,
    /// Known routes.
    pub routes: Vec<RouteStatus>,
    /// Requests sent under the global limit in the last window, per credential digest.
    pub global_used: Vec<(u64, u64)>,
    /// Credentials stopped after a 401.
    pub disabled_tokens: usize,
    /// Invalid responses counted in the current window.
    pub invalid_requests: usize,
    /// Time until the ban probe, when a ban is active.
    pub banned_for: Option<Duration>,
}

/// The template of an internal route key `token|template|major` (the key itself if it has another shape).
fn template(route_key: &str) -> &str {
    let mut parts = route_key.splitn(3, '|');
    match (parts.next(), parts.next()) {
        (Some(_token), Some(template)) => template,
        _ => route_key,
    }
}

/// The major of an internal counter key `token|#hash|major` or `token|=template|major`.
fn major(counter_key: &str) -> &str {
    counter_key.splitn(3, '|').nth(2).unwrap_or("")
}

impl Snapshot {
    pub(crate) fn from_state(s: state::Snapshot) -> Snapshot {
        Snapshot {
            buckets: s
                .buckets
                .into_iter()
                .map(|b| BucketStatus {
                    major: major(&b.key).to_owned(),
                    routes: b.routes.iter().map(|r| template(r).to_owned()).collect(),
                    key: b.key,
                    hash: b.hash,
                    limit: b.limit,
                    available: b.available,
                    in_flight: b.in_flight,
                    reset_in: b.reset_in.map(micros),
                })
                .collect(),
            routes: s
                .routes
                .into_iter()
                .map(|r| RouteStatus {
                    route: r.route,
                    major: r.major,
                    queued: r.queued,
                    unlimited: r.unlimited,
                    sublimits: r.sublimits,
                })
                .collect(),
            global_used: s.global_used,
            disabled_tokens: s.disabled_tokens,
            invalid_requests: s.invalid_requests,
            banned_for: s.banned_for.map(micros),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_are_shown_by_template_without_the_credential_digest() {
        assert_eq!(
            template("00000000000000ab|POST /channels/{channel_id}/messages|42"),
            "POST /channels/{channel_id}/messages"
        );
        assert_eq!(major("00000000000000ab|#abcd|42"), "42");
        assert_eq!(major("00000000000000ab|#abcd|"), "");
    }
}
