//! `/api/load`: the built-in load generator ([`crate::loadgen`]) over the admin API.
//!
//! | request | effect |
//! |---|---|
//! | `POST /api/load` | start a run: `{"path": "/api/student", "concurrency": 8, "rate": null, "seconds": 10}` (`host` optional) |
//! | `GET /api/load` | the active or last run's progress and results (`{"run": null}` before the first) |
//! | `DELETE /api/load` | stop the active run; answers with its results |
//!
//! All three need the admin token, as every action: a run's report names member addresses
//! and its id is the key that makes the proxy reveal them. 202 on start, 409 while another
//! run is active, 400 with the bound's name for a body beyond `[load]`, 404 on DELETE with
//! no run active.

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};

use super::actions::authorize;
use super::{AdminCtx, ApiError};
use crate::loadgen::StartError;
use crate::loadgen::spec::StartRequest;

/// `POST /api/load`.
pub(super) async fn start(
    State(s): State<AdminCtx>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    authorize(&s.shared, &headers)?;
    let req: StartRequest = serde_json::from_slice(&body).map_err(|e| {
        ApiError::bad_request(format!(
                "give a JSON body {{\"path\": \"/api/student\", \"concurrency\": 8, \"rate\": null, \"seconds\": 10}}: {e}"
            ),
        )
    })?;
    let limits = s.shared.snapshot().settings.load;
    let spec = req
        .check(&limits)
        .map_err(|e| ApiError::bad_request(e.to_string()))?;
    match s.load.start(spec) {
        Ok(run) => Ok((StatusCode::ACCEPTED, Json(run.report())).into_response()),
        Err(e @ StartError::Busy(_)) => Err(ApiError::new(StatusCode::CONFLICT, e.to_string())),
        Err(e @ StartError::ShuttingDown) => Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            e.to_string(),
        )),
        Err(e @ StartError::Thread(_)) => {
            tracing::warn!(error = %e, "load run refused");
            Err(ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "could not start the load run",
            ))
        }
    }
}

/// `GET /api/load`.
pub(super) async fn report(
    State(s): State<AdminCtx>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    authorize(&s.shared, &headers)?;
    Ok(match s.load.current() {
        Some(run) => Json(run.report()).into_response(),
        None => Json(serde_json::json!({ "run": null })).into_response(),
    })
}

/// `DELETE /api/load`.
pub(super) async fn stop(
    State(s): State<AdminCtx>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    authorize(&s.shared, &headers)?;
    match s.load.stop() {
        Some(run) => Ok(Json(run.report()).into_response()),
        None => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "no load run is active",
        )),
    }
}
