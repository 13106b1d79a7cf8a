//! The part of a member's status that shows what the load-aware algorithms see: the last
//! ORCA report, the reported weight with its state and age, the weight in use, and the
//! peak-EWMA estimate (gRPC A78's per-endpoint view, as JSON).

use serde::Serialize;

use super::round3;
use crate::config::balancing::Balancing;
use crate::pool::Member;
use crate::pool::load::WeightState;
use crate::select::Algorithm;

/// What the algorithms know about a member's load.
#[derive(Debug, Serialize)]
pub(crate) struct LoadStatus {
    /// The last valid ORCA report (`null` before one; pools whose algorithm does not use
    /// reports sample one a second).
    pub(crate) report: Option<ReportStatus>,
    /// Valid reports parsed.
    pub(crate) reports: u64,
    /// Malformed reports ignored.
    pub(crate) malformed_reports: u64,
    /// reported-load: `none`, `blackout`, `fresh` or `stale`: whether the reported weight is
    /// used (`null` in pools with another algorithm).
    pub(crate) weight_state: Option<WeightState>,
    /// reported-load: gRFC A58 weight of the last report that had one (`null` before, and in
    /// pools with another algorithm).
    pub(crate) reported_weight: Option<f64>,
    /// reported-load: seconds since that report.
    pub(crate) weight_age_seconds: Option<f64>,
    /// The weight reported-load uses now, after mean substitution and clamps (`null` until
    /// a reported-load selector computed one; 1 each while it falls back to round-robin).
    pub(crate) weight_in_use: Option<f64>,
    /// Selector updates that found the weight not yet usable (none or blackout), and stale.
    pub(crate) weight_not_yet_usable: u64,
    /// See `weight_not_yet_usable`.
    pub(crate) weight_stale: u64,
    /// peak-ewma's latency estimate now, ms (`null` before an answer or in other pools).
    pub(crate) ewma_ms: Option<f64>,
}

/// One ORCA report.
#[derive(Debug, Serialize)]
pub(crate) struct ReportStatus {
    /// `application_utilization`, else `cpu_utilization`.
    pub(crate) utilization: f64,
    /// `rps_fractional`.
    pub(crate) rps: f64,
    /// `eps`.
    pub(crate) eps: f64,
    /// Seconds since it came.
    pub(crate) age_seconds: f64,
}

/// The load view of `m` at `now` under the pool's algorithm and settings.
pub(crate) fn load_status(m: &Member, now: u64, b: &Balancing, algorithm: Algorithm) -> LoadStatus {
    let v = m.load.view(now, b);
    let wrr = algorithm == Algorithm::ReportedLoad;
    let weight = v.weight.filter(|_| wrr);
    let secs = |ms: u64| round3(ms as f64 / 1000.0);
    LoadStatus {
        report: v.report.map(|(utilization, rps, eps, age)| ReportStatus {
            utilization,
            rps,
            eps,
            age_seconds: secs(age),
        }),
        reports: v.reports,
        malformed_reports: v.malformed,
        weight_state: wrr.then_some(v.weight_state),
        reported_weight: weight.map(|(w, _)| round3(w)),
        weight_age_seconds: weight.map(|(_, age)| secs(age)),
        weight_in_use: v.in_use.map(round3),
        weight_not_yet_usable: v.not_yet_usable,
        weight_stale: v.stale,
        ewma_ms: v.ewma_ms.map(round3),
    }
}
