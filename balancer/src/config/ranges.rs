//! The bounds of the values that have them, and their refusal: a value out of range is an
//! error naming its env var or file key, the value and the range, never rounded into range.

use std::time::Duration;

use super::{ConfigError, Origin, RawConfig};

/// Shortest `discovery_interval`: DNS is asked at most four times a second per name.
pub(super) const MIN_DISCOVERY_INTERVAL: Duration = Duration::from_millis(250);
/// Shortest health-check `interval`.
pub(super) const MIN_CHECK_INTERVAL: Duration = Duration::from_millis(100);
/// Most `retries` of a pool: more attempts than this only multiply the load on a failing pool.
pub(super) const MAX_RETRIES: u32 = 10;

/// `value`, refused below `min` (not rounded up) naming `key` or its env var.
pub(super) fn at_least(
    value: Duration,
    min: Duration,
    origin: &Origin,
    key: &[&str],
) -> Result<Duration, ConfigError> {
    if value < min {
        return Err(origin.invalid(
            None,
            key,
            &humantime::format_duration(value).to_string(),
            format!("a duration of at least {}", humantime::format_duration(min)),
        ));
    }
    Ok(value)
}

/// A pool's `retries`, refused above [`MAX_RETRIES`].
pub(super) fn retries(n: u32, origin: &Origin, key: &[&str]) -> Result<u32, ConfigError> {
    if n > MAX_RETRIES {
        return Err(origin.invalid(
            None,
            key,
            &n.to_string(),
            format!("a whole number from 0 to {MAX_RETRIES}"),
        ));
    }
    Ok(n)
}

/// Shortest hedge delay: below a millisecond every request would be sent twice.
pub(super) const MIN_HEDGE_DELAY: Duration = Duration::from_millis(1);

/// A percentage (a hedge `budget`), refused above 100.
pub(super) fn percent(n: u32, origin: &Origin, key: &[&str]) -> Result<u32, ConfigError> {
    if n > 100 {
        return Err(origin.invalid(
            None,
            key,
            &n.to_string(),
            "a whole number of percent from 0 to 100",
        ));
    }
    Ok(n)
}

/// A health check's `rise` or `fall`: zero checks cannot change a state.
pub(super) fn streak(n: u32, origin: &Origin, key: &[&str]) -> Result<u32, ConfigError> {
    if n == 0 {
        return Err(origin.invalid(None, key, "0", "a whole number of at least 1"));
    }
    Ok(n)
}

/// Smallest request-head limit: a request line and a few ordinary headers.
pub(super) const MIN_HEADER_BYTES: u64 = 1024;
/// Largest request-head limit: every connection may buffer this much.
pub(super) const MAX_HEADER_BYTES: u64 = 1024 * 1024;

pub(super) fn header_limit(raw: &RawConfig, origin: &Origin) -> Result<usize, ConfigError> {
    let n = raw.limits.max_header_bytes.0;
    if !(MIN_HEADER_BYTES..=MAX_HEADER_BYTES).contains(&n) {
        return Err(origin.invalid(
            None,
            &["limits", "max_header_bytes"],
            &raw.limits.max_header_bytes.to_string(),
            "a size from 1KiB to 1MiB",
        ));
    }
    // In range, so it fits any usize.
    Ok(n as usize)
}

/// Largest `max_connections`: far beyond any descriptor limit a balancer gets.
pub(crate) const MAX_CONNECTIONS: u64 = 1_000_000;

pub(super) fn max_connections(raw: &RawConfig, origin: &Origin) -> Result<usize, ConfigError> {
    let n = raw.limits.max_connections;
    if !(1..=MAX_CONNECTIONS).contains(&n) {
        return Err(origin.invalid(
            None,
            &["limits", "max_connections"],
            &n.to_string(),
            format!("a whole number from 1 to {MAX_CONNECTIONS}"),
        ));
    }
    // In range, so it fits any usize.
    Ok(n as usize)
}
