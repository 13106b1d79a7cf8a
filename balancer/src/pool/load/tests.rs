//! Unit tests of the member load state: A58's weight, blackout and expiry, malformed
//! reports, the peak-EWMA arithmetic, and the response hook.

use std::time::Duration;

use super::*;

fn report(util: f64, rps: f64, eps: f64) -> orca::Report {
    orca::Report {
        application_utilization: util,
        rps,
        eps,
        ..orca::Report::default()
    }
}

fn settings(blackout_ms: u64, expiry_ms: u64) -> Balancing {
    Balancing {
        blackout_period: Duration::from_millis(blackout_ms),
        weight_expiration_period: Duration::from_millis(expiry_ms),
        ..Balancing::default()
    }
}

#[test]
fn a58_weight_is_qps_over_utilization_plus_error_penalty() {
    assert_eq!(a58_weight(&report(0.5, 100.0, 0.0), 1.0), 200.0);
    // 20 errors per 100 requests add 0.2 to the utilization.
    assert!((a58_weight(&report(0.05, 100.0, 20.0), 1.0) - 400.0).abs() < 1e-9);
    assert_eq!(a58_weight(&report(0.05, 100.0, 20.0), 0.0), 2000.0);
    assert_eq!(
        a58_weight(&report(0.0, 100.0, 0.0), 1.0),
        0.0,
        "no utilization"
    );
    assert_eq!(a58_weight(&report(0.5, 0.0, 0.0), 1.0), 0.0, "no qps");
}

#[test]
fn weight_waits_out_the_blackout_then_expires() {
    let b = settings(1000, 5000);
    let m = MemberLoad::default();
    let text = b"TEXT application_utilization=0.5,rps_fractional=100";
    m.record_report(text, &b, 10_000);
    assert_eq!(m.state(10_500, &b), WeightState::Blackout);
    assert_eq!(m.usable_weight(10_500, &b), 0.0);
    m.record_report(text, &b, 11_000);
    assert_eq!(m.usable_weight(11_000, &b), 200.0);
    assert_eq!(m.state(15_999, &b), WeightState::Fresh);
    assert_eq!(m.usable_weight(16_000, &b), 0.0, "expired");
    assert_eq!(m.state(16_000, &b), WeightState::Stale);
    m.record_report(text, &b, 20_000);
    assert_eq!(m.state(20_500, &b), WeightState::Blackout, "a new blackout");
    let v = m.view(20_500, &b);
    assert_eq!((v.not_yet_usable, v.stale, v.reports), (1, 1, 3));
}

#[test]
fn a_malformed_report_is_counted_and_changes_nothing() {
    let b = settings(0, 5000);
    let m = MemberLoad::default();
    m.record_report(
        b"TEXT application_utilization=0.5,rps_fractional=100",
        &b,
        10,
    );
    m.record_report(b"TEXT rps_fractional=oops", &b, 20);
    let v = m.view(30, &b);
    assert_eq!((v.reports, v.malformed), (1, 1));
    assert_eq!(v.report.map(|r| r.1), Some(100.0));
    assert_eq!(v.weight_state, WeightState::Fresh);
}

#[test]
fn peak_ewma_jumps_to_peaks_and_decays_toward_faster_answers() {
    assert_eq!(ewma_update(0.0, 0, 40.0, 5, 10_000.0), 40.0, "first answer");
    assert_eq!(ewma_update(10.0, 100, 40.0, 105, 10_000.0), 40.0, "a peak");
    let e = ewma_update(40.0, 100, 10.0, 10_100, 10_000.0);
    let want = 40.0 * (-1f64).exp() + 10.0 * (1.0 - (-1f64).exp());
    assert!((e - want).abs() < 1e-9);
    let soon = ewma_update(40.0, 100, 10.0, 101, 10_000.0);
    assert!(soon > 39.9, "one fast answer right after barely moves it");
    assert!((ewma_decayed(40.0, 0, 10_000, 10_000.0) - 40.0 / std::f64::consts::E).abs() < 1e-9);
}

#[test]
fn errors_count_as_slow_answers_for_peak_ewma_only() {
    let b = Balancing::default();
    let m = MemberLoad::default();
    let mut h = HeaderMap::new();
    m.observe(
        Algorithm::PeakEwma,
        &b,
        &mut h,
        StatusCode::INTERNAL_SERVER_ERROR,
        500,
        10,
    );
    assert_eq!(m.ewma_ms(10, &b), Some(300.0));
    let n = MemberLoad::default();
    n.observe(
        Algorithm::RoundRobin,
        &b,
        &mut h,
        StatusCode::INTERNAL_SERVER_ERROR,
        500,
        10,
    );
    n.observe_failure(Algorithm::RoundRobin, &b, 10);
    assert_eq!(n.ewma_ms(10, &b), None);
    n.observe_failure(Algorithm::PeakEwma, &b, 10);
    assert_eq!(n.ewma_ms(10, &b), Some(300.0));
}

#[test]
fn the_header_is_always_removed_and_parsed_only_when_needed() {
    let b = Balancing::default();
    let m = MemberLoad::default();
    let value = http::HeaderValue::from_static("TEXT application_utilization=0.5,rps_fractional=9");
    let mut h = HeaderMap::new();
    for at in [5000, 5100, 5200] {
        h.insert(orca::HEADER, value.clone());
        m.observe(Algorithm::RoundRobin, &b, &mut h, StatusCode::OK, 100, at);
        assert!(h.is_empty());
    }
    assert_eq!(m.view(5200, &b).reports, 1, "sampled once a second");
    for at in [5300, 5400] {
        h.insert(orca::HEADER, value.clone());
        m.observe(Algorithm::ReportedLoad, &b, &mut h, StatusCode::OK, 100, at);
    }
    assert_eq!(m.view(5400, &b).reports, 3, "every report");
}
