//! The seam between the scheduler's decisions and the state that several processes sharing one upstream
//! identity (one token, one egress IP) would have to share: bucket counters, global slots and their
//! reservations, the ban and the invalid-request budget.
//!
//! Everything else stays in the process that owns it: routes and their FIFO queues, the wakers of
//! waiting calls, sub-limit lanes, round-trip samples. Those describe *this* process's callers; the state
//! behind [`SchedulerState`] describes the *upstream's* counts, which every process spends from.
//!
//! # Contract
//!
//! * **Atomicity.** Each method is one atomic step on the state it names: a counter's read-modify-write
//!   (`counter_mut` and what the caller does with the borrow), one token's slot log, the ban, the invalid
//!   log. The in-memory implementation ([`MemoryState`](super::memory::MemoryState)) gets this, and more,
//!   from the limiter's mutex: a whole admission (check every counter, then take a slot from each and from
//!   the global log) runs under it. A shared implementation must keep one admission's check-and-take
//!   atomic too (one script over the counters and the token's log), or check again when it takes.
//! * **Time** is passed in, in microseconds on the caller's monotonic clock; an implementation never
//!   reads a clock. A shared implementation must translate between processes' clocks (or use the
//!   store's) and say so.
//! * **Global slots.** A slot is taken at admission (`global_take`) and held until one global window
//!   after its response or failure (`global_release` logs the moment): the upstream counts a request at
//!   an unknown moment between the two, so only that bound is exact. `global_used` is in-flight plus
//!   logged slots younger than a window.
//! * **Reservations.** A reservation sets global slots aside for a route whose bucket resets at
//!   `ready_at`, so that calls on routes nearer to finishing do not take the slots it will need. It is
//!   keyed by the route's head call's arrival order, holds a count, and is *advisory*: it never blocks
//!   its own route, it is ignored once stale (a window past `ready_at`), and a call held back by
//!   reservations for a whole window goes anyway.
//! * **Cancellation.** What a request takes must be given back when it ends without a response:
//!   every counter's in-flight count (`Counter::release`), its global slot (`global_release`), the ban
//!   probe (`end_ban_probe`), and the reservation of a route whose queue emptied (`unreserve`). The
//!   scheduler's guards (`WaitGuard`, `Permit`) call these on drop; an implementation that loses a
//!   release (a shared store unreachable) must expire what it holds (in-flight counts with the window,
//!   slots with the log) rather than keep it.
//! * **Bounds.** Counters are bounded by the caller ([`Config::max_buckets`](crate::Config::max_buckets)):
//!   it removes one before inserting past the cap. Per-token state is bounded by the number of tokens,
//!   reservations by the pruning `reserve` does, the invalid log by `record_invalid`'s `keep`.

use std::sync::Arc;

use ratelimit_core::Micros;

use super::counter::Counter;
use super::global::Reservation;
use super::safety::BanCheck;

/// The state several processes would share; see the [module docs](self) for the contract.
pub(crate) trait SchedulerState {
    // Counters.

    /// The counter with this key.
    fn counter(&self, key: &str) -> Option<&Counter>;
    /// The counter with this key, to change it (one atomic read-modify-write).
    fn counter_mut(&mut self, key: &str) -> Option<&mut Counter>;
    /// Adds (or replaces) a counter.
    fn insert_counter(&mut self, key: Arc<str>, counter: Counter);
    /// Forgets a counter.
    fn remove_counter(&mut self, key: &str) -> Option<Counter>;
    /// Every counter, in no particular order.
    fn counters(&self) -> impl Iterator<Item = (&Arc<str>, &Counter)>;
    /// How many counters are kept.
    fn counter_count(&self) -> usize;
    /// Whether routes with `template` keep their own counter under the shared `hash` (dapi#8073).
    fn keeps_own_counter(&self, hash: &Arc<str>, template: &Arc<str>) -> bool;
    /// Records that routes with `template` keep their own counter under `hash`.
    fn learn_own_counter(&mut self, hash: Arc<str>, template: Arc<str>);
    /// How many `(hash, template)` pairs keep their own counter.
    fn own_counter_count(&self) -> usize;

    // Global slots of a token.

    /// Until when a global 429 locks the token (0 if never).
    fn global_locked_until(&self, token: u64) -> Micros;
    /// Locks the token until `until` (a global 429's `retry_after`).
    fn lock_global(&mut self, token: u64, until: Micros);
    /// Slots in use: in flight, plus answered within the last `window`.
    fn global_used(&mut self, token: u64, now: Micros, window: Micros) -> u64;
    /// When a slot frees at the earliest: one window after the oldest answered request, or one window
    /// from now if all are in flight.
    fn global_next_free(&self, token: u64, now: Micros, window: Micros) -> Micros;
    /// Takes a slot for an admission.
    fn global_take(&mut self, token: u64);
    /// The admission holding a slot ended at `now`: the slot frees a window later.
    fn global_release(&mut self, token: u64, now: Micros);
    /// Stops the token for good (a 401).
    fn disable_token(&mut self, token: u64);
    /// Whether the token is stopped.
    fn token_disabled(&self, token: u64) -> bool;

    // Reservations of global slots.

    /// Whether the token has any reservation.
    fn has_reservations(&self, token: u64) -> bool;
    /// The token's reservations by key (their head call's arrival order), oldest first.
    fn reservations(&self, token: u64) -> impl Iterator<Item = (u64, Reservation)>;
    /// Sets (or replaces) the reservation `key`; prunes the token's stale ones (ready more than `window`
    /// ago) when it holds many.
    fn reserve(&mut self, token: u64, key: u64, r: Reservation, now: Micros, window: Micros);
    /// One reserved slot was used: the count left (0 if the reservation is gone).
    fn use_reservation(&mut self, token: u64, key: u64) -> u32;
    /// Drops the reservation `key`.
    fn unreserve(&mut self, token: u64, key: u64);

    // The ban and the invalid-request budget.

    /// What the ban lets a request do now.
    fn ban_check(&self, now: Micros) -> BanCheck;
    /// Whether a ban is on.
    fn banned(&self) -> bool;
    /// A ban response at `now`; returns the backoff before the next probe.
    fn record_ban(&mut self, now: Micros, first: Micros, max: Micros) -> Micros;
    /// The ban probe succeeded: traffic resumes.
    fn lift_ban(&mut self);
    /// The ban probe left.
    fn start_ban_probe(&mut self);
    /// The ban probe ended (answered or failed).
    fn end_ban_probe(&mut self);
    /// Time until the ban probe, when a ban is on.
    fn banned_for(&self, now: Micros) -> Option<Micros>;
    /// Whether the ban probe is in flight.
    fn ban_probe_in_flight(&self) -> bool;
    /// Invalid responses within `window` of `now`.
    fn invalid_count(&mut self, now: Micros, window: Micros) -> usize;
    /// Records an invalid response, keeping at most `keep`; returns the count within `window`.
    fn record_invalid(&mut self, now: Micros, window: Micros, keep: usize) -> usize;

    // Views.

    /// Slots in use per token.
    fn global_use(&mut self, now: Micros, window: Micros) -> Vec<(u64, u64)>;
    /// Admissions holding a global slot, over all tokens.
    fn global_in_flight(&self) -> u64;
    /// Reservations, over all tokens.
    fn reservation_count(&self) -> usize;
    /// Tokens stopped after a 401.
    fn disabled_tokens(&self) -> usize;
}
