//! The fixed window's boundary behaviour, by design: up to twice the limit passes within one period that
//! straddles a window boundary. The algorithm's docs point here; the sliding log, run on the same traffic,
//! shows what an exact rolling limit admits instead.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use ratelimit_core::{Algorithm, FixedWindow, Quota, SlidingLog, SlidingWindow};

const SECOND: u64 = 1_000_000;

/// Sends `n` requests of cost 1 at `t` and counts the allowed ones.
fn burst<A: Algorithm>(rule: &A, state: &mut A::State, t: u64, n: u64) -> u64 {
    (0..n).filter(|_| rule.step(state, t, 1).allowed()).count() as u64
}

#[test]
fn fixed_window_admits_twice_the_limit_across_a_boundary() {
    let q = Quota::per_second(10).build().unwrap();
    let fw = FixedWindow::new(q).unwrap();
    let mut s = Default::default();
    // 1 ms before the boundary at 5 s, then exactly at it: 2 ms apart, both full.
    let before = 5 * SECOND - 1_000;
    let at = 5 * SECOND;
    assert_eq!(burst(&fw, &mut s, before, 20), 10);
    let d = fw.step(&mut s, before, 1);
    assert_eq!(d.retry, 1_000, "the next window opens in 1 ms");
    assert_eq!(burst(&fw, &mut s, at, 20), 10);
    // 20 units inside a 2 ms span, for a limit of 10 per second: twice the limit, and no more.
    assert_eq!(burst(&fw, &mut s, at + SECOND - 1, 20), 0);

    // The sliding log on the same traffic holds the rolling limit.
    let log = SlidingLog::new(q).unwrap();
    let mut s = Default::default();
    assert_eq!(burst(&log, &mut s, before, 20), 10);
    assert_eq!(burst(&log, &mut s, at, 20), 0);
    assert_eq!(burst(&log, &mut s, before + SECOND, 20), 10);

    // The sliding window counter weights the previous window: at the boundary it still counts all 10.
    let sw = SlidingWindow::new(q).unwrap();
    let mut s = Default::default();
    assert_eq!(burst(&sw, &mut s, before, 20), 10);
    assert_eq!(burst(&sw, &mut s, at, 20), 0);
}

#[test]
fn fixed_windows_are_aligned_on_the_clock_origin() {
    let fw = FixedWindow::new(Quota::per_minute(3).build().unwrap()).unwrap();
    let mut s = Default::default();
    // A window started by a first request at 59 s still ends at 60 s (no first-hit windows).
    assert_eq!(burst(&fw, &mut s, 59 * SECOND, 5), 3);
    let d = fw.evaluate(&s, 59 * SECOND, 1);
    assert_eq!(d.retry, SECOND);
    assert_eq!(d.reset, SECOND);
    assert_eq!(burst(&fw, &mut s, 60 * SECOND, 5), 3);
}
