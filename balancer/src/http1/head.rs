//! Heads: httparse's tokenizing with one configuration, and where the fields sit.

use std::mem::MaybeUninit;

use bytes::Bytes;
use http::header::{HeaderMap, HeaderName, HeaderValue};

use super::Invalid;

/// Most fields in a head parsed by the proxy's own loops (hyper's limit too).
pub(crate) const MAX_FIELDS: usize = 100;
/// Most trailer fields after a chunked body.
const MAX_TRAILERS: usize = 32;

/// Field slots for one head parse, on the caller's stack. Uninitialized: zeroing them would
/// cost a 3 KiB `memset` per request.
pub(crate) type Slots<'b> = [MaybeUninit<httparse::Header<'b>>; MAX_FIELDS];

/// Fresh [`Slots`].
#[inline(always)]
pub(crate) const fn slots<'b>() -> Slots<'b> {
    [const { MaybeUninit::uninit() }; MAX_FIELDS]
}

/// Parses the request head at the front of `buf`: the head and its length in bytes, `None`
/// until it is whole.
pub(crate) fn parse_request<'h, 'b>(
    buf: &'b [u8],
    slots: &'h mut Slots<'b>,
) -> Result<Option<(httparse::Request<'h, 'b>, usize)>, Invalid> {
    let mut req = httparse::Request::new(&mut []);
    let parsed =
        httparse::ParserConfig::default().parse_request_with_uninit_headers(&mut req, buf, slots);
    whole(parsed, req)
}

/// Parses the response head at the front of `buf`, as [`parse_request`] does a request's.
pub(crate) fn parse_response<'h, 'b>(
    buf: &'b [u8],
    slots: &'h mut Slots<'b>,
) -> Result<Option<(httparse::Response<'h, 'b>, usize)>, Invalid> {
    let mut res = httparse::Response::new(&mut []);
    let parsed =
        httparse::ParserConfig::default().parse_response_with_uninit_headers(&mut res, buf, slots);
    whole(parsed, res)
}

/// `head` and its length once httparse has it whole.
fn whole<T>(parsed: httparse::Result<usize>, head: T) -> Result<Option<(T, usize)>, Invalid> {
    match parsed {
        Ok(httparse::Status::Complete(n)) => Ok(Some((head, n))),
        Ok(httparse::Status::Partial) => Ok(None),
        Err(_) => Err(Invalid),
    }
}

/// Parses the trailer section after a chunked body's last chunk (its fields and the empty line
/// that ends it): bytes used and the fields, `None` until it is whole.
pub(crate) fn parse_trailers(buf: &[u8]) -> Result<Option<(usize, HeaderMap)>, &'static str> {
    if buf.starts_with(b"\r\n") {
        return Ok(Some((2, HeaderMap::new())));
    }
    let mut fields = [httparse::EMPTY_HEADER; MAX_TRAILERS];
    match httparse::parse_headers(buf, &mut fields) {
        Ok(httparse::Status::Complete((used, fields))) => {
            let mut map = HeaderMap::with_capacity(fields.len());
            for f in fields {
                let (Ok(name), Ok(value)) = (
                    HeaderName::from_bytes(f.name.as_bytes()),
                    HeaderValue::from_bytes(f.value),
                ) else {
                    return Err("invalid trailer field");
                };
                map.append(name, value);
            }
            Ok(Some((used, map)))
        }
        Ok(httparse::Status::Partial) => Ok(None),
        Err(_) => Err("invalid trailer section"),
    }
}

/// End of the head that starts `b`: just past its first empty line, whether lines end in CRLF
/// or, as httparse also accepts, a bare LF. Only finds the end; [`parse_request`] judges the
/// head.
pub(crate) fn head_end(b: &[u8]) -> Option<usize> {
    memchr::memchr_iter(b'\n', b).find_map(|p| match b.get(p + 1..) {
        Some([b'\n', ..]) => Some(p + 2),
        Some([b'\r', b'\n', ..]) => Some(p + 3),
        _ => None,
    })
}

/// Where each field of a head parsed by httparse sits in its buffer, so the map built once the
/// head is frozen shares the head's bytes instead of copying every value.
///
/// Kept by the connection and reused for every head: a fixed array of `MAX_FIELDS` spans made
/// per head cost a 1.6 KiB `memset` and a 1.6 KiB copy each time (musl's are slow).
#[derive(Debug, Default)]
pub(crate) struct FieldSpans {
    /// Name offset, name length, value offset, value length.
    spans: Vec<(u32, u32, u32, u32)>,
}

impl FieldSpans {
    /// Records `fields`, which httparse parsed out of `buf`, in place of the last head's.
    pub(crate) fn record(&mut self, buf: &[u8], fields: &[httparse::Header<'_>]) {
        let base = buf.as_ptr() as usize;
        self.spans.clear();
        self.spans.extend(fields.iter().take(MAX_FIELDS).map(|f| {
            (
                (f.name.as_ptr() as usize - base) as u32,
                f.name.len() as u32,
                (f.value.as_ptr() as usize - base) as u32,
                f.value.len() as u32,
            )
        }));
    }

    /// The fields as a map over `head` (the same bytes, frozen); `None` if one is not valid.
    pub(crate) fn map(&self, head: &Bytes) -> Option<HeaderMap> {
        let mut headers = HeaderMap::with_capacity(self.spans.len());
        for &(name, name_len, value, value_len) in &self.spans {
            let (name, value) = (name as usize, value as usize);
            let name = HeaderName::from_bytes(&head[name..name + name_len as usize]).ok()?;
            let value =
                HeaderValue::from_maybe_shared(head.slice(value..value + value_len as usize))
                    .ok()?;
            headers.append(name, value);
        }
        Some(headers)
    }
}
