//! What the responses of one window say about when it resets, and how early the next window's requests
//! may leave so that they *arrive* at the reset.

use ratelimit_core::Micros;

/// Responses needed before latency compensation applies: the smallest round trip of fewer samples may be
/// a lucky one the next request does not repeat.
pub(super) const RTT_SAMPLES: u64 = 8;

/// Slack, in microseconds, for `Reset-After`'s rounding to the millisecond when telling whether the
/// responses of a window all name one reset.
pub(super) const HEADER_ROUNDING: Micros = 1_000;

/// What the responses of one window say about when it resets, on our monotonic clock.
///
/// The upstream counts a request at some moment `a` between our send `s` and our receipt `r` of its
/// response, and reports `Reset-After` = `R − a` for the window's reset `R`. So every response bounds the
/// reset from both sides: `s + Reset-After ≤ R ≤ r + Reset-After`. How a round trip splits between the way
/// in and the way back cannot be observed (that would need synchronised clocks), and the release rule below
/// does not depend on it.
///
/// A request of the next window must *arrive* at `R` or later. Sent at `t`, it arrives at `t + in`, where
/// `in` is its way in. The rule sends it at the later of two moments, each safe under its own assumption,
/// so it is safe when *either* assumption holds:
///
/// * (a) `max(s + Reset-After)`, plus an allowance of the spread of those values divided by the number of
///   responses. The maximum belongs to the response whose way in was the shortest relative to the reset;
///   a request sent that long before the reset arrives at it if its own way in is not shorter (by more than
///   the allowance) than the shortest seen in the window. This is a statement about the *jitter* of the way
///   in, which the responses measure (their `s + Reset-After` differ exactly by the differences of their
///   ways in), not about asymmetry.
/// * (b) `min(r + Reset-After) − smallest round trip seen`: safe if the next request's way in plus the
///   shortest way back in this window is no shorter than the smallest round trip ever seen.
///
/// A configurable margin is added, the share of the time taken off can be lowered
/// ([`Config::latency_compensation`](crate::Config::latency_compensation)), and the release is never later
/// than the largest `r + Reset-After` (safe with no assumption at all). On a fixed window every response
/// names the same `R`, so the bounds all overlap and the smallest upper end is used; when they do not
/// overlap (a leaky bucket, whose reset moves with every request) the largest upper end is used instead.
#[derive(Debug, Clone, Copy)]
pub(super) struct Evidence {
    /// Responses read in this window.
    pub(super) n: u32,
    /// The largest and smallest `send + Reset-After`.
    pub(super) max_lo: Micros,
    pub(super) min_lo: Micros,
    /// The smallest `receive + Reset-After`.
    pub(super) min_hi: Micros,
}

impl Evidence {
    pub(super) const NONE: Evidence = Evidence {
        n: 0,
        max_lo: 0,
        min_lo: Micros::MAX,
        min_hi: Micros::MAX,
    };

    /// Adds one response: sent at `sent`, read at `received`, reporting `reset_after`.
    pub(super) fn add(&mut self, sent: Micros, received: Micros, reset_after: Micros) {
        let (lo, hi) = (
            sent.saturating_add(reset_after),
            received.saturating_add(reset_after),
        );
        self.n = self.n.saturating_add(1);
        self.max_lo = self.max_lo.max(lo);
        self.min_lo = self.min_lo.min(lo);
        self.min_hi = self.min_hi.min(hi);
    }

    /// When the window ends at the latest, given `reset_at`, the largest upper end seen. One fixed reset:
    /// every response's interval [send, receive] + Reset-After contains it, so they all overlap and the
    /// smallest upper end bounds it. Otherwise (a moving reset: a leaky bucket, or a window opened anew)
    /// only the largest upper end does.
    pub(super) fn upper(&self, reset_at: Micros) -> Micros {
        let fixed = self.n > 0 && self.max_lo <= self.min_hi.saturating_add(HEADER_ROUNDING);
        if fixed {
            self.min_hi.min(reset_at)
        } else {
            reset_at
        }
    }

    /// When requests of the next window may leave (see the type's docs), never later than `reset_at`.
    pub(super) fn release_at(&self, reset_at: Micros, early: &Early) -> Micros {
        let Some(rtt) = early.rtt_min.filter(|_| self.n > 0 && early.percent > 0) else {
            return reset_at;
        };
        let upper = self.upper(reset_at);
        // (a) The request that was counted latest relative to its send (the fastest way in) tells how early
        // to send: a request leaving at `max_lo` arrives at the reset if its way in is no faster. The
        // allowance covers a new request beating the fastest of `n` seen (about the spread over `n`).
        let allowance = (self.max_lo - self.min_lo) / u64::from(self.n);
        let by_way_in = self.max_lo.saturating_add(allowance);
        // (b) The fastest way back seen (the smallest upper end) plus the next way in is no shorter than the
        // smallest round trip seen.
        let by_round_trip = upper.saturating_sub(rtt);
        tracing::trace!(
            n = self.n,
            rtt,
            allowance,
            way_in_before_upper = upper as i64 - by_way_in as i64,
            round_trip_before_upper = upper as i64 - by_round_trip as i64,
            "release estimate"
        );
        let take = upper
            .saturating_sub(by_way_in.max(by_round_trip))
            .saturating_mul(u64::from(early.percent))
            / 100;
        upper
            .saturating_sub(take)
            .saturating_add(early.margin)
            .min(reset_at)
    }
}

/// The parameters of early release (see [`Evidence`]).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Early {
    pub(super) rtt_min: Option<Micros>,
    pub(super) percent: u8,
    pub(super) margin: Micros,
}

/// The smallest round trip seen, and how many were seen, for latency compensation.
///
/// The smallest round trip is the sample with the least local queueing in it: a recent or average round
/// trip can be inflated by congestion on our side (a pool of connections being opened) that the next
/// request does not meet.
#[derive(Debug)]
pub(super) struct RoundTrips {
    min: Micros,
    samples: u64,
}

impl RoundTrips {
    pub(super) const fn new() -> Self {
        RoundTrips {
            min: Micros::MAX,
            samples: 0,
        }
    }

    pub(super) fn add(&mut self, rtt: Micros) {
        self.min = self.min.min(rtt);
        self.samples += 1;
    }

    /// The smallest round trip, once [`RTT_SAMPLES`] were seen (so nothing is released early on a cold
    /// start).
    pub(super) fn min(&self) -> Option<Micros> {
        (self.samples >= RTT_SAMPLES).then_some(self.min)
    }
}
