//! The request body on its way to a member, streamed frame by frame, never buffered whole.
//!
//! [`ReqBody`] carries the client's body to a member and enforces the route's size limit and
//! the client idle timeout; [`Sent`] tells when it has all gone. A body kept for a replay
//! (`proxy::replay`) is sent again as [`ReqBody::Again`].

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use tokio::sync::Notify;

use super::replay::Keeper;
use crate::clock::IdleTimer;

/// The error a request body yields when it grows past the limit.
#[derive(Debug, thiserror::Error)]
#[error("request body exceeds the limit of {0} bytes")]
pub(crate) struct TooLarge(pub u64);

/// The error a request body yields when the client sends nothing for the idle timeout.
#[derive(Debug, thiserror::Error)]
#[error("request body stalled for {0:?}")]
pub(crate) struct Stalled(pub Duration);

/// Set once the whole request body went to the member: the response timeout starts then, so
/// a slow upload is not blamed on the member. Until then it tells whose turn it is: the
/// client's (no data yet) or the member's (it has not taken the last frame), and since when.
#[derive(Debug)]
pub(crate) struct Sent {
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
    pub(crate) fn member_turn_since(&self) -> Option<u64> {
        (!self.client_turn.load(Ordering::Relaxed))
            .then(|| self.progress_ms.load(Ordering::Relaxed))
    }

    fn mark(&self) {
        self.done.store(true, Ordering::Release);
        self.notify.notify_waiters();
    }

    /// Resolves once the body has been sent.
    pub(crate) async fn wait(&self) {
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
pub(crate) enum ReqBody {
    /// No body (the common GET): replayable for retries.
    Empty,
    /// The client's body, streamed (boxed: every request moves this enum several times).
    Stream(Box<Upload>),
    /// A kept body sent again to another member (`proxy::replay`).
    Again(Box<Again>),
}

/// The frames of a kept body, being sent again.
#[derive(Debug)]
pub(crate) struct Again {
    frames: std::vec::IntoIter<Bytes>,
    left: u64,
}

/// A client's body on its way to a member, with its size limit and idle timeout.
#[derive(Debug)]
pub(crate) struct Upload {
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
    pub(crate) fn stream(
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
    pub(crate) fn replayed(frames: Vec<Bytes>) -> Self {
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
