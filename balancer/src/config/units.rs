//! Human units in config: durations (`500ms`, `2s`) and byte sizes (`16KiB`, `10MB`).

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The longest duration any setting accepts: longer ones are typos, and would overflow the
/// deadlines computed from them.
pub(super) const MAX_DURATION: Duration = Duration::from_secs(365 * 24 * 3600);

/// Deserializes a human duration (`500ms`, `2s`, `1m`), at most [`MAX_DURATION`].
pub(super) fn duration<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let s = String::deserialize(d)?;
    parse_duration(&s).map_err(serde::de::Error::custom)
}

/// Why a duration or a size was refused; the message quotes the text.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub(crate) enum UnitError {
    /// Not a human duration.
    #[error("`{text}` is not a duration ({reason}); expected e.g. 500ms, 2s, 1m")]
    NotADuration {
        /// What was written.
        text: String,
        /// humantime's reason.
        reason: humantime::DurationError,
    },
    /// Longer than [`MAX_DURATION`].
    #[error("`{0}` is too long; expected at most 365d")]
    TooLong(String),
    /// No number in front.
    #[error("`{0}` is not a size; expected e.g. 16KiB, 10MB, 1048576")]
    NotASize(String),
    /// A unit that is not one of ours.
    #[error("`{text}`: unknown unit `{unit}`; expected B, KB, KiB, MB, MiB, GB or GiB")]
    UnknownUnit {
        /// What was written.
        text: String,
        /// The unit, lower-cased.
        unit: String,
    },
    /// More bytes than a u64 holds.
    #[error("`{0}` is too large; expected at most 16EiB")]
    TooLarge(String),
}

/// Parses a human duration of at most [`MAX_DURATION`].
pub(super) fn parse_duration(s: &str) -> Result<Duration, UnitError> {
    let d = humantime::parse_duration(s).map_err(|reason| UnitError::NotADuration {
        text: s.to_owned(),
        reason,
    })?;
    if d > MAX_DURATION {
        return Err(UnitError::TooLong(s.to_owned()));
    }
    Ok(d)
}

/// serde `with` module for optional durations in the file, bounded like [`duration`].
pub(super) mod opt_duration {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    /// Deserializes an optional human duration.
    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Option<Duration>, D::Error> {
        Option::<String>::deserialize(d)?
            .map(|s| super::parse_duration(&s).map_err(serde::de::Error::custom))
            .transpose()
    }

    /// Serializes as a human duration.
    pub(crate) fn serialize<S: Serializer>(v: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        humantime_serde::serialize(v, s)
    }
}

/// A size in bytes, written as a number or with a unit (`16KiB`, `10MB`, `1GiB`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct ByteSize(pub u64);

impl ByteSize {
    /// Parses `123`, `16KiB`, `10MB`, `1 GiB` (case-insensitive units).
    pub(crate) fn parse(s: &str) -> Result<Self, UnitError> {
        let t = s.trim();
        let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
        let (num, unit) = t.split_at(split);
        let n: u64 = num.parse().map_err(|_| UnitError::NotASize(s.to_owned()))?;
        let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
            "" | "b" => 1,
            "k" | "kb" => 1_000,
            "kib" => 1 << 10,
            "m" | "mb" => 1_000_000,
            "mib" => 1 << 20,
            "g" | "gb" => 1_000_000_000,
            "gib" => 1 << 30,
            other => {
                return Err(UnitError::UnknownUnit {
                    text: s.to_owned(),
                    unit: other.to_owned(),
                });
            }
        };
        n.checked_mul(mult)
            .map(ByteSize)
            .ok_or_else(|| UnitError::TooLarge(s.to_owned()))
    }
}

impl fmt::Display for ByteSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.0;
        for (unit, size) in [("GiB", 1u64 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)] {
            if n >= size && n.is_multiple_of(size) {
                return write!(f, "{}{unit}", n / size);
            }
        }
        write!(f, "{n}")
    }
}

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        // A visitor rather than an untagged enum, whose error would name the enum.
        struct Size;
        impl serde::de::Visitor<'_> for Size {
            type Value = ByteSize;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a size such as 16KiB or 10MB, or a number of bytes")
            }
            fn visit_u64<E: serde::de::Error>(self, n: u64) -> Result<ByteSize, E> {
                Ok(ByteSize(n))
            }
            fn visit_i64<E: serde::de::Error>(self, n: i64) -> Result<ByteSize, E> {
                u64::try_from(n)
                    .map(ByteSize)
                    .map_err(|_| E::invalid_value(serde::de::Unexpected::Signed(n), &self))
            }
            fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<ByteSize, E> {
                ByteSize::parse(s).map_err(E::custom)
            }
        }
        d.deserialize_any(Size)
    }
}

impl Serialize for ByteSize {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(ByteSize::parse("16KiB").unwrap().0, 16384);
        assert_eq!(ByteSize::parse("10MB").unwrap().0, 10_000_000);
        assert_eq!(ByteSize::parse("42").unwrap().0, 42);
        assert!(ByteSize::parse("ten").is_err());
        assert!(
            ByteSize::parse("1XB")
                .unwrap_err()
                .to_string()
                .contains("unknown unit")
        );
        assert_eq!(ByteSize(16384).to_string(), "16KiB");
    }

    #[test]
    fn durations_are_bounded() {
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("365d").unwrap(), MAX_DURATION);
        assert!(
            parse_duration("366d")
                .unwrap_err()
                .to_string()
                .contains("at most 365d")
        );
        assert!(parse_duration("500000000000y").is_err());
        assert!(
            parse_duration("soon")
                .unwrap_err()
                .to_string()
                .contains("not a duration")
        );
    }
}
