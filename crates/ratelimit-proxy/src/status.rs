//! The `/status` document: the limiter's snapshot as JSON.

use ratelimit_client::shared::SharedBudget;
use ratelimit_client::{Occupancy, Snapshot};
use serde::Serialize;

/// The limiter's state as `/status` shows it: buckets, routes and their queues, global use per token,
/// stopped tokens, the invalid-request count, any ban, and the shared budget (`null` when the proxy
/// limits alone). Tokens appear only as digests.
///
/// ```
/// use ratelimit_client::{profile::Discord, Limiter};
/// use ratelimit_proxy::Status;
/// let limiter = Limiter::new(Discord::new());
/// let json = serde_json::to_value(Status::new(limiter.snapshot(), limiter.occupancy()))?;
/// assert_eq!(json["buckets"], serde_json::json!([]));
/// assert_eq!(json["banned_for_seconds"], serde_json::Value::Null);
/// assert_eq!(json["shared"], serde_json::Value::Null);
/// # Ok::<(), serde_json::Error>(())
/// ```
#[derive(Debug, Serialize)]
pub struct Status {
    /// Known counters.
    pub buckets: Vec<Bucket>,
    /// Known routes.
    pub routes: Vec<Route>,
    /// Requests sent under the global limit in the last window, per token digest.
    pub global: Vec<Global>,
    /// Tokens stopped after a 401.
    pub disabled_tokens: usize,
    /// Invalid responses (401, 403, non-shared 429) in the current window.
    pub invalid_requests: usize,
    /// Seconds until the next probe, when an upstream ban is active.
    pub banned_for_seconds: Option<f64>,
    /// What is held right now.
    pub occupancy: Held,
    /// The budget shared with other replicas through Redis, if any.
    pub shared: Option<Shared>,
}

/// The shared budget as this replica sees it.
#[derive(Debug, Serialize)]
pub struct Shared {
    /// The namespace the replicas share.
    pub namespace: String,
    /// Whether Redis is presumed unreachable: this replica then limits itself alone, with its share of
    /// the global limit.
    pub degraded: bool,
    /// Calls to Redis since start.
    pub calls: u64,
    /// Calls that failed, timed out or got a reply that was not believed.
    pub errors: u64,
    /// Reservation steps this replica decided alone because Redis could not be asked.
    pub fallbacks: u64,
    /// How many replicas were declared to share the budget.
    pub instances: u32,
    /// Connections to Redis replaced after a timeout or another call's reply.
    pub reconnects: u64,
}

/// One bucket counter.
#[derive(Debug, Serialize)]
pub struct Bucket {
    /// The upstream's bucket hash, if known.
    pub hash: Option<String>,
    /// The major parameter (channel, guild or webhook), empty when none.
    pub major: String,
    /// Limit per window.
    pub limit: u64,
    /// Requests that may still be sent in this window.
    pub available: u64,
    /// Requests in flight.
    pub in_flight: u32,
    /// Seconds until the window resets, if known.
    pub reset_in_seconds: Option<f64>,
    /// Route templates drawing on it.
    pub routes: Vec<String>,
}

/// One route.
#[derive(Debug, Serialize)]
pub struct Route {
    /// Method and template, e.g. `POST /channels/{channel_id}/messages`.
    pub route: String,
    /// The major parameter.
    pub major: String,
    /// Requests waiting.
    pub queued: usize,
    /// Whether it has no per-route limit.
    pub unlimited: bool,
    /// Active sub-limits.
    pub sublimits: usize,
}

/// Global-limit use of one token.
#[derive(Debug, Serialize)]
pub struct Global {
    /// A digest of the token (never the token).
    pub token: String,
    /// Requests in the last window.
    pub used: u64,
}

/// What the limiter holds right now.
#[derive(Debug, Serialize)]
pub struct Held {
    /// Admissions in flight.
    pub in_flight: u64,
    /// Requests queued on routes.
    pub queued: usize,
    /// Queue heads waiting for a global slot.
    pub global_waiting: usize,
}

impl Status {
    /// The document for a snapshot and the current occupancy.
    pub fn new(snapshot: Snapshot, occupancy: Occupancy) -> Status {
        Status {
            buckets: snapshot
                .buckets
                .into_iter()
                .map(|b| Bucket {
                    hash: b.hash,
                    major: b.major,
                    limit: b.limit,
                    available: b.available,
                    in_flight: b.in_flight,
                    reset_in_seconds: b.reset_in.map(|d| d.as_secs_f64()),
                    routes: b.routes,
                })
                .collect(),
            routes: snapshot
                .routes
                .into_iter()
                .map(|r| Route {
                    route: r.route,
                    major: r.major,
                    queued: r.queued,
                    unlimited: r.unlimited,
                    sublimits: r.sublimits,
                })
                .collect(),
            global: snapshot
                .global_used
                .into_iter()
                .map(|(token, used)| Global {
                    token: format!("{token:016x}"),
                    used,
                })
                .collect(),
            disabled_tokens: snapshot.disabled_tokens,
            invalid_requests: snapshot.invalid_requests,
            banned_for_seconds: snapshot.banned_for.map(|d| d.as_secs_f64()),
            occupancy: Held {
                in_flight: occupancy.in_flight,
                queued: occupancy.queued,
                global_waiting: occupancy.global_waiting,
            },
            shared: None,
        }
    }

    /// Adds the shared budget's state.
    ///
    /// ```no_run
    /// use ratelimit_client::{profile::Discord, shared::SharedBudget, Limiter};
    /// use ratelimit_proxy::Status;
    /// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
    /// let budget = SharedBudget::builder().connect("redis://127.0.0.1/").await?;
    /// let limiter = Limiter::builder(Discord::new()).shared(budget.clone()).build()?;
    /// let status = Status::new(limiter.snapshot(), limiter.occupancy()).with_shared(&budget);
    /// assert!(!status.shared.unwrap().degraded);
    /// # Ok(()) }
    /// ```
    pub fn with_shared(mut self, budget: &SharedBudget) -> Status {
        let stats = budget.stats();
        self.shared = Some(Shared {
            namespace: budget.namespace().to_owned(),
            degraded: budget.is_degraded(),
            calls: stats.calls,
            errors: stats.errors,
            fallbacks: stats.fallbacks,
            instances: budget.instances(),
            reconnects: stats.reconnects,
        });
        self
    }
}
