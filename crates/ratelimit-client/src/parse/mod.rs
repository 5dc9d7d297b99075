//! Defensive parsing of what upstreams put in headers and bodies.
//!
//! Upstream headers are input from the network: they can be missing, malformed, negative, non-finite or
//! absurdly large, contradict each other, or carry names of any length. Every parser here returns `None`
//! for anything it cannot read exactly; callers cap what they accept (see [`Caps`]) and bound names in
//! bytes ([`bounded_name`]), and each problem is a typed [`ParseError`], logged once per kind. So a hostile
//! header can neither panic the client, nor park it for a year, nor grow its memory, nor be read as
//! permission to send.

use std::time::Duration;

use http::HeaderMap;
use ratelimit_core::Micros;

mod error;
mod name;

pub use error::ParseError;
pub(crate) use error::{Problems, Reported};
pub(crate) use name::bounded_template;
pub use name::{bounded_name, MAX_NAME_BYTES};

/// Upper bounds applied to numbers read from upstream responses.
///
/// Values above a cap are clamped to it and reported ([`ParseError::AboveCap`]); this keeps a confused or hostile upstream from
/// blocking a route for days (Discord has reported `Reset-After: 102737` on a 50,000 bucket, dapi#5646).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Caps {
    /// Longest window or reset accepted, in microseconds (default one hour).
    pub max_reset: Micros,
    /// Longest `retry_after` accepted, in microseconds (default one hour).
    pub max_retry: Micros,
    /// Largest limit accepted (default 1,000,000).
    pub max_limit: u64,
}

impl Default for Caps {
    fn default() -> Self {
        Caps {
            max_reset: 3_600_000_000,
            max_retry: 3_600_000_000,
            max_limit: 1_000_000,
        }
    }
}

/// Reads a header as trimmed visible ASCII, `None` if absent, repeated with different values, or not text.
pub fn header_str<K>(headers: &HeaderMap, name: K) -> Option<&str>
where
    K: http::header::AsHeaderName + Copy + std::fmt::Debug,
{
    let mut values = headers.get_all(name).iter();
    let first = values.next()?;
    if values.any(|v| v != first) {
        tracing::debug!(header = ?name, "conflicting repeated header ignored");
        return None;
    }
    first.to_str().ok().map(str::trim)
}

/// Parses a non-negative decimal integer of at most 19 digits.
pub fn parse_u64(s: &str) -> Option<u64> {
    if s.is_empty() || s.len() > 19 || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

/// Parses non-negative decimal seconds (`"2"`, `"2.148"`, `"0.5"`) into microseconds, exactly, without
/// floating point. Digits past the sixth decimal are truncated. Exponents, signs, `NaN` and `inf` are
/// rejected; so are more than 12 integer digits.
pub fn parse_seconds(s: &str) -> Option<Micros> {
    let (int, frac) = match s.split_once('.') {
        Some((i, f)) => (i, f),
        None => (s, ""),
    };
    if int.is_empty() && frac.is_empty() {
        return None;
    }
    if int.len() > 12 || !int.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    if !frac.bytes().all(|b| b.is_ascii_digit()) || frac.len() > 32 {
        return None;
    }
    let whole: u64 = if int.is_empty() { 0 } else { int.parse().ok()? };
    let mut micros: u64 = 0;
    for (i, b) in frac.bytes().take(6).enumerate() {
        micros += u64::from(b - b'0') * 10u64.pow(5 - i as u32);
    }
    whole.checked_mul(1_000_000)?.checked_add(micros)
}

/// Converts float seconds (from a JSON body) into microseconds: `None` for negative or non-finite values.
pub fn float_seconds(v: f64) -> Option<Micros> {
    if !v.is_finite() || v < 0.0 {
        return None;
    }
    let micros = (v * 1_000_000.0).ceil();
    if micros >= u64::MAX as f64 {
        return Some(u64::MAX);
    }
    Some(micros as u64)
}

/// `Micros` to a [`Duration`].
pub fn micros(d: Micros) -> Duration {
    Duration::from_micros(d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seconds_are_exact() {
        assert_eq!(parse_seconds("2.148"), Some(2_148_000));
        assert_eq!(parse_seconds("5"), Some(5_000_000));
        assert_eq!(parse_seconds("0.0000019"), Some(1));
        assert_eq!(parse_seconds(".5"), Some(500_000));
        assert_eq!(parse_seconds("1."), Some(1_000_000));
        for bad in [
            "",
            ".",
            "-1",
            "1e3",
            "NaN",
            "inf",
            "1.2.3",
            " 1",
            "9999999999999",
            "+1",
        ] {
            assert_eq!(parse_seconds(bad), None, "{bad}");
        }
    }

    #[test]
    fn integers_are_strict() {
        assert_eq!(parse_u64("42"), Some(42));
        for bad in ["", "-1", "1.0", "99999999999999999999", "0x10"] {
            assert_eq!(parse_u64(bad), None, "{bad}");
        }
    }

    #[test]
    fn floats_reject_non_finite() {
        assert_eq!(float_seconds(0.661), Some(661_000));
        assert_eq!(float_seconds(f64::NAN), None);
        assert_eq!(float_seconds(f64::INFINITY), None);
        assert_eq!(float_seconds(-1.0), None);
        assert_eq!(float_seconds(1e300), Some(u64::MAX));
    }
}
