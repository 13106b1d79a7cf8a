//! The load-aware algorithms' series: what members report (ORCA), the weights reported-load
//! uses with their state (names after gRPC A78's `grpc.lb.wrr.*`), and peak-ewma's estimate.

use super::{Out, Row, lbl};
use crate::pool::load::WeightState;
use crate::select::Algorithm;

const STATES: [WeightState; 4] = [
    WeightState::None,
    WeightState::Blackout,
    WeightState::Fresh,
    WeightState::Stale,
];

pub(super) fn load_metrics(o: &mut Out, rows: &[Row], now: u64) {
    let views: Vec<_> = rows
        .iter()
        .map(|r| r.m.load.view(now, &r.balancing))
        .collect();
    let both = || rows.iter().zip(&views);

    o.family(
        "balancer_orca_reports_total",
        "counter",
        "ORCA load reports (endpoint-load-metrics) read from the member: valid, or malformed \
         and ignored. Pools whose algorithm does not use them read one a second.",
    );
    for (r, v) in both() {
        let [p, m] = lbl(r);
        o.sample(
            "balancer_orca_reports_total",
            &[p, m, ("result", "valid")],
            v.reports,
        );
        o.sample(
            "balancer_orca_reports_total",
            &[p, m, ("result", "malformed")],
            v.malformed,
        );
    }
    type Pick = fn(&(f64, f64, f64, u64)) -> f64;
    let reported: [(&str, &str, Pick); 4] = [
        (
            "balancer_orca_utilization",
            "Last reported utilization (application, else CPU).",
            |r| r.0,
        ),
        (
            "balancer_orca_rps",
            "Last reported requests per second (rps_fractional).",
            |r| r.1,
        ),
        (
            "balancer_orca_eps",
            "Last reported errors per second.",
            |r| r.2,
        ),
        (
            "balancer_orca_report_age_seconds",
            "Seconds since the last valid report.",
            |r| r.3 as f64 / 1000.0,
        ),
    ];
    for (name, help, get) in reported {
        o.family(name, "gauge", help);
        for (r, v) in both() {
            if let Some(rep) = &v.report {
                o.sample(name, &lbl(r), get(rep));
            }
        }
    }

    let wrr = || both().filter(|(r, _)| r.algorithm == Algorithm::ReportedLoad);
    o.family(
        "balancer_wrr_endpoint_weight",
        "gauge",
        "reported-load: the weight in use (gRFC A58 units, after mean substitution and clamps).",
    );
    for (r, v) in wrr() {
        if let Some(w) = v.in_use {
            o.sample("balancer_wrr_endpoint_weight", &lbl(r), w);
        }
    }
    o.family(
        "balancer_wrr_endpoint_weight_state",
        "gauge",
        "reported-load: the reported weight's state, 1 for the current one (none and blackout \
         count as the mean, as does stale).",
    );
    for (r, v) in wrr() {
        let [p, m] = lbl(r);
        for s in STATES {
            let on = u8::from(s == v.weight_state);
            o.sample(
                "balancer_wrr_endpoint_weight_state",
                &[p, m, ("state", s.as_str())],
                on,
            );
        }
    }
    o.family(
        "balancer_wrr_endpoint_weight_age_seconds",
        "gauge",
        "reported-load: seconds since the report the member's weight comes from.",
    );
    for (r, v) in wrr() {
        if let Some((_, age)) = v.weight {
            let name = "balancer_wrr_endpoint_weight_age_seconds";
            o.sample(name, &lbl(r), age as f64 / 1000.0);
        }
    }
    for (name, help, stale) in [
        (
            "balancer_wrr_endpoint_weight_not_yet_usable_total",
            "reported-load: weight updates that found no usable weight yet (none or blackout).",
            false,
        ),
        (
            "balancer_wrr_endpoint_weight_stale_total",
            "reported-load: weight updates that found the weight expired.",
            true,
        ),
    ] {
        o.family(name, "counter", help);
        for (r, v) in wrr() {
            o.sample(
                name,
                &lbl(r),
                if stale { v.stale } else { v.not_yet_usable },
            );
        }
    }
    o.family(
        "balancer_wrr_rr_fallback",
        "gauge",
        "reported-load: 1 while fewer than two members have a usable weight (all count equal).",
    );
    let mut pools: Vec<(&str, usize)> = Vec::new();
    for (r, v) in wrr() {
        let fresh = usize::from(v.weight_state == WeightState::Fresh);
        match pools.iter_mut().find(|(p, _)| *p == &*r.pool) {
            Some((_, n)) => *n += fresh,
            None => pools.push((&r.pool, fresh)),
        }
    }
    for (pool, fresh) in pools {
        o.sample(
            "balancer_wrr_rr_fallback",
            &[("pool", pool)],
            u8::from(fresh < 2),
        );
    }

    o.family(
        "balancer_peak_ewma_rtt_seconds",
        "gauge",
        "peak-ewma: the member's latency estimate now (absent before its first answer).",
    );
    for (r, v) in both() {
        if let (Algorithm::PeakEwma, Some(ms)) = (r.algorithm, v.ewma_ms) {
            o.sample("balancer_peak_ewma_rtt_seconds", &lbl(r), ms / 1000.0);
        }
    }
}
