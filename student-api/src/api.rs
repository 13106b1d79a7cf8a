//! `/api/student`: a random selection on GET, a validated durable append on POST, and one
//! student by id on `GET /api/student/{id}`.

use std::collections::HashMap;

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use crate::generate;
use crate::store::{Store, StoreError};
use crate::student::validate;
use crate::web::json_response as error;

/// Students returned when `count` is absent.
pub const DEFAULT_COUNT: usize = 5;
/// Largest accepted `count`.
pub const MAX_COUNT: usize = 100;

/// `GET /api/student?count=N`: `N` students picked at random (1..=100, default 5).
pub async fn list(
    State(store): State<Store>,
    query: Result<Query<HashMap<String, String>>, QueryRejection>,
) -> Response {
    let count = match query {
        Ok(Query(q)) => parse_count(q.get("count").map(String::as_str)),
        Err(_) => Err(()),
    };
    let Ok(count) = count else {
        return error(
            StatusCode::BAD_REQUEST,
            json!({
                "error": "invalid query parameter",
                "parameter": "count",
                "message": format!("count must be an integer from 1 to {MAX_COUNT}"),
            }),
        );
    };
    let students = match store.sample(count).await {
        Ok(students) => students,
        Err(err) => return store_error(&err),
    };
    let mut res = Json(students).into_response();
    // Every poll must reach a replica: a cached answer would hide the balancing.
    res.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    res
}

/// `GET /api/student/{id}`: the stored student with that id, or a JSON 404. Sees what other
/// replicas stored, so a student posted anywhere is found everywhere (the lab page uses this
/// to show that every replica sees a new student).
pub async fn get_one(State(store): State<Store>, Path(id): Path<String>) -> Response {
    match store.find(&id).await {
        Ok(Some(student)) => {
            let mut res = Json(student).into_response();
            res.headers_mut()
                .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
            res
        }
        Ok(None) => error(
            StatusCode::NOT_FOUND,
            json!({"error": "student not found", "id": id}),
        ),
        Err(err) => store_error(&err),
    }
}

/// 503 with the reason when the storage is unavailable; 500 without details for a bug here.
fn store_error(err: &StoreError) -> Response {
    if err.is_unavailable() {
        // The store logs an outage once; per request this is detail.
        tracing::debug!("read refused: {err}");
        return unavailable(err);
    }
    tracing::error!("roster read task failed: {err}");
    error(
        StatusCode::INTERNAL_SERVER_ERROR,
        json!({"error": "internal error"}),
    )
}

fn unavailable(err: &StoreError) -> Response {
    error(
        StatusCode::SERVICE_UNAVAILABLE,
        json!({"error": "storage unavailable", "message": err.to_string()}),
    )
}

fn parse_count(raw: Option<&str>) -> Result<usize, ()> {
    match raw {
        None => Ok(DEFAULT_COUNT),
        Some(s) => match s.parse::<usize>() {
            Ok(n) if (1..=MAX_COUNT).contains(&n) => Ok(n),
            _ => Err(()),
        },
    }
}

/// `POST /api/student`: validate, append durably, answer 201 with the stored record.
pub async fn create(
    State(store): State<Store>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    if !is_json(&headers) {
        return error(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            json!({"error": "unsupported media type", "message": "expected Content-Type: application/json"}),
        );
    }
    let body = match body {
        Ok(b) => b,
        Err(rej) => return error(rej.status(), json!({"error": rej.body_text()})),
    };
    let value: Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                json!({"error": "invalid JSON", "message": e.to_string()}),
            );
        }
    };
    let Value::Object(obj) = value else {
        return invalid(json!({"body": "must be a JSON object"}));
    };
    let student = match validate(&obj, generate::new_id()) {
        Ok(s) => s,
        Err(fields) => return invalid(json!(fields)),
    };
    match store.append(&student).await {
        Ok(()) => {
            tracing::info!(id = %student.id, "student stored");
            (StatusCode::CREATED, Json(student)).into_response()
        }
        Err(err) => {
            tracing::error!("POST refused: {err}");
            unavailable(&err)
        }
    }
}

fn invalid(fields: Value) -> Response {
    error(
        StatusCode::UNPROCESSABLE_ENTITY,
        json!({"error": "validation failed", "fields": fields}),
    )
}

/// `application/json`, with or without parameters such as `charset`.
fn is_json(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|m| m.trim().eq_ignore_ascii_case("application/json"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn count_bounds() {
        assert_eq!(parse_count(None), Ok(DEFAULT_COUNT));
        assert_eq!(parse_count(Some("1")), Ok(1));
        assert_eq!(parse_count(Some("100")), Ok(100));
        for bad in ["0", "101", "abc", "", "-1", "1.5"] {
            assert_eq!(parse_count(Some(bad)), Err(()), "{bad}");
        }
    }
}
