//! The client connection's own loop for plain requests: a head with no body, no upgrade and no
//! expectation (nearly every GET). It parses the head with httparse, proxies the request, and
//! writes the response head and body itself, one write for a small response.
//!
//! Why not hyper's server for these: its dispatcher, `HeaderMap` encoding and per-request
//! header-read timer cost more instructions than the rest of the proxy together
//! (docs/benchmarks.md). The first request that is not plain (a body, `Content-Length` or
//! `Transfer-Encoding` at all, an upgrade, `Expect`, CONNECT, an absolute-form target, a head
//! that does not parse or is too large) hands the connection, with every byte not yet used, to
//! hyper behind the framing guard for the rest of its life: hyper then answers 400 or 431 or
//! serves it as before.
//!
//! Memory: a connection waiting for a request holds as little as it can, because ten
//! thousand idle or slow ones must fit in a few tens of MB (docs/benchmarks.md, flood). It
//! reads through its worker's scratch buffer and keeps only the bytes that came (a partial
//! head's, not a whole read buffer), writes through a buffer it borrows from the worker for
//! the response, and keeps the request's future (several KB) in a box that exists only while
//! the request is in flight. A head that does not arrive within the idle timeout gets 408.

use std::cell::RefCell;
use std::future::{Future, poll_fn};
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::{Bytes, BytesMut};
use http::{Request, Response, StatusCode, header};
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;

use super::ServerLimits;
use super::idle::Place;
use crate::clock::IdleTimer;
use crate::error::ProxyError;
use crate::http1::FieldSpans;
use crate::proxy::body::{RespBody, Tail};
use crate::proxy::{ClientBody, Proxy, access_log};

mod parse;
mod respond;
#[cfg(test)]
mod tests;

use parse::{Parsed, parse};

/// How the plain loop ended.
#[derive(Debug)]
pub(super) enum End {
    /// The connection is finished.
    Closed,
    /// A request that is not plain arrived: hyper serves the rest, starting with `rest`.
    Handover(TcpStream, Bytes),
}

/// Serves plain requests on `io` until the connection ends or one is not plain.
pub(super) async fn serve(
    io: TcpStream,
    peer: SocketAddr,
    proxy: &Proxy,
    limits: ServerLimits,
    stop: &CancellationToken,
) -> End {
    let mut conn = Conn::new(io, limits);
    let cancelled = stop.cancelled();
    tokio::pin!(cancelled);
    loop {
        let (req, meta) = match conn.read_head(limits, cancelled.as_mut()).await {
            Read::Plain(req, meta) => (req, meta),
            Read::Invalid => {
                let resp = proxy.reject(ProxyError::BadRequest);
                let _ = conn.write_response(resp, Meta::CLOSE, false).await;
                return End::Closed;
            }
            Read::TimedOut => {
                let _ = conn
                    .write_response(head_timed_out(proxy), Meta::CLOSE, false)
                    .await;
                return End::Closed;
            }
            Read::Other => return End::Handover(conn.io, conn.buf.freeze()),
            Read::Closed => return End::Closed,
        };
        let_the_others_read().await;
        // Boxed, and only while the request is in flight: inline, its 4 KiB would sit in every
        // connection's state while the connection waits for a head, most of its life. One
        // allocation per request, which mimalloc serves from the thread's free list; req/s
        // unchanged (docs/benchmarks.md, flood).
        let answered = {
            let mut handling = Box::pin(proxy.handle(req, peer, false));
            conn.answer(handling.as_mut(), limits).await
        };
        let Some(resp) = answered else {
            // The client left: the request was dropped, with its member connection.
            return End::Closed;
        };
        let stopping = stop.is_cancelled();
        match conn.write_response(resp, meta, stopping).await {
            Ok(true) if !stopping => {}
            _ => return End::Closed,
        }
    }
}

/// The answer to a head that did not arrive within the idle timeout, counted and logged like
/// the balancer's other answers.
fn head_timed_out(proxy: &Proxy) -> Response<RespBody> {
    const BODY: &str = "408 Request Timeout: the request head did not arrive in time\n";
    proxy.shared.clients.cap.add_head_timeout();
    proxy
        .shared
        .count_local(crate::local_responses::UNROUTED, 408);
    if access_log::enabled() {
        access_log::log_refused(408, BODY.len() as u64, "-");
    }
    let tail = Tail {
        guard: None,
        log: None,
        bytes: 0,
        complete: false,
    };
    let mut resp = Response::new(RespBody::full(BODY, tail));
    *resp.status_mut() = StatusCode::REQUEST_TIMEOUT;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        http::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    resp
}

/// Steps back once, to the end of the worker's run queue, so the other connections woken by
/// the same epoll pass read and parse their requests first and this worker's sends to members
/// go out back to back: a member then wakes once for several requests, and the worker is
/// preempted less by those wake-ups. Measured: about 10 % fewer member wake-ups, fewer
/// preemptions and a lower p99, for 566 instructions per GET; req/s level (docs/benchmarks.md,
/// session 5).
///
/// Not `tokio::task::yield_now`: that one waits for the next poll of the reactor, one more
/// `epoll_wait` per request.
async fn let_the_others_read() {
    let mut stepped_back = false;
    poll_fn(|cx| {
        if stepped_back {
            return Poll::Ready(());
        }
        stepped_back = true;
        cx.waker().wake_by_ref();
        Poll::Pending
    })
    .await;
}

/// What a request asked of its connection.
#[derive(Debug, Clone, Copy)]
struct Meta {
    /// HEAD: the response has no body.
    head_only: bool,
    /// The client may send another request.
    keep_alive: bool,
    /// HTTP/1.0: no chunked responses, keep-alive only on request.
    http10: bool,
}

impl Meta {
    const CLOSE: Meta = Meta {
        head_only: false,
        keep_alive: false,
        http10: false,
    };
}

// Not boxed: the request is moved once, and a box would cost an allocation per request.
#[allow(clippy::large_enum_variant)]
enum Read {
    Plain(Request<ClientBody>, Meta),
    /// Parsed, but its target or a field is not valid HTTP: 400.
    Invalid,
    /// Not plain: hyper takes over.
    Other,
    /// Part of a head came, the rest not within the idle timeout: 408.
    TimedOut,
    Closed,
}

/// How much one read takes at most.
const READ_CHUNK: usize = 16 * 1024;

thread_local! {
    /// The worker's read buffer: a connection reads into it and keeps only what came.
    static SCRATCH: RefCell<Box<[u8]>> = RefCell::new(vec![0; READ_CHUNK].into_boxed_slice());
    /// Where the fields of the head being parsed sit (used within one `parse`).
    static SPANS: RefCell<FieldSpans> = RefCell::new(FieldSpans::default());
}

/// Reads what has arrived on `io`, at most `room` bytes, onto the end of `buf`, through the
/// worker's scratch buffer: `buf` grows by what came, not by a read buffer's size. `Ok(0)`:
/// the client closed its side.
fn poll_fill(
    io: &TcpStream,
    buf: &mut BytesMut,
    room: usize,
    cx: &mut Context<'_>,
) -> Poll<io::Result<usize>> {
    loop {
        ready!(io.poll_read_ready(cx))?;
        let read = SCRATCH.with_borrow_mut(|scratch| -> io::Result<usize> {
            let n = room.clamp(1, scratch.len());
            let got = io.try_read(&mut scratch[..n])?;
            buf.extend_from_slice(&scratch[..got]);
            Ok(got)
        });
        match read {
            // The readiness was stale: wait for the next.
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            r => return Poll::Ready(r),
        }
    }
}

struct Conn {
    io: TcpStream,
    /// Bytes read and not yet used; no allocation while there are none.
    buf: BytesMut,
    /// The response being written, borrowed from the worker while it is (`respond`).
    out: Vec<u8>,
    /// Keep-alive idle and head read timeout.
    idle: IdleTimer,
    /// The connection's place among those the connection cap may close.
    place: Place,
}

impl Conn {
    fn new(io: TcpStream, limits: ServerLimits) -> Self {
        Conn {
            io,
            buf: BytesMut::new(),
            out: Vec::new(),
            idle: IdleTimer::new(limits.idle_timeout),
            place: Place::new(),
        }
    }

    /// Waits for `handling` while watching the client, as hyper does: a client that hangs up
    /// drops its request (and the member connection) instead of holding it until the member
    /// answers. Bytes it pipelines meanwhile are kept, up to the head limit.
    async fn answer<F>(
        &mut self,
        mut handling: Pin<&mut F>,
        limits: ServerLimits,
    ) -> Option<Response<RespBody>>
    where
        F: Future<Output = Response<RespBody>>,
    {
        let mut watching = true;
        poll_fn(|cx| {
            if let Poll::Ready(resp) = handling.as_mut().poll(cx) {
                return Poll::Ready(Some(resp));
            }
            while watching && self.buf.len() < limits.max_header_bytes {
                let room = limits.max_header_bytes - self.buf.len();
                match poll_fill(&self.io, &mut self.buf, room, cx) {
                    Poll::Ready(Ok(0)) => {
                        // A half-close may still await its answer; nothing more can come.
                        if self.buf.is_empty() {
                            return Poll::Ready(None);
                        }
                        watching = false;
                    }
                    Poll::Ready(Err(_)) => return Poll::Ready(None),
                    Poll::Ready(Ok(_)) => {}
                    Poll::Pending => break,
                }
            }
            Poll::Pending
        })
        .await
    }

    async fn read_head(
        &mut self,
        limits: ServerLimits,
        cancelled: Pin<&mut tokio_util::sync::WaitForCancellationFuture<'_>>,
    ) -> Read {
        self.idle.progressed();
        // Waiting for a head from here: the connection cap may close this connection.
        self.place.waiting();
        let read = self.read_head_inner(limits, cancelled).await;
        self.place.busy();
        read
    }

    async fn read_head_inner(
        &mut self,
        limits: ServerLimits,
        mut cancelled: Pin<&mut tokio_util::sync::WaitForCancellationFuture<'_>>,
    ) -> Read {
        loop {
            if !self.buf.is_empty() {
                let parsed = SPANS
                    .with_borrow_mut(|spans| parse(&mut self.buf, spans, limits.max_header_bytes));
                match parsed {
                    Parsed::Plain(req, meta) => return Read::Plain(req, meta),
                    Parsed::Invalid => return Read::Invalid,
                    Parsed::Other => return Read::Other,
                    Parsed::Partial if self.buf.len() >= limits.max_header_bytes => {
                        return Read::Other;
                    }
                    Parsed::Partial => {}
                }
            } else if self.buf.capacity() > 0 {
                // Nothing pending: an idle connection keeps no read room. (An empty `buf` may
                // still hold the last head's allocation, which a next head of its size reuses.)
                self.buf = BytesMut::new();
            }
            let between = self.buf.is_empty();
            let room = limits.max_header_bytes - self.buf.len();
            let filled = poll_fn(|cx| {
                if self.place.evicted(cx.waker()) {
                    // Closed to make room under the connection cap.
                    return Poll::Ready(Fill::Closed);
                }
                match poll_fill(&self.io, &mut self.buf, room, cx) {
                    Poll::Ready(Ok(n)) if n > 0 => Poll::Ready(Fill::Got),
                    Poll::Ready(_) => Poll::Ready(Fill::Closed),
                    // Shutting down: a connection with nothing sent just closes; one whose
                    // request has arrived is still answered.
                    Poll::Pending if between && cancelled.as_mut().poll(cx).is_ready() => {
                        Poll::Ready(if self.read_arrived() {
                            Fill::Got
                        } else {
                            Fill::Closed
                        })
                    }
                    Poll::Pending => self.idle.poll_expired(cx).map(|()| Fill::Expired),
                }
            })
            .await;
            match filled {
                Fill::Got => {}
                Fill::Closed => return Read::Closed,
                // Between requests the idle timeout just closes; in the middle of a head the
                // client learns why (408), as from HAProxy's `timeout http-request`.
                Fill::Expired if self.buf.is_empty() => return Read::Closed,
                Fill::Expired => return Read::TimedOut,
            }
            // No `progressed` here: the whole head must arrive within the idle timeout, so a
            // client dribbling bytes cannot hold the connection (hyper's header read timeout).
        }
    }

    /// Reads what has arrived with one `recv` of its own, past tokio's readiness: a socket
    /// adopted from another worker, or whose event the reactor has not yet taken, has none.
    /// Whether anything was read.
    fn read_arrived(&mut self) -> bool {
        let mut got = [0u8; 4096];
        let sock = socket2::SockRef::from(&self.io);
        match io::Read::read(&mut &*sock, &mut got) {
            Ok(n) if n > 0 => {
                self.buf.extend_from_slice(&got[..n]);
                true
            }
            _ => false,
        }
    }
}

/// What one wait for head bytes ended with.
enum Fill {
    Got,
    Closed,
    Expired,
}
