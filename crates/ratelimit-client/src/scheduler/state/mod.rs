//! The scheduler's state machine: synchronous, clock-free (time is passed in), and therefore testable
//! step by step with a manual clock.
//!
//! Model. A *route* is `token × route key × major`; it owns the FIFO queues (one per lane) of requests
//! waiting for it. A *counter* is one upstream limit for one major: keyed by bucket hash when routes share
//! it, or by route when a route is known to keep its own count under a shared hash. A route links to the
//! counters its responses named. A request is admitted when it is at the head of its route's queue, the
//! token's global limit has room, and every linked counter has `avail > 0`:
//!
//! * `avail` is what may still be *sent* in the current window. Admission decrements it. A response in the
//!   same window lowers it to `remaining − in_flight` when that is smaller (the header already counts this
//!   request; requests still in flight may or may not have been counted, so they are assumed counted). It
//!   never rises inside a window, so out-of-order responses and layered limits only make it safer.
//! * The window ends, on our monotonic clock, no later than the largest `receive time + Reset-After` of
//!   its responses (late by the response's way back, never early). Its requests are released a little
//!   before that, so that they *arrive* at the upstream's reset: each response also bounds the reset from
//!   below (`send time + Reset-After`), and [`Evidence`](evidence::Evidence) says how far ahead the two
//!   bounds justify sending. At that point `avail` returns to the limit, minus requests still in flight,
//!   and waiters are released one by one, FIFO, each admission waking the next head only while `avail`
//!   lasts.
//! * An unknown route sends one probe and holds the rest until it answers.
//!
//! Files, by concern: [`ticket`] (what a request asks with and holds), [`evidence`] (when a window resets),
//! [`counter`] (one window's count), [`route`] (queues and sub-limits), [`links`] (which counters a route
//! draws on), [`global`] (the token's global slots and reservations), [`safety`] (ban and invalid
//! budget), [`cap`] (the bucket cap), [`admit`] and [`complete`] (the two transitions), [`snapshot`]
//! (views). What several processes would share sits behind [`store::SchedulerState`]; this process keeps
//! it in [`memory::MemoryState`].

mod admit;
mod cap;
mod complete;
mod counter;
mod drain;
mod evidence;
mod global;
mod links;
mod memory;
mod route;
mod safety;
mod shape;
mod snapshot;
mod store;
mod sublimit;
mod ticket;

#[cfg(test)]
mod tests;

use std::sync::Arc;

use ratelimit_core::Micros;

use super::config::Config;
use cap::CapLogged;
pub(crate) use complete::is_sublimit;
use evidence::{Early, RoundTrips};
use global::GlobalWaiters;
pub(crate) use links::counter_key_of;
use memory::MemoryState;
use route::RouteState;
use safety::BudgetLevel;
pub(crate) use store::SchedulerState;

pub use snapshot::Occupancy;
pub(crate) use ticket::{ErrorKind, Grant, Step, Ticket, Verdict, WaiterId, FAST_PATH};

type HashMap<K, V> = hashbrown::HashMap<K, V, foldhash::fast::RandomState>;
type HashSet<K> = hashbrown::HashSet<K, foldhash::fast::RandomState>;

/// The scheduler's state for one upstream: this process's routes, queues and waiters, and the state
/// behind [`SchedulerState`] (in memory by default).
pub(crate) struct Core<S: SchedulerState = MemoryState> {
    cfg: Config,
    /// Global window (window + margin) in microseconds.
    global_window: Micros,
    /// The invalid-request budget's window in microseconds.
    invalid_window: Micros,
    /// Round trips seen, for latency compensation.
    rtt: RoundTrips,
    routes: HashMap<Arc<str>, RouteState>,
    /// Calls of this process waiting on each token's global limit.
    global_waiters: HashMap<u64, GlobalWaiters>,
    /// Counters, global slots and reservations, the ban and the invalid budget.
    state: S,
    /// What the bucket cap already logged (once each).
    cap_logged: CapLogged,
    /// The invalid budget's last level, to log each threshold once as it is crossed.
    invalid_level: BudgetLevel,
    next_waiter: WaiterId,
    /// Requests queued on all routes: when none is, waking queue heads is skipped without any lookup.
    queued: usize,
}

impl Core {
    pub(crate) fn new(cfg: Config) -> Self {
        Core::with_state(cfg, MemoryState::default())
    }
}

impl<S: SchedulerState> Core<S> {
    /// A scheduler over `state`.
    pub(crate) fn with_state(cfg: Config, state: S) -> Self {
        Core {
            global_window: cfg.global_span(),
            invalid_window: cfg.invalid_window(),
            rtt: RoundTrips::new(),
            cfg,
            routes: HashMap::default(),
            global_waiters: HashMap::default(),
            state,
            cap_logged: CapLogged::default(),
            invalid_level: BudgetLevel::default(),
            next_waiter: 0,
            queued: 0,
        }
    }

    /// The parameters of early release (see [`Evidence`](evidence::Evidence)): the smallest round trip
    /// seen (none before enough samples, so nothing is released early on a cold start), the share taken
    /// and the margin.
    fn early(&self) -> Early {
        Early {
            rtt_min: self.rtt.min(),
            percent: self.cfg.latency_compensation,
            margin: self.cfg.reset_margin,
        }
    }
}
