//! Routes (`token × route key × major`): their FIFO lanes of waiting requests, the counters they draw
//! on, and the hidden sub-limits that hold some of their requests in a lane of their own.

use std::collections::VecDeque;
use std::sync::Arc;

use ratelimit_core::Micros;
use tokio::sync::Notify;

use super::sublimit::Sublimit;
use super::ticket::{Ticket, WaiterId};
use super::{Core, SchedulerState};
use crate::profile::Lane;

/// Sub-limits kept per route: one per body shape the upstream refused; the body shapes a route sees are
/// few, and anything past this waits in the route's queue like other requests.
const MAX_SUBLIMITS_PER_ROUTE: usize = 16;

/// Successes with a known body shape kept per route, the evidence of how many requests a sub-limit's
/// window takes when it first refuses; a sub-window takes few (Discord's renames: 2).
const SUCCESSES_KEPT: usize = 16;

/// One route's state in this process.
#[derive(Debug)]
pub(super) struct RouteState {
    pub(super) token: u64,
    pub(super) template: Arc<str>,
    pub(super) major: Arc<str>,
    /// The counters its responses named (more than one for layered limits).
    pub(super) counters: Vec<Arc<str>>,
    /// Its responses name no bucket: only the global limit applies.
    pub(super) unlimited: bool,
    pub(super) probe_in_flight: bool,
    /// A 429 on a route with no known counter blocks the route itself.
    pub(super) blocked_until: Micros,
    pub(super) queue: [VecDeque<(WaiterId, Arc<Notify>)>; Lane::COUNT],
    /// Hidden sub-limits, one per body fingerprint refused.
    pub(super) sublimits: Vec<Sublimit>,
    /// Recent successes with a known body fingerprint: `(fingerprint, sent, read)`, oldest first.
    successes: VecDeque<(u64, Micros, Micros)>,
    pub(super) last_used: Micros,
    /// This route's entry in its token's global reservations.
    pub(super) reserve: Option<u64>,
}

impl RouteState {
    fn new(t: &Ticket, counters: Vec<Arc<str>>, now: Micros) -> Self {
        RouteState {
            token: t.token,
            template: t.template().into(),
            major: t.major().into(),
            counters,
            unlimited: false,
            probe_in_flight: false,
            blocked_until: 0,
            queue: Default::default(),
            sublimits: Vec::new(),
            successes: VecDeque::new(),
            last_used: now,
            reserve: None,
        }
    }

    /// The first waiter of the most urgent non-empty lane.
    pub(super) fn head(&self) -> Option<&(WaiterId, Arc<Notify>)> {
        self.queue.iter().find_map(|q| q.front())
    }

    pub(super) fn queued(&self) -> usize {
        self.queue.iter().map(VecDeque::len).sum()
    }

    pub(super) fn wake_head(&self) {
        if let Some((_, n)) = self.head() {
            n.notify_one();
        }
    }

    pub(super) fn remove(&mut self, id: WaiterId) -> bool {
        for q in &mut self.queue {
            if let Some(pos) = q.iter().position(|w| w.0 == id) {
                q.remove(pos);
                return true;
            }
        }
        false
    }

    /// Whether waiter `id` is next (the fast path, which holds no place, only when nobody waits).
    pub(super) fn is_next(&self, id: WaiterId) -> bool {
        if id == super::ticket::FAST_PATH {
            self.queued() == 0
        } else {
            self.head().is_some_and(|h| h.0 == id)
        }
    }

    /// Until when a sub-limit holds requests with this body fingerprint.
    pub(super) fn sublimit_until(&self, fingerprint: u64, now: Micros) -> Option<Micros> {
        self.sublimit(fingerprint).and_then(|s| s.holds(now))
    }

    fn sublimit(&self, fingerprint: u64) -> Option<&Sublimit> {
        self.sublimits.iter().find(|s| s.fingerprint == fingerprint)
    }

    fn sublimit_mut(&mut self, fingerprint: u64) -> Option<&mut Sublimit> {
        self.sublimits
            .iter_mut()
            .find(|s| s.fingerprint == fingerprint)
    }

    /// Active sub-limits at `now`.
    pub(super) fn active_sublimits(&self, now: Micros) -> usize {
        self.sublimits.iter().filter(|s| s.active(now)).count()
    }

    /// A refusal by the sub-limit on requests with this fingerprint, of a request sent at `sent`, read at
    /// `now`, waiting until `until`. A first refusal (or the first after the sub-limit went quiet) learns the sub-window's size from the successes of
    /// this shape read within one such wait before it (inactive sub-limits are dropped).
    fn refused_by_sublimit(
        &mut self,
        fingerprint: u64,
        (sent, now, until): (Micros, Micros, Micros),
    ) {
        if let Some(s) = self.sublimit_mut(fingerprint).filter(|s| s.active(now)) {
            s.refused_again(sent, until);
            return;
        }
        // A sub-limit that went quiet is learned afresh.
        self.sublimits.retain(|s| s.active(now));
        if self.sublimits.len() < MAX_SUBLIMITS_PER_ROUTE {
            let since = now.saturating_sub(until.saturating_sub(now));
            let successes = self
                .successes
                .iter()
                .filter(|&&(f, _, read)| f == fingerprint && read >= since)
                .map(|&(_, sent, _)| sent);
            let s = Sublimit::refused(fingerprint, (sent, now, until), successes);
            self.sublimits.push(s);
        }
    }

    /// A request with this fingerprint, sent at `sent`, succeeded at `now`: evidence for sub-limits.
    pub(super) fn succeeded(&mut self, fingerprint: u64, sent: Micros, now: Micros) {
        if self.successes.len() == SUCCESSES_KEPT {
            self.successes.pop_front();
        }
        self.successes.push_back((fingerprint, sent, now));
        if let Some(s) = self.sublimit_mut(fingerprint) {
            s.succeeded(sent);
        }
    }

    /// A request with this fingerprint was admitted: its sub-limit, if any, counts it.
    pub(super) fn admitted_shape(&mut self, fingerprint: u64, now: Micros) {
        if let Some(s) = self.sublimit_mut(fingerprint) {
            s.admitted(now);
        }
    }
}

impl<S: SchedulerState> Core<S> {
    /// Whether the route exists and has no sub-limit recorded (active or expired).
    pub(crate) fn is_plain_route(&self, route_key: &str) -> bool {
        self.routes
            .get(route_key)
            .is_some_and(|r| r.sublimits.is_empty())
    }

    /// Whether a route has active sub-limits (so the caller should compute a body fingerprint).
    pub(crate) fn has_sublimits(&self, route_key: &str, now: Micros) -> bool {
        self.routes
            .get(route_key)
            .is_some_and(|r| r.active_sublimits(now) > 0)
    }

    /// Until when a sub-limit holds requests with this fingerprint.
    pub(crate) fn sublimit_until(&self, t: &Ticket, now: Micros) -> Option<Micros> {
        self.routes
            .get(&t.route_key)?
            .sublimit_until(t.fingerprint, now)
    }

    /// Creates the route's state if it is new.
    pub(crate) fn ensure_route(&mut self, t: &Ticket, now: Micros) {
        if !self.routes.contains_key(&t.route_key) {
            self.evict_routes(now);
            let counters = self.link_known(t);
            self.routes
                .insert(t.route_key.clone(), RouteState::new(t, counters, now));
        }
    }

    /// Puts a request at the back of its route's lane.
    pub(crate) fn enqueue(&mut self, t: &Ticket, notify: Arc<Notify>, now: Micros) -> WaiterId {
        self.next_waiter += 1;
        let id = self.next_waiter;
        self.ensure_route(t, now);
        if let Some(r) = self.routes.get_mut(&t.route_key) {
            r.queue[t.lane.index()].push_back((id, notify));
            self.queued += 1;
            r.last_used = now;
        }
        id
    }

    /// Removes a waiter that gave up (deadline, cancellation) and wakes the next head if it was first.
    pub(crate) fn cancel(&mut self, route_key: &str, id: WaiterId) {
        let Some(r) = self.routes.get_mut(route_key) else {
            return;
        };
        if let Some(w) = self.global_waiters.get_mut(&r.token) {
            w.leave(id);
        }
        let was_head = r.head().is_some_and(|h| h.0 == id);
        if r.remove(id) {
            self.queued -= 1;
        }
        if was_head {
            r.wake_head();
        }
        if r.queued() == 0 {
            if let Some(k) = r.reserve.take() {
                self.state.unreserve(r.token, k);
            }
        }
    }

    /// Forgets a call that stopped waiting without an admission: it no longer waits for a global slot nor
    /// is held back by a reservation (its queue position, if any, goes through [`Core::cancel`]).
    pub(crate) fn forget_call(&mut self, t: &Ticket) {
        if let Some(w) = self.global_waiters.get_mut(&t.token) {
            if w.waiting.remove(&t.seq).is_some() {
                w.wake_first();
            }
            w.held.remove(&t.seq);
        }
    }

    /// A user 429 with requests left: a hidden sub-limit holds requests of this body shape until `until`.
    pub(super) fn record_sublimit(
        &mut self,
        route_key: &str,
        fingerprint: u64,
        (sent, now, until): (Micros, Micros, Micros),
    ) {
        if let Some(r) = self.routes.get_mut(route_key) {
            r.refused_by_sublimit(fingerprint, (sent, now, until));
        }
    }

    /// Forgets the least recently used idle route when the cap ([`Config::max_routes`]) is reached.
    ///
    /// [`Config::max_routes`]: crate::Config::max_routes
    fn evict_routes(&mut self, now: Micros) {
        if self.routes.len() < self.cfg.max_routes {
            return;
        }
        let victim = self
            .routes
            .iter()
            .filter(|(_, r)| r.queued() == 0 && !r.probe_in_flight && r.blocked_until <= now)
            .min_by_key(|(_, r)| r.last_used)
            .map(|(k, _)| k.clone());
        if let Some(k) = victim {
            if let Some(r) = self.routes.remove(&k) {
                for ck in r.counters {
                    if let Some(c) = self.state.counter_mut(&ck) {
                        c.routes.retain(|x| x != &k);
                    }
                }
            }
        }
    }
}
