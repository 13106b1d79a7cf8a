//! The real `balancer` binary's command line: configuration errors that name the field and
//! the source, `--check-config`, and the default template. The binary running as a server
//! is in `process.rs`.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers outside #[test] fns

mod common;

use std::process::{Command, Output};

use common::temp_dir;

const BIN: &str = env!("CARGO_BIN_EXE_balancer");

/// Runs the binary to completion with a clean environment plus `env`.
fn run(args: &[&str], env: &[(&str, &str)]) -> Output {
    Command::new(BIN)
        .args(args)
        .env_clear()
        .envs(env.iter().copied())
        .output()
        .expect("run balancer")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn help_and_version() {
    let out = run(&["--help"], &[]);
    assert!(out.status.success());
    assert!(text(&out.stdout).contains("--check-config"));
    let out = run(&["--version"], &[]);
    assert!(text(&out.stdout).starts_with("balancer "));
    let out = run(&["--bogus"], &[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("--bogus"));
}

#[test]
fn check_config_shows_each_value_with_its_source() {
    let dir = temp_dir("check");
    let file = dir.path().join("balancer.toml");
    std::fs::write(
        &file,
        "[pools.dynamic]\nalgorithm = \"least-connections\"\n",
    )
    .unwrap();
    let out = run(
        &["--check-config"],
        &[
            ("BALANCER_CONFIG", file.to_str().unwrap()),
            ("STATIC_BACKEND", "10.0.0.1:80   web:8080*3"),
        ],
    );
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}{}", text(&out.stderr));
    let line = |needle: &str| {
        stdout
            .lines()
            .find(|l| l.starts_with(needle))
            .unwrap_or_else(|| panic!("no line {needle:?} in\n{stdout}"))
            .to_owned()
    };
    assert!(line("members = [\"10.0.0.1:80\", \"web:8080*3\"]").ends_with("# env STATIC_BACKEND"));
    assert!(line("algorithm = \"least-connections\"").contains(&format!(
        "# file {} key pools.dynamic.algorithm",
        file.display()
    )));
    assert!(line("listen = \"0.0.0.0:80\"").ends_with("# default"));
}

#[test]
fn bad_env_value_names_the_variable_the_value_and_the_choices() {
    let out = run(
        &["--check-config"],
        &[("BALANCER_STATIC_ALGORITHM", "fastest")],
    );
    assert_eq!(out.status.code(), Some(2));
    let err = text(&out.stderr);
    assert!(err.contains("BALANCER_STATIC_ALGORITHM"), "{err}");
    assert!(
        err.contains("fastest") && err.contains("least-connections"),
        "{err}"
    );

    let out = run(&["--check-config"], &[("DYNAMIC_BACKEND", "api:http")]);
    assert_eq!(out.status.code(), Some(2));
    let err = text(&out.stderr);
    assert!(
        err.contains("DYNAMIC_BACKEND") && err.contains("api:http") && err.contains("port"),
        "{err}"
    );

    let out = run(&["--check-config"], &[("BALANCER_CONNECT_TIMEOUT", "soon")]);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        err.contains("BALANCER_CONNECT_TIMEOUT") && err.contains("soon") && err.contains("500ms"),
        "{err}"
    );
}

/// Whether `s` names a Rust item by its path (`RawConfig::listen`); `[::]` is an address.
fn names_an_internal_path(s: &str) -> bool {
    s.contains("RawConfig")
        || s.as_bytes().windows(4).any(|w| {
            w[0].is_ascii_alphanumeric() && &w[1..3] == b"::" && w[3].is_ascii_alphabetic()
        })
}

/// `--check-config` with `content` as the config file: (exit code, stderr, the file's path).
fn check_file(name: &str, content: &str) -> (Option<i32>, String, String) {
    let dir = temp_dir(name);
    let file = dir.path().join("balancer.toml");
    std::fs::write(&file, content).unwrap();
    let path = file.to_str().unwrap().to_owned();
    let out = run(&["--check-config"], &[("BALANCER_CONFIG", &path)]);
    (out.status.code(), text(&out.stderr), path)
}

#[test]
fn a_bad_env_value_shows_the_variable_the_value_and_what_was_expected() {
    let out = run(&["--check-config"], &[("BALANCER_LISTEN", "foo")]);
    assert_eq!(out.status.code(), Some(2));
    let err = text(&out.stderr);
    assert!(
        err.contains("BALANCER_LISTEN=\"foo\" (environment): invalid socket address syntax"),
        "{err}"
    );
    assert!(
        err.contains("expected") && err.contains("0.0.0.0:80"),
        "{err}"
    );
    assert!(!names_an_internal_path(&err), "{err}");

    let out = run(&["--check-config"], &[("BALANCER_WORKERS", "many")]);
    let err = text(&out.stderr);
    assert!(
        err.contains("BALANCER_WORKERS=\"many\"") && err.contains("expected a whole number"),
        "{err}"
    );
    assert!(
        !err.contains("u64") && !names_an_internal_path(&err),
        "{err}"
    );
}

#[test]
fn a_bad_file_value_shows_the_key_the_value_the_file_and_what_was_expected() {
    let (code, err, path) = check_file("file-value", "workers = 2\nlisten = \"foo\"\n");
    assert_eq!(code, Some(2));
    assert!(
        err.contains(&format!(
            "balancer.toml key listen = \"foo\" (file {path}, line 2): invalid socket address"
        )),
        "{err}"
    );
    assert!(
        err.contains("expected") && err.contains("0.0.0.0:80"),
        "{err}"
    );
    assert!(!names_an_internal_path(&err), "{err}");

    // A wrong type in a table of the file: TOML words, not Rust types.
    let (code, err, _) = check_file("file-type", "[pools.x]\nmembers = \"a:1\"\nhealth = 5\n");
    assert_eq!(code, Some(2));
    assert!(
        err.contains("key pools.x.health = 5") && err.contains("expected a table"),
        "{err}"
    );
    assert!(
        !err.contains("HealthFile") && !names_an_internal_path(&err),
        "{err}"
    );
}

#[test]
fn a_file_that_is_not_toml_shows_the_line_and_what_was_expected() {
    let (code, err, path) = check_file("syntax", "workers = 2\nlisten = 0.0.0.0:80\n");
    assert_eq!(code, Some(2));
    assert!(
        err.contains(&format!(
            "balancer.toml line 2 `listen = 0.0.0.0:80` (file {path}, column"
        )),
        "{err}"
    );
    assert!(
        err.contains("not valid TOML") && err.contains("expected") && err.contains("double quotes"),
        "{err}"
    );
    assert!(
        !err.contains("TOML parse error") && !names_an_internal_path(&err),
        "{err}"
    );
}

#[test]
fn an_unknown_file_key_shows_the_key_the_file_and_the_keys_expected() {
    let (code, err, path) = check_file("unknown", "[timeouts]\nconect = \"1s\"\n");
    assert_eq!(code, Some(2));
    assert!(
        err.contains(&format!(
            "balancer.toml key timeouts.conect = \"1s\" (file {path}, line 2): unknown key"
        )),
        "{err}"
    );
    assert!(
        err.contains("did you mean `connect`?") && err.contains("expected one of `connect`"),
        "{err}"
    );
    assert!(!names_an_internal_path(&err), "{err}");
}

#[test]
fn the_server_refuses_to_start_on_a_bad_value() {
    let out = run(&[], &[("BALANCER_LISTEN", "not-an-address")]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("BALANCER_LISTEN"));
}

#[test]
fn unknown_file_keys_are_errors_naming_the_key_and_the_file() {
    let dir = temp_dir("typo");
    let file = dir.path().join("balancer.toml");
    std::fs::write(&file, "[pools.dynamic]\nalgoritm = \"random\"\n").unwrap();
    let out = run(
        &["--check-config"],
        &[("BALANCER_CONFIG", file.to_str().unwrap())],
    );
    assert_eq!(out.status.code(), Some(2));
    let err = text(&out.stderr);
    assert!(
        err.contains("algoritm") && err.contains(file.to_str().unwrap()),
        "{err}"
    );
    assert!(
        err.contains("expected one of") && err.contains("`algorithm`"),
        "{err}"
    );

    std::fs::write(&file, "[timeouts]\nconect = \"1s\"\n").unwrap();
    let out = run(
        &["--check-config"],
        &[("BALANCER_CONFIG", file.to_str().unwrap())],
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("conect"));
}

#[test]
fn semantic_errors_name_the_field_and_its_source() {
    let dir = temp_dir("semantic");
    let file = dir.path().join("balancer.toml");
    let cases = [
        (
            "[[routes]]\npath = \"/\"\npool = \"nope\"\n",
            "routes[0].pool",
        ),
        (
            "[pools.dynamic]\nmembers = [\"a:1*0\", \"b:2*0\"]\n",
            "weight above 0",
        ),
        ("[pools.extra]\nmembers = []\n", "pools.extra.members"),
        (
            "listen = \"127.0.0.1:9000\"\nadmin_listen = \"127.0.0.1:9000\"\n",
            "admin_listen",
        ),
        (
            "[pools.dynamic]\nalgorithm = \"header-hash\"\n",
            "hash_header",
        ),
    ];
    for (content, needle) in cases {
        std::fs::write(&file, content).unwrap();
        let out = run(
            &["--check-config"],
            &[("BALANCER_CONFIG", file.to_str().unwrap())],
        );
        let err = text(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{content}: {err}");
        assert!(
            err.contains(needle),
            "{content}: expected {needle:?} in {err}"
        );
    }
    // A head limit out of range is refused, not rounded.
    for (value, origin) in [("512B", "file"), ("2MiB", "file")] {
        std::fs::write(&file, format!("[limits]\nmax_header_bytes = \"{value}\"\n")).unwrap();
        let out = run(
            &["--check-config"],
            &[("BALANCER_CONFIG", file.to_str().unwrap())],
        );
        let err = text(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{value}: {err}");
        assert!(
            err.contains("limits.max_header_bytes")
                && err.contains(origin)
                && err.contains("1KiB to 1MiB"),
            "{value}: {err}"
        );
    }
    let out = run(
        &["--check-config"],
        &[("BALANCER_MAX_HEADER_BYTES", "1000B")],
    );
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("BALANCER_MAX_HEADER_BYTES"), "{err}");
    for edge in ["1KiB", "1MiB"] {
        let out = run(&["--check-config"], &[("BALANCER_MAX_HEADER_BYTES", edge)]);
        assert_eq!(out.status.code(), Some(0), "{edge}: {}", text(&out.stderr));
    }
    let out = run(
        &["--check-config"],
        &[("BALANCER_CONFIG", "/nonexistent/balancer.toml")],
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("/nonexistent/balancer.toml"));
}

#[test]
fn default_template_documents_every_env_var_and_parses() {
    let out = run(&["--print-default-config"], &[]);
    assert!(out.status.success());
    let t = text(&out.stdout);
    for var in [
        "BALANCER_LISTEN",
        "STATIC_BACKEND",
        "DYNAMIC_BACKEND",
        "BALANCER_DYNAMIC_STICKY",
        "BALANCER_CONNECT_TIMEOUT",
    ] {
        assert!(t.contains(var), "template lacks {var}");
    }
    // Every line is a comment or a table header, so the template itself is a valid config.
    let dir = temp_dir("template");
    let file = dir.path().join("balancer.toml");
    std::fs::write(&file, &t).unwrap();
    let out = run(
        &["--check-config"],
        &[("BALANCER_CONFIG", file.to_str().unwrap())],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
}

#[test]
fn out_of_range_values_are_refused_naming_the_key_the_value_and_the_range() {
    let cases = [
        (
            "discovery_interval = \"100ms\"\n",
            ["key discovery_interval", "100ms", "at least 250ms"],
        ),
        (
            "[pools.dynamic]\nretries = 11\n",
            ["key pools.dynamic.retries", "11", "from 0 to 10"],
        ),
        (
            "[pools.static.health]\ninterval = \"50ms\"\n",
            ["key pools.static.health.interval", "50ms", "at least 100ms"],
        ),
        (
            "[pools.static.health]\nrise = 0\n",
            ["key pools.static.health.rise", "0", "at least 1"],
        ),
        (
            "[pools.dynamic.health]\nfall = 0\n",
            ["key pools.dynamic.health.fall", "0", "at least 1"],
        ),
    ];
    for (content, needles) in cases {
        let (code, err, path) = check_file("ranges", content);
        assert_eq!(code, Some(2), "{content}: {err}");
        for needle in needles.iter().chain([&path.as_str()]) {
            assert!(
                err.contains(needle),
                "{content}: expected {needle:?} in {err}"
            );
        }
        assert!(!names_an_internal_path(&err), "{err}");
    }
    let out = run(
        &["--check-config"],
        &[("BALANCER_DISCOVERY_INTERVAL", "200ms")],
    );
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("BALANCER_DISCOVERY_INTERVAL=\"200ms\" (environment)")
            && err.contains("at least 250ms"),
        "{err}"
    );
    // The bounds themselves are in range.
    let (code, err, _) = check_file(
        "ranges-edges",
        "discovery_interval = \"250ms\"\n[pools.dynamic]\nretries = 10\n\
         [pools.dynamic.health]\ninterval = \"100ms\"\nrise = 1\nfall = 1\n",
    );
    assert_eq!(code, Some(0), "{err}");
}

#[test]
fn max_connections_out_of_range_is_refused_naming_the_key_or_variable_and_the_range() {
    for value in ["0", "1000001"] {
        let (code, err, path) = check_file(
            "max-conns",
            &format!("[limits]\nmax_connections = {value}\n"),
        );
        assert_eq!(code, Some(2), "{value}: {err}");
        for needle in [
            "key limits.max_connections",
            value,
            "from 1 to 1000000",
            &path,
        ] {
            assert!(
                err.contains(needle),
                "{value}: expected {needle:?} in {err}"
            );
        }
    }
    let out = run(&["--check-config"], &[("BALANCER_MAX_CONNECTIONS", "0")]);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("BALANCER_MAX_CONNECTIONS=\"0\" (environment)")
            && err.contains("from 1 to 1000000"),
        "{err}"
    );
    let out = run(&["--check-config"], &[("BALANCER_MAX_CONNECTIONS", "many")]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("BALANCER_MAX_CONNECTIONS"),
        "{}",
        text(&out.stderr)
    );
    for edge in ["1", "1000000"] {
        let out = run(&["--check-config"], &[("BALANCER_MAX_CONNECTIONS", edge)]);
        assert_eq!(out.status.code(), Some(0), "{edge}: {}", text(&out.stderr));
        assert!(
            text(&out.stdout).contains(&format!("limits.max_connections = {edge}")),
            "{}",
            text(&out.stdout)
        );
    }
}
