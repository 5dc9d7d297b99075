//! A bucket's shape, told from its responses: fixed windows (the whole limit returns at a reset) or a
//! drain (a leaky bucket: one request drains every `interval`, and `Reset-After` is the time until the
//! bucket is empty).
//!
//! A drain reports, for each request it counts, a level `count = Limit − Remaining` (this request
//! included) and `Reset-After ≈ count × interval`: precisely, `(count − 1) × interval < Reset-After ≤
//! count × interval` (plus the header's rounding). So every response bounds the interval from both sides,
//! and the responses of a drain all agree on one interval; and within a burst, `Reset-After` grows with
//! the count. A fixed window reports the same reset for every count (its `Reset-After` falls with wall
//! time while the count only grows), so two responses of one window with counts two apart already allow
//! no common interval.

use ratelimit_core::Micros;

use super::evidence::HEADER_ROUNDING;

/// How far apart the smallest and largest count seen must be before a drain is believed: two responses
/// of one fixed window with adjacent counts, counted within the same millisecond, can agree on an interval
/// (the full window); counts two apart cannot.
const DRAIN_COUNT_SPAN: u64 = 2;

/// What a bucket's responses say about its shape.
#[derive(Debug, Clone, Copy)]
pub(super) struct Shape {
    /// The drain intervals every response so far allows, `lo ..= hi`.
    lo: Micros,
    hi: Micros,
    /// The smallest count seen and its smallest `Reset-After`; the largest and its largest.
    fewest: (u64, Micros),
    most: (u64, Micros),
    /// Two responses allowed no common interval: fixed windows, for good.
    windows: bool,
    /// The latest moment a response said the bucket is empty (`receive + Reset-After`).
    pub(super) empty_by: Micros,
}

impl Shape {
    pub(super) const NEW: Shape = Shape {
        lo: 0,
        hi: Micros::MAX,
        fewest: (u64::MAX, 0),
        most: (0, 0),
        windows: false,
        empty_by: 0,
    };

    /// Whether two responses allowed no common drain interval: the bucket runs fixed windows.
    pub(super) fn is_windows(&self) -> bool {
        self.windows
    }

    /// Adds a response read at `received` that reports `remaining` of `limit` and `reset_after`.
    pub(super) fn add(
        &mut self,
        limit: u64,
        remaining: u64,
        reset_after: Micros,
        received: Micros,
    ) {
        self.empty_by = self.empty_by.max(received.saturating_add(reset_after));
        let count = limit.saturating_sub(remaining);
        if self.windows || count == 0 {
            return;
        }
        self.lo = self
            .lo
            .max(reset_after.saturating_sub(HEADER_ROUNDING) / count);
        if count > 1 {
            self.hi = self.hi.min(reset_after / (count - 1));
        }
        if self.lo > self.hi {
            self.windows = true;
            return;
        }
        if count < self.fewest.0 || (count == self.fewest.0 && reset_after < self.fewest.1) {
            self.fewest = (count, reset_after);
        }
        if count > self.most.0 || (count == self.most.0 && reset_after > self.most.1) {
            self.most = (count, reset_after);
        }
    }

    /// The drain interval, once the responses show a drain: they agree on an interval, their counts span
    /// [`DRAIN_COUNT_SPAN`] or more, and `Reset-After` grew with the count. The largest interval they allow
    /// (pacing slower than the upstream drains is safe).
    pub(super) fn drain_interval(&self) -> Option<Micros> {
        let spans = self.most.0.saturating_sub(self.fewest.0) >= DRAIN_COUNT_SPAN
            && self.fewest.0 != u64::MAX;
        let grew = self.most.1 > self.fewest.1.saturating_add(HEADER_ROUNDING);
        (!self.windows && spans && grew && self.hi < Micros::MAX).then_some(self.hi.max(1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Micros = 1_000;

    #[test]
    fn a_leaky_bucket_is_told_by_reset_after_growing_with_the_count() {
        // 40 per second, one drains every 25 ms; a burst counted at once, answered out of order.
        let mut s = Shape::NEW;
        for count in [3u64, 1, 7, 2] {
            s.add(40, 40 - count, count * 25 * MS, 100 * MS);
        }
        // The largest interval the counts allow: 7 × 25 ms ÷ 6, until larger counts narrow it.
        assert_eq!(s.drain_interval(), Some(175 * MS / 6));
        s.add(40, 0, 40 * 25 * MS, 100 * MS);
        assert_eq!(s.drain_interval(), Some(1000 * MS / 39));
        assert_eq!(s.empty_by, 1100 * MS);
    }

    #[test]
    fn a_fixed_window_is_never_taken_for_a_drain() {
        // One window of 1 s: a burst counted within a millisecond, then later requests, then a new window.
        let mut s = Shape::NEW;
        for (count, reset_after) in [
            (1u64, 1000 * MS),
            (2, 1000 * MS),
            (3, 999 * MS),
            (9, 400 * MS),
        ] {
            s.add(40, 40 - count, reset_after, 0);
            assert_eq!(s.drain_interval(), None);
        }
        for (count, reset_after) in [(1u64, 1000 * MS), (20, 1000 * MS), (40, 999 * MS)] {
            s.add(40, 40 - count, reset_after, 0);
            assert_eq!(s.drain_interval(), None);
        }
    }

    #[test]
    fn two_adjacent_counts_in_one_millisecond_are_not_enough() {
        let mut s = Shape::NEW;
        s.add(10, 9, 1000 * MS, 0);
        s.add(10, 8, 1000 * MS, 0);
        assert_eq!(s.drain_interval(), None);
    }
}
