//! Connections to members: a per-thread pool of idle HTTP/1.1 connections, and sending one
//! request with the connect and response timeouts.
//!
//! Why not hyper-util's pooled client: it drops the request when a connection fails, so a POST
//! whose member just died could not be sent elsewhere. Here the request comes back whenever it
//! was provably not sent (connect failure, or a pooled connection that closed before writing),
//! which is what lets the proxy lose nothing when a replica dies. Each worker thread keeps its
//! own idle list, so checkout takes no lock shared between threads. A connection goes back to
//! the list when its response body has been read to the end (the [`Lease`] rides along with
//! the body); one whose body was abandoned is closed, since it has bytes left in flight.

use std::cell::RefCell;
use std::net::SocketAddr;
use std::time::Duration;

use http::{Request, Response};
use hyper::body::Incoming;
use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use super::body::{ReqBody, Sent, Stalled, TooLarge};
use crate::clock;

/// Idle connections kept per member and thread.
const MAX_IDLE_PER_MEMBER: usize = 512;

struct Idle {
    tx: SendRequest<ReqBody>,
    since_ms: u64,
}

thread_local! {
    /// Per member address, its idle connections. A pool has few members: a linear scan beats
    /// hashing the address twice per request.
    static IDLE: RefCell<Vec<(SocketAddr, Vec<Idle>)>> = const { RefCell::new(Vec::new()) };
}

/// How an attempt failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailKind {
    /// Could not connect (refused, unreachable, connect timeout).
    Connect,
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
}

/// A failed attempt; `request` is the request back when it was provably not sent.
#[derive(Debug)]
pub struct Failure {
    /// What went wrong.
    pub kind: FailKind,
    /// The unsent request, to try elsewhere.
    pub request: Option<Request<ReqBody>>,
}

/// A connection lent to one exchange; it returns to the idle list with [`Lease::release`].
#[derive(Debug)]
pub struct Lease {
    addr: SocketAddr,
    tx: SendRequest<ReqBody>,
}

impl Lease {
    /// Returns the connection for reuse: call only once the response body was read to its end.
    pub fn release(self) {
        checkin(self.addr, self.tx);
    }
}

/// Sends `req` to `addr`: reuses an idle connection or opens one, waits for response headers.
/// With a body, the response timeout starts once `sent` says the body has all gone.
pub async fn send(
    addr: SocketAddr,
    req: Request<ReqBody>,
    sent: Option<&Sent>,
    connect_timeout: Duration,
    response_timeout: Duration,
    idle_timeout: Duration,
) -> Result<(Response<Incoming>, Lease), Failure> {
    let (mut tx, reused) = match checkout(addr, idle_timeout) {
        Some(tx) => (tx, true),
        None => match connect(addr, connect_timeout).await {
            Ok(tx) => (tx, false),
            Err(()) => {
                return Err(Failure {
                    kind: FailKind::Connect,
                    request: Some(req),
                });
            }
        },
    };
    let fut = tx.try_send_request(req);
    tokio::pin!(fut);
    let answered = match sent {
        Some(sent) => answer_with_body(&mut fut, sent, response_timeout).await,
        None => tokio::time::timeout(response_timeout, &mut fut).await.ok(),
    };
    match answered {
        Some(Ok(resp)) => Ok((resp, Lease { addr, tx })),
        Some(Err(mut e)) => {
            let request = e.take_message();
            let err = e.into_error();
            let kind = classify(&err, request.is_some(), reused);
            Err(Failure { kind, request })
        }
        None => Err(Failure {
            kind: FailKind::Timeout,
            request: None,
        }),
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

async fn connect(addr: SocketAddr, timeout: Duration) -> Result<SendRequest<ReqBody>, ()> {
    let stream = match tokio::time::timeout(timeout, TcpStream::connect(addr)).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            tracing::debug!(%addr, error = %e, "connect failed");
            return Err(());
        }
        Err(_) => {
            tracing::debug!(%addr, "connect timed out");
            return Err(());
        }
    };
    let _ = stream.set_nodelay(true);
    let (tx, conn) = http1::Builder::new()
        .handshake(TokioIo::new(stream))
        .await
        .map_err(|e| tracing::debug!(%addr, error = %e, "handshake failed"))?;
    tokio::spawn(async move {
        if let Err(e) = conn.with_upgrades().await {
            tracing::debug!(%addr, error = %e, "upstream connection ended");
        }
    });
    Ok(tx)
}

fn checkout(addr: SocketAddr, idle_timeout: Duration) -> Option<SendRequest<ReqBody>> {
    let now = clock::now_ms();
    let max_idle = idle_timeout.as_millis() as u64;
    IDLE.with(|idle| {
        let mut idle = idle.borrow_mut();
        let list = idle
            .iter_mut()
            .find_map(|(a, list)| (*a == addr).then_some(list))?;
        // Newest first: the most recently used connection is the least likely to have been
        // closed by the member's keep-alive timer.
        for _ in 0..list.len() {
            let c = list.pop()?;
            if c.tx.is_closed() || now.saturating_sub(c.since_ms) > max_idle {
                continue;
            }
            if c.tx.is_ready() {
                return Some(c.tx);
            }
            // Its connection task has not caught up with the finished body yet: keep it for
            // later and try an older one.
            list.insert(0, c);
        }
        None
    })
}

fn checkin(addr: SocketAddr, tx: SendRequest<ReqBody>) {
    if tx.is_closed() {
        return;
    }
    let since_ms = clock::now_ms();
    IDLE.with(|idle| {
        let mut idle = idle.borrow_mut();
        let c = Idle { tx, since_ms };
        match idle.iter_mut().find(|(a, _)| *a == addr) {
            Some((_, list)) if list.len() < MAX_IDLE_PER_MEMBER => list.push(c),
            Some(_) => {}
            None => idle.push((addr, vec![c])),
        }
    });
}

/// Closes this thread's idle connections that expired, closed, or belong to members no
/// longer in `live`.
pub fn sweep(idle_timeout: Duration, live: &dyn Fn(&SocketAddr) -> bool) {
    let now = clock::now_ms();
    let max_idle = idle_timeout.as_millis() as u64;
    IDLE.with(|idle| {
        let mut idle = idle.borrow_mut();
        idle.retain_mut(|(addr, list)| {
            let keep_member = live(addr);
            list.retain(|c| {
                !c.tx.is_closed() && keep_member && now.saturating_sub(c.since_ms) <= max_idle
            });
            !list.is_empty()
        });
    });
}
