//! Connections to members: a per-thread pool of idle HTTP/1.1 connections, and sending one
//! request with the connect and response timeouts.
//!
//! Why not hyper-util's pooled client: it drops the request when a connection fails, so a POST
//! whose member just died could not be sent elsewhere. Here the request comes back whenever it
//! was provably not sent (connect failure, or a pooled connection that closed before writing),
//! which is what lets the proxy lose nothing when a replica dies. Each worker thread keeps its
//! own idle list, so checkout takes no lock shared between threads. A connection goes back to
//! the list when its response body has been read to the end (the [`Lease`] rides along with
//! the body and returns it when dropped finished); one whose body was abandoned is closed,
//! since it has bytes left in flight.
//!
//! Requests without a body (nearly all) go over connections this task drives itself
//! ([`super::direct`]); requests with a body, upgrades and tunnels over hyper's. Each kind has
//! its own idle list.

use std::cell::RefCell;
use std::net::SocketAddr;
use std::time::Duration;

use http::{Method, Request, Response};
use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use super::direct;
use super::headers::Forwarding;
use super::lease::{Idle, Lease, MemberBody};
use super::request_body::{ReqBody, Sent, Stalled, TooLarge};
use crate::clock;

/// Idle connections kept per member and thread.
const MAX_IDLE_PER_MEMBER: usize = 512;

/// Per member address, its idle connections, newest last. A pool has few members: a linear
/// scan beats hashing the address twice per request.
struct IdleList<C>(Vec<(SocketAddr, Vec<(C, u64)>)>);

/// What checkout makes of an idle connection.
enum Verdict {
    Use,
    /// Not ready yet: keep it, try an older one.
    Later,
    Drop,
}

impl<C> IdleList<C> {
    /// The newest usable connection to `addr`: the most recently used one is the least likely
    /// to have been closed by the member's keep-alive timer.
    fn take(&mut self, addr: SocketAddr, verdict: impl Fn(&C, u64) -> Verdict) -> Option<C> {
        let now = clock::now_ms();
        let list = self
            .0
            .iter_mut()
            .find_map(|(a, list)| (*a == addr).then_some(list))?;
        for _ in 0..list.len() {
            let (c, since) = list.pop()?;
            match verdict(&c, now.saturating_sub(since)) {
                Verdict::Use => return Some(c),
                Verdict::Later => list.insert(0, (c, since)),
                Verdict::Drop => {}
            }
        }
        None
    }

    fn put(&mut self, addr: SocketAddr, c: C) {
        let since = clock::now_ms();
        match self.0.iter_mut().find(|(a, _)| *a == addr) {
            Some((_, list)) if list.len() < MAX_IDLE_PER_MEMBER => list.push((c, since)),
            Some(_) => {}
            None => self.0.push((addr, vec![(c, since)])),
        }
    }

    /// Keeps the connections of members in `live` that `keep` accepts.
    fn sweep(&mut self, live: &dyn Fn(&SocketAddr) -> bool, keep: impl Fn(&C, u64) -> bool) {
        let now = clock::now_ms();
        self.0.retain_mut(|(addr, list)| {
            let member_kept = live(addr);
            list.retain(|(c, since)| member_kept && keep(c, now.saturating_sub(*since)));
            !list.is_empty()
        });
    }
}

thread_local! {
    /// hyper connections (requests with a body, upgrades).
    static IDLE: RefCell<IdleList<SendRequest<ReqBody>>> = const { RefCell::new(IdleList(Vec::new())) };
    /// Connections this thread drives itself (requests without a body).
    static IDLE_DIRECT: RefCell<IdleList<direct::Conn>> = const { RefCell::new(IdleList(Vec::new())) };
}

/// How an attempt failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FailKind {
    /// Could not connect (refused, unreachable).
    Connect,
    /// The connection was not established within the connect timeout (as nginx, a 504 when it
    /// is the last failure; like `Connect`, nothing was sent, so another member may be tried).
    ConnectTimeout,
    /// A pooled connection closed before the request was written: the member is not at fault.
    Stale,
    /// Sent, then the connection broke before any response byte.
    Reset,
    /// No response headers within the response timeout.
    Timeout,
    /// The client's body exceeded the limit while streaming.
    TooLarge,
    /// The client's body failed (client went away mid-upload).
    ClientBody,
    /// The client paused its body longer than the idle timeout.
    ClientStalled,
    /// The member's response head was malformed or too large.
    Invalid,
}

/// A failed attempt, and whether its request can be sent again: provably not sent, or
/// resendable (see [`Attempt::resendable`]).
#[derive(Debug)]
pub(crate) struct Failure {
    /// What went wrong.
    pub(crate) kind: FailKind,
    /// A given request back, to try elsewhere ([`Outgoing::Given`]).
    pub(crate) request: Option<Box<Request<ReqBody>>>,
    /// Whether the request may be sent again (a lent one is still with its owner).
    pub(crate) came_back: bool,
}

impl Failure {
    fn given(kind: FailKind, request: Option<Box<Request<ReqBody>>>) -> Self {
        let came_back = request.is_some();
        Failure {
            kind,
            request,
            came_back,
        }
    }
}

/// The request one attempt sends.
#[derive(Debug)]
pub(crate) enum Outgoing<'r> {
    /// A request this task drives itself ([`is_direct`]), lent: it stays with the caller, who
    /// may send it again, or to two members at once (a hedge). `Forwarding` holds the fields
    /// the proxy adds, written with the head rather than put in the map.
    Lent(&'r Request<ReqBody>, Forwarding<'r>),
    /// A request with a body (or an upgrade), given to hyper: it comes back in the
    /// [`Failure`] while provably unsent.
    Given(Box<Request<ReqBody>>),
}

impl Idle for SendRequest<ReqBody> {
    fn checkin(self, addr: SocketAddr) {
        if !self.is_closed() {
            IDLE.with(|idle| idle.borrow_mut().put(addr, self));
        }
    }
}

impl Idle for direct::Conn {
    fn checkin(self, addr: SocketAddr) {
        IDLE_DIRECT.with(|idle| idle.borrow_mut().put(addr, self));
    }
}

/// Timeouts of one attempt.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Timeouts {
    /// To open a connection.
    pub(crate) connect: Duration,
    /// From the request (or its body) sent to the response head.
    pub(crate) response: Duration,
    /// How long a connection may sit idle before it is not reused.
    pub(crate) idle: Duration,
}

/// How one attempt is made.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Attempt<'a> {
    /// With a body: says when it has all gone (the response timeout starts then).
    pub(crate) sent: Option<&'a Sent>,
    /// The timeouts.
    pub(crate) timeouts: Timeouts,
    /// Whether the request may be sent again once sent (idempotent, no body): it then comes
    /// back after any failure, and a reused connection the member had already closed counts
    /// as stale rather than as the member's failure.
    pub(crate) resendable: bool,
    /// Open a new connection rather than reuse one: after a reused connection closed under
    /// the request, so a request that itself kills the member is charged on the next try
    /// instead of being resent on every pooled connection.
    pub(crate) fresh: bool,
}

/// Whether a request goes over a connection this task drives ([`direct`]): no body, no
/// upgrade, no tunnel. The rest go through hyper.
pub(crate) fn is_direct(method: &Method, empty_body: bool, upgrade: bool) -> bool {
    empty_body && !upgrade && method != Method::CONNECT
}

/// Sends `req` to `addr`: reuses an idle connection or opens one, waits for response headers.
/// Dropped before it is done, the attempt is cancelled and its connection closed.
pub(crate) async fn send(
    addr: SocketAddr,
    req: Outgoing<'_>,
    a: Attempt<'_>,
) -> Result<Response<MemberBody>, Failure> {
    let req = match req {
        Outgoing::Lent(req, fwd) => return send_direct(addr, req, &a, &fwd).await,
        Outgoing::Given(req) => req,
    };
    let (sent, t) = (a.sent, a.timeouts);
    let (mut tx, reused) = match checkout(addr, t.idle) {
        Some(tx) => (tx, true),
        None => match connect(addr, t.connect).await {
            Ok(tx) => (tx, false),
            Err(kind) => return Err(Failure::given(kind, Some(req))),
        },
    };
    let fut = tx.try_send_request(*req);
    tokio::pin!(fut);
    let answered = match sent {
        Some(sent) => answer_with_body(&mut fut, sent, t.response).await,
        None => tokio::time::timeout(t.response, &mut fut).await.ok(),
    };
    match answered {
        Some(Ok(resp)) => Ok(resp.map(|body| MemberBody::Hyper(body, Lease::new(addr, tx)))),
        Some(Err(mut e)) => {
            let request = e.take_message().map(Box::new);
            let err = e.into_error();
            let kind = classify(&err, request.is_some(), reused);
            Err(Failure::given(kind, request))
        }
        None => Err(Failure::given(FailKind::Timeout, None)),
    }
}

async fn send_direct(
    addr: SocketAddr,
    req: &Request<ReqBody>,
    a: &Attempt<'_>,
    fwd: &Forwarding<'_>,
) -> Result<Response<MemberBody>, Failure> {
    let (t, resendable) = (a.timeouts, a.resendable);
    let pooled = if a.fresh {
        None
    } else {
        checkout_direct(addr, t.idle)
    };
    let (conn, reused) = match pooled {
        Some(c) => (c, true),
        None => match tcp(addr, t.connect).await {
            Ok(io) => (direct::Conn::new(io), false),
            Err(kind) => {
                return Err(Failure {
                    kind,
                    request: None,
                    came_back: true,
                });
            }
        },
    };
    match direct::Conn::exchange(Lease::new(addr, conn), req, fwd, t.response).await {
        Ok(resp) => Ok(resp.map(MemberBody::Direct)),
        Err(e) => {
            let (kind, unsent) = match e {
                direct::Error::Unwritten if reused => (FailKind::Stale, true),
                direct::Error::Unwritten => (FailKind::Connect, true),
                direct::Error::Closed if reused && resendable => (FailKind::Stale, false),
                direct::Error::Closed => (FailKind::Reset, false),
                direct::Error::Timeout => (FailKind::Timeout, false),
                direct::Error::Invalid => (FailKind::Invalid, false),
            };
            Err(Failure {
                kind,
                request: None,
                came_back: unsent || resendable,
            })
        }
    }
}

/// Waits for the answer to a request whose body is still going out; `None` on timeout. While
/// the client is the one pausing there is no deadline here (the body's idle timeout covers
/// it); while the member does not take the body, `response_timeout` without progress ends it;
/// once the body has all gone, the member has `response_timeout` to answer.
async fn answer_with_body<F: Future + Unpin>(
    fut: &mut F,
    sent: &Sent,
    response_timeout: Duration,
) -> Option<F::Output> {
    let limit = response_timeout.as_millis() as u64;
    loop {
        let waited = sent
            .member_turn_since()
            .map_or(0, |since| clock::now_ms().saturating_sub(since));
        if waited >= limit {
            return None;
        }
        tokio::select! {
            biased;
            r = &mut *fut => return Some(r),
            () = sent.wait() => return tokio::time::timeout(response_timeout, fut).await.ok(),
            () = tokio::time::sleep(Duration::from_millis(limit - waited)) => {}
        }
    }
}

fn classify(err: &hyper::Error, unsent: bool, reused: bool) -> FailKind {
    let mut src: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(err);
    while let Some(s) = src {
        if s.is::<TooLarge>() {
            return FailKind::TooLarge;
        }
        if s.is::<Stalled>() {
            return FailKind::ClientStalled;
        }
        src = s.source();
    }
    if err.is_user() {
        return FailKind::ClientBody;
    }
    if unsent && reused {
        FailKind::Stale
    } else if unsent {
        FailKind::Connect
    } else {
        FailKind::Reset
    }
}

async fn tcp(addr: SocketAddr, timeout: Duration) -> Result<TcpStream, FailKind> {
    let stream = match tokio::time::timeout(timeout, TcpStream::connect(addr)).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            tracing::debug!(%addr, error = %e, "connect failed");
            return Err(FailKind::Connect);
        }
        Err(_) => {
            tracing::debug!(%addr, "connect timed out");
            return Err(FailKind::ConnectTimeout);
        }
    };
    let _ = stream.set_nodelay(true);
    Ok(stream)
}

async fn connect(addr: SocketAddr, timeout: Duration) -> Result<SendRequest<ReqBody>, FailKind> {
    let stream = tcp(addr, timeout).await?;
    let (tx, conn) = http1::Builder::new()
        .handshake(TokioIo::new(stream))
        .await
        .map_err(|e| {
            tracing::debug!(%addr, error = %e, "handshake failed");
            FailKind::Connect
        })?;
    tokio::spawn(async move {
        if let Err(e) = conn.with_upgrades().await {
            tracing::debug!(%addr, error = %e, "upstream connection ended");
        }
    });
    Ok(tx)
}

fn checkout(addr: SocketAddr, idle_timeout: Duration) -> Option<SendRequest<ReqBody>> {
    let max_idle = idle_timeout.as_millis() as u64;
    IDLE.with(|idle| {
        idle.borrow_mut().take(addr, |tx, idle_ms| {
            if tx.is_closed() || idle_ms > max_idle {
                Verdict::Drop
            } else if tx.is_ready() {
                Verdict::Use
            } else {
                // Its connection task has not caught up with the finished body yet.
                Verdict::Later
            }
        })
    })
}

fn checkout_direct(addr: SocketAddr, idle_timeout: Duration) -> Option<direct::Conn> {
    let max_idle = idle_timeout.as_millis() as u64;
    IDLE_DIRECT.with(|idle| {
        idle.borrow_mut().take(addr, |c, idle_ms| {
            // Every time: bytes a member sent after a response's end must never be read as
            // the next response, and the probe is free while the socket is not readable.
            if idle_ms > max_idle || !c.probe() {
                Verdict::Drop
            } else {
                Verdict::Use
            }
        })
    })
}

/// Closes this thread's idle connections that expired, closed, or belong to members no
/// longer in `live`.
pub(crate) fn sweep(idle_timeout: Duration, live: &dyn Fn(&SocketAddr) -> bool) {
    let max_idle = idle_timeout.as_millis() as u64;
    IDLE.with(|idle| {
        idle.borrow_mut()
            .sweep(live, |tx, idle_ms| !tx.is_closed() && idle_ms <= max_idle);
    });
    IDLE_DIRECT.with(|idle| {
        idle.borrow_mut()
            .sweep(live, |c, idle_ms| idle_ms <= max_idle && c.probe());
    });
}
