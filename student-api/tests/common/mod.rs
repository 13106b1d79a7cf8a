//! Test helpers: the API's config and in-process server, and its [`BIN`] for the tests both
//! apps share (`apps-shared/tests/`, included with `#[path]` as the apps' code is).

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::time::Duration;

use student_api::{AppState, Config};

#[path = "../../../apps-shared/tests/mod.rs"]
mod shared;
pub use shared::*;

/// The `student-api` binary, for the shared tests.
pub const BIN: Bin = Bin {
    exe: env!("CARGO_BIN_EXE_student-api"),
    listen_env: "STUDENT_API_LISTEN",
    config_env: "STUDENT_API_CONFIG",
    own_env: data_in,
    serves: "/api/student",
    logged: "/api/student?count=2",
    pool: "dynamic",
    help_vars: &["STUDENT_DATA"],
};

fn data_in(dir: &Path) -> Vec<(&'static str, PathBuf)> {
    vec![("STUDENT_DATA", dir.join("s.jsonl"))]
}

/// The binary with a clean, explicit environment, its roster in `dir`.
pub fn command(dir: &TempDir, instance: &str, grace: &str) -> std::process::Command {
    BIN.command(&dir.0, instance, grace)
}

/// A config built in code (tests never touch the process environment).
pub fn config(data: &Path, instance: &str) -> Config {
    Config {
        listen: "127.0.0.1:0".parse().unwrap(),
        data: data.to_owned(),
        drain_grace: Duration::from_millis(100),
        instance_name: Some(instance.to_owned()),
        register_url: None,
        admin_token: None,
        register_advertise: None,
        register_interval: Duration::from_secs(2),
    }
}

/// An in-process server; dropping `stop` (or sending on it) starts draining.
pub type Server = shared::Server<student_api::Error>;

/// Starts the real router on 127.0.0.1:0 with `config`.
pub async fn start(config: Config) -> Server {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let grace = config.drain_grace;
    let state = tokio::task::spawn_blocking(move || AppState::new(&config))
        .await
        .unwrap()
        .unwrap();
    Server::spawn(listener, |listener, stop| {
        student_api::serve(listener, state, grace, async {
            let _ = stop.await;
        })
    })
}

/// A student body that passes validation.
pub fn valid_student(n: usize) -> serde_json::Value {
    serde_json::json!({
        "firstName": format!("Test{n}"),
        "lastName": "Student",
        "gender": "other",
        "birthday": "2001-02-03",
        "email": format!("test{n}@example.org"),
        "city": "Lyon",
    })
}
