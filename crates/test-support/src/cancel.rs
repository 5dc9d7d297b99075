//! Cancellation at every await, as a tested property.
//!
//! A future that changes shared state across an await must leave nothing behind when it is dropped at
//! any poll. [`drop_after_polls`] drives a future for exactly `k` polls (each poll happens when the future
//! itself asked to be woken, so timers and I/O make real progress) and drops it if it has not finished;
//! [`at_every_poll`] does that for `k = 1, 2, …` until the future finishes on its own, running a check
//! after each drop.
//!
//! ```
//! use ratelimit_test_support::cancel::{at_every_poll, drop_after_polls};
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() {
//! let unfinished = drop_after_polls(tokio::task::yield_now(), 1).await;
//! assert!(unfinished.is_none(), "dropped after its first poll");
//! let points = at_every_poll(
//!     || async { tokio::task::yield_now().await; 7 },
//!     |_k, out| async move { assert!(out.is_none() || out == Some(7)) },
//! )
//! .await;
//! assert_eq!(points, 1);
//! # }
//! ```

use std::future::Future;
use std::pin::pin;
use std::task::Poll;

/// Polls past this many mean the future never finishes on its own: a test bug, not a property.
const POLLS_BEFORE_GIVING_UP: usize = 10_000;

/// Drives `fut` for at most `polls` polls; drops it if it is still pending then. `Some(output)` when it
/// finished within them.
pub async fn drop_after_polls<F: Future>(fut: F, polls: usize) -> Option<F::Output> {
    let mut fut = pin!(fut);
    let mut pending = 0;
    std::future::poll_fn(move |cx| match fut.as_mut().poll(cx) {
        Poll::Ready(out) => Poll::Ready(Some(out)),
        Poll::Pending => {
            pending += 1;
            if pending >= polls {
                Poll::Ready(None)
            } else {
                Poll::Pending
            }
        }
    })
    .await
}

/// For `k = 1, 2, …`: builds a future with `make`, drops it after its `k`-th poll, then runs
/// `after(k, output)` (output is `None` when it was dropped), until a future finishes within `k` polls.
/// Returns how many cancellation points were exercised (the number of polls that returned pending);
/// callers assert it is at least the number of awaits they meant to cover, so the test cannot pass by
/// never cancelling anything.
pub async fn at_every_poll<M, Fut, A, AFut>(mut make: M, mut after: A) -> usize
where
    M: FnMut() -> Fut,
    Fut: Future,
    A: FnMut(usize, Option<Fut::Output>) -> AFut,
    AFut: Future<Output = ()>,
{
    for k in 1..=POLLS_BEFORE_GIVING_UP {
        let out = drop_after_polls(make(), k).await;
        let finished = out.is_some();
        after(k, out).await;
        if finished {
            return k - 1;
        }
    }
    panic!("the future did not finish within {POLLS_BEFORE_GIVING_UP} polls");
}
