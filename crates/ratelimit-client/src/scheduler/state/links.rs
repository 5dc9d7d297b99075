//! Which counters a route draws on, learned from what its responses name: a probe's bucket, a changed
//! hash, a layered limit named on a 429, a route that keeps its own count under a shared hash.

use std::sync::Arc;

use ratelimit_core::Micros;

use super::counter::Counter;
use super::ticket::{Grant, Ticket};
use super::{Core, SchedulerState};
use crate::hex;
use crate::profile::BucketInfo;
use crate::scheduler::names;

/// `token|<mark><name>|major`: `#` and the limit's name for a counter shared by hash (`route:<template>`
/// when the upstream names none), `=` and the template for a route that keeps its own count under a
/// shared hash. Every process names a counter alike (the shared state's keys use these names too).
pub(crate) fn counter_key_of(token: u64, mark: char, name: &str, major: &str) -> String {
    let mut key = String::with_capacity(16 + 2 + name.len() + 1 + major.len());
    hex::push_hex(&mut key, token);
    key.push('|');
    key.push(mark);
    key.push_str(name);
    key.push('|');
    key.push_str(major);
    key
}

impl<S: SchedulerState> Core<S> {
    /// A new route whose template is known to use a hash for which this major already has a counter is
    /// linked at once, without a probe (the counter's state already covers it).
    pub(super) fn link_known(&mut self, t: &Ticket) -> Vec<Arc<str>> {
        let template: Arc<str> = t.template().into();
        let linked: Vec<Arc<str>> = self
            .routes
            .values()
            .filter(|r| &*r.template == t.template() && r.token == t.token)
            .flat_map(|r| r.counters.iter())
            .filter_map(|k| self.state.counter(k).and_then(|c| c.hash.clone()))
            .filter_map(|h| {
                let key = self.counter_key(t.token, &h, &template, t.major());
                self.state.counter(&key).is_some().then_some(key)
            })
            .take(1)
            .collect();
        for k in &linked {
            if let Some(c) = self.state.counter_mut(k) {
                c.routes.push(t.route_key.clone());
            }
        }
        linked
    }

    /// `token|#hash|major` for a counter shared by hash, `token|=template|major` for a route that keeps its
    /// own count under a shared hash.
    pub(super) fn counter_key(
        &self,
        token: u64,
        hash: &Arc<str>,
        template: &Arc<str>,
        major: &str,
    ) -> Arc<str> {
        let (mark, name): (char, &str) = if self.state.keeps_own_counter(hash, template) {
            ('=', template)
        } else {
            ('#', hash)
        };
        counter_key_of(token, mark, name, major).into()
    }

    /// Learns from one bucket of a response; returns the counter it concerns.
    pub(super) fn observe_bucket(
        &mut self,
        g: &Grant,
        b: &BucketInfo,
        limited: bool,
        now: Micros,
    ) -> Option<Arc<str>> {
        let route = self.routes.get(&g.route_key)?;
        // The common case, a response for a counter the route already uses: found by hash, no key built.
        let known = route.counters.iter().find(|k| {
            self.state
                .counter(k)
                .is_some_and(|c| match (&c.hash, &b.id) {
                    (Some(h), Some(id)) => **h == **id,
                    _ => false,
                })
        });
        let (template, major, token) = (route.template.clone(), route.major.clone(), route.token);
        let (hash, key): (Arc<str>, Arc<str>) = match known {
            Some(k) => (
                self.state
                    .counter(k)
                    .and_then(|c| c.hash.clone())
                    .unwrap_or_else(|| "".into()),
                k.clone(),
            ),
            None => {
                let hash: Arc<str> = match &b.id {
                    Some(h) => h.as_str().into(),
                    None => format!("{}{template}", names::UNNAMED_LIMIT).into(),
                };
                let key = self.counter_key(token, &hash, &template, &major);
                (hash, key)
            }
        };
        let linked = known.is_some() || route.counters.contains(&key);
        if !linked {
            return self.link_new(g, b, limited, hash, key, (&template, &major), now);
        }
        let gc = g.counters.iter().find(|gc| gc.key == key);
        let new_reset = now.saturating_add(b.reset_after);
        let c = self.state.counter_mut(&key)?;
        if b.limit != c.limit {
            tracing::debug!(limit = %names::limit(&hash), major = names::major(&major), old = c.limit, new = b.limit, "limit changed its size");
            c.limit = b.limit;
        }
        let current = c.answers_current(gc, b, g.sent_at, now);
        tracing::trace!(limit = %names::limit(&hash), major = names::major(&major), remaining = b.remaining, reset_after = b.reset_after, window = c.window, grant_window = ?gc.map(|g| g.window), current, now, avail = c.avail, in_flight = c.in_flight, reset_at = ?c.reset_at, "observed");
        if !current {
            return Some(key);
        }
        if c.reports_separate_count(gc, b) && self.make_room_for_split(now, &key) {
            return self.split(g, b, &hash, &template, &major, now);
        }
        let c = self.state.counter_mut(&key)?;
        c.apply(gc, b, g.sent_at, now, new_reset);
        Some(key)
    }

    /// A response named a counter the route is not linked to: a probe's bucket, a changed hash, or a layered
    /// limit on a 429. Creates or joins the counter and links the route to it.
    #[allow(clippy::too_many_arguments)]
    fn link_new(
        &mut self,
        g: &Grant,
        b: &BucketInfo,
        limited: bool,
        hash: Arc<str>,
        key: Arc<str>,
        (template, major): (&Arc<str>, &Arc<str>),
        now: Micros,
    ) -> Option<Arc<str>> {
        if self.state.counter(&key).is_none() {
            if !self.make_room_for_counter(now, None) {
                self.untracked_at_cap(g, limited);
                return None;
            }
            let mut c = Counter::new(Some(hash.clone()), b, g.sent_at, now);
            c.routes.push(g.route_key.clone());
            self.state.insert_counter(key.clone(), c);
        } else {
            let shared_counter_fresh = self.state.counter(&key).is_some_and(|c| {
                c.drain.is_none()
                    && c.done >= 1
                    && b.remaining + 1 == b.limit
                    && c.reset_at
                        .is_some_and(|r| now.saturating_add(c.period / 2) < r)
            });
            if shared_counter_fresh && b.id.is_some() && self.make_room_for_split(now, &key) {
                // The other routes already spent from this window, yet this one reports a fresh count: it
                // keeps its own counter under the shared hash (dapi#8073).
                return self.split(g, b, &hash, template, major, now);
            }
            let early = self.early();
            if let Some(c) = self.state.counter_mut(&key) {
                c.link(g.route_key.clone(), b, now, &early);
            }
        }
        let route = self.routes.get_mut(&g.route_key)?;
        if limited || route.counters.is_empty() {
            route.counters.push(key.clone());
        } else {
            let old = std::mem::replace(&mut route.counters, vec![key.clone()]);
            tracing::debug!(
                route = %g.template(),
                major = names::major(g.major()),
                from = names::limit_of(old.first().and_then(|k| self.state.counter(k)).and_then(|c| c.hash.as_deref())),
                to = %names::limit(&hash),
                "route now reports another limit"
            );
            for k in old {
                if let Some(c) = self.state.counter_mut(&k) {
                    c.routes.retain(|r| r != &g.route_key);
                }
            }
        }
        tracing::debug!(route = %g.template(), major = names::major(g.major()), limit = %names::limit(&hash), "route draws on limit");
        metrics::counter!("ratelimit_client_hash_learned_total").increment(1);
        Some(key)
    }

    /// Gives a route its own counter under a hash it shares with other routes.
    fn split(
        &mut self,
        g: &Grant,
        b: &BucketInfo,
        hash: &Arc<str>,
        template: &Arc<str>,
        major: &str,
        now: Micros,
    ) -> Option<Arc<str>> {
        tracing::debug!(
            route = %template,
            major = names::major(major),
            limit = %names::limit(hash),
            "route counts its own limit apart from other routes reporting that name"
        );
        metrics::counter!("ratelimit_client_hash_split_total").increment(1);
        self.state.learn_own_counter(hash.clone(), template.clone());
        let key = self.counter_key(g.token, hash, template, major);
        let mut c = Counter::new(Some(hash.clone()), b, g.sent_at, now);
        c.routes.push(g.route_key.clone());
        // Keep the safe view: this route's requests still in flight were admitted under the shared counter
        // and will count against the new one; the shared counter's in-flight total bounds them.
        let in_flight_here = g
            .counters
            .iter()
            .filter_map(|gc| self.state.counter(&gc.key))
            .map(|oc| oc.in_flight)
            .max()
            .unwrap_or(0);
        c.avail = c.avail.saturating_sub(u64::from(in_flight_here));
        self.state.insert_counter(key.clone(), c);
        let route = self.routes.get_mut(&g.route_key)?;
        let old = std::mem::replace(&mut route.counters, vec![key.clone()]);
        for k in old {
            if let Some(oc) = self.state.counter_mut(&k) {
                oc.routes.retain(|r| r != &g.route_key);
            }
        }
        Some(key)
    }
}
