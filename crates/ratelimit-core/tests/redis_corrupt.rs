//! Nothing read back from Redis is believed blindly.
//!
//! * State the script did not write (`abc`, `-5`, a float, a value beyond 2^53, missing fields, a foreign
//!   sorted set) at an identity's key is an `RLCORRUPT` error for that call, on a real `redis-server`, for
//!   every algorithm, alone, in a policy set and inside a coalesced batch — never a fresh, allowed
//!   decision; a key of another type is Redis's own `WRONGTYPE`, for every algorithm.
//! * Well-formed state beyond what a policy can hold (a quota lowered since it was written, a server clock
//!   that stepped back) reads as the policy's fullest state: denied, within the policy's longest wait.
//! * A reply no policy can produce (a fake server answering canned RESP with the call's token, since
//!   nothing real produces garbage on demand) is a protocol error for that call: it follows the failure
//!   policy, never reaches the deny cache, and one identity's bad replies never open the breaker.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use ratelimit_core::store::redis::Scripting;
use ratelimit_core::{
    ManualClock, Outcome, Policy, PolicySet, Quota, RedisClock, RedisStore, Store, StoreError,
};
use ratelimit_test_support::poll::poll_once;
use ratelimit_test_support::redis_server::RedisServer;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};

/// Realistic Unix-epoch microseconds (a manual clock's start in client-time mode).
const EPOCH: u64 = 1_795_000_000_000_000;

fn quota() -> Quota {
    Quota::per_second(10).build().unwrap()
}

/// One policy of every algorithm (10/s), and whether its state is a sorted set.
fn every_algorithm() -> Vec<(Policy, bool)> {
    vec![
        (Policy::gcra("gcra", quota()).unwrap(), false),
        (
            Policy::gcra("gcra-pen", quota()).unwrap().penalise(true),
            false,
        ),
        (Policy::token_bucket("tb", quota()).unwrap(), false),
        (Policy::leaky_bucket("lb", quota()).unwrap(), false),
        (
            Policy::shaper("shaper", quota(), Duration::from_millis(500)).unwrap(),
            false,
        ),
        (Policy::fixed_window("fw", quota()).unwrap(), false),
        (Policy::sliding_log("log", quota()).unwrap(), true),
        (Policy::sliding_window("sw", quota()).unwrap(), false),
    ]
}

/// A store that fails closed (the default) and whose breaker does not open while a test fails calls on
/// purpose, so each call's own error is what comes back.
async fn store(server: &RedisServer, max_in_flight: usize) -> RedisStore {
    RedisStore::builder()
        .timeout(Duration::from_secs(5))
        .breaker(1_000, Duration::from_millis(1))
        .max_in_flight(max_in_flight)
        .connect(&server.url())
        .await
        .unwrap()
}

/// What a string state's key may hold that the script never wrote, for a state of `fields` integers.
fn corrupt_strings(fields: usize) -> Vec<String> {
    let mut values = vec![
        "abc".to_owned(),
        "-5".to_owned(),
        "1.5".to_owned(),
        "".to_owned(),
        "99999999999999999999".to_owned(),
        "9007199254740993".to_owned(), // 2^53 + 1
        "0x10".to_owned(),
        " 5".to_owned(),
    ];
    let well_formed = vec!["5"; fields].join(",");
    values.push(format!("{well_formed},6")); // a field too many
    if fields > 1 {
        values.push(vec!["5"; fields - 1].join(",")); // a field missing
        values.push(well_formed.replacen('5', "-5", 1));
        values.push(well_formed.replacen('5', "2.5", 1));
        values.push(well_formed.replacen('5', "99999999999999999999", 1));
    }
    values
}

/// How many integers a policy's string state holds.
fn fields(policy: &Policy) -> usize {
    match policy.algorithm().kind().name() {
        "gcra" | "shaper" => 1,
        "sliding_window" => 3,
        _ => 2,
    }
}

/// Sorted sets at a sliding log's key that the script did not write: each as `ZADD` arguments.
const CORRUPT_LOGS: &[&[&str]] = &[
    &["1", "1:1"],                               // entries without the '#' total
    &["5", "#"],                                 // a positive total
    &["-1.5", "#"],                              // a fractional total
    &["0", "#", "1", "1:1"],                     // a zero total with entries
    &["-3", "#", "1", "junk"],                   // an entry that is not "ts:cost"
    &["-1", "#", "1.5", "1:1"],                  // a fractional time
    &["-1", "#", "1e300", "1:1"],                // a time beyond 2^53
    &["-1", "#", "1", "1:99999999999999999999"], // a cost beyond 2^53
];

/// The call failed with the server's RLCORRUPT error: its code is what the store classifies by.
fn assert_corrupt(result: Result<ratelimit_core::Decision, StoreError>, what: &str) {
    match result {
        // The store classifies the server's RLCORRUPT as this identity's own error.
        Err(StoreError::KeyState { reason, .. }) => {
            assert!(reason.contains("RLCORRUPT"), "{what}: {reason}");
        }
        Err(e) => panic!("{what}: {e}, not the server's RLCORRUPT"),
        Ok(d) => panic!("{what}: read as state, answered {d:?}"),
    }
}

/// Every algorithm, on the server's time (the lean GCRA path included), alone and as the second policy
/// of a set: corrupt state is an RLCORRUPT error and is left as it was (nothing overwrites it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrupt_state_is_an_error_for_every_algorithm_never_fresh() {
    let server = RedisServer::start();
    let store = store(&server, 2).await;
    let guard = Policy::fixed_window("guard", Quota::per_hour(1_000).build().unwrap()).unwrap();
    for (policy, zset) in every_algorithm() {
        let alone = PolicySet::new([policy.clone()]).unwrap();
        let in_set = PolicySet::new([guard.clone(), policy.clone()]).unwrap();
        for set in [&alone, &in_set] {
            let id = format!("{}-{}", policy.name(), set.len());
            let key = store.key_for(id.as_bytes(), &policy);
            if zset {
                for args in CORRUPT_LOGS {
                    server.cli(&["DEL", &key]);
                    let mut zadd = vec!["ZADD", key.as_str()];
                    zadd.extend_from_slice(args);
                    server.cli(&zadd);
                    let what = format!("{} holding {args:?}", policy.name());
                    assert_corrupt(
                        Store::<str, PolicySet>::check(&store, set, &id, 1).await,
                        &what,
                    );
                    assert_corrupt(
                        Store::<str, PolicySet>::peek(&store, set, &id, 1).await,
                        &what,
                    );
                }
                continue;
            }
            for value in corrupt_strings(fields(&policy)) {
                server.cli(&["SET", &key, &value]);
                let what = format!("{} (set of {}) holding {value:?}", policy.name(), set.len());
                assert_corrupt(
                    Store::<str, PolicySet>::check(&store, set, &id, 1).await,
                    &what,
                );
                assert_corrupt(
                    Store::<str, PolicySet>::peek(&store, set, &id, 0).await,
                    &what,
                );
                assert_eq!(server.cli(&["GET", &key]).trim_end(), value, "{what}");
            }
            // Deleted, the key is fresh again, and the guard of the set was never charged meanwhile.
            server.cli(&["DEL", &key]);
            let d = Store::<str, PolicySet>::check(&store, set, &id, 1)
                .await
                .unwrap();
            assert!(d.is_allowed(), "{id}: {d:?}");
            assert_eq!(
                d.statuses()[0].remaining,
                set.policies()[0].quota().limit() - 1
            );
        }
    }
}

/// A key of another type is Redis's own WRONGTYPE, for every algorithm: no script works around it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_of_another_type_is_wrongtype_for_every_algorithm() {
    let server = RedisServer::start();
    let store = store(&server, 2).await;
    for (policy, zset) in every_algorithm() {
        let set = PolicySet::new([policy.clone()]).unwrap();
        let key = store.key_for(b"typed", &policy);
        for foreign in [&["HSET", &key, "f", "1"][..], &["RPUSH", &key, "1"][..]] {
            server.cli(&["DEL", &key]);
            server.cli(foreign);
            if zset {
                // A string is as foreign to the log as a hash.
                server.cli(&["DEL", &key]);
                server.cli(&["SET", &key, "1"]);
            }
            for op in ["check", "peek"] {
                let r = match op {
                    "check" => Store::<[u8], PolicySet>::check(&store, &set, b"typed", 1).await,
                    _ => Store::<[u8], PolicySet>::peek(&store, &set, b"typed", 1).await,
                };
                let e = r.expect_err(policy.name()).to_string();
                assert!(e.contains("WRONGTYPE"), "{} {op}: {e}", policy.name());
            }
        }
        server.cli(&["DEL", &key]);
    }
}

/// A coalesced batch whose calls include one identity with a corrupt key and one with a key of another
/// type: those two calls fail, every other call of the batch is decided (and charged) exactly as alone.
// One thread: the connection's driver cannot answer the first call between its first poll and the
// others' (on two threads, a descheduled test thread let it answer, and the calls went out one by one).
#[tokio::test]
async fn a_corrupt_key_fails_its_own_call_in_a_batch_not_the_batch() {
    let server = RedisServer::start();
    // One call in flight: everything else queues and goes out as one batch.
    let store = store(&server, 1).await;
    for (policy, zset) in every_algorithm() {
        let set = PolicySet::new([policy.clone()]).unwrap();
        let ids: Vec<String> = (0..12).map(|i| format!("{}-b{i}", policy.name())).collect();
        let corrupt = store.key_for(ids[5].as_bytes(), &policy);
        let typed = store.key_for(ids[8].as_bytes(), &policy);
        if zset {
            server.cli(&["ZADD", &corrupt, "1", "junk"]);
        } else {
            server.cli(&["SET", &corrupt, "abc"]);
        }
        server.cli(&["HSET", &typed, "f", "1"]);
        let calls_before = store.stats().redis_calls;
        let mut calls: Vec<_> = ids
            .iter()
            .map(|id| Box::pin(Store::<str, PolicySet>::check(&store, &set, id, 1)))
            .collect();
        // The lane's slot is free before the first call goes out (a batch task of the previous round
        // gives it back just after answering its callers).
        while store.debug_state().in_flight > 0 {
            tokio::task::yield_now().await;
        }
        for (i, call) in calls.iter_mut().enumerate() {
            assert!(
                poll_once(call).await,
                "{}: call {i} answered within its first poll",
                policy.name()
            );
        }
        let lane = store.debug_state();
        assert_eq!(
            (lane.in_flight, lane.queued),
            (1, ids.len() - 1),
            "{}: the first call holds the slot, every other one is queued for one batch",
            policy.name()
        );
        let mut results = Vec::new();
        for call in calls {
            results.push(call.await);
        }
        let sent = store.stats().redis_calls - calls_before;
        assert_eq!(sent, 2, "{}: the first call, then one batch", policy.name());
        for (i, r) in results.into_iter().enumerate() {
            match i {
                5 => assert!(
                    r.is_err(),
                    "{}: the corrupt call answered {r:?}",
                    policy.name()
                ),
                8 => assert!(
                    r.is_err(),
                    "{}: the WRONGTYPE call answered {r:?}",
                    policy.name()
                ),
                _ => {
                    let d = r.unwrap_or_else(|e| panic!("{} call {i}: {e}", policy.name()));
                    assert!(d.is_allowed(), "{} call {i}: {d:?}", policy.name());
                }
            }
        }
        // Each healthy identity was charged once: one unit less on a peek.
        for (i, id) in ids.iter().enumerate() {
            if i == 5 || i == 8 {
                continue;
            }
            let d = Store::<str, PolicySet>::peek(&store, &set, id, 0)
                .await
                .unwrap();
            assert_eq!(d.remaining(), 9, "{} call {i}", policy.name());
        }
    }
}

/// The longest wait each policy can produce, from its quota (10/s: T = 100 ms, burst 10, tau = 1 s).
fn longest_wait(policy: &Policy) -> u64 {
    match policy.algorithm().kind().name() {
        "gcra" | "token_bucket" | "leaky_bucket" => 2_000_000,
        "shaper" => 1_500_000,
        "sliding_window" => 2_000_000,
        _ => 1_000_000,
    }
}

/// Well-formed state beyond anything the policy can hold — a quota lowered since it was written, or a
/// server clock that stepped back — reads as the fullest state: limited, never fresh, and never a wait
/// longer than the policy can produce (before, a GCRA state 30 years ahead answered a 30-year retry).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn state_beyond_the_policy_reads_as_its_fullest_never_as_a_longer_wait() {
    let server = RedisServer::start();
    let clock = ManualClock::new(EPOCH);
    let store = RedisStore::builder()
        .timeout(Duration::from_secs(5))
        .clock(RedisClock::Client {
            clock: Arc::new(clock.clone()),
            ttl_slack: Duration::ZERO,
        })
        .deny_cache(100)
        .connect(&server.url())
        .await
        .unwrap();
    let far = EPOCH + 1_000_000_000_000_000; // about 32 years ahead
    let window = EPOCH - EPOCH % 1_000_000;
    for (policy, zset) in every_algorithm() {
        let set = PolicySet::new([policy.clone()]).unwrap();
        let key = store.key_for(b"beyond", &policy);
        match policy.algorithm().kind().name() {
            "gcra" | "shaper" => server.cli(&["SET", &key, &far.to_string()]),
            "token_bucket" | "leaky_bucket" => {
                server.cli(&["SET", &key, &format!("4000000000000000,{far}")])
            }
            "fixed_window" => server.cli(&["SET", &key, &format!("{window},4000000000000000")]),
            "sliding_window" => server.cli(&[
                "SET",
                &key,
                &format!("{window},4000000000000000,4000000000000000"),
            ]),
            _ => {
                assert!(zset);
                server.cli(&[
                    "ZADD",
                    &key,
                    "-10",
                    "#",
                    &far.to_string(),
                    &format!("{far}:10"),
                ])
            }
        };
        for cost in [1, 10] {
            let d = Store::<[u8], PolicySet>::check(&store, &set, b"beyond", cost)
                .await
                .unwrap_or_else(|e| panic!("{}: {e}", policy.name()));
            assert_eq!(d.outcome(), Outcome::Limited, "{}: {d:?}", policy.name());
            let s = d.statuses()[0];
            assert_eq!(s.remaining, 0, "{}: {s:?}", policy.name());
            let bound = longest_wait(&policy);
            assert!(
                s.retry <= bound && s.reset <= bound,
                "{}: {s:?} beyond {bound} µs",
                policy.name()
            );
        }
        server.cli(&["DEL", &key]);
    }
}

/// A fake Redis: answers `+OK` to everything (connection setup, SCRIPT/FUNCTION LOAD) except script
/// calls, which get `reply` (RESP, an array) with the call's token appended as the script does, until
/// `reply` changes. Nothing real produces an out-of-range reply on demand, so this is the one place a
/// canned server stands in for Redis.
struct FakeRedis {
    port: u16,
    /// The canned script reply, swappable while the server runs.
    reply: Arc<Mutex<Vec<u8>>>,
}

impl FakeRedis {
    async fn start(reply: &[u8]) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let slot = Arc::new(Mutex::new(reply.to_vec()));
        let shared = slot.clone();
        tokio::spawn(async move {
            while let Ok((socket, _)) = listener.accept().await {
                let slot = shared.clone();
                tokio::spawn(async move {
                    let (read, mut write) = socket.into_split();
                    let mut read = BufReader::new(read);
                    while let Some(command) = read_command(&mut read).await {
                        let name = command.first().map(|c| c.to_ascii_uppercase());
                        let answer = match name.as_deref() {
                            Some(b"EVALSHA") | Some(b"FCALL") | Some(b"EVAL") => {
                                with_token(&slot.lock().unwrap(), command.last())
                            }
                            _ => b"+OK\r\n".to_vec(),
                        };
                        if write.write_all(&answer).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        FakeRedis { port, reply: slot }
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    fn answer(&self, reply: &[u8]) {
        *self.reply.lock().unwrap() = reply.to_vec();
    }
}

/// `reply` (`*n\r\n…`) with the call's token (its last argument) as one more integer, as the script
/// echoes it.
fn with_token(reply: &[u8], token: Option<&Vec<u8>>) -> Vec<u8> {
    let text = String::from_utf8_lossy(reply);
    let (head, rest) = text.split_once("\r\n").unwrap();
    let n: usize = head.strip_prefix('*').unwrap().parse().unwrap();
    let token = String::from_utf8_lossy(token.unwrap());
    format!("*{}\r\n{rest}:{token}\r\n", n + 1).into_bytes()
}

/// Reads one RESP command (an array of bulk strings); `None` at the end of the stream.
async fn read_command<R: tokio::io::AsyncBufRead + Unpin>(read: &mut R) -> Option<Vec<Vec<u8>>> {
    let mut line = String::new();
    read.read_line(&mut line).await.ok().filter(|n| *n > 0)?;
    let n: usize = line.trim_end().strip_prefix('*')?.parse().ok()?;
    let mut args = Vec::with_capacity(n);
    for _ in 0..n {
        line.clear();
        read.read_line(&mut line).await.ok()?;
        let len: usize = line.trim_end().strip_prefix('$')?.parse().ok()?;
        let mut arg = vec![0; len + 2];
        read.read_exact(&mut arg).await.ok()?;
        arg.truncate(len);
        args.push(arg);
    }
    Some(args)
}

/// The incident: one reply `{now, 2^63 − 1, 0}` for a global cap made every client get a 429 with
/// `Retry-After: 9223372036854`, and the deny cache kept answering it. Now that reply is a protocol error
/// naming the field and the policy, nothing is cached, and the next sane reply is believed at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_out_of_range_reply_is_an_error_and_never_reaches_the_deny_cache() {
    let now = EPOCH;
    let fake =
        FakeRedis::start(format!("*3\r\n:{now}\r\n:9223372036854775807\r\n:0\r\n").as_bytes())
            .await;
    let store = RedisStore::builder()
        .timeout(Duration::from_secs(5))
        .scripting(Scripting::Eval)
        .breaker(1_000, Duration::from_millis(1))
        .deny_cache(1_000)
        .connect(&fake.url())
        .await
        .unwrap();
    let global =
        PolicySet::new([Policy::gcra("global", Quota::per_second(100).build().unwrap()).unwrap()])
            .unwrap();
    for client in ["a", "b", "c"] {
        match Store::<str, PolicySet>::check(&store, &global, client, 1).await {
            Err(StoreError::Protocol(m)) => {
                assert!(
                    m.contains("reset 9223372036854775807") && m.contains("`global`"),
                    "{m}"
                )
            }
            other => panic!("client {client}: believed {other:?}"),
        }
    }
    // Out-of-range replies of the generic shape (a penalising policy): each field in turn.
    let penalised =
        PolicySet::new([
            Policy::gcra("global", Quota::per_second(100).build().unwrap())
                .unwrap()
                .penalise(true),
        ])
        .unwrap();
    for (fields, what) in [
        (
            "100 :0 :0 :9223372036854775807 :0",
            "retry 9223372036854775807",
        ),
        ("100 :0 :2000001 :1 :0", "reset 2000001"),
        ("100 :101 :0 :0 :0", "remaining 101"),
        ("7 :0 :0 :0 :0", "limit 7"),
        ("100 :0 :0 :0 :5", "delay 5"),
        ("100 :0 :0 :-1 :0", "never for cost 1"),
    ] {
        let body: String = fields
            .split(' ')
            .map(|f| format!(":{}\r\n", f.trim_start_matches(':')))
            .collect();
        fake.answer(format!("*6\r\n:{now}\r\n{body}").as_bytes());
        match Store::<str, PolicySet>::check(&store, &penalised, "a", 1).await {
            Err(StoreError::Protocol(m)) => assert!(m.contains(what), "{what}: {m}"),
            other => panic!("{what}: believed {other:?}"),
        }
    }
    assert_eq!(store.stats().deny_cache_hits, 0);
    // A sane reply is believed, and the next call goes to the server: nothing bogus was cached.
    fake.answer(format!("*3\r\n:{now}\r\n:10000\r\n:1\r\n").as_bytes());
    let calls = store.stats().redis_calls;
    let d = Store::<str, PolicySet>::check(&store, &global, "a", 1)
        .await
        .unwrap();
    assert!(d.is_allowed(), "{d:?}");
    assert_eq!(store.stats().redis_calls, calls + 1);
    // A sane denial is cached, for its own retry only.
    fake.answer(format!("*3\r\n:{now}\r\n:1000000\r\n:0\r\n").as_bytes());
    let d = Store::<str, PolicySet>::check(&store, &global, "a", 1)
        .await
        .unwrap();
    assert_eq!(d.retry_after(), Some(Duration::from_micros(10_000)));
    Store::<str, PolicySet>::check(&store, &global, "a", 1)
        .await
        .unwrap();
    assert_eq!(store.stats().deny_cache_hits, 1);
}

/// A reply with its call's token but values no policy can produce comes from the right request of a wrong
/// server (another version of the script under the same name, say): a protocol error for that call, which
/// follows the failure policy; the connection is in step, so it is not replaced; and one identity's bad
/// replies never open the breaker for the others.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_identitys_bad_replies_follow_the_failure_policy_and_never_open_the_breaker() {
    use ratelimit_core::OnFailure;
    let impossible = format!("*3\r\n:{EPOCH}\r\n:999999999999999\r\n:1\r\n");
    let sane = format!("*3\r\n:{EPOCH}\r\n:100000\r\n:1\r\n");
    let set =
        PolicySet::new([Policy::gcra("g", Quota::per_hour(10).build().unwrap()).unwrap()]).unwrap();
    for on_failure in [OnFailure::Allow, OnFailure::Error] {
        let fake = FakeRedis::start(impossible.as_bytes()).await;
        let store = RedisStore::builder()
            .timeout(Duration::from_secs(5))
            .breaker(3, Duration::from_millis(300))
            .on_failure(on_failure)
            .deny_cache(100)
            .max_in_flight(0)
            .connect(&fake.url())
            .await
            .unwrap();
        for _ in 0..6 {
            let r = Store::<str, PolicySet>::check(&store, &set, "bad", 1).await;
            match on_failure {
                OnFailure::Error => {
                    assert!(matches!(r, Err(StoreError::Protocol(_))), "{r:?}")
                }
                _ => assert!(r.unwrap().is_allowed(), "the fallback answers"),
            }
        }
        let stats = store.stats();
        assert_eq!(stats.deny_cache_hits, 0, "nothing was cached");
        assert_eq!(stats.protocol_errors, 6);
        assert_eq!(stats.reconnects, 0, "replies with their tokens are in step");
        if on_failure != OnFailure::Error {
            assert_eq!(stats.fallbacks, 6);
        }
        assert!(
            !store.is_degraded(),
            "one identity's bad replies opened the breaker"
        );
        fake.answer(sane.as_bytes());
        let d = Store::<str, PolicySet>::check(&store, &set, "good", 1).await;
        assert!(d.as_ref().is_ok_and(|d| d.is_allowed()), "{d:?}");
    }
}
