//! Unit tests of the load-aware selectors: peak-ewma prefers the faster member, charges fast
//! failures, eases a new member in; reported-load follows reported weights after the blackout,
//! counts unweighted members as the mean, and keeps static weights as a factor.

use std::sync::Arc;
use std::time::Duration;

use http::{HeaderMap, HeaderValue, StatusCode};

use super::{Algorithm, PickContext, build};
use crate::config::balancing::{Balancing, DEFAULT};
use crate::orca;
use crate::pool::{InFlight, Member, MemberId};

fn member(i: u8, weight: u32) -> Arc<Member> {
    let addr = format!("10.1.0.{i}:80").parse().unwrap();
    Arc::new(Member::new(
        addr,
        "m".into(),
        MemberId(u64::from(i)),
        weight,
    ))
}

fn cx(now_ms: u64) -> PickContext<'static> {
    PickContext {
        now_ms,
        slow_start_ms: 0,
        key: None,
        exclude: &[],
    }
}

/// Feeds `m` one answer as the response hook would.
fn answer(
    m: &Member,
    alg: Algorithm,
    b: &Balancing,
    status: u16,
    ms: u64,
    report: Option<&str>,
    at: u64,
) {
    let mut h = HeaderMap::new();
    if let Some(r) = report {
        h.insert(orca::HEADER, HeaderValue::from_str(r).unwrap());
    }
    let status = StatusCode::from_u16(status).unwrap();
    m.load.observe(alg, b, &mut h, status, ms * 1000, at);
    assert!(h.get(orca::HEADER).is_none(), "the report is stripped");
}

/// How many of `n` picks (each released at once) go to each member.
fn shares(alg: Algorithm, b: &Balancing, ms: &[Arc<Member>], n: usize, now: u64) -> Vec<usize> {
    let sel = build(alg, b, ms.len(), 0);
    let mut counts = vec![0; ms.len()];
    for _ in 0..n {
        counts[sel.pick(ms, &cx(now)).unwrap()] += 1;
    }
    counts
}

/// How many of `n` concurrent picks (each kept in flight) go to each member.
fn concurrent_shares(alg: Algorithm, ms: &[Arc<Member>], n: usize, now: u64) -> Vec<usize> {
    let sel = build(alg, &DEFAULT, ms.len(), 0);
    let mut counts = vec![0; ms.len()];
    let mut held: Vec<InFlight> = Vec::new();
    for _ in 0..n {
        let i = sel.pick(ms, &cx(now)).unwrap();
        counts[i] += 1;
        held.push(ms[i].begin_request());
    }
    counts
}

#[test]
fn peak_ewma_prefers_the_faster_member() {
    let ms = [member(1, 1), member(2, 1)];
    let now = 100_000;
    answer(&ms[0], Algorithm::PeakEwma, &DEFAULT, 200, 50, None, now);
    answer(&ms[1], Algorithm::PeakEwma, &DEFAULT, 200, 5, None, now);
    assert_eq!(
        shares(Algorithm::PeakEwma, &DEFAULT, &ms, 100, now + 10),
        [0, 100]
    );
}

#[test]
fn peak_ewma_does_not_prefer_a_member_that_fails_fast() {
    let ms = [member(1, 1), member(2, 1)];
    let now = 100_000;
    for k in 0..5 {
        answer(&ms[0], Algorithm::PeakEwma, &DEFAULT, 500, 1, None, now + k);
        answer(
            &ms[1],
            Algorithm::PeakEwma,
            &DEFAULT,
            200,
            20,
            None,
            now + k,
        );
    }
    assert_eq!(
        shares(Algorithm::PeakEwma, &DEFAULT, &ms, 100, now + 10),
        [0, 100]
    );
    // Failed attempts (no answer at all) count the same way.
    let fresh = [member(3, 1), member(4, 1)];
    fresh[0]
        .load
        .observe_failure(Algorithm::PeakEwma, &DEFAULT, now);
    answer(&fresh[1], Algorithm::PeakEwma, &DEFAULT, 200, 20, None, now);
    assert_eq!(
        shares(Algorithm::PeakEwma, &DEFAULT, &fresh, 50, now + 10),
        [0, 50]
    );
}

#[test]
fn peak_ewma_eases_a_new_member_in_even_beside_slow_ones() {
    let now = 100_000;
    for measured_ms in [10, 1000] {
        let ms = [member(1, 1), member(2, 1), member(3, 1)];
        for m in &ms[..2] {
            answer(
                m,
                Algorithm::PeakEwma,
                &DEFAULT,
                200,
                measured_ms,
                None,
                now,
            );
        }
        let c = concurrent_shares(Algorithm::PeakEwma, &ms, 30, now + 1);
        assert!(
            c[2] < 15,
            "new member beside {measured_ms} ms ones flooded: {c:?}"
        );
        assert!(
            c[2] > 0,
            "new member beside {measured_ms} ms ones never tried: {c:?}"
        );
    }
}

fn with(blackout_ms: u64) -> Balancing {
    Balancing {
        blackout_period: Duration::from_millis(blackout_ms),
        ..DEFAULT
    }
}

const BUSY: &str = "TEXT application_utilization=0.9,rps_fractional=100";
const IDLE: &str = "TEXT application_utilization=0.1,rps_fractional=100";

#[test]
fn reported_load_sends_less_to_the_member_reporting_more_load() {
    let b = with(0);
    let ms = [member(1, 1), member(2, 1), member(3, 1)];
    let now = 100_000;
    for (m, r) in ms.iter().zip([BUSY, IDLE, IDLE]) {
        answer(m, Algorithm::ReportedLoad, &b, 200, 1, Some(r), now);
    }
    // Weights 111, 1000, 1000: the busy member gets 111/2111 of the picks.
    let c = shares(Algorithm::ReportedLoad, &b, &ms, 2111, now + 1);
    assert!((100..=125).contains(&c[0]), "{c:?}");
    let v = ms[0].load.view(now + 1, &b);
    assert!((v.in_use.unwrap() - 111.111).abs() < 0.01, "{v:?}");
}

#[test]
fn reported_load_counts_errors_against_a_member() {
    let b = with(0);
    let ms = [member(1, 1), member(2, 1)];
    let now = 100_000;
    let failing = "TEXT application_utilization=0.1,rps_fractional=100,eps=20";
    answer(
        &ms[0],
        Algorithm::ReportedLoad,
        &b,
        200,
        1,
        Some(failing),
        now,
    );
    answer(&ms[1], Algorithm::ReportedLoad, &b, 200, 1, Some(IDLE), now);
    // 100 / (0.1 + 0.2) against 100 / 0.1: a third of the other's weight.
    let c = shares(Algorithm::ReportedLoad, &b, &ms, 400, now + 1);
    assert_eq!(c, [100, 300]);
}

#[test]
fn reported_load_waits_out_the_blackout_so_a_new_member_is_not_flooded() {
    let b = with(10_000);
    let ms = [member(1, 1), member(2, 1), member(3, 1)];
    let now = 100_000;
    for m in &ms[..2] {
        answer(
            m,
            Algorithm::ReportedLoad,
            &b,
            200,
            1,
            Some(BUSY),
            now - 20_000,
        );
        answer(m, Algorithm::ReportedLoad, &b, 200, 1, Some(BUSY), now);
    }
    // The newcomer reports a weight 90x the others', but it is in blackout: it counts as
    // the mean, an equal share.
    let eager = "TEXT application_utilization=0.01,rps_fractional=100";
    answer(
        &ms[2],
        Algorithm::ReportedLoad,
        &b,
        200,
        1,
        Some(eager),
        now,
    );
    assert_eq!(
        shares(Algorithm::ReportedLoad, &b, &ms, 300, now + 1),
        [100, 100, 100]
    );
    // After the blackout its weight counts, clamped to 10x the mean.
    answer(
        &ms[2],
        Algorithm::ReportedLoad,
        &b,
        200,
        1,
        Some(eager),
        now + 10_000,
    );
    let c = shares(Algorithm::ReportedLoad, &b, &ms, 1000, now + 10_001);
    assert!(c[2] > 800, "{c:?}");
}

#[test]
fn reported_load_keeps_static_weights_as_a_factor() {
    let b = with(0);
    let ms = [member(1, 3), member(2, 1)];
    let now = 100_000;
    for m in &ms {
        answer(m, Algorithm::ReportedLoad, &b, 200, 1, Some(IDLE), now);
    }
    assert_eq!(
        shares(Algorithm::ReportedLoad, &b, &ms, 400, now + 1),
        [300, 100]
    );
}
