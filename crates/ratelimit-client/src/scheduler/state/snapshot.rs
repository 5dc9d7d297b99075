//! Point-in-time views of the scheduler: the public [`Snapshot`] for dashboards, [`Occupancy`] for telling
//! that a cancelled request left nothing behind.

use ratelimit_core::Micros;

use super::route::RouteState;
use super::{Core, SchedulerState};
use crate::parse::micros;
use crate::scheduler::{BucketStatus, RouteStatus, Snapshot};

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
        let invalid_requests = self.state.invalid_count(now, self.invalid_window);
        Snapshot {
            buckets: self
                .state
                .counters()
                .map(|(k, c)| BucketStatus {
                    key: k.to_string(),
                    hash: c.hash.as_ref().map(|h| h.to_string()),
                    major: major(k).to_owned(),
                    limit: c.limit,
                    available: c.available(now),
                    in_flight: c.in_flight,
                    reset_in: c.reset_at.map(|r| micros(r.saturating_sub(now))),
                    routes: c
                        .routes
                        .iter()
                        .map(|r| self.template(r).to_owned())
                        .collect(),
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
            banned_for: self.state.banned_for(now).map(micros),
        }
    }

    /// The template of a route key: the route's own copy, or the key without its credential digest when
    /// the route is gone.
    fn template<'k>(&'k self, route_key: &'k str) -> &'k str {
        match self.routes.get(route_key) {
            Some(r) => &r.template,
            None => route_key.split('|').nth(1).unwrap_or(route_key),
        }
    }
}

/// The major of a counter key `token|#hash|major` or `token|=template|major`.
fn major(counter_key: &str) -> &str {
    counter_key.splitn(3, '|').nth(2).unwrap_or("")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_counters_major_is_the_last_part_of_its_key_and_a_gone_routes_template_the_middle() {
        let core = Core::new(crate::scheduler::config::Config::default());
        assert_eq!(
            core.template("00000000000000ab|POST /channels/{channel_id}/messages|42"),
            "POST /channels/{channel_id}/messages"
        );
        assert_eq!(major("00000000000000ab|#abcd|42"), "42");
        assert_eq!(major("00000000000000ab|#abcd|"), "");
    }
}
