//! Test support shared by every crate's tests, examples and benches (not published).
//!
//! * [`redis_server`]: throwaway `redis-server` processes (a single node, or a local 3-master Cluster) on
//!   free loopback ports, killed and cleaned up on drop. A missing `redis-server` fails loudly.
//! * [`fault_proxy`]: a TCP proxy between a client and a server that delays, black-holes, resets,
//!   half-closes, corrupts or refuses connections on command, open connections included.
//! * [`alloc`]: a counting global allocator, for tests that bound memory in bytes or count allocations.
//! * [`cancel`]: drives a future for exactly `k` polls and then drops it, to prove that cancelling at
//!   any await leaves no shared state behind.
//! * [`poll`]: polls a future once, joins futures in a fixed order, and waits for a condition with a
//!   bound only a hang reaches (instead of sleeping for a guessed time).
//! * [`tls`]: a `redis-server` on a TLS port, with a test CA made by the `openssl` command.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

pub mod alloc;
pub mod cancel;
pub mod fault_proxy;
pub mod poll;
pub mod redis_server;
pub mod tls;
