//! The script's steps against a real Redis, through the crate's own calls: the reconcile step's ordering
//! rule (a response to a request reserved before its counter's current window started does not count in
//! it), drain times, shared-scope holds and sub-limits on body shapes.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use ratelimit_test_support::redis_server::RedisServer;

use super::{Ask, Gate, Lease, Named, Report, SharedBudget, Timing};

const ROUTE: &str = "1|POST /x|";
const COUNTER: &str = "1|#k|";
/// Longer than any wait in this test unless something is stuck.
const HANG_DETECTOR: Duration = Duration::from_secs(10);

fn ask() -> Ask<'static> {
    shaped(None)
}

/// The request, naming its body's shape or not.
fn shaped(shape: Option<u64>) -> Ask<'static> {
    Ask {
        token: 1,
        route_key: ROUTE,
        global_limit: 0,
        global_window: 1_000_000,
        invalid_stop: 0,
        invalid_window: 1_000_000,
        shape,
        waiter: 0,
        waited: 0,
    }
}

fn report(remaining: u64, reset_after: Duration) -> Report {
    Report {
        named: Named::Counter(COUNTER.to_owned()),
        limit: 5,
        remaining,
        reset_after: u64::try_from(reset_after.as_micros()).unwrap(),
        ..Report::default()
    }
}

/// A Redis and a budget on it with a long lease (nothing expires during a test) and a short poll.
async fn start() -> (RedisServer, SharedBudget) {
    let redis = RedisServer::start();
    let budget = SharedBudget::builder()
        .namespace("order")
        .lease(Duration::from_secs(10))
        .poll(Duration::from_millis(5))
        .connect(&redis.url())
        .await
        .unwrap();
    (redis, budget)
}

async fn admitted(budget: &SharedBudget) -> Lease {
    match budget.reserve(ask()).await {
        Gate::Admit(lease) => lease,
        other => panic!("not admitted: {other:?}"),
    }
}

/// The counter's `avail` and `reset` as stored.
fn window(redis: &RedisServer) -> (i64, i64) {
    let out = redis.cli(&["HMGET", &format!("{{order}}:c:{COUNTER}"), "avail", "reset"]);
    let mut v = out.lines().map(|l| l.trim().parse::<i64>().unwrap());
    (v.next().unwrap(), v.next().unwrap())
}

/// Waits until the background reconcile of `id` has run (its in-flight mark is gone).
async fn reconciled(redis: &RedisServer, id: &str) {
    let start = Instant::now();
    loop {
        let score = redis.cli(&["ZSCORE", &format!("{{order}}:f:{COUNTER}"), id]);
        let mapped = redis.cli(&["GET", &format!("{{order}}:r:{ROUTE}")]);
        if score.trim().is_empty() && mapped.trim() == COUNTER {
            return;
        }
        assert!(
            start.elapsed() < HANG_DETECTOR,
            "hang detector: {id} never reconciled"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// Reconciles `lease` with `report` and waits until the script has applied it.
async fn answer(redis: &RedisServer, lease: Lease, report: Report) {
    let id = lease.id().to_owned();
    lease.reconcile(report);
    reconciled(redis, &id).await;
}

#[tokio::test]
async fn a_response_from_an_earlier_window_neither_lowers_nor_extends_the_current_one() {
    let (redis, budget) = start().await;
    // The route's first request learns its counter: 5 per window, 4 left, the window ends in 200 ms.
    answer(
        &redis,
        admitted(&budget).await,
        report(4, Duration::from_millis(200)),
    )
    .await;
    // Reserved in that window, answered only after the next one started.
    let late = admitted(&budget).await;
    let late_id = late.id().to_owned();
    assert_eq!(window(&redis).0, 3);
    tokio::time::sleep(Duration::from_millis(250)).await;
    // The next window: 5, less `late` still in flight, less this one.
    let current = admitted(&budget).await;
    assert_eq!(window(&redis), (3, 0));

    // Counted fifth in its window 400 ms before the reset (the first was counted with 200 ms left: a fixed
    // window, no drain, as far as the responses tell).
    late.reconcile(report(0, Duration::from_millis(400)));
    reconciled(&redis, &late_id).await;
    assert_eq!(
        window(&redis),
        (3, 0),
        "the earlier window's response changed the current window"
    );
    let mut held = Vec::new();
    for _ in 0..3 {
        held.push(admitted(&budget).await);
    }
    assert!(matches!(budget.reserve(ask()).await, Gate::Wait(_)));

    // The control: the same report for a request of the current window is applied.
    answer(&redis, current, report(0, Duration::from_secs(10))).await;
    let (avail, reset) = window(&redis);
    assert!(avail <= 0 && reset > 0, "({avail}, {reset})");
}

/// A draining (leaky) bucket holds a request until its own drain time, whichever window it was reserved
/// in: a request of the earlier window that reached the upstream after this window's first ones keeps the
/// current window from ending before the drain time its response reports.
#[tokio::test]
async fn a_late_response_from_an_earlier_window_still_delays_the_end_of_the_current_one() {
    let (redis, budget) = start().await;
    answer(
        &redis,
        admitted(&budget).await,
        report(4, Duration::from_millis(100)),
    )
    .await;
    let late = admitted(&budget).await;
    let late_id = late.id().to_owned();
    tokio::time::sleep(Duration::from_millis(150)).await;
    // The next window: 5, less `late` in flight, less this one.
    let current = admitted(&budget).await;
    let current_id = current.id().to_owned();
    // `current`'s own response says 50 ms (with the first's, the counts show a fixed window); then `late`
    // says the bucket drains 2 s from now.
    current.reconcile(report(3, Duration::from_millis(50)));
    reconciled(&redis, &current_id).await;
    late.reconcile(report(0, Duration::from_secs(2)));
    reconciled(&redis, &late_id).await;
    // 3 left, less `late`: its response does not say whether the current count includes it, so it
    // stays taken until its count ends.
    let mut held = Vec::new();
    for _ in 0..2 {
        held.push(admitted(&budget).await);
    }
    match budget.reserve(ask()).await {
        Gate::Wait(us) => assert!(
            us > 1_000_000,
            "the window would end after {us} µs, before the earlier request drains"
        ),
        other => panic!("not waiting: {other:?}"),
    }
}

/// A shared-scope 429 (others contend the resource; the upstream did not count the request) holds every
/// process for its `Retry-After` and gives the request's unit back.
#[tokio::test]
async fn a_shared_scope_429_holds_everyone_and_gives_its_unit_back() {
    let (redis, budget) = start().await;
    answer(
        &redis,
        admitted(&budget).await,
        report(4, Duration::from_secs(10)),
    )
    .await;
    let contended = admitted(&budget).await;
    let contended_id = contended.id().to_owned();
    assert_eq!(window(&redis).0, 3);
    contended.reconcile(Report {
        hold: 300_000,
        ..report(4, Duration::from_secs(10))
    });
    reconciled(&redis, &contended_id).await;
    assert_eq!(window(&redis).0, 4, "the uncounted request's unit is back");
    match budget.reserve(ask()).await {
        Gate::Wait(us) => assert!(us > 100_000 && us <= 300_000, "{us} µs"),
        other => panic!("not held: {other:?}"),
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let _after = admitted(&budget).await;
    assert_eq!(window(&redis).0, 3);
}

/// Shared-scope 429s answered while other requests are still in flight: each request that was not
/// counted comes back once nothing in flight can be counted in its place. Four requests after the first:
/// one counted, three refused uncounted, each response reporting 3 left; the first refusal is answered
/// while the other three are still out (its unit then could not come back at once).
#[tokio::test]
async fn shared_scope_429s_among_requests_in_flight_give_every_uncounted_unit_back() {
    let (redis, budget) = start().await;
    answer(
        &redis,
        admitted(&budget).await,
        report(4, Duration::from_secs(10)),
    )
    .await;
    let mut out = Vec::new();
    for _ in 0..4 {
        out.push(admitted(&budget).await);
    }
    assert_eq!(window(&redis).0, 0);
    let refused = Report {
        hold: 1_000,
        ..report(3, Duration::from_secs(10))
    };
    answer(&redis, out.remove(0), refused.clone()).await;
    let counted = out.remove(0);
    answer(&redis, counted, report(3, Duration::from_secs(10))).await;
    for l in out.drain(..) {
        answer(&redis, l, refused.clone()).await;
    }
    assert_eq!(window(&redis).0, 3, "5 less the two counted");
    tokio::time::sleep(Duration::from_millis(5)).await;
    let mut held = Vec::new();
    for _ in 0..3 {
        held.push(admitted(&budget).await);
    }
    assert!(matches!(budget.reserve(ask()).await, Gate::Wait(_)));
}

/// A sub-limit refusal of one body shape holds that shape for every process, and only that shape; a
/// process that has not named its request's shape on such a route is asked to.
#[tokio::test]
async fn a_sub_limit_refusal_holds_its_body_shape_for_every_process() {
    const RENAME: u64 = 0x5a;
    const OTHER: u64 = 0x6b;
    let (redis, budget) = start().await;
    answer(
        &redis,
        admitted(&budget).await,
        report(4, Duration::from_secs(10)),
    )
    .await;
    // Another process's rename is refused by the sub-limit: the bucket still has room.
    let other_process = SharedBudget::builder()
        .namespace("order")
        .connect(&redis.url())
        .await
        .unwrap();
    let refused = match other_process.reserve(shaped(Some(RENAME))).await {
        Gate::Admit(lease) => lease,
        other => panic!("not admitted: {other:?}"),
    };
    answer(
        &redis,
        refused,
        Report {
            shape: RENAME,
            shape_wait: 300_000,
            ..report(3, Duration::from_secs(10))
        },
    )
    .await;

    assert!(matches!(budget.reserve(ask()).await, Gate::NeedShape));
    match budget.reserve(shaped(Some(RENAME))).await {
        Gate::Wait(us) => assert!(us > 100_000 && us <= 300_000, "{us} µs"),
        other => panic!("the refused shape is not held: {other:?}"),
    }
    assert!(matches!(
        budget.reserve(shaped(Some(OTHER))).await,
        Gate::Admit(_)
    ));
    assert!(
        matches!(budget.reserve(shaped(Some(0))).await, Gate::Admit(_)),
        "a body without a shape is not held"
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(matches!(
        budget.reserve(shaped(Some(RENAME))).await,
        Gate::Admit(_)
    ));
}

/// After a ban's backoff, one request from any process probes it; the others stay stopped until the
/// probe is answered: banned again, or not (traffic resumes).
#[tokio::test]
async fn one_request_from_any_process_probes_a_ban() {
    let (redis, budget) = start().await;
    answer(
        &redis,
        admitted(&budget).await,
        Report {
            ban: 200_000,
            ..report(4, Duration::from_secs(10))
        },
    )
    .await;
    assert!(matches!(budget.reserve(ask()).await, Gate::Banned(us) if us <= 200_000));

    tokio::time::sleep(Duration::from_millis(200)).await;
    let probe = admitted(&budget).await;
    assert!(
        matches!(budget.reserve(ask()).await, Gate::Banned(_)),
        "a second probe"
    );
    // Banned again: stopped for another backoff.
    answer(
        &redis,
        probe,
        Report {
            ban: 200_000,
            ..report(3, Duration::from_secs(10))
        },
    )
    .await;
    assert!(matches!(budget.reserve(ask()).await, Gate::Banned(us) if us > 100_000));

    tokio::time::sleep(Duration::from_millis(200)).await;
    answer(
        &redis,
        admitted(&budget).await,
        report(2, Duration::from_secs(10)),
    )
    .await;
    let _a = admitted(&budget).await;
    let _b = admitted(&budget).await;
}

/// Requests waiting for a counter's window to end claim global slots for that moment: within a window
/// of it, requests of other routes leave those slots to them, unless they have been held back a whole
/// window already.
#[tokio::test]
async fn waiting_requests_claim_global_slots_for_their_window_end() {
    let (redis, budget) = start().await;
    let on = |route_key: &'static str, waiter: u64, waited: u64| Ask {
        global_limit: 2,
        waiter,
        waited,
        route_key,
        ..ask()
    };
    let first = match budget.reserve(on(ROUTE, 1, 0)).await {
        Gate::Admit(lease) => lease,
        other => panic!("not admitted: {other:?}"),
    };
    answer(&redis, first, report(0, Duration::from_millis(300))).await;
    // One request waits for the counter's window to end, in 300 ms: it claims a slot then.
    assert!(matches!(budget.reserve(on(ROUTE, 7, 0)).await, Gate::Wait(us) if us > 200_000));
    // Another route's request: 1 slot in use, 1 claimed, of 2.
    let other = "1|POST /y|";
    match budget.reserve(on(other, 9, 0)).await {
        Gate::Wait(us) => assert!(us <= 20_000, "asks again at the poll interval: {us} µs"),
        g => panic!("took the claimed slot: {g:?}"),
    }
    assert!(
        matches!(
            budget.reserve(on(other, 9, 1_000_000)).await,
            Gate::Admit(_)
        ),
        "held back a whole window: it goes anyway"
    );
    // The window ends: the waiter takes its slot (the first request's is still held one window).
    tokio::time::sleep(Duration::from_millis(300)).await;
    let _g = redis.cli(&["DEL", "{order}:g:0000000000000001"]);
    assert!(matches!(
        budget.reserve(on(ROUTE, 7, 300_000)).await,
        Gate::Admit(_)
    ));
    assert_eq!(
        redis
            .cli(&["ZCARD", &format!("{{order}}:w:{COUNTER}")])
            .trim(),
        "0",
        "the waiter left the claim when admitted"
    );
}

/// A global 429 reported by one process stops the token for every process until its `Retry-After`.
#[tokio::test]
async fn a_global_429_locks_the_token_for_every_process() {
    let (redis, budget) = start().await;
    answer(
        &redis,
        admitted(&budget).await,
        Report {
            global_lock: 300_000,
            ..report(4, Duration::from_secs(10))
        },
    )
    .await;
    let other_process = SharedBudget::builder()
        .namespace("order")
        .connect(&redis.url())
        .await
        .unwrap();
    match other_process.reserve(ask()).await {
        Gate::Wait(us) => assert!(us > 100_000 && us <= 300_000, "{us} µs"),
        other => panic!("not locked: {other:?}"),
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(matches!(other_process.reserve(ask()).await, Gate::Admit(_)));
}

/// Invalid responses (401, 403, non-shared 429) reported by any process count in one budget per egress
/// identity: at its stop threshold nothing is sent, from any process.
#[tokio::test]
async fn the_invalid_request_budget_is_counted_across_processes() {
    let (redis, budget) = start().await;
    let stop_at_3 = |a: Ask<'static>| Ask {
        invalid_stop: 3,
        invalid_window: 60_000_000,
        ..a
    };
    for _ in 0..3 {
        let lease = match budget.reserve(stop_at_3(ask())).await {
            Gate::Admit(lease) => lease,
            other => panic!("stopped early: {other:?}"),
        };
        answer(
            &redis,
            lease,
            Report {
                invalid: true,
                invalid_window: 60_000_000,
                invalid_keep: 3,
                ..report(4, Duration::from_secs(10))
            },
        )
        .await;
    }
    let other_process = SharedBudget::builder()
        .namespace("order")
        .connect(&redis.url())
        .await
        .unwrap();
    assert!(matches!(
        other_process.reserve(stop_at_3(ask())).await,
        Gate::Stopped(3)
    ));
}

/// The current window started with a request of the earlier window taken from it, still in flight. Its
/// response shows its count ended 20 ms later (the earlier window's reset): from then on, its unit is the
/// current window's again, and five requests go in it rather than four.
#[tokio::test]
async fn a_unit_taken_for_an_earlier_windows_request_comes_back_when_its_count_ends() {
    let (redis, budget) = start().await;
    answer(
        &redis,
        admitted(&budget).await,
        report(4, Duration::from_millis(100)),
    )
    .await;
    let late = admitted(&budget).await;
    let late_id = late.id().to_owned();
    tokio::time::sleep(Duration::from_millis(150)).await;
    // The next window: 5, less `late` still in flight, less this one.
    let mut held = vec![admitted(&budget).await];
    assert_eq!(window(&redis).0, 3);

    late.reconcile(report(3, Duration::from_millis(20)));
    reconciled(&redis, &late_id).await;
    assert_eq!(window(&redis).0, 3, "given back before its count ended");
    tokio::time::sleep(Duration::from_millis(30)).await;
    for _ in 0..4 {
        held.push(admitted(&budget).await);
    }
    assert!(matches!(budget.reserve(ask()).await, Gate::Wait(_)));
}

/// The Redis server's clock, in µs.
fn redis_now(redis: &RedisServer) -> i64 {
    let out = redis.cli(&["TIME"]);
    let mut v = out.lines().map(|l| l.trim().parse::<i64>().unwrap());
    v.next().unwrap() * 1_000_000 + v.next().unwrap()
}

/// Ten requests of a 10-per-window counter, each answered with a 400 ms round trip and reporting
/// `reset_after(count)` for the count it made; then how long the next request is told to wait, and how
/// long the window has left to its latest reported reset (measured after the wait was given).
async fn wait_after_timed_window(reset_after: impl Fn(u64) -> Duration) -> (i64, i64) {
    let (redis, budget) = start().await;
    let rtt = 400_000;
    for count in 1..=10u64 {
        let lease = admitted(&budget).await;
        answer(
            &redis,
            lease,
            Report {
                timing: Timing {
                    rtt,
                    answered: None,
                    percent: 100,
                    margin: 2_000,
                },
                ..Report {
                    limit: 10,
                    ..report(10 - count, reset_after(count))
                }
            },
        )
        .await;
    }
    let wait = match budget.reserve(ask()).await {
        Gate::Wait(us) => i64::try_from(us).unwrap(),
        other => panic!("not waiting: {other:?}"),
    };
    let left = window(&redis).1 - redis_now(&redis);
    (wait, left)
}

/// A fixed window (every response names one reset, whatever its count) whose responses show 400 ms round
/// trips is released early: requests reserved then still arrive at the reset. (The margin below the
/// 400 ms covers the time `left` takes to measure.)
#[tokio::test]
async fn a_fixed_window_is_released_early_by_what_its_round_trips_show() {
    let (wait, left) = wait_after_timed_window(|_| Duration::from_secs(1)).await;
    assert!(
        left - wait > 300_000,
        "released {} µs before the latest reset; expected about 400 ms less the margin",
        left - wait
    );
}

/// A drain (a leaky bucket: each response's reset grows with its count) is paced, not released early: with
/// counts 1 to 10 reporting 200 ms each, its interval is at most 2 s / 9, and once nine are in the bucket
/// (one kept free) the next may leave when the level falls to eight: eight intervals before it is empty.
/// (The 200 ms of slack covers the time `left` takes to measure.)
#[tokio::test]
async fn a_drain_is_paced_below_its_limit_not_released_early() {
    let (wait, left) =
        wait_after_timed_window(|count| Duration::from_millis(200) * u32::try_from(count).unwrap())
            .await;
    let before_empty = left - wait;
    let eight_intervals = 8 * 2_000_000 / 9;
    assert!(
        (eight_intervals - 200_000..=eight_intervals).contains(&before_empty),
        "the next request may leave {before_empty} µs before the bucket is empty, not eight intervals"
    );
}

/// Once a drain has emptied, it takes its limit less the one request's room kept free, then waits about
/// one interval for the next.
#[tokio::test]
async fn an_empty_drain_takes_its_limit_less_one_then_paces() {
    let (redis, budget) = start().await;
    for count in 1..=10u64 {
        let lease = admitted(&budget).await;
        answer(
            &redis,
            lease,
            Report {
                limit: 10,
                ..report(
                    10 - count,
                    Duration::from_millis(100) * u32::try_from(count).unwrap(),
                )
            },
        )
        .await;
    }
    // Empty 1 s after the last response at the latest. (Intervals this long leave the nine admissions
    // below time to happen before one more drains, even on a slow machine.)
    tokio::time::sleep(Duration::from_millis(1_150)).await;
    let mut held = Vec::new();
    for _ in 0..9 {
        held.push(admitted(&budget).await);
    }
    match budget.reserve(ask()).await {
        // One interval (at most 1 s / 9) after the first of the nine, less the time they took.
        Gate::Wait(us) => assert!(us <= 111_112, "{us} µs"),
        other => panic!("a tenth went into a bucket of ten: {other:?}"),
    }
}

/// Not waiting for Redis: a budget whose Redis does not answer yet starts degraded and decides alone,
/// then joins the shared budget by itself once Redis answers. Waiting (the default), the same start is an
/// error; and a Redis that answers but refuses (the script) is an error either way.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_budget_not_waiting_for_redis_starts_alone_and_joins_when_redis_answers() {
    let port = ratelimit_test_support::redis_server::free_port();
    let url = format!("redis://127.0.0.1:{port}/");
    let builder = || {
        SharedBudget::builder()
            .namespace("late")
            .breaker(3, Duration::from_millis(50))
    };
    assert!(builder().connect(&url).await.is_err());
    let budget = builder().wait_for_redis(false).connect(&url).await.unwrap();
    assert!(budget.is_degraded());
    let alone = admitted(&budget).await;
    drop(alone);
    assert_eq!((budget.stats().calls, budget.stats().fallbacks), (0, 1));

    let redis = RedisServer::try_start_on(port, &[]).expect("the port was taken meanwhile");
    let start = Instant::now();
    while budget.is_degraded() {
        assert!(start.elapsed() < HANG_DETECTOR, "never joined");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    eprintln!("joined {:?} after Redis started", start.elapsed());
    let shared = admitted(&budget).await;
    assert_eq!(budget.stats().calls, 1, "{:?}", budget.stats());
    drop(shared);
    drop(redis);

    // A server without SCRIPT: it answers, and refuses to load the budget's script.
    let refusing = RedisServer::start_with(&["--rename-command", "SCRIPT", ""]);
    let refused = builder()
        .wait_for_redis(false)
        .connect(&refusing.url())
        .await;
    assert!(
        refused.is_err(),
        "a Redis refusing the script was taken for one not answering yet"
    );
}
