//! The ban breaker and the invalid-request budget: the two limits that stop traffic rather than pace it.

use std::collections::VecDeque;

use ratelimit_core::Micros;

use super::{Core, SchedulerState};
use crate::error::Error;
use crate::profile::Lane;
use crate::scheduler::config::InvalidBudget;

/// An upstream ban (a Cloudflare block): all traffic stops; after a backoff a single probe may go.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Ban {
    pub(super) active: bool,
    pub(super) until: Micros,
    pub(super) backoff: Micros,
    pub(super) probe_in_flight: bool,
}

/// What the ban lets a request do now.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum BanCheck {
    /// No ban.
    Clear,
    /// A ban whose backoff is over, with no probe out: this request may be the probe.
    Probe,
    /// Banned for this much longer (or a probe is out).
    Banned { retry_in: Micros },
}

impl Ban {
    pub(super) fn check(&self, now: Micros) -> BanCheck {
        if !self.active {
            BanCheck::Clear
        } else if now < self.until || self.probe_in_flight {
            BanCheck::Banned {
                retry_in: self.until.saturating_sub(now),
            }
        } else {
            BanCheck::Probe
        }
    }

    /// A ban response: the backoff starts at `first` and doubles on every further ban, up to `max`.
    pub(super) fn record(&mut self, now: Micros, first: Micros, max: Micros) -> Micros {
        let backoff = if self.active {
            self.backoff.saturating_mul(2).min(max)
        } else {
            first
        };
        *self = Ban {
            active: true,
            until: now.saturating_add(backoff),
            backoff,
            probe_in_flight: false,
        };
        backoff
    }
}

/// Invalid responses (401, 403, non-shared 429) within the budget's window, oldest first.
#[derive(Debug, Default)]
pub(crate) struct InvalidLog {
    at: VecDeque<Micros>,
}

impl InvalidLog {
    /// Invalid responses within `window` of `now`.
    pub(super) fn count(&mut self, now: Micros, window: Micros) -> usize {
        while self
            .at
            .front()
            .is_some_and(|&t| t.saturating_add(window) <= now)
        {
            self.at.pop_front();
        }
        self.at.len()
    }

    /// Records one at `now`, keeping no more than `keep` (past the stop threshold more change nothing).
    pub(super) fn record(&mut self, now: Micros, keep: usize) {
        self.at.push_back(now);
        while self.at.len() > keep {
            self.at.pop_front();
        }
    }
}

/// The invalid-request budget's level, for logging each threshold once as it is crossed.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(super) enum BudgetLevel {
    #[default]
    Clear,
    Warn,
    Shed,
    Stop,
}

impl BudgetLevel {
    fn of(n: usize, budget: &InvalidBudget) -> Self {
        if n >= budget.stop {
            BudgetLevel::Stop
        } else if n >= budget.shed {
            BudgetLevel::Shed
        } else if n >= budget.warn {
            BudgetLevel::Warn
        } else {
            BudgetLevel::Clear
        }
    }
}

impl<S: SchedulerState> Core<S> {
    /// The token is not stopped, no ban holds the request, and the invalid budget lets its lane through.
    /// `Ok(true)` when the request is to be the ban probe.
    pub(super) fn safety_check(
        &mut self,
        token: u64,
        lane: Lane,
        now: Micros,
    ) -> Result<bool, Error> {
        if self.state.token_disabled(token) {
            return Err(Error::Unauthorized);
        }
        let ban_probe = match self.state.ban_check(now) {
            BanCheck::Clear => false,
            BanCheck::Probe => true,
            BanCheck::Banned { retry_in } => {
                return Err(Error::Banned {
                    retry_in: crate::parse::micros(retry_in),
                })
            }
        };
        let count = self.state.invalid_count(now, self.invalid_window);
        if count >= self.cfg.invalid.stop {
            return Err(Error::InvalidBudget { count });
        }
        if count >= self.cfg.invalid.shed && lane != Lane::Urgent {
            return Err(Error::Shed { count });
        }
        Ok(ban_probe)
    }

    /// Records an invalid response and logs the budget's thresholds as they are crossed.
    pub(super) fn count_invalid(&mut self, now: Micros) {
        let budget = self.cfg.invalid;
        let n = self
            .state
            .record_invalid(now, self.invalid_window, budget.stop.saturating_add(1));
        metrics::gauge!("ratelimit_client_invalid_requests").set(n as f64);
        let level = BudgetLevel::of(n, &budget);
        if level > self.invalid_level {
            tracing::warn!(
                invalid = n,
                level = level as u8,
                "invalid-request budget crossed a threshold (1 warn, 2 shed, 3 stop)"
            );
        }
        self.invalid_level = level;
    }

    /// A ban response: everything stops until a probe after the backoff succeeds.
    pub(super) fn on_ban(&mut self, now: Micros) -> Micros {
        let backoff = self
            .state
            .record_ban(now, self.cfg.ban_backoff, self.cfg.ban_backoff_max);
        tracing::error!(
            backoff_ms = backoff / 1000,
            "upstream ban detected: all traffic stopped until a probe succeeds"
        );
        metrics::counter!("ratelimit_client_bans_total").increment(1);
        self.count_invalid(now);
        self.wake_all();
        backoff
    }
}
