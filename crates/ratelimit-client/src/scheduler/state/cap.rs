//! The bucket cap ([`Config::max_buckets`](crate::Config::max_buckets)): what is forgotten to make room
//! for a new counter, and what happens when nothing can be.

use std::sync::Arc;

use ratelimit_core::Micros;

use super::ticket::Grant;
use super::{Core, SchedulerState};

/// The bucket cap's two situations, each logged once per limiter.
#[derive(Debug, Default)]
pub(super) struct CapLogged {
    pub(super) evicted_active: bool,
    pub(super) untracked: bool,
}

impl<S: SchedulerState> Core<S> {
    /// Makes room for one more counter when the cap is reached: evicts the least recently used counter with
    /// no request in flight (other than `keep`), preferring one whose window is over. Evicting one still
    /// within its window forgets what it knew (how much of the window is spent): its route sends one probe
    /// when it next needs it, and learns the window again from the answer. That is logged once (the cap is
    /// too small for the upstream's working set) and counted in `ratelimit_client_bucket_cap_total{outcome}`.
    /// False when every counter has a request in flight.
    pub(super) fn make_room_for_counter(&mut self, now: Micros, keep: Option<&Arc<str>>) -> bool {
        if self.state.counter_count() < self.cfg.max_buckets {
            return true;
        }
        let victim = self
            .state
            .counters()
            .filter(|(k, c)| c.in_flight == 0 && Some(*k) != keep)
            .min_by_key(|(_, c)| (!c.idle(now), c.last_used))
            .map(|(k, c)| (k.clone(), c.idle(now)));
        let Some((key, idle)) = victim else {
            return false;
        };
        if idle {
            metrics::counter!("ratelimit_client_bucket_cap_total", "outcome" => "evicted_idle")
                .increment(1);
        } else {
            metrics::counter!("ratelimit_client_bucket_cap_total", "outcome" => "evicted_active")
                .increment(1);
            if !std::mem::replace(&mut self.cap_logged.evicted_active, true) {
                tracing::warn!(
                    max_buckets = self.cfg.max_buckets,
                    "bucket cap reached with every counter within its window: the least recently used is \
                     evicted, and its route probes again when it next sends; raise max_buckets if the \
                     upstream has more live buckets (logged once; counted in \
                     ratelimit_client_bucket_cap_total{{outcome=\"evicted_active\"}})"
                );
            }
        }
        if let Some(c) = self.state.remove_counter(&key) {
            for rk in c.routes {
                if let Some(r) = self.routes.get_mut(&rk) {
                    r.counters.retain(|x| x != &key);
                }
            }
        }
        true
    }

    /// A response named a bucket that cannot be tracked (a request is in flight on every counter at the
    /// cap). A route that was told its bucket changed stops spending the old counter: it sends one request
    /// at a time, each a probe, until a counter frees. A layered limit named on a 429 is simply not added.
    pub(super) fn untracked_at_cap(&mut self, g: &Grant, limited: bool) {
        metrics::counter!("ratelimit_client_bucket_cap_total", "outcome" => "untracked")
            .increment(1);
        if !std::mem::replace(&mut self.cap_logged.untracked, true) {
            tracing::warn!(
                max_buckets = self.cfg.max_buckets,
                "bucket cap reached with a request in flight on every counter: a new bucket is not tracked, \
                 and its route sends one request at a time until a counter frees; raise max_buckets \
                 (logged once; counted in ratelimit_client_bucket_cap_total{{outcome=\"untracked\"}})"
            );
        }
        if limited {
            return;
        }
        if let Some(route) = self.routes.get_mut(&g.route_key) {
            for k in std::mem::take(&mut route.counters) {
                if let Some(c) = self.state.counter_mut(&k) {
                    c.routes.retain(|r| r != &g.route_key);
                }
            }
        }
    }

    /// Whether a route may get its own counter under a shared hash: the pairs known to keep their own
    /// count are bounded like the counters, and so is the new counter (`shared`, the counter it leaves, is
    /// not evicted for it). Without room the route keeps sharing, the stricter reading.
    pub(super) fn make_room_for_split(&mut self, now: Micros, shared: &Arc<str>) -> bool {
        self.state.own_counter_count() < self.cfg.max_buckets
            && self.make_room_for_counter(now, Some(shared))
    }
}
