//! What can be wrong with an upstream's rate-limit headers and bodies, and how it is reported: each kind
//! of problem is logged once (at `warn`, naming the header and what to change), every occurrence is counted
//! in `ratelimit_client_malformed_total{kind}`, and the observation carries the first problem so that the
//! scheduler never reads rejected evidence as permission to send.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

use http::header::AsHeaderName;
use http::HeaderMap;
use ratelimit_core::Micros;

use super::{bounded_name, MAX_NAME_BYTES};

/// One header of a group: its name, its raw value if present, and how to read it.
pub(crate) type Field<'a, T> = (&'static str, Option<&'a str>, fn(&str) -> Option<T>);

/// Why a rate-limit header or body value was rejected or clamped.
///
/// ```
/// use ratelimit_client::parse::ParseError;
/// let e = ParseError::RemainingAboveLimit { header: "x-ratelimit-remaining", remaining: 9, limit: 5 };
/// assert_eq!(e.kind(), "remaining_above_limit");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ParseError {
    /// The value is not visible ASCII text (obs-text or control bytes).
    #[error("upstream header `{header}` is not visible ASCII text; it is ignored")]
    NotText {
        /// The header.
        header: &'static str,
    },
    /// The header is repeated with different values.
    #[error("upstream header `{header}` is repeated with different values; it is ignored")]
    Conflicting {
        /// The header.
        header: &'static str,
    },
    /// Not a value the protocol can produce: a negative, fractional, non-finite or over-long number, a
    /// count with a unit, an unknown keyword.
    #[error("upstream value `{header}` is not what the protocol can produce; the response's rate-limit evidence in it is ignored")]
    Malformed {
        /// The header (or body field).
        header: &'static str,
    },
    /// Some of a bucket's headers are present and others missing.
    #[error(
        "upstream rate-limit headers are incomplete (`{header}` is missing); the bucket is ignored"
    )]
    Incomplete {
        /// The missing header.
        header: &'static str,
    },
    /// More remaining than the limit allows: the counts contradict each other.
    #[error("upstream reports {remaining} remaining of a limit of {limit} in `{header}`; contradictory counts are ignored")]
    RemainingAboveLimit {
        /// The header reporting what remains.
        header: &'static str,
        /// What remains, as reported.
        remaining: u64,
        /// The limit, as reported.
        limit: u64,
    },
    /// A limit of zero requests per window.
    #[error("upstream reports a limit of 0 in `{header}`; the bucket is ignored")]
    ZeroLimit {
        /// The header.
        header: &'static str,
    },
    /// A number above the configured cap; the cap is used instead.
    #[error("upstream value `{header}` = {value} is above the cap of {cap}; the cap is used (raise it with `Caps` if the upstream means it)")]
    AboveCap {
        /// The header (or body field).
        header: &'static str,
        /// The value as reported (microseconds for times).
        value: u64,
        /// The cap applied.
        cap: u64,
    },
    /// A name (bucket hash, resource, policy) longer than [`MAX_NAME_BYTES`]: it is kept as a fixed-size
    /// digest of itself (see [`bounded_name`](super::bounded_name)).
    #[error("upstream name in `{header}` is {len} bytes long; names over {max} bytes are kept as a 17-byte digest", max = MAX_NAME_BYTES)]
    NameTooLong {
        /// The header.
        header: &'static str,
        /// Its length in bytes.
        len: usize,
    },
    /// A name with characters the protocol never uses (or empty).
    #[error("upstream name in `{header}` is empty or has characters the protocol does not use; it is ignored")]
    BadName {
        /// The header.
        header: &'static str,
    },
    /// A structured field (RFC 9651) that does not parse.
    #[error("upstream header `{header}` is not a well-formed structured field; it is ignored")]
    BadStructure {
        /// The header.
        header: &'static str,
    },
}

impl ParseError {
    /// A short label for logs and metrics (one per variant).
    pub fn kind(&self) -> &'static str {
        KINDS[self.index()]
    }

    fn index(&self) -> usize {
        match self {
            ParseError::NotText { .. } => 0,
            ParseError::Conflicting { .. } => 1,
            ParseError::Malformed { .. } => 2,
            ParseError::Incomplete { .. } => 3,
            ParseError::RemainingAboveLimit { .. } => 4,
            ParseError::ZeroLimit { .. } => 5,
            ParseError::AboveCap { .. } => 6,
            ParseError::NameTooLong { .. } => 7,
            ParseError::BadName { .. } => 8,
            ParseError::BadStructure { .. } => 9,
        }
    }
}

const KINDS: [&str; 10] = [
    "not_text",
    "conflicting",
    "malformed",
    "incomplete",
    "remaining_above_limit",
    "zero_limit",
    "above_cap",
    "name_too_long",
    "bad_name",
    "bad_structure",
];

/// The kinds of problem a profile has already logged (shared by its clones): one bit per kind.
#[derive(Debug, Clone, Default)]
pub(crate) struct Reported(Arc<AtomicU32>);

impl Reported {
    fn report(&self, e: ParseError) {
        metrics::counter!("ratelimit_client_malformed_total", "kind" => e.kind()).increment(1);
        let bit = 1u32 << e.index();
        if self.0.load(Ordering::Relaxed) & bit == 0
            && self.0.fetch_or(bit, Ordering::Relaxed) & bit == 0
        {
            tracing::warn!(
                kind = e.kind(),
                "{e} (logged once per kind; later ones are counted in ratelimit_client_malformed_total)"
            );
        }
    }
}

/// The problems found while reading one response: each is reported, the first is kept for the observation.
#[derive(Debug)]
pub(crate) struct Problems<'a> {
    reported: &'a Reported,
    pub(crate) first: Option<ParseError>,
}

impl<'a> Problems<'a> {
    pub(crate) fn new(reported: &'a Reported) -> Self {
        Problems {
            reported,
            first: None,
        }
    }

    pub(crate) fn note(&mut self, e: ParseError) {
        self.reported.report(e);
        self.first.get_or_insert(e);
    }

    /// `v`, or `cap` when above it (noted).
    pub(crate) fn cap(&mut self, header: &'static str, v: u64, cap: Micros) -> u64 {
        if v > cap {
            self.note(ParseError::AboveCap {
                header,
                value: v,
                cap,
            });
            cap
        } else {
            v
        }
    }

    /// A header as trimmed visible ASCII; absent, conflicting or non-text reads as `None` (the last two
    /// noted under `label`).
    pub(crate) fn header<'h, K: AsHeaderName>(
        &mut self,
        headers: &'h HeaderMap,
        key: K,
        label: &'static str,
    ) -> Option<&'h str> {
        let mut values = headers.get_all(key).iter();
        let first = values.next()?;
        if values.any(|v| v != first) {
            self.note(ParseError::Conflicting { header: label });
            return None;
        }
        self.text(first, label)
    }

    /// A header value as trimmed visible ASCII, or `None` (noted).
    pub(crate) fn text<'h>(
        &mut self,
        v: &'h http::HeaderValue,
        name: &'static str,
    ) -> Option<&'h str> {
        match v.to_str() {
            Ok(s) => Some(s.trim()),
            Err(_) => {
                self.note(ParseError::NotText { header: name });
                None
            }
        }
    }

    /// The three values of one bucket, read together (`(header, raw value, parser)` each). None present
    /// is no evidence, and nothing is noted; one missing while others are present is
    /// [`ParseError::Incomplete`]; one that does not parse is [`ParseError::Malformed`].
    pub(crate) fn all_three<A, B, C>(
        &mut self,
        a: Field<'_, A>,
        b: Field<'_, B>,
        c: Field<'_, C>,
    ) -> Option<(A, B, C)> {
        if a.1.is_none() && b.1.is_none() && c.1.is_none() {
            return None;
        }
        if let Some(missing) = [(a.0, a.1), (b.0, b.1), (c.0, c.1)]
            .iter()
            .find_map(|(h, v)| v.is_none().then_some(*h))
        {
            self.note(ParseError::Incomplete { header: missing });
            return None;
        }
        let (x, y, z) = (
            self.number(a.0, a.1, a.2),
            self.number(b.0, b.1, b.2),
            self.number(c.0, c.1, c.2),
        );
        Some((x?, y?, z?))
    }

    /// A limit's size, what remains of it and its reset, read together ([`all_three`](Self::all_three)) and
    /// checked as [`counts`](Self::counts) against `max_limit`; the reset as read (uncapped).
    pub(crate) fn limit_counts(
        &mut self,
        limit: Field<'_, u64>,
        remaining: Field<'_, u64>,
        reset: Field<'_, u64>,
        max_limit: u64,
    ) -> Option<(u64, u64, u64)> {
        let (l, r, t) = self.all_three(limit, remaining, reset)?;
        let (l, r) = self.counts((limit.0, l), (remaining.0, r), max_limit)?;
        Some((l, r, t))
    }

    /// A limit and what remains of it, as the protocol can produce them: a zero limit, or more remaining
    /// than the limit, is rejected (contradictory counts are no evidence); a limit above `cap` is clamped,
    /// and what remains with it.
    pub(crate) fn counts(
        &mut self,
        (limit_header, limit): (&'static str, u64),
        (remaining_header, remaining): (&'static str, u64),
        cap: u64,
    ) -> Option<(u64, u64)> {
        if limit == 0 {
            self.note(ParseError::ZeroLimit {
                header: limit_header,
            });
            return None;
        }
        if remaining > limit {
            self.note(ParseError::RemainingAboveLimit {
                header: remaining_header,
                remaining,
                limit,
            });
            return None;
        }
        let limit = self.cap(limit_header, limit, cap);
        Some((limit, remaining.min(limit)))
    }

    /// A name as the protocol can produce it (`valid` says which bytes it uses), bounded in bytes (see
    /// [`bounded_name`]): an empty or invalid name is `None`, a long one is kept as its digest (both noted).
    pub(crate) fn name(
        &mut self,
        header: &'static str,
        raw: &str,
        valid: impl Fn(u8) -> bool,
    ) -> Option<String> {
        if raw.is_empty() || !raw.bytes().all(valid) {
            self.note(ParseError::BadName { header });
            return None;
        }
        if raw.len() > MAX_NAME_BYTES {
            self.note(ParseError::NameTooLong {
                header,
                len: raw.len(),
            });
        }
        Some(bounded_name(raw).into_owned())
    }

    /// Reads `s` with `parse`, noting a value that does not parse.
    pub(crate) fn number<T>(
        &mut self,
        header: &'static str,
        s: Option<&str>,
        parse: impl FnOnce(&str) -> Option<T>,
    ) -> Option<T> {
        let s = s?;
        let v = parse(s);
        if v.is_none() {
            self.note(ParseError::Malformed { header });
        }
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_kind_has_its_own_label_and_bit() {
        let all = [
            ParseError::NotText { header: "h" },
            ParseError::Conflicting { header: "h" },
            ParseError::Malformed { header: "h" },
            ParseError::Incomplete { header: "h" },
            ParseError::RemainingAboveLimit {
                header: "h",
                remaining: 2,
                limit: 1,
            },
            ParseError::ZeroLimit { header: "h" },
            ParseError::AboveCap {
                header: "h",
                value: 2,
                cap: 1,
            },
            ParseError::NameTooLong {
                header: "h",
                len: 65,
            },
            ParseError::BadName { header: "h" },
            ParseError::BadStructure { header: "h" },
        ];
        for (i, e) in all.iter().enumerate() {
            assert_eq!(e.index(), i);
            assert_eq!(e.kind(), KINDS[i]);
        }
    }

    #[test]
    fn problems_keep_the_first_and_report_each() {
        let reported = Reported::default();
        let mut p = Problems::new(&reported);
        assert_eq!(p.cap("t", 5, 10), 5);
        assert_eq!(p.first, None);
        assert_eq!(p.cap("t", 50, 10), 10);
        p.note(ParseError::ZeroLimit { header: "l" });
        assert_eq!(
            p.first,
            Some(ParseError::AboveCap {
                header: "t",
                value: 50,
                cap: 10
            })
        );
        assert_eq!(reported.0.load(Ordering::Relaxed), (1 << 6) | (1 << 5));
    }
}
