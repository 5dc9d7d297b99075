//! What a response carries: which rate-limit fields an admitted or limited request's response gets
//! (the configured revision, every policy or only the binding one, the legacy trio), rendered from the
//! tier's pre-rendered parts where it can.

use std::time::{SystemTime, UNIX_EPOCH};

use http::header::HeaderName;
use http::{HeaderMap, HeaderValue};
use ratelimit_core::Decision;

use super::{Buf, IetfRevision, LegacyReset};
use crate::key::KeyBuf;
use crate::observe;
use crate::rate_limit::{most_binding, HeaderConfig, Part};
use crate::tier::Entry;

/// Headers to add to the inner service's response.
#[derive(Debug, Default)]
pub(crate) struct Emit {
    ratelimit: Option<HeaderValue>,
    policy: Option<HeaderValue>,
    /// Boxed: these are opt-in, and keeping `Emit` small keeps the response future small.
    trios: Option<Box<Trios>>,
}

/// The opt-in limit/remaining/reset fields: `X-RateLimit-*`, and draft-06's `RateLimit-*`.
#[derive(Debug, Default)]
struct Trios {
    legacy: Option<[HeaderValue; 3]>,
    draft6: Option<[HeaderValue; 3]>,
}

static RATELIMIT: HeaderName = HeaderName::from_static("ratelimit");
static RATELIMIT_POLICY: HeaderName = HeaderName::from_static("ratelimit-policy");
static X_TRIO: [HeaderName; 3] = [
    HeaderName::from_static("x-ratelimit-limit"),
    HeaderName::from_static("x-ratelimit-remaining"),
    HeaderName::from_static("x-ratelimit-reset"),
];
static DRAFT6_TRIO: [HeaderName; 3] = [
    HeaderName::from_static("ratelimit-limit"),
    HeaderName::from_static("ratelimit-remaining"),
    HeaderName::from_static("ratelimit-reset"),
];

impl Emit {
    #[inline]
    pub(crate) fn apply(self, headers: &mut HeaderMap) {
        // Append: an inner layer's RateLimit list stays, and SF lists may span several field lines.
        if let Some(v) = self.ratelimit {
            headers.append(RATELIMIT.clone(), v);
        }
        if let Some(v) = self.policy {
            headers.append(RATELIMIT_POLICY.clone(), v);
        }
        if let Some(trios) = self.trios {
            let Trios { legacy, draft6 } = *trios;
            for (names, values) in [(&X_TRIO, legacy), (&DRAFT6_TRIO, draft6)] {
                for (name, value) in names.iter().zip(values.into_iter().flatten()) {
                    headers.insert(name.clone(), value);
                }
            }
        }
    }

    /// Renders the headers for a decision over one or two (set, decision) parts.
    pub(crate) fn render(
        hc: &HeaderConfig,
        entry: &Entry,
        primary: Part<'_>,
        global: Option<Part<'_>>,
        key: &KeyBuf,
        limited: Option<(&Entry, &Decision)>,
    ) -> Emit {
        let mut emit = Emit::default();
        let pk = hc
            .partition_key
            .then(|| observe::partition_key(key.as_bytes()));
        let pk = pk.as_ref();
        let (bent, bdec) = match limited {
            Some(part) => part,
            None => most_binding(primary, global),
        };
        let bset = &bent.set;
        if hc.ietf && hc.revision != IetfRevision::Draft11 {
            emit.policy = if hc.only_binding {
                super::unnamed_policy_value(bset, Some(bdec.binding_index()))
            } else if global.is_some() {
                entry.headers.unnamed_with_cap.clone()
            } else {
                entry.headers.unnamed_own.clone()
            };
            if hc.revision == IetfRevision::Draft07 {
                emit.ratelimit = super::draft07_value(bdec);
            } else {
                let (l, r, t) = super::binding_numbers(bdec);
                let trio = [l, r, t].map(super::int_value);
                emit.trios.get_or_insert_default().draft6 = Some(trio);
            }
        } else if hc.ietf {
            let mut buf = Buf::new();
            if hc.only_binding {
                super::write_ratelimit(&mut buf, bset, bdec, Some(bdec.binding_index()), pk);
                emit.ratelimit = buf.value();
                emit.policy = if pk.is_none() && std::ptr::eq(bent, entry) {
                    entry
                        .headers
                        .each
                        .get(bdec.binding_index())
                        .cloned()
                        .flatten()
                } else {
                    super::policy_value(bset, Some(bdec.binding_index()), pk)
                };
            } else {
                super::write_ratelimit_items(&mut buf, &primary.0.headers.items, primary.1, pk);
                if let Some((ge, d)) = global {
                    buf.push(b", ");
                    super::write_ratelimit_items(&mut buf, &ge.headers.items, d, pk);
                }
                emit.ratelimit = buf.value();
                emit.policy = if pk.is_none() {
                    if global.is_some() {
                        entry.headers.policy_with_cap.clone()
                    } else {
                        entry.headers.policy_own.clone()
                    }
                } else {
                    let mut buf = Buf::new();
                    super::write_policy(&mut buf, &primary.0.set, None, pk);
                    if let Some((ge, _)) = global {
                        buf.push(b", ");
                        super::write_policy(&mut buf, &ge.set, None, pk);
                    }
                    buf.value()
                };
            }
        }
        if let Some(mode) = hc.legacy {
            let (limit, remaining, reset) = super::binding_numbers(bdec);
            let reset = match mode {
                LegacyReset::DeltaSeconds => reset,
                LegacyReset::UnixEpoch => {
                    let now = SystemTime::now()
                        .duration_since(UNIX_EPOCH)
                        .map_or(0, |d| d.as_micros() as u64);
                    super::ceil_secs(now) + reset
                }
            };
            emit.trios.get_or_insert_default().legacy =
                Some([limit, remaining, reset].map(super::int_value));
        }
        emit
    }
}
