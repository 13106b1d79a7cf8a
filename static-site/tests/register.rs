//! Self-registration with the balancer, against a fake admin endpoint on 127.0.0.1:0. The
//! code is shared with student-api (`apps-shared`), so its finer points are tested there;
//! these check that the site wires it up: heartbeats, a failing balancer, and the binary
//! tests both apps must pass (`apps-shared/tests/each_app/registration.rs`: DELETE before draining,
//! config errors).

// Helpers outside #[test] fns panic on setup failure too: that is the point in tests.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

#[path = "../../apps-shared/tests/each_app/registration.rs"]
mod registration;

use std::time::Duration;

use common::fake_balancer::{FakeBalancer, count};
use common::{client, config};
use tokio::net::TcpListener;
use tokio::sync::oneshot;

#[tokio::test]
async fn heartbeats_while_serving_and_deletes_on_shutdown() {
    let fake = FakeBalancer::start().await;
    let mut cfg = config("reg-site");
    cfg.register_url = Some(fake.url("static").parse().unwrap());
    cfg.admin_token = Some("t0k".parse().unwrap());
    cfg.register_interval = Duration::from_millis(100);
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(static_site::run(listener, cfg, async {
        let _ = stopped.await;
    }));

    let seen = fake
        .wait_for("2 heartbeats", |s| count(s, "PUT") >= 2)
        .await;
    let member_path = format!("/api/pools/static/members/{addr}");
    for put in &seen {
        assert_eq!(put.method, "PUT");
        assert_eq!(put.path, member_path);
        assert_eq!(put.query, "ttl=5");
        assert_eq!(put.auth.as_deref(), Some("Bearer t0k"));
    }
    stop.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(5), task)
        .await
        .expect("shutdown took too long")
        .unwrap()
        .unwrap();
    let last = fake.seen().pop().unwrap();
    assert_eq!(
        (last.method.as_str(), last.path.as_str()),
        ("DELETE", member_path.as_str())
    );
}

#[tokio::test]
async fn a_failing_balancer_does_not_stop_serving() {
    let fake = FakeBalancer::start().await;
    fake.answer_puts_with(500);
    let mut cfg = config("reg-fail");
    cfg.register_url = Some(fake.url("static").parse().unwrap());
    cfg.admin_token = Some("t0k".parse().unwrap());
    cfg.register_interval = Duration::from_millis(100);
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (_stop, stopped) = oneshot::channel::<()>();
    tokio::spawn(static_site::run(listener, cfg, async {
        let _ = stopped.await;
    }));
    fake.wait_for("retries", |s| count(s, "PUT") >= 3).await;
    let res = client()
        .get(format!("http://{addr}/"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
}
