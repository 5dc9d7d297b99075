//! [`SharedBudget`]: the connection, the breaker in front of it, and the three calls the limiter makes.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::{Mutex, RwLock};
use ratelimit_core::log_once::LogOnce;
use ratelimit_core::store::redis::conn::{Connection, Evidence, Handle};
use ratelimit_core::store::redis::{Breaker, Transition};
use ratelimit_core::Micros;
use redis::Value;

use super::builder::SharedBudgetBuilder;
use super::fallback::Fallback;
use super::lease::{Gate, Lease, Report};
use super::script::{self, BadReply, Reply};
use crate::hex;

/// What the limiter asks a reservation for.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Ask<'a> {
    /// The credential's digest (stable across processes).
    pub token: u64,
    /// `token|template|major`.
    pub route_key: &'a str,
    /// Requests per global window for the token (0: none, or the request is exempt).
    pub global_limit: u32,
    pub global_window: Micros,
    /// Invalid responses in `invalid_window` from which nothing is sent (0: no stop).
    pub invalid_stop: usize,
    pub invalid_window: Micros,
    /// The request body's shape (its fingerprint; 0 for none), once read.
    pub shape: Option<u64>,
    /// The request, the same on each of its asks (0: not a waiter, it asks once).
    pub waiter: u64,
    /// How long it has waited for the shared state so far.
    pub waited: Micros,
}

/// State that several processes sharing one upstream identity (one token, one egress IP) share through
/// Redis: the token's global slots, each bucket's count, which bucket a route draws on, the global lock
/// after a global 429, the ban and the invalid-request budget. Give it to
/// [`LimiterBuilder::shared`](crate::LimiterBuilder::shared); see the [module docs](super) for the model.
///
/// Cheap to clone; clones share the connection.
#[derive(Clone)]
pub struct SharedBudget {
    pub(super) inner: Arc<Inner>,
}

impl std::fmt::Debug for SharedBudget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedBudget")
            .field("namespace", &self.inner.namespace)
            .field("instances", &self.inner.instances)
            .field("degraded", &self.is_degraded())
            .finish_non_exhaustive()
    }
}

/// Counts kept by one [`SharedBudget`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct SharedStats {
    /// Script calls sent to Redis.
    pub calls: u64,
    /// Calls that failed, timed out or got a reply that was not believed.
    pub errors: u64,
    /// Connections replaced because a call timed out or got another call's reply.
    pub reconnects: u64,
    /// Reservation steps this process decided alone because Redis could not be asked (an admission or a
    /// wait each: a request that waited counts once per step).
    pub fallbacks: u64,
}

pub(super) struct Inner {
    /// `None` until Redis first answers (a budget that did not wait for it).
    pub(super) connection: RwLock<Option<Arc<Connection>>>,
    pub(super) script: redis::Script,
    /// `{namespace}:`: every key's prefix and Cluster hash tag.
    pub(super) prefix: String,
    pub(super) namespace: String,
    pub(super) instances: u32,
    pub(super) timeout: Duration,
    pub(super) lease: Micros,
    pub(super) poll: Micros,
    pub(super) breaker: Breaker,
    pub(super) fallback: Mutex<Fallback>,
    /// Makes request ids unique across processes.
    pub(super) nonce: u64,
    pub(super) next_id: AtomicU64,
    pub(super) calls: AtomicU64,
    pub(super) errors: AtomicU64,
    pub(super) fallbacks: AtomicU64,
    /// Each kind of failed call is logged once, then at most once a minute (the breaker's transitions
    /// are logged apart).
    pub(super) logs: LogOnce<FAULT_KINDS>,
}

/// Why a call did not give a believable reply.
#[derive(Debug, thiserror::Error)]
pub(super) enum Fault {
    #[error("no reply within {0:?}")]
    Timeout(Duration),
    #[error("Redis failed: {0}")]
    Redis(#[from] redis::RedisError),
    #[error("{0}")]
    Reply(#[from] BadReply),
}

/// Kinds of [`Fault`], each logged on its own (once, then at most once a minute).
pub(super) const FAULT_KINDS: usize = 4;

impl Fault {
    fn kind(&self) -> &'static str {
        match self {
            Fault::Timeout(_) => "timeout",
            Fault::Redis(_) => "redis",
            Fault::Reply(BadReply::Foreign) => "foreign_reply",
            Fault::Reply(_) => "protocol",
        }
    }

    fn index(&self) -> usize {
        match self {
            Fault::Timeout(_) => 0,
            Fault::Redis(_) => 1,
            Fault::Reply(BadReply::Foreign) => 2,
            Fault::Reply(_) => 3,
        }
    }
}

impl SharedBudget {
    /// A builder with the defaults.
    ///
    /// ```no_run
    /// # async fn run() -> Result<(), ratelimit_client::shared::SharedError> {
    /// use ratelimit_client::shared::SharedBudget;
    /// let budget = SharedBudget::builder().namespace("my-bot").instances(4).connect("redis://127.0.0.1/").await?;
    /// # Ok(()) }
    /// ```
    pub fn builder() -> SharedBudgetBuilder {
        SharedBudgetBuilder::default()
    }

    /// Whether Redis is presumed unreachable (its breaker is open, or it has not answered since a start
    /// that did not wait for it): each process then limits itself alone,
    /// with the global limit divided by the declared number of instances. Mirrored by the `metrics` gauge
    /// `ratelimit_client_shared_degraded`.
    pub fn is_degraded(&self) -> bool {
        self.inner.connection.read().is_none() || self.inner.breaker.is_open()
    }

    /// Counts since creation.
    pub fn stats(&self) -> SharedStats {
        let i = &self.inner;
        SharedStats {
            calls: i.calls.load(Ordering::Relaxed),
            errors: i.errors.load(Ordering::Relaxed),
            fallbacks: i.fallbacks.load(Ordering::Relaxed),
            reconnects: i.connection.read().as_ref().map_or(0, |c| c.reconnects()),
        }
    }

    /// How many processes were declared to share the budget (each keeps the global limit divided by this
    /// while Redis is unreachable).
    pub fn instances(&self) -> u32 {
        self.inner.instances
    }

    /// The namespace every key lives under.
    pub fn namespace(&self) -> &str {
        &self.inner.namespace
    }

    /// One reservation step: admitted (with a [`Lease`] to reconcile or release), or how long to wait.
    /// Cancel-safe: dropped while Redis is being asked, it releases whatever the call may have reserved.
    pub(crate) async fn reserve(&self, ask: Ask<'_>) -> Gate {
        let inner = &self.inner;
        let Some(connection) = inner.connected() else {
            return self.fall_back(ask);
        };
        let Some(permit) = inner.breaker.permit() else {
            return self.fall_back(ask);
        };
        let pending = Lease::new(self.clone(), &ask, inner.next_id());
        let keys = inner.keys(ask.token, ask.route_key);
        let mut inv = inner.script.prepare_invoke();
        for k in &keys {
            inv.key(k.as_str());
        }
        inner.common_args(
            &mut inv,
            "reserve",
            pending.id(),
            ask.global_limit,
            ask.global_window,
        );
        inv.arg(inner.poll)
            .arg(ask.invalid_stop)
            .arg(ask.invalid_window)
            .arg(ask.shape.map_or_else(String::new, |s| s.to_string()))
            .arg(match ask.waiter {
                0 => String::new(),
                w => inner.unique(w),
            })
            .arg(ask.waited);
        let reply = inner
            .call(&connection, &inv, |v| {
                script::reserve_reply(v, pending.id())
            })
            .await;
        match reply {
            Ok(reply) => {
                inner.settle(permit.succeeded(), None);
                gate(reply, pending)
            }
            Err(fault) => {
                // The call may have been applied: the pending lease releases it when dropped here.
                inner.failed(permit.failed(), &fault);
                drop(pending);
                self.fall_back(ask)
            }
        }
    }

    /// Redis could not be asked: this process decides alone.
    fn fall_back(&self, ask: Ask<'_>) -> Gate {
        let inner = &self.inner;
        inner.fallbacks.fetch_add(1, Ordering::Relaxed);
        metrics::counter!("ratelimit_client_shared_fallbacks_total").increment(1);
        let limit = match ask.global_limit {
            0 => 0,
            n => (n / inner.instances.max(1)).max(1),
        };
        match inner
            .fallback
            .lock()
            .admit(ask.token, limit, ask.global_window)
        {
            Ok(stamp) => Gate::Admit(Lease::local(self.clone(), &ask, stamp)),
            Err(wait) => Gate::Wait(wait),
        }
    }

    /// A request this process admitted alone ended: its slot is held one window from now.
    pub(super) fn local_ended(&self, token: u64, stamp: Micros) {
        self.inner.fallback.lock().ended(token, stamp);
    }

    /// Sends the response's report (in the background: the caller never waits for it).
    pub(super) fn send_report(&self, lease: &Lease, report: Report) {
        self.send_ending(lease, Ending::Reconcile(report));
    }

    /// Releases a reservation whose request ended without a response (in the background).
    pub(super) fn send_release(&self, lease: &Lease) {
        self.send_ending(lease, Ending::Release);
    }

    /// The step that ends a reservation, run on its own task.
    fn send_ending(&self, lease: &Lease, ending: Ending) {
        let budget = self.clone();
        let keys = self.inner.keys(lease.token(), lease.route_key());
        let id = lease.id().to_owned();
        let (at, counter, glimit, gwindow) = lease.reserved();
        let counter = counter.to_owned();
        spawn(async move {
            let inner = &budget.inner;
            let mut inv = inner.script.prepare_invoke();
            for k in &keys {
                inv.key(k.as_str());
            }
            match ending {
                Ending::Reconcile(report) => {
                    inner.common_args(&mut inv, "reconcile", &id, glimit, gwindow);
                    report.args(&mut inv, at, &counter);
                }
                Ending::Release => {
                    inner.common_args(&mut inv, "release", &id, glimit, gwindow);
                    inv.arg(counter);
                }
            }
            budget.finish(&inv, &id).await;
        });
    }

    /// A reconcile or release: what it carries is lost if Redis cannot be reached (the reservation then
    /// expires with its lease).
    async fn finish(&self, inv: &redis::ScriptInvocation<'_>, id: &str) {
        let inner = &self.inner;
        let Some(connection) = inner.connected() else {
            return;
        };
        let Some(permit) = inner.breaker.permit() else {
            return;
        };
        match inner
            .call(&connection, inv, |v| script::done_reply(v, id))
            .await
        {
            Ok(()) => inner.settle(permit.succeeded(), None),
            Err(fault) => inner.failed(permit.failed(), &fault),
        }
    }
}

/// What a believed reply means for the caller: the lease on an admission, or why to wait.
fn gate(reply: Reply, mut pending: Lease) -> Gate {
    let waiting = match reply {
        Reply::Admit { at, counter } => {
            pending.admitted(at, counter);
            return Gate::Admit(pending);
        }
        Reply::Wait(w) => Gate::Wait(w),
        Reply::Banned(w) => Gate::Banned(w),
        Reply::Stopped(n) => Gate::Stopped(n),
        Reply::NeedShape => Gate::NeedShape,
    };
    // Nothing was reserved: nothing to release.
    pending.disarm();
    waiting
}

/// How a reservation ends: with its response's report, or without a response.
enum Ending {
    Reconcile(Report),
    Release,
}

/// Runs `task` on the current tokio runtime, if there is one (a drop outside any runtime loses the release,
/// and the reservation expires with its lease).
fn spawn(task: impl std::future::Future<Output = ()> + Send + 'static) {
    if let Ok(rt) = tokio::runtime::Handle::try_current() {
        rt.spawn(task);
    }
}

impl Inner {
    fn next_id(&self) -> String {
        self.unique(self.next_id.fetch_add(1, Ordering::Relaxed))
    }

    /// `n` (unique in this process) made unique across the processes sharing the namespace.
    fn unique(&self, n: u64) -> String {
        let mut id = String::with_capacity(32);
        hex::push_hex(&mut id, self.nonce);
        hex::push_hex(&mut id, n);
        id
    }

    /// The eight keys every step declares (see the script).
    pub(super) fn keys(&self, token: u64, route_key: &str) -> [String; 8] {
        let p = &self.prefix;
        let tok = hex::hex16(token);
        let tok = std::str::from_utf8(&tok).unwrap_or("0");
        [
            format!("{p}g:{tok}"),
            format!("{p}lock:{tok}"),
            format!("{p}r:{route_key}"),
            format!("{p}p:{route_key}"),
            format!("{p}ban"),
            format!("{p}inv"),
            format!("{p}s:{route_key}"),
            format!("{p}gc:{tok}"),
        ]
    }

    fn common_args(
        &self,
        inv: &mut redis::ScriptInvocation<'_>,
        op: &str,
        id: &str,
        global_limit: u32,
        global_window: Micros,
    ) {
        inv.arg(op)
            .arg(id)
            .arg(self.prefix.as_str())
            .arg(global_limit)
            .arg(global_window)
            .arg(self.lease);
    }

    /// The connection, once Redis has answered.
    fn connected(&self) -> Option<Arc<Connection>> {
        self.connection.read().clone()
    }

    /// One script call on the connection in use, its reply checked by `believe`. A late reply, or one
    /// that answers another call, is evidence that the connection is out of step: it is replaced.
    async fn call<T>(
        &self,
        connection: &Arc<Connection>,
        inv: &redis::ScriptInvocation<'_>,
        believe: impl FnOnce(&Value) -> Result<T, BadReply>,
    ) -> Result<T, Fault> {
        self.calls.fetch_add(1, Ordering::Relaxed);
        metrics::counter!("ratelimit_client_shared_calls_total").increment(1);
        let Handle {
            generation,
            mut conn,
        } = connection.current();
        let result = match tokio::time::timeout(self.timeout, inv.invoke_async(&mut conn)).await {
            Ok(Ok(v)) => believe(&v).map_err(Fault::Reply),
            Ok(Err(e)) => Err(Fault::Redis(e)),
            Err(_) => Err(Fault::Timeout(self.timeout)),
        };
        match &result {
            Ok(_) => connection.in_step(generation),
            Err(Fault::Timeout(_)) => connection.out_of_step(generation, Evidence::Timeout),
            Err(Fault::Reply(BadReply::Foreign)) => {
                connection.out_of_step(generation, Evidence::ForeignReply)
            }
            Err(_) => {}
        }
        result
    }

    fn failed(&self, t: Transition, fault: &Fault) {
        self.errors.fetch_add(1, Ordering::Relaxed);
        metrics::counter!("ratelimit_client_shared_errors_total", "kind" => fault.kind())
            .increment(1);
        if let Some(unlogged) = self.logs.occurred(fault.index()) {
            tracing::warn!(
                namespace = %self.namespace,
                error = %fault,
                unlogged,
                "a shared rate-limit state call failed; this process decided alone (logged once a minute at most)"
            );
        }
        self.settle(t, Some(fault));
    }

    /// Logs a change of state, once each way.
    fn settle(&self, t: Transition, fault: Option<&Fault>) {
        match t {
            Transition::None => {}
            Transition::Opened => {
                metrics::gauge!("ratelimit_client_shared_degraded").set(1.0);
                tracing::warn!(
                    namespace = %self.namespace,
                    error = fault.map(tracing::field::display),
                    instances = self.instances,
                    "shared rate-limit state unreachable: each process now limits itself, with the global limit divided by {} instances, until Redis answers again",
                    self.instances
                );
            }
            Transition::Closed => {
                metrics::gauge!("ratelimit_client_shared_degraded").set(0.0);
                tracing::info!(namespace = %self.namespace, "shared rate-limit state reachable again");
            }
        }
    }
}
