use super::*;

fn member(w: u32) -> Member {
    Member::new("127.0.0.1:1".parse().unwrap(), "x".into(), MemberId(1), w)
}

#[test]
fn slow_start_ramps_linearly_from_almost_nothing_to_full() {
    let m = member(2);
    assert_eq!(m.selection_weight(1000, 10_000), 200, "no ramp started");
    m.begin_ramp(1000);
    assert_eq!(m.selection_weight(1000, 10_000), 1, "never zero");
    assert_eq!(m.selection_weight(3500, 10_000), 50);
    assert_eq!(m.selection_weight(6000, 10_000), 100);
    assert_eq!(m.effective_weight(6000, 10_000), 1);
    assert!(m.ramping(6000, 10_000));
    assert_eq!(m.selection_weight(11_000, 10_000), 200);
    assert!(!m.ramping(11_000, 10_000));
    assert_eq!(m.selection_weight(3500, 0), 200, "slow start off");
}

#[test]
fn passive_failures_eject_for_the_window_and_expire() {
    let m = member(1);
    let policy = PassivePolicy {
        max_fails: 2,
        fail_timeout_ms: 1000,
    };
    assert!(!m.record_failure(100, policy));
    assert!(m.is_available(150));
    assert!(
        m.record_failure(200, policy),
        "second failure in the window ejects"
    );
    assert!(!m.is_available(900));
    assert!(m.is_last_resort());
    assert!(m.is_available(1300), "back after fail_timeout");
    assert!(
        !m.record_failure(5000, policy),
        "a new window starts counting again"
    );
}

#[test]
fn operator_drain_and_health_gate_availability() {
    let m = member(1);
    m.set_admin_state(AdminState::Drained);
    assert!(!m.is_available(1) && !m.is_last_resort());
    m.set_admin_state(AdminState::Enabled);
    m.set_health(Health::Down);
    assert!(!m.is_available(1) && m.is_last_resort());
    m.set_health(Health::Draining);
    assert!(!m.is_last_resort());
    m.set_health(Health::Up);
    m.set_weight(0);
    assert!(!m.is_available(1));
}

#[test]
fn a_member_discovery_stopped_listing_is_out_even_as_a_last_resort() {
    let m = member(1);
    m.set_presence(Presence::Leaving);
    assert!(!m.is_available(1) && !m.is_last_resort());
    m.set_presence(Presence::Listed);
    assert!(m.is_available(1) && m.is_last_resort());
}
