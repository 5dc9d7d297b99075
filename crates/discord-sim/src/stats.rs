//! What the simulator saw: response counts by kind and, per counter, the admission times from which
//! utilisation is computed.

use std::time::Duration;

use crate::config::Limit;

/// One counter's record: every admission (offset from the simulator's start) and the 429s it caused.
///
/// Three measures of how well a client used the limit:
///
/// * [`BucketStats::utilisation`]: admissions ÷ the most the limit allows in the span they took. Strict:
///   on fixed windows a partial final window caps it (102 requests at 40 per second take three windows,
///   so at most 102 ÷ 120 = 85 %).
/// * [`BucketStats::window_fill`]: for fixed windows, how full every window but the last was, the measure
///   of "the bucket at its limit while enough work is queued"; a client with one request in flight per
///   bucket and 100 ms latency fills a 40-per-second window about a quarter.
/// * [`BucketStats::efficiency`]: the shortest span the limit allows for these admissions
///   ([`Limit::min_duration`]) ÷ the span taken: finishing close to the limits' bound. A client that learns
///   each fixed window's reset from a response loses at least one round trip per window
///   ([`crate::Scenario::lower_bound_reactive`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BucketStats {
    /// The token (or `ip:<addr>` without one) the counter belongs to.
    pub source: String,
    /// The counter's name: `hash:<h>` (shared by hash), `route:<METHOD> <template>` (per route),
    /// `layer:<h>` (a layered limit) or `global`.
    pub name: String,
    /// The reported bucket hash (empty for the global counter).
    pub hash: String,
    /// The major parameter, for example `channels/100` (empty when none or counted across majors).
    pub major: String,
    /// The limit enforced.
    pub limit: Limit,
    /// Admission times, offsets from the simulator's start, in order.
    pub admitted: Vec<Duration>,
    /// The round-trip latency drawn for each admitted request (same order as `admitted`; half of it
    /// elapsed before the admission, half after). Empty for the global counter.
    pub latencies: Vec<Duration>,
    /// When each fixed window opened (empty for leaky and global counters).
    pub windows: Vec<Duration>,
    /// 429s this counter answered (scope `user` or `global`).
    pub rejected: u64,
    /// For each of those 429s, how early the request came: the wait it was told (until the counter would
    /// have admitted it).
    pub rejected_early_by: Vec<Duration>,
}

impl BucketStats {
    /// From the first admission to the last (zero with fewer than two).
    pub fn span(&self) -> Duration {
        match (self.admitted.first(), self.admitted.last()) {
            (Some(a), Some(b)) => b.saturating_sub(*a),
            _ => Duration::ZERO,
        }
    }

    /// The most requests the limit allows in [`BucketStats::span`].
    pub fn max_allowed(&self) -> u64 {
        self.limit.max_admissions(self.span())
    }

    /// Admissions ÷ [`BucketStats::max_allowed`], in `0..=1` (0 when nothing was admitted).
    pub fn utilisation(&self) -> f64 {
        let max = self.max_allowed();
        if max == 0 || self.admitted.is_empty() {
            0.0
        } else {
            self.admitted.len() as f64 / max as f64
        }
    }

    /// For fixed windows with at least two windows opened: the admissions before the last window opened ÷
    /// `limit × (windows − 1)`, that is how full the windows were while more work followed. With a single
    /// window the limit never held the client back: 1. For leaky and global counters (no windows
    /// recorded): [`BucketStats::utilisation`].
    pub fn window_fill(&self) -> f64 {
        match (self.windows.len(), self.windows.last()) {
            (n, Some(last)) if n >= 2 => {
                let before = self.admitted.iter().filter(|t| *t < last).count() as f64;
                before / (f64::from(self.limit.limit.max(1)) * (n - 1) as f64)
            }
            (1, _) => 1.0,
            _ => self.utilisation(),
        }
    }

    /// The shortest span in which the limit admits this many requests ÷ the span taken, in `0..=1`
    /// (1 when the shortest span is zero and the span is too, or when the limit was never binding).
    pub fn efficiency(&self) -> f64 {
        let best = self.limit.min_duration(self.admitted.len() as u64);
        let span = self.span();
        if best.is_zero() || span.is_zero() {
            1.0
        } else {
            (best.as_secs_f64() / span.as_secs_f64()).min(1.0)
        }
    }

    /// For a fixed-window counter: the earliest a client that probes could have received its last
    /// response, given the first window this run opened and the latencies this run drew.
    ///
    /// The admissions need `k = ⌈admitted ÷ limit⌉` windows; every later window opens at the instant the
    /// previous one ends (`first + (k − 1) × period`), and the last window's requests (the last
    /// `admitted − (k − 1) × limit` admissions, with the latencies they drew) leave together, as early as
    /// the smallest possible way in (`min_way_in`, half the scenario's smallest latency) allows: the last
    /// response comes back `max latency − min_way_in` after that window opens. A client cannot do better
    /// without knowing each request's latency before sending it: sent earlier, a request with the shortest
    /// way in would arrive before the reset. The first window's opening is the probe's way in, which no
    /// client controls once it probes. `None` for leaky counters or when nothing was admitted.
    pub fn probing_finish(&self, min_way_in: Duration) -> Option<Duration> {
        if self.limit.window != crate::config::Window::Fixed || self.admitted.is_empty() {
            return None;
        }
        let first = self.windows.first()?;
        let n = self.admitted.len() as u64;
        let k = n.div_ceil(self.limit.limit_u64());
        let opened = *first + self.limit.period * u32::try_from(k - 1).ok()?;
        let in_last = usize::try_from(n - (k - 1) * self.limit.limit_u64()).ok()?;
        let slowest = self.latencies.iter().rev().take(in_last).max()?;
        Some((opened + *slowest).saturating_sub(min_way_in))
    }

    /// The most admissions seen in any half-open interval of the limit's period. The sliding-log global
    /// counter never exceeds `limit`; a fixed window may reach `2 × limit` across a boundary, and a leaky
    /// bucket `limit` plus what drained meanwhile.
    pub fn peak_in_period(&self) -> usize {
        let mut best = 0;
        let mut lo = 0;
        for (hi, t) in self.admitted.iter().enumerate() {
            while *t - self.admitted[lo] >= self.limit.period {
                lo += 1;
            }
            best = best.max(hi - lo + 1);
        }
        best
    }
}

/// A snapshot of everything the simulator counted since it started (or since
/// [`crate::RunningSim::reset_stats`]).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SimStats {
    /// Time since the simulator started.
    pub elapsed: Duration,
    /// Requests received (all of them, banned ones included).
    pub requests: u64,
    /// 2xx responses.
    pub success: u64,
    /// 429 scope `user` from an exhausted bucket or layered limit (always avoidable once seen).
    pub user_429: u64,
    /// 429 scope `user` from a hidden sub-limit (`Remaining > 0`).
    pub sub_limit_429: u64,
    /// 429 scope `global`.
    pub global_429: u64,
    /// 429 scope `shared` (not the caller's fault, not counted as invalid).
    pub shared_429: u64,
    /// Cloudflare-style 429s served while banned.
    pub cloudflare_429: u64,
    /// 401 responses (unknown, missing or revoked token).
    pub unauthorized: u64,
    /// 403 responses.
    pub forbidden: u64,
    /// 404 responses (unknown route, or a route configured to answer 404).
    pub not_found: u64,
    /// Requests counted toward the ban (401, 403, non-shared 429) since the start.
    pub invalid_requests: u64,
    /// Bans started since the start.
    pub bans: u64,
    /// Whether some source IP is banned now.
    pub banned: bool,
    /// Offset of the first and the last request received.
    pub first_request: Option<Duration>,
    /// Offset of the last request received.
    pub last_request: Option<Duration>,
    /// Every counter of every route and layered limit, sorted by source, name and major.
    pub buckets: Vec<BucketStats>,
    /// The global counter of each source.
    pub global: Vec<BucketStats>,
}

impl SimStats {
    /// 429s the client could have avoided or must not provoke: user (bucket and sub-limit), global and
    /// Cloudflare ones; everything but `shared`.
    pub fn non_shared_429(&self) -> u64 {
        self.user_429 + self.sub_limit_429 + self.global_429 + self.cloudflare_429
    }

    /// The counters whose name or hash contains `needle` (for example a hash, or `POST /channels`).
    pub fn buckets_matching<'a>(
        &'a self,
        needle: &'a str,
    ) -> impl Iterator<Item = &'a BucketStats> + 'a {
        self.buckets
            .iter()
            .filter(move |b| b.name.contains(needle) || b.hash == needle)
    }

    /// The counter with this name or hash for this major.
    pub fn bucket(&self, name_or_hash: &str, major: &str) -> Option<&BucketStats> {
        self.buckets
            .iter()
            .find(|b| (b.name == name_or_hash || b.hash == name_or_hash) && b.major == major)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn stats(limit: Limit, admitted: &[u64], latencies: &[u64], windows: &[u64]) -> BucketStats {
        BucketStats {
            source: "token".into(),
            name: "hash:x".into(),
            hash: "x".into(),
            major: String::new(),
            limit,
            admitted: admitted.iter().copied().map(ms).collect(),
            latencies: latencies.iter().copied().map(ms).collect(),
            windows: windows.iter().copied().map(ms).collect(),
            rejected: 0,
            rejected_early_by: Vec::new(),
        }
    }

    #[test]
    fn probing_finish_enters_every_window_on_time_and_sends_the_last_together() {
        // Windows opened at 50 ms, 1.07 s and 2.06 s (late); requests of the last drew 90 and 110 ms.
        let b = stats(
            Limit::fixed(2, ms(1000)),
            &[50, 60, 1070, 1071, 2060, 2061],
            &[100, 90, 80, 85, 90, 110],
            &[50, 1070, 2060],
        );
        // The last window could have opened at 2.05 s; its batch leaves 40 ms before, the slowest returns
        // 110 ms after leaving.
        assert_eq!(b.probing_finish(ms(40)), Some(ms(2050 - 40 + 110)));
        let leaky = stats(Limit::leaky(2, ms(1000)), &[50], &[100], &[]);
        assert_eq!(leaky.probing_finish(ms(40)), None);
    }
}
