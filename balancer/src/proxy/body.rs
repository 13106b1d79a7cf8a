//! Bodies on the proxy path, streamed frame by frame, never buffered whole.
//!
//! [`ReqBody`] carries the client's body to a member and enforces the route's size limit and
//! the client idle timeout; [`Sent`] tells when it has all gone.
//! [`RespBody`] carries the member's body (or a short error body) to the client, counts bytes,
//! and when it is done (or dropped) releases the in-flight count and writes the access log.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderValue, Method, Uri};
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use tokio::sync::Notify;

use super::replay::Keeper;
use crate::clock::IdleTimer;
use crate::pool::InFlight;

/// The error a request body yields when it grows past the limit.
#[derive(Debug, thiserror::Error)]
#[error("request body exceeds the limit of {0} bytes")]
pub struct TooLarge(pub u64);

/// The error a request body yields when the client sends nothing for the idle timeout.
#[derive(Debug, thiserror::Error)]
#[error("request body stalled for {0:?}")]
pub struct Stalled(pub Duration);

/// Set once the whole request body went to the member: the response timeout starts then, so
/// a slow upload is not blamed on the member. Until then it tells whose turn it is: the
/// client's (no data yet) or the member's (it has not taken the last frame), and since when.
#[derive(Debug)]
pub struct Sent {
    done: AtomicBool,
    notify: Notify,
    /// When the body last handed a frame to the member's connection (or began).
    progress_ms: AtomicU64,
    /// Whether the body is waiting for the client.
    client_turn: AtomicBool,
}

impl Sent {
    fn new() -> Self {
        Sent {
            done: AtomicBool::new(false),
            notify: Notify::new(),
            progress_ms: AtomicU64::new(crate::clock::now_ms()),
            client_turn: AtomicBool::new(false),
        }
    }

    /// Records that the body now waits for the client.
    fn client_turn_begins(&self) {
        self.client_turn.store(true, Ordering::Relaxed);
    }

    fn progressed(&self) {
        self.progress_ms
            .store(crate::clock::now_ms(), Ordering::Relaxed);
        self.client_turn.store(false, Ordering::Relaxed);
    }

    /// Since when (ms) the member has not taken the body, or `None` while the client is the
    /// one to send.
    pub fn member_turn_since(&self) -> Option<u64> {
        (!self.client_turn.load(Ordering::Relaxed))
            .then(|| self.progress_ms.load(Ordering::Relaxed))
    }

    fn mark(&self) {
        self.done.store(true, Ordering::Release);
        self.notify.notify_waiters();
    }

    /// Resolves once the body has been sent.
    pub async fn wait(&self) {
        loop {
            // Registered before the check, so a `mark` in between is not missed.
            let notified = self.notify.notified();
            if self.done.load(Ordering::Acquire) {
                return;
            }
            notified.await;
        }
    }
}

/// Request body sent to a member.
#[derive(Debug)]
pub enum ReqBody {
    /// No body (the common GET): replayable for retries.
    Empty,
    /// The client's body, streamed (boxed: every request moves this enum several times).
    Stream(Box<Upload>),
    /// A kept body sent again to another member ([`super::replay`]).
    Again(Box<Again>),
}

/// The frames of a kept body, being sent again.
#[derive(Debug)]
pub struct Again {
    frames: std::vec::IntoIter<Bytes>,
    left: u64,
}

/// A client's body on its way to a member, with its size limit and idle timeout.
#[derive(Debug)]
pub struct Upload {
    inner: Incoming,
    remaining: u64,
    limit: u64,
    /// The client idle timeout.
    idle: IdleTimer,
    sent: Arc<Sent>,
    /// Keeps the frames for a replay, while the request may have one.
    keeper: Option<Keeper>,
}

impl Upload {
    /// The whole body has gone to the member.
    fn ended(&mut self) {
        self.sent.mark();
        if let Some(k) = self.keeper.take() {
            k.finish();
        }
    }
}

impl ReqBody {
    /// Streams `inner`, failing with [`TooLarge`] past `limit` bytes and with [`Stalled`] when
    /// the client pauses longer than `idle`; the [`Sent`] is marked at its end. `keeper`
    /// keeps the frames of a request that may be replayed.
    pub fn stream(
        inner: Incoming,
        limit: u64,
        idle: Duration,
        keeper: Option<Keeper>,
    ) -> (Self, Arc<Sent>) {
        let sent = Arc::new(Sent::new());
        let upload = Upload {
            inner,
            remaining: limit,
            limit,
            idle: IdleTimer::new(idle),
            sent: Arc::clone(&sent),
            keeper,
        };
        (ReqBody::Stream(Box::new(upload)), sent)
    }

    /// A kept body, to be sent again.
    pub fn replayed(frames: Vec<Bytes>) -> Self {
        let left = frames.iter().map(|f| f.len() as u64).sum();
        ReqBody::Again(Box::new(Again {
            frames: frames.into_iter(),
            left,
        }))
    }
}

impl Body for ReqBody {
    type Data = Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let up = match self.get_mut() {
            ReqBody::Empty => return Poll::Ready(None),
            ReqBody::Again(again) => {
                let frame = again.frames.next();
                again.left -= frame.as_ref().map_or(0, |f| f.len() as u64);
                return Poll::Ready(frame.map(|f| Ok(Frame::data(f))));
            }
            ReqBody::Stream(up) => up,
        };
        match Pin::new(&mut up.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    let n = data.len() as u64;
                    if n > up.remaining {
                        return Poll::Ready(Some(Err(Box::new(TooLarge(up.limit)))));
                    }
                    up.remaining -= n;
                    if up.keeper.as_mut().is_some_and(|k| !k.keep(data)) {
                        up.keeper = None;
                    }
                }
                up.sent.progressed();
                up.idle.progressed();
                let trailers = frame.is_trailers();
                if trailers {
                    // Trailers are not kept: such a body is not replayed.
                    up.keeper = None;
                }
                // hyper stops polling once a sized body is complete, or after trailers, so
                // None may never come.
                if trailers || up.inner.is_end_stream() {
                    up.ended();
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(Box::new(e)))),
            Poll::Ready(None) => {
                up.ended();
                Poll::Ready(None)
            }
            Poll::Pending => {
                up.sent.client_turn_begins();
                match up.idle.poll_expired(cx) {
                    Poll::Ready(()) => Poll::Ready(Some(Err(Box::new(Stalled(up.idle.limit()))))),
                    Poll::Pending => Poll::Pending,
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ReqBody::Empty => true,
            ReqBody::Again(again) => again.left == 0,
            ReqBody::Stream(up) => up.inner.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ReqBody::Empty => SizeHint::with_exact(0),
            ReqBody::Again(again) => SizeHint::with_exact(again.left),
            ReqBody::Stream(up) => up.inner.size_hint(),
        }
    }
}

/// What the access log says about one request; written when the response body ends.
#[derive(Debug)]
pub struct AccessLog {
    /// Request method.
    pub method: Method,
    /// Request target.
    pub uri: Uri,
    /// Request id.
    pub request_id: HeaderValue,
    /// When the request arrived.
    pub start: Instant,
    /// Response status.
    pub status: u16,
    /// Pool name.
    pub pool: std::sync::Arc<str>,
    /// Member address, if one answered.
    pub upstream: Option<std::net::SocketAddr>,
    /// Attempts made.
    pub attempts: u32,
}

impl AccessLog {
    fn write(&self, bytes: u64, outcome: &'static str) {
        let ms = self.start.elapsed().as_secs_f64() * 1000.0;
        let rid = self.request_id.to_str().unwrap_or("-");
        match self.upstream {
            Some(up) => tracing::info!(
                target: "access",
                method = %self.method, path = %self.uri, status = self.status,
                pool = &*self.pool, upstream = %up, attempts = self.attempts,
                ms = format_args!("{ms:.2}"), bytes, request_id = rid, outcome,
            ),
            None => tracing::info!(
                target: "access",
                method = %self.method, path = %self.uri, status = self.status,
                pool = &*self.pool, upstream = "-", attempts = self.attempts,
                ms = format_args!("{ms:.2}"), bytes, request_id = rid, outcome,
            ),
        }
    }
}

/// nginx's status for a request whose client went away before it was answered.
pub const CLIENT_CLOSED: u16 = 499;

/// An access-log record not yet handed to a response. Dropped while still holding it, the
/// request's future was given up: by its client, which went away first (nginx's 499), or by
/// the balancer (the shutdown grace ran out, or a panic).
#[derive(Debug)]
pub struct Unanswered(Option<Box<AccessLog>>);

impl Unanswered {
    /// Holds `log` (`None` when access logging is off).
    pub fn new(log: Option<Box<AccessLog>>) -> Self {
        Unanswered(log)
    }

    /// The record, to fill in as the request goes.
    pub fn as_mut(&mut self) -> Option<&mut AccessLog> {
        self.0.as_deref_mut()
    }

    /// Hands the record to the response, which writes it when its body ends.
    pub fn take(&mut self) -> Option<Box<AccessLog>> {
        self.0.take()
    }
}

thread_local! {
    /// Set on a worker thread whose shutdown grace ran out: the requests its runtime drops
    /// from then on were abandoned by the balancer, not by their clients.
    static GIVING_UP: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Marks this worker thread as dropping its unfinished requests (the shutdown grace is over).
pub fn give_up_unanswered() {
    GIVING_UP.with(|g| g.set(true));
}

impl Drop for Unanswered {
    fn drop(&mut self) {
        let Some(l) = self.0.as_mut() else {
            return;
        };
        if GIVING_UP.with(std::cell::Cell::get) || std::thread::panicking() {
            // Nothing was sent: the connection just closes.
            l.status = 0;
            l.write(0, "abandoned");
        } else {
            l.status = CLIENT_CLOSED;
            l.write(0, "client-closed");
        }
    }
}

/// The access-log line for bytes refused before they made a request (no method or path to
/// name): a head that does not parse or is over the limit.
pub fn log_refused(status: u16, bytes: u64, request_id: &str) {
    tracing::info!(
        target: "access",
        method = "-", path = "-", status, pool = "-", upstream = "-", attempts = 0u32,
        ms = "0.00", bytes, request_id, outcome = "refused",
    );
}

/// Bookkeeping that rides along with a response body.
#[derive(Debug)]
pub struct Tail {
    /// The member's in-flight count, released when the body ends.
    pub guard: Option<InFlight>,
    /// The access-log record (only when access logging is on).
    pub log: Option<Box<AccessLog>>,
    /// Bytes sent so far.
    pub bytes: u64,
    /// Whether the body reached its end.
    pub complete: bool,
    /// The member connection, returned to the pool when the body completed.
    pub lease: Option<super::upstream::Lease>,
}

impl Drop for Tail {
    fn drop(&mut self) {
        if let Some(lease) = self.lease.take()
            && self.complete
        {
            lease.release();
        }
        if let Some(g) = &self.guard {
            g.member().stats.add_bytes_out(self.bytes);
        }
        if let Some(log) = &self.log {
            log.write(self.bytes, if self.complete { "ok" } else { "aborted" });
        }
    }
}

/// A member's response body, by the kind of connection it comes over.
#[derive(Debug)]
pub enum Upstream {
    /// hyper's connection; the lease returns it to the pool once the body was read.
    Hyper(Incoming, super::upstream::Lease),
    /// A connection the request's task drives; the body returns it itself.
    Direct(super::direct::Body),
}

/// Response body sent to the client.
///
/// Boxed: a response then fits in 120 bytes, which the compiler moves inline. Unboxed it was
/// 384, and each of the five moves between member and client went through musl's `memcpy`
/// (~30 ns each, docs/perf/moves.rs) for a box that costs one allocation.
#[derive(Debug)]
pub struct RespBody(Box<Inner>);

#[derive(Debug)]
struct Inner {
    kind: Kind,
    tail: Tail,
    /// For a member's body: how long it may pause between frames (nginx's
    /// `proxy_read_timeout`), so a member that stalls mid-body cannot hold the client forever.
    stall: Option<IdleTimer>,
}

/// The error a member's body yields when it pauses longer than the response timeout.
#[derive(Debug, thiserror::Error)]
#[error("member sent no body for {0:?}")]
pub struct MemberStalled(pub Duration);

#[derive(Debug)]
enum Kind {
    Hyper(Incoming),
    Direct(super::direct::Body),
    Full(Option<Bytes>),
}

/// Errors of a response body, passed on to hyper (which then aborts the client connection).
pub type BodyError = Box<dyn std::error::Error + Send + Sync>;

impl RespBody {
    /// The member's body, which may pause at most `stall` between frames.
    pub fn upstream(body: Upstream, mut tail: Tail, stall: Duration) -> Self {
        let kind = match body {
            Upstream::Hyper(inner, lease) => {
                tail.lease = Some(lease);
                Kind::Hyper(inner)
            }
            Upstream::Direct(inner) => Kind::Direct(inner),
        };
        let mut body = Inner {
            kind,
            tail,
            stall: Some(IdleTimer::new(stall)),
        };
        // An empty body (HEAD, 204, 304, length 0) is never polled: it is complete already.
        if body.is_end_stream() {
            body.tail.complete = true;
        }
        RespBody(Box::new(body))
    }

    /// A short body made here (errors).
    pub fn full(text: &'static str, tail: Tail) -> Self {
        RespBody(Box::new(Inner {
            kind: Kind::Full(Some(Bytes::from_static(text.as_bytes()))),
            tail,
            stall: None,
        }))
    }

    /// No body (a 101 upgrade).
    pub fn empty(tail: Tail) -> Self {
        RespBody(Box::new(Inner {
            kind: Kind::Full(None),
            tail,
            stall: None,
        }))
    }
}

impl Inner {
    fn is_end_stream(&self) -> bool {
        match &self.kind {
            Kind::Hyper(inner) => inner.is_end_stream(),
            Kind::Direct(inner) => inner.is_end_stream(),
            Kind::Full(d) => d.is_none(),
        }
    }

    /// The member's body is pending: fails it once it has paused for the response timeout.
    fn poll_stalled(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let Some(stall) = &mut self.stall else {
            return Poll::Pending;
        };
        if stall.poll_expired(cx).is_pending() {
            return Poll::Pending;
        }
        let limit = stall.limit();
        self.stall = None;
        if let Some(g) = &self.tail.guard {
            g.member().stats.add_failure();
            tracing::warn!(member = %g.member().addr, ?limit, "member stopped sending a response body");
        }
        Poll::Ready(Some(Err(Box::new(MemberStalled(limit)))))
    }
}

impl Body for RespBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let this = &mut *self.get_mut().0;
        let polled: Poll<Option<Result<Frame<Bytes>, BodyError>>> = match &mut this.kind {
            Kind::Hyper(inner) => Pin::new(inner).poll_frame(cx).map_err(BodyError::from),
            Kind::Direct(inner) => Pin::new(inner).poll_frame(cx).map_err(BodyError::from),
            Kind::Full(data) => Poll::Ready(data.take().map(|d| Ok(Frame::data(d)))),
        };
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(stall) = &mut this.stall {
                    stall.progressed();
                }
                if let Some(d) = frame.data_ref() {
                    this.tail.bytes += d.len() as u64;
                }
                // hyper stops polling once a sized body is complete, so None may never come.
                if this.is_end_stream() {
                    this.tail.complete = true;
                }
            }
            Poll::Ready(None) => this.tail.complete = true,
            Poll::Pending => return this.poll_stalled(cx),
            Poll::Ready(Some(Err(_))) => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.0.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        match &self.0.kind {
            Kind::Hyper(inner) => inner.size_hint(),
            Kind::Direct(inner) => inner.size_hint(),
            Kind::Full(Some(d)) => SizeHint::with_exact(d.len() as u64),
            Kind::Full(None) => SizeHint::with_exact(0),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;

    /// What `f` logs at info, as text.
    fn logged(f: impl FnOnce()) -> String {
        #[derive(Clone, Default)]
        struct Sink(Arc<Mutex<Vec<u8>>>);
        impl std::io::Write for Sink {
            fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
                self.0
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .extend_from_slice(b);
                Ok(b.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let sink = Sink::default();
        let writer = sink.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_ansi(false)
            .with_writer(move || writer.clone())
            .finish();
        tracing::subscriber::with_default(subscriber, f);
        let bytes = sink.0.lock().map(|b| b.clone()).unwrap_or_default();
        String::from_utf8_lossy(&bytes).into_owned()
    }

    fn record() -> Option<Box<AccessLog>> {
        Some(Box::new(AccessLog {
            method: Method::GET,
            uri: Uri::from_static("/waiting"),
            request_id: HeaderValue::from_static("rid-1"),
            start: Instant::now(),
            status: 0,
            pool: Arc::from("dynamic"),
            upstream: None,
            attempts: 1,
        }))
    }

    #[test]
    fn a_record_dropped_unanswered_names_who_gave_up() {
        let line = logged(|| drop(Unanswered::new(record())));
        assert!(
            line.contains("status=499") && line.contains("client-closed"),
            "{line}"
        );

        let line = logged(|| {
            let mut handed = Unanswered::new(record());
            let _kept = handed.take();
        });
        assert!(
            line.is_empty(),
            "a record handed to a response is its to write: {line}"
        );

        // The flag is per worker thread, as the worker's runtime drops its tasks there.
        let line = std::thread::spawn(|| {
            logged(|| {
                give_up_unanswered();
                drop(Unanswered::new(record()));
            })
        })
        .join()
        .expect("no panic");
        assert!(
            line.contains("status=0") && line.contains("abandoned"),
            "{line}"
        );
    }
}
