//! Test helpers: the site's config and in-process server, and its [`BIN`] for the tests both
//! apps share (`apps-shared/tests/each_app/`, included with `#[path]`).

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::time::Duration;

use static_site::{AppState, Config};

#[path = "../../../apps-shared/tests/each_app/mod.rs"]
mod shared;
pub(crate) use shared::*;

/// The `static-site` binary, for the shared tests.
pub(crate) const BIN: Bin = Bin {
    exe: env!("CARGO_BIN_EXE_static-site"),
    listen_env: "STATIC_SITE_LISTEN",
    config_env: "STATIC_SITE_CONFIG",
    own_env: no_files,
    serves: "/",
    logged: "/healthz",
    pool: "static",
    help_vars: &[],
};

fn no_files(_: &Path) -> Vec<(&'static str, PathBuf)> {
    Vec::new()
}

/// A config built in code (tests never touch the process environment).
pub(crate) fn config(instance: &str) -> Config {
    Config {
        listen: "127.0.0.1:0".parse().unwrap(),
        drain_grace: Duration::from_millis(100),
        instance_name: Some(instance.to_owned()),
        register_url: None,
        admin_token: None,
        register_advertise: None,
        register_interval: Duration::from_secs(2),
        load_capacity: 100,
        lab_delay: Duration::ZERO,
        lab_cpu: Duration::ZERO,
        lab_error_rate: 0.0,
        lab_unhealthy: false,
        sticky_cookie: "lb_static".to_owned(),
        dashboard_url: "http://localhost:1936/".to_owned(),
    }
}

/// An in-process server; dropping `stop` (or sending on it) starts draining.
pub(crate) type Server = shared::Server<static_site::Error>;

/// Starts the real router on 127.0.0.1:0 with `config`.
pub(crate) async fn start(config: Config) -> Server {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let state = AppState::from_config(&config).unwrap();
    Server::spawn(listener, |listener, stop| {
        static_site::serve(listener, state, config.drain_grace, async {
            let _ = stop.await;
        })
    })
}
