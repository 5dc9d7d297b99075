//! Reference clients to compare a real client with (feature `clients`): the designs the notes describe,
//! written small and honest so that a benchmark can run them side by side with `ratelimit-client` against
//! the same scenario.
//!
//! * [`fire_all`]: every operation at once, no pre-emptive limiting; a 429 is retried after the body's
//!   `retry_after` (bounded). The shape of serenity's failure (notes B.2).
//! * [`serial_per_bucket`]: one request in flight per bucket (method + route + major), waiting
//!   `Reset-After` when `Remaining` hits 0, the precise `retry_after` on a 429, and a pre-emptive global
//!   limiter. The design of twilight, @discordjs/rest and nirn-proxy (notes B.1, B.3, B.4), without their
//!   padding: its throughput per bucket is bounded by latency, which is the point of the comparison.
//!
//! ```no_run
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> std::io::Result<()> {
//! use discord_sim::{reference, Scenario, Simulator, DEFAULT_TOKEN};
//! let scenario = Scenario::parallel();
//! let sim = Simulator::start(scenario.config.clone()).await?;
//! let report = reference::serial_per_bucket(&sim.base_url(), DEFAULT_TOKEN, &scenario.operations, None).await;
//! println!("{report:?} vs lower bound {:?}", scenario.lower_bound());
//! # Ok(()) }
//! ```

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Mutex;
use tokio::time::Instant;

use crate::config::GlobalLimit;
use crate::scenario::Operation;

/// How many times a reference client retries one operation after 429s.
pub const MAX_RETRIES: u32 = 5;

/// What a reference client saw.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RunReport {
    /// From the first send to the last response.
    pub elapsed: Duration,
    /// Requests sent (retries included).
    pub requests: u64,
    /// Operations that ended in a 2xx.
    pub succeeded: u64,
    /// 429 responses received.
    pub rate_limited: u64,
    /// Operations given up (retries exhausted, a ban page, a transport error, another status).
    pub failed: u64,
    /// Time spent sleeping before sends (summed over tasks).
    pub waited: Duration,
}

impl RunReport {
    fn merge(&mut self, o: &RunReport) {
        self.requests += o.requests;
        self.succeeded += o.succeeded;
        self.rate_limited += o.rate_limited;
        self.failed += o.failed;
        self.waited += o.waited;
    }
}

/// Sends every operation at once; each retries a 429 after the body's `retry_after`, at most
/// [`MAX_RETRIES`] times, and gives up on a ban page.
pub async fn fire_all(base_url: &str, token: &str, operations: &[Operation]) -> RunReport {
    let client = reqwest::Client::new();
    let start = Instant::now();
    let tasks: Vec<_> = operations
        .iter()
        .cloned()
        .map(|op| {
            let (client, base, token) = (client.clone(), base_url.to_owned(), token.to_owned());
            tokio::spawn(async move {
                let mut r = RunReport::default();
                attempt(&client, &base, &token, &op, None, &mut r).await;
                r
            })
        })
        .collect();
    gather(tasks, start).await
}

/// Sends one request per bucket at a time (buckets keyed by method, route shape and major, as
/// @discordjs/rest does before it learns hashes), honouring `Remaining`/`Reset-After`, 429 waits and,
/// when `global` is given, a pre-emptive sliding-window global limit with a generous margin of 25 % + 50 ms
/// (connection set-up and scheduling on a loaded machine delay some requests between leaving the client
/// and being counted by the server).
pub async fn serial_per_bucket(
    base_url: &str,
    token: &str,
    operations: &[Operation],
    global: Option<GlobalLimit>,
) -> RunReport {
    let client = reqwest::Client::new();
    let mut groups: HashMap<String, Vec<Operation>> = HashMap::new();
    let mut order = Vec::new();
    for op in operations {
        let key = bucket_key(op);
        if !groups.contains_key(&key) {
            order.push(key.clone());
        }
        groups.entry(key).or_default().push(op.clone());
    }
    let limiter = global.map(|g| Arc::new(GlobalLog::new(g)));
    let start = Instant::now();
    let tasks: Vec<_> = order
        .into_iter()
        .filter_map(|k| groups.remove(&k))
        .map(|ops| {
            let (client, base, token, limiter) = (
                client.clone(),
                base_url.to_owned(),
                token.to_owned(),
                limiter.clone(),
            );
            tokio::spawn(async move {
                let mut r = RunReport::default();
                for op in ops {
                    let done =
                        attempt(&client, &base, &token, &op, limiter.as_deref(), &mut r).await;
                    if let Some(Some(wait)) = done {
                        r.waited += wait;
                        tokio::time::sleep(wait).await;
                    }
                }
                r
            })
        })
        .collect();
    gather(tasks, start).await
}

/// Sends `op`, waiting for `global` before every send and retrying a 429 after its wait, at most
/// [`MAX_RETRIES`] times; counts into `r`. Returns `None` when the operation was given up, else the wait the
/// 2xx asked for before the bucket's next request (`Some` when `Remaining` reached 0).
async fn attempt(
    client: &reqwest::Client,
    base: &str,
    token: &str,
    op: &Operation,
    global: Option<&GlobalLog>,
    r: &mut RunReport,
) -> Option<Option<Duration>> {
    for _ in 0..=MAX_RETRIES {
        if let Some(l) = global {
            r.waited += l.acquire().await;
        }
        r.requests += 1;
        match send(client, base, token, op).await {
            Outcome::Ok(wait) => {
                r.succeeded += 1;
                return Some(wait);
            }
            Outcome::Limited(wait) => {
                r.rate_limited += 1;
                r.waited += wait;
                tokio::time::sleep(wait).await;
            }
            Outcome::Banned => {
                r.rate_limited += 1;
                break;
            }
            Outcome::Failed => break,
        }
    }
    r.failed += 1;
    None
}

/// Waits for every task and adds up their reports.
async fn gather(tasks: Vec<tokio::task::JoinHandle<RunReport>>, start: Instant) -> RunReport {
    let mut report = RunReport::default();
    for t in tasks {
        match t.await {
            Ok(r) => report.merge(&r),
            Err(_) => report.failed += 1,
        }
    }
    report.elapsed = start.elapsed();
    report
}

/// The bucket a serial client queues an operation in: method, major, and the rest of the path with ids
/// and reaction details collapsed.
pub fn bucket_key(op: &Operation) -> String {
    let parts: Vec<&str> = op.path.split('/').filter(|s| !s.is_empty()).collect();
    let major_len = match parts.as_slice() {
        ["webhooks", _, _, ..] | ["interactions", _, _, ..] => 3,
        ["channels", _, ..] | ["guilds", _, ..] | ["webhooks", _] => 2,
        _ => 0,
    };
    let mut rest = Vec::new();
    for p in parts.iter().skip(major_len) {
        if *p == "reactions" {
            rest.push("reactions/:reaction");
            break;
        }
        rest.push(if p.bytes().all(|b| b.is_ascii_digit()) {
            ":id"
        } else {
            p
        });
    }
    format!(
        "{} {} {}",
        op.method,
        parts[..major_len].join("/"),
        rest.join("/")
    )
}

enum Outcome {
    /// 2xx; `Some(wait)` when the bucket is empty and resets after `wait`.
    Ok(Option<Duration>),
    /// 429 with the precise wait.
    Limited(Duration),
    /// A 429 without rate-limit headers: a ban page.
    Banned,
    Failed,
}

async fn send(client: &reqwest::Client, base: &str, token: &str, op: &Operation) -> Outcome {
    let mut req = client.request(op.method.clone(), op.url(base));
    if op.authorized {
        req = req.header("authorization", format!("Bot {token}"));
    }
    if let Some(b) = &op.body {
        req = req
            .header("content-type", "application/json")
            .body(b.clone());
    }
    let Ok(resp) = req.send().await else {
        return Outcome::Failed;
    };
    let status = resp.status();
    let header = |name: &str| {
        resp.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<f64>().ok())
    };
    let remaining = header("x-ratelimit-remaining");
    let reset_after = header("x-ratelimit-reset-after");
    let retry_header = header("retry-after");
    let has_rl = resp
        .headers()
        .keys()
        .any(|k| k.as_str().starts_with("x-ratelimit"));
    if status.as_u16() == 429 {
        let body = resp.text().await.unwrap_or_default();
        let precise = serde_json::from_str::<serde_json::Value>(&body)
            .ok()
            .and_then(|v| v.get("retry_after").and_then(serde_json::Value::as_f64));
        if !has_rl {
            return Outcome::Banned;
        }
        return Outcome::Limited(secs(precise.or(retry_header).unwrap_or(1.0)));
    }
    let _ = resp.bytes().await;
    if status.is_success() {
        let wait = match (remaining, reset_after) {
            (Some(r), Some(after)) if r <= 0.0 => Some(secs(after)),
            _ => None,
        };
        Outcome::Ok(wait)
    } else {
        Outcome::Failed
    }
}

/// Seconds from a header or body, clamped to `[0, 60]` (a reference client, not a hardened one).
fn secs(s: f64) -> Duration {
    Duration::try_from_secs_f64(s.clamp(0.0, 60.0)).unwrap_or_default()
}

/// A sliding-log global limiter shared by every bucket task.
struct GlobalLog {
    limit: usize,
    period: Duration,
    log: Mutex<VecDeque<Instant>>,
}

impl GlobalLog {
    fn new(g: GlobalLimit) -> Self {
        Self {
            limit: g.limit.max(1) as usize,
            period: g.period.mul_f64(1.25) + Duration::from_millis(50),
            log: Mutex::new(VecDeque::new()),
        }
    }

    /// Takes a slot, returning how long it waited.
    async fn acquire(&self) -> Duration {
        let start = Instant::now();
        loop {
            let wake = {
                let mut log = self.log.lock().await;
                let now = Instant::now();
                while log.front().is_some_and(|&t| t + self.period <= now) {
                    log.pop_front();
                }
                if log.len() < self.limit {
                    log.push_back(now);
                    return start.elapsed();
                }
                log.front().map_or(now, |&t| t + self.period)
            };
            tokio::time::sleep_until(wake).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::Method;

    #[test]
    fn keys_collapse_ids_and_reactions() {
        let k = |m: Method, p: &str| bucket_key(&Operation::new(m, p, None));
        assert_eq!(
            k(Method::POST, "/channels/1/messages"),
            "POST channels/1 messages"
        );
        assert_eq!(
            k(Method::PUT, "/channels/1/messages/5/reactions/x/@me"),
            k(Method::PUT, "/channels/1/messages/6/reactions/y/@me")
        );
        assert_ne!(
            k(Method::POST, "/channels/1/messages"),
            k(Method::POST, "/channels/2/messages")
        );
        assert_eq!(k(Method::POST, "/webhooks/1/tok"), "POST webhooks/1/tok ");
        assert_eq!(k(Method::GET, "/users/5"), "GET  users/:id");
    }
}
