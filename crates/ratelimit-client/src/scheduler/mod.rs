//! The scheduler shared by every profile: admission, waiting, and learning from responses.
//!
//! A [`Limiter`] holds the state for one upstream (one egress IP): per-token global limits, routes and their
//! FIFO lanes, bucket counters, the invalid-request budget and the ban breaker. The tower layer and the
//! reqwest middleware both drive it; it can also be used directly. See [`state`](self) for the model.
//!
//! ```
//! use ratelimit_client::{profile::Discord, Limiter};
//!
//! let limiter = Limiter::builder(Discord::new()).global_limit(Some(50)).build()?;
//! assert!(limiter.snapshot().buckets.is_empty());
//! # Ok::<(), ratelimit_client::ConfigError>(())
//! ```

use std::borrow::Cow;
use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use http::{Extensions, HeaderMap, Method, StatusCode, Uri};
use parking_lot::Mutex;
use ratelimit_core::{Clock, Micros, SystemClock};
use tokio::sync::Notify;

pub(crate) mod config;
mod names;
mod settings;
#[cfg(feature = "redis")]
mod shared_gate;
#[cfg(feature = "redis")]
pub(crate) use shared_gate::SharedStep;
mod snapshot;
pub(crate) mod state;

pub use settings::{
    Config, ConfigError, Exhausted, InvalidBudget, DEFAULT_MAX_WAIT_WITHIN_COMMON_REQUEST_TIMEOUTS,
};
pub use snapshot::{BucketStatus, RouteStatus, Snapshot};
pub use state::Occupancy;

use crate::error::Error;
use crate::parse::micros;
use crate::profile::{Credential, Lane, Observation, Profile, RequestView};
use config::us;
pub(crate) use state::Ticket;
use state::{Core, ErrorKind, Grant, Step, Verdict};

/// The longest a single request may wait for the rate limit (waits after 429s included); put it in the
/// request's extensions to override [`Config::max_wait`] for that request.
///
/// When the predicted wait is longer, the request fails at once with [`Error::WouldWait`] naming the
/// route and the wait; if the wait grows while queued, it fails when the time is spent.
/// [`MaxWait::FOREVER`] waits as long as the upstream says.
///
/// ```
/// use std::time::Duration;
/// use ratelimit_client::MaxWait;
/// let mut req = http::Request::new(());
/// req.extensions_mut().insert(MaxWait(Duration::from_secs(3)));
/// // With reqwest-middleware: `client.get(url).with_extension(MaxWait(Duration::from_secs(3)))`.
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MaxWait(pub Duration);

impl MaxWait {
    /// No limit: the request waits as long as the rate limit requires (an upstream's `Retry-After: 3600`
    /// holds it for an hour). Only for background work that has nothing better to do.
    pub const FOREVER: MaxWait = MaxWait(Duration::MAX);
}

/// When a request actually left, after any wait for a connection: an inner service puts it in the
/// *response's* extensions (the reqwest adapter, `ReqwestService`, does).
///
/// Without it the layer takes the admission time as the send time, so a request that first had to open a
/// connection (a TCP or TLS handshake) looks as if its way to the upstream were that much longer. The
/// reset estimates of the next window ([`Config::latency_compensation`]) compare ways in, and a later
/// request on a warm connection is faster: with this extension the handshake is left out.
///
/// ```
/// use ratelimit_client::SentAt;
/// let mut res = http::Response::new(());
/// res.extensions_mut().insert(SentAt(std::time::Instant::now()));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SentAt(pub std::time::Instant);

/// Builds a [`Limiter`].
pub struct LimiterBuilder<P> {
    profile: P,
    cfg: Config,
    credential: Credential,
    clock: Option<Arc<dyn Clock>>,
    #[cfg(feature = "redis")]
    shared: Option<crate::shared::SharedBudget>,
}

impl<P: std::fmt::Debug> std::fmt::Debug for LimiterBuilder<P> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LimiterBuilder")
            .field("profile", &self.profile)
            .field("config", &self.cfg)
            .field("credential", &self.credential)
            .finish_non_exhaustive()
    }
}

impl<P: std::fmt::Debug> std::fmt::Debug for Inner<P> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Limiter")
            .field("profile", &self.profile)
            .finish_non_exhaustive()
    }
}

impl<P: Profile> LimiterBuilder<P> {
    /// Pre-emptive global limit per token per second (`None` to disable). Default 50, Discord's.
    pub fn global_limit(mut self, n: Option<u32>) -> Self {
        self.cfg.global_limit = n;
        self
    }

    /// The global window and a margin added to it (defaults 1 s and 0).
    pub fn global_window(mut self, window: Duration, margin: Duration) -> Self {
        self.cfg.global_window = window;
        self.cfg.global_margin = margin;
        self
    }

    /// Where requests carry their credential (default: the `Authorization` header). Each credential has
    /// its own buckets and global limit; see [`Credential`].
    ///
    /// ```
    /// use http::HeaderName;
    /// use ratelimit_client::{profile::Ietf, Credential, Limiter};
    /// let limiter = Limiter::builder(Ietf::new())
    ///     .credential(Credential::header(HeaderName::from_static("x-api-key")))
    ///     .build()?;
    /// # Ok::<(), ratelimit_client::ConfigError>(())
    /// ```
    pub fn credential(mut self, credential: Credential) -> Self {
        self.credential = credential;
        self
    }

    /// The invalid-request budget thresholds.
    pub fn invalid_budget(mut self, budget: InvalidBudget) -> Self {
        self.cfg.invalid = budget;
        self
    }

    /// First and longest wait between probes after a ban.
    pub fn ban_backoff(mut self, first: Duration, max: Duration) -> Self {
        self.cfg.ban_backoff = first;
        self.cfg.ban_backoff_max = max;
        self
    }

    /// Retries after rate-limit responses and after transient errors.
    pub fn retries(mut self, limit: u32, errors: u32) -> Self {
        self.cfg.max_limit_retries = limit;
        self.cfg.max_error_retries = errors;
        self
    }

    /// Backoff for transient errors: first delay and cap (exponential, with jitter).
    pub fn backoff(mut self, base: Duration, max: Duration) -> Self {
        self.cfg.backoff_base = base;
        self.cfg.backoff_max = max;
        self
    }

    /// Longest wait per request for the rate limit, waits after 429s included (default
    /// [`DEFAULT_MAX_WAIT_WITHIN_COMMON_REQUEST_TIMEOUTS`], 30 s); a [`MaxWait`] extension overrides it
    /// for one request. A longer wait fails at once with [`Error::WouldWait`].
    pub fn max_wait(mut self, max: Duration) -> Self {
        self.cfg.max_wait = Some(max);
        self
    }

    /// Requests wait as long as the rate limit requires, however long the upstream says (no default
    /// maximum; a [`MaxWait`] extension still bounds one request).
    pub fn wait_forever(mut self) -> Self {
        self.cfg.max_wait = None;
        self
    }

    /// What a request gets when its retries after rate-limit responses are spent (default
    /// [`Exhausted::Error`]; a proxy wants [`Exhausted::Respond`]).
    pub fn on_exhausted(mut self, what: Exhausted) -> Self {
        self.cfg.on_exhausted = what;
        self
    }

    /// Caps on tracked counters and routes (default 10,000 each; see [`Config::max_buckets`]).
    pub fn max_buckets(mut self, buckets: usize, routes: usize) -> Self {
        self.cfg.max_buckets = buckets;
        self.cfg.max_routes = routes;
        self
    }

    /// Share (percent) of the early release the responses justify (default 100; 0 waits for the latest
    /// reported reset). See [`Config::latency_compensation`].
    pub fn latency_compensation(mut self, percent: u8) -> Self {
        self.cfg.latency_compensation = percent;
        self
    }

    /// Margin added to every early release (default 2 ms). See [`Config::reset_margin`].
    pub fn reset_margin(mut self, margin: Duration) -> Self {
        self.cfg.reset_margin = margin;
        self
    }

    /// Replaces the whole configuration.
    pub fn config(mut self, cfg: Config) -> Self {
        self.cfg = cfg;
        self
    }

    /// Shares the budget with every process that uses the same [`SharedBudget`](crate::shared::SharedBudget)
    /// namespace (feature `redis`): the token's global limit, bucket counts, the route → bucket map, global
    /// locks, the ban and the invalid-request budget. See [`shared`](crate::shared).
    ///
    /// ```no_run
    /// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
    /// use ratelimit_client::{profile::Discord, shared::SharedBudget, Limiter};
    /// let budget = SharedBudget::builder().instances(2).connect("redis://127.0.0.1/").await?;
    /// let limiter = Limiter::builder(Discord::new()).shared(budget).build()?;
    /// # Ok(()) }
    /// ```
    #[cfg(feature = "redis")]
    #[cfg_attr(docsrs, doc(cfg(feature = "redis")))]
    pub fn shared(mut self, budget: crate::shared::SharedBudget) -> Self {
        self.shared = Some(budget);
        self
    }

    /// Uses `clock` instead of the system's monotonic clock (tests).
    pub fn clock(mut self, clock: impl Clock) -> Self {
        self.clock = Some(Arc::new(clock));
        self
    }

    /// Validates the configuration and builds the limiter.
    pub fn build(self) -> Result<Limiter<P>, ConfigError> {
        self.cfg.validate()?;
        let micros = self.cfg.to_core();
        Ok(Limiter {
            inner: Arc::new(Inner {
                core: Mutex::new(Core::new(micros.clone())),
                micros,
                settings: self.cfg,
                credential: self.credential,
                // Random per limiter: a digest seen in a log or a snapshot says nothing about the credential.
                credential_seed: foldhash::fast::RandomState::default(),
                clock: self.clock.unwrap_or_else(|| Arc::new(SystemClock::new())),
                profile: self.profile,
                stats: Stats::default(),
                #[cfg(feature = "redis")]
                shared: self.shared,
            }),
        })
    }
}

#[derive(Debug, Default)]
struct Stats {
    waited_us: AtomicU64,
    sent: AtomicU64,
    calls: AtomicU64,
}

struct Inner<P> {
    profile: P,
    core: Mutex<Core>,
    /// The configuration as given (durations).
    settings: Config,
    /// The same in microseconds, as the scheduler computes.
    micros: config::Config,
    credential: Credential,
    credential_seed: foldhash::fast::RandomState,
    clock: Arc<dyn Clock>,
    stats: Stats,
    #[cfg(feature = "redis")]
    shared: Option<crate::shared::SharedBudget>,
}

/// The rate-limit scheduler for one upstream. Cheap to clone; clones share state.
#[derive(Debug)]
pub struct Limiter<P> {
    inner: Arc<Inner<P>>,
}

impl<P> Clone for Limiter<P> {
    fn clone(&self) -> Self {
        Limiter {
            inner: self.inner.clone(),
        }
    }
}

/// A digest of the request's credential (0 for none), so that credentials never appear in keys or logs.
fn credential_digest(seed: &foldhash::fast::RandomState, credential: Option<&[u8]>) -> u64 {
    match credential {
        None => 0,
        Some(v) => {
            let mut h = seed.build_hasher();
            h.write(v);
            h.finish() | 1
        }
    }
}

/// Request bodies longer than this are not parsed for a fingerprint (they all share fingerprint 0): parsing
/// builds a JSON value, whose size follows the body's.
const MAX_FINGERPRINTED_BODY: usize = 1 << 20;

/// A fingerprint of a JSON body's top-level keys, for sub-limits that depend on which fields a request
/// changes (Discord's channel `name`/`topic` edits).
pub(crate) fn body_fingerprint(body: Option<&[u8]>) -> u64 {
    let Some(b) = body.filter(|b| !b.is_empty() && b.len() <= MAX_FINGERPRINTED_BODY) else {
        return 0;
    };
    let Ok(serde_json::Value::Object(map)) = serde_json::from_slice::<serde_json::Value>(b) else {
        return 0;
    };
    let mut keys: Vec<&String> = map.keys().collect();
    keys.sort();
    let mut h = foldhash::fast::FixedState::with_seed(0xf1).build_hasher();
    for k in keys {
        h.write(k.as_bytes());
        h.write_u8(0);
    }
    h.finish() | 1
}

/// What the caller should do after a response.
#[derive(Debug)]
pub(crate) enum Next {
    Done,
    Retry {
        backoff: Option<Micros>,
    },
    /// The response called for a retry but none is left: after a rate-limit response (`limited`) or a
    /// transient error.
    Exhausted {
        limited: bool,
    },
    Fail(Error),
}

impl<P: Profile> Limiter<P> {
    /// A limiter with the default configuration.
    pub fn new(profile: P) -> Self {
        Self::builder(profile)
            .build()
            .unwrap_or_else(|_| unreachable!("the default configuration is valid"))
    }

    /// A builder with the default configuration.
    pub fn builder(profile: P) -> LimiterBuilder<P> {
        LimiterBuilder {
            profile,
            cfg: Config::default(),
            credential: Credential::default(),
            clock: None,
            #[cfg(feature = "redis")]
            shared: None,
        }
    }

    /// The profile.
    pub fn profile(&self) -> &P {
        &self.inner.profile
    }

    /// The configuration.
    pub fn config(&self) -> &Config {
        &self.inner.settings
    }

    pub(crate) fn now(&self) -> Micros {
        self.inner.clock.now()
    }

    /// A point-in-time view of buckets, routes, queues, the global limit and the budgets.
    pub fn snapshot(&self) -> Snapshot {
        let now = self.now();
        self.inner.core.lock().snapshot(now)
    }

    /// What requests in progress hold (in flight, queued, waiting for or reserving global slots, probing):
    /// all zero when none is in progress. See [`Occupancy`].
    pub fn occupancy(&self) -> Occupancy {
        self.inner.core.lock().occupancy()
    }

    /// Total time requests spent waiting for the rate limit, and requests sent, since creation.
    pub fn totals(&self) -> (Duration, u64) {
        (
            Duration::from_micros(self.inner.stats.waited_us.load(Ordering::Relaxed)),
            self.inner.stats.sent.load(Ordering::Relaxed),
        )
    }

    pub(crate) fn ticket(
        &self,
        method: &Method,
        uri: &Uri,
        headers: &HeaderMap,
        ext: &Extensions,
    ) -> Ticket {
        let route = self.inner.profile.classify(method, uri, headers);
        let view = RequestView {
            method,
            uri,
            headers,
            extensions: ext,
        };
        let token = self.digest(self.inner.credential.find(view));
        let mut t = Ticket::new(
            token,
            &route.key,
            &route.major,
            ext.get::<Lane>().copied().unwrap_or(route.lane),
            self.inner.stats.calls.fetch_add(1, Ordering::Relaxed),
        );
        t.global_exempt = route.global_exempt;
        t
    }

    /// The credential's digest: random per limiter, or, with a shared budget, the same in every process.
    fn digest(&self, credential: Option<&[u8]>) -> u64 {
        #[cfg(feature = "redis")]
        if let Some(b) = &self.inner.shared {
            return shared_gate::stable_digest(b.namespace(), credential);
        }
        credential_digest(&self.inner.credential_seed, credential)
    }

    /// The deadline for a request: its [`MaxWait`] extension or the configured default; `None` for none.
    pub(crate) fn deadline(&self, ext: &Extensions, start: Micros) -> Option<Micros> {
        let max = match ext.get::<MaxWait>() {
            Some(&MaxWait::FOREVER) => return None,
            Some(m) => Some(us(m.0)),
            None => self.inner.micros.max_wait,
        };
        max.map(|w| start.saturating_add(w))
    }

    /// What a request gets when its limit retries are spent.
    pub(crate) fn on_exhausted(&self) -> Exhausted {
        self.inner.settings.on_exhausted
    }

    fn admitted(&self, grant: Grant, start: Micros, now: Micros, route: &str) -> Permit<P> {
        let waited = now.saturating_sub(start);
        self.inner
            .stats
            .waited_us
            .fetch_add(waited, Ordering::Relaxed);
        self.inner.stats.sent.fetch_add(1, Ordering::Relaxed);
        if waited > 0 {
            // Labelled by route template (bounded), not by bucket key (one per channel or guild).
            metrics::histogram!("ratelimit_client_wait_seconds", "route" => route.to_owned())
                .record(waited as f64 / 1e6);
        }
        Permit {
            limiter: self.clone(),
            grant: Some(grant),
            waited,
            #[cfg(feature = "redis")]
            lease: None,
        }
    }

    /// Waits until the request may be sent, or fails. `body` is called only on routes with an active
    /// sub-limit (to tell which requests it holds), and before this returns: the future holds no borrow of
    /// the body, so the request need not be `Sync`.
    pub(crate) fn acquire<'a, 'b>(
        &'a self,
        t: &'a mut Ticket,
        body: impl FnOnce() -> Option<Cow<'b, [u8]>>,
        deadline: Option<Micros>,
    ) -> impl std::future::Future<Output = Result<Permit<P>, Error>> + Send + 'a {
        let start = self.now();
        let now = self.admit_now(t, body, start);
        async move {
            match now {
                Some(done) => done,
                None => self.wait_for_admission(t, deadline, start).await,
            }
        }
    }

    /// The fast path, under one lock: nothing queued ahead and room now means no queue entry, no notifier.
    fn admit_now<'b>(
        &self,
        t: &mut Ticket,
        body: impl FnOnce() -> Option<Cow<'b, [u8]>>,
        start: Micros,
    ) -> Option<Result<Permit<P>, Error>> {
        let mut core = self.inner.core.lock();
        // A known route without sub-limits (the common case) needs neither check: one lookup, not three.
        let plain = core.is_plain_route(&t.route_key);
        if !plain && t.fingerprint == 0 && core.has_sublimits(&t.route_key, start) {
            t.fingerprint = body_fingerprint(body().as_deref());
        }
        if plain || core.sublimit_until(t, start).is_none() {
            if !plain {
                core.ensure_route(t, start);
            }
            match core.try_admit(state::FAST_PATH, t, start) {
                Step::Admit(grant) => {
                    drop(core);
                    return Some(Ok(self.admitted(grant, start, start, t.template())));
                }
                Step::Fail(e) => return Some(Err(e)),
                Step::Wait { .. } | Step::Sublimit => {}
            }
        }
        None
    }

    /// The slow path: queue, wait for the bucket, the global limit or a sub-limit, within the deadline.
    async fn wait_for_admission(
        &self,
        t: &Ticket,
        deadline: Option<Micros>,
        start: Micros,
    ) -> Result<Permit<P>, Error> {
        // From here on the call may hold a queue position and global-slot bookkeeping: whatever ends the
        // wait other than an admission (an error, a deadline, the future being dropped) gives them back.
        let mut guard = WaitGuard {
            limiter: self,
            ticket: t,
            queued: None,
            armed: true,
        };
        loop {
            // Sub-limited requests wait in their own lane, outside the route's queue.
            let sub = self.inner.core.lock().sublimit_until(t, self.now());
            if let Some(until) = sub {
                self.sleep_until(t, until, deadline, start).await?;
            }
            let notify = Arc::new(Notify::new());
            let id = {
                let now = self.now();
                self.inner.core.lock().enqueue(t, notify.clone(), now)
            };
            guard.queued = Some(id);
            loop {
                let now = self.now();
                let step = self.inner.core.lock().try_admit(id, t, now);
                match step {
                    Step::Admit(grant) => {
                        guard.armed = false;
                        return Ok(self.admitted(grant, start, now, t.template()));
                    }
                    Step::Fail(e) => return Err(e),
                    Step::Sublimit => {
                        // `try_admit` already took it out of the queue.
                        guard.queued = None;
                        break;
                    }
                    Step::Wait { until, bucket } => {
                        if let (Some(d), Some(u)) = (deadline, until) {
                            if u > d {
                                return Err(self.would_wait(t, &bucket, u.saturating_sub(start)));
                            }
                        }
                        let wake = match (until, deadline) {
                            (Some(u), _) => Some(u),
                            (None, d) => d,
                        };
                        let timed_out = match wake {
                            Some(w) => {
                                let dur = micros(w.saturating_sub(now));
                                tokio::select! {
                                    _ = notify.notified() => false,
                                    _ = tokio::time::sleep(dur) => until.is_none(),
                                }
                            }
                            None => {
                                notify.notified().await;
                                false
                            }
                        };
                        if timed_out && deadline.is_some_and(|d| self.now() >= d) {
                            return Err(self.would_wait(
                                t,
                                &bucket,
                                self.now().saturating_sub(start),
                            ));
                        }
                    }
                }
            }
        }
    }

    async fn sleep_until(
        &self,
        t: &Ticket,
        until: Micros,
        deadline: Option<Micros>,
        start: Micros,
    ) -> Result<(), Error> {
        if deadline.is_some_and(|d| until > d) {
            return Err(self.would_wait(t, SUBLIMIT, until.saturating_sub(start)));
        }
        let now = self.now();
        tokio::time::sleep(micros(until.saturating_sub(now))).await;
        Ok(())
    }

    /// Backoff with equal jitter: half the exponential delay, plus a random part of the other half.
    pub(crate) fn backoff(&self, attempt: u32) -> Micros {
        let cfg = &self.inner.micros;
        let exp = cfg
            .backoff_base
            .saturating_mul(1u64 << attempt.min(20))
            .min(cfg.backoff_max);
        let r = foldhash::fast::RandomState::default().hash_one(self.now());
        exp / 2 + r % (exp / 2 + 1)
    }
}

/// A call waiting for admission: on drop without an admission, its queue position (if it holds one) and
/// its global-slot bookkeeping (a wait for a slot, being held back by a reservation) are given back.
struct WaitGuard<'a, P> {
    limiter: &'a Limiter<P>,
    ticket: &'a Ticket,
    queued: Option<state::WaiterId>,
    armed: bool,
}

impl<P> Drop for WaitGuard<'_, P> {
    fn drop(&mut self) {
        if self.armed {
            let mut core = self.limiter.inner.core.lock();
            if let Some(id) = self.queued {
                core.cancel(&self.ticket.route_key, id);
            }
            core.forget_call(self.ticket);
        }
    }
}

/// An admitted request. Completing it with the response updates the limiter; dropping it without a
/// response (a connection error, a cancelled future) releases its slot conservatively.
#[derive(Debug)]
pub(crate) struct Permit<P> {
    limiter: Limiter<P>,
    grant: Option<Grant>,
    /// How long the request waited for this admission.
    waited: Micros,
    /// Its reservation in the shared state (released when dropped without a response).
    #[cfg(feature = "redis")]
    lease: Option<crate::shared::Lease>,
}

impl<P: Profile> Permit<P> {
    /// How long the request waited for this admission.
    pub(crate) fn waited(&self) -> Micros {
        self.waited
    }

    /// The shared state admitted the request too, at `now`, after a wait since `start`: the wait counts as
    /// the request's, and it leaves now.
    #[cfg(feature = "redis")]
    pub(crate) fn shared_admitted(
        &mut self,
        lease: crate::shared::Lease,
        start: Micros,
        now: Micros,
    ) {
        let waited = now.saturating_sub(start);
        self.waited = self.waited.saturating_add(waited);
        self.limiter
            .inner
            .stats
            .waited_us
            .fetch_add(waited, Ordering::Relaxed);
        if let Some(g) = self.grant.as_mut() {
            g.sent_at = g.sent_at.max(now);
        }
        self.lease = Some(lease);
    }

    pub(crate) fn wants_body(&self, status: StatusCode, headers: &HeaderMap) -> bool {
        self.limiter.inner.profile.wants_body(status, headers)
    }

    /// Reads the response into the limiter's state and says what to do next.
    pub(crate) fn complete<'b>(
        mut self,
        status: StatusCode,
        headers: &HeaderMap,
        body: Option<&[u8]>,
        request_body: impl FnOnce() -> Option<Cow<'b, [u8]>>,
        attempts: (u32, u32),
        sent: Option<SentAt>,
    ) -> Next {
        let Some(mut grant) = self.grant.take() else {
            return Next::Done;
        };
        let inner = &self.limiter.inner;
        let obs: Observation = inner.profile.observe(status, headers, body);
        // A refusal needs the body's shape (a sub-limit holds that shape); so does a success on a busy
        // route (it is the evidence of how many a sub-limit's window takes).
        let success = !obs.server_error && !obs.unauthorized;
        let fingerprint = match grant.fingerprint {
            0 if obs.limited.is_some() || (grant.busy && success) => {
                body_fingerprint(request_body().as_deref())
            }
            f => f,
        };
        let now = inner.clock.now();
        if let Some(SentAt(at)) = sent {
            // On our clock: as long before now as the instant is before the present, never before admission.
            let ago = config::us(at.elapsed());
            let sent = grant.sent_at.max(now.saturating_sub(ago)).min(now);
            tracing::trace!(
                connect_us = sent - grant.sent_at,
                rtt_us = now - sent,
                "request left after its admission"
            );
            grant.sent_at = sent;
        }
        let verdict = inner.core.lock().complete(&grant, &obs, fingerprint, now);
        #[cfg(feature = "redis")]
        if let Some(lease) = self.lease.take() {
            let ok = status.is_success() && success;
            lease.reconcile(shared_gate::report(
                &grant,
                &obs,
                (ok, fingerprint),
                &inner.micros,
                now,
            ));
        }
        metrics::counter!("ratelimit_client_responses_total", "class" => status_class(status))
            .increment(1);
        match verdict {
            Verdict::Done => Next::Done,
            Verdict::RetryLimit if attempts.0 < inner.micros.max_limit_retries => {
                Next::Retry { backoff: None }
            }
            Verdict::RetryError if attempts.1 < inner.micros.max_error_retries => Next::Retry {
                backoff: Some(self.limiter.backoff(attempts.1)),
            },
            Verdict::RetryLimit => Next::Exhausted { limited: true },
            Verdict::RetryError => Next::Exhausted { limited: false },
            Verdict::Fail(ErrorKind::Banned(b)) => Next::Fail(Error::Banned {
                retry_in: micros(b),
            }),
        }
    }
}

/// What a sub-limited request waits for (see [`would_wait`]).
const SUBLIMIT: &str = "sub-limit";

/// What a request waits for when the shared state holds it (see [`would_wait`]).
#[cfg_attr(not(feature = "redis"), allow(dead_code))]
const SHARED: &str = "shared";

impl<P: Profile> Limiter<P> {
    /// The deadline error, in the caller's terms: the route template, and what the request waits for in
    /// words, never the scheduler's internal keys (which carry a credential digest). A limit is a "bucket"
    /// for Discord, whose documentation calls it that.
    fn would_wait(&self, t: &Ticket, waiting_for: &str, wait: Micros) -> Error {
        metrics::counter!("ratelimit_client_deadline_total").increment(1);
        let noun = if self.inner.profile.name() == "discord" {
            "bucket"
        } else {
            "limit"
        };
        Error::WouldWait {
            route: t.template().to_owned(),
            limit: describe_limit(waiting_for, noun),
            wait: micros(wait),
        }
    }
}

/// Words for what `state` reports a request waits for: `global…`, `sub-limit`, `<route key> (probing)`, a
/// counter key `token|#hash|major` or `token|=template|major`, or the route key `token|template|major`;
/// `noun` is what the upstream calls a limit.
fn describe_limit(key: &str, noun: &str) -> String {
    if key == "global" {
        return "the global limit".to_owned();
    }
    if key.starts_with("global") {
        return "the global limit (slots set aside for a longer queue)".to_owned();
    }
    if key == SHARED {
        return "the limits shared with other processes".to_owned();
    }
    if key == SUBLIMIT {
        return "a sub-limit on requests of this body shape".to_owned();
    }
    if key.ends_with("(probing)") {
        return "the route's first response (its limits are not known yet)".to_owned();
    }
    let mut parts = key.splitn(3, '|').skip(1);
    match (parts.next(), parts.next()) {
        (Some(name), major)
            if name.starts_with('#') && !name[1..].starts_with(names::UNNAMED_LIMIT) =>
        {
            let name = &name[1..];
            match major.filter(|m| !m.is_empty()) {
                Some(m) => format!("{noun} `{name}` (for {m})"),
                None => format!("{noun} `{name}`"),
            }
        }
        (Some(name), _) if name.starts_with('#') || name.starts_with('=') => {
            format!("the route's own {noun}")
        }
        _ => "the route, blocked after a rate-limit response".to_owned(),
    }
}

fn status_class(s: StatusCode) -> &'static str {
    match s.as_u16() {
        200..=299 => "2xx",
        429 => "429",
        400..=499 => "4xx",
        500..=599 => "5xx",
        _ => "other",
    }
}

impl<P> Drop for Permit<P> {
    fn drop(&mut self) {
        if let Some(g) = self.grant.take() {
            let now = self.limiter.inner.clock.now();
            self.limiter.inner.core.lock().fail(&g, now);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_limit_is_described_by_its_upstream_name_in_the_profiles_noun_never_by_its_key() {
        let digest = "00000000000000ab";
        assert_eq!(
            describe_limit(&format!("{digest}|#hourly|"), "limit"),
            "limit `hourly`"
        );
        assert_eq!(
            describe_limit(&format!("{digest}|#abcd|42"), "bucket"),
            "bucket `abcd` (for 42)"
        );
        assert_eq!(
            describe_limit(&format!("{digest}|#route:GET /v1/items/{{id}}|"), "limit"),
            "the route's own limit"
        );
        assert_eq!(
            describe_limit(&format!("{digest}|=GET /v1/items/{{id}}|"), "limit"),
            "the route's own limit"
        );
    }
}
