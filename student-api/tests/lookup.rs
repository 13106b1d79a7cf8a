//! `GET /api/student/{id}`: one stored student by id, found by every replica sharing the
//! roster (file or database: each test runs against both), and a JSON 404 for anything else.

// Helpers outside #[test] fns panic on setup failure too: that is the point in tests.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{TestStore, client, for_each_store, start, valid_student};
use serde_json::Value;

for_each_store! {
    a_student_posted_to_one_replica_is_found_by_id_on_another,
    an_unknown_id_is_a_json_404_naming_it,
}

async fn a_student_posted_to_one_replica_is_found_by_id_on_another(store: TestStore) {
    let a = start(store.config("api-a")).await;
    let b = start(store.config("api-b")).await;

    let res = client()
        .post(format!("{}/api/student", a.url))
        .json(&valid_student(7))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201);
    let created: Value = res.json().await.unwrap();
    let id = created["id"].as_str().unwrap().to_owned();

    for (srv, name) in [(&a, "api-a"), (&b, "api-b")] {
        let res = client()
            .get(format!("{}/api/student/{id}", srv.url))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200, "{name}");
        assert_eq!(res.headers()["x-instance"], name);
        assert_eq!(res.headers()["cache-control"], "no-store");
        let found: Value = res.json().await.unwrap();
        assert_eq!(found, created, "{name} returns the stored record");
    }
}

async fn an_unknown_id_is_a_json_404_naming_it(store: TestStore) {
    let srv = start(store.config("api-a")).await;
    for id in ["0123456789abcdef", "not-an-id"] {
        let res = client()
            .get(format!("{}/api/student/{id}", srv.url))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 404, "{id}");
        assert_eq!(res.headers()["content-type"], "application/json");
        let body: Value = res.json().await.unwrap();
        assert_eq!(body["error"], "student not found");
        assert_eq!(body["id"], id);
    }
    let res = client()
        .post(format!("{}/api/student/0123456789abcdef", srv.url))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 405, "lookup is read-only");
}
