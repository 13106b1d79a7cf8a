//! What a member's answers say about its load, for the load-aware algorithms: the peak-EWMA
//! latency estimate (`peak-ewma`) and the last ORCA report with the gRFC A58 weight computed
//! from it (`reported-load`). Atomics only; the pure arithmetic is beside it, unit-tested.
//!
//! The response hook ([`MemberLoad::observe`]) always removes the `endpoint-load-metrics`
//! header (it is between the member and the balancer, never for clients), and does the rest
//! only where the pool's algorithm reads it, so round-robin pays one header-map removal:
//! - `reported-load` parses every report (a few float operations more compute its weight);
//! - other algorithms parse at most one report per member per second, only so the dashboard
//!   can show what members report whatever the algorithm (one atomic load otherwise);
//! - `peak-ewma` alone updates the latency estimate.
//!
//! Errors count against a member in both: peak-ewma charges a 5xx answer or a failed attempt
//! as if it had taken [`ERROR_RTT_FACTOR`] x the default rtt (at least), so a replica that
//! fails fast looks slow, not fast; reported-load uses A58's `eps / rps x penalty` term.

use std::sync::atomic::{AtomicU64, Ordering};

use http::{HeaderMap, StatusCode};

use crate::config::balancing::Balancing;
use crate::orca;
use crate::select::Algorithm;

/// A 5xx or failed attempt counts, for peak-ewma, as an answer that took at least this many
/// times the pool's `ewma_default_rtt` (300 ms by default).
pub(crate) const ERROR_RTT_FACTOR: f64 = 10.0;

/// Members of pools whose algorithm does not use reports still have one parsed this often,
/// for display.
const DISPLAY_SAMPLE_MS: u64 = 1000;

/// An `f64` in an `AtomicU64`.
#[derive(Debug, Default)]
struct AtomicF64(AtomicU64);

impl AtomicF64 {
    fn get(&self) -> f64 {
        f64::from_bits(self.0.load(Ordering::Relaxed))
    }

    fn set(&self, v: f64) {
        self.0.store(v.to_bits(), Ordering::Relaxed);
    }
}

/// Where a member's reported weight stands (gRPC A78's states).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub(crate) enum WeightState {
    /// No usable report yet (none, or all with a zero weight): counts as the mean.
    None,
    /// Reporting for less than the blackout period: counts as the mean.
    Blackout,
    /// In use.
    Fresh,
    /// No report within the expiration period: counts as the mean.
    Stale,
}

impl WeightState {
    /// The kebab-case name.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            WeightState::None => "none",
            WeightState::Blackout => "blackout",
            WeightState::Fresh => "fresh",
            WeightState::Stale => "stale",
        }
    }
}

/// A58's weight of one report: `qps / (utilization + eps / qps x penalty)`; 0 (no weight)
/// when qps or utilization is 0, as gRPC ignores such reports.
pub(crate) fn a58_weight(report: &orca::Report, penalty: f64) -> f64 {
    let (qps, utilization) = (report.rps, report.utilization());
    if qps <= 0.0 || utilization <= 0.0 {
        return 0.0;
    }
    let error_term = if report.eps > 0.0 && penalty > 0.0 {
        report.eps / qps * penalty
    } else {
        0.0
    };
    qps / (utilization + error_term)
}

/// A weight's state at `now` from when it was last updated and since when reports have been
/// non-empty (ms, 0 = never), as gRPC's `EndpointWeight::GetWeight` decides it.
pub(crate) fn weight_state(
    now: u64,
    updated_at: u64,
    non_empty_since: u64,
    b: &Balancing,
) -> WeightState {
    if updated_at == 0 || non_empty_since == 0 {
        return WeightState::None;
    }
    if now.saturating_sub(updated_at) >= b.weight_expiration_period.as_millis() as u64 {
        return WeightState::Stale;
    }
    if now.saturating_sub(non_empty_since) < b.blackout_period.as_millis() as u64 {
        return WeightState::Blackout;
    }
    WeightState::Fresh
}

/// Peak-EWMA (tower's `PeakEwma`): a sample above the estimate replaces it at once (the peak);
/// one below pulls the estimate toward it by how long it has been since the last update, on
/// the time constant `tau_ms`.
pub(crate) fn ewma_update(
    estimate: f64,
    updated_at: u64,
    sample: f64,
    now: u64,
    tau_ms: f64,
) -> f64 {
    if updated_at == 0 || sample >= estimate {
        return sample;
    }
    let decay = (-(now.saturating_sub(updated_at) as f64) / tau_ms).exp();
    estimate * decay + sample * (1.0 - decay)
}

/// The estimate as time passes without answers: it decays toward 0, as tower's does, so a
/// member left alone after a bad spell is tried again.
pub(crate) fn ewma_decayed(estimate: f64, updated_at: u64, now: u64, tau_ms: f64) -> f64 {
    estimate * (-(now.saturating_sub(updated_at) as f64) / tau_ms).exp()
}

/// Load state of one member (see the module doc).
#[derive(Debug, Default)]
pub(crate) struct MemberLoad {
    /// Peak-EWMA estimate, in ms.
    rtt_ms: AtomicF64,
    /// When the estimate was last updated (ms); 0 = no answer yet.
    rtt_at: AtomicU64,
    /// Last valid report's utilization, rps and eps.
    utilization: AtomicF64,
    rps: AtomicF64,
    eps: AtomicF64,
    /// When the last valid report came (ms, 0 = never).
    report_at: AtomicU64,
    /// When a report was last parsed, valid or not (the display sampling); 0 = never.
    parsed_at: AtomicU64,
    /// Valid and malformed reports.
    reports: AtomicU64,
    malformed: AtomicU64,
    /// A58 weight of the last report that had one, when it came, and since when reports have
    /// had one without expiring (0 = never / reset by expiry).
    weight: AtomicF64,
    weight_at: AtomicU64,
    non_empty_since: AtomicU64,
    /// The weight the selector last used (A58 units, after mean substitution and clamps).
    in_use: AtomicF64,
    /// Selector updates that found this member's weight not yet usable, or stale (A78).
    not_yet_usable: AtomicU64,
    stale: AtomicU64,
}

/// What [`MemberLoad`] shows (admin page, `/metrics`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct LoadView {
    /// Last valid report: utilization, rps, eps, and its age in ms.
    pub report: Option<(f64, f64, f64, u64)>,
    /// Valid reports parsed.
    pub reports: u64,
    /// Malformed reports ignored.
    pub malformed: u64,
    /// The reported weight's state.
    pub weight_state: WeightState,
    /// The A58 weight of the last report that had one, and its age in ms.
    pub weight: Option<(f64, u64)>,
    /// The weight the selector uses (`None` before it first computed one).
    pub in_use: Option<f64>,
    /// Counters of A78: selector updates finding the weight not yet usable / stale.
    pub not_yet_usable: u64,
    /// See `not_yet_usable`.
    pub stale: u64,
    /// Peak-EWMA estimate now (decayed), in ms; `None` before any answer.
    pub ewma_ms: Option<f64>,
}

impl MemberLoad {
    /// The response hook: strips the report header and feeds what the pool's algorithm uses.
    /// `at` is when the answer came (ms); `rtt_us` how long it took.
    pub(crate) fn observe(
        &self,
        algorithm: Algorithm,
        b: &Balancing,
        headers: &mut HeaderMap,
        status: StatusCode,
        rtt_us: u64,
        at: u64,
    ) {
        if let Some(value) = headers.remove(orca::HEADER) {
            let last = self.parsed_at.load(Ordering::Relaxed);
            let wanted = algorithm == Algorithm::ReportedLoad
                || last == 0
                || at.saturating_sub(last) >= DISPLAY_SAMPLE_MS;
            if wanted {
                self.record_report(value.as_bytes(), b, at);
            }
        }
        if algorithm == Algorithm::PeakEwma {
            let mut sample = rtt_us as f64 / 1000.0;
            if status.is_server_error() {
                sample = sample.max(error_rtt(b));
            }
            self.record_rtt(sample, b, at);
        }
    }

    /// A failed attempt (no answer): for peak-ewma, an answer that took the error rtt.
    pub(crate) fn observe_failure(&self, algorithm: Algorithm, b: &Balancing, at: u64) {
        if algorithm == Algorithm::PeakEwma {
            self.record_rtt(error_rtt(b), b, at);
        }
    }

    fn record_rtt(&self, sample_ms: f64, b: &Balancing, at: u64) {
        let tau = b.ewma_decay.as_millis() as f64;
        let prev_at = self.rtt_at.load(Ordering::Relaxed);
        // Two answers racing may lose one update; a peak is rarely lost and the estimate is
        // an estimate. No lock on the response path.
        let next = ewma_update(self.rtt_ms.get(), prev_at, sample_ms, at, tau);
        self.rtt_ms.set(next);
        self.rtt_at.store(at.max(1), Ordering::Relaxed);
    }

    fn record_report(&self, value: &[u8], b: &Balancing, at: u64) {
        self.parsed_at.store(at.max(1), Ordering::Relaxed);
        let Ok(report) = orca::parse(value) else {
            self.malformed.fetch_add(1, Ordering::Relaxed);
            return;
        };
        self.reports.fetch_add(1, Ordering::Relaxed);
        self.utilization.set(report.utilization());
        self.rps.set(report.rps);
        self.eps.set(report.eps);
        self.report_at.store(at.max(1), Ordering::Relaxed);
        let weight = a58_weight(&report, b.error_utilization_penalty);
        if weight <= 0.0 {
            return;
        }
        let last = self.weight_at.load(Ordering::Relaxed);
        let expired =
            last == 0 || at.saturating_sub(last) >= b.weight_expiration_period.as_millis() as u64;
        if expired || self.non_empty_since.load(Ordering::Relaxed) == 0 {
            // Reports resume after none or after expiry: a new blackout starts (A58).
            self.non_empty_since.store(at.max(1), Ordering::Relaxed);
        }
        self.weight.set(weight);
        self.weight_at.store(at.max(1), Ordering::Relaxed);
    }

    /// The reported weight usable at `now` (0 when none, in blackout or stale), counting the
    /// A78 not-yet-usable and stale events: the selector calls this once per update.
    pub(crate) fn usable_weight(&self, now: u64, b: &Balancing) -> f64 {
        match self.state(now, b) {
            WeightState::Fresh => self.weight.get(),
            WeightState::Stale => {
                self.stale.fetch_add(1, Ordering::Relaxed);
                0.0
            }
            WeightState::None | WeightState::Blackout => {
                self.not_yet_usable.fetch_add(1, Ordering::Relaxed);
                0.0
            }
        }
    }

    /// Records the weight the selector now uses.
    pub(crate) fn set_in_use(&self, w: f64) {
        self.in_use.set(w);
    }

    fn state(&self, now: u64, b: &Balancing) -> WeightState {
        weight_state(
            now,
            self.weight_at.load(Ordering::Relaxed),
            self.non_empty_since.load(Ordering::Relaxed),
            b,
        )
    }

    /// The peak-EWMA estimate at `now` in ms, decayed; `None` before any answer.
    pub(crate) fn ewma_ms(&self, now: u64, b: &Balancing) -> Option<f64> {
        let at = self.rtt_at.load(Ordering::Relaxed);
        (at != 0).then(|| ewma_decayed(self.rtt_ms.get(), at, now, b.ewma_decay.as_millis() as f64))
    }

    /// Everything shown about the member's load at `now`.
    pub(crate) fn view(&self, now: u64, b: &Balancing) -> LoadView {
        let age = |at: u64| now.saturating_sub(at);
        let report_at = self.report_at.load(Ordering::Relaxed);
        let weight_at = self.weight_at.load(Ordering::Relaxed);
        let in_use = self.in_use.get();
        LoadView {
            report: (report_at != 0).then(|| {
                (
                    self.utilization.get(),
                    self.rps.get(),
                    self.eps.get(),
                    age(report_at),
                )
            }),
            reports: self.reports.load(Ordering::Relaxed),
            malformed: self.malformed.load(Ordering::Relaxed),
            weight_state: self.state(now, b),
            weight: (weight_at != 0).then(|| (self.weight.get(), age(weight_at))),
            in_use: (in_use > 0.0).then_some(in_use),
            not_yet_usable: self.not_yet_usable.load(Ordering::Relaxed),
            stale: self.stale.load(Ordering::Relaxed),
            ewma_ms: self.ewma_ms(now, b),
        }
    }
}

/// The rtt a failed attempt or a 5xx counts as, at least (ms).
fn error_rtt(b: &Balancing) -> f64 {
    b.ewma_default_rtt.as_secs_f64() * 1000.0 * ERROR_RTT_FACTOR
}

#[cfg(test)]
mod tests;
