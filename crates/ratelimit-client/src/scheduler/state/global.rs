//! The token's global limit at admission: who gets the next slot, and slots set aside for routes about to
//! reset.
//!
//! Slots go to the oldest waiting call (FIFO across routes), except that a route with more than one global
//! window of work queued beyond an older call's goes first; and a route waiting for its bucket to reset
//! gets slots set aside (a [`Reservation`]) so that routes nearer to finishing do not take them. Nobody is
//! held back by reservations for longer than one window. The run ends when its longest queue does, so
//! serving the longest remaining work first shortens it.

use std::collections::BTreeMap;
use std::sync::Arc;

use ratelimit_core::Micros;
use tokio::sync::Notify;

use super::route::RouteState;
use super::ticket::{Step, Ticket, WaiterId, FAST_PATH};
use super::{Core, HashMap, SchedulerState};

/// Reservations and waiting calls looked at per admission at most (the scan stays cheap with long
/// backlogs).
pub(super) const RESERVATION_SCAN: usize = 256;

/// How soon a call that yielded its slot to an older waiting call looks again, in case that call has
/// gone (its wake-up is not guaranteed: it may have been cancelled).
const YIELD_RECHECK: Micros = 2_000;

/// The soonest a call held back by reservations looks again (it is not queued for a slot, so it polls).
const HELD_RECHECK: Micros = 1_000;

/// Held-back calls kept per token before the oldest records are pruned; a call stays held at most one
/// window, so records older than [`HELD_RECORD_WINDOWS`] windows belong to calls that are gone.
const HELD_BEFORE_PRUNING: usize = 1024;
const HELD_RECORD_WINDOWS: u64 = 4;

/// Global slots a route will need when its bucket resets.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Reservation {
    pub(crate) ready_at: Micros,
    pub(crate) count: u32,
    /// When the route's queue could be done at the earliest, its bucket allowing: routes that will take
    /// longest go first (the longest-remaining-work rule, which shortens the whole run).
    pub(crate) finish: Micros,
}

/// This process's calls waiting on one token's global limit.
#[derive(Debug, Default)]
pub(super) struct GlobalWaiters {
    /// Route heads ready but for the global limit, by call arrival order (FIFO across routes), each with
    /// its route's projected finish (see [`projected`]).
    pub(super) waiting: BTreeMap<u64, (WaiterId, Arc<Notify>, Micros)>,
    /// Calls held back by reservations, and since when: none is held back longer than one global window.
    pub(super) held: HashMap<u64, Micros>,
}

impl GlobalWaiters {
    /// A queue head left (admitted elsewhere, or gone): the next waiting call may take the slot.
    pub(super) fn leave(&mut self, id: WaiterId) {
        let before = self.waiting.len();
        self.waiting.retain(|_, w| w.0 != id);
        if self.waiting.len() != before {
            self.wake_first();
        }
    }

    pub(super) fn wake_first(&self) {
        if let Some((_, (_, n, _))) = self.waiting.first_key_value() {
            n.notify_one();
        }
    }

    /// Records that call `seq` is held back by reservations (since its first time), pruning records of
    /// calls long gone.
    fn hold(&mut self, seq: u64, now: Micros, window: Micros) {
        if self.held.len() > HELD_BEFORE_PRUNING {
            self.held
                .retain(|_, since| since.saturating_add(HELD_RECORD_WINDOWS * window) > now);
        }
        self.held.entry(seq).or_insert(now);
    }
}

/// When a route's queue could be done at the earliest if it may start at `from`: one window of its
/// tightest counter per `limit` requests queued, after the first.
pub(super) fn projected<S: SchedulerState>(route: &RouteState, state: &S, from: Micros) -> Micros {
    let queued = route.queued().max(1) as u64;
    route
        .counters
        .iter()
        .filter_map(|k| state.counter(k))
        .map(|c| {
            let windows = queued.div_ceil(c.limit.max(1)) - 1;
            from.saturating_add(c.period.saturating_mul(windows))
        })
        .max()
        .unwrap_or(from)
}

/// What the reservations ahead of a call hold: the slots, and the earliest moment one of them is used.
struct Ahead {
    slots: u64,
    earliest: Micros,
}

impl<S: SchedulerState> Core<S> {
    /// The global step of admission for waiter `id`: `None` when a slot was taken (or none is needed),
    /// otherwise the wait.
    pub(super) fn global_step(&mut self, id: WaiterId, t: &Ticket, now: Micros) -> Option<Step> {
        if t.global_exempt {
            return None;
        }
        let locked_until = self.state.global_locked_until(t.token);
        if locked_until > now {
            return Some(Step::wait(Some(locked_until), "global"));
        }
        let n = u64::from(self.cfg.global_limit?);
        let window = self.global_window;
        // This route's reservation and projected finish: looked up only when others wait or reserve.
        let others = self
            .global_waiters
            .get(&t.token)
            .is_some_and(|w| !w.waiting.is_empty())
            || self.state.has_reservations(t.token);
        let (own, own_finish) = if others {
            self.routes
                .get(&t.route_key)
                .map_or((None, now), |r| (r.reserve, projected(r, &self.state, now)))
        } else {
            (None, now)
        };
        let used = self.state.global_used(t.token, now, window);
        if used >= n {
            return Some(self.wait_for_slot(id, t, now));
        }
        if self.older_call_waits(id, t, own_finish) {
            return Some(self.yield_slot(id, t, now, own_finish));
        }
        let held_since = self
            .global_waiters
            .get(&t.token)
            .and_then(|w| w.held.get(&t.seq).copied())
            .unwrap_or(now);
        let ahead = self.reserved_ahead(t, own, own_finish, used, held_since, now);
        if used + ahead.slots >= n {
            return Some(self.hold_back(t, ahead, held_since, now));
        }
        self.take_slot(t, used, n);
        None
    }

    /// No slot is free: the call queues for one, in arrival order.
    fn wait_for_slot(&mut self, id: WaiterId, t: &Ticket, now: Micros) -> Step {
        let window = self.global_window;
        if let Some(route) = self.routes.get(&t.route_key) {
            if let Some(notify) = route.head().map(|h| h.1.clone()) {
                let finish = projected(route, &self.state, now);
                self.global_waiters
                    .entry(t.token)
                    .or_default()
                    .waiting
                    .insert(t.seq, (id, notify, finish));
            }
        }
        let until = self.state.global_next_free(t.token, now, window);
        Step::wait(Some(until.max(now + 1)), "global")
    }

    /// Whether an older call waits for a slot and this route is not more than a window of work further
    /// from finishing than it (then it would end the run last if it waited its turn).
    fn older_call_waits(&self, id: WaiterId, t: &Ticket, own_finish: Micros) -> bool {
        let window = self.global_window;
        self.global_waiters.get(&t.token).is_some_and(|w| {
            w.waiting
                .range(..t.seq)
                .take(RESERVATION_SCAN)
                .any(|(_, o)| o.0 != id && o.2.saturating_add(window) >= own_finish)
        })
    }

    /// The free slot goes to an older waiting call: this one queues behind it and polls again shortly in
    /// case it has gone.
    fn yield_slot(&mut self, id: WaiterId, t: &Ticket, now: Micros, own_finish: Micros) -> Step {
        let notify = self
            .routes
            .get(&t.route_key)
            .and_then(|r| r.head().map(|h| h.1.clone()));
        let waiters = self.global_waiters.entry(t.token).or_default();
        if let Some(notify) = notify {
            waiters.waiting.insert(t.seq, (id, notify, own_finish));
        }
        waiters.wake_first();
        Step::wait(Some(now + YIELD_RECHECK), "global")
    }

    /// The slots that reservations of routes further from finishing than this one set aside, for buckets
    /// resetting before a slot taken now would free (only while the global limit is what binds). A call
    /// held back for a whole window looks at none.
    fn reserved_ahead(
        &self,
        t: &Ticket,
        own: Option<u64>,
        own_finish: Micros,
        used: u64,
        held_since: Micros,
        now: Micros,
    ) -> Ahead {
        let window = self.global_window;
        let n = self.cfg.global_limit.map_or(0, u64::from);
        let patient = held_since.saturating_add(window) > now;
        let mut ahead = Ahead {
            slots: 0,
            earliest: Micros::MAX,
        };
        for (k, r) in
            self.state
                .reservations(t.token)
                .take(if patient { RESERVATION_SCAN } else { 0 })
        {
            let stale = r.ready_at.saturating_add(window) < now;
            let further = r.finish > own_finish || (r.finish == own_finish && k < t.seq);
            if Some(k) == own || !further || stale || r.ready_at > now.saturating_add(window) {
                continue;
            }
            ahead.slots += u64::from(r.count);
            ahead.earliest = ahead.earliest.min(r.ready_at);
            if used + ahead.slots >= n {
                break;
            }
        }
        ahead
    }

    /// Reservations take the remaining slots: the call is not queued for a slot (that queue is FIFO and
    /// would hold back routes ahead of this one); it looks again when a reservation or a slot may have
    /// cleared, and at the latest when it has been held back for a window.
    fn hold_back(&mut self, t: &Ticket, ahead: Ahead, held_since: Micros, now: Micros) -> Step {
        let window = self.global_window;
        self.global_waiters
            .entry(t.token)
            .or_default()
            .hold(t.seq, now, window);
        let free = self.state.global_next_free(t.token, now, window);
        let until = ahead
            .earliest
            .min(free)
            .min(held_since.saturating_add(window))
            .max(now + HELD_RECHECK);
        Step::wait(Some(until), "global (reserved for older requests)")
    }

    /// Takes a slot (`used` were in use): the call no longer waits nor is held back; the next waiting call
    /// is woken if slots remain.
    fn take_slot(&mut self, t: &Ticket, used: u64, n: u64) {
        self.state.global_take(t.token);
        let used = used + 1;
        metrics::gauge!("ratelimit_client_global_used").set(used as f64 / n as f64);
        if let Some(waiters) = self.global_waiters.get_mut(&t.token) {
            waiters.waiting.remove(&t.seq);
            if !waiters.held.is_empty() {
                waiters.held.remove(&t.seq);
            }
            if used < n {
                waiters.wake_first();
            }
        }
    }

    /// Sets global slots aside for a route head waiting for its bucket until `ready_at`: as many as will
    /// go then (the queue, up to the smallest limit of the route's counters).
    pub(super) fn reserve(&mut self, t: &Ticket, ready_at: Micros, now: Micros) {
        let Some(route) = self.routes.get_mut(&t.route_key) else {
            return;
        };
        let limit = route
            .counters
            .iter()
            .filter_map(|k| self.state.counter(k))
            .map(|c| c.limit)
            .min()
            .unwrap_or(1);
        let count = u32::try_from(limit.min(route.queued() as u64)).unwrap_or(u32::MAX);
        let finish = projected(route, &self.state, ready_at);
        let key = *route.reserve.get_or_insert(t.seq);
        let r = Reservation {
            ready_at,
            count,
            finish,
        };
        self.state.reserve(t.token, key, r, now, self.global_window);
    }

    /// A bucket holds the head back until `until`: it leaves the global queue, and when the global limit
    /// binds, slots are set aside for the moment its bucket resets.
    pub(super) fn wait_for_bucket(
        &mut self,
        id: WaiterId,
        t: &Ticket,
        until: Option<Micros>,
        now: Micros,
    ) {
        if let Some(w) = self.global_waiters.get_mut(&t.token) {
            w.leave(id);
        }
        if let (Some(ready_at), false, Some(_), false) = (
            until,
            t.global_exempt,
            self.cfg.global_limit,
            id == FAST_PATH,
        ) {
            self.reserve(t, ready_at, now);
        }
    }
}

/// An admitted route used one of its reserved slots; the reservation goes when it is spent or the queue is
/// empty.
pub(super) fn spend_reservation<S: SchedulerState>(
    route: &mut RouteState,
    state: &mut S,
    token: u64,
) {
    if let Some(k) = route.reserve {
        let left = state.use_reservation(token, k);
        if left == 0 || route.queued() == 0 {
            state.unreserve(token, k);
            route.reserve = None;
        }
    }
}
