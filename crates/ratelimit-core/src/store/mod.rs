//! Stores: where per-key state lives.
//!
//! A [`Store`] holds the state of every key and applies a [`Rule`] to it atomically: a check on one key
//! sees every earlier check on that key, whichever thread or process made it. Two stores implement the
//! same contract with the same decisions:
//!
//! * [`MemoryStore`] — in this process, bounded, the default;
//! * the Redis store (`redis` feature) — shared by every process that talks to one Redis, Valkey or Redis
//!   Cluster.
//!
//! A store error ([`StoreError`]) means *the store could not answer*. It is never a denial in disguise:
//! callers choose what to do about it (fail open, fail closed, fall back to a local limiter).
//!
//! ```
//! use ratelimit_core::{Gcra, MemoryStore, Quota, Store};
//!
//! async fn admit<S: Store<str, Gcra>>(store: &S, rule: &Gcra, user: &str) -> bool {
//!     match store.check(rule, user, 1).await {
//!         Ok(decision) => decision.is_allowed(),
//!         Err(_) => true, // fail open: this caller prefers availability
//!     }
//! }
//!
//! # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
//! let store = MemoryStore::<String, Gcra>::new();
//! let rule = Gcra::new(Quota::per_second(1).build()?);
//! assert!(admit(&store, &rule, "alice").await);
//! assert!(!admit(&store, &rule, "alice").await);
//! # Ok::<(), ratelimit_core::QuotaError>(())
//! # }).unwrap();
//! ```

use std::future::Future;

use crate::algorithm::Rule;
use crate::decision::Decision;

mod failure;
pub mod memory;
#[cfg(feature = "redis")]
#[cfg_attr(docsrs, doc(cfg(feature = "redis")))]
pub mod redis;

pub use failure::OnFailure;
pub use memory::{MemoryStore, MemoryStoreBuilder, Overflow};

/// Why a store could not answer. Never a rate-limit decision.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The in-memory store is at its key cap, every key is still active, and its [`Overflow`] policy is
    /// [`Overflow::Reject`].
    #[error("in-memory store is full ({max_keys} keys, all still limiting): raise max_keys, or use Overflow::EvictSoonest")]
    Full {
        /// The configured cap.
        max_keys: usize,
    },
    /// The backend did not answer in time.
    #[error("store timed out after {0:?}")]
    Timeout(std::time::Duration),
    /// The backend is known to be down (for instance, a circuit breaker is open) and was not asked.
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// The backend answered with an error, or could not be reached.
    #[error("store backend error: {0}")]
    Backend(#[source] Box<dyn std::error::Error + Send + Sync + 'static>),
    /// The backend's reply did not have the expected shape.
    #[error("store protocol error: {0}")]
    Protocol(String),
    /// One identity's state in the backend is not what this limiter wrote (a foreign value at its key, or
    /// state that fails the limiter's checks). Only this identity's requests are affected: the backend
    /// itself answers.
    #[error("{keys} {reason}: the key holds data this limiter did not write; delete it, or give the limiter a dedicated key prefix or database")]
    KeyState {
        /// Which keys (a pattern such as `rl:{…}:*`).
        keys: String,
        /// What the backend said.
        reason: String,
    },
    /// The rule cannot run on this store.
    #[error("rule not supported by this store: {0}")]
    Unsupported(String),
}

/// The contract every store implements with identical semantics; see the [module docs](self).
///
/// `K` is the key type the store accepts (for [`MemoryStore<K, R>`], anything `K` borrows as), `R` the rule.
pub trait Store<K: ?Sized, R: Rule>: Send + Sync {
    /// Checks `cost` units for `key`: charges them if every policy of `rule` allows, else charges nothing
    /// (unless a policy penalises).
    fn check(
        &self,
        rule: &R,
        key: &K,
        cost: u64,
    ) -> impl Future<Output = Result<Decision, StoreError>> + Send;

    /// What [`Store::check`] would answer, charging nothing. A cost of 0 reports what is left.
    fn peek(
        &self,
        rule: &R,
        key: &K,
        cost: u64,
    ) -> impl Future<Output = Result<Decision, StoreError>> + Send;

    /// Gives back `cost` units charged earlier, for response-dependent limiting or a cancelled
    /// reservation. Never raises a policy above its full capacity.
    fn refund(
        &self,
        rule: &R,
        key: &K,
        cost: u64,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// [`Store::check`] answered on the spot, for callers that can skip building a future when the store
    /// needs no I/O: `None` means *this store cannot answer without waiting* (the default), and the caller
    /// awaits [`Store::check`] instead. `Some` is exactly what `check` would have answered, with the same
    /// effect on the key's state.
    ///
    /// The in-memory store answers every call (whatever its clock); a networked store answers `None`, or
    /// `Some` only for what it can decide locally. A wrapper store delegates it to keep its inner store's
    /// fast path:
    ///
    /// ```
    /// use ratelimit_core::{Decision, Gcra, MemoryStore, Quota, Store, StoreError};
    ///
    /// /// Counts the checks that had to be awaited.
    /// struct Counted(MemoryStore<String, Gcra>, std::sync::atomic::AtomicU64);
    ///
    /// impl Store<str, Gcra> for Counted {
    ///     async fn check(&self, r: &Gcra, k: &str, c: u64) -> Result<Decision, StoreError> {
    ///         self.1.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    ///         Store::check(&self.0, r, k, c).await
    ///     }
    ///     fn check_now(&self, r: &Gcra, k: &str, c: u64) -> Option<Result<Decision, StoreError>> {
    ///         Store::check_now(&self.0, r, k, c)
    ///     }
    ///     async fn peek(&self, r: &Gcra, k: &str, c: u64) -> Result<Decision, StoreError> {
    ///         Store::peek(&self.0, r, k, c).await
    ///     }
    ///     async fn refund(&self, r: &Gcra, k: &str, c: u64) -> Result<(), StoreError> {
    ///         Store::refund(&self.0, r, k, c).await
    ///     }
    ///     async fn reset(&self, r: &Gcra, k: &str) -> Result<(), StoreError> {
    ///         Store::reset(&self.0, r, k).await
    ///     }
    /// }
    ///
    /// let store = Counted(MemoryStore::new(), Default::default());
    /// let rule = Gcra::new(Quota::per_second(1).build()?);
    /// let first = store.check_now(&rule, "alice", 1);
    /// assert!(matches!(first, Some(Ok(d)) if d.is_allowed()));
    /// assert_eq!(store.1.into_inner(), 0);
    /// # Ok::<(), ratelimit_core::QuotaError>(())
    /// ```
    #[inline]
    fn check_now(&self, rule: &R, key: &K, cost: u64) -> Option<Result<Decision, StoreError>> {
        let _ = (rule, key, cost);
        None
    }

    /// Forgets `key`: its next check sees fresh state.
    fn reset(&self, rule: &R, key: &K) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// [`Store::refund`] from where nothing can wait for it — a `Drop` giving back a cancelled
    /// reservation. The default completes the refund on the spot when the store answers without waiting
    /// (the in-memory store) and logs at `warn` otherwise; a networked store overrides it to send the
    /// refund from a task of its own.
    fn refund_detached(&self, rule: &R, key: &K, cost: u64) {
        let fut = std::pin::pin!(self.refund(rule, key, cost));
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        match fut.poll(&mut cx) {
            std::task::Poll::Ready(Ok(())) => {}
            std::task::Poll::Ready(Err(e)) => {
                tracing::warn!(error = %e, cost, "could not refund a cancelled reservation")
            }
            std::task::Poll::Pending => tracing::warn!(
                cost,
                "cancelled reservation not refunded: this store cannot refund without waiting"
            ),
        }
    }
}
