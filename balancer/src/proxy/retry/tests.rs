use std::time::Duration;

use super::*;

fn later() -> Instant {
    Instant::now() + Duration::from_secs(60)
}

/// Attempts after `n` were begun.
fn begun(retries: u32, n: u32) -> Attempts {
    let mut a = Attempts::new(retries, later(), false);
    for _ in 0..n {
        a.begin();
    }
    a
}

#[test]
fn a_member_failure_retries_on_another_member_and_excludes_it() {
    let mut a = begun(2, 1);
    assert_eq!(
        a.on_failure(3, FailKind::Connect, true, Instant::now()),
        Decision::Retry
    );
    assert_eq!(a.exclude(), &[3]);
    assert!(!a.is_first());
    assert_eq!(a.begin(), 2);
}

#[test]
fn retries_stop_after_the_configured_count_with_the_last_error() {
    let mut a = begun(1, 1);
    assert_eq!(
        a.on_failure(0, FailKind::Reset, true, Instant::now()),
        Decision::Retry
    );
    a.begin();
    assert_eq!(
        a.on_failure(1, FailKind::Reset, true, Instant::now()),
        Decision::GiveUp(ProxyError::UpstreamFailed)
    );
    assert_eq!(a.made(), 2);
    assert_eq!(a.exclude(), &[0, 1]);
}

#[test]
fn no_retries_configured_means_the_first_failure_is_final() {
    let mut a = begun(0, 1);
    assert_eq!(
        a.on_failure(0, FailKind::Connect, true, Instant::now()),
        Decision::GiveUp(ProxyError::UpstreamFailed)
    );
}

#[test]
fn a_request_that_did_not_come_back_is_not_retried() {
    let mut a = begun(3, 1);
    assert_eq!(
        a.on_failure(0, FailKind::Reset, false, Instant::now()),
        Decision::GiveUp(ProxyError::UpstreamFailed)
    );
}

#[test]
fn the_retry_budget_ends_retries_once_it_is_spent() {
    let start = Instant::now();
    let mut a = Attempts::new(5, start + Duration::from_millis(100), false);
    a.begin();
    assert_eq!(
        a.on_failure(
            0,
            FailKind::Connect,
            true,
            start + Duration::from_millis(99)
        ),
        Decision::Retry
    );
    a.begin();
    assert_eq!(
        a.on_failure(
            1,
            FailKind::Connect,
            true,
            start + Duration::from_millis(100)
        ),
        Decision::GiveUp(ProxyError::UpstreamFailed)
    );
}

#[test]
fn timeouts_answer_504_and_other_member_failures_502() {
    for (kind, err) in [
        (FailKind::Timeout, ProxyError::UpstreamTimeout),
        (FailKind::ConnectTimeout, ProxyError::UpstreamTimeout),
        (FailKind::Connect, ProxyError::UpstreamFailed),
        (FailKind::Reset, ProxyError::UpstreamFailed),
        (FailKind::Invalid, ProxyError::UpstreamFailed),
    ] {
        let mut a = begun(0, 1);
        assert_eq!(
            a.on_failure(0, kind, true, Instant::now()),
            Decision::GiveUp(err),
            "{kind:?}"
        );
        assert_eq!(a.exhausted(), err);
    }
}

#[test]
fn the_last_failure_decides_the_status_when_no_member_is_left() {
    let mut a = begun(3, 1);
    a.on_failure(0, FailKind::Timeout, true, Instant::now());
    a.begin();
    a.on_failure(1, FailKind::Connect, true, Instant::now());
    assert_eq!(a.exhausted(), ProxyError::UpstreamFailed);
}

#[test]
fn with_no_attempt_made_the_answer_is_no_backend() {
    let a = Attempts::new(3, later(), false);
    assert!(a.is_first());
    assert_eq!(a.exhausted(), ProxyError::NoBackend);
    assert_eq!(a.made(), 0);
}

#[test]
fn client_faults_are_answered_at_once_without_charging_the_member() {
    for (kind, err) in [
        (FailKind::TooLarge, ProxyError::BodyTooLarge),
        (FailKind::ClientBody, ProxyError::BadRequest),
        (FailKind::ClientStalled, ProxyError::RequestTimeout),
    ] {
        let mut a = begun(3, 1);
        let d = a.on_failure(0, kind, true, Instant::now());
        assert_eq!(d, Decision::Answer(err), "{kind:?}");
        assert!(!d.charges_member());
        assert!(a.exclude().is_empty());
    }
}

#[test]
fn a_stale_connection_is_resent_uncounted_on_a_fresh_connection() {
    let mut a = begun(0, 1);
    assert!(!a.fresh());
    let d = a.on_failure(0, FailKind::Stale, true, Instant::now());
    assert_eq!(d, Decision::Resend);
    assert!(!d.charges_member());
    assert!(a.fresh());
    assert!(a.is_first(), "a resend keeps the first pick's rules");
    assert!(a.exclude().is_empty());
    assert_eq!(a.begin(), 1, "a resend is not another attempt");
}

#[test]
fn stale_resends_are_bounded_then_charged_like_a_member_failure() {
    let mut a = begun(0, 1);
    for _ in 0..MAX_STALE_RESENDS {
        assert_eq!(
            a.on_failure(0, FailKind::Stale, true, Instant::now()),
            Decision::Resend
        );
        a.begin();
    }
    let d = a.on_failure(0, FailKind::Stale, true, Instant::now());
    assert_eq!(d, Decision::GiveUp(ProxyError::UpstreamFailed));
    assert!(d.charges_member());
    assert_eq!(a.made(), 1);
}

#[test]
fn stale_resends_do_not_use_up_retries() {
    let mut a = begun(1, 1);
    a.on_failure(0, FailKind::Stale, true, Instant::now());
    a.begin();
    assert_eq!(
        a.on_failure(0, FailKind::Connect, true, Instant::now()),
        Decision::Retry
    );
}

#[test]
fn exclusions_are_bounded() {
    let mut a = begun(100, 0);
    for i in 0..20 {
        a.begin();
        a.on_failure(i, FailKind::Connect, true, Instant::now());
    }
    assert_eq!(a.exclude(), &(0..MAX_TRIED).collect::<Vec<_>>()[..]);
}

/// A request with hedging on, its first attempt out.
fn hedgeable(retries: u32) -> Attempts {
    let mut a = Attempts::new(retries, later(), true);
    a.begin();
    a
}

#[test]
fn the_hedge_timer_sends_one_hedge_elsewhere_and_never_a_second() {
    let mut a = hedgeable(1);
    assert!(a.hedge_pending());
    assert_eq!(a.on_hedge_timer(4, true, Instant::now()), Decision::Hedge);
    assert_eq!(a.exclude(), &[4], "the hedge goes to another member");
    assert_eq!(a.begin(), 2);
    assert_eq!(a.hedged(), Some(2));
    assert_eq!(a.outstanding(), 2);
    assert!(!a.hedge_pending());
    assert_eq!(a.on_hedge_timer(4, true, Instant::now()), Decision::Wait);
}

#[test]
fn no_hedge_when_off_over_budget_or_past_the_retry_budget() {
    let mut off = Attempts::new(1, later(), false);
    off.begin();
    assert!(!off.hedge_pending());
    assert_eq!(off.on_hedge_timer(0, true, Instant::now()), Decision::Wait);

    let mut spent = hedgeable(1);
    assert_eq!(
        spent.on_hedge_timer(0, false, Instant::now()),
        Decision::Wait
    );
    assert!(spent.exclude().is_empty());
    assert_eq!(spent.hedged(), None);

    let start = Instant::now();
    let mut late = Attempts::new(1, start + Duration::from_millis(10), true);
    late.begin();
    let past = start + Duration::from_millis(10);
    assert_eq!(late.on_hedge_timer(0, true, past), Decision::Wait);
}

#[test]
fn a_failure_with_the_other_attempt_out_waits_for_it_once_retries_are_used() {
    let mut a = hedgeable(0);
    a.on_hedge_timer(0, true, Instant::now());
    a.begin();
    let d = a.on_failure(1, FailKind::Connect, true, Instant::now());
    assert_eq!(d, Decision::Await);
    assert!(d.charges_member());
    assert_eq!(a.outstanding(), 1);
    let d = a.on_failure(0, FailKind::Timeout, true, Instant::now());
    assert_eq!(d, Decision::GiveUp(ProxyError::UpstreamTimeout));
}

#[test]
fn a_hedge_does_not_use_up_a_retry() {
    let mut a = hedgeable(1);
    a.on_hedge_timer(0, true, Instant::now());
    a.begin();
    assert_eq!(
        a.on_failure(1, FailKind::Reset, true, Instant::now()),
        Decision::Retry,
        "the one retry is still there"
    );
    assert_eq!(a.exclude(), &[0, 1]);
    a.begin();
    assert_eq!(
        a.on_failure(2, FailKind::Reset, true, Instant::now()),
        Decision::Await
    );
}

#[test]
fn a_hedge_with_no_member_to_go_to_leaves_the_request_as_it_was() {
    let mut a = hedgeable(1);
    assert_eq!(a.on_hedge_timer(0, true, Instant::now()), Decision::Hedge);
    a.hedge_unsent();
    assert_eq!(a.hedged(), None);
    assert!(!a.hedge_pending(), "one hedge decision per request");
    assert_eq!(
        a.on_failure(0, FailKind::Reset, true, Instant::now()),
        Decision::Retry
    );
}
