//! `PUT /api/pools/{pool}/algorithm` with `{"algorithm": "least-connections"}` switches a
//! pool's algorithm live (through the control loop: one new snapshot, the members and their
//! state carried over); `{"algorithm": null}` or `DELETE` goes back to the file's. Admin token
//! required. What a later reload does to the choice: [`crate::control::overrides`].

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use tokio::sync::oneshot;

use super::actions::authorize;
use super::{AdminCtx, ApiError};
use crate::control::Command;
use crate::control::overrides::OverrideError;
use crate::select::Algorithm;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Body {
    algorithm: Option<Algorithm>,
}

/// `PUT .../algorithm`.
pub(super) async fn set(
    State(s): State<AdminCtx>,
    Path(pool): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    authorize(&s.shared, &headers)?;
    let body: Body = serde_json::from_slice(&body).map_err(|e| {
        let names: Vec<&str> = Algorithm::ALL.iter().map(|a| a.as_str()).collect();
        ApiError::bad_request(format!(
            "give {{\"algorithm\": NAME}} with NAME one of {}, or null for the file's: {e}",
            names.join(", ")
        ))
    })?;
    apply(&s, pool, body.algorithm).await
}

/// `DELETE .../algorithm`: back to the file's.
pub(super) async fn reset(
    State(s): State<AdminCtx>,
    Path(pool): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    authorize(&s.shared, &headers)?;
    apply(&s, pool, None).await
}

async fn apply(
    s: &AdminCtx,
    pool: String,
    algorithm: Option<Algorithm>,
) -> Result<Response, ApiError> {
    let (reply, rx) = oneshot::channel();
    let cmd = Command::SetAlgorithm {
        pool: pool.clone(),
        algorithm,
        reply,
    };
    let gone = || ApiError::shutting_down();
    s.control.send(cmd).await.map_err(|_| gone())?;
    match rx.await.map_err(|_| gone())? {
        Ok(now) => {
            let file = s
                .shared
                .overrides
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .get(&pool)
                .map(|o| o.file);
            Ok(Json(serde_json::json!({
                "pool": pool,
                "algorithm": now,
                "runtime": file.is_some(),
                "file_algorithm": file.unwrap_or(now),
            }))
            .into_response())
        }
        Err(e @ OverrideError::NoSuchPool(_)) => {
            Err(ApiError::new(StatusCode::NOT_FOUND, e.to_string()))
        }
        Err(e) => Err(ApiError::new(StatusCode::CONFLICT, e.to_string())),
    }
}
