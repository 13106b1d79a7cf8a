//! How each selection algorithm spreads requests over live members, seen from outside.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test crate: a panic is a failed test

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

use common::{Backend, BackendOpts, Conf, Lb, client, client_from, runtime, tally};

/// Sends `n` sequential GETs and returns the backend names (`X-Backend`) in order, checking
/// that `X-Upstream` names the same member.
async fn sequential(
    lb: &Lb,
    backends: &[&Backend],
    n: usize,
    header: Option<(&str, &str)>,
) -> Vec<String> {
    let c = client();
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let mut req = c.get(lb.url("/"));
        if let Some((k, v)) = header {
            req = req.header(k, v);
        }
        let resp = req.send().await.expect("request");
        assert_eq!(resp.status(), 200);
        let name = resp.headers()["x-backend"].to_str().unwrap().to_owned();
        let up = common::upstream(&resp);
        let b = backends
            .iter()
            .find(|b| b.name == name)
            .expect("known backend");
        assert_eq!(up, b.member(), "X-Upstream names the member that answered");
        out.push(name);
    }
    out
}

/// `workers` concurrent clients loop GETs for `dur`; returns how many each backend served.
async fn concurrent(lb: &Lb, workers: usize, dur: Duration) -> BTreeMap<String, usize> {
    let end = Instant::now() + dur;
    let mut tasks = Vec::new();
    for _ in 0..workers {
        let url = lb.url("/");
        tasks.push(tokio::spawn(async move {
            let c = client();
            let mut names = Vec::new();
            while Instant::now() < end {
                let resp = c.get(&url).send().await.expect("request");
                assert_eq!(resp.status(), 200);
                names.push(resp.headers()["x-backend"].to_str().unwrap().to_owned());
                let _ = resp.bytes().await;
            }
            names
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.expect("worker"));
    }
    tally(&all)
}

#[test]
fn round_robin_serves_each_member_in_turn() {
    let bs = [
        Backend::start("a"),
        Backend::start("b"),
        Backend::start("c"),
    ];
    let lb = Conf::new(&bs.iter().map(Backend::member).collect::<Vec<_>>())
        .pool("algorithm = \"round-robin\"")
        .start();
    let refs: Vec<&Backend> = bs.iter().collect();
    let seq = runtime().block_on(sequential(&lb, &refs, 30, None));
    let counts = tally(&seq);
    assert_eq!(
        counts.values().copied().collect::<Vec<_>>(),
        vec![10, 10, 10],
        "{counts:?}"
    );
    for w in seq.windows(3) {
        let distinct: BTreeSet<&String> = w.iter().collect();
        assert_eq!(
            distinct.len(),
            3,
            "every 3 consecutive requests hit 3 members: {seq:?}"
        );
    }
}

#[test]
fn weighted_round_robin_follows_weights_and_interleaves() {
    let (a, b, c) = (
        Backend::start("a"),
        Backend::start("b"),
        Backend::start("c"),
    );
    let lb = Conf::new(&[
        format!("{}*4", a.member()),
        format!("{}*2", b.member()),
        c.member(),
    ])
    .pool("algorithm = \"weighted-round-robin\"")
    .start();
    let seq = runtime().block_on(sequential(&lb, &[&a, &b, &c], 70, None));
    let counts = tally(&seq);
    assert_eq!(
        counts.values().copied().collect::<Vec<_>>(),
        vec![40, 20, 10],
        "{counts:?}"
    );
    // Smooth WRR repeats `a b a c a b a` (naive WRR would give `a a a a b b c`); which
    // rotation of the cycle the test sees depends on nothing it should assert.
    let cycle = ["a", "b", "a", "c", "a", "b", "a"];
    let rotations: Vec<Vec<&str>> = (0..7)
        .map(|r| cycle.iter().cycle().skip(r).take(7).copied().collect())
        .collect();
    for period in seq.chunks(7) {
        assert!(
            rotations.iter().any(|r| r == period),
            "smooth interleaving: {seq:?}"
        );
    }
}

#[test]
fn a_discovery_change_in_another_pool_keeps_the_weighted_cycle() {
    let (a, b) = (Backend::start("a"), Backend::start("b"));
    let lb = Conf::new(&[format!("{}*3", a.member()), b.member()])
        .top("discovery_interval = \"250ms\"")
        .pool("algorithm = \"weighted-round-robin\"")
        .start();
    let rt = runtime();
    let mut seq = rt.block_on(sequential(&lb, &[&a, &b], 2, None));
    // The static pool's DNS name resolves: a new snapshot, same dynamic pool.
    let before = lb.running.shared.snapshot().version;
    lb.resolver
        .set("static.invalid", Ok(vec!["127.0.0.9".parse().unwrap()]));
    assert!(
        common::wait_until(common::EVENTUALLY, || {
            lb.running.shared.snapshot().version != before
        }),
        "no new snapshot"
    );
    seq.extend(rt.block_on(sequential(&lb, &[&a, &b], 6, None)));
    assert_eq!(seq, ["a", "a", "b", "a", "a", "a", "b", "a"], "cycle kept");
}

/// Two fast members and one that takes 300 ms per request; 8 clients in a loop.
fn slow_member_gets_fewer(algorithm: &str) {
    let fast1 = Backend::start("fast1");
    let fast2 = Backend::start("fast2");
    let slow = Backend::start_with(
        "slow",
        BackendOpts {
            delay: Duration::from_millis(300),
        },
    );
    let lb = Conf::new(&[fast1.member(), slow.member(), fast2.member()])
        .pool(&format!("algorithm = {algorithm:?}"))
        .start();
    let counts = runtime().block_on(concurrent(&lb, 8, Duration::from_millis(1500)));
    let get = |n: &str| counts.get(n).copied().unwrap_or(0);
    // Round-robin would give the slow member about as many as each fast one.
    assert!(
        get("slow") * 4 < get("fast1").min(get("fast2")),
        "{algorithm}: the slow member should get far fewer requests: {counts:?}"
    );
}

#[test]
fn least_connections_sends_fewer_requests_to_a_slow_member() {
    slow_member_gets_fewer("least-connections");
}

#[test]
fn p2c_sends_fewer_requests_to_a_slow_member() {
    slow_member_gets_fewer("p2c");
}

#[test]
fn random_spreads_requests_roughly_evenly() {
    let bs = [
        Backend::start("a"),
        Backend::start("b"),
        Backend::start("c"),
    ];
    let lb = Conf::new(&bs.iter().map(Backend::member).collect::<Vec<_>>())
        .pool("algorithm = \"random\"")
        .start();
    let counts = runtime().block_on(async {
        let mut tasks = Vec::new();
        for _ in 0..6 {
            let url = lb.url("/");
            tasks.push(tokio::spawn(async move {
                let c = client();
                let mut names = Vec::new();
                for _ in 0..100 {
                    let resp = c.get(&url).send().await.expect("request");
                    names.push(resp.headers()["x-backend"].to_str().unwrap().to_owned());
                }
                names
            }));
        }
        let mut all = Vec::new();
        for t in tasks {
            all.extend(t.await.unwrap());
        }
        tally(&all)
    });
    assert_eq!(counts.len(), 3, "{counts:?}");
    // Expected 200 each; 120..280 is more than 6 standard deviations either way.
    for (name, n) in &counts {
        assert!((120..=280).contains(n), "{name} got {n} of 600: {counts:?}");
    }
}

/// Sends `per_ip` GETs from each of `ips` client addresses; returns the members per IP.
async fn members_by_ip(
    lb: &Lb,
    ips: &[IpAddr],
    per_ip: usize,
) -> BTreeMap<IpAddr, BTreeSet<String>> {
    let mut out = BTreeMap::new();
    for ip in ips {
        let c = client_from(*ip);
        let mut seen = BTreeSet::new();
        for _ in 0..per_ip {
            let resp = c.get(lb.url("/")).send().await.expect("request");
            assert_eq!(resp.status(), 200);
            seen.insert(common::upstream(&resp));
        }
        out.insert(*ip, seen);
    }
    out
}

/// Client addresses 127.0.0.10 .. 127.0.0.25 (all on loopback).
pub fn client_ips() -> Vec<IpAddr> {
    (10..26)
        .map(|i| IpAddr::V4(Ipv4Addr::new(127, 0, 0, i)))
        .collect()
}

#[test]
fn ip_hash_keeps_each_client_ip_on_one_member() {
    let bs = [
        Backend::start("a"),
        Backend::start("b"),
        Backend::start("c"),
    ];
    let lb = Conf::new(&bs.iter().map(Backend::member).collect::<Vec<_>>())
        .pool("algorithm = \"ip-hash\"")
        .start();
    let by_ip = runtime().block_on(members_by_ip(&lb, &client_ips(), 5));
    for (ip, members) in &by_ip {
        assert_eq!(members.len(), 1, "{ip} was sent to {members:?}");
    }
    let used: BTreeSet<&String> = by_ip.values().flatten().collect();
    assert!(
        used.len() >= 2,
        "16 client IPs should spread over members: {used:?}"
    );
}

#[test]
fn ip_hash_moves_only_the_clients_of_a_killed_member_each_to_one_new_member() {
    let mut bs = [
        Backend::start("a"),
        Backend::start("b"),
        Backend::start("c"),
    ];
    let lb = Conf::new(&bs.iter().map(Backend::member).collect::<Vec<_>>())
        .pool("algorithm = \"ip-hash\"")
        .start();
    let rt = runtime();
    let ips = client_ips();
    let before = rt.block_on(members_by_ip(&lb, &ips, 3));
    let only = |by_ip: &BTreeMap<IpAddr, BTreeSet<String>>, ip: &IpAddr| {
        let members = &by_ip[ip];
        assert_eq!(members.len(), 1, "{ip} was sent to {members:?}");
        members.first().unwrap().clone()
    };
    let dead = only(&before, &ips[0]);
    bs.iter_mut().find(|b| b.member() == dead).unwrap().kill();
    // The first request of each moved client meets the dead member, fails over and takes it
    // out; the next ones must land where that retry did.
    let after = rt.block_on(members_by_ip(&lb, &ips, 5));
    let mut moved = 0;
    for ip in &ips {
        let (was, now) = (only(&before, ip), only(&after, ip));
        if was == dead {
            moved += 1;
            assert_ne!(now, dead, "{ip}");
        } else {
            assert_eq!(now, was, "{ip} lost its member though it is alive");
        }
    }
    // 16 addresses all on one member has p = 3^-15: some client always stays put.
    assert!(moved < ips.len(), "{before:?}");
}

#[test]
fn header_hash_keeps_each_value_on_one_member_and_spreads_values() {
    let bs = [
        Backend::start("a"),
        Backend::start("b"),
        Backend::start("c"),
    ];
    let refs: Vec<&Backend> = bs.iter().collect();
    let lb = Conf::new(&bs.iter().map(Backend::member).collect::<Vec<_>>())
        .pool("algorithm = \"header-hash\"")
        .pool("hash_header = \"x-user\"")
        .start();
    runtime().block_on(async {
        let mut used = BTreeSet::new();
        for user in 0..30 {
            let value = format!("user-{user}");
            let seq = sequential(&lb, &refs, 4, Some(("x-user", &value))).await;
            let distinct: BTreeSet<&String> = seq.iter().collect();
            assert_eq!(distinct.len(), 1, "{value} was sent to {distinct:?}");
            used.insert(seq[0].clone());
        }
        // P(30 values miss a member) ~ 3 * (2/3)^30 ~ 1.5e-5.
        assert_eq!(
            used.len(),
            3,
            "30 values should reach all members: {used:?}"
        );
        // Without the header there is no key: requests still spread over every member.
        let seq = sequential(&lb, &refs, 30, None).await;
        assert_eq!(tally(&seq).len(), 3, "no header: {seq:?}");
    });
}
