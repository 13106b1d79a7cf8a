//! A member's response body, read from its connection as the client's side polls it:
//! `Content-Length`, chunked (with trailers) or until the member closes; once read to its end
//! over a clean connection, the connection goes back to the idle list.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::{Buf, Bytes};
use http_body::{Frame, SizeHint};

use super::{Conn, MAX_HEAD};
use crate::http1;
use crate::proxy::lease::Lease;

/// Where the body reader is.
#[derive(Debug, Clone, Copy)]
pub(super) enum State {
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
    pub(super) conn: Option<Lease<Conn>>,
    pub(super) state: State,
    pub(super) keep_alive: bool,
}

impl Body {
    pub(super) fn is_done(&self) -> bool {
        matches!(self.state, State::Done | State::Length(0))
    }

    /// The body is complete: the connection is reused when it is clean, closed otherwise.
    pub(super) fn finish(&mut self) {
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
