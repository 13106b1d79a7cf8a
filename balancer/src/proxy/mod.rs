//! Forwarding one request: route, pick (sticky or by algorithm), rewrite headers, send with
//! timeouts, retry what is safe to retry on another member, stream the response back.

pub(crate) mod access_log;
pub(crate) mod body;
pub(crate) mod direct;
mod forward;
pub(crate) mod headers;
pub(crate) mod hedge;
pub(crate) mod lease;
mod plan;
mod replay;
pub(crate) mod request_body;
mod retry;
mod upgrade;
pub(crate) mod upstream;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use http::header::{self, HeaderValue};
use http::{Request, Response, StatusCode, Uri, Version};
use hyper::body::Incoming;

use self::access_log::{AccessLog, Grace, Unanswered};
use self::body::{RespBody, Tail};
use self::lease::MemberBody;
use self::plan::{Picked, Plan, plan};
use self::upstream::FailKind;
use crate::error::ProxyError;
use crate::pool::{Member, Pool};
use crate::state::Shared;

/// A client's request body as the server side hands it over.
#[derive(Debug)]
pub(crate) enum ClientBody {
    /// The request has no body (the server side checked its framing).
    None,
    /// hyper's body of the request (which may still be empty).
    Hyper(Incoming),
}

/// Per-worker context of the proxy.
#[derive(Debug)]
pub(crate) struct Proxy {
    /// Shared state (the snapshot lives here).
    pub(crate) shared: Arc<Shared>,
    /// Random prefix of generated request ids.
    pub(crate) id_seed: u64,
    /// Whether this worker's shutdown grace ran out (who gave up on unanswered requests).
    grace: Grace,
}

impl Proxy {
    /// A worker's proxy.
    pub(crate) fn new(shared: Arc<Shared>) -> Self {
        Proxy {
            shared,
            id_seed: rand::random(),
            grace: Grace::default(),
        }
    }

    /// This worker's shutdown grace ran out: the requests it drops from now on are logged as
    /// abandoned by the balancer rather than closed by their clients.
    pub(crate) fn grace_ran_out(&self) {
        self.grace.run_out();
    }

    /// Proxies one request from `peer`. Never fails: errors become short responses.
    /// `bad_framing` comes from [`crate::framing`]: the head was ambiguous before hyper
    /// normalized it.
    pub(crate) async fn handle(
        &self,
        mut req: Request<ClientBody>,
        peer: SocketAddr,
        bad_framing: bool,
    ) -> Response<RespBody> {
        let start = Instant::now();
        let snap = self.shared.snapshot();
        let (rid, _) = headers::request_id(req.headers(), self.id_seed);
        let load_run = self.shared.load_mark.run_of(req.headers());
        let log = access_log::enabled().then(|| {
            Box::new(AccessLog {
                method: req.method().clone(),
                uri: req.uri().clone(),
                request_id: rid.clone(),
                start,
                status: 0,
                pool: Arc::from("-"),
                upstream: None,
                attempts: 0,
                hedge: access_log::HedgeOutcome::None,
                load_run,
            })
        });
        let mut log = Unanswered::new(log, &self.grace);
        // hyper normalizes ambiguous framing before a handler could see it, so only the
        // connection's framing guard can tell.
        if bad_framing || !headers::host_is_valid(req.headers(), req.version()) {
            return self.local(ProxyError::BadRequest, "-", &rid, log.take(), true);
        }
        let host = host_of(&req);
        let Some(route) = snap.routes.route(host, req.uri().path()) else {
            return self.local(ProxyError::NoRoute, "-", &rid, log.take(), false);
        };
        let pool = &snap.pools[route.pool];
        let max_body = route.max_body.unwrap_or(pool.settings.max_body);
        if let Some(l) = log.as_mut() {
            l.pool = Arc::clone(&pool.settings.name);
        }
        if declared_length(&req).is_some_and(|n| n > max_body) {
            return self.local(
                ProxyError::BodyTooLarge,
                &pool.settings.name,
                &rid,
                log.take(),
                true,
            );
        }
        let client_upgrade = wants_upgrade(&req).then(|| hyper::upgrade::on(&mut req));
        let mut plan = plan(&snap, pool, &req, peer, max_body, start, rid);
        plan.show_upstream |= load_run.is_some();
        self.forward(req, plan, log, client_upgrade).await
    }

    /// The answer to bytes that could not be made into a request (400), counted like the
    /// rest; the connection is closed after it.
    pub(crate) fn reject(&self, err: ProxyError) -> Response<RespBody> {
        let (rid, _) = headers::request_id(&http::HeaderMap::new(), self.id_seed);
        if access_log::enabled() {
            let body = err.body().len() as u64;
            access_log::log_refused(err.status().as_u16(), body, rid.to_str().unwrap_or("-"));
        }
        self.local(err, "-", &rid, None, true)
    }

    /// Counts and logs a head that hyper's parser refused and answered itself (400, 414 or
    /// 431, with no body and no request id); an HTTP/2 preface gets no answer at all.
    pub(crate) fn refused_by_parser(&self, e: &hyper::Error) {
        if !e.is_parse() || e.is_parse_version_h2() {
            return;
        }
        let status = if !e.is_parse_too_large() {
            StatusCode::BAD_REQUEST
        } else if crate::error::is_uri_too_long(e) {
            StatusCode::URI_TOO_LONG
        } else {
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE
        };
        self.shared.count_local("-", status.as_u16());
        if access_log::enabled() {
            access_log::log_refused(status.as_u16(), 0, "-");
        }
    }

    /// A response made here rather than by a member, counted for `/metrics`.
    fn local(
        &self,
        err: ProxyError,
        pool: &str,
        rid: &HeaderValue,
        log: Option<Box<AccessLog>>,
        close: bool,
    ) -> Response<RespBody> {
        self.shared.count_local(pool, err.status().as_u16());
        error_response(err, rid, log, close)
    }

    fn record_failure(&self, pool: &Pool, member: &Member, kind: FailKind, now_ms: u64) {
        member.stats.add_failure();
        let ps = &pool.settings;
        member
            .load
            .observe_failure(ps.algorithm, &ps.balancing, now_ms);
        if member.record_failure(now_ms, pool.passive) {
            // Dropped if the member has left its pool meanwhile: a request that was in flight
            // when it left must not report on it afterwards.
            self.shared.events.push_member(
                crate::events::EventKind::Passive,
                &pool.settings.name,
                member,
                format!(
                    "ejected for {} after {:?} (max_fails {})",
                    humantime::format_duration(pool.settings.fail_timeout),
                    kind,
                    pool.passive.max_fails
                ),
            );
        }
    }

    fn respond(
        &self,
        mut resp: Response<MemberBody>,
        picked: Picked<'_>,
        plan: &Plan<'_>,
        guard: crate::pool::InFlight,
        mut log: Option<Box<AccessLog>>,
        client_upgrade: Option<hyper::upgrade::OnUpgrade>,
    ) -> Response<RespBody> {
        if resp.status() == StatusCode::SWITCHING_PROTOCOLS
            && resp.body().is_hyper()
            && let Some(client) = client_upgrade
        {
            let upstream = hyper::upgrade::on(&mut resp);
            upgrade::bridge(client, upstream, guard);
            // The member's connection now carries the tunnel: its lease is dropped unfinished,
            // so it is not returned to the pool.
            let (mut parts, _) = resp.into_parts();
            self.decorate(&mut parts, picked, plan, &mut log);
            let tail = Tail {
                guard: None,
                log,
                bytes: 0,
                complete: true,
            };
            return Response::from_parts(parts, RespBody::empty(tail));
        }
        let (mut parts, body) = resp.into_parts();
        self.decorate(&mut parts, picked, plan, &mut log);
        let tail = Tail {
            guard: Some(guard),
            log,
            bytes: 0,
            complete: false,
        };
        let stall = plan.pool.settings.response_timeout;
        Response::from_parts(parts, RespBody::upstream(body, tail, stall))
    }

    /// The member's head as the client gets it: this proxy's HTTP/1.1, hop-by-hop fields gone
    /// (unless the protocol switches), request id, upstream and sticky cookie added.
    fn decorate(
        &self,
        parts: &mut http::response::Parts,
        Picked { idx, member }: Picked<'_>,
        plan: &Plan<'_>,
        log: &mut Option<Box<AccessLog>>,
    ) {
        parts.version = Version::HTTP_11;
        if let Some(l) = log.as_mut() {
            l.status = parts.status.as_u16();
        }
        if parts.status != StatusCode::SWITCHING_PROTOCOLS {
            headers::strip_hop_by_hop(&mut parts.headers);
        }
        let h = &mut parts.headers;
        h.insert(&headers::X_REQUEST_ID, plan.rid.clone());
        if plan.show_upstream {
            h.insert(&headers::X_UPSTREAM, member.upstream_header.clone());
        }
        if plan.sticky_cookie
            && plan.cookie_id != Some(member.id())
            && let Some(Some(v)) = plan.pool.cookies.get(idx)
        {
            h.append(header::SET_COOKIE, v.clone());
        }
    }
}

fn host_of(req: &Request<ClientBody>) -> Option<&str> {
    req.uri().host().or_else(|| {
        req.headers()
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
    })
}

fn declared_length<B>(req: &Request<B>) -> Option<u64> {
    crate::http1::content_length(req.headers()).ok().flatten()
}

fn incoming_is_empty(body: &ClientBody, headers: &http::HeaderMap) -> bool {
    use http_body::Body;
    let ClientBody::Hyper(body) = body else {
        return true;
    };
    body.is_end_stream()
        || (!headers.contains_key(header::TRANSFER_ENCODING)
            && !headers.contains_key(header::CONTENT_LENGTH))
}

fn wants_upgrade(req: &Request<ClientBody>) -> bool {
    req.headers().contains_key(header::UPGRADE)
        && req
            .headers()
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case("upgrade"))
}

/// Absolute-form targets (`GET http://host/path`) are sent on as origin-form.
fn origin_form(uri: Uri) -> Uri {
    if uri.scheme().is_none() && uri.authority().is_none() {
        return uri;
    }
    let pq = uri
        .path_and_query()
        .map_or("/", |pq| pq.as_str())
        .to_owned();
    pq.parse().unwrap_or_else(|_| Uri::from_static("/"))
}

/// A short response made here, logged like any other.
pub(crate) fn error_response(
    err: ProxyError,
    rid: &HeaderValue,
    mut log: Option<Box<AccessLog>>,
    close: bool,
) -> Response<RespBody> {
    let status = err.status();
    if let Some(l) = log.as_mut() {
        l.status = status.as_u16();
    }
    let tail = Tail {
        guard: None,
        log,
        bytes: 0,
        complete: false,
    };
    let mut resp = Response::new(RespBody::full(err.body(), tail));
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    h.insert(&headers::X_REQUEST_ID, rid.clone());
    if status == StatusCode::SERVICE_UNAVAILABLE {
        h.insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    }
    if close {
        // The rest of the connection's input cannot be trusted (framing) or is unwanted.
        h.insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    resp
}
