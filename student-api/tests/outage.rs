//! The PostgreSQL store when the database goes away: every roster request answers 503 with
//! the reason while `/healthz` stays up, and the service recovers by itself, with nothing
//! acknowledged lost, when the database is back. Each test has a server of its own to stop.

// Helpers outside #[test] fns panic on setup failure too: that is the point in tests.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::{Duration, Instant};

use common::pg::{self, PgServer, TestDb};
use common::{Server, TestStore, client, start, valid_student};
use serde_json::Value;

/// A private server, a database on it, and a config with a short database timeout.
fn setup(tag: &str) -> Option<(PgServer, TestDb, student_api::Config)> {
    let server = pg::own_server()
        .map_err(|reason| pg::unavailable(&reason))
        .ok()?;
    let db = TestDb::create(&server.url("postgres"), tag);
    let store = TestStore::new(common::Kind::File, tag)?;
    let mut cfg = store.config("api-a");
    cfg.database_url = Some(db.url.parse().unwrap());
    cfg.database_timeout = Duration::from_secs(1);
    Some((server, db, cfg))
}

async fn post(srv: &Server, n: usize) -> reqwest::Response {
    client()
        .post(format!("{}/api/student", srv.url))
        .json(&valid_student(n))
        .send()
        .await
        .unwrap()
}

async fn get(srv: &Server, path: &str) -> reqwest::Response {
    client()
        .get(format!("{}{path}", srv.url))
        .send()
        .await
        .unwrap()
}

/// Asserts the README's 503: `{"error":"storage unavailable","message":...}`, and returns
/// the message.
async fn assert_unavailable(res: reqwest::Response, what: &str) -> String {
    assert_eq!(res.status(), 503, "{what}");
    assert_eq!(res.headers()["content-type"], "application/json", "{what}");
    assert_eq!(res.headers()["x-instance"], "api-a", "{what}");
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["error"], "storage unavailable", "{what}: {body}");
    let message = body["message"].as_str().unwrap_or_default().to_owned();
    assert!(!message.is_empty(), "{what}: {body}");
    message
}

/// Polls POST until it is stored again; returns the new student's id.
async fn post_until_stored(srv: &Server) -> String {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let res = post(srv, 2).await;
        if res.status() == 201 {
            let body: Value = res.json().await.unwrap();
            return body["id"].as_str().unwrap().to_owned();
        }
        assert_eq!(res.status(), 503);
        assert!(Instant::now() < deadline, "never recovered");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn assert_found(srv: &Server, id: &str) {
    let res = get(srv, &format!("/api/student/{id}")).await;
    assert_eq!(res.status(), 200, "{id}");
}

#[tokio::test]
async fn a_stopped_database_is_503_with_a_clear_body_and_recovered_from_without_a_restart() {
    let Some((server, db, cfg)) = setup("stopped") else {
        return;
    };
    let srv = start(cfg).await;
    let res = post(&srv, 1).await;
    assert_eq!(res.status(), 201);
    let before: Value = res.json().await.unwrap();
    let before = before["id"].as_str().unwrap().to_owned();

    server.stop();
    let message = assert_unavailable(post(&srv, 1).await, "POST").await;
    assert!(message.contains("database"), "{message}");
    assert_unavailable(get(&srv, "/api/student").await, "GET").await;
    assert_unavailable(get(&srv, &format!("/api/student/{before}")).await, "GET id").await;
    let health = get(&srv, "/healthz").await;
    assert_eq!(
        health.status(),
        200,
        "liveness does not follow the database"
    );

    server.restart().unwrap();
    let after = post_until_stored(&srv).await;
    assert_found(&srv, &before).await;
    assert_found(&srv, &after).await;
    let res = get(&srv, "/api/student?count=3").await;
    assert_eq!(res.status(), 200);
    let ids = pg::stored_ids(&db.url).await;
    assert!(ids.contains(&before) && ids.contains(&after));
    assert_eq!(
        ids.len(),
        52,
        "50 seeded + 2 posted, none while it was down"
    );
}

#[tokio::test]
async fn a_frozen_database_times_out_into_503_and_is_recovered_from_when_it_thaws() {
    let Some((server, db, cfg)) = setup("frozen") else {
        return;
    };
    let srv = start(cfg).await;
    assert_eq!(get(&srv, "/api/student").await.status(), 200);

    // SIGSTOP: connections hang instead of being refused, as with a cut link.
    server.pause();
    let message = assert_unavailable(post(&srv, 1).await, "POST").await;
    assert!(message.contains("within 1s"), "{message}");
    assert_unavailable(get(&srv, "/api/student").await, "GET").await;
    assert_eq!(get(&srv, "/healthz").await.status(), 200);

    server.resume();
    let id = post_until_stored(&srv).await;
    assert_found(&srv, &id).await;
    assert!(pg::stored_ids(&db.url).await.contains(&id));
}

#[tokio::test]
async fn the_service_starts_without_its_database_and_seeds_it_once_it_is_up() {
    let Some((server, db, cfg)) = setup("late") else {
        return;
    };
    server.stop();
    let srv = start(cfg).await;
    assert_unavailable(get(&srv, "/api/student").await, "GET").await;
    assert_eq!(get(&srv, "/healthz").await.status(), 200);

    server.restart().unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let res = get(&srv, "/api/student?count=100").await;
        if res.status() == 200 {
            break;
        }
        assert_eq!(res.status(), 503);
        assert!(Instant::now() < deadline, "never recovered");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        pg::stored_ids(&db.url).await.len(),
        50,
        "seeded on first contact"
    );
}
