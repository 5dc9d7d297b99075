//! [`SchedulerState`] kept in this process's memory, under the limiter's mutex.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;

use ratelimit_core::Micros;

use super::counter::Counter;
use super::global::Reservation;
use super::safety::{Ban, BanCheck, InvalidLog};
use super::store::SchedulerState;
use super::{HashMap, HashSet};

/// Reservations a token holds before `reserve` prunes its stale ones.
const RESERVATIONS_BEFORE_PRUNING: usize = 64;

/// The global limit of one token, exact whatever the latency: the upstream counts a request at some
/// unknown moment between our send and its response, so a request occupies a slot from its admission
/// until one window after its response (or failure). Then no upstream window of that length can hold more
/// than N of our requests: if the last of N+1 was admitted at `s`, every earlier one had either not been
/// answered by `s` or was answered after `s − window`, so all N occupied slots at `s`.
#[derive(Debug, Default)]
struct TokenSlots {
    in_flight: u32,
    /// When each answered admission ended, oldest first.
    done: VecDeque<Micros>,
    /// Global slots set aside for routes whose bucket is about to reset (keyed by their head call's
    /// arrival order): a call does not take a slot that a route further from finishing will need before
    /// it frees.
    reserved: BTreeMap<u64, Reservation>,
    locked_until: Micros,
    disabled: bool,
}

impl TokenSlots {
    fn used(&mut self, now: Micros, window: Micros) -> u64 {
        while self
            .done
            .front()
            .is_some_and(|&t| t.saturating_add(window) <= now)
        {
            self.done.pop_front();
        }
        u64::from(self.in_flight) + self.done.len() as u64
    }
}

/// The in-memory [`SchedulerState`]: one process's view, exact because every change is made under one lock.
#[derive(Debug, Default)]
pub(crate) struct MemoryState {
    counters: HashMap<Arc<str>, Counter>,
    /// `(hash, route template)` pairs known to keep their own counter under a shared hash (bounded by the
    /// caller like the counters).
    own_counter: HashSet<(Arc<str>, Arc<str>)>,
    tokens: HashMap<u64, TokenSlots>,
    ban: Ban,
    invalid: InvalidLog,
}

impl MemoryState {
    fn token(&mut self, token: u64) -> &mut TokenSlots {
        self.tokens.entry(token).or_default()
    }
}

impl SchedulerState for MemoryState {
    fn counter(&self, key: &str) -> Option<&Counter> {
        self.counters.get(key)
    }

    fn counter_mut(&mut self, key: &str) -> Option<&mut Counter> {
        self.counters.get_mut(key)
    }

    fn insert_counter(&mut self, key: Arc<str>, counter: Counter) {
        self.counters.insert(key, counter);
    }

    fn remove_counter(&mut self, key: &str) -> Option<Counter> {
        self.counters.remove(key)
    }

    fn counters(&self) -> impl Iterator<Item = (&Arc<str>, &Counter)> {
        self.counters.iter()
    }

    fn counter_count(&self) -> usize {
        self.counters.len()
    }

    fn keeps_own_counter(&self, hash: &Arc<str>, template: &Arc<str>) -> bool {
        self.own_counter.contains(&(hash.clone(), template.clone()))
    }

    fn learn_own_counter(&mut self, hash: Arc<str>, template: Arc<str>) {
        self.own_counter.insert((hash, template));
    }

    fn own_counter_count(&self) -> usize {
        self.own_counter.len()
    }

    fn global_locked_until(&self, token: u64) -> Micros {
        self.tokens.get(&token).map_or(0, |t| t.locked_until)
    }

    fn lock_global(&mut self, token: u64, until: Micros) {
        let t = self.token(token);
        t.locked_until = t.locked_until.max(until);
    }

    fn global_used(&mut self, token: u64, now: Micros, window: Micros) -> u64 {
        self.token(token).used(now, window)
    }

    fn global_next_free(&self, token: u64, now: Micros, window: Micros) -> Micros {
        self.tokens
            .get(&token)
            .and_then(|t| t.done.front().copied())
            .unwrap_or(now)
            .saturating_add(window)
    }

    fn global_take(&mut self, token: u64) {
        self.token(token).in_flight += 1;
    }

    fn global_release(&mut self, token: u64, now: Micros) {
        let t = self.token(token);
        t.in_flight = t.in_flight.saturating_sub(1);
        t.done.push_back(now);
    }

    fn disable_token(&mut self, token: u64) {
        self.token(token).disabled = true;
    }

    fn token_disabled(&self, token: u64) -> bool {
        self.tokens.get(&token).is_some_and(|t| t.disabled)
    }

    fn has_reservations(&self, token: u64) -> bool {
        self.tokens
            .get(&token)
            .is_some_and(|t| !t.reserved.is_empty())
    }

    fn reservations(&self, token: u64) -> impl Iterator<Item = (u64, Reservation)> {
        self.tokens
            .get(&token)
            .into_iter()
            .flat_map(|t| t.reserved.iter().map(|(k, r)| (*k, *r)))
    }

    fn reserve(&mut self, token: u64, key: u64, r: Reservation, now: Micros, window: Micros) {
        let t = self.token(token);
        if t.reserved.len() > RESERVATIONS_BEFORE_PRUNING {
            t.reserved
                .retain(|_, r| r.ready_at.saturating_add(window) >= now);
        }
        t.reserved.insert(key, r);
    }

    fn use_reservation(&mut self, token: u64, key: u64) -> u32 {
        self.tokens
            .get_mut(&token)
            .and_then(|t| t.reserved.get_mut(&key))
            .map_or(0, |r| {
                r.count = r.count.saturating_sub(1);
                r.count
            })
    }

    fn unreserve(&mut self, token: u64, key: u64) {
        if let Some(t) = self.tokens.get_mut(&token) {
            t.reserved.remove(&key);
        }
    }

    fn ban_check(&self, now: Micros) -> BanCheck {
        self.ban.check(now)
    }

    fn banned(&self) -> bool {
        self.ban.active
    }

    fn record_ban(&mut self, now: Micros, first: Micros, max: Micros) -> Micros {
        self.ban.record(now, first, max)
    }

    fn lift_ban(&mut self) {
        self.ban = Ban::default();
    }

    fn start_ban_probe(&mut self) {
        self.ban.probe_in_flight = true;
    }

    fn end_ban_probe(&mut self) {
        self.ban.probe_in_flight = false;
    }

    fn banned_for(&self, now: Micros) -> Option<Micros> {
        self.ban.active.then(|| self.ban.until.saturating_sub(now))
    }

    fn ban_probe_in_flight(&self) -> bool {
        self.ban.probe_in_flight
    }

    fn invalid_count(&mut self, now: Micros, window: Micros) -> usize {
        self.invalid.count(now, window)
    }

    fn record_invalid(&mut self, now: Micros, window: Micros, keep: usize) -> usize {
        self.invalid.record(now, keep);
        self.invalid.count(now, window)
    }

    fn global_use(&mut self, now: Micros, window: Micros) -> Vec<(u64, u64)> {
        self.tokens
            .iter_mut()
            .map(|(t, s)| (*t, s.used(now, window)))
            .collect()
    }

    fn global_in_flight(&self) -> u64 {
        self.tokens.values().map(|t| u64::from(t.in_flight)).sum()
    }

    fn reservation_count(&self) -> usize {
        self.tokens.values().map(|t| t.reserved.len()).sum()
    }

    fn disabled_tokens(&self) -> usize {
        self.tokens.values().filter(|t| t.disabled).count()
    }
}
