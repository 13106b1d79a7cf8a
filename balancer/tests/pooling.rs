//! Connections to members are pooled per worker: sequential requests reuse one keep-alive
//! connection, HEAD and empty bodies return it too, and an abandoned body does not poison it.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers outside #[test] fns

mod common;

use std::sync::atomic::Ordering;

use common::{Backend, Lb};

/// A `/bytes?n=0` body: empty.
const EMPTY: &str = "/bytes?n=0";
/// A `/bytes` body of 64 MiB, more than socket buffers hold.
const BIG: &str = "/bytes?n=67108864";

/// A balancer with one worker (so one connection pool) in front of `member`.
async fn start(member: &Backend) -> Lb {
    let conf = common::Conf::new(&[member.member()]).top("workers = 1");
    tokio::task::spawn_blocking(move || conf.start())
        .await
        .unwrap()
}

#[tokio::test]
async fn sequential_requests_reuse_one_member_connection() {
    let member = Backend::start("hello");
    let lb = start(&member).await;
    let c = reqwest::Client::new();
    for path in ["/a", EMPTY, "/b", EMPTY, "/c"] {
        for _ in 0..10 {
            let r = c.get(lb.url(path)).send().await.unwrap();
            assert_eq!(r.status(), 200);
            r.bytes().await.unwrap();
        }
    }
    for _ in 0..10 {
        let r = c.head(lb.url("/a")).send().await.unwrap();
        assert_eq!(r.status(), 200);
    }
    assert_eq!(
        member.state.connections.load(Ordering::SeqCst),
        1,
        "60 sequential exchanges over one connection"
    );
}

#[tokio::test]
async fn an_abandoned_body_closes_its_member_connection_and_the_next_request_works() {
    let member = Backend::start("hello");
    let lb = start(&member).await;
    let c = reqwest::Client::new();
    // Read only the head of a 64 MiB body (more than socket buffers hold), then drop it: that member connection has bytes in
    // flight and must not serve another request.
    let r = c.get(lb.url(BIG)).send().await.unwrap();
    assert_eq!(r.status(), 200);
    drop(r);
    let c2 = reqwest::Client::new();
    for _ in 0..5 {
        let r = c2.get(lb.url("/a")).send().await.unwrap();
        assert_eq!(r.text().await.unwrap(), "hello");
    }
    assert_eq!(
        member.state.connections.load(Ordering::SeqCst),
        2,
        "the abandoned connection was replaced once"
    );
}
