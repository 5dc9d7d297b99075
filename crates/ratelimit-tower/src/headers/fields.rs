//! Each field's value: the draft's numbers ([`super::draft`]) serialised as RFC 9651 structured fields
//! into a [`Buf`].

use http::HeaderValue;
use ratelimit_core::{Decision, PolicySet};

use super::bytes::{base64_12, Buf};
use super::draft::{binding_numbers, quota_window, t_of, SF_INT_MAX};

pub(super) fn push_item_name(out: &mut Buf, name: &str) {
    // Policy names are validated by core to [A-Za-z0-9-_.:/], all legal unescaped inside an sf-string.
    out.push(b"\"");
    out.push(name.as_bytes());
    out.push(b"\"");
}

pub(super) fn push_pk(out: &mut Buf, pk: Option<&[u8; 12]>) {
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
pub(super) fn write_policy_items(
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

/// The `RateLimit` field value (see the [module docs](super)); `None` only if the value would be invalid.
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

/// The `RateLimit-Policy` field value (see the [module docs](super)).
pub fn policy_value(
    set: &PolicySet,
    only: Option<usize>,
    pk: Option<&[u8; 12]>,
) -> Option<HeaderValue> {
    let mut b = Buf::new();
    write_policy(&mut b, set, only, pk);
    b.value()
}

/// The draft-06/-07 `RateLimit-Policy` value for `set` (unnamed `q;w=` Integers, see [`IetfRevision`](super::IetfRevision));
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

/// The draft-07 `RateLimit` Dictionary for the decision's binding policy (see [`IetfRevision`](super::IetfRevision)).
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
