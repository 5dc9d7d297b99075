//! A hidden sub-limit on one body shape of a route (Discord's channel renames, dapi#1900): the headers
//! do not describe it, so its size and window are learned from evidence. The first refusal says when
//! its window ends (`retry_after`); the requests of that shape that succeeded since the window began say
//! how many it takes. After the wait, only that many leave per window.

use ratelimit_core::Micros;

/// One sub-limit: the requests with one body fingerprint on one route.
#[derive(Debug, Clone, Copy)]
pub(super) struct Sublimit {
    pub(super) fingerprint: u64,
    /// Until when its requests wait: the refusal's end, or the end of a sub-window that is full.
    pub(super) until: Micros,
    /// Requests one sub-window takes: the successes of this shape in the window that refused (at least
    /// one).
    size: u32,
    /// The sub-window's length at most: from the send of the earliest success counted in it to the
    /// refusal's end (the window began no earlier than that send).
    period: Micros,
    /// When the first refusal was read: requests sent before it that succeed were counted in that window.
    refused_at: Micros,
    /// The first refusal's end, to bound `period` with successes that are answered after it.
    first_until: Micros,
    /// Admissions in the current sub-window, and when its first left.
    used: u32,
    opened: Micros,
}

impl Sublimit {
    /// A first refusal read at `now`, of a request sent at `sent`, waiting until `until`; `successes`
    /// are the send times of this shape's successes read since `since`.
    pub(super) fn refused(
        fingerprint: u64,
        (sent, now, until): (Micros, Micros, Micros),
        successes: impl Iterator<Item = Micros>,
    ) -> Self {
        let (mut size, mut earliest) = (0u32, sent);
        for s in successes {
            size = size.saturating_add(1);
            earliest = earliest.min(s);
        }
        Sublimit {
            fingerprint,
            until,
            size: size.max(1),
            period: until.saturating_sub(earliest),
            refused_at: now,
            first_until: until,
            used: 0,
            opened: 0,
        }
    }

    /// Until when it holds its requests, if it does at `now`.
    pub(super) fn holds(&self, now: Micros) -> Option<Micros> {
        (self.until > now).then_some(self.until)
    }

    /// Whether it still matters at `now`: it holds, or a sub-window it counts may still be open.
    pub(super) fn active(&self, now: Micros) -> bool {
        self.until.max(self.opened).saturating_add(self.period) > now
    }

    /// A request of its shape was admitted at `now`: once the sub-window has taken `size`, the next waits
    /// for the window to end (one period after its first admission).
    pub(super) fn admitted(&mut self, now: Micros) {
        if self.used == 0 || self.opened.saturating_add(self.period) <= now {
            self.used = 0;
            self.opened = now;
        }
        self.used = self.used.saturating_add(1);
        if self.used >= self.size {
            self.until = self.until.max(self.opened.saturating_add(self.period));
            self.used = 0;
        }
    }

    /// A request of its shape sent at `sent` succeeded: if it left before the first refusal, it was counted
    /// in the window that refused, which therefore takes one more.
    pub(super) fn succeeded(&mut self, sent: Micros) {
        if sent < self.refused_at {
            self.size = self.size.saturating_add(1);
            self.period = self.period.max(self.first_until.saturating_sub(sent));
        }
    }

    /// A further refusal, of a request sent at `sent`, waiting until `until`. One sent after the first
    /// refusal means the window takes fewer than thought.
    pub(super) fn refused_again(&mut self, sent: Micros, until: Micros) {
        if sent >= self.refused_at {
            self.size = self.size.saturating_sub(1).max(1);
            self.used = 0;
            // A sub-window this process opened lasts at least to this refusal's end. With none opened
            // yet (`opened` 0: the sub-limit was spent by another process), there is nothing to measure.
            if self.opened > 0 {
                self.period = self.period.max(until.saturating_sub(self.opened));
            }
        }
        self.until = self.until.max(until);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sub_window_takes_as_many_as_succeeded_before_the_refusal() {
        // Two renames succeeded (sent at 0 and 1), the third was refused at 5 until 600.
        let mut s = Sublimit::refused(7, (2, 5, 600), [0, 1].into_iter());
        assert_eq!(s.holds(5), Some(600));
        assert_eq!(s.holds(600), None);
        s.admitted(600);
        assert_eq!(s.holds(601), None);
        s.admitted(601);
        // Full: the next window opens one period (600) after the first admission.
        assert_eq!(s.holds(602), Some(1200));
        assert!(s.active(1500));
        assert!(!s.active(1800));
    }

    #[test]
    fn a_refusal_before_this_process_opened_a_sub_window_keeps_the_period_relative() {
        // Refused at 5 until 600; refused again (sent at 700, after the first refusal) before this
        // process admitted any request of the shape: another process spent the sub-window.
        let now_in_epoch_us = 1_796_000_000_000_000;
        let mut s = Sublimit::refused(
            7,
            (now_in_epoch_us, now_in_epoch_us + 5, now_in_epoch_us + 600),
            std::iter::empty(),
        );
        s.refused_again(now_in_epoch_us + 700, now_in_epoch_us + 1_300);
        assert_eq!(
            s.holds(now_in_epoch_us + 700),
            Some(now_in_epoch_us + 1_300)
        );
        s.admitted(now_in_epoch_us + 1_300);
        assert!(
            s.holds(now_in_epoch_us + 1_301)
                .is_none_or(|u| u < now_in_epoch_us + 10_000),
            "{:?}",
            s.holds(now_in_epoch_us + 1_301)
        );
    }

    #[test]
    fn successes_answered_after_the_refusal_still_count() {
        let mut s = Sublimit::refused(7, (2, 5, 600), std::iter::empty());
        s.succeeded(0);
        s.succeeded(10);
        s.admitted(600);
        assert_eq!(s.holds(601), None);
        s.admitted(601);
        assert_eq!(s.holds(602), Some(1200));
    }
}
