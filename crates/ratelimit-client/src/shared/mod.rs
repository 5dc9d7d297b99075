//! Many processes, one budget: the limiter's shared state in Redis (feature `redis`).
//!
//! ```no_run
//! use ratelimit_client::{profile::Discord, shared::SharedBudget, Limiter};
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! // Every process (shard, worker, proxy replica) behind one token and one egress IP:
//! let budget = SharedBudget::builder()
//!     .namespace("my-bot")
//!     .instances(4)
//!     .connect("redis://127.0.0.1:6379/")
//!     .await?;
//! let limiter = Limiter::builder(Discord::new()).shared(budget).build()?;
//! # Ok(()) }
//! ```
//!
//! # The model
//!
//! Each process keeps its own scheduler (its queues, its callers' order, how many a sub-limit's window
//! takes, bucket shapes). Before a request leaves, the process also *reserves* it in Redis; the
//! reservation is one atomic script on the Redis server's clock (`TIME`), so every process counts on one
//! clock, whatever their own clocks say:
//!
//! * **the token's global limit**: at most `N` requests in any global window, exactly. A sorted set holds
//!   one slot per request: taken at reservation, kept until one window after the response (the upstream
//!   counts a request at an unknown moment before its response).
//! * **the global lock** after a global 429, **the ban** after a Cloudflare-style block (after its
//!   backoff one request, from any process, probes it, and the others wait for its answer), and **the
//!   invalid-request budget** (401, 403, non-shared 429) of the egress identity.
//! * **the route → counter map**: which upstream bucket a route draws on, learned from the first
//!   response and remembered for a day. A route no process knows sends one request, from one process,
//!   and the others wait for its response.
//! * **each counter's window**: what may still be sent, and when the window ends. What may be sent is
//!   the smallest remaining count the window's responses reported (the limit until one did), less the
//!   requests in flight and those *lost* (ended without a response, so perhaps counted): every request
//!   that may be counted after that count. A reservation puts one more in flight. The smallest count
//!   never rises, so a late or reordered response cannot make room that is not there; room comes back
//!   when a request in flight turns out to be in the count already, or not counted at all (a shared-scope
//!   429, which also holds every process for its `Retry-After`). The window ends at the latest `response
//!   time + reset-after` of its responses (late by the way back), or earlier for a bucket its responses
//!   showed to run fixed windows (below); the next one starts from
//!   the limit less what is still in flight. A request of an earlier window answered in this one stays
//!   taken until its count ends (its `response time + reset-after`), and the window does not end before
//!   that (a draining bucket holds it until then). A window no response describes (its requests
//!   cancelled, failed, refused by a global 429, or their process killed) ends one window length after
//!   its last reservation, once nothing is in flight.
//!
//! The response is reported (*reconciled*) in the background: the request's path waits for one round
//! trip, the reservation. A request that ends without a response (cancelled, failed, timed out)
//! *releases* its reservation: its global slot is kept one window (it may have reached the upstream),
//! and it stays taken from its counter's window as lost. Both run from guards, so a dropped future gives
//! back what it holds. Reservations also expire on their own after [`lease`](SharedBudgetBuilder::lease)
//! (default 2 s): a process killed with requests in flight holds their slots no longer than that.
//!
//! **Early release**, as in one process ([`Config::latency_compensation`](crate::Config::latency_compensation)):
//! each report carries its request's round trip and the time since its send, so the script bounds the
//! window's reset from both sides on its own clock (`send + reset-after ≤ reset ≤ response +
//! reset-after`, the send placed late by the report's way in: the safe direction), and once 8 round trips
//! were seen it ends a fixed window when requests reserved then arrive at the reset: the later of the
//! largest lower bound (plus its spread over their number) and the smallest upper bound less the
//! smallest round trip, plus the limiter's margin. A request reserved then still has to reach its process
//! and leave. Only for buckets whose responses showed fixed windows: a drain's reset moves with every
//! request.
//!
//! **Drains** (leaky buckets) are told from fixed windows as in one process: a drain reports a
//! reset-after that grows with the count, so its responses agree on one drain interval. Once they show
//! one, the script paces the bucket: requests leave while it has room as counted here (the latest moment
//! a response said it is empty, plus an interval per request in flight or reserved since), with one
//! request's room kept free and more for the spread of the paced round trips. A sub-limit's refusal holds its body shape (the request body's top-level keys) for every
//! process until its `Retry-After`; how many requests a sub-window takes, each process learns alone.
//! Requests waiting for a counter's window to end *claim* global slots for that moment: within a window
//! of it, other routes' requests leave as many slots as wait (up to the counter's limit), unless they
//! have been held back a whole window already. (The in-process scheduler weighs queue lengths more
//! finely.)
//!
//! # Keys
//!
//! Every key starts with `{namespace}:`, which is also its Redis Cluster hash tag: one namespace is one
//! slot, so every step is one script over keys of one node (it derives the counter keys from the route
//! map, in the same slot). Credentials never appear in keys: tokens are named by a SHA-256 digest of the
//! namespace and the credential. Counters and route maps expire a day after their last use, slots and
//! in-flight marks with their window or lease.
//!
//! # When Redis fails
//!
//! Each call has a [`timeout`](SharedBudgetBuilder::timeout) (default 100 ms). Failures feed the same
//! circuit breaker as the Redis store's ([`ratelimit_core::store::redis::breaker`]); while it is open,
//! each process decides alone: its own scheduler's bucket limits, and the global limit divided by the
//! declared [`instances`](SharedBudgetBuilder::instances), each slot held until one window after its
//! request ends, as in Redis. The change is logged once each way (WARN, INFO; each kind of failed call
//! also once, then at most once a minute with the count since), [`SharedBudget::is_degraded`] and the
//! gauge `ratelimit_client_shared_degraded` say so, and one call per cooldown probes Redis until it
//! answers. Replies are checked before they are believed (shape,
//! range, and the request id every reply echoes); a timeout or another call's reply replaces the
//! connection. `ratelimit_client_shared_calls_total`, `…_errors_total{kind}`, `…_fallbacks_total` and
//! `…_reconnects_total{reason}` count what happened.

mod budget;
mod builder;
mod fallback;
mod join;
mod lease;
mod script;
#[cfg(test)]
mod step_tests;

pub use budget::{SharedBudget, SharedStats};
pub use builder::{SharedBudgetBuilder, SharedError};
/// The redis-rs this module is built on, for [`SharedBudgetBuilder::from_client`] (a `redis::Client` of
/// another version would not be the same type).
pub use redis;

pub(crate) use budget::Ask;
pub(crate) use lease::{Gate, Lease, Named, Report, Timing};
