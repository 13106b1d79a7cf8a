//! The HTTP contract of the student API, through a real client against the real router.
//! Every test that touches the roster runs against both stores (`file::` and `postgres::`).

// Helpers outside #[test] fns panic on setup failure too: that is the point in tests.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::HashSet;

use common::{TempDir, TestStore, client, config, for_each_store, start, valid_student};
use serde_json::Value;

const KEYS: [&str; 7] = [
    "id",
    "firstName",
    "lastName",
    "gender",
    "birthday",
    "email",
    "city",
];

for_each_store! {
    get_returns_an_array_of_five_students_by_default,
    count_is_honoured_from_1_to_100,
    selections_change_between_calls,
    post_rejects_wrong_content_type_bad_json_and_invalid_fields,
    post_is_durable_and_visible_from_a_second_instance,
    concurrent_posts_from_two_instances_lose_and_tear_nothing,
    replicas_starting_together_seed_exactly_once,
    healthz_turns_draining_after_the_signal_while_still_serving,
}

async fn get_returns_an_array_of_five_students_by_default(store: TestStore) {
    let srv = start(store.config("api-a")).await;
    for path in ["/api/student", "/api/student/"] {
        let res = client()
            .get(format!("{}{path}", srv.url))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200);
        assert_eq!(res.headers()["content-type"], "application/json");
        let body: Value = res.json().await.unwrap();
        let arr = body.as_array().expect("an array");
        assert_eq!(arr.len(), 5);
        for s in arr {
            for k in KEYS {
                assert!(s[k].is_string(), "{k} missing in {s}");
            }
        }
    }
}

async fn count_is_honoured_from_1_to_100(store: TestStore) {
    let srv = start(store.config("api-a")).await;
    for n in [1, 7, 50, 100] {
        let body: Value = client()
            .get(format!("{}/api/student?count={n}", srv.url))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(body.as_array().unwrap().len(), n);
    }
}

async fn selections_change_between_calls(store: TestStore) {
    let srv = start(store.config("api-a")).await;
    let mut seen = HashSet::new();
    for _ in 0..5 {
        let body: Value = client()
            .get(format!("{}/api/student", srv.url))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let ids: Vec<String> = body
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["id"].to_string())
            .collect();
        seen.insert(ids);
    }
    assert!(seen.len() > 1, "five polls gave the same selection");
}

#[tokio::test]
async fn bad_count_is_400_naming_count() {
    let dir = TempDir::new("badcount");
    let srv = start(config(&dir.file("s.jsonl"), "api-a")).await;
    for bad in ["0", "101", "abc", "-3", ""] {
        let res = client()
            .get(format!("{}/api/student?count={bad}", srv.url))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 400, "count={bad}");
        let body: Value = res.json().await.unwrap();
        assert_eq!(body["parameter"], "count");
        assert!(body["message"].as_str().unwrap().contains("count"));
    }
}

#[tokio::test]
async fn unknown_path_is_json_404_and_wrong_method_is_405_with_allow() {
    let dir = TempDir::new("404");
    let srv = start(config(&dir.file("s.jsonl"), "api-a")).await;
    let res = client()
        .get(format!("{}/nope", srv.url))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 404);
    assert_eq!(res.headers()["x-instance"], "api-a");
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["error"], "not found");

    let res = client()
        .delete(format!("{}/api/student", srv.url))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 405);
    let allow = res.headers()["allow"].to_str().unwrap().to_owned();
    assert!(allow.contains("GET") && allow.contains("POST"), "{allow}");
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["error"], "method not allowed");
}

#[tokio::test]
async fn every_response_carries_x_instance() {
    let dir = TempDir::new("xi");
    let srv = start(config(&dir.file("s.jsonl"), "replica-7")).await;
    for path in ["/api/student", "/healthz", "/missing"] {
        let res = client()
            .get(format!("{}{path}", srv.url))
            .send()
            .await
            .unwrap();
        assert_eq!(res.headers()["x-instance"], "replica-7", "{path}");
    }
}

async fn post_rejects_wrong_content_type_bad_json_and_invalid_fields(store: TestStore) {
    let srv = start(store.config("api-a")).await;
    let url = format!("{}/api/student", srv.url);
    let post = |ct: &'static str, body: &'static str| {
        client()
            .post(&url)
            .header("content-type", ct)
            .body(body)
            .send()
    };

    let res = post("text/plain", "{}").await.unwrap();
    assert_eq!(res.status(), 415);
    assert!(res.json::<Value>().await.unwrap()["error"].is_string());

    let res = post("application/json", "{not json").await.unwrap();
    assert_eq!(res.status(), 400);
    assert_eq!(res.json::<Value>().await.unwrap()["error"], "invalid JSON");

    let res = post("application/json", "[1,2]").await.unwrap();
    assert_eq!(res.status(), 422);

    let res = post(
        "application/json; charset=utf-8",
        r#"{"firstName":"","lastName":"X","gender":"robot","birthday":"2001-13-01","email":"nope","id":"1"}"#,
    )
    .await
    .unwrap();
    assert_eq!(res.status(), 422);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["error"], "validation failed");
    let fields = body["fields"].as_object().unwrap();
    for f in ["firstName", "gender", "birthday", "email", "city", "id"] {
        assert!(fields.contains_key(f), "{f} not listed: {body}");
    }
    assert!(!fields.contains_key("lastName"));
    assert_eq!(fields["email"], "must be a valid email address");
}

async fn post_is_durable_and_visible_from_a_second_instance(store: TestStore) {
    let a = start(store.config("api-a")).await;
    let b = start(store.config("api-b")).await;
    let res = client()
        .post(format!("{}/api/student", a.url))
        .json(&valid_student(1))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201);
    let stored: Value = res.json().await.unwrap();
    let id = stored["id"].as_str().unwrap().to_owned();
    assert_eq!(stored["firstName"], "Test1");

    // Stored (on disk, or committed) before the 201 was sent.
    assert!(store.stored_ids().await.contains(&id));

    // B sees it: with 51 students, count=100 always includes every one of them.
    let body: Value = client()
        .get(format!("{}/api/student?count=100", b.url))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(
        body.as_array()
            .unwrap()
            .iter()
            .any(|s| s["id"] == id.as_str())
    );
}

async fn concurrent_posts_from_two_instances_lose_and_tear_nothing(store: TestStore) {
    let a = start(store.config("api-a")).await;
    let b = start(store.config("api-b")).await;
    let http = client();
    let mut tasks = Vec::new();
    for i in 0..100 {
        let url = format!("{}/api/student", if i % 2 == 0 { &a.url } else { &b.url });
        let http = http.clone();
        tasks.push(tokio::spawn(async move {
            let res = http.post(url).json(&valid_student(i)).send().await.unwrap();
            assert_eq!(res.status(), 201);
            res.json::<Value>().await.unwrap()["id"]
                .as_str()
                .unwrap()
                .to_owned()
        }));
    }
    let mut acked = HashSet::new();
    for t in tasks {
        acked.insert(t.await.unwrap());
    }
    assert_eq!(acked.len(), 100, "ids must be distinct");

    let mut ids = HashSet::new();
    for id in store.stored_ids().await {
        assert!(ids.insert(id), "duplicate id");
    }
    assert_eq!(ids.len(), 150, "50 seeded + 100 posted");
    assert!(acked.is_subset(&ids));
}

#[tokio::test]
async fn torn_last_line_is_skipped() {
    let dir = TempDir::new("torn");
    let path = dir.file("s.jsonl");
    let good = r#"{"id":"00000000000000aa","firstName":"Ada","lastName":"L","gender":"female","birthday":"2000-01-01","email":"a@b.co","city":"Paris"}"#;
    std::fs::write(&path, format!("{good}\n{{\"id\":\"torn\",\"first")).unwrap();
    let srv = start(config(&path, "api-a")).await;
    let body: Value = client()
        .get(format!("{}/api/student?count=3", srv.url))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let arr = body.as_array().unwrap();
    assert_eq!(arr.len(), 3);
    assert!(
        arr.iter().all(|s| s["id"] == "00000000000000aa"),
        "only the good record: {body}"
    );

    // The next append terminates the torn line instead of gluing onto it.
    let res = client()
        .post(format!("{}/api/student", srv.url))
        .json(&valid_student(9))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201);
    let text = std::fs::read_to_string(&path).unwrap();
    let last: Value = serde_json::from_str(text.lines().last().unwrap()).unwrap();
    assert_eq!(last["firstName"], "Test9");
}

#[tokio::test]
async fn unwritable_data_dir_serves_generated_students_but_post_is_503() {
    let dir = TempDir::new("nodir");
    // A regular file where the data dir should be: not creatable even for root.
    let blocker = dir.file("not-a-dir");
    std::fs::write(&blocker, "").unwrap();
    let srv = start(config(&blocker.join("students.jsonl"), "api-a")).await;
    let res = client()
        .get(format!("{}/api/student", srv.url))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(
        res.json::<Value>().await.unwrap().as_array().unwrap().len(),
        5
    );
    let res = client()
        .post(format!("{}/api/student", srv.url))
        .json(&valid_student(1))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 503);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["error"], "storage unavailable");
    assert!(
        body["message"].as_str().unwrap().contains("not-a-dir"),
        "{body}"
    );
}

/// Six replicas opening the same empty store at once: 50 students, not 300.
async fn replicas_starting_together_seed_exactly_once(store: TestStore) {
    let opening: Vec<_> = (0..6)
        .map(|i| {
            let cfg = store.config(&format!("api-{i}"));
            tokio::spawn(async move { student_api::AppState::open(&cfg).await.unwrap() })
        })
        .collect();
    for replica in opening {
        replica.await.unwrap();
    }
    assert_eq!(store.stored_ids().await.len(), 50);
}

/// The operator created the table beforehand (empty): still one seeding, not six.
#[tokio::test]
async fn replicas_starting_together_seed_an_existing_empty_table_once() {
    let Some(store) = TestStore::new(common::Kind::Postgres, "empty-table") else {
        return;
    };
    let url = &store.db.as_ref().unwrap().url;
    let (db, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    db.batch_execute(student_api::store::postgres::SCHEMA)
        .await
        .unwrap();
    replicas_starting_together_seed_exactly_once(store).await;
}

async fn healthz_turns_draining_after_the_signal_while_still_serving(store: TestStore) {
    let mut cfg = store.config("api-a");
    cfg.drain_grace = std::time::Duration::from_secs(1);
    let mut srv = start(cfg).await;
    let res = client()
        .get(format!("{}/healthz", srv.url))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.json::<Value>().await.unwrap()["status"], "ok");

    srv.stop.take().unwrap().send(()).unwrap();
    let res = common::healthz_answering(&srv.url, 503, std::time::Duration::from_secs(1)).await;
    assert_eq!(res.json::<Value>().await.unwrap()["status"], "draining");
    let res = client()
        .get(format!("{}/api/student", srv.url))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200, "still serving while draining");

    tokio::time::timeout(std::time::Duration::from_secs(5), srv.task)
        .await
        .expect("stops after the grace period")
        .unwrap()
        .unwrap();
}
