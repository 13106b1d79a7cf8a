//! Telling a plain request head from the rest: a head with no body, no upgrade and no
//! expectation is parsed here into a request; anything else is left for hyper.

use bytes::BytesMut;
use http::{Method, Request, Uri, Version};

use super::Meta;
use crate::http1::{self, FieldSpans};
use crate::proxy::ClientBody;

#[allow(clippy::large_enum_variant)]
pub(super) enum Parsed {
    Partial,
    Plain(Request<ClientBody>, Meta),
    Invalid,
    Other,
}

/// Parses a request head off the front of `buf` if it is plain; leaves `buf` untouched
/// otherwise.
pub(super) fn parse(buf: &mut BytesMut, spans: &mut FieldSpans, max_head: usize) -> Parsed {
    let mut slots = http1::slots();
    let (req, len) = match http1::parse_request(buf, &mut slots) {
        Ok(Some(parsed)) => parsed,
        Ok(None) => return Parsed::Partial,
        Err(_) => return Parsed::Other,
    };
    let (Some(method), Some(path), Some(minor)) = (req.method, req.path, req.version) else {
        return Parsed::Other;
    };
    if len > max_head || !path.starts_with('/') {
        return Parsed::Other;
    }
    let Ok(method) = Method::from_bytes(method.as_bytes()) else {
        return Parsed::Other;
    };
    if method == Method::CONNECT {
        return Parsed::Other;
    }
    let http10 = minor == 0;
    let mut keep_alive = !http10;
    // `close` wins over `keep-alive`, in whatever order they come (RFC 9112 9.6).
    let mut close = false;
    for h in req.headers.iter() {
        let name = h.name.as_bytes();
        if name.eq_ignore_ascii_case(b"content-length")
            || name.eq_ignore_ascii_case(b"transfer-encoding")
            || name.eq_ignore_ascii_case(b"upgrade")
            || name.eq_ignore_ascii_case(b"expect")
        {
            return Parsed::Other;
        }
        if name.eq_ignore_ascii_case(b"connection") {
            for t in http1::tokens(h.value) {
                if t.eq_ignore_ascii_case(b"close") {
                    close = true;
                } else if t.eq_ignore_ascii_case(b"keep-alive") {
                    keep_alive = keep_alive || http10;
                } else if t.eq_ignore_ascii_case(b"upgrade") {
                    return Parsed::Other;
                }
            }
        }
    }
    spans.record(buf, req.headers);
    let path = (path.as_ptr() as usize - buf.as_ptr() as usize, path.len());
    keep_alive &= !close;
    let head = buf.split_to(len).freeze();
    let Ok(uri) = Uri::from_maybe_shared(head.slice(path.0..path.0 + path.1)) else {
        return Parsed::Invalid;
    };
    let Some(headers) = spans.map(&head) else {
        return Parsed::Invalid;
    };
    let mut req = Request::new(ClientBody::None);
    *req.method_mut() = method;
    *req.uri_mut() = uri;
    *req.version_mut() = if http10 {
        Version::HTTP_10
    } else {
        Version::HTTP_11
    };
    *req.headers_mut() = headers;
    let meta = Meta {
        head_only: req.method() == Method::HEAD,
        keep_alive,
        http10,
    };
    Parsed::Plain(req, meta)
}
