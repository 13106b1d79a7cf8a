//! Configuration: environment variables first, then an optional TOML file, then defaults.
//!
//! The settings both apps read (`DRAIN_GRACE`, `INSTANCE_NAME`, the registration ones) and the
//! shared value parsers come from `apps-shared` (`app_config!` adds those fields); this module
//! declares what is the site's own. Every env value goes through a `parse_*` function so that
//! a bad value is reported with the variable, the value and what was expected.

use std::fmt;
use std::net::SocketAddr;

use apps_shared::app_config;
pub use apps_shared::config::{BadValue, hostname, parse_duration, parse_instance_name};

/// Env var naming an optional TOML config file.
pub const CONFIG_FILE_ENV: &str = "STATIC_SITE_CONFIG";

app_config! {
    /// Runtime configuration of the static site.
    #[derive(Debug, Clone, confique::Config)]
    #[config(layer_attr(serde(deny_unknown_fields)))]
    pub struct Config {
        /// Socket address to listen on.
        #[config(env = "STATIC_SITE_LISTEN", parse_env = parse_socket_addr, default = "0.0.0.0:8080")]
        pub listen: SocketAddr,
        /// Name of the balancer's sticky cookie for the static pool: the page shows whether
        /// the request carried it, and `POST /forget` clears it.
        #[config(env = "STICKY_COOKIE", parse_env = parse_cookie_name, default = "lb_static")]
        pub sticky_cookie: String,
        /// Where the page links to the balancer's stats dashboard (the page cannot know which
        /// port compose published it on).
        #[config(env = "DASHBOARD_URL", parse_env = parse_dashboard_url, default = "http://localhost:1936/")]
        pub dashboard_url: String,
    }
}

impl Config {
    /// Loads env vars, then the TOML file named by `STATIC_SITE_CONFIG` (if set), then defaults.
    pub fn load() -> Result<Self, config_report::Problem> {
        Self::load_from(CONFIG_FILE_ENV)
    }
}

/// Parses a socket address such as `0.0.0.0:8080`.
pub fn parse_socket_addr(s: &str) -> Result<SocketAddr, BadValue> {
    apps_shared::config::socket_addr(s, "a socket address such as 0.0.0.0:8080 or [::]:8080")
}

/// Accepts a cookie name: 1 to 64 RFC 6265 token characters.
pub fn parse_cookie_name(s: &str) -> Result<String, BadValue> {
    let s = s.trim();
    let token = |b: u8| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b);
    if !s.is_empty() && s.len() <= 64 && s.bytes().all(token) {
        Ok(s.to_owned())
    } else {
        Err(BadValue::new(
            s,
            "a cookie name (letters, digits and !#$%&'*+-.^_`|~)",
        ))
    }
}

/// Accepts an absolute `http://` or `https://` URL without spaces or quotes.
pub fn parse_dashboard_url(s: &str) -> Result<String, BadValue> {
    let s = s.trim();
    let rest = s
        .strip_prefix("http://")
        .or_else(|| s.strip_prefix("https://"));
    let clean = s.len() <= 2048 && s.bytes().all(|b| b.is_ascii_graphic() && b != b'"');
    match rest {
        Some(host) if !host.is_empty() && clean => Ok(s.to_owned()),
        _ => Err(BadValue::new(
            s,
            "an http:// or https:// URL such as http://localhost:1936/",
        )),
    }
}

impl fmt::Display for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "listen={} drain_grace={} sticky_cookie={} dashboard_url={}",
            self.listen,
            humantime::format_duration(self.drain_grace),
            self.sticky_cookie,
            self.dashboard_url
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
    fn cookie_names_are_tokens() {
        assert_eq!(parse_cookie_name(" lb_static ").unwrap(), "lb_static");
        for bad in ["", "a b", "a;b", "a=b", "é"] {
            assert!(parse_cookie_name(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn dashboard_url_must_be_http() {
        assert!(parse_dashboard_url("http://localhost:1936/").is_ok());
        assert!(parse_dashboard_url("https://lab.example/stats").is_ok());
        for bad in [
            "localhost:1936",
            "http://",
            "javascript:alert(1)",
            "http://a b/",
            "http://a\"b",
        ] {
            assert!(parse_dashboard_url(bad).is_err(), "{bad:?}");
        }
    }
}
