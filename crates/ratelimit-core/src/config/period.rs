//! Periods as people write them: `"500ms"`, `"10s"`, `"10m"`, `"1h"`, `"1d"`, or a bare unit (`"hour"`).

use std::fmt;
use std::time::Duration;

use serde::de::{self, Deserializer, Visitor};
use serde::{Deserialize, Serialize, Serializer};

/// The units a period may be written in, largest first (formatting picks the largest that divides exactly).
const UNITS: [(&str, u64); 6] = [
    ("d", 86_400_000_000),
    ("h", 3_600_000_000),
    ("m", 60_000_000),
    ("s", 1_000_000),
    ("ms", 1_000),
    ("us", 1),
];

/// How a period's text was wrong; the message says what to write instead.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PeriodError {
    /// No unit, an unknown unit, or no number.
    #[error("{0:?} is not a period: write a number and a unit (us, ms, s, m, h, d), e.g. \"1h\" or \"10s\"")]
    Syntax(String),
    /// The number does not fit.
    #[error("{0:?} is too long a period: the longest a quota may cover is about 35 years")]
    TooLong(String),
    /// Zero.
    #[error("{0:?} is zero: give a period of at least 1us")]
    Zero(String),
}

/// Parses a period: a number and a unit (`us`, `ms`, `s`, `m`, `h`, `d`, or their long names `second`,
/// `minutes`, …), or a bare unit meaning one of it (`"hour"`).
///
/// ```
/// use ratelimit_core::config::parse_period;
/// use std::time::Duration;
///
/// assert_eq!(parse_period("10s")?, Duration::from_secs(10));
/// assert_eq!(parse_period("hour")?, Duration::from_secs(3600));
/// assert!(parse_period("10").is_err(), "a number without a unit is ambiguous");
/// # Ok::<(), ratelimit_core::config::PeriodError>(())
/// ```
pub fn parse_period(text: &str) -> Result<Duration, PeriodError> {
    let t = text.trim();
    let digits = t.bytes().take_while(u8::is_ascii_digit).count();
    let (number, unit) = t.split_at(digits);
    let count: u64 = match number {
        "" => 1,
        n => n
            .parse()
            .map_err(|_| PeriodError::TooLong(text.to_owned()))?,
    };
    let micros_per_unit =
        unit_micros(unit.trim()).ok_or_else(|| PeriodError::Syntax(text.to_owned()))?;
    let micros = count
        .checked_mul(micros_per_unit)
        .ok_or_else(|| PeriodError::TooLong(text.to_owned()))?;
    if micros == 0 {
        return Err(PeriodError::Zero(text.to_owned()));
    }
    Ok(Duration::from_micros(micros))
}

fn unit_micros(unit: &str) -> Option<u64> {
    let short = match unit {
        "us" | "µs" | "micros" | "microsecond" | "microseconds" => "us",
        "ms" | "millis" | "millisecond" | "milliseconds" => "ms",
        "s" | "sec" | "secs" | "second" | "seconds" => "s",
        "m" | "min" | "mins" | "minute" | "minutes" => "m",
        "h" | "hr" | "hour" | "hours" => "h",
        "d" | "day" | "days" => "d",
        _ => return None,
    };
    UNITS.iter().find(|(u, _)| *u == short).map(|(_, m)| *m)
}

/// Writes `period` in the largest unit that divides it exactly (`3600 s` → `"1h"`), as [`parse_period`]
/// reads it back.
pub fn format_period(period: Duration) -> String {
    let micros = u64::try_from(period.as_micros()).unwrap_or(u64::MAX);
    let (unit, size) = UNITS
        .iter()
        .find(|(_, size)| micros % size == 0)
        .copied()
        .unwrap_or(("us", 1));
    format!("{}{unit}", micros / size)
}

/// A period in configuration: deserializes from the text [`parse_period`] reads, serializes as
/// [`format_period`] writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Period(pub Duration);

impl<'de> Deserialize<'de> for Period {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct PeriodVisitor;
        impl Visitor<'_> for PeriodVisitor {
            type Value = Period;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a period such as \"10s\" or \"1h\"")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Period, E> {
                parse_period(v).map(Period).map_err(E::custom)
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Period, E> {
                Err(E::custom(format!(
                    "{v} has no unit: write it as a string with one, e.g. \"{v}s\" or \"{v}ms\""
                )))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Period, E> {
                self.visit_u64(v.unsigned_abs())
            }
        }
        deserializer.deserialize_str(PeriodVisitor)
    }
}

impl Serialize for Period {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&format_period(self.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn periods_read_back_as_written() {
        for text in [
            "1us", "500ms", "10s", "90s", "1m", "10m", "1h", "36h", "1d", "7d",
        ] {
            let d = parse_period(text).unwrap();
            assert_eq!(format_period(d), text);
        }
        assert_eq!(format_period(Duration::from_secs(3600)), "1h");
        assert_eq!(parse_period("minute").unwrap(), Duration::from_secs(60));
        assert_eq!(
            parse_period(" 2 hours ").unwrap(),
            Duration::from_secs(7200)
        );
    }

    #[test]
    fn bad_periods_say_what_to_write() {
        assert!(matches!(parse_period("10"), Err(PeriodError::Syntax(_))));
        assert!(matches!(
            parse_period("10 fortnights"),
            Err(PeriodError::Syntax(_))
        ));
        assert!(matches!(parse_period("0s"), Err(PeriodError::Zero(_))));
        assert!(matches!(
            parse_period("99999999999999999999d"),
            Err(PeriodError::TooLong(_))
        ));
        assert!(matches!(
            parse_period("9999999999999d"),
            Err(PeriodError::TooLong(_))
        ));
        let msg = parse_period("10x").unwrap_err().to_string();
        assert!(msg.contains("e.g. \"1h\""), "{msg}");
    }
}
