//! Sizes in `[unit.remediation]`, spelled as systemd spells them: `memory_max = "512M"`,
//! `cpu_quota = "150%"`; plain integers are bytes and percent.

use std::fmt;

use serde::Deserialize;
use serde::de::{self, Deserializer, Unexpected, Visitor};

/// Bytes, from an integer or a string with a 1024-based suffix K, M, G or T.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Bytes(pub u64);

/// `CPUQuota=` in percent of one CPU, from `"150%"` or an integer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CpuQuota(pub u64);

fn parse_bytes(text: &str) -> Option<u64> {
    let (digits, scale) = match text.char_indices().last()? {
        (i, 'K') => (&text[..i], 1u64 << 10),
        (i, 'M') => (&text[..i], 1 << 20),
        (i, 'G') => (&text[..i], 1 << 30),
        (i, 'T') => (&text[..i], 1 << 40),
        _ => (text, 1),
    };
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse::<u64>().ok()?.checked_mul(scale)
}

fn parse_percent(text: &str) -> Option<u64> {
    let digits = text.strip_suffix('%')?;
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// Both types read an unsigned integer or a string through `parse`.
struct SizeVisitor {
    expecting: &'static str,
    parse: fn(&str) -> Option<u64>,
}

impl Visitor<'_> for SizeVisitor {
    type Value = u64;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.expecting)
    }

    fn visit_str<E: de::Error>(self, text: &str) -> Result<u64, E> {
        (self.parse)(text).ok_or_else(|| E::invalid_value(Unexpected::Str(text), &self))
    }

    fn visit_u64<E: de::Error>(self, value: u64) -> Result<u64, E> {
        Ok(value)
    }

    fn visit_i64<E: de::Error>(self, value: i64) -> Result<u64, E> {
        u64::try_from(value).map_err(|_| E::invalid_value(Unexpected::Signed(value), &self))
    }
}

impl<'de> Deserialize<'de> for Bytes {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer
            .deserialize_any(SizeVisitor {
                expecting: r#"a size such as "512M", "2G" or a number of bytes"#,
                parse: parse_bytes,
            })
            .map(Bytes)
    }
}

impl<'de> Deserialize<'de> for CpuQuota {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer
            .deserialize_any(SizeVisitor {
                expecting: r#"a CPU quota such as "150%" (percent of one CPU)"#,
                parse: parse_percent,
            })
            .map(CpuQuota)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_take_systemd_suffixes() {
        assert_eq!(parse_bytes("512"), Some(512));
        assert_eq!(parse_bytes("4K"), Some(4096));
        assert_eq!(parse_bytes("512M"), Some(512 << 20));
        assert_eq!(parse_bytes("2G"), Some(2 << 30));
        assert_eq!(parse_bytes("1T"), Some(1 << 40));
    }

    #[test]
    fn malformed_sizes_are_rejected() {
        for text in [
            "",
            "M",
            "1.5G",
            "-1M",
            "5 M",
            "5MB",
            "99999999999999999999T",
            "5m",
        ] {
            assert_eq!(parse_bytes(text), None, "{text:?}");
        }
    }

    #[test]
    fn cpu_quota_is_a_percentage() {
        assert_eq!(parse_percent("150%"), Some(150));
        assert_eq!(parse_percent("150"), None);
        assert_eq!(parse_percent("%"), None);
        assert_eq!(parse_percent("1.5%"), None);
    }
}
