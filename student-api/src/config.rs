//! Configuration: environment variables first, then an optional TOML file, then defaults.
//!
//! The settings both apps read (`DRAIN_GRACE`, `INSTANCE_NAME`, the registration ones) and the
//! shared value parsers come from `apps-shared` (`app_config!` adds those fields); this module
//! declares what is the API's own. Every env value goes through a `parse_*` function so that
//! a bad value is reported with the variable, the value and what was expected.

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;

use crate::shared::config::app_config;
pub use crate::shared::config::{
    BadValue, describe, hostname, parse_duration, parse_instance_name,
};

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
        /// Roster file (JSON Lines), shared by all replicas.
        #[config(env = "STUDENT_DATA", default = "/data/students.jsonl")]
        pub data: PathBuf,
    }
}

impl Config {
    /// Loads env vars, then the TOML file named by `STUDENT_API_CONFIG` (if set), then defaults.
    pub fn load() -> Result<Self, config_report::Problem> {
        Self::load_from(CONFIG_FILE_ENV)
    }
}

/// Parses a socket address such as `0.0.0.0:3000`.
pub fn parse_socket_addr(s: &str) -> Result<SocketAddr, BadValue> {
    crate::shared::config::socket_addr(s, "a socket address such as 0.0.0.0:3000 or [::]:3000")
}

impl fmt::Display for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "listen={} data={} drain_grace={}",
            self.listen,
            self.data.display(),
            humantime::format_duration(self.drain_grace)
        )?;
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
}
