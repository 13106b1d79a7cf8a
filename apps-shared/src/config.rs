//! The settings both apps read, declared once, and the value parsers behind them.
//!
//! Each app's `config` module declares its own `Config` with
//! [`app_config!`](crate::app_config), which adds the shared fields (`drain_grace`,
//! `instance_name`, the `register_*` settings, `load_capacity` and the `lab_*` fault knobs)
//! and their methods. The struct stays flat on purpose: confique's `nested` would move the registration
//! keys into a TOML table, and the file keys (`register_url`, ...) are a contract.
//!
//! Every env value goes through a `parse_*` function that says what it expected; loading goes
//! through the `config-report` crate, which names the variable or file key and the value.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use config_report::{self as config_error, Problem, Source};

/// The `--help` lines of the variables [`app_config!`](crate::app_config) adds, as a literal
/// for `concat!` (each app's `HELP` puts its own variables around it).
#[macro_export]
macro_rules! shared_env_help {
    () => {
        "    DRAIN_GRACE          time /healthz reports draining before shutdown [2s]
    INSTANCE_NAME        X-Instance value [hostname]
    BALANCER_REGISTER_URL  announce this replica to the balancer, e.g.
                         http://balancer:1936/api/pools/dynamic/members [unset: don't]
    BALANCER_ADMIN_TOKEN bearer token for the balancer's admin API [unset]
    REGISTER_ADVERTISE   ip:port to announce [listen port on the IP the balancer sees]
    REGISTER_INTERVAL    time between heartbeats; TTL = 3x, at least 5s [2s]
    LOAD_CAPACITY        requests in flight reported as full utilization in the
                         endpoint-load-metrics header on every response [100]
    LAB_DELAY            lab fault: extra latency per request, e.g. 50ms [0ms]
    LAB_CPU              lab fault: CPU spinning per request, e.g. 5ms [0ms]
    LAB_ERROR_RATE       lab fault: share of requests answered 500, 0 to 1 [0]
    LAB_UNHEALTHY        lab fault: /healthz answers 503 (1/0) [0]
                         (at run time: PUT /fault with BALANCER_ADMIN_TOKEN)
"
    };
}

/// Declares an app's `Config`: the attributes and fields written at the call site, then the
/// fields both apps share, and an `impl` with `registration`, `instance`, `faults`,
/// `load_from` (every source, then the cross-field checks), `fmt_load_and_faults` and
/// `fmt_registration` (the tail of `Display`).
///
/// The caller's module must provide `parse_socket_addr` (its message shows the app's own
/// port), used here for `REGISTER_ADVERTISE`, and the caller's crate must depend on
/// `confique`, `config-report`, `humantime` and `humantime-serde`, which the expansion
/// names.
#[macro_export]
macro_rules! app_config {
    ($(#[$($attr:tt)*])* pub struct $name:ident { $($fields:tt)* }) => {
        $(#[$($attr)*])*
        pub struct $name {
            $($fields)*
            /// How long /healthz reports `draining` while still serving, before shutting down.
            #[config(
                env = "DRAIN_GRACE",
                parse_env = $crate::config::parse_duration,
                deserialize_with = humantime_serde::deserialize,
                default = "2s"
            )]
            pub drain_grace: std::time::Duration,
            /// Name sent in `X-Instance`; the hostname when unset.
            #[config(env = "INSTANCE_NAME", parse_env = $crate::config::parse_instance_name)]
            pub instance_name: Option<String>,
            /// Balancer pool to announce this replica to, `http://host[:port]/path` (plain
            /// HTTP only), e.g. `http://balancer:1936/api/pools/dynamic/members` (the site's
            /// pool is `static`); `/{ip}:{port}` is appended. Unset: no self-registration.
            #[config(env = "BALANCER_REGISTER_URL", parse_env = $crate::register::parse_url)]
            pub register_url: Option<$crate::register::RegisterUrl>,
            /// Bearer token for the balancer's admin API; required with `register_url`.
            #[config(env = "BALANCER_ADMIN_TOKEN", parse_env = $crate::register::parse_token)]
            pub admin_token: Option<$crate::register::Token>,
            /// `ip:port` to announce; unset = the listen port on this host's IP towards the
            /// balancer.
            #[config(env = "REGISTER_ADVERTISE", parse_env = parse_socket_addr)]
            pub register_advertise: Option<std::net::SocketAddr>,
            /// Time between registration heartbeats (100ms..=20m); the TTL sent is three of
            /// them, at least 5 s.
            #[config(
                env = "REGISTER_INTERVAL",
                parse_env = $crate::register::parse_interval,
                deserialize_with = humantime_serde::deserialize,
                // `$name::`, not a path written here: confique names its argument with the
                // validator's span, and a span from this macro would hide it (hygiene).
                validate = $name::check_register_interval,
                default = "2s"
            )]
            pub register_interval: std::time::Duration,
            /// Requests in flight at which this replica reports itself fully used
            /// (`application_utilization` 1.0 in its `endpoint-load-metrics` header).
            #[config(
                env = "LOAD_CAPACITY",
                parse_env = $crate::load::parse_capacity,
                validate = $name::check_load_capacity,
                default = 100
            )]
            pub load_capacity: u32,
            /// Lab fault: extra latency per request, whole milliseconds up to 60s.
            #[config(
                env = "LAB_DELAY",
                parse_env = $crate::faults::parse_delay,
                deserialize_with = humantime_serde::deserialize,
                validate = $name::check_lab_delay,
                default = "0ms"
            )]
            pub lab_delay: std::time::Duration,
            /// Lab fault: CPU work (spinning) per request, whole milliseconds up to 1s.
            #[config(
                env = "LAB_CPU",
                parse_env = $crate::faults::parse_cpu,
                deserialize_with = humantime_serde::deserialize,
                validate = $name::check_lab_cpu,
                default = "0ms"
            )]
            pub lab_cpu: std::time::Duration,
            /// Lab fault: share of requests answered 500, from 0 to 1.
            #[config(
                env = "LAB_ERROR_RATE",
                parse_env = $crate::faults::parse_error_rate,
                validate = $name::check_lab_error_rate,
                default = 0.0
            )]
            pub lab_error_rate: f64,
            /// Lab fault: `/healthz` answers 503 `unhealthy`.
            #[config(env = "LAB_UNHEALTHY", parse_env = $crate::faults::parse_flag, default = false)]
            pub lab_unhealthy: bool,
        }

        impl $name {
            /// Registration settings, when a register URL is configured.
            pub fn registration(&self) -> Option<$crate::register::Settings> {
                Some($crate::register::Settings {
                    url: self.register_url.clone()?,
                    token: self.admin_token.clone()?,
                    advertise: self.register_advertise,
                    interval: self.register_interval,
                })
            }

            /// The name this instance reports: `instance_name`, else the hostname, else
            /// `unknown`.
            pub fn instance(&self) -> String {
                self.instance_name
                    .clone()
                    .or_else($crate::config::hostname)
                    .unwrap_or_else(|| "unknown".to_owned())
            }

            /// Loads env vars, then the TOML file named by the env var `file_env` (if set),
            /// then defaults, and checks the values that only make sense together.
            pub fn load_from(
                file_env: &str,
            ) -> Result<Self, config_report::Problem> {
                let config: Self = $crate::config::load(file_env)?;
                $crate::config::check_registration(
                    config.register_url.as_ref().map(ToString::to_string),
                    config.admin_token.is_some(),
                    file_env,
                )?;
                Ok(config)
            }

            /// confique `validate` for `load_capacity` (see `load::check_capacity`).
            fn check_load_capacity(capacity: &u32) -> Result<(), &'static str> {
                $crate::load::check_capacity(capacity)
            }

            /// confique `validate` for `lab_delay` (see `faults::check_delay`).
            fn check_lab_delay(delay: &std::time::Duration) -> Result<(), &'static str> {
                $crate::faults::check_delay(delay)
            }

            /// confique `validate` for `lab_cpu` (see `faults::check_cpu`).
            fn check_lab_cpu(cpu: &std::time::Duration) -> Result<(), &'static str> {
                $crate::faults::check_cpu(cpu)
            }

            /// confique `validate` for `lab_error_rate` (see `faults::check_error_rate`).
            fn check_lab_error_rate(rate: &f64) -> Result<(), &'static str> {
                $crate::faults::check_error_rate(rate)
            }

            /// confique `validate` for `register_interval` (see `register::check_interval`).
            fn check_register_interval(
                interval: &std::time::Duration,
            ) -> Result<(), &'static str> {
                $crate::register::check_interval(interval)
            }

            /// The fault knobs this config starts with; `admin_token` may change them.
            pub fn faults(&self) -> $crate::faults::Faults {
                let knobs = $crate::faults::knobs_from(
                    self.lab_delay,
                    self.lab_cpu,
                    self.lab_error_rate,
                    self.lab_unhealthy,
                );
                $crate::faults::Faults::new(knobs, self.admin_token.clone())
            }

            /// Writes the load capacity and the fault knobs that are on, for `Display`.
            fn fmt_load_and_faults(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                write!(f, " load_capacity={}", self.load_capacity)?;
                let knobs = self.faults().knobs();
                if knobs.any() {
                    write!(
                        f,
                        " lab_delay={}ms lab_cpu={}ms lab_error_rate={} lab_unhealthy={}",
                        knobs.delay_ms, knobs.cpu_ms, knobs.error_rate, knobs.unhealthy
                    )?;
                }
                Ok(())
            }

            /// Writes the registration settings, if any, for `Display`.
            fn fmt_registration(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                if let Some(url) = &self.register_url {
                    write!(
                        f,
                        " register_url={url} register_interval={}",
                        humantime::format_duration(self.register_interval)
                    )?;
                    if let Some(addr) = self.register_advertise {
                        write!(f, " register_advertise={addr}")?;
                    }
                }
                Ok(())
            }
        }
    };
}

/// Loads env vars, then the TOML file named by the env var `file_env` (if set and not empty),
/// then defaults: earlier sources win. A named file that is missing is an error.
pub fn load<C: confique::Config>(file_env: &str) -> Result<C, Problem> {
    match config_file(file_env) {
        Some(path) if !path.exists() => Err(Problem::invalid(
            Source::Env(file_env.to_owned()),
            Some(format!("{:?}", path.display().to_string())),
            "the path of an existing TOML file (unset: no file)",
        )),
        path => config_error::load(path.as_deref()),
    }
}

fn config_file(file_env: &str) -> Option<PathBuf> {
    std::env::var_os(file_env)
        .filter(|p| !p.is_empty())
        .map(PathBuf::from)
}

/// The balancer refuses registrations without its token: a URL without one is a config error.
pub fn check_registration(
    url: Option<String>,
    has_token: bool,
    file_env: &str,
) -> Result<(), Problem> {
    let Some(url) = url.filter(|_| !has_token) else {
        return Ok(());
    };
    const VAR: &str = "BALANCER_REGISTER_URL";
    let origin = match (config_error::env_value(VAR), config_file(file_env)) {
        (Some(_), _) | (None, None) => Source::Env(VAR.into()),
        (None, Some(path)) => Source::File {
            path,
            key: "register_url".into(),
            line: None,
        },
    };
    Err(Problem {
        origin: Box::new(origin),
        value: Some(format!("{url:?}")),
        reason: "set without BALANCER_ADMIN_TOKEN (admin_token), and the balancer refuses \
                 registrations without its token"
            .into(),
        expected: Some("BALANCER_ADMIN_TOKEN set as well, or no register URL".into()),
    })
}

/// Reads the hostname without libc: the kernel's view first, then the usual files and env.
pub fn hostname() -> Option<String> {
    ["/proc/sys/kernel/hostname", "/etc/hostname"]
        .iter()
        .filter_map(|p| std::fs::read_to_string(p).ok())
        .chain(std::env::var("HOSTNAME").ok())
        .map(|s| s.trim().to_owned())
        .find(|s| is_header_safe(s))
}

/// A config value that did not parse: names the value and what was expected.
#[derive(Debug, thiserror::Error)]
#[error("invalid value {value:?}: expected {expected}")]
pub struct BadValue {
    /// The value as given.
    pub value: String,
    /// What would have been accepted.
    pub expected: &'static str,
}

impl BadValue {
    /// `value` was given where `expected` was.
    pub fn new(value: &str, expected: &'static str) -> Self {
        Self {
            value: value.to_owned(),
            expected,
        }
    }
}

/// Parses a socket address; `expected` describes one (with the app's own port) on error.
pub fn socket_addr(s: &str, expected: &'static str) -> Result<SocketAddr, BadValue> {
    s.trim().parse().map_err(|_| BadValue::new(s, expected))
}

/// Parses a human duration such as `2s` or `500ms`.
pub fn parse_duration(s: &str) -> Result<Duration, BadValue> {
    humantime::parse_duration(s.trim())
        .map_err(|_| BadValue::new(s, "a duration such as 2s or 500ms"))
}

/// Accepts a name usable as an HTTP header value (visible ASCII, at most 253 bytes).
pub fn parse_instance_name(s: &str) -> Result<String, BadValue> {
    let s = s.trim();
    if is_header_safe(s) {
        Ok(s.to_owned())
    } else {
        Err(BadValue::new(s, "1 to 253 visible ASCII characters"))
    }
}

fn is_header_safe(s: &str) -> bool {
    !s.is_empty() && s.len() <= 253 && s.bytes().all(|b| b.is_ascii_graphic())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_socket_addr_names_value_and_expectation() {
        let err = socket_addr("nope", "a socket address")
            .unwrap_err()
            .to_string();
        assert!(err.contains("\"nope\""), "{err}");
        assert!(err.contains("socket address"), "{err}");
    }

    #[test]
    fn durations_are_human() {
        assert_eq!(parse_duration("2s").unwrap(), Duration::from_secs(2));
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        assert!(parse_duration("soon").is_err());
    }

    #[test]
    fn instance_names_must_fit_a_header() {
        assert!(parse_instance_name("api-1").is_ok());
        assert!(parse_instance_name("bad name").is_err());
    }

    #[test]
    fn a_register_url_needs_the_token() {
        let url = || Some("http://b/x".to_owned());
        let env = "NO_SUCH_CONFIG_VAR";
        assert!(check_registration(url(), false, env).is_err());
        assert!(check_registration(url(), true, env).is_ok());
        assert!(check_registration(None, false, env).is_ok());
    }
}
