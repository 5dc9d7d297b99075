//! The fault tour: one test per way Redis (or the network to it) can fail, each measuring what the Redis
//! store does under every [`OnFailure`] mode and printing one table row per mode:
//!
//! `| fault | mode | expected | observed | recovery ms | wrongly admitted | wrongly refused |`
//!
//! Each test runs one fault episode against three stores (one per mode) that reach a real `redis-server`
//! through a [`FaultProxy`]:
//!
//! 1. **Before**: each store spends `USED_BEFORE_FAULT` of the long-lived identity's `LIMIT` units.
//! 2. **During**: the fault starts; each store makes `CALLS_DURING_FAULT` checks on that identity, timing
//!    every call. The fault ends.
//! 3. **Recovery**: each store checks fresh identities with [`RedisStore::check_at`] until a decision
//!    equals the reference exactly; the recovery time runs from the fault's end to that decision.
//! 4. **After**: `LIMIT` more checks on the long-lived identity, `LIMIT + 2` on a fresh identity through
//!    [`Store::check`], and `LIMIT + 1` through `check_at` on another, compared with the reference.
//!
//! **Wrongly admitted / refused** (columns: during / after) compare each decision with a fault-free
//! reference fed the same calls: it admits an identity's first `LIMIT` calls and refuses the rest (GCRA,
//! `LIMIT` per hour: no unit comes back within a test). A call that returned an error is not a decision and
//! the reference does not see it. What each mode may get wrong is bounded, and asserted:
//!
//! * wrongly admitted on the long-lived identity, during and after together: `error` none, `allow` every
//!   call during the fault (fail open), `local/2` the local quota `LIMIT / 2` (the local admissions are not
//!   charged to Redis, so they add up with what Redis still admits). Faults that lose Redis's data
//!   (`FLUSHALL`, kill -9 of a server without persistence) may add `USED_BEFORE_FAULT`: the store cannot
//!   know what the server forgot.
//! * wrongly refused: at most the calls cut off mid-flight (failed after they were sent, or cancelled):
//!   Redis may have applied them after the caller gave up, unknown to the reference.
//! * fresh identities after recovery: nothing wrong, and `check_at` decisions equal
//!   [`PolicySet`]'s at the server's time, status for status.
//!
//! Also asserted: the store recovers by itself (a Redis-backed decision equal to the reference within
//! `STUCK_AFTER` of the fault's end, and no call waits that long), and is not degraded at the end. Speed is
//! measured, not asserted (tests never assert on wall-clock speed: two shared cores can stall any timer):
//! a row marks `(over ...)` where the slowest call took longer than the timeout plus `SCHEDULING_SLACK`
//! or recovery took longer than its expected bound. A row that breaks an invariant is printed first,
//! then the test fails naming the invariant. The key-flood test checks that the store's
//! own memory (the deny cache, the local fallback store) stays bounded under many distinct identities.
//!
//! The tests take a shared lock and run one at a time: their timings share two cores, and the key flood
//! measures the process's resident memory.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Once;
use std::time::{Duration, Instant};

use ratelimit_core::store::redis::Scripting;
use ratelimit_core::{
    Decision, OnFailure, Policy, PolicySet, PolicyStates, Quota, RedisStore, Rule, Store,
    StoreError,
};
use ratelimit_test_support::cancel::drop_after_polls;
use ratelimit_test_support::fault_proxy::{Corruption, Direction, Fault, FaultProxy};
use ratelimit_test_support::redis_server::RedisServer;
use tokio::sync::{Mutex, MutexGuard};
use tokio::task::JoinHandle;

/// Units per identity per hour: none come back during a test.
const LIMIT: u64 = 10;
/// Spent on the long-lived identity before the fault, leaving two units.
const USED_BEFORE_FAULT: u64 = LIMIT - 2;
const CALLS_DURING_FAULT: u64 = 10;
/// Spreads the calls during a fault over its whole length (and over a breaker cooldown or two).
const PAUSE_BETWEEN_CALLS: Duration = Duration::from_millis(30);
const TIMEOUT_MS: u64 = 100;
const TIMEOUT: Duration = Duration::from_millis(TIMEOUT_MS);
const FAILURES_TO_OPEN: u32 = 3;
const COOLDOWN_MS: u64 = 150;
const COOLDOWN: Duration = Duration::from_millis(COOLDOWN_MS);
/// Two shared cores and a debug build: a timer can fire this late under load. Kept below one timeout, so
/// a row marks a call that waited for two timeouts.
const SCHEDULING_SLACK_MS: u64 = 90;
const SCHEDULING_SLACK: Duration = Duration::from_millis(SCHEDULING_SLACK_MS);
/// From a fault's end: the breaker, opened by the fault's last failure, lets a probe through after one
/// cooldown; that probe may be the request that finds the connection the fault killed (the client
/// notices a dead connection on its next request) and fail within a timeout, opening the breaker for a
/// second cooldown; the next probe succeeds.
const RECOVERY_BOUND: Duration =
    Duration::from_millis(2 * COOLDOWN_MS + 2 * TIMEOUT_MS + SCHEDULING_SLACK_MS);
/// A restarted server is up when it answers PING, but the client reconnects with a backoff of at most
/// 200 ms (the store's connection manager setting), once or twice.
const RECONNECT_BACKOFF: Duration = Duration::from_millis(400);
/// Recovery is measured until this long after the fault's end; later means stuck. A call that waits this
/// long (30 timeouts) is stuck too, not slow.
const STUCK_AFTER: Duration = Duration::from_secs(3);
const RECOVERY_POLL: Duration = Duration::from_millis(5);
const LOCAL_INSTANCES: u32 = 2;
/// The stores run with their deny cache on, as a deployment under load would.
const DENY_CACHE_ENTRIES: usize = 1_024;
/// How often the flush faults flush while they last.
const FLUSH_EVERY: Duration = Duration::from_millis(25);
/// Well-formed RESP for the GCRA script path, with an impossible value: admitted, with a reset of 31
/// years on a policy whose state can never reach past one hour.
const IMPOSSIBLE_GCRA_REPLY: &[u8] = b"*3\r\n:1\r\n:999999999999999\r\n:1\r\n";

static SERIAL: Mutex<()> = Mutex::const_new(());
static HEADER: Once = Once::new();
static IDENTITIES: AtomicU64 = AtomicU64::new(0);

async fn serial() -> MutexGuard<'static, ()> {
    HEADER.call_once(|| {
        eprintln!("| fault | mode | expected | observed | recovery ms | wrongly admitted (during/after) | wrongly refused (during/after) |");
        eprintln!("|---|---|---|---|---|---|---|");
    });
    SERIAL.lock().await
}

fn set() -> PolicySet {
    PolicySet::new([Policy::gcra("g", Quota::per_hour(LIMIT).build().unwrap()).unwrap()]).unwrap()
}

fn fresh_identity(tag: &str) -> String {
    format!("{tag}-{}", IDENTITIES.fetch_add(1, Ordering::Relaxed))
}

async fn timed<F: Future>(f: F) -> (F::Output, Duration) {
    let started = Instant::now();
    let out = f.await;
    (out, started.elapsed())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Error,
    Allow,
    Local,
}

const MODES: [Mode; 3] = [Mode::Error, Mode::Allow, Mode::Local];

impl Mode {
    fn on_failure(self) -> OnFailure {
        match self {
            Mode::Error => OnFailure::Error,
            Mode::Allow => OnFailure::Allow,
            Mode::Local => OnFailure::Local {
                instances: LOCAL_INSTANCES,
            },
        }
    }

    fn name(self) -> &'static str {
        match self {
            Mode::Error => "error",
            Mode::Allow => "allow",
            Mode::Local => "local/2",
        }
    }

    /// What the mode answers while Redis is out.
    fn outage(self) -> String {
        match self {
            Mode::Error => "typed errors, none admitted".to_owned(),
            Mode::Allow => "all admitted (fail open)".to_owned(),
            Mode::Local => format!("local quota {} admitted", self.outage_allowance()),
        }
    }

    /// Wrong admissions on the long-lived identity the mode allows in an outage (see the module docs).
    fn outage_allowance(self) -> u64 {
        match self {
            Mode::Error => 0,
            Mode::Allow => CALLS_DURING_FAULT,
            Mode::Local => LIMIT.div_ceil(u64::from(LOCAL_INSTANCES)),
        }
    }
}

/// The fault-free reference for one identity: its first `limit` calls are admitted.
#[derive(Debug)]
struct Reference {
    limit: u64,
    admitted: u64,
}

impl Default for Reference {
    fn default() -> Self {
        Reference {
            limit: LIMIT,
            admitted: 0,
        }
    }
}

impl Reference {
    fn admits(&mut self) -> bool {
        let admit = self.admitted < self.limit;
        self.admitted += u64::from(admit);
        admit
    }
}

/// The calls of one phase, compared with the reference.
#[derive(Debug, Default, Clone, Copy)]
struct Tally {
    admitted: u64,
    refused: u64,
    errors: u64,
    cancelled: u64,
    wrongly_admitted: u64,
    wrongly_refused: u64,
    slowest: Duration,
}

impl Tally {
    fn record(
        &mut self,
        reference: &mut Reference,
        result: &Result<Decision, StoreError>,
        took: Duration,
    ) {
        self.slowest = self.slowest.max(took);
        match result {
            Ok(d) if d.is_allowed() => {
                self.admitted += 1;
                self.wrongly_admitted += u64::from(!reference.admits());
            }
            Ok(_) => {
                self.refused += 1;
                self.wrongly_refused += u64::from(reference.admits());
            }
            Err(_) => self.errors += 1,
        }
    }
}

/// What the calls during a fault look like.
#[derive(Debug, Clone, Copy)]
enum Plan {
    /// `CALLS_DURING_FAULT` checks, `PAUSE_BETWEEN_CALLS` apart.
    Steady,
    /// Enough checks to open the breaker, a cooldown, then checks dropped after their first few polls:
    /// the first of them is the breaker's probe.
    CancelProbes,
    /// As `Steady`, then as many checks of fresh identities (bystanders), each of which must be decided by
    /// Redis exactly: the fault concerns one identity only, however often that identity fails.
    Bystanders,
}

/// Checks dropped mid-call by [`Plan::CancelProbes`].
const CANCELLED_CALLS: usize = 4;

/// One store through one fault episode.
struct Run {
    mode: Mode,
    store: RedisStore,
    long_lived: String,
    reference: Reference,
    during: Tally,
    /// Calls that failed after they were sent (the store's error count over the fault).
    sent_and_failed: u64,
    /// Calls answered by the failure policy during the fault.
    fallbacks: u64,
    recovery: Option<Duration>,
    /// Redis-backed decisions on fresh identities after the fault that differed from the reference.
    inexact_after_fault: u64,
    /// Bystanders ([`Plan::Bystanders`]) that failed or were not decided exactly.
    bystanders_wrong: u64,
    slowest_probe: Duration,
    after_long_lived: Tally,
    after_fresh: Tally,
    exact_after: Result<(), String>,
    degraded_at_end: bool,
}

impl Run {
    async fn new(mode: Mode, url: &str, scripting: Scripting) -> Self {
        let store = RedisStore::builder()
            .prefix(format!("tour-{}", mode.name().replace('/', "")))
            .timeout(TIMEOUT)
            .breaker(FAILURES_TO_OPEN, COOLDOWN)
            .on_failure(mode.on_failure())
            .scripting(scripting)
            .deny_cache(DENY_CACHE_ENTRIES)
            .connect(url)
            .await
            .unwrap();
        Run {
            mode,
            store,
            long_lived: fresh_identity("long-lived"),
            reference: Reference::default(),
            during: Tally::default(),
            sent_and_failed: 0,
            fallbacks: 0,
            recovery: None,
            inexact_after_fault: 0,
            bystanders_wrong: 0,
            slowest_probe: Duration::ZERO,
            after_long_lived: Tally::default(),
            after_fresh: Tally::default(),
            exact_after: Ok(()),
            degraded_at_end: false,
        }
    }

    async fn check(&self, identity: &str) -> (Result<Decision, StoreError>, Duration) {
        timed(Store::<str, PolicySet>::check(
            &self.store,
            &set(),
            identity,
            1,
        ))
        .await
    }

    async fn before(mut self) -> Self {
        let mut tally = Tally::default();
        for _ in 0..USED_BEFORE_FAULT {
            let (r, took) = self.check(&self.long_lived).await;
            tally.record(&mut self.reference, &r, took);
        }
        assert_eq!(
            tally.admitted,
            USED_BEFORE_FAULT,
            "{}: healthy before the fault",
            self.mode.name()
        );
        self
    }

    async fn during(mut self, plan: Plan) -> Self {
        let before = self.store.stats();
        match plan {
            Plan::Steady | Plan::Bystanders => {
                for _ in 0..CALLS_DURING_FAULT {
                    let (r, took) = self.check(&self.long_lived).await;
                    self.during.record(&mut self.reference, &r, took);
                    tokio::time::sleep(PAUSE_BETWEEN_CALLS).await;
                }
                if matches!(plan, Plan::Bystanders) {
                    for _ in 0..CALLS_DURING_FAULT {
                        self.bystander().await;
                        tokio::time::sleep(PAUSE_BETWEEN_CALLS).await;
                    }
                }
            }
            Plan::CancelProbes => {
                for _ in 0..FAILURES_TO_OPEN {
                    let (r, took) = self.check(&self.long_lived).await;
                    self.during.record(&mut self.reference, &r, took);
                }
                tokio::time::sleep(COOLDOWN + SCHEDULING_SLACK).await;
                let set = set();
                for polls in (1..=3).cycle().take(CANCELLED_CALLS) {
                    let call =
                        Store::<str, PolicySet>::check(&self.store, &set, &self.long_lived, 1);
                    match drop_after_polls(call, polls).await {
                        Some(r) => self.during.record(&mut self.reference, &r, Duration::ZERO),
                        None => self.during.cancelled += 1,
                    }
                    tokio::time::sleep(PAUSE_BETWEEN_CALLS).await;
                }
            }
        }
        let after = self.store.stats();
        self.sent_and_failed = after.errors - before.errors;
        self.fallbacks = after.fallbacks - before.fallbacks;
        self
    }

    /// One check of a fresh identity through `check_at`, compared with the reference at the server's time.
    async fn bystander(&mut self) {
        let identity = fresh_identity("bystander");
        let (r, took) = timed(self.store.check_at(&set(), identity.as_bytes(), 1)).await;
        self.during.slowest = self.during.slowest.max(took);
        let exact =
            r.is_ok_and(|(now, got)| got == set().check(&mut PolicyStates::default(), now, 1));
        self.bystanders_wrong += u64::from(!exact);
    }

    /// Polls fresh identities until a Redis-backed decision equals the reference.
    async fn recover(mut self, fault_end: Instant) -> Self {
        while fault_end.elapsed() < STUCK_AFTER {
            let identity = fresh_identity("probe");
            let (r, took) = timed(self.store.check_at(&set(), identity.as_bytes(), 1)).await;
            self.slowest_probe = self.slowest_probe.max(took);
            if let Ok((now, got)) = r {
                let want = set().check(&mut PolicyStates::default(), now, 1);
                if got == want {
                    self.recovery = Some(fault_end.elapsed());
                    break;
                }
                self.inexact_after_fault += 1;
            }
            tokio::time::sleep(RECOVERY_POLL).await;
        }
        self
    }

    async fn after(mut self) -> Self {
        for _ in 0..LIMIT {
            let (r, took) = self.check(&self.long_lived).await;
            self.after_long_lived.record(&mut self.reference, &r, took);
        }
        let fresh = fresh_identity("after");
        let mut reference = Reference::default();
        for _ in 0..LIMIT + 2 {
            let (r, took) = self.check(&fresh).await;
            self.after_fresh.record(&mut reference, &r, took);
        }
        self.exact_after = exact_run(&self.store).await;
        self.degraded_at_end = self.store.is_degraded();
        self
    }
}

/// `LIMIT + 1` checks of a fresh identity through `check_at`, each equal to [`PolicySet`]'s decision at
/// the server's time: `LIMIT` admitted with remaining counting down, then refused with the exact retry.
async fn exact_run(store: &RedisStore) -> Result<(), String> {
    let identity = fresh_identity("exact");
    let mut state = PolicyStates::default();
    for i in 0..=LIMIT {
        let (now, got) = store
            .check_at(&set(), identity.as_bytes(), 1)
            .await
            .map_err(|e| format!("check {i} of a fresh identity failed: {e}"))?;
        let want = set().check(&mut state, now, 1);
        if got != want {
            return Err(format!(
                "check {i} of a fresh identity: got {got:?}, reference {want:?}"
            ));
        }
    }
    Ok(())
}

/// Runs `phase` on every store at once (one fault episode hits all of them).
async fn in_parallel<F, Fut>(runs: Vec<Run>, phase: F) -> Vec<Run>
where
    F: Fn(Run) -> Fut,
    Fut: Future<Output = Run> + Send + 'static,
{
    let tasks: Vec<JoinHandle<Run>> = runs.into_iter().map(|r| tokio::spawn(phase(r))).collect();
    let mut out = Vec::new();
    for t in tasks {
        out.push(t.await.expect("no panic in a store's phase"));
    }
    out
}

/// The faults of the tour.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Pause,
    KillRestart,
    FlushAll,
    ScriptFlush,
    FunctionFlush,
    OutOfMemory,
    Garbage,
    LostReplies,
    Truncated,
    FlippedBytes,
    WrongType,
    Reset,
    HalfClose,
    BlackHole,
    Cancel,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Pause => "SIGSTOP/SIGCONT",
            Kind::KillRestart => "kill -9 + restart",
            Kind::FlushAll => "FLUSHALL",
            Kind::ScriptFlush => "SCRIPT FLUSH (every 25 ms)",
            Kind::FunctionFlush => "FUNCTION FLUSH (every 25 ms)",
            Kind::OutOfMemory => "OOM (maxmemory 1, noeviction)",
            Kind::Garbage => "garbage replies (impossible RESP)",
            Kind::LostReplies => "replies swallowed (RESP stream out of step)",
            Kind::Truncated => "replies truncated (half of each chunk lost)",
            Kind::FlippedBytes => "one byte flipped per reply chunk",
            Kind::WrongType => "WRONGTYPE on one identity's key",
            Kind::Reset => "connection reset (RST)",
            Kind::HalfClose => "half-close (server->client)",
            Kind::BlackHole => "black hole",
            Kind::Cancel => "cancelled half-open probes (paused Redis)",
        }
    }

    fn scripting(self) -> Scripting {
        match self {
            Kind::ScriptFlush => Scripting::Eval,
            Kind::FunctionFlush => Scripting::Functions,
            _ => Scripting::Auto,
        }
    }

    /// Whether the store should not notice at all (no error, every decision from Redis).
    fn invisible(self) -> bool {
        matches!(
            self,
            Kind::ScriptFlush | Kind::FunctionFlush | Kind::FlushAll
        )
    }

    /// Whether Redis forgets the identities' state (the wrong-type value replaced the identity's).
    fn loses_state(self) -> bool {
        matches!(self, Kind::FlushAll | Kind::KillRestart | Kind::WrongType)
    }

    fn plan(self) -> Plan {
        match self {
            Kind::Cancel => Plan::CancelProbes,
            Kind::WrongType => Plan::Bystanders,
            _ => Plan::Steady,
        }
    }

    fn recovery_bound(self) -> Duration {
        match self {
            Kind::KillRestart => RECOVERY_BOUND + RECONNECT_BACKOFF,
            _ => RECOVERY_BOUND,
        }
    }

    fn expected(self, mode: Mode) -> String {
        let during = if self.invisible() {
            "no error, exact".to_owned()
        } else if self == Kind::WrongType {
            format!("that identity: {}; others exact", mode.outage())
        } else {
            mode.outage()
        };
        let lost = if self.loses_state() {
            format!(", state lost (<= {USED_BEFORE_FAULT} re-admitted)")
        } else {
            String::new()
        };
        format!(
            "{during}{lost}; recovers <= {} ms",
            self.recovery_bound().as_millis()
        )
    }

    fn admission_allowance(self, mode: Mode) -> u64 {
        let outage = if self.invisible() {
            0
        } else {
            mode.outage_allowance()
        };
        outage
            + if self.loses_state() {
                USED_BEFORE_FAULT
            } else {
                0
            }
    }
}

/// A server, a proxy in front of it, and the background task of a fault that lasts (a flusher).
struct Rig {
    server: RedisServer,
    proxy: FaultProxy,
    flusher: Option<JoinHandle<()>>,
    /// Each store's key of the long-lived identity (for [`Kind::WrongType`]).
    long_lived_keys: Vec<String>,
}

async fn admin(url: &str, args: &[&str]) {
    let client = redis::Client::open(url).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let mut cmd = redis::cmd(args[0]);
    for a in &args[1..] {
        cmd.arg(*a);
    }
    let _: redis::Value = cmd.query_async(&mut conn).await.unwrap();
}

fn flush_repeatedly(url: String, what: &'static str) -> JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            admin(&url, &[what, "FLUSH"]).await;
            tokio::time::sleep(FLUSH_EVERY).await;
        }
    })
}

impl Rig {
    async fn begin(&mut self, kind: Kind) {
        let url = self.server.url();
        match kind {
            Kind::Pause | Kind::Cancel => self.server.pause(),
            Kind::KillRestart => self.server.kill(),
            Kind::FlushAll => admin(&url, &["FLUSHALL"]).await,
            Kind::ScriptFlush => self.flusher = Some(flush_repeatedly(url, "SCRIPT")),
            Kind::FunctionFlush => self.flusher = Some(flush_repeatedly(url, "FUNCTION")),
            Kind::OutOfMemory => {
                admin(&url, &["CONFIG", "SET", "maxmemory-policy", "noeviction"]).await;
                admin(&url, &["CONFIG", "SET", "maxmemory", "1"]).await;
            }
            Kind::Garbage => self.proxy.set(Fault::Corrupt(Corruption::Replace(
                IMPOSSIBLE_GCRA_REPLY.to_vec(),
            ))),
            // Every reply during the fault is lost while the connection stays up: afterwards each reply
            // answers an older request, until the connection is replaced.
            Kind::LostReplies => self
                .proxy
                .set(Fault::Corrupt(Corruption::Replace(Vec::new()))),
            Kind::Truncated => self.proxy.set(Fault::Corrupt(Corruption::Truncate)),
            Kind::FlippedBytes => self.proxy.set(Fault::Corrupt(Corruption::FlipBytes)),
            Kind::Reset => self.proxy.set(Fault::Reset),
            Kind::WrongType => {
                for key in &self.long_lived_keys {
                    admin(&url, &["DEL", key]).await;
                    admin(&url, &["RPUSH", key, "not-a-limiter"]).await;
                }
            }
            Kind::HalfClose => self.proxy.set(Fault::HalfClose(Direction::ToClient)),
            Kind::BlackHole => self.proxy.set(Fault::BlackHole),
        }
    }

    async fn end(&mut self, kind: Kind) {
        match kind {
            Kind::Pause | Kind::Cancel => self.server.resume(),
            Kind::KillRestart => self.server.restart(),
            Kind::OutOfMemory => {
                admin(&self.server.url(), &["CONFIG", "SET", "maxmemory", "0"]).await
            }
            Kind::ScriptFlush | Kind::FunctionFlush => {
                if let Some(f) = self.flusher.take() {
                    f.abort();
                    let _ = f.await;
                }
            }
            Kind::FlushAll => {}
            Kind::WrongType => {
                for key in &self.long_lived_keys {
                    admin(&self.server.url(), &["DEL", key]).await;
                }
            }
            Kind::Garbage
            | Kind::LostReplies
            | Kind::Truncated
            | Kind::FlippedBytes
            | Kind::Reset
            | Kind::HalfClose
            | Kind::BlackHole => self.proxy.set(Fault::PassThrough),
        }
    }
}

/// One fault episode against a store per mode; prints a row per mode and fails with every broken
/// invariant.
async fn tour(kind: Kind) {
    let _serial = serial().await;
    let server = RedisServer::start();
    let proxy = FaultProxy::to_redis(&server).await.unwrap();
    let mut runs = Vec::new();
    for mode in MODES {
        runs.push(Run::new(mode, &proxy.redis_url(), kind.scripting()).await);
    }
    let long_lived_keys = runs
        .iter()
        .map(|r| {
            r.store
                .key_for(r.long_lived.as_bytes(), &set().policies()[0])
        })
        .collect();
    let mut rig = Rig {
        server,
        proxy,
        flusher: None,
        long_lived_keys,
    };
    let runs = in_parallel(runs, Run::before).await;
    rig.begin(kind).await;
    let plan = kind.plan();
    let runs = in_parallel(runs, move |r| r.during(plan)).await;
    rig.end(kind).await;
    let fault_end = Instant::now();
    let runs = in_parallel(runs, move |r| r.recover(fault_end)).await;
    let runs = in_parallel(runs, Run::after).await;

    let mut broken = Vec::new();
    for run in &runs {
        let (row, failures) = verdict(kind, run);
        eprintln!("{row}");
        broken.extend(failures);
    }
    assert!(broken.is_empty(), "{}:\n{}", kind.name(), broken.join("\n"));
}

fn ms(d: Duration) -> String {
    format!("{}", d.as_millis())
}

/// The table row for `run` and the invariants it breaks.
fn verdict(kind: Kind, run: &Run) -> (String, Vec<String>) {
    let d = &run.during;
    let after_admitted = run.after_long_lived.wrongly_admitted + run.after_fresh.wrongly_admitted;
    let after_refused = run.after_long_lived.wrongly_refused + run.after_fresh.wrongly_refused;
    let slowest = [
        d.slowest,
        run.slowest_probe,
        run.after_long_lived.slowest,
        run.after_fresh.slowest,
    ]
    .into_iter()
    .max()
    .unwrap_or_default();
    let mut observed = format!(
        "adm {} ref {} err {} cxl {} fb {}; slowest {} ms",
        d.admitted,
        d.refused,
        d.errors,
        d.cancelled,
        run.fallbacks,
        ms(slowest)
    );
    if run.inexact_after_fault > 0 {
        observed += &format!("; {} inexact after", run.inexact_after_fault);
    }
    if matches!(kind.plan(), Plan::Bystanders) {
        observed += &format!(
            "; bystanders failed {}/{CALLS_DURING_FAULT}",
            run.bystanders_wrong
        );
    }
    let wait_bound = TIMEOUT + SCHEDULING_SLACK;
    if slowest > wait_bound {
        observed += &format!(" (over {} ms)", ms(wait_bound));
    }
    if run.degraded_at_end {
        observed += "; DEGRADED at end";
    }
    let recovery = match run.recovery {
        None => format!("stuck (> {})", ms(STUCK_AFTER)),
        Some(r) if r > kind.recovery_bound() => {
            format!("{} (over {})", ms(r), ms(kind.recovery_bound()))
        }
        Some(r) => ms(r),
    };
    let row = format!(
        "| {} | {} | {} | {} | {} | {} / {} | {} / {} |",
        kind.name(),
        run.mode.name(),
        kind.expected(run.mode),
        observed,
        recovery,
        d.wrongly_admitted,
        after_admitted,
        d.wrongly_refused,
        after_refused,
    );

    let who = format!("{} / {}", kind.name(), run.mode.name());
    let mut broken = Vec::new();
    if slowest >= STUCK_AFTER {
        broken.push(format!(
            "{who}: a call waited {slowest:?}, {} timeouts (stuck)",
            slowest.as_millis() / TIMEOUT.as_millis()
        ));
    }
    if run.recovery.is_none() {
        broken.push(format!(
            "{who}: no correct Redis-backed decision within {STUCK_AFTER:?} of the fault's end (stuck)"
        ));
    }
    let long_lived_admitted = d.wrongly_admitted + run.after_long_lived.wrongly_admitted;
    let allowance = kind.admission_allowance(run.mode);
    if long_lived_admitted > allowance {
        broken.push(format!(
            "{who}: {long_lived_admitted} wrongly admitted on the long-lived identity, the mode allows {allowance}"
        ));
    }
    let cut_off = run.sent_and_failed + d.cancelled;
    let long_lived_refused = d.wrongly_refused + run.after_long_lived.wrongly_refused;
    if long_lived_refused > cut_off {
        broken.push(format!(
            "{who}: {long_lived_refused} wrongly refused on the long-lived identity, only {cut_off} calls were cut off"
        ));
    }
    if kind.invisible() && d.errors + run.fallbacks > 0 {
        broken.push(format!(
            "{who}: {} errors and {} fallbacks during a fault the store should not notice",
            d.errors, run.fallbacks
        ));
    }
    // Every call of an outage fails at Redis, so each must end in an error or a fallback decision (which
    // one is the mode's business) — never in a reply the store believed.
    let not_decided_by_redis = d.errors + run.fallbacks;
    if !matches!(kind.plan(), Plan::CancelProbes)
        && !kind.invisible()
        && not_decided_by_redis != CALLS_DURING_FAULT
    {
        broken.push(format!(
            "{who}: only {not_decided_by_redis} of {CALLS_DURING_FAULT} calls during the outage ended in an error or a fallback; the rest were decided from replies Redis did not send"
        ));
    }
    let fresh = &run.after_fresh;
    if fresh.wrongly_admitted + fresh.wrongly_refused + fresh.errors > 0 {
        broken.push(format!(
            "{who}: a fresh identity after recovery was not exact: {fresh:?}"
        ));
    }
    if let Err(e) = &run.exact_after {
        broken.push(format!("{who}: {e}"));
    }
    if run.inexact_after_fault > 0 {
        broken.push(format!(
            "{who}: {} Redis-backed decisions on fresh identities after the fault differed from the reference",
            run.inexact_after_fault
        ));
    }
    if run.degraded_at_end {
        broken.push(format!("{who}: still degraded (breaker open) at the end"));
    }
    if run.bystanders_wrong > 0 {
        broken.push(format!(
            "{who}: {} of {CALLS_DURING_FAULT} other identities failed or were inexact: one identity's error stopped the store for everyone",
            run.bystanders_wrong
        ));
    }
    (row, broken)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigstop_sigcont() {
    tour(Kind::Pause).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_and_restart_on_the_same_port() {
    tour(Kind::KillRestart).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flushall() {
    tour(Kind::FlushAll).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn script_flush() {
    tour(Kind::ScriptFlush).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn function_flush() {
    tour(Kind::FunctionFlush).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn out_of_memory() {
    tour(Kind::OutOfMemory).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_replies() {
    tour(Kind::Garbage).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn swallowed_replies() {
    tour(Kind::LostReplies).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn truncated_replies() {
    tour(Kind::Truncated).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flipped_bytes() {
    tour(Kind::FlippedBytes).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrongtype_on_one_key() {
    tour(Kind::WrongType).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_reset() {
    tour(Kind::Reset).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_close() {
    tour(Kind::HalfClose).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn black_hole() {
    tour(Kind::BlackHole).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelled_calls_while_redis_is_paused() {
    tour(Kind::Cancel).await;
}

/// Distinct identities of the local-fallback flood: far beyond `LOCAL_KEY_CAP`.
const FLOOD_IDENTITIES: u64 = 20_000;
const LOCAL_KEY_CAP: usize = 1_024;
/// The bounded store's growth must stay under this share of the uncapped control's.
const BOUNDED_SHARE_OF_CONTROL: u64 = 4;
/// Distinct limited identities of the deny-cache flood: far beyond `DENY_CACHE_CAP`.
const DENY_FLOOD_IDENTITIES: u64 = 1_000;
const DENY_CACHE_CAP: usize = 256;

/// The process's resident memory, in bytes.
fn resident_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap();
    let pages: u64 = statm.split_whitespace().nth(1).unwrap().parse().unwrap();
    pages * 4096
}

/// Floods a store whose Redis is black-holed (so every check is decided by its local fallback store, capped
/// at `cap` keys) with `FLOOD_IDENTITIES` distinct identities; the growth of resident memory, the calls
/// and the slowest wait.
async fn local_flood(cap: usize) -> (u64, Tally) {
    let server = RedisServer::start();
    let proxy = FaultProxy::to_redis(&server).await.unwrap();
    let store = RedisStore::builder()
        .timeout(TIMEOUT)
        .breaker(FAILURES_TO_OPEN, COOLDOWN)
        .on_failure(Mode::Local.on_failure())
        .local_max_keys(cap)
        .connect(&proxy.redis_url())
        .await
        .unwrap();
    proxy.set(Fault::BlackHole);
    let set = set();
    let mut tally = Tally::default();
    let before = resident_bytes();
    for i in 0..FLOOD_IDENTITIES {
        let identity = format!("flood-{cap}-{i}");
        let (r, took) = timed(Store::<str, PolicySet>::check(&store, &set, &identity, 1)).await;
        tally.record(&mut Reference::default(), &r, took);
    }
    let grown = resident_bytes().saturating_sub(before);
    proxy.set(Fault::PassThrough);
    (grown, tally)
}

/// Many distinct identities: the store's own memory stays bounded — the local fallback store by its key
/// cap (measured as resident memory against an uncapped control), the deny cache by its capacity (an early
/// identity's cached denial is gone, so its next check goes to Redis again) — and decisions stay right.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_flood() {
    let _serial = serial().await;
    let mut broken = Vec::new();

    // The bounded run first, so the control cannot lend it memory it freed.
    let (bounded, tally) = local_flood(LOCAL_KEY_CAP).await;
    let (control, control_tally) = local_flood(2 * FLOOD_IDENTITIES as usize).await;
    let mb = |b: u64| format!("{:.1} MB", b as f64 / 1e6);
    for (what, grown, t) in [
        (format!("local cap {LOCAL_KEY_CAP}"), bounded, tally),
        (
            "local uncapped (control)".to_owned(),
            control,
            control_tally,
        ),
    ] {
        eprintln!(
            "| key flood, {FLOOD_IDENTITIES} identities, Redis black-holed, {what} | local/2 | all admitted; memory bounded by the cap | adm {} ref {} err {}; RSS +{}; slowest {} ms | - | {} / - | {} / - |",
            t.admitted, t.refused, t.errors, mb(grown), ms(t.slowest), t.wrongly_admitted, t.wrongly_refused
        );
        if t.admitted != FLOOD_IDENTITIES {
            broken.push(format!(
                "{what}: {t:?}, every fresh identity should be admitted"
            ));
        }
        if t.slowest >= STUCK_AFTER {
            broken.push(format!("{what}: a call waited {:?} (stuck)", t.slowest));
        }
    }
    if bounded * BOUNDED_SHARE_OF_CONTROL > control {
        broken.push(format!(
            "the capped local store grew the process by {}, the uncapped control by {}: not bounded by the cap",
            mb(bounded),
            mb(control)
        ));
    }

    let (hits, early_back_to_redis, t) = deny_flood().await;
    eprintln!(
        "| key flood, {DENY_FLOOD_IDENTITIES} limited identities, deny cache cap {DENY_CACHE_CAP} | error | exact; early entries evicted | adm {} ref {} err {} cache hits {hits}; first identity back to Redis: {early_back_to_redis}; slowest {} ms | - | {} / - | {} / - |",
        t.admitted, t.refused, t.errors, ms(t.slowest), t.wrongly_admitted, t.wrongly_refused
    );
    if t.wrongly_admitted + t.wrongly_refused + t.errors > 0 {
        broken.push(format!("deny-cache flood: decisions not exact: {t:?}"));
    }
    if !early_back_to_redis {
        broken.push("deny-cache flood: the first identity's denial was still cached after the flood: not bounded by the capacity".to_owned());
    }
    if hits == 0 {
        broken.push(
            "deny-cache flood: the cache never answered (the flood did not exercise it)".to_owned(),
        );
    }
    assert!(broken.is_empty(), "key flood:\n{}", broken.join("\n"));
}

/// `DENY_FLOOD_IDENTITIES` identities with a quota of one, each checked three times (admitted, limited
/// and cached, answered by the cache), then the first identity again: the cache hits, whether that last
/// check went to Redis, and the tally.
async fn deny_flood() -> (u64, bool, Tally) {
    let server = RedisServer::start();
    let store = RedisStore::builder()
        .timeout(TIMEOUT)
        .breaker(FAILURES_TO_OPEN, COOLDOWN)
        .deny_cache(DENY_CACHE_CAP)
        .connect(&server.url())
        .await
        .unwrap();
    let one = PolicySet::new([Policy::gcra("one", Quota::per_hour(1).build().unwrap()).unwrap()])
        .unwrap();
    let mut tally = Tally::default();
    let mut first = Reference {
        limit: 1,
        admitted: 0,
    };
    for i in 0..DENY_FLOOD_IDENTITIES {
        let identity = format!("limited-{i}");
        let mut reference = Reference {
            limit: 1,
            admitted: 0,
        };
        let reference = if i == 0 { &mut first } else { &mut reference };
        for _ in 0..3 {
            let (r, took) = timed(Store::<str, PolicySet>::check(&store, &one, &identity, 1)).await;
            tally.record(reference, &r, took);
        }
    }
    let calls = store.stats().redis_calls;
    let (r, took) = timed(Store::<str, PolicySet>::check(&store, &one, "limited-0", 1)).await;
    tally.record(&mut first, &r, took);
    let back_to_redis = store.stats().redis_calls == calls + 1;
    (store.stats().deny_cache_hits, back_to_redis, tally)
}
