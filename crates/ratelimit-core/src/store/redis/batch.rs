//! Coalescing: calls that arrive while enough others are in flight wait, and go to Redis together.
//!
//! A script call costs Redis a fixed price (command parsing, the script's setup, `TIME`, the reply) on
//! top of its keys' work, and Redis runs one call at a time. Under load, most of a naive limiter's server
//! time is that fixed price. So the store lets a few calls (`max_in_flight`) go out on their own — a lone
//! caller never waits for anybody — and queues the rest; when an in-flight call finishes, whatever queued
//! meanwhile goes out as **one** call of the batch entry point (`rl_batch` in `scripts/main.lua`), which
//! runs each queued call exactly as it would have run alone, one after the other, on one reading of the
//! server's clock. Each caller still gets its own decision, made atomically; only the round trips and the
//! fixed price are shared.
//!
//! Deadlines: a queued caller has no timer of its own. Every call in flight is bounded by the store's
//! timeout, so the batch holding a caller starts before the caller's deadline or fails it at once, and the
//! batch itself runs under its oldest caller's deadline.
//!
//! Only a single-node connection coalesces: the identities of one batch hash to different Cluster slots.

use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use redis::Value;
use tokio::sync::oneshot;
// tokio's clock, the one the call timeouts run on: a deadline and the timer that enforces it agree,
// paused clocks included.
use tokio::time::Instant;

use super::keys::{self, IdentityHash};
use super::script::{self, Op, Token};
use super::Inner;
use crate::clock::Micros;
use crate::policy::PolicySet;
use crate::store::StoreError;

/// The most calls one batch carries (bounded so one reply stays small and one call stays short).
const MAX_BATCH: usize = 256;

/// What a caller gets back.
pub(crate) type Reply = Result<Value, StoreError>;

/// The coalescing state of one store: one lane per script variant (a batch runs one script).
pub(crate) struct Batcher {
    lanes: Box<[Mutex<Lane>]>,
    max_in_flight: usize,
}

#[derive(Default)]
struct Lane {
    in_flight: usize,
    queue: Vec<Waiter>,
}

/// A queued call.
pub(crate) struct Waiter {
    op: Op,
    set: PolicySet,
    hash: IdentityHash,
    cost: u64,
    client_now: Option<(Micros, Micros)>,
    token: Token,
    deadline: Instant,
    tx: oneshot::Sender<Reply>,
}

/// How a call goes to Redis.
pub(crate) enum Entry<'a> {
    /// On its own, now; the slot is given back (and the queue sent on) when it drops.
    Direct(Slot<'a>),
    /// In a batch; the reply arrives here.
    Queued(oneshot::Receiver<Reply>),
}

/// An in-flight call's place in its lane. It borrows the store (the `Arc` is cloned only when a batch
/// has to be spawned, not for every call).
pub(crate) struct Slot<'a> {
    inner: &'a Arc<Inner>,
    mask: u8,
}

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        if let Some(batch) = self.inner.batcher_next(self.mask) {
            spawn(self.inner.clone(), self.mask, batch);
        }
    }
}

impl Batcher {
    pub(crate) fn new(max_in_flight: usize) -> Self {
        Batcher {
            lanes: (0..=script::ALL).map(|_| Mutex::default()).collect(),
            max_in_flight,
        }
    }

    /// Lets the call go out on its own while fewer than `max_in_flight` are in flight, else queues it.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn enter<'a>(
        &self,
        inner: &'a Arc<Inner>,
        mask: u8,
        op: Op,
        set: &PolicySet,
        hash: &IdentityHash,
        cost: u64,
        client_now: Option<(Micros, Micros)>,
        token: Token,
        timeout: Duration,
    ) -> Entry<'a> {
        let mut lane = self.lane(mask).lock();
        if lane.in_flight < self.max_in_flight {
            lane.in_flight += 1;
            return Entry::Direct(Slot { inner, mask });
        }
        let (tx, rx) = oneshot::channel();
        lane.queue.push(Waiter {
            op,
            set: set.clone(),
            hash: *hash,
            cost,
            client_now,
            token,
            deadline: Instant::now() + timeout,
            tx,
        });
        Entry::Queued(rx)
    }

    fn lane(&self, mask: u8) -> &Mutex<Lane> {
        &self.lanes[usize::from(mask & script::ALL)]
    }

    /// Calls in flight and calls queued, over every lane.
    pub(crate) fn occupancy(&self) -> (usize, usize) {
        self.lanes.iter().fold((0, 0), |(f, q), lane| {
            let lane = lane.lock();
            (f + lane.in_flight, q + lane.queue.len())
        })
    }

    /// Called as an in-flight call ends: the next batch (its slot handed over) or `None` (slot freed).
    pub(crate) fn next(&self, mask: u8) -> Option<Vec<Waiter>> {
        let mut lane = self.lane(mask).lock();
        if lane.queue.is_empty() {
            lane.in_flight = lane.in_flight.saturating_sub(1);
            return None;
        }
        if lane.queue.len() <= MAX_BATCH {
            return Some(std::mem::take(&mut lane.queue));
        }
        Some(lane.queue.drain(..MAX_BATCH).collect())
    }
}

/// Sends batches on a task of their own, so that no caller's cancellation can strand the others.
fn spawn(inner: Arc<Inner>, mask: u8, batch: Vec<Waiter>) {
    // Made before the task, so that a task dropped unpolled (a runtime shutting down) gives it back too.
    let mut slot = TaskSlot {
        inner,
        mask,
        held: true,
    };
    match tokio::runtime::Handle::try_current() {
        Ok(handle) => {
            handle.spawn(async move {
                let mut batch = batch;
                loop {
                    slot.inner.send_batch(mask, batch).await;
                    match slot.next() {
                        Some(next) => batch = next,
                        None => return,
                    }
                }
            });
        }
        Err(_) => {
            // Only when a call is dropped outside any runtime (a runtime shutting down): nobody can
            // send. The slot's drop answers the rest of the queue.
            answer_unsent(batch);
        }
    }
}

/// The lane slot a batch task holds. However the task ends — finished, or dropped mid-send by a runtime
/// shutting down — the slot is given back and nobody is left queued behind it.
struct TaskSlot {
    inner: Arc<Inner>,
    mask: u8,
    held: bool,
}

impl TaskSlot {
    /// The next batch to send on this slot, or `None` when the queue is empty (the slot is then freed).
    fn next(&mut self) -> Option<Vec<Waiter>> {
        let next = self.inner.batcher_next(self.mask);
        self.held = next.is_some();
        next
    }
}

impl Drop for TaskSlot {
    fn drop(&mut self) {
        if !self.held {
            return;
        }
        while let Some(batch) = self.inner.batcher_next(self.mask) {
            answer_unsent(batch);
        }
    }
}

fn answer_unsent(batch: Vec<Waiter>) {
    for w in batch {
        w.answer(Err(StoreError::Unavailable(
            "no tokio runtime to send the queued Redis calls on".to_owned(),
        )));
    }
}

/// The same error for every caller of a failed batch.
pub(crate) fn duplicate(e: &StoreError) -> StoreError {
    match e {
        StoreError::Timeout(d) => StoreError::Timeout(*d),
        StoreError::Unavailable(s) => StoreError::Unavailable(s.clone()),
        StoreError::Protocol(s) => StoreError::Protocol(s.clone()),
        StoreError::Unsupported(s) => StoreError::Unsupported(s.clone()),
        StoreError::Full { max_keys } => StoreError::Full {
            max_keys: *max_keys,
        },
        StoreError::KeyState { keys, reason } => StoreError::KeyState {
            keys: keys.clone(),
            reason: reason.clone(),
        },
        StoreError::Backend(b) => StoreError::Backend(b.to_string().into()),
    }
}

impl Waiter {
    pub(crate) fn deadline(&self) -> Instant {
        self.deadline
    }

    /// The token the script echoes in this call's entry of the batch reply.
    pub(crate) fn token(&self) -> Token {
        self.token
    }

    /// Whether the caller has dropped its future.
    pub(crate) fn abandoned(&self) -> bool {
        self.tx.is_closed()
    }

    pub(crate) fn answer(self, reply: Reply) {
        // The caller may have given up after the batch was sent; its decision stands in Redis, as for a
        // call cancelled after it went out.
        let _ = self.tx.send(reply);
    }
}

/// Builds the batch command for `batch` (every waiter of one lane, so one script).
pub(crate) fn command(functions: bool, prefix: &str, mask: u8, batch: &[Waiter]) -> redis::Cmd {
    let script = script::script(mask);
    let shapes: Vec<(usize, usize)> = batch
        .iter()
        .map(|w| script::shape(w.op, &w.set, w.client_now))
        .collect();
    let keys: usize = shapes.iter().map(|s| s.0).sum();
    let args: usize = shapes.iter().map(|s| s.1).sum();
    let mut cmd = redis::Cmd::with_capacity(
        5 + keys + 2 * batch.len() + args,
        64 + keys * 80 + args * 10,
    );
    if functions {
        cmd.arg("FCALL").arg(&script.batch_function);
    } else {
        cmd.arg("EVALSHA").arg(&script.sha);
    }
    cmd.arg(keys);
    let mut base = String::new();
    for w in batch {
        keys::key_base(&mut base, prefix, &w.hash);
        script::push_keys(&mut cmd, &w.set, &mut base, w.client_now);
    }
    if !functions {
        cmd.arg("B");
    }
    cmd.arg(batch.len());
    for (k, a) in &shapes {
        cmd.arg(*k).arg(*a);
    }
    for w in batch {
        script::push_args(&mut cmd, w.op, &w.set, w.client_now, w.cost, w.token, true);
    }
    cmd
}
