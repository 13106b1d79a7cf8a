//! The validated configuration the balancer runs on, built from [`RawConfig`].

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use http::HeaderName;
use serde::{Deserialize, Serialize};

use super::ranges::{
    MIN_CHECK_INTERVAL, MIN_DISCOVERY_INTERVAL, at_least, header_limit, retries, streak,
};
use super::{ConfigError, HealthFile, MemberSpec, Origin, PoolFile, RawConfig, RouteFile, env_var};
use crate::select::Algorithm;

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
    /// Validates and merges `raw`; `origin` names the source of a bad value.
    pub fn build(raw: &RawConfig, origin: &Origin) -> Result<Settings, ConfigError> {
        let mut pools = Vec::new();
        for d in &DEFAULT_POOLS {
            pools.push(default_pool(raw, d, origin)?);
        }
        for (name, file) in &raw.pools {
            if DEFAULT_POOLS.iter().any(|d| d.name == name) {
                continue;
            }
            let members = file.members.clone().map(|m| m.0).unwrap_or_default();
            let pool = pool(
                raw,
                name,
                file,
                members,
                None,
                None,
                StickyMode::None,
                origin,
            )?;
            pools.push(pool);
        }
        let routes = routes(raw, &pools, origin)?;
        check_listeners(raw, origin)?;
        let max_header_bytes = header_limit(raw, origin)?;
        let discovery_interval = at_least(
            raw.discovery_interval,
            MIN_DISCOVERY_INTERVAL,
            origin,
            &["discovery_interval"],
        )?;
        let workers = match raw.workers {
            0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
            n => n,
        };
        Ok(Settings {
            listen: raw.listen,
            admin_listen: raw.admin_listen,
            admin_token: raw.admin_token.clone().filter(|t| !t.is_empty()),
            access_log: raw.access_log.clone(),
            upstream_header: raw.upstream_header,
            sticky_key: sticky_key(&raw.sticky_secret),
            workers,
            discovery_interval,
            client_idle_timeout: raw.timeouts.client_idle,
            backend_idle_timeout: raw.timeouts.backend_idle,
            max_header_bytes,
            pools,
            routes,
            file: origin.file.clone(),
            file_version: None,
        })
    }

    /// The pool index of `name`.
    pub fn pool_index(&self, name: &str) -> Option<usize> {
        self.pools.iter().position(|p| &*p.name == name)
    }
}

fn default_pool(
    raw: &RawConfig,
    d: &DefaultPool,
    origin: &Origin,
) -> Result<PoolSettings, ConfigError> {
    let file = raw.pools.get(d.name).cloned().unwrap_or_default();
    let (top, algorithm, sticky) = match d.name {
        "static" => (&raw.static_backend, raw.static_algorithm, raw.static_sticky),
        _ => (
            &raw.dynamic_backend,
            raw.dynamic_algorithm,
            raw.dynamic_sticky,
        ),
    };
    // STATIC_BACKEND & co. beat the file's pool table, as env beats file everywhere.
    let members = match (top, &file.members) {
        (Some(l), _) | (None, Some(l)) => l.0.clone(),
        (None, None) => super::MemberList::parse(d.members)
            .map(|l| l.0)
            .unwrap_or_default(),
    };
    pool(
        raw, d.name, &file, members, algorithm, sticky, d.sticky, origin,
    )
}

#[allow(clippy::too_many_arguments)]
fn pool(
    raw: &RawConfig,
    name: &str,
    file: &PoolFile,
    members: Vec<MemberSpec>,
    env_algorithm: Option<crate::select::Algorithm>,
    env_sticky: Option<StickyMode>,
    default_sticky: StickyMode,
    origin: &Origin,
) -> Result<PoolSettings, ConfigError> {
    let key = |k: &'static str| -> Vec<&str> { vec!["pools", name, k] };
    let sticky = env_sticky.or(file.sticky).unwrap_or(default_sticky);
    let mut algorithm = env_algorithm
        .or(file.algorithm)
        .unwrap_or(Algorithm::RoundRobin);
    if sticky == StickyMode::IpHash {
        algorithm = Algorithm::IpHash;
    }
    if members.is_empty() {
        return Err(origin.invalid(
            members_env(name),
            &key("members"),
            "",
            "at least one host:port (a DNS name is re-resolved, so one name can stand for \
             every replica)",
        ));
    }
    if members.iter().all(|m| m.weight == 0) {
        return Err(origin.invalid(
            members_env(name),
            &key("members"),
            &super::MemberList(members).to_string(),
            "at least one member with a weight above 0",
        ));
    }
    let hash_header = match (&file.hash_header, algorithm) {
        (Some(h), _) => Some(HeaderName::from_bytes(h.as_bytes()).map_err(|_| {
            origin.invalid(None, &key("hash_header"), h, "a valid HTTP header name")
        })?),
        (None, Algorithm::HeaderHash) => {
            return Err(origin.invalid(
                None,
                &key("hash_header"),
                "",
                "a header name, required by algorithm header-hash",
            ));
        }
        (None, _) => None,
    };
    let cookie_name = file
        .cookie_name
        .clone()
        .unwrap_or_else(|| format!("lb_{name}"));
    if cookie_name.is_empty()
        || !cookie_name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || b == b'.')
    {
        return Err(origin.invalid(
            None,
            &key("cookie_name"),
            &cookie_name,
            "letters, digits, `_`, `-` or `.`",
        ));
    }
    Ok(PoolSettings {
        name: name.into(),
        members,
        algorithm,
        hash_header,
        sticky,
        cookie_name,
        cookie_max_age: file.cookie_max_age,
        connect_timeout: file.connect_timeout.unwrap_or(raw.timeouts.connect),
        response_timeout: file.response_timeout.unwrap_or(raw.timeouts.response),
        retries: retries(file.retries.unwrap_or(pd::RETRIES), origin, &key("retries"))?,
        retry_budget: file.retry_budget.unwrap_or(pd::RETRY_BUDGET),
        max_fails: file.max_fails.unwrap_or(pd::MAX_FAILS),
        fail_timeout: file.fail_timeout.unwrap_or(pd::FAIL_TIMEOUT),
        max_body: file.max_body.unwrap_or(raw.limits.max_body).0,
        slow_start: file.slow_start.unwrap_or(pd::SLOW_START),
        health: health(name, file.health.as_ref(), origin)?,
    })
}

fn members_env(pool: &str) -> Option<&'static str> {
    DEFAULT_POOLS
        .iter()
        .find(|d| d.name == pool)
        .and_then(DefaultPool::members_env)
}

fn health(
    pool: &str,
    file: Option<&HealthFile>,
    origin: &Origin,
) -> Result<Option<HealthSettings>, ConfigError> {
    // Checks are on by default (1s, fall 1, rise 2: fit for a lab); `enabled = false` turns
    // them off.
    let f = file.cloned().unwrap_or_default();
    if f.enabled == Some(false) {
        return Ok(None);
    }
    let path = f.path.unwrap_or_else(|| pd::CHECK_PATH.into());
    if !path.starts_with('/') {
        return Err(origin.invalid(
            None,
            &["pools", pool, "health", "path"],
            &path,
            "a path starting with /",
        ));
    }
    let status = f.expect_status.unwrap_or(pd::EXPECT_STATUS);
    if !(100..=599).contains(&status) {
        return Err(origin.invalid(
            None,
            &["pools", pool, "health", "expect_status"],
            &status.to_string(),
            "an HTTP status from 100 to 599",
        ));
    }
    let key = |k: &'static str| ["pools", pool, "health", k];
    let interval = f.interval.unwrap_or(pd::CHECK_INTERVAL);
    Ok(Some(HealthSettings {
        path,
        interval: at_least(interval, MIN_CHECK_INTERVAL, origin, &key("interval"))?,
        timeout: f.timeout.unwrap_or(pd::CHECK_TIMEOUT),
        expect_status: status,
        rise: streak(f.rise.unwrap_or(pd::RISE), origin, &key("rise"))?,
        fall: streak(f.fall.unwrap_or(pd::FALL), origin, &key("fall"))?,
    }))
}

fn routes(
    raw: &RawConfig,
    pools: &[PoolSettings],
    origin: &Origin,
) -> Result<Vec<RouteSettings>, ConfigError> {
    let default_routes = [
        ("/api/student", true, "dynamic"),
        ("/api/", false, "dynamic"),
        ("/", false, "static"),
    ];
    let files: Vec<RouteFile> = match &raw.routes {
        Some(r) => r.clone(),
        None => default_routes
            .iter()
            .map(|(path, exact, pool)| RouteFile {
                path: (*path).into(),
                exact: *exact,
                host: None,
                pool: (*pool).into(),
                max_body: None,
            })
            .collect(),
    };
    let mut out = Vec::with_capacity(files.len());
    let mut seen = BTreeSet::new();
    for (i, r) in files.iter().enumerate() {
        let refuse = |field: &str, value: &str, expected: String| {
            origin.invalid_named(
                format!("routes[{i}]{field}"),
                None,
                &["routes"],
                value,
                expected,
            )
        };
        let pool = pools
            .iter()
            .position(|p| *p.name == r.pool)
            .ok_or_else(|| {
                let names: Vec<&str> = pools.iter().map(|p| &*p.name).collect();
                refuse(
                    ".pool",
                    &r.pool,
                    format!("the name of a pool ({})", names.join(", ")),
                )
            })?;
        if !r.path.starts_with('/') {
            return Err(refuse(".path", &r.path, "a path starting with /".into()));
        }
        let host = r.host.as_ref().map(|h| h.to_ascii_lowercase());
        if !seen.insert((host.clone(), r.path.clone(), r.exact)) {
            return Err(refuse(
                ".path",
                &r.path,
                "each host + path to appear once".into(),
            ));
        }
        out.push(RouteSettings {
            host,
            path: r.path.clone(),
            exact: r.exact,
            pool,
            max_body: r.max_body.map(|b| b.0),
        });
    }
    Ok(out)
}

fn check_listeners(raw: &RawConfig, origin: &Origin) -> Result<(), ConfigError> {
    if raw.listen == raw.admin_listen && raw.listen.port() != 0 {
        return Err(origin.invalid(
            None,
            &["admin_listen"],
            &raw.admin_listen.to_string(),
            "an address different from `listen` (the public listener)",
        ));
    }
    Ok(())
}

/// Derives the 128-bit sticky key from the configured secret.
fn sticky_key(secret: &str) -> [u8; 16] {
    use std::hash::Hasher;
    let mut a = siphasher::sip::SipHasher13::new_with_keys(0x6c61_622d, 0x7374_6163);
    a.write(secret.as_bytes());
    let mut b = siphasher::sip::SipHasher13::new_with_keys(0x6b65_7931, 0x6b65_7932);
    b.write(secret.as_bytes());
    let mut key = [0u8; 16];
    key[..8].copy_from_slice(&a.finish().to_le_bytes());
    key[8..].copy_from_slice(&b.finish().to_le_bytes());
    key
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
