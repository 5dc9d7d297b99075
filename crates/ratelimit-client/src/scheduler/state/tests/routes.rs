//! Routes: sub-limits, shared hashes, lanes, probes, failures and the bucket cap.

use super::*;

#[test]
fn a_user_429_with_remaining_is_a_sublimit_in_its_own_lane() {
    let mut c = core();
    let t = ticket("PATCH /channels/{channel_id}", "1");
    let probe = try_send(&mut c, &t, 0).unwrap();
    c.complete(&probe, &bucket("ch", 10, 9, 15 * S), 0, 0);
    let mut rename = t.clone();
    rename.fingerprint = 42;
    let g = try_send(&mut c, &rename, 1).unwrap();
    let mut obs = bucket("ch", 10, 8, 15 * S);
    obs.limited = Some(Limited {
        scope: Scope::User,
        retry_after: 582 * S,
    });
    obs.invalid = true;
    assert_eq!(c.complete(&g, &obs, 42, 2), Verdict::RetryLimit);
    assert!(c.has_sublimits(&t.route_key, 3));
    let id = c.enqueue(&rename, Arc::new(Notify::new()), 3);
    assert!(matches!(c.try_admit(id, &rename, 3), Step::Sublimit));
    assert_eq!(c.sublimit_until(&rename, 3), Some(2 + 582 * S));
    // Other edits of the same channel are not held up.
    assert!(try_send(&mut c, &t, 3).is_ok());
}

#[test]
fn routes_sharing_a_hash_share_a_counter_until_proven_separate() {
    let mut c = core();
    let post = ticket("POST /channels/{channel_id}/messages", "1");
    let patch = ticket("PATCH /channels/{channel_id}/messages/{id}", "1");
    let g = try_send(&mut c, &post, 0).unwrap();
    c.complete(&g, &bucket("m", 5, 4, 5 * S), 0, 0);
    let g = try_send(&mut c, &post, 1).unwrap();
    c.complete(&g, &bucket("m", 5, 3, 5 * S), 0, 2);
    // PATCH probes and reports the same hash but a fresh count: it has its own counter (dapi#8073).
    let g = try_send(&mut c, &patch, 3).unwrap();
    c.complete(&g, &bucket("m", 5, 4, 5 * S), 0, 4);
    let snap = c.snapshot(4);
    assert_eq!(snap.buckets.len(), 2, "{snap:?}");
    // A truly shared counter (reactions reported one decreasing count) stays shared.
    let mut c = core();
    let a = ticket("GET /a", "1");
    let b = ticket("GET /b", "1");
    let g = try_send(&mut c, &a, 0).unwrap();
    c.complete(&g, &bucket("s", 5, 4, 5 * S), 0, 0);
    let g = try_send(&mut c, &b, 1).unwrap();
    c.complete(&g, &bucket("s", 5, 3, 5 * S), 0, 1);
    let snap = c.snapshot(1);
    assert_eq!(snap.buckets.len(), 1);
    assert_eq!(snap.buckets[0].routes.len(), 2);
    assert_eq!(snap.buckets[0].available, 3);
    // A new major of a known route links to nothing yet, and probes.
    assert!(try_send(&mut c, &ticket("GET /a", "2"), 1).unwrap().probe);
}

#[test]
fn lanes_are_served_most_urgent_first() {
    let mut c = core();
    let t = ticket("GET /a", "");
    let probe = try_send(&mut c, &t, 0).unwrap();
    c.complete(&probe, &bucket("a", 1, 0, S), 0, 0);
    let bulk = Ticket {
        lane: Lane::Bulk,
        ..t.clone()
    };
    let urgent = Ticket {
        lane: Lane::Urgent,
        ..t.clone()
    };
    let (b, _) = try_send(&mut c, &bulk, 1).unwrap_err();
    let (u, _) = try_send(&mut c, &urgent, 2).unwrap_err();
    assert!(admit(&mut c, b, &bulk, S).is_none());
    assert!(admit(&mut c, u, &urgent, S).is_some());
}

#[test]
fn rejected_evidence_keeps_a_route_probing_one_at_a_time() {
    let mut c = core();
    let t = ticket("GET /a", "");
    let probe = try_send(&mut c, &t, 0).unwrap();
    let rejected = Observation {
        malformed: Some(crate::parse::ParseError::RemainingAboveLimit {
            header: "x-ratelimit-remaining",
            remaining: 9,
            limit: 5,
        }),
        ..Observation::default()
    };
    assert_eq!(c.complete(&probe, &rejected, 0, 1), Verdict::Done);
    assert!(!c.snapshot(1).routes[0].unlimited);
    let next = try_send(&mut c, &t, 1).unwrap();
    assert!(next.probe);
    assert!(try_send(&mut c, &t, 1).is_err(), "one at a time");
}

#[test]
fn connection_failures_keep_the_slot_spent_and_free_the_probe() {
    let mut c = core();
    let t = ticket("GET /a", "");
    let probe = try_send(&mut c, &t, 0).unwrap();
    c.fail(&probe, 1);
    assert!(try_send(&mut c, &t, 1).unwrap().probe);
    let mut c = core();
    let probe = try_send(&mut c, &t, 0).unwrap();
    c.complete(&probe, &bucket("a", 2, 1, S), 0, 0);
    let g = try_send(&mut c, &t, 1).unwrap();
    c.fail(&g, 2);
    let (w, _) = try_send(&mut c, &t, 2).expect_err("the failed request may have been counted");
    c.cancel(&t.route_key, w);
    assert!(try_send(&mut c, &t, S + 1).is_ok());
}

#[test]
fn at_the_cap_the_least_recently_used_counter_makes_room_even_within_its_window() {
    let mut c = Core::new(Config {
        max_buckets: 2,
        global_limit: None,
        ..Config::default()
    });
    for (i, at) in [(0, 0), (1, 1)] {
        let t = ticket("GET /a", &i.to_string());
        let g = try_send(&mut c, &t, at).unwrap();
        c.complete(&g, &bucket(&format!("h{i}"), 5, 4, 600 * S), 0, at);
    }
    // Both within ten-minute windows; a new major's bucket evicts the older, h0.
    let t = ticket("GET /a", "2");
    let g = try_send(&mut c, &t, 2).unwrap();
    c.complete(&g, &bucket("h2", 5, 4, 600 * S), 0, 2);
    let mut hashes: Vec<String> = c
        .snapshot(2)
        .buckets
        .into_iter()
        .filter_map(|b| b.hash)
        .collect();
    hashes.sort();
    assert_eq!(hashes, ["h1", "h2"]);
    assert!(c.cap_logged.evicted_active);
    // Its route learns its window again from one probe.
    assert!(try_send(&mut c, &ticket("GET /a", "0"), 3).unwrap().probe);
}

#[test]
fn at_the_cap_with_a_request_in_flight_on_every_counter_a_changed_bucket_is_not_tracked() {
    let mut c = Core::new(Config {
        max_buckets: 1,
        global_limit: None,
        ..Config::default()
    });
    let t = ticket("GET /a", "1");
    let probe = try_send(&mut c, &t, 0).unwrap();
    c.complete(&probe, &bucket("h1", 5, 4, 600 * S), 0, 0);
    let g1 = try_send(&mut c, &t, 1).unwrap();
    let g2 = try_send(&mut c, &t, 1).unwrap();
    // g1's response names another bucket; g2 is still in flight on the only counter.
    c.complete(&g1, &bucket("h2", 50, 49, 600 * S), 0, 2);
    let snap = c.snapshot(2);
    assert_eq!(snap.buckets.len(), 1);
    assert!(
        snap.buckets[0].routes.is_empty(),
        "the route no longer spends the stale counter: {snap:?}"
    );
    assert!(c.cap_logged.untracked);
    let next = try_send(&mut c, &t, 2).unwrap();
    assert!(next.probe, "one request at a time meanwhile");
    // Once nothing is in flight on it, the stale counter makes room for the new bucket.
    c.complete(&g2, &bucket("h2", 50, 48, 600 * S), 0, 3);
    c.complete(&next, &bucket("h2", 50, 47, 600 * S), 0, 3);
    let snap = c.snapshot(3);
    assert_eq!(snap.buckets[0].hash.as_deref(), Some("h2"));
    assert!(try_send(&mut c, &t, 3).is_ok());
    assert!(try_send(&mut c, &t, 3).is_ok(), "in parallel again");
}

#[test]
fn too_many_buckets_are_capped() {
    let mut c = Core::new(Config {
        max_buckets: 2,
        global_limit: None,
        ..Config::default()
    });
    for i in 0..3 {
        let t = ticket("GET /a", &i.to_string());
        let g = try_send(&mut c, &t, 0).unwrap();
        c.complete(&g, &bucket(&format!("h{i}"), 5, 4, 10 * S), 0, 0);
    }
    assert_eq!(c.snapshot(0).buckets.len(), 2);
    // Once idle, old ones are evicted to make room.
    let t = ticket("GET /a", "9");
    let g = try_send(&mut c, &t, 20 * S).unwrap();
    c.complete(&g, &bucket("h9", 5, 4, 10 * S), 0, 20 * S);
    assert!(c
        .snapshot(20 * S)
        .buckets
        .iter()
        .any(|b| b.hash.as_deref() == Some("h9")));
}
