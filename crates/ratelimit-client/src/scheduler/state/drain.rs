//! Pacing a drain bucket (a leaky bucket, see [`Shape`](super::shape::Shape)): requests leave while the
//! bucket, as counted on our clock, has room, and then one per drain interval; the whole limit never
//! returns at once.
//!
//! When the bucket is empty at the latest: the upstream's level after the latest request it counted
//! among those answered is in that response (`receive + Reset-After` bounds the moment it is empty from
//! above); the requests in flight may be counted after it, one interval each; and requests that left
//! after the bucket had emptied fill it from their own departure. The largest `receive + Reset-After`
//! is taken over every response, not the newest one's: requests sent together are counted in any order.

use ratelimit_core::Micros;

/// Room kept free in the bucket beyond what the round trips' spread calls for: a request whose way in is
/// the shortest of all still finds the bucket below its capacity.
const DRAIN_SPARE: u64 = 1;

/// A drain bucket as this process counts it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Drain {
    /// Time for one request to drain: an upper bound of the upstream's (pacing slower is safe).
    pub(super) interval: Micros,
    /// The latest moment a response said the bucket is empty (`receive + Reset-After`), or a 429 implied.
    answered_empty: Micros,
    /// When the requests admitted since the drain was known leave it empty, counted from their departure.
    admitted_empty: Micros,
    /// When the bucket will be empty at the latest, counting every request admitted, on our clock.
    pub(super) empty_at: Micros,
    /// The smallest and largest round trip seen on this bucket: a request's way in can beat another's by
    /// at most their difference, and the bucket keeps that much room free.
    rtt_min: Micros,
    rtt_max: Micros,
}

impl Drain {
    /// A drain of one request per `interval` that responses said is empty at `answered_empty`, with
    /// `in_flight` requests not yet answered.
    pub(super) fn new(interval: Micros, answered_empty: Micros, in_flight: u32) -> Self {
        let mut d = Drain {
            interval: interval.max(1),
            answered_empty,
            admitted_empty: 0,
            empty_at: 0,
            rtt_min: Micros::MAX,
            rtt_max: 0,
        };
        d.settle(in_flight);
        d
    }

    /// Recomputes when the bucket is empty at the latest (see the module docs).
    fn settle(&mut self, in_flight: u32) {
        let pending = self.interval.saturating_mul(u64::from(in_flight));
        self.empty_at = self
            .answered_empty
            .saturating_add(pending)
            .max(self.admitted_empty);
    }

    /// The room left unused: [`DRAIN_SPARE`] plus the round trips' spread in intervals.
    fn spare(&self) -> u64 {
        let spread = self.rtt_max.saturating_sub(self.rtt_min.min(self.rtt_max));
        DRAIN_SPARE.saturating_add(spread.div_ceil(self.interval))
    }

    /// How many requests `capacity` lets go at once (at least one when the bucket is empty).
    fn usable(&self, capacity: u64) -> u64 {
        capacity.saturating_sub(self.spare()).max(1)
    }

    /// Requests that may leave at `now`.
    pub(super) fn room(&self, now: Micros, capacity: u64) -> u64 {
        let level = self.empty_at.saturating_sub(now).div_ceil(self.interval);
        self.usable(capacity).saturating_sub(level)
    }

    /// When the next request may leave (the level has fallen below what may be used).
    pub(super) fn next_at(&self, capacity: u64) -> Micros {
        let below = (self.usable(capacity) - 1).saturating_mul(self.interval);
        self.empty_at.saturating_sub(below)
    }

    /// A request was admitted at `now`; `in_flight` counts it.
    pub(super) fn take(&mut self, now: Micros, in_flight: u32) {
        self.admitted_empty = self.admitted_empty.max(now).saturating_add(self.interval);
        self.settle(in_flight);
    }

    /// A response to a request sent at `sent`, read at `received`, said the bucket is empty `reset_after`
    /// later; `in_flight` requests are not answered yet. Only the round trips of `paced` requests (sent
    /// while the drain was known) measure the spread.
    pub(super) fn sync(
        &mut self,
        (sent, received): (Micros, Micros),
        reset_after: Micros,
        in_flight: u32,
        paced: bool,
    ) {
        if paced {
            let rtt = received.saturating_sub(sent);
            self.rtt_min = self.rtt_min.min(rtt);
            self.rtt_max = self.rtt_max.max(rtt);
        }
        self.answered_empty = self
            .answered_empty
            .max(received.saturating_add(reset_after));
        self.settle(in_flight);
    }

    /// A user 429 says nothing drains before `until`: the bucket is full then, less one.
    pub(super) fn block(&mut self, until: Micros, capacity: u64, in_flight: u32) {
        let full = until.saturating_add(capacity.saturating_sub(1).saturating_mul(self.interval));
        self.answered_empty = self.answered_empty.max(full);
        self.settle(in_flight);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_drain_paces_at_its_interval_once_full() {
        let mut d = Drain::new(25, 0, 0);
        // Spare: one request.
        for n in 1..=39 {
            assert!(d.room(0, 40) > 0);
            d.take(0, n);
        }
        assert_eq!(d.room(0, 40), 0);
        assert_eq!(d.next_at(40), 25);
        assert_eq!(d.room(25, 40), 1);
        d.take(25, 40);
        assert_eq!(d.next_at(40), 50);
    }

    #[test]
    fn the_latest_empty_time_answered_counts_whatever_order_responses_come_in() {
        // Two requests sent together; the one counted second answers first.
        let mut d = Drain::new(25, 0, 2);
        d.sync((0, 100), 50, 1, true);
        assert_eq!(d.empty_at, 175);
        d.sync((0, 110), 25, 0, true);
        // The later response names an earlier empty time: the bucket is still empty at 150 at the latest.
        assert_eq!(d.empty_at, 150);
        // A round-trip spread of 10 (one interval, rounded up) keeps two requests' room free.
        assert_eq!(d.room(150, 40), 38);
    }

    #[test]
    fn requests_sent_after_the_bucket_emptied_fill_it_from_their_departure() {
        let mut d = Drain::new(25, 100, 0);
        d.take(1_000, 1);
        d.take(1_000, 2);
        assert_eq!(d.empty_at, 1_050);
    }
}
