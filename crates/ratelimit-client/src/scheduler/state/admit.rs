//! One admission attempt: the safety checks, the route's queue, its counters, the global limit, in that
//! order; then what an admitted request takes.

use std::sync::Arc;

use ratelimit_core::Micros;

use super::evidence::Early;
use super::global::spend_reservation;
use super::route::RouteState;
use super::ticket::{Grant, Step, Ticket, WaiterId};
use super::{Core, SchedulerState};

/// Why the route holds a request before its counters are looked at.
enum Gate {
    Sublimit,
    Wait(Option<Micros>, &'static str),
}

impl RouteState {
    /// The route's own conditions: no sub-limit holds the request, it is next in its queue, the route is not
    /// blocked, and no probe is out on a route that still needs one. `Ok(probe)`: whether it is the probe.
    /// A request a sub-limit holds leaves the queue (`queued` is the scheduler's total).
    fn gate(
        &mut self,
        id: WaiterId,
        t: &Ticket,
        now: Micros,
        queued: &mut usize,
    ) -> Result<bool, Gate> {
        if self.sublimit_until(t.fingerprint, now).is_some() {
            if self.remove(id) {
                *queued -= 1;
            }
            self.wake_head();
            return Err(Gate::Sublimit);
        }
        if !self.is_next(id) {
            return Err(Gate::Wait(None, ""));
        }
        if self.blocked_until > now {
            return Err(Gate::Wait(Some(self.blocked_until), ""));
        }
        let probe = !self.unlimited && self.counters.is_empty();
        if probe && self.probe_in_flight {
            return Err(Gate::Wait(None, " (probing)"));
        }
        Ok(probe)
    }
}

/// The latest wait any of the route's counters imposes (a wait until notified gives way to any known
/// moment), and the counter that imposes it. Rolls windows that have ended.
fn bucket_wait<S: SchedulerState>(
    counters: &[Arc<str>],
    state: &mut S,
    now: Micros,
    early: &Early,
) -> Option<(Option<Micros>, Arc<str>)> {
    let mut wait: Option<(Option<Micros>, Arc<str>)> = None;
    for key in counters {
        let Some(until) = state.counter_mut(key).and_then(|c| c.wait(now, early)) else {
            continue;
        };
        let later = match (&wait, until) {
            (None, _) => true,
            (Some((Some(a), _)), Some(b)) => b > *a,
            (Some((None, _)), Some(_)) => true,
            _ => false,
        };
        if later {
            wait = Some((until, key.clone()));
        }
    }
    wait
}

impl<S: SchedulerState> Core<S> {
    /// One admission attempt for waiter `id` (or [`FAST_PATH`](super::FAST_PATH) for a call that holds no
    /// queue position).
    pub(crate) fn try_admit(&mut self, id: WaiterId, t: &Ticket, now: Micros) -> Step {
        let ban_probe = match self.safety_check(t.token, t.lane, now) {
            Ok(ban_probe) => ban_probe,
            Err(e) => return Step::Fail(e),
        };
        let early = self.early();
        let Some(route) = self.routes.get_mut(&t.route_key) else {
            return Step::wait(Some(now), &*t.route_key);
        };
        let probe = match route.gate(id, t, now, &mut self.queued) {
            Ok(probe) => probe,
            Err(Gate::Sublimit) => return Step::Sublimit,
            Err(Gate::Wait(until, what)) => {
                return Step::wait(until, format!("{}{what}", t.route_key))
            }
        };
        if let Some((until, bucket)) = bucket_wait(&route.counters, &mut self.state, now, &early) {
            self.wait_for_bucket(id, t, until, now);
            return Step::wait(until, &*bucket);
        }
        // The token's global limit, checked last so that its slots are only spent on admissions.
        if let Some(step) = self.global_step(id, t, now) {
            return step;
        }
        self.admit(id, t, now, probe, ban_probe)
    }

    /// Admits the request: it leaves the queue (waking the next head), spends a reserved slot if its route
    /// had one, and draws one admission from each of its route's counters.
    fn admit(
        &mut self,
        id: WaiterId,
        t: &Ticket,
        now: Micros,
        probe: bool,
        ban_probe: bool,
    ) -> Step {
        let Some(route) = self.routes.get_mut(&t.route_key) else {
            return Step::wait(Some(now), &*t.route_key);
        };
        if route.remove(id) {
            self.queued -= 1;
        }
        route.wake_head();
        route.last_used = now;
        if probe {
            route.probe_in_flight = true;
        }
        if t.fingerprint != 0 {
            route.admitted_shape(t.fingerprint, now);
        }
        // Others of the route waiting or in flight: a sub-limit could refuse one of them, and this
        // request's success would then be its evidence (its body shape is read when it succeeds).
        let busy = probe
            || route.queued() > 0
            || route
                .counters
                .iter()
                .any(|k| self.state.counter(k).is_some_and(|c| c.in_flight > 0));
        spend_reservation(route, &mut self.state, t.token);
        let mut counters = Vec::with_capacity(route.counters.len());
        for key in &route.counters {
            if let Some(c) = self.state.counter_mut(key) {
                counters.push(c.take(key, now));
            }
        }
        if ban_probe {
            self.state.start_ban_probe();
        }
        Step::Admit(Grant {
            route_key: t.route_key.clone(),
            template: t.template.clone(),
            token: t.token,
            counters,
            probe,
            ban_probe,
            global: !t.global_exempt && self.cfg.global_limit.is_some(),
            sent_at: now,
            fingerprint: t.fingerprint,
            busy,
        })
    }
}
