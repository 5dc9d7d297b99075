//! The limiter's public configuration, in [`Duration`]s, validated when the limiter is built.

use std::time::Duration;

use super::config as core;
use super::config::us;

/// The default longest time a request waits for the rate limit before failing with
/// [`Error::WouldWait`](crate::Error::WouldWait): 30 s, the request timeout most gateways and HTTP clients
/// put in front of a caller — a wait beyond it would time the caller out anyway, so it is better reported
/// at once as a typed error naming the route and the wait. An upstream's `Retry-After: 3600` is then an
/// error, not a call that hangs for an hour.
///
/// Change it with [`LimiterBuilder::max_wait`](crate::LimiterBuilder::max_wait) or per request with a
/// [`MaxWait`](crate::MaxWait) extension; wait as long as the upstream says with
/// [`LimiterBuilder::wait_forever`](crate::LimiterBuilder::wait_forever) or [`MaxWait::FOREVER`](crate::MaxWait::FOREVER).
pub const DEFAULT_MAX_WAIT_WITHIN_COMMON_REQUEST_TIMEOUTS: Duration = Duration::from_secs(30);

/// What a request gets when its retries after rate-limit responses are spent.
///
/// ```
/// use ratelimit_client::{profile::RetryAfter, Exhausted, Limiter};
/// // A proxy passes the upstream's last 429 on, intact:
/// let limiter = Limiter::builder(RetryAfter::new()).on_exhausted(Exhausted::Respond).build()?;
/// # Ok::<(), ratelimit_client::ConfigError>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Exhausted {
    /// [`Error::RetriesExhausted`](crate::Error::RetriesExhausted), carrying the route, the attempts, the
    /// time waited and the upstream's last response (the default). An application calling an API wants a
    /// 429 it could not get past to be an error: `?` stops there, and a 429 never reaches code that reads the
    /// body as the answer.
    #[default]
    Error,
    /// The upstream's last response, as an `Ok` response with [`Attempts::exhausted`](crate::Attempts) set.
    /// A proxy wants this: its own caller should see the upstream's 429 and its headers intact.
    Respond,
}

/// Thresholds of the invalid-request budget (Discord: 10,000 responses with status 401, 403 or a
/// non-`shared` 429 per 10 minutes per IP earn a ban).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InvalidBudget {
    /// The sliding window (default 10 minutes).
    pub window: Duration,
    /// Log a warning from this count on (default 5,000).
    pub warn: usize,
    /// Refuse non-urgent requests from this count on (default 8,000).
    pub shed: usize,
    /// Refuse every request from this count on (default 9,500).
    pub stop: usize,
}

impl Default for InvalidBudget {
    fn default() -> Self {
        InvalidBudget {
            window: Duration::from_secs(600),
            warn: 5_000,
            shed: 8_000,
            stop: 9_500,
        }
    }
}

/// Limiter settings; build with [`crate::LimiterBuilder`] (or set fields on `Config::default()` and pass it
/// to [`LimiterBuilder::config`](crate::LimiterBuilder::config)).
///
/// ```
/// use std::time::Duration;
/// use ratelimit_client::{profile::Ietf, Config, Limiter};
///
/// let mut config = Config::default();
/// config.max_wait = Some(Duration::from_secs(5));
/// let limiter = Limiter::builder(Ietf::new()).config(config).build()?;
/// assert_eq!(limiter.config().max_wait, Some(Duration::from_secs(5)));
/// # Ok::<(), ratelimit_client::ConfigError>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Config {
    /// Requests per global window per credential; `None` disables the pre-emptive global limit (default 50,
    /// Discord's; profiles other than Discord mark their routes exempt from it).
    pub global_limit: Option<u32>,
    /// The global window (default 1 s).
    pub global_window: Duration,
    /// Added to the global window (default 0). The global accounting is already exact for any latency
    /// (a request holds its slot from admission until one window after its response); a margin only
    /// covers an upstream whose window is longer than it says.
    pub global_margin: Duration,
    /// The invalid-request budget.
    pub invalid: InvalidBudget,
    /// First wait after a detected ban before a probe (default 60 s), doubled on each failed probe.
    pub ban_backoff: Duration,
    /// Longest wait between ban probes (default 1 h).
    pub ban_backoff_max: Duration,
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
    pub backoff_base: Duration,
    /// Longest backoff (default 10 s).
    pub backoff_max: Duration,
    /// Longest time a request may wait for the rate limit, counted from its call, waits after 429s
    /// included (default [`DEFAULT_MAX_WAIT_WITHIN_COMMON_REQUEST_TIMEOUTS`]); `None` waits as long as the
    /// upstream says. A [`MaxWait`](crate::MaxWait) request extension overrides it.
    pub max_wait: Option<Duration>,
    /// What a request gets when its retries after rate-limit responses are spent (default
    /// [`Exhausted::Error`]).
    pub on_exhausted: Exhausted,
    /// Share (percent, 0–100) of the early release that the responses justify (default 100). A reset
    /// learned from `Reset-After` is late on our clock by the response's way back, and a request sent at it
    /// arrives later still by its way in; each window's responses bound the true reset from both sides, and
    /// the next window's requests are released so that they arrive at it. 0 waits for the latest reported
    /// reset, which is safe whatever the latency. Nothing is released early before 8 responses have
    /// measured the round trip.
    pub latency_compensation: u8,
    /// Added to every early release (default 2 ms): covers `Reset-After`'s rounding to the millisecond and
    /// a way in a little shorter than any seen. Raise it for an upstream with a jittery path.
    pub reset_margin: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            global_limit: Some(50),
            global_window: Duration::from_secs(1),
            global_margin: Duration::ZERO,
            invalid: InvalidBudget::default(),
            ban_backoff: Duration::from_secs(60),
            ban_backoff_max: Duration::from_secs(3600),
            max_buckets: 10_000,
            max_routes: 10_000,
            max_limit_retries: 5,
            max_error_retries: 3,
            backoff_base: Duration::from_millis(250),
            backoff_max: Duration::from_secs(10),
            max_wait: Some(DEFAULT_MAX_WAIT_WITHIN_COMMON_REQUEST_TIMEOUTS),
            on_exhausted: Exhausted::Error,
            latency_compensation: 100,
            reset_margin: Duration::from_millis(2),
        }
    }
}

/// A configuration value that cannot work; the message says which and what it must satisfy.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid client configuration: {0}")]
pub struct ConfigError(pub String);

impl Config {
    pub(crate) fn validate(&self) -> Result<(), ConfigError> {
        if self.global_limit == Some(0) {
            return Err(ConfigError(
                "global_limit must be at least 1 (or None to disable it)".into(),
            ));
        }
        if us(self.global_window) == 0 {
            return Err(ConfigError("global_window must be at least 1 µs".into()));
        }
        let b = &self.invalid;
        if !(b.warn <= b.shed && b.shed <= b.stop) || b.stop == 0 || us(b.window) == 0 {
            return Err(ConfigError(format!(
                "invalid-request thresholds must satisfy 0 < warn <= shed <= stop and a non-zero window; got warn {} shed {} stop {}",
                b.warn, b.shed, b.stop
            )));
        }
        if us(self.ban_backoff) == 0 || self.ban_backoff > self.ban_backoff_max {
            return Err(ConfigError(
                "ban_backoff must be non-zero and at most ban_backoff_max".into(),
            ));
        }
        if self.max_buckets == 0 || self.max_routes == 0 {
            return Err(ConfigError(
                "max_buckets and max_routes must be at least 1".into(),
            ));
        }
        if self.latency_compensation > 100 {
            return Err(ConfigError(
                "latency_compensation is a percentage: 0 to 100".into(),
            ));
        }
        if us(self.backoff_base) == 0 || self.backoff_base > self.backoff_max {
            return Err(ConfigError(
                "backoff_base must be non-zero and at most backoff_max".into(),
            ));
        }
        Ok(())
    }

    /// The same settings in microseconds, for the scheduler's state machine.
    pub(crate) fn to_core(&self) -> core::Config {
        core::Config {
            global_limit: self.global_limit,
            global_window: us(self.global_window),
            global_margin: us(self.global_margin),
            invalid: self.invalid,
            ban_backoff: us(self.ban_backoff),
            ban_backoff_max: us(self.ban_backoff_max),
            max_buckets: self.max_buckets,
            max_routes: self.max_routes,
            max_limit_retries: self.max_limit_retries,
            max_error_retries: self.max_error_retries,
            backoff_base: us(self.backoff_base),
            backoff_max: us(self.backoff_max),
            max_wait: self.max_wait.map(us),
            latency_compensation: self.latency_compensation,
            reset_margin: us(self.reset_margin),
        }
    }
}
