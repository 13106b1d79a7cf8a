//! `/fault`: read the knobs (`GET`, open, like `/healthz` which shows them too) and change them
//! at run time (`PUT`, behind `Authorization: Bearer <BALANCER_ADMIN_TOKEN>`).
//!
//! `PUT` takes any subset of `{"delay_ms": 50, "cpu_ms": 5, "error_rate": 0.2, "unhealthy":
//! false}`; what it leaves out keeps its value, and the answer is the knobs now in force. The
//! body must be JSON (no `Content-Type` needed, so a bare `curl -d` works).
//!
//! Answers: 200 with the knobs; 400 for a body that is not a JSON object; 422 for an unknown
//! field, a wrong type or a value out of range (every problem listed); 401 for a missing or
//! wrong token; 403 when the replica has no `BALANCER_ADMIN_TOKEN`. Without a token nobody can
//! prove they may, so run-time changes are off, as the balancer's own admin actions are; the
//! `LAB_*` variables still work at start, and `GET` still answers.

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::Response;
use serde::Deserialize;
use serde_json::json;

use super::{Faults, Knobs, MAX_CPU_MS, MAX_DELAY_MS};
use crate::web::json_response;

/// A `PUT` body: the knobs to change.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Change {
    delay_ms: Option<u64>,
    cpu_ms: Option<u64>,
    error_rate: Option<f64>,
    unhealthy: Option<bool>,
}

/// `GET /fault`: the knobs in force.
pub async fn show(State(faults): State<Faults>) -> Response {
    json_response(StatusCode::OK, json!(faults.knobs()))
}

/// `PUT /fault`: changes the knobs given in the body (see the module doc).
pub async fn change(State(faults): State<Faults>, headers: HeaderMap, body: Bytes) -> Response {
    if let Some((status, message)) = refusal(&faults, &headers) {
        let mut res = json_response(status, json!({ "error": message }));
        if status == StatusCode::UNAUTHORIZED {
            res.headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        return res;
    }
    let change = match parse(&body) {
        Ok(change) => change,
        Err((status, message)) => return json_response(status, json!({"error": message})),
    };
    let before = faults.knobs();
    let after = match apply(before, &change) {
        Ok(after) => after,
        Err(problems) => {
            return json_response(
                StatusCode::UNPROCESSABLE_ENTITY,
                json!({"error": problems.join("; ")}),
            );
        }
    };
    faults.set(&after);
    if after != before {
        tracing::info!(
            delay_ms = after.delay_ms,
            cpu_ms = after.cpu_ms,
            error_rate = after.error_rate,
            unhealthy = after.unhealthy,
            "fault knobs changed"
        );
    }
    json_response(StatusCode::OK, json!(after))
}

/// Why this request may not change the knobs, if it may not.
fn refusal(faults: &Faults, headers: &HeaderMap) -> Option<(StatusCode, &'static str)> {
    let Some(token) = faults.token() else {
        return Some((
            StatusCode::FORBIDDEN,
            "fault knobs cannot change at run time: this replica has no BALANCER_ADMIN_TOKEN \
             (set it, or use the LAB_* variables at start)",
        ));
    };
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    match given {
        Some(g) if constant_time_eq(g.as_bytes(), token.expose().as_bytes()) => None,
        Some(_) => Some((StatusCode::UNAUTHORIZED, "wrong token")),
        None => Some((
            StatusCode::UNAUTHORIZED,
            "missing `Authorization: Bearer <BALANCER_ADMIN_TOKEN>`",
        )),
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

const USAGE: &str = "send a JSON object with any of delay_ms (0..=60000), cpu_ms (0..=1000), \
                     error_rate (0..=1) and unhealthy (true/false)";

/// 400 when the body is not a JSON object, 422 when it is one we cannot take.
fn parse(body: &[u8]) -> Result<Change, (StatusCode, String)> {
    let value: serde_json::Value = serde_json::from_slice(body).map_err(|e| {
        (
            StatusCode::BAD_REQUEST,
            format!("body is not JSON ({e}): {USAGE}"),
        )
    })?;
    if !value.is_object() {
        return Err((
            StatusCode::BAD_REQUEST,
            format!("body is JSON but not an object: {USAGE}"),
        ));
    }
    serde_json::from_value(value)
        .map_err(|e| (StatusCode::UNPROCESSABLE_ENTITY, format!("{e}: {USAGE}")))
}

/// `knobs` with `change` applied, or every value out of range.
fn apply(knobs: Knobs, change: &Change) -> Result<Knobs, Vec<String>> {
    let mut next = knobs;
    let mut problems = Vec::new();
    if let Some(ms) = change.delay_ms {
        match u32::try_from(ms).ok().filter(|&ms| ms <= MAX_DELAY_MS) {
            Some(ms) => next.delay_ms = ms,
            None => problems.push(format!("delay_ms {ms} is not in 0..={MAX_DELAY_MS}")),
        }
    }
    if let Some(ms) = change.cpu_ms {
        match u32::try_from(ms).ok().filter(|&ms| ms <= MAX_CPU_MS) {
            Some(ms) => next.cpu_ms = ms,
            None => problems.push(format!("cpu_ms {ms} is not in 0..={MAX_CPU_MS}")),
        }
    }
    if let Some(rate) = change.error_rate {
        if (0.0..=1.0).contains(&rate) {
            next.error_rate = rate;
        } else {
            problems.push(format!("error_rate {rate} is not in 0..=1"));
        }
    }
    if let Some(unhealthy) = change.unhealthy {
        next.unhealthy = unhealthy;
    }
    if problems.is_empty() {
        Ok(next)
    } else {
        Err(problems)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_subset_changes_only_what_it_names() {
        let start = Knobs {
            delay_ms: 50,
            ..Knobs::default()
        };
        let change = parse(br#"{"error_rate": 0.2}"#).unwrap();
        let next = apply(start, &change).unwrap();
        assert_eq!(next.delay_ms, 50);
        assert_eq!(next.error_rate, 0.2);
    }

    #[test]
    fn bad_bodies_are_400_and_bad_values_422_with_every_problem() {
        for body in [&b"nope"[..], b"", b"[1]", b"{\"delay_ms\": 5"] {
            assert_eq!(parse(body).unwrap_err().0, StatusCode::BAD_REQUEST);
        }
        for body in [
            &br#"{"delay": 5}"#[..],
            br#"{"delay_ms": "5"}"#,
            br#"{"delay_ms": -5}"#,
            br#"{"unhealthy": 1}"#,
        ] {
            let (status, msg) = parse(body).unwrap_err();
            assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{msg}");
        }
        let change = parse(br#"{"delay_ms": 70000, "error_rate": 1.5}"#).unwrap();
        let problems = apply(Knobs::default(), &change).unwrap_err().join("; ");
        assert!(problems.contains("delay_ms 70000"), "{problems}");
        assert!(problems.contains("error_rate 1.5"), "{problems}");
    }
}
