//! Configuration: environment variables first, then an optional TOML file, then defaults.
//!
//! The settings both apps read (`DRAIN_GRACE`, `INSTANCE_NAME`, the registration ones) and the
//! shared value parsers come from `apps-shared` (`app_config!` adds those fields); this module
//! declares what is the API's own. Every env value goes through a `parse_*` function so that
//! a bad value is reported with the variable, the value and what was expected.

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

pub use crate::store::postgres::{DatabaseUrl, parse_database_url};
use apps_shared::app_config;
pub use apps_shared::config::{BadValue, hostname, parse_duration, parse_instance_name};
pub use apps_shared::errors::{describe, mask_password};

/// Env var naming an optional TOML config file.
pub const CONFIG_FILE_ENV: &str = "STUDENT_API_CONFIG";

app_config! {
    /// Runtime configuration of the student API.
    #[derive(Debug, Clone, confique::Config)]
    #[config(layer_attr(serde(deny_unknown_fields)))]
    pub struct Config {
        /// Socket address to listen on.
        #[config(env = "STUDENT_API_LISTEN", parse_env = parse_socket_addr, default = "0.0.0.0:3000")]
        pub listen: SocketAddr,
        /// Roster file (JSON Lines), shared by all replicas; unused with `database_url`.
        #[config(env = "STUDENT_DATA", default = "/data/students.jsonl")]
        pub data: PathBuf,
        /// PostgreSQL database holding the roster instead of the file, for replicas on
        /// several hosts: `postgres://user:password@host:5432/database` (no TLS).
        #[config(env = "STUDENT_DATABASE_URL", parse_env = parse_database_url)]
        pub database_url: Option<DatabaseUrl>,
        /// Longest a request waits for the database (a connection and its statement)
        /// before answering 503.
        #[config(
            env = "STUDENT_DATABASE_TIMEOUT",
            parse_env = parse_database_timeout,
            deserialize_with = humantime_serde::deserialize,
            validate = Config::check_database_timeout,
            default = "5s"
        )]
        pub database_timeout: Duration,
    }
}

impl Config {
    /// Loads env vars, then the TOML file named by `STUDENT_API_CONFIG` (if set), then defaults.
    pub fn load() -> Result<Self, config_report::Problem> {
        Self::load_from(CONFIG_FILE_ENV)
    }

    /// confique `validate` for `database_timeout` (the file path; env values meet
    /// [`parse_database_timeout`]).
    fn check_database_timeout(timeout: &Duration) -> Result<(), &'static str> {
        if DATABASE_TIMEOUTS.contains(timeout) {
            Ok(())
        } else {
            Err("STUDENT_DATABASE_TIMEOUT (database_timeout) must be from 100ms to 10m")
        }
    }
}

/// Accepted database timeouts: long enough for a round trip, short enough that a request
/// does not hang on a dead database.
const DATABASE_TIMEOUTS: std::ops::RangeInclusive<Duration> =
    Duration::from_millis(100)..=Duration::from_secs(600);

/// Parses `STUDENT_DATABASE_TIMEOUT`: a duration from 100ms to 10m.
pub fn parse_database_timeout(s: &str) -> Result<Duration, BadValue> {
    const EXPECTED: &str = "a duration from 100ms to 10m such as 5s";
    parse_duration(s)
        .ok()
        .filter(|d| DATABASE_TIMEOUTS.contains(d))
        .ok_or_else(|| BadValue::new(s, EXPECTED))
}

/// Parses a socket address such as `0.0.0.0:3000`.
pub fn parse_socket_addr(s: &str) -> Result<SocketAddr, BadValue> {
    apps_shared::config::socket_addr(s, "a socket address such as 0.0.0.0:3000 or [::]:3000")
}

impl fmt::Display for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "listen={} ", self.listen)?;
        match &self.database_url {
            Some(url) => write!(
                f,
                "database={url} database_timeout={}",
                humantime::format_duration(self.database_timeout)
            )?,
            None => write!(f, "data={}", self.data.display())?,
        }
        write!(
            f,
            " drain_grace={}",
            humantime::format_duration(self.drain_grace)
        )?;
        self.fmt_load_and_faults(f)?;
        self.fmt_registration(f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_listen_names_value_and_expectation() {
        let err = parse_socket_addr("nope").unwrap_err().to_string();
        assert!(err.contains("\"nope\""), "{err}");
        assert!(err.contains("socket address"), "{err}");
    }

    #[test]
    fn database_timeouts_are_bounded() {
        assert_eq!(
            parse_database_timeout("5s").unwrap(),
            Duration::from_secs(5)
        );
        for bad in ["0s", "50ms", "1h", "soon"] {
            let err = parse_database_timeout(bad).unwrap_err().to_string();
            assert!(err.contains(bad) && err.contains("100ms"), "{err}");
        }
    }
}
