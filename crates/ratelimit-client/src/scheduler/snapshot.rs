//! The public, point-in-time view of a limiter ([`Limiter::snapshot`](crate::Limiter::snapshot)): times
//! as [`Duration`]s and routes by their template (the state machine builds it, in `state/snapshot.rs`).

use std::time::Duration;

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
