//! Configuration: built-in defaults < TOML file < environment variables, loaded with confique.
//!
//! [`RawConfig`] is the layered, typed input exactly as a person writes it (its field docs become
//! `--print-default-config`). [`Settings`] is what the balancer runs on: validated, with the two
//! default pools merged from file and env and every cross-reference checked. A bad value always
//! names its variable or file key, the value and what was expected ([`error::Problem`]).

pub mod balancing;
pub mod check;
mod hedge;
pub mod load;
// The crate shared with the two apps, so that all three binaries report a refused value alike.
pub(crate) use config_report as error;
pub(crate) mod members;
pub(crate) mod model;
mod origin;
mod ranges;
pub(crate) mod reload;
mod units;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use confique::Config;
use serde::{Deserialize, Serialize};

pub(crate) use error::Problem;
pub(crate) use members::{MemberList, MemberSpec};
pub use model::Settings;
pub(crate) use model::{HealthSettings, PoolSettings, RouteSettings, StickyMode};
pub use origin::Origin;
pub(crate) use origin::env_var;
pub(crate) use units::ByteSize;

use crate::select::Algorithm;

/// The variable naming the config file (not a config field, so not in `RawConfig`'s metadata).
pub(crate) const CONFIG_ENV: &str = "BALANCER_CONFIG";

/// Where the config file is read from when `BALANCER_CONFIG` is not set (only if it exists).
pub(crate) const DEFAULT_CONFIG_PATH: &str = "/etc/balancer/balancer.toml";

/// The balancer's configuration as written in the file and the environment.
#[derive(Config, Debug, Clone)]
#[config(layer_attr(serde(deny_unknown_fields)))]
pub struct RawConfig {
    /// Public listener address (HTTP), as ip:port.
    #[config(env = "BALANCER_LISTEN", default = "0.0.0.0:80")]
    pub(crate) listen: SocketAddr,

    /// Admin listener address, as ip:port: dashboard, /api/status, /metrics, runtime actions.
    #[config(env = "BALANCER_ADMIN_LISTEN", default = "0.0.0.0:1936")]
    pub admin_listen: SocketAddr,

    /// Bearer token for admin actions and self-registration; unset = every action refused.
    #[config(env = "BALANCER_ADMIN_TOKEN")]
    pub(crate) admin_token: Option<String>,

    /// Also append every access-log line to this file; unset = stdout only.
    #[config(env = "BALANCER_ACCESS_LOG")]
    pub(crate) access_log: Option<PathBuf>,

    /// Add an `X-Upstream` response header naming the member that served the request.
    #[config(env = "BALANCER_UPSTREAM_HEADER", default = false)]
    pub(crate) upstream_header: bool,

    /// Secret mixed into sticky-cookie ids; give every balancer that shares clients the same one.
    #[config(env = "BALANCER_STICKY_SECRET", default = "lab-stack")]
    pub(crate) sticky_secret: String,

    /// Proxy worker threads; 0 = one per CPU core.
    #[config(env = "BALANCER_WORKERS", default = 0)]
    pub(crate) workers: usize,

    /// How often DNS names among the members are re-resolved (at least 250ms).
    #[config(env = "BALANCER_DISCOVERY_INTERVAL", default = "1s", deserialize_with = units::duration)]
    pub(crate) discovery_interval: Duration,

    /// Members of the `static` pool: space-separated `host:port[*weight]`.
    #[config(env = "STATIC_BACKEND")]
    pub(crate) static_backend: Option<MemberList>,

    /// Members of the `dynamic` pool: space-separated `host:port[*weight]`.
    #[config(env = "DYNAMIC_BACKEND")]
    pub(crate) dynamic_backend: Option<MemberList>,

    /// Selection algorithm of the `static` pool.
    #[config(env = "BALANCER_STATIC_ALGORITHM")]
    pub(crate) static_algorithm: Option<Algorithm>,

    /// Selection algorithm of the `dynamic` pool.
    #[config(env = "BALANCER_DYNAMIC_ALGORITHM")]
    pub(crate) dynamic_algorithm: Option<Algorithm>,

    /// Sticky mode of the `static` pool: none, cookie or ip-hash.
    #[config(env = "BALANCER_STATIC_STICKY")]
    pub(crate) static_sticky: Option<StickyMode>,

    /// Sticky mode of the `dynamic` pool: none, cookie or ip-hash.
    #[config(env = "BALANCER_DYNAMIC_STICKY")]
    pub(crate) dynamic_sticky: Option<StickyMode>,

    /// Default timeouts; a pool may override connect and response.
    #[config(nested)]
    pub(crate) timeouts: Timeouts,

    /// Request limits.
    #[config(nested)]
    pub(crate) limits: Limits,

    /// Hedged requests (every pool; a pool's `hedge` table overrides these).
    #[config(nested)]
    pub hedge: Hedge,
    /// Bounds of the built-in load generator (`POST /api/load` on the admin listener).
    #[config(nested)]
    pub load: load::LoadFile,

    /// Settings of the load-aware algorithms (peak-ewma, reported-load); a pool table may
    /// override each key.
    #[config(nested)]
    pub balancing: balancing::BalancingFile,

    /// Pools by name. `static` and `dynamic` always exist; a table here adds a pool or changes
    /// one (keys: members, algorithm, hash_header, sticky, cookie_name, cookie_max_age,
    /// connect_timeout, response_timeout, retries, retry_budget, max_fails, fail_timeout,
    /// max_body, slow_start, health, hedge, and the keys of `[balancing]`).
    #[config(default = {})]
    pub(crate) pools: BTreeMap<String, PoolFile>,

    /// Routes `{ path, exact, host, pool, max_body }`, most specific first (host, then longest path).
    /// Unset = `/api/` and `/api/student` to `dynamic`, everything else to `static`.
    pub(crate) routes: Option<Vec<RouteFile>>,
}

/// Timeouts.
#[derive(Config, Debug, Clone)]
#[config(layer_attr(serde(deny_unknown_fields)))]
pub struct Timeouts {
    /// Connecting to a member.
    #[config(env = "BALANCER_CONNECT_TIMEOUT", default = "1s", deserialize_with = units::duration)]
    pub(crate) connect: Duration,

    /// Waiting for a member's response headers once the request (body included) is sent, and
    /// the longest pause inside a member's response body.
    #[config(env = "BALANCER_RESPONSE_TIMEOUT", default = "30s", deserialize_with = units::duration)]
    pub(crate) response: Duration,

    /// A client connection idle between requests (also the time allowed to send headers, and
    /// the longest pause inside a request body before a 408).
    #[config(env = "BALANCER_IDLE_TIMEOUT", default = "60s", deserialize_with = units::duration)]
    pub(crate) client_idle: Duration,

    /// A pooled connection to a member unused for this long is closed.
    #[config(env = "BALANCER_BACKEND_IDLE_TIMEOUT", default = "30s", deserialize_with = units::duration)]
    pub(crate) backend_idle: Duration,
}

/// Hedged requests: an idempotent request with no response head after the hedge delay is
/// also sent to another member, and the first answer wins.
#[derive(Config, Debug, Clone)]
#[config(layer_attr(serde(deny_unknown_fields)))]
pub struct Hedge {
    /// Hedge idempotent requests (GET, HEAD, OPTIONS; PUT and DELETE whose body was kept).
    #[config(env = "BALANCER_HEDGE", default = true)]
    pub enabled: bool,

    /// Shortest hedge delay (the delay is 2 x the member's recent p99, within min and max).
    #[config(env = "BALANCER_HEDGE_DELAY_MIN", default = "50ms", deserialize_with = units::duration)]
    pub delay_min: Duration,

    /// Longest hedge delay: a hung member costs a request at most this much.
    #[config(env = "BALANCER_HEDGE_DELAY_MAX", default = "500ms", deserialize_with = units::duration)]
    pub delay_max: Duration,

    /// Hedges allowed, in percent of a pool's responses over the last 10 s (0 to 100).
    #[config(env = "BALANCER_HEDGE_BUDGET", default = 10)]
    pub budget: u32,
}

/// Request limits.
#[derive(Config, Debug, Clone)]
#[config(layer_attr(serde(deny_unknown_fields)))]
pub struct Limits {
    /// Largest request head (request line + headers), 1KiB to 1MiB; larger gets 431.
    #[config(env = "BALANCER_MAX_HEADER_BYTES", default = "16KiB")]
    pub(crate) max_header_bytes: ByteSize,

    /// Default largest request body; larger gets 413. A pool may override it.
    #[config(env = "BALANCER_MAX_BODY", default = "100MiB")]
    pub(crate) max_body: ByteSize,

    /// Most open client connections, all workers together (1 to 1000000). At the cap the
    /// connections idle longest (waiting for a request head) are closed to make room; with none
    /// idle, new connections wait in the kernel's backlog.
    #[config(env = "BALANCER_MAX_CONNECTIONS", default = 10000)]
    pub(crate) max_connections: u64,
}

/// A pool as written in the file; every key is optional and falls back to the defaults.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct PoolFile {
    /// `host:port[*weight]` entries (array or space-separated string).
    pub(crate) members: Option<MemberList>,
    /// Selection algorithm.
    pub(crate) algorithm: Option<Algorithm>,
    /// Header hashed by `header-hash`.
    pub(crate) hash_header: Option<String>,
    /// Sticky mode.
    pub(crate) sticky: Option<StickyMode>,
    /// Sticky cookie name.
    pub(crate) cookie_name: Option<String>,
    /// Sticky cookie lifetime; unset = a session cookie.
    #[serde(default, with = "units::opt_duration")]
    pub(crate) cookie_max_age: Option<Duration>,
    /// Connect timeout for this pool.
    #[serde(default, with = "units::opt_duration")]
    pub(crate) connect_timeout: Option<Duration>,
    /// Response-header timeout for this pool.
    #[serde(default, with = "units::opt_duration")]
    pub(crate) response_timeout: Option<Duration>,
    /// Extra attempts on other members for a failed idempotent request.
    pub(crate) retries: Option<u32>,
    /// No new attempt starts once this long has passed since the request arrived (one under
    /// way keeps its own timeouts), as nginx's `proxy_next_upstream_timeout`.
    #[serde(default, with = "units::opt_duration")]
    pub(crate) retry_budget: Option<Duration>,
    /// Failures within `fail_timeout` that take a member out (0 = never).
    pub(crate) max_fails: Option<u32>,
    /// Failure window and cool-down of passive detection.
    #[serde(default, with = "units::opt_duration")]
    pub(crate) fail_timeout: Option<Duration>,
    /// Largest request body for routes to this pool.
    pub(crate) max_body: Option<ByteSize>,
    /// Ramp a joining or recovering member's weight over this long (0 = off).
    #[serde(default, with = "units::opt_duration")]
    pub(crate) slow_start: Option<Duration>,
    /// Active health check.
    pub(crate) health: Option<HealthFile>,
    /// Hedged requests of this pool (unset keys: the top-level `[hedge]`).
    pub(crate) hedge: Option<HedgeFile>,
    /// peak-ewma decay (overrides `balancing.ewma_decay`).
    #[serde(default, with = "units::opt_duration")]
    pub(crate) ewma_decay: Option<Duration>,
    /// peak-ewma estimate before any answer (overrides `balancing.ewma_default_rtt`).
    #[serde(default, with = "units::opt_duration")]
    pub(crate) ewma_default_rtt: Option<Duration>,
    /// reported-load blackout (overrides `balancing.blackout_period`).
    #[serde(default, with = "units::opt_duration")]
    pub(crate) blackout_period: Option<Duration>,
    /// reported-load weight expiry (overrides `balancing.weight_expiration_period`).
    #[serde(default, with = "units::opt_duration")]
    pub(crate) weight_expiration_period: Option<Duration>,
    /// reported-load recompute period (overrides `balancing.weight_update_period`).
    #[serde(default, with = "units::opt_duration")]
    pub(crate) weight_update_period: Option<Duration>,
    /// reported-load error penalty (overrides `balancing.error_utilization_penalty`).
    pub(crate) error_utilization_penalty: Option<f64>,
}

/// A pool's hedging settings as written in the file.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub(crate) struct HedgeFile {
    /// Turn hedging on or off for this pool.
    pub(crate) enabled: Option<bool>,
    /// Shortest hedge delay.
    #[serde(default, with = "units::opt_duration")]
    pub(crate) delay_min: Option<Duration>,
    /// Longest hedge delay.
    #[serde(default, with = "units::opt_duration")]
    pub(crate) delay_max: Option<Duration>,
    /// Hedges allowed, in percent of the pool's recent responses.
    pub(crate) budget: Option<u32>,
}

/// Active health check settings as written in the file.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub(crate) struct HealthFile {
    /// Turn checks on or off (default on).
    pub(crate) enabled: Option<bool>,
    /// Path to GET.
    pub(crate) path: Option<String>,
    /// Time between checks.
    #[serde(default, with = "units::opt_duration")]
    pub(crate) interval: Option<Duration>,
    /// Time a check may take.
    #[serde(default, with = "units::opt_duration")]
    pub(crate) timeout: Option<Duration>,
    /// Status that means healthy.
    pub(crate) expect_status: Option<u16>,
    /// Consecutive passes to come back up.
    pub(crate) rise: Option<u32>,
    /// Consecutive failures to go down.
    pub(crate) fall: Option<u32>,
}

/// A route as written in the file.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RouteFile {
    /// Path prefix (`/api/`); with `exact = true` the whole path.
    pub(crate) path: String,
    /// Match the whole path only.
    #[serde(default)]
    pub(crate) exact: bool,
    /// Only for this Host (without port); unset = any host.
    pub(crate) host: Option<String>,
    /// Pool name.
    pub(crate) pool: String,
    /// Largest request body on this route (default: the pool's `max_body`).
    pub(crate) max_body: Option<ByteSize>,
}

/// Which config file to read, and whether its absence is an error.
#[derive(Debug, Clone)]
pub struct FileChoice {
    /// The path.
    pub path: PathBuf,
    /// Named explicitly (`BALANCER_CONFIG` or `--config`): a missing file is an error.
    pub explicit: bool,
}

impl FileChoice {
    /// `explicit` path if given, else `BALANCER_CONFIG`, else the default path.
    pub fn resolve(explicit: Option<PathBuf>) -> Self {
        if let Some(path) = explicit {
            return FileChoice {
                path,
                explicit: true,
            };
        }
        match std::env::var_os(CONFIG_ENV).filter(|v| !v.is_empty()) {
            Some(p) => FileChoice {
                path: p.into(),
                explicit: true,
            },
            None => FileChoice {
                path: DEFAULT_CONFIG_PATH.into(),
                explicit: false,
            },
        }
    }
}

/// Why a configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file named by `BALANCER_CONFIG` or `--config` is not there.
    #[error("config file {0} does not exist (named by {CONFIG_ENV} or --config)", CONFIG_ENV = CONFIG_ENV)]
    MissingFile(PathBuf),
    /// A value was refused: the message names its variable or file key, the value and what
    /// was expected.
    #[error("{0}")]
    Invalid(Box<Problem>),
    /// Nothing to load from.
    #[error("{0}")]
    Load(String),
}

impl From<Problem> for ConfigError {
    fn from(p: Problem) -> Self {
        ConfigError::Invalid(Box::new(p))
    }
}

/// Loads env + file + defaults from the process environment and `file`.
pub fn load_raw(file: &FileChoice) -> Result<RawConfig, ConfigError> {
    load_with_origin(file).map(|(raw, _)| raw)
}

/// [`load_raw`], and where each value came from (the file is read once for both).
pub fn load_with_origin(file: &FileChoice) -> Result<(RawConfig, Origin), ConfigError> {
    if file.explicit && !file.path.exists() {
        return Err(ConfigError::MissingFile(file.path.clone()));
    }
    let mut builder = RawConfig::builder().preloaded(error::env_layer::<RawConfig>()?);
    let mut origin = Origin::from_env();
    // Without an explicit name the file is optional.
    if file.path.exists() {
        let text =
            std::fs::read_to_string(&file.path).map_err(|e| Problem::unreadable(&file.path, &e))?;
        builder = builder.preloaded(error::file_layer::<RawConfig>(&file.path, &text)?);
        origin.file = Some(file.path.clone());
        origin.table = text.parse().ok();
    }
    let raw = builder
        .load()
        .map_err(|e| error::from_merge::<RawConfig>(&e))?;
    Ok((raw, origin))
}

/// Loads and validates everything: what `main`, `--check-config` and reloads call.
pub fn load(file: &FileChoice) -> Result<Settings, ConfigError> {
    // Stamped before reading: an edit after this point is newer than what is loaded.
    let version = reload::FileVersion::of(&file.path);
    let (raw, origin) = load_with_origin(file)?;
    let mut settings = Settings::build(&raw, &origin)?;
    settings.file_version = Some(version);
    Ok(settings)
}

/// Loads a TOML text over the defaults with no environment: for tests and tools that build
/// config in code.
pub fn from_toml_str(text: &str) -> Result<RawConfig, ConfigError> {
    let layer = error::file_layer::<RawConfig>(std::path::Path::new("(inline)"), text)?;
    RawConfig::builder()
        .preloaded(layer)
        .load()
        .map_err(|e| error::from_merge::<RawConfig>(&e).into())
}
