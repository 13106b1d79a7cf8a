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

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use http::header::{self, HeaderMap};
use http::{Method, Request, Response, StatusCode};
use http_body::{Frame, SizeHint};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::headers::{self, Forwarding};
use super::lease::Lease;
use crate::http1::{self, FieldSpans, put_short};

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

    fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
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

struct Head {
    status: StatusCode,
    headers: HeaderMap,
    state: State,
    keep_alive: bool,
}

enum Parsed {
    Partial,
    Interim,
    Final(Head),
}

/// Parses one response head off the front of `buf`, taking its bytes.
fn parse_head(
    buf: &mut BytesMut,
    spans: &mut FieldSpans,
    head_only: bool,
) -> Result<Parsed, Error> {
    let mut slots = http1::slots();
    let (res, len) = match http1::parse_response(buf, &mut slots) {
        Ok(Some(parsed)) => parsed,
        Ok(None) => return Ok(Parsed::Partial),
        Err(_) => return Err(Error::Invalid),
    };
    let (Some(code), Some(minor)) = (res.code, res.version) else {
        return Err(Error::Invalid);
    };
    if (100..200).contains(&code) {
        // 101 is answered only to an upgrade, and upgrades go through hyper.
        if code == 101 {
            return Err(Error::Invalid);
        }
        drop(buf.split_to(len));
        return Ok(Parsed::Interim);
    }
    spans.record(buf, res.headers);
    let head = buf.split_to(len).freeze();
    let status = StatusCode::from_u16(code).map_err(|_| Error::Invalid)?;
    let mut headers = spans.map(&head).ok_or(Error::Invalid)?;
    let (state, keep_alive) = framing(status, head_only, minor, &mut headers)?;
    Ok(Parsed::Final(Head {
        status,
        headers,
        state,
        keep_alive,
    }))
}

/// How the body is delimited (RFC 9112 6.3), and whether the connection can carry another
/// request after it.
fn framing(
    status: StatusCode,
    head_only: bool,
    minor: u8,
    headers: &mut HeaderMap,
) -> Result<(State, bool), Error> {
    let mut keep_alive = minor == 1 && !http1::has_token(headers, &header::CONNECTION, b"close");
    if head_only || status == StatusCode::NO_CONTENT || status == StatusCode::NOT_MODIFIED {
        return Ok((State::Length(0), keep_alive));
    }
    if headers.contains_key(header::TRANSFER_ENCODING) {
        // Transfer-Encoding overrides Content-Length, and a message with both is not trusted
        // to frame the next one.
        if headers.remove(header::CONTENT_LENGTH).is_some() {
            keep_alive = false;
        }
        return Ok(if last_coding_is_chunked(headers) {
            (State::Size, keep_alive)
        } else {
            (State::Eof, false)
        });
    }
    Ok(
        match http1::content_length(headers).map_err(|_| Error::Invalid)? {
            Some(n) => (State::Length(n), keep_alive),
            None => (State::Eof, false),
        },
    )
}

fn last_coding_is_chunked(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::TRANSFER_ENCODING)
        .iter()
        .next_back()
        .is_some_and(|v| http1::last_token(v.as_bytes()).eq_ignore_ascii_case(b"chunked"))
}

/// Where the body reader is.
#[derive(Debug, Clone, Copy)]
enum State {
    /// This many bytes left (`Content-Length`).
    Length(u64),
    /// Expecting a chunk-size line.
    Size,
    /// Inside a chunk, this many bytes left.
    Chunk(u64),
    /// Expecting the CRLF after a chunk's data.
    ChunkEnd,
    /// After the last chunk: trailer fields or the final CRLF.
    Trailers,
    /// Delimited by the member closing the connection.
    Eof,
    /// Read to the end.
    Done,
}

/// A member's response body, read from its connection as the client's side polls it.
#[derive(Debug)]
pub(crate) struct Body {
    /// The connection, until the body ends (then it goes back to the idle list, or closes).
    conn: Option<Lease<Conn>>,
    state: State,
    keep_alive: bool,
}

impl Body {
    fn is_done(&self) -> bool {
        matches!(self.state, State::Done | State::Length(0))
    }

    /// The body is complete: the connection is reused when it is clean, closed otherwise.
    fn finish(&mut self) {
        self.state = State::Done;
        if let Some(lease) = self.conn.take()
            && self.keep_alive
            && lease.buf.is_empty()
        {
            lease.finish();
        }
    }

    fn fail(&mut self, msg: &'static str) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        self.state = State::Done;
        self.conn = None;
        Poll::Ready(Some(Err(io::Error::new(io::ErrorKind::InvalidData, msg))))
    }
}

/// What one step of the body reader produced.
enum Step {
    Frame(Frame<Bytes>),
    End,
    /// More bytes are needed from the member.
    Fill,
    Fail(&'static str),
}

impl Body {
    /// Advances the reader over what is buffered.
    fn step(&mut self) -> Step {
        let Some(conn) = self.conn.as_deref_mut() else {
            return Step::End;
        };
        let buf = &mut conn.buf;
        match self.state {
            State::Done | State::Length(0) => Step::End,
            State::Length(n) | State::Chunk(n) if !buf.is_empty() => {
                let take = n.min(buf.len() as u64);
                let data = buf.split_to(take as usize).freeze();
                let left = n - take;
                self.state = match (self.state, left) {
                    (State::Chunk(_), 0) => State::ChunkEnd,
                    (State::Chunk(_), _) => State::Chunk(left),
                    _ => State::Length(left),
                };
                if matches!(self.state, State::Length(0)) {
                    self.finish();
                }
                Step::Frame(Frame::data(data))
            }
            State::Eof if !buf.is_empty() => Step::Frame(Frame::data(buf.split().freeze())),
            State::Size => match http1::chunk_size(buf) {
                Ok(Some((used, size))) => {
                    buf.advance(used);
                    self.state = if size == 0 {
                        State::Trailers
                    } else {
                        State::Chunk(size)
                    };
                    self.step()
                }
                Ok(None) => Step::Fill,
                Err(msg) => Step::Fail(msg),
            },
            State::ChunkEnd if buf.len() >= 2 => {
                if &buf[..2] != b"\r\n" {
                    return Step::Fail("chunk data not followed by CRLF");
                }
                buf.advance(2);
                self.state = State::Size;
                self.step()
            }
            State::Trailers => self.trailers(),
            _ => Step::Fill,
        }
    }

    fn trailers(&mut self) -> Step {
        let Some(conn) = self.conn.as_deref_mut() else {
            return Step::End;
        };
        let buf = &mut conn.buf;
        let (used, map) = match http1::parse_trailers(buf) {
            Ok(Some(parsed)) => parsed,
            Ok(None) if buf.len() > MAX_HEAD => return Step::Fail("trailer section too large"),
            Ok(None) => return Step::Fill,
            Err(msg) => return Step::Fail(msg),
        };
        buf.advance(used);
        self.finish();
        if map.is_empty() {
            return Step::End;
        }
        Step::Frame(Frame::trailers(map))
    }
}

impl http_body::Body for Body {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        let this = self.get_mut();
        loop {
            match this.step() {
                Step::Frame(f) => return Poll::Ready(Some(Ok(f))),
                Step::End => return Poll::Ready(None),
                Step::Fail(msg) => return this.fail(msg),
                Step::Fill => {}
            }
            let Some(conn) = this.conn.as_deref_mut() else {
                return Poll::Ready(None);
            };
            match ready!(conn.poll_fill(cx)) {
                Ok(0) if matches!(this.state, State::Eof) => {
                    this.state = State::Done;
                    this.conn = None;
                    return Poll::Ready(None);
                }
                Ok(0) => return this.fail("member closed the connection mid-body"),
                Ok(_) => {}
                Err(e) => {
                    this.state = State::Done;
                    this.conn = None;
                    return Poll::Ready(Some(Err(e)));
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.is_done()
    }

    fn size_hint(&self) -> SizeHint {
        match self.state {
            State::Length(n) => SizeHint::with_exact(n),
            State::Done => SizeHint::with_exact(0),
            _ => SizeHint::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::header::HeaderValue;

    fn head(text: &str, head_only: bool) -> Result<Parsed, Error> {
        parse_head(
            &mut BytesMut::from(text),
            &mut FieldSpans::default(),
            head_only,
        )
    }

    fn final_head(text: &str) -> Head {
        match head(text, false) {
            Ok(Parsed::Final(h)) => h,
            _ => panic!("not a final head: {text:?}"),
        }
    }

    #[test]
    fn content_length_frames_the_body_and_keeps_the_connection() {
        let h = final_head("HTTP/1.1 200 OK\r\nContent-Length: 12\r\nX-A: b\r\n\r\n");
        assert!(matches!(h.state, State::Length(12)));
        assert!(h.keep_alive);
        assert_eq!(h.headers["x-a"], "b");
    }

    #[test]
    fn chunked_wins_over_content_length_and_the_connection_is_not_reused() {
        let h = final_head(
            "HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n",
        );
        assert!(matches!(h.state, State::Size));
        assert!(!h.keep_alive);
        assert!(!h.headers.contains_key(header::CONTENT_LENGTH));
    }

    #[test]
    fn conflicting_lengths_are_invalid() {
        let r = head(
            "HTTP/1.1 200 OK\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\n",
            false,
        );
        assert!(matches!(r, Err(Error::Invalid)));
        let r = head("HTTP/1.1 200 OK\r\nContent-Length: 3, 4\r\n\r\n", false);
        assert!(matches!(r, Err(Error::Invalid)));
        let r = head("HTTP/1.1 200 OK\r\nContent-Length: +3\r\n\r\n", false);
        assert!(matches!(r, Err(Error::Invalid)));
    }

    #[test]
    fn no_length_means_read_to_close() {
        let h = final_head("HTTP/1.1 200 OK\r\n\r\n");
        assert!(matches!(h.state, State::Eof));
        assert!(!h.keep_alive);
    }

    #[test]
    fn bodiless_statuses_and_head_have_no_body() {
        let h = final_head("HTTP/1.1 304 Not Modified\r\nContent-Length: 50\r\n\r\n");
        assert!(matches!(h.state, State::Length(0)));
        match head("HTTP/1.1 200 OK\r\nContent-Length: 50\r\n\r\n", true) {
            Ok(Parsed::Final(h)) => assert!(matches!(h.state, State::Length(0))),
            _ => panic!("HEAD answer not parsed"),
        }
    }

    #[test]
    fn http_1_0_and_connection_close_are_not_reused() {
        assert!(!final_head("HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n").keep_alive);
        let h = final_head("HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 0\r\n\r\n");
        assert!(!h.keep_alive);
    }

    #[test]
    fn interim_responses_are_skipped_and_101_is_refused() {
        let mut buf = BytesMut::from("HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\nHTTP/1.1 200");
        let mut spans = FieldSpans::default();
        assert!(matches!(
            parse_head(&mut buf, &mut spans, false),
            Ok(Parsed::Interim)
        ));
        assert_eq!(&buf[..], b"HTTP/1.1 200");
        let r = head(
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: x\r\n\r\n",
            false,
        );
        assert!(matches!(r, Err(Error::Invalid)));
    }

    #[test]
    fn garbage_is_invalid_and_a_partial_head_asks_for_more() {
        assert!(matches!(
            head("SMTP ready\r\n\r\n", false),
            Err(Error::Invalid)
        ));
        assert!(matches!(
            head("HTTP/1.1 200 OK\r\nContent-Le", false),
            Ok(Parsed::Partial)
        ));
    }

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
