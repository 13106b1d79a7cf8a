//! The admin listener (`BALANCER_ADMIN_LISTEN`, default `0.0.0.0:1936`).
//!
//! Read-only, always open:
//! - `/` — the live dashboard ([`dashboard`]), with its script and stylesheet under `/assets/`;
//! - `/api/status` — the same figures as JSON ([`status`]);
//! - `/api/live` — the last minute per second, compact, for the dashboard's charts ([`live`]);
//! - `/metrics` — Prometheus text exposition ([`metrics`]);
//! - `/healthz` — liveness (503 while shutting down).
//!
//! Runtime actions, bearer-token protected ([`actions`]): drain / enable a member, set its
//! weight, trigger a reload, members' self-registration, and the lab's fault knobs of a
//! member, relayed to the replica (`fault`); switch a pool's algorithm ([`algorithm`]); the
//! built-in load generator ([`load`]). With no `BALANCER_ADMIN_TOKEN`
//! every action is refused (403) while the read-only pages stay open.
//!
//! The admin API only reads the snapshot and flips per-member atomics; anything that changes
//! the snapshot goes through the control loop as a [`Command`].

pub(crate) mod actions;
pub(crate) mod algorithm;
pub(crate) mod dashboard;
mod fault;
pub(crate) mod live;
pub(crate) mod load;
pub(crate) mod metrics;
pub mod status;

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use tokio::sync::mpsc;

use crate::control::Command;
use crate::state::Shared;

pub use status::build_status;

/// What admin handlers need.
#[derive(Debug, Clone)]
pub(crate) struct AdminCtx {
    /// Shared balancer state.
    pub(crate) shared: Arc<Shared>,
    /// The control loop.
    pub(crate) control: mpsc::Sender<Command>,
    /// The built-in load generator.
    pub(crate) load: Arc<crate::loadgen::LoadGen>,
    /// The last minute of every pool, for the dashboard's charts.
    pub(crate) live: Arc<live::Live>,
}

/// The admin router.
pub(crate) fn app(state: AdminCtx) -> Router {
    const MEMBER: &str = "/api/pools/{pool}/members/{member}";
    Router::new()
        .route("/", get(dashboard::page))
        .route(dashboard::CSS_PATH, get(dashboard::css))
        .route(dashboard::JS_PATH, get(dashboard::js))
        .route(dashboard::LAB_JS_PATH, get(dashboard::lab_js))
        .route("/healthz", get(healthz))
        .route("/api/status", get(status::handler))
        .route("/api/live", get(live::handler))
        .route("/metrics", get(metrics::handler))
        .route(MEMBER, put(actions::register).delete(actions::deregister))
        .route(&format!("{MEMBER}/drain"), post(actions::drain))
        .route(&format!("{MEMBER}/enable"), post(actions::enable))
        .route(&format!("{MEMBER}/weight"), put(actions::weight))
        .route(
            &format!("{MEMBER}/fault"),
            put(fault::relay).get(fault::relay),
        )
        .route(
            "/api/pools/{pool}/algorithm",
            put(algorithm::set).delete(algorithm::reset),
        )
        .route("/api/reload", post(actions::reload))
        .route(
            "/api/load",
            post(load::start).get(load::report).delete(load::stop),
        )
        .fallback(not_found)
        .with_state(state)
}

async fn not_found() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "no such admin endpoint")
}

/// An admin API error, answered as JSON `{"error": message}`; never carries internals.
#[derive(Debug)]
pub(crate) struct ApiError {
    /// HTTP status.
    pub(crate) status: StatusCode,
    /// What went wrong, for the operator.
    pub(crate) message: String,
}

impl ApiError {
    /// An error with a status and a message.
    pub(crate) fn new(status: StatusCode, message: impl Into<String>) -> Self {
        ApiError {
            status,
            message: message.into(),
        }
    }

    /// A 400 with a message saying what was wrong and what is expected.
    pub(crate) fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }

    /// The 503 of a request that arrived while the balancer shuts down.
    pub(crate) fn shutting_down() -> Self {
        Self::new(StatusCode::SERVICE_UNAVAILABLE, "shutting down")
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = Json(serde_json::json!({ "error": self.message }));
        (self.status, body).into_response()
    }
}

async fn healthz(State(s): State<AdminCtx>) -> Response {
    if s.shared.shutting_down() {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(serde_json::json!({"status": "draining"})),
        )
            .into_response();
    }
    Json(serde_json::json!({"status": "ok"})).into_response()
}
