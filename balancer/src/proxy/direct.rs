//! Member connections driven from the request's own task, for requests without a body (nearly
//! every proxied GET): the head is written straight from the request's `HeaderMap`, the
//! response head is parsed with httparse, and the response body is read from the socket by
//! [`Body`] itself as the client's connection polls it.
//!
//! Why not hyper's client connection here: it runs as a second task fed through a channel and
//! a oneshot, and that task switch plus its dispatch cost about a third of the proxy's
//! instructions per request (docs/benchmarks.md). nginx and HAProxy drive both sides of an
//! exchange from one event loop; this does the same for the common case. Requests with a body,
//! upgrades and CONNECT still go through hyper ([`super::upstream`]), which owns those paths'
//! back-pressure and early-response subtleties.
//!
//! The response head is parsed in [`head`], the body read in [`body`].

mod body;
mod head;

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::BytesMut;
use http::{Method, Request, Response};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

pub(crate) use self::body::Body;
use self::head::{Head, Parsed, parse_head};
use super::headers::{self, Forwarding};
use super::lease::Lease;
use crate::http1::{FieldSpans, put_short};

/// Largest response head (or trailer section) accepted from a member; beyond it, 502.
const MAX_HEAD: usize = 64 * 1024;
/// Room made for each read from the member.
const READ_SPACE: usize = 8 * 1024;

/// An HTTP/1.1 connection to a member, idle or carrying one exchange.
#[derive(Debug)]
pub(crate) struct Conn {
    io: TcpStream,
    /// Bytes read from the member and not yet consumed.
    buf: BytesMut,
    /// The request head being written; kept to reuse its allocation.
    head: Vec<u8>,
    /// Where the fields of the last response head sit.
    spans: FieldSpans,
}

/// Why an exchange failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Error {
    /// The request head could not be written: nothing usable reached the member.
    Unwritten,
    /// The connection closed or reset before any response byte.
    Closed,
    /// No response head within the response timeout.
    Timeout,
    /// The response head was malformed, too large, or ended early.
    Invalid,
}

impl Conn {
    /// Wraps a connected stream.
    pub(crate) fn new(io: TcpStream) -> Self {
        Conn {
            io,
            buf: BytesMut::new(),
            head: Vec::new(),
            spans: FieldSpans::default(),
        }
    }

    /// Whether an idle connection can carry a request: the member has not closed it and sent
    /// nothing unasked. No syscall while tokio knows the socket is not readable (the usual
    /// case after a response was read), one `recv` otherwise.
    pub(crate) fn probe(&self) -> bool {
        let mut byte = [0u8; 1];
        matches!(self.io.try_read(&mut byte), Err(e) if e.kind() == io::ErrorKind::WouldBlock)
    }

    /// Sends `req` (which has no body) over the leased connection and reads the response head;
    /// the returned body reads the rest and finishes the lease once it is read to the end.
    pub(crate) async fn exchange<B>(
        mut lease: Lease<Conn>,
        req: &Request<B>,
        fwd: &Forwarding<'_>,
        response_timeout: Duration,
    ) -> Result<Response<Body>, Error> {
        let this: &mut Conn = &mut lease;
        this.head.clear();
        encode_head(&mut this.head, req, fwd);
        let head_only = req.method() == Method::HEAD;
        let answered = tokio::time::timeout(response_timeout, async {
            this.io
                .write_all(&this.head)
                .await
                .map_err(|_| Error::Unwritten)?;
            this.read_head(head_only).await
        })
        .await;
        let head = answered.map_err(|_| Error::Timeout)??;
        let mut body = Body {
            conn: Some(lease),
            state: head.state,
            keep_alive: head.keep_alive,
        };
        if body.is_done() {
            body.finish();
        }
        let mut resp = Response::new(body);
        *resp.status_mut() = head.status;
        *resp.headers_mut() = head.headers;
        Ok(resp)
    }

    async fn read_head(&mut self, head_only: bool) -> Result<Head, Error> {
        let mut received = false;
        loop {
            if !self.buf.is_empty() {
                match parse_head(&mut self.buf, &mut self.spans, head_only)? {
                    Parsed::Final(head) => return Ok(head),
                    // An interim response (100, 103): the final one follows.
                    Parsed::Interim => continue,
                    Parsed::Partial if self.buf.len() >= MAX_HEAD => return Err(Error::Invalid),
                    Parsed::Partial => {}
                }
            }
            self.buf.reserve(READ_SPACE);
            match self.io.read_buf(&mut self.buf).await {
                Ok(0) | Err(_) if !received => return Err(Error::Closed),
                Ok(0) | Err(_) => return Err(Error::Invalid),
                Ok(_) => received = true,
            }
        }
    }

    pub(super) fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        self.buf.reserve(READ_SPACE);
        tokio_util::io::poll_read_buf(Pin::new(&mut self.io), cx, &mut self.buf)
    }
}

/// Writes the request line and fields; the member sees the request as the client sent it,
/// after the proxy's header rules.
fn encode_head<B>(dst: &mut Vec<u8>, req: &Request<B>, fwd: &Forwarding<'_>) {
    let target = req.uri().path_and_query().map_or("/", |pq| pq.as_str());
    put_short(dst, req.method().as_str().as_bytes());
    dst.push(b' ');
    put_short(dst, target.as_bytes());
    dst.extend_from_slice(b" HTTP/1.1\r\n");
    headers::write_fields(dst, req.headers(), fwd);
    dst.extend_from_slice(b"\r\n");
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::header::HeaderValue;
    #[test]
    fn the_request_head_is_written_in_origin_form_with_its_fields() {
        let req = Request::get("/a/b?c=d")
            .header("host", "example")
            .header("x-request-id", "from-client")
            .body(())
            .unwrap();
        let rid = HeaderValue::from_static("r1");
        let fwd = Forwarding {
            client: "10.1.2.3".parse().unwrap(),
            request_id: &rid,
        };
        let mut out = Vec::new();
        encode_head(&mut out, &req, &fwd);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "GET /a/b?c=d HTTP/1.1\r\nhost: example\r\nx-forwarded-for: 10.1.2.3\r\n\
             forwarded: for=10.1.2.3;proto=http;host=\"example\"\r\nx-forwarded-proto: http\r\n\
             x-forwarded-host: example\r\nx-request-id: r1\r\n\r\n"
        );
    }
}
