//! The scheduler's state machine: synchronous, clock-free (time is passed in), and therefore testable
//! step by step with a manual clock.
//!
//! Model. A *route* is `token × route key × major`; it owns the FIFO queues (one per lane) of requests
//! waiting for it. A *counter* is one upstream limit for one major: keyed by bucket hash when routes share
//! it, or by route when a route is known to keep its own count under a shared hash. A route links to the
//! counters its responses named. A request is admitted when it is at the head of its route's queue, the
//! token's global limit has room, and every linked counter has `avail > 0`:
//!
//! * `avail` is what may still be *sent* in the current window. Admission decrements it. A response in the
//!   same window lowers it to `remaining − in_flight` when that is smaller (the header already counts this
//!   request; requests still in flight may or may not have been counted, so they are assumed counted). It
//!   never rises inside a window, so out-of-order responses and layered limits only make it safer.
//! * The window ends, on our monotonic clock, no later than the largest `receive time + Reset-After` of
//!   its responses (late by the response's way back, never early). Its requests are released a little
//!   before that, so that they *arrive* at the upstream's reset: each response also bounds the reset from
//!   below (`send time + Reset-After`), and [`Evidence`] says how far ahead the two bounds justify sending.
//!   At that point `avail` returns to the limit, minus requests still in flight, and waiters are released
//!   one by one, FIFO, each admission waking the next head only while `avail` lasts.
//! * An unknown route sends one probe and holds the rest until it answers.

use std::collections::VecDeque;
use std::sync::Arc;

type HashMap<K, V> = hashbrown::HashMap<K, V, foldhash::fast::RandomState>;
type HashSet<K> = hashbrown::HashSet<K, foldhash::fast::RandomState>;

/// Responses needed before latency compensation applies.
const RTT_SAMPLES: u64 = 8;
use ratelimit_core::Micros;
use tokio::sync::Notify;

use super::config::Config;
use crate::error::Error;
use crate::parse::micros;
use crate::profile::{BucketInfo, Lane, Observation, Scope};

pub(crate) type WaiterId = u64;

/// The waiter id of a request that is not queued: it may be admitted only if nobody is waiting.
pub(crate) const FAST_PATH: WaiterId = 0;

/// What the caller knows about one request when it asks to be admitted.
#[derive(Debug, Clone)]
pub(crate) struct Ticket {
    /// `token|template|major`; the template and the major are slices of it (one allocation per request,
    /// not three: the route's own copies are made only when the route is new).
    pub route_key: Arc<str>,
    template: std::ops::Range<usize>,
    pub token: u64,
    pub lane: Lane,
    pub global_exempt: bool,
    pub fingerprint: u64,
    /// Arrival order of the call (kept across its retries): global slots go to the oldest waiting call,
    /// unless a younger one's route has more than one global window more work queued (see [`projected`]).
    pub seq: u64,
}

impl Ticket {
    /// A ticket for `template` and `major` under `token`; the key is built in one exact-size allocation.
    /// Both are bounded in bytes first (a long template keeps a readable prefix, a long major becomes a
    /// digest), so that no request path can make a route key, and the maps keyed by it, grow without bound.
    pub(crate) fn new(token: u64, template: &str, major: &str, lane: Lane, seq: u64) -> Ticket {
        let template = crate::parse::bounded_template(template);
        let major = crate::parse::bounded_name(major);
        let (template, major) = (&*template, &*major);
        let (start, end) = (17, 17 + template.len());
        let len = end + 1 + major.len();
        // Assembled on the stack and copied once into the `Arc` (a `String` would be a second allocation).
        let mut buf = [0u8; 256];
        let on_stack = buf.get_mut(..len).and_then(|b| {
            let (hex, rest) = b.split_at_mut(16);
            hex.copy_from_slice(&crate::profile::discord::hex16(token));
            let (bar, rest) = rest.split_at_mut(1);
            bar[0] = b'|';
            let (tpl, rest) = rest.split_at_mut(template.len());
            tpl.copy_from_slice(template.as_bytes());
            rest[0] = b'|';
            rest[1..].copy_from_slice(major.as_bytes());
            std::str::from_utf8(b).ok().map(Arc::<str>::from)
        });
        let route_key = on_stack.unwrap_or_else(|| {
            let mut key = String::with_capacity(len);
            crate::profile::discord::push_hex(&mut key, token);
            key.push('|');
            key.push_str(template);
            key.push('|');
            key.push_str(major);
            key.into()
        });
        Ticket {
            route_key,
            template: start..end,
            token,
            lane,
            global_exempt: false,
            fingerprint: 0,
            seq,
        }
    }

    /// The route template (method and path shape).
    pub(crate) fn template(&self) -> &str {
        self.route_key.get(self.template.clone()).unwrap_or("")
    }

    /// The major parameter.
    pub(crate) fn major(&self) -> &str {
        self.route_key.get(self.template.end + 1..).unwrap_or("")
    }
}

/// The bookkeeping for an admitted, in-flight request.
#[derive(Debug, Clone)]
pub(crate) struct Grant {
    pub route_key: Arc<str>,
    pub token: u64,
    pub counters: Vec<GrantCounter>,
    pub probe: bool,
    pub ban_probe: bool,
    pub global: bool,
    pub sent_at: Micros,
}

#[derive(Debug, Clone)]
pub(crate) struct GrantCounter {
    key: Arc<str>,
    window: u64,
    done_at_send: u32,
    first_half: bool,
    /// Admission sequence on this counter, to tell the newest response from older ones.
    seq: u64,
}

/// The result of one admission attempt.
#[derive(Debug)]
pub(crate) enum Step {
    Admit(Grant),
    /// Wait until `until` (or until notified, when `None`), then try again.
    Wait {
        until: Option<Micros>,
        bucket: String,
    },
    /// A sub-limit holds this request's fingerprint: it has left the queue; wait, then enqueue again.
    Sublimit,
    Fail(Error),
}

/// What to do after a response.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Hand the response to the caller.
    Done,
    /// A limit: retry (the scheduler's state already holds the wait).
    RetryLimit,
    /// A transient server error: retry after a backoff.
    RetryError,
    /// Stop: return this error instead of the response.
    Fail(ErrorKind),
}

/// Errors a verdict can carry (an `Error` is not `PartialEq`).
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum ErrorKind {
    Banned(Micros),
}

/// What the responses of one window say about when it resets, on our monotonic clock.
///
/// The upstream counts a request at some moment `a` between our send `s` and our receipt `r` of its
/// response, and reports `Reset-After` = `R − a` for the window's reset `R`. So every response bounds the
/// reset from both sides: `s + Reset-After ≤ R ≤ r + Reset-After`. How a round trip splits between the way
/// in and the way back cannot be observed (that would need synchronised clocks), and the release rule below
/// does not depend on it.
///
/// A request of the next window must *arrive* at `R` or later. Sent at `t`, it arrives at `t + in`, where
/// `in` is its way in. The rule sends it at the later of two moments, each safe under its own assumption,
/// so it is safe when *either* assumption holds:
///
/// * (a) `max(s + Reset-After)`, plus an allowance of the spread of those values divided by the number of
///   responses. The maximum belongs to the response whose way in was the shortest relative to the reset;
///   a request sent that long before the reset arrives at it if its own way in is not shorter (by more than
///   the allowance) than the shortest seen in the window. This is a statement about the *jitter* of the way
///   in, which the responses measure (their `s + Reset-After` differ exactly by the differences of their
///   ways in), not about asymmetry.
/// * (b) `min(r + Reset-After) − smallest round trip seen`: safe if the next request's way in plus the
///   shortest way back in this window is no shorter than the smallest round trip ever seen.
///
/// A configurable margin is added, the share of the time taken off can be lowered
/// ([`Config::latency_compensation`]), and the release is never later than the largest `r + Reset-After`
/// (safe with no assumption at all). On a fixed window every response names the same `R`, so the bounds
/// all overlap and the smallest upper end is used; when they do not overlap (a leaky bucket, whose reset
/// moves with every request) the largest upper end is used instead.
#[derive(Debug, Clone, Copy)]
struct Evidence {
    /// Responses read in this window.
    n: u32,
    /// The largest and smallest `send + Reset-After`.
    max_lo: Micros,
    min_lo: Micros,
    /// The smallest `receive + Reset-After`.
    min_hi: Micros,
}

impl Evidence {
    const NONE: Evidence = Evidence {
        n: 0,
        max_lo: 0,
        min_lo: Micros::MAX,
        min_hi: Micros::MAX,
    };

    fn add(&mut self, sent: Micros, received: Micros, reset_after: Micros) {
        let (lo, hi) = (
            sent.saturating_add(reset_after),
            received.saturating_add(reset_after),
        );
        self.n = self.n.saturating_add(1);
        self.max_lo = self.max_lo.max(lo);
        self.min_lo = self.min_lo.min(lo);
        self.min_hi = self.min_hi.min(hi);
    }
}

/// The parameters of early release (see [`Evidence`]).
#[derive(Debug, Clone, Copy)]
struct Early {
    rtt_min: Option<Micros>,
    percent: u8,
    margin: Micros,
}

#[derive(Debug)]
struct Counter {
    hash: Option<Arc<str>>,
    limit: u64,
    avail: u64,
    in_flight: u32,
    cur_in_flight: u32,
    window: u64,
    rolled_at: Micros,
    /// When the window ends at the latest: the largest `receive + Reset-After` of its responses (or a 429's
    /// wait). Valid whatever the window's kind, with no assumption about latency.
    reset_at: Option<Micros>,
    /// What the window's responses say about its reset, for releasing the next window early.
    evidence: Evidence,
    period: Micros,
    blocked_until: Micros,
    probe_next: bool,
    done: u32,
    routes: Vec<Arc<str>>,
    last_used: Micros,
    /// Admissions so far, and the newest admission whose response has been applied.
    sent_seq: u64,
    applied_seq: u64,
    /// The smallest `Remaining` reported in this window. Within a window the upstream's count only grows, so
    /// the response with the smallest value was counted last among those answered: every answered request
    /// that was counted is in it, and `min_remaining − in_flight − lost` is what may still be sent (requests
    /// in flight may or may not have been counted).
    min_remaining: u64,
    /// Requests of this window that failed without a response (they may have been counted).
    lost: u32,
    /// The previous window's reset at the latest (0 if unknown), to tell its late responses from the new
    /// window's.
    prev_upper: Micros,
}

impl Counter {
    /// A counter learned from a response to a request admitted at `sent` and read at `now`.
    fn new(hash: Option<Arc<str>>, b: &BucketInfo, sent: Micros, now: Micros) -> Self {
        let mut evidence = Evidence::NONE;
        evidence.add(sent, now, b.reset_after);
        Counter {
            hash,
            limit: b.limit,
            avail: b.remaining,
            in_flight: 0,
            cur_in_flight: 0,
            window: 0,
            rolled_at: now,
            reset_at: Some(now.saturating_add(b.reset_after)),
            evidence,
            period: b.reset_after,
            blocked_until: 0,
            probe_next: false,
            done: 1,
            routes: Vec::new(),
            last_used: now,
            sent_seq: 0,
            applied_seq: 0,
            min_remaining: b.remaining,
            lost: 0,
            prev_upper: 0,
        }
    }

    /// When requests of the next window may leave: see [`Evidence`] for the reasoning. Never later than
    /// `reset_at`.
    /// When the window ends at the latest. One fixed reset: every response's interval [send, receive] +
    /// Reset-After contains it, so they all overlap (1 ms of slack for the header's rounding) and the
    /// smallest upper end bounds it. Otherwise (a moving reset: a leaky bucket, or a window opened anew) only
    /// the largest upper end does.
    fn upper(&self) -> Option<Micros> {
        let r = self.reset_at?;
        let ev = &self.evidence;
        let fixed = ev.n > 0 && ev.max_lo <= ev.min_hi.saturating_add(1_000);
        Some(if fixed { ev.min_hi.min(r) } else { r })
    }

    fn release_at(&self, early: &Early) -> Option<Micros> {
        let r = self.reset_at?;
        let ev = &self.evidence;
        let Some(rtt) = early.rtt_min.filter(|_| ev.n > 0 && early.percent > 0) else {
            return Some(r);
        };
        let upper = self.upper().unwrap_or(r);
        // (a) The request that was counted latest relative to its send (the fastest way in) tells how early
        // to send: a request leaving at `max_lo` arrives at the reset if its way in is no faster. The
        // allowance covers a new request beating the fastest of `n` seen (about the spread over `n`).
        let allowance = (ev.max_lo - ev.min_lo) / u64::from(ev.n);
        let by_way_in = ev.max_lo.saturating_add(allowance);
        // (b) The fastest way back seen (the smallest upper end) plus the next way in is no shorter than the
        // smallest round trip seen.
        let by_round_trip = upper.saturating_sub(rtt);
        tracing::trace!(
            n = ev.n,
            rtt,
            allowance,
            way_in_before_upper = upper as i64 - by_way_in as i64,
            round_trip_before_upper = upper as i64 - by_round_trip as i64,
            "release estimate"
        );
        let take = upper
            .saturating_sub(by_way_in.max(by_round_trip))
            .saturating_mul(u64::from(early.percent))
            / 100;
        Some(
            upper
                .saturating_sub(take)
                .saturating_add(early.margin)
                .min(r),
        )
    }

    /// Opens a new window when the current one has ended; guards against a window with no known end.
    fn roll(&mut self, now: Micros, early: &Early) {
        match self.release_at(early) {
            Some(release) if now >= release => {
                self.prev_upper = self.upper().unwrap_or(0);
                self.window += 1;
                self.rolled_at = now;
                let fresh = if self.probe_next {
                    self.limit.min(1)
                } else {
                    self.limit
                };
                self.avail = fresh.saturating_sub(u64::from(self.in_flight));
                self.min_remaining = self.limit;
                self.lost = 0;
                self.probe_next = false;
                self.reset_at = None;
                self.evidence = Evidence::NONE;
                self.cur_in_flight = 0;
                self.done = 0;
            }
            None if self.avail == 0 && self.in_flight == 0 => {
                // Everything sent in this window failed without telling us when it ends.
                self.reset_at = Some(now.saturating_add(self.period.max(1_000)));
            }
            _ => {}
        }
    }

    fn idle(&self, now: Micros) -> bool {
        self.in_flight == 0 && self.reset_at.is_none_or(|r| r <= now) && self.blocked_until <= now
    }
}

#[derive(Debug)]
struct RouteState {
    token: u64,
    template: Arc<str>,
    major: Arc<str>,
    counters: Vec<Arc<str>>,
    unlimited: bool,
    probe_in_flight: bool,
    blocked_until: Micros,
    queue: [VecDeque<(WaiterId, Arc<Notify>)>; Lane::COUNT],
    sublimits: Vec<(u64, Micros)>,
    last_used: Micros,
    /// This route's entry in its token's global reservations.
    reserve: Option<u64>,
}

impl RouteState {
    fn head(&self) -> Option<&(WaiterId, Arc<Notify>)> {
        self.queue.iter().find_map(|q| q.front())
    }

    fn queued(&self) -> usize {
        self.queue.iter().map(VecDeque::len).sum()
    }

    fn wake_head(&self) {
        if let Some((_, n)) = self.head() {
            n.notify_one();
        }
    }

    fn remove(&mut self, id: WaiterId) -> bool {
        for q in &mut self.queue {
            if let Some(pos) = q.iter().position(|w| w.0 == id) {
                q.remove(pos);
                return true;
            }
        }
        false
    }
}

/// The global limit of one token, exact whatever the latency: the upstream counts a request at some
/// unknown moment between our send and its response, so a request occupies a slot from its admission
/// until one window after its response (or failure). Then no upstream window of that length can hold more
/// than N of our requests: if the last of N+1 was admitted at `s`, every earlier one had either not been
/// answered by `s` or was answered after `s − window`, so all N occupied slots at `s`.
#[derive(Debug, Default)]
struct TokenState {
    in_flight: u32,
    done: VecDeque<Micros>,
    /// Route heads ready but for the global limit, by call arrival order (FIFO across routes).
    /// Each with its route's projected finish (see [`projected`]).
    waiting: std::collections::BTreeMap<u64, (WaiterId, Arc<Notify>, Micros)>,
    /// Global slots set aside for routes whose bucket is about to reset (keyed by their head call's arrival
    /// order): a call does not take a slot that a route further from finishing will need before it frees.
    reserved: std::collections::BTreeMap<u64, Reservation>,
    /// Calls held back by reservations, and since when: none is held back longer than one global window.
    held: HashMap<u64, Micros>,
    locked_until: Micros,
    disabled: bool,
}

impl TokenState {
    fn leave(&mut self, id: WaiterId) {
        let before = self.waiting.len();
        self.waiting.retain(|_, w| w.0 != id);
        if self.waiting.len() != before {
            self.wake_first();
        }
    }

    fn wake_first(&self) {
        if let Some((_, (_, n, _))) = self.waiting.first_key_value() {
            n.notify_one();
        }
    }

    fn used(&mut self, now: Micros, window: Micros) -> u64 {
        while self
            .done
            .front()
            .is_some_and(|&t| t.saturating_add(window) <= now)
        {
            self.done.pop_front();
        }
        u64::from(self.in_flight) + self.done.len() as u64
    }
}

/// Global slots a route will need when its bucket resets.
#[derive(Debug, Clone, Copy)]
struct Reservation {
    ready_at: Micros,
    count: u32,
    /// When the route's queue could be done at the earliest, its bucket allowing: routes that will take
    /// longest go first (the longest-remaining-work rule, which shortens the whole run).
    finish: Micros,
}

/// Reservations looked at per admission at most (the scan stays cheap with long backlogs).
const RESERVATION_SCAN: usize = 256;

/// When a route's queue could be done at the earliest if it may start at `from`: one window of its
/// tightest counter per `limit` requests queued, after the first.
fn projected(route: &RouteState, counters: &HashMap<Arc<str>, Counter>, from: Micros) -> Micros {
    let queued = route.queued().max(1) as u64;
    route
        .counters
        .iter()
        .filter_map(|k| counters.get(k))
        .map(|c| {
            let windows = queued.div_ceil(c.limit.max(1)) - 1;
            from.saturating_add(c.period.saturating_mul(windows))
        })
        .max()
        .unwrap_or(from)
}

#[derive(Debug, Default)]
struct Ban {
    active: bool,
    until: Micros,
    backoff: Micros,
    probe_in_flight: bool,
}

/// A bucket as the status snapshot shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct BucketStatus {
    /// The counter's key (`token|#hash|major` or `token|=route|major`).
    pub key: String,
    /// The upstream's hash for it, if known.
    pub hash: Option<String>,
    /// The upstream limit per window.
    pub limit: u64,
    /// Requests that may still be sent in this window.
    pub available: u64,
    /// Requests in flight.
    pub in_flight: u32,
    /// Microseconds until the window resets, if known.
    pub reset_in: Option<Micros>,
    /// Routes linked to this counter.
    pub routes: Vec<String>,
}

/// A route as the status snapshot shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct RouteStatus {
    /// The route key (method and template).
    pub route: String,
    /// The major parameter.
    pub major: String,
    /// Requests waiting in its queues.
    pub queued: usize,
    /// Whether the route was found to have no per-route limit.
    pub unlimited: bool,
    /// Active sub-limits on this route.
    pub sublimits: usize,
}

/// A point-in-time view of the scheduler, for dashboards and debugging.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Snapshot {
    /// Known counters.
    pub buckets: Vec<BucketStatus>,
    /// Known routes.
    pub routes: Vec<RouteStatus>,
    /// Requests sent under the global limit in the last window, per token digest.
    pub global_used: Vec<(u64, u64)>,
    /// Tokens stopped after a 401.
    pub disabled_tokens: usize,
    /// Invalid responses counted in the current window.
    pub invalid_requests: usize,
    /// Time until the ban probe, when a ban is active.
    pub banned_for: Option<Micros>,
}

/// What requests in progress hold in the scheduler: in-flight counts, queue positions, global-slot waits
/// and reservations, probes. All zero when no request is in progress, so a test (or a health check) can
/// tell that a cancelled request left nothing behind.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Occupancy {
    /// Admissions in flight, summed over counters (one request counts once per counter it draws on).
    pub in_flight: u64,
    /// Admissions in flight under the global limit, summed over tokens.
    pub global_in_flight: u64,
    /// Requests queued on routes.
    pub queued: usize,
    /// Queue heads waiting for a global slot.
    pub global_waiting: usize,
    /// Global slots set aside for routes (reservations), and routes holding one.
    pub global_reserved: usize,
    /// Calls held back by a reservation.
    pub held: usize,
    /// Probes in flight: on unknown routes, and the ban probe.
    pub probes_in_flight: usize,
}

impl Occupancy {
    /// True when nothing is held: no request is admitted, queued or waiting.
    ///
    /// ```
    /// use ratelimit_client::{profile::Discord, Limiter};
    /// assert!(Limiter::new(Discord::new()).occupancy().is_idle());
    /// ```
    pub fn is_idle(&self) -> bool {
        *self == Occupancy::default()
    }
}

/// The bucket cap's two situations, each logged once per limiter.
#[derive(Debug, Default)]
struct CapLogged {
    evicted_active: bool,
    untracked: bool,
}

pub(crate) struct Core {
    cfg: Config,
    /// Global window (window + margin) in microseconds.
    global_window: Micros,
    /// Smallest round trip seen, and how many were seen, for latency compensation.
    min_rtt: Micros,
    rtt_samples: u64,
    tokens: HashMap<u64, TokenState>,
    routes: HashMap<Arc<str>, RouteState>,
    counters: HashMap<Arc<str>, Counter>,
    /// `(hash, route template)` pairs known to keep their own counter under a shared hash (at most
    /// `max_buckets`).
    own_counter: HashSet<(Arc<str>, Arc<str>)>,
    /// What the bucket cap already logged (once each).
    cap_logged: CapLogged,
    invalid: VecDeque<Micros>,
    invalid_level: u8,
    ban: Ban,
    next_waiter: WaiterId,
    /// Requests queued on all routes: when none is, waking queue heads is skipped without any lookup.
    queued: usize,
}

impl Core {
    pub(crate) fn new(cfg: Config) -> Self {
        Core {
            global_window: cfg.global_window.saturating_add(cfg.global_margin),
            min_rtt: Micros::MAX,
            rtt_samples: 0,
            cfg,
            tokens: HashMap::default(),
            routes: HashMap::default(),
            counters: HashMap::default(),
            own_counter: HashSet::default(),
            cap_logged: CapLogged::default(),
            invalid: VecDeque::new(),
            invalid_level: 0,
            ban: Ban::default(),
            next_waiter: 0,
            queued: 0,
        }
    }

    fn token(&mut self, token: u64) -> &mut TokenState {
        self.tokens.entry(token).or_default()
    }

    /// Whether the route exists and has no sub-limit recorded (active or expired).
    pub(crate) fn is_plain_route(&self, route_key: &str) -> bool {
        self.routes
            .get(route_key)
            .is_some_and(|r| r.sublimits.is_empty())
    }

    /// Whether a route has active sub-limits (so the caller should compute a body fingerprint).
    pub(crate) fn has_sublimits(&self, route_key: &str, now: Micros) -> bool {
        self.routes
            .get(route_key)
            .is_some_and(|r| r.sublimits.iter().any(|s| s.1 > now))
    }

    /// Until when a sub-limit holds requests with this fingerprint.
    pub(crate) fn sublimit_until(&self, t: &Ticket, now: Micros) -> Option<Micros> {
        let r = self.routes.get(&t.route_key)?;
        r.sublimits
            .iter()
            .filter(|s| s.0 == t.fingerprint && s.1 > now)
            .map(|s| s.1)
            .max()
    }

    /// Creates the route's state if it is new.
    pub(crate) fn ensure_route(&mut self, t: &Ticket, now: Micros) {
        if !self.routes.contains_key(&t.route_key) {
            self.evict_routes(now);
            let counters = self.link_known(t);
            self.routes.insert(
                t.route_key.clone(),
                RouteState {
                    token: t.token,
                    template: t.template().into(),
                    major: t.major().into(),
                    counters,
                    unlimited: false,
                    probe_in_flight: false,
                    blocked_until: 0,
                    queue: Default::default(),
                    sublimits: Vec::new(),
                    last_used: now,
                    reserve: None,
                },
            );
        }
    }

    /// Puts a request at the back of its route's lane.
    pub(crate) fn enqueue(&mut self, t: &Ticket, notify: Arc<Notify>, now: Micros) -> WaiterId {
        self.next_waiter += 1;
        let id = self.next_waiter;
        self.ensure_route(t, now);
        if let Some(r) = self.routes.get_mut(&t.route_key) {
            r.queue[t.lane.index()].push_back((id, notify));
            self.queued += 1;
            r.last_used = now;
        }
        id
    }

    /// A new route whose template is known to use a hash for which this major already has a counter is
    /// linked at once, without a probe (the counter's state already covers it).
    fn link_known(&mut self, t: &Ticket) -> Vec<Arc<str>> {
        let template: Arc<str> = t.template().into();
        let linked: Vec<Arc<str>> = self
            .routes
            .values()
            .filter(|r| &*r.template == t.template() && r.token == t.token)
            .flat_map(|r| r.counters.iter())
            .filter_map(|k| self.counters.get(k).and_then(|c| c.hash.clone()))
            .filter_map(|h| {
                let key = self.counter_key(t.token, &h, &template, t.major());
                self.counters.contains_key(&key).then_some(key)
            })
            .take(1)
            .collect();
        for k in &linked {
            if let Some(c) = self.counters.get_mut(k) {
                c.routes.push(t.route_key.clone());
            }
        }
        linked
    }

    fn counter_key(
        &self,
        token: u64,
        hash: &Arc<str>,
        template: &Arc<str>,
        major: &str,
    ) -> Arc<str> {
        if self.own_counter.contains(&(hash.clone(), template.clone())) {
            format!("{token:016x}|={template}|{major}").into()
        } else {
            format!("{token:016x}|#{hash}|{major}").into()
        }
    }

    /// Removes a waiter that gave up (deadline, cancellation) and wakes the next head if it was first.
    pub(crate) fn cancel(&mut self, route_key: &str, id: WaiterId) {
        if let Some(token) = self.routes.get(route_key).map(|r| r.token) {
            self.token(token).leave(id);
        }
        if let Some(r) = self.routes.get_mut(route_key) {
            let was_head = r.head().is_some_and(|h| h.0 == id);
            if r.remove(id) {
                self.queued -= 1;
            }
            if was_head {
                r.wake_head();
            }
            if r.queued() == 0 {
                if let (Some(k), Some(ts)) = (r.reserve.take(), self.tokens.get_mut(&r.token)) {
                    ts.reserved.remove(&k);
                }
            }
        }
    }

    /// Forgets a call that stopped waiting without an admission: it no longer waits for a global slot nor
    /// is held back by a reservation (its queue position, if any, goes through [`Core::cancel`]).
    pub(crate) fn forget_call(&mut self, t: &Ticket) {
        if let Some(ts) = self.tokens.get_mut(&t.token) {
            if ts.waiting.remove(&t.seq).is_some() {
                ts.wake_first();
            }
            ts.held.remove(&t.seq);
        }
    }

    fn invalid_count(&mut self, now: Micros) -> usize {
        let window = self.cfg.invalid.window;
        while self
            .invalid
            .front()
            .is_some_and(|&t| t.saturating_add(window) <= now)
        {
            self.invalid.pop_front();
        }
        self.invalid.len()
    }

    /// One admission attempt for waiter `id`.
    pub(crate) fn try_admit(&mut self, id: WaiterId, t: &Ticket, now: Micros) -> Step {
        let early = self.early();
        if self.tokens.get(&t.token).is_some_and(|s| s.disabled) {
            return Step::Fail(Error::Unauthorized);
        }
        let mut ban_probe = false;
        if self.ban.active {
            if now < self.ban.until || self.ban.probe_in_flight {
                return Step::Fail(Error::Banned {
                    retry_in: micros(self.ban.until.saturating_sub(now)),
                });
            }
            ban_probe = true;
        }
        let count = self.invalid_count(now);
        if count >= self.cfg.invalid.stop {
            return Step::Fail(Error::InvalidBudget { count });
        }
        if count >= self.cfg.invalid.shed && t.lane != Lane::Urgent {
            return Step::Fail(Error::Shed { count });
        }
        let Some(route) = self.routes.get_mut(&t.route_key) else {
            return Step::Wait {
                until: Some(now),
                bucket: t.route_key.to_string(),
            };
        };
        if route
            .sublimits
            .iter()
            .any(|s| s.0 == t.fingerprint && s.1 > now)
        {
            if route.remove(id) {
                self.queued -= 1;
            }
            route.wake_head();
            return Step::Sublimit;
        }
        let not_first = if id == FAST_PATH {
            route.queued() > 0
        } else {
            route.head().is_none_or(|h| h.0 != id)
        };
        if not_first {
            return Step::Wait {
                until: None,
                bucket: t.route_key.to_string(),
            };
        }
        if route.blocked_until > now {
            return Step::Wait {
                until: Some(route.blocked_until),
                bucket: t.route_key.to_string(),
            };
        }
        // The route's counters.
        let mut wait: Option<(Option<Micros>, String)> = None;
        let probe = !route.unlimited && route.counters.is_empty();
        if probe && route.probe_in_flight {
            return Step::Wait {
                until: None,
                bucket: format!("{} (probing)", t.route_key),
            };
        }
        for key in &route.counters {
            let Some(c) = self.counters.get_mut(key) else {
                continue;
            };
            c.roll(now, &early);
            let w = if c.blocked_until > now {
                Some(Some(c.blocked_until))
            } else if c.avail == 0 {
                Some(c.release_at(&early))
            } else {
                None
            };
            if let Some(until) = w {
                let later = match (&wait, until) {
                    (None, _) => true,
                    (Some((Some(a), _)), Some(b)) => b > *a,
                    (Some((None, _)), Some(_)) => true,
                    _ => false,
                };
                if later {
                    wait = Some((until, key.to_string()));
                }
            }
        }
        if let Some((until, bucket)) = wait {
            if let Some(ts) = self.tokens.get_mut(&t.token) {
                ts.leave(id);
            }
            if let (Some(ready_at), false, Some(_), false) = (
                until,
                t.global_exempt,
                self.cfg.global_limit,
                id == FAST_PATH,
            ) {
                self.reserve(t, ready_at, now);
            }
            return Step::Wait { until, bucket };
        }
        // The token's global limit, checked last so that its slots are only spent on admissions.
        if !t.global_exempt {
            let (limit, window) = (self.cfg.global_limit, self.global_window);
            let ts = self.token(t.token);
            if ts.locked_until > now {
                return Step::Wait {
                    until: Some(ts.locked_until),
                    bucket: "global".into(),
                };
            }
            if let Some(n) = limit {
                // The head's notifier is only needed to register a waiter: looked up then, not on every admission.
                let routes = &self.routes;
                let counters = &self.counters;
                let notify = || {
                    routes
                        .get(&t.route_key)
                        .and_then(|r| r.head().map(|h| h.1.clone()))
                };
                let ts = self.tokens.entry(t.token).or_default();
                // This route's reservation and projected finish: looked up only when others wait or reserve.
                let (own, own_finish) = if ts.waiting.is_empty() && ts.reserved.is_empty() {
                    (None, now)
                } else {
                    routes
                        .get(&t.route_key)
                        .map_or((None, now), |r| (r.reserve, projected(r, counters, now)))
                };
                if ts.used(now, window) >= u64::from(n) {
                    if let Some(notify) = notify() {
                        let finish = routes
                            .get(&t.route_key)
                            .map_or(now, |r| projected(r, counters, now));
                        ts.waiting.insert(t.seq, (id, notify, finish));
                    }
                    // The earliest a slot can free is one window after the oldest answered request, or one
                    // window from now if all are still in flight.
                    let until = ts.done.front().map_or(now, |&t| t).saturating_add(window);
                    return Step::Wait {
                        until: Some(until.max(now + 1)),
                        bucket: "global".into(),
                    };
                }
                // An older call waiting for a global slot gets this one, unless this route has more than a
                // window more work ahead of it (then it would end the run last if it waited its turn).
                if ts
                    .waiting
                    .range(..t.seq)
                    .take(RESERVATION_SCAN)
                    .any(|(_, w)| w.0 != id && w.2.saturating_add(window) >= own_finish)
                {
                    // Poll again shortly in case it has gone.
                    if let Some(notify) = notify() {
                        ts.waiting.insert(t.seq, (id, notify, own_finish));
                    }
                    ts.wake_first();
                    return Step::Wait {
                        until: Some(now + 2_000),
                        bucket: "global".into(),
                    };
                }
                // Routes further from finishing whose buckets reset before a slot taken now would free keep
                // theirs (only while the global limit is what binds; the slots are not held otherwise).
                let used = ts.used(now, window);
                let mut reserved = 0u64;
                let mut earliest = Micros::MAX;
                let held_since = ts.held.get(&t.seq).copied().unwrap_or(now);
                let patient = held_since.saturating_add(window) > now;
                for (k, r) in ts
                    .reserved
                    .iter()
                    .take(if patient { RESERVATION_SCAN } else { 0 })
                {
                    let stale = r.ready_at.saturating_add(window) < now;
                    let ahead = r.finish > own_finish || (r.finish == own_finish && *k < t.seq);
                    if Some(*k) == own || !ahead || stale || r.ready_at > now.saturating_add(window)
                    {
                        continue;
                    }
                    reserved += u64::from(r.count);
                    earliest = earliest.min(r.ready_at);
                    if used + reserved >= u64::from(n) {
                        break;
                    }
                }
                if used + reserved >= u64::from(n) {
                    // Not queued for a global slot (that queue is FIFO and would hold back routes ahead of
                    // this one): it looks again when the reservation or a slot may have cleared.
                    if ts.held.len() > 1024 {
                        ts.held
                            .retain(|_, since| since.saturating_add(4 * window) > now);
                    }
                    ts.held.entry(t.seq).or_insert(now);
                    let free = ts.done.front().map_or(now, |&t| t).saturating_add(window);
                    return Step::Wait {
                        until: Some(
                            earliest
                                .min(free)
                                .min(held_since.saturating_add(window))
                                .max(now + 1_000),
                        ),
                        bucket: "global (reserved for older requests)".into(),
                    };
                }
                ts.waiting.remove(&t.seq);
                if !ts.held.is_empty() {
                    ts.held.remove(&t.seq);
                }
                ts.in_flight += 1;
                let used = ts.used(now, window);
                metrics::gauge!("ratelimit_client_global_used").set(used as f64 / f64::from(n));
                if used < u64::from(n) {
                    ts.wake_first();
                }
            }
        }
        // Admit.
        let Some(route) = self.routes.get_mut(&t.route_key) else {
            return Step::Wait {
                until: Some(now),
                bucket: t.route_key.to_string(),
            };
        };
        if route.remove(id) {
            self.queued -= 1;
        }
        route.wake_head();
        route.last_used = now;
        if probe {
            route.probe_in_flight = true;
        }
        if let Some(k) = route.reserve {
            if let Some(ts) = self.tokens.get_mut(&t.token) {
                let left = ts.reserved.get_mut(&k).map(|r| {
                    r.count = r.count.saturating_sub(1);
                    r.count
                });
                if left.unwrap_or(0) == 0 || route.queued() == 0 {
                    ts.reserved.remove(&k);
                    route.reserve = None;
                }
            }
        }
        let mut counters = Vec::with_capacity(route.counters.len());
        for key in &route.counters {
            if let Some(c) = self.counters.get_mut(key) {
                c.avail -= 1;
                c.in_flight += 1;
                c.cur_in_flight += 1;
                c.last_used = now;
                let first_half = c
                    .reset_at
                    .is_some_and(|r| now.saturating_add(c.period / 2) < r);
                c.sent_seq += 1;
                counters.push(GrantCounter {
                    key: key.clone(),
                    window: c.window,
                    done_at_send: c.done,
                    first_half,
                    seq: c.sent_seq,
                });
            }
        }
        if ban_probe {
            self.ban.probe_in_flight = true;
        }
        Step::Admit(Grant {
            route_key: t.route_key.clone(),
            token: t.token,
            counters,
            probe,
            ban_probe,
            global: !t.global_exempt && self.cfg.global_limit.is_some(),
            sent_at: now,
        })
    }

    /// Sets global slots aside for a route head waiting for its bucket until `ready_at`: as many as will go
    /// then (the queue, up to the smallest limit of the route's counters).
    fn reserve(&mut self, t: &Ticket, ready_at: Micros, now: Micros) {
        let window = self.global_window;
        let Some(route) = self.routes.get_mut(&t.route_key) else {
            return;
        };
        let limit = route
            .counters
            .iter()
            .filter_map(|k| self.counters.get(k))
            .map(|c| c.limit)
            .min()
            .unwrap_or(1);
        let count = u32::try_from(limit.min(route.queued() as u64)).unwrap_or(u32::MAX);
        let finish = projected(route, &self.counters, ready_at);
        let key = *route.reserve.get_or_insert(t.seq);
        let ts = self.tokens.entry(t.token).or_default();
        if ts.reserved.len() > 64 {
            ts.reserved
                .retain(|_, r| r.ready_at.saturating_add(window) >= now);
        }
        ts.reserved.insert(
            key,
            Reservation {
                ready_at,
                count,
                finish,
            },
        );
    }

    /// Releases what a grant held when no response was read (connection error, cancellation).
    pub(crate) fn fail(&mut self, g: &Grant, now: Micros) {
        self.release(g, now);
        let early = self.early();
        if g.probe {
            if let Some(r) = self.routes.get_mut(&g.route_key) {
                r.probe_in_flight = false;
            }
        }
        for gc in &g.counters {
            if let Some(c) = self.counters.get_mut(&gc.key) {
                if c.window == gc.window {
                    c.lost = c.lost.saturating_add(1);
                }
                c.roll(now, &early);
            }
        }
        self.wake_for(g);
    }

    fn release(&mut self, g: &Grant, now: Micros) {
        if g.global {
            let ts = self.token(g.token);
            ts.in_flight = ts.in_flight.saturating_sub(1);
            ts.done.push_back(now);
        }
        if g.ban_probe {
            self.ban.probe_in_flight = false;
        }
        for gc in &g.counters {
            if let Some(c) = self.counters.get_mut(&gc.key) {
                c.in_flight = c.in_flight.saturating_sub(1);
                if c.window == gc.window {
                    c.cur_in_flight = c.cur_in_flight.saturating_sub(1);
                }
            }
        }
    }

    fn wake_for(&self, g: &Grant) {
        debug_assert_eq!(
            self.queued,
            self.routes.values().map(RouteState::queued).sum::<usize>()
        );
        if self.queued == 0 {
            return;
        }
        if let Some(r) = self.routes.get(&g.route_key) {
            r.wake_head();
        }
        for gc in &g.counters {
            self.wake_counter(&gc.key);
        }
    }

    fn wake_counter(&self, key: &str) {
        if self.queued == 0 {
            return;
        }
        if let Some(c) = self.counters.get(key) {
            for rk in &c.routes {
                if let Some(r) = self.routes.get(rk) {
                    r.wake_head();
                }
            }
        }
    }

    fn wake_all(&self) {
        for r in self.routes.values() {
            for q in &r.queue {
                for (_, n) in q {
                    n.notify_one();
                }
            }
        }
    }

    /// Applies a response to the state and decides what the caller does next.
    pub(crate) fn complete(
        &mut self,
        g: &Grant,
        obs: &Observation,
        fingerprint: u64,
        now: Micros,
    ) -> Verdict {
        self.release(g, now);
        self.min_rtt = self.min_rtt.min(now.saturating_sub(g.sent_at));
        self.rtt_samples += 1;
        if g.probe {
            if let Some(r) = self.routes.get_mut(&g.route_key) {
                r.probe_in_flight = false;
            }
        }
        if obs.banned {
            let backoff = if self.ban.active {
                self.ban
                    .backoff
                    .saturating_mul(2)
                    .min(self.cfg.ban_backoff_max)
            } else {
                self.cfg.ban_backoff
            };
            self.ban = Ban {
                active: true,
                until: now.saturating_add(backoff),
                backoff,
                probe_in_flight: false,
            };
            tracing::error!(
                backoff_ms = backoff / 1000,
                "upstream ban detected: all traffic stopped until a probe succeeds"
            );
            metrics::counter!("ratelimit_client_bans_total").increment(1);
            self.count_invalid(now);
            self.wake_all();
            return Verdict::Fail(ErrorKind::Banned(backoff));
        }
        if g.ban_probe && self.ban.active {
            tracing::info!("ban probe succeeded; traffic resumes");
            self.ban = Ban::default();
            self.wake_all();
        }
        if obs.invalid {
            self.count_invalid(now);
        }
        if obs.unauthorized {
            tracing::error!(
                token = format_args!("{:016x}", g.token),
                "401 Unauthorized: this token is stopped"
            );
            metrics::counter!("ratelimit_client_unauthorized_total").increment(1);
            self.token(g.token).disabled = true;
            self.wake_all();
            return Verdict::Done;
        }
        if let Some(l) = obs.limited {
            metrics::counter!("ratelimit_client_429_total", "scope" => l.scope.as_str())
                .increment(1);
            tracing::warn!(
                route = %g.route_key,
                scope = l.scope.as_str(),
                retry_ms = l.retry_after / 1000,
                sent_at = g.sent_at,
                now,
                counters = ?g.counters.iter().map(|c| (c.window, c.done_at_send)).collect::<Vec<_>>(),
                "rate limited by upstream"
            );
        }
        let until = obs.limited.map(|l| now.saturating_add(l.retry_after));
        if obs.limited.is_some_and(|l| l.scope != Scope::User) {
            // A global or shared 429 was not counted by the bucket: give its slot back (the headers, read
            // next, still cap it by the true remaining).
            for gc in &g.counters {
                if let Some(c) = self.counters.get_mut(&gc.key) {
                    if c.window == gc.window {
                        c.avail = (c.avail + 1).min(c.limit.saturating_sub(u64::from(c.in_flight)));
                    }
                }
            }
        }
        if let Some(l) = obs.limited.filter(|l| l.scope == Scope::Global) {
            let ts = self.token(g.token);
            ts.locked_until = ts.locked_until.max(now.saturating_add(l.retry_after));
            self.wake_for(g);
            return Verdict::RetryLimit;
        }
        // Sub-limit: a user 429 while the headers still show requests left.
        let sublimit = obs.limited.is_some_and(|l| l.scope == Scope::User)
            && obs.buckets.iter().any(|b| b.remaining > 0)
            && obs.buckets.iter().all(|b| b.remaining > 0);
        // Counters the response named. Without a 429 they only need waking, and `wake_for` below already
        // wakes the grant's own: those are left out (no allocation in the common case).
        let mut learned = Vec::new();
        for b in &obs.buckets {
            if let Some(k) = self.observe_bucket(g, b, obs.limited.is_some(), now) {
                if obs.limited.is_some() || !g.counters.iter().any(|gc| gc.key == k) {
                    learned.push(k);
                }
            }
        }
        // A route is taken to have no limit only when its response says so by naming none: rejected
        // evidence (`malformed`) keeps it probing one request at a time.
        if obs.buckets.is_empty()
            && obs.limited.is_none()
            && !obs.server_error
            && obs.malformed.is_none()
        {
            if let Some(r) = self.routes.get_mut(&g.route_key) {
                if r.counters.is_empty() && !r.unlimited {
                    tracing::debug!(route = %g.route_key, "route reports no bucket: only the global limit applies");
                    r.unlimited = true;
                    r.wake_head();
                }
            }
        }
        let verdict = match (obs.limited, until) {
            (Some(l), Some(until)) if sublimit => {
                tracing::warn!(route = %g.route_key, retry_ms = l.retry_after / 1000, "sub-limit hit: isolating these requests in their own lane");
                metrics::counter!("ratelimit_client_sublimits_total").increment(1);
                if let Some(r) = self.routes.get_mut(&g.route_key) {
                    r.sublimits.retain(|s| s.1 > now);
                    if r.sublimits.len() < 16 {
                        r.sublimits.push((fingerprint, until));
                    }
                }
                Verdict::RetryLimit
            }
            (Some(l), Some(until)) => {
                // Block the counters the 429 named (or the route's, or the route itself if none is known).
                let keys: Vec<Arc<str>> = if learned.is_empty() {
                    self.routes
                        .get(&g.route_key)
                        .map(|r| r.counters.clone())
                        .unwrap_or_default()
                } else {
                    learned.clone()
                };
                if keys.is_empty() {
                    if let Some(r) = self.routes.get_mut(&g.route_key) {
                        r.blocked_until = r.blocked_until.max(until);
                    }
                }
                for k in &keys {
                    if let Some(c) = self.counters.get_mut(k) {
                        c.blocked_until = c.blocked_until.max(until);
                        if l.scope == Scope::User {
                            c.avail = 0;
                            c.reset_at = Some(c.reset_at.map_or(until, |r| r.max(until)));
                            c.evidence = Evidence::NONE;
                            c.probe_next = true;
                        }
                    }
                }
                Verdict::RetryLimit
            }
            _ if obs.server_error => Verdict::RetryError,
            _ => Verdict::Done,
        };
        self.wake_for(g);
        // `wake_for` already woke the grant's counters; a learned key is new only after a probe or a change.
        for k in &learned {
            if !g.counters.iter().any(|gc| gc.key == *k) {
                self.wake_counter(k);
            }
        }
        verdict
    }

    fn count_invalid(&mut self, now: Micros) {
        self.invalid.push_back(now);
        while self.invalid.len() > self.cfg.invalid.stop.saturating_add(1) {
            self.invalid.pop_front();
        }
        let n = self.invalid_count(now);
        metrics::gauge!("ratelimit_client_invalid_requests").set(n as f64);
        let level = if n >= self.cfg.invalid.stop {
            3
        } else if n >= self.cfg.invalid.shed {
            2
        } else if n >= self.cfg.invalid.warn {
            1
        } else {
            0
        };
        if level > self.invalid_level {
            tracing::warn!(
                invalid = n,
                level,
                "invalid-request budget crossed a threshold (1 warn, 2 shed, 3 stop)"
            );
        }
        self.invalid_level = level;
    }

    /// Learns from one bucket of a response; returns the counter it concerns.
    fn observe_bucket(
        &mut self,
        g: &Grant,
        b: &BucketInfo,
        limited: bool,
        now: Micros,
    ) -> Option<Arc<str>> {
        let route = self.routes.get(&g.route_key)?;
        // The common case, a response for a counter the route already uses: found by hash, no key built.
        let known = route.counters.iter().find(|k| {
            self.counters
                .get(*k)
                .is_some_and(|c| match (&c.hash, &b.id) {
                    (Some(h), Some(id)) => **h == **id,
                    _ => false,
                })
        });
        let (template, major, token) = (route.template.clone(), route.major.clone(), route.token);
        let (hash, key): (Arc<str>, Arc<str>) = match known {
            Some(k) => (
                self.counters
                    .get(k)
                    .and_then(|c| c.hash.clone())
                    .unwrap_or_else(|| "".into()),
                k.clone(),
            ),
            None => {
                let hash: Arc<str> = match &b.id {
                    Some(h) => h.as_str().into(),
                    None => format!("route:{template}").into(),
                };
                let key = self.counter_key(token, &hash, &template, &major);
                (hash, key)
            }
        };
        let linked = known.is_some() || route.counters.contains(&key);
        if !linked {
            // A new hash for this route: learn it (a probe), a changed hash, or a layered limit on a 429.
            if !self.counters.contains_key(&key) {
                if !self.make_room_for_counter(now, None) {
                    self.untracked_at_cap(g, limited);
                    return None;
                }
                let mut c = Counter::new(Some(hash.clone()), b, g.sent_at, now);
                c.routes.push(g.route_key.clone());
                self.counters.insert(key.clone(), c);
            } else {
                let shared_counter_fresh = self.counters.get(&key).is_some_and(|c| {
                    c.done >= 1
                        && b.remaining + 1 == b.limit
                        && c.reset_at
                            .is_some_and(|r| now.saturating_add(c.period / 2) < r)
                });
                if shared_counter_fresh && b.id.is_some() && self.make_room_for_split(now, &key) {
                    // The other routes already spent from this window, yet this one reports a fresh count: it
                    // keeps its own counter under the shared hash (dapi#8073).
                    return self.split(g, b, &hash, &template, &major, now);
                }
                let early = self.early();
                if let Some(c) = self.counters.get_mut(&key) {
                    c.roll(now, &early);
                    c.avail = c
                        .avail
                        .min(b.remaining.saturating_sub(u64::from(c.in_flight)));
                    c.routes.push(g.route_key.clone());
                }
            }
            let route = self.routes.get_mut(&g.route_key)?;
            if limited || route.counters.is_empty() {
                route.counters.push(key.clone());
            } else {
                tracing::debug!(route = %g.route_key, "bucket hash changed");
                let old = std::mem::replace(&mut route.counters, vec![key.clone()]);
                for k in old {
                    if let Some(c) = self.counters.get_mut(&k) {
                        c.routes.retain(|r| r != &g.route_key);
                    }
                }
            }
            tracing::debug!(route = %g.route_key, bucket = %key, "learned bucket");
            metrics::counter!("ratelimit_client_hash_learned_total").increment(1);
            return Some(key);
        }
        let gc = g.counters.iter().find(|gc| gc.key == key);
        let new_reset = self.reset_from(now, b.reset_after);
        let c = self.counters.get_mut(&key)?;
        if b.limit != c.limit {
            tracing::debug!(bucket = %key, old = c.limit, new = b.limit, "bucket limit changed");
            c.limit = b.limit;
        }
        let current = match gc {
            Some(gc) if gc.window == c.window => true,
            Some(gc) if gc.window + 1 == c.window => {
                // Sent in the previous window, answered after we rolled over (the roll comes before the old
                // reset, so that the new window's requests arrive at it). Counted in the new window only if
                // it reports a reset well beyond the old one: `send + Reset-After` is at most the reset that
                // counted it, so an old-window response never passes this.
                let old_end = match c.prev_upper {
                    0 => c.rolled_at,
                    u => u,
                };
                if g.sent_at.saturating_add(b.reset_after) > old_end.saturating_add(c.period / 2) {
                    true
                } else {
                    c.avail = (c.avail + 1).min(c.limit.saturating_sub(u64::from(c.in_flight)));
                    false
                }
            }
            Some(_) => false,
            None => true,
        };
        tracing::trace!(bucket = %key, remaining = b.remaining, reset_after = b.reset_after, window = c.window, grant_window = ?gc.map(|g| g.window), current, now, avail = c.avail, in_flight = c.in_flight, reset_at = ?c.reset_at, "observed");
        if !current {
            return Some(key);
        }
        let split = gc.is_some_and(|gc| {
            c.routes.len() > 1
                && gc.first_half
                && gc.done_at_send >= 1
                && b.remaining + 1 == b.limit
                && b.id.is_some()
        });
        if split && self.make_room_for_split(now, &key) {
            return self.split(g, b, &hash, &template, &major, now);
        }
        let c = self.counters.get_mut(&key)?;
        // The upstream opened a new window before ours ended (our reset is late by the return trip, and
        // requests sent in that gap open the next window): its reset lies a good part of a window beyond ours.
        // Trust the fresh count, but only from the newest response: an older one may predate admissions
        // that have since been answered and are no longer in flight.
        // (Routes grouped under one hash may still keep separate counts: no jump for groups.)
        let newest = gc.is_none_or(|gc| gc.seq > c.applied_seq) && c.routes.len() <= 1;
        let jumped = newest
            && c.reset_at
                .is_some_and(|r| new_reset > r.saturating_add(c.period / 2).max(r + 1));
        if let Some(gc) = gc {
            c.applied_seq = c.applied_seq.max(gc.seq);
        }
        if jumped {
            c.window += 1;
            c.rolled_at = now;
            c.cur_in_flight = 0;
            c.done = 0;
            c.probe_next = false;
            c.avail = b.remaining.saturating_sub(u64::from(c.in_flight));
            c.min_remaining = b.remaining;
            c.lost = 0;
            c.reset_at = Some(new_reset);
            c.evidence = Evidence::NONE;
            c.evidence.add(g.sent_at, now, b.reset_after);
        } else {
            // What may still be sent: the latest count answered, less everything that may be counted after it.
            // This can raise the allowance (a request assumed counted while in flight turned out to be in the
            // count already, or was refused by a shared 429), but never above what the count allows.
            c.min_remaining = c.min_remaining.min(b.remaining);
            c.avail = c
                .min_remaining
                .saturating_sub(u64::from(c.in_flight) + u64::from(c.lost));
            c.reset_at = Some(c.reset_at.map_or(new_reset, |r| r.max(new_reset)));
            c.evidence.add(g.sent_at, now, b.reset_after);
        }
        if b.remaining + 1 >= b.limit || c.period == 0 {
            c.period = c.period.max(b.reset_after);
        }
        c.done += 1;
        Some(key)
    }

    /// When a window reported in a response ends on our clock: `now + reset_after`, late by the time the
    /// response took to come back.
    fn reset_from(&self, now: Micros, reset_after: Micros) -> Micros {
        now.saturating_add(reset_after)
    }

    /// The parameters of early release (see [`Evidence`]): the smallest round trip seen (none before
    /// [`RTT_SAMPLES`] responses, so nothing is released early on a cold start), the share taken and the margin.
    ///
    /// The smallest round trip is the sample with the least local queueing in it: a recent or average round
    /// trip can be inflated by congestion on our side (a pool of connections being opened) that the next
    /// request does not meet.
    fn early(&self) -> Early {
        Early {
            rtt_min: (self.rtt_samples >= RTT_SAMPLES).then_some(self.min_rtt),
            percent: self.cfg.latency_compensation,
            margin: self.cfg.reset_margin,
        }
    }

    /// Gives a route its own counter under a hash it shares with other routes.
    fn split(
        &mut self,
        g: &Grant,
        b: &BucketInfo,
        hash: &Arc<str>,
        template: &Arc<str>,
        major: &str,
        now: Micros,
    ) -> Option<Arc<str>> {
        tracing::info!(route = %template, hash = %hash, "route keeps its own counter under a shared bucket hash");
        metrics::counter!("ratelimit_client_hash_split_total").increment(1);
        self.own_counter.insert((hash.clone(), template.clone()));
        let key = self.counter_key(g.token, hash, template, major);
        let mut c = Counter::new(Some(hash.clone()), b, g.sent_at, now);
        c.routes.push(g.route_key.clone());
        // Keep the safe view: this route's requests still in flight were admitted under the shared counter and
        // will count against the new one; the shared counter's in-flight total bounds them.
        let in_flight_here = g
            .counters
            .iter()
            .filter_map(|gc| self.counters.get(&gc.key))
            .map(|oc| oc.in_flight)
            .max()
            .unwrap_or(0);
        c.avail = c.avail.saturating_sub(u64::from(in_flight_here));
        self.counters.insert(key.clone(), c);
        let route = self.routes.get_mut(&g.route_key)?;
        let old = std::mem::replace(&mut route.counters, vec![key.clone()]);
        for k in old {
            if let Some(oc) = self.counters.get_mut(&k) {
                oc.routes.retain(|r| r != &g.route_key);
            }
        }
        Some(key)
    }

    /// Makes room for one more counter when the cap ([`Config::max_buckets`]) is reached: evicts the least
    /// recently used counter with no request in flight (other than `keep`), preferring one whose window is
    /// over. Evicting one
    /// still within its window forgets what it knew (how much of the window is spent): its route sends one
    /// probe when it next needs it, and learns the window again from the answer. That is logged once (the cap
    /// is too small for the upstream's working set) and counted in
    /// `ratelimit_client_bucket_cap_total{outcome}`. False when every counter has a request in flight.
    fn make_room_for_counter(&mut self, now: Micros, keep: Option<&Arc<str>>) -> bool {
        if self.counters.len() < self.cfg.max_buckets {
            return true;
        }
        let victim = self
            .counters
            .iter()
            .filter(|(k, c)| c.in_flight == 0 && Some(*k) != keep)
            .min_by_key(|(_, c)| (!c.idle(now), c.last_used))
            .map(|(k, c)| (k.clone(), c.idle(now)));
        let Some((key, idle)) = victim else {
            return false;
        };
        if idle {
            metrics::counter!("ratelimit_client_bucket_cap_total", "outcome" => "evicted_idle")
                .increment(1);
        } else {
            metrics::counter!("ratelimit_client_bucket_cap_total", "outcome" => "evicted_active")
                .increment(1);
            if !std::mem::replace(&mut self.cap_logged.evicted_active, true) {
                tracing::warn!(
                    max_buckets = self.cfg.max_buckets,
                    "bucket cap reached with every counter within its window: the least recently used is \
                     evicted, and its route probes again when it next sends; raise max_buckets if the \
                     upstream has more live buckets (logged once; counted in \
                     ratelimit_client_bucket_cap_total{{outcome=\"evicted_active\"}})"
                );
            }
        }
        if let Some(c) = self.counters.remove(&key) {
            for rk in c.routes {
                if let Some(r) = self.routes.get_mut(&rk) {
                    r.counters.retain(|x| x != &key);
                }
            }
        }
        true
    }

    /// A response named a bucket that cannot be tracked (a request is in flight on every counter at the
    /// cap). A route that was told its bucket changed stops spending the old counter: it sends one request
    /// at a time, each a probe, until a counter frees. A layered limit named on a 429 is simply not added.
    fn untracked_at_cap(&mut self, g: &Grant, limited: bool) {
        metrics::counter!("ratelimit_client_bucket_cap_total", "outcome" => "untracked")
            .increment(1);
        if !std::mem::replace(&mut self.cap_logged.untracked, true) {
            tracing::warn!(
                max_buckets = self.cfg.max_buckets,
                "bucket cap reached with a request in flight on every counter: a new bucket is not tracked, \
                 and its route sends one request at a time until a counter frees; raise max_buckets \
                 (logged once; counted in ratelimit_client_bucket_cap_total{{outcome=\"untracked\"}})"
            );
        }
        if limited {
            return;
        }
        if let Some(route) = self.routes.get_mut(&g.route_key) {
            for k in std::mem::take(&mut route.counters) {
                if let Some(c) = self.counters.get_mut(&k) {
                    c.routes.retain(|r| r != &g.route_key);
                }
            }
        }
    }

    /// Whether a route may get its own counter under a shared hash: the pairs known to keep their own
    /// count are bounded like the counters, and so is the new counter (`shared`, the counter it leaves, is
    /// not evicted for it). Without room the route keeps sharing, the stricter reading.
    fn make_room_for_split(&mut self, now: Micros, shared: &Arc<str>) -> bool {
        self.own_counter.len() < self.cfg.max_buckets
            && self.make_room_for_counter(now, Some(shared))
    }

    fn evict_routes(&mut self, now: Micros) {
        if self.routes.len() < self.cfg.max_routes {
            return;
        }
        let victim = self
            .routes
            .iter()
            .filter(|(_, r)| r.queued() == 0 && !r.probe_in_flight && r.blocked_until <= now)
            .min_by_key(|(_, r)| r.last_used)
            .map(|(k, _)| k.clone());
        if let Some(k) = victim {
            if let Some(r) = self.routes.remove(&k) {
                for ck in r.counters {
                    if let Some(c) = self.counters.get_mut(&ck) {
                        c.routes.retain(|x| x != &k);
                    }
                }
            }
        }
    }

    pub(crate) fn occupancy(&self) -> Occupancy {
        let tokens = self.tokens.values();
        Occupancy {
            in_flight: self.counters.values().map(|c| u64::from(c.in_flight)).sum(),
            global_in_flight: tokens.clone().map(|t| u64::from(t.in_flight)).sum(),
            queued: self
                .queued
                .max(self.routes.values().map(RouteState::queued).sum()),
            global_waiting: tokens.clone().map(|t| t.waiting.len()).sum(),
            global_reserved: tokens.clone().map(|t| t.reserved.len()).sum::<usize>()
                + self.routes.values().filter(|r| r.reserve.is_some()).count(),
            held: tokens.map(|t| t.held.len()).sum(),
            probes_in_flight: self.routes.values().filter(|r| r.probe_in_flight).count()
                + usize::from(self.ban.probe_in_flight),
        }
    }

    pub(crate) fn snapshot(&mut self, now: Micros) -> Snapshot {
        let invalid_requests = self.invalid_count(now);
        Snapshot {
            buckets: self
                .counters
                .iter()
                .map(|(k, c)| BucketStatus {
                    key: k.to_string(),
                    hash: c.hash.as_ref().map(|h| h.to_string()),
                    limit: c.limit,
                    available: if c.reset_at.is_some_and(|r| r <= now) {
                        c.limit
                    } else {
                        c.avail
                    },
                    in_flight: c.in_flight,
                    reset_in: c.reset_at.map(|r| r.saturating_sub(now)),
                    routes: c.routes.iter().map(|r| r.to_string()).collect(),
                })
                .collect(),
            routes: self
                .routes
                .values()
                .map(|r| RouteStatus {
                    route: r.template.to_string(),
                    major: r.major.to_string(),
                    queued: r.queued(),
                    unlimited: r.unlimited,
                    sublimits: r.sublimits.iter().filter(|s| s.1 > now).count(),
                })
                .collect(),
            global_used: {
                let window = self.global_window;
                self.tokens
                    .iter_mut()
                    .map(|(t, s)| (*t, s.used(now, window)))
                    .collect()
            },
            disabled_tokens: self.tokens.values().filter(|t| t.disabled).count(),
            invalid_requests,
            banned_for: self.ban.active.then(|| self.ban.until.saturating_sub(now)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::profile::Limited;

    const S: Micros = 1_000_000;

    fn core() -> Core {
        Core::new(Config {
            global_limit: Some(50),
            ..Config::default()
        })
    }

    fn ticket(route: &str, major: &str) -> Ticket {
        ticket_tok(route, major, 7)
    }

    fn ticket_tok(route: &str, major: &str, token: u64) -> Ticket {
        let t = Ticket::new(
            token,
            route,
            major,
            Lane::Normal,
            SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
        );
        assert_eq!((t.template(), t.major()), (route, major));
        t
    }

    static SEQ: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

    #[test]
    fn ticket_keys_are_token_template_major_on_the_stack_or_the_heap() {
        let long = "x".repeat(300);
        for (tpl, major) in [
            (
                "PUT|DELETE /channels/{channel_id}/messages/{id}/reactions",
                "1",
            ),
            ("GET /gateway", ""),
            (long.as_str(), "2"),
            ("GET /a", long.as_str()),
        ] {
            let t = Ticket::new(0xabc, tpl, major, Lane::Normal, 0);
            let (tpl, major) = (
                crate::parse::bounded_template(tpl),
                crate::parse::bounded_name(major),
            );
            assert_eq!(&*t.route_key, format!("{:016x}|{tpl}|{major}", 0xabc));
            assert_eq!((t.template(), t.major()), (&*tpl, &*major));
            assert!(t.route_key.len() <= 17 + 192 + 1 + 64);
        }
    }

    fn bucket(hash: &str, limit: u64, remaining: u64, reset: Micros) -> Observation {
        Observation {
            buckets: vec![BucketInfo {
                id: Some(hash.into()),
                limit,
                remaining,
                reset_after: reset,
            }],
            ..Observation::default()
        }
    }

    /// Enqueues and tries once: `Ok(grant)` or `Err(waiter id)` left queued.
    fn try_send(c: &mut Core, t: &Ticket, now: Micros) -> Result<Grant, (WaiterId, Step)> {
        let id = c.enqueue(t, Arc::new(Notify::new()), now);
        match c.try_admit(id, t, now) {
            Step::Admit(g) => Ok(g),
            Step::Fail(e) => {
                // As the async caller's queue guard does.
                c.cancel(&t.route_key, id);
                Err((id, Step::Fail(e)))
            }
            other => Err((id, other)),
        }
    }

    fn admit(c: &mut Core, id: WaiterId, t: &Ticket, now: Micros) -> Option<Grant> {
        match c.try_admit(id, t, now) {
            Step::Admit(g) => Some(g),
            _ => None,
        }
    }

    #[test]
    fn unknown_route_probes_alone_then_runs_in_parallel_up_to_remaining() {
        let mut c = core();
        let t = ticket("POST /channels/{channel_id}/messages", "1");
        let probe = try_send(&mut c, &t, 0).unwrap();
        assert!(probe.probe);
        let (w, step) = try_send(&mut c, &t, 0).unwrap_err();
        assert!(matches!(step, Step::Wait { until: None, .. }), "{step:?}");
        assert_eq!(
            c.complete(&probe, &bucket("h", 5, 4, 5 * S), 0, 10),
            Verdict::Done
        );
        // The waiter and three more go out in parallel: 4 remaining.
        let mut grants = vec![admit(&mut c, w, &t, 10).unwrap()];
        for _ in 0..3 {
            grants.push(try_send(&mut c, &t, 10).unwrap());
        }
        let (_, step) = try_send(&mut c, &t, 10).unwrap_err();
        assert!(
            matches!(step, Step::Wait { until: Some(u), .. } if u == 10 + 5 * S),
            "{step:?}"
        );
    }

    #[test]
    fn release_at_reset_is_fifo_and_only_as_many_as_the_limit() {
        let mut c = core();
        let t = ticket("PUT /guilds/{guild_id}/members/{id}/roles/{id}", "9");
        let probe = try_send(&mut c, &t, 0).unwrap();
        c.complete(&probe, &bucket("roles", 3, 0, S), 0, 0);
        let waiters: Vec<WaiterId> = (0..7)
            .map(|_| try_send(&mut c, &t, 0).unwrap_err().0)
            .collect();
        // Not before the reset.
        assert!(admit(&mut c, waiters[0], &t, S - 1).is_none());
        // At the reset: only the head may go, then the next, for three in all.
        assert!(admit(&mut c, waiters[1], &t, S).is_none(), "not the head");
        let mut admitted = Vec::new();
        for &w in &waiters {
            if let Some(g) = admit(&mut c, w, &t, S) {
                admitted.push((w, g));
            } else {
                break;
            }
        }
        assert_eq!(
            admitted.iter().map(|a| a.0).collect::<Vec<_>>(),
            waiters[..3].to_vec()
        );
    }

    #[test]
    fn out_of_order_responses_never_raise_the_allowance() {
        let mut c = core();
        let t = ticket("GET /x", "");
        let probe = try_send(&mut c, &t, 0).unwrap();
        c.complete(&probe, &bucket("x", 10, 9, 10 * S), 0, 0);
        let gs: Vec<Grant> = (0..9).map(|_| try_send(&mut c, &t, 1).unwrap()).collect();
        // The last response (remaining 0) arrives first, then older ones claiming more.
        c.complete(&gs[8], &bucket("x", 10, 0, 10 * S), 0, 2);
        c.complete(&gs[0], &bucket("x", 10, 8, 10 * S), 0, 3);
        assert!(try_send(&mut c, &t, 4).is_err());
        let snap = c.snapshot(4);
        assert_eq!(snap.buckets[0].available, 0);
    }

    #[test]
    fn a_window_the_upstream_opened_early_is_followed_from_the_newest_response_only() {
        let mut c = core();
        let t = ticket("GET /big", "");
        let probe = try_send(&mut c, &t, 0).unwrap();
        c.complete(&probe, &bucket("b", 100, 99, S), 0, 0);
        let old = try_send(&mut c, &t, 10).unwrap();
        let new = try_send(&mut c, &t, 20).unwrap();
        // Our window ends at 1 s; the newest response says a new window opened (reset 1.9 s, 98 left).
        c.complete(&new, &bucket("b", 100, 98, 900_000 + S / 2), 0, S / 2);
        let snap = c.snapshot(S / 2);
        assert_eq!(
            snap.buckets[0].available, 97,
            "98 left minus the one still in flight"
        );
        // An older response claiming more is not trusted.
        c.complete(&old, &bucket("b", 100, 99, 900_000 + S / 2), 0, S / 2);
        assert!(c.snapshot(S / 2).buckets[0].available <= 98);
    }

    #[test]
    fn a_smaller_remaining_lowers_the_allowance_for_layered_limits() {
        let mut c = core();
        let t = ticket("GET /users/{id}", "");
        let probe = try_send(&mut c, &t, 0).unwrap();
        c.complete(&probe, &bucket("u", 2000, 1999, 60 * S), 0, 0);
        let g = try_send(&mut c, &t, 1).unwrap();
        let _g2 = try_send(&mut c, &t, 1).unwrap();
        // Something else used most of it: 3 left, one other request in flight.
        c.complete(&g, &bucket("u", 2000, 3, 60 * S), 0, 2);
        assert_eq!(c.snapshot(2).buckets[0].available, 2);
    }

    #[test]
    fn global_limit_holds_slots_from_send_until_a_window_after_the_response() {
        let mut c = core();
        let mut grants = Vec::new();
        for i in 0..50 {
            let t = ticket("GET /unlimited", &i.to_string());
            grants.push(try_send(&mut c, &t, i * 1000).unwrap());
        }
        let t = ticket("GET /unlimited", "x");
        let (w, step) = try_send(&mut c, &t, 60_000).unwrap_err();
        // All 50 in flight: nothing frees before a window from now.
        assert!(
            matches!(step, Step::Wait { until: Some(u), ref bucket } if u == 1_060_000 && bucket == "global"),
            "{step:?}"
        );
        // The first answer comes back at 100 ms (the upstream counted it somewhere in 0..100 ms): its slot
        // frees at 1.1 s, not at 1 s after the send.
        c.complete(&grants[0], &Observation::default(), 0, 100_000);
        assert!(admit(&mut c, w, &t, 1_099_999).is_none());
        assert!(admit(&mut c, w, &t, 1_100_000).is_some());
        // Exempt requests pass.
        let mut ex = ticket(
            "POST /interactions/{interaction_id}/{interaction_token}/callback",
            "5",
        );
        ex.global_exempt = true;
        assert!(try_send(&mut c, &ex, 1_100_000).is_ok());
        // Another token has its own window.
        assert!(try_send(&mut c, &ticket_tok("GET /unlimited", "y", 8), 1_100_000).is_ok());
        assert_eq!(
            c.snapshot(1_100_000).global_used.iter().map(|g| g.1).max(),
            Some(50)
        );
    }

    /// Seven warm-up round trips of 150 ms, so that early release is allowed.
    fn warmed(cfg: Config) -> Core {
        let mut c = Core::new(cfg);
        for i in 0..7 {
            let g = try_send(&mut c, &ticket("GET /warm", &i.to_string()), 0).unwrap();
            c.complete(&g, &Observation::default(), 0, 150_000);
        }
        c
    }

    /// The upstream's window resets at 1.04 s. The probe left at 0, was counted at 40 ms and answered at
    /// 100 ms; the second request left at 100 ms, was counted at 150 ms and answered at 190 ms.
    fn two_responses(c: &mut Core, t: &Ticket) {
        let probe = try_send(c, t, 0).unwrap();
        c.complete(&probe, &bucket("a", 2, 1, S), 0, 100_000);
        let g = try_send(c, t, 100_000).unwrap();
        c.complete(&g, &bucket("a", 2, 0, 890_000), 0, 190_000);
    }

    #[test]
    fn the_next_window_is_released_from_both_bounds_of_the_reset() {
        let mut c = warmed(Config::default());
        let t = ticket("GET /a", "");
        two_responses(&mut c, &t);
        // send + Reset-After: 1.0 s and 0.99 s; receive + Reset-After: 1.1 s and 1.08 s. They overlap (one
        // fixed reset, at most 1.08 s). (a) the fastest way in: 1.0 s + a spread of 10 ms over 2 responses;
        // (b) 1.08 s − the smallest round trip (90 ms) = 0.99 s. The later, 1.005 s, plus the 2 ms margin.
        let (w, step) = try_send(&mut c, &t, 190_000).unwrap_err();
        assert!(
            matches!(step, Step::Wait { until: Some(u), .. } if u == 1_007_000),
            "{step:?}"
        );
        // A request sent then arrives at the reset (1.04 s) if its way in is at least 33 ms, against 40 and 50
        // ms seen. Released at that moment, not before.
        assert!(admit(&mut c, w, &t, 1_006_999).is_none());
        assert!(admit(&mut c, w, &t, 1_007_000).is_some());
    }

    #[test]
    fn without_compensation_the_latest_reported_reset_is_awaited() {
        let mut c = warmed(Config {
            latency_compensation: 0,
            ..Config::default()
        });
        let t = ticket("GET /a", "");
        two_responses(&mut c, &t);
        let (_, step) = try_send(&mut c, &t, 190_000).unwrap_err();
        assert!(
            matches!(step, Step::Wait { until: Some(u), .. } if u == 1_100_000),
            "{step:?}"
        );
        // Nor before eight round trips have been measured.
        let mut c = core();
        two_responses(&mut c, &t);
        let (_, step) = try_send(&mut c, &t, 190_000).unwrap_err();
        assert!(
            matches!(step, Step::Wait { until: Some(u), .. } if u == 1_100_000),
            "{step:?}"
        );
    }

    #[test]
    fn a_late_answer_from_the_window_before_an_early_release_is_not_taken_for_the_new_one() {
        let mut c = Core::new(Config::default());
        for i in 0..7 {
            let g = try_send(&mut c, &ticket("GET /warm", &i.to_string()), 0).unwrap();
            c.complete(&g, &Observation::default(), 0, 10_000);
        }
        // 2 per 100 ms; the upstream's window runs from 5 ms to 105 ms.
        let t = ticket("GET /s", "");
        let probe = try_send(&mut c, &t, 0).unwrap();
        c.complete(&probe, &bucket("s", 2, 1, 100_000), 0, 10_000);
        let slow = try_send(&mut c, &t, 10_000).unwrap();
        // Released at 102 ms (the reset's bounds say 100–110 ms, the fastest round trip is 10 ms).
        let (w, step) = try_send(&mut c, &t, 20_000).unwrap_err();
        assert!(
            matches!(step, Step::Wait { until: Some(u), .. } if u == 102_000),
            "{step:?}"
        );
        let _next = admit(&mut c, w, &t, 102_000).unwrap();
        // The slow request was counted at 15 ms, in the old window, and is answered only now.
        c.complete(&slow, &bucket("s", 2, 0, 90_000), 0, 112_000);
        assert_eq!(c.snapshot(112_000).buckets[0].available, 1);
    }

    #[test]
    fn a_moving_reset_is_bounded_by_the_latest_response() {
        let mut c = warmed(Config::default());
        let t = ticket("GET /leaky", "");
        // A leaky bucket: each response reports a later reset; the bounds [send, receive] + Reset-After do not
        // overlap (0.10..0.11 s, then 0.15..0.16 s), so the smallest upper end is no bound at all.
        let probe = try_send(&mut c, &t, 0).unwrap();
        c.complete(&probe, &bucket("l", 2, 1, 100_000), 0, 10_000);
        let g = try_send(&mut c, &t, 10_000).unwrap();
        c.complete(&g, &bucket("l", 2, 0, 140_000), 0, 20_000);
        // Upper end 0.16 s; (a) 0.15 s + 25 ms; (b) 0.16 s − 10 ms: released at 0.175 s + 2 ms... capped by the
        // upper end, 0.16 s.
        let (_, step) = try_send(&mut c, &t, 20_000).unwrap_err();
        assert!(
            matches!(step, Step::Wait { until: Some(u), .. } if u == 160_000),
            "{step:?}"
        );
    }

    #[test]
    fn requests_refused_by_a_shared_429_are_given_back_whatever_the_response_order() {
        let mut c = core();
        let t = ticket("POST /channels/{channel_id}/messages", "1");
        let probe = try_send(&mut c, &t, 0).unwrap();
        c.complete(&probe, &bucket("m", 5, 4, 5 * S), 0, 0);
        let g: Vec<Grant> = (0..4).map(|_| try_send(&mut c, &t, 1).unwrap()).collect();
        // g[0] is counted (3 left); a shared storm refuses g[1..] (not counted, 3 left). The refusals come
        // back first, while g[0] is still in flight and might not have been counted yet.
        let mut storm = bucket("m", 5, 3, 5 * S);
        storm.limited = Some(Limited {
            scope: Scope::Shared,
            retry_after: 100_000,
        });
        for (i, gi) in g[1..].iter().enumerate() {
            c.complete(gi, &storm, 0, 2 + i as Micros);
        }
        assert_eq!(c.snapshot(5).buckets[0].available, 2);
        // g[0]'s response shows it was in the count: all three refused requests may go again.
        c.complete(&g[0], &bucket("m", 5, 3, 5 * S), 0, 6);
        assert_eq!(c.snapshot(6).buckets[0].available, 3);
    }

    #[test]
    fn global_slots_are_kept_for_a_route_further_from_finishing() {
        let mut c = Core::new(Config {
            global_limit: Some(2),
            ..Config::default()
        });
        let a = ticket("GET /a", "");
        let probe = try_send(&mut c, &a, 0).unwrap();
        c.complete(&probe, &bucket("a", 1, 0, S / 2), 0, 0);
        // /a waits for its reset at 0.5 s with two calls queued (one more window after that one).
        let (wa, step) = try_send(&mut c, &a, 1).unwrap_err();
        assert!(
            matches!(step, Step::Wait { until: Some(u), .. } if u == S / 2),
            "{step:?}"
        );
        let (_, step) = try_send(&mut c, &a, 1).unwrap_err();
        assert!(matches!(step, Step::Wait { until: None, .. }), "{step:?}");
        // A single younger call: the probe's slot is held until 1 s, and /a needs the other at 0.5 s.
        let b = ticket("GET /b", "");
        let (wb, step) = try_send(&mut c, &b, 2).unwrap_err();
        assert!(
            matches!(step, Step::Wait { ref bucket, .. } if bucket.contains("reserved")),
            "{step:?}"
        );
        let ga = admit(&mut c, wa, &a, S / 2).unwrap();
        c.complete(&ga, &bucket("a", 1, 0, S / 2), 0, S / 2);
        // /a took its reserved slot; /b goes at 1 s, when the probe's slot frees.
        assert!(admit(&mut c, wb, &b, S - 1).is_none());
        assert!(admit(&mut c, wb, &b, S).is_some());
    }

    #[test]
    fn a_route_with_windows_of_work_ahead_is_not_held_behind_single_older_calls() {
        let mut c = Core::new(Config {
            global_limit: Some(2),
            ..Config::default()
        });
        let y = ticket("GET /y", "");
        let probe = try_send(&mut c, &y, 0).unwrap();
        c.complete(&probe, &bucket("y", 5, 4, S), 0, 0);
        let g0 = try_send(&mut c, &ticket("GET /u", "0"), 0).unwrap();
        c.complete(&g0, &Observation::default(), 0, 0);
        // Both slots are held until 1 s. An older single call waits for one.
        let x = ticket("GET /u", "1");
        let (wx, _) = try_send(&mut c, &x, 1).unwrap_err();
        // Then twelve calls on /y: three windows of five, two more after the one that opens now.
        let ys: Vec<(WaiterId, Ticket)> = (0..12)
            .map(|_| {
                let t = ticket("GET /y", "");
                (try_send(&mut c, &t, 2).unwrap_err().0, t)
            })
            .collect();
        assert!(ys[0].1.seq > x.seq);
        // At 1 s /y's head goes first although /x is older: /y would otherwise end the run two windows late.
        assert!(admit(&mut c, ys[0].0, &ys[0].1, S).is_some());
        assert!(admit(&mut c, wx, &x, S).is_some());
        // With one window of work or less, the older call keeps its turn.
        let mut c = Core::new(Config {
            global_limit: Some(1),
            ..Config::default()
        });
        let g0 = try_send(&mut c, &ticket("GET /u", "0"), 0).unwrap();
        c.complete(&g0, &Observation::default(), 0, 0);
        let (wx, _) = try_send(&mut c, &x, 1).unwrap_err();
        let z = ticket("GET /z", "");
        let (wz, _) = try_send(&mut c, &z, 2).unwrap_err();
        assert!(admit(&mut c, wz, &z, S).is_none());
        assert!(admit(&mut c, wx, &x, S).is_some());
    }

    #[test]
    fn a_global_429_locks_the_token() {
        let mut c = core();
        let t = ticket("GET /a", "");
        let g = try_send(&mut c, &t, 0).unwrap();
        let obs = Observation {
            limited: Some(Limited {
                scope: Scope::Global,
                retry_after: 661_000,
            }),
            invalid: true,
            ..Observation::default()
        };
        assert_eq!(c.complete(&g, &obs, 0, 0), Verdict::RetryLimit);
        let (_, step) = try_send(&mut c, &ticket("GET /b", ""), 1).unwrap_err();
        assert!(
            matches!(
                step,
                Step::Wait {
                    until: Some(661_000),
                    ..
                }
            ),
            "{step:?}"
        );
        assert_eq!(c.snapshot(1).invalid_requests, 1);
    }

    #[test]
    fn a_shared_429_blocks_the_bucket_but_is_not_invalid() {
        let mut c = core();
        let t = ticket(
            "PUT|DELETE /channels/{channel_id}/messages/{id}/reactions",
            "1",
        );
        let g = try_send(&mut c, &t, 0).unwrap();
        let mut obs = bucket("r", 1, 0, 250_000);
        obs.limited = Some(Limited {
            scope: Scope::Shared,
            retry_after: 3 * S,
        });
        assert_eq!(c.complete(&g, &obs, 0, 0), Verdict::RetryLimit);
        assert_eq!(c.snapshot(0).invalid_requests, 0);
        let (_, step) = try_send(&mut c, &t, S).unwrap_err();
        assert!(
            matches!(step, Step::Wait { until: Some(u), .. } if u == 3 * S),
            "{step:?}"
        );
    }

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
    fn a_401_stops_the_token_only() {
        let mut c = core();
        let t = ticket("GET /a", "");
        let g = try_send(&mut c, &t, 0).unwrap();
        let obs = Observation {
            unauthorized: true,
            invalid: true,
            ..Observation::default()
        };
        assert_eq!(c.complete(&g, &obs, 0, 0), Verdict::Done);
        assert!(matches!(
            try_send(&mut c, &t, 1).unwrap_err().1,
            Step::Fail(Error::Unauthorized)
        ));
        assert!(try_send(&mut c, &ticket_tok("GET /a", "", 9), 1).is_ok());
    }

    #[test]
    fn a_ban_stops_everything_and_probes_with_backoff() {
        let mut c = Core::new(Config {
            ban_backoff: S,
            ban_backoff_max: 4 * S,
            ..Config::default()
        });
        let t = ticket("GET /a", "");
        let g = try_send(&mut c, &t, 0).unwrap();
        let ban = Observation {
            banned: true,
            invalid: true,
            ..Observation::default()
        };
        assert_eq!(
            c.complete(&g, &ban, 0, 0),
            Verdict::Fail(ErrorKind::Banned(S))
        );
        assert!(matches!(
            try_send(&mut c, &ticket("GET /b", ""), S / 2)
                .unwrap_err()
                .1,
            Step::Fail(Error::Banned { .. })
        ));
        // After the backoff one probe goes; others still fail while it is out.
        let probe = try_send(&mut c, &t, S).unwrap();
        assert!(probe.ban_probe);
        assert!(matches!(
            try_send(&mut c, &ticket("GET /c", ""), S).unwrap_err().1,
            Step::Fail(Error::Banned { .. })
        ));
        // The probe is banned again: the backoff doubles.
        assert_eq!(
            c.complete(&probe, &ban, 0, S),
            Verdict::Fail(ErrorKind::Banned(2 * S))
        );
        assert!(try_send(&mut c, &ticket("GET /d", ""), 2 * S).is_err());
        let probe = try_send(&mut c, &ticket("GET /e", ""), 3 * S).unwrap();
        assert_eq!(
            c.complete(&probe, &Observation::default(), 0, 3 * S),
            Verdict::Done
        );
        assert!(try_send(&mut c, &ticket("GET /f", ""), 3 * S).is_ok());
    }

    #[test]
    fn the_invalid_budget_sheds_then_stops() {
        let mut c = Core::new(Config {
            global_limit: None,
            invalid: crate::InvalidBudget {
                window: 10 * S,
                warn: 1,
                shed: 2,
                stop: 3,
            },
            ..Config::default()
        });
        let forbidden = Observation {
            invalid: true,
            ..Observation::default()
        };
        for i in 0..2 {
            let g = try_send(&mut c, &ticket("GET /a", &i.to_string()), 0).unwrap();
            c.complete(&g, &forbidden, 0, 0);
        }
        assert!(matches!(
            try_send(&mut c, &ticket("GET /b", ""), 1).unwrap_err().1,
            Step::Fail(Error::Shed { count: 2 })
        ));
        let mut urgent = ticket("GET /b", "");
        urgent.lane = Lane::Urgent;
        let g = try_send(&mut c, &urgent, 1).unwrap();
        c.complete(&g, &forbidden, 0, 1);
        assert!(matches!(
            try_send(&mut c, &urgent, 2).unwrap_err().1,
            Step::Fail(Error::InvalidBudget { count: 3 })
        ));
        // The window slides: all clear after 10 s.
        assert!(try_send(&mut c, &urgent, 10 * S + 2).is_ok());
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
}
