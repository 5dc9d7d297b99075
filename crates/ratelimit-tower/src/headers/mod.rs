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

mod bytes;
mod draft;
mod emit;
mod fields;
mod rendered;
#[cfg(test)]
mod tests;

pub(crate) use bytes::{int_value, interned_str, Buf};
pub(crate) use draft::binding_numbers;
pub use draft::{ceil_secs, retry_after_secs, IetfRevision, LegacyReset};
pub(crate) use emit::Emit;
pub use fields::{draft07_value, policy_value, ratelimit_value, unnamed_policy_value};
pub(crate) use fields::{
    item_prefixes, write_policy, write_policy_unnamed, write_ratelimit, write_ratelimit_items,
};
pub(crate) use rendered::Rendered;
