//! `/api/status`: one JSON document with everything the dashboard shows — config version and
//! source, the last reload, routes, every pool and member with state and counters, recent
//! latency percentiles, the last health check, and the event feed. Built from one snapshot.

mod load;

use axum::Json;
use axum::extract::State;
use serde::Serialize;

use super::AdminCtx;
use crate::health::health_name;
use crate::pool::{AdminState, CheckResult, Health, Member, Pool, Presence};
use crate::state::{ReloadStatus, Shared};
use crate::{clock, events::Event, stats};

/// The whole status document.
#[derive(Debug, Serialize)]
pub struct Status {
    /// Snapshot version: increases with every reload or membership change.
    pub(crate) version: u64,
    /// Config file in use (`null` when running on environment and defaults only).
    pub(crate) config_file: Option<String>,
    /// Where the config comes from, in words (`file /etc/... + environment`).
    pub(crate) config_source: String,
    /// The balancer's version.
    pub(crate) build_version: &'static str,
    /// Seconds since the process started.
    pub(crate) uptime_seconds: f64,
    /// Whether runtime actions are enabled (a `BALANCER_ADMIN_TOKEN` is set).
    pub(crate) actions_enabled: bool,
    /// Width of the window the latency percentiles cover, in seconds.
    pub(crate) latency_window_seconds: u64,
    /// Open client connections per proxy worker.
    pub(crate) client_connections: Vec<usize>,
    /// Last reload outcome.
    pub(crate) reload: ReloadStatus,
    /// Routes in match order.
    pub(crate) routes: Vec<RouteStatus>,
    /// Pools.
    pub pools: Vec<PoolStatus>,
    /// Recent events, oldest first (at most [`crate::events::CAPACITY`]).
    pub events: Vec<Event>,
}

/// A route.
#[derive(Debug, Serialize)]
pub(crate) struct RouteStatus {
    /// Host, if any.
    pub(crate) host: Option<String>,
    /// Path prefix or exact path.
    pub(crate) path: String,
    /// Exact match.
    pub(crate) exact: bool,
    /// Pool name.
    pub(crate) pool: String,
}

/// A pool.
#[derive(Debug, Serialize)]
pub struct PoolStatus {
    /// Name.
    pub name: String,
    /// Algorithm in use.
    pub(crate) algorithm: String,
    /// The file's algorithm when an admin action set another at run time (`null`: none did).
    pub(crate) file_algorithm: Option<String>,
    /// Sticky mode.
    pub(crate) sticky: crate::config::StickyMode,
    /// Path of the active health check (`null` when checks are off).
    pub(crate) health_check: Option<String>,
    /// Responses of all members.
    pub(crate) requests: u64,
    /// Whether idempotent requests are hedged.
    pub(crate) hedging: bool,
    /// Hedges sent to its members (those present now).
    pub(crate) hedges: u64,
    /// Hedges that answered first.
    pub(crate) hedges_won: u64,
    /// reported-load only: whether fewer than two members have a usable weight, so all
    /// count as equal (A58's fallback to round-robin); `null` for other algorithms.
    pub(crate) rr_fallback: Option<bool>,
    /// Members.
    pub members: Vec<MemberStatus>,
}

/// A member.
#[derive(Debug, Serialize)]
pub struct MemberStatus {
    /// Address.
    pub addr: String,
    /// As configured (DNS name or registration).
    pub(crate) origin: String,
    /// Sticky id.
    pub(crate) id: String,
    /// `up`, `down`, `draining`, `drained`, `ejected` or `slow-start` (see [`member_state`]).
    pub state: MemberState,
    /// Whether it may receive new requests now.
    pub(crate) in_rotation: bool,
    /// Health-check verdict: `unknown`, `up`, `down` or `draining`.
    pub health: &'static str,
    /// Weight in use.
    pub(crate) weight: u32,
    /// The config's weight (differs from `weight` when an admin action set it at run time).
    pub(crate) file_weight: u32,
    /// Weight now (slow start ramps it).
    pub(crate) effective_weight: u32,
    /// Requests in flight.
    pub(crate) active: u32,
    /// Responses by class: 1xx..5xx.
    pub(crate) responses: [u64; 5],
    /// Total responses.
    pub(crate) requests: u64,
    /// Failed attempts.
    pub(crate) failures: u64,
    /// Retry attempts made on this member.
    pub(crate) retries: u64,
    /// Hedges sent to this member.
    pub(crate) hedges: u64,
    /// Hedges sent to this member that answered first.
    pub(crate) hedges_won: u64,
    /// Response bytes sent.
    pub(crate) bytes_out: u64,
    /// Latency percentiles over the last `latency_window_seconds` (`null` without traffic).
    pub(crate) latency: Option<Latency>,
    /// The last active health check (`null` when none ran).
    pub(crate) last_check: Option<CheckStatus>,
    /// What the load-aware algorithms see (reports, weights, latency estimate).
    pub(crate) load: load::LoadStatus,
}

/// Recent latency (time to response headers), in milliseconds.
#[derive(Debug, Serialize)]
pub(crate) struct Latency {
    /// Responses in the window.
    pub(crate) samples: u64,
    /// Median.
    pub(crate) p50_ms: f64,
    /// 95th percentile.
    pub(crate) p95_ms: f64,
    /// 99th percentile.
    pub(crate) p99_ms: f64,
}

/// The last active health check of a member.
#[derive(Debug, Serialize)]
pub(crate) struct CheckStatus {
    /// `pass`, `fail` or `draining`.
    pub(crate) result: CheckResult,
    /// What the probe saw when it did not pass.
    pub(crate) detail: String,
    /// Seconds since it completed.
    pub(crate) age_seconds: f64,
}

pub(super) async fn handler(State(s): State<AdminCtx>) -> Json<Status> {
    Json(build_status(&s.shared))
}

/// A member's state in one word, most significant first: an operator's drain, the backend
/// leaving, failing checks, discovery no longer listing it, passive ejection, slow-start
/// ramp, else up.
pub(crate) fn member_state(m: &Member, now_ms: u64, slow_start_ms: u64) -> MemberState {
    if m.admin_state() == AdminState::Drained {
        MemberState::Drained
    } else if m.health() == Health::Draining {
        MemberState::Draining
    } else if m.health() == Health::Down {
        MemberState::Down
    } else if m.presence() != Presence::Listed {
        MemberState::Leaving
    } else if m.ejected(now_ms) {
        MemberState::Ejected
    } else if m.ramping(now_ms, slow_start_ms) {
        MemberState::SlowStart
    } else {
        MemberState::Up
    }
}

/// A member's state in one word; serialized (API, metrics label, dashboard) in kebab case.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum MemberState {
    /// In rotation.
    Up,
    /// In rotation, its weight ramping up.
    SlowStart,
    /// Failing its health checks.
    Down,
    /// The backend said it is shutting down.
    Draining,
    /// An operator drained it.
    Drained,
    /// Discovery no longer lists it.
    Leaving,
    /// Passive detection took it out for a while.
    Ejected,
}

impl MemberState {
    /// Every state, in the order `/metrics` lists them.
    pub(crate) const ALL: [MemberState; 7] = [
        MemberState::Up,
        MemberState::SlowStart,
        MemberState::Down,
        MemberState::Draining,
        MemberState::Drained,
        MemberState::Leaving,
        MemberState::Ejected,
    ];

    /// The kebab-case name.
    pub fn as_str(self) -> &'static str {
        match self {
            MemberState::Up => "up",
            MemberState::SlowStart => "slow-start",
            MemberState::Down => "down",
            MemberState::Draining => "draining",
            MemberState::Drained => "drained",
            MemberState::Leaving => "leaving",
            MemberState::Ejected => "ejected",
        }
    }
}

/// Builds the status document from the current snapshot.
pub fn build_status(shared: &Shared) -> Status {
    let snap = shared.snapshot();
    let now = clock::now_ms();
    let second = stats::current_second();
    let overrides = shared
        .overrides
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .clone();
    let pools = snap
        .pools
        .iter()
        .map(|p| {
            let mut s = pool_status(p, now, second);
            s.file_algorithm = overrides.get(&s.name).map(|o| o.file.to_string());
            s
        })
        .collect();
    let routes = snap
        .routes
        .routes()
        .iter()
        .map(|r| RouteStatus {
            host: r.host.clone(),
            path: r.path.clone(),
            exact: r.exact,
            pool: snap.pools[r.pool].settings.name.to_string(),
        })
        .collect();
    let config_file = snap.settings.file.as_ref().map(|p| p.display().to_string());
    Status {
        version: snap.version,
        config_source: match &config_file {
            Some(f) => format!("file {f} + environment + defaults"),
            None => "environment + defaults (no config file)".to_owned(),
        },
        config_file,
        build_version: env!("CARGO_PKG_VERSION"),
        uptime_seconds: now as f64 / 1000.0,
        actions_enabled: snap.settings.admin_token.is_some(),
        latency_window_seconds: stats::WINDOW_SECS,
        client_connections: shared.clients.open(),
        reload: shared
            .reload
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone(),
        routes,
        pools,
        events: shared.events.recent(),
    }
}

fn pool_status(p: &Pool, now: u64, second: u64) -> PoolStatus {
    let slow = p.settings.slow_start.as_millis() as u64;
    let b = &p.settings.balancing;
    let members: Vec<MemberStatus> = p
        .members
        .iter()
        .map(|m| member_status(m, now, slow, second, (b, p.settings.algorithm)))
        .collect();
    let fresh = members
        .iter()
        .filter(|m| m.load.weight_state == Some(crate::pool::load::WeightState::Fresh))
        .count();
    PoolStatus {
        name: p.settings.name.to_string(),
        algorithm: p.settings.algorithm.to_string(),
        file_algorithm: None,
        sticky: p.settings.sticky,
        health_check: p.settings.health.as_ref().map(|h| h.path.clone()),
        requests: members.iter().map(|m| m.requests).sum(),
        hedging: p.settings.hedge.enabled,
        hedges: members.iter().map(|m| m.hedges).sum(),
        hedges_won: members.iter().map(|m| m.hedges_won).sum(),
        rr_fallback: (p.settings.algorithm == crate::select::Algorithm::ReportedLoad)
            .then_some(fresh < 2),
        members,
    }
}

fn member_status(
    m: &Member,
    now: u64,
    slow: u64,
    second: u64,
    (b, algorithm): (
        &crate::config::balancing::Balancing,
        crate::select::Algorithm,
    ),
) -> MemberStatus {
    let responses: [u64; 5] = std::array::from_fn(|i| m.stats.responses(i));
    let window = m.stats.recent.window(second);
    let ms = |q| window.quantile_us(q).map_or(0.0, |us| round3(us / 1000.0));
    let latency = (window.count() > 0).then(|| Latency {
        samples: window.count(),
        p50_ms: ms(0.5),
        p95_ms: ms(0.95),
        p99_ms: ms(0.99),
    });
    MemberStatus {
        addr: m.addr.to_string(),
        origin: m.origin.to_string(),
        id: m.id().to_string(),
        state: member_state(m, now, slow),
        in_rotation: m.is_available(now),
        health: health_name(m.health()),
        weight: m.weight(),
        file_weight: m.config_weight(),
        effective_weight: m.effective_weight(now, slow),
        active: m.in_flight(),
        requests: responses.iter().sum(),
        responses,
        failures: m.stats.failures(),
        retries: m.stats.retries(),
        hedges: m.hedge.sent(),
        hedges_won: m.hedge.won(),
        bytes_out: m.stats.bytes_out(),
        latency,
        last_check: m.last_check().map(|c| CheckStatus {
            result: c.result,
            detail: c.detail,
            age_seconds: round3(now.saturating_sub(c.at_ms) as f64 / 1000.0),
        }),
        load: load::load_status(m, now, b, algorithm),
    }
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

#[cfg(test)]
mod tests {
    use super::MemberState;

    #[test]
    fn member_states_are_written_in_kebab_case() {
        for s in MemberState::ALL {
            assert_eq!(serde_json::to_value(s).unwrap(), s.as_str());
        }
        assert_eq!(MemberState::SlowStart.as_str(), "slow-start");
    }
}
