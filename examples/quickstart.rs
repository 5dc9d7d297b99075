//! Exercises the core on the in-memory store and prints each decision.
//!
//! `cargo run --example quickstart`
use std::time::Duration;

use ratelimit_core::{Clock, ManualClock, MemoryStore, Policy, PolicySet, Quota};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // 5 per second with bursts of 5, and 8 per minute; checked together, all-or-nothing.
    let policies = PolicySet::new([
        Policy::gcra("burst", Quota::per_second(5).build()?)?,
        Policy::sliding_log("minute", Quota::per_minute(8).build()?)?,
    ])?;
    let clock = ManualClock::default();
    let store = MemoryStore::<String, PolicySet>::builder()
        .clock(clock.clone())
        .build();

    for step in 0..12 {
        let d = store.check(&policies, "alice", 1)?;
        let binding = policies.policy(d.binding_index()).name();
        match d.retry_after() {
            None => println!(
                "t={:>4} ms  #{step:<2} {:?}  remaining burst={} minute={}",
                clock.now() / 1000,
                d.outcome(),
                d.statuses()[0].remaining,
                d.statuses()[1].remaining
            ),
            Some(wait) => println!(
                "t={:>4} ms  #{step:<2} {:?} by {binding:?}: retry in {wait:?}",
                clock.now() / 1000,
                d.outcome()
            ),
        }
        clock.advance(Duration::from_millis(100));
    }
    Ok(())
}
