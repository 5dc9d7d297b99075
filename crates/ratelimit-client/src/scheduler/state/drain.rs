//! Pacing a drain bucket (a leaky bucket, see [`Shape`](super::shape::Shape)): requests leave while the
//! bucket, as counted on our clock, has room, and then one per drain interval; the whole limit never
//! returns at once.

use ratelimit_core::Micros;

/// Room kept free in the bucket beyond what the round trips' spread calls for: a request whose way in is
/// the shortest of all still finds the bucket below its capacity.
const DRAIN_SPARE: u64 = 1;

/// A drain bucket as this process counts it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Drain {
    /// Time for one request to drain: an upper bound of the upstream's (pacing slower is safe).
    pub(super) interval: Micros,
    /// When the bucket will be empty, counting every request admitted, on our clock.
    pub(super) empty_at: Micros,
    /// The smallest and largest round trip seen on this bucket: a request's way in can beat another's by
    /// at most their difference, and the bucket keeps that much room free.
    rtt_min: Micros,
    rtt_max: Micros,
}

impl Drain {
    /// A drain of one request per `interval` that is empty at `empty_at`.
    pub(super) fn new(interval: Micros, empty_at: Micros) -> Self {
        Drain {
            interval: interval.max(1),
            empty_at,
            rtt_min: Micros::MAX,
            rtt_max: 0,
        }
    }

    /// The room left unused: [`DRAIN_SPARE`] plus the round trips' spread in intervals.
    fn spare(&self) -> u64 {
        let spread = self.rtt_max.saturating_sub(self.rtt_min.min(self.rtt_max));
        DRAIN_SPARE.saturating_add(spread.div_ceil(self.interval))
    }

    /// How many requests `capacity` lets go at `now` (at least one when the bucket is empty).
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

    /// A request was admitted at `now`.
    pub(super) fn take(&mut self, now: Micros) {
        self.empty_at = self.empty_at.max(now).saturating_add(self.interval);
    }

    /// A response to a request sent at `sent`, read at `received`, said the bucket is empty `reset_after`
    /// later; `in_flight` requests may be counted after it. Only the round trips of `paced` requests (sent
    /// while the drain was known) measure the spread. The bucket is empty no later than that, plus one
    /// interval for each of them: from the response to the newest request answered so far, that bound
    /// replaces ours (it counts what other clients spent, and it is exact where ours assumed the worst);
    /// an older response only adds to it (a request answered before it may have been counted after it).
    pub(super) fn sync(
        &mut self,
        (sent, received): (Micros, Micros),
        reset_after: Micros,
        in_flight: u32,
        newest: bool,
        paced: bool,
    ) {
        if paced {
            let rtt = received.saturating_sub(sent);
            self.rtt_min = self.rtt_min.min(rtt);
            self.rtt_max = self.rtt_max.max(rtt);
        }
        let bound = received
            .saturating_add(reset_after)
            .saturating_add(self.interval.saturating_mul(u64::from(in_flight)));
        self.empty_at = if newest {
            bound
        } else {
            self.empty_at.max(bound)
        };
    }

    /// A user 429 says nothing drains in before `until`: the bucket is full then, less one.
    pub(super) fn block(&mut self, until: Micros, capacity: u64) {
        let full = until.saturating_add(capacity.saturating_sub(1).saturating_mul(self.interval));
        self.empty_at = self.empty_at.max(full);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_drain_paces_at_its_interval_once_full() {
        let mut d = Drain::new(25, 0);
        // Spare: one request.
        for _ in 0..39 {
            assert!(d.room(0, 40) > 0);
            d.take(0);
        }
        assert_eq!(d.room(0, 40), 0);
        assert_eq!(d.next_at(40), 25);
        assert_eq!(d.room(25, 40), 1);
        d.take(25);
        assert_eq!(d.next_at(40), 50);
    }

    #[test]
    fn older_responses_only_delay_the_drain() {
        let mut d = Drain::new(25, 1_000);
        d.sync((0, 100), 500, 2, false, true);
        assert_eq!(d.empty_at, 1_000);
        d.sync((0, 200), 2_000, 2, false, true);
        assert_eq!(d.empty_at, 2_250);
        // A round-trip spread of 100 (four intervals) keeps five requests' room free.
        assert_eq!(d.room(2_250, 40), 35);
        // The newest response's bound replaces ours.
        d.sync((300, 400), 100, 0, true, true);
        assert_eq!(d.empty_at, 500);
    }
}
