//! A reservation held while its request is out, and what its response reports.

use std::sync::Arc;

use ratelimit_core::Micros;

use super::budget::{Ask, SharedBudget};

/// What a reservation step answered.
#[derive(Debug)]
pub(crate) enum Gate {
    /// Send now; reconcile the lease with the response (or drop it if there is none).
    Admit(Lease),
    /// Ask again in this many µs.
    Wait(Micros),
    /// The egress identity is banned for this many µs.
    Banned(Micros),
    /// The shared invalid-request budget is spent (this many in its window).
    Stopped(u64),
    /// Ask again with the request body's shape: the route has sub-limits on some shapes.
    NeedShape,
}

/// A reservation in the shared state: one global slot and, on a known route, one unit of its counter.
///
/// A guard: dropped without [`reconcile`](Lease::reconcile) (the request was cancelled, failed, or the
/// reservation call itself was dropped) it releases what it holds, in the background. The global slot is
/// then kept for one window, since the request may have reached the upstream; what the release cannot
/// reach (Redis down, the process killed) expires with the in-flight lease.
#[derive(Debug)]
pub(crate) struct Lease {
    budget: SharedBudget,
    id: String,
    token: u64,
    route_key: Arc<str>,
    counter: String,
    at: Micros,
    global_limit: u32,
    global_window: Micros,
    /// Taken through Redis (false: decided by this process while Redis was unreachable).
    armed: bool,
    /// Decided by this process alone: its slot in the process's own log, held until a window after the
    /// request ends.
    local: Option<Micros>,
}

/// What a response says, for the shared state.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Report {
    /// The counter the response describes.
    pub named: Named,
    pub limit: u64,
    pub remaining: u64,
    pub reset_after: Micros,
    /// The counter is exhausted for this long (a 429 of the route's own limit with none left).
    pub block: Micros,
    /// The resource is contended by others for this long (a shared-scope 429): every process holds off,
    /// and the request, which the upstream did not count, gives its unit back.
    pub hold: Micros,
    /// A global 429: the token stops for this long.
    pub global_lock: Micros,
    /// A ban: the egress identity stops for this long.
    pub ban: Micros,
    /// The response counts against the invalid-request budget.
    pub invalid: bool,
    pub invalid_window: Micros,
    /// How many invalid responses the log keeps (its stop threshold).
    pub invalid_keep: usize,
    /// A sub-limit refused this body shape (its fingerprint): requests of that shape wait this long.
    pub shape: u64,
    pub shape_wait: Micros,
    /// When the request left and its response was read, for releasing the counter's next window early.
    pub timing: Timing,
}

/// When a request left and when its response was read, and how early the limiter releases a window (see
/// [`Config::latency_compensation`](crate::Config::latency_compensation)).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Timing {
    /// The round trip: from the send to the response, on the limiter's clock.
    pub rtt: Micros,
    /// When the response was read; the script places the send `rtt` plus the time since then before its
    /// own clock's now (late by the call's way in: the safe direction for an early release).
    pub answered: Option<std::time::Instant>,
    /// Share, in percent, of the early release the responses justify (0: none).
    pub percent: u8,
    /// Added to every early release.
    pub margin: Micros,
}

impl Timing {
    /// µs from the send until now.
    fn sent_ago(&self) -> Micros {
        let since = self.answered.map_or(0, |a| {
            u64::try_from(a.elapsed().as_micros()).unwrap_or(Micros::MAX)
        });
        self.rtt.saturating_add(since)
    }
}

/// Which counter a response describes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) enum Named {
    /// Nothing can be learned (a server error, malformed headers).
    #[default]
    Unknown,
    /// The route has no limit of its own.
    Nothing,
    /// This counter.
    Counter(String),
}

impl Lease {
    pub(super) fn new(budget: SharedBudget, ask: &Ask<'_>, id: String) -> Lease {
        Lease {
            budget,
            id,
            token: ask.token,
            route_key: Arc::from(ask.route_key),
            counter: String::new(),
            at: 0,
            global_limit: ask.global_limit,
            global_window: ask.global_window,
            armed: true,
            local: None,
        }
    }

    pub(super) fn local(budget: SharedBudget, ask: &Ask<'_>, stamp: Option<Micros>) -> Lease {
        let mut lease = Lease::new(budget, ask, String::new());
        lease.armed = false;
        lease.local = stamp;
        lease
    }

    /// The request ended: a slot taken alone is held one window from now.
    fn end_local(&mut self) {
        if let Some(stamp) = self.local.take() {
            self.budget.local_ended(self.token, stamp);
        }
    }

    pub(super) fn admitted(&mut self, at: Micros, counter: String) {
        self.at = at;
        self.counter = counter;
    }

    pub(super) fn disarm(&mut self) {
        self.armed = false;
    }

    pub(super) fn id(&self) -> &str {
        &self.id
    }

    pub(super) fn token(&self) -> u64 {
        self.token
    }

    pub(super) fn route_key(&self) -> &str {
        &self.route_key
    }

    /// When it was reserved (server clock), the counter it drew on, and the global limit it counted in.
    pub(super) fn reserved(&self) -> (Micros, &str, u32, Micros) {
        (
            self.at,
            &self.counter,
            self.global_limit,
            self.global_window,
        )
    }

    /// The response arrived: the shared state learns from it (in the background).
    pub(crate) fn reconcile(mut self, report: Report) {
        self.end_local();
        if self.armed {
            self.armed = false;
            self.budget.send_report(&self, report);
        }
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.end_local();
        if self.armed {
            self.armed = false;
            self.budget.send_release(self);
        }
    }
}

impl Report {
    /// The reconcile step's arguments after the common ones (see the script).
    pub(super) fn args(&self, inv: &mut redis::ScriptInvocation<'_>, at: Micros, counter: &str) {
        let named = match &self.named {
            Named::Unknown => "",
            Named::Nothing => "-",
            Named::Counter(c) => c.as_str(),
        };
        inv.arg(at)
            .arg(counter)
            .arg(named)
            .arg(self.limit)
            .arg(self.remaining)
            .arg(self.reset_after)
            .arg(self.block)
            .arg(self.global_lock)
            .arg(self.ban)
            .arg(if self.invalid { "1" } else { "0" })
            .arg(self.invalid_window)
            .arg(self.invalid_keep)
            .arg(self.hold)
            .arg(self.shape)
            .arg(self.shape_wait)
            .arg(self.timing.sent_ago())
            .arg(self.timing.rtt)
            .arg(self.timing.percent)
            .arg(self.timing.margin);
    }
}
