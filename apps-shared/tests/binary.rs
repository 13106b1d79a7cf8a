//! What every app binary must do: print its address, drain on SIGTERM, log requests, answer
//! `--healthcheck`, refuse bad config, and explain itself.
//!
//! Each app's `tests/binary.rs` includes this file with `#[path]`, so these tests run against
//! that app's binary, described by its `common::BIN`.

use std::time::{Duration, Instant};

use serde_json::Value;

use crate::common::{BIN, TempDir, client, kill_term, spawn};

/// SIGTERM: `/healthz` turns 503 `draining` while the app still serves, then it exits 0.
#[tokio::test]
async fn sigterm_drains_while_serving_then_exits_zero() {
    let bin = &BIN;
    let dir = TempDir::new("bin-term");
    let mut proc = spawn(bin.command(&dir.0, "bin-a", "1500ms"));
    let url = format!("http://{}", proc.addr);
    let res = client().get(format!("{url}/healthz")).send().await.unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["x-instance"], "bin-a");

    kill_term(&proc.child);

    // Poll with a deadline until the flag flips, then check it still serves.
    let deadline = Instant::now() + Duration::from_secs(1);
    loop {
        let res = client().get(format!("{url}/healthz")).send().await.unwrap();
        if res.status() == 503 {
            assert_eq!(res.json::<Value>().await.unwrap()["status"], "draining");
            break;
        }
        assert!(Instant::now() < deadline, "never reported draining");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let res = client()
        .get(format!("{url}{}", bin.serves))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200, "still serving during DRAIN_GRACE");

    let deadline = Instant::now() + Duration::from_secs(10);
    let code = loop {
        if let Some(code) = proc.child.try_wait().unwrap() {
            break code;
        }
        assert!(
            Instant::now() < deadline,
            "did not exit after the grace period"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(code.success(), "exit status {code}");
    let logs: Vec<String> = proc.lines.try_iter().collect();
    assert!(logs.iter().any(|l| l.contains("draining")), "{logs:?}");
    assert!(
        logs.iter().all(|l| !l.contains('\u{1b}')),
        "no ANSI colours when stdout is a pipe"
    );
}

/// One access-log line per request, with method, path (no query), status and duration.
#[test]
fn request_log_has_method_path_status_and_ms() {
    let bin = &BIN;
    let dir = TempDir::new("bin-log");
    let proc = spawn(bin.command(&dir.0, "bin-log", "0s"));
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let res = client()
            .get(format!("http://{}{}", proc.addr, bin.logged))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200);
    });
    let path = bin.logged.split('?').next().unwrap();
    let line = proc
        .lines
        .iter()
        .find(|l| l.contains(&format!("path={path}")))
        .unwrap();
    for part in ["method=GET", "status=200", "ms="] {
        assert!(line.contains(part), "{line}");
    }
}

/// `--healthcheck` probes a wildcard listen address on loopback: exit 0 up, 1 down.
#[test]
fn healthcheck_exits_0_when_healthy_and_1_when_not() {
    let bin = &BIN;
    let dir = TempDir::new("bin-hc");
    let proc = spawn(bin.command(&dir.0, "bin-hc", "0s"));
    // A wildcard listen address is probed on loopback.
    let listen = format!("0.0.0.0:{}", proc.addr.port());
    let ok = bin
        .command(&dir.0, "x", "0s")
        .env(bin.listen_env, &listen)
        .arg("--healthcheck")
        .output()
        .unwrap();
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );

    drop(proc);
    let down = bin
        .command(&dir.0, "x", "0s")
        .env(bin.listen_env, &listen)
        .arg("--healthcheck")
        .output()
        .unwrap();
    assert_eq!(down.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&down.stderr).contains("cannot reach"));
}

/// A bad env value is named with its variable and what was expected; exit 1.
#[test]
fn a_bad_env_value_names_the_variable_and_value_and_exits_nonzero() {
    let bin = &BIN;
    for (var, value, expected) in [
        (bin.listen_env, "localhost", "socket address"),
        ("DRAIN_GRACE", "soon", "duration"),
    ] {
        let out = bin.bare().env(var, value).output().unwrap();
        assert_eq!(out.status.code(), Some(1), "{var}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(var), "{err}");
        assert!(err.contains(value), "{err}");
        assert!(err.contains(expected), "{err}");
    }
}

/// An unknown key in the TOML file is an error that names it; exit 1.
#[test]
fn unknown_keys_in_the_config_file_are_rejected() {
    let bin = &BIN;
    let dir = TempDir::new("bin-toml");
    let file = dir.file("app.toml");
    std::fs::write(&file, "listen = \"127.0.0.1:0\"\nlisten_port = 3\n").unwrap();
    let out = bin.bare().env(bin.config_env, &file).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("listen_port"), "{err}");
}

/// `--help` names every variable, `--version` the version, an unknown argument exits 2.
#[test]
fn help_and_version() {
    let bin = &BIN;
    let help = bin.bare().arg("--help").output().unwrap();
    assert!(help.status.success());
    let text = String::from_utf8_lossy(&help.stdout);
    let shared = [
        bin.listen_env,
        "DRAIN_GRACE",
        "INSTANCE_NAME",
        "BALANCER_REGISTER_URL",
        "BALANCER_ADMIN_TOKEN",
        "REGISTER_ADVERTISE",
        "REGISTER_INTERVAL",
        "--healthcheck",
    ];
    for var in shared.iter().chain(bin.help_vars) {
        assert!(text.contains(var), "{var} missing from --help");
    }
    let out = bin.bare().arg("--version").output().unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains(env!("CARGO_PKG_VERSION")));
    assert_eq!(
        bin.bare().arg("--bogus").output().unwrap().status.code(),
        Some(2)
    );
}
