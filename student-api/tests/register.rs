//! Self-registration with the balancer, against a fake admin endpoint on 127.0.0.1:0:
//! heartbeats, the announced address, DELETE before draining, failures, bad config. The
//! binary tests both apps must pass are in `apps-shared/tests/each_app/registration.rs`.

// Helpers outside #[test] fns panic on setup failure too: that is the point in tests.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

#[path = "../../apps-shared/tests/each_app/registration.rs"]
mod registration;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::fake_balancer::{FakeBalancer, Seen, count};
use common::{BIN, TempDir, client, command, config, registering, spawn};
use student_api::Config;
use tokio::net::TcpListener;
use tokio::sync::oneshot;

/// An in-process app registering with `fake`; stopped (and so deregistered) on `stop`.
struct App {
    addr: SocketAddr,
    stop: oneshot::Sender<()>,
    task: tokio::task::JoinHandle<Result<(), student_api::Error>>,
    _dir: TempDir,
}

async fn start(bind: &str, tweak: impl FnOnce(&mut Config)) -> App {
    let dir = TempDir::new("reg");
    let mut cfg = config(&dir.file("s.jsonl"), "reg");
    cfg.admin_token = Some("t0k".parse().unwrap());
    tweak(&mut cfg);
    let listener = TcpListener::bind(bind).await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(student_api::run(listener, cfg, async {
        let _ = stopped.await;
    }));
    App {
        addr,
        stop,
        task,
        _dir: dir,
    }
}

impl App {
    async fn shut_down(self) {
        self.stop.send(()).unwrap();
        tokio::time::timeout(Duration::from_secs(5), self.task)
            .await
            .expect("shutdown took too long")
            .unwrap()
            .unwrap();
    }
}

fn puts(seen: &[Seen]) -> Vec<&Seen> {
    seen.iter().filter(|s| s.method == "PUT").collect()
}

#[tokio::test]
async fn heartbeats_carry_the_token_the_member_path_and_the_ttl() {
    let fake = FakeBalancer::start().await;
    let app = start("127.0.0.1:0", |c| {
        c.register_url = Some(fake.url("dynamic").parse().unwrap());
        c.register_interval = Duration::from_millis(100);
    })
    .await;
    let seen = fake
        .wait_for("3 heartbeats", |s| count(s, "PUT") >= 3)
        .await;
    let member_path = format!("/api/pools/dynamic/members/{}", app.addr);
    for put in puts(&seen) {
        assert_eq!(put.path, member_path);
        assert_eq!(put.query, "ttl=5", "3 x 100ms, but at least 5 s");
        assert_eq!(put.auth.as_deref(), Some("Bearer t0k"));
    }
    let gap = seen[2].at - seen[1].at;
    assert!(gap >= Duration::from_millis(50), "heartbeats {gap:?} apart");

    app.shut_down().await;
    let seen = fake.seen();
    let last = seen.last().unwrap();
    assert_eq!(last.method, "DELETE");
    assert_eq!(last.path, member_path);
    assert_eq!(last.auth.as_deref(), Some("Bearer t0k"));
    assert_eq!(count(&seen, "DELETE"), 1);
}

#[tokio::test]
async fn a_wildcard_listener_is_announced_at_once_on_the_ip_the_balancer_sees() {
    let fake = FakeBalancer::start().await;
    let started = Instant::now();
    let app = start("0.0.0.0:0", |c| {
        c.register_url = Some(fake.url("dynamic").parse().unwrap());
        c.register_interval = Duration::from_secs(30);
    })
    .await;
    let seen = fake
        .wait_for("the first heartbeat", |s| count(s, "PUT") == 1)
        .await;
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "the first heartbeat goes out right away, not after an interval"
    );
    // The fake is on loopback, so loopback is the source address it sees.
    let expected = format!("/api/pools/dynamic/members/127.0.0.1:{}", app.addr.port());
    assert_eq!(seen[0].path, expected);
    assert_eq!(seen[0].query, "ttl=90");
    app.shut_down().await;
}

#[tokio::test]
async fn register_advertise_overrides_the_announced_address() {
    let fake = FakeBalancer::start().await;
    let app = start("127.0.0.1:0", |c| {
        c.register_url = Some(fake.url("blue").parse().unwrap());
        c.register_advertise = Some("10.9.8.7:4000".parse().unwrap());
    })
    .await;
    let seen = fake.wait_for("a heartbeat", |s| count(s, "PUT") == 1).await;
    assert_eq!(seen[0].path, "/api/pools/blue/members/10.9.8.7:4000");
    app.shut_down().await;
    let last = fake.seen().pop().unwrap();
    assert_eq!(
        (last.method.as_str(), last.path.as_str()),
        ("DELETE", "/api/pools/blue/members/10.9.8.7:4000")
    );
}

#[tokio::test]
async fn a_failing_or_unreachable_balancer_does_not_stop_serving() {
    let fake = FakeBalancer::start().await;
    fake.answer_puts_with(503);
    let failing = start("127.0.0.1:0", |c| {
        c.register_url = Some(fake.url("dynamic").parse().unwrap());
        c.register_interval = Duration::from_millis(100);
    })
    .await;
    // A port that was just free: nothing listens there.
    let closed = TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap()
        .local_addr()
        .unwrap();
    let unreachable = start("127.0.0.1:0", |c| {
        c.register_url = Some(
            format!("http://{closed}/api/pools/dynamic/members")
                .parse()
                .unwrap(),
        );
        c.register_interval = Duration::from_millis(100);
    })
    .await;

    fake.wait_for("retries", |s| count(s, "PUT") >= 3).await;
    for app in [&failing, &unreachable] {
        let res = client()
            .get(format!("http://{}/api/student?count=2", app.addr))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200);
    }
    failing.shut_down().await;
    unreachable.shut_down().await;
}

// Multi-threaded: the fake keeps answering while this thread blocks on the child's output.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failures_are_logged_once_per_outage_and_recovery_once() {
    let fake = FakeBalancer::start().await;
    fake.answer_puts_with(503);
    let dir = TempDir::new("reg-log");
    let mut proc = spawn(registering(&BIN, &dir, &fake, "0s", "100ms"));
    let res = client()
        .get(format!("http://{}/api/student", proc.addr))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200, "serves while registration fails");

    // Each phase sees at least three heartbeats answered with its status (counted from the
    // switch, so a slow test thread cannot skip a phase).
    for status in [503, 200, 401, 200] {
        fake.answer_puts_with(status);
        let before = count(&fake.seen(), "PUT");
        fake.wait_for("heartbeats", |s| count(s, "PUT") >= before + 4)
            .await;
    }
    proc.child.kill().unwrap();
    let logs = tokio::task::spawn_blocking(move || {
        proc.child.wait().unwrap();
        proc.lines.iter().collect::<Vec<_>>()
    })
    .await
    .unwrap();
    let lines = |needle: &str| logs.iter().filter(|l| l.contains(needle)).count();
    assert_eq!(lines("cannot register with the balancer"), 1, "{logs:#?}");
    assert_eq!(lines("WARN"), 1, "{logs:#?}");
    assert_eq!(lines("configuration error"), 1, "{logs:#?}");
    assert_eq!(lines("refused BALANCER_ADMIN_TOKEN"), 1, "{logs:#?}");
    assert_eq!(
        lines("registration with the balancer recovered"),
        2,
        "{logs:#?}"
    );
    assert_eq!(lines("registered with the balancer;"), 0, "{logs:#?}");
}

#[test]
fn bad_registration_config_is_refused_at_startup() {
    let dir = TempDir::new("reg-bad");
    let url = "http://balancer:1936/api/pools/dynamic/members";
    for (vars, expected) in [
        (vec![("BALANCER_REGISTER_URL", url)], "BALANCER_ADMIN_TOKEN"),
        (
            vec![("BALANCER_REGISTER_URL", "http://balancer:1936")],
            "path is missing",
        ),
        (
            vec![
                ("BALANCER_REGISTER_URL", url),
                ("BALANCER_ADMIN_TOKEN", "t0k"),
                ("REGISTER_INTERVAL", "0s"),
            ],
            "REGISTER_INTERVAL",
        ),
        (vec![("REGISTER_ADVERTISE", "nope")], "REGISTER_ADVERTISE"),
    ] {
        let mut cmd = command(&dir, "x", "0s");
        cmd.envs(vars.iter().copied());
        let out = cmd.output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{vars:?}: {err}");
        assert!(err.contains(expected), "{vars:?}: {err}");
    }
}
