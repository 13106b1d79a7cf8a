//! Runtime actions (in the spirit of HAProxy's runtime API), all behind
//! `Authorization: Bearer <BALANCER_ADMIN_TOKEN>`:
//!
//! | request | effect |
//! |---|---|
//! | `POST /api/pools/{pool}/members/{member}/drain` | finish in-flight work, send nothing new |
//! | `POST /api/pools/{pool}/members/{member}/enable` | back in rotation (slow start if set) |
//! | `PUT /api/pools/{pool}/members/{member}/weight` | `{"weight": N}` or `?weight=N`, 0..=1000 |
//! | `POST /api/reload` | reload the config now; answers with the result |
//! | `PUT /api/pools/{pool}/members/{ip:port}?ttl=&weight=` | self-registration heartbeat |
//! | `DELETE /api/pools/{pool}/members/{ip:port}` | leave cleanly |
//! | `PUT /api/pools/{pool}/members/{member}/fault` | the lab's fault knobs, relayed to the replica ([`super::fault`]) |
//!
//! `{member}` is the member's `ip:port` or its sticky id. Drain, enable and weight flip the
//! member's atomics directly (the request path sees them at its next pick) and survive reloads
//! for as long as the member stays; reload and registration go through the control loop.
//!
//! Errors are JSON `{"error": ...}`: 403 when no token is configured, 401 for a missing or wrong
//! token, 404 for an unknown pool or member, 400 for bad input, 422 for a rejected reload.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use tokio::sync::oneshot;

use super::{AdminCtx, ApiError};
use crate::clock;
use crate::config::members::MAX_WEIGHT;
use crate::control::Command;
use crate::events::EventKind;
use crate::pool::{AdminState, Member};
use crate::state::Shared;

/// Checks the bearer token; `Err` is the response to send.
pub(super) fn authorize(shared: &Shared, headers: &HeaderMap) -> Result<(), ApiError> {
    let snap = shared.snapshot();
    let Some(token) = snap.settings.admin_token.as_deref() else {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "admin actions are disabled: set BALANCER_ADMIN_TOKEN to enable them",
        ));
    };
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    match given {
        Some(g) if constant_time_eq(g.as_bytes(), token.as_bytes()) => Ok(()),
        Some(_) => Err(ApiError::new(StatusCode::UNAUTHORIZED, "wrong admin token")),
        None => Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "missing `Authorization: Bearer <BALANCER_ADMIN_TOKEN>`",
        )),
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The member `member` (address or sticky id) of `pool` in the current snapshot, with the
/// pool's slow-start duration in ms.
pub(super) fn find_member(
    shared: &Shared,
    pool: &str,
    member: &str,
) -> Result<(Arc<Member>, u64), ApiError> {
    let snap = shared.snapshot();
    let Some(p) = snap.pools.iter().find(|p| &*p.settings.name == pool) else {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            format!("no pool named `{pool}`"),
        ));
    };
    let found = p
        .members
        .iter()
        .find(|m| m.addr.to_string() == member || m.id().to_string() == member);
    match found {
        Some(m) => Ok((Arc::clone(m), p.settings.slow_start.as_millis() as u64)),
        None => {
            let known: Vec<String> = p.members.iter().map(|m| m.addr.to_string()).collect();
            Err(ApiError::new(
                StatusCode::NOT_FOUND,
                format!(
                    "no member `{member}` in pool `{pool}` (members: {})",
                    if known.is_empty() {
                        "none".to_owned()
                    } else {
                        known.join(", ")
                    }
                ),
            ))
        }
    }
}

fn member_reply(pool: &str, m: &Member) -> Response {
    let now = clock::now_ms();
    Json(serde_json::json!({
        "pool": pool,
        "member": m.addr.to_string(),
        "admin_state": match m.admin_state() {
            AdminState::Enabled => "enabled",
            AdminState::Drained => "drained",
        },
        "in_rotation": m.is_available(now),
        "weight": m.weight(),
        "active": m.in_flight(),
    }))
    .into_response()
}

/// `POST .../drain`: the member finishes what it has and gets nothing new.
pub(super) async fn drain(
    State(s): State<AdminCtx>,
    Path((pool, member)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    authorize(&s.shared, &headers)?;
    let (m, _) = find_member(&s.shared, &pool, &member)?;
    m.set_admin_state(AdminState::Drained);
    let msg = format!(
        "drained by operator; {} in-flight request(s) finish",
        m.in_flight()
    );
    s.shared.events.push(
        EventKind::Admin,
        Some(&pool),
        Some(&m.addr.to_string()),
        msg,
    );
    Ok(member_reply(&pool, &m))
}

/// `POST .../enable`: back in rotation, ramping up if the pool has a slow start.
pub(super) async fn enable(
    State(s): State<AdminCtx>,
    Path((pool, member)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    authorize(&s.shared, &headers)?;
    let (m, slow_start) = find_member(&s.shared, &pool, &member)?;
    if m.admin_state() == AdminState::Drained {
        if slow_start > 0 {
            m.begin_ramp(clock::now_ms());
        }
        m.set_admin_state(AdminState::Enabled);
        s.shared.events.push(
            EventKind::Admin,
            Some(&pool),
            Some(&m.addr.to_string()),
            "enabled by operator".to_owned(),
        );
    }
    Ok(member_reply(&pool, &m))
}

/// Body or query of a weight change.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct WeightBody {
    /// New weight, 0..=1000 (0 = never picked).
    pub(crate) weight: u32,
}

/// Query of a weight change (the body wins when both are given).
#[derive(Debug, Deserialize)]
pub(crate) struct WeightQuery {
    /// New weight.
    pub(crate) weight: Option<String>,
}

/// `PUT .../weight` with `{"weight": N}` or `?weight=N`.
pub(super) async fn weight(
    State(s): State<AdminCtx>,
    Path((pool, member)): Path<(String, String)>,
    Query(q): Query<WeightQuery>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    authorize(&s.shared, &headers)?;
    const USAGE: &str =
        "give the weight as a JSON body {\"weight\": N} or as ?weight=N, N in 0..=1000";
    let w = if !body.iter().all(u8::is_ascii_whitespace) {
        match serde_json::from_slice::<WeightBody>(&body) {
            Ok(b) => b.weight,
            Err(e) => {
                return Err(ApiError::bad_request(format!("{USAGE}: {e}")));
            }
        }
    } else if let Some(q) = q.weight {
        match q.trim().parse::<u32>() {
            Ok(w) => w,
            Err(_) => return Err(ApiError::bad_request(USAGE)),
        }
    } else {
        return Err(ApiError::bad_request(USAGE));
    };
    if w > MAX_WEIGHT {
        return Err(ApiError::bad_request(USAGE));
    }
    let (m, _) = find_member(&s.shared, &pool, &member)?;
    let before = m.weight();
    m.set_weight(w);
    if before != w {
        s.shared.events.push(
            EventKind::Admin,
            Some(&pool),
            Some(&m.addr.to_string()),
            format!("weight {before} -> {w} by operator"),
        );
    }
    Ok(member_reply(&pool, &m))
}

/// `POST /api/reload`: reloads the config file now, like SIGHUP, and answers with the outcome.
pub(super) async fn reload(
    State(s): State<AdminCtx>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    authorize(&s.shared, &headers)?;
    let (tx, rx) = oneshot::channel();
    if s.control.send(Command::Reload(Some(tx))).await.is_err() {
        return Err(ApiError::shutting_down());
    }
    match rx.await {
        Ok(Ok(changed)) => Ok(Json(serde_json::json!({
            "result": "applied",
            "changed": changed,
            "version": s.shared.snapshot().version,
        }))
        .into_response()),
        Ok(Err(e)) => Ok((
            StatusCode::UNPROCESSABLE_ENTITY,
            Json(serde_json::json!({
                "result": "rejected",
                "error": e.to_string(),
                "version": s.shared.snapshot().version,
            })),
        )
            .into_response()),
        Err(_) => Err(ApiError::shutting_down()),
    }
}

/// Query of a registration heartbeat.
#[derive(Debug, Deserialize)]
pub(crate) struct RegisterQuery {
    /// Seconds the registration holds without another heartbeat (default 10, 1..=3600).
    pub(crate) ttl: Option<u64>,
    /// Weight (default 1).
    pub(crate) weight: Option<u32>,
}

/// `PUT /api/pools/{pool}/members/{ip:port}`: a member announces itself for `ttl` seconds.
pub(super) async fn register(
    State(s): State<AdminCtx>,
    Path((pool, member)): Path<(String, String)>,
    Query(q): Query<RegisterQuery>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    authorize(&s.shared, &headers)?;
    let Ok(addr) = member.parse::<SocketAddr>() else {
        return Err(ApiError::bad_request("member must be an IP:port address"));
    };
    let ttl = q.ttl.unwrap_or(10);
    if !(1..=3600).contains(&ttl) {
        return Err(ApiError::bad_request("ttl must be 1..=3600 seconds"));
    }
    let weight = q.weight.unwrap_or(1);
    if weight > MAX_WEIGHT {
        return Err(ApiError::bad_request("weight must be 0..=1000"));
    }
    let (reply, rx) = oneshot::channel();
    let cmd = Command::Register {
        pool,
        addr,
        weight,
        ttl: Duration::from_secs(ttl),
        reply,
    };
    if s.control.send(cmd).await.is_err() {
        return Err(ApiError::shutting_down());
    }
    match rx.await {
        Ok(Ok(())) => Ok(
            Json(serde_json::json!({"registered": addr.to_string(), "ttl": ttl})).into_response(),
        ),
        Ok(Err(e)) => Err(ApiError::new(StatusCode::NOT_FOUND, e.to_string())),
        Err(_) => Err(ApiError::shutting_down()),
    }
}

/// `DELETE /api/pools/{pool}/members/{ip:port}`: a registered member leaves.
pub(super) async fn deregister(
    State(s): State<AdminCtx>,
    Path((pool, member)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    authorize(&s.shared, &headers)?;
    let Ok(addr) = member.parse::<SocketAddr>() else {
        return Err(ApiError::bad_request("member must be an IP:port address"));
    };
    let (reply, rx) = oneshot::channel();
    if s.control
        .send(Command::Deregister { pool, addr, reply })
        .await
        .is_err()
    {
        return Err(ApiError::shutting_down());
    }
    match rx.await {
        Ok(true) => Ok(StatusCode::NO_CONTENT.into_response()),
        Ok(false) => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "that member is not registered in that pool",
        )),
        Err(_) => Err(ApiError::shutting_down()),
    }
}
