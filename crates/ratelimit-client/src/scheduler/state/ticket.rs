//! The vocabulary of one request's passage through the scheduler: the [`Ticket`] it asks with, the
//! [`Step`] an admission attempt answers, the [`Grant`] an admitted request holds until its response, and
//! the [`Verdict`] the response earns.

use std::sync::Arc;

use ratelimit_core::Micros;

use crate::error::Error;
use crate::hex;
use crate::profile::Lane;

pub(crate) type WaiterId = u64;

/// The waiter id of a request that is not queued: it may be admitted only if nobody is waiting.
pub(crate) const FAST_PATH: WaiterId = 0;

/// Route keys up to this many bytes are assembled on the stack and copied once into their `Arc`; longer
/// ones (a bounded template and major can reach about 270 bytes) take a second allocation.
const ROUTE_KEY_ON_STACK: usize = 256;

/// The token digest's width in a route key: 16 hex digits and a `|`.
const TOKEN_PREFIX: usize = 17;

/// What the caller knows about one request when it asks to be admitted.
#[derive(Debug, Clone)]
pub(crate) struct Ticket {
    /// `token|template|major`; the template and the major are slices of it (one allocation per request,
    /// not three: the route's own copies are made only when the route is new).
    pub route_key: Arc<str>,
    pub(super) template: std::ops::Range<usize>,
    pub token: u64,
    pub lane: Lane,
    pub global_exempt: bool,
    pub fingerprint: u64,
    /// Arrival order of the call (kept across its retries): global slots go to the oldest waiting call,
    /// unless a younger one's route has more than one global window more work queued (see
    /// [`super::global::projected`]).
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
        let (start, end) = (TOKEN_PREFIX, TOKEN_PREFIX + template.len());
        let len = end + 1 + major.len();
        // Assembled on the stack and copied once into the `Arc` (a `String` would be a second allocation).
        let mut buf = [0u8; ROUTE_KEY_ON_STACK];
        let on_stack = buf.get_mut(..len).and_then(|b| {
            let (digits, rest) = b.split_at_mut(TOKEN_PREFIX - 1);
            digits.copy_from_slice(&hex::hex16(token));
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
            hex::push_hex(&mut key, token);
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
        template_of(&self.route_key, &self.template)
    }

    /// The major parameter.
    pub(crate) fn major(&self) -> &str {
        major_of(&self.route_key, &self.template)
    }
}

/// The template of a route key `token|template|major`, at `at`.
fn template_of<'k>(route_key: &'k str, at: &std::ops::Range<usize>) -> &'k str {
    route_key.get(at.clone()).unwrap_or("")
}

/// The major of a route key whose template is at `at`.
fn major_of<'k>(route_key: &'k str, at: &std::ops::Range<usize>) -> &'k str {
    route_key.get(at.end + 1..).unwrap_or("")
}

/// The bookkeeping for an admitted, in-flight request.
#[derive(Debug, Clone)]
pub(crate) struct Grant {
    pub route_key: Arc<str>,
    /// Where the template is in `route_key`, to name the route in logs.
    pub(super) template: std::ops::Range<usize>,
    pub token: u64,
    pub counters: Vec<GrantCounter>,
    pub probe: bool,
    pub ban_probe: bool,
    pub global: bool,
    pub sent_at: Micros,
    /// The request's body fingerprint, when it was read at admission (0 otherwise).
    pub fingerprint: u64,
    /// Others of its route were waiting or in flight at admission: on success, its body shape is worth
    /// reading as sub-limit evidence.
    pub busy: bool,
}

impl Grant {
    /// The route template (method and path shape).
    pub(crate) fn template(&self) -> &str {
        template_of(&self.route_key, &self.template)
    }

    /// The major parameter.
    pub(crate) fn major(&self) -> &str {
        major_of(&self.route_key, &self.template)
    }
}

/// What an admission drew from one counter.
#[derive(Debug, Clone)]
pub(crate) struct GrantCounter {
    pub(super) key: Arc<str>,
    pub(super) window: u64,
    pub(super) done_at_send: u32,
    pub(super) first_half: bool,
    /// Admission sequence on this counter, to tell the newest response from older ones.
    pub(super) seq: u64,
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

impl Step {
    /// Wait until `until`, or until notified when `None`.
    pub(super) fn wait(until: Option<Micros>, bucket: impl Into<String>) -> Step {
        Step::Wait {
            until,
            bucket: bucket.into(),
        }
    }
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
