//! The response body on its way to the client, streamed frame by frame, never buffered whole.
//!
//! [`RespBody`] carries the member's body (or a short error body made here) to the client,
//! counts bytes, and when it is done (or dropped) releases the in-flight count, lets the
//! member's connection go back to its idle list (only if the body was read to its end), and
//! writes the access log.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};

use super::access_log::AccessLog;
use super::lease::MemberBody;
use crate::clock::IdleTimer;
use crate::pool::InFlight;

/// Bookkeeping that rides along with a response body.
#[derive(Debug)]
pub(crate) struct Tail {
    /// The member's in-flight count, released when the body ends.
    pub(crate) guard: Option<InFlight>,
    /// The access-log record (only when access logging is on).
    pub(crate) log: Option<Box<AccessLog>>,
    /// Bytes sent so far.
    pub(crate) bytes: u64,
    /// Whether the body reached its end.
    pub(crate) complete: bool,
}

impl Drop for Tail {
    fn drop(&mut self) {
        if let Some(g) = &self.guard {
            g.member().stats.add_bytes_out(self.bytes);
        }
        if let Some(log) = &self.log {
            log.write(self.bytes, if self.complete { "ok" } else { "aborted" });
        }
    }
}

/// Response body sent to the client.
///
/// Boxed: a response then fits in 120 bytes, which the compiler moves inline. Unboxed it was
/// 384, and each of the five moves between member and client went through musl's `memcpy`
/// (~30 ns each, docs/perf/moves.rs) for a box that costs one allocation.
#[derive(Debug)]
pub(crate) struct RespBody(Box<Inner>);

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
pub(crate) struct MemberStalled(pub Duration);

#[derive(Debug)]
enum Kind {
    Member(MemberBody),
    Full(Option<Bytes>),
}

impl Drop for Inner {
    fn drop(&mut self) {
        // Only here are both known: whether the body completed (`tail`) and its connection
        // (`kind`). The lease goes back to its idle list as `kind` drops, before `tail` ends
        // the request, as it always did.
        if self.tail.complete
            && let Kind::Member(body) = &mut self.kind
        {
            body.completed();
        }
    }
}

/// Errors of a response body, passed on to hyper (which then aborts the client connection).
pub(crate) type BodyError = Box<dyn std::error::Error + Send + Sync>;

impl RespBody {
    /// The member's body, which may pause at most `stall` between frames.
    pub(crate) fn upstream(body: MemberBody, tail: Tail, stall: Duration) -> Self {
        let mut body = Inner {
            kind: Kind::Member(body),
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
    pub(crate) fn full(text: &'static str, tail: Tail) -> Self {
        RespBody(Box::new(Inner {
            kind: Kind::Full(Some(Bytes::from_static(text.as_bytes()))),
            tail,
            stall: None,
        }))
    }

    /// No body (a 101 upgrade).
    pub(crate) fn empty(tail: Tail) -> Self {
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
            Kind::Member(inner) => inner.is_end_stream(),
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
            Kind::Member(inner) => Pin::new(inner).poll_frame(cx),
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
            Kind::Member(inner) => inner.size_hint(),
            Kind::Full(Some(d)) => SizeHint::with_exact(d.len() as u64),
            Kind::Full(None) => SizeHint::with_exact(0),
        }
    }
}
