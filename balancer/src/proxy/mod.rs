//! Forwarding one request: route, pick (sticky or by algorithm), rewrite headers, send with
//! timeouts, retry what is safe to retry on another member, stream the response back.

pub mod body;
pub mod direct;
pub mod headers;
mod replay;
mod upgrade;
pub mod upstream;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use http::header::{self, HeaderValue};
use http::{Method, Request, Response, StatusCode, Uri, Version};
use hyper::body::Incoming;

use self::body::{AccessLog, ReqBody, RespBody, Tail, Unanswered};
use self::upstream::{FailKind, Failure};
use crate::config::StickyMode;
use crate::error::ProxyError;
use crate::pool::{Member, Pool};
use crate::select::{self, Algorithm, PickContext};
use crate::state::{Shared, Snapshot};
use crate::{clock, sticky};

/// Retries of a request whose pooled connection turned out closed; these are not the member's
/// fault and do not use the retry budget.
const MAX_STALE_RETRIES: u32 = 3;
/// Bound on members excluded by one request (retries are capped well below this).
const MAX_TRIED: usize = 12;

/// A client's request body as the server side hands it over.
#[derive(Debug)]
pub enum ClientBody {
    /// The request has no body (the server side checked its framing).
    None,
    /// hyper's body of the request (which may still be empty).
    Hyper(Incoming),
}

/// Per-worker context of the proxy.
#[derive(Debug)]
pub struct Proxy {
    /// Shared state (the snapshot lives here).
    pub shared: Arc<Shared>,
    /// Random prefix of generated request ids.
    pub id_seed: u64,
}

/// What the request path decided before sending.
struct Plan<'a> {
    snap: &'a Snapshot,
    pool: &'a Pool,
    key: Option<u64>,
    sticky_pick: Option<usize>,
    sticky_cookie: bool,
    cookie_id: Option<crate::pool::MemberId>,
    /// Body limit of the route.
    max_body: u64,
    /// Hash of the sticky cookie's value: where the session moves if its member fails, the
    /// same on every balancer.
    cookie_hash: Option<u64>,
}

impl Proxy {
    /// Proxies one request from `peer`. Never fails: errors become short responses.
    /// `bad_framing` comes from [`crate::framing`]: the head was ambiguous before hyper
    /// normalized it.
    pub async fn handle(
        &self,
        mut req: Request<ClientBody>,
        peer: SocketAddr,
        bad_framing: bool,
    ) -> Response<RespBody> {
        let start = Instant::now();
        let snap = self.shared.snapshot();
        let (rid, _) = headers::request_id(req.headers(), self.id_seed);
        let mut log = Unanswered::new(access_log_enabled().then(|| {
            Box::new(AccessLog {
                method: req.method().clone(),
                uri: req.uri().clone(),
                request_id: rid.clone(),
                start,
                status: 0,
                pool: Arc::from("-"),
                upstream: None,
                attempts: 0,
            })
        }));
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
        let plan = plan(&snap, pool, &req, peer, max_body);
        self.forward(req, peer, plan, (start, rid), log, client_upgrade)
            .await
    }

    async fn forward(
        &self,
        req: Request<ClientBody>,
        peer: SocketAddr,
        plan: Plan<'_>,
        (start, rid): (Instant, HeaderValue),
        mut log: Unanswered,
        client_upgrade: Option<hyper::upgrade::OnUpgrade>,
    ) -> Response<RespBody> {
        let ps = &plan.pool.settings;
        let method = req.method().clone();
        let idempotent = is_idempotent(&method);
        let (mut parts, incoming) = req.into_parts();
        // Judge the body before Transfer-Encoding (hop-by-hop) is stripped below.
        let empty_body = incoming_is_empty(&incoming, &parts.headers);
        let upgrade = headers::strip_hop_by_hop(&mut parts.headers);
        let direct = upstream::is_direct(&method, empty_body, upgrade);
        if !direct {
            // Direct requests get these written with their head, without the map.
            headers::add_forwarded(&mut parts.headers, peer.ip());
            parts.headers.insert(&headers::X_REQUEST_ID, rid.clone());
        }
        parts.uri = origin_form(parts.uri);
        parts.version = Version::HTTP_11;
        let mut req = Request::from_parts(parts, ReqBody::Empty);
        let (mut replay, mut sent) = (None, None);
        if let ClientBody::Hyper(incoming) = incoming
            && !empty_body
        {
            let mut keeper = None;
            if idempotent && !upgrade && ps.retries > 0 {
                (replay, keeper) = replay::Replay::of(&req, declared_length(&req)).unzip();
            }
            let idle = plan.snap.settings.client_idle_timeout;
            let (body, sent_by) = ReqBody::stream(incoming, plan.max_body, idle, keeper);
            *req.body_mut() = body;
            sent = Some(sent_by);
        }
        // A request with no body comes back after a failure and is sent again; one with a
        // body comes back while it provably never left, and an idempotent one whose small
        // body was kept whole is rebuilt from the copy (`replay`).
        let resendable = idempotent && direct;
        // Boxed: it moves through every attempt and back on failure, and a 232-byte move goes
        // through musl's slow `memcpy` each time (docs/perf/moves.rs).
        let mut pending = Some(Box::new(req));
        let deadline = start + ps.retry_budget;
        let mut tried: [usize; MAX_TRIED] = [usize::MAX; MAX_TRIED];
        let mut n_tried = 0usize;
        let mut attempts = 0u32;
        let mut stale = 0u32;
        let mut last_err = ProxyError::NoBackend;
        loop {
            let now_ms = clock::now_ms();
            let cx = PickContext {
                now_ms,
                slow_start_ms: ps.slow_start.as_millis() as u64,
                key: plan.key,
                exclude: &tried[..n_tried],
            };
            let idx = match (attempts, plan.sticky_pick, plan.cookie_hash) {
                (0, Some(i), _) => Some(i),
                // A sticky session whose member failed moves where every balancer moves it.
                (_, _, Some(h)) => select::rendezvous_pick(&plan.pool.members, &cx, h),
                _ => None,
            };
            let idx = idx
                .or_else(|| plan.pool.selector.pick(&plan.pool.members, &cx))
                .or_else(|| select::least_recently_failed(&plan.pool.members, &cx));
            let Some(idx) = idx else { break };
            let member = &plan.pool.members[idx];
            let Some(req) = pending.take() else {
                break;
            };
            attempts += 1;
            if attempts > 1 {
                member.stats.add_retry();
            }
            let guard = member.begin_request();
            // Named before the answer, so a client that leaves meanwhile is logged against the
            // member it was waiting for, and a final failure against the last one tried.
            if let Some(l) = log.as_mut() {
                l.upstream = Some(member.addr);
                l.attempts = attempts;
            }
            let sent_at = Instant::now();
            let attempt = upstream::Attempt {
                sent: sent.as_deref(),
                timeouts: upstream::Timeouts {
                    connect: ps.connect_timeout,
                    response: ps.response_timeout,
                    idle: plan.snap.settings.backend_idle_timeout,
                },
                resendable,
                direct: direct.then_some(headers::Forwarding {
                    client: peer.ip(),
                    request_id: &rid,
                }),
                fresh: stale > 0,
            };
            match upstream::send(member.addr, req, &attempt).await {
                Ok(answer) => {
                    member.record_success();
                    let micros = sent_at.elapsed().as_micros() as u64;
                    let status = match &answer {
                        upstream::Answer::Hyper(resp, _) => resp.status(),
                        upstream::Answer::Direct(resp) => resp.status(),
                    };
                    member.stats.record_response(status.as_u16(), micros);
                    return self.respond(
                        answer,
                        (idx, member),
                        &plan,
                        &rid,
                        guard,
                        log.take(),
                        client_upgrade,
                    );
                }
                Err(Failure { kind, request }) => {
                    pending = request;
                    if pending.is_none()
                        && let Some(again) = replay.as_ref().and_then(|r| r.request())
                    {
                        pending = Some(again);
                        // The copy is all here: the member's time starts when it is sent,
                        // not when the client's last byte came in for the first attempt.
                        sent = None;
                    }
                    match kind {
                        FailKind::TooLarge => {
                            let e = ProxyError::BodyTooLarge;
                            return self.local(e, &ps.name, &rid, log.take(), true);
                        }
                        FailKind::ClientBody => {
                            let e = ProxyError::BadRequest;
                            return self.local(e, &ps.name, &rid, log.take(), true);
                        }
                        FailKind::ClientStalled => {
                            let e = ProxyError::RequestTimeout;
                            return self.local(e, &ps.name, &rid, log.take(), true);
                        }
                        FailKind::Stale if stale < MAX_STALE_RETRIES => {
                            // Not the member's fault: try again, same selection rules.
                            stale += 1;
                            attempts -= 1;
                            continue;
                        }
                        _ => {}
                    }
                    self.record_failure(plan.pool, member, kind, now_ms);
                    last_err = if matches!(kind, FailKind::Timeout | FailKind::ConnectTimeout) {
                        ProxyError::UpstreamTimeout
                    } else {
                        ProxyError::UpstreamFailed
                    };
                    if n_tried < MAX_TRIED {
                        tried[n_tried] = idx;
                        n_tried += 1;
                    }
                    if pending.is_none() || attempts > ps.retries || Instant::now() >= deadline {
                        break;
                    }
                    tracing::debug!(member = %member.addr, ?kind, attempts, "retrying on another member");
                }
            }
        }
        if let Some(l) = log.as_mut() {
            l.attempts = attempts;
        }
        self.local(last_err, &ps.name, &rid, log.take(), false)
    }

    /// The answer to bytes that could not be made into a request (400), counted like the
    /// rest; the connection is closed after it.
    pub fn reject(&self, err: ProxyError) -> Response<RespBody> {
        let (rid, _) = headers::request_id(&http::HeaderMap::new(), self.id_seed);
        if access_log_enabled() {
            let body = err.body().len() as u64;
            body::log_refused(err.status().as_u16(), body, rid.to_str().unwrap_or("-"));
        }
        self.local(err, "-", &rid, None, true)
    }

    /// Counts and logs a head that hyper's parser refused and answered itself (400, 414 or
    /// 431, with no body and no request id); an HTTP/2 preface gets no answer at all.
    pub fn refused_by_parser(&self, e: &hyper::Error) {
        if !e.is_parse() || e.is_parse_version_h2() {
            return;
        }
        let status = if !e.is_parse_too_large() {
            StatusCode::BAD_REQUEST
        } else if e.to_string().contains("URI too long") {
            StatusCode::URI_TOO_LONG
        } else {
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE
        };
        self.shared.count_local("-", status.as_u16());
        if access_log_enabled() {
            body::log_refused(status.as_u16(), 0, "-");
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
        if member.record_failure(now_ms, pool.passive) {
            // Dropped if the member has left its pool meanwhile: a request that was in flight
            // when it left must not report on it afterwards.
            self.shared.events.push_member(
                "passive",
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

    #[allow(clippy::too_many_arguments)]
    fn respond(
        &self,
        answer: upstream::Answer,
        (idx, member): (usize, &Arc<Member>),
        plan: &Plan<'_>,
        rid: &HeaderValue,
        guard: crate::pool::InFlight,
        mut log: Option<Box<AccessLog>>,
        client_upgrade: Option<hyper::upgrade::OnUpgrade>,
    ) -> Response<RespBody> {
        let (mut parts, kind) = match answer {
            upstream::Answer::Direct(resp) => {
                let (parts, body) = resp.into_parts();
                (parts, body::Upstream::Direct(body))
            }
            upstream::Answer::Hyper(mut resp, lease) => {
                if resp.status() == StatusCode::SWITCHING_PROTOCOLS
                    && let Some(client) = client_upgrade
                {
                    let upstream = hyper::upgrade::on(&mut resp);
                    upgrade::bridge(client, upstream, guard);
                    // The member's connection now carries the tunnel: it is not returned to
                    // the pool.
                    drop(lease);
                    let (mut parts, _) = resp.into_parts();
                    self.decorate(&mut parts, (idx, member), plan, rid, &mut log);
                    let tail = Tail {
                        guard: None,
                        log,
                        bytes: 0,
                        complete: true,
                        lease: None,
                    };
                    return Response::from_parts(parts, RespBody::empty(tail));
                }
                let (parts, body) = resp.into_parts();
                (parts, body::Upstream::Hyper(body, lease))
            }
        };
        self.decorate(&mut parts, (idx, member), plan, rid, &mut log);
        let tail = Tail {
            guard: Some(guard),
            log,
            bytes: 0,
            complete: false,
            lease: None,
        };
        let stall = plan.pool.settings.response_timeout;
        Response::from_parts(parts, RespBody::upstream(kind, tail, stall))
    }

    /// The member's head as the client gets it: this proxy's HTTP/1.1, hop-by-hop fields gone
    /// (unless the protocol switches), request id, upstream and sticky cookie added.
    fn decorate(
        &self,
        parts: &mut http::response::Parts,
        (idx, member): (usize, &Arc<Member>),
        plan: &Plan<'_>,
        rid: &HeaderValue,
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
        h.insert(&headers::X_REQUEST_ID, rid.clone());
        if plan.snap.settings.upstream_header {
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

/// Decides the request key and the sticky member before the first attempt.
fn plan<'a>(
    snap: &'a Snapshot,
    pool: &'a Pool,
    req: &Request<ClientBody>,
    peer: SocketAddr,
    max_body: u64,
) -> Plan<'a> {
    let ps = &pool.settings;
    let key = match ps.algorithm {
        Algorithm::IpHash => Some(ip_key(peer)),
        Algorithm::HeaderHash => ps
            .hash_header
            .as_ref()
            .and_then(|h| req.headers().get(h))
            .map(|v| select::stable_hash(v.as_bytes())),
        _ => None,
    };
    let mut plan = Plan {
        snap,
        pool,
        key,
        sticky_pick: None,
        sticky_cookie: ps.sticky == StickyMode::Cookie,
        cookie_id: None,
        cookie_hash: None,
        max_body,
    };
    if !plan.sticky_cookie {
        return plan;
    }
    let Some(value) = sticky::find_cookie(req.headers(), &ps.cookie_name) else {
        return plan;
    };
    let now_ms = clock::now_ms();
    plan.cookie_id = sticky::parse_id(value);
    let hash = select::stable_hash(value.as_bytes());
    plan.cookie_hash = Some(hash);
    let pinned = plan
        .cookie_id
        .and_then(|id| pool.find(id))
        .filter(|&i| pool.members[i].is_available(now_ms));
    plan.sticky_pick = pinned.or_else(|| {
        // The pinned member is gone: every balancer hashes the same cookie to the same new
        // member, and the response re-issues the cookie for it.
        let cx = PickContext {
            now_ms,
            slow_start_ms: ps.slow_start.as_millis() as u64,
            key: None,
            exclude: &[],
        };
        select::rendezvous_pick(&pool.members, &cx, hash)
    });
    plan
}

fn ip_key(peer: SocketAddr) -> u64 {
    match peer.ip() {
        std::net::IpAddr::V4(v4) => select::stable_hash(&v4.octets()),
        std::net::IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => select::stable_hash(&v4.octets()),
            None => select::stable_hash(&v6.octets()),
        },
    }
}

fn is_idempotent(m: &Method) -> bool {
    matches!(
        *m,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::PUT | Method::DELETE | Method::TRACE
    )
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

fn access_log_enabled() -> bool {
    tracing::enabled!(target: "access", tracing::Level::INFO)
}

/// A short response made here, logged like any other.
pub fn error_response(
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
        lease: None,
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
