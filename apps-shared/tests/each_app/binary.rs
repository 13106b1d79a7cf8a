//! What every app binary must do: print its address, drain on SIGTERM, log requests, answer
//! `--healthcheck`, refuse bad config, and explain itself.
//!
//! Each app's `tests/binary.rs` includes this file with `#[path]`, so these tests run against
//! that app's binary, described by its `common::BIN`.

use std::time::{Duration, Instant};

use serde_json::Value;

use crate::common::{BIN, TempDir, client, healthz_answering, kill_term, spawn};

/// SIGTERM: `/healthz` turns 503 `draining` while the app still serves, then it exits 0.
#[tokio::test]
async fn sigterm_drains_while_serving_then_exits_zero() {
    let bin = &BIN;
    let dir = TempDir::new("bin-term");
    let mut proc = spawn(bin.command(dir.path(), "bin-a", "1500ms"));
    let url = format!("http://{}", proc.addr);
    let res = client().get(format!("{url}/healthz")).send().await.unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["x-instance"], "bin-a");

    kill_term(&proc.child);

    // Within the grace, then check it still serves.
    let res = healthz_answering(&url, 503, Duration::from_secs(1)).await;
    assert_eq!(res.json::<Value>().await.unwrap()["status"], "draining");
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
    let proc = spawn(bin.command(dir.path(), "bin-log", "0s"));
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
    let proc = spawn(bin.command(dir.path(), "bin-hc", "0s"));
    // A wildcard listen address is probed on loopback.
    let listen = format!("0.0.0.0:{}", proc.addr.port());
    let ok = bin
        .command(dir.path(), "x", "0s")
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
        .command(dir.path(), "x", "0s")
        .env(bin.listen_env, &listen)
        .arg("--healthcheck")
        .output()
        .unwrap();
    assert_eq!(down.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&down.stderr).contains("cannot reach"));
}

/// Whether `s` names a Rust item by its path (`Config::listen`); `[::]` is an address.
fn names_an_internal_path(s: &str) -> bool {
    s.as_bytes()
        .windows(4)
        .any(|w| w[0].is_ascii_alphanumeric() && &w[1..3] == b"::" && w[3].is_ascii_alphabetic())
}

/// The binary run with `content` as its config file: (exit code, stderr, the file's path).
fn with_file(name: &str, content: &str) -> (Option<i32>, String, String) {
    let bin = &BIN;
    let dir = TempDir::new(name);
    let file = dir.file("app.toml");
    std::fs::write(&file, content).unwrap();
    let out = bin.bare().env(bin.config_env, &file).output().unwrap();
    let path = file.to_str().unwrap().to_owned();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
        path,
    )
}

/// A bad env value is shown as `VAR="value" (environment)` with what was expected; exit 1.
#[test]
fn a_bad_env_value_names_the_variable_and_value_and_exits_nonzero() {
    let bin = &BIN;
    for (var, value, expected) in [
        (bin.listen_env, "localhost", "expected a socket address"),
        ("DRAIN_GRACE", "soon", "expected a duration"),
        (
            "LOAD_CAPACITY",
            "0",
            "expected a whole number of concurrent requests",
        ),
        (
            "LAB_DELAY",
            "1.5ms",
            "expected a duration in whole milliseconds",
        ),
        (
            "LAB_CPU",
            "2s",
            "expected a duration in whole milliseconds from 0ms to 1s",
        ),
        (
            "LAB_ERROR_RATE",
            "20%",
            "expected a share of requests from 0 to 1",
        ),
        ("LAB_UNHEALTHY", "maybe", "expected 1, 0, true, false"),
    ] {
        let out = bin.bare().env(var, value).output().unwrap();
        assert_eq!(out.status.code(), Some(1), "{var}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains(&format!("{var}=\"{value}\" (environment): {expected}")),
            "{err}"
        );
        assert!(!names_an_internal_path(&err), "{err}");
    }
}

/// A bad value in the file is shown with its key, the value, the file and what was expected.
#[test]
fn a_bad_file_value_names_the_key_the_value_and_the_file() {
    let (code, err, path) = with_file("bin-value", "drain_grace = \"1s\"\nlisten = \"nowhere\"\n");
    assert_eq!(code, Some(1));
    assert!(
        err.contains(&format!(
            "app.toml key listen = \"nowhere\" (file {path}, line 2): invalid socket address"
        )),
        "{err}"
    );
    assert!(err.contains("expected"), "{err}");
    assert!(!names_an_internal_path(&err), "{err}");
}

/// A file that is not TOML is shown with its line and what was expected.
#[test]
fn a_file_that_is_not_toml_names_the_line() {
    let (code, err, path) = with_file("bin-syntax", "listen = 127.0.0.1:0\n");
    assert_eq!(code, Some(1));
    assert!(
        err.contains(&format!(
            "app.toml line 1 `listen = 127.0.0.1:0` (file {path}, column"
        )),
        "{err}"
    );
    assert!(
        err.contains("not valid TOML") && err.contains("expected `key = value`"),
        "{err}"
    );
    assert!(
        !err.contains("TOML parse error") && !names_an_internal_path(&err),
        "{err}"
    );
}

/// An unknown key in the TOML file is an error that names it and the keys expected; exit 1.
#[test]
fn unknown_keys_in_the_config_file_are_rejected() {
    let (code, err, path) = with_file("bin-toml", "listen = \"127.0.0.1:0\"\nlisten_port = 3\n");
    assert_eq!(code, Some(1));
    assert!(
        err.contains(&format!(
            "app.toml key listen_port = 3 (file {path}, line 2): unknown key `listen_port`"
        )),
        "{err}"
    );
    assert!(err.contains("expected one of `listen`"), "{err}");
    assert!(!names_an_internal_path(&err), "{err}");
}

/// A config file that is named but missing is an error naming the variable, not ignored.
#[test]
fn a_named_config_file_that_is_missing_is_an_error() {
    let bin = &BIN;
    let mut child = bin
        .bare()
        .env(bin.config_env, "/nonexistent/app.toml")
        .env(bin.listen_env, "127.0.0.1:0")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break Some(status);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let status = status.expect("started serving without its config file");
    let mut err = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
    assert_eq!(status.code(), Some(1), "{err}");
    assert!(
        err.contains(&format!(
            "{}=\"/nonexistent/app.toml\" (environment)",
            bin.config_env
        )) && err.contains("expected"),
        "{err}"
    );
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
        "LOAD_CAPACITY",
        "LAB_DELAY",
        "LAB_CPU",
        "LAB_ERROR_RATE",
        "LAB_UNHEALTHY",
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
