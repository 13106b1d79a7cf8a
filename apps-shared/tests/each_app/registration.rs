//! Self-registration as every app binary must do it, against the fake balancer: DELETE before
//! draining on SIGTERM, and an `https://` URL refused at startup.
//!
//! Each app's `tests/register.rs` includes this file with `#[path]`, so these tests run
//! against that app's binary, described by its `common::BIN`.

use std::time::Duration;

use crate::common::fake_balancer::{FakeBalancer, count};
use crate::common::{BIN, TempDir, client, healthz_answering, kill_term, registering, spawn};

/// SIGTERM: the DELETE goes out while `/healthz` still says ok, then the app drains (still
/// serving) and exits 0, with no heartbeat after the DELETE.
// Multi-threaded: the fake keeps answering while this thread blocks on the child's output.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_deletes_the_registration_before_draining_starts() {
    let bin = &BIN;
    let fake = FakeBalancer::start().await;
    let dir = TempDir::new("reg-term");
    let mut proc = spawn(registering(bin, &dir, &fake, "1s", "200ms"));
    let base = format!("http://{}", proc.addr);
    fake.probe_app_on_delete(&base);
    fake.wait_for("a heartbeat", |s| count(s, "PUT") >= 1).await;

    kill_term(&proc.child);
    let seen = fake
        .wait_for("the DELETE", |s| count(s, "DELETE") == 1)
        .await;
    let delete = seen.iter().find(|s| s.method == "DELETE").unwrap();
    assert_eq!(
        delete.path,
        format!("/api/pools/{}/members/{}", bin.pool, proc.addr)
    );
    assert_eq!(
        delete.app_health,
        Some(200),
        "/healthz must not report draining before the DELETE"
    );
    // Then draining: 503 while still serving, and no heartbeat after the DELETE.
    healthz_answering(&base, 503, Duration::from_secs(3)).await;
    let res = client()
        .get(format!("{base}{}", bin.serves))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200, "still serving during DRAIN_GRACE");

    let code = tokio::task::spawn_blocking(move || {
        let code = proc.child.wait().unwrap();
        (code, proc.lines.iter().collect::<Vec<_>>())
    });
    let (code, logs) = tokio::time::timeout(Duration::from_secs(10), code)
        .await
        .expect("did not exit")
        .unwrap();
    assert!(code.success(), "exit status {code}");
    let seen = fake.seen();
    assert!(seen.iter().all(|s| s.method != "PUT" || s.at < delete.at));
    let pos = |needle: &str| logs.iter().position(|l| l.contains(needle));
    assert!(pos("registered with the balancer").is_some(), "{logs:#?}");
    assert!(
        pos("deregistered from the balancer") < pos("draining: /healthz"),
        "{logs:#?}"
    );
}

/// Only plain HTTP: an `https://` register URL stops the app at startup, naming the variable.
#[test]
fn an_https_register_url_is_a_startup_error_naming_the_variable() {
    let bin = &BIN;
    let dir = TempDir::new("reg-https");
    let out = bin
        .command(dir.path(), "x", "0s")
        .env(
            "BALANCER_REGISTER_URL",
            format!("https://balancer:1936/api/pools/{}/members", bin.pool),
        )
        .env("BALANCER_ADMIN_TOKEN", "t0k")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("BALANCER_REGISTER_URL"), "{err}");
    assert!(err.contains("https://"), "{err}");
}
