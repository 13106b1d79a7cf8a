//! Writing a response on the plain loop's connection: the head in one buffer with the body's
//! first bytes, chunked or length-framed as the body allows.

use std::cell::RefCell;
use std::future::poll_fn;
use std::io;
use std::pin::Pin;
use std::task::Poll;

use bytes::Bytes;
use http::header;
use http::{Response, StatusCode};
use http_body::Body as _;
use tokio::io::AsyncWriteExt;

use super::{Conn, Meta};
use crate::http1::{self, Digits, chunk_size_line, field, lists_token, status_line};
use crate::proxy::body::RespBody;

/// Response bytes gathered before they are written.
const WRITE_BATCH: usize = 32 * 1024;
/// A body frame this large is written as it is rather than copied into the batch.
const DIRECT_WRITE: usize = 16 * 1024;
/// Largest write buffer kept for the next response.
const KEEP_OUT: usize = 16 * 1024;
/// A fresh write buffer's size: a small response's head and body in one write.
const OUT_START: usize = 4096;
/// Most spare write buffers a worker keeps.
const SPARES: usize = 64;

thread_local! {
    /// The worker's spare write buffers: a connection borrows one for each response and gives
    /// it back, so an idle connection holds none and a busy one allocates none.
    static SPARE: RefCell<Vec<Vec<u8>>> = const { RefCell::new(Vec::new()) };
}

fn borrow_out() -> Vec<u8> {
    SPARE
        .try_with(|s| s.borrow_mut().pop())
        .ok()
        .flatten()
        .unwrap_or_else(|| Vec::with_capacity(OUT_START))
}

fn give_back(mut out: Vec<u8>) {
    if out.capacity() == 0 || out.capacity() > KEEP_OUT {
        return;
    }
    out.clear();
    let _ = SPARE.try_with(|s| {
        let mut s = s.borrow_mut();
        if s.len() < SPARES {
            s.push(out);
        }
    });
}

impl Conn {
    /// Writes `resp`; whether the connection can carry another request.
    pub(super) async fn write_response(
        &mut self,
        resp: Response<RespBody>,
        meta: Meta,
        stopping: bool,
    ) -> io::Result<bool> {
        self.out = borrow_out();
        let r = self.write_whole(resp, meta, stopping).await;
        give_back(std::mem::take(&mut self.out));
        r
    }

    async fn write_whole(
        &mut self,
        resp: Response<RespBody>,
        meta: Meta,
        stopping: bool,
    ) -> io::Result<bool> {
        let (parts, mut body) = resp.into_parts();
        let status = parts.status;
        let bodiless = meta.head_only
            || status.is_informational()
            || status == StatusCode::NO_CONTENT
            || status == StatusCode::NOT_MODIFIED;
        self.out.clear();
        status_line(&mut self.out, status);
        // One pass over the fields also notes what the lines below depend on.
        let (mut close, mut dated) = (false, false);
        for (name, value) in &parts.headers {
            // Framing fields are this hop's: written below from what the body is.
            if name == header::CONNECTION {
                close |= lists_token(value.as_bytes(), b"close");
                continue;
            }
            if name == header::TRANSFER_ENCODING || name == header::CONTENT_LENGTH {
                continue;
            }
            dated |= name == header::DATE;
            field(&mut self.out, name.as_str().as_bytes(), value.as_bytes());
        }
        let mut keep_alive = meta.keep_alive && !stopping && !close;
        if !dated {
            field(&mut self.out, b"date", &crate::clock::http_date());
        }
        let declared = http1::content_length(&parts.headers).ok().flatten();
        let length = declared.or_else(|| body.size_hint().exact());
        // 1xx and 204 never carry a length; HEAD and 304 tell the length a GET would get.
        let lengthless = status.is_informational() || status == StatusCode::NO_CONTENT;
        if let Some(n) = length.filter(|_| !lengthless && (!bodiless || declared.is_some())) {
            field(
                &mut self.out,
                b"content-length",
                Digits::decimal(n).as_bytes(),
            );
        }
        let framing = if bodiless {
            Framing::None
        } else if let Some(n) = length {
            Framing::Length(n)
        } else if meta.http10 {
            keep_alive = false;
            Framing::Close
        } else {
            field(&mut self.out, b"transfer-encoding", b"chunked");
            Framing::Chunked
        };
        if !keep_alive {
            field(&mut self.out, b"connection", b"close");
        } else if meta.http10 {
            field(&mut self.out, b"connection", b"keep-alive");
        }
        self.out.extend_from_slice(b"\r\n");
        if matches!(framing, Framing::None) {
            // A HEAD answer's body is empty already: dropping it completes it.
            drop(body);
            self.io.write_all(&self.out).await?;
            return Ok(keep_alive);
        }
        let complete = self.write_body(&mut body, framing).await?;
        Ok(keep_alive && complete)
    }

    /// Streams the body after the head already in `out`, gathering what is ready into one
    /// write; whether it went out whole.
    async fn write_body(&mut self, body: &mut RespBody, framing: Framing) -> io::Result<bool> {
        let mut left = match framing {
            Framing::Length(n) => n,
            _ => u64::MAX,
        };
        loop {
            let pending_out = !self.out.is_empty();
            let frame = poll_fn(|cx| match Pin::new(&mut *body).poll_frame(cx) {
                Poll::Ready(f) => Poll::Ready(Some(f)),
                // Nothing ready: send what was gathered before waiting.
                Poll::Pending if pending_out => Poll::Ready(None),
                Poll::Pending => Poll::Pending,
            })
            .await;
            let Some(frame) = frame else {
                self.flush().await?;
                continue;
            };
            match frame {
                Some(Ok(f)) => {
                    if let Ok(data) = f.into_data() {
                        let n = data.len() as u64;
                        if n > left {
                            // More than the declared length: the member broke its framing.
                            self.flush().await?;
                            return Ok(false);
                        }
                        left -= n;
                        if data.len() >= DIRECT_WRITE {
                            self.write_large(&data, framing).await?;
                        } else {
                            self.data(&data, framing);
                        }
                    }
                    if body.is_end_stream() {
                        return self.finish(framing, left).await;
                    }
                    if self.out.len() >= WRITE_BATCH {
                        self.flush().await?;
                    }
                }
                None => return self.finish(framing, left).await,
                Some(Err(_)) => {
                    // The client sees a truncated response and a closed connection.
                    self.flush().await?;
                    return Ok(false);
                }
            }
        }
    }

    /// A large frame goes to the socket as it is, not copied through `out`.
    async fn write_large(&mut self, data: &Bytes, framing: Framing) -> io::Result<()> {
        let chunked = matches!(framing, Framing::Chunked);
        if chunked {
            chunk_size_line(&mut self.out, data.len());
        }
        self.flush().await?;
        self.io.write_all(data).await?;
        if chunked {
            self.out.extend_from_slice(b"\r\n");
        }
        Ok(())
    }

    fn data(&mut self, data: &Bytes, framing: Framing) {
        if data.is_empty() {
            return;
        }
        if matches!(framing, Framing::Chunked) {
            chunk_size_line(&mut self.out, data.len());
            self.out.extend_from_slice(data);
            self.out.extend_from_slice(b"\r\n");
        } else {
            self.out.extend_from_slice(data);
        }
    }

    async fn finish(&mut self, framing: Framing, left: u64) -> io::Result<bool> {
        let whole = match framing {
            Framing::Chunked => {
                self.out.extend_from_slice(b"0\r\n\r\n");
                true
            }
            Framing::Length(_) => left == 0,
            Framing::Close | Framing::None => true,
        };
        self.flush().await?;
        Ok(whole && !matches!(framing, Framing::Close))
    }

    async fn flush(&mut self) -> io::Result<()> {
        if !self.out.is_empty() {
            self.io.write_all(&self.out).await?;
            self.out.clear();
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Copy)]
enum Framing {
    None,
    Length(u64),
    Chunked,
    Close,
}
