//! What every response under one tier reuses, rendered when the tier table is built: the
//! `RateLimit-Policy` values (this set's, and with the global cap's; per policy; draft-06/-07's unnamed
//! ones) and each policy's `RateLimit` item prefix, so that a request only writes its numbers.

use http::HeaderValue;
use ratelimit_core::PolicySet;

use super::{item_prefixes, write_policy, write_policy_unnamed, Buf};

/// A tier's pre-rendered header parts.
#[derive(Debug)]
pub(crate) struct Rendered {
    /// `RateLimit-Policy`: every policy of this set, then every global-cap policy.
    pub(crate) policy_with_cap: Option<HeaderValue>,
    /// `RateLimit-Policy`: every policy of this set (for responses where the global cap was not reached).
    pub(crate) policy_own: Option<HeaderValue>,
    /// `RateLimit-Policy`: one value per policy of this set.
    pub(crate) each: Vec<Option<HeaderValue>>,
    /// `"name";r=` per policy of this set (see [`item_prefixes`]).
    pub(crate) items: Box<[Box<[u8]>]>,
    /// The draft-06/-07 `RateLimit-Policy` (unnamed `q;w=` items): this set's.
    pub(crate) unnamed_own: Option<HeaderValue>,
    /// The same, then the global cap's.
    pub(crate) unnamed_with_cap: Option<HeaderValue>,
}

impl Rendered {
    /// The parts of `set`, with the global cap `global` if any.
    pub(crate) fn new(set: &PolicySet, global: Option<&PolicySet>) -> Self {
        let (policy_own, policy_with_cap) =
            own_and_with_global(set, global, |b, s| write_policy(b, s, None, None));
        let (unnamed_own, unnamed_with_cap) =
            own_and_with_global(set, global, |b, s| write_policy_unnamed(b, s, None));
        let each = (0..set.len())
            .map(|i| {
                let mut b = Buf::new();
                write_policy(&mut b, set, Some(i), None);
                b.static_value()
            })
            .collect();
        Rendered {
            policy_with_cap,
            policy_own,
            each,
            items: item_prefixes(set),
            unnamed_own,
            unnamed_with_cap,
        }
    }
}

/// A `RateLimit-Policy` value rendered by `write` for `set` alone, and for `set` followed by the global
/// cap's policies (the same value when there is no cap), both interned.
fn own_and_with_global(
    set: &PolicySet,
    global: Option<&PolicySet>,
    write: impl Fn(&mut Buf, &PolicySet),
) -> (Option<HeaderValue>, Option<HeaderValue>) {
    let mut buf = Buf::new();
    write(&mut buf, set);
    let own = buf.static_value();
    if let Some(g) = global {
        buf.push(b", ");
        write(&mut buf, g);
    }
    (own, buf.static_value())
}
