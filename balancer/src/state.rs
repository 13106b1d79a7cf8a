//! The state the request path reads: ONE [`Snapshot`] (routes, pools, members, selectors)
//! behind an `ArcSwap`, so a reload or membership change is a single atomic swap. Members that
//! survive a rebuild are the same `Arc<Member>`, keeping health, counters and sticky identity.
//!
//! A member that its DNS name no longer resolves to stays in the pool as leaving (out of
//! rotation, shown on the admin page) while the control loop probes it once, when the pool has
//! health checks; the rebuild after the probe drops it and records that it left. A member a
//! reload or a deregistration removes, or one in a pool without checks, leaves at once.

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;
use serde::Serialize;

use crate::config::Settings;
use tokio_util::sync::CancellationToken;

use crate::events::{EventKind, EventLog, MembershipChange};
use crate::local_responses::{LocalCount, LocalResponses};
use crate::pool::{Member, PassivePolicy, Pool, Presence};
use crate::routes::RouteTable;
use crate::server::spread::Load;
use crate::{clock, select, sticky};

/// Everything one request needs, immutable once published.
#[derive(Debug)]
pub struct Snapshot {
    /// Increases by one with every published snapshot.
    pub version: u64,
    /// The config this snapshot was built from.
    pub settings: Arc<Settings>,
    /// Host/path -> pool index.
    pub(crate) routes: RouteTable,
    /// Pools, indexed like `settings.pools`.
    pub pools: Vec<Pool>,
}

/// Addresses that discovery found, by (DNS name, port).
pub(crate) type Discovered = HashMap<(String, u16), Vec<IpAddr>>;

/// Members that registered themselves over the admin API, by pool name.
pub(crate) type Registered = BTreeMap<String, Vec<(SocketAddr, u32)>>;

/// The outcome of the last reload, for the admin API.
#[derive(Debug, Clone, Default, Serialize)]
pub(crate) struct ReloadStatus {
    /// Seconds since the Unix epoch of the last attempt (0 = none yet).
    pub(crate) at: f64,
    /// Whether it was applied.
    pub(crate) ok: bool,
    /// Why it was rejected, if it was.
    pub(crate) error: Option<String>,
    /// How many reloads were applied.
    pub(crate) applied: u64,
    /// How many were valid but changed nothing.
    pub(crate) unchanged: u64,
    /// How many were rejected.
    pub(crate) rejected: u64,
}

/// State shared by the proxy workers, the admin API and the background tasks.
#[derive(Debug)]
pub struct Shared {
    snapshot: ArcSwap<Snapshot>,
    /// Membership, health and reload events.
    pub events: EventLog,
    /// Last reload outcome.
    pub(crate) reload: Mutex<ReloadStatus>,
    /// Cancelled when the process begins shutting down: the one shutdown signal.
    shutdown: CancellationToken,
    /// Open client connections per proxy worker.
    pub clients: Arc<Load>,
    /// Responses the balancer answered itself (no member did), by pool and status.
    local: LocalResponses,
    /// The active load run's id: its requests get `X-Upstream` and a mark in the access log.
    pub load_mark: crate::loadgen::mark::Mark,
    /// Run-time algorithms (the control loop's, copied for the status page).
    pub overrides: Mutex<crate::control::overrides::Overrides>,
    next_version: AtomicU64,
}

impl Shared {
    /// State around a first snapshot, for `workers` proxy workers.
    pub(crate) fn new(first: Snapshot, workers: usize) -> Arc<Self> {
        let next = first.version + 1;
        let local = LocalResponses::default();
        local.add_pools(first.settings.pools.iter().map(|p| &*p.name));
        Arc::new(Shared {
            snapshot: ArcSwap::from_pointee(first),
            events: EventLog::default(),
            reload: Mutex::new(ReloadStatus::default()),
            shutdown: CancellationToken::new(),
            clients: Arc::new(Load::new(workers)),
            local,
            load_mark: Default::default(),
            overrides: Default::default(),
            next_version: AtomicU64::new(next),
        })
    }

    /// Counts a response the balancer made itself (`pool` is `-` before routing).
    pub(crate) fn count_local(&self, pool: &str, status: u16) {
        self.local.count(pool, status);
    }

    /// Responses the balancer made itself, by pool and status.
    pub(crate) fn local_responses(&self) -> Vec<LocalCount> {
        self.local.snapshot()
    }

    /// The token whose cancellation begins the graceful shutdown.
    pub(crate) fn shutdown_token(&self) -> &CancellationToken {
        &self.shutdown
    }

    /// Whether the graceful shutdown has begun.
    pub(crate) fn shutting_down(&self) -> bool {
        self.shutdown.is_cancelled()
    }

    /// The current snapshot.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.snapshot.load_full()
    }

    /// Builds a snapshot from `settings` and membership, reusing surviving members, logs what
    /// joined and left, and publishes it in one swap. Callers serialize (one control task).
    pub(crate) fn rebuild(
        &self,
        settings: Arc<Settings>,
        found: &Discovered,
        registered: &Registered,
    ) {
        let prev = self.snapshot();
        let version = self.next_version.fetch_add(1, Ordering::Relaxed);
        self.local
            .add_pools(settings.pools.iter().map(|p| &*p.name));
        let next = build(settings, found, registered, Some(&prev), version);
        self.log_changes(&prev, &next);
        self.snapshot.store(Arc::new(next));
    }

    fn log_changes(&self, prev: &Snapshot, next: &Snapshot) {
        for pool in &next.pools {
            let name = &*pool.settings.name;
            let old = prev.pools.iter().find(|p| &*p.settings.name == name);
            for m in &pool.members {
                if old.is_none_or(|o| !o.members.iter().any(|x| x.addr == m.addr)) {
                    let msg = format!("member joined (from {})", m.origin);
                    self.events.count_membership(name, MembershipChange::Joined);
                    self.events.push(
                        EventKind::Membership,
                        Some(name),
                        Some(&m.addr.to_string()),
                        msg,
                    );
                }
            }
            if let Some(o) = old {
                for m in &o.members {
                    if !pool.members.iter().any(|x| x.addr == m.addr) {
                        self.events.count_membership(name, MembershipChange::Left);
                        let msg = format!(
                            "member left (was {}); in-flight requests finish: {}",
                            m.origin,
                            m.in_flight()
                        );
                        self.events.push_left(name, m, msg);
                    }
                }
            }
        }
        // A pool a reload removed takes its members with it, without an event each.
        for o in &prev.pools {
            if !next
                .pools
                .iter()
                .any(|p| p.settings.name == o.settings.name)
            {
                for m in &o.members {
                    m.set_presence(Presence::Left);
                }
            }
        }
    }
}

/// Builds a snapshot; `prev` provides the members (and their state) to carry forward.
pub(crate) fn build(
    settings: Arc<Settings>,
    found: &Discovered,
    registered: &Registered,
    prev: Option<&Snapshot>,
    version: u64,
) -> Snapshot {
    let now = clock::now_ms();
    let pools = settings
        .pools
        .iter()
        .map(|ps| {
            let prev_pool = prev.and_then(|p| p.pools.iter().find(|o| o.settings.name == ps.name));
            let old: HashMap<SocketAddr, &Arc<Member>> = prev_pool
                .map(|o| o.members.iter().map(|m| (m.addr, m)).collect())
                .unwrap_or_default();
            let mut members: Vec<Arc<Member>> = Vec::new();
            for (addr, weight, origin) in addresses(ps, found, registered) {
                if members.iter().any(|m| m.addr == addr) {
                    continue;
                }
                let id = sticky::member_id(&settings.sticky_key, addr);
                let member = match old.get(&addr) {
                    Some(m) => {
                        m.relist();
                        m.apply_config_weight(weight);
                        // A changed sticky secret re-derives the id; the member keeps its state.
                        m.set_id(id);
                        Arc::clone(m)
                    }
                    None => {
                        let m = Member::new(addr, origin, id, weight);
                        if prev.is_some() && !ps.slow_start.is_zero() {
                            m.begin_ramp(now);
                        }
                        Arc::new(m)
                    }
                };
                members.push(member);
            }
            members.extend(still_leaving(ps, prev_pool, &members));
            Pool {
                selector: selector_for(ps, &members, prev_pool),
                cookies: set_cookies(ps, &members),
                passive: PassivePolicy {
                    max_fails: ps.max_fails,
                    fail_timeout_ms: ps.fail_timeout.as_millis() as u64,
                },
                members,
                settings: ps.clone(),
            }
        })
        .collect();
    Snapshot {
        version,
        routes: RouteTable::new(settings.routes.clone()),
        pools,
        settings,
    }
}

/// Members of `prev` that discovery no longer lists and that stay, out of rotation, until the
/// control loop's probe decides on them (see the module doc). Put last, so the members still
/// listed keep their order.
fn still_leaving(
    ps: &crate::config::PoolSettings,
    prev: Option<&Pool>,
    listed: &[Arc<Member>],
) -> Vec<Arc<Member>> {
    let Some(prev) = prev else {
        return Vec::new();
    };
    if ps.health.is_none() {
        return Vec::new();
    }
    prev.members
        .iter()
        .filter(|m| !listed.iter().any(|x| x.addr == m.addr) && from_dns(ps, m) && m.keep_leaving())
        .cloned()
        .collect()
}

/// Whether `m` stands for an address of a DNS name the pool still has.
fn from_dns(ps: &crate::config::PoolSettings, m: &Member) -> bool {
    ps.members
        .iter()
        .any(|spec| spec.ip_addr().is_none() && spec.authority() == *m.origin)
}

/// Each member's `Set-Cookie` value when the pool is sticky by cookie.
fn set_cookies(
    ps: &crate::config::PoolSettings,
    members: &[Arc<Member>],
) -> Vec<Option<http::HeaderValue>> {
    if ps.sticky != crate::config::StickyMode::Cookie {
        return Vec::new();
    }
    members
        .iter()
        .map(|m| {
            let v = sticky::set_cookie(&ps.cookie_name, m.id(), ps.cookie_max_age);
            http::HeaderValue::from_str(&v).ok()
        })
        .collect()
}

/// The previous selector when the pool's algorithm and members are unchanged (a reload or a
/// discovery elsewhere must not restart a smooth weighted cycle); else a fresh one that
/// continues the previous rotation.
fn selector_for(
    ps: &crate::config::PoolSettings,
    members: &[Arc<Member>],
    prev: Option<&Pool>,
) -> Arc<dyn select::Select> {
    if let Some(p) = prev {
        let same_members = p.members.len() == members.len()
            && p.members
                .iter()
                .zip(members)
                .all(|(a, b)| Arc::ptr_eq(a, b));
        if same_members
            && p.settings.algorithm == ps.algorithm
            && p.settings.balancing == ps.balancing
        {
            return Arc::clone(&p.selector);
        }
    }
    let rotation = prev.map_or(0, |p| p.selector.rotation());
    select::build(ps.algorithm, &ps.balancing, members.len(), rotation)
}

/// Every (address, weight, origin) a pool has now: IP members as written, DNS members as last
/// resolved, then self-registered members.
fn addresses(
    ps: &crate::config::PoolSettings,
    found: &Discovered,
    registered: &Registered,
) -> Vec<(SocketAddr, u32, Arc<str>)> {
    let mut out = Vec::new();
    for spec in &ps.members {
        let origin: Arc<str> = spec.authority().into();
        match spec.ip_addr() {
            Some(addr) => out.push((addr, spec.weight, origin)),
            None => {
                if let Some(ips) = found.get(&(spec.host.clone(), spec.port)) {
                    for ip in ips {
                        out.push((SocketAddr::new(*ip, spec.port), spec.weight, origin.clone()));
                    }
                }
            }
        }
    }
    if let Some(regs) = registered.get(&*ps.name) {
        let origin: Arc<str> = "registration".into();
        for (addr, w) in regs {
            out.push((*addr, *w, origin.clone()));
        }
    }
    out
}

#[cfg(test)]
mod tests;
