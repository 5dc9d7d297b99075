//! Several OS processes sharing one budget through a real Redis, against the Discord simulator over
//! loopback; one of them killed with SIGKILL mid-run.
//!
//! The test binary is its own worker: a parent test re-runs it (`current_exe()`) with
//! `--exact worker_process_entry_point` and the worker's settings in `RL_WORKER_*` environment variables.
//! The simulator and Redis live in the parent; each worker builds its own limiter (and its own Redis
//! connection when shared), says `ready`, waits for `go` on its stdin so that every worker starts at
//! once, sends its slice of the scenario's operations all at once, and prints one `done` line.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Stdio;
use std::time::{Duration, Instant};

use bytes::Bytes;
use discord_sim::{Operation, Scenario, SimStats, Simulator, DEFAULT_TOKEN};
use http_body_util::Full;
use ratelimit_client::profile::Discord;
use ratelimit_client::reqwest::ReqwestService;
use ratelimit_client::shared::SharedBudget;
use ratelimit_client::{Limiter, RateLimitLayer};
use ratelimit_test_support::redis_server::RedisServer;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};
use tower::Layer;

/// The name of the `#[test]` that is a worker's body (passed to `--exact`).
const WORKER_TEST: &str = "worker_process_entry_point";
/// Set (to anything) in a worker's environment: without it the entry point does nothing.
const ENV_ROLE: &str = "RL_WORKER";
const ENV_SCENARIO: &str = "RL_WORKER_SCENARIO";
const ENV_BASE: &str = "RL_WORKER_BASE";
/// Unset: the worker limits alone (the control).
const ENV_REDIS: &str = "RL_WORKER_REDIS";
const ENV_NAMESPACE: &str = "RL_WORKER_NAMESPACE";
const ENV_LEASE_MS: &str = "RL_WORKER_LEASE_MS";
/// `i/n`: the worker sends the operations [`dealt_to`] it, and declares `n` instances.
const ENV_SLICE: &str = "RL_WORKER_SLICE";
/// Set: the worker prints `holding N` once N of its requests have left and no more leave (the victim,
/// whose requests go into a black hole).
const ENV_REPORT_HOLDING: &str = "RL_WORKER_REPORT_HOLDING";

/// Every line a worker prints for its parent has this in front (the test harness prints its own lines).
const LINE_PREFIX: &str = "worker: ";
/// The longest a worker may take to say `ready`, `holding` or `done`: far above a healthy run, so a
/// stuck worker fails the test instead of hanging it.
const WORKER_STEP_TIMEOUT: Duration = Duration::from_secs(60);
/// Workers in every run, as several shards or replicas behind one token would be.
const WORKERS: usize = 3;
/// The victim's sent count must stay still this long before it reports what it holds.
const HOLDING_SETTLED: Duration = Duration::from_millis(150);

// ---------------------------------------------------------------------------------------------------
// The worker side.

/// Not a test of its own: the body of a worker process. The parent tests below run this binary again
/// with `--exact worker_process_entry_point` and `RL_WORKER` set; in an ordinary `cargo test` run the
/// variable is unset and this returns at once, which is expected, not a skipped check (the parents
/// check everything the workers do).
#[test]
fn worker_process_entry_point() {
    if std::env::var_os(ENV_ROLE).is_none() {
        return;
    }
    let spec = WorkerSpec::from_env();
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(run_worker(spec));
}

struct WorkerSpec {
    scenario: Scenario,
    base: String,
    redis: Option<String>,
    namespace: String,
    lease: Duration,
    index: usize,
    of: usize,
    report_holding: bool,
}

impl WorkerSpec {
    fn from_env() -> Self {
        let var = |k: &str| std::env::var(k).unwrap_or_else(|_| panic!("{k} is not set"));
        let slice = var(ENV_SLICE);
        let (index, of) = slice.split_once('/').expect("RL_WORKER_SLICE is i/n");
        WorkerSpec {
            scenario: Scenario::by_name(&var(ENV_SCENARIO)).expect("a known scenario"),
            base: var(ENV_BASE),
            redis: std::env::var(ENV_REDIS).ok(),
            namespace: var(ENV_NAMESPACE),
            lease: Duration::from_millis(var(ENV_LEASE_MS).parse().unwrap()),
            index: index.parse().unwrap(),
            of: of.parse().unwrap(),
            report_holding: std::env::var_os(ENV_REPORT_HOLDING).is_some(),
        }
    }
}

async fn run_worker(spec: WorkerSpec) {
    let limiter = worker_limiter(&spec).await;
    let client =
        RateLimitLayer::new(limiter.clone()).layer(ReqwestService::new(reqwest::Client::new()));
    let requests: Vec<_> = spec
        .scenario
        .operations
        .iter()
        .enumerate()
        .filter(|(i, _)| dealt_to(*i, spec.of) == spec.index)
        .map(|(_, op)| request(&spec.base, op))
        .collect();
    say("ready");
    wait_for_go().await;
    let start = Instant::now();
    let tasks: Vec<_> = requests
        .into_iter()
        .map(|req| {
            let svc = client.clone();
            tokio::spawn(async move {
                svc.oneshot(req)
                    .await
                    .map(|r| r.status())
                    .map_err(|e| e.to_string())
            })
        })
        .collect();
    if spec.report_holding {
        let l = limiter.clone();
        tokio::spawn(async move { say(&format!("holding {}", settled_sent(&l).await)) });
    }
    let (mut ok, mut failed, mut first_failure) = (0, 0, None);
    for t in tasks {
        match t.await.unwrap() {
            Ok(s) if s.is_success() => ok += 1,
            other => {
                failed += 1;
                first_failure.get_or_insert(format!("{other:?}"));
            }
        }
    }
    say(&format!(
        "done ok={ok} failed={failed} elapsed_ms={} first_failure={first_failure:?}",
        start.elapsed().as_millis()
    ));
}

async fn worker_limiter(spec: &WorkerSpec) -> Limiter<Discord> {
    let mut b = Limiter::builder(Discord::new());
    if let Some(url) = &spec.redis {
        let budget = SharedBudget::builder()
            .namespace(spec.namespace.as_str())
            .instances(spec.of as u32)
            .lease(spec.lease)
            .connect(url)
            .await
            .unwrap();
        b = b.shared(budget);
    }
    b = match spec.scenario.config.global {
        Some(g) => b
            .global_limit(Some(g.limit))
            .global_window(g.period, Duration::from_millis(10)),
        None => b.global_limit(None),
    };
    b.build().unwrap()
}

/// The worker that sends operation `op` of `workers`: round-robin, shifted by one every round, so that
/// every worker gets operations of every bucket (plain `op % workers` would give each of `parallel`'s
/// three webhooks to one worker, and leave nothing to share).
fn dealt_to(op: usize, workers: usize) -> usize {
    (op + op / workers) % workers
}

fn request(base: &str, op: &Operation) -> http::Request<Full<Bytes>> {
    let mut b = http::Request::builder()
        .method(op.method.clone())
        .uri(op.url(base));
    if op.authorized {
        b = b.header("authorization", format!("Bot {DEFAULT_TOKEN}"));
    }
    if op.body.is_some() {
        b = b.header("content-type", "application/json");
    }
    b.body(Full::new(Bytes::from(op.body.clone().unwrap_or_default())))
        .unwrap()
}

fn say(line: &str) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    writeln!(out, "{LINE_PREFIX}{line}").unwrap();
    out.flush().unwrap();
}

async fn wait_for_go() {
    let mut line = String::new();
    let mut stdin = BufReader::new(tokio::io::stdin());
    stdin.read_line(&mut line).await.unwrap();
    assert_eq!(line.trim(), "go", "the parent says go");
}

/// How many requests have left once that number has stopped growing (the victim's requests all hang in
/// the black hole: what has left holds its reservation).
async fn settled_sent(limiter: &Limiter<Discord>) -> u64 {
    let mut last = (0, Instant::now());
    loop {
        tokio::time::sleep(Duration::from_millis(10)).await;
        let sent = limiter.totals().1;
        if sent != last.0 {
            last = (sent, Instant::now());
        } else if sent > 0 && last.1.elapsed() >= HOLDING_SETTLED {
            return sent;
        }
    }
}

// ---------------------------------------------------------------------------------------------------
// The parent side.

/// A worker process, killed (SIGKILL) when dropped, so a failing parent leaves no worker behind.
struct Worker {
    name: String,
    child: Child,
    stdin: ChildStdin,
    lines: Lines<BufReader<ChildStdout>>,
}

/// What a worker reported at the end.
#[derive(Debug)]
struct Done {
    ok: u64,
    failed: u64,
    elapsed: Duration,
    line: String,
}

struct Spawn<'a> {
    scenario: &'a str,
    base: &'a str,
    redis: Option<&'a str>,
    namespace: &'a str,
    lease: Duration,
    index: usize,
    report_holding: bool,
}

impl Worker {
    fn spawn(s: &Spawn<'_>) -> Self {
        let mut cmd = Command::new(std::env::current_exe().unwrap());
        cmd.args(["--exact", WORKER_TEST, "--nocapture", "--test-threads=1"])
            .env(ENV_ROLE, "1")
            .env(ENV_SCENARIO, s.scenario)
            .env(ENV_BASE, s.base)
            .env(ENV_NAMESPACE, s.namespace)
            .env(ENV_LEASE_MS, s.lease.as_millis().to_string())
            .env(ENV_SLICE, format!("{}/{WORKERS}", s.index))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true);
        if let Some(url) = s.redis {
            cmd.env(ENV_REDIS, url);
        }
        if s.report_holding {
            cmd.env(ENV_REPORT_HOLDING, "1");
        }
        let mut child = cmd.spawn().unwrap();
        let stdin = child.stdin.take().unwrap();
        let lines = BufReader::new(child.stdout.take().unwrap()).lines();
        Worker {
            name: format!("worker {}", s.index),
            child,
            stdin,
            lines,
        }
    }

    /// The rest of the next line the worker prints that starts with `worker: {what}`.
    async fn expect(&mut self, what: &str) -> String {
        let wanted = format!("{LINE_PREFIX}{what}");
        let read = async {
            while let Some(line) = self.lines.next_line().await.unwrap() {
                // The harness prints `test worker_process_entry_point ... ` before the first line.
                if let Some(at) = line.find(&wanted) {
                    return line[at + wanted.len()..].trim().to_owned();
                }
            }
            panic!("{} exited before saying {what:?}", self.name)
        };
        tokio::time::timeout(WORKER_STEP_TIMEOUT, read)
            .await
            .unwrap_or_else(|_| panic!("{} did not say {what:?} in time", self.name))
    }

    async fn go(&mut self) {
        self.stdin.write_all(b"go\n").await.unwrap();
        self.stdin.flush().await.unwrap();
    }

    async fn done(mut self) -> Done {
        let line = self.expect("done").await;
        let field = |k: &str| -> u64 {
            line.split_whitespace()
                .find_map(|kv| kv.strip_prefix(k)?.strip_prefix('='))
                .unwrap_or_else(|| panic!("no {k} in {line:?}"))
                .parse()
                .unwrap()
        };
        let done = Done {
            ok: field("ok"),
            failed: field("failed"),
            elapsed: Duration::from_millis(field("elapsed_ms")),
            line: line.clone(),
        };
        let status = self.child.wait().await.unwrap();
        assert!(status.success(), "{}: {status}", self.name);
        done
    }
}

/// Starts one worker per slice, waits until each is ready, and starts them all at once.
async fn start_workers(spawns: &[Spawn<'_>]) -> (Vec<Worker>, Instant) {
    let mut workers: Vec<Worker> = spawns.iter().map(Worker::spawn).collect();
    for w in &mut workers {
        w.expect("ready").await;
    }
    let start = Instant::now();
    for w in &mut workers {
        w.go().await;
    }
    (workers, start)
}

async fn finish(workers: Vec<Worker>) -> Vec<Done> {
    let mut done = Vec::new();
    for w in workers {
        done.push(w.done().await);
    }
    done
}

fn spawns<'a>(
    scenario: &'a str,
    base: &'a str,
    redis: Option<&'a str>,
    namespace: &'a str,
    lease: Duration,
) -> Vec<Spawn<'a>> {
    (0..WORKERS)
        .map(|index| Spawn {
            scenario,
            base,
            redis,
            namespace,
            lease,
            index,
            report_holding: false,
        })
        .collect()
}

fn report(what: &str, s: &SimStats, elapsed: Duration, done: &[Done], scenario: &Scenario) {
    let bound = scenario.lower_bound();
    let each: Vec<_> = done.iter().map(|d| d.elapsed).collect();
    eprintln!(
        "{what}: {elapsed:?} (workers {each:?}; lower bound {bound:?}, utilisation {:.2}), requests {}, \
         2xx {}, 429s: user {} sub {} global {} shared {} cloudflare {} (non-shared {})",
        bound.as_secs_f64() / elapsed.as_secs_f64(),
        s.requests,
        s.success,
        s.user_429,
        s.sub_limit_429,
        s.global_429,
        s.shared_429,
        s.cloudflare_429,
        s.non_shared_429(),
    );
}

/// Three processes run `scenario` with one shared budget, every operation issued at once.
async fn run_processes(
    redis: Option<&RedisServer>,
    scenario: &Scenario,
) -> (SimStats, Vec<Done>, Duration) {
    let sim = Simulator::start(scenario.config.clone()).await.unwrap();
    let base = sim.base_url();
    let url = redis.map(RedisServer::url);
    let namespace = format!("processes-{}", scenario.name);
    let (workers, start) = start_workers(&spawns(
        scenario.name,
        &base,
        url.as_deref(),
        &namespace,
        Duration::from_secs(2),
    ))
    .await;
    let done = finish(workers).await;
    (sim.stats(), done, start.elapsed())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_processes_share_one_budget_with_no_avoidable_429s() {
    let redis = RedisServer::start();
    for scenario in [Scenario::mixed(), Scenario::parallel()] {
        let (s, done, elapsed) = run_processes(Some(&redis), &scenario).await;
        report(
            &format!("{} x{WORKERS} processes, shared", scenario.name),
            &s,
            elapsed,
            &done,
            &scenario,
        );
        assert_eq!(s.non_shared_429(), 0, "{}: {s:#?}", scenario.name);
        let sent: u64 = done.iter().map(|d| d.ok).sum();
        assert_eq!(sent as usize, scenario.operations.len(), "{done:#?}");
        for d in &done {
            assert_eq!(d.failed, 0, "{}: {}", scenario.name, d.line);
        }
        for g in &s.global {
            assert!(g.peak_in_period() as u32 <= g.limit.limit, "{g:?}");
        }
    }
}

/// The control: the same three processes, each limiting alone, overrun the buckets they share. Without
/// it the test above could pass because the scenario never needed sharing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_processes_without_the_shared_budget_take_avoidable_429s() {
    let scenario = Scenario::parallel();
    let (s, done, elapsed) = run_processes(None, &scenario).await;
    report(
        &format!("{} x{WORKERS} processes, alone", scenario.name),
        &s,
        elapsed,
        &done,
        &scenario,
    );
    assert!(s.non_shared_429() > 0, "{s:#?}");
}
