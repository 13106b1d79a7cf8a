//! HTTP plumbing shared by every route of both apps: `X-Instance`, the access log, `/healthz`
//! with draining and the lab's fault knobs, and JSON bodies for 404 and 405.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use axum::Json;
use axum::extract::{Request, State};
use axum::http::{HeaderName, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::faults::Faults;

/// The response header naming the replica that answered.
pub static X_INSTANCE: HeaderName = HeaderName::from_static("x-instance");

/// Set once a termination signal arrives; `/healthz` then reports `draining`.
#[derive(Debug, Clone, Default)]
pub struct Draining(Arc<AtomicBool>);

impl Draining {
    /// Starts draining.
    pub fn start(&self) {
        self.0.store(true, Ordering::SeqCst);
    }

    /// Whether draining has started.
    pub fn is_draining(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }
}

/// What the outer middleware needs.
#[derive(Debug, Clone)]
pub struct Identity {
    /// Value of `X-Instance`.
    pub instance: HeaderValue,
    /// Shared draining flag.
    pub draining: Draining,
}

impl Identity {
    /// A replica named `instance`, not draining; `None` if the name is no valid header value.
    pub fn new(instance: &str) -> Option<Self> {
        Some(Self {
            instance: HeaderValue::from_str(instance).ok()?,
            draining: Draining::default(),
        })
    }
}

/// Adds `X-Instance`, closes connections while draining, and logs one line per request.
pub async fn identify_and_log(State(id): State<Identity>, req: Request, next: Next) -> Response {
    let start = Instant::now();
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let mut res = next.run(req).await;
    let headers = res.headers_mut();
    headers.insert(X_INSTANCE.clone(), id.instance.clone());
    if id.draining.is_draining() {
        // Keep-alive clients (a balancer's pool) reconnect, and so reach another replica.
        headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    let ms = start.elapsed().as_secs_f64() * 1000.0;
    tracing::info!(%method, %path, status = res.status().as_u16(), ms = format_args!("{ms:.1}"), "request");
    res
}

/// `GET /healthz`: 200 `ok` while serving, 503 `draining` once shutdown began, 503
/// `unhealthy` while the lab's `unhealthy` knob is on; each with the fault knobs in force.
pub async fn healthz(State(draining): State<Draining>, State(faults): State<Faults>) -> Response {
    let knobs = faults.knobs();
    let (status, word) = if draining.is_draining() {
        (StatusCode::SERVICE_UNAVAILABLE, "draining")
    } else if knobs.unhealthy {
        (StatusCode::SERVICE_UNAVAILABLE, "unhealthy")
    } else {
        (StatusCode::OK, "ok")
    };
    json_response(status, json!({"status": word, "faults": knobs}))
}

/// JSON 404 for unknown paths.
pub async fn not_found() -> Response {
    json_response(StatusCode::NOT_FOUND, json!({"error": "not found"}))
}

/// JSON 405 for a known path with the wrong method (axum adds `Allow`).
pub async fn method_not_allowed() -> Response {
    json_response(
        StatusCode::METHOD_NOT_ALLOWED,
        json!({"error": "method not allowed"}),
    )
}

/// A JSON response with `status`.
pub fn json_response(status: StatusCode, body: serde_json::Value) -> Response {
    (status, Json(body)).into_response()
}
