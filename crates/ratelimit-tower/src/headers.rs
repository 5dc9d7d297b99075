//! Rendering rate-limit response headers.
//!
//! The fields follow **draft-ietf-httpapi-ratelimit-headers-11** (an Internet-Draft, not yet an RFC; this
//! crate pins revision -11 and will follow later revisions deliberately, not silently). Both fields are
//! RFC 9651 structured-field *Lists* whose items are *Strings* naming a policy, with parameters:
//!
//! ```text
//! RateLimit-Policy: "burst";q=100;w=60, "daily";q=5000;w=86400
//! RateLimit: "burst";r=42;t=35, "daily";r=4870;t=41160
//! ```
//!
//! * `q` — the policy's quota (units per window), `w` — its window in seconds (rounded up, at least 1). For a
//!   bucket whose burst exceeds its limit, `q` is the burst and `w` the time the sustained rate takes to
//!   grant it (100 an hour with bursts of 200: `q=200;w=7200`), so `r` never exceeds `q`. A burst
//!   *below* the limit reads the same way: `Quota::per_minute(100).burst(5)` advertises `q=5;w=3` — a
//!   client can spend 5 at once (`r` counts down from 5, not 100), and they come back at 100 a minute, 5
//!   every 3 seconds. The sustained rate `q / w` is the configured one; a client reading `q=100;w=60`
//!   would send 100 at once and see 95 of them refused;
//! * `r` — units remaining after this request;
//! * `t` — delta seconds, **rounded up**: for a policy that limited this request, until the same request
//!   would be admitted (exactly the `Retry-After` value, so `Retry-After` is never earlier than `t`); for
//!   any other policy, until it is back to full capacity. Omitted when the request can never fit;
//! * `pk` — optional partition key, a byte sequence holding 12 bytes of a SHA-256 of the store key, never
//!   the raw identity.
//!
//! Serialisation is canonical RFC 9651 (no spaces inside items, `", "` between items) and is written by hand
//! into a stack buffer; the tests and fuzz target parse every output with the `sfv` crate.
//!
//! Clients written against earlier revisions can be served their shapes instead
//! ([`IetfRevision::Draft07`]'s `RateLimit` Dictionary, [`IetfRevision::Draft06`]'s three Integer fields),
//! and `X-RateLimit-*` can be added ([`LegacyReset`]).
//!
//! `Retry-After` (RFC 9110 §10.2.3) is integer seconds rounded up and never 0 when a wait is needed: a
//! 300 ms wait is `Retry-After: 1`, not `0` (which tells clients to hammer the server).
//!
//! ```
//! use ratelimit_core::{Decision, Policy, PolicySet, Quota, Rule};
//! use ratelimit_tower::headers::{ratelimit_value, policy_value};
//!
//! let set = PolicySet::new([Policy::gcra("burst", Quota::per_minute(100).build()?)?])?;
//! let mut state = Default::default();
//! let decision = set.check(&mut state, 0, 1);
//! assert_eq!(policy_value(&set, None, None).unwrap(), r#""burst";q=100;w=60"#);
//! assert_eq!(ratelimit_value(&set, &decision, None, None).unwrap(), r#""burst";r=99;t=1"#);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use http::HeaderValue;
use ratelimit_core::{Decision, Micros, PolicySet, Status};

/// How `X-RateLimit-Reset` is written in legacy mode (implementations in the wild disagree).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LegacyReset {
    /// Delta seconds until reset, rounded up (`X-RateLimit-Reset: 30`).
    DeltaSeconds,
    /// Unix time of the reset in seconds, rounded up (GitHub style).
    UnixEpoch,
}

/// Which revision of the IETF draft's fields to send (see the [module docs](self) for the default).
///
/// The draft changed shape twice before its current form, and clients written against older revisions
/// are in use (express-rate-limit's `standardHeaders: 'draft-6'` and `'draft-7'` modes emit these), so
/// the two earlier shapes are offered as opt-ins. Both describe one policy with numbers only — the
/// binding one, closest to exhaustion — plus every policy as an integer quota with its window:
///
/// ```text
/// Draft06:  RateLimit-Limit: 100        RateLimit-Remaining: 42      RateLimit-Reset: 35
///           RateLimit-Policy: 100;w=60, 5000;w=86400
/// Draft07:  RateLimit: limit=100, remaining=42, reset=35
///           RateLimit-Policy: 100;w=60, 5000;w=86400
/// ```
///
/// `limit` is the policy's capacity (the `q` of the current revision), `reset` delta seconds rounded up
/// (for a limited request, until it would be admitted, so never earlier than `Retry-After`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum IetfRevision {
    /// draft-ietf-httpapi-ratelimit-headers-11: named policies, `RateLimit: "burst";r=42;t=35` (the
    /// default).
    #[default]
    Draft11,
    /// draft-07 (2023): one Dictionary field, `RateLimit: limit=…, remaining=…, reset=…`.
    Draft07,
    /// draft-04 to -06 (2022): three Integer fields, `RateLimit-Limit`, `RateLimit-Remaining` and
    /// `RateLimit-Reset`.
    Draft06,
}

const MICROS_PER_SEC: u64 = 1_000_000;

/// Microseconds to whole seconds, rounded up.
#[inline]
pub fn ceil_secs(us: Micros) -> u64 {
    us.div_ceil(MICROS_PER_SEC)
}

/// The `Retry-After` seconds for a limited decision: the binding policy's retry, rounded up, at least 1.
/// `None` when allowed, or when the request can never fit (no wait helps).
#[inline]
pub fn retry_after_secs(decision: &Decision) -> Option<u64> {
    decision
        .retry_after()
        .map(|_| ceil_secs(decision.binding().retry).max(1))
}

/// `t` for one policy; see the [module docs](self).
#[inline]
fn t_of(s: &Status) -> Option<u64> {
    if s.never() {
        None
    } else if !s.allowed() {
        Some(ceil_secs(s.retry).max(1))
    } else {
        Some(ceil_secs(s.reset))
    }
}

/// One header value under construction: on the stack (128 bytes covers three or four policies),
/// spilling to the heap only for longer lists. Turning it into a `HeaderValue` is the one allocation.
/// Not larger: the buffer is zeroed on every request (no `unsafe` here), and 256 bytes took a `memset`
/// call where 128 are a few vector stores.
pub(crate) struct Buf {
    stack: [u8; 128],
    len: usize,
    heap: Vec<u8>,
}

impl Buf {
    #[inline]
    pub(crate) fn new() -> Self {
        Buf {
            stack: [0; 128],
            len: 0,
            heap: Vec::new(),
        }
    }

    #[inline]
    pub(crate) fn push(&mut self, s: &[u8]) {
        if self.heap.is_empty() && self.len + s.len() <= self.stack.len() {
            self.stack[self.len..self.len + s.len()].copy_from_slice(s);
            self.len += s.len();
        } else {
            if self.heap.is_empty() {
                self.heap.extend_from_slice(&self.stack[..self.len]);
            }
            self.heap.extend_from_slice(s);
        }
    }

    /// Appends `v` in decimal.
    #[inline]
    pub(crate) fn push_u64(&mut self, v: u64) {
        let n = decimal_len(v);
        if self.heap.is_empty() && self.len + n <= self.stack.len() {
            // Straight into place: no scratch buffer, no variable-length copy.
            write_decimal(&mut self.stack[self.len..self.len + n], v);
            self.len += n;
        } else {
            let mut tmp = [0u8; 20];
            write_decimal(&mut tmp[..n], v);
            self.push(&tmp[..n]);
        }
    }

    pub(crate) fn as_bytes(&self) -> &[u8] {
        if self.heap.is_empty() {
            &self.stack[..self.len]
        } else {
            &self.heap
        }
    }

    /// The value.
    pub(crate) fn value(&self) -> Option<HeaderValue> {
        HeaderValue::from_bytes(self.as_bytes()).ok()
    }

    /// The value of a field rendered once and sent on many responses (`RateLimit-Policy`), as a
    /// `&'static` value: cloning and dropping it are plain copies, where a shared value costs two atomic
    /// reference-count updates per response on a cache line every worker thread writes.
    pub(crate) fn static_value(&self) -> Option<HeaderValue> {
        interned_value(self.as_bytes())
    }
}

/// How many distinct values [`interned_value`] keeps: each is leaked once and reused for the life of the
/// process, so a program that changes its policies at run time forever (a tier per customer, rebuilt
/// every minute) stays bounded; past the cap values are reference-counted as usual.
const MAX_INTERNED: usize = 4096;

/// The most bytes [`interned_value`] leaks in all: policy names are configuration, but a program that
/// builds tiers from outside data (customer names, a tenant's header) must not leak without bound
/// through long ones. Past it, values are reference-counted as usual.
const MAX_INTERNED_BYTES: usize = 1024 * 1024;

/// Values leaked so far, for reuse, and their total length.
#[derive(Default)]
struct InternTable {
    values: std::collections::HashSet<&'static str>,
    bytes: usize,
}

/// The caps of an intern table (tests use small ones).
#[derive(Clone, Copy)]
struct InternCaps {
    values: usize,
    bytes: usize,
}

type Interned = std::sync::Mutex<Option<InternTable>>;

static INTERNED: Interned = std::sync::Mutex::new(None);

/// `bytes` as a `&'static` header value, leaked once per distinct value (at most [`MAX_INTERNED`]
/// values and [`MAX_INTERNED_BYTES`] bytes).
fn interned_value(bytes: &[u8]) -> Option<HeaderValue> {
    let caps = InternCaps {
        values: MAX_INTERNED,
        bytes: MAX_INTERNED_BYTES,
    };
    intern_in(&INTERNED, caps, bytes)
}

/// [`interned_value`] over a given table and caps (tests use their own).
fn intern_in(table: &Interned, caps: InternCaps, bytes: &[u8]) -> Option<HeaderValue> {
    let value = HeaderValue::from_bytes(bytes).ok()?;
    // `HeaderValue::from_static` accepts visible ASCII and tabs only (it panics on anything else, which
    // `from_bytes` allows); what we render is ASCII, but check rather than trust.
    let Some(s) = std::str::from_utf8(bytes)
        .ok()
        .filter(|s| s.bytes().all(|b| b == b'\t' || (32..127).contains(&b)))
    else {
        return Some(value);
    };
    match intern_str_in(table, caps, s) {
        Some(s) => Some(HeaderValue::from_static(s)),
        None => Some(value),
    }
}

/// `s` leaked once per distinct value, in the same table and within the same caps as header values
/// (policy names handed to every admitted request); `None` past the caps.
pub(crate) fn interned_str(s: &str) -> Option<&'static str> {
    let caps = InternCaps {
        values: MAX_INTERNED,
        bytes: MAX_INTERNED_BYTES,
    };
    intern_str_in(&INTERNED, caps, s)
}

fn intern_str_in(table: &Interned, caps: InternCaps, s: &str) -> Option<&'static str> {
    let mut table = table.lock().unwrap_or_else(|p| p.into_inner());
    let table = table.get_or_insert_with(Default::default);
    if let Some(s) = table.values.get(s) {
        return Some(s);
    }
    if table.values.len() >= caps.values || table.bytes + s.len() > caps.bytes {
        return None;
    }
    let leaked: &'static str = Box::leak(Box::from(s));
    table.values.insert(leaked);
    table.bytes += leaked.len();
    Some(leaked)
}

/// The number of decimal digits of `v`.
#[inline]
fn decimal_len(v: u64) -> usize {
    v.checked_ilog10().map_or(1, |l| l as usize + 1)
}

/// Writes `v` in decimal into `out`, which is exactly [`decimal_len`]`(v)` bytes long; two digits per
/// division (the values are up to 15 digits; a digit at a time was a visible share of a request's cost).
#[inline]
fn write_decimal(out: &mut [u8], mut v: u64) {
    let mut i = out.len();
    while v >= 100 {
        let r = (v % 100) as usize * 2;
        v /= 100;
        i -= 2;
        out[i..i + 2].copy_from_slice(&DIGIT_PAIRS[r..r + 2]);
    }
    if v >= 10 {
        let r = v as usize * 2;
        out[i - 2..i].copy_from_slice(&DIGIT_PAIRS[r..r + 2]);
    } else {
        out[i - 1] = b'0' + v as u8;
    }
}

/// "00" to "99", for [`Buf::push_u64`].
const DIGIT_PAIRS: [u8; 200] = {
    let mut t = [0u8; 200];
    let mut i = 0;
    while i < 100 {
        t[2 * i] = b'0' + (i / 10) as u8;
        t[2 * i + 1] = b'0' + (i % 10) as u8;
        i += 1;
    }
    t
};

/// RFC 9651 Integers are at most 15 digits; larger values (a limit of 10^15) are clamped.
const SF_INT_MAX: u64 = 999_999_999_999_999;

fn push_item_name(out: &mut Buf, name: &str) {
    // Policy names are validated by core to [A-Za-z0-9-_.:/], all legal unescaped inside an sf-string.
    out.push(b"\"");
    out.push(name.as_bytes());
    out.push(b"\"");
}

fn push_pk(out: &mut Buf, pk: Option<&[u8; 12]>) {
    if let Some(pk) = pk {
        out.push(b";pk=:");
        let mut b64 = [0u8; 16];
        base64_12(pk, &mut b64);
        out.push(&b64);
        out.push(b":");
    }
}

/// Writes the `RateLimit` field for `decision` over `set` into `out`; `only` restricts it to one policy.
pub(crate) fn write_ratelimit(
    out: &mut Buf,
    set: &PolicySet,
    decision: &Decision,
    only: Option<usize>,
    pk: Option<&[u8; 12]>,
) {
    let mut first = true;
    for (i, (p, s)) in set.policies().iter().zip(decision.statuses()).enumerate() {
        if only.is_some_and(|o| o != i) {
            continue;
        }
        if !first {
            out.push(b", ");
        }
        first = false;
        push_item_name(out, p.name());
        out.push(b";r=");
        out.push_u64(s.remaining.min(SF_INT_MAX));
        if let Some(t) = t_of(s) {
            out.push(b";t=");
            out.push_u64(t.min(SF_INT_MAX));
        }
        push_pk(out, pk);
    }
}

/// The constant start of each policy's `RateLimit` item (`"name";r=`), rendered once per tier so that a
/// request only writes its numbers.
pub(crate) fn item_prefixes(set: &PolicySet) -> Box<[Box<[u8]>]> {
    set.policies()
        .iter()
        .map(|p| {
            let mut b = Buf::new();
            push_item_name(&mut b, p.name());
            b.push(b";r=");
            Box::from(b.as_bytes())
        })
        .collect()
}

/// [`write_ratelimit`] for every policy, from the prefixes [`item_prefixes`] rendered for its set.
pub(crate) fn write_ratelimit_items(
    out: &mut Buf,
    prefixes: &[Box<[u8]>],
    decision: &Decision,
    pk: Option<&[u8; 12]>,
) {
    for (i, (prefix, s)) in prefixes.iter().zip(decision.statuses()).enumerate() {
        if i > 0 {
            out.push(b", ");
        }
        out.push(prefix);
        out.push_u64(s.remaining.min(SF_INT_MAX));
        if let Some(t) = t_of(s) {
            out.push(b";t=");
            out.push_u64(t.min(SF_INT_MAX));
        }
        push_pk(out, pk);
    }
}

/// A policy's `q` and `w`: its capacity (the burst: what `r` counts down from, and what `X-RateLimit-Limit`
/// reports) and the seconds the limit's sustained rate takes to grant that much (rounded up, at least 1).
/// For windows and for buckets whose burst is the limit this is the quota as written (`q = limit`,
/// `w = period`); a GCRA of 100 an hour with bursts of 200 reads `q=200;w=7200`, so `r` never exceeds `q`
/// and `q / w` is still the sustained rate.
fn quota_window(quota: &ratelimit_core::Quota) -> (u64, u64) {
    let burst = quota.burst();
    let micros =
        u128::from(quota.period_micros()) * u128::from(burst) / u128::from(quota.limit().max(1));
    let w = ceil_secs(u64::try_from(micros).unwrap_or(u64::MAX)).max(1);
    (burst, w)
}

/// Writes the `RateLimit-Policy` field for `set` into `out`; `only` restricts it to one policy.
pub(crate) fn write_policy(
    out: &mut Buf,
    set: &PolicySet,
    only: Option<usize>,
    pk: Option<&[u8; 12]>,
) {
    write_policy_items(out, set, only, Some(pk));
}

/// Writes the draft-06/-07 `RateLimit-Policy` items for `set` into `out` (`q;w=…` per policy, unnamed);
/// `only` restricts it to one policy.
pub(crate) fn write_policy_unnamed(out: &mut Buf, set: &PolicySet, only: Option<usize>) {
    write_policy_items(out, set, only, None);
}

/// `RateLimit-Policy` items: named (`"name";q=…;w=…`, with the `pk` if any) when `named` is `Some`,
/// else draft-06/-07's bare `q;w=…`.
fn write_policy_items(
    out: &mut Buf,
    set: &PolicySet,
    only: Option<usize>,
    named: Option<Option<&[u8; 12]>>,
) {
    let mut first = true;
    for (i, p) in set.policies().iter().enumerate() {
        if only.is_some_and(|o| o != i) {
            continue;
        }
        if !first {
            out.push(b", ");
        }
        first = false;
        let (q, w) = quota_window(p.quota());
        if named.is_some() {
            push_item_name(out, p.name());
            out.push(b";q=");
        }
        out.push_u64(q.min(SF_INT_MAX));
        out.push(b";w=");
        out.push_u64(w.min(SF_INT_MAX));
        if let Some(pk) = named {
            push_pk(out, pk);
        }
    }
}

/// The binding policy's limit, remaining units and reset (delta seconds, rounded up; for a limited
/// request, until it would be admitted), as draft-06/-07 and the `X-RateLimit-*` fields report them.
pub(crate) fn binding_numbers(decision: &Decision) -> (u64, u64, u64) {
    let s = decision.binding();
    let reset = ceil_secs(if s.allowed() || s.never() {
        s.reset
    } else {
        s.retry.max(s.reset)
    });
    (
        s.limit.min(SF_INT_MAX),
        s.remaining.min(SF_INT_MAX),
        reset.min(SF_INT_MAX),
    )
}

/// The `RateLimit` field value (see the [module docs](self)); `None` only if the value would be invalid.
pub fn ratelimit_value(
    set: &PolicySet,
    decision: &Decision,
    only: Option<usize>,
    pk: Option<&[u8; 12]>,
) -> Option<HeaderValue> {
    let mut b = Buf::new();
    write_ratelimit(&mut b, set, decision, only, pk);
    b.value()
}

/// The `RateLimit-Policy` field value (see the [module docs](self)).
pub fn policy_value(
    set: &PolicySet,
    only: Option<usize>,
    pk: Option<&[u8; 12]>,
) -> Option<HeaderValue> {
    let mut b = Buf::new();
    write_policy(&mut b, set, only, pk);
    b.value()
}

/// The draft-06/-07 `RateLimit-Policy` value for `set` (unnamed `q;w=` Integers, see [`IetfRevision`]);
/// `only` restricts it to one policy.
///
/// ```
/// use ratelimit_core::{Policy, PolicySet, Quota};
/// use ratelimit_tower::headers::unnamed_policy_value;
///
/// let set = PolicySet::new([Policy::fixed_window("minute", Quota::per_minute(100).build()?)?])?;
/// assert_eq!(unnamed_policy_value(&set, None).unwrap(), "100;w=60");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn unnamed_policy_value(set: &PolicySet, only: Option<usize>) -> Option<HeaderValue> {
    let mut b = Buf::new();
    write_policy_unnamed(&mut b, set, only);
    b.value()
}

/// The draft-07 `RateLimit` Dictionary for the decision's binding policy (see [`IetfRevision`]).
///
/// ```
/// use ratelimit_core::{Policy, PolicySet, Quota, Rule};
/// use ratelimit_tower::headers::draft07_value;
///
/// let set = PolicySet::new([Policy::fixed_window("minute", Quota::per_minute(100).build()?)?])?;
/// let decision = set.check(&mut Default::default(), 0, 1);
/// assert_eq!(draft07_value(&decision).unwrap(), "limit=100, remaining=99, reset=60");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn draft07_value(decision: &Decision) -> Option<HeaderValue> {
    let (limit, remaining, reset) = binding_numbers(decision);
    let mut b = Buf::new();
    b.push(b"limit=");
    b.push_u64(limit);
    b.push(b", remaining=");
    b.push_u64(remaining);
    b.push(b", reset=");
    b.push_u64(reset);
    b.value()
}

/// A header value holding an integer.
#[inline]
pub(crate) fn int_value(v: u64) -> HeaderValue {
    HeaderValue::from(v)
}

/// Standard base64 (with padding) of exactly 12 bytes: 16 characters, no padding needed.
fn base64_12(input: &[u8; 12], out: &mut [u8; 16]) {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    for (chunk, o) in input.chunks_exact(3).zip(out.chunks_exact_mut(4)) {
        let n = (u32::from(chunk[0]) << 16) | (u32::from(chunk[1]) << 8) | u32::from(chunk[2]);
        o[0] = ALPHABET[(n >> 18) as usize & 63];
        o[1] = ALPHABET[(n >> 12) as usize & 63];
        o[2] = ALPHABET[(n >> 6) as usize & 63];
        o[3] = ALPHABET[n as usize & 63];
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ratelimit_core::{Policy, Quota, Rule};

    fn set() -> PolicySet {
        PolicySet::new([
            Policy::gcra("burst", Quota::per_second(2).build().unwrap()).unwrap(),
            Policy::fixed_window("daily", Quota::per_day(1000).build().unwrap()).unwrap(),
        ])
        .unwrap()
    }

    #[test]
    fn rounding_up_never_zero_when_waiting() {
        assert_eq!(ceil_secs(0), 0);
        assert_eq!(ceil_secs(1), 1);
        assert_eq!(ceil_secs(1_000_000), 1);
        assert_eq!(ceil_secs(1_000_001), 2);
        let s = set();
        let mut st = Default::default();
        s.check(&mut st, 0, 2);
        let d = s.check(&mut st, 0, 1);
        assert!(d.is_limited());
        assert_eq!(retry_after_secs(&d), Some(1)); // 500 ms → 1, not 0
    }

    #[test]
    fn fields_parse_as_sf_lists() {
        use sfv::{BareItem, ListEntry, Parser};
        let s = set();
        let mut st = Default::default();
        let d = s.check(&mut st, 0, 1);
        let v = ratelimit_value(&s, &d, None, Some(&[1; 12])).unwrap();
        let list = Parser::new(v.to_str().unwrap())
            .parse::<sfv::List>()
            .unwrap();
        assert_eq!(list.len(), 2);
        let ListEntry::Item(item) = &list[0] else {
            panic!()
        };
        assert_eq!(
            item.bare_item,
            BareItem::String(sfv::String::from_string("burst".into()).unwrap())
        );
        let p = policy_value(&s, Some(1), None).unwrap();
        assert_eq!(p.to_str().unwrap(), "\"daily\";q=1000;w=86400");
    }

    /// Draft-06/-07 shapes: the policy list holds Integers with a `w` parameter, the draft-07 field is a
    /// Dictionary of three Integers; both in canonical form, and consistent with the decision.
    #[test]
    fn earlier_revisions_parse_as_their_structured_types() {
        use sfv::{BareItem, FieldType, ListEntry, Parser};
        let s = set();
        let mut st = Default::default();
        s.check(&mut st, 0, 2);
        let limited = s.check(&mut st, 0, 1);
        assert!(limited.is_limited());
        let mut b = Buf::new();
        write_policy_unnamed(&mut b, &s, None);
        let text = std::str::from_utf8(b.as_bytes()).unwrap();
        let list = Parser::new(text).parse::<sfv::List>().unwrap();
        assert_eq!(FieldType::serialize(&list).as_deref(), Some(text));
        let items: Vec<(i64, i64)> = list
            .iter()
            .map(|e| {
                let ListEntry::Item(item) = e else {
                    panic!("{text}")
                };
                let q = match item.bare_item {
                    BareItem::Integer(i) => i64::from(i),
                    ref other => panic!("{other:?}"),
                };
                match item.params.get("w") {
                    Some(BareItem::Integer(w)) => (q, i64::from(*w)),
                    other => panic!("w: {other:?}"),
                }
            })
            .collect();
        assert_eq!(items, [(2, 1), (1000, 86400)]);

        let v = draft07_value(&limited).unwrap();
        let text = v.to_str().unwrap();
        let dict = Parser::new(text).parse::<sfv::Dictionary>().unwrap();
        assert_eq!(FieldType::serialize(&dict).as_deref(), Some(text));
        let member = |k: &str| match dict.get(k) {
            Some(ListEntry::Item(item)) => match item.bare_item {
                BareItem::Integer(i) => i64::from(i),
                ref other => panic!("{k}: {other:?}"),
            },
            other => panic!("{k}: {other:?}"),
        };
        let (limit, remaining, reset) = binding_numbers(&limited);
        assert_eq!(
            (member("limit"), member("remaining"), member("reset")),
            (limit as i64, remaining as i64, reset as i64)
        );
        // Limited: reset is when the request would be admitted, never earlier than Retry-After.
        assert_eq!((limit, remaining), (2, 0));
        assert!(reset >= retry_after_secs(&limited).unwrap() && reset >= 1);
    }

    /// A bucket whose burst exceeds its limit advertises its capacity as `q` (over the time the sustained
    /// rate takes to grant it), so `r` — which counts down from the burst — never exceeds `q`.
    #[test]
    fn remaining_never_exceeds_the_advertised_quota() {
        use sfv::{BareItem, ListEntry, Parser};
        let param = |value: &str, name: &str| -> i64 {
            let list = Parser::new(value).parse::<sfv::List>().unwrap();
            let ListEntry::Item(item) = &list[0] else {
                panic!("{value}")
            };
            match item.params.get(name) {
                Some(BareItem::Integer(i)) => i64::from(*i),
                other => panic!("{name} in {value}: {other:?}"),
            }
        };
        for (policy, q, w) in [
            (
                Policy::gcra("hourly", Quota::per_hour(100).burst(200).build().unwrap()).unwrap(),
                200,
                7200,
            ),
            (
                Policy::token_bucket("b", Quota::per_second(3).burst(10).build().unwrap()).unwrap(),
                10,
                4,
            ),
            (
                Policy::gcra("small", Quota::per_minute(60).burst(5).build().unwrap()).unwrap(),
                5,
                5,
            ),
            (
                Policy::sliding_window("w", Quota::per_minute(60).build().unwrap()).unwrap(),
                60,
                60,
            ),
        ] {
            let s = PolicySet::new([policy]).unwrap();
            let pv = policy_value(&s, None, None).unwrap();
            let pv = pv.to_str().unwrap();
            assert_eq!((param(pv, "q"), param(pv, "w")), (q, w), "{pv}");
            let mut st = Default::default();
            let mut now = 0;
            for _ in 0..3 * q {
                let d = s.check(&mut st, now, 1);
                let r = ratelimit_value(&s, &d, None, None).unwrap();
                assert!(param(r.to_str().unwrap(), "r") <= q, "{r:?} with {pv}");
                now += 100_000;
            }
        }
    }

    #[test]
    fn digits_and_prefixed_items_match_the_plain_rendering() {
        for v in [
            0,
            1,
            9,
            10,
            99,
            100,
            101,
            999,
            1000,
            12_345,
            999_999_999_999_999,
            u64::MAX,
        ] {
            let mut b = Buf::new();
            b.push_u64(v);
            assert_eq!(b.as_bytes(), v.to_string().as_bytes());
            // Near the end of the stack buffer, and past it (the heap).
            for fill in [240, 250, 300] {
                let mut b = Buf::new();
                b.push(&vec![b'x'; fill]);
                b.push_u64(v);
                assert_eq!(&b.as_bytes()[fill..], v.to_string().as_bytes());
            }
        }
        let s = set();
        let prefixes = item_prefixes(&s);
        let mut st = Default::default();
        for (now, cost) in [(0, 1), (0, 1), (0, 5), (1_500_000, 1), (0, 2000)] {
            let d = s.check(&mut st, now, cost);
            for pk in [None, Some(&[7u8; 12])] {
                let mut a = Buf::new();
                write_ratelimit(&mut a, &s, &d, None, pk);
                let mut b = Buf::new();
                write_ratelimit_items(&mut b, &prefixes, &d, pk);
                assert_eq!(a.as_bytes(), b.as_bytes());
            }
        }
    }

    #[test]
    fn once_rendered_values_are_interned_statics() {
        let mut b = Buf::new();
        write_policy(&mut b, &set(), None, None);
        let (x, y) = (b.static_value().unwrap(), b.static_value().unwrap());
        assert_eq!(x, b.value().unwrap());
        // One leaked copy, shared by every clone and every later rendering of the same value.
        assert_eq!(x.as_bytes().as_ptr(), y.as_bytes().as_ptr());
        assert_eq!(x.as_bytes().as_ptr(), x.clone().as_bytes().as_ptr());
        // obs-text is a valid header value but `from_static` would panic on it: not interned, not lost.
        let mut odd = Buf::new();
        odd.push(b"caf\xe9");
        assert_eq!(odd.static_value().unwrap().as_bytes(), b"caf\xe9");
        let mut bad = Buf::new();
        bad.push(b"a\nb");
        assert!(bad.static_value().is_none());
    }

    #[test]
    fn interning_stops_at_its_cap_and_values_stay_whole() {
        let table = Interned::new(None);
        let caps = InternCaps {
            values: 4,
            bytes: usize::MAX,
        };
        let value = |i: u64| format!("\"cap-test\";q={i}");
        for i in 0..4 {
            let v = intern_in(&table, caps, value(i).as_bytes()).unwrap();
            assert_eq!(v.as_bytes(), value(i).as_bytes());
        }
        // Known values are still shared; past the cap a new value is a plain (reference-counted) one:
        // two renderings, two copies, the same bytes.
        let known = [0, 0].map(|_| intern_in(&table, caps, value(1).as_bytes()).unwrap());
        assert_eq!(known[0].as_bytes().as_ptr(), known[1].as_bytes().as_ptr());
        let past = [0, 0].map(|_| intern_in(&table, caps, value(9).as_bytes()).unwrap());
        assert_eq!(past[0], past[1]);
        assert_eq!(past[0].as_bytes(), value(9).as_bytes());
        assert_ne!(past[0].as_bytes().as_ptr(), past[1].as_bytes().as_ptr());
        assert_eq!(
            table.lock().unwrap().as_ref().map(|t| t.values.len()),
            Some(4)
        );
    }

    /// A flood of long distinct values (policy names built from outside data) leaks at most the byte cap,
    /// whatever the value cap; every value still comes back whole.
    #[test]
    fn interning_leaks_at_most_its_byte_cap() {
        const BYTE_CAP: usize = 64 * 1024;
        const LONG_VALUE: usize = 10_000;
        let table = Interned::new(None);
        let caps = InternCaps {
            values: MAX_INTERNED,
            bytes: BYTE_CAP,
        };
        // Ten times what fits: far below the value cap, so only the byte cap can stop them.
        for i in 0..10 * BYTE_CAP / LONG_VALUE {
            let v = format!("\"{i:0>width$}\";q=1", width = LONG_VALUE);
            assert_eq!(
                intern_in(&table, caps, v.as_bytes()).unwrap().as_bytes(),
                v.as_bytes()
            );
        }
        let t = table.lock().unwrap();
        let t = t.as_ref().unwrap();
        let leaked: usize = t.values.iter().map(|v| v.len()).sum();
        assert_eq!(leaked, t.bytes);
        assert!(leaked <= BYTE_CAP, "{leaked} bytes leaked");
        assert_eq!(t.values.len(), BYTE_CAP / (LONG_VALUE + 6));
    }

    #[test]
    fn base64_matches_reference() {
        let mut out = [0u8; 16];
        base64_12(b"hello world!", &mut out);
        assert_eq!(&out, b"aGVsbG8gd29ybGQh");
    }
}
