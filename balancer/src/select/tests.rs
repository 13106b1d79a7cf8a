//! Selector unit tests: consistent hashing's movement bounds, smooth WRR's order, and that
//! every algorithm skips members it must not pick.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

use super::{Algorithm, PickContext, build, least_recently_failed, rendezvous_pick, stable_hash};
use crate::config::balancing::DEFAULT as B;
use crate::pool::{AdminState, Health, Member, PassivePolicy};
use crate::sticky;

const KEY: [u8; 16] = [7; 16];

fn member(i: usize, weight: u32) -> Arc<Member> {
    let addr: SocketAddr = format!("10.0.{}.{}:8080", i / 200, i % 200 + 1)
        .parse()
        .unwrap();
    Arc::new(Member::new(
        addr,
        addr.to_string().into(),
        sticky::member_id(&KEY, addr),
        weight,
    ))
}

fn members(n: usize) -> Vec<Arc<Member>> {
    (0..n).map(|i| member(i, 1)).collect()
}

fn cx(key: Option<u64>) -> PickContext<'static> {
    PickContext {
        now_ms: crate::clock::now_ms(),
        slow_start_ms: 0,
        key,
        exclude: &[],
    }
}

/// The address each of `keys` lands on.
fn placement(ms: &[Arc<Member>], keys: &[u64]) -> Vec<SocketAddr> {
    keys.iter()
        .map(|&k| ms[rendezvous_pick(ms, &cx(Some(k)), k).unwrap()].addr)
        .collect()
}

fn keys() -> Vec<u64> {
    (0..10_000)
        .map(|i| stable_hash(format!("client-{i}").as_bytes()))
        .collect()
}

fn removing_a_member_moves_only_its_keys(n: usize) {
    let keys = keys();
    let all = members(n);
    let before = placement(&all, &keys);
    let gone = all[n / 2].addr;
    let rest: Vec<_> = all.iter().filter(|m| m.addr != gone).cloned().collect();
    let after = placement(&rest, &keys);
    let mut moved = 0;
    for (b, a) in before.iter().zip(&after) {
        if b != a {
            moved += 1;
            assert_eq!(
                *b, gone,
                "a key moved off a member that stayed ({b} -> {a})"
            );
        }
    }
    let bound = keys.len() as f64 * 1.5 / n as f64;
    assert!(
        (moved as f64) < bound,
        "N={n}: {moved} keys moved, bound {bound}"
    );
    assert!(moved > 0, "the removed member held keys");
}

fn adding_a_member_moves_keys_only_to_it(n: usize) {
    let keys = keys();
    let all = members(n + 1);
    let before = placement(&all[..n], &keys);
    let after = placement(&all, &keys);
    let new = all[n].addr;
    let mut moved = 0;
    for (b, a) in before.iter().zip(&after) {
        if b != a {
            moved += 1;
            assert_eq!(*a, new, "a key moved between old members ({b} -> {a})");
        }
    }
    // One of N = n + 1 members joined: about 1/N of the keys should move to it.
    let bound = keys.len() as f64 * 1.5 / (n + 1) as f64;
    assert!(
        (moved as f64) < bound,
        "N={n}: {moved} keys moved, bound {bound}"
    );
    assert!(moved > 0, "the new member took some keys");
}

#[test]
fn removing_one_of_five_moves_only_its_keys() {
    removing_a_member_moves_only_its_keys(5);
}

#[test]
fn removing_one_of_ten_moves_only_its_keys() {
    removing_a_member_moves_only_its_keys(10);
}

#[test]
fn adding_a_sixth_member_moves_few_keys_and_only_to_it() {
    adding_a_member_moves_keys_only_to_it(5);
}

#[test]
fn adding_an_eleventh_member_moves_few_keys_and_only_to_it() {
    adding_a_member_moves_keys_only_to_it(10);
}

#[test]
fn rendezvous_spreads_keys_evenly_and_by_weight() {
    let keys = keys();
    let ms = vec![member(0, 1), member(1, 1), member(2, 2)];
    let mut counts: HashMap<SocketAddr, usize> = HashMap::new();
    for a in placement(&ms, &keys) {
        *counts.entry(a).or_default() += 1;
    }
    // Expected 2500 / 2500 / 5000.
    let c = |i: usize| counts[&ms[i].addr];
    assert!(
        (2200..2800).contains(&c(0)) && (2200..2800).contains(&c(1)),
        "{counts:?}"
    );
    assert!((4600..5400).contains(&c(2)), "{counts:?}");
}

#[test]
fn smooth_weighted_round_robin_interleaves_5_1_1() {
    let ms = vec![member(0, 5), member(1, 1), member(2, 1)];
    let sel = build(Algorithm::WeightedRoundRobin, &B, ms.len(), 0);
    let names = ["a", "b", "c"];
    let seq: Vec<&str> = (0..14)
        .map(|_| names[sel.pick(&ms, &cx(None)).unwrap()])
        .collect();
    assert_eq!(
        seq,
        [
            "a", "a", "b", "a", "c", "a", "a", "a", "a", "b", "a", "c", "a", "a"
        ]
    );
}

#[test]
fn round_robin_takes_each_member_in_turn() {
    let ms = members(3);
    let sel = build(Algorithm::RoundRobin, &B, 3, 0);
    let seq: Vec<usize> = (0..6).map(|_| sel.pick(&ms, &cx(None)).unwrap()).collect();
    assert_eq!(seq, [0, 1, 2, 0, 1, 2]);
}

#[test]
fn least_connections_prefers_the_idle_member() {
    let ms = members(3);
    let sel = build(Algorithm::LeastConnections, &B, 3, 0);
    let _busy0 = ms[0].begin_request();
    let _busy2 = ms[2].begin_request();
    for _ in 0..10 {
        assert_eq!(sel.pick(&ms, &cx(None)), Some(1));
    }
}

#[test]
fn least_connections_spreads_idle_requests_in_proportion_to_weight() {
    let ms = vec![
        member(0, 3),
        member(1, 1),
        member(2, 1),
        member(3, 1),
        member(4, 1),
    ];
    let sel = build(Algorithm::LeastConnections, &B, ms.len(), 0);
    let mut counts = [0usize; 5];
    for _ in 0..70 {
        counts[sel.pick(&ms, &cx(None)).unwrap()] += 1;
    }
    // Every member is idle between sequential requests: all tie, and the tie goes by weight.
    assert_eq!(counts, [30, 10, 10, 10, 10]);
}

#[test]
fn least_connections_breaks_ties_among_the_least_loaded_only() {
    let ms = vec![member(0, 2), member(1, 1), member(2, 1)];
    let sel = build(Algorithm::LeastConnections, &B, ms.len(), 0);
    // 1 in flight per 2 of weight on member 0 and 1 per 1 on member 1: member 2 (idle) is
    // the only least loaded, then with 1 each on 1 and 2, member 0 (1/2) stays alone.
    let _a = ms[0].begin_request();
    let _b = ms[1].begin_request();
    assert_eq!(sel.pick(&ms, &cx(None)), Some(2));
    let _c = ms[2].begin_request();
    assert_eq!(sel.pick(&ms, &cx(None)), Some(0));
    // 2 per 2 ties with 1 per 1 everywhere: the tie rotates by weight, 2:1:1.
    let _d = ms[0].begin_request();
    let mut counts = [0usize; 3];
    for _ in 0..40 {
        counts[sel.pick(&ms, &cx(None)).unwrap()] += 1;
    }
    assert_eq!(counts, [20, 10, 10]);
}

#[test]
fn p2c_never_picks_the_busier_of_two() {
    let ms = members(2);
    let sel = build(Algorithm::P2c, &B, 2, 0);
    let _busy = ms[0].begin_request();
    for _ in 0..50 {
        assert_eq!(sel.pick(&ms, &cx(None)), Some(1));
    }
}

/// Every algorithm, with a request key for the hashing ones.
fn each_algorithm() -> Vec<(Algorithm, Option<u64>)> {
    Algorithm::ALL
        .iter()
        .map(|&a| (a, a.is_hashing().then(|| stable_hash(b"key"))))
        .collect()
}

fn never_picks(ms: &[Arc<Member>], bad: usize, what: &str) {
    for (alg, key) in each_algorithm() {
        for key in [key, None] {
            let sel = build(alg, &B, ms.len(), 0);
            for _ in 0..50 {
                let got = sel.pick(ms, &cx(key));
                assert!(got.is_some(), "{alg}: other members are usable");
                assert_ne!(got, Some(bad), "{alg} (key {key:?}) picked a {what} member");
            }
        }
    }
}

#[test]
fn drained_member_is_skipped_by_every_algorithm() {
    let ms = members(3);
    ms[1].set_admin_state(AdminState::Drained);
    never_picks(&ms, 1, "drained");
}

#[test]
fn ejected_member_is_skipped_by_every_algorithm() {
    let ms = members(3);
    let policy = PassivePolicy {
        max_fails: 1,
        fail_timeout_ms: 60_000,
    };
    assert!(ms[2].record_failure(crate::clock::now_ms(), policy));
    never_picks(&ms, 2, "ejected");
}

#[test]
fn member_failing_checks_is_skipped_by_every_algorithm() {
    let ms = members(3);
    ms[0].set_health(Health::Down);
    never_picks(&ms, 0, "down");
}

#[test]
fn excluded_member_is_skipped_by_every_algorithm() {
    let ms = members(3);
    for (alg, key) in each_algorithm() {
        let sel = build(alg, &B, 3, 0);
        let exclude = [1usize];
        let c = PickContext {
            exclude: &exclude,
            ..cx(key)
        };
        for _ in 0..50 {
            assert_ne!(
                sel.pick(&ms, &c),
                Some(1),
                "{alg} picked an excluded member"
            );
        }
    }
}

#[test]
fn no_usable_member_gives_none() {
    let ms = members(3);
    ms[0].set_admin_state(AdminState::Drained);
    ms[1].set_health(Health::Down);
    let policy = PassivePolicy {
        max_fails: 1,
        fail_timeout_ms: 60_000,
    };
    ms[2].record_failure(crate::clock::now_ms(), policy);
    for (alg, key) in each_algorithm() {
        for key in [key, None] {
            let sel = build(alg, &B, 3, 0);
            assert_eq!(sel.pick(&ms, &cx(key)), None, "{alg} (key {key:?})");
            assert_eq!(sel.pick(&[], &cx(key)), None, "{alg} with no members");
        }
    }
    // Zero weight counts as unusable too.
    let zero = vec![member(0, 0)];
    for (alg, key) in each_algorithm() {
        assert_eq!(
            build(alg, &B, 1, 0).pick(&zero, &cx(key)),
            None,
            "{alg} picked weight 0"
        );
    }
}

#[test]
fn last_resort_is_the_least_recently_failed_and_never_drained() {
    let ms = members(4);
    let policy = PassivePolicy {
        max_fails: 1,
        fail_timeout_ms: 60_000,
    };
    let now = crate::clock::now_ms();
    ms[0].set_admin_state(AdminState::Drained);
    ms[1].record_failure(now + 30, policy);
    ms[2].set_health(Health::Down);
    ms[2].note_failure(now + 10);
    ms[3].record_failure(now + 20, policy);
    let c = cx(None);
    for (alg, key) in each_algorithm() {
        let c = PickContext { key, ..c };
        assert_eq!(
            build(alg, &B, 4, 0).pick(&ms, &c),
            None,
            "{alg}: nothing is available"
        );
    }
    assert_eq!(least_recently_failed(&ms, &c), Some(2));
    let tried = [2];
    let retry = PickContext {
        exclude: &tried,
        ..c
    };
    assert_eq!(
        least_recently_failed(&ms, &retry),
        Some(3),
        "a retry goes to the next least recently failed"
    );
    ms[2].set_health(Health::Draining);
    ms[3].set_admin_state(AdminState::Drained);
    assert_eq!(least_recently_failed(&ms, &c), Some(1));
    ms[1].set_admin_state(AdminState::Drained);
    assert_eq!(
        least_recently_failed(&ms, &c),
        None,
        "drained and leaving stay out"
    );
}

#[test]
fn round_robin_shares_evenly_around_an_unusable_member() {
    let ms = members(3);
    ms[1].set_health(crate::pool::Health::Down);
    let rr = build(Algorithm::RoundRobin, &B, ms.len(), 0);
    let mut counts = [0usize; 3];
    for _ in 0..100 {
        counts[rr.pick(&ms, &cx(None)).unwrap()] += 1;
    }
    assert_eq!(
        counts,
        [50, 0, 50],
        "the down member's turn must not fall to its neighbour"
    );
}

#[test]
fn round_robin_eases_in_a_ramping_member() {
    let ms = members(2);
    let now = crate::clock::now_ms();
    ms[1].begin_ramp(now);
    let rr = build(Algorithm::RoundRobin, &B, ms.len(), 0);
    let cx = PickContext {
        now_ms: now + 1000,
        slow_start_ms: 10_000,
        key: None,
        exclude: &[],
    };
    let fresh = (0..2000).filter(|_| rr.pick(&ms, &cx) == Some(1)).count();
    // At 10% of its ramp the fresh member takes about 10% of its turns: ~100 of 2000.
    assert!(
        (30..300).contains(&fresh),
        "fresh member got {fresh} of 2000"
    );
}

#[test]
fn a_rebuilt_round_robin_continues_the_rotation() {
    let ms = members(2);
    let before = build(Algorithm::RoundRobin, &B, 2, 0);
    let first = before.pick(&ms, &cx(None));
    // A membership change elsewhere rebuilds every selector: the next new session must still
    // go to the next member, not start over at the first.
    let after = build(Algorithm::RoundRobin, &B, 2, before.rotation());
    assert_ne!(after.pick(&ms, &cx(None)), first);
}
