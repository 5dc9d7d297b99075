//! The client's charge while the global cap decides: a reservation, given back if the decision is
//! dropped before it is made (the client went away, a timeout layer fired), so a request that never
//! reached the service costs its client nothing.

use std::sync::Arc;

use ratelimit_core::{Decision, PolicySet, Store};

use super::{Action, Shared};
use crate::key::KeyBuf;
use crate::observe::KeyHash;
use crate::tier::Entry;

/// `cost` units charged to `key` under `set`. Dropped while armed, it refunds them through
/// [`Store::refund_detached`] (at once for the in-memory store, from a task of its own for Redis).
pub(crate) struct Reservation<'a, S: Store<[u8], PolicySet>> {
    store: &'a S,
    set: &'a PolicySet,
    key: &'a KeyBuf,
    cost: u64,
    armed: bool,
}

impl<'a, S: Store<[u8], PolicySet>> Reservation<'a, S> {
    pub(crate) fn new(store: &'a S, set: &'a PolicySet, key: &'a KeyBuf, cost: u64) -> Self {
        Reservation {
            store,
            set,
            key,
            cost,
            armed: cost > 0,
        }
    }

    /// The request goes through: the charge stays.
    pub(crate) fn keep(mut self) {
        self.armed = false;
    }

    /// The global cap refused: the charge is given back now. Still armed while the refund is awaited: if
    /// this is dropped mid-refund, the refund is sent again from the guard (a refund never raises a
    /// policy above its capacity).
    pub(crate) async fn give_back(mut self) {
        if !self.armed {
            return;
        }
        let refunded = self
            .store
            .refund(self.set, self.key.as_bytes(), self.cost)
            .await;
        self.armed = false;
        if let Err(e) = refunded {
            tracing::warn!(error = %e, key = %KeyHash::of(self.key.as_bytes()), "could not refund a reservation after the global cap rejected");
        }
    }
}

impl<S: Store<[u8], PolicySet>> Drop for Reservation<'_, S> {
    fn drop(&mut self) {
        if self.armed {
            self.store
                .refund_detached(self.set, self.key.as_bytes(), self.cost);
        }
    }
}

/// A client's charge made on the spot ([`Store::check_now`]) while the global cap must still be awaited:
/// the owned form of a [`Reservation`], moved into the boxed check. Dropped before that check first runs
/// (the response future dropped unpolled), it gives the charge back.
pub(crate) struct HeldCharge<S: Store<[u8], PolicySet> + 'static> {
    shared: Arc<Shared<S>>,
    entry: Arc<Entry>,
    key: KeyBuf,
    cost: u64,
    armed: bool,
}

impl<S: Store<[u8], PolicySet> + 'static> HeldCharge<S> {
    pub(crate) fn new(shared: Arc<Shared<S>>, entry: Arc<Entry>, key: KeyBuf, cost: u64) -> Self {
        HeldCharge {
            shared,
            entry,
            key,
            cost,
            armed: cost > 0,
        }
    }

    /// Awaits the cap's check; from here a [`Reservation`] holds the charge.
    pub(crate) async fn check_cap(mut self, primary: Decision, cap: Arc<Entry>) -> Action {
        self.armed = false;
        self.shared
            .run_cap(primary, &self.entry, &cap, &self.key, self.cost)
            .await
    }
}

impl<S: Store<[u8], PolicySet> + 'static> Drop for HeldCharge<S> {
    fn drop(&mut self) {
        if self.armed {
            self.shared
                .store
                .refund_detached(&self.entry.set, self.key.as_bytes(), self.cost);
        }
    }
}
