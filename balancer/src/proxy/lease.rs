//! What a member's response rides on: its body ([`MemberBody`], over hyper's connection or
//! one this task drives) and the [`Lease`] that gives the connection back to its idle list
//! once the body was read to its end, or closes it when the body was abandoned.

use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Frame, SizeHint};
use hyper::body::Incoming;
use hyper::client::conn::http1::SendRequest;

use super::direct;
use super::request_body::ReqBody;

/// A connection kind with an idle list on this thread.
pub(crate) trait Idle: Sized {
    /// Puts `self` back on the idle list of `addr`.
    fn checkin(self, addr: SocketAddr);
}

/// A connection lent to one exchange. Dropped once marked [`Lease::reusable`] it goes back to
/// its idle list; dropped otherwise (body abandoned, bytes left, tunnel) it closes.
#[derive(Debug)]
pub(crate) struct Lease<C: Idle> {
    /// Always `Some` until dropped.
    conn: Option<C>,
    addr: SocketAddr,
    reusable: bool,
}

impl<C: Idle> Lease<C> {
    pub(super) fn new(addr: SocketAddr, conn: C) -> Self {
        Lease {
            conn: Some(conn),
            addr,
            reusable: false,
        }
    }

    /// The response was read to its end over a clean connection: it may carry another.
    pub(crate) fn reusable(&mut self) {
        self.reusable = true;
    }

    /// Returns the connection for reuse now.
    pub(crate) fn finish(mut self) {
        self.reusable = true;
    }
}

impl<C: Idle> std::ops::Deref for Lease<C> {
    type Target = C;

    fn deref(&self) -> &C {
        match &self.conn {
            Some(c) => c,
            None => unreachable!("a lease holds its connection until dropped"),
        }
    }
}

impl<C: Idle> std::ops::DerefMut for Lease<C> {
    fn deref_mut(&mut self) -> &mut C {
        match &mut self.conn {
            Some(c) => c,
            None => unreachable!("a lease holds its connection until dropped"),
        }
    }
}

impl<C: Idle> Drop for Lease<C> {
    fn drop(&mut self) {
        if self.reusable
            && let Some(conn) = self.conn.take()
        {
            conn.checkin(self.addr);
        }
    }
}

/// A member's response body, by the kind of connection it comes over.
#[derive(Debug)]
pub(crate) enum MemberBody {
    /// hyper's connection; the lease returns it once the body was read.
    Hyper(Incoming, Lease<SendRequest<ReqBody>>),
    /// A connection this task drives; its body returns it.
    Direct(direct::Body),
}

impl MemberBody {
    /// The body was read to its end: its connection may go back to the idle list.
    pub(crate) fn completed(&mut self) {
        if let MemberBody::Hyper(_, lease) = self {
            lease.reusable();
        }
    }

    /// Whether this is hyper's (which can switch protocols).
    pub(crate) fn is_hyper(&self) -> bool {
        matches!(self, MemberBody::Hyper(..))
    }
}

impl http_body::Body for MemberBody {
    type Data = Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        match self.get_mut() {
            MemberBody::Hyper(inner, _) => Pin::new(inner).poll_frame(cx).map_err(Into::into),
            MemberBody::Direct(inner) => Pin::new(inner).poll_frame(cx).map_err(Into::into),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            MemberBody::Hyper(inner, _) => inner.is_end_stream(),
            MemberBody::Direct(inner) => inner.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            MemberBody::Hyper(inner, _) => inner.size_hint(),
            MemberBody::Direct(inner) => inner.size_hint(),
        }
    }
}
