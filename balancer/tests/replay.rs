//! Idempotent requests with a body: a small one that a member took and then failed is sent
//! again to another member from the copy the balancer kept; a large one is not.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test crate: a panic is a failed test

mod common;

use std::sync::atomic::Ordering;
use std::time::Duration;

use common::{Backend, BackendOpts, Conf, ResetBackend, client, runtime, upstream};

/// Sends `n` PUTs of `body()` to `/count` through a pool of a crashing and a live member;
/// returns the statuses.
fn puts(n: usize, body: impl Fn() -> reqwest::Body) -> (ResetBackend, Backend, Vec<u16>) {
    let crasher = ResetBackend::start();
    let live = Backend::start("live");
    // max_fails = 0: the crasher stays in rotation, so round-robin keeps sending it requests.
    let lb = Conf::new(&[crasher.member(), live.member()])
        .pool("max_fails = 0")
        .start();
    let statuses = runtime().block_on(async {
        let c = client();
        let mut statuses = Vec::new();
        for _ in 0..n {
            let resp = c.put(lb.url("/count")).body(body()).send().await.unwrap();
            statuses.push(resp.status().as_u16());
        }
        statuses
    });
    (crasher, live, statuses)
}

#[test]
fn a_put_reset_after_reaching_a_member_is_replayed_on_another() {
    let (crasher, live, statuses) = puts(6, || reqwest::Body::from("x".repeat(3000)));
    assert_eq!(statuses, [200; 6], "every PUT was answered");
    let crashed = crasher.requests.load(Ordering::SeqCst);
    assert!(
        crashed >= 2,
        "round-robin sent PUTs to the crasher ({crashed})"
    );
    assert_eq!(live.hits(), 6, "the live member answered each PUT once");
    assert_eq!(live.state.body_bytes.load(Ordering::SeqCst), 6 * 3000);
}

#[test]
fn a_chunked_put_is_replayed_whole() {
    let chunked = || {
        let chunks = (0..4).map(|_| Ok::<_, std::io::Error>(bytes::Bytes::from(vec![b'c'; 1024])));
        reqwest::Body::wrap_stream(futures_util::stream::iter(chunks))
    };
    let (crasher, live, statuses) = puts(4, chunked);
    assert_eq!(statuses, [200; 4]);
    assert!(crasher.requests.load(Ordering::SeqCst) >= 1);
    assert_eq!(live.state.body_bytes.load(Ordering::SeqCst), 4 * 4096);
}

#[test]
fn a_put_too_large_to_keep_is_not_replayed() {
    let (crasher, live, statuses) = puts(4, || reqwest::Body::from(vec![b'x'; 100 * 1024]));
    let failed = statuses.iter().filter(|&&s| s == 502).count() as u64;
    assert!(failed >= 1, "some PUTs went to the crasher: {statuses:?}");
    assert_eq!(
        crasher.requests.load(Ordering::SeqCst),
        failed,
        "each failed PUT reached the crasher once and was not sent again"
    );
    assert_eq!(live.hits() + failed, 4, "{statuses:?}");
}

#[test]
fn a_put_that_timed_out_is_replayed_with_a_full_response_timeout() {
    let opts = BackendOpts {
        delay: Duration::from_millis(800),
    };
    let slow = Backend::start_with("slow", opts);
    let live = Backend::start("live");
    // Weighted least-connections with the slow member at weight 1000 to 1: with nothing in
    // flight both tie, and the tie goes by weight, so the first few hundred PUTs (these three
    // included) go to it first.
    let lb = Conf::new(&[format!("{}*1000", slow.member()), live.member()])
        .pool("algorithm = \"least-connections\"")
        .pool("response_timeout = \"300ms\"")
        .pool("max_fails = 0")
        .start();
    runtime().block_on(async {
        let c = client();
        for i in 0..3 {
            let resp = c
                .put(lb.url("/count"))
                .body("y".repeat(2000))
                .send()
                .await
                .unwrap();
            assert_eq!(resp.status(), 200, "PUT {i}");
            assert_eq!(upstream(&resp), live.member(), "PUT {i}");
            assert_eq!(resp.text().await.unwrap(), "2000");
        }
    });
    assert_eq!(lb.member(slow.addr).unwrap().stats.failures(), 3);
    assert_eq!(
        lb.member(live.addr).unwrap().stats.failures(),
        0,
        "the replay had its own response timeout, not what was left of the first one"
    );
}
