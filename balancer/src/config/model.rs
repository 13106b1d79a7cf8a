//! The validated configuration the balancer runs on, built from [`RawConfig`].

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use http::HeaderName;
use serde::{Deserialize, Serialize};

use super::balancing::Balancing;
use super::hedge::{HedgeSettings, hedge};
use super::ranges::{
    MIN_CHECK_INTERVAL, MIN_DISCOVERY_INTERVAL, at_least, header_limit, max_connections, retries,
    streak,
};
use super::{ConfigError, HealthFile, MemberSpec, Origin, PoolFile, RawConfig, RouteFile, env_var};
use crate::select::Algorithm;

mod build;

/// The two pools that exist without any file, with the top-level fields (and so the env vars)
/// that fill them.
pub(crate) const DEFAULT_POOLS: [DefaultPool; 2] = [
    DefaultPool {
        name: "static",
        members: "static-site:8080",
        members_field: "static_backend",
        algorithm_field: "static_algorithm",
        sticky_field: "static_sticky",
        sticky: StickyMode::Cookie,
    },
    DefaultPool {
        name: "dynamic",
        members: "student-api:3000",
        members_field: "dynamic_backend",
        algorithm_field: "dynamic_algorithm",
        sticky_field: "dynamic_sticky",
        sticky: StickyMode::None,
    },
];

pub(crate) struct DefaultPool {
    pub(crate) name: &'static str,
    members: &'static str,
    members_field: &'static str,
    algorithm_field: &'static str,
    sticky_field: &'static str,
    sticky: StickyMode,
}

impl DefaultPool {
    /// The variable that sets the pool's members (`STATIC_BACKEND`).
    pub(crate) fn members_env(&self) -> Option<&'static str> {
        env_var(&[self.members_field])
    }

    /// The variable that sets the pool's algorithm.
    pub(crate) fn algorithm_env(&self) -> Option<&'static str> {
        env_var(&[self.algorithm_field])
    }

    /// The variable that sets the pool's sticky mode.
    pub(crate) fn sticky_env(&self) -> Option<&'static str> {
        env_var(&[self.sticky_field])
    }
}

/// Defaults of a pool's file keys, shared with the template `--print-default-config` prints.
pub(crate) mod pool_defaults {
    use std::time::Duration;

    pub(crate) const RETRIES: u32 = 2;
    pub(crate) const RETRY_BUDGET: Duration = Duration::from_secs(10);
    pub(crate) const MAX_FAILS: u32 = 1;
    pub(crate) const FAIL_TIMEOUT: Duration = Duration::from_secs(10);
    pub(crate) const SLOW_START: Duration = Duration::ZERO;
    pub(crate) const CHECK_PATH: &str = "/healthz";
    pub(crate) const CHECK_INTERVAL: Duration = Duration::from_secs(1);
    pub(crate) const CHECK_TIMEOUT: Duration = Duration::from_secs(1);
    pub(crate) const EXPECT_STATUS: u16 = 200;
    pub(crate) const RISE: u32 = 2;
    pub(crate) const FALL: u32 = 1;
}
use pool_defaults as pd;

/// How a pool keeps a client on the same member.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum StickyMode {
    /// No stickiness: the algorithm decides every request.
    None,
    /// A cookie naming the member by an opaque id.
    Cookie,
    /// Consistent hashing on the client IP (overrides the algorithm).
    IpHash,
}

/// Active health check of a pool.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct HealthSettings {
    /// Path to GET.
    pub(crate) path: String,
    /// Time between checks.
    pub(crate) interval: Duration,
    /// Time one check may take.
    pub(crate) timeout: Duration,
    /// Status that means healthy.
    pub(crate) expect_status: u16,
    /// Consecutive passes to come back up.
    pub(crate) rise: u32,
    /// Consecutive failures to go down.
    pub(crate) fall: u32,
}

/// A pool, validated.
#[derive(Debug, Clone, PartialEq)]
pub struct PoolSettings {
    /// Name (`static`, `dynamic`, or from the file).
    pub name: Arc<str>,
    /// Configured members (IPs and DNS names).
    pub(crate) members: Vec<MemberSpec>,
    /// Selection algorithm (already `ip-hash` when sticky is `ip-hash`).
    pub(crate) algorithm: Algorithm,
    /// Header hashed by `header-hash`.
    pub(crate) hash_header: Option<HeaderName>,
    /// Sticky mode.
    pub(crate) sticky: StickyMode,
    /// Sticky cookie name.
    pub(crate) cookie_name: String,
    /// Sticky cookie Max-Age; `None` = session cookie.
    pub(crate) cookie_max_age: Option<Duration>,
    /// Connect timeout.
    pub(crate) connect_timeout: Duration,
    /// Response-header timeout.
    pub(crate) response_timeout: Duration,
    /// Extra attempts for a failed idempotent request.
    pub(crate) retries: u32,
    /// Time budget for all attempts of one request.
    pub(crate) retry_budget: Duration,
    /// Passive detection: failures that eject (0 = never).
    pub(crate) max_fails: u32,
    /// Passive detection window and cool-down.
    pub(crate) fail_timeout: Duration,
    /// Largest request body.
    pub(crate) max_body: u64,
    /// Slow-start ramp (zero = off).
    pub(crate) slow_start: Duration,
    /// Active health check, if on.
    pub(crate) health: Option<HealthSettings>,
    /// Hedged requests.
    pub(crate) hedge: HedgeSettings,
    /// Settings of the load-aware algorithms.
    pub(crate) balancing: Balancing,
}

/// A route, validated: which requests go to which pool.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RouteSettings {
    /// Host to match (lower case, no port); `None` = any.
    pub(crate) host: Option<String>,
    /// Path prefix, or whole path when `exact`.
    pub(crate) path: String,
    /// Match the whole path only.
    pub(crate) exact: bool,
    /// Index into [`Settings::pools`].
    pub(crate) pool: usize,
    /// Body limit for this route; `None` = the pool's.
    pub(crate) max_body: Option<u64>,
}

/// Everything the balancer runs on.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    /// Public listener.
    pub listen: SocketAddr,
    /// Admin listener.
    pub admin_listen: SocketAddr,
    /// Admin bearer token.
    pub(crate) admin_token: Option<String>,
    /// Access log file.
    pub access_log: Option<PathBuf>,
    /// Whether to add `X-Upstream`.
    pub(crate) upstream_header: bool,
    /// Key for sticky ids.
    pub sticky_key: [u8; 16],
    /// Worker threads (resolved: never 0).
    pub workers: usize,
    /// DNS re-resolution interval.
    pub(crate) discovery_interval: Duration,
    /// Client keep-alive idle timeout.
    pub(crate) client_idle_timeout: Duration,
    /// Pooled backend connection idle timeout.
    pub(crate) backend_idle_timeout: Duration,
    /// Request head limit.
    pub(crate) max_header_bytes: usize,
    /// Bounds of the built-in load generator.
    pub(crate) load: super::load::LoadLimits,
    /// Most open client connections, all workers together.
    pub(crate) max_connections: usize,
    /// Pools; `static` and `dynamic` first.
    pub(crate) pools: Vec<PoolSettings>,
    /// Routes, most specific first.
    pub(crate) routes: Vec<RouteSettings>,
    /// The config file that was read, if any.
    pub(crate) file: Option<PathBuf>,
    /// Which version of that file (set by [`super::load`]); the file watcher starts from it.
    pub(crate) file_version: Option<super::reload::FileVersion>,
}

impl Settings {
    /// The pool index of `name`.
    pub fn pool_index(&self, name: &str) -> Option<usize> {
        self.pools.iter().position(|p| &*p.name == name)
    }
}

#[cfg(test)]
mod tests {
    use super::DEFAULT_POOLS;

    #[test]
    fn each_default_pool_field_has_its_env_var() {
        let names: Vec<_> = DEFAULT_POOLS
            .iter()
            .map(|d| (d.members_env(), d.algorithm_env(), d.sticky_env()))
            .collect();
        assert_eq!(
            names,
            [
                (
                    Some("STATIC_BACKEND"),
                    Some("BALANCER_STATIC_ALGORITHM"),
                    Some("BALANCER_STATIC_STICKY")
                ),
                (
                    Some("DYNAMIC_BACKEND"),
                    Some("BALANCER_DYNAMIC_ALGORITHM"),
                    Some("BALANCER_DYNAMIC_STICKY")
                ),
            ]
        );
    }
}
