//! The scheduler's configuration in microseconds, as its state machine reads it (internal).
//!
//! The public, `Duration`-based [`Config`](crate::Config) (in `settings.rs`) is what users build and see; it
//! is validated there and converted into this one once, when the limiter is built.

use std::time::Duration;

use ratelimit_core::clock::duration_to_micros;
use ratelimit_core::Micros;

pub use super::settings::InvalidBudget;

/// The scheduler's settings in microseconds (see [`crate::Config`] for each field's meaning).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// Requests per global window per token; `None` disables the pre-emptive global limit.
    pub global_limit: Option<u32>,
    /// The global window (default 1 s).
    pub global_window: Micros,
    /// Added to the global window (default 0). The global accounting is already exact for any latency
    /// (a request holds its slot from admission until one window after its response); a margin only
    /// covers an upstream whose window is longer than it says.
    pub global_margin: Micros,
    /// The invalid-request budget (its window is converted once, by the state machine).
    pub invalid: InvalidBudget,
    /// First wait after a detected ban before a probe (default 60 s), doubled on each failed probe.
    pub ban_backoff: Micros,
    /// Longest wait between ban probes (default 1 h).
    pub ban_backoff_max: Micros,
    /// Counters kept at most (default 10,000). At the cap the least recently used counter with no request
    /// in flight makes room for a new one, one whose window is over first; evicting one within its window
    /// (its route probes again when it returns) is logged once. Each counter's keys are bounded in bytes,
    /// so this also bounds the counters' memory.
    pub max_buckets: usize,
    /// Routes kept at most; idle ones are evicted first (default 10,000).
    pub max_routes: usize,
    /// Retries after a rate-limit response (default 5; shared-scope storms can answer several in a row).
    pub max_limit_retries: u32,
    /// Retries after a 5xx or a connection error (default 3).
    pub max_error_retries: u32,
    /// First backoff after a 5xx or connection error (default 250 ms); doubles per retry, with jitter.
    pub backoff_base: Micros,
    /// Longest backoff (default 10 s).
    pub backoff_max: Micros,
    /// Default maximum time a request may wait for the rate limit; `None` waits as long as needed.
    pub max_wait: Option<Micros>,
    /// Share (percent, 0–100) of the early release that the responses justify (default 100). A reset
    /// learned from `Reset-After` is late on our clock by the response's way back, and a request sent at it
    /// arrives later still by its way in; each window's responses bound the true reset from both sides, and
    /// the next window's requests are released so that they arrive at it (the reasoning and its assumptions
    /// are in the scheduler's state docs). 0 waits for the latest reported reset, which is safe whatever the
    /// latency. Nothing is released early before 8 responses have measured the round trip.
    pub latency_compensation: u8,
    /// Added to every early release (default 2 ms): covers `Reset-After`'s rounding to the millisecond and
    /// a way in a little shorter than any seen. Raise it for an upstream with a jittery path.
    pub reset_margin: Micros,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            global_limit: Some(50),
            global_window: 1_000_000,
            global_margin: 0,
            invalid: InvalidBudget::default(),
            ban_backoff: 60_000_000,
            ban_backoff_max: 3_600_000_000,
            max_buckets: 10_000,
            max_routes: 10_000,
            max_limit_retries: 5,
            max_error_retries: 3,
            backoff_base: 250_000,
            backoff_max: 10_000_000,
            max_wait: None,
            latency_compensation: 100,
            reset_margin: 2_000,
        }
    }
}

impl Config {
    /// The span a global slot is held after its response: the window plus its margin.
    pub(crate) fn global_span(&self) -> Micros {
        self.global_window.saturating_add(self.global_margin)
    }

    /// The invalid-request budget's window.
    pub(crate) fn invalid_window(&self) -> Micros {
        us(self.invalid.window)
    }
}

pub(crate) fn us(d: Duration) -> Micros {
    duration_to_micros(d)
}
