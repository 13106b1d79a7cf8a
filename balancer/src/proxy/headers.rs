//! Header rules: hop-by-hop removal in both directions, `X-Forwarded-*` and `Forwarded`,
//! request ids.

use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::{BufMut, BytesMut};
use http::header::{self, HeaderMap, HeaderName, HeaderValue};

use crate::http1::{self, Digits, field};

/// `X-Request-Id`.
pub(crate) static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
/// `X-Upstream`.
pub(crate) static X_UPSTREAM: HeaderName = HeaderName::from_static("x-upstream");
static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
static X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
static KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");
static PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");

/// Headers that belong to one connection, never forwarded (RFC 9110 7.6.1). `Trailer` is
/// end-to-end: it stays, and hyper sends on only the trailer fields it declares.
fn fixed_hop_by_hop() -> [&'static HeaderName; 7] {
    [
        &header::CONNECTION,
        &KEEP_ALIVE,
        &PROXY_CONNECTION,
        &header::TE,
        &header::TRANSFER_ENCODING,
        &header::UPGRADE,
        &header::PROXY_AUTHORIZATION,
    ]
}

/// Removes hop-by-hop headers and every header named in `Connection`. Returns whether the
/// message asked for a protocol upgrade (`Connection: upgrade` + `Upgrade`), and in that case
/// keeps `Upgrade` and sets `Connection: upgrade` so the upgrade can pass through.
pub(crate) fn strip_hop_by_hop(headers: &mut HeaderMap) -> bool {
    // One pass over the names present (no hashing), then removals of only those found: most
    // messages carry one or none of these (a member's `Connection: keep-alive`).
    let hop = fixed_hop_by_hop();
    let mut present = 0u16;
    for k in headers.keys() {
        if let Some(i) = hop.iter().position(|h| *h == k) {
            present |= 1 << i;
        }
    }
    if present == 0 {
        return false;
    }
    let mut upgrade = false;
    // `hop[0]` is `Connection`.
    if present & 1 != 0 {
        let mut named: Vec<HeaderName> = Vec::new();
        for v in headers.get_all(header::CONNECTION) {
            for t in http1::tokens(v.as_bytes()) {
                if t.eq_ignore_ascii_case(b"upgrade") {
                    upgrade = true;
                } else if !t.is_empty()
                    && !t.eq_ignore_ascii_case(b"keep-alive")
                    && !t.eq_ignore_ascii_case(b"close")
                    && let Ok(n) = HeaderName::from_bytes(t)
                {
                    // Removed after the loop: the map is borrowed while its values are read.
                    named.push(n);
                }
            }
        }
        for n in named {
            headers.remove(n);
        }
    }
    let upgrade_to = if upgrade {
        headers.get(header::UPGRADE).cloned()
    } else {
        None
    };
    for (i, h) in hop.iter().enumerate() {
        if present & (1 << i) != 0 {
            headers.remove(*h);
        }
    }
    match upgrade_to {
        Some(proto) => {
            headers.insert(header::UPGRADE, proto);
            headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
            true
        }
        None => false,
    }
}

/// Adds `X-Forwarded-For` (appended), `X-Forwarded-Proto`, `X-Forwarded-Host` and `Forwarded`.
/// One buffer serves both computed values, so this costs one allocation.
pub(crate) fn add_forwarded(headers: &mut HeaderMap, client: IpAddr) {
    let host = headers.get(header::HOST).cloned();
    let mut buf = BytesMut::with_capacity(160);
    let mut prior = false;
    for v in headers.get_all(&X_FORWARDED_FOR) {
        if prior {
            buf.put_slice(b", ");
        }
        buf.put_slice(v.as_bytes());
        prior = true;
    }
    if prior {
        buf.put_slice(b", ");
    }
    write_ip(&mut buf, client, false);
    let xff = buf.split().freeze();
    forwarded_value(&mut buf, client, host.as_ref());
    let fwd = buf.split().freeze();
    if let Ok(v) = HeaderValue::from_maybe_shared(xff) {
        headers.insert(&X_FORWARDED_FOR, v);
    }
    if let Ok(v) = HeaderValue::from_maybe_shared(fwd) {
        headers.append(header::FORWARDED, v);
    }
    headers.insert(&X_FORWARDED_PROTO, HeaderValue::from_static("http"));
    if let Some(h) = host {
        headers.insert(&X_FORWARDED_HOST, h);
    }
}

/// What the proxy adds to a request it forwards: the client's address and the request id.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Forwarding<'a> {
    /// The client's address.
    pub(crate) client: IpAddr,
    /// The request's id.
    pub(crate) request_id: &'a HeaderValue,
}

/// Writes `headers` as HTTP/1.1 field lines with the same rules as [`add_forwarded`] plus the
/// request id, without building them into the map first: the connections the proxy drives
/// itself write their heads with this.
pub(crate) fn write_fields(dst: &mut Vec<u8>, headers: &HeaderMap, fwd: &Forwarding<'_>) {
    let mut prior_xff = false;
    for (name, value) in headers {
        if name == X_FORWARDED_FOR {
            prior_xff = true;
        } else if name != X_FORWARDED_PROTO && name != X_FORWARDED_HOST && name != X_REQUEST_ID {
            field(dst, name.as_str().as_bytes(), value.as_bytes());
        }
    }
    dst.put_slice(b"x-forwarded-for: ");
    if prior_xff {
        for v in headers.get_all(&X_FORWARDED_FOR) {
            dst.put_slice(v.as_bytes());
            dst.put_slice(b", ");
        }
    }
    write_ip(dst, fwd.client, false);
    dst.put_slice(b"\r\nforwarded: ");
    let host = headers.get(header::HOST);
    forwarded_value(dst, fwd.client, host);
    dst.put_slice(b"\r\n");
    field(dst, b"x-forwarded-proto", b"http");
    if let Some(h) = host {
        field(dst, b"x-forwarded-host", h.as_bytes());
    }
    field(dst, b"x-request-id", fwd.request_id.as_bytes());
}

/// `for=<client>;proto=http[;host="<host>"]` (RFC 7239).
fn forwarded_value(buf: &mut impl BufMut, client: IpAddr, host: Option<&HeaderValue>) {
    buf.put_slice(b"for=");
    write_ip(buf, client, true);
    buf.put_slice(b";proto=http");
    if let Some(h) = host.filter(|h| is_token_safe(h.as_bytes())) {
        buf.put_slice(b";host=\"");
        buf.put_slice(h.as_bytes());
        buf.put_slice(b"\"");
    }
}

fn is_token_safe(b: &[u8]) -> bool {
    b.iter()
        .all(|c| c.is_ascii_graphic() && *c != b'"' && *c != b'\\')
}

fn write_ip(buf: &mut impl BufMut, ip: IpAddr, forwarded_syntax: bool) {
    use std::fmt::Write;
    let ip = match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
        v4 => v4,
    };
    match ip {
        // Every request writes the client address twice; `fmt` costs ten times this.
        IpAddr::V4(v4) => {
            for (i, octet) in v4.octets().into_iter().enumerate() {
                if i > 0 {
                    buf.put_u8(b'.');
                }
                // Byte by byte: a `put_slice` of one to three bytes is a `memcpy` call.
                for d in Digits::decimal(u64::from(octet)).as_bytes() {
                    buf.put_u8(*d);
                }
            }
        }
        // RFC 7239: IPv6 in Forwarded is quoted and bracketed.
        IpAddr::V6(v6) if forwarded_syntax => {
            let _ = write!(BufWriter(buf), "\"[{v6}]\"");
        }
        IpAddr::V6(v6) => {
            let _ = write!(BufWriter(buf), "{v6}");
        }
    }
}

struct BufWriter<'a, B>(&'a mut B);

impl<B: BufMut> std::fmt::Write for BufWriter<'_, B> {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        self.0.put_slice(s.as_bytes());
        Ok(())
    }
}

/// Whether the request's `Host` is acceptable (RFC 9112 3.2): exactly one on HTTP/1.1, at
/// most one on HTTP/1.0, and a plausible authority. Routing reads the first `Host` while a
/// member might read another, so two are refused, as nginx does.
pub(crate) fn host_is_valid(headers: &HeaderMap, version: http::Version) -> bool {
    let mut hosts = headers.get_all(header::HOST).iter();
    match (hosts.next(), hosts.next()) {
        (Some(_), Some(_)) => false,
        (None, _) => version == http::Version::HTTP_10,
        (Some(h), None) => {
            let b = h.as_bytes();
            !b.is_empty()
                && b.iter().all(|c| {
                    c.is_ascii_graphic() && !matches!(c, b'/' | b'\\' | b'?' | b'#' | b'@')
                })
        }
    }
}

static COUNTER: AtomicU64 = AtomicU64::new(0);

/// The request's id: the client's `X-Request-Id` if it is sane, else a new unique one.
/// Returns whether it was generated.
pub(crate) fn request_id(headers: &HeaderMap, seed: u64) -> (HeaderValue, bool) {
    if let Some(v) = headers.get(&X_REQUEST_ID) {
        let b = v.as_bytes();
        if !b.is_empty() && b.len() <= 128 && b.iter().all(|c| c.is_ascii_graphic()) {
            return (v.clone(), false);
        }
    }
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let mut buf = [0u8; 32];
    http1::hex_fixed(&mut buf[..16], seed);
    http1::hex_fixed(&mut buf[16..], n);
    // Only hex digits: always a valid header value.
    let v = HeaderValue::from_bytes(&buf).unwrap_or_else(|_| HeaderValue::from_static("0"));
    (v, true)
}

#[cfg(test)]
mod tests;
