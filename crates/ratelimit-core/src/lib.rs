//! # ratelimit-core
//!
//! Exact rate-limiting algorithms as pure, clock-injected state machines, and the stores that hold their
//! state.
//!
//! * **Time** is injected: a [`Clock`] gives integer microseconds; [`SystemClock`] in production,
//!   [`ManualClock`] in tests. No decision reads the wall clock.
//! * **Quotas** are rates, validated when built: [`Quota::per_second`], [`Quota::per_minute`], …,
//!   [`QuotaBuilder::burst`].
//! * **Algorithms** ([`algorithm`]): [`Gcra`], [`TokenBucket`], [`LeakyBucket`] (meter), [`Shaper`] (leaky
//!   bucket as a queue), [`FixedWindow`], [`SlidingLog`], [`SlidingWindow`] (counter). Each is a pure
//!   function `(state, now, cost) → (status, new state)` in integer arithmetic.
//! * **Decisions** ([`Decision`]): allowed, limited (with the retry time) or never (the cost exceeds the
//!   capacity), with limit, remaining and reset for every policy checked.
//! * **Policies** ([`Policy`], [`PolicySet`]): named algorithms, several checked all-or-nothing.
//! * **Stores** ([`Store`]): [`MemoryStore`] (bounded, concurrent, exact) here; Redis behind a feature.
//!
//! ```
//! use ratelimit_core::{Gcra, MemoryStore, Quota};
//!
//! let rule = Gcra::new(Quota::per_second(5).build()?);
//! let store = MemoryStore::<String, Gcra>::new();
//! let allowed = (0..10).filter(|_| store.check(&rule, "alice", 1).map_or(false, |d| d.is_allowed())).count();
//! assert_eq!(allowed, 5);
//! # Ok::<(), ratelimit_core::QuotaError>(())
//! ```
#![cfg_attr(docsrs, feature(doc_cfg))]
#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used))]

pub mod algorithm;
pub mod clock;
#[cfg(feature = "serde")]
#[cfg_attr(docsrs, doc(cfg(feature = "serde")))]
pub mod config;
pub mod decision;
pub mod log_once;
pub mod policy;
pub mod quota;
pub mod store;

#[cfg(feature = "tokio")]
#[cfg_attr(docsrs, doc(cfg(feature = "tokio")))]
pub mod acquire;

#[cfg(feature = "tokio")]
pub use acquire::{acquire, AcquireError};
pub use algorithm::{
    Algorithm, FixedWindow, Gcra, LeakyBucket, Rule, Shaper, SlidingLog, SlidingWindow, TokenBucket,
};
pub use clock::{Clock, ManualClock, Micros, SystemClock};
pub use decision::{Decision, Outcome, Status, MAX_POLICIES};
pub use policy::{
    AlgorithmKind, AnyAlgorithm, AnyState, Policy, PolicyError, PolicySet, PolicyStates,
};
pub use quota::{Quota, QuotaBuilder, QuotaError};
#[cfg(feature = "redis")]
pub use store::redis::{RedisClock, RedisStore, RedisStoreBuilder};
pub use store::{MemoryStore, MemoryStoreBuilder, OnFailure, Overflow, Store, StoreError};

/// The crate's README (its crates.io page), compiled and run as a doc test so its code stays true.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
