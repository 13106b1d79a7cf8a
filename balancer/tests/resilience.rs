//! Failures of members: what is retried and what must not be, a member killed under load, and
//! a graceful shutdown of the balancer itself.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test crate: a panic is a failed test

mod common;

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use common::{Backend, Conf, ResetBackend, client, refused_addr, runtime, upstream, wait_until};

#[test]
fn get_to_a_refused_member_is_retried_on_the_live_one() {
    let live = Backend::start("live");
    let dead = refused_addr();
    // max_fails = 0: the dead member is never ejected, so it keeps being picked and retried.
    let lb = Conf::new(&[dead.to_string(), live.member()])
        .pool("max_fails = 0")
        .start();
    runtime().block_on(async {
        let c = client();
        for i in 0..20 {
            let resp = c.get(lb.url("/")).send().await.unwrap();
            assert_eq!(resp.status(), 200, "request {i}");
            assert_eq!(resp.text().await.unwrap(), "live");
        }
    });
    let failures = lb.member(dead).unwrap().stats.failures();
    assert!(
        failures >= 5,
        "the dead member was picked and retried away from ({failures})"
    );
    assert_eq!(live.hits(), 20);
}

#[test]
fn post_to_a_refused_member_is_retried_on_the_live_one() {
    let live = Backend::start("live");
    let dead = refused_addr();
    let lb = Conf::new(&[dead.to_string(), live.member()])
        .pool("max_fails = 0")
        .start();
    runtime().block_on(async {
        let c = client();
        for i in 0..6 {
            let resp = c
                .post(lb.url("/count"))
                .body(vec![b'p'; 100])
                .send()
                .await
                .unwrap();
            assert_eq!(
                resp.status(),
                200,
                "POST {i} never reached a member, so it may move"
            );
            assert_eq!(resp.text().await.unwrap(), "100");
        }
    });
    let failures = lb.member(dead).unwrap().stats.failures();
    assert!(failures >= 2, "the refused member was tried ({failures})");
    assert_eq!(
        live.hits(),
        6,
        "each POST reached the live member exactly once"
    );
}

#[test]
fn post_reset_after_reaching_a_member_is_not_replayed() {
    let crasher = ResetBackend::start();
    let live = Backend::start("live");
    let lb = Conf::new(&[crasher.member(), live.member()])
        .pool("max_fails = 0")
        .start();
    let (ok, failed) = runtime().block_on(async {
        let c = client();
        let (mut ok, mut failed) = (0u64, 0u64);
        for i in 0..4 {
            let resp = c
                .post(lb.url("/count"))
                .body(format!("order-{i}"))
                .send()
                .await
                .unwrap();
            match resp.status().as_u16() {
                200 => ok += 1,
                502 => failed += 1,
                s => panic!("POST {i}: unexpected {s}"),
            }
        }
        (ok, failed)
    });
    assert!(
        failed >= 1,
        "round-robin sent some POSTs to the crashing member"
    );
    assert_eq!(
        crasher.requests.load(Ordering::SeqCst),
        failed,
        "each failed POST reached the crashing member exactly once"
    );
    assert_eq!(
        live.hits(),
        ok,
        "no POST that reached a member was replayed elsewhere"
    );
}

#[test]
fn a_get_reset_after_sending_is_retried_on_another_member() {
    let crasher = ResetBackend::start();
    let live = Backend::start("live");
    // Weighted least-connections with the crasher at weight 1000 to 1: with nothing in
    // flight both tie, and the tie goes by weight, so the first few hundred GETs (these four
    // included) go to it first; max_fails = 0 keeps it in.
    let lb = Conf::new(&[format!("{}*1000", crasher.member()), live.member()])
        .pool("algorithm = \"least-connections\"")
        .pool("max_fails = 0")
        .start();
    runtime().block_on(async {
        let c = client();
        for i in 0..4 {
            let resp = c.get(lb.url("/")).send().await.unwrap();
            assert_eq!(resp.status(), 200, "GET {i}");
            assert_eq!(upstream(&resp), live.member(), "GET {i}");
            assert_eq!(resp.text().await.unwrap(), "live");
        }
    });
    assert_eq!(
        crasher.requests.load(Ordering::SeqCst),
        4,
        "every GET reached the crasher whole before it reset"
    );
    assert_eq!(lb.member(crasher.addr).unwrap().stats.failures(), 4);
    assert_eq!(
        lb.member(live.addr).unwrap().stats.retries(),
        4,
        "each GET was answered by the live member on its second attempt"
    );
    assert_eq!(live.hits(), 4);
}

/// One GET through three members that answer only after 5 s, each attempt timing out after
/// 400 ms, with `retries = 2` and `budget`: the status and how many members got the request.
fn members_tried_within(budget: &str) -> (u16, u64) {
    let members = [
        Backend::start("a"),
        Backend::start("b"),
        Backend::start("c"),
    ];
    let lb = Conf::new(&members.iter().map(Backend::member).collect::<Vec<_>>())
        .pool("retries = 2")
        .pool("response_timeout = \"400ms\"")
        .pool(&format!("retry_budget = \"{budget}\""))
        .start();
    let status = runtime().block_on(async {
        let resp = client().get(lb.url("/slow?ms=5000")).send().await.unwrap();
        resp.status().as_u16()
    });
    (status, members.iter().map(Backend::hits).sum())
}

#[test]
fn a_request_stops_retrying_once_the_retry_budget_is_spent() {
    // The first attempt fails (400 ms) after the budget (200 ms) is gone: no other member is
    // tried, whatever `retries` allows.
    assert_eq!(members_tried_within("200ms"), (504, 1));
    // Control: with budget left, the same timeouts move on to every member.
    assert_eq!(members_tried_within("10s"), (504, 3));
}

#[test]
fn killing_a_member_under_load_loses_no_request() {
    let mut bs = [
        Backend::start("a"),
        Backend::start("b"),
        Backend::start("c"),
    ];
    let lb = Conf::new(&bs.iter().map(Backend::member).collect::<Vec<_>>()).start();
    let rt = runtime();
    let start = Instant::now();
    let end = start + Duration::from_secs(3);
    let workers: Vec<_> = (0..16)
        .map(|_| {
            let url = lb.url("/");
            rt.spawn(async move {
                let c = client();
                let (mut ok, mut errors) = (0u64, Vec::new());
                while Instant::now() < end {
                    match c.get(&url).send().await {
                        Ok(r) if r.status() == 200 => match r.text().await {
                            Ok(_) => ok += 1,
                            Err(e) => errors.push(format!("body: {e}")),
                        },
                        Ok(r) => errors.push(format!("status {}", r.status())),
                        Err(e) => errors.push(format!("error: {e}")),
                    }
                }
                (ok, errors)
            })
        })
        .collect();
    // Deliberate: the kill lands one second into the load, and the attempts are read at two
    // seconds, the time the test's arithmetic is about.
    std::thread::sleep(Duration::from_secs(1).saturating_sub(start.elapsed()));
    let victim = bs[1].addr;
    let hits_at_kill = bs[1].hits();
    bs[1].kill();
    let others_at_kill = bs[0].hits() + bs[2].hits();
    let m = lb.member(victim).unwrap();
    let attempts = || m.stats.total_responses() + m.stats.failures();
    std::thread::sleep(Duration::from_secs(2).saturating_sub(start.elapsed()));
    let attempts_at_2s = attempts();
    let (mut ok, mut errors) = (0u64, Vec::new());
    for w in workers {
        let (o, e) = rt.block_on(w).unwrap();
        ok += o;
        errors.extend(e);
    }
    assert!(
        errors.is_empty(),
        "{} of {} requests failed: {:?}",
        errors.len(),
        ok + errors.len() as u64,
        &errors[..errors.len().min(5)]
    );
    assert!(
        hits_at_kill > 0,
        "the victim served requests before it died"
    );
    assert!(
        bs[0].hits() + bs[2].hits() > others_at_kill,
        "the survivors kept serving"
    );
    assert_eq!(
        attempts(),
        attempts_at_2s,
        "the dead member stopped being tried once it was detected"
    );
    assert!(ok > 100, "the load actually ran ({ok} requests)");
}

#[test]
fn graceful_shutdown_finishes_in_flight_requests_and_refuses_new_ones() {
    let b = Backend::start("b");
    let lb = Conf::new(&[b.member()]).start();
    let rt = runtime();
    let url = lb.url("/slow?ms=1000");
    let in_flight = rt.spawn(async move {
        let resp = client().get(url).send().await?;
        let status = resp.status();
        Ok::<_, reqwest::Error>((status, resp.text().await?))
    });
    assert!(b.wait_in_flight(1), "the slow request reached the member");
    lb.running.shutdown();
    let (status, body) = rt
        .block_on(in_flight)
        .unwrap()
        .expect("in-flight request completes");
    assert_eq!(status, 200);
    assert_eq!(body, "b");
    let addr = lb.running.proxy_addr;
    assert!(
        wait_until(Duration::from_secs(5), || std::net::TcpStream::connect(
            addr
        )
        .is_err()),
        "new connections are refused after shutdown"
    );
}
