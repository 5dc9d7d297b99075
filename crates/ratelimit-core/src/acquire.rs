//! Waiting until a request is allowed.
//!
//! [`acquire`] checks, and when limited sleeps exactly the retry time and checks again, until the cost is
//! charged or the wait would pass a deadline. It suits outbound calls and bulk jobs (the seeds'
//! `LeakyBucket.acquire()`); a server should answer 429 instead of waiting.
//!
//! **Cancel safety.** Dropping the future at any await leaves nothing charged that the caller did not
//! get:
//!
//! * while waiting out a limit, nothing is held: a limited check charges nothing, so a drop mid-sleep
//!   loses nothing;
//! * a shaping policy's admission is a *reservation* made before its wait (an allowed decision with a
//!   [`delay`](crate::Decision::delay)), which keeps concurrent callers in order. A guard gives it back if
//!   the future is dropped during that delay, through [`Store::refund_detached`]: on the spot for the
//!   in-memory store, from a task of its own for the Redis store (the slot is free again one round trip
//!   later).
//!
//! What no caller can undo is a check dropped while its request is on the wire to a networked store:
//! the store may have charged it, and nobody learns the answer.
//!
//! ```
//! use std::time::Duration;
//! use ratelimit_core::{acquire, Gcra, MemoryStore, Quota};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let store = MemoryStore::<String, Gcra>::new();
//! let rule = Gcra::new(Quota::per_second(100).burst(1).build()?);
//! let started = std::time::Instant::now();
//! for _ in 0..3 {
//!     acquire(&store, &rule, "bulk-job", 1, Duration::from_secs(1)).await?;
//! }
//! // The second and third waited one emission interval (10 ms) each.
//! assert!(started.elapsed() >= Duration::from_millis(20));
//! # Ok(())
//! # }
//! ```

use std::time::Duration;

use crate::algorithm::Rule;
use crate::decision::{Decision, Outcome};
use crate::store::{Store, StoreError};

/// Why [`acquire`] gave up.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AcquireError {
    /// The wait needed would pass the deadline; nothing was charged.
    #[error(
        "rate limited: allowed in {needed:?}, more than the {max_wait:?} the caller would wait"
    )]
    Deadline {
        /// How long the caller would have had to wait from the last check.
        needed: Duration,
        /// The caller's budget.
        max_wait: Duration,
    },
    /// The cost can never be allowed (it exceeds a policy's capacity).
    #[error("cost can never be allowed: it exceeds policy #{policy}'s capacity of {limit}")]
    Never {
        /// Index of the policy.
        policy: usize,
        /// Its capacity.
        limit: u64,
    },
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Waits until `cost` units are charged for `key`, for at most `max_wait`; see the [module docs](self).
pub async fn acquire<S, K, R>(
    store: &S,
    rule: &R,
    key: &K,
    cost: u64,
    max_wait: Duration,
) -> Result<Decision, AcquireError>
where
    S: Store<K, R>,
    K: ?Sized,
    R: Rule,
{
    let deadline = tokio::time::Instant::now() + max_wait;
    loop {
        let decision = store.check(rule, key, cost).await?;
        let now = tokio::time::Instant::now();
        match decision.outcome() {
            Outcome::Allowed => {
                let delay = decision.delay();
                if !delay.is_zero() {
                    let guard = RefundOnDrop {
                        store,
                        rule,
                        key,
                        cost,
                        armed: true,
                    };
                    tokio::time::sleep(delay).await;
                    guard.disarm();
                }
                return Ok(decision);
            }
            Outcome::Never => {
                return Err(AcquireError::Never {
                    policy: decision.binding_index(),
                    limit: decision.limit(),
                })
            }
            Outcome::Limited => {
                let wait = decision.retry_after().unwrap_or(Duration::ZERO);
                if now + wait > deadline {
                    return Err(AcquireError::Deadline {
                        needed: wait,
                        max_wait,
                    });
                }
                tokio::time::sleep(wait).await;
            }
        }
    }
}

struct RefundOnDrop<'a, S: Store<K, R>, K: ?Sized, R: Rule> {
    store: &'a S,
    rule: &'a R,
    key: &'a K,
    cost: u64,
    armed: bool,
}

impl<S: Store<K, R>, K: ?Sized, R: Rule> RefundOnDrop<'_, S, K, R> {
    fn disarm(mut self) {
        self.armed = false;
    }
}

impl<S: Store<K, R>, K: ?Sized, R: Rule> Drop for RefundOnDrop<'_, S, K, R> {
    fn drop(&mut self) {
        if self.armed {
            self.store.refund_detached(self.rule, self.key, self.cost);
        }
    }
}
