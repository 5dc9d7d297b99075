//! What a response (or a failure without one) does to the state, and whom it wakes.

use std::sync::Arc;

use ratelimit_core::Micros;

use super::ticket::{ErrorKind, Grant, Verdict};
use super::{Core, SchedulerState};
use crate::profile::{Limited, Observation, Scope};
use crate::scheduler::names;

impl<S: SchedulerState> Core<S> {
    /// Applies a response to the state and decides what the caller does next.
    pub(crate) fn complete(
        &mut self,
        g: &Grant,
        obs: &Observation,
        fingerprint: u64,
        now: Micros,
    ) -> Verdict {
        self.release(g, now);
        self.rtt.add(now.saturating_sub(g.sent_at));
        if g.probe {
            self.end_probe(&g.route_key);
        }
        if obs.banned {
            return Verdict::Fail(ErrorKind::Banned(self.on_ban(now)));
        }
        if g.ban_probe && self.state.banned() {
            tracing::info!("ban probe succeeded; traffic resumes");
            self.state.lift_ban();
            self.wake_all();
        }
        if obs.invalid {
            self.count_invalid(now);
        }
        if obs.unauthorized {
            self.stop_token(g.token);
            return Verdict::Done;
        }
        if let Some(l) = obs.limited {
            self.on_limited(g, l, now);
            if l.scope == Scope::Global {
                return Verdict::RetryLimit;
            }
        }
        let learned = self.learn_buckets(g, obs, now);
        self.note_no_bucket(g, obs);
        let verdict = match obs.limited {
            Some(l) if is_sublimit(obs, l) => {
                self.on_sublimit(g, l, fingerprint, now);
                Verdict::RetryLimit
            }
            Some(l) => {
                self.block_named(g, l, &learned, now);
                Verdict::RetryLimit
            }
            None if obs.server_error => Verdict::RetryError,
            None => {
                self.note_success(g, fingerprint, now);
                Verdict::Done
            }
        };
        self.wake_for(g);
        // `wake_for` already woke the grant's counters; a learned key is new only after a probe or a change.
        for k in &learned {
            if !g.counters.iter().any(|gc| gc.key == *k) {
                self.wake_counter(k);
            }
        }
        verdict
    }

    /// Releases what a grant held when no response was read (connection error, cancellation).
    pub(crate) fn fail(&mut self, g: &Grant, now: Micros) {
        self.release(g, now);
        let early = self.early();
        if g.probe {
            self.end_probe(&g.route_key);
        }
        for gc in &g.counters {
            if let Some(c) = self.state.counter_mut(&gc.key) {
                c.lose(gc, now, &early);
            }
        }
        self.wake_for(g);
    }

    /// What every admission gives back when it ends: its global slot (freed a window later), the ban
    /// probe, its in-flight counts.
    fn release(&mut self, g: &Grant, now: Micros) {
        if g.global {
            self.state.global_release(g.token, now);
        }
        if g.ban_probe {
            self.state.end_ban_probe();
        }
        for gc in &g.counters {
            if let Some(c) = self.state.counter_mut(&gc.key) {
                c.release(gc);
            }
        }
    }

    fn end_probe(&mut self, route_key: &str) {
        if let Some(r) = self.routes.get_mut(route_key) {
            r.probe_in_flight = false;
        }
    }

    /// A 401: the credential is stopped for good.
    fn stop_token(&mut self, token: u64) {
        tracing::error!(
            credential = format_args!("{token:016x}"),
            "401 Unauthorized: requests with this credential are stopped"
        );
        metrics::counter!("ratelimit_client_unauthorized_total").increment(1);
        self.state.disable_token(token);
        self.wake_all();
    }

    /// Any 429: logged and counted; one the bucket did not count (global or shared) gives its slot back
    /// (the headers, read next, still cap it by the true remaining); a global one locks the token.
    fn on_limited(&mut self, g: &Grant, l: Limited, now: Micros) {
        metrics::counter!("ratelimit_client_429_total", "scope" => l.scope.as_str()).increment(1);
        tracing::warn!(
            route = %g.template(),
            major = names::major(g.major()),
            scope = (l.scope != Scope::User).then(|| display(l.scope.as_str())),
            retry_ms = l.retry_after / 1000,
            "rate limited by upstream"
        );
        tracing::debug!(
            route = %g.template(),
            sent_at = g.sent_at,
            now,
            counters = ?g.counters.iter().map(|c| (c.window, c.done_at_send)).collect::<Vec<_>>(),
            "the rate-limited request's send time and the windows (number, responses before it) it counted in"
        );
        if l.scope != Scope::User {
            for gc in &g.counters {
                if let Some(c) = self.state.counter_mut(&gc.key) {
                    c.give_back(gc);
                }
            }
        }
        if l.scope == Scope::Global {
            self.state
                .lock_global(g.token, now.saturating_add(l.retry_after));
            self.wake_for(g);
        }
    }

    /// Learns from every bucket the response names. Returns the counters to wake beyond the grant's own:
    /// without a 429 only new ones (no allocation in the common case); with one, all it named.
    fn learn_buckets(&mut self, g: &Grant, obs: &Observation, now: Micros) -> Vec<Arc<str>> {
        let mut learned = Vec::new();
        for b in &obs.buckets {
            if let Some(k) = self.observe_bucket(g, b, obs.limited.is_some(), now) {
                if obs.limited.is_some() || !g.counters.iter().any(|gc| gc.key == k) {
                    learned.push(k);
                }
            }
        }
        learned
    }

    /// A route is taken to have no limit only when its response says so by naming none: rejected evidence
    /// (`malformed`) keeps it probing one request at a time.
    fn note_no_bucket(&mut self, g: &Grant, obs: &Observation) {
        if !obs.buckets.is_empty()
            || obs.limited.is_some()
            || obs.server_error
            || obs.malformed.is_some()
        {
            return;
        }
        if let Some(r) = self.routes.get_mut(&g.route_key) {
            if r.counters.is_empty() && !r.unlimited {
                if g.global {
                    tracing::debug!(route = %g.template(), major = names::major(g.major()), "route's responses name no rate limit of its own: only the global limit applies");
                } else {
                    tracing::debug!(route = %g.template(), major = names::major(g.major()), "route's responses name no rate limit; its requests are not held back");
                }
                r.unlimited = true;
                r.wake_head();
            }
        }
    }

    /// A success of a known body shape: evidence of how many a sub-limit's window takes.
    fn note_success(&mut self, g: &Grant, fingerprint: u64, now: Micros) {
        if fingerprint == 0 {
            return;
        }
        if let Some(r) = self.routes.get_mut(&g.route_key) {
            r.succeeded(fingerprint, g.sent_at, now);
        }
    }

    /// A hidden sub-limit refused the request: requests of its body shape wait in their own lane.
    fn on_sublimit(&mut self, g: &Grant, l: Limited, fingerprint: u64, now: Micros) {
        tracing::warn!(
            route = %g.template(),
            major = names::major(g.major()),
            retry_ms = l.retry_after / 1000,
            "rate limited while the limit still had requests left (a sub-limit): requests with this body shape wait apart"
        );
        metrics::counter!("ratelimit_client_sublimits_total").increment(1);
        let until = now.saturating_add(l.retry_after);
        self.record_sublimit(&g.route_key, fingerprint, (g.sent_at, now, until));
    }

    /// A user or shared 429: blocks the counters it named (or the route's, or the route itself if none is
    /// known) for its `retry_after`.
    fn block_named(&mut self, g: &Grant, l: Limited, learned: &[Arc<str>], now: Micros) {
        let until = now.saturating_add(l.retry_after);
        let keys: Vec<Arc<str>> = if learned.is_empty() {
            self.routes
                .get(&g.route_key)
                .map(|r| r.counters.clone())
                .unwrap_or_default()
        } else {
            learned.to_vec()
        };
        if keys.is_empty() {
            if let Some(r) = self.routes.get_mut(&g.route_key) {
                r.blocked_until = r.blocked_until.max(until);
            }
        }
        for k in &keys {
            if let Some(c) = self.state.counter_mut(k) {
                c.block(until, l.scope == Scope::User);
            }
        }
    }

    /// Wakes the queue heads the grant's end may let through: its route's and its counters' routes'.
    fn wake_for(&self, g: &Grant) {
        debug_assert_eq!(
            self.queued,
            self.routes
                .values()
                .map(super::route::RouteState::queued)
                .sum::<usize>()
        );
        if self.queued == 0 {
            return;
        }
        if let Some(r) = self.routes.get(&g.route_key) {
            r.wake_head();
        }
        for gc in &g.counters {
            self.wake_counter(&gc.key);
        }
    }

    fn wake_counter(&self, key: &str) {
        if self.queued == 0 {
            return;
        }
        if let Some(c) = self.state.counter(key) {
            for rk in &c.routes {
                if let Some(r) = self.routes.get(rk) {
                    r.wake_head();
                }
            }
        }
    }

    /// Wakes every waiter (a ban, a lifted ban, a stopped token: each decides again).
    pub(super) fn wake_all(&self) {
        for r in self.routes.values() {
            for q in &r.queue {
                for (_, n) in q {
                    n.notify_one();
                }
            }
        }
    }
}

/// A user 429 while every bucket named still shows requests left: a hidden sub-limit.
pub(crate) fn is_sublimit(obs: &Observation, l: Limited) -> bool {
    l.scope == Scope::User
        && obs.buckets.iter().any(|b| b.remaining > 0)
        && obs.buckets.iter().all(|b| b.remaining > 0)
}
