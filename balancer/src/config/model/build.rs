//! Building [`Settings`] from [`RawConfig`]: the two default pools merged from file and env,
//! each value checked against its range, every route's pool and every listener resolved; a
//! bad value is an error naming its source.

use super::*;

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
        let max_connections = max_connections(raw, origin)?;
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
            load: crate::config::load::LoadLimits::build(&raw.load, origin)?,
            max_connections,
            pools,
            routes,
            file: origin.file.clone(),
            file_version: None,
        })
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
        (None, None) => crate::config::MemberList::parse(d.members)
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
            &crate::config::MemberList(members).to_string(),
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
        hedge: hedge(raw, name, file.hedge.as_ref(), origin)?,
        balancing: crate::config::balancing::build(&raw.balancing, file, name, origin)?,
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
