//! Scopes, 401s, bans and the invalid budget.

use super::*;

#[test]
fn a_shared_429_blocks_the_bucket_but_is_not_invalid() {
    let mut c = core();
    let t = ticket(
        "PUT|DELETE /channels/{channel_id}/messages/{id}/reactions",
        "1",
    );
    let g = try_send(&mut c, &t, 0).unwrap();
    let mut obs = bucket("r", 1, 0, 250_000);
    obs.limited = Some(Limited {
        scope: Scope::Shared,
        retry_after: 3 * S,
    });
    assert_eq!(c.complete(&g, &obs, 0, 0), Verdict::RetryLimit);
    assert_eq!(c.snapshot(0).invalid_requests, 0);
    let (_, step) = try_send(&mut c, &t, S).unwrap_err();
    assert!(
        matches!(step, Step::Wait { until: Some(u), .. } if u == 3 * S),
        "{step:?}"
    );
}

#[test]
fn a_401_stops_the_token_only() {
    let mut c = core();
    let t = ticket("GET /a", "");
    let g = try_send(&mut c, &t, 0).unwrap();
    let obs = Observation {
        unauthorized: true,
        invalid: true,
        ..Observation::default()
    };
    assert_eq!(c.complete(&g, &obs, 0, 0), Verdict::Done);
    assert!(matches!(
        try_send(&mut c, &t, 1).unwrap_err().1,
        Step::Fail(Error::Unauthorized)
    ));
    assert!(try_send(&mut c, &ticket_tok("GET /a", "", 9), 1).is_ok());
}

#[test]
fn a_ban_stops_everything_and_probes_with_backoff() {
    let mut c = Core::new(Config {
        ban_backoff: S,
        ban_backoff_max: 4 * S,
        ..Config::default()
    });
    let t = ticket("GET /a", "");
    let g = try_send(&mut c, &t, 0).unwrap();
    let ban = Observation {
        banned: true,
        invalid: true,
        ..Observation::default()
    };
    assert_eq!(
        c.complete(&g, &ban, 0, 0),
        Verdict::Fail(ErrorKind::Banned(S))
    );
    assert!(matches!(
        try_send(&mut c, &ticket("GET /b", ""), S / 2)
            .unwrap_err()
            .1,
        Step::Fail(Error::Banned { .. })
    ));
    // After the backoff one probe goes; others still fail while it is out.
    let probe = try_send(&mut c, &t, S).unwrap();
    assert!(probe.ban_probe);
    assert!(matches!(
        try_send(&mut c, &ticket("GET /c", ""), S).unwrap_err().1,
        Step::Fail(Error::Banned { .. })
    ));
    // The probe is banned again: the backoff doubles.
    assert_eq!(
        c.complete(&probe, &ban, 0, S),
        Verdict::Fail(ErrorKind::Banned(2 * S))
    );
    assert!(try_send(&mut c, &ticket("GET /d", ""), 2 * S).is_err());
    let probe = try_send(&mut c, &ticket("GET /e", ""), 3 * S).unwrap();
    assert_eq!(
        c.complete(&probe, &Observation::default(), 0, 3 * S),
        Verdict::Done
    );
    assert!(try_send(&mut c, &ticket("GET /f", ""), 3 * S).is_ok());
}

#[test]
fn the_invalid_budget_sheds_then_stops() {
    let mut c = Core::new(Config {
        global_limit: None,
        invalid: crate::InvalidBudget {
            window: std::time::Duration::from_secs(10),
            warn: 1,
            shed: 2,
            stop: 3,
        },
        ..Config::default()
    });
    let forbidden = Observation {
        invalid: true,
        ..Observation::default()
    };
    for i in 0..2 {
        let g = try_send(&mut c, &ticket("GET /a", &i.to_string()), 0).unwrap();
        c.complete(&g, &forbidden, 0, 0);
    }
    assert!(matches!(
        try_send(&mut c, &ticket("GET /b", ""), 1).unwrap_err().1,
        Step::Fail(Error::Shed { count: 2 })
    ));
    let mut urgent = ticket("GET /b", "");
    urgent.lane = Lane::Urgent;
    let g = try_send(&mut c, &urgent, 1).unwrap();
    c.complete(&g, &forbidden, 0, 1);
    assert!(matches!(
        try_send(&mut c, &urgent, 2).unwrap_err().1,
        Step::Fail(Error::InvalidBudget { count: 3 })
    ));
    // The window slides: all clear after 10 s.
    assert!(try_send(&mut c, &urgent, 10 * S + 2).is_ok());
}
