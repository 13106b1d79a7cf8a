//! Member weights as `random`, `least-connections` and `p2c` honour them, seen through the
//! proxy (weighted round-robin's exact cycle is in distribution.rs). Every pool here is
//! `heavy*3` and `light*1`.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test crate: a panic is a failed test

mod common;

use std::sync::atomic::Ordering;
use std::time::Duration;

use common::{Backend, Conf, Lb, client, runtime, tally, wait_until_async};

/// A heavy (weight 3) and a light (weight 1) member under `algorithm`.
fn three_to_one(algorithm: &str) -> (Backend, Backend, Lb) {
    let (heavy, light) = (Backend::start("heavy"), Backend::start("light"));
    let lb = Conf::new(&[format!("{}*3", heavy.member()), light.member()])
        .pool(&format!("algorithm = {algorithm:?}"))
        .start();
    (heavy, light, lb)
}

#[test]
fn random_picks_members_in_proportion_to_their_weights() {
    let (_heavy, _light, lb) = three_to_one("random");
    let names = runtime().block_on(async {
        let c = client();
        let mut names = Vec::new();
        for _ in 0..600 {
            let resp = c.get(lb.url("/")).send().await.unwrap();
            assert_eq!(resp.status(), 200);
            names.push(resp.headers()["x-backend"].to_str().unwrap().to_owned());
        }
        names
    });
    let counts = tally(&names);
    let heavy = counts.get("heavy").copied().unwrap_or(0);
    // heavy's count is Binomial(600, 3/4): mean 450, sd 10.6, so 390..=510 (5.6 sd either
    // way) fails by chance with p < 1e-7. Ignoring weights gives mean 300, sd 12.2: 390 is
    // 7.4 sd above that.
    assert!((390..=510).contains(&heavy), "{counts:?}");
    assert_eq!(heavy + counts.get("light").copied().unwrap_or(0), 600);
}

/// Sends 8 requests that the members hold (far longer than the test runs), one at a time,
/// each only once the previous one has reached its member, so every pick sees exact
/// in-flight counts. Returns how many each member holds, `[heavy, light]`; dropping the
/// client runtime at the end cancels the held requests.
fn held_requests(algorithm: &str) -> [u64; 2] {
    let (heavy, light, lb) = three_to_one(algorithm);
    let held = |b: &Backend| b.state.in_flight.load(Ordering::SeqCst);
    let rt = runtime();
    rt.block_on(async {
        let c = client();
        for i in 1..=8 {
            let req = c.get(lb.url("/slow?ms=600000"));
            tokio::spawn(async move {
                let _ = req.send().await;
            });
            let reached =
                wait_until_async(Duration::from_secs(10), || held(&heavy) + held(&light) == i)
                    .await;
            assert!(reached, "request {i} did not reach a member");
        }
    });
    [held(&heavy), held(&light)]
}

// least-connections picks the lowest in flight / weight, ties by smooth weighted round-robin;
// p2c the lowest (in flight + 1) / weight, and with these two members it always compares
// both. Either way, from (0, 0) that gives 3:1 after every 4 requests: (3, 1), then (6, 2).
// With weights ignored the counts stay level: (4, 4).

#[test]
fn least_connections_loads_members_in_proportion_to_their_weights() {
    assert_eq!(held_requests("least-connections"), [6, 2]);
}

#[test]
fn p2c_loads_members_in_proportion_to_their_weights() {
    assert_eq!(held_requests("p2c"), [6, 2]);
}

#[test]
fn least_connections_spreads_sequential_requests_in_proportion_to_weight() {
    let backends: Vec<Backend> = ["heavy", "a", "b", "c", "d"]
        .iter()
        .map(|n| Backend::start(n))
        .collect();
    let mut members: Vec<String> = backends.iter().map(Backend::member).collect();
    members[0].push_str("*3");
    let lb = Conf::new(&members)
        .pool("algorithm = \"least-connections\"")
        .start();
    let names = runtime().block_on(async {
        let c = client();
        let mut names = Vec::new();
        for _ in 0..70 {
            let resp = c.get(lb.url("/")).send().await.unwrap();
            assert_eq!(resp.status(), 200);
            names.push(resp.headers()["x-backend"].to_str().unwrap().to_owned());
        }
        names
    });
    let counts = tally(&names);
    let got = |n: &str| counts.get(n).copied().unwrap_or(0);
    // One request at a time leaves every member idle at each pick: all tie, and ties rotate
    // by weight, 3 of every 7 to heavy (30 of 70). A request still finishing on one member
    // when the next is picked only moves that pick to another member, so allow some slack.
    assert!((20..=40).contains(&got("heavy")), "{counts:?}");
    for light in ["a", "b", "c", "d"] {
        assert!((5..=20).contains(&got(light)), "{counts:?}");
    }
}
