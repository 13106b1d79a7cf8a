//! What the request path decides before sending, once for all attempts: the sticky member
//! and hash key ([`plan`]), how the request is readied for members ([`prepare`]), and the pick
//! order of each attempt ([`choose`]).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use http::header::HeaderValue;
use http::{Method, Request, Version};

use super::request_body::{ReqBody, Sent};
use super::retry::Attempts;
use super::{
    ClientBody, declared_length, headers, incoming_is_empty, origin_form, replay, upstream,
};
use crate::config::StickyMode;
use crate::pool::{Member, Pool};
use crate::select::{self, Algorithm, PickContext};
use crate::state::Snapshot;
use crate::{clock, sticky};

/// What the request path decided before sending.
pub(super) struct Plan<'a> {
    pub(super) snap: &'a Snapshot,
    pub(super) pool: &'a Pool,
    pub(super) key: Option<u64>,
    pub(super) sticky_pick: Option<usize>,
    pub(super) sticky_cookie: bool,
    pub(super) cookie_id: Option<crate::pool::MemberId>,
    /// Body limit of the route.
    pub(super) max_body: u64,
    /// Hash of the sticky cookie's value: where the session moves if its member fails, the
    /// same on every balancer.
    pub(super) cookie_hash: Option<u64>,
    /// The client's address.
    pub(super) peer: SocketAddr,
    /// When the request arrived: the retry budget runs from here.
    pub(super) start: Instant,
    /// The request id, sent to the member and back to the client.
    pub(super) rid: HeaderValue,
    /// Name the member in `X-Upstream` (configured, or a request of the active load run).
    pub(super) show_upstream: bool,
}

/// The member an attempt went to.
#[derive(Clone, Copy)]
pub(super) struct Picked<'a> {
    pub(super) idx: usize,
    pub(super) member: &'a Arc<Member>,
}

/// How a request goes to members, decided once for all its attempts.
pub(super) struct Prepared {
    /// The copy an idempotent request's small body is rebuilt from after a failure.
    pub(super) replay: Option<Box<replay::Replay>>,
    /// Says when a streamed body has all gone (the response timeout starts then).
    pub(super) sent: Option<Arc<Sent>>,
    /// Over a connection this task drives ([`upstream::is_direct`]).
    pub(super) direct: bool,
    /// May be sent again after any failure (idempotent, no body).
    pub(super) resendable: bool,
}

impl Prepared {
    /// Whether the request can be sent to a second member while the first still has it: no
    /// body and idempotent, or a small idempotent body kept whole ([`replay`]).
    pub(super) fn hedgeable(&self) -> bool {
        self.resendable || self.replay.is_some()
    }

    /// How each attempt is sent.
    pub(super) fn attempt<'p>(&'p self, plan: &'p Plan<'_>) -> upstream::Attempt<'p> {
        let ps = &plan.pool.settings;
        upstream::Attempt {
            sent: self.sent.as_deref(),
            timeouts: upstream::Timeouts {
                connect: ps.connect_timeout,
                response: ps.response_timeout,
                idle: plan.snap.settings.backend_idle_timeout,
            },
            resendable: self.resendable,
            fresh: false,
        }
    }

    /// The fields added to a request this task drives itself, written with its head.
    pub(super) fn forwarding<'p>(plan: &'p Plan<'_>) -> headers::Forwarding<'p> {
        headers::Forwarding {
            client: plan.peer.ip(),
            request_id: &plan.rid,
        }
    }
}

/// Decides the request key and the sticky member before the first attempt.
pub(super) fn plan<'a>(
    snap: &'a Snapshot,
    pool: &'a Pool,
    req: &Request<ClientBody>,
    peer: SocketAddr,
    max_body: u64,
    start: Instant,
    rid: HeaderValue,
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
        peer,
        start,
        rid,
        show_upstream: snap.settings.upstream_header,
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

/// Readies the request for members: hop-by-hop fields go, forwarding fields come (unless the
/// head is written directly), origin-form, HTTP/1.1, and a body streamed with its limit (and
/// kept for a replay when the request may have one).
pub(super) fn prepare(
    req: Request<ClientBody>,
    plan: &Plan<'_>,
) -> (Box<Request<ReqBody>>, Prepared) {
    let ps = &plan.pool.settings;
    let idempotent = is_idempotent(req.method());
    let (mut parts, incoming) = req.into_parts();
    // Judge the body before Transfer-Encoding (hop-by-hop) is stripped below.
    let empty_body = incoming_is_empty(&incoming, &parts.headers);
    let upgrade = headers::strip_hop_by_hop(&mut parts.headers);
    let direct = upstream::is_direct(&parts.method, empty_body, upgrade);
    if !direct {
        // Direct requests get these written with their head, without the map.
        headers::add_forwarded(&mut parts.headers, plan.peer.ip());
        parts
            .headers
            .insert(&headers::X_REQUEST_ID, plan.rid.clone());
    }
    parts.uri = origin_form(parts.uri);
    parts.version = Version::HTTP_11;
    let mut req = Request::from_parts(parts, ReqBody::Empty);
    let (mut replay, mut sent) = (None, None);
    if let ClientBody::Hyper(incoming) = incoming
        && !empty_body
    {
        let mut keeper = None;
        if idempotent && !upgrade && (ps.retries > 0 || ps.hedge.enabled) {
            (replay, keeper) = replay::Replay::of(&req, declared_length(&req)).unzip();
        }
        let idle = plan.snap.settings.client_idle_timeout;
        let (body, sent_by) = ReqBody::stream(incoming, plan.max_body, idle, keeper);
        *req.body_mut() = body;
        sent = Some(sent_by);
    }
    // A request with no body comes back after a failure and is sent again; one with a body
    // comes back while it provably never left, and an idempotent one whose small body was
    // kept whole is rebuilt from the copy (`replay`).
    let resendable = idempotent && direct;
    let how = Prepared {
        replay,
        sent,
        direct,
        resendable,
    };
    // Boxed: it moves through every attempt and back on failure, and a 232-byte move goes
    // through musl's slow `memcpy` each time (docs/perf/moves.rs).
    (Box::new(req), how)
}

/// The member for the next attempt: the sticky one first; after a failure, where every
/// balancer moves the session; else the pool's algorithm; and when every member is out, the
/// least recently failed.
pub(super) fn choose(plan: &Plan<'_>, attempts: &Attempts, now_ms: u64) -> Option<usize> {
    let cx = PickContext {
        now_ms,
        slow_start_ms: plan.pool.settings.slow_start.as_millis() as u64,
        key: plan.key,
        exclude: attempts.exclude(),
    };
    let sticky = match (attempts.is_first(), plan.sticky_pick, plan.cookie_hash) {
        (true, Some(i), _) => Some(i),
        // A sticky session whose member failed moves where every balancer moves it.
        (_, _, Some(h)) => select::rendezvous_pick(&plan.pool.members, &cx, h),
        _ => None,
    };
    sticky
        .or_else(|| plan.pool.selector.pick(&plan.pool.members, &cx))
        .or_else(|| select::least_recently_failed(&plan.pool.members, &cx))
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

pub(super) fn is_idempotent(m: &Method) -> bool {
    matches!(
        *m,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::PUT | Method::DELETE | Method::TRACE
    )
}
