//! The global limit: slots held a window after the response, reservations, the longest work first, global 429s.

use super::*;

#[test]
fn global_limit_holds_slots_from_send_until_a_window_after_the_response() {
    let mut c = core();
    let mut grants = Vec::new();
    for i in 0..50 {
        let t = ticket("GET /unlimited", &i.to_string());
        grants.push(try_send(&mut c, &t, i * 1000).unwrap());
    }
    let t = ticket("GET /unlimited", "x");
    let (w, step) = try_send(&mut c, &t, 60_000).unwrap_err();
    // All 50 in flight: nothing frees before a window from now.
    assert!(
        matches!(step, Step::Wait { until: Some(u), ref bucket } if u == 1_060_000 && bucket == "global"),
        "{step:?}"
    );
    // The first answer comes back at 100 ms (the upstream counted it somewhere in 0..100 ms): its slot
    // frees at 1.1 s, not at 1 s after the send.
    c.complete(&grants[0], &Observation::default(), 0, 100_000);
    assert!(admit(&mut c, w, &t, 1_099_999).is_none());
    assert!(admit(&mut c, w, &t, 1_100_000).is_some());
    // Exempt requests pass.
    let mut ex = ticket(
        "POST /interactions/{interaction_id}/{interaction_token}/callback",
        "5",
    );
    ex.global_exempt = true;
    assert!(try_send(&mut c, &ex, 1_100_000).is_ok());
    // Another token has its own window.
    assert!(try_send(&mut c, &ticket_tok("GET /unlimited", "y", 8), 1_100_000).is_ok());
    assert_eq!(
        c.snapshot(1_100_000).global_used.iter().map(|g| g.1).max(),
        Some(50)
    );
}

/// Seven warm-up round trips of 150 ms, so that early release is allowed.
#[test]
fn global_slots_are_kept_for_a_route_further_from_finishing() {
    let mut c = Core::new(Config {
        global_limit: Some(2),
        ..Config::default()
    });
    let a = ticket("GET /a", "");
    let probe = try_send(&mut c, &a, 0).unwrap();
    c.complete(&probe, &bucket("a", 1, 0, S / 2), 0, 0);
    // /a waits for its reset at 0.5 s with two calls queued (one more window after that one).
    let (wa, step) = try_send(&mut c, &a, 1).unwrap_err();
    assert!(
        matches!(step, Step::Wait { until: Some(u), .. } if u == S / 2),
        "{step:?}"
    );
    let (_, step) = try_send(&mut c, &a, 1).unwrap_err();
    assert!(matches!(step, Step::Wait { until: None, .. }), "{step:?}");
    // A single younger call: the probe's slot is held until 1 s, and /a needs the other at 0.5 s.
    let b = ticket("GET /b", "");
    let (wb, step) = try_send(&mut c, &b, 2).unwrap_err();
    assert!(
        matches!(step, Step::Wait { ref bucket, .. } if bucket.contains("reserved")),
        "{step:?}"
    );
    let ga = admit(&mut c, wa, &a, S / 2).unwrap();
    c.complete(&ga, &bucket("a", 1, 0, S / 2), 0, S / 2);
    // /a took its reserved slot; /b goes at 1 s, when the probe's slot frees.
    assert!(admit(&mut c, wb, &b, S - 1).is_none());
    assert!(admit(&mut c, wb, &b, S).is_some());
}

#[test]
fn a_route_with_windows_of_work_ahead_is_not_held_behind_single_older_calls() {
    let mut c = Core::new(Config {
        global_limit: Some(2),
        ..Config::default()
    });
    let y = ticket("GET /y", "");
    let probe = try_send(&mut c, &y, 0).unwrap();
    c.complete(&probe, &bucket("y", 5, 4, S), 0, 0);
    let g0 = try_send(&mut c, &ticket("GET /u", "0"), 0).unwrap();
    c.complete(&g0, &Observation::default(), 0, 0);
    // Both slots are held until 1 s. An older single call waits for one.
    let x = ticket("GET /u", "1");
    let (wx, _) = try_send(&mut c, &x, 1).unwrap_err();
    // Then twelve calls on /y: three windows of five, two more after the one that opens now.
    let ys: Vec<(WaiterId, Ticket)> = (0..12)
        .map(|_| {
            let t = ticket("GET /y", "");
            (try_send(&mut c, &t, 2).unwrap_err().0, t)
        })
        .collect();
    assert!(ys[0].1.seq > x.seq);
    // At 1 s /y's head goes first although /x is older: /y would otherwise end the run two windows late.
    assert!(admit(&mut c, ys[0].0, &ys[0].1, S).is_some());
    assert!(admit(&mut c, wx, &x, S).is_some());
    // With one window of work or less, the older call keeps its turn.
    let mut c = Core::new(Config {
        global_limit: Some(1),
        ..Config::default()
    });
    let g0 = try_send(&mut c, &ticket("GET /u", "0"), 0).unwrap();
    c.complete(&g0, &Observation::default(), 0, 0);
    let (wx, _) = try_send(&mut c, &x, 1).unwrap_err();
    let z = ticket("GET /z", "");
    let (wz, _) = try_send(&mut c, &z, 2).unwrap_err();
    assert!(admit(&mut c, wz, &z, S).is_none());
    assert!(admit(&mut c, wx, &x, S).is_some());
}

#[test]
fn a_global_429_locks_the_token() {
    let mut c = core();
    let t = ticket("GET /a", "");
    let g = try_send(&mut c, &t, 0).unwrap();
    let obs = Observation {
        limited: Some(Limited {
            scope: Scope::Global,
            retry_after: 661_000,
        }),
        invalid: true,
        ..Observation::default()
    };
    assert_eq!(c.complete(&g, &obs, 0, 0), Verdict::RetryLimit);
    let (_, step) = try_send(&mut c, &ticket("GET /b", ""), 1).unwrap_err();
    assert!(
        matches!(
            step,
            Step::Wait {
                until: Some(661_000),
                ..
            }
        ),
        "{step:?}"
    );
    assert_eq!(c.snapshot(1).invalid_requests, 1);
}
