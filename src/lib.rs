//! # ratelimit
//!
//! Exact, fast rate limiting for Rust services, in both directions.
//!
//! This facade re-exports the workspace's crates behind features:
//!
//! | module | crate | feature | what it holds |
//! |---|---|---|---|
//! | [`core`] | `ratelimit-core` | always | algorithms, quotas, decisions, the in-memory and Redis stores |
//! | `tower` | `ratelimit-tower` | `tower` (default) | a tower `Layer` for axum and hyper servers |
//! | `client` | `ratelimit-client` | `client` | a tower layer for outbound clients that honours upstream limits |
//!
//! ```
//! use ratelimit::core::{Quota, Gcra, MemoryStore};
//!
//! let quota = Quota::per_second(10).burst(20).build()?;
//! let store: MemoryStore<String, Gcra> = MemoryStore::new();
//! let rule = Gcra::new(quota);
//! let decision = store.check(&rule, "alice", 1)?;
//! assert!(decision.is_allowed());
//! assert_eq!(decision.remaining(), 19);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
#![cfg_attr(docsrs, feature(doc_cfg))]

pub use ratelimit_core as core;

#[cfg(feature = "tower")]
#[cfg_attr(docsrs, doc(cfg(feature = "tower")))]
pub use ratelimit_tower as tower;

#[cfg(feature = "client")]
#[cfg_attr(docsrs, doc(cfg(feature = "client")))]
pub use ratelimit_client as client;
