//! Members that are out or unreachable: the last resort when every member is out, and a
//! member that never answers the connection (connect timeout), and passive ejection after
//! `max_fails` failures within `fail_timeout`.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test crate: a panic is a failed test

mod common;

use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use common::{Backend, Conf, client, runtime, upstream};

#[test]
fn with_every_member_out_the_least_recently_failed_one_is_tried() {
    let a = Backend::start("a");
    let b = Backend::start("b");
    // A GET that outlasts response_timeout charges its member a failure; one failure ejects
    // for a minute, so after two such requests both members are out, yet both are alive.
    let lb = Conf::new(&[a.member(), b.member()])
        .pool("response_timeout = \"100ms\"")
        .pool("retries = 0")
        .pool("max_fails = 1")
        .pool("fail_timeout = \"60s\"")
        .start();
    let first = runtime().block_on(async {
        let c = client();
        let resp = c.get(lb.url("/slow?ms=400")).send().await.unwrap();
        assert_eq!(resp.status(), 504);
        let failed = |m: &Backend| lb.member(m.addr).unwrap().stats.failures();
        let first = if failed(&a) == 1 { &a } else { &b };
        // The second request starts after the first timed out, so it fails later.
        let resp = c.get(lb.url("/slow?ms=400")).send().await.unwrap();
        assert_eq!(resp.status(), 504);
        assert_eq!(
            (failed(&a), failed(&b)),
            (1, 1),
            "each member failed once and is out"
        );
        first
    });
    runtime().block_on(async {
        let c = client();
        for i in 0..6 {
            let resp = c.get(lb.url("/")).send().await.unwrap();
            assert_eq!(resp.status(), 200, "request {i} was tried, not refused");
            assert_eq!(
                upstream(&resp),
                first.member(),
                "request {i} went to the least recently failed member"
            );
        }
    });
}

/// A listener whose accept queue is full: the kernel drops further SYNs, so a connection to
/// it neither succeeds nor fails until the connecting side gives up. Keep the returned values
/// alive while the address is in use.
fn unanswering() -> (SocketAddr, socket2::Socket, Vec<TcpStream>) {
    let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    s.bind(&"127.0.0.1:0".parse::<SocketAddr>().unwrap().into())
        .unwrap();
    // Backlog 0: one connection that is never accepted fills the queue.
    s.listen(0).unwrap();
    let addr = s.local_addr().unwrap().as_socket().unwrap();
    let fillers = (0..2)
        .filter_map(|_| TcpStream::connect_timeout(&addr, Duration::from_millis(200)).ok())
        .collect::<Vec<_>>();
    assert!(!fillers.is_empty(), "the accept queue was filled");
    let hung = TcpStream::connect_timeout(&addr, Duration::from_millis(300));
    assert!(
        hung.is_err(),
        "a further connection hangs instead of completing"
    );
    (addr, s, fillers)
}

#[test]
fn a_member_that_never_completes_the_connection_gives_504() {
    let (addr, _listener, _fillers) = unanswering();
    let lb = Conf::new(&[addr.to_string()])
        .pool("connect_timeout = \"200ms\"")
        .pool("retries = 0")
        .start();
    runtime().block_on(async {
        let resp = client().get(lb.url("/")).send().await.unwrap();
        assert_eq!(resp.status(), 504);
        assert_eq!(
            resp.text().await.unwrap(),
            "504 Gateway Timeout: the backend did not answer in time\n"
        );
    });
    assert_eq!(lb.member(addr).unwrap().stats.failures(), 1);
}

#[test]
fn a_connect_timeout_is_retried_on_another_member_whatever_the_method() {
    let (addr, _listener, _fillers) = unanswering();
    let live = Backend::start("live");
    let lb = Conf::new(&[addr.to_string(), live.member()])
        .pool("connect_timeout = \"200ms\"")
        .pool("max_fails = 0")
        .start();
    runtime().block_on(async {
        let c = client();
        for i in 0..4 {
            // Nothing reached the unanswering member, so even a POST may move.
            let resp = c
                .post(lb.url("/count"))
                .body(vec![b'p'; 10])
                .send()
                .await
                .unwrap();
            assert_eq!(resp.status(), 200, "POST {i}");
            assert_eq!(resp.text().await.unwrap(), "10");
        }
    });
    assert_eq!(live.hits(), 4);
    assert!(
        lb.member(addr).unwrap().stats.failures() >= 1,
        "the unanswering member was tried"
    );
}

/// How many of `n` sequential GETs got 502 (with `retries = 0` a refused attempt is the
/// client's answer).
async fn count_502(lb: &common::Lb, n: usize) -> usize {
    let c = client();
    let mut failed = 0;
    for _ in 0..n {
        let resp = c.get(lb.url("/")).send().await.unwrap();
        match resp.status().as_u16() {
            502 => failed += 1,
            200 => {}
            other => panic!("unexpected status {other}"),
        }
    }
    failed
}

/// A refusing member and a live one, round-robin, no retries, `max_fails = 3` within
/// `fail_timeout`.
fn refusing_beside_live(fail_timeout: &str) -> (Backend, SocketAddr, common::Lb) {
    let live = Backend::start("live");
    let dead = common::refused_addr();
    let lb = Conf::new(&[dead.to_string(), live.member()])
        .pool("retries = 0")
        .pool("max_fails = 3")
        .pool(&format!("fail_timeout = \"{fail_timeout}\""))
        .start();
    (live, dead, lb)
}

#[test]
fn max_fails_failures_within_fail_timeout_eject_a_member_and_it_returns_after() {
    // Round-robin alternates, so the refusing member is tried every other request until its
    // third failure takes it out.
    let (live, _dead, lb) = refusing_beside_live("2s");
    runtime().block_on(async {
        assert_eq!(
            count_502(&lb, 20).await,
            3,
            "tried until its third failure, then out"
        );
        assert_eq!(live.hits(), 17);
        // Out for fail_timeout; then it takes its turns again (and fails them). A deliberate
        // wait: the 502 count over the next four requests is the behaviour under test, and
        // polling with requests would spend the turns it counts.
        tokio::time::sleep(Duration::from_millis(2500)).await;
        assert_eq!(
            count_502(&lb, 4).await,
            2,
            "back in rotation after fail_timeout"
        );
    });
}

#[test]
fn failures_further_apart_than_fail_timeout_do_not_add_up() {
    let (_live, dead, lb) = refusing_beside_live("300ms");
    runtime().block_on(async {
        // Two failures, a pause longer than the window, two more: never three in one window,
        // so the member is never ejected and keeps getting its turn.
        assert_eq!(count_502(&lb, 4).await, 2);
        // Deliberate: the time between the failures is what the test is about.
        tokio::time::sleep(Duration::from_millis(600)).await;
        assert_eq!(count_502(&lb, 4).await, 2);
    });
    let m = lb.member(dead).unwrap();
    assert_eq!(m.stats.failures(), 4);
}
