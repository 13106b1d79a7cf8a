//! The real `student-api` binary: startup line, SIGTERM draining, `--healthcheck`, bad config.
//! The tests are the ones every app binary must pass, shared with the other app.

// Helpers outside #[test] fns panic on setup failure too: that is the point in tests.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

#[path = "../../apps-shared/tests/each_app/binary.rs"]
mod binary;

use common::pg::{self, TestDb};
use common::{BIN, TempDir, client, command, spawn};
use serde_json::Value;

/// A bad `STUDENT_DATABASE_URL` (wrong scheme, unparseable, no host, TLS required) stops
/// start-up with exit 1, naming the variable, the value with its password masked, and what
/// is expected.
#[test]
fn a_bad_database_url_stops_startup_naming_the_variable_and_hiding_the_password() {
    let dir = TempDir::new("bin-dburl");
    for (value, masked) in [
        ("mysql://lab:s3cret@db/lab", "mysql://lab:***@db/lab"),
        (
            "postgres://lab:s3cret@db:port/lab",
            "postgres://lab:***@db:port/lab",
        ),
        ("postgres://:s3cret@/lab", "postgres://:***@/lab"),
        (
            "postgresql://lab:s3cret@db/lab?sslmode=require",
            "postgresql://lab:***@db/lab?sslmode=require",
        ),
    ] {
        let out = command(&dir, "x", "0s")
            .env("STUDENT_DATABASE_URL", value)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(1), "{value}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("STUDENT_DATABASE_URL"), "{err}");
        assert!(err.contains(masked), "{err}");
        assert!(err.contains("postgres://user:password@host"), "{err}");
        assert!(!err.contains("s3cret"), "{err}");
        assert!(out.stdout.is_empty(), "never started listening");
    }
}

/// The same URL from the TOML file (`database_url`): the error quotes the file's line, with
/// the password masked there too.
#[test]
fn a_bad_database_url_in_the_config_file_is_refused_without_showing_the_password() {
    let dir = TempDir::new("bin-dburl-toml");
    let file = dir.file("api.toml");
    std::fs::write(&file, "database_url = \"mysql://lab:s3cret@db/lab\"\n").unwrap();
    let out = command(&dir, "x", "0s")
        .env(BIN.config_env, &file)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("database_url"), "{err}");
    assert!(err.contains("mysql://lab:***@db/lab"), "{err}");
    assert!(!err.contains("s3cret"), "{err}");
}

/// The real binary on a real database: it seeds the table, serves it and stores a POST.
#[tokio::test]
async fn the_binary_serves_and_stores_students_in_postgres() {
    let Some(admin) = pg::shared_admin_url() else {
        return;
    };
    let db = TestDb::create(admin, "bin");
    let dir = TempDir::new("bin-pg");
    let mut cmd = command(&dir, "bin-pg", "0s");
    cmd.env("STUDENT_DATABASE_URL", &db.url);
    let proc = spawn(cmd);
    let url = format!("http://{}/api/student", proc.addr);
    let res = client().get(format!("{url}?count=3")).send().await.unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(
        res.json::<Value>().await.unwrap().as_array().unwrap().len(),
        3
    );
    let res = client()
        .post(&url)
        .json(&common::valid_student(4))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201);
    let id = res.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let ids = pg::stored_ids(&db.url).await;
    assert_eq!(ids.len(), 51);
    assert!(ids.contains(&id));
    assert!(
        !dir.file("s.jsonl").exists(),
        "the roster file is not used with a database"
    );
    drop(proc);
}
