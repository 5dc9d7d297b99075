//! Point-in-time views of the scheduler: [`Snapshot`] for dashboards, [`Occupancy`] for telling that a
//! cancelled request left nothing behind.

use ratelimit_core::Micros;

use super::route::RouteState;
use super::{Core, SchedulerState};

/// A bucket as the status snapshot shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct BucketStatus {
    /// The counter's key (`token|#hash|major` or `token|=route|major`).
    pub key: String,
    /// The upstream's hash for it, if known.
    pub hash: Option<String>,
    /// The upstream limit per window.
    pub limit: u64,
    /// Requests that may still be sent in this window.
    pub available: u64,
    /// Requests in flight.
    pub in_flight: u32,
    /// Microseconds until the window resets, if known.
    pub reset_in: Option<Micros>,
    /// Routes linked to this counter.
    pub routes: Vec<String>,
}

/// A route as the status snapshot shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct RouteStatus {
    /// The route key (method and template).
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
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Snapshot {
    /// Known counters.
    pub buckets: Vec<BucketStatus>,
    /// Known routes.
    pub routes: Vec<RouteStatus>,
    /// Requests sent under the global limit in the last window, per token digest.
    pub global_used: Vec<(u64, u64)>,
    /// Tokens stopped after a 401.
    pub disabled_tokens: usize,
    /// Invalid responses counted in the current window.
    pub invalid_requests: usize,
    /// Time until the ban probe, when a ban is active.
    pub banned_for: Option<Micros>,
}

/// What requests in progress hold in the scheduler: in-flight counts, queue positions, global-slot waits
/// and reservations, probes. All zero when no request is in progress, so a test (or a health check) can
/// tell that a cancelled request left nothing behind.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Occupancy {
    /// Admissions in flight, summed over counters (one request counts once per counter it draws on).
    pub in_flight: u64,
    /// Admissions in flight under the global limit, summed over tokens.
    pub global_in_flight: u64,
    /// Requests queued on routes.
    pub queued: usize,
    /// Queue heads waiting for a global slot.
    pub global_waiting: usize,
    /// Global slots set aside for routes (reservations), and routes holding one.
    pub global_reserved: usize,
    /// Calls held back by a reservation.
    pub held: usize,
    /// Probes in flight: on unknown routes, and the ban probe.
    pub probes_in_flight: usize,
}

impl Occupancy {
    /// True when nothing is held: no request is admitted, queued or waiting.
    ///
    /// ```
    /// use ratelimit_client::{profile::Discord, Limiter};
    /// assert!(Limiter::new(Discord::new()).occupancy().is_idle());
    /// ```
    pub fn is_idle(&self) -> bool {
        *self == Occupancy::default()
    }
}

impl<S: SchedulerState> Core<S> {
    pub(crate) fn occupancy(&self) -> Occupancy {
        let waiters = self.global_waiters.values();
        Occupancy {
            in_flight: self
                .state
                .counters()
                .map(|(_, c)| u64::from(c.in_flight))
                .sum(),
            global_in_flight: self.state.global_in_flight(),
            queued: self
                .queued
                .max(self.routes.values().map(RouteState::queued).sum()),
            global_waiting: waiters.clone().map(|w| w.waiting.len()).sum(),
            global_reserved: self.state.reservation_count()
                + self.routes.values().filter(|r| r.reserve.is_some()).count(),
            held: waiters.map(|w| w.held.len()).sum(),
            probes_in_flight: self.routes.values().filter(|r| r.probe_in_flight).count()
                + usize::from(self.state.ban_probe_in_flight()),
        }
    }

    pub(crate) fn snapshot(&mut self, now: Micros) -> Snapshot {
        let invalid_requests = self.state.invalid_count(now, self.cfg.invalid.window);
        Snapshot {
            buckets: self
                .state
                .counters()
                .map(|(k, c)| BucketStatus {
                    key: k.to_string(),
                    hash: c.hash.as_ref().map(|h| h.to_string()),
                    limit: c.limit,
                    available: c.available(now),
                    in_flight: c.in_flight,
                    reset_in: c.reset_at.map(|r| r.saturating_sub(now)),
                    routes: c.routes.iter().map(|r| r.to_string()).collect(),
                })
                .collect(),
            routes: self
                .routes
                .values()
                .map(|r| RouteStatus {
                    route: r.template.to_string(),
                    major: r.major.to_string(),
                    queued: r.queued(),
                    unlimited: r.unlimited,
                    sublimits: r.active_sublimits(now),
                })
                .collect(),
            global_used: self.state.global_use(now, self.global_window),
            disabled_tokens: self.state.disabled_tokens(),
            invalid_requests,
            banned_for: self.state.banned_for(now),
        }
    }
}
