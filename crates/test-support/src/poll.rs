//! Driving futures by hand, and waiting for conditions instead of sleeping.
//!
//! * [`poll_once`] polls a future exactly once, so a test can put calls in a known state (the first holds
//!   a slot, the rest are queued) before any of them can finish.
//! * [`ready_at_once`] polls a future once with no runtime and returns its output: for what must answer
//!   without waiting (the in-memory store's fast path).
//! * [`join_in_order`] drives several futures on the current task, polling them in index order at every
//!   wake-up, so they reach a shared resource in that order.
//! * [`wait_until`] (and [`wait_until_async`]) polls a condition until it holds, failing the test once a bound that only a hang
//!   would reach has passed: the way to wait for something that must come, where a sleep would guess
//!   how long it takes (and guess wrong on a loaded machine).
//!
//! ```
//! use std::sync::atomic::{AtomicBool, Ordering};
//! use std::sync::Arc;
//! use std::time::Duration;
//! use ratelimit_test_support::poll::{join_in_order, poll_once, wait_until};
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() {
//! let mut yielding = Box::pin(tokio::task::yield_now());
//! assert!(poll_once(&mut yielding).await, "pending after its first poll");
//!
//! let futs: Vec<std::pin::Pin<Box<dyn std::future::Future<Output = u8>>>> =
//!     vec![Box::pin(async { 1 }), Box::pin(async { 2 })];
//! assert_eq!(join_in_order(futs).await, vec![1, 2]);
//!
//! let done = Arc::new(AtomicBool::new(false));
//! let flag = done.clone();
//! tokio::spawn(async move { flag.store(true, Ordering::Relaxed) });
//! wait_until("the task ran", Duration::from_secs(10), || done.load(Ordering::Relaxed)).await;
//! # }
//! ```

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

/// Between two looks at a condition: short enough not to add to a test's time, long enough not to spin.
const CONDITION_POLL_INTERVAL: Duration = Duration::from_millis(1);

/// Polls `fut` exactly once, whatever it answers; whether it is still pending.
pub async fn poll_once<F: Future + Unpin>(fut: &mut F) -> bool {
    std::future::poll_fn(|cx| Poll::Ready(Pin::new(&mut *fut).poll(cx).is_pending())).await
}

/// Drives `futs` to completion on the current task, polling the unfinished ones in index order at every
/// wake-up; their outputs in the same order. Calls made this way reach a store in index order (the first
/// goes out, the rest queue behind it in order), which a spawned task per call would not promise.
pub async fn join_in_order<'a, T>(mut futs: Vec<Pin<Box<dyn Future<Output = T> + 'a>>>) -> Vec<T> {
    let mut out: Vec<Option<T>> = futs.iter().map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut done = true;
        for (f, o) in futs.iter_mut().zip(out.iter_mut()) {
            if o.is_none() {
                match f.as_mut().poll(cx) {
                    Poll::Ready(v) => *o = Some(v),
                    Poll::Pending => done = false,
                }
            }
        }
        if done {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    })
    .await;
    out.into_iter().map(Option::unwrap).collect()
}

/// Waits until `condition` holds, looking every millisecond; panics naming `what` once `stuck_after`
/// has passed. `stuck_after` is a hang detector, not a speed requirement: make it many times what the
/// condition normally takes, so that only a defect (never a loaded machine) reaches it.
pub async fn wait_until(what: &str, stuck_after: Duration, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + stuck_after;
    while !condition() {
        assert!(
            Instant::now() < deadline,
            "stuck: {what} did not happen within {stuck_after:?}"
        );
        tokio::time::sleep(CONDITION_POLL_INTERVAL).await;
    }
}

/// [`wait_until`] for a condition that has to await (a call to a store, say): runs `condition` again,
/// a millisecond after each `false`, until it answers `true`; panics naming `what` once `stuck_after`
/// has passed.
pub async fn wait_until_async<F, Fut>(what: &str, stuck_after: Duration, mut condition: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + stuck_after;
    while !condition().await {
        assert!(
            Instant::now() < deadline,
            "stuck: {what} did not happen within {stuck_after:?}"
        );
        tokio::time::sleep(CONDITION_POLL_INTERVAL).await;
    }
}

/// Polls `f` once, with a waker that does nothing, and returns its output; panics if it is not ready.
/// For futures that must answer without waiting (a layer over the in-memory store), driven on the test's
/// own thread with no runtime.
#[track_caller]
pub fn ready_at_once<F: Future>(f: F) -> F::Output {
    match std::pin::pin!(f).poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(v) => v,
        Poll::Pending => panic!("the future was not ready at its first poll"),
    }
}
