//! Test helpers: the API's config and in-process server, the two stores a roster test runs
//! against ([`TestStore`], [`for_each_store!`]), and its [`BIN`] for the tests both apps
//! share (`apps-shared/tests/each_app/`, included with `#[path]`).

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::time::Duration;

use student_api::{AppState, Config};

#[path = "../../../apps-shared/tests/each_app/mod.rs"]
mod shared;
pub(crate) use shared::*;

pub(crate) mod pg;

/// The `student-api` binary, for the shared tests.
pub(crate) const BIN: Bin = Bin {
    exe: env!("CARGO_BIN_EXE_student-api"),
    listen_env: "STUDENT_API_LISTEN",
    config_env: "STUDENT_API_CONFIG",
    own_env: data_in,
    serves: "/api/student",
    logged: "/api/student?count=2",
    pool: "dynamic",
    help_vars: &[
        "STUDENT_DATA",
        "STUDENT_DATABASE_URL",
        "STUDENT_DATABASE_TIMEOUT",
    ],
};

fn data_in(dir: &Path) -> Vec<(&'static str, PathBuf)> {
    vec![
        ("STUDENT_DATA", dir.join("s.jsonl")),
        // The file store unless a test asks for the database.
        ("STUDENT_DATABASE_URL", PathBuf::new()),
        ("STUDENT_DATABASE_TIMEOUT", PathBuf::new()),
    ]
}

/// The binary with a clean, explicit environment, its roster in `dir`.
pub(crate) fn command(dir: &TempDir, instance: &str, grace: &str) -> std::process::Command {
    BIN.command(dir.path(), instance, grace)
}

/// A config built in code (tests never touch the process environment).
pub(crate) fn config(data: &Path, instance: &str) -> Config {
    Config {
        listen: "127.0.0.1:0".parse().unwrap(),
        data: data.to_owned(),
        database_url: None,
        database_timeout: Duration::from_secs(5),
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
    }
}

/// An in-process server; dropping `stop` (or sending on it) starts draining.
pub(crate) type Server = shared::Server<student_api::Error>;

/// Starts the real router on 127.0.0.1:0 with `config`.
pub(crate) async fn start(config: Config) -> Server {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let grace = config.drain_grace;
    let state = AppState::open(&config).await.unwrap();
    Server::spawn(listener, |listener, stop| {
        student_api::serve(listener, state, grace, async {
            let _ = stop.await;
        })
    })
}

/// A student body that passes validation.
pub(crate) fn valid_student(n: usize) -> serde_json::Value {
    serde_json::json!({
        "firstName": format!("Test{n}"),
        "lastName": "Student",
        "gender": "other",
        "birthday": "2001-02-03",
        "email": format!("test{n}@example.org"),
        "city": "Lyon",
    })
}

/// The two places a roster can live.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    /// The JSON Lines file.
    File,
    /// PostgreSQL (`STUDENT_DATABASE_URL`).
    Postgres,
}

/// The storage of one roster test: a file in a private temp dir, or a private database.
pub(crate) struct TestStore {
    pub kind: Kind,
    pub dir: TempDir,
    pub db: Option<pg::TestDb>,
}

impl TestStore {
    /// A fresh empty store; `None` when PostgreSQL is unavailable here (the reason is
    /// printed; under `CI=true` that fails instead).
    pub(crate) fn new(kind: Kind, tag: &str) -> Option<Self> {
        let db = match kind {
            Kind::File => None,
            Kind::Postgres => Some(pg::TestDb::create(pg::shared_admin_url()?, tag)),
        };
        Some(Self {
            kind,
            dir: TempDir::new(tag),
            db,
        })
    }

    /// The roster file (used by the file store only).
    pub(crate) fn file(&self) -> PathBuf {
        self.dir.file("s.jsonl")
    }

    /// A config for an instance named `instance` using this store.
    pub(crate) fn config(&self, instance: &str) -> Config {
        let mut cfg = config(&self.file(), instance);
        cfg.database_url = self.db.as_ref().map(|db| db.url.parse().unwrap());
        cfg
    }

    /// Every stored id, read behind the service's back (the file's lines, or the table).
    /// For the file, also checks that every line parses and the last one is complete.
    pub(crate) async fn stored_ids(&self) -> Vec<String> {
        match &self.db {
            Some(db) => pg::stored_ids(&db.url).await,
            None => {
                let text = std::fs::read_to_string(self.file()).unwrap();
                assert!(text.ends_with('\n'), "last line complete");
                text.lines()
                    .map(|line| {
                        let v: serde_json::Value =
                            serde_json::from_str(line).expect("every line parses");
                        v["id"].as_str().unwrap().to_owned()
                    })
                    .collect()
            }
        }
    }
}

/// Runs each named `async fn(TestStore)` twice, as `file::<name>` and `postgres::<name>`,
/// each on a fresh store of that kind.
#[allow(unused_macros)] // not every test binary has roster tests
macro_rules! for_each_store {
    ($($test:ident),* $(,)?) => {
        mod file {
            $(
                #[tokio::test]
                async fn $test() {
                    let store = crate::common::TestStore::new(
                        crate::common::Kind::File,
                        stringify!($test),
                    );
                    super::$test(store.unwrap()).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test]
                async fn $test() {
                    let store = crate::common::TestStore::new(
                        crate::common::Kind::Postgres,
                        stringify!($test),
                    );
                    let Some(store) = store else { return };
                    super::$test(store).await;
                }
            )*
        }
    };
}
#[allow(unused_imports)]
pub(crate) use for_each_store;
