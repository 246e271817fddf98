//! Durations in the config: `"250ms"`, `"5s"`, `"2m"`, `"1h30m"`, or a plain integer of seconds.

use std::fmt;
use std::time::Duration;

use serde::Deserializer;
use serde::de::{self, Unexpected, Visitor};

/// Units from largest to smallest; a duration names each at most once, in this order, so
/// `"1h30m"` reads one way only (`"30m1h"` and `"1m1m"` are rejected).
const UNITS: [(&str, u64); 4] = [("h", 3_600_000), ("m", 60_000), ("s", 1_000), ("ms", 1)];

/// Parses `"1h30m"`-style text; `None` when it is not such a duration or overflows.
fn parse(text: &str) -> Option<Duration> {
    let mut rest = text;
    let mut millis: u64 = 0;
    let mut next_unit = 0;
    if rest.is_empty() {
        return None;
    }
    while !rest.is_empty() {
        let digits = rest.len() - rest.trim_start_matches(|c: char| c.is_ascii_digit()).len();
        let number: u64 = rest[..digits].parse().ok()?;
        rest = &rest[digits..];
        let letters = rest.len()
            - rest
                .trim_start_matches(|c: char| c.is_ascii_alphabetic())
                .len();
        let unit = &rest[..letters];
        rest = &rest[letters..];
        let offset = UNITS[next_unit..]
            .iter()
            .position(|(name, _)| *name == unit)?;
        let (_, scale) = UNITS[next_unit + offset];
        next_unit += offset + 1;
        millis = millis.checked_add(number.checked_mul(scale)?)?;
    }
    Some(Duration::from_millis(millis))
}

struct DurationVisitor;

impl Visitor<'_> for DurationVisitor {
    type Value = Duration;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(r#"a duration such as "5s", "250ms" or "2m""#)
    }

    fn visit_str<E: de::Error>(self, text: &str) -> Result<Duration, E> {
        parse(text).ok_or_else(|| E::invalid_value(Unexpected::Str(text), &self))
    }

    fn visit_u64<E: de::Error>(self, seconds: u64) -> Result<Duration, E> {
        Ok(Duration::from_secs(seconds))
    }

    fn visit_i64<E: de::Error>(self, seconds: i64) -> Result<Duration, E> {
        u64::try_from(seconds)
            .map(Duration::from_secs)
            .map_err(|_| E::invalid_value(Unexpected::Signed(seconds), &self))
    }
}

/// For `#[serde(deserialize_with = "...")]` on a `Duration` field.
pub(crate) fn deserialize<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Duration, D::Error> {
    deserializer.deserialize_any(DurationVisitor)
}

/// For an optional `Duration` field; pair it with `#[serde(default)]` so a missing key is `None`.
pub(crate) fn deserialize_option<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<Duration>, D::Error> {
    deserialize(deserializer).map(Some)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(millis: u64) -> Option<Duration> {
        Some(Duration::from_millis(millis))
    }

    #[test]
    fn each_unit_scales_its_number() {
        assert_eq!(parse("250ms"), ms(250));
        assert_eq!(parse("5s"), ms(5_000));
        assert_eq!(parse("2m"), ms(120_000));
        assert_eq!(parse("1h"), ms(3_600_000));
    }

    #[test]
    fn zero_is_a_duration() {
        assert_eq!(parse("0s"), Some(Duration::ZERO));
        assert_eq!(parse("0ms"), Some(Duration::ZERO));
    }

    #[test]
    fn units_combine_from_largest_to_smallest() {
        assert_eq!(parse("1h30m"), ms(5_400_000));
        assert_eq!(parse("1m30s"), ms(90_000));
        assert_eq!(parse("1h2m3s4ms"), ms(3_723_004));
    }

    #[test]
    fn units_out_of_order_or_repeated_are_rejected() {
        assert_eq!(parse("30m1h"), None);
        assert_eq!(parse("1m1m"), None);
        assert_eq!(parse("1ms1s"), None);
    }

    #[test]
    fn text_that_is_not_number_then_unit_is_rejected() {
        for text in [
            "",
            "5",
            "s",
            "5 s",
            " 5s",
            "5s ",
            "1.5s",
            "-5s",
            "5 parsecs",
            "5S",
            "5sec",
            "h1",
        ] {
            assert_eq!(parse(text), None, "{text:?} should be rejected");
        }
    }

    #[test]
    fn overflowing_duration_is_rejected() {
        assert_eq!(parse("18446744073709551616s"), None);
        assert_eq!(parse("18446744073709551615h"), None);
    }
}
