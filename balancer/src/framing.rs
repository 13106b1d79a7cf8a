//! A guard on every client connection that sees each request head before hyper does and flags
//! ambiguous framing: `Content-Length` together with `Transfer-Encoding`, or `Content-Length`
//! given twice. hyper quietly normalizes both (it drops the length, or folds equal lengths);
//! a proxy must instead refuse them (400, nothing forwarded), as nginx does, because the next
//! hop may read the same bytes differently (request smuggling).
//!
//! The guard follows message boundaries itself (lengths and chunked framing) so it can find
//! every head on a keep-alive connection; bodies are counted, not copied or scanned.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::task::{Context, Poll};

use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::http1;

/// A head larger than this is left to hyper, which answers 431.
const MAX_HEAD: usize = 64 * 1024;
/// Longest chunk-size or trailer line followed before giving up (hyper then rejects it).
const MAX_LINE: usize = 4096;

/// Which request on a connection was the first with ambiguous framing (shared with the
/// connection's service, which answers it 400 and closes), and whether the connection became
/// a tunnel.
#[derive(Debug)]
pub(crate) struct Verdict {
    /// Number of the first ambiguous request; `u64::MAX` while there is none.
    first_bad: AtomicU64,
    /// Requests the service has seen so far.
    seen: AtomicU64,
    /// The connection switched protocols: the rest is tunnel data.
    tunnel: AtomicBool,
}

impl Default for Verdict {
    fn default() -> Self {
        Verdict {
            first_bad: AtomicU64::new(u64::MAX),
            seen: AtomicU64::new(0),
            tunnel: AtomicBool::new(false),
        }
    }
}

impl Verdict {
    /// Numbers the next request the connection's service sees (0-based).
    pub(crate) fn next_request(&self) -> u64 {
        self.seen.fetch_add(1, Ordering::Relaxed)
    }

    /// Whether request number `n` (0-based) on this connection, or one before it, was
    /// ambiguous.
    pub(crate) fn is_bad(&self, n: u64) -> bool {
        self.first_bad.load(Ordering::Acquire) <= n
    }

    fn mark(&self, n: u64) {
        self.first_bad.fetch_min(n, Ordering::AcqRel);
    }

    /// Records that the service answered 101 (or 2xx to CONNECT): what follows is tunnel
    /// data, not requests. Until then an upgrade request is followed like any other, so a
    /// refused upgrade cannot switch the checks off for the rest of the connection.
    pub(crate) fn tunnel(&self) {
        self.tunnel.store(true, Ordering::Release);
    }

    fn is_tunnel(&self) -> bool {
        self.tunnel.load(Ordering::Acquire)
    }
}

#[derive(Debug)]
enum State {
    /// Collecting a request head.
    Head,
    /// Skipping a fixed-length body.
    Body(u64),
    /// Reading a chunk-size line.
    ChunkSize,
    /// Skipping chunk data.
    ChunkData(u64),
    /// Skipping the CRLF after chunk data.
    ChunkEnd(u8),
    /// Reading trailer lines until the empty one.
    Trailer,
    /// Not following any more (tunnel, rejected or unparseable input: hyper handles it).
    Opaque,
}

/// The framing follower for one connection.
#[derive(Debug)]
pub(crate) struct Tracker {
    state: State,
    buf: Vec<u8>,
    heads: u64,
    verdict: Arc<Verdict>,
}

impl Tracker {
    /// A tracker reporting to `verdict`.
    pub(crate) fn new(verdict: Arc<Verdict>) -> Self {
        Tracker {
            state: State::Head,
            buf: Vec::new(),
            heads: 0,
            verdict,
        }
    }

    /// How many request heads it has seen.
    #[cfg(test)]
    pub(crate) fn heads(&self) -> u64 {
        self.heads
    }

    /// Follows newly received bytes.
    pub(crate) fn feed(&mut self, mut data: &[u8]) {
        if self.verdict.is_tunnel() {
            self.state = State::Opaque;
        }
        while !data.is_empty() {
            data = match self.state {
                State::Opaque => return,
                State::Head => self.head(data),
                State::Body(n) => {
                    let take = n.min(data.len() as u64);
                    self.state = if take == n {
                        State::Head
                    } else {
                        State::Body(n - take)
                    };
                    &data[take as usize..]
                }
                State::ChunkSize | State::Trailer => self.line(data),
                State::ChunkData(n) => {
                    let take = n.min(data.len() as u64);
                    self.state = if take == n {
                        State::ChunkEnd(2)
                    } else {
                        State::ChunkData(n - take)
                    };
                    &data[take as usize..]
                }
                State::ChunkEnd(k) => {
                    let take = usize::from(k).min(data.len());
                    self.state = if take == usize::from(k) {
                        State::ChunkSize
                    } else {
                        State::ChunkEnd(k - take as u8)
                    };
                    &data[take..]
                }
            };
        }
    }

    fn head<'a>(&mut self, data: &'a [u8]) -> &'a [u8] {
        let mut data = data;
        if self.buf.is_empty() {
            // Empty lines before a request line are allowed (RFC 9112 2.2).
            let skip = data
                .iter()
                .take_while(|b| **b == b'\r' || **b == b'\n')
                .count();
            data = &data[skip..];
            if data.is_empty() {
                return data;
            }
            // The common case: the whole head arrived in one read; parse it in place.
            if let Some(end) = http1::head_end(data) {
                self.state = self.framing_of_head(&data[..end]);
                return &data[end..];
            }
        }
        let from = self.buf.len().saturating_sub(3);
        let room = MAX_HEAD.saturating_sub(self.buf.len());
        let piece = &data[..data.len().min(room)];
        self.buf.extend_from_slice(piece);
        let Some(end) = http1::head_end(&self.buf[from..]).map(|e| from + e) else {
            if self.buf.len() >= MAX_HEAD {
                self.state = State::Opaque;
            }
            return &[];
        };
        let consumed_from_piece = end - (self.buf.len() - piece.len());
        let head = std::mem::take(&mut self.buf);
        self.state = self.framing_of_head(&head[..end]);
        // Keep the allocation for the next split head.
        self.buf = head;
        self.buf.clear();
        &data[consumed_from_piece..]
    }

    /// Decides what follows the head in `buf[..end]`.
    fn framing_of_head(&mut self, head: &[u8]) -> State {
        let index = self.heads;
        self.heads += 1;
        if !mentions_framing(head) {
            // Most heads (every GET) name neither header: no body, and nothing to parse twice.
            return State::Head;
        }
        // More fields than hyper's limit, or a malformed head, is hyper's to answer.
        let mut slots = http1::slots();
        let Ok(Some((req, _))) = http1::parse_request(head, &mut slots) else {
            return State::Opaque;
        };
        let mut lengths = 0;
        let mut length = None;
        let mut chunked = None;
        for h in req.headers.iter() {
            if h.name.eq_ignore_ascii_case("content-length") {
                lengths += 1;
                // As hyper reads a request's: one value, digits only (no `+`, no list).
                length = http1::length_value(h.value);
            } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
                chunked = Some(http1::last_token(h.value).eq_ignore_ascii_case(b"chunked"));
            }
        }
        if lengths > 1 || (lengths == 1 && chunked.is_some()) {
            self.verdict.mark(index);
            return State::Opaque;
        }
        match (chunked, lengths, length) {
            (Some(true), ..) => State::ChunkSize,
            (Some(false), ..) => State::Opaque,
            (None, 0, _) | (None, _, Some(0)) => State::Head,
            (None, _, Some(n)) => State::Body(n),
            // An unparseable length: hyper rejects the request itself.
            (None, _, None) => State::Opaque,
        }
    }

    /// Collects one chunk-size or trailer line.
    fn line<'a>(&mut self, data: &'a [u8]) -> &'a [u8] {
        let Some(nl) = memchr::memchr(b'\n', data) else {
            self.buf.extend_from_slice(data);
            if self.buf.len() > MAX_LINE {
                self.state = State::Opaque;
            }
            return &[];
        };
        self.buf.extend_from_slice(&data[..=nl]);
        self.state = match self.state {
            State::ChunkSize => match http1::chunk_size(&self.buf) {
                Ok(Some((_, 0))) => State::Trailer,
                Ok(Some((_, n))) => State::ChunkData(n),
                // hyper refuses the line as well, answers and closes.
                _ => State::Opaque,
            },
            // As hyper's decoder: a trailer line ends at CRLF only, a bare LF is part of it.
            _ if !self.buf.ends_with(b"\r\n") => return &data[nl + 1..],
            _ if self.buf == b"\r\n" => State::Head,
            _ => State::Trailer,
        };
        self.buf.clear();
        &data[nl + 1..]
    }
}

/// Whether `Content-Length` or `Transfer-Encoding` (any case) appears anywhere in `head`: a
/// cheap test on each `-` instead of a full parse.
fn mentions_framing(head: &[u8]) -> bool {
    fn ends_with(b: &[u8], word: &[u8]) -> bool {
        b.len() >= word.len() && b[b.len() - word.len()..].eq_ignore_ascii_case(word)
    }
    fn starts_with(b: &[u8], word: &[u8]) -> bool {
        b.len() >= word.len() && b[..word.len()].eq_ignore_ascii_case(word)
    }
    memchr::memchr_iter(b'-', head).any(|p| {
        let (before, after) = (&head[..p], &head[p + 1..]);
        (ends_with(before, b"content") && starts_with(after, b"length"))
            || (ends_with(before, b"transfer") && starts_with(after, b"encoding"))
    })
}

/// A client connection whose inbound bytes pass through a [`Tracker`].
#[derive(Debug)]
pub(crate) struct Guarded<T> {
    inner: T,
    tracker: Tracker,
    /// Bytes already read from `inner` by someone else, served first.
    prefix: Bytes,
}

impl<T> Guarded<T> {
    /// Wraps `inner` whose first bytes, `prefix`, were already read from it (a connection
    /// handed over between requests): they are served, and checked, first.
    pub(crate) fn with_prefix(inner: T, verdict: Arc<Verdict>, prefix: Bytes) -> Self {
        Guarded {
            inner,
            tracker: Tracker::new(verdict),
            prefix,
        }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Guarded<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let this = &mut *self;
        if !this.prefix.is_empty() {
            let n = this.prefix.len().min(buf.remaining());
            let chunk = this.prefix.split_to(n);
            buf.put_slice(&chunk);
            this.tracker.feed(&chunk);
            return Poll::Ready(Ok(()));
        }
        let r = Pin::new(&mut this.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = r {
            this.tracker.feed(&buf.filled()[before..]);
        }
        r
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Guarded<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, data)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests;
