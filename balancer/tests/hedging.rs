//! Hedged requests: a member that accepts requests and never answers (frozen, cut off) behind
//! the balancer. Idempotent requests are answered by another member, a POST is never sent
//! twice, hedges stop once the pool's budget is spent, and the attempt that lost the race has
//! its connection closed rather than reused.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test crate: a panic is a failed test

mod common;

use std::sync::atomic::Ordering;

use common::{Backend, Conf, FrozenBackend, Lb, client, eventually, runtime};

/// Hedges a pool may always send per window (`MIN_HEDGES` in `balancer/src/proxy/hedge.rs`).
const MIN_HEDGES: u64 = 5;

/// A pool of `frozen` and `live`, never ejecting (so the frozen member keeps being picked),
/// hedging after 50 to 100 ms, with a response timeout short enough that an unhedged request
/// to the frozen member ends in a 504 within the test.
fn pool(frozen: &FrozenBackend, live: &Backend, budget: u32) -> Lb {
    conf(frozen, live, budget).start()
}

fn conf(frozen: &FrozenBackend, live: &Backend, budget: u32) -> Conf {
    Conf::new(&[frozen.member(), live.member()])
        .pool("max_fails = 0")
        .pool(r#"response_timeout = "500ms""#)
        .pool(&format!(
            r#"hedge = {{ delay_min = "50ms", delay_max = "100ms", budget = {budget} }}"#
        ))
}

/// Hedges sent and won over the pool's members.
fn hedges(lb: &Lb, members: &[std::net::SocketAddr]) -> (u64, u64) {
    members
        .iter()
        .map(|&a| lb.member(a).unwrap())
        .fold((0, 0), |(s, w), m| (s + m.hedge.sent(), w + m.hedge.won()))
}

#[test]
fn idempotent_requests_to_a_frozen_member_are_answered_by_another() {
    let frozen = FrozenBackend::start();
    let live = Backend::start("live");
    let lb = pool(&frozen, &live, 100);
    runtime().block_on(async {
        let c = client();
        for i in 0..12 {
            let method =
                [http::Method::GET, http::Method::HEAD, http::Method::OPTIONS][i % 3].clone();
            let resp = c.request(method.clone(), lb.url("/")).send().await.unwrap();
            assert_eq!(resp.status(), 200, "{method} {i}");
            assert_eq!(resp.headers()["x-backend"], "live", "{method} {i}");
        }
        // A PUT whose small body the balancer kept goes twice as well.
        for i in 0..4 {
            let resp = c
                .put(lb.url("/count"))
                .body(vec![b'p'; 100])
                .send()
                .await
                .unwrap();
            assert_eq!(resp.status(), 200, "PUT {i}");
            assert_eq!(resp.text().await.unwrap(), "100", "PUT {i}");
        }
    });
    assert!(
        frozen.requests() >= 6,
        "round robin sent the frozen member its share"
    );
    let won = lb.member(live.addr).unwrap().hedge.won();
    assert!(won >= 6, "the live member answered the hedges ({won})");
    let charged = lb.member(frozen.addr).unwrap().stats.failures();
    assert_eq!(
        charged,
        won - 1,
        "the member that answers nothing is charged from its second silent loss on"
    );
}

#[test]
fn a_member_that_turns_slow_is_waited_on_longer_and_keeps_its_share() {
    let slow = Backend::start("slow");
    let fast = Backend::start("fast");
    // Ejected at the first failure, for longer than the test: one charge would show.
    let lb = Conf::new(&[slow.member(), fast.member()])
        .pool("max_fails = 1")
        .pool(r#"fail_timeout = "60s""#)
        .pool(r#"hedge = { delay_min = "50ms", delay_max = "500ms", budget = 100 }"#)
        .start();
    let served_by = |n: usize| {
        runtime().block_on(async {
            let c = client();
            let mut by = Vec::new();
            // One request at a time, as a quiet lab sends them.
            for _ in 0..n {
                let resp = c.get(lb.url("/")).send().await.unwrap();
                assert_eq!(resp.status(), 200);
                by.push(resp.headers()["x-backend"].to_str().unwrap().to_owned());
            }
            by
        })
    };
    // Both fast: the slow one's p99 is a millisecond, its hedge delay the 50 ms floor.
    served_by(10);
    // The delay is recomputed once a (coarse) second: let the one it has seen answer fast
    // be the one in use.
    std::thread::sleep(std::time::Duration::from_millis(1100));
    // Slower than the 50 ms delay, well under the ~100 ms it learns from the first race.
    slow.state.slow(std::time::Duration::from_millis(60));
    let by = served_by(12);

    let m = lb.member(slow.addr).unwrap();
    assert_eq!(
        m.stats.failures(),
        0,
        "overtaken once, then waited on: never charged ({by:?})"
    );
    let hedges = m.hedge.sent() + lb.member(fast.addr).unwrap().hedge.sent();
    assert!(
        hedges <= 2,
        "a hedge at the first slow answer (two on a stalled machine), then the delay is \
         twice what it waited; without learning, each of its turns is hedged: {hedges}"
    );
    let slow_answers = by.iter().filter(|b| *b == "slow").count();
    assert!(
        slow_answers >= 5,
        "round robin still gives it its turn: {by:?}"
    );
}

#[test]
fn a_post_to_a_frozen_member_is_not_sent_twice() {
    let frozen = FrozenBackend::start();
    let live = Backend::start("live");
    let lb = pool(&frozen, &live, 100);
    let statuses = runtime().block_on(async {
        let c = client();
        let mut statuses = Vec::new();
        // Two of each in turn, so that round robin gives each kind to both members.
        for i in 0..8 {
            let req = if (i / 2) % 2 == 0 {
                c.post(lb.url("/count")).body(vec![b'p'; 100])
            } else {
                c.post(lb.url("/"))
            };
            statuses.push(req.send().await.unwrap().status().as_u16());
        }
        statuses
    });
    let (frozen_posts, live_posts) = (
        frozen.state.posts.load(Ordering::SeqCst),
        live.state.posts.load(Ordering::SeqCst),
    );
    assert_eq!(
        frozen_posts + live_posts,
        8,
        "each POST reached one member once"
    );
    assert!(frozen_posts >= 2, "the frozen member got its share");
    let timed_out = statuses.iter().filter(|&&s| s == 504).count() as u64;
    assert_eq!(
        timed_out, frozen_posts,
        "a POST to it waits for the timeout: {statuses:?}"
    );
    assert_eq!(hedges(&lb, &[frozen.addr, live.addr]).0, 0);
}

#[test]
fn hedges_stop_when_the_budget_is_spent() {
    let frozen = FrozenBackend::start();
    let live = Backend::start("live");
    // 0 %: only the minimum a quiet pool always has; no retries, so that a request the
    // budget leaves on the frozen member ends at its response timeout.
    let lb = conf(&frozen, &live, 0).pool("retries = 0").start();
    let statuses = runtime().block_on(async {
        let c = client();
        let mut statuses = Vec::new();
        for _ in 0..(4 * MIN_HEDGES) {
            statuses.push(c.get(lb.url("/")).send().await.unwrap().status().as_u16());
        }
        statuses
    });
    let (sent, _) = hedges(&lb, &[frozen.addr, live.addr]);
    assert_eq!(sent, MIN_HEDGES, "hedges stop at the budget: {statuses:?}");
    // Requests that went to the frozen member first, less those a hedge answered.
    let first_to_frozen = frozen.requests() - lb.member(frozen.addr).unwrap().hedge.sent();
    let rescued = lb.member(live.addr).unwrap().hedge.won();
    let timed_out = statuses.iter().filter(|&&s| s == 504).count() as u64;
    assert_eq!(
        timed_out,
        first_to_frozen - rescued,
        "past the budget, requests to the frozen member wait for the timeout: {statuses:?}"
    );
    assert!(timed_out >= 1);
}

#[test]
fn the_losing_attempt_is_closed_and_its_connection_never_reused() {
    let frozen = FrozenBackend::start();
    let live = Backend::start("live");
    let lb = pool(&frozen, &live, 100);
    runtime().block_on(async {
        let c = client();
        for i in 0..10 {
            let resp = c.get(lb.url("/")).send().await.unwrap();
            assert_eq!(resp.status(), 200, "GET {i}");
        }
        let st = &frozen.state;
        eventually(
            "the balancer closes every connection of the lost attempts",
            async || st.closed.load(Ordering::SeqCst) == st.connections.load(Ordering::SeqCst),
        )
        .await;
        assert!(st.connections.load(Ordering::SeqCst) >= 5);
        assert!(
            lb.member(live.addr).unwrap().hedge.won() >= 5,
            "hedges won the races"
        );
        assert_eq!(
            st.reused.load(Ordering::SeqCst),
            0,
            "no second request on one"
        );
    });
    // The live member's connections are reused as usual: the hedges did not cost it that.
    assert!(live.state.connections.load(Ordering::SeqCst) < live.hits());
}
