//! `PUT /api/pools/{pool}/members/{member}/fault` (and `GET`): the lab's fault knobs of one
//! member, relayed to that replica's own `/fault` endpoint (see `apps-shared`'s `faults`), so
//! the operator needs only the balancer's address and token.
//!
//! The balancer forwards the JSON body untouched (the replica validates it and says what is
//! wrong) with its own `BALANCER_ADMIN_TOKEN`, which the replicas know for registration.
//! Answers:
//! - the replica's own answer when it is a success or its verdict on the body (2xx, 400, 422);
//! - 401/403 as for every admin action; 404 for an unknown pool or member;
//! - 502 when the member cannot be reached or refuses the relay (it has another token, or no
//!   `/fault`: not one of the lab's apps), with what it said; 504 when it does not answer in
//!   time; 413 for a body larger than any knob change.

use std::net::SocketAddr;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use http::Request;
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use super::actions::{authorize, find_member};
use super::{AdminCtx, ApiError};
use crate::events::EventKind;

/// The replica's endpoint.
const REPLICA_PATH: &str = "/fault";
/// Connect, send and read the answer within this: the member is on the local network.
const TIMEOUT: Duration = Duration::from_secs(3);
/// A knob change is a few dozen bytes.
const MAX_BODY: usize = 4096;
/// The replica answers with its knobs or an error message.
const MAX_ANSWER: usize = 16 * 1024;

/// What the member answered.
struct Answer {
    status: StatusCode,
    body: Bytes,
}

/// `GET` or `PUT .../fault`: relays to the member and answers with what it said.
pub(super) async fn relay(
    State(s): State<AdminCtx>,
    Path((pool, member)): Path<(String, String)>,
    method: Method,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    authorize(&s.shared, &headers)?;
    let (m, _) = find_member(&s.shared, &pool, &member)?;
    if body.len() > MAX_BODY {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("a fault change is at most {MAX_BODY} bytes of JSON"),
        ));
    }
    let token = s.shared.snapshot().settings.admin_token.clone();
    let token = token.unwrap_or_default();
    let addr = m.addr;
    let sent = tokio::time::timeout(TIMEOUT, exchange(addr, &method, &token, body)).await;
    let answer = match sent {
        Err(_) => {
            return Err(ApiError::new(
                StatusCode::GATEWAY_TIMEOUT,
                format!("member {addr} did not answer on {REPLICA_PATH} within {TIMEOUT:?}"),
            ));
        }
        Ok(Err(e)) => {
            return Err(ApiError::new(
                StatusCode::BAD_GATEWAY,
                format!("cannot reach member {addr}: {e}"),
            ));
        }
        Ok(Ok(answer)) => answer,
    };
    let said = || String::from_utf8_lossy(&answer.body).trim().to_owned();
    match answer.status.as_u16() {
        200..=299 | 400 | 422 => {}
        401 | 403 => {
            return Err(ApiError::new(
                StatusCode::BAD_GATEWAY,
                format!(
                    "member {addr} refused the balancer's token (give the replica the same \
                     BALANCER_ADMIN_TOKEN): it said {}",
                    said()
                ),
            ));
        }
        404 | 405 => {
            return Err(ApiError::new(
                StatusCode::BAD_GATEWAY,
                format!(
                    "member {addr} has no {REPLICA_PATH} endpoint (not one of the lab's apps?)"
                ),
            ));
        }
        other => {
            return Err(ApiError::new(
                StatusCode::BAD_GATEWAY,
                format!(
                    "member {addr} answered {other} on {REPLICA_PATH}: {}",
                    said()
                ),
            ));
        }
    }
    if method == Method::PUT && answer.status.is_success() {
        s.shared.events.push(
            EventKind::Admin,
            Some(&pool),
            Some(&addr.to_string()),
            format!("fault knobs set by operator: {}", said()),
        );
    }
    let mut res = (answer.status, answer.body).into_response();
    res.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    Ok(res)
}

/// One request to the member's `/fault` over a fresh connection.
async fn exchange(
    addr: SocketAddr,
    method: &Method,
    token: &str,
    body: Bytes,
) -> Result<Answer, String> {
    let stream = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
    let (mut tx, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| e.to_string())?;
    let conn = tokio::spawn(conn);
    let req = Request::builder()
        .method(method.clone())
        .uri(REPLICA_PATH)
        .header(header::HOST, addr.to_string())
        .header(header::AUTHORIZATION, format!("Bearer {token}"))
        .header(header::CONTENT_TYPE, "application/json")
        .header(header::USER_AGENT, "lab-stack-balancer-admin")
        .header(header::CONNECTION, "close")
        .body(Full::new(body))
        .map_err(|e| e.to_string())?;
    let resp = tx.send_request(req).await.map_err(|e| e.to_string())?;
    let status = resp.status();
    let body = Limited::new(resp.into_body(), MAX_ANSWER)
        .collect()
        .await
        .map_err(|e| format!("reading its answer: {e}"))?
        .to_bytes();
    conn.abort();
    Ok(Answer { status, body })
}
