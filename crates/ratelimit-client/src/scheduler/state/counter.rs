//! One upstream limit for one major, as a window on our monotonic clock: what may still be sent in it,
//! when it ends, and how a response moves it.

use std::sync::Arc;

use ratelimit_core::Micros;

use super::drain::Drain;
use super::evidence::{Early, Evidence};
use super::shape::Shape;
use super::ticket::GrantCounter;
use crate::profile::BucketInfo;
use crate::scheduler::names;

/// The shortest period assumed for a window whose every request failed without saying when it ends.
const UNKNOWN_WINDOW_FLOOR: Micros = 1_000;

/// One upstream limit for one major: keyed by bucket hash when routes share it, or by route when a route
/// is known to keep its own count under a shared hash.
#[derive(Debug)]
pub(crate) struct Counter {
    pub(super) hash: Option<Arc<str>>,
    pub(super) limit: u64,
    /// What may still be *sent* in the current window.
    pub(super) avail: u64,
    pub(super) in_flight: u32,
    /// Of `in_flight`, those admitted in the current window.
    pub(super) cur_in_flight: u32,
    pub(super) window: u64,
    pub(super) rolled_at: Micros,
    /// When the window ends at the latest: the largest `receive + Reset-After` of its responses (or a 429's
    /// wait). Valid whatever the window's kind, with no assumption about latency.
    pub(super) reset_at: Option<Micros>,
    /// What the window's responses say about its reset, for releasing the next window early.
    pub(super) evidence: Evidence,
    /// The longest `Reset-After` seen on a fresh window: the window's length.
    pub(super) period: Micros,
    pub(super) blocked_until: Micros,
    /// The next window opens with one request (a probe) after a user 429.
    pub(super) probe_next: bool,
    /// Responses applied in this window.
    pub(super) done: u32,
    /// The routes linked to this counter (to wake their queue heads).
    pub(super) routes: Vec<Arc<str>>,
    pub(super) last_used: Micros,
    /// Admissions so far, and the newest admission whose response has been applied.
    pub(super) sent_seq: u64,
    pub(super) applied_seq: u64,
    /// The smallest `Remaining` reported in this window. Within a window the upstream's count only grows, so
    /// the response with the smallest value was counted last among those answered: every answered request
    /// that was counted is in it, and `min_remaining − in_flight − lost` is what may still be sent (requests
    /// in flight may or may not have been counted).
    pub(super) min_remaining: u64,
    /// Requests of this window that failed without a response (they may have been counted).
    pub(super) lost: u32,
    /// The previous window's reset at the latest (0 if unknown), to tell its late responses from the new
    /// window's.
    pub(super) prev_upper: Micros,
    /// What the responses say about the bucket's shape.
    shape: Shape,
    /// Set once the responses show a drain (a leaky bucket): it is paced by this, not by windows.
    pub(super) drain: Option<Drain>,
}

impl Counter {
    /// A counter learned from a response to a request admitted at `sent` and read at `now`.
    pub(super) fn new(hash: Option<Arc<str>>, b: &BucketInfo, sent: Micros, now: Micros) -> Self {
        let mut evidence = Evidence::NONE;
        evidence.add(sent, now, b.reset_after);
        let mut shape = Shape::NEW;
        shape.add(b.limit, b.remaining, b.reset_after, now);
        Counter {
            hash,
            limit: b.limit,
            avail: b.remaining,
            in_flight: 0,
            cur_in_flight: 0,
            window: 0,
            rolled_at: now,
            reset_at: Some(now.saturating_add(b.reset_after)),
            evidence,
            period: b.reset_after,
            blocked_until: 0,
            probe_next: false,
            done: 1,
            routes: Vec::new(),
            last_used: now,
            sent_seq: 0,
            applied_seq: 0,
            min_remaining: b.remaining,
            lost: 0,
            prev_upper: 0,
            shape,
            drain: None,
        }
    }

    /// When the window ends at the latest (see [`Evidence::upper`]).
    pub(super) fn upper(&self) -> Option<Micros> {
        self.reset_at.map(|r| self.evidence.upper(r))
    }

    /// When requests of the next window may leave (see [`Evidence`]). Never later than `reset_at`.
    pub(super) fn release_at(&self, early: &Early) -> Option<Micros> {
        self.reset_at.map(|r| self.evidence.release_at(r, early))
    }

    /// Opens a new window when the current one has ended; guards against a window with no known end.
    pub(super) fn roll(&mut self, now: Micros, early: &Early) {
        if self.drain.is_some() {
            return;
        }
        match self.release_at(early) {
            Some(release) if now >= release => {
                self.prev_upper = self.upper().unwrap_or(0);
                let fresh = if self.probe_next {
                    self.limit.min(1)
                } else {
                    self.limit
                };
                self.open_window(now);
                self.avail = fresh.saturating_sub(u64::from(self.in_flight));
                self.min_remaining = self.limit;
                self.reset_at = None;
            }
            None if self.avail == 0 && self.in_flight == 0 => {
                // Everything sent in this window failed without telling us when it ends.
                self.reset_at = Some(now.saturating_add(self.period.max(UNKNOWN_WINDOW_FLOOR)));
            }
            _ => {}
        }
    }

    /// The bookkeeping every new window starts with; the caller sets what it may send and when it ends.
    fn open_window(&mut self, now: Micros) {
        self.window += 1;
        self.rolled_at = now;
        self.cur_in_flight = 0;
        self.done = 0;
        self.probe_next = false;
        self.lost = 0;
        self.evidence = Evidence::NONE;
    }

    /// Whether a request must wait for this counter, and until when (`Some(None)`: until notified).
    /// Rolls the window first.
    pub(super) fn wait(&mut self, now: Micros, early: &Early) -> Option<Option<Micros>> {
        self.roll(now, early);
        if self.blocked_until > now {
            Some(Some(self.blocked_until))
        } else if let Some(d) = &self.drain {
            (d.room(now, self.limit) == 0).then(|| Some(d.next_at(self.limit)))
        } else if self.avail == 0 {
            Some(self.release_at(early))
        } else {
            None
        }
    }

    /// Draws one admission from the window.
    pub(super) fn take(&mut self, key: &Arc<str>, now: Micros) -> GrantCounter {
        self.in_flight += 1;
        if let Some(d) = &mut self.drain {
            d.take(now, self.in_flight);
            self.avail = d.room(now, self.limit);
            self.reset_at = Some(d.empty_at);
        } else {
            self.avail -= 1;
        }
        self.cur_in_flight += 1;
        self.last_used = now;
        let first_half = self
            .reset_at
            .is_some_and(|r| now.saturating_add(self.period / 2) < r);
        self.sent_seq += 1;
        GrantCounter {
            key: key.clone(),
            window: self.window,
            done_at_send: self.done,
            first_half,
            seq: self.sent_seq,
        }
    }

    /// An admission is over (answered or failed): it is no longer in flight.
    pub(super) fn release(&mut self, gc: &GrantCounter) {
        self.in_flight = self.in_flight.saturating_sub(1);
        if self.window == gc.window {
            self.cur_in_flight = self.cur_in_flight.saturating_sub(1);
        }
    }

    /// An admission failed without a response: it may have been counted.
    pub(super) fn lose(&mut self, gc: &GrantCounter, now: Micros, early: &Early) {
        if self.window == gc.window {
            self.lost = self.lost.saturating_add(1);
        }
        self.roll(now, early);
    }

    /// A refusal the bucket did not count (global or shared scope): its slot comes back, within the limit.
    pub(super) fn give_back(&mut self, gc: &GrantCounter) {
        if self.window == gc.window {
            self.give_back_one();
        }
    }

    fn give_back_one(&mut self) {
        self.avail = (self.avail + 1).min(self.limit.saturating_sub(u64::from(self.in_flight)));
    }

    /// A 429 named this counter: nothing goes before `until`. A user-scope one also says the window is
    /// spent: it ends no earlier than `until`, and the next opens with a probe.
    pub(super) fn block(&mut self, until: Micros, user: bool) {
        self.blocked_until = self.blocked_until.max(until);
        if let (Some(d), true) = (&mut self.drain, user) {
            d.block(until, self.limit, self.in_flight);
        }
        if user {
            self.avail = 0;
            self.reset_at = Some(self.reset_at.map_or(until, |r| r.max(until)));
            self.evidence = Evidence::NONE;
            self.probe_next = true;
        }
    }

    /// A route newly linked to this counter by a response: the allowance is capped by what it reports.
    pub(super) fn link(&mut self, route: Arc<str>, b: &BucketInfo, now: Micros, early: &Early) {
        self.roll(now, early);
        self.avail = self
            .avail
            .min(b.remaining.saturating_sub(u64::from(self.in_flight)));
        self.routes.push(route);
    }

    /// Whether a response (to a request admitted at `sent` under `gc`, read at `now`) belongs to the
    /// current window. A response from the previous window that is not counted in it gives its slot back,
    /// once the bucket is known to run fixed windows.
    pub(super) fn answers_current(
        &mut self,
        gc: Option<&GrantCounter>,
        b: &BucketInfo,
        sent: Micros,
        now: Micros,
    ) -> bool {
        if self.drain.is_some() {
            // A drain has no windows: every response says how full it is.
            return true;
        }
        match gc {
            Some(gc) if gc.window == self.window => true,
            Some(gc) if gc.window + 1 == self.window => {
                // Sent in the previous window, answered after we rolled over (the roll comes before the old
                // reset, so that the new window's requests arrive at it). Counted in the new window only if
                // it reports a reset well beyond the old one: `send + Reset-After` is at most the reset that
                // counted it, so an old-window response never passes this.
                let old_end = match self.prev_upper {
                    0 => self.rolled_at,
                    u => u,
                };
                if sent.saturating_add(b.reset_after) > old_end.saturating_add(self.period / 2) {
                    true
                } else {
                    // In a drain (a leaky bucket) the request still fills the bucket until it drains:
                    // only a fixed window's reset frees its slot. A drain's first response reads like a
                    // short window, so the slot stays taken until the responses tell the shapes apart.
                    self.learn_shape(b, now);
                    if self.shape.is_windows() {
                        self.give_back_one();
                    }
                    false
                }
            }
            Some(_) => false,
            None => true,
        }
    }

    /// Whether a response reporting a fresh count (`Remaining = Limit − 1`) early in a window that others
    /// already spent from shows that its route keeps its own count under the shared hash (dapi#8073).
    pub(super) fn reports_separate_count(&self, gc: Option<&GrantCounter>, b: &BucketInfo) -> bool {
        // A drain reports a fresh count whenever it has drained: no evidence of a separate count.
        self.drain.is_none()
            && gc.is_some_and(|gc| {
                self.routes.len() > 1
                    && gc.first_half
                    && gc.done_at_send >= 1
                    && b.remaining + 1 == b.limit
                    && b.id.is_some()
            })
    }

    /// Applies a response of the current window, sent at `sent` and read at `now`, whose window ends at
    /// `new_reset` at the latest.
    pub(super) fn apply(
        &mut self,
        gc: Option<&GrantCounter>,
        b: &BucketInfo,
        sent: Micros,
        now: Micros,
        new_reset: Micros,
    ) {
        self.learn_shape(b, now);
        if let Some(d) = &mut self.drain {
            // Round trips of requests sent before the drain was known (a first burst opening connections)
            // say nothing of the way in of the paced ones.
            let paced = gc.is_some_and(|gc| gc.window == self.window);
            d.sync((sent, now), b.reset_after, self.in_flight, paced);
            self.reset_at = Some(d.empty_at);
            self.avail = d.room(now, self.limit);
            if let Some(gc) = gc {
                self.applied_seq = self.applied_seq.max(gc.seq);
            }
            self.done += 1;
            return;
        }
        // The upstream opened a new window before ours ended (our reset is late by the return trip, and
        // requests sent in that gap open the next window): its reset lies a good part of a window beyond
        // ours. Trust the fresh count, but only from the newest response: an older one may predate
        // admissions that have since been answered and are no longer in flight.
        // (Routes grouped under one hash may still keep separate counts: no jump for groups.)
        let newest = gc.is_none_or(|gc| gc.seq > self.applied_seq) && self.routes.len() <= 1;
        let jumped = newest
            && self
                .reset_at
                .is_some_and(|r| new_reset > r.saturating_add(self.period / 2).max(r + 1));
        if let Some(gc) = gc {
            self.applied_seq = self.applied_seq.max(gc.seq);
        }
        if jumped {
            self.open_window(now);
            self.avail = b.remaining.saturating_sub(u64::from(self.in_flight));
            self.min_remaining = b.remaining;
            self.reset_at = Some(new_reset);
        } else {
            // What may still be sent: the latest count answered, less everything that may be counted after
            // it. This can raise the allowance (a request assumed counted while in flight turned out to be in
            // the count already, or was refused by a shared 429), but never above what the count allows.
            self.min_remaining = self.min_remaining.min(b.remaining);
            self.avail = self
                .min_remaining
                .saturating_sub(u64::from(self.in_flight) + u64::from(self.lost));
            self.reset_at = Some(self.reset_at.map_or(new_reset, |r| r.max(new_reset)));
        }
        self.evidence.add(sent, now, b.reset_after);
        if b.remaining + 1 >= b.limit || self.period == 0 {
            self.period = self.period.max(b.reset_after);
        }
        self.done += 1;
    }

    /// Adds a response to what the bucket's shape is known to be; starts pacing it as a drain once the
    /// responses show one, and goes back to windows if later ones contradict it.
    fn learn_shape(&mut self, b: &BucketInfo, now: Micros) {
        self.shape.add(b.limit, b.remaining, b.reset_after, now);
        match (self.shape.drain_interval(), &mut self.drain) {
            (Some(interval), Some(d)) => d.interval = interval,
            (Some(interval), None) => {
                tracing::debug!(
                    limit = names::limit_of(self.hash.as_deref()),
                    interval_us = interval,
                    "limit drains one request per interval (a leaky bucket): paced at that rate"
                );
                self.drain = Some(Drain::new(interval, self.shape.empty_by, self.in_flight));
                self.period = interval.saturating_mul(self.limit);
            }
            (None, Some(_)) => {
                tracing::debug!(
                    limit = names::limit_of(self.hash.as_deref()),
                    "limit no longer reports a drain: counted by windows"
                );
                self.drain = None;
                self.open_window(now);
                self.avail = 0;
                self.reset_at = Some(self.shape.empty_by);
            }
            (None, None) => {}
        }
    }

    /// Nothing in flight, the window over and no block: forgetting it loses nothing.
    pub(super) fn idle(&self, now: Micros) -> bool {
        self.in_flight == 0 && self.reset_at.is_none_or(|r| r <= now) && self.blocked_until <= now
    }

    /// What the snapshot shows as available: the whole limit once the window is over.
    pub(super) fn available(&self, now: Micros) -> u64 {
        if let Some(d) = &self.drain {
            d.room(now, self.limit)
        } else if self.reset_at.is_some_and(|r| r <= now) {
            self.limit
        } else {
            self.avail
        }
    }
}
