//! The state machine step by step on a manual clock.

use std::sync::Arc;

use ratelimit_core::Micros;
use tokio::sync::Notify;

use super::*;
use crate::error::Error;
use crate::profile::{BucketInfo, Lane, Limited, Observation, Scope};

mod global;
mod routes;
mod safety;
mod windows;

const S: Micros = 1_000_000;

fn core() -> Core {
    Core::new(Config {
        global_limit: Some(50),
        ..Config::default()
    })
}

fn ticket(route: &str, major: &str) -> Ticket {
    ticket_tok(route, major, 7)
}

fn ticket_tok(route: &str, major: &str, token: u64) -> Ticket {
    let t = Ticket::new(
        token,
        route,
        major,
        Lane::Normal,
        SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
    );
    assert_eq!((t.template(), t.major()), (route, major));
    t
}

static SEQ: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

fn bucket(hash: &str, limit: u64, remaining: u64, reset: Micros) -> Observation {
    Observation {
        buckets: vec![BucketInfo {
            id: Some(hash.into()),
            limit,
            remaining,
            reset_after: reset,
        }],
        ..Observation::default()
    }
}

/// Enqueues and tries once: `Ok(grant)` or `Err(waiter id)` left queued.
fn try_send(c: &mut Core, t: &Ticket, now: Micros) -> Result<Grant, (WaiterId, Step)> {
    let id = c.enqueue(t, Arc::new(Notify::new()), now);
    match c.try_admit(id, t, now) {
        Step::Admit(g) => Ok(g),
        Step::Fail(e) => {
            // As the async caller's queue guard does.
            c.cancel(&t.route_key, id);
            Err((id, Step::Fail(e)))
        }
        other => Err((id, other)),
    }
}

fn admit(c: &mut Core, id: WaiterId, t: &Ticket, now: Micros) -> Option<Grant> {
    match c.try_admit(id, t, now) {
        Step::Admit(g) => Some(g),
        _ => None,
    }
}

fn warmed(cfg: Config) -> Core {
    let mut c = Core::new(cfg);
    for i in 0..7 {
        let g = try_send(&mut c, &ticket("GET /warm", &i.to_string()), 0).unwrap();
        c.complete(&g, &Observation::default(), 0, 150_000);
    }
    c
}

/// The upstream's window resets at 1.04 s. The probe left at 0, was counted at 40 ms and answered at
/// 100 ms; the second request left at 100 ms, was counted at 150 ms and answered at 190 ms.
fn two_responses(c: &mut Core, t: &Ticket) {
    let probe = try_send(c, t, 0).unwrap();
    c.complete(&probe, &bucket("a", 2, 1, S), 0, 100_000);
    let g = try_send(c, t, 100_000).unwrap();
    c.complete(&g, &bucket("a", 2, 0, 890_000), 0, 190_000);
}

#[test]
fn ticket_keys_are_token_template_major_on_the_stack_or_the_heap() {
    let long = "x".repeat(300);
    for (tpl, major) in [
        (
            "PUT|DELETE /channels/{channel_id}/messages/{id}/reactions",
            "1",
        ),
        ("GET /gateway", ""),
        (long.as_str(), "2"),
        ("GET /a", long.as_str()),
    ] {
        let t = Ticket::new(0xabc, tpl, major, Lane::Normal, 0);
        let (tpl, major) = (
            crate::parse::bounded_template(tpl),
            crate::parse::bounded_name(major),
        );
        assert_eq!(&*t.route_key, format!("{:016x}|{tpl}|{major}", 0xabc));
        assert_eq!((t.template(), t.major()), (&*tpl, &*major));
        assert!(t.route_key.len() <= 17 + 192 + 1 + 64);
    }
}
